//! RFC 5424 syslog over UDP (RFC 5426), TCP with octet-counted framing
//! (RFC 6587 §3.4.1) or a Unix datagram socket (/dev/log). Each record is
//! one message: MSGID is the record kind, MSG the JSON record.
//!
//! Messages are queued in memory and sent by a thread of their own; while
//! a TCP or Unix receiver is away the thread retries with back-off and the
//! queue holds up to `queue` messages (beyond that, new ones are dropped and
//! counted). TCP has no acknowledgements: messages written into a connection
//! the receiver has just dropped can be lost without notice.

use std::{
    io::Write as _,
    net::{TcpStream, ToSocketAddrs, UdpSocket},
    os::unix::net::UnixDatagram,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};

use super::{
    Meta, SharedStats, Sink, lock,
    spec::{SyslogOptions, SyslogTransport},
};

const SEVERITY_WARNING: u8 = 4;
const SEVERITY_NOTICE: u8 = 5;
const SEVERITY_INFO: u8 = 6;

/// Printable US-ASCII, at most `max` characters, or the nil value `-`.
fn header_field(s: &str, max: usize) -> &str {
    if s.is_empty() || s.len() > max || !s.bytes().all(|b| (33..=126).contains(&b)) { "-" } else { s }
}

/// RFC 3339 with at most 6 fractional digits (RFC 5424 §6.2.3).
fn timestamp(time: &str) -> String {
    let Some((main, rest)) = time.split_once('.') else { return header_field(time, 64).to_string() };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).take(6).collect();
    let zone = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    format!("{main}.{digits}{zone}")
}

/// One RFC 5424 message: `<PRI>1 TIMESTAMP HOST APP PROCID MSGID - MSG`.
pub fn format_message(opts: &SyslogOptions, meta: &Meta, line: &[u8]) -> Vec<u8> {
    let severity = match meta.kind {
        "classification" if meta.alert => SEVERITY_WARNING,
        "classification" => SEVERITY_NOTICE,
        _ => SEVERITY_INFO,
    };
    let pri = u16::from(opts.facility) * 8 + u16::from(severity);
    let mut msg = format!(
        "<{pri}>1 {} {} {} {} {} - ",
        if meta.time.is_empty() { "-".to_string() } else { timestamp(meta.time) },
        header_field(meta.host, 255),
        opts.app_name,
        std::process::id(),
        header_field(meta.kind, 32),
    )
    .into_bytes();
    msg.extend_from_slice(line);
    msg
}

pub(crate) enum Connection {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Unix(UnixDatagram),
}

