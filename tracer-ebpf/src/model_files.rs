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
//! model-weights suffix is reported as a `file.open`. A file written under
//! a temporary name (safetensors saves to `.tmpXXXXXX` and renames it into
//! place) is reported with where it is — its inode, device and ancestor
//! directories — so that user space can find the name it ends up with.
//! Other files cost a few kernel reads, and none while they are among the
//! last eight such files of the CPU (a file renamed to a model's name is
//! seen again once it has left them).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel_str_bytes},
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::{LruHashMap, PerCpuArray},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use tracer_common::{EventKind, FileOpenEvent, NO_OFFSET, TEMP_DIRS, TempFile, file_source, table};

use crate::common::{config, current_task, fill_header, load, read_field, reserve, should_trace};

/// include/linux/sched.h
const PF_KTHREAD: u32 = 0x0020_0000;
/// include/uapi/linux/stat.h
const S_IFMT: u16 = 0o170000;
const S_IFREG: u16 = 0o100000;
const O_RDONLY: u32 = 0;
const O_WRONLY: u32 = 1;
/// Smaller files are not weights worth a look (and most reads are of them).
const MIN_READ: i64 = 256 * 1024;

/// (tgid, inode) of model files already reported read. Other files are not
/// kept (a short-lived process's entries would outlive it); the CPU's last
/// file, in `LAST_READ`, spares the runs of faults on one file.
#[repr(C)]
#[derive(Clone, Copy)]
struct ReadKey {
    tgid: u32,
    _pad: u32,
    inode: u64,
}

#[map]
static MODEL_READS: LruHashMap<ReadKey, u8> = LruHashMap::with_max_entries(4096, 0);

/// The file this CPU last looked at for a read, by (tgid, inode).
#[map]
static LAST_READ: PerCpuArray<ReadKey> = PerCpuArray::with_max_entries(1, 0);

/// The last files this CPU found not to be model files (by inode, whoever
/// read them): every new process reads the same large libraries, and
/// looking at their names again cost a table lookup and six kernel reads.
#[repr(C)]
#[derive(Clone, Copy)]
struct NotModels {
    inodes: [u64; NOT_MODELS],
    next: u32,
    _pad: u32,
}

const NOT_MODELS: usize = 8;

#[map]
static RECENT_NOT_MODELS: PerCpuArray<NotModels> = PerCpuArray::with_max_entries(1, 0);

/// What looking at an inode's name found.
#[derive(Clone, Copy)]
enum Looked {
    /// A model file, reported.
    Reported,
    /// Not a model file (not a regular file, or not a model's name).
    NotModel,
    /// Not this task's evidence (a kernel thread, or a process not traced).
    Skipped,
}

/// Longest suffix below, and the suffixes (see files_watch.rs).
const TAIL: usize = 16;
const SUFFIXES: [&[u8]; 5] = [b".safetensors", b".gguf", b".pt", b".onnx", b".ckpt"];
/// Temporary names writers rename into place: Rust's tempfile (`.tmp` and
/// six characters: safetensors' save_file) and Python's tempfile (`tmp` and
/// eight), read from the name's first bytes; and names ending `.tmp`
/// (Chia's plotters write `NAME.plot.2.tmp`), read from its tail ring.
const TEMP_PREFIXES: [&[u8]; 2] = [b".tmp", b"tmp"];
const TEMP_SUFFIX: &[u8] = b".tmp";

/// Whether the `n`-byte name whose last TAIL bytes are in `tail` (as a ring)
/// ends with `s`.
#[inline(always)]
fn tail_ends_with(tail: &[u8; TAIL], n: usize, s: &[u8]) -> bool {
    n >= s.len() && s.iter().enumerate().all(|(i, &c)| tail[(n - s.len() + i) & (TAIL - 1)] == c)
}

