//! Model files read and written, with no syscall hook, whatever call did it
//! (read, mmap, io_uring, a shared mapping):
//! - written: `writeback:writeback_dirty_inode_enqueue` fires once when a
//!   clean inode is first dirtied (fs/fs-writeback.c: __mark_inode_dirty),
//!   in the writer's context: a checkpoint saved;
//! - read: `filemap:mm_filemap_get_pages` (a buffered read reaching the page
//!   cache), `mm_filemap_fault` and `mm_filemap_map_pages` (faults on a file
//!   mapping, how safetensors and GGUF weights are read; a cached page is
//!   mapped by the second) in the reader's context, for
//!   files of at least `MIN_READ` bytes, reported once per process and file.
//! The file's name comes from the inode's dentry; a name ending in a
//! model-weights suffix is reported as a `file.open`. Other files cost a
//! few kernel reads.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel_str_bytes},
    macros::{map, raw_tracepoint},
    maps::LruHashMap,
    programs::RawTracePointContext,
};
use tracer_common::{EventKind, FileOpenEvent, NO_OFFSET, file_source, table};

use crate::common::{config, current_task, fill_header, read_field, reserve, should_trace};

/// include/linux/sched.h
const PF_KTHREAD: u32 = 0x0020_0000;
/// include/uapi/linux/stat.h
const S_IFMT: u16 = 0o170000;
const S_IFREG: u16 = 0o100000;
const O_RDONLY: u32 = 0;
const O_WRONLY: u32 = 1;
/// Smaller files are not weights worth a look (and most reads are of them).
const MIN_READ: i64 = 256 * 1024;

/// (tgid, inode) of model files already reported read.
#[repr(C)]
#[derive(Clone, Copy)]
struct ReadKey {
    tgid: u32,
    _pad: u32,
    inode: u64,
}

#[map]
static MODEL_READS: LruHashMap<ReadKey, u8> = LruHashMap::with_max_entries(4096, 0);

/// Longest suffix below, and the suffixes (see files_watch.rs).
const TAIL: usize = 16;
const SUFFIXES: [&[u8]; 5] = [b".safetensors", b".gguf", b".pt", b".onnx", b".ckpt"];

#[raw_tracepoint(tracepoint = "writeback_dirty_inode_enqueue")]
pub fn dirty_inode(ctx: RawTracePointContext) -> i32 {
    let _ = on_inode(ctx.arg(0), O_WRONLY);
    0
}

/// TP_PROTO(struct address_space *mapping, pgoff_t index, …).
#[raw_tracepoint(tracepoint = "mm_filemap_get_pages")]
pub fn file_read(ctx: RawTracePointContext) -> i32 {
    let _ = on_read(ctx.arg(0));
    0
}

/// TP_PROTO(struct address_space *mapping, pgoff_t index).
#[raw_tracepoint(tracepoint = "mm_filemap_fault")]
pub fn file_fault(ctx: RawTracePointContext) -> i32 {
    let _ = on_read(ctx.arg(0));
    0
}

/// TP_PROTO(struct address_space *mapping, pgoff_t start, pgoff_t end): a
/// fault served from the page cache maps its neighbours without a fault.
#[raw_tracepoint(tracepoint = "mm_filemap_map_pages")]
pub fn file_map_pages(ctx: RawTracePointContext) -> i32 {
    let _ = on_read(ctx.arg(0));
    0
}

#[inline(always)]
fn on_read(mapping: u64) -> Option<()> {
    let k = &config().kernel;
    let inode: u64 = read_field(mapping, k.mapping_host)?;
    let size: i64 = read_field(inode, k.inode_size)?;
    if size < MIN_READ {
        return None;
    }
    let key = ReadKey { tgid: (bpf_get_current_pid_tgid() >> 32) as u32, _pad: 0, inode };
    // SAFETY: presence check only.
    if unsafe { MODEL_READS.get(&key) }.is_some() {
        return None;
    }
    on_inode(inode, O_RDONLY)?;
    insert_new!(MODEL_READS, table::MODEL_READS, &key, &1);
    Some(())
}

/// Reports `inode` as opened with `access` if its name is a model file's.
#[inline(always)]
fn on_inode(inode: u64, access: u32) -> Option<()> {
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
    event.flags = access;
    event.old_path_len = 0;
    event.source = if access == O_WRONLY { file_source::WRITTEN } else { file_source::READ };
    // SAFETY: the helper bounds the copy to the buffer.
    event.path_len = unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, &mut event.path) }
        .map_or(0, |s| s.len() as u32);
    crate::common::submit(entry);
    Some(())
}
