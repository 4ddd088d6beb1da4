//! The local API: HTTP/1.1 over a Unix socket only root can open (0600 in
//! a 0700 directory; the peer's uid is checked too), as `curl
//! --unix-socket` and `tracer state` / `tracer events` speak it.
//!
//! - `GET /v1/state`: trees and containers with verdicts and use (view.rs);
//! - `GET /v1/health`: the latest tracer.health record;
//! - `GET /v1/events?kinds=GLOBS&format=F&follow=1`: records as JSON lines,
//!   the last [`RECENT`] first unless `follow=only`; with follow the answer
//!   streams until the client or the tracer goes;
//! - `GET /metrics`: the Prometheus text (metrics.rs).
//!
//! The pipeline hands records to [`ApiSink`] like to any sink; it never
//! waits for a client: a client that reads too slowly loses records, which
//! the sink's stats (in every health record) count as `subscriber_behind`.

use std::{
    collections::VecDeque,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::{
        fs::{FileTypeExt as _, PermissionsExt as _},
        net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::view::HostView;
use crate::output::{
    formats::Format,
    sink::{Meta, SharedStats, Sink, SinkStats, lock},
};

/// Where `tracer run --api` listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/tracer/tracer.sock";

/// Records kept for a client that asks for what just happened.
pub const RECENT: usize = 1024;

/// Records queued per following client before it loses some.
const SUBSCRIBER_QUEUE: usize = 8192;

/// Longest request head read; an API request is one line and a few headers.
const MAX_REQUEST: usize = 8 * 1024;

/// Clients served at once; more wait for the listener's backlog.
const MAX_CLIENTS: usize = 32;

struct Subscriber {
    kinds: Vec<String>,
    tx: SyncSender<Arc<[u8]>>,
}

/// What the pipeline shares with the API's threads.
#[derive(Default)]
pub struct Shared {
    pub view: Mutex<HostView>,
    recent: Mutex<VecDeque<(String, Arc<[u8]>)>>,
    subscribers: Mutex<Vec<Subscriber>>,
    /// Per-program (name, runs, run time ns) from the kernel's bpf_stats,
    /// refreshed at every health record; empty while bpf_stats is off.
    pub program_stats: Mutex<Vec<(String, u64, u64)>>,
    clients: Mutex<usize>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    pub fn view(&self) -> std::sync::MutexGuard<'_, HostView> {
        locked(&self.view)
    }
}

fn wanted(kinds: &[String], kind: &str) -> bool {
    kinds.is_empty() || kinds.iter().any(|k| crate::classify::rules::glob(k, kind))
}

/// The sink that feeds the view, the recent records and the followers.
pub struct ApiSink {
    shared: Arc<Shared>,
    stats: SharedStats,
    /// Whether records are kept and streamed for clients: with the metrics
    /// alone (no socket) only the view is fed.
    streams: bool,
}

impl ApiSink {
    pub fn new(shared: Arc<Shared>, display: String, streams: bool) -> (Self, SharedStats) {
        let stats = Arc::new(Mutex::new(SinkStats { sink: display, format: "native", ..Default::default() }));
        (Self { shared, stats: stats.clone(), streams }, stats)
    }
}

/// Kinds the view folds; the others only pass to followers.
fn viewed(kind: &str) -> bool {
    matches!(
        kind,
        "tree.activity" | "container.activity" | "classification" | "host.summary" | "tracer.health"
    )
}

impl Sink for ApiSink {
    fn write(&mut self, line: &[u8], meta: &Meta) -> Result<()> {
        if viewed(meta.kind) {
            let value: Value = serde_json::from_slice(line).context("re-reading a record for the view")?;
            self.shared.view().observe(&value);
        }
        if !self.streams {
            lock(&self.stats).delivered += 1;
            return Ok(());
        }
        let line: Arc<[u8]> = Arc::from(line);
        {
            let mut recent = locked(&self.shared.recent);
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back((meta.kind.to_owned(), line.clone()));
        }
        let mut behind = 0;
        locked(&self.shared.subscribers).retain(|s| {
            if !wanted(&s.kinds, meta.kind) {
                return true;
            }
            match s.tx.try_send(line.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    behind += 1;
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            }
        });
        let mut stats = lock(&self.stats);
        stats.delivered += 1;
        stats.lost("subscriber_behind", behind);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    fn finish(&mut self, _deadline: Instant) -> Result<()> {
        // Followers see the end of their stream: the senders go.
        locked(&self.shared.subscribers).clear();
        Ok(())
    }
}

/// The listening socket, bound before the tracer drops its privileges.
pub struct Listener {
    listener: UnixListener,
    path: PathBuf,
}

impl Listener {
    /// Binds `path`, 0600, creating its directory 0700 when missing. A
    /// socket left by a tracer that died is replaced; one that answers is
    /// another tracer's, and an error.
    pub fn bind(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                if UnixStream::connect(path).is_ok() {
                    bail!(
                        "{} answers: another tracer serves it (stop it, or give --api another path)",
                        path.display()
                    );
                }
                std::fs::remove_file(path)
                    .with_context(|| format!("removing the stale {}", path.display()))?;
            }
            Ok(_) => bail!("{} exists and is not a socket; not replacing it", path.display()),
            Err(_) => {}
        }
        let listener = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(Self { listener, path: path.to_owned() })
    }

    /// Serves from a thread of its own until the process ends.
    pub fn serve(self, shared: Arc<Shared>) -> Result<ServeGuard> {
        let path = self.path.clone();
        std::thread::Builder::new().name("tracer-api".into()).spawn(move || {
            for stream in self.listener.incoming() {
                let Ok(stream) = stream else { continue };
                let shared = shared.clone();
                {
                    let mut n = locked(&shared.clients);
                    if *n >= MAX_CLIENTS {
                        let _ = respond(&stream, 503, "text/plain", b"too many clients\n");
                        continue;
                    }
                    *n += 1;
                }
                let spawned = std::thread::Builder::new().name("tracer-api-client".into()).spawn({
                    let shared = shared.clone();
                    move || {
                        if let Err(e) = client(stream, &shared) {
                            // A client that goes mid-answer is ordinary.
                            let _ = e;
                        }
                        *locked(&shared.clients) -= 1;
                    }
                });
                if spawned.is_err() {
                    *locked(&shared.clients) -= 1;
                }
            }
        })?;
        Ok(ServeGuard { path })
    }
}

