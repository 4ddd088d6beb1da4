//! Decoding ring-buffer records into owned Rust values. Every record is
//! length-checked against its kind before it is read; a short or unknown
//! record is an error the pipeline counts, never a crash.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tracer_common::{
    ConnectEvent, DnsEvent, Endpoint, EventHeader, EventKind, ExecEvent, ExitEvent, FIRST_BYTES_MAX,
    FileOpenEvent, FirstBytesEvent, ForkEvent, GpuOpenEvent, ListenEvent, SetSidEvent, connect_source,
    exec_flags, file_source,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub kind: EventKind,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub ktime_ns: u64,
    pub start_boottime_ns: u64,
    pub cgroup_id: u64,
    pub comm: Vec<u8>,
    /// The session's host id, 0 when unknown.
    pub sid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    pub filename: Vec<u8>,
    pub filename_truncated: bool,
    /// None when the argument block could not be read.
    pub argv: Option<Vec<Vec<u8>>>,
    pub argv_truncated: bool,
    pub argv_full_len: u32,
    pub old_pid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectSource {
    Syscall,
    SockState,
    /// The cgroup connect hooks (see `tracer_common::connect_source::SOCKET`).
    Socket,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SockAddr {
    Inet {
        ip: IpAddr,
        port: u16,
    },
    /// Path bytes; abstract sockets start with NUL, shown as '@'.
    Unix {
        path: Vec<u8>,
    },
    Other {
        family: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub fd: i32,
    pub ret: i32,
    pub source: ConnectSource,
    /// SOCK_* type, 0 when unknown.
    pub sock_type: u8,
    /// `sk_protocol` (IPPROTO_*), 0 when unknown or for unix sockets.
    pub protocol: u16,
    pub addr: SockAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Exec(Exec),
    Fork {
        child_pid: u32,
        child_tgid: u32,
        child_start_boottime_ns: u64,
    },
    Exit {
        exit_code: u32,
        /// CPU time and waits on the CPU the process ended on, which the
        /// record carries (see `Kernel::carry_exit_share`).
        cpu_ns: u64,
        waits: u64,
    },
    Connect(Connect),
    /// First ioctl of the process on a GPU device.
    GpuOpen {
        rdev: u32,
        vendor: u32,
        fd: i32,
        cmd: u32,
        sub: u32,
    },
    /// The process became a session leader.
    SetSid {
        sid: u32,
    },
    /// One of the first sends on a new TCP connection (see
    /// `protocols::first_message` for how they are joined).
    FirstBytes {
        peer: Option<(IpAddr, u16)>,
        fd: i32,
        /// The connection's socket cookie (0 from the syscall hooks).
        conn: u64,
        len: u32,
        /// Bytes the connection sent before this send.
        offset: u32,
        /// The kernel gathers no more sends for this connection.
        last: bool,
        /// The peer's first message on a connection the process accepted
        /// (else the process's own on one it opened).
        inbound: bool,
        /// A UDP socket's first datagram that way (whole, and `last`).
        datagram: bool,
        payload: Vec<u8>,
    },
    /// A watched file was opened.
    FileOpen {
        flags: u32,
        /// The hook that saw it: syscall, device or sysctl.
        source: &'static str,
        path: Vec<u8>,
        /// A rename's source path.
        old_path: Option<Vec<u8>>,
        /// It filled its buffer: its end may be missing.
        old_path_truncated: bool,
    },
    /// A file with a temporary name first written, and where it is.
    TempWrite(crate::process::temp_files::TempWrite),
    /// A TCP socket started listening.
    Listen {
        local: Option<(IpAddr, u16)>,
    },
    /// A DNS message to or from a server on port 53.
    Dns {
        response: bool,
        server: Option<IpAddr>,
        port: u16,
        len: u32,
        payload: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub header: Header,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than the header, or than its kind's record.
    Short { kind: u32, len: usize, want: usize },
    /// A kind this build does not know.
    UnknownKind(u32),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Short { kind, len, want } => {
                write!(f, "record of kind {kind} has {len} bytes, want {want}")
            }
            Self::UnknownKind(k) => write!(f, "unknown record kind {k}"),
        }
    }
}

fn read<T: Copy>(bytes: &[u8], kind: u32) -> Result<T, DecodeError> {
    let want = size_of::<T>();
    if bytes.len() < want {
        return Err(DecodeError::Short { kind, len: bytes.len(), want });
    }
    // SAFETY: length checked; T is plain #[repr(C)] data valid for any bits.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

fn cstr(bytes: &[u8]) -> Vec<u8> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    bytes[..end].to_vec()
}

fn header(raw: &EventHeader, kind: EventKind) -> Header {
    Header {
        kind,
        pid: raw.pid,
        tgid: raw.tgid,
        ppid: raw.ppid,
        uid: raw.uid,
        gid: raw.gid,
        ktime_ns: raw.ktime_ns,
        start_boottime_ns: raw.start_boottime_ns,
        cgroup_id: raw.cgroup_id,
        comm: cstr(&raw.comm),
        sid: raw.sid,
    }
}

/// Splits a NUL-separated argument block; a final NUL is a terminator, not
/// an empty argument.
pub fn split_argv(block: &[u8]) -> Vec<Vec<u8>> {
    let block = block.strip_suffix(&[0]).unwrap_or(block);
    if block.is_empty() {
        return Vec::new();
    }
    block.split(|&b| b == 0).map(<[u8]>::to_vec).collect()
}

pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let raw_kind = bytes
        .get(..4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(DecodeError::Short { kind: 0, len: bytes.len(), want: size_of::<EventHeader>() })?;
    let kind = EventKind::from_u32(raw_kind).ok_or(DecodeError::UnknownKind(raw_kind))?;
    match kind {
        EventKind::Exec => {
            let raw: ExecEvent = read(bytes, raw_kind)?;
            let filename_len = (raw.filename_len as usize).min(raw.filename.len());
            let argv_len = (raw.argv_len as usize).min(raw.argv.len());
            let argv =
                (raw.flags & exec_flags::ARGV_UNAVAILABLE == 0).then(|| split_argv(&raw.argv[..argv_len]));
            Ok(Event {
                header: header(&raw.header, kind),
                body: Body::Exec(Exec {
                    filename: cstr(&raw.filename[..filename_len]),
                    filename_truncated: raw.flags & exec_flags::FILENAME_TRUNCATED != 0,
                    argv,
                    argv_truncated: raw.flags & exec_flags::ARGV_TRUNCATED != 0,
                    argv_full_len: raw.argv_full_len,
                    old_pid: raw.old_pid,
                }),
            })
        }
        EventKind::Fork => {
            let raw: ForkEvent = read(bytes, raw_kind)?;
            Ok(Event {
                header: header(&raw.header, kind),
                body: Body::Fork {
                    child_pid: raw.child_pid,
                    child_tgid: raw.child_tgid,
                    child_start_boottime_ns: raw.child_start_boottime_ns,
                },
            })
        }
        EventKind::Exit => {
            let raw: ExitEvent = read(bytes, raw_kind)?;
            Ok(Event {
                header: header(&raw.header, kind),
                body: Body::Exit { exit_code: raw.exit_code, cpu_ns: raw.cpu_ns, waits: raw.waits },
            })
        }
        EventKind::Dns => {
            let raw: DnsEvent = read(bytes, raw_kind)?;
            let captured = (raw.captured as usize).min(raw.payload.len());
            let server = match raw.family {
                2 => Some(IpAddr::V4(Ipv4Addr::new(raw.addr[0], raw.addr[1], raw.addr[2], raw.addr[3]))),
                10 => Some(IpAddr::V6(Ipv6Addr::from(raw.addr))),
                _ => None,
            };
            Ok(Event {
                header: header(&raw.header, kind),
                body: Body::Dns {
                    response: raw.direction == tracer_common::dns_direction::RESPONSE,
                    server,
                    port: raw.port,
                    len: raw.len,
                    payload: raw.payload[..captured].to_vec(),
                },
            })
        }
        EventKind::FirstBytes => {
            // Two sizes: the kernel reserves the large record only for a
            // send too long for the small one.
            fn body<const N: usize>(raw: FirstBytesEvent<N>) -> Body {
                let captured = (raw.captured as usize).min(raw.payload.len());
                Body::FirstBytes {
                    peer: endpoint(&raw.peer),
                    fd: raw.fd,
                    conn: raw.conn,
                    len: raw.len,
                    offset: raw.offset,
                    last: raw.last != 0,
                    inbound: raw.direction == tracer_common::first_bytes_direction::INBOUND,
                    datagram: raw.datagram != 0,
                    payload: raw.payload[..captured].to_vec(),
                }
            }
            let (header_raw, body) = if bytes.len() >= size_of::<FirstBytesEvent<FIRST_BYTES_MAX>>() {
                let raw: FirstBytesEvent<FIRST_BYTES_MAX> = read(bytes, raw_kind)?;
                (raw.header, body(raw))
            } else {
                let raw: FirstBytesEvent = read(bytes, raw_kind)?;
                (raw.header, body(raw))
            };
            Ok(Event { header: header(&header_raw, kind), body })
        }
        EventKind::FileOpen => {
            let raw: FileOpenEvent = read(bytes, raw_kind)?;
            let n = (raw.path_len as usize).min(raw.path.len());
            let old = (raw.old_path_len as usize).min(raw.old_path.len());
            if raw.source == file_source::TEMP_WRITTEN {
                let write = crate::process::temp_files::TempWrite::decode(
                    &cstr(&raw.path[..n]),
                    &raw.old_path[..old],
                )
                .ok_or(DecodeError::Short {
                    kind: raw_kind,
                    len: old,
                    want: size_of::<tracer_common::TempFile>(),
                })?;
                return Ok(Event { header: header(&raw.header, kind), body: Body::TempWrite(write) });
            }
            Ok(Event {
                header: header(&raw.header, kind),
                body: Body::FileOpen {
                    flags: raw.flags,
                    source: match raw.source {
                        file_source::DEVICE => "device",
                        file_source::SYSCTL => "sysctl",
                        file_source::WRITTEN => "write",
                        file_source::READ => "read",
                        _ => "syscall",
                    },
                    path: cstr(&raw.path[..n]),
                    old_path: (old > 0).then(|| cstr(&raw.old_path[..old])),
                    old_path_truncated: old >= raw.old_path.len() - 1,
                },
            })
        }
        EventKind::Listen => {
            let raw: ListenEvent = read(bytes, raw_kind)?;
            Ok(Event {
                header: header(&raw.header, kind),
                body: Body::Listen { local: endpoint(&raw.local) },
            })
        }
        EventKind::SetSid => {
            let raw: SetSidEvent = read(bytes, raw_kind)?;
            Ok(Event { header: header(&raw.header, kind), body: Body::SetSid { sid: raw.sid } })
        }
        EventKind::GpuOpen => {
            let raw: GpuOpenEvent = read(bytes, raw_kind)?;
            Ok(Event {
                header: header(&raw.header, kind),
                body: Body::GpuOpen {
                    rdev: raw.rdev,
                    vendor: raw.vendor,
                    fd: raw.fd,
                    cmd: raw.cmd,
                    sub: raw.sub,
                },
            })
        }
        EventKind::Connect => {
            let raw: ConnectEvent = read(bytes, raw_kind)?;
            let len = (raw.addrlen as usize).min(raw.addr.len());
            Ok(Event {
                header: header(&raw.header, kind),
                body: Body::Connect(Connect {
                    fd: raw.fd,
                    ret: raw.ret,
                    source: match raw.source {
                        connect_source::SOCK_STATE => ConnectSource::SockState,
                        connect_source::SOCKET => ConnectSource::Socket,
                        _ => ConnectSource::Syscall,
                    },
                    sock_type: raw.sock_type,
                    protocol: raw.protocol,
                    addr: parse_sockaddr(&raw.addr[..len]),
                }),
            })
        }
    }
}

fn endpoint(e: &Endpoint) -> Option<(IpAddr, u16)> {
    let ip = match e.family {
        2 => IpAddr::V4(Ipv4Addr::new(e.addr[0], e.addr[1], e.addr[2], e.addr[3])),
        10 => IpAddr::V6(Ipv6Addr::from(e.addr)),
        _ => return None,
    };
    Some((ip, e.port))
}

/// Parses a `struct sockaddr` as the caller passed it (include/uapi/linux/in.h,
/// in6.h, un.h). Too-short input for its family is reported as `Other`.
pub fn parse_sockaddr(b: &[u8]) -> SockAddr {
    if b.len() < 2 {
        return SockAddr::Other { family: 0 };
    }
    let family = u16::from_ne_bytes([b[0], b[1]]);
    match family {
        2 if b.len() >= 8 => SockAddr::Inet {
            port: u16::from_be_bytes([b[2], b[3]]),
            ip: IpAddr::V4(Ipv4Addr::new(b[4], b[5], b[6], b[7])),
        },
        10 if b.len() >= 24 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&b[8..24]);
            let ip = Ipv6Addr::from(octets);
            SockAddr::Inet { port: u16::from_be_bytes([b[2], b[3]]), ip: IpAddr::V6(ip) }
        }
        1 => {
            let path = &b[2..];
            let path = if path.first() == Some(&0) {
                // Abstract namespace: the name is the rest, NULs included.
                let mut p = vec![b'@'];
                p.extend_from_slice(&path[1..]);
                p
            } else {
                cstr(path)
            };
            SockAddr::Unix { path }
        }
        _ => SockAddr::Other { family },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::{ARGV_LEN, COMM_LEN, FILENAME_LEN, SOCKADDR_LEN};

    fn raw_header(kind: EventKind) -> EventHeader {
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(b"curl");
        EventHeader {
            kind: kind as u32,
            pid: 11,
            tgid: 10,
            ppid: 1,
            uid: 1000,
            gid: 1000,
            ktime_ns: 5,
            start_boottime_ns: 7,
            cgroup_id: 99,
            comm,
            sid: 0,
            _pad: 0,
        }
    }

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain repr(C) value.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    #[test]
    fn exec_record_round_trips_with_truncation_flags() {
        let mut ev = ExecEvent {
            header: raw_header(EventKind::Exec),
            flags: exec_flags::ARGV_TRUNCATED,
            filename_len: 9,
            argv_len: 11,
            argv_full_len: 100_000,
            old_pid: 10,
            filename: [0; FILENAME_LEN],
            argv: [0; ARGV_LEN],
        };
        ev.filename[..9].copy_from_slice(b"/bin/curl");
        ev.argv[..11].copy_from_slice(b"curl\0-s\0x\xff\0");
        let got = decode(&bytes_of(&ev)).unwrap();
        assert_eq!(got.header.comm, b"curl");
        let Body::Exec(exec) = got.body else { panic!() };
        assert_eq!(exec.filename, b"/bin/curl");
        assert_eq!(exec.argv.unwrap(), vec![b"curl".to_vec(), b"-s".to_vec(), b"x\xff".to_vec()]);
        assert!(exec.argv_truncated);
        assert_eq!(exec.argv_full_len, 100_000);
    }

    #[test]
    fn lengths_larger_than_buffers_are_clamped() {
        let mut ev = ExecEvent {
            header: raw_header(EventKind::Exec),
            flags: 0,
            filename_len: u16::MAX,
            argv_len: u16::MAX,
            argv_full_len: 0,
            old_pid: 0,
            filename: [b'a'; FILENAME_LEN],
            argv: [b'b'; ARGV_LEN],
        };
        ev.argv[ARGV_LEN - 1] = 0;
        let Body::Exec(exec) = decode(&bytes_of(&ev)).unwrap().body else { panic!() };
        assert_eq!(exec.filename.len(), FILENAME_LEN);
        assert_eq!(exec.argv.unwrap()[0].len(), ARGV_LEN - 1);
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        assert!(matches!(decode(&[]), Err(DecodeError::Short { .. })));
        let mut bytes = bytes_of(&raw_header(EventKind::Exit));
        assert!(matches!(decode(&bytes), Err(DecodeError::Short { kind: 3, .. })));
        bytes[0] = 77;
        assert_eq!(decode(&bytes), Err(DecodeError::UnknownKind(77)));
    }

    #[test]
    fn connect_sockaddrs_of_each_family() {
        let mut ev = ConnectEvent {
            header: raw_header(EventKind::Connect),
            fd: 3,
            ret: -111,
            source: connect_source::SYSCALL,
            sock_type: 1,
            protocol: 6,
            addrlen: 16,
            addr: [0; SOCKADDR_LEN],
        };
        ev.addr[..8].copy_from_slice(&[2, 0, 0x1f, 0x90, 127, 0, 0, 1]);
        let Body::Connect(c) = decode(&bytes_of(&ev)).unwrap().body else { panic!() };
        assert_eq!(c.addr, SockAddr::Inet { ip: "127.0.0.1".parse().unwrap(), port: 8080 });
        assert_eq!(c.ret, -111);

        let mut v6 = [0u8; 28];
        v6[0] = 10;
        v6[2..4].copy_from_slice(&443u16.to_be_bytes());
        v6[23] = 1;
        assert_eq!(parse_sockaddr(&v6), SockAddr::Inet { ip: "::1".parse().unwrap(), port: 443 });
        assert_eq!(parse_sockaddr(&v6[..20]), SockAddr::Other { family: 10 });

        assert_eq!(
            parse_sockaddr(b"\x01\x00/run/x.sock\0junk"),
            SockAddr::Unix { path: b"/run/x.sock".to_vec() }
        );
        assert_eq!(parse_sockaddr(b"\x01\x00\0abs\0x"), SockAddr::Unix { path: b"@abs\0x".to_vec() });
        assert_eq!(parse_sockaddr(b"\x11"), SockAddr::Other { family: 0 });
    }

    #[test]
    fn argv_block_splitting() {
        assert!(split_argv(b"").is_empty());
        assert_eq!(split_argv(b"a\0\0b\0"), vec![b"a".to_vec(), b"".to_vec(), b"b".to_vec()]);
        assert_eq!(split_argv(b"unterminated"), vec![b"unterminated".to_vec()]);
    }
}
