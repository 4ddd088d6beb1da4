//! Bytes per process and peer, counted from the packets themselves
//! (`cgroup_skb` on the cgroup2 root), with no hook on the send and receive
//! path: a process's sockets carry their owner in socket-local storage,
//! stamped in the owner's context when it connects, accepts (the peer's
//! address is taken: `getpeername4`/`6`), binds a TCP socket (the kernel
//! clones a listener's storage to the connections it accepts) or sends to
//! an address; user space stamps the sockets that existed at start.
//!
//! A UDP datagram costs one storage lookup and a few additions, and is
//! moved into `FLOWS` and `PROC_STATS` at once. A TCP segment costs a
//! lookup and a clock comparison: about once a second per socket (on its
//! next packet: the last burst before a silence waits for the next
//! packet) and when the connection ends (FIN, RST), the stream's new bytes
//! since the last move are taken from the segment's sequence number, its
//! packets from the kernel's own count (`count_packet` says why nothing
//! is written per segment).
//!
//! TCP bytes are stream bytes, counted once: bytes before the highest
//! sequence number already counted (a retransmission, a duplicate) are not
//! counted again. Packets of a socket no owner was found for are counted
//! in `packets_unowned`.

use core::ffi::c_void;

use aya_ebpf::{
    macros::map,
    maps::PerCpuArray,
    bindings::{BPF_F_CLONE, BPF_F_NO_PREALLOC, bpf_map_type::BPF_MAP_TYPE_SK_STORAGE},
    helpers::generated::{bpf_jiffies64, bpf_sk_fullsock, bpf_sk_storage_get, bpf_tcp_sock},
};
use tracer_common::{FlowKey, SocketState, counter, table};

use crate::{
    common::count,
    ledger::{FLOWS, stats_of},
};

pub use tracer_common::socket_flags as flags;

/// The socket-local storage, declared in libbpf's BTF map form (aya's
/// own wrapper fixes the flags): BPF_F_NO_PREALLOC, which every local
/// storage takes, and BPF_F_CLONE, so the kernel copies a listener's state
/// to each connection it accepts (net/core/bpf_sk_storage.c:
/// bpf_sk_storage_clone, from sk_clone_lock).
#[repr(C)]
pub struct SocketStorage {
    r#type: *const [i32; BPF_MAP_TYPE_SK_STORAGE as usize],
    key: *const i32,
    value: *const SocketState,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; (BPF_F_NO_PREALLOC | BPF_F_CLONE) as usize],
}

// SAFETY: placeholders the loader reads from BTF; never dereferenced.
unsafe impl Sync for SocketStorage {}

#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "SOCKET_STATE")]
static SOCKET_STATE: SocketStorage = SocketStorage {
    r#type: core::ptr::null(),
    key: core::ptr::null(),
    value: core::ptr::null(),
    max_entries: core::ptr::null(),
    map_flags: core::ptr::null(),
};

/// include/uapi/linux/bpf.h
const BPF_SK_STORAGE_GET_F_CREATE: u64 = 1;
/// The clock the flushes are timed by: jiffies, a plain read (a clock
/// read costs more than the rest of the packet's work in a VM). Counts
/// move to the tables about once a second per socket (`Config::hz`).
#[inline(always)]
fn now() -> u64 {
    // SAFETY: helper with no arguments.
    unsafe { bpf_jiffies64() }
}

#[inline(always)]
fn storage(sk: *mut c_void, init: *mut SocketState, flags: u64) -> *mut SocketState {
    let map = core::ptr::from_ref(&SOCKET_STATE).cast_mut().cast();
    // SAFETY: `sk` is a socket pointer the verifier knows as one; the
    // helper returns the socket's value or null.
    unsafe { bpf_sk_storage_get(map, sk, init.cast(), flags) }.cast()
}

/// The socket's state, if an owner was stamped on it.
#[inline(always)]
pub fn state_of(sk: *mut c_void) -> Option<*mut SocketState> {
    let p = storage(sk, core::ptr::null_mut(), 0);
    (!p.is_null()).then_some(p)
}