/// Removes the socket when the tracer stops.
pub struct ServeGuard {
    path: PathBuf,
}

impl Drop for ServeGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Only root, or the tracer's own user, is served.
fn peer_allowed(stream: &UnixStream) -> bool {
    let mut cred = libc::ucred { pid: 0, uid: u32::MAX, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: a valid fd and out buffer of the size given.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(stream),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &raw mut len,
        )
    };
    // SAFETY: no arguments.
    rc == 0 && (cred.uid == 0 || cred.uid == unsafe { libc::geteuid() })
}

fn respond(mut stream: &UnixStream, status: u16, content_type: &str, body: &[u8]) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)
}

/// A request's path and query parameters.
#[derive(Debug, PartialEq)]
pub struct Request {
    pub path: String,
    pub query: Vec<(String, String)>,
}

impl Request {
    /// Parses a request line (`GET /v1/events?kinds=a,b HTTP/1.1`).
    pub fn parse(line: &str) -> Result<Self, (u16, String)> {
        let mut parts = line.split_whitespace();
        let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
            return Err((400, "not an HTTP request line".into()));
        };
        if !version.starts_with("HTTP/1.") {
            return Err((400, format!("unsupported protocol {version}")));
        }
        if method != "GET" {
            return Err((405, format!("{method}: only GET is served")));
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let query = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        Ok(Self { path: path.to_owned(), query })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 3 <= b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn client(stream: UnixStream, shared: &Shared) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    if !peer_allowed(&stream) {
        respond(&stream, 403, "text/plain", b"only root may use the tracer's API\n")?;
        return Ok(());
    }
    let mut reader = BufReader::new(&stream).take(MAX_REQUEST as u64);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // The headers are read (and ignored) so the client sees its whole
    // request taken before the answer.
    let mut header = String::new();
    while reader.read_line(&mut header)? > 0 && header.trim_end() != "" {
        header.clear();
    }
    let request = match Request::parse(&line) {
        Ok(r) => r,
        Err((status, why)) => {
            return Ok(respond(&stream, status, "text/plain", format!("{why}\n").as_bytes())?);
        }
    };
    match request.path.as_str() {
        "/v1/state" => {
            let body = serde_json::to_vec_pretty(&shared.view().to_json())?;
            respond(&stream, 200, "application/json", &body)?;
        }
        "/v1/health" => {
            let health = shared.view().health.clone().unwrap_or(Value::Null);
            respond(&stream, 200, "application/json", &serde_json::to_vec_pretty(&health)?)?;
        }
        "/metrics" => {
            let text = super::metrics::render(shared);
            respond(&stream, 200, super::metrics::CONTENT_TYPE, text.as_bytes())?;
        }
        "/v1/events" => events(&stream, shared, &request)?,
        _ => respond(
            &stream,
            404,
            "text/plain",
            b"no such path: try /v1/state, /v1/health, /v1/events, /metrics\n",
        )?,
    }
    Ok(())
}

/// Streams records as JSON lines; close-delimited, so any HTTP client reads it.
fn events(stream: &UnixStream, shared: &Shared, request: &Request) -> Result<()> {
    let kinds: Vec<String> = request
        .get("kinds")
        .unwrap_or_default()
        .split(',')
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect();
    let format: Format = match request.get("format").unwrap_or("native").parse() {
        Ok(f) => f,
        Err(e) => return Ok(respond(stream, 400, "text/plain", format!("{e}\n").as_bytes())?),
    };
    let follow = request.get("follow");
    let (send_recent, follow) = match follow {
        None | Some("0" | "false") => (true, false),
        Some("only") => (false, true),
        Some(_) => (true, true),
    };
    // Subscribed before the recent records are copied, so nothing falls
    // between them (a record may come twice at the seam; never none).
    let rx: Option<Receiver<Arc<[u8]>>> = follow.then(|| {
        let (tx, rx) = sync_channel(SUBSCRIBER_QUEUE);
        locked(&shared.subscribers).push(Subscriber { kinds: kinds.clone(), tx });
        rx
    });
    let recent: Vec<Arc<[u8]>> = if send_recent {
        locked(&shared.recent).iter().filter(|(k, _)| wanted(&kinds, k)).map(|(_, l)| l.clone()).collect()
    } else {
        Vec::new()
    };
    let mut out = std::io::BufWriter::new(stream);
    write!(out, "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nConnection: close\r\n\r\n")?;
    let mut event = Vec::new();
    let mut line_out = |out: &mut std::io::BufWriter<&UnixStream>, line: &[u8]| -> Result<()> {
        event.clear();
        crate::output::formats::write(format, line, &mut event)?;
        event.push(b'\n');
        out.write_all(&event)?;
        Ok(())
    };
    for line in &recent {
        line_out(&mut out, line)?;
    }
    out.flush()?;
    let Some(rx) = rx else { return Ok(()) };
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(line) => {
                line_out(&mut out, &line)?;
                // Write what is queued in one go, then let the client see it.
                while let Ok(line) = rx.try_recv() {
                    line_out(&mut out, &line)?;
                }
                out.flush()?;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                // A client that went away is noticed here, not only at the
                // next record: an empty write to a closed socket fails.
                out.flush()?;
                if peer_gone(stream) {
                    return Ok(());
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
        }
    }
}

/// Whether the client closed its end (a readable socket with nothing to read).
fn peer_gone(stream: &UnixStream) -> bool {
    let mut pfd =
        libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(stream), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, no wait.
    let n = unsafe { libc::poll(&raw mut pfd, 1, 0) };
    if n <= 0 {
        return false;
    }
    if pfd.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
        return true;
    }
    let mut b = [0u8; 1];
    // SAFETY: reads at most one byte into a valid buffer, without waiting.
    let r = unsafe { libc::recv(pfd.fd, b.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    r == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_parse_or_say_why_not() {
        let r =
            Request::parse("GET /v1/events?kinds=classification,network.%2A&follow=1 HTTP/1.1\r\n").unwrap();
        assert_eq!(r.path, "/v1/events");
        assert_eq!(r.get("kinds"), Some("classification,network.*"));
        assert_eq!(r.get("follow"), Some("1"));
        assert_eq!(Request::parse("POST /v1/state HTTP/1.1").unwrap_err().0, 405);
        assert_eq!(Request::parse("hello").unwrap_err().0, 400);
        assert_eq!(Request::parse("GET / SPDY/3").unwrap_err().0, 400);
        assert_eq!(percent_decode("a%zz%4"), "a%zz%4");
        assert_eq!(percent_decode("%41+b%"), "A b%");
    }

    #[test]
    fn a_live_socket_is_not_taken_over_and_a_stale_one_is() {
        let dir = std::env::temp_dir().join(format!("tracer-api-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub/api.sock");
        let first = Listener::bind(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let e = Listener::bind(&path).err().unwrap();
        assert!(e.to_string().contains("another tracer"), "{e}");
        drop(first);
        // The socket file stays behind a listener that went: stale.
        Listener::bind(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "x").unwrap();
        assert!(Listener::bind(&path).err().unwrap().to_string().contains("not a socket"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn followers_get_their_kinds_and_slow_ones_are_counted() {
        let shared = Arc::new(Shared::default());
        let (mut sink, stats) = ApiSink::new(shared.clone(), "api".into(), true);
        let (tx, rx) = sync_channel(2);
        locked(&shared.subscribers).push(Subscriber { kinds: vec!["network.*".into()], tx });
        let meta = |kind| Meta { kind, time: "", host: "", alert: false };
        for _ in 0..4 {
            sink.write(b"{\"kind\":\"network.dns\"}", &meta("network.dns")).unwrap();
            sink.write(b"{\"kind\":\"process.exec\"}", &meta("process.exec")).unwrap();
        }
        assert_eq!(rx.try_iter().count(), 2);
        assert_eq!(lock(&stats).dropped.get("subscriber_behind"), Some(&2));
        assert_eq!(locked(&shared.recent).len(), 8);
        drop(rx);
        sink.write(b"{\"kind\":\"network.dns\"}", &meta("network.dns")).unwrap();
        assert!(locked(&shared.subscribers).is_empty(), "a follower that went is forgotten");
    }
}
