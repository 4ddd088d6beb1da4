//! The first message a process sends on each TCP connection it opens: what
//! a mining client says to its pool (Stratum's `mining.subscribe`, XMRig's
//! `login`), an HTTP request, a TLS ClientHello. A successful connect(2)
//! marks the (process, fd) as fresh; each of its first sends is copied (up to
//! FIRST_BYTES_MAX in all) until the message looks whole — a line ends, the
//! TLS record is complete — or FIRST_BYTES_SENDS sends have been seen. Bitcoin
//! Core, for one, sends a message's header and payload in two sends. Every
//! other write on the host costs one map lookup.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use tracer_common::{
    Endpoint, EventHeader, EventKind, FIRST_BYTES, FIRST_BYTES_MAX, FIRST_BYTES_SENDS, FirstBytesEvent,
    counter, first_bytes_direction, table,
};

use crate::{
    common::{count, fill_header, read_user, read_user_bounded, reserve, syscall_arg},
    files::sock_of_fd,
};

/// What the first send said the message is, which decides when it ends.
const BINARY: u8 = 0;
/// Starts with `{` or an upper-case letter (JSON-RPC lines, HTTP): ends
/// with a newline.
const TEXT: u8 = 1;
/// A TLS record: ends after its length.
const TLS: u8 = 2;

/// How far a connection's first message has come. The syscall hooks keep it
/// per (process, fd), the packet hooks (`sockets.rs`) per socket.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Progress {
    /// Bytes sent so far.
    pub sent: u32,
    /// For TLS: the bytes the first record takes, header included.
    pub want: u32,
    pub sends: u16,
    pub mode: u8,
    pub _pad: u8,
}

/// What one send's copy showed.
struct Copied {
    captured: u32,
    first: u8,
    last: u8,
    /// For a TLS record header at the start: its length field.
    record_len: u32,
}

const LIMIT: u64 = (FIRST_BYTES_MAX - 1) as u64;

impl Progress {
    pub const NEW: Self = Self { sent: 0, want: 0, sends: 0, mode: BINARY, _pad: 0 };

    /// Bytes of a send of `len` that fit in what is left of the limit.
    #[inline(always)]
    fn take(&self, len: u64) -> u64 {
        len.min(LIMIT - (self.sent as u64).min(LIMIT))
    }

    /// Whether the message is whole, or the limits reached, with this send.
    #[inline(always)]
    fn done(&self, len: u64, c: &Copied) -> bool {
        let total = self.sent as u64 + len;
        if c.captured == 0 || self.sends as u32 + 1 >= FIRST_BYTES_SENDS || total >= LIMIT {
            return true;
        }
        if self.sends == 0 {
            if c.first == 0x16 {
                return c.captured >= 5 && total >= 5 + c.record_len as u64;
            }
            let text = c.first == b'{' || c.first.is_ascii_uppercase();
            return text && c.last == b'\n';
        }
        match self.mode {
            TEXT => c.last == b'\n',
            TLS => total >= self.want as u64,
            _ => false,
        }
    }

    /// The progress after a send that left the message unfinished.
    #[inline(always)]
    fn after(&self, len: u64, c: &Copied) -> Self {
        let mut next = *self;
        next.sent = (self.sent as u64 + len).min(u32::MAX as u64) as u32;
        next.sends = self.sends + 1;
        if self.sends == 0 {
            next.mode = if c.first == 0x16 {
                TLS
            } else if c.first == b'{' || c.first.is_ascii_uppercase() {
                TEXT
            } else {
                BINARY
            };
            next.want = 5 + c.record_len;
        }
        next
    }
}

/// Where one send's record gets its header and its bytes: the sending
/// task and its buffer (syscall hooks), or the socket's owner and the
/// packet (socket hooks).
pub trait Source {
    fn header(&self, header: &mut EventHeader);
    /// Copies `take` (< N) bytes into `dst`; returns how many it copied.
    fn copy<const N: usize>(&self, dst: &mut [u8; N], take: u64) -> u32;
}

/// A send's record: which connection, and the send's length.
pub struct Send<'a> {
    pub peer: &'a Endpoint,
    pub fd: i32,
    pub conn: u64,
    pub len: u64,
    /// `first_bytes_direction::*`.
    pub direction: u32,
}

