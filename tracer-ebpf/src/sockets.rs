//! Network evidence from the socket layer, with no syscall hook: connects
//! from the cgroup `connect4`/`connect6` hooks (in the caller's context, for
//! `connect(2)` and io_uring alike), unconnected UDP sends to DNS servers
//! from `sendmsg4`/`sendmsg6`, and from `cgroup_skb` on the cgroup2 root
//! the first message of each connection and DNS messages, read from the
//! packets themselves (so writes the kernel coalesces and io_uring sends
//! are seen too). These hooks run only on network paths; a syscall hook
//! slows every syscall on the host.
//!
//! The task is known only in process context, so the connecting task's
//! record header is kept with the socket in `SOCKETS`, keyed by the
//! `struct sock` address, and packet records carry it. An entry lives while
//! there is something to report: until the TCP handshake's outcome and the
//! first message are reported, or for a DNS socket until it is released.

use aya_ebpf::{
    EbpfContext,
    bindings::bpf_sock_addr,
    helpers::{bpf_get_current_pid_tgid, bpf_get_socket_cookie, bpf_ktime_get_ns},
    macros::{cgroup_skb, cgroup_sock, cgroup_sock_addr, map},
    maps::LruHashMap,
    programs::{SkBuffContext, SockAddrContext, SockContext},
};
use tracer_common::{
    ConnectEvent, DnsEvent, Endpoint, EventHeader, EventKind, FIRST_BYTES_MAX, FirstBytesEvent, FlowKey,
    SOCKADDR_LEN, connect_source, counter, dns_direction, first_bytes_direction, table,
};

