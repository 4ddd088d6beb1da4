//! DNS: the first bytes of every message a process sends to, or receives
//! from, port 53 over sendto/sendmsg/sendmmsg/recvfrom. The kernel only
//! finds the messages and copies them; user space parses them (hostile input
//! is its problem, with bounds checks, not the verifier's).
//!
//! glibc's resolver (resolv/res_send.c: send_dg) connects a UDP socket to the
//! server, sends with sendmmsg or send, and reads with recvfrom: the server
//! port comes from the connected socket, or from the address argument.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use tracer_common::{DnsEvent, EventKind, dns_direction, table};

use crate::{
    common::{
        config, fill_header, read_field, read_user, read_user_bounded, reserve, should_trace, syscall_arg,
    },
    files::sock_of_fd,
    process::read_tp,
};

const DNS_PORT: u16 = 53;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// A server endpoint: family, port (host order), address.
#[derive(Clone, Copy)]
struct Server {
    family: u16,
    port: u16,
    addr: [u8; 16],
}

/// A recvfrom in flight on a DNS socket.
#[repr(C)]
#[derive(Clone, Copy)]
struct PendingRecv {
    buf: u64,
    /// Non-zero: the socket has no peer; check the source address at exit.
    src_addr: u64,
    server_family: u16,
    server_port: u16,
    _pad: u32,
    server_addr: [u8; 16],
}

#[map]
static DNS_RECV: LruHashMap<u64, PendingRecv> = LruHashMap::with_max_entries(4096, 0);

/// (tgid << 32 | fd) of sockets connect(2)ed to port 53: sends and receives
/// without an address are checked against it with one lookup, instead of
/// walking the fd of every send(2) and recv(2) on the host.
#[map]
pub static DNS_SOCKETS: LruHashMap<u64, u8> = LruHashMap::with_max_entries(8192, 0);

#[inline(always)]
fn dns_socket_key(fd: u64) -> u64 {
    (bpf_get_current_pid_tgid() & 0xffff_ffff_0000_0000) | (fd & 0xffff_ffff)
}

/// Called from sys_enter_close with the same (tgid << 32 | fd) key.
#[inline(always)]
pub fn forget_socket(key: u64) {
    remove_counted!(DNS_SOCKETS, table::DNS_SOCKETS, &key);
}

/// Called from sys_enter_connect for inet connects.
#[inline(always)]
pub fn note_connect(fd: u64, port: u16) {
    if port == DNS_PORT {
        upsert!(DNS_SOCKETS, table::DNS_SOCKETS, &dns_socket_key(fd), &1);
    }
}

/// Whether `fd` was connected to a DNS server (and still is: the fd may
/// have been closed and reused since, so the socket's peer is checked).
#[inline(always)]
fn connected_dns_server(fd: u64) -> Option<Server> {
    // SAFETY: presence check only.
    unsafe { DNS_SOCKETS.get(&dns_socket_key(fd)) }?;
    let server = server_of_sock(sock_of_fd(fd)?)?;
    (server.port == DNS_PORT).then_some(server)
}

/// The endpoint in a user `struct sockaddr` (in.h / in6.h).
#[inline(always)]
fn server_of_sockaddr(uaddr: u64) -> Option<Server> {
    let family: u16 = read_user(uaddr)?;
    let port = u16::from_be(read_user(uaddr + 2)?);
    let mut addr = [0u8; 16];
    match family {
        AF_INET => addr[..4].copy_from_slice(&read_user::<[u8; 4]>(uaddr + 4)?),
        AF_INET6 => addr = read_user(uaddr + 8)?,
        _ => return None,
    }
    Some(Server { family, port, addr })
}

/// The peer of a connected socket (include/net/sock.h: sock_common).
#[inline(always)]
fn server_of_sock(sk: u64) -> Option<Server> {
    let k = &config().kernel;
    let family: u16 = read_field(sk, k.sk_family)?;
    let port = u16::from_be(read_field(sk, k.sk_dport)?);
    let mut addr = [0u8; 16];
    match family {
        AF_INET => addr[..4].copy_from_slice(&read_field::<[u8; 4]>(sk, k.sk_daddr)?),
        AF_INET6 => addr = read_field(sk, k.sk_v6_daddr)?,
        _ => return None,
    }
    Some(Server { family, port, addr })
}

/// Where a send goes: the address argument if given, else the peer of a
/// socket connected to port 53.
#[inline(always)]
fn send_target(fd: u64, uaddr: u64) -> Option<Server> {
    if uaddr == 0 {
        return connected_dns_server(fd);
    }
    let server = server_of_sockaddr(uaddr)?;
    (server.port == DNS_PORT).then_some(server)
}

#[inline(always)]
fn emit(direction: u8, server: &Server, buf: u64, len: u64) -> Option<()> {
    let mut entry = reserve::<DnsEvent>(EventKind::Dns)?;
    // SAFETY: reservation sized for DnsEvent; every field written below.
    let event = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut event.header, EventKind::Dns);
    event.direction = direction;
    event._pad = 0;
    event.family = server.family;
    event.port = server.port;
    event._pad2 = 0;
    event.len = len.min(u32::MAX as u64) as u32;
    event.addr = server.addr;
    // At most DNS_CAPTURE - 1 bytes are copied; len > captured marks a
    // longer message.
    event.captured = read_user_bounded(&mut event.payload, buf, len).unwrap_or(0) as u32;
    crate::common::submit(entry);
    Some(())
}

