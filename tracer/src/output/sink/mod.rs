//! Where records go. Each sink has its own format and kind filter; several
//! run at once (`--sink`, repeatable). Network sinks deliver from a thread
//! of their own, so a slow receiver never stalls the kernel reader: the
//! syslog sink queues in memory, the HTTP sink spools to disk. Whatever a
//! sink loses (queue full, spool full, a message too large, a batch the
//! receiver rejects) is counted and reported in every health record.

pub mod file;
pub mod http;
pub mod spec;
pub mod spool;
pub mod syslog;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use serde::Serialize;
use serde_json::Value;

pub use self::spec::{SinkSpec, Target};
use super::formats::{self, Format};

/// What a sink has done, shared with its delivery thread.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SinkStats {
    /// The sink as given on the command line (secrets left out).
    pub sink: String,
    pub format: &'static str,
    /// Records that passed the sink's filter.
    pub records: u64,
    /// Records the filter left out.
    pub filtered_out: u64,
    /// Records written to the file, or accepted by the receiver.
    pub delivered: u64,
    /// Records lost, by why: queue_full, oversize, spool_full, rejected,
    /// shutdown, write_error (taken by a failing write), sink_failed (arrived
    /// while the sink was out of order), format_error.
    pub dropped: BTreeMap<&'static str, u64>,
    /// Delivery attempts that failed and were retried.
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Out of order now (see `dropped.write_error` and `sink_failed`).
    pub failed: bool,
    /// Times a failed sink was reopened and took records again.
    pub recovered: u64,
    /// Records waiting to be delivered (memory queue or disk spool).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool_bytes: Option<u64>,
    /// File sinks: files rotated, and rotated files removed by the retention limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotations: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files_removed: Option<u64>,
}

impl SinkStats {
    pub fn lost(&mut self, why: &'static str, n: u64) {
        if n > 0 {
            *self.dropped.entry(why).or_default() += n;
        }
    }

    pub fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        self.last_error = Some(e.to_string());
    }
}

pub type SharedStats = Arc<Mutex<SinkStats>>;

/// Locks shared stats; a panicked delivery thread leaves them readable.
pub fn lock(stats: &SharedStats) -> std::sync::MutexGuard<'_, SinkStats> {
    stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The envelope fields every transport may need, besides the line itself.
pub struct Meta<'a> {
    pub kind: &'a str,
    pub time: &'a str,
    pub host: &'a str,
    /// A classification that calls for attention.
    pub alert: bool,
}

/// One destination.
pub trait Sink: Send {
    /// Takes one formatted record (no trailing newline).
    fn write(&mut self, line: &[u8], meta: &Meta) -> Result<()>;
    /// Called after every batch the pipeline reads.
    fn flush(&mut self) -> Result<()>;
    /// SIGHUP: files are closed and opened again (logrotate moved them).
    fn reopen(&mut self) -> Result<()> {
        Ok(())
    }
    /// Shutdown: deliver what is queued, waiting until `deadline` at most.
    fn finish(&mut self, deadline: Instant) -> Result<()>;
}

struct Configured {
    format: Format,
    kinds: Vec<String>,
    sink: Box<dyn Sink>,
    stats: SharedStats,
    /// stdout: the tracer's own output; when it breaks the tracer stops.
    is_stdout: bool,
    /// Set while the sink is out of order (disk full, directory gone, the
    /// reader of a FIFO away): its records are counted lost, the others go on.
    failed: Option<Failure>,
}

/// A sink that failed, and when to try it again.
struct Failure {
    retry_at: Instant,
    backoff: Duration,
}

