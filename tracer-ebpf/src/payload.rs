//! The first bytes a process sends on each TCP connection it opens: what a
//! mining client says to its pool (Stratum's `mining.subscribe`, XMRig's
//! `login`), an HTTP request line, a TLS ClientHello. A successful connect(2)
//! marks the (process, fd) as fresh; the first write/send/sendto/sendmsg/
//! writev on it copies up to FIRST_BYTES and unmarks it. Every other write on
//! the host costs one map lookup.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use tracer_common::{Endpoint, EventKind, FirstBytesEvent, counter, table};

use crate::{
    common::{count, fill_header, read_user, read_user_bounded, reserve, syscall_arg},
    files::sock_of_fd,
};

/// A connected socket not yet written to: its peer, and the `struct sock`
/// the fd held at connect time (0 when the kernel's offsets are unknown).
#[repr(C)]
#[derive(Clone, Copy)]
struct Fresh {
    peer: Endpoint,
    sk: u64,
}

/// (tgid << 32 | fd) -> the fresh socket.
#[map]
static FRESH_SOCKETS: LruHashMap<u64, Fresh> = LruHashMap::with_max_entries(16384, 0);

#[inline(always)]
fn key(fd: u64) -> u64 {
    (bpf_get_current_pid_tgid() & 0xffff_ffff_0000_0000) | (fd & 0xffff_ffff)
}

/// Called by sys_exit_connect for a TCP connect that succeeded or is in
/// progress (the socket's filter was applied at enter).
#[inline(always)]
pub fn mark_fresh(fd: u64, peer: &Endpoint) {
    let fresh = Fresh { peer: *peer, sk: sock_of_fd(fd).unwrap_or(0) };
    upsert!(FRESH_SOCKETS, table::FRESH_SOCKETS, &key(fd), &fresh);
}

/// If `fd` is fresh: unmark it and report `len` bytes at `buf`.
#[inline(always)]
fn first_write(fd: u64, buf: u64, len: u64) -> Option<()> {
    let k = key(fd);
    // SAFETY: copied out before removal.
    let fresh = unsafe { FRESH_SOCKETS.get(&k) }.copied()?;
    remove_counted!(FRESH_SOCKETS, table::FRESH_SOCKETS, &k);
    // The fd may have been closed without close(2) (dup2 over it,
    // close_range, close-on-exec) and reused: only the socket that
    // connected has first bytes to that peer.
    if fresh.sk != 0 && sock_of_fd(fd) != Some(fresh.sk) {
        count(counter::FIRST_BYTES_STALE);
        return None;
    }
    let peer = fresh.peer;
    let mut entry = reserve::<FirstBytesEvent>(EventKind::FirstBytes)?;
    // SAFETY: reservation sized for FirstBytesEvent; every field written.
    let event = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut event.header, EventKind::FirstBytes);
    event.peer = peer;
    event.fd = fd as i32;
    event.len = len.min(u32::MAX as u64) as u32;
    event._pad = 0;
    event.captured = read_user_bounded(&mut event.payload, buf, len).unwrap_or(0) as u32;
    entry.submit(0);
    Some(())
}

/// write(fd, buf, count) and send/sendto(fd, buf, len, …).
#[tracepoint(category = "syscalls", name = "sys_enter_write")]
pub fn sys_enter_write(ctx: TracePointContext) -> u32 {
    if let (Some(fd), Some(buf), Some(len)) =
        (syscall_arg(&ctx, 0), syscall_arg(&ctx, 1), syscall_arg(&ctx, 2))
    {
        let _ = first_write(fd, buf, len);
    }
    0
}

/// Called from the DNS sendto program, which owns that tracepoint.
#[inline(always)]
pub fn on_sendto(fd: u64, buf: u64, len: u64) {
    let _ = first_write(fd, buf, len);
}

/// writev(fd, iov, vlen) and sendmsg's msg_iov: the first iovec.
#[inline(always)]
pub fn on_iovec(fd: u64, iov: u64, vlen: u64) {
    if vlen == 0 {
        return;
    }
    // Presence first: most fds are not fresh. SAFETY: presence check only.
    if unsafe { FRESH_SOCKETS.get(&key(fd)) }.is_none() {
        return;
    }
    if let (Some(base), Some(len)) = (read_user::<u64>(iov), read_user::<u64>(iov + 8)) {
        let _ = first_write(fd, base, len);
    }
}

/// close(fd): a connection closed before its first write (health checks,
/// port scans, connect storms) must not stay in the table, or a full LRU
/// table makes every later connect pay for evictions.
#[tracepoint(category = "syscalls", name = "sys_enter_close")]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    if let Some(fd) = syscall_arg(&ctx, 0) {
        let k = key(fd);
        remove_counted!(FRESH_SOCKETS, table::FRESH_SOCKETS, &k);
        crate::dns::forget_socket(k);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_writev")]
pub fn sys_enter_writev(ctx: TracePointContext) -> u32 {
    if let (Some(fd), Some(iov), Some(vlen)) =
        (syscall_arg(&ctx, 0), syscall_arg(&ctx, 1), syscall_arg(&ctx, 2))
    {
        on_iovec(fd, iov, vlen);
    }
    0
}
