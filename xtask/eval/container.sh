#!/bin/sh
# Runs COMMAND in a real OCI container: runc (the runtime under Docker and
# containerd) with its own pid, mount, ipc and uts namespaces and its own
# cgroup, named as containerd names one (a 64-hex id), on the host's network.
# The root file system is the host's own directories, bind-mounted read-only
# (no image can be pulled here), the work dir read-write. Writes the id to
# DIR/container-id, which is the scope the eval scores.
# Usage: container.sh DIR COMMAND
set -eu
dir=$1
shift
id=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
bundle="$dir/bundle"
mkdir -p "$bundle/rootfs"
echo "$id" > "$dir/container-id"
python3 - "$bundle" "$id" "$*" <<'PY'
import json, os, sys
bundle, cid, command = sys.argv[1], sys.argv[2], sys.argv[3]
binds = [p for p in ["/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc", "/root", "/work", "/tmp"] if os.path.exists(p)]
mounts = [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
]
for p in binds:
    ro = [] if p in ("/work", "/tmp") else ["ro"]
    mounts.append({"destination": p, "type": "bind", "source": p, "options": ["rbind", "rprivate"] + ro})
config = {
    "ociVersion": "1.0.2",
    "process": {
        "terminal": False,
        "user": {"uid": 0, "gid": 0},
        "args": ["/bin/sh", "-c", command],
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"],
        "cwd": "/",
        "noNewPrivileges": True,
    },
    "root": {"path": "rootfs", "readonly": False},
    "hostname": cid[:12],
    "mounts": mounts,
    "linux": {
        "cgroupsPath": f"/tracer-eval/{cid}",
        "namespaces": [{"type": t} for t in ("pid", "mount", "ipc", "uts")],
    },
}
json.dump(config, open(os.path.join(bundle, "config.json"), "w"), indent=1)
PY
exec runc run --bundle "$bundle" "eval-$(echo "$id" | cut -c1-12)"