/// Waits for a sink's sender thread until `deadline`: a request in flight
/// (an HTTP timeout, a syslog connect or back-off) must not hold the
/// shutdown past the grace a service manager gives. Returns whether it
/// ended; one still busy is left to end with the process.
pub fn join_by(sender: std::thread::JoinHandle<()>, deadline: Instant, what: &str) -> Result<bool> {
    while !sender.is_finished() {
        if Instant::now() >= deadline {
            eprintln!("tracer: the {what} sender was still busy when the shutdown grace ended; left behind");
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    sender.join().map_err(|_| anyhow!("the {what} sender panicked"))?;
    Ok(true)
}

/// First retry after a failure, and the longest wait between retries.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

impl Configured {
    /// Records the error, counts what it cost, and takes the sink out of
    /// order until the next retry. `lost`: records it took with it.
    fn fail(&mut self, e: &anyhow::Error, lost: u64) {
        let backoff = self.failed.as_ref().map_or(RETRY_FIRST, |f| (f.backoff * 2).min(RETRY_MAX));
        let mut stats = lock(&self.stats);
        stats.error(format!("{e:#}"));
        stats.lost("write_error", lost);
        stats.failed = true;
        drop(stats);
        if self.failed.is_none() {
            eprintln!(
                "tracer: sink {} failed, its records are counted lost until it recovers: {e:#}",
                lock(&self.stats).sink
            );
        }
        self.failed = Some(Failure { retry_at: Instant::now() + backoff, backoff });
    }

    /// Whether the sink takes records now: a failed one is reopened when
    /// its retry is due.
    fn usable(&mut self) -> bool {
        let Some(f) = &self.failed else { return true };
        if Instant::now() < f.retry_at || self.is_stdout {
            return false;
        }
        match self.sink.reopen() {
            Ok(()) => {
                self.failed = None;
                let mut stats = lock(&self.stats);
                stats.failed = false;
                stats.recovered += 1;
                true
            }
            Err(e) => {
                self.fail(&e, 0);
                false
            }
        }
    }
}

/// The tracer's stdout could not be written (its reader went away).
#[derive(Debug)]
pub struct StdoutClosed(pub String);

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stdout is closed: {}", self.0)
    }
}

impl std::error::Error for StdoutClosed {}

/// Whether an error is a reader that went away (EPIPE).
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// One record on its way out: the native line, and the other formats made
/// from it at most once, whatever the number of sinks that want them.
pub struct Outgoing<'a> {
    pub meta: Meta<'a>,
    native: &'a [u8],
    /// Where the line's process is, when its text is shared with other
    /// records (`Record::to_line`).
    process: Option<&'a formats::SharedProcess>,
    converted: [Option<Vec<u8>>; 2],
}

impl<'a> Outgoing<'a> {
    pub fn new(meta: Meta<'a>, native: &'a [u8]) -> Self {
        Self { meta, native, process: None, converted: [None, None] }
    }

    /// A record whose process text other records share: converted, its
    /// process part is made once for all of them.
    pub fn with_shared_process(mut self, process: Option<&'a formats::SharedProcess>) -> Self {
        self.process = process;
        self
    }

    /// A record that exists only as a JSON value (classifications, the
    /// capture header): the envelope comes from its fields.
    pub fn of_value(value: &'a Value, native: &'a [u8]) -> Self {
        let s = |k: &str| value.get(k).and_then(Value::as_str).unwrap_or_default();
        let alert = value.pointer("/classification/alert").and_then(Value::as_bool).unwrap_or(false);
        Self::new(Meta { kind: s("kind"), time: s("time"), host: s("host"), alert }, native)
    }

    /// Makes the record in `format`, once, from its native line.
    fn convert(&mut self, format: Format, parts: &mut formats::PartCache) -> Result<()> {
        let Some(slot) = Self::slot(format) else { return Ok(()) };
        if self.converted[slot].is_none() {
            let mut line = Vec::with_capacity(2 * self.native.len());
            match self.process {
                Some(process) => formats::write_shared(format, self.native, process, parts, &mut line),
                None => formats::write(format, self.native, &mut line),
            }
            .context("re-reading a record")?;
            self.converted[slot] = Some(line);
        }
        Ok(())
    }

    /// The record in `format`, after `convert`.
    fn line(&self, format: Format) -> &[u8] {
        match Self::slot(format) {
            None => self.native,
            Some(slot) => self.converted[slot].as_deref().unwrap_or_default(),
        }
    }

    fn slot(format: Format) -> Option<usize> {
        match format {
            Format::Native => None,
            Format::Ecs => Some(0),
            Format::Ocsf => Some(1),
        }
    }
}

/// Every configured sink.
#[derive(Default)]
pub struct Sinks {
    sinks: Vec<Configured>,
    /// Process parts of converted events, kept across records.
    parts: formats::PartCache,
}

