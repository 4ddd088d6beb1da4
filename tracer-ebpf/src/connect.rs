//! Socket connects where the cgroup connect hooks (`sockets.rs`) cannot
//! serve: `connect(2)` through its enter/exit tracepoints (with
//! `--syscalls`, or where those hooks do not attach), and TCP connects that
//! pass through neither (in-kernel callers) through
//! `sock:inet_sock_set_state`, which also ends the handshakes `sockets.rs`
//! waits on. Each connection is reported once.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use tracer_common::{
    ConnectArgs, ConnectEvent, Endpoint, EventKind, ListenEvent, SOCKADDR_LEN, connect_source, counter, table,
};

use crate::{
    common::{config, control, count, fill_header, read_user_bounded, reserve, should_trace},
    files::socket_kind,
    process::read_tp,
};

const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
/// include/net/tcp_states.h
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_CLOSE: i32 = 7;
const TCP_LISTEN: i32 = 10;
const EINPROGRESS: i32 = 115;
/// include/linux/net.h
const SOCK_STREAM: u8 = 1;

/// Arguments of `connect(2)` calls in flight, keyed by pid_tgid. LRU so a
/// thread killed inside the call cannot leak an entry forever.
#[map]
static CONNECTS_IN_FLIGHT: LruHashMap<u64, ConnectArgs> = LruHashMap::with_max_entries(16384, 0);

#[tracepoint(category = "syscalls", name = "sys_enter_connect")]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    try_enter_connect(&ctx);
    0
}

fn try_enter_connect(ctx: &TracePointContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !should_trace((pid_tgid >> 32) as u32) {
        return;
    }
    let cfg = config();
    let (Some(fd), Some(uaddr), Some(addrlen)) = (
        read_tp::<u64>(ctx, cfg.tp.connect_fd),
        read_tp::<u64>(ctx, cfg.tp.connect_uservaddr),
        read_tp::<u64>(ctx, cfg.tp.connect_addrlen),
    ) else {
        count(counter::READ_ERRORS);
        return;
    };
    let mut args = ConnectArgs {
        fd: fd as i32,
        addrlen: 0,
        sock_type: 0,
        protocol: 0,
        quiet: 0,
        addr: [0; SOCKADDR_LEN],
    };
    // Unreadable: a bad pointer (connect fails with EFAULT) or a page not
    // yet resident (connect succeeds, the kernel faults it in). Counted.
    let Some(len) = read_user_bounded(&mut args.addr, uaddr, addrlen) else {
        count(counter::CONNECT_ADDR_UNREADABLE);
        return;
    };
    if len < 2 {
        return;
    }
    let family = u16::from_ne_bytes([args.addr[0], args.addr[1]]);
    if family != AF_INET && family != AF_INET6 && family != AF_UNIX {
        return;
    }
    // The socket hooks report inet connects; the packet hooks see their
    // first bytes and DNS. What is left to this program it does.
    if family != AF_UNIX && control(tracer_common::control::SOCKET_HOOKS) {
        if control(tracer_common::control::PACKET_HOOKS) {
            return;
        }
        args.quiet = 1;
    }
    args.addrlen = len as u32;
    if family == AF_INET || family == AF_INET6 {
        crate::dns::note_connect(fd, u16::from_be_bytes([args.addr[2], args.addr[3]]));
    }
    if let Some((sock_type, protocol)) = socket_kind(fd) {
        args.sock_type = sock_type;
        args.protocol = protocol;
    }
    upsert!(CONNECTS_IN_FLIGHT, table::CONNECTS_IN_FLIGHT, &pid_tgid, &args);
}

#[tracepoint(category = "syscalls", name = "sys_exit_connect")]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    try_exit_connect(&ctx);
    0
}

fn try_exit_connect(ctx: &TracePointContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(args) = (unsafe { CONNECTS_IN_FLIGHT.get(&pid_tgid) }).copied() else {
        return;
    };
    remove_counted!(CONNECTS_IN_FLIGHT, table::CONNECTS_IN_FLIGHT, &pid_tgid);
    let ret = read_tp::<i64>(ctx, config().tp.connect_ret).unwrap_or(0);
    // A TCP connection that is (being) established: its first write is
    // evidence of the protocol spoken. Marked before the connect record is
    // reserved: a connect record lost to a full ring (counted) must not
    // lose its first bytes too, uncounted.
    if (ret == 0 || ret == -(EINPROGRESS as i64)) && args.sock_type == SOCK_STREAM as u16 {
        if let Some(peer) = endpoint_of(&args.addr) {
            crate::payload::mark_fresh(args.fd as u64, &peer);
        }
    }
    if args.quiet != 0 {
        return;
    }
    let Some(mut entry) = reserve::<ConnectEvent>(EventKind::Connect) else { return };
    // SAFETY: reservation sized for ConnectEvent; all fields written.
    let event = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut event.header, EventKind::Connect);
    event.fd = args.fd;
    event.ret = ret as i32;
    event.source = connect_source::SYSCALL;
    event.sock_type = args.sock_type as u8;
    event.protocol = args.protocol;
    event.addrlen = args.addrlen;
    event.addr = args.addr;
    crate::common::submit(entry);
}

