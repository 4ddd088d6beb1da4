//! The guest's whole root file system, as an initramfs (a "newc" cpio
//! archive, which the kernel unpacks itself): busybox for the init script,
//! the tracer and this xtask binary (the workload), stripped, and the
//! shared libraries they load, at the paths the host has them.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use crate::stdout_of;

/// The guest's /init: mounts what the tracer needs, runs the workload
/// under the tracer with the records on the second serial port, and
/// powers off. The exit status goes to the console for the host to read.
const INIT: &str = r#"#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup
ip link set lo up
stty -F /dev/ttyS1 raw -echo
echo "vm-guest: kernel $(cat /proc/sys/kernel/osrelease)"
/bin/xtask vm-guest --tracer /bin/tracer > /dev/ttyS1
echo "vm-guest: exit $?"
poweroff -f
"#;

const BUSYBOX_APPLETS: &[&str] = &["sh", "mount", "mkdir", "ip", "cat", "echo", "stty", "poweroff"];

pub struct Archive {
    out: Vec<u8>,
    ino: u32,
    dirs: BTreeSet<String>,
}

impl Archive {
    fn new() -> Self {
        Self { out: Vec::new(), ino: 1, dirs: BTreeSet::new() }
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        let name = name.trim_start_matches('/');
        let fields = [self.ino, mode, 0, 0, 1, 0, data.len() as u32, 0, 0, 0, 0, name.len() as u32 + 1, 0];
        self.ino += 1;
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    /// Directories above `path`, each once.
    fn parents(&mut self, path: &str) {
        let mut dir = String::new();
        let parts: Vec<_> = path.trim_start_matches('/').split('/').collect();
        for part in &parts[..parts.len() - 1] {
            dir = if dir.is_empty() { part.to_string() } else { format!("{dir}/{part}") };
            if self.dirs.insert(dir.clone()) {
                self.entry(&dir, 0o040755, &[]);
            }
        }
    }

    fn dir(&mut self, path: &str) {
        self.parents(&format!("{path}/x"));
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        self.parents(path);
        self.entry(path, 0o100000 | mode, data);
    }

    fn symlink(&mut self, path: &str, target: &str) {
        self.parents(path);
        self.entry(path, 0o120777, target.as_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.out
    }
}

/// Builds the initramfs for `tracer` and `xtask` (the running binary).
pub fn build(tracer: &Path, xtask: &Path, scratch: &Path) -> Result<Vec<u8>> {
    let mut a = Archive::new();
    for d in ["proc", "sys", "dev", "tmp", "run", "root", "etc"] {
        a.dir(d);
    }
    a.file("init", 0o755, INIT.as_bytes());
    let busybox = which("busybox")?;
    a.file("bin/busybox", 0o755, &std::fs::read(&busybox)?);
    for applet in BUSYBOX_APPLETS {
        a.symlink(&format!("bin/{applet}"), "busybox");
    }
    std::fs::create_dir_all(scratch)?;
    let mut libs = BTreeSet::new();
    for (name, binary) in [("tracer", tracer), ("xtask", xtask)] {
        let stripped = scratch.join(name);
        stdout_of(Command::new("strip").arg("-o").arg(&stripped).arg(binary))?;
        a.file(&format!("bin/{name}"), 0o755, &std::fs::read(&stripped)?);
        libs.extend(shared_libraries(binary)?);
    }
    for lib in libs {
        let real = std::fs::canonicalize(&lib).with_context(|| format!("resolving {}", lib.display()))?;
        a.file(&lib.to_string_lossy(), 0o755, &std::fs::read(&real)?);
    }
    Ok(a.finish())
}

/// The libraries `ldd` says the binary loads, with the loader.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = stdout_of(Command::new("ldd").arg(binary))?;
    Ok(out
        .lines()
        .filter_map(|l| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or
            // "/lib64/ld-linux-x86-64.so.2 (0x…)"; vdso has no file.
            let path = l.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

fn which(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/bin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} not found"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_newc_with_aligned_names_and_data() {
        let mut a = Archive::new();
        a.file("bin/x", 0o755, b"abc");
        let out = a.finish();
        // "bin" directory, then "bin/x", then the trailer.
        assert_eq!(&out[..6], b"070701");
        assert_eq!(out.len() % 4, 0);
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("bin/x\0") && text.contains("abc") && text.ends_with("TRAILER!!!\0\0\0\0"));
        // Header (110) + "bin\0" (4) = 114, padded to 116.
        assert_eq!(&out[116..122], b"070701");
    }
}