pub(crate) fn connect(transport: &SyslogTransport) -> Result<Connection> {
    Ok(match transport {
        SyslogTransport::Udp(addr) => {
            let target = addr
                .to_socket_addrs()
                .with_context(|| format!("resolving {addr}"))?
                .next()
                .ok_or_else(|| anyhow!("{addr} resolves to no address"))?;
            let socket = UdpSocket::bind(if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
            socket.connect(target)?;
            Connection::Udp(socket)
        }
        SyslogTransport::Tcp(addr) => {
            let target = addr
                .to_socket_addrs()
                .with_context(|| format!("resolving {addr}"))?
                .next()
                .ok_or_else(|| anyhow!("{addr} resolves to no address"))?;
            let stream = TcpStream::connect_timeout(&target, Duration::from_secs(5))
                .with_context(|| format!("connecting to {addr}"))?;
            stream.set_write_timeout(Some(Duration::from_secs(10)))?;
            stream.set_nodelay(true)?;
            Connection::Tcp(stream)
        }
        SyslogTransport::Unix(path) => {
            let socket = UnixDatagram::unbound()?;
            socket.connect(path).with_context(|| format!("connecting to {}", path.display()))?;
            Connection::Unix(socket)
        }
    })
}

fn send(conn: &mut Connection, msg: &[u8]) -> std::io::Result<()> {
    match conn {
        Connection::Udp(s) => s.send(msg).map(drop),
        Connection::Unix(s) => s.send(msg).map(drop),
        Connection::Tcp(s) => {
            // Octet counting: the length, a space, the message; no trailer.
            let mut frame = format!("{} ", msg.len()).into_bytes();
            frame.extend_from_slice(msg);
            s.write_all(&frame)
        }
    }
}

struct Worker {
    transport: SyslogTransport,
    rx: Receiver<Vec<u8>>,
    /// Bytes of the messages in the queue (with the one being sent).
    queued_bytes: Arc<AtomicU64>,
    stats: SharedStats,
    shutdown: Arc<Mutex<Option<Instant>>>,
}

impl Worker {
    fn past_deadline(&self) -> bool {
        self.shutdown
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|d| Instant::now() >= d)
    }

    fn run(self) {
        let mut conn: Option<Connection> = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            let msg = match self.rx.recv_timeout(Duration::from_millis(200)) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            // Out of the queue once sent or given up, whichever way.
            let _dequeued = Dequeued(&self.queued_bytes, msg.len() as u64);
            // Until sent, or given up at the shutdown deadline.
            loop {
                if self.past_deadline() {
                    let left = 1 + self.rx.try_iter().count() as u64;
                    let mut s = lock(&self.stats);
                    s.lost("shutdown", left);
                    s.pending = Some(0);
                    return;
                }
                let result = match conn.as_mut() {
                    Some(c) => send(c, &msg).map_err(anyhow::Error::from),
                    None => connect(&self.transport).and_then(|mut c| {
                        let r = send(&mut c, &msg).map_err(anyhow::Error::from);
                        conn = Some(c);
                        r
                    }),
                };
                match result {
                    Ok(()) => {
                        backoff = Duration::from_millis(100);
                        let mut s = lock(&self.stats);
                        s.delivered += 1;
                        s.pending = Some(s.pending.unwrap_or(1).saturating_sub(1));
                        break;
                    }
                    Err(e)
                        if e.downcast_ref::<std::io::Error>().and_then(std::io::Error::raw_os_error)
                            == Some(libc::EMSGSIZE) =>
                    {
                        let mut s = lock(&self.stats);
                        s.lost("oversize", 1);
                        s.pending = Some(s.pending.unwrap_or(1).saturating_sub(1));
                        break;
                    }
                    Err(e) => {
                        lock(&self.stats).error(format!("{e:#}"));
                        conn = None;
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
    }
}

/// Takes a message's bytes off the queue's count when dropped.
struct Dequeued<'a>(&'a AtomicU64, u64);

impl Drop for Dequeued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::Relaxed);
    }
}

pub struct SyslogSink {
    opts: SyslogOptions,
    queued_bytes: Arc<AtomicU64>,
    tx: Option<SyncSender<Vec<u8>>>,
    worker: Option<JoinHandle<()>>,
    stats: SharedStats,
    shutdown: Arc<Mutex<Option<Instant>>>,
}

impl SyslogSink {
    pub fn open(opts: SyslogOptions, stats: SharedStats) -> Result<Self> {
        let (tx, rx) = sync_channel(opts.queue.max(1));
        let shutdown = Arc::new(Mutex::new(None));
        lock(&stats).pending = Some(0);
        let queued_bytes = Arc::new(AtomicU64::new(0));
        let worker = Worker {
            transport: opts.transport.clone(),
            rx,
            queued_bytes: queued_bytes.clone(),
            stats: stats.clone(),
            shutdown: shutdown.clone(),
        };
        let worker = std::thread::Builder::new()
            .name("syslog-sink".into())
            .spawn(move || worker.run())
            .context("starting the syslog sender")?;
        Ok(Self { opts, queued_bytes, tx: Some(tx), worker: Some(worker), stats, shutdown })
    }
}

