//! Once its programs are loaded and attached the tracer needs little of
//! root, yet it goes on parsing hostile bytes (first bytes, DNS, /proc,
//! capture files) and speaking TLS to remote sinks. It keeps only what the
//! rest of a run needs, in every set (effective, permitted, bounding,
//! ambient), and sets no_new_privs so nothing it could exec regains more:
//!
//! - CAP_BPF: commands on the map fds it holds (kernels before 6.5 refuse
//!   every bpf(2) command without it when unprivileged BPF is disabled);
//! - CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH: other processes' /proc entries
//!   (exe, maps for ML runtimes, cgroup), the cgroup tree;
//! - CAP_DAC_OVERRIDE: output files and spool directories, reopened at
//!   SIGHUP and rotation;
//! - CAP_SYS_NICE: the shutdown's raised priority.
//!
//! Gone are CAP_SYS_ADMIN, CAP_PERFMON (no new programs or attachments),
//! CAP_NET_ADMIN, CAP_SYS_MODULE, CAP_SETUID and the rest.

use anyhow::{Result, bail};

const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_NICE: u32 = 23;
const CAP_BPF: u32 = 39;

/// The capabilities kept, as a mask.
pub const KEPT: u64 =
    1 << CAP_DAC_OVERRIDE | 1 << CAP_DAC_READ_SEARCH | 1 << CAP_SYS_PTRACE | 1 << CAP_SYS_NICE | 1 << CAP_BPF;

/// include/uapi/linux/capability.h
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Drops to [`KEPT`]. Capabilities are per thread: call it before any
/// thread is started (threads started later inherit the reduced sets).
pub fn drop_after_load() -> Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        bail!("prctl(PR_SET_NO_NEW_PRIVS): {}", std::io::Error::last_os_error());
    }
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(40)
        .min(63);
    for cap in (0..=last).filter(|c| KEPT & (1 << c) == 0) {
        // SAFETY: prctl with integer arguments. EINVAL: a capability this
        // kernel does not know; EPERM: no CAP_SETPCAP (not root), the
        // capset below still applies.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
    }
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0) };

    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and a two-element data array, as version 3 expects.
    if unsafe { libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()) } != 0 {
        bail!("capget: {}", std::io::Error::last_os_error());
    }
    for (i, d) in data.iter_mut().enumerate() {
        let kept = (KEPT >> (32 * i)) as u32;
        d.effective &= kept;
        d.permitted &= kept;
        d.inheritable = 0;
    }
    // SAFETY: as above; only bits already permitted are asked for.
    if unsafe { libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) } != 0 {
        bail!("capset: {}", std::io::Error::last_os_error());
    }
    Ok(())
}