#[tracepoint(category = "syscalls", name = "sys_enter_sendto")]
pub fn sys_enter_sendto(ctx: TracePointContext) -> u32 {
    try_sendto(&ctx);
    0
}

fn try_sendto(ctx: &TracePointContext) -> Option<()> {
    if !should_trace((bpf_get_current_pid_tgid() >> 32) as u32) {
        return None;
    }
    let (fd, buf, len, uaddr) =
        (syscall_arg(ctx, 0)?, syscall_arg(ctx, 1)?, syscall_arg(ctx, 2)?, syscall_arg(ctx, 4)?);
    crate::payload::on_sendto(fd, buf, len);
    let server = send_target(fd, uaddr)?;
    emit(dns_direction::QUERY, &server, buf, len)
}

/// `struct user_msghdr` (include/linux/socket.h): msg_name @0, msg_iov @16,
/// msg_iovlen @24; `struct iovec`: base @0, len @8.
#[inline(always)]
fn emit_msghdr(fd: u64, msg: u64) -> Option<()> {
    let name: u64 = read_user(msg)?;
    let server = send_target(fd, name)?;
    let iov: u64 = read_user(msg + 16)?;
    let iovlen: u64 = read_user(msg + 24)?;
    if iovlen == 0 {
        return None;
    }
    let base: u64 = read_user(iov)?;
    let len: u64 = read_user(iov + 8)?;
    emit(dns_direction::QUERY, &server, base, len)
}

#[tracepoint(category = "syscalls", name = "sys_enter_sendmsg")]
pub fn sys_enter_sendmsg(ctx: TracePointContext) -> u32 {
    try_sendmsg(&ctx);
    0
}

fn try_sendmsg(ctx: &TracePointContext) -> Option<()> {
    if !should_trace((bpf_get_current_pid_tgid() >> 32) as u32) {
        return None;
    }
    let (fd, msg) = (syscall_arg(ctx, 0)?, syscall_arg(ctx, 1)?);
    if let (Some(iov), Some(iovlen)) = (read_user::<u64>(msg + 16), read_user::<u64>(msg + 24)) {
        crate::payload::on_iovec(fd, iov, iovlen);
    }
    emit_msghdr(fd, msg)
}

/// glibc sends the A and AAAA queries together: the first two messages of
/// the vector (`struct mmsghdr` is a msghdr of 56 bytes and a length, 64).
#[tracepoint(category = "syscalls", name = "sys_enter_sendmmsg")]
pub fn sys_enter_sendmmsg(ctx: TracePointContext) -> u32 {
    try_sendmmsg(&ctx);
    0
}

fn try_sendmmsg(ctx: &TracePointContext) -> Option<()> {
    if !should_trace((bpf_get_current_pid_tgid() >> 32) as u32) {
        return None;
    }
    let (fd, vec, vlen) = (syscall_arg(ctx, 0)?, syscall_arg(ctx, 1)?, syscall_arg(ctx, 2)?);
    emit_msghdr(fd, vec)?;
    if vlen > 1 {
        emit_msghdr(fd, vec + 64)?;
    }
    Some(())
}

#[tracepoint(category = "syscalls", name = "sys_enter_recvfrom")]
pub fn sys_enter_recvfrom(ctx: TracePointContext) -> u32 {
    try_enter_recvfrom(&ctx);
    0
}

fn try_enter_recvfrom(ctx: &TracePointContext) -> Option<()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !should_trace((pid_tgid >> 32) as u32) {
        return None;
    }
    let (fd, buf, src) = (syscall_arg(ctx, 0)?, syscall_arg(ctx, 1)?, syscall_arg(ctx, 4)?);
    let sk = sock_of_fd(fd)?;
    let mut pending =
        PendingRecv { buf, src_addr: 0, server_family: 0, server_port: 0, _pad: 0, server_addr: [0; 16] };
    match server_of_sock(sk) {
        Some(s) if s.port == DNS_PORT => {
            pending.server_family = s.family;
            pending.server_port = s.port;
            pending.server_addr = s.addr;
        }
        // No peer: decided at exit from the source address the kernel fills.
        Some(s) if s.port == 0 && src != 0 => pending.src_addr = src,
        _ => return None,
    }
    upsert!(DNS_RECV, table::DNS_RECV, &pid_tgid, &pending);
    Some(())
}

#[tracepoint(category = "syscalls", name = "sys_exit_recvfrom")]
pub fn sys_exit_recvfrom(ctx: TracePointContext) -> u32 {
    try_exit_recvfrom(&ctx);
    0
}

fn try_exit_recvfrom(ctx: &TracePointContext) -> Option<()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: copied out before removal.
    let pending = unsafe { DNS_RECV.get(&pid_tgid) }.copied()?;
    remove_counted!(DNS_RECV, table::DNS_RECV, &pid_tgid);
    let ret: i64 = read_tp(ctx, config().tp.syscall_ret)?;
    if ret <= 0 {
        return None;
    }
    let server = if pending.src_addr != 0 {
        let s = server_of_sockaddr(pending.src_addr)?;
        if s.port != DNS_PORT {
            return None;
        }
        s
    } else {
        Server { family: pending.server_family, port: pending.server_port, addr: pending.server_addr }
    };
    emit(dns_direction::RESPONSE, &server, pending.buf, ret as u64)
}
