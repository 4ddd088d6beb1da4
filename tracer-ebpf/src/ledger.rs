//! High-rate activity, aggregated in the kernel per process and drained by
//! user space on an interval: CPU time (sched_switch), syscall counts by
//! number (sys_enter), socket bytes (sock_send_length / sock_recv_length,
//! or kprobes on the inet send and receive handlers where those are absent).
//! These are raw tracepoints, whose arguments are the TP_PROTO arguments:
//! they skip building a perf record per event. Nothing here writes to the
//! ring buffer but setsid.

use core::sync::atomic::{Ordering, compiler_fence};

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id},
    macros::{btf_tracepoint, kprobe, kretprobe, map, raw_tracepoint, tracepoint},
    maps::{Array, HashMap, LruHashMap, LruPerCpuHashMap, PerCpuArray},
    programs::{
        BtfTracePointContext, ProbeContext, RawTracePointContext, RetProbeContext, TracePointContext,
    },
};
use tracer_common::{
    CPU_SLOTS, CpuSlot, CpuSlots, EVICTED_PER_CPU, EventKind, EvictedHead, FlowKey, FlowStats, NO_OFFSET,
    ProcStats, SetSidEvent, config_flags, control, counter, table,
};

use crate::{
    common::{config, count, current_task, fill_header, load, load_btf, read_field, reserve, should_trace},
    process::read_tp,
};

/// Bytes per process and remote endpoint.
#[map]
pub static FLOWS: LruPerCpuHashMap<FlowKey, FlowStats> = LruPerCpuHashMap::with_max_entries(32768, 0);

#[map]
static PROC_STATS: LruPerCpuHashMap<u32, ProcStats> = LruPerCpuHashMap::with_max_entries(16384, 0);

/// tgid << 32 | syscall number -> calls.
#[map]
static SYSCALL_COUNTS: LruPerCpuHashMap<u64, u64> = LruPerCpuHashMap::with_max_entries(65536, 0);

/// The processes each CPU last switched between, with the time charged to
/// them there since they took the slot (see `CpuSlots`).
#[map]
static CPU_SLOTS_MAP: PerCpuArray<CpuSlots> = PerCpuArray::with_max_entries(1, 0);

/// Each CPU's log of the slots it gave to another process, which user
/// space maps and empties (see `EvictedHead`): moving a slot out costs two
/// array writes where adding it to `PROC_STATS` cost a hash lookup, and an
/// LRU insert for a process not yet there (every short-lived one). Both
/// are sized by the possible CPUs at load.
#[map]
static EVICTED_SLOTS: Array<CpuSlot> = Array::with_max_entries(EVICTED_PER_CPU, BPF_F_MMAPABLE);

#[map]
static EVICTED_HEADS: Array<EvictedHead> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Per thread, its `se.sum_exec_runtime` when last charged: for the raw
/// switch program, and for tasks outside the fair class.
#[map]
static LAST_RUNTIME: LruHashMap<u32, u64> = LruHashMap::with_max_entries(65536, 0);

/// include/linux/socket.h
const MSG_PEEK: i32 = 2;

#[inline(always)]
pub fn stats_of(tgid: u32) -> Option<*mut ProcStats> {
    if let Some(p) = PROC_STATS.get_ptr_mut(&tgid) {
        return Some(p);
    }
    insert_new!(PROC_STATS, table::PROC_STATS, &tgid, &ProcStats::default());
    PROC_STATS.get_ptr_mut(&tgid)
}

/// Fires in the context of the task being switched out (kernel/sched/core.c:
/// __schedule calls trace_sched_switch before context_switch, after
/// pick_next_task has updated the task's runtime).
///
/// The BTF form: its arguments are typed kernel pointers, so the task's
/// fields are plain loads (the kernel's exception table catches a bad one)
/// instead of a bpf_probe_read_kernel call each, and a fair-class task's
/// slice is read from the task itself, with no per-thread table.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch_btf(ctx: BtfTracePointContext) -> i32 {
    // TP_PROTO(bool preempt, struct task_struct *prev, …): the outgoing
    // task waits unless it was preempted.
    let preempt: u64 = ctx.arg(0);
    let prev: u64 = ctx.arg(1);
    let _ = charge_slice(prev, preempt & 0xff == 0);
    0
}

/// The raw form, where BTF programs cannot attach: the same charge through
/// a per-thread table of the runtime last charged.
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn sched_switch(ctx: RawTracePointContext) -> i32 {
    let preempt: u64 = ctx.arg(0);
    try_switch(preempt & 0xff == 0);
    0
}