impl Sink for SyslogSink {
    fn write(&mut self, line: &[u8], meta: &Meta) -> Result<()> {
        let msg = format_message(&self.opts, meta, line);
        if msg.len() > self.opts.max_message {
            lock(&self.stats).lost("oversize", 1);
            return Ok(());
        }
        let Some(tx) = &self.tx else { return Ok(()) };
        let len = msg.len() as u64;
        if self.queued_bytes.load(Ordering::Relaxed) + len > self.opts.queue_bytes {
            lock(&self.stats).lost("queue_full", 1);
            return Ok(());
        }
        self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        match tx.try_send(msg) {
            Ok(()) => *lock(&self.stats).pending.get_or_insert(0) += 1,
            Err(TrySendError::Full(_)) => {
                self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                lock(&self.stats).lost("queue_full", 1)
            }
            Err(TrySendError::Disconnected(_)) => {
                self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                lock(&self.stats).lost("sender_stopped", 1)
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    fn finish(&mut self, deadline: Instant) -> Result<()> {
        *self.shutdown.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(deadline);
        self.tx = None;
        if let Some(w) = self.worker.take()
            && !super::join_by(w, deadline, "syslog")?
        {
            eprintln!("tracer: syslog messages still queued for {:?} are not delivered", self.opts.transport);
        }
        // The final health record is already written: say it here.
        if let Some(n) = lock(&self.stats).dropped.get("shutdown").filter(|n| **n > 0) {
            eprintln!(
                "tracer: {n} syslog messages were not delivered before shutdown ({:?})",
                self.opts.transport
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> SyslogOptions {
        SyslogOptions {
            transport: SyslogTransport::Udp("127.0.0.1:514".into()),
            facility: 16,
            app_name: "tracer".into(),
            max_message: 65_507,
            queue: 10,
            queue_bytes: 1 << 20,
        }
    }

    #[test]
    fn the_queue_is_bounded_in_bytes() {
        // Nothing listens there: every message waits in the queue.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let opts = SyslogOptions {
            transport: SyslogTransport::Tcp(format!("127.0.0.1:{port}")),
            queue: 100_000,
            queue_bytes: 20_000,
            ..opts()
        };
        let stats: SharedStats = Arc::new(Mutex::new(super::super::SinkStats::default()));
        let mut sink = SyslogSink::open(opts, stats.clone()).unwrap();
        let meta =
            Meta { kind: "process.exec", time: "2026-11-21T10:00:00.000000000Z", host: "h", alert: false };
        let line = vec![b'x'; 1000];
        for _ in 0..200 {
            sink.write(&line, &meta).unwrap();
        }
        let s = lock(&stats).clone();
        let queued = s.pending.unwrap();
        let full = s.dropped.get("queue_full").copied().unwrap_or(0);
        assert!(queued <= 21, "{queued} messages of ~1 KB queued under a 20 KB bound");
        assert_eq!(queued + full, 200, "{s:?}");
        sink.finish(Instant::now()).unwrap();
    }

    #[test]
    fn rfc5424_header() {
        let meta =
            Meta { kind: "process.exec", time: "2026-11-21T19:39:24.649057144Z", host: "vm", alert: false };
        let msg = String::from_utf8(format_message(&opts(), &meta, b"{\"a\":1}")).unwrap();
        let pid = std::process::id();
        assert_eq!(
            msg,
            format!("<134>1 2026-11-21T19:39:24.649057Z vm tracer {pid} process.exec - {{\"a\":1}}")
        );
        let meta = Meta { kind: "classification", time: "", host: "bad host", alert: true };
        let msg = String::from_utf8(format_message(&opts(), &meta, b"{}")).unwrap();
        assert!(msg.starts_with("<132>1 - - tracer "), "{msg}");
    }

    #[test]
    fn tcp_frames_are_octet_counted() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stats: SharedStats = Default::default();
        let mut o = opts();
        o.transport = SyslogTransport::Tcp(addr);
        let mut sink = SyslogSink::open(o, stats.clone()).unwrap();
        let meta = Meta { kind: "k", time: "", host: "h", alert: false };
        sink.write("{\"é\":1}".as_bytes(), &meta).unwrap();
        sink.write(b"{}", &meta).unwrap();
        let (mut conn, _) = listener.accept().unwrap();
        sink.finish(Instant::now() + Duration::from_secs(5)).unwrap();
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut conn, &mut got).unwrap();
        let got = String::from_utf8(got).unwrap();
        let first = format!("<134>1 - h tracer {} k - {{\"é\":1}}", std::process::id());
        assert!(got.starts_with(&format!("{} {first}", first.len())), "{got}");
        assert_eq!(lock(&stats).delivered, 2);
    }
}