/// Where a socket's first state is made before the kernel copies it in:
/// a per-CPU slot, off the stacks of the programs that create it
/// (connect4's is near the verifier's limit).
#[map]
static FRESH_STATE: PerCpuArray<SocketState> = PerCpuArray::with_max_entries(1, 0);

/// A fresh state, owner `flow.tgid` (0: none seen yet), in this CPU's
/// slot; null if the slot cannot be had.
#[inline(always)]
fn new_state(flow: FlowKey, flags: u32) -> *mut SocketState {
    let Some(init) = FRESH_STATE.get_ptr_mut(0) else { return core::ptr::null_mut() };
    let now = now();
    // SAFETY: this CPU's slot; every field is written.
    unsafe {
        core::ptr::write_bytes(init, 0, 1);
        (*init).flags = flags;
        (*init).flow = flow;
        (*init).tx.flushed = now;
        (*init).rx.flushed = now;
    }
    init
}

/// Creates the socket's state from `init`; counts a failure.
#[inline(always)]
fn create(sk: *mut c_void, init: *mut SocketState) -> *mut SocketState {
    let st = if init.is_null() { init } else { storage(sk, init, BPF_SK_STORAGE_GET_F_CREATE) };
    if st.is_null() {
        count(counter::SOCKET_STATE_FULL);
    }
    st
}

/// The state of a packet's socket `sk` (the packet's own pointer, which
/// may be a request or time-wait socket: the storage helper takes any
/// socket and has state only for full ones, so the common case, a socket
/// with state, costs one helper call), created without an owner when a
/// full socket has none yet: bytes that arrive before the owner is known
/// (a request queued before accept) are kept for it.
#[inline(always)]
pub fn state_for_packet(sk: *mut c_void) -> Option<*mut SocketState> {
    if let Some(st) = state_of(sk) {
        return Some(st);
    }
    let full = full_socket(sk);
    if full.is_null() {
        return None;
    }
    let p = create(full, new_state(NO_OWNER, 0));
    (!p.is_null()).then_some(p)
}

const NO_OWNER: FlowKey =
    FlowKey { tgid: 0, family: 0, protocol: 0, port: 0, _pad: 0, addr: [0; 16], _pad2: 0 };

/// Stamps the calling process as the socket's owner with `flow` as its
/// peer. An owned socket keeps its owner unless `replace` (a connect: a
/// UDP socket connected to another peer has its counts so far go to the
/// old peer first). A socket whose packets came before any owner (tgid 0)
/// is adopted with what they counted, and so is a connection accepted from
/// a listener, which inherits the listener's process: its bytes go to the
/// acceptor, the peer's first message is reported for the listener's.
#[inline(always)]
pub fn own(sk: *mut c_void, flow: FlowKey, reports: bool, replace: bool) {
    let extra = if reports { flags::REPORTS } else { 0 };
    if let Some(st) = state_of(sk) {
        // SAFETY: this socket's value, written in its owner's context.
        unsafe {
            let inherited = (*st).flags & (flags::LISTENER | flags::ACCEPTED) != 0;
            let unowned = (*st).flow.tgid == 0;
            if replace {
                // A bound socket that connects is no listener.
                (*st).flags &= !(flags::LISTENER | flags::ACCEPTED);
            } else if inherited {
                accepted(st);
            }
            if replace || unowned || inherited {
                (*st).flow = flow;
            }
            (*st).flags |= extra;
        }
        return;
    }
    create(sk, new_state(flow, extra));
}

/// A TCP socket bound by the calling process: a listener to be, whose
/// accepted connections inherit this state with the process's header.
#[inline(always)]
pub fn own_listener(sk: *mut c_void, flow: FlowKey) {
    let init = new_state(flow, flags::LISTENER);
    if init.is_null() {
        count(counter::SOCKET_STATE_FULL);
        return;
    }
    // SAFETY: this CPU's slot, just made.
    crate::common::fill_header(unsafe { &mut (*init).owner }, tracer_common::EventKind::FirstBytes);
    let st = create(sk, init);
    if st.is_null() {
        return;
    }
    // SAFETY: this socket's value (it existed: bound again after a
    // failed bind, or adopted), and the slot made above.
    unsafe {
        (*st).flags |= flags::LISTENER;
        (*st).owner = (*init).owner;
    }
}