/// include/uapi/linux/sched.h: the fair class's policies.
const SCHED_NORMAL: u32 = 0;
const SCHED_BATCH: u32 = 3;
const SCHED_IDLE: u32 = 5;
/// include/linux/sched.h
const PF_EXITING: u32 = 0x4;

/// Whether the task's time since the scheduler last picked it is its
/// `se.sum_exec_runtime - se.prev_sum_exec_runtime`: for the fair class,
/// which sets the latter at every pick (kernel/sched/fair.c:
/// set_next_entity); not for realtime or sched_ext tasks.
#[inline(always)]
fn fair_class<const BTF: bool>(task: u64) -> bool {
    let k = &config().kernel;
    k.task_prev_sum_exec_runtime != NO_OFFSET
        && load::<u32, BTF>(task, k.task_policy)
            .is_some_and(|p| matches!(p, SCHED_NORMAL | SCHED_BATCH | SCHED_IDLE))
}

/// An exiting task was charged by the exit hook: its last switches are
/// charged from where that charge ended.
#[inline(always)]
fn exiting<const BTF: bool>(task: u64) -> bool {
    load::<u32, BTF>(task, config().kernel.task_flags).is_none_or(|f| f & PF_EXITING != 0)
}

/// The slice `prev` ran, from its own account (fair class), else from the
/// per-thread table.
#[inline(always)]
fn charge_slice(prev: u64, waits: bool) -> Option<()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // tid 0 is the idle task.
    if pid_tgid as u32 == 0 {
        return None;
    }
    let tgid = (pid_tgid >> 32) as u32;
    if !should_trace(tgid) {
        return None;
    }
    if !fair_class::<true>(prev) {
        return try_switch(waits);
    }
    let k = &config().kernel;
    let runtime: u64 = load_btf(prev, k.task_sum_exec_runtime)?;
    let picked: u64 = load_btf(prev, k.task_prev_sum_exec_runtime)?;
    // An exiting thread's first switch after its exit hook is charged from
    // where that charge ended, not from its last pick: the hook's figure
    // lags (a short-lived process's whole run may be after it), and a pick
    // since then would leave the time between the two uncharged.
    let since = if exiting::<true>(prev) { exit_charged(pid_tgid as u32).unwrap_or(picked) } else { picked };
    add_cpu_here(tgid, runtime.saturating_sub(since), waits)
}

/// A thread this CPU charged at its exit hook (see `charge_current_slice`),
/// with its runtime then. Its next switch is on this CPU: a running task
/// moves to another only after it is switched out.
#[repr(C)]
#[derive(Clone, Copy)]
struct ExitCharge {
    tid: u32,
    _pad: u32,
    runtime: u64,
}

#[map]
static EXIT_CHARGES: PerCpuArray<ExitCharge> = PerCpuArray::with_max_entries(1, 0);

/// Where the exit hook's charge of thread `tid` on this CPU ended, taken.
#[inline(always)]
fn exit_charged(tid: u32) -> Option<u64> {
    let c = EXIT_CHARGES.get_ptr_mut(0)?;
    // SAFETY: this CPU's value; nothing else runs on this CPU meanwhile.
    unsafe {
        if (*c).tid != tid {
            return None;
        }
        (*c).tid = 0;
        Some((*c).runtime)
    }
}

/// Takes this CPU's slot of `tgid` (its time, which leaves the slot free),
/// for the process's exit record to carry.
#[inline(always)]
pub fn take_slot(tgid: u32) -> (u64, u64) {
    let Some(c) = CPU_SLOTS_MAP.get_ptr_mut(0) else { return (0, 0) };
    // SAFETY: this CPU's values; nothing else runs on this CPU meanwhile.
    unsafe {
        for i in 0..CPU_SLOTS {
            let slot = &mut (*c).slots[i];
            if slot.tgid == tgid {
                let taken = (slot.cpu_ns, slot.waits);
                *slot = CpuSlot::default();
                return taken;
            }
        }
    }
    (0, 0)
}

