//! Model files written, with no syscall hook: `writeback:
//! writeback_dirty_inode_enqueue` fires once when a clean inode is first
//! dirtied (fs/fs-writeback.c: __mark_inode_dirty puts it on the writeback
//! list), in the writer's context, whatever call wrote (write, io_uring,
//! a shared mapping). The file's name comes from the inode's dentry; a name
//! ending in a model-weights suffix is reported as a `file.open` for writing
//! (a checkpoint saved). Other inodes cost a few kernel reads, once per
//! writeback cycle.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel_str_bytes},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use tracer_common::{EventKind, FileOpenEvent, NO_OFFSET, file_source};

use crate::common::{config, current_task, fill_header, read_field, reserve, should_trace};

/// include/linux/sched.h
const PF_KTHREAD: u32 = 0x0020_0000;
/// include/uapi/linux/stat.h
const S_IFMT: u16 = 0o170000;
const S_IFREG: u16 = 0o100000;
const O_WRONLY: u32 = 1;

/// Longest suffix below, and the suffixes (see files_watch.rs).
const TAIL: usize = 16;
const SUFFIXES: [&[u8]; 5] = [b".safetensors", b".gguf", b".pt", b".onnx", b".ckpt"];

#[raw_tracepoint(tracepoint = "writeback_dirty_inode_enqueue")]
pub fn dirty_inode(ctx: RawTracePointContext) -> i32 {
    let _ = on_dirty(ctx.arg(0));
    0
}

#[inline(always)]
fn on_dirty(inode: u64) -> Option<()> {
    let k = &config().kernel;
    if k.dentry_name == NO_OFFSET || k.dentry_alias == NO_OFFSET {
        return None;
    }
    // Writeback workers dirty inodes too (metadata); only a task's own
    // writes are its evidence.
    let flags: u32 = read_field(current_task(), k.task_flags)?;
    if flags & PF_KTHREAD != 0 || !should_trace((bpf_get_current_pid_tgid() >> 32) as u32) {
        return None;
    }
    let mode: u16 = read_field(inode, k.inode_mode)?;
    if mode & S_IFMT != S_IFREG {
        return None;
    }
    // inode->i_dentry.first is the alias's d_u.d_alias node.
    let alias: u64 = read_field(inode, k.inode_dentries)?;
    if alias == 0 {
        return None;
    }
    let dentry = alias - k.dentry_alias as u64;
    // struct qstr: { u32 hash; u32 len; } then const unsigned char *name.
    let len: u32 = read_field(dentry, k.dentry_name + 4)?;
    let name: u64 = read_field(dentry, k.dentry_name + 8)?;
    let start = len.saturating_sub(TAIL as u32) as u64;
    let tail: [u8; TAIL] = read_field(name + start, 0)?;
    let n = (len as usize).min(TAIL);
    let matched = SUFFIXES.iter().any(|s| {
        n >= s.len() && s.iter().enumerate().all(|(i, &c)| tail[(n - s.len() + i) & (TAIL - 1)] == c)
    });
    if !matched {
        return None;
    }
    let mut entry = reserve::<FileOpenEvent>(EventKind::FileOpen)?;
    // SAFETY: reservation sized for FileOpenEvent; the fields user space
    // reads are written (the path up to path_len).
    let event = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut event.header, EventKind::FileOpen);
    event.flags = O_WRONLY;
    event.old_path_len = 0;
    event.source = file_source::WRITTEN;
    // SAFETY: the helper bounds the copy to the buffer.
    event.path_len = unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, &mut event.path) }
        .map_or(0, |s| s.len() as u32);
    entry.submit(0);
    Some(())
}
