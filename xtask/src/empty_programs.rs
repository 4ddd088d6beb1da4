//! Programs that do nothing, attached where the tracer's hot programs are
//! (both packet hooks on the cgroup2 root, the `sched_switch` raw
//! tracepoint), for the bench: the kernel's statistics time every run with
//! two clock reads, and what they measure for an empty program is the
//! floor under every figure of table 6 (in this VM the clock reads alone
//! are tens of ns). Loaded with the bpf(2) syscall from hand-written
//! instructions: two each, so there is nothing to build.

use std::{
    fs,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use anyhow::{Context as _, Result, bail};

/// The links and programs, detached when dropped (their fds closed).
pub struct EmptyPrograms {
    _fds: Vec<OwnedFd>,
}

/// include/uapi/linux/bpf.h
const BPF_PROG_LOAD: i64 = 5;
const BPF_RAW_TRACEPOINT_OPEN: i64 = 17;
const BPF_LINK_CREATE: i64 = 28;
const BPF_PROG_TYPE_CGROUP_SKB: u32 = 8;
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
const BPF_CGROUP_INET_INGRESS: u32 = 0;
const BPF_CGROUP_INET_EGRESS: u32 = 1;
/// arch/x86/entry/syscalls/syscall_64.tbl
const SYS_BPF: i64 = 321;

unsafe extern "C" {
    fn syscall(number: i64, ...) -> i64;
}

/// `union bpf_attr`, as bytes: each command reads the fields it knows.
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Self([0; 128])
    }

    fn u32(&mut self, at: usize, v: u32) -> &mut Self {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }

    fn u64(&mut self, at: usize, v: u64) -> &mut Self {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }

    fn call(&mut self, cmd: i64, what: &str) -> Result<OwnedFd> {
        // SAFETY: the attribute is as large as the kernel's union and every
        // pointer in it points at memory that outlives the call.
        let fd = unsafe { syscall(SYS_BPF, cmd, self.0.as_mut_ptr(), self.0.len() as u32) };
        if fd < 0 {
            bail!("{what}: {}", std::io::Error::last_os_error());
        }
        // SAFETY: a new fd the kernel gave this process.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }
}

/// `r0 = ret; exit`.
fn returning(ret: i32) -> [u64; 2] {
    // BPF_ALU64 | BPF_MOV | BPF_K into r0, then BPF_JMP | BPF_EXIT.
    let mov = 0xb7u64 | (u64::from(ret as u32) << 32);
    [mov, 0x95]
}

fn load(prog_type: u32, attach_type: u32, name: &str, ret: i32) -> Result<OwnedFd> {
    let insns = returning(ret);
    let license = c"GPL";
    let mut attr = Attr::new();
    attr.u32(0, prog_type)
        .u32(4, insns.len() as u32)
        .u64(8, insns.as_ptr() as u64)
        .u64(16, license.as_ptr() as u64)
        .u32(68, attach_type);
    let n = name.len().min(15);
    attr.0[48..48 + n].copy_from_slice(&name.as_bytes()[..n]);
    attr.call(BPF_PROG_LOAD, &format!("loading {name}"))
}

/// Where cgroup2 is mounted (the tracer's packet hooks are on its root).
fn cgroup2_root() -> Result<String> {
    let mounts = fs::read_to_string("/proc/self/mounts")?;
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(2) == Some(&"cgroup2"))
        .and_then(|f| f.get(1).map(|p| p.to_string()))
        .context("no cgroup2 mount")
}

impl EmptyPrograms {
    /// `empty_skb_in`, `empty_skb_eg` on the cgroup2 root and
    /// `empty_switch` on sched_switch, attached until dropped.
    pub fn attach() -> Result<Self> {
        let mut fds = Vec::new();
        let root = fs::File::open(cgroup2_root()?).context("opening the cgroup2 root")?;
        for (attach, name) in
            [(BPF_CGROUP_INET_INGRESS, "empty_skb_in"), (BPF_CGROUP_INET_EGRESS, "empty_skb_eg")]
        {
            // 1: let the packet through.
            let prog = load(BPF_PROG_TYPE_CGROUP_SKB, attach, name, 1)?;
            let mut attr = Attr::new();
            attr.u32(0, prog.as_raw_fd() as u32).u32(4, root.as_raw_fd() as u32).u32(8, attach);
            let link = attr.call(BPF_LINK_CREATE, &format!("attaching {name}"))?;
            fds.extend([prog, link]);
        }
        let prog = load(BPF_PROG_TYPE_RAW_TRACEPOINT, 0, "empty_switch", 0)?;
        let tracepoint = c"sched_switch";
        let mut attr = Attr::new();
        attr.u64(0, tracepoint.as_ptr() as u64).u32(8, prog.as_raw_fd() as u32);
        let link = attr.call(BPF_RAW_TRACEPOINT_OPEN, "attaching empty_switch")?;
        fds.extend([prog, link]);
        Ok(Self { _fds: fds })
    }
}
