//! Maps, the configuration global and helpers every program uses.

use aya_ebpf::{
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_comm,
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_current_uid_gid, bpf_ktime_get_ns,
        bpf_probe_read_kernel,
    },
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf, ring_buf::RingBufEntry},
};
use tracer_common::{Config, EventHeader, EventKind, NO_OFFSET, counter};

/// Discrete events. User space resizes it before load (`--ring-buffer-kib`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Per-CPU counters, see `tracer_common::counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// With `Config::filter_tgids`, the processes traced; fork adds children so a
/// whole tree is followed, exit removes them.
#[map]
pub static TRACED_TGIDS: HashMap<u32, u8> = HashMap::with_max_entries(16384, 0);

/// Switches user space flips while the programs run, see
/// `tracer_common::control`.
#[map]
pub static CONTROL: Array<u32> = Array::with_max_entries(tracer_common::control::COUNT, 0);

#[inline(always)]
pub fn control(slot: u32) -> bool {
    CONTROL.get(slot).is_some_and(|v| *v != 0)
}

/// Set by user space before load (`EbpfLoader::override_global`).
#[unsafe(no_mangle)]
pub static CONFIG: Config = Config::DEFAULT;

/// Reads the configuration through a volatile load so the compiler cannot
/// fold the compile-time default into the program.
#[inline(always)]
pub fn config() -> &'static Config {
    // SAFETY: CONFIG is a valid static; the volatile read of its address keeps
    // LLVM from treating the fields as constants.
    unsafe { &*core::ptr::read_volatile(&&raw const CONFIG) }
}

/// include/uapi/linux/bpf.h: create only. Two CPUs creating the same key at
/// once must not replace each other's element (that would zero its counts).
pub const BPF_NOEXIST: u64 = 1;
/// include/uapi/linux/bpf.h: replace only.
pub const BPF_EXIST: u64 = 2;

/// Adds `key` to an LRU table that lacks it and counts the addition in
/// `COUNTERS[TABLE_INSERTED_BASE + table]`: what the table neither holds
/// nor had removed was evicted (`tracer_common::table`).
macro_rules! insert_new {
    ($map:expr, $table:expr, $key:expr, $value:expr) => {
        if $map.insert($key, $value, $crate::common::BPF_NOEXIST).is_ok() {
            $crate::common::count(tracer_common::counter::TABLE_INSERTED_BASE + $table);
        }
    };
}

/// Sets `key` in an LRU table, counting it when it is new: in-flight
/// entries keyed by thread, where a stale one (its exit was not seen) is
/// replaced.
macro_rules! upsert {
    ($map:expr, $table:expr, $key:expr, $value:expr) => {
        if $map.insert($key, $value, $crate::common::BPF_NOEXIST).is_ok() {
            $crate::common::count(tracer_common::counter::TABLE_INSERTED_BASE + $table);
        } else {
            let _ = $map.insert($key, $value, $crate::common::BPF_EXIST);
        }
    };
}

/// Removes `key` from an LRU table, counting the removal when it was there.
macro_rules! remove_counted {
    ($map:expr, $table:expr, $key:expr) => {
        if $map.remove($key).is_ok() {
            $crate::common::count(tracer_common::counter::TABLE_DELETED_BASE + $table);
        }
    };
}

#[inline(always)]
pub fn count_n(slot: u32, n: u64) {
    if let Some(ptr) = COUNTERS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *ptr += n };
    }
}

#[inline(always)]
pub fn count(slot: u32) {
    if let Some(ptr) = COUNTERS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *ptr += 1 };
    }
}

/// Reserves a record in `EVENTS`; a full buffer counts a drop of `kind`.
#[inline(always)]
pub fn reserve<T: 'static>(kind: EventKind) -> Option<RingBufEntry<T>> {
    if control(tracer_common::control::STOPPED) {
        return None;
    }
    let entry = EVENTS.reserve::<T>(0);
    if entry.is_none() {
        count(counter::DROPPED_BASE + kind as u32);
    }
    entry
}

/// Submits a record, waking the reader only once the ring holds a batch
/// (`Config::wake_bytes`); below that, user space finds the record on its
/// next poll of the ring (every few milliseconds). A wakeup is an
/// inter-processor interrupt, in a virtual machine an exit to the
/// hypervisor: it cost more than all the rest of a process or connection
/// record's work.
#[inline(always)]
pub fn submit<T>(entry: RingBufEntry<T>) {
    /// include/uapi/linux/bpf.h
    const BPF_RB_NO_WAKEUP: u64 = 1;
    const BPF_RB_FORCE_WAKEUP: u64 = 2;
    const BPF_RB_AVAIL_DATA: u64 = 0;
    let flags = if EVENTS.query(BPF_RB_AVAIL_DATA) >= config().wake_bytes {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(flags);
}

/// Whether the current task's events should be reported, given the filters.
#[inline(always)]
pub fn should_trace(tgid: u32) -> bool {
    let cfg = config();
    if tgid == cfg.tracer_tgid {
        return false;
    }
    if cfg.filter_cgroup_id != 0 {
        // The task's ancestor at the filter's depth (itself when it is at
        // that depth): the filter cgroup for tasks anywhere in its subtree.
        // SAFETY: helper with a plain integer argument.
        if unsafe { bpf_get_current_ancestor_cgroup_id(cfg.filter_cgroup_level as i32) }
            != cfg.filter_cgroup_id
        {
            return false;
        }
    }
    if cfg.filter_tgids != 0 {
        // SAFETY: read-only lookup of a plain value.
        return unsafe { TRACED_TGIDS.get(&tgid) }.is_some();
    }
    true
}

/// Reads a kernel value at `base + offset`, or `None` when the offset is
/// unknown on this kernel or the read faults.
#[inline(always)]
pub fn read_field<T: Copy>(base: u64, offset: u32) -> Option<T> {
    if offset == NO_OFFSET || base == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel validates the address.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) }.ok()
}