/// Charges a switch on this CPU: in the CPU's slot for the process when it
/// has one (a per-CPU array, no hashing), else in a free slot, else in one
/// taken from the process that had it longest ago, whose time goes to the
/// CPU's log of evicted slots (`PROC_STATS` when the log is full).
#[inline(always)]
fn add_cpu_here(tgid: u32, ns: u64, waits: bool) -> Option<()> {
    if ns == 0 && !waits {
        return Some(());
    }
    let Some(c) = CPU_SLOTS_MAP.get_ptr_mut(0) else { return add_cpu(tgid, ns, waits) };
    // SAFETY: this CPU's value; nothing else runs on this CPU meanwhile.
    unsafe {
        let mut free = CPU_SLOTS;
        for i in 0..CPU_SLOTS {
            let slot = &mut (*c).slots[i];
            if slot.tgid == tgid {
                slot.cpu_ns += ns;
                slot.waits += waits as u64;
                return Some(());
            }
            if slot.tgid == 0 && free == CPU_SLOTS {
                free = i;
            }
        }
        let i = if free < CPU_SLOTS {
            free
        } else {
            let i = (*c).next as usize % CPU_SLOTS;
            (*c).next = (*c).next.wrapping_add(1);
            i
        };
        let old = (*c).slots[i];
        (*c).slots[i] = CpuSlot { tgid, _pad: 0, cpu_ns: ns, waits: waits as u64 };
        if old.tgid != 0 && (old.cpu_ns != 0 || old.waits != 0) && !log_evicted(&old) {
            flush_slot(&old);
        }
    }
    Some(())
}

/// Appends a slot this CPU gave away to its log; false when the log is
/// full (or not sized for this CPU), for the caller to keep it elsewhere.
#[inline(always)]
fn log_evicted(old: &CpuSlot) -> bool {
    // SAFETY: a helper with no arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(head) = EVICTED_HEADS.get_ptr_mut(cpu) else { return false };
    // SAFETY: this CPU's head and entries: only this CPU writes them (with
    // nothing else running on it meanwhile) and user space reads them;
    // user space writes only `taken`, read once here.
    unsafe {
        let written = (*head).written;
        let taken = core::ptr::read_volatile(&(*head).taken);
        if written.wrapping_sub(taken) >= u64::from(EVICTED_PER_CPU) {
            return false;
        }
        let at = cpu.wrapping_mul(EVICTED_PER_CPU) + (written as u32 & (EVICTED_PER_CPU - 1));
        let Some(entry) = EVICTED_SLOTS.get_ptr_mut(at) else { return false };
        *entry = *old;
        // The entry before the count that shows it: x86 keeps stores in
        // order (the tracer is built and tested for x86_64; a weaker CPU
        // would need a release store here).
        compiler_fence(Ordering::Release);
        core::ptr::write_volatile(&mut (*head).written, written + 1);
    }
    true
}

#[inline(always)]
fn flush_slot(old: &CpuSlot) -> Option<()> {
    let stats = stats_of(old.tgid)?;
    // SAFETY: this CPU's copy of a per-CPU value.
    unsafe {
        (*stats).cpu_ns += old.cpu_ns;
        (*stats).waits += old.waits;
    }
    Some(())
}

#[inline(always)]
fn add_cpu(tgid: u32, ns: u64, waits: bool) -> Option<()> {
    if ns == 0 && !waits {
        return Some(());
    }
    let stats = stats_of(tgid)?;
    // SAFETY: this CPU's copy of a per-CPU value.
    unsafe {
        (*stats).cpu_ns += ns;
        (*stats).waits += waits as u64;
    }
    Some(())
}

/// MXCSR's rounding-control bits (13-14): 0 is round-to-nearest, the
/// default every thread starts with.
const MXCSR_ROUNDING: u32 = 0x6000;

/// `x86_fpu:x86_fpu_regs_deactivated` fires when a task's FPU registers
/// have been saved to memory, at context switch in the task's context
/// (arch/x86/include/asm/fpu/sched.h: switch_fpu_prepare). RandomX sets the
/// SSE rounding mode from its program on every floating-point step, so a
/// miner's threads are mostly caught off the default; ordinary programs
/// (JITs, numpy) almost never. Two kernel reads for every task, a
/// per-process count only when the mode is off the default.
#[btf_tracepoint(function = "x86_fpu_regs_deactivated")]
pub fn fpu_regs_deactivated_btf(ctx: BtfTracePointContext) -> i32 {
    let _ = count_rounding::<true>(ctx.arg(0));
    0
}

/// The raw form, where BTF programs cannot attach.
#[raw_tracepoint(tracepoint = "x86_fpu_regs_deactivated")]
pub fn fpu_regs_deactivated(ctx: RawTracePointContext) -> i32 {
    let _ = count_rounding::<false>(ctx.arg(0));
    0
}