use crate::{
    common::{fill_header, read_field, reserve, should_trace},
    payload::{Progress, Send, Source, gather},
    traffic::{self, Segment},
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const SOCK_STREAM: u32 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const DNS_PORT: u16 = 53;
const EINPROGRESS: i32 = 115;

/// What a socket's entry still waits to report.
mod pending {
    /// A TCP connect whose handshake has not ended.
    pub const CONNECT: u8 = 1;
    /// A TCP connection's first message, not yet whole.
    pub const FIRST_BYTES: u8 = 2;
    /// A UDP socket that talks to a DNS server (port 53).
    pub const DNS: u8 = 4;
    /// An accepted TCP connection: the peer's first message, not yet whole.
    pub const FIRST_BYTES_IN: u8 = 8;
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Tracked {
    /// The header of the task that connected (or sent to a DNS server).
    header: EventHeader,
    peer: Endpoint,
    progress: Progress,
    /// TCP: the sequence number of the first byte sent (once a payload
    /// packet has been seen).
    first_seq: u32,
    sock_type: u8,
    protocol: u8,
    pending: u8,
    _pad: u8,
}

impl Tracked {
    /// A socket whose records carry `header`, with nothing reported yet.
    #[inline(always)]
    fn new(header: EventHeader, peer: Endpoint, sock_type: u8, protocol: u8, pending: u8) -> Self {
        Self { header, peer, progress: Progress::NEW, first_seq: 0, sock_type, protocol, pending, _pad: 0 }
    }

    /// A socket of the calling task, with its record header now.
    #[inline(always)]
    fn of_caller(peer: Endpoint, sock_type: u8, protocol: u8, pending: u8, kind: EventKind) -> Self {
        // SAFETY: every field is written by fill_header below.
        let mut t = Self::new(unsafe { core::mem::zeroed() }, peer, sock_type, protocol, pending);
        fill_header(&mut t.header, kind);
        t
    }
}

/// `struct sock` address -> what it still has to report.
#[map]
pub static SOCKETS: LruHashMap<u64, Tracked> = LruHashMap::with_max_entries(16384, 0);

#[inline(always)]
fn sock_addr_of(ctx: &SockAddrContext) -> &bpf_sock_addr {
    // SAFETY: the context the kernel passed; fields are read one by one.
    unsafe { &*ctx.sock_addr }
}

/// The destination the caller passed: family, port (host order), address.
#[inline(always)]
fn destination(sa: &bpf_sock_addr, family: u16) -> Endpoint {
    let mut peer = Endpoint { family, port: u16::from_be(sa.user_port as u16), _pad: 0, addr: [0; 16] };
    if family == AF_INET {
        peer.addr[..4].copy_from_slice(&sa.user_ip4.to_ne_bytes());
    } else {
        for i in 0..4 {
            // One 4-byte load each: the context allows no other access.
            // SAFETY: a field of the context.
            let word = unsafe { core::ptr::read_volatile(&sa.user_ip6[i]) };
            peer.addr[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
        }
    }
    peer
}

/// The socket a sock_addr hook runs for, as a map key.
#[inline(always)]
fn sock_key(sa: &bpf_sock_addr) -> u64 {
    sock_of(sa) as u64
}

/// The socket a sock_addr hook runs for.
#[inline(always)]
fn sock_of(sa: &bpf_sock_addr) -> *mut core::ffi::c_void {
    // SAFETY: the union's only member the kernel sets for this context.
    unsafe { sa.__bindgen_anon_1.sk }.cast()
}

/// The calling process's bytes with `peer` (none: an unconnected socket,
/// counted as one "no peer" flow).
#[inline(always)]
fn flow_to(peer: Option<&Endpoint>, protocol: u8) -> FlowKey {
    let mut key = FlowKey {
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        family: 0,
        protocol: protocol as u16,
        port: 0,
        _pad: 0,
        addr: [0; 16],
        _pad2: 0,
    };
    if let Some(p) = peer {
        (key.family, key.port, key.addr) = (p.family, p.port, p.addr);
    }
    key
}

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    let _ = on_connect(&ctx, AF_INET);
    1
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    let _ = on_connect(&ctx, AF_INET6);
    1
}

/// A connect about to be made, in the caller's context. UDP connects are
/// reported at once (the kernel only records the peer); a TCP connect is
/// reported when its handshake ends, with the result.
#[inline(always)]
fn on_connect(ctx: &SockAddrContext, family: u16) -> Option<()> {
    if !should_trace((bpf_get_current_pid_tgid() >> 32) as u32) {
        return None;
    }
    let sa = sock_addr_of(ctx);
    let peer = destination(sa, family);
    let (sock_type, protocol) = (sa.type_, sa.protocol as u8);
    let mut tracked = Tracked::of_caller(peer, sock_type as u8, protocol, 0, EventKind::Connect);
    if sock_type == SOCK_STREAM && protocol == IPPROTO_TCP {
        tracked.pending = pending::CONNECT | pending::FIRST_BYTES;
    } else {
        report_connect(&tracked, 0);
        if protocol == IPPROTO_UDP && peer.port == DNS_PORT {
            tracked.pending = pending::DNS;
        }
    }
    if tracked.pending != 0 {
        upsert!(SOCKETS, table::SOCKETS, &sock_key(sa), &tracked);
    }
    traffic::own(sock_of(sa), flow_to(Some(&peer), protocol), tracked.pending != 0, true);
    if protocol == IPPROTO_UDP && tracked.pending == 0 {
        // The header just made: a second fill would not fit older
        // kernels' stack limit here.
        traffic::watch_first_datagrams(sock_of(sa), Some(&tracked.header));
    }
    Some(())
}

#[cgroup_sock_addr(getpeername4)]
pub fn getpeername4(ctx: SockAddrContext) -> i32 {
    let _ = on_getpeername(&ctx, AF_INET);
    1
}

#[cgroup_sock_addr(getpeername6)]
pub fn getpeername6(ctx: SockAddrContext) -> i32 {
    let _ = on_getpeername(&ctx, AF_INET6);
    1
}

/// The peer's address asked for: by accept(2) and io_uring's accept when
/// they are given a buffer for it (net/socket.c: do_accept calls getname),
/// and by getpeername(2). The caller owns the accepted socket's bytes;
/// a socket that already has an owner keeps it.
#[inline(always)]
fn on_getpeername(ctx: &SockAddrContext, family: u16) -> Option<()> {
    if !should_trace((bpf_get_current_pid_tgid() >> 32) as u32) {
        return None;
    }
    let sa = sock_addr_of(ctx);
    let peer = destination(sa, family);
    traffic::own(sock_of(sa), flow_to(Some(&peer), sa.protocol as u8), false, false);
    Some(())
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    let _ = on_sendmsg(&ctx, AF_INET);
    1
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    let _ = on_sendmsg(&ctx, AF_INET6);
    1
}

/// An unconnected UDP send with an address (sendto, sendmsg): one to a DNS
/// server marks its socket, so the packet hooks report the message and
/// its answer.
#[inline(always)]
fn on_sendmsg(ctx: &SockAddrContext, family: u16) -> Option<()> {
    let sa = sock_addr_of(ctx);
    let dns = u16::from_be(sa.user_port as u16) == DNS_PORT;
    let sk = sock_of(sa);
    // The common case, a socket already owned, costs one lookup.
    if traffic::state_of(sk).is_some_and(|st| !dns || unsafe { (*st).flags } & traffic::flags::REPORTS != 0) {
        return None;
    }
    if !should_trace((bpf_get_current_pid_tgid() >> 32) as u32) {
        return None;
    }
    traffic::own(sk, flow_to(None, IPPROTO_UDP), dns, false);
    if !dns {
        traffic::watch_first_datagrams(sk, None);
        return None;
    }
    let key = sock_key(sa);
    // SAFETY: presence check only.
    if unsafe { SOCKETS.get(&key) }.is_some() {
        return None;
    }
    let tracked = Tracked::of_caller(
        destination(sa, family),
        sa.type_ as u8,
        IPPROTO_UDP,
        pending::DNS,
        EventKind::Dns,
    );
    upsert!(SOCKETS, table::SOCKETS, &key, &tracked);
    Some(())
}

/// The socket is closed by its last user: nothing more to report.
#[cgroup_sock(sock_release)]
pub fn sock_release(ctx: SockContext) -> i32 {
    let key = ctx.as_ptr() as u64;
    if let Some(t) = SOCKETS.get_ptr(&key) {
        // SAFETY: copied out before the removal.
        let t = unsafe { *t };
        // A connect whose handshake never ended (the socket was closed
        // first, or the connect failed before sending its SYN).
        if t.pending & pending::CONNECT != 0 {
            report_connect(&t, -EINPROGRESS);
        }
        remove_counted!(SOCKETS, table::SOCKETS, &key);
    }
    1
}

#[cgroup_sock(post_bind4)]
pub fn post_bind4(ctx: SockContext) -> i32 {
    let _ = on_bind(&ctx);
    1
}

#[cgroup_sock(post_bind6)]
pub fn post_bind6(ctx: SockContext) -> i32 {
    let _ = on_bind(&ctx);
    1
}

/// A socket bound, in the binder's context. A TCP listener to be is
/// stamped with the process, which the connections it accepts inherit; a
/// UDP socket (a discovery service, a QUIC server: it may receive before
/// it sends) is owned, its first datagrams reported.
#[inline(always)]
fn on_bind(ctx: &SockContext) -> Option<()> {
    // SAFETY: fields of the context the kernel passed.
    let (sock_type, protocol) = unsafe { ((*ctx.sock).type_, (*ctx.sock).protocol) };
    let tcp = sock_type == SOCK_STREAM && protocol == IPPROTO_TCP as u32;
    if !tcp && protocol != IPPROTO_UDP as u32 {
        return None;
    }
    if !should_trace((bpf_get_current_pid_tgid() >> 32) as u32) {
        return None;
    }
    if tcp {
        traffic::own_listener(ctx.as_ptr(), flow_to(None, IPPROTO_TCP));
    } else {
        traffic::own(ctx.as_ptr(), flow_to(None, IPPROTO_UDP), false, false);
        traffic::watch_first_datagrams(ctx.as_ptr(), None);
    }
    Some(())
}

/// The TCP handshake of a tracked socket ended (`inet_sock_set_state`
/// SYN_SENT -> ESTABLISHED, or -> CLOSE with the error in `sk_err`).
/// Returns whether the socket is tracked here.
#[inline(always)]
pub fn on_state(sk: u64, established: bool, closed: bool) -> bool {
    let Some(slot) = SOCKETS.get_ptr_mut(&sk) else { return false };
    // SAFETY: copied out; written back through the slot below.
    let t = unsafe { *slot };
    if t.pending & pending::CONNECT != 0 && (established || closed) {
        let err: i32 =
            if established { 0 } else { read_field(sk, crate::common::config().kernel.sk_err).unwrap_or(0) };
        report_connect(
            &t,
            if err > 0 {
                -err
            } else if established {
                0
            } else {
                -EINPROGRESS
            },
        );
        // SAFETY: the slot this program looked up.
        unsafe { (*slot).pending &= !pending::CONNECT };
    }
    // SAFETY: as above.
    if closed || unsafe { (*slot).pending } == 0 {
        remove_counted!(SOCKETS, table::SOCKETS, &sk);
    }
    true
}

/// Whether a socket entering SYN_SENT was reported by the connect hooks.
#[inline(always)]
pub fn is_tracked(sk: u64) -> bool {
    // SAFETY: presence check only.
    unsafe { SOCKETS.get(&sk) }.is_some()
}

#[inline(always)]
fn report_connect(t: &Tracked, ret: i32) -> Option<()> {
    let mut entry = reserve::<ConnectEvent>(EventKind::Connect)?;
    // SAFETY: reservation sized for ConnectEvent; all fields written.
    let event = unsafe { &mut *entry.as_mut_ptr() };
    event.header = t.header;
    event.header.kind = EventKind::Connect as u32;
    // SAFETY: helper with no arguments.
    event.header.ktime_ns = unsafe { bpf_ktime_get_ns() };
    event.fd = -1;
    event.ret = ret;
    event.source = connect_source::SOCKET;
    event.sock_type = t.sock_type;
    event.protocol = t.protocol as u16;
    // A sockaddr_in/in6, as connect(2) takes it, so user space parses one
    // format.
    event.addr = [0; SOCKADDR_LEN];
    event.addr[0..2].copy_from_slice(&t.peer.family.to_ne_bytes());
    event.addr[2..4].copy_from_slice(&t.peer.port.to_be_bytes());
    if t.peer.family == AF_INET {
        event.addr[4..8].copy_from_slice(&t.peer.addr[..4]);
        event.addrlen = 16;
    } else {
        event.addr[8..24].copy_from_slice(&t.peer.addr);
        event.addrlen = 28;
    }
    crate::common::submit(entry);
    Some(())
}

#[cgroup_skb(egress)]
pub fn skb_egress(ctx: SkBuffContext) -> i32 {
    let _ = on_packet(&ctx, true);
    1
}

#[cgroup_skb(ingress)]
pub fn skb_ingress(ctx: SkBuffContext) -> i32 {
    let _ = on_packet(&ctx, false);
    1
}

/// The transport header of a packet (cgroup_skb sees it from the IP header).
struct Transport {
    v6: bool,
    protocol: u8,
    /// Offset of the transport header.
    at: u32,
}

#[inline(always)]
fn transport(ctx: &SkBuffContext) -> Option<Transport> {
    let first: u8 = ctx.load(0).ok()?;
    match first >> 4 {
        4 => Some(Transport { v6: false, protocol: ctx.load(9).ok()?, at: ((first & 0x0f) as u32) * 4 }),
        // Extension headers are not followed: TCP and UDP come right after
        // the fixed header in what hosts send.
        6 => Some(Transport { v6: true, protocol: ctx.load(6).ok()?, at: 40 }),
        _ => None,
    }
}

/// A packet's transport header and payload: direct from the packet's
/// linear data when the headers are all there (no helper call: this runs
/// for every packet on the host), else copied out.
#[inline(always)]
fn headers(ctx: &SkBuffContext) -> Option<(Transport, Segment, u32)> {
    if let Some(h) = headers_direct(ctx) {
        return Some(h);
    }
    let l4 = transport(ctx)?;
    match l4.protocol {
        IPPROTO_TCP => {
            let h: [u8; 14] = ctx.load(l4.at as usize).ok()?;
            Some(tcp_segment(ctx, l4, &h))
        }
        IPPROTO_UDP => Some(udp_segment(ctx, l4)),
        _ => Some((l4, Segment::datagram(0), 0)),
    }
}

#[inline(always)]
fn headers_direct(ctx: &SkBuffContext) -> Option<(Transport, Segment, u32)> {
    // SAFETY: fields of the context; the verifier turns them into the
    // bounds of the packet's linear data, and every read below is checked
    // against the end first.
    let (start, end) = unsafe { ((*ctx.skb.skb).data as usize, (*ctx.skb.skb).data_end as usize) };
    if start + 40 > end {
        return None;
    }
    // SAFETY: within the bounds checked above.
    let first = unsafe { *(start as *const u8) };
    let l4 = match first >> 4 {
        // SAFETY: as above.
        4 => Transport {
            v6: false,
            protocol: unsafe { *((start + 9) as *const u8) },
            at: ((first & 0x0f) as u32) * 4,
        },
        // SAFETY: as above.
        6 => Transport { v6: true, protocol: unsafe { *((start + 6) as *const u8) }, at: 40 },
        _ => return None,
    };
    let at = start + (l4.at as usize & 0x3f);
    if at + 14 > end {
        return None;
    }
    match l4.protocol {
        // SAFETY: 14 bytes at `at` are within the packet, checked above.
        IPPROTO_TCP => Some(tcp_segment(ctx, l4, unsafe { &*(at as *const [u8; 14]) })),
        IPPROTO_UDP => Some(udp_segment(ctx, l4)),
        _ => Some((l4, Segment::datagram(0), 0)),
    }
}

/// TCP: sequence number, data offset and flags (RFC 9293 3.1).
#[inline(always)]
fn tcp_segment(ctx: &SkBuffContext, l4: Transport, h: &[u8; 14]) -> (Transport, Segment, u32) {
    let data = l4.at + ((h[12] >> 4) as u32) * 4;
    let seg = Segment {
        tcp: true,
        seq: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        syn: h[13] & TCP_SYN != 0,
        len: ctx.len().saturating_sub(data),
        ends: h[13] & (TCP_FIN | TCP_RST) != 0,
    };
    (l4, seg, data)
}

#[inline(always)]
fn udp_segment(ctx: &SkBuffContext, l4: Transport) -> (Transport, Segment, u32) {
    let data = l4.at + 8;
    (l4, Segment::datagram(ctx.len().saturating_sub(data)), data)
}

/// Every packet of a full socket is counted to its owner; one of a socket
/// with something to report also gives the first message's bytes on
/// egress and DNS messages both ways.
#[inline(always)]
fn on_packet(ctx: &SkBuffContext, egress: bool) -> Option<()> {
    // SAFETY: a field of the context the kernel passed.
    let sk = unsafe { (*ctx.skb.skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return None;
    }
    // The headers first: a bare ACK needs nothing else (no helper call).
    let Some((l4, seg, data)) = headers(ctx) else {
        crate::common::count(counter::PACKETS_UNPARSED);
        return None;
    };
    if seg.len == 0 && !seg.ends {
        return None;
    }
    // A socket with state is a full one (`state_for_packet`).
    let full = sk.cast();
    let st = traffic::state_for_packet(full)?;
    // Before the count: a packet that also ends the connection flushes it,
    // and the peer must be known by then.
    // SAFETY: the socket's value.
    if seg.len > 0 && unsafe { (*st).flags } & (traffic::flags::LISTENER | traffic::flags::ACCEPTED) != 0 {
        first_packet_accepted(ctx, st, &l4, egress, full);
    }
    traffic::count_packet(full, st, &seg, egress);
    if seg.len == 0 {
        return None;
    }
    // SAFETY: the socket's value.
    let flags = unsafe { (*st).flags };
    // A DNS socket (REPORTS) reports its messages below instead.
    let first_datagram =
        if egress { traffic::flags::FIRST_DATAGRAM_OUT } else { traffic::flags::FIRST_DATAGRAM_IN };
    if flags & (traffic::flags::REPORTS | first_datagram) == first_datagram && l4.protocol == IPPROTO_UDP {
        // SAFETY: the socket's value; one datagram each way is reported.
        unsafe { (*st).flags &= !first_datagram };
        return report_datagram(ctx, st, &l4, egress, data, seg.len);
    }
    if flags & traffic::flags::REPORTS == 0 {
        return None;
    }
    let key = sk as u64;
    let Some(slot) = SOCKETS.get_ptr_mut(&key) else {
        // Reported all it had: later packets need not look.
        // SAFETY: the socket's value.
        unsafe { (*st).flags &= !traffic::flags::REPORTS };
        return None;
    };
    // SAFETY: copied out; written back through the slot below.
    let t = unsafe { *slot };
    if l4.protocol == IPPROTO_UDP && t.pending & pending::DNS != 0 {
        return dns_packet(ctx, &t, &l4, egress);
    }
    // What the process sends first on a connection it opened; what the
    // peer sends first on one it accepted.
    let wanted = if egress { pending::FIRST_BYTES } else { pending::FIRST_BYTES_IN };
    if l4.protocol != IPPROTO_TCP || t.pending & wanted == 0 {
        return None;
    }
    let seq = seg.seq;
    let len = seg.len;
    // Where this packet's bytes start in the stream: a retransmission
    // starts before what was reported and is skipped; a hole ends it.
    let first_seq = if t.progress.sends == 0 { seq } else { t.first_seq };
    let at = seq.wrapping_sub(first_seq);
    if at < t.progress.sent {
        return None;
    }
    let remaining = t.pending & !wanted;
    if at > t.progress.sent {
        crate::common::count(counter::FIRST_BYTES_OUT_OF_ORDER);
        // SAFETY: the slot this program looked up.
        unsafe { (*slot).pending = remaining };
        if remaining == 0 {
            remove_counted!(SOCKETS, table::SOCKETS, &key);
        }
        return None;
    }
    // SAFETY: helper on the context the kernel passed.
    let conn = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let direction = if egress { first_bytes_direction::OUTBOUND } else { first_bytes_direction::INBOUND };
    let send = Send { peer: &t.peer, fd: -1, conn, len: len as u64, direction };
    let src = Packet { ctx, at: data, header: &t.header };
    match gather(&src, &t.progress, &send) {
        // SAFETY: the slot this program looked up.
        Some(next) => unsafe {
            (*slot).progress = next;
            (*slot).first_seq = first_seq;
        },
        None if remaining == 0 => remove_counted!(SOCKETS, table::SOCKETS, &key),
        // SAFETY: as above.
        None => unsafe { (*slot).pending = remaining },
    }
    Some(())
}

/// TCP flags (RFC 9293 3.1).
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;

/// The first payload packet of a connection accepted from a listener this
/// tracer saw bound: it is accepted now (if the acceptor has not yet taken
/// the peer's address, the peer comes from the packet), and when the peer
/// speaks, its first message is followed like an outbound one.
#[inline(always)]
fn first_packet_accepted(
    ctx: &SkBuffContext,
    st: *mut tracer_common::SocketState,
    l4: &Transport,
    egress: bool,
    sk: *mut core::ffi::c_void,
) -> Option<()> {
    traffic::accepted(st);
    if l4.protocol != IPPROTO_TCP {
        return None;
    }
    let peer = packet_peer(ctx, l4, egress)?;
    // SAFETY: the socket's value.
    unsafe {
        if (*st).flow.port == 0 {
            ((*st).flow.family, (*st).flow.port, (*st).flow.addr) = (peer.family, peer.port, peer.addr);
        }
        if egress || (*st).owner.kind == 0 {
            return None;
        }
        (*st).flags = ((*st).flags & !traffic::flags::ACCEPTED) | traffic::flags::REPORTS;
        let tracked =
            Tracked::new((*st).owner, peer, SOCK_STREAM as u8, IPPROTO_TCP, pending::FIRST_BYTES_IN);
        upsert!(SOCKETS, table::SOCKETS, &(sk as u64), &tracked);
    }
    Some(())
}

/// The peer of a packet: its source arriving, its destination leaving.
#[inline(always)]
fn packet_peer(ctx: &SkBuffContext, l4: &Transport, egress: bool) -> Option<Endpoint> {
    let (addr_at, port_at) = match (l4.v6, egress) {
        (false, false) => (12, l4.at),
        (false, true) => (16, l4.at + 2),
        (true, false) => (8, l4.at),
        (true, true) => (24, l4.at + 2),
    };
    let mut peer = Endpoint {
        family: if l4.v6 { AF_INET6 } else { AF_INET },
        port: u16::from_be(ctx.load(port_at as usize).ok()?),
        _pad: 0,
        addr: [0; 16],
    };
    if l4.v6 {
        peer.addr = ctx.load(addr_at).ok()?;
    } else {
        peer.addr[..4].copy_from_slice(&ctx.load::<[u8; 4]>(addr_at).ok()?);
    }
    Some(peer)
}

/// A UDP socket's first datagram one way, for the process that owns it:
/// whole in one record (up to FIRST_BYTES_MAX - 1 bytes of it). One copy
/// into one reservation, apart from the TCP gathering: older verifiers
/// walk every path of that twice over otherwise.
#[inline(always)]
fn report_datagram(
    ctx: &SkBuffContext,
    st: *mut tracer_common::SocketState,
    l4: &Transport,
    egress: bool,
    data: u32,
    len: u32,
) -> Option<()> {
    let peer = packet_peer(ctx, l4, egress)?;
    // DNS has records of its own (where the hooks that find it attach).
    if peer.port == DNS_PORT {
        return None;
    }
    let mut entry = reserve::<FirstBytesEvent<FIRST_BYTES_MAX>>(EventKind::FirstBytes)?;
    // SAFETY: reservation sized for the event; every field written below.
    let event = unsafe { &mut *entry.as_mut_ptr() };
    // SAFETY: the socket's value; its owner was stamped with the flags.
    stamp(&mut event.header, unsafe { &(*st).owner }, EventKind::FirstBytes);
    event.peer = peer;
    event.fd = -1;
    event.len = len;
    event.offset = 0;
    event.last = 1;
    event.datagram = 1;
    event._pad = 0;
    event.direction = if egress { first_bytes_direction::OUTBOUND } else { first_bytes_direction::INBOUND };
    // SAFETY: helper on the context the kernel passed.
    event.conn = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    event.captured = load_bounded(ctx, data, &mut event.payload, len as u64);
    crate::common::submit(entry);
    Some(())
}

/// A packet's payload, reported for the socket's owner.
struct Packet<'a> {
    ctx: &'a SkBuffContext,
    at: u32,
    header: &'a EventHeader,
}

impl Source for Packet<'_> {
    #[inline(always)]
    fn header(&self, header: &mut EventHeader) {
        stamp(header, self.header, EventKind::FirstBytes);
    }

    #[inline(always)]
    fn copy<const N: usize>(&self, dst: &mut [u8; N], take: u64) -> u32 {
        load_bounded(self.ctx, self.at, dst, take)
    }
}

/// The owner's header, for a record made now.
#[inline(always)]
fn stamp(header: &mut EventHeader, owner: &EventHeader, kind: EventKind) {
    *header = *owner;
    header.kind = kind as u32;
    // SAFETY: helper with no arguments.
    header.ktime_ns = unsafe { bpf_ktime_get_ns() };
}

/// Copies `min(len, N - 1)` packet bytes from `at` into `dst`; returns the
/// count. The mask proves the bound to the verifier (see read_user_bounded);
/// the helper takes no empty copy, so what is masked is `len - 1` (older
/// verifiers must see 1 <= len <= N).
#[inline(always)]
fn load_bounded<const N: usize>(ctx: &SkBuffContext, at: u32, dst: &mut [u8; N], len: u64) -> u32 {
    if len == 0 {
        return 0;
    }
    let len = if len >= N as u64 { N as u64 - 1 } else { len };
    // SAFETY: a local.
    let len = (unsafe { core::ptr::read_volatile(&(len - 1)) } & (N as u64 - 1)) + 1;
    // SAFETY: dst has N bytes and len < N; the helper checks the packet.
    let ret = unsafe {
        aya_ebpf::helpers::generated::bpf_skb_load_bytes(
            ctx.as_ptr(),
            at,
            dst.as_mut_ptr().cast(),
            len as u32,
        )
    };
    if ret == 0 { len as u32 } else { 0 }
}

/// A UDP packet to (egress) or from (ingress) port 53 on a DNS socket.
#[inline(always)]
fn dns_packet(ctx: &SkBuffContext, t: &Tracked, l4: &Transport, egress: bool) -> Option<()> {
    let (sport, dport): (u16, u16) =
        (u16::from_be(ctx.load(l4.at as usize).ok()?), u16::from_be(ctx.load(l4.at as usize + 2).ok()?));
    let server_port = if egress { dport } else { sport };
    if server_port != DNS_PORT {
        return None;
    }
    let data = l4.at + 8;
    let len = ctx.len().checked_sub(data)?;
    let mut entry = reserve::<DnsEvent>(EventKind::Dns)?;
    // SAFETY: reservation sized for DnsEvent; every field written below.
    let event = unsafe { &mut *entry.as_mut_ptr() };
    stamp(&mut event.header, &t.header, EventKind::Dns);
    event.direction = if egress { dns_direction::QUERY } else { dns_direction::RESPONSE };
    event._pad = 0;
    event.family = if l4.v6 { AF_INET6 } else { AF_INET };
    event.port = DNS_PORT;
    event._pad2 = 0;
    event.len = len;
    // The server: the packet's other end (an unconnected socket may ask
    // several).
    event.addr = [0; 16];
    if !l4.v6 {
        let at = if egress { 16 } else { 12 };
        if let Ok(a) = ctx.load::<[u8; 4]>(at) {
            event.addr[..4].copy_from_slice(&a);
        }
    } else {
        let at = if egress { 24 } else { 8 };
        if let Ok(a) = ctx.load::<[u8; 16]>(at) {
            event.addr = a;
        }
    }
    event.captured = load_bounded(ctx, data, &mut event.payload, len as u64);
    crate::common::submit(entry);
    Some(())
}
