//! The host's checks that need no programs: privileges, kernel, sysctls,
//! cgroups, and whether outputs and sinks can be written to and reached.

use std::{
    fs::OpenOptions,
    io,
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail};

use super::{Row, Status};
use crate::output::sink::{
    http::{split_userinfo, trusting},
    spec::{HttpOptions, SyslogOptions, SyslogTransport, hide_password},
    syslog::{Connection, connect},
};

/// How long a sink has to answer.
const SINK_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an ICMP port-unreachable may take to come back over UDP.
const UDP_WAIT: Duration = Duration::from_millis(300);

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capabilities, from /proc/self/status.
fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

pub fn privileges() -> Row {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let caps = effective_caps().unwrap_or(0);
    let has = |cap: u32| caps & (1 << cap) != 0;
    let names = [(CAP_BPF, "CAP_BPF"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"), (CAP_PERFMON, "CAP_PERFMON")];
    let held: Vec<_> = names.iter().filter(|(c, _)| has(*c)).map(|(_, n)| *n).collect();
    let lacking: Vec<_> = names.iter().filter(|(c, _)| !has(*c)).map(|(_, n)| *n).collect();
    let who = if euid == 0 { "root".to_string() } else { format!("not root (uid {euid})") };
    let mut detail =
        format!("{who}; effective: {}", if held.is_empty() { "none".into() } else { held.join(", ") });
    if !lacking.is_empty() {
        detail.push_str(&format!("; lacking: {}", lacking.join(", ")));
    }
    // Loading tracing and cgroup programs takes CAP_BPF with CAP_PERFMON
    // (5.8+), or CAP_SYS_ADMIN; mounting tracefs takes CAP_SYS_ADMIN.
    let can_load = has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON));
    let status = if !can_load {
        detail.push_str("; run it as root");
        Status::Fail
    } else if euid != 0 || !lacking.is_empty() {
        Status::Warn
    } else {
        Status::Ok
    };
    Row::new("privileges", status, detail)
}

/// `6.18.44-fc` -> (6, 18).
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

pub fn kernel_version() -> Row {
    let name = "kernel";
    let release = match std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        Ok(r) => r.trim().to_string(),
        Err(e) => return Row::new(name, Status::Warn, format!("reading /proc/sys/kernel/osrelease: {e}")),
    };
    match parse_release(&release) {
        // The oldest kernel the tracer is tested on (README, Kernels).
        Some(v) if v >= (5, 10) => Row::new(name, Status::Ok, release),
        Some(_) => Row::new(
            name,
            Status::Warn,
            format!("{release}: older than 5.10, the oldest kernel the tracer is tested on"),
        ),
        None => Row::new(name, Status::Warn, format!("{release}: not a version the tracer can read")),
    }
}

pub fn sysctls() -> Vec<Row> {
    let read = |name: &str| {
        let path = format!("/proc/sys/{}", name.replace('.', "/"));
        std::fs::read_to_string(&path).map(|v| v.trim().to_string()).map_err(|e| format!("{path}: {e}"))
    };
    let unprivileged = match read("kernel.unprivileged_bpf_disabled") {
        Ok(v) => {
            let meaning = match v.as_str() {
                "0" => "unprivileged BPF allowed",
                "1" => "unprivileged BPF disabled for good",
                "2" => "unprivileged BPF disabled (an admin may re-enable it)",
                _ => "unknown value",
            };
            Row::new(
                "kernel.unprivileged_bpf_disabled",
                Status::Ok,
                format!("{v}: {meaning}; the tracer loads as root, so it needs none"),
            )
        }
        Err(e) => Row::new("kernel.unprivileged_bpf_disabled", Status::Ok, format!("absent ({e})")),
    };
    let stats = match read("kernel.bpf_stats_enabled") {
        Ok(v) if v == "0" => {
            Row::new("kernel.bpf_stats_enabled", Status::Ok, "0: programs' run time not measured")
        }
        Ok(v) => Row::new(
            "kernel.bpf_stats_enabled",
            Status::Warn,
            format!("{v}: the kernel times every BPF program run, which adds to the tracer's cost"),
        ),
        Err(e) => Row::new("kernel.bpf_stats_enabled", Status::Ok, format!("absent ({e})")),
    };
    vec![unprivileged, stats]
}

/// cgroup2 mounts and v1 hierarchies (mount point, controllers) in a
/// mountinfo text.
pub fn cgroup_mounts(mountinfo: &str) -> (Vec<PathBuf>, Vec<(PathBuf, String)>) {
    let (mut v2, mut v1) = (Vec::new(), Vec::new());
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let Some(at) = left.split_whitespace().nth(4).map(PathBuf::from) else { continue };
        let mut right = right.split_whitespace();
        match right.next() {
            Some("cgroup2") => v2.push(at),
            Some("cgroup") => {
                let options = right.nth(1).unwrap_or_default();
                let controllers: Vec<_> = options
                    .split(',')
                    .filter(|o| *o != "rw" && *o != "ro" && !o.contains("relatime"))
                    .collect();
                v1.push((at, controllers.join(",")));
            }
            _ => {}
        }
    }
    (v2, v1)
}