/// Reads a kernel value at `base + offset` where `base` is a pointer the
/// verifier knows by its BTF type (a BTF program's argument, or a pointer
/// loaded from one): a plain load, which the kernel turns into one that
/// cannot fault. `offset` must be a known constant: it is, read from the
/// frozen configuration.
#[inline(always)]
pub fn load_btf<T: Copy>(base: u64, offset: u32) -> Option<T> {
    if offset == NO_OFFSET {
        return None;
    }
    // SAFETY: the verifier checks the access against the type and the
    // kernel catches a fault in it (a bad pointer reads as zero).
    Some(unsafe { core::ptr::read_volatile((base + offset as u64) as *const T) })
}

/// A kernel field of a typed pointer (BTF programs) or through a probe read.
#[inline(always)]
pub fn load<T: Copy, const BTF: bool>(base: u64, offset: u32) -> Option<T> {
    if BTF { load_btf(base, offset) } else { read_field(base, offset) }
}

/// Copies `min(len, N - 1)` bytes of user memory at `src` into `dst`;
/// returns the count copied. `N` is a power of two: the mask is what proves
/// the bound to the verifier.
#[inline(always)]
pub fn read_user_bounded<const N: usize>(dst: &mut [u8; N], src: u64, len: u64) -> Option<u64> {
    let len = if len >= N as u64 { N as u64 - 1 } else { len };
    // Through the stack, so the compiler cannot fold the mask into the
    // comparison above: older verifiers (6.1, 5.10) lose a bound proven on
    // one register copy and reject the read as possibly negative in size.
    // SAFETY: a local.
    let len = unsafe { core::ptr::read_volatile(&len) } & (N as u64 - 1);
    // SAFETY: dst has N bytes and len < N; the helper validates src.
    let ret = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_user(
            dst.as_mut_ptr().cast(),
            len as u32,
            src as *const core::ffi::c_void,
        )
    };
    (ret == 0).then_some(len)
}

/// Argument `i` of a syscall tracepoint record: they are kept as
/// `unsigned long args[6]` (kernel/trace/trace.h: syscall_trace_enter).
#[inline(always)]
pub fn syscall_arg(ctx: &aya_ebpf::programs::TracePointContext, i: u32) -> Option<u64> {
    let base = config().tp.syscall_arg0;
    if base == NO_OFFSET {
        return None;
    }
    crate::process::read_tp(ctx, base + 8 * i)
}

/// Reads a `T` from user memory; `None` for a null or unreadable address.
#[inline(always)]
pub fn read_user<T: Copy>(addr: u64) -> Option<T> {
    if addr == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_user validates the address.
    unsafe { aya_ebpf::helpers::bpf_probe_read_user(addr as *const T) }.ok()
}

pub fn current_task() -> u64 {
    // SAFETY: helper with no arguments.
    unsafe { bpf_get_current_task() }
}

/// Fills the common header for the current task.
#[inline(always)]
pub fn fill_header(header: &mut EventHeader, kind: EventKind) {
    let cfg = config();
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    let task = current_task();
    let leader: u64 = read_field(task, cfg.kernel.task_group_leader).unwrap_or(0);
    let parent: u64 = read_field(task, cfg.kernel.task_real_parent).unwrap_or(0);
    header.kind = kind as u32;
    header.pid = pid_tgid as u32;
    header.tgid = (pid_tgid >> 32) as u32;
    header.ppid = read_field::<i32>(parent, cfg.kernel.task_tgid).unwrap_or(0) as u32;
    header.uid = uid_gid as u32;
    header.gid = (uid_gid >> 32) as u32;
    // SAFETY: helpers with no arguments.
    header.ktime_ns = unsafe { bpf_ktime_get_ns() };
    header.start_boottime_ns = read_field(leader, cfg.kernel.task_start_boottime).unwrap_or(0);
    // SAFETY: helper with no arguments.
    header.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    header.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    header.sid = session_of(task).unwrap_or(0);
    header._pad = 0;
}

/// include/linux/pid_types.h: enum pid_type.
const PIDTYPE_SID: u32 = 3;

/// The host pid of a task's session leader:
/// task->signal->pids[PIDTYPE_SID]->numbers[0].nr.
#[inline(always)]
fn session_of(task: u64) -> Option<u32> {
    let k = &config().kernel;
    if k.signal_pids == NO_OFFSET {
        return None;
    }
    let signal: u64 = read_field(task, k.task_signal)?;
    let pid: u64 = read_field(signal, k.signal_pids + PIDTYPE_SID * 8)?;
    read_field::<i32>(pid, k.pid_numbers).map(|nr| nr as u32)
}