#[raw_tracepoint(tracepoint = "writeback_dirty_inode_enqueue")]
pub fn dirty_inode(ctx: RawTracePointContext) -> i32 {
    let _ = on_inode(ctx.arg(0), O_WRONLY);
    0
}

/// TP_PROTO(struct address_space *mapping, pgoff_t index, …).
#[raw_tracepoint(tracepoint = "mm_filemap_get_pages")]
pub fn file_read(ctx: RawTracePointContext) -> i32 {
    let _ = on_read::<false>(ctx.arg(0));
    0
}

/// TP_PROTO(struct address_space *mapping, pgoff_t index).
#[raw_tracepoint(tracepoint = "mm_filemap_fault")]
pub fn file_fault(ctx: RawTracePointContext) -> i32 {
    let _ = on_read::<false>(ctx.arg(0));
    0
}

/// TP_PROTO(struct address_space *mapping, pgoff_t start, pgoff_t end): a
/// fault served from the page cache maps its neighbours without a fault.
#[raw_tracepoint(tracepoint = "mm_filemap_map_pages")]
pub fn file_map_pages(ctx: RawTracePointContext) -> i32 {
    let _ = on_read::<false>(ctx.arg(0));
    0
}

/// The BTF forms: the mapping is a typed pointer, so its inode and size are
/// plain loads, not two probe reads, on a path every buffered read and
/// file fault on the host takes.
#[btf_tracepoint(function = "mm_filemap_get_pages")]
pub fn file_read_btf(ctx: BtfTracePointContext) -> i32 {
    let _ = on_read::<true>(ctx.arg(0));
    0
}

#[btf_tracepoint(function = "mm_filemap_fault")]
pub fn file_fault_btf(ctx: BtfTracePointContext) -> i32 {
    let _ = on_read::<true>(ctx.arg(0));
    0
}

#[btf_tracepoint(function = "mm_filemap_map_pages")]
pub fn file_map_pages_btf(ctx: BtfTracePointContext) -> i32 {
    let _ = on_read::<true>(ctx.arg(0));
    0
}

#[inline(always)]
fn on_read<const BTF: bool>(mapping: u64) -> Option<()> {
    let k = &config().kernel;
    let inode: u64 = load::<_, BTF>(mapping, k.mapping_host)?;
    let size: i64 = load::<_, BTF>(inode, k.inode_size)?;
    if size < MIN_READ {
        return None;
    }
    let key = ReadKey { tgid: (bpf_get_current_pid_tgid() >> 32) as u32, _pad: 0, inode };
    // Faults come in runs on one file: the last file this CPU looked at
    // is checked before the table.
    let last = LAST_READ.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot.
    unsafe {
        if (*last).tgid == key.tgid && (*last).inode == inode {
            return None;
        }
        *last = key;
    }
    let recent = RECENT_NOT_MODELS.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot.
    if unsafe { (*recent).inodes.contains(&inode) } {
        return None;
    }
    // SAFETY: presence check only.
    if unsafe { MODEL_READS.get(&key) }.is_some() {
        return None;
    }
    match on_inode(inode, O_RDONLY)? {
        Looked::Reported => insert_new!(MODEL_READS, table::MODEL_READS, &key, &1),
        // SAFETY: this CPU's slot.
        Looked::NotModel => unsafe {
            let i = (*recent).next as usize % NOT_MODELS;
            (*recent).inodes[i] = inode;
            (*recent).next = (*recent).next.wrapping_add(1);
        },
        Looked::Skipped => {}
    }
    Some(())
}