pub fn cgroups(mountinfo: &str) -> Row {
    let name = "cgroup";
    let (v2, v1) = cgroup_mounts(mountinfo);
    let v1_list = || v1.iter().map(|(_, c)| c.as_str()).collect::<Vec<_>>().join(" ");
    match (v2.first(), v1.is_empty()) {
        (Some(at), true) => Row::new(name, Status::Ok, format!("cgroup2 at {} (unified)", at.display())),
        (Some(at), false) => Row::new(
            name,
            Status::Ok,
            format!(
                "hybrid: cgroup2 at {} (the socket hooks attach there), v1 hierarchies: {}",
                at.display(),
                v1_list()
            ),
        ),
        (None, false) => {
            Row::new(name, Status::Warn, format!("cgroup v1 only ({}): no cgroup2 mount", v1_list())).instead(
                "connects from the connect(2) syscall hooks (blind to io_uring); container ids from \
                 /proc/PID/cgroup",
            )
        }
        (None, true) => Row::new(name, Status::Warn, "no cgroup mount")
            .instead("connects from the connect(2) syscall hooks (blind to io_uring)"),
    }
}

/// Where tracefs is mounted, by the mount table (readable by anyone, where
/// the events directory is not).
pub fn tracefs_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        (right.split_whitespace().next()? == "tracefs")
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

/// Whether records could be appended to `path`: an existing file is opened
/// for append (never truncated, nothing written), as the file sink opens
/// it; for a new one, its directory must take a file.
pub fn file(path: &Path) -> Result<String> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            if meta.file_type().is_symlink() {
                bail!("{} is a symbolic link; the file sink does not follow it", path.display());
            }
            // Non-blocking: a FIFO with no reader fails now, as in the sink.
            OpenOptions::new()
                .append(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(path)
                .with_context(|| format!("opening {} for append", path.display()))?;
            // SAFETY: geteuid has no preconditions.
            let euid = unsafe { libc::geteuid() };
            if meta.is_file() && meta.uid() != euid {
                bail!(
                    "{} is owned by uid {}; the file sink refuses to append to it",
                    path.display(),
                    meta.uid()
                );
            }
            Ok(format!("{} can be appended to ({} bytes now)", path.display(), meta.len()))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            let meta = std::fs::metadata(parent)
                .with_context(|| format!("{}: its directory {}", path.display(), parent.display()))?;
            if !meta.is_dir() {
                bail!("{}: {} is not a directory", path.display(), parent.display());
            }
            // A file created and removed again: the only way to know (a
            // read-only mount, an immutable directory) short of the real one.
            let probe = parent.join(format!(".tracer-check-{}", std::process::id()));
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&probe)
                .with_context(|| format!("{}: creating a file in {}", path.display(), parent.display()))?;
            let _ = std::fs::remove_file(&probe);
            Ok(format!("{} would be created (mode 0600)", path.display()))
        }
        // ENOTDIR: a file where a directory should be; say which.
        Err(e) => match path.ancestors().skip(1).find(|a| a.exists()) {
            Some(a) if !a.is_dir() => bail!("{} is not a directory ({e})", a.display()),
            _ => Err(anyhow!(e)).with_context(|| format!("{}", path.display())),
        },
    }
}

/// 268435456 -> `256 MiB`.
pub fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// Connects as the syslog sink does. Over UDP, where connect only picks a
/// route, an empty datagram goes out: a closed port answers with ICMP port
/// unreachable, which the next receive reports.
pub fn syslog(transport: &SyslogTransport, udp_wait: Duration) -> Result<String> {
    let connection = connect(transport).map_err(|e| {
        let refused_type = e
            .chain()
            .filter_map(|c| c.downcast_ref::<io::Error>())
            .any(|io| io.raw_os_error() == Some(libc::EPROTOTYPE));
        if refused_type { e.context("a stream socket; the syslog sink sends datagrams") } else { e }
    })?;
    Ok(match connection {
        Connection::Udp(socket) => {
            socket.send(&[]).context("sending an empty datagram")?;
            socket.set_read_timeout(Some(udp_wait))?;
            match socket.recv(&mut [0u8; 1]) {
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    bail!("port unreachable (ICMP): nothing listens there")
                }
                _ => "UDP: an empty datagram drew no port-unreachable (delivery is not confirmed)".into(),
            }
        }
        Connection::Tcp(stream) => format!("TCP connection to {} accepted", stream.peer_addr()?),
        Connection::Unix(_) => "unix socket accepts datagrams".into(),
    })
}

