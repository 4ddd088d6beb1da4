//! Process lifecycle: exec, fork (processes, not threads) and exit.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel_str_bytes},
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use tracer_common::{EventKind, ExecEvent, ExitEvent, FILENAME_LEN, ForkEvent, counter, exec_flags};

use crate::common::{
    TRACED_TGIDS, config, count, current_task, fill_header, read_field, read_user_bounded, reserve,
    should_trace,
};

/// `sched:sched_process_exec`, fired in the new image's context once exec has
/// succeeded (fs/exec.c: exec_binprm). The argument block is read from the new
/// mm (`mm->arg_start..arg_end`), so short-lived programs keep their argv.
#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    try_exec(&ctx);
    0
}

fn try_exec(ctx: &TracePointContext) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !should_trace(tgid) {
        return;
    }
    let Some(mut entry) = reserve::<ExecEvent>(EventKind::Exec) else { return };
    // SAFETY: the reservation is sized for ExecEvent; every field the user
    // side reads is written below before submit.
    let event = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut event.header, EventKind::Exec);
    let cfg = config();
    event.flags = 0;
    event.old_pid = read_tp::<i32>(ctx, cfg.tp.exec_old_pid).unwrap_or(0) as u32;

    // __data_loc: low 16 bits offset of the string in the record, high 16 its
    // length (include/trace/trace_events.h).
    event.filename_len = 0;
    if let Some(loc) = read_tp::<u32>(ctx, cfg.tp.exec_filename) {
        let src = ctx.as_ptr() as u64 + (loc & 0xffff) as u64;
        // SAFETY: bpf_probe_read_kernel_str validates the address.
        match unsafe { bpf_probe_read_kernel_str_bytes(src as *const u8, &mut event.filename) } {
            Ok(bytes) => {
                event.filename_len = bytes.len() as u16;
                if (loc >> 16) as usize > FILENAME_LEN {
                    event.flags |= exec_flags::FILENAME_TRUNCATED;
                }
            }
            Err(_) => count(counter::READ_ERRORS),
        }
    }

    event.argv_len = 0;
    event.argv_full_len = 0;
    let task = current_task();
    let mm: u64 = read_field(task, cfg.kernel.task_mm).unwrap_or(0);
    let start: Option<u64> = read_field(mm, cfg.kernel.mm_arg_start);
    let end: Option<u64> = read_field(mm, cfg.kernel.mm_arg_end);
    match (start, end) {
        (Some(start), Some(end)) if end > start => {
            let full = end - start;
            // A block of exactly ARGV_LEN bytes loses its last NUL and is
            // flagged truncated.
            let read = read_user_bounded(&mut event.argv, start, full);
            if let Some(len) = read {
                event.argv_len = len as u16;
                event.argv_full_len = full.min(u32::MAX as u64) as u32;
                if full > len {
                    event.flags |= exec_flags::ARGV_TRUNCATED;
                }
            } else {
                count(counter::READ_ERRORS);
                event.flags |= exec_flags::ARGV_UNAVAILABLE;
            }
        }
        _ => event.flags |= exec_flags::ARGV_UNAVAILABLE,
    }
    crate::common::submit(entry);
}

/// `sched_process_fork` as a raw tracepoint: its arguments are the parent and
/// child `task_struct`s (include/trace/events/sched.h), which tell a new
/// process from a new thread; the classic record only carries pids.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
    try_fork(&ctx);
    0
}

fn try_fork(ctx: &RawTracePointContext) {
    let cfg = config();
    let child: u64 = ctx.arg(1);
    let (Some(child_pid), Some(child_tgid)) =
        (read_field::<i32>(child, cfg.kernel.task_pid), read_field::<i32>(child, cfg.kernel.task_tgid))
    else {
        count(counter::READ_ERRORS);
        return;
    };
    if child_pid != child_tgid {
        count(counter::THREADS_CREATED);
        return;
    }
    let parent_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !should_trace(parent_tgid) {
        return;
    }
    if cfg.filter_tgids != 0 {
        // Follow the tree: the child of a traced process is traced. A full
        // table is counted; the child is then not followed.
        if TRACED_TGIDS.insert(&(child_tgid as u32), &1, 0).is_err() {
            count(counter::TRACED_TGIDS_FULL);
        }
    }
    let Some(mut entry) = reserve::<ForkEvent>(EventKind::Fork) else { return };
    // SAFETY: reservation sized for ForkEvent; all fields written.
    let event = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut event.header, EventKind::Fork);
    event.child_pid = child_pid as u32;
    event.child_tgid = child_tgid as u32;
    event.child_start_boottime_ns = read_field(child, cfg.kernel.task_start_boottime).unwrap_or(0);
    crate::common::submit(entry);
}

/// `sched:sched_process_exit`, fired from do_exit (kernel/exit.c) after
/// `tsk->exit_code` is set. Only the last thread of a group (`group_dead`)
/// ends the process.
#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    try_exit(&ctx);
    0
}

fn try_exit(ctx: &TracePointContext) {
    let cfg = config();
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let group_dead = match read_tp::<u8>(ctx, cfg.tp.exit_group_dead) {
        Some(dead) => dead != 0,
        // Kernels before the field existed: the leader's exit stands for
        // the process.
        None => pid_tgid as u32 == tgid,
    };
    // Whatever CPU this thread used since it was switched in is charged now,
    // before user space reads the account.
    crate::ledger::charge_current_slice();
    if !group_dead || !should_trace(tgid) {
        return;
    }
    if cfg.filter_tgids != 0 {
        let _ = TRACED_TGIDS.remove(&tgid);
    }
    write_exit_record();
}

/// The process.exit record of the current task, the last of its process.
/// It carries the process's time in this CPU's slot, which it frees: an
/// ended process then costs no table entry for it.
#[inline(always)]
fn write_exit_record() {
    let Some(mut entry) = reserve::<ExitEvent>(EventKind::Exit) else { return };
    // SAFETY: reservation sized for ExitEvent; all fields written.
    let event = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut event.header, EventKind::Exit);
    event.exit_code = read_field::<i32>(current_task(), config().kernel.task_exit_code).unwrap_or(0) as u32;
    event._pad = 0;
    // Taken only now, with the record certain to be written.
    (event.cpu_ns, event.waits) = crate::ledger::take_slot(event.header.tgid);
    crate::common::submit(entry);
}

/// Reads a field of a classic tracepoint record at an offset parsed from its
/// tracefs `format` file.
#[inline(always)]
pub fn read_tp<T: Copy>(ctx: &TracePointContext, offset: u32) -> Option<T> {
    if offset == tracer_common::NO_OFFSET {
        return None;
    }
    // SAFETY: the offset comes from the tracepoint's own format description.
    unsafe { ctx.read_at::<T>(offset as usize) }.ok()
}