/// The peer in a sockaddr_in/in6 as the caller passed it.
#[inline(always)]
fn endpoint_of(addr: &[u8; SOCKADDR_LEN]) -> Option<Endpoint> {
    let family = u16::from_ne_bytes([addr[0], addr[1]]);
    let mut peer = Endpoint { family, port: u16::from_be_bytes([addr[2], addr[3]]), _pad: 0, addr: [0; 16] };
    match family {
        AF_INET => peer.addr[..4].copy_from_slice(&addr[4..8]),
        AF_INET6 => peer.addr.copy_from_slice(&addr[8..24]),
        _ => return None,
    }
    Some(peer)
}

/// `sock:inet_sock_set_state` CLOSE -> SYN_SENT is the start of every active
/// TCP open (net/ipv4/tcp_ipv4.c: tcp_v4_connect). Inside `connect(2)` it is
/// skipped: sys_exit_connect reports that one, with its result.
#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    try_sock_state(&ctx);
    0
}

fn try_sock_state(ctx: &TracePointContext) {
    let tp = &config().tp;
    let (Some(old), Some(new)) =
        (read_tp::<i32>(ctx, tp.sock_oldstate), read_tp::<i32>(ctx, tp.sock_newstate))
    else {
        return;
    };
    if new == TCP_LISTEN {
        report_listen(ctx, tp);
        return;
    }
    let sk: u64 = read_tp(ctx, tp.sock_skaddr).unwrap_or(0);
    if old == TCP_SYN_SENT {
        crate::sockets::on_state(sk, new == TCP_ESTABLISHED, new == TCP_CLOSE);
        return;
    }
    if old != TCP_CLOSE || new != TCP_SYN_SENT {
        if new == TCP_CLOSE {
            crate::sockets::on_state(sk, false, true);
        }
        return;
    }
    // Reported by the connect hooks, with its outcome to come.
    if crate::sockets::is_tracked(sk) {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: presence check only.
    if unsafe { CONNECTS_IN_FLIGHT.get(&pid_tgid) }.is_some() {
        return;
    }
    if !should_trace((pid_tgid >> 32) as u32) {
        return;
    }
    let (Some(family), Some(dport), Some(protocol)) = (
        read_tp::<u16>(ctx, tp.sock_family),
        read_tp::<u16>(ctx, tp.sock_dport),
        read_tp::<u16>(ctx, tp.sock_protocol),
    ) else {
        count(counter::READ_ERRORS);
        return;
    };
    let Some(mut entry) = reserve::<ConnectEvent>(EventKind::Connect) else { return };
    // SAFETY: reservation sized for ConnectEvent; all fields written.
    let event = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut event.header, EventKind::Connect);
    event.fd = -1;
    event.ret = -EINPROGRESS;
    event.source = connect_source::SOCK_STATE;
    event.sock_type = SOCK_STREAM;
    event.protocol = protocol;
    // Rebuild a sockaddr_in/in6 so user space parses one format. The
    // tracepoint's dport is in host order (TP_fast_assign: ntohs).
    event.addr = [0; SOCKADDR_LEN];
    event.addr[0..2].copy_from_slice(&family.to_ne_bytes());
    event.addr[2..4].copy_from_slice(&dport.to_be_bytes());
    if family == AF_INET {
        if let Some(a) = read_tp::<[u8; 4]>(ctx, tp.sock_daddr) {
            event.addr[4..8].copy_from_slice(&a);
        }
        event.addrlen = 16;
    } else {
        if let Some(a) = read_tp::<[u8; 16]>(ctx, tp.sock_daddr_v6) {
            event.addr[8..24].copy_from_slice(&a);
        }
        event.addrlen = 28;
    }
    crate::common::submit(entry);
}

/// A socket entering LISTEN (net/ipv4/inet_connection_sock.c:
/// inet_csk_listen_start), in the listening process's context.
fn report_listen(ctx: &TracePointContext, tp: &tracer_common::TracepointOffsets) -> Option<()> {
    if !should_trace((bpf_get_current_pid_tgid() >> 32) as u32) {
        return None;
    }
    let family: u16 = read_tp(ctx, tp.sock_family)?;
    let port: u16 = read_tp(ctx, tp.sock_sport)?;
    let mut local = Endpoint { family, port, _pad: 0, addr: [0; 16] };
    if family == AF_INET {
        local.addr[..4].copy_from_slice(&read_tp::<[u8; 4]>(ctx, tp.sock_saddr)?);
    } else {
        local.addr = read_tp(ctx, tp.sock_saddr_v6)?;
    }
    let mut entry = reserve::<ListenEvent>(EventKind::Listen)?;
    // SAFETY: reservation sized for ListenEvent; all fields written.
    let event = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut event.header, EventKind::Listen);
    event.local = local;
    crate::common::submit(entry);
    Some(())
}