/// A UDP socket the calling process owns: its first datagram each way is
/// to be reported for it (what a discovery protocol or QUIC sends first),
/// with `header` when the caller has just made the process's (else one is
/// made). Once per socket: a socket that already has a process keeps the
/// first.
#[inline(always)]
pub fn watch_first_datagrams(sk: *mut c_void, header: Option<&tracer_common::EventHeader>) {
    let Some(st) = state_of(sk) else { return };
    // SAFETY: this socket's value, written in its owner's context.
    unsafe {
        if (*st).owner.kind == 0 {
            match header {
                Some(h) => (*st).owner = *h,
                None => crate::common::fill_header(&mut (*st).owner, tracer_common::EventKind::FirstBytes),
            }
            (*st).flags |= flags::FIRST_DATAGRAM_OUT | flags::FIRST_DATAGRAM_IN;
        }
    }
}

/// A connection that inherited a listener's state is one the process
/// accepted: its peer's first message is to be captured.
#[inline(always)]
pub fn accepted(st: *mut SocketState) {
    // SAFETY: the socket's value.
    unsafe {
        if (*st).flags & flags::LISTENER != 0 {
            (*st).flags = ((*st).flags & !flags::LISTENER) | flags::ACCEPTED;
        }
    }
}

/// What one packet of a full socket carries: its payload's stream position
/// (TCP) and length, and whether it ends the connection. Every field is
/// set for every packet (no `Option`): the verifier of older kernels
/// rejects a read of a stack slot left unwritten on some path, and LLVM
/// may load an `Option`'s payload before testing it.
pub struct Segment {
    pub tcp: bool,
    /// TCP's sequence number; 0 otherwise.
    pub seq: u32,
    pub syn: bool,
    pub len: u32,
    pub ends: bool,
}

impl Segment {
    /// A packet that is not TCP: no stream position, and no end.
    #[inline(always)]
    pub fn datagram(len: u32) -> Self {
        Self { tcp: false, seq: 0, syn: false, len, ends: false }
    }
}

/// The full socket of a packet's `skb->sk`, if it has one.
#[inline(always)]
pub fn full_socket(sk: *mut c_void) -> *mut c_void {
    // SAFETY: a socket pointer from the context; null when not a full one.
    unsafe { bpf_sk_fullsock(sk.cast()) }.cast()
}

/// Counts a packet to its socket's owner.
///
/// UDP: each datagram at once (a datagram socket may send once and stay
/// idle, or be connected to another peer; datagrams come far fewer than
/// segments on a busy server).
///
/// TCP: nothing is written per packet. A store into the socket's storage
/// on every packet, read on another CPU by the other direction's packets,
/// cost most of the packet's time (the cache line moves between CPUs);
/// instead the stream position is taken about once a second and when the
/// connection ends (FIN, RST), from the packet then passing: its end
/// sequence number less the one at the last flush is the stream's new
/// bytes (retransmitted and duplicate bytes are not counted twice), and
/// the kernel's own data-segment counter (`bpf_tcp_sock`) gives the
/// packets. Bytes since the last flush of a connection that ends with no
/// FIN or RST this socket sends or receives are not counted.
///
/// Each direction's fields are written only by that direction's packets,
/// which the stack serialises per socket (TCP transmits under the socket's
/// lock; one flow's packets arrive on one CPU), so plain additions do.
#[inline(always)]
pub fn count_packet(sk: *mut c_void, st: *mut SocketState, seg: &Segment, egress: bool) {
    // SAFETY: the socket's value.
    unsafe {
        let (dir, seq_flag) = if egress { (&mut (*st).tx, flags::TX_SEQ) } else { (&mut (*st).rx, flags::RX_SEQ) };
        if !seg.tcp {
            flush(st, egress, seg.len as u64, 1);
            return;
        }
        let seq = seg.seq;
        // A SYN's sequence number is not a byte.
        let start = if seg.syn { seq.wrapping_add(1) } else { seq };
        let end = start.wrapping_add(seg.len);
        if (*st).flags & seq_flag == 0 {
            // The first packet seen this way: where counting starts.
            (*st).flags |= seq_flag;
            dir.next = start;
            dir.segs = data_segments(sk, egress, seg.len, false).unwrap_or(0);
            dir.flushed = now();
        }
        if !seg.ends && (seg.len == 0 || now().wrapping_sub(dir.flushed) < crate::common::config().hz) {
            return;
        }
        let ahead = end.wrapping_sub(dir.next) as i32;
        let bytes = if ahead > 0 {
            dir.next = end;
            ahead as u64
        } else {
            0
        };
        let packets = match data_segments(sk, egress, seg.len, true) {
            Some(segs) => segs.wrapping_sub(core::mem::replace(&mut dir.segs, segs)) as u64,
            None => 0,
        };
        flush(st, egress, bytes, packets);
    }
}