#[inline(always)]
fn count_rounding<const BTF: bool>(fpu: u64) -> Option<()> {
    let k = &config().kernel;
    let state = if k.fpu_fpstate == NO_OFFSET { fpu } else { load::<u64, BTF>(fpu, k.fpu_fpstate)? };
    let mxcsr: u32 = load::<u32, BTF>(state, k.fpu_mxcsr)?;
    if mxcsr & MXCSR_ROUNDING == 0 {
        return None;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !should_trace(tgid) {
        return None;
    }
    let stats = stats_of(tgid)?;
    // SAFETY: this CPU's copy of a per-CPU value.
    unsafe { (*stats).fpu_rounding += 1 };
    Some(())
}

/// An mmap asking for huge pages, by the current process.
#[inline(always)]
pub fn count_hugetlb_mmap() -> Option<()> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !should_trace(tgid) {
        return None;
    }
    let stats = stats_of(tgid)?;
    // SAFETY: this CPU's copy of a per-CPU value.
    unsafe { (*stats).hugetlb_mmaps += 1 };
    Some(())
}

/// Charges the current thread's CPU time now (at exit, so the process's
/// final account includes its last run; the scheduler's figure may lag by
/// up to a tick, which the thread's last switch then adds). With the BTF
/// switch program, a fair-class thread is charged its slice so far in this
/// CPU's slot, and `EXIT_CHARGES` tells its next switch where this charge
/// ended.
#[inline(always)]
pub fn charge_current_slice() {
    let task = current_task();
    if !crate::common::control(control::SLICE_CPU) || !fair_class::<false>(task) {
        let _ = try_switch(false);
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !should_trace(tgid) {
        return;
    }
    let k = &config().kernel;
    let (Some(runtime), Some(picked)) = (
        read_field::<u64>(task, k.task_sum_exec_runtime),
        read_field::<u64>(task, k.task_prev_sum_exec_runtime),
    ) else {
        return;
    };
    let Some(c) = EXIT_CHARGES.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's value; nothing else runs on this CPU meanwhile.
    unsafe { *c = ExitCharge { tid: pid_tgid as u32, _pad: 0, runtime } };
    let _ = add_cpu_here(tgid, runtime.saturating_sub(picked), false);
}

/// Charges the current thread's CPU time since it was last charged, from the
/// scheduler's own account (`se.sum_exec_runtime`, include/linux/sched.h),
/// which, unlike a clock, leaves out time stolen by the hypervisor and
/// spent in interrupts, as /proc and getrusage do.
fn try_switch(waits: bool) -> Option<()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    // tid 0 is the idle task.
    if tid == 0 {
        return None;
    }
    let tgid = (pid_tgid >> 32) as u32;
    if !should_trace(tgid) {
        return None;
    }
    let k = &config().kernel;
    let task = current_task();
    let runtime: u64 = read_field(task, k.task_sum_exec_runtime)?;
    // Updated in place: an LRU map update allocates a new node each time,
    // which at every context switch costs more than the rest together.
    let last = match LAST_RUNTIME.get_ptr_mut(&tid) {
        // SAFETY: this thread's entry; only its own CPU writes it now.
        Some(slot) => unsafe { core::mem::replace(&mut *slot, runtime) },
        // First seen: a thread born after the tracer started is charged its
        // whole runtime; an older one from now on.
        None => {
            upsert!(LAST_RUNTIME, table::LAST_RUNTIME, &tid, &runtime);
            let started: u64 = read_field(task, k.task_start_time).unwrap_or(0);
            if started >= config().started_ns { 0 } else { runtime }
        }
    };
    add_cpu_here(tgid, runtime.saturating_sub(last), waits)
}

/// `sched:sched_process_free`, fired once a dead thread's task_struct is
/// released (kernel/exit.c: delayed_put_task_struct), after its last
/// context switch: its runtime entry goes, so the table holds live threads
/// only and a reused tid starts from nothing.
#[tracepoint(category = "sched", name = "sched_process_free")]
pub fn sched_process_free(ctx: TracePointContext) -> u32 {
    if let Some(tid) = read_tp::<i32>(&ctx, config().tp.free_pid) {
        remove_counted!(LAST_RUNTIME, table::LAST_RUNTIME, &(tid as u32));
    }
    0
}

