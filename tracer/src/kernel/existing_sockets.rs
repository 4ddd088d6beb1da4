//! Sockets opened before the programs were attached have no owner in their
//! socket-local storage (the kernel stamps it at connect, accept and send),
//! so their packets would count as unowned. At start each running process's
//! inet sockets get their owner and peer here, through a copy of the
//! process's descriptor (pidfd_getfd(2), Linux 5.6): a miner already
//! connected to its pool when the tracer starts is attributed from its
//! first packet on, and a server listening since before is given the
//! connections it accepts from now on.

use std::{
    collections::HashSet,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

use aya::maps::{MapData, SkStorage};
use serde::Serialize;
use tracer_common::{FlowKey, SocketState};

/// What the start-up pass did, reported in health.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Adopted {
    /// Inet sockets given their owner.
    pub sockets: u64,
    /// Sockets that already had one (stamped by the kernel meanwhile).
    pub already_owned: u64,
    /// Sockets that could not be reached (the process exited, a
    /// descriptor closed meanwhile, no pidfd support): their bytes count
    /// as unowned.
    pub failed: u64,
}

/// Gives every inet socket of the processes `wanted` accepts its owner.
/// A socket held by several processes goes to the first one found.
pub fn adopt(
    map: &mut SkStorage<MapData, SocketState>,
    proc_root: &Path,
    wanted: impl Fn(u32) -> bool,
) -> Adopted {
    let mut out = Adopted::default();
    let mut seen = HashSet::new();
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir(proc_root) else { return out };
    for entry in entries.flatten() {
        let Some(tgid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if tgid == me || !wanted(tgid) {
            continue;
        }
        let fds = socket_fds(&entry.path(), &mut seen);
        if fds.is_empty() {
            continue;
        }
        let Some(pidfd) = pidfd_open(tgid) else {
            out.failed += fds.len() as u64;
            continue;
        };
        for fd in fds {
            match adopt_one(map, &pidfd, fd, tgid) {
                Outcome::Owned => out.sockets += 1,
                Outcome::AlreadyOwned => out.already_owned += 1,
                Outcome::NotInet => {}
                Outcome::Failed => out.failed += 1,
            }
        }
    }
    out
}

enum Outcome {
    Owned,
    AlreadyOwned,
    NotInet,
    Failed,
}

/// The descriptors of a process that are sockets not seen in another.
fn socket_fds(proc_dir: &Path, seen: &mut HashSet<u64>) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir(proc_dir.join("fd")) else { return Vec::new() };
    let mut fds = Vec::new();
    for e in entries.flatten() {
        let Ok(target) = std::fs::read_link(e.path()) else { continue };
        let inode = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse::<u64>().ok());
        if let (Some(inode), Some(fd)) = (inode, e.file_name().to_str().and_then(|n| n.parse().ok()))
            && seen.insert(inode)
        {
            fds.push(fd);
        }
    }
    fds
}

fn pidfd_open(tgid: u32) -> Option<OwnedFd> {
    // SAFETY: plain syscall; the result is a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, tgid as libc::c_int, 0) };
    // SAFETY: a descriptor this process now owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn adopt_one(map: &mut SkStorage<MapData, SocketState>, pidfd: &OwnedFd, fd: i32, tgid: u32) -> Outcome {
    // SAFETY: plain syscall; the result is a new descriptor or -1.
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if copy < 0 {
        return Outcome::Failed;
    }
    // SAFETY: a descriptor this process now owns; closing it leaves the
    // other process's socket open.
    let copy = unsafe { OwnedFd::from_raw_fd(copy as i32) };
    let Some(family) = sockopt(&copy, libc::SO_DOMAIN).map(|f| f as u16) else { return Outcome::Failed };
    if family != libc::AF_INET as u16 && family != libc::AF_INET6 as u16 {
        return Outcome::NotInet;
    }
    let protocol = sockopt(&copy, libc::SO_PROTOCOL).unwrap_or(0) as u16;
    let mut flow = FlowKey { tgid, family: 0, protocol, port: 0, _pad: 0, addr: [0; 16], _pad2: 0 };
    if let Some((port, addr)) = peer(&copy, family) {
        (flow.family, flow.port, flow.addr) = (family, port, addr);
    }
    // A listener passes its owner on to the connections it accepts (the
    // kernel clones the storage); with no header recorded, their peers'
    // first messages are not gathered, their bytes are counted.
    let listener = sockopt(&copy, libc::SO_ACCEPTCONN).is_some_and(|v| v != 0);
    let flags = if listener { tracer_common::socket_flags::LISTENER } else { 0 };
    let state = match map.get(&copy, 0) {
        Ok(s) if s.flow.tgid != 0 => return Outcome::AlreadyOwned,
        // Packets came before the owner was known: keep what they counted.
        Ok(s) => SocketState { flow, flags: s.flags | flags, ..s },
        Err(_) => SocketState {
            flags,
            _pad: 0,
            flow,
            // SAFETY: an all-zero header is "unset".
            owner: unsafe { std::mem::zeroed() },
            tx: Default::default(),
            rx: Default::default(),
        },
    };
    match map.insert(&copy, state, 0) {
        Ok(()) => Outcome::Owned,
        Err(_) => Outcome::Failed,
    }
}

fn sockopt(fd: &OwnedFd, name: libc::c_int) -> Option<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: v and len are valid for the call.
    let r =
        unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, name, (&raw mut v).cast(), &mut len) };
    (r == 0).then_some(v)
}

/// The connected peer's port (host order) and address (network order).
fn peer(fd: &OwnedFd, family: u16) -> Option<(u16, [u8; 16])> {
    // SAFETY: zeroed storage is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: ss and len are valid for the call.
    if unsafe { libc::getpeername(fd.as_raw_fd(), (&raw mut ss).cast(), &mut len) } != 0 {
        return None;
    }
    let mut addr = [0u8; 16];
    if family == libc::AF_INET as u16 {
        // SAFETY: the kernel wrote a sockaddr_in for an AF_INET socket.
        let sin: libc::sockaddr_in = unsafe { std::ptr::read((&raw const ss).cast()) };
        addr[..4].copy_from_slice(&sin.sin_addr.s_addr.to_ne_bytes());
        Some((u16::from_be(sin.sin_port), addr))
    } else {
        // SAFETY: the kernel wrote a sockaddr_in6 for an AF_INET6 socket.
        let sin6: libc::sockaddr_in6 = unsafe { std::ptr::read((&raw const ss).cast()) };
        addr.copy_from_slice(&sin6.sin6_addr.s6_addr);
        Some((u16::from_be(sin6.sin6_port), addr))
    }
}
