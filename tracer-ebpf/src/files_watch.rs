//! Opens of files that tell what a process is doing: model weights
//! (.safetensors, .gguf, .pt, .pth, .onnx, .ckpt), CPU model-specific
//! registers opened for writing (XMRig's MSR mod: /dev/cpu/N/msr), and the
//! huge-page knob (…/nr_hugepages). The path is matched by suffix in the
//! kernel so ordinary opens leave no record; mmap with MAP_HUGETLB is
//! counted per process.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user_str_bytes},
    macros::{map, tracepoint},
    maps::PerCpuArray,
    programs::TracePointContext,
};
use tracer_common::{EventKind, FileOpenEvent, PATH_LEN, counter};

use crate::common::{count, fill_header, read_user, reserve, should_trace, syscall_arg};

/// Scratch for the path: too big for the BPF stack.
#[map]
static PATH_SCRATCH: PerCpuArray<[u8; PATH_LEN]> = PerCpuArray::with_max_entries(1, 0);

const O_ACCMODE: u64 = 3;
/// include/uapi/asm-generic/mman-common.h
const MAP_HUGETLB: u64 = 0x40000;

/// (suffix, only when opened for writing). Not `.pth`: Python's site
/// module reads `*.pth` path files at every start.
const WATCHED: [(&[u8], bool); 7] = [
    (b".safetensors", false),
    (b".gguf", false),
    (b".pt", false),
    (b".onnx", false),
    (b".ckpt", false),
    (b"/msr", true),
    (b"nr_hugepages", true),
];

/// Whether the `n`-byte string in `buf` ends with `suffix`.
#[inline(always)]
fn ends_with(buf: &[u8; PATH_LEN], n: usize, suffix: &[u8]) -> bool {
    if n < suffix.len() || n > PATH_LEN {
        return false;
    }
    let start = n - suffix.len();
    for (i, &c) in suffix.iter().enumerate() {
        // The mask keeps the index provably inside the buffer.
        if buf[(start + i) & (PATH_LEN - 1)] != c {
            return false;
        }
    }
    true
}

#[tracepoint(category = "syscalls", name = "sys_enter_openat")]
pub fn sys_enter_openat(ctx: TracePointContext) -> u32 {
    try_openat(&ctx);
    0
}

fn try_openat(ctx: &TracePointContext) -> Option<()> {
    let (path_ptr, flags) = (syscall_arg(ctx, 1)?, syscall_arg(ctx, 2)?);
    report_if_watched(path_ptr, flags, 0)
}

#[inline(always)]
fn report_if_watched(path_ptr: u64, flags: u64, old_ptr: u64) -> Option<()> {
    if !should_trace((bpf_get_current_pid_tgid() >> 32) as u32) {
        return None;
    }
    let buf = PATH_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch slot; the helper bounds the copy.
    let buf = unsafe { &mut *buf };
    // SAFETY: bpf_probe_read_user_str validates the address.
    let Ok(path) = (unsafe { bpf_probe_read_user_str_bytes(path_ptr as *const u8, buf) }) else {
        count(counter::OPEN_PATH_UNREADABLE);
        return None;
    };
    let n = path.len();
    if n >= PATH_LEN - 1 {
        count(counter::OPEN_PATH_TOO_LONG);
    }
    let writing = flags & O_ACCMODE != 0;
    let wanted =
        WATCHED.iter().any(|(suffix, needs_write)| (!needs_write || writing) && ends_with(buf, n, suffix));
    if !wanted {
        return None;
    }
    let mut entry = reserve::<FileOpenEvent>(EventKind::FileOpen)?;
    // SAFETY: reservation sized for FileOpenEvent; all fields written.
    let event = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut event.header, EventKind::FileOpen);
    event.flags = flags as u32;
    event.path_len = n as u32;
    event.path = *buf;
    event.source = tracer_common::file_source::SYSCALL;
    // A rename's source, read straight into the record (up to 255 bytes).
    event.old_path_len = if old_ptr == 0 {
        0
    } else {
        // SAFETY: bpf_probe_read_user_str validates the address.
        unsafe { bpf_probe_read_user_str_bytes(old_ptr as *const u8, &mut event.old_path) }
            .map_or(0, |s| s.len() as u32)
    };
    crate::common::submit(entry);
    Some(())
}

/// open(path, flags, mode): what musl's open() calls on x86_64 (static
/// Alpine binaries, static miner builds).
#[tracepoint(category = "syscalls", name = "sys_enter_open")]
pub fn sys_enter_open(ctx: TracePointContext) -> u32 {
    if let (Some(path), Some(flags)) = (syscall_arg(&ctx, 0), syscall_arg(&ctx, 1)) {
        let _ = report_if_watched(path, flags, 0);
    }
    0
}

/// creat(path, mode) is open(path, O_CREAT|O_WRONLY|O_TRUNC, mode).
#[tracepoint(category = "syscalls", name = "sys_enter_creat")]
pub fn sys_enter_creat(ctx: TracePointContext) -> u32 {
    if let Some(path) = syscall_arg(&ctx, 0) {
        let _ = report_if_watched(path, 0o1101, 0);
    }
    0
}

/// openat2(dfd, path, struct open_how *how, size): the flags are the first
/// field of `how` (include/uapi/linux/openat2.h).
#[tracepoint(category = "syscalls", name = "sys_enter_openat2")]
pub fn sys_enter_openat2(ctx: TracePointContext) -> u32 {
    if let (Some(path), Some(how)) = (syscall_arg(&ctx, 1), syscall_arg(&ctx, 2)) {
        let _ = report_if_watched(path, read_user::<u64>(how).unwrap_or(0), 0);
    }
    0
}

/// Set in `FileOpenEvent::flags` for a file renamed into place (atomic
/// saves write a temporary file and rename it: safetensors, most trainers).
const RENAMED: u64 = 1 << 31;

#[tracepoint(category = "syscalls", name = "sys_enter_renameat2")]
pub fn sys_enter_renameat2(ctx: TracePointContext) -> u32 {
    if let (Some(old), Some(new)) = (syscall_arg(&ctx, 1), syscall_arg(&ctx, 3)) {
        let _ = report_if_watched(new, RENAMED | 1, old);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_renameat")]
pub fn sys_enter_renameat(ctx: TracePointContext) -> u32 {
    if let (Some(old), Some(new)) = (syscall_arg(&ctx, 1), syscall_arg(&ctx, 3)) {
        let _ = report_if_watched(new, RENAMED | 1, old);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_rename")]
pub fn sys_enter_rename(ctx: TracePointContext) -> u32 {
    if let (Some(old), Some(new)) = (syscall_arg(&ctx, 0), syscall_arg(&ctx, 1)) {
        let _ = report_if_watched(new, RENAMED | 1, old);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_mmap")]
pub fn sys_enter_mmap(ctx: TracePointContext) -> u32 {
    if syscall_arg(&ctx, 3).is_some_and(|flags| flags & MAP_HUGETLB != 0) {
        crate::ledger::count_hugetlb_mmap();
    }
    0
}