impl Sinks {
    pub fn open(specs: &[SinkSpec]) -> Result<Self> {
        let mut sinks = Self::default();
        for spec in specs {
            let stats = Arc::new(Mutex::new(SinkStats {
                sink: spec.display.clone(),
                format: spec.format.name(),
                ..Default::default()
            }));
            let sink: Box<dyn Sink> = match &spec.target {
                Target::Stdout => Box::new(file::FileSink::stdout(stats.clone())),
                Target::File(opts) => Box::new(file::FileSink::open(opts.clone(), stats.clone())?),
                Target::Syslog(opts) => Box::new(syslog::SyslogSink::open(opts.clone(), stats.clone())?),
                Target::Http(opts) => {
                    Box::new(http::HttpSink::open(opts.clone(), spec.format.name(), stats.clone())?)
                }
            };
            sinks.sinks.push(Configured {
                format: spec.format,
                kinds: spec.kinds.clone(),
                sink,
                stats,
                is_stdout: matches!(spec.target, Target::Stdout),
                failed: None,
            });
        }
        Ok(sinks)
    }

    /// Adds a sink made in process (the local API's), native and unfiltered.
    pub fn attach(&mut self, sink: Box<dyn Sink>, stats: SharedStats) {
        self.sinks.push(Configured {
            format: Format::Native,
            kinds: Vec::new(),
            sink,
            stats,
            is_stdout: false,
            failed: None,
        });
    }

    /// Whether `kind` passes a sink's filter (no filter: everything).
    fn wanted(kinds: &[String], kind: &str) -> bool {
        kinds.is_empty() || kinds.iter().any(|k| crate::classify::rules::glob(k, kind))
    }

    /// Hands a record to every sink that wants it. One sink's failure is
    /// counted on that sink and never stops the others; a broken stdout
    /// (the reader of the tracer's own output went away) is for the caller
    /// to see in `stdout_broken`, and `finish` returns it as an error.
    pub fn write(&mut self, mut out: Outgoing) -> Result<()> {
        for c in &mut self.sinks {
            if !Self::wanted(&c.kinds, out.meta.kind) {
                lock(&c.stats).filtered_out += 1;
                continue;
            }
            lock(&c.stats).records += 1;
            if !c.usable() {
                lock(&c.stats).lost("sink_failed", 1);
                continue;
            }
            if let Err(e) = out.convert(c.format, &mut self.parts) {
                let mut stats = lock(&c.stats);
                stats.error(format!("{e:#}"));
                stats.lost("format_error", 1);
                continue;
            }
            if let Err(e) = c.sink.write(out.line(c.format), &out.meta) {
                c.fail(&e, 1);
            }
        }
        Ok(())
    }

    /// The error that stops the tracer: its stdout is gone.
    fn check_stdout(&self) -> Result<()> {
        match self.sinks.iter().find(|c| c.is_stdout && c.failed.is_some()) {
            Some(c) => Err(StdoutClosed(lock(&c.stats).last_error.clone().unwrap_or_default()).into()),
            None => Ok(()),
        }
    }

    /// Whether the tracer's stdout broke (EPIPE, or any error writing it).
    pub fn stdout_broken(&self) -> bool {
        self.check_stdout().is_err()
    }

    pub fn flush(&mut self) -> Result<()> {
        for c in self.sinks.iter_mut().filter(|c| c.failed.is_none()) {
            if let Err(e) = c.sink.flush() {
                c.fail(&e, 0);
            }
        }
        Ok(())
    }

    /// SIGHUP: every sink closes and opens its files again; a failed one is
    /// retried now.
    pub fn reopen(&mut self) -> Result<()> {
        for c in &mut self.sinks {
            if let Some(f) = &mut c.failed {
                f.retry_at = Instant::now();
                c.usable();
            } else if let Err(e) = c.sink.reopen() {
                c.fail(&e, 0);
            }
        }
        Ok(())
    }

    /// Flushes and closes every sink; network sinks get `grace` to deliver
    /// what is queued (the HTTP spool keeps the rest for the next start).
    pub fn finish(&mut self, grace: Duration) -> Result<()> {
        let deadline = Instant::now() + grace;
        for c in &mut self.sinks {
            if c.failed.is_some() && !c.usable() {
                continue;
            }
            if let Err(e) = c.sink.finish(deadline) {
                if !(c.is_stdout && is_broken_pipe(&e)) {
                    eprintln!("tracer: closing sink {}: {e:#}", lock(&c.stats).sink);
                }
                c.fail(&e, 0);
            }
        }
        self.check_stdout()
    }

    pub fn stats(&self) -> Vec<SinkStats> {
        self.sinks.iter().map(|c| lock(&c.stats).clone()).collect()
    }
}