/// Reports one send of a first message; returns the progress after it, or
/// `None` when the kernel stops gathering (the message is whole, a limit
/// is reached, or the record was lost to a full ring: the message has a
/// hole, and the drop is counted).
#[inline(always)]
pub fn gather<S: Source>(src: &S, progress: &Progress, send: &Send) -> Option<Progress> {
    let take = progress.take(send.len);
    let (copied, done) = if take < FIRST_BYTES as u64 {
        report::<FIRST_BYTES, S>(src, progress, send, take)
    } else {
        report::<FIRST_BYTES_MAX, S>(src, progress, send, take)
    }?;
    (!done).then(|| progress.after(send.len, &copied))
}

/// Reports one send, copying `take` of its bytes into a record with an
/// N-byte payload; the record says whether the kernel stops gathering, and
/// so does the return value (decided once: every branch here multiplies
/// the paths an older verifier walks).
#[inline(always)]
fn report<const N: usize, S: Source>(
    src: &S,
    progress: &Progress,
    send: &Send,
    take: u64,
) -> Option<(Copied, bool)> {
    let mut entry = reserve::<FirstBytesEvent<N>>(EventKind::FirstBytes)?;
    // SAFETY: reservation sized for FirstBytesEvent<N>; every field written.
    let event = unsafe { &mut *entry.as_mut_ptr() };
    src.header(&mut event.header);
    event.peer = *send.peer;
    event.fd = send.fd;
    event.len = send.len.min(u32::MAX as u64) as u32;
    event.offset = progress.sent;
    event.direction = send.direction;
    event.conn = send.conn;
    let captured = src.copy(&mut event.payload, take) as usize;
    let copied = Copied {
        captured: captured as u32,
        first: event.payload[0],
        last: event.payload[captured.wrapping_sub(1) & (N - 1)],
        record_len: u16::from_be_bytes([event.payload[3], event.payload[4]]) as u32,
    };
    event.captured = copied.captured;
    let done = progress.done(send.len, &copied);
    event.last = done as u8;
    event.datagram = 0;
    event._pad = 0;
    crate::common::submit(entry);
    Some((copied, done))
}

/// A connected socket whose first message is not yet whole: its peer, the
/// `struct sock` the fd held at connect time (0 when the kernel's offsets
/// are unknown), and how far the message has come.
#[repr(C)]
#[derive(Clone, Copy)]
struct Fresh {
    peer: Endpoint,
    sk: u64,
    progress: Progress,
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
    let fresh = Fresh { peer: *peer, sk: sock_of_fd(fd).unwrap_or(0), progress: Progress::NEW };
    upsert!(FRESH_SOCKETS, table::FRESH_SOCKETS, &key(fd), &fresh);
}

/// A send(2) from the calling task's buffer.
struct UserBuffer(u64);

impl Source for UserBuffer {
    #[inline(always)]
    fn header(&self, header: &mut EventHeader) {
        fill_header(header, EventKind::FirstBytes);
    }

    #[inline(always)]
    fn copy<const N: usize>(&self, dst: &mut [u8; N], take: u64) -> u32 {
        read_user_bounded(dst, self.0, take).unwrap_or(0) as u32
    }
}

/// If `fd` is fresh: report this send of `len` bytes at `buf`, and stop
/// gathering once the message is whole or the limits are reached.
#[inline(always)]
fn first_write(fd: u64, buf: u64, len: u64) -> Option<()> {
    let k = key(fd);
    let slot = FRESH_SOCKETS.get_ptr_mut(&k)?;
    // SAFETY: copied out; the slot is written back below only through this
    // pointer, which stays valid while the program runs.
    let fresh = unsafe { *slot };
    // The fd may have been closed without close(2) (dup2 over it,
    // close_range, close-on-exec) and reused: only the socket that
    // connected has first bytes to that peer.
    if fresh.sk != 0 && sock_of_fd(fd) != Some(fresh.sk) {
        remove_counted!(FRESH_SOCKETS, table::FRESH_SOCKETS, &k);
        count(counter::FIRST_BYTES_STALE);
        return None;
    }
    let send =
        Send { peer: &fresh.peer, fd: fd as i32, conn: 0, len, direction: first_bytes_direction::OUTBOUND };
    match gather(&UserBuffer(buf), &fresh.progress, &send) {
        // SAFETY: the slot of an LRU element this program looked up.
        Some(next) => unsafe { (*slot).progress = next },
        None => remove_counted!(FRESH_SOCKETS, table::FRESH_SOCKETS, &k),
    }
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