/// The data segments a TCP socket has sent or received, before this
/// packet (`false`) or with it (`true`): the send count already has it
/// when the egress hook runs, the receive count is raised after ingress.
#[inline(always)]
fn data_segments(sk: *mut c_void, egress: bool, len: u32, with_this: bool) -> Option<u32> {
    // SAFETY: a full socket pointer from the context; null when not TCP.
    let tp = unsafe { bpf_tcp_sock(sk.cast()) };
    if tp.is_null() {
        return None;
    }
    let this = (len > 0) as u32;
    // SAFETY: the kernel's view of the socket, checked non-null.
    Some(unsafe {
        match (egress, with_this) {
            (true, true) => (*tp).data_segs_out,
            (true, false) => (*tp).data_segs_out.wrapping_sub(this),
            (false, true) => (*tp).data_segs_in.wrapping_add(this),
            (false, false) => (*tp).data_segs_in,
        }
    })
}

/// Moves one direction's new bytes and packets of a socket into `FLOWS`
/// and `PROC_STATS`, and marks when.
#[inline(always)]
fn flush(st: *mut SocketState, egress: bool, bytes: u64, packets: u64) {
    // SAFETY: the socket's value; this direction's fields.
    let key = unsafe {
        let dir = if egress { &mut (*st).tx } else { &mut (*st).rx };
        dir.flushed = now();
        (*st).flow
    };
    if packets == 0 && bytes == 0 {
        return;
    }
    // No owner seen (yet, or ever: a socket opened before the tracer).
    if key.tgid == 0 {
        crate::common::count_n(counter::PACKETS_UNOWNED, packets);
        return;
    }
    if let Some(stats) = stats_of(key.tgid) {
        // SAFETY: this CPU's copy of a per-CPU value.
        let s = unsafe { &mut *stats };
        add(
            if egress { (&mut s.tx_bytes, &mut s.tx_calls) } else { (&mut s.rx_bytes, &mut s.rx_calls) },
            bytes,
            packets,
        );
    }
    if FLOWS.get_ptr_mut(&key).is_none() {
        insert_new!(FLOWS, table::FLOWS, &key, &tracer_common::FlowStats::default());
    }
    if let Some(flow) = FLOWS.get_ptr_mut(&key) {
        // SAFETY: this CPU's copy of a per-CPU value.
        let f = unsafe { &mut *flow };
        add(
            if egress { (&mut f.tx_bytes, &mut f.tx_calls) } else { (&mut f.rx_bytes, &mut f.rx_calls) },
            bytes,
            packets,
        );
    }
}

/// Adds to one direction's (bytes, packets) counters.
#[inline(always)]
fn add((total, count): (&mut u64, &mut u64), bytes: u64, packets: u64) {
    *total += bytes;
    *count += packets;
}
