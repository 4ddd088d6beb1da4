//! A bounded on-disk queue of batches for a network sink. The pipeline
//! appends records to an open segment; a segment is sealed when it holds a
//! batch (by records, bytes or age) and is then one request body. The
//! sender takes the oldest sealed segment, and removes it only once the
//! receiver has accepted it — so a receiver that is down or slow costs disk,
//! not records, and segments left at shutdown are sent at the next start.
//!
//! When appending would pass the size limit, the oldest sealed segments not
//! being sent are removed and their records counted as dropped (spool_full).
//!
//! Files: `<seq>-<records>.seg` (sealed), `<seq>.open` (being written; a
//! crash leaves it, and the next start keeps its complete records).

use std::{
    collections::VecDeque,
    fs::{File, OpenOptions},
    io::{BufWriter, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::{SharedStats, lock};

#[derive(Debug, Clone)]
pub struct Segment {
    pub seq: u64,
    pub records: u64,
    pub bytes: u64,
    pub path: PathBuf,
}

#[derive(Default)]
struct State {
    sealed: VecDeque<Segment>,
    in_flight: Option<u64>,
    /// Bytes on disk: sealed segments plus the open one.
    bytes: u64,
    records: u64,
    /// Set at shutdown: the sender stops by then.
    deadline: Option<Instant>,
}

/// The part shared with the sender thread.
#[derive(Clone)]
pub struct Queue {
    state: Arc<(Mutex<State>, Condvar)>,
    stats: SharedStats,
}

struct OpenSegment {
    out: BufWriter<File>,
    path: PathBuf,
    seq: u64,
    records: u64,
    bytes: u64,
    started: Instant,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    batch_records: usize,
    batch_bytes: usize,
    batch_age: Duration,
    next_seq: u64,
    open: Option<OpenSegment>,
    pub queue: Queue,
    /// An exclusive flock on `dir/lock`, held while the spool is open: two
    /// tracers on one spool would send its batches twice and truncate each
    /// other's open segment.
    _lock: File,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn publish(&self, state: &State) {
        let mut s = lock(&self.stats);
        s.pending = Some(state.records);
        s.spool_bytes = Some(state.bytes);
    }

    /// The oldest sealed segment, marked in flight; waits for one. None
    /// once the deadline has passed, or at shutdown with nothing left.
    pub fn next(&self) -> Option<Segment> {
        let mut state = self.lock();
        loop {
            if state.deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
            if let Some(seg) = state.sealed.front().cloned() {
                state.in_flight = Some(seg.seq);
                return Some(seg);
            }
            if state.deadline.is_some() {
                return None;
            }
            state = self
                .state
                .1
                .wait_timeout(state, Duration::from_millis(500))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The receiver took the segment (or refused it for good): it goes.
    pub fn remove(&self, seg: &Segment) {
        let mut state = self.lock();
        state.in_flight = None;
        if let Some(i) = state.sealed.iter().position(|s| s.seq == seg.seq) {
            state.sealed.remove(i);
            state.bytes = state.bytes.saturating_sub(seg.bytes);
            state.records = state.records.saturating_sub(seg.records);
        }
        let _ = std::fs::remove_file(&seg.path);
        self.publish(&state);
    }

    /// Delivery failed: the segment stays first in line.
    pub fn release(&self) {
        self.lock().in_flight = None;
    }

    /// Sleeps for a retry back-off; returns early at shutdown. False once
    /// the deadline has passed.
    pub fn pause(&self, d: Duration) -> bool {
        let state = self.lock();
        let limit = match state.deadline {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()).min(d),
            None => d,
        };
        let state = self.state.1.wait_timeout(state, limit).unwrap_or_else(|e| e.into_inner()).0;
        state.deadline.is_none_or(|dl| Instant::now() < dl)
    }

    pub fn stats(&self) -> &SharedStats {
        &self.stats
    }
}

/// Complete records in a segment cut short by a crash: the byte length to
/// keep, and how many records that is.
fn complete_records(data: &[u8], lines_per_record: usize) -> (usize, u64) {
    let mut keep = 0;
    let mut lines = 0usize;
    for (i, b) in data.iter().enumerate() {
        if *b == b'\n' {
            lines += 1;
            if lines.is_multiple_of(lines_per_record) {
                keep = i + 1;
            }
        }
    }
    (keep, (lines / lines_per_record) as u64)
}

impl Spool {
    /// Opens (creating) the spool directory and queues what an earlier run
    /// left in it.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        batch: (usize, usize, Duration),
        lines_per_record: usize,
        stats: SharedStats,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating spool directory {}", dir.display()))?;
        // Another user's directory could plant segments the tracer would
        // post with its own token.
        let meta = std::fs::symlink_metadata(dir)?;
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        if !meta.is_dir() || std::os::unix::fs::MetadataExt::uid(&meta) != euid {
            anyhow::bail!("spool directory {} is not a directory owned by uid {euid}", dir.display());
        }
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .with_context(|| format!("securing spool directory {}", dir.display()))?;
        let lock_path = dir.join("lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock_file), libc::LOCK_EX | libc::LOCK_NB) }
            != 0
        {
            anyhow::bail!(
                "spool directory {} is in use by another tracer (give each its own spool=)",
                dir.display()
            );
        }
        let mut state = State::default();
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir)?.flatten() {
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else { continue };
            if let Some(seq) = name.strip_suffix(".open").and_then(|s| s.parse::<u64>().ok()) {
                // Keep the complete records of a segment a crash left open.
                let data = std::fs::read(&path)?;
                let (keep, records) = complete_records(&data, lines_per_record);
                let sealed = dir.join(format!("{seq:016}-{records}.seg"));
                OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&sealed)?
                    .write_all(&data[..keep])?;
                std::fs::remove_file(&path)?;
                found.push(Segment { seq, records, bytes: keep as u64, path: sealed });
            } else if let Some((seq, records)) = name.strip_suffix(".seg").and_then(|s| s.split_once('-')) {
                let (Ok(seq), Ok(records)) = (seq.parse(), records.parse()) else { continue };
                found.push(Segment { seq, records, bytes: entry.metadata()?.len(), path });
            }
        }
        found.sort_by_key(|s| s.seq);
        let next_seq = found.last().map_or(0, |s| s.seq + 1);
        for seg in found.into_iter().filter(|s| s.records > 0) {
            state.bytes += seg.bytes;
            state.records += seg.records;
            state.sealed.push_back(seg);
        }
        let queue = Queue { state: Arc::new((Mutex::new(state), Condvar::new())), stats };
        queue.publish(&queue.lock());
        Ok(Self {
            dir: dir.to_path_buf(),
            max_bytes,
            batch_records: batch.0,
            batch_bytes: batch.1,
            batch_age: batch.2,
            next_seq,
            open: None,
            queue,
            _lock: lock_file,
        })
    }

    /// Appends one record (its request-body lines, newline-terminated).
    pub fn append(&mut self, record: &[u8]) -> Result<()> {
        let len = record.len() as u64;
        {
            let mut state = self.queue.lock();
            // Room is made by dropping the oldest batches not being sent.
            while state.bytes + len > self.max_bytes {
                let in_flight = state.in_flight;
                let Some(i) = state.sealed.iter().position(|s| Some(s.seq) != in_flight) else { break };
                let old = state.sealed.remove(i).expect("index from position");
                state.bytes -= old.bytes;
                state.records -= old.records;
                let _ = std::fs::remove_file(&old.path);
                lock(&self.queue.stats).lost("spool_full", old.records);
            }
            if state.bytes + len > self.max_bytes {
                // Only the batch being sent and the one being filled are
                // left: this record cannot be kept.
                lock(&self.queue.stats).lost("spool_full", 1);
                return Ok(());
            }
            state.bytes += len;
            state.records += 1;
            self.queue.publish(&state);
        }
        if self.open.is_none() {
            let seq = self.next_seq;
            self.next_seq += 1;
            let path = self.dir.join(format!("{seq:016}.open"));
            let file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("creating spool segment {}", path.display()))?;
            let out = BufWriter::with_capacity(64 * 1024, file);
            self.open = Some(OpenSegment { out, path, seq, records: 0, bytes: 0, started: Instant::now() });
        }
        let open = self.open.as_mut().expect("opened above");
        open.out.write_all(record).context("writing to the spool")?;
        open.records += 1;
        open.bytes += len;
        if open.records >= self.batch_records as u64 || open.bytes >= self.batch_bytes as u64 {
            self.seal()?;
        }
        Ok(())
    }

    /// Seals the open segment once it is `batch_age` old.
    pub fn tick(&mut self) -> Result<()> {
        if self.open.as_ref().is_some_and(|o| o.started.elapsed() >= self.batch_age) {
            self.seal()?;
        }
        Ok(())
    }

    pub fn seal(&mut self) -> Result<()> {
        let Some(open) = self.open.take() else { return Ok(()) };
        open.out.into_inner().map_err(|e| e.into_error()).context("flushing a spool segment")?;
        let path = self.dir.join(format!("{:016}-{}.seg", open.seq, open.records));
        std::fs::rename(&open.path, &path).context("sealing a spool segment")?;
        let mut state = self.queue.lock();
        state.sealed.push_back(Segment { seq: open.seq, records: open.records, bytes: open.bytes, path });
        self.queue.state.1.notify_all();
        Ok(())
    }

    /// Shutdown: seal, and give the sender until `deadline`.
    pub fn close(&mut self, deadline: Instant) -> Result<()> {
        let sealed = self.seal();
        self.queue.lock().deadline = Some(deadline);
        self.queue.state.1.notify_all();
        sealed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::sink::SinkStats;

    fn spool(dir: &Path, max: u64) -> Spool {
        let stats: SharedStats = Arc::new(Mutex::new(SinkStats::default()));
        Spool::open(dir, max, (10, 1 << 20, Duration::from_secs(60)), 1, stats).unwrap()
    }

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tracer-spool-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn two_tracers_cannot_share_a_spool() {
        let dir = tempdir("shared");
        let first = spool(&dir, 1 << 20);
        let stats: SharedStats = Arc::new(Mutex::new(SinkStats::default()));
        let second = Spool::open(&dir, 1 << 20, (10, 1 << 20, Duration::from_secs(60)), 1, stats);
        let err = second.err().expect("a second tracer on the same spool is refused");
        assert!(format!("{err:#}").contains("in use by another tracer"), "{err:#}");
        drop(first);
        let _again = spool(&dir, 1 << 20);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn batches_survive_a_restart_in_order() {
        let dir = tempdir("restart");
        let mut s = spool(&dir, 1 << 20);
        for i in 0..25 {
            s.append(format!("{{\"n\":{i}}}\n").as_bytes()).unwrap();
        }
        // 2 sealed batches of 10, 5 records in the open segment; "crash".
        s.open.as_mut().unwrap().out.flush().unwrap();
        // A crash releases the lock with the process; here, by hand.
        drop(std::mem::replace(&mut s._lock, File::open("/dev/null").unwrap()));
        std::mem::forget(s);
        let s = spool(&dir, 1 << 20);
        let mut got = Vec::new();
        s.queue.lock().deadline = Some(Instant::now() + Duration::from_secs(5));
        while let Some(seg) = s.queue.next() {
            got.push((seg.records, std::fs::read_to_string(&seg.path).unwrap()));
            s.queue.remove(&seg);
        }
        let records: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(records, [10, 10, 5]);
        let all: String = got.iter().map(|g| g.1.as_str()).collect();
        let expected: String = (0..25).map(|i| format!("{{\"n\":{i}}}\n")).collect();
        assert_eq!(all, expected);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn full_spool_drops_the_oldest_and_counts_them() {
        let dir = tempdir("full");
        let record = format!("{}\n", "x".repeat(99)); // 100 bytes
        let mut s = spool(&dir, 3000); // room for 3 batches of 10
        for _ in 0..50 {
            s.append(record.as_bytes()).unwrap();
        }
        let stats = lock(&s.queue.stats).clone();
        assert_eq!(stats.dropped.get("spool_full"), Some(&20));
        assert_eq!(stats.pending, Some(30));
        let state = s.queue.lock();
        assert_eq!(state.sealed.iter().map(|x| x.seq).collect::<Vec<_>>(), [2, 3, 4]);
        drop(state);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn cut_records_are_not_kept() {
        assert_eq!(complete_records(b"a\nb\nc", 1), (4, 2));
        assert_eq!(complete_records(b"a\nb\nc\n", 2), (4, 1));
        assert_eq!(complete_records(b"", 1), (0, 0));
    }
}