/// include/trace/events/syscalls.h: TP_PROTO(struct pt_regs *regs, long id).
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn raw_sys_enter(ctx: RawTracePointContext) -> i32 {
    try_sys_enter(&ctx);
    0
}

fn try_sys_enter(ctx: &RawTracePointContext) -> Option<()> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !should_trace(tgid) {
        return None;
    }
    let stats = stats_of(tgid)?;
    // SAFETY: this CPU's copy of a per-CPU value.
    unsafe { (*stats).syscalls += 1 };
    let cfg = config();
    if cfg.flags & config_flags::SYSCALL_HISTOGRAM == 0 {
        return Some(());
    }
    let nr: i64 = ctx.arg(1);
    let key = ((tgid as u64) << 32) | (nr as u32) as u64;
    if SYSCALL_COUNTS.get_ptr_mut(&key).is_none() {
        insert_new!(SYSCALL_COUNTS, table::SYSCALL_COUNTS, &key, &0);
    }
    let count = SYSCALL_COUNTS.get_ptr_mut(&key)?;
    // SAFETY: this CPU's copy.
    unsafe { *count += 1 };
    Some(())
}

#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn sock_send_length(ctx: RawTracePointContext) -> i32 {
    try_sock_length(&ctx, true);
    0
}

#[raw_tracepoint(tracepoint = "sock_recv_length")]
pub fn sock_recv_length(ctx: RawTracePointContext) -> i32 {
    try_sock_length(&ctx, false);
    0
}

/// net/socket.c: sock_sendmsg/sock_recvmsg report the length in the
/// caller's context. include/trace/events/sock.h (sock_msg_length):
/// TP_PROTO(struct sock *sk, int ret, int flags); `ret` is bytes or -errno.
fn try_sock_length(ctx: &RawTracePointContext, send: bool) -> Option<()> {
    if !send && ctx.arg::<u64>(2) as i32 & MSG_PEEK != 0 {
        return None;
    }
    account_bytes(ctx.arg(0), ctx.arg::<u64>(1) as i32, send)
}

/// Kernels before 6.3 have no sock_*_length tracepoints. There the same
/// lengths come from the inet protocol handlers every send and receive of
/// an IPv4/IPv6 socket goes through (net/socket.c: sock_sendmsg_nosec and
/// sock_recvmsg_nosec call them, for syscalls and io_uring alike), as a
/// kprobe at entry (the socket) and a kretprobe at return (the length).
#[repr(C)]
#[derive(Clone, Copy)]
struct SockCall {
    sk: u64,
    peek: u32,
    _pad: u32,
}

/// Thread id -> the inet send or receive it is in. An entry whose return
/// was missed is replaced by the thread's next call, or removed when the
/// thread is freed.
#[map]
static SOCK_CALLS: HashMap<u32, SockCall> = HashMap::with_max_entries(16384, 0);

/// inet_sendmsg / inet6_sendmsg (struct socket *sock, struct msghdr *msg,
/// size_t size), and inet_recvmsg / inet6_recvmsg (…, int flags).
#[kprobe]
pub fn sock_send_enter(ctx: ProbeContext) -> u32 {
    let _ = enter_sock_call(&ctx, false);
    0
}

#[kprobe]
pub fn sock_recv_enter(ctx: ProbeContext) -> u32 {
    let flags = ctx.arg::<u64>(3).unwrap_or(0) as i32;
    let _ = enter_sock_call(&ctx, flags & MSG_PEEK != 0);
    0
}

#[kretprobe]
pub fn sock_send_return(ctx: RetProbeContext) -> u32 {
    let _ = return_sock_call(&ctx, true);
    0
}

#[kretprobe]
pub fn sock_recv_return(ctx: RetProbeContext) -> u32 {
    let _ = return_sock_call(&ctx, false);
    0
}

#[inline(always)]
fn enter_sock_call(ctx: &ProbeContext, peek: bool) -> Option<()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !should_trace((pid_tgid >> 32) as u32) {
        return None;
    }
    let sock: u64 = ctx.arg(0)?;
    let sk: u64 = read_field(sock, config().kernel.socket_sk)?;
    let call = SockCall { sk, peek: peek as u32, _pad: 0 };
    let tid = pid_tgid as u32;
    // SAFETY: presence check only.
    if unsafe { SOCK_CALLS.get(&tid) }.is_some() {
        count(counter::SOCK_RETURNS_MISSED);
    }
    if SOCK_CALLS.insert(&tid, &call, 0).is_err() {
        count(counter::SOCK_CALLS_FULL);
    }
    Some(())
}