pub fn syslog_row(name: String, opts: &SyslogOptions) -> Row {
    match syslog(&opts.transport, UDP_WAIT) {
        Ok(detail) => Row::new(name, Status::Ok, detail),
        Err(e) => {
            // A socket of the wrong type never takes a message; an absent
            // receiver may come back, and the sink reconnects.
            let never = format!("{e:#}").contains("sends datagrams");
            let row = Row::new(name, if never { Status::Fail } else { Status::Warn }, format!("{e:#}"));
            if never {
                row
            } else {
                row.instead(format!(
                    "messages queue in memory (up to {} messages, {}) and are sent when it answers",
                    opts.queue,
                    size(opts.queue_bytes)
                ))
            }
        }
    }
}

/// An HTTP HEAD to the sink's URL: any answer shows it is reachable.
pub fn http(opts: &HttpOptions, timeout: Duration) -> Result<u16> {
    let mut config = ureq::Agent::config_builder();
    if let Some(path) = &opts.ca_file {
        config = config.tls_config(trusting(path)?);
    }
    let agent: ureq::Agent = config
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .user_agent(concat!("tracer/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let (url, _) = split_userinfo(&opts.url);
    let response = agent
        .head(&url)
        .call()
        // ureq's errors may carry the URL: its password is not shown.
        .map_err(|e| anyhow!("HEAD {}: {}", hide_password(&url), hide_password(&e.to_string())))?;
    Ok(response.status().as_u16())
}

pub fn http_row(name: String, opts: &HttpOptions) -> Row {
    // The spool must take the records whether or not the receiver is there.
    if let Err(e) = spool_writable(&opts.spool_dir) {
        return Row::new(name, Status::Fail, format!("spool: {e:#}"));
    }
    match http(opts, opts.timeout.min(SINK_TIMEOUT)) {
        Ok(code) => Row::new(name, Status::Ok, format!("HEAD answered {code}")),
        Err(e) => Row::new(name, Status::Warn, format!("unreachable: {e:#}")).instead(format!(
            "records spool in {} (up to {}) and are sent when it answers",
            opts.spool_dir.display(),
            size(opts.spool_max)
        )),
    }
}

/// The spool directory, or the nearest directory above it that exists
/// (the sink creates the rest), takes a file.
fn spool_writable(dir: &Path) -> Result<()> {
    let mut at = dir;
    while !at.exists() {
        at = at.parent().ok_or_else(|| anyhow!("{}: no directory above it exists", dir.display()))?;
    }
    if !at.is_dir() {
        bail!("{}: {} is not a directory", dir.display(), at.display());
    }
    let probe = at.join(format!(".tracer-check-{}", std::process::id()));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)
        .with_context(|| format!("{}: creating a file in {}", dir.display(), at.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{
        io::Read as _,
        net::{TcpListener, UdpSocket},
        os::unix::net::{UnixDatagram, UnixListener},
    };

    use super::*;
    use crate::output::{
        formats::Format,
        sink::spec::{SinkSpec, Target},
    };

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tracer-check-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A local port nothing listens on: bound, then closed.
    fn closed_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    fn http_opts(url: &str) -> HttpOptions {
        let Target::Http(h) = SinkSpec::parse(url, Format::Native).unwrap().target else {
            panic!("not http")
        };
        h
    }

    #[test]
    fn check_syslog_tcp_reaches_a_listener_and_not_a_closed_port() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let detail = syslog(&SyslogTransport::Tcp(addr.clone()), UDP_WAIT).unwrap();
        assert!(detail.contains(&addr), "{detail}");
        listener.accept().unwrap();
        let closed = format!("127.0.0.1:{}", closed_port());
        let e = syslog(&SyslogTransport::Tcp(closed.clone()), UDP_WAIT).unwrap_err();
        assert!(format!("{e:#}").contains(&closed), "{e:#}");
    }

    #[test]
    fn check_syslog_udp_tells_a_closed_port_from_a_listener() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = receiver.local_addr().unwrap().to_string();
        syslog(&SyslogTransport::Udp(addr), UDP_WAIT).unwrap();
        // The probe is an empty datagram.
        receiver.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        assert_eq!(receiver.recv(&mut [0u8; 16]).unwrap(), 0);
        let closed = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        let e = syslog(&SyslogTransport::Udp(closed), UDP_WAIT).unwrap_err();
        assert!(format!("{e:#}").contains("port unreachable"), "{e:#}");
    }

    #[test]
    fn check_syslog_unix_wants_a_datagram_socket() {
        let dir = scratch("unix");
        let dgram = dir.join("log");
        let _receiver = UnixDatagram::bind(&dgram).unwrap();
        syslog(&SyslogTransport::Unix(dgram), UDP_WAIT).unwrap();
        let stream = dir.join("stream");
        let _listener = UnixListener::bind(&stream).unwrap();
        let e = syslog(&SyslogTransport::Unix(stream.clone()), UDP_WAIT).unwrap_err();
        assert!(format!("{e:#}").contains("stream socket"), "{e:#}");
        let opts = SyslogOptions {
            transport: SyslogTransport::Unix(stream),
            facility: 1,
            app_name: "tracer".into(),
            max_message: 8192,
            queue: 10,
            queue_bytes: 1000,
        };
        assert_eq!(syslog_row("sink x".into(), &opts).status, Status::Fail);
        let missing = SyslogOptions { transport: SyslogTransport::Unix(dir.join("absent")), ..opts };
        let row = syslog_row("sink y".into(), &missing);
        assert_eq!(row.status, Status::Warn, "{row:?}");
        assert!(row.fallback.is_some());
    }

    #[test]
    fn check_http_head_reaches_a_server_and_not_a_closed_port() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "the client closed before its request ended");
                request.extend_from_slice(&buf[..n]);
            }
            std::io::Write::write_all(
                &mut s,
                b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n",
            )
            .unwrap();
            String::from_utf8(request).unwrap()
        });
        let code = http(&http_opts(&format!("http://127.0.0.1:{port}/ingest")), SINK_TIMEOUT).unwrap();
        assert_eq!(code, 405);
        assert!(server.join().unwrap().starts_with("HEAD /ingest "));

        let closed = format!("http://127.0.0.1:{}/ingest", closed_port());
        let mut opts = http_opts(&closed);
        let dir = scratch("spool");
        opts.spool_dir = dir.join("a/b");
        let row = http_row(format!("sink {closed}"), &opts);
        assert_eq!(row.status, Status::Warn, "{row:?}");
        assert!(row.detail.starts_with("unreachable"), "{row:?}");
        assert!(row.fallback.as_deref().unwrap().contains("a/b"), "{row:?}");
        // A spool that cannot be written fails whatever the receiver does.
        std::fs::write(dir.join("file"), b"").unwrap();
        opts.spool_dir = dir.join("file/spool");
        assert_eq!(http_row("sink".into(), &opts).status, Status::Fail);
    }

    #[test]
    fn check_output_files_append_without_truncating() {
        let dir = scratch("files");
        let existing = dir.join("events.jsonl");
        std::fs::write(&existing, b"{}\n").unwrap();
        file(&existing).unwrap();
        assert_eq!(std::fs::read(&existing).unwrap(), b"{}\n", "left as it was");
        let new = dir.join("new.jsonl");
        assert!(file(&new).unwrap().contains("would be created"));
        assert!(!new.exists(), "nothing left behind");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let e = file(&existing.join("under-a-file.jsonl")).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            format!("{} is not a directory (Not a directory (os error 20))", existing.display())
        );
        let e = file(&dir.join("no/such/dir/x.jsonl")).unwrap_err();
        assert!(format!("{e:#}").contains("no/such/dir"), "{e:#}");
        std::os::unix::fs::symlink(&existing, dir.join("link")).unwrap();
        assert!(format!("{:#}", file(&dir.join("link")).unwrap_err()).contains("symbolic link"));
    }

    #[test]
    fn check_cgroup_layouts() {
        let unified = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let row = cgroups(unified);
        assert_eq!((row.status, row.detail.as_str()), (Status::Ok, "cgroup2 at /sys/fs/cgroup (unified)"));
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
            32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
            35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
            41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        let row = cgroups(hybrid);
        assert_eq!(row.status, Status::Ok);
        assert!(row.detail.starts_with("hybrid: cgroup2 at /sys/fs/cgroup/unified"), "{row:?}");
        assert!(row.detail.ends_with("v1 hierarchies: cpu memory"), "{row:?}");
        assert_eq!(tracefs_mount(hybrid), None);
        let tracefs = "45 23 0:13 / /sys/kernel/tracing rw,relatime - tracefs tracefs rw\n";
        assert_eq!(tracefs_mount(&format!("{hybrid}{tracefs}")), Some(PathBuf::from("/sys/kernel/tracing")));
        let v1 = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n";
        let row = cgroups(v1);
        assert_eq!(row.status, Status::Warn);
        assert!(row.fallback.is_some());
    }

    #[test]
    fn check_sizes() {
        assert_eq!(size(256 << 20), "256 MiB");
        assert_eq!(size(64 << 20), "64 MiB");
        assert_eq!(size(3 << 30), "3 GiB");
        assert_eq!(size(1536), "1536 bytes");
    }

    #[test]
    fn check_kernel_releases() {
        assert_eq!(parse_release("6.18.44-fc-v1045"), Some((6, 18)));
        assert_eq!(parse_release("5.10.0-32-amd64\n"), Some((5, 10)));
        assert_eq!(parse_release("garbage"), None);
    }
}