/// Reports `inode` as opened with `access` if its name is a model file's:
/// what it found, none when it could not tell or not report.
#[inline(always)]
fn on_inode(inode: u64, access: u32) -> Option<Looked> {
    let k = &config().kernel;
    if k.dentry_name == NO_OFFSET || k.dentry_alias == NO_OFFSET {
        return None;
    }
    // Writeback workers dirty inodes too (metadata); only a task's own
    // writes are its evidence.
    let flags: u32 = read_field(current_task(), k.task_flags)?;
    if flags & PF_KTHREAD != 0 || !should_trace((bpf_get_current_pid_tgid() >> 32) as u32) {
        return Some(Looked::Skipped);
    }
    let mode: u16 = read_field(inode, k.inode_mode)?;
    if mode & S_IFMT != S_IFREG {
        return Some(Looked::NotModel);
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
    let matched = SUFFIXES.iter().any(|s| tail_ends_with(&tail, n, s));
    if !matched {
        if access == O_WRONLY {
            let head = read_field::<u32>(name, 0)?.to_le_bytes();
            let temp = TEMP_PREFIXES
                .iter()
                .any(|p| len as usize > p.len() && p.iter().enumerate().all(|(i, &c)| head[i & 3] == c))
                || (len as usize > TEMP_SUFFIX.len() && tail_ends_with(&tail, n, TEMP_SUFFIX));
            if temp {
                temp_written(inode, dentry, name);
            }
        }
        return Some(Looked::NotModel);
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
    Some(Looked::Reported)
}

/// Reports a temporarily named file first written, with where it is.
#[inline(always)]
fn temp_written(inode: u64, dentry: u64, name: u64) -> Option<()> {
    let k = &config().kernel;
    if k.dentry_parent == NO_OFFSET || k.inode_ino == NO_OFFSET {
        return None;
    }
    let mut entry = reserve::<FileOpenEvent>(EventKind::FileOpen)?;
    // SAFETY: reservation sized for FileOpenEvent; user space reads the
    // name up to path_len and, of the TempFile, the slots up to depth.
    let event = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut event.header, EventKind::FileOpen);
    event.flags = O_WRONLY;
    event.source = file_source::TEMP_WRITTEN;
    // SAFETY: the helper bounds the copy to the buffer.
    event.path_len = unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, &mut event.path) }
        .map_or(0, |s| s.len() as u32);
    event.old_path_len = core::mem::size_of::<TempFile>() as u32;
    // SAFETY: TempFile fits in old_path (asserted in tracer-common), whose
    // alignment in the event is 8.
    let place = unsafe { &mut *(event.old_path.as_mut_ptr() as *mut TempFile) };
    place.ino = read_field(inode, k.inode_ino).unwrap_or(0);
    let sb: u64 = read_field(inode, k.inode_sb).unwrap_or(0);
    place.dev = read_field(sb, k.sb_dev).unwrap_or(0);
    // The file system's root is its own parent; its name ("/") is not kept.
    // Unrolled, level by level: older verifiers take straight-line code.
    let mut d = dentry;
    let (mut depth, mut complete) = (0u16, 0u16);
    macro_rules! level {
        ($i:literal) => {
            let parent: u64 = read_field(d, k.dentry_parent).unwrap_or(0);
            let grand: u64 = read_field(parent, k.dentry_parent).unwrap_or(0);
            if parent == 0 || grand == 0 || parent == d || grand == parent {
                complete = u16::from(parent != 0 && grand != 0);
                break;
            }
            if $i == TEMP_DIRS {
                break;
            }
            let pname: u64 = read_field(parent, k.dentry_name + 8).unwrap_or(0);
            let slot = &mut place.dirs[$i % TEMP_DIRS];
            // SAFETY: the helper bounds the copy to the slot.
            if pname == 0 || unsafe { bpf_probe_read_kernel_str_bytes(pname as *const u8, slot) }.is_err() {
                slot[0] = 0;
            }
            depth = $i as u16 + 1;
            d = parent;
        };
    }
    #[allow(clippy::never_loop)]
    loop {
        level!(0);
        level!(1);
        level!(2);
        level!(3);
        level!(4);
        level!(5);
        level!(6);
        break;
    }
    (place.depth, place.complete) = (depth, complete);
    crate::common::submit(entry);
    Some(())
}