#[inline(always)]
fn return_sock_call(ctx: &RetProbeContext, send: bool) -> Option<()> {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: copied out before removal.
    let call = unsafe { SOCK_CALLS.get(&tid) }.copied()?;
    let _ = SOCK_CALLS.remove(&tid);
    if call.peek != 0 {
        return None;
    }
    account_bytes(call.sk, ctx.ret::<u64>() as i32, send)
}

/// A freed thread's call can no longer return. Part of the fallback, so
/// kernels with the tracepoints pay nothing for it at every thread's end.
#[tracepoint(category = "sched", name = "sched_process_free")]
pub fn sock_calls_free(ctx: TracePointContext) -> u32 {
    if let Some(tid) = read_tp::<i32>(&ctx, config().tp.free_pid) {
        let _ = SOCK_CALLS.remove(&(tid as u32));
    }
    0
}

/// Charges `ret` bytes (or nothing for -errno) sent or received on `sk` to
/// the current process and its flow to the socket's peer.
#[inline(always)]
fn account_bytes(sk: u64, ret: i32, send: bool) -> Option<()> {
    if ret <= 0 {
        return None;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !should_trace(tgid) {
        return None;
    }
    let stats = stats_of(tgid)?;
    // SAFETY: this CPU's copy of a per-CPU value.
    unsafe {
        if send {
            (*stats).tx_bytes += ret as u64;
            (*stats).tx_calls += 1;
        } else {
            (*stats).rx_bytes += ret as u64;
            (*stats).rx_calls += 1;
        }
    }
    let key = flow_key(tgid, sk)?;
    if FLOWS.get_ptr_mut(&key).is_none() {
        insert_new!(FLOWS, table::FLOWS, &key, &FlowStats::default());
    }
    let flow = FLOWS.get_ptr_mut(&key)?;
    // SAFETY: this CPU's copy of a per-CPU value.
    unsafe {
        if send {
            (*flow).tx_bytes += ret as u64;
            (*flow).tx_calls += 1;
        } else {
            (*flow).rx_bytes += ret as u64;
            (*flow).rx_calls += 1;
        }
    }
    Some(())
}

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// The remote endpoint of an inet socket (include/net/sock.h: sock_common).
#[inline(always)]
fn flow_key(tgid: u32, sk: u64) -> Option<FlowKey> {
    let k = &config().kernel;
    let family: u16 = read_field(sk, k.sk_family)?;
    if family != AF_INET && family != AF_INET6 {
        return None;
    }
    let mut key = FlowKey { tgid, family, protocol: 0, port: 0, _pad: 0, addr: [0; 16], _pad2: 0 };
    key.protocol = read_field(sk, k.sock_protocol).unwrap_or(0);
    key.port = u16::from_be(read_field(sk, k.sk_dport).unwrap_or(0));
    if family == AF_INET {
        let a: [u8; 4] = read_field(sk, k.sk_daddr).unwrap_or([0; 4]);
        key.addr[..4].copy_from_slice(&a);
    } else {
        key.addr = read_field(sk, k.sk_v6_daddr).unwrap_or([0; 16]);
    }
    // An unconnected socket has no peer: keep it as one "no peer" flow.
    if key.port == 0 {
        key.family = 0;
        key.addr = [0; 16];
    }
    Some(key)
}

/// A new session marks the root of a process tree (daemons, services,
/// login sessions, container inits).
#[tracepoint(category = "syscalls", name = "sys_exit_setsid")]
pub fn sys_exit_setsid(ctx: TracePointContext) -> u32 {
    try_setsid(&ctx);
    0
}

fn try_setsid(ctx: &TracePointContext) -> Option<()> {
    let ret: i64 = read_tp(ctx, config().tp.setsid_ret)?;
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if ret <= 0 || !should_trace(tgid) {
        return None;
    }
    let mut entry = reserve::<SetSidEvent>(EventKind::SetSid)?;
    // SAFETY: reservation sized for SetSidEvent; all fields written.
    let event = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut event.header, EventKind::SetSid);
    // `ret` is the sid in the caller's pid namespace (1 for a container's
    // init); the caller is the new session's leader, so its host tgid is
    // the sid every other record uses.
    event.sid = tgid;
    event._pad = 0;
    crate::common::submit(entry);
    Some(())
}
