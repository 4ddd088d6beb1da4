//! JSON lines to stdout or a file. Files are created 0600 (records hold
//! command lines), rotate by size and/or age into `NAME.<UTC time>` (gzip'd
//! by a background thread unless compress=false), keep the newest `keep`
//! rotated files, are fsync'd on rotation and shutdown, and are reopened on
//! SIGHUP for logrotate. A name ending in `.gz` is written compressed.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    thread::JoinHandle,
    time::{Instant, SystemTime},
};

use anyhow::{Context as _, Result};

use super::{Meta, SharedStats, Sink, lock, spec::FileOptions};
use crate::output::record::rfc3339_nanos;

/// A plain stream, or a gzip file that must be finished.
enum Output {
    Plain(Box<dyn Write + Send>),
    Gzip(flate2::write::GzEncoder<File>),
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(w) => w.write(buf),
            Self::Gzip(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(w) => w.flush(),
            Self::Gzip(w) => w.flush(),
        }
    }
}

/// Records are gathered in `buf` and written in large writes; `ends` marks
/// where each record ends, so a write that fails part way says exactly
/// which records reached the file and which were lost.
struct Open {
    out: Output,
    buf: Vec<u8>,
    ends: Vec<usize>,
    /// Set for files (stdout has none to sync).
    file: Option<File>,
    bytes: u64,
    opened: Instant,
}

/// Buffered bytes that trigger a write.
const BUFFER: usize = 64 * 1024;

impl Open {
    fn new(out: Output, file: Option<File>, bytes: u64) -> Self {
        Self { out, buf: Vec::with_capacity(BUFFER), ends: Vec::new(), file, bytes, opened: Instant::now() }
    }

    fn push(&mut self, line: &[u8]) {
        self.buf.extend_from_slice(line);
        self.buf.push(b'\n');
        self.ends.push(self.buf.len());
        self.bytes += line.len() as u64 + 1;
    }

    /// Writes what is buffered. Returns the records written; on error, the
    /// records written before it and the records lost.
    fn write_out(&mut self) -> Result<u64, (u64, u64, io::Error)> {
        let mut done = 0;
        let result = loop {
            if done == self.buf.len() {
                break self.out.flush();
            }
            match self.out.write(&self.buf[done..]) {
                Ok(0) => break Err(io::Error::new(io::ErrorKind::WriteZero, "the output took no bytes")),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        let written = self.ends.iter().take_while(|&&end| end <= done).count() as u64;
        let total = self.ends.len() as u64;
        self.buf.clear();
        self.ends.clear();
        match result {
            Ok(()) => Ok(total),
            Err(e) => Err((written, total - written, e)),
        }
    }
}

pub struct FileSink {
    opts: Option<FileOptions>,
    open: Option<Open>,
    stats: SharedStats,
    compressing: Vec<JoinHandle<()>>,
}

fn open_file(opts: &FileOptions) -> Result<Open> {
    let path = &opts.path;
    // No symlinks: a link planted where root writes its log would send
    // records (command lines) wherever it points. Non-blocking so that a
    // FIFO with no reader fails now instead of hanging the tracer.
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(opts.mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => anyhow::anyhow!("{} is a symbolic link; not following it", path.display()),
            _ => anyhow::Error::new(e),
        })
        .with_context(|| format!("opening output file {}", path.display()))?;
    set_blocking(&file).with_context(|| format!("opening output file {}", path.display()))?;
    secure(&file, opts).with_context(|| format!("output file {}", path.display()))?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    end_torn_line(&file, bytes);
    let handle = file.try_clone().context("duplicating the output file handle")?;
    let out = if path.extension().is_some_and(|e| e == "gz") {
        // Appending starts a new gzip member, which readers concatenate.
        Output::Gzip(flate2::write::GzEncoder::new(file, flate2::Compression::default()))
    } else {
        Output::Plain(Box::new(file))
    };
    Ok(Open::new(out, Some(handle), bytes))
}

fn set_blocking(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on an fd this function's caller owns.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An existing file keeps whatever mode and owner it had: one that another
/// user owns is refused, and a regular file's mode is set to the sink's
/// (a pre-created world-readable log would otherwise stay readable).
fn secure(file: &File, opts: &FileOptions) -> Result<()> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let meta = file.metadata()?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid && meta.file_type().is_file() {
        anyhow::bail!(
            "owned by uid {}, not by the tracer (uid {euid}); refusing to append to it",
            meta.uid()
        );
    }
    if meta.file_type().is_file() && meta.mode() & 0o7777 != opts.mode {
        file.set_permissions(std::fs::Permissions::from_mode(opts.mode))
            .with_context(|| format!("setting its mode to {:o}", opts.mode))?;
    }
    Ok(())
}

/// A write cut short (disk full, a crash) leaves a partial last line; the
/// next record starts on a line of its own.
fn end_torn_line(file: &File, len: u64) {
    use std::os::{fd::AsRawFd as _, unix::fs::FileExt as _};
    // Only regular files: a FIFO opened for reading would be its own reader.
    if len == 0 || !file.metadata().is_ok_and(|m| m.file_type().is_file()) {
        return;
    }
    // The sink's own fd is write-only; the same file, opened for reading.
    let Ok(reader) = File::open(format!("/proc/self/fd/{}", file.as_raw_fd())) else { return };
    let mut last = [0u8];
    if reader.read_at(&mut last, len - 1).is_ok() && last[0] != b'\n' {
        let _ = (&*file).write_all(b"\n");
    }
}

/// Writes what is buffered, completes a gzip stream and fsyncs.
fn close(mut open: Open) -> Result<u64, (u64, u64, anyhow::Error)> {
    let written =
        open.write_out().map_err(|(w, l, e)| (w, l, anyhow::Error::new(e).context("writing records")))?;
    let fail = |e: anyhow::Error| (written, 0, e);
    if let Output::Gzip(gz) = open.out {
        gz.finish().context("finishing the gzip stream").map_err(fail)?;
    }
    if let Some(f) = open.file {
        match f.sync_all() {
            // EINVAL: a file that cannot be synced (/dev/null, a FIFO): nothing to make durable.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            r => r.context("syncing the output file").map_err(fail)?,
        }
    }
    Ok(written)
}

/// `NAME.20261121T101500.123456789Z`: sorts by time, never collides with
/// the live file.
fn rotated_name(path: &Path) -> PathBuf {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let stamp: String = rfc3339_nanos(now).chars().filter(|c| *c != '-' && *c != ':').collect();
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(stamp);
    PathBuf::from(name)
}

/// Rotated files of `path`, oldest first (with or without .gz).
pub fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let Some(base) = path.file_name().and_then(|n| n.to_str()) else { return Vec::new() };
    let prefix = format!("{base}.");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stamp = name.strip_prefix(&prefix)?;
            is_our_stamp(stamp).then(|| e.path())
        })
        .collect();
    found.sort();
    found
}

/// Exactly what `rotated_name` writes, `20261121T101500.123456789Z`, with
/// `.gz` or not: retention must never remove a file that only looks alike.
fn is_our_stamp(stamp: &str) -> bool {
    let stamp = stamp.strip_suffix(".gz").unwrap_or(stamp);
    let b = stamp.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    b.len() == 26
        && digits(0..8)
        && b[8] == b'T'
        && digits(9..15)
        && b[15] == b'.'
        && digits(16..25)
        && b[25] == b'Z'
}

fn gzip_in_place(path: &Path) -> io::Result<()> {
    let mut gz_name = path.as_os_str().to_owned();
    gz_name.push(".gz");
    let tmp = PathBuf::from(format!("{}.tmp", PathBuf::from(&gz_name).display()));
    let mode = std::fs::metadata(path).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()))?;
    let out = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(mode & 0o777)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    let mut gz = flate2::write::GzEncoder::new(BufWriter::new(out), flate2::Compression::default());
    io::copy(&mut File::open(path)?, &mut gz)?;
    let out = gz.finish()?.into_inner().map_err(|e| e.into_error())?;
    out.sync_all()?;
    // The compressed file takes the plain one's place only when complete.
    std::fs::rename(&tmp, &gz_name)?;
    std::fs::remove_file(path)
}

impl FileSink {
    pub fn stdout(stats: SharedStats) -> Self {
        let open = Open::new(Output::Plain(Box::new(io::stdout())), None, 0);
        Self { opts: None, open: Some(open), stats, compressing: Vec::new() }
    }

    pub fn open(opts: FileOptions, stats: SharedStats) -> Result<Self> {
        let open = open_file(&opts)?;
        if opts.rotate_size.is_some() || opts.rotate_every.is_some() {
            lock(&stats).rotations = Some(0);
            lock(&stats).files_removed = Some(0);
        }
        Ok(Self { opts: Some(opts), open: Some(open), stats, compressing: Vec::new() })
    }

    fn due(&self, incoming: usize) -> bool {
        let (Some(opts), Some(open)) = (&self.opts, &self.open) else { return false };
        // A fresh file always takes its first record, however large.
        open.bytes > 0
            && (opts.rotate_size.is_some_and(|max| open.bytes + incoming as u64 > max)
                || opts.rotate_every.is_some_and(|age| open.opened.elapsed() >= age))
    }

    fn rotate(&mut self) -> Result<()> {
        let opts = self.opts.clone().expect("only files rotate");
        self.close_open(0)?;
        let rotated = rotated_name(&opts.path);
        let moved = match std::fs::rename(&opts.path, &rotated) {
            Ok(()) => true,
            // Moved away by someone else (logrotate before its SIGHUP):
            // what was written is in their file; start a new one.
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("rotating {} to {}", opts.path.display(), rotated.display()));
            }
        };
        self.open = Some(open_file(&opts)?);
        if !moved {
            return Ok(());
        }
        *lock(&self.stats).rotations.get_or_insert(0) += 1;
        let already_gz = opts.path.extension().is_some_and(|e| e == "gz");
        // Compression and retention run off the record path; joined at shutdown.
        let stats = self.stats.clone();
        let previous = std::mem::take(&mut self.compressing);
        let work = move || {
            // One at a time, in order, so retention sees finished files.
            previous.into_iter().for_each(|h| drop(h.join()));
            if opts.compress
                && !already_gz
                && let Err(e) = gzip_in_place(&rotated)
            {
                lock(&stats).error(format!("compressing {}: {e}", rotated.display()));
            }
            let files = rotated_files(&opts.path);
            let excess = files.len().saturating_sub(opts.keep);
            for old in &files[..excess] {
                match std::fs::remove_file(old) {
                    Ok(()) => *lock(&stats).files_removed.get_or_insert(0) += 1,
                    Err(e) => lock(&stats).error(format!("removing {}: {e}", old.display())),
                }
            }
        };
        // With no thread to be had (a fork bomb has the pid limit), the work
        // is done here: slower, never a panic.
        let work = std::sync::Arc::new(std::sync::Mutex::new(Some(work)));
        let in_thread = work.clone();
        let spawned = std::thread::Builder::new().name("file-sink-rotate".into()).spawn(move || {
            if let Some(w) = in_thread.lock().ok().and_then(|mut w| w.take()) {
                w();
            }
        });
        match spawned {
            Ok(h) => self.compressing.push(h),
            Err(_) => {
                if let Some(w) = work.lock().ok().and_then(|mut w| w.take()) {
                    w();
                }
            }
        }
        Ok(())
    }
}

impl FileSink {
    /// Counts what a write of the buffer delivered and lost. `in_hand`:
    /// records the caller counts lost itself on an error (the one it was
    /// handed).
    fn settle(&self, result: Result<u64, (u64, u64, anyhow::Error)>, in_hand: u64) -> Result<()> {
        let mut stats = lock(&self.stats);
        match result {
            Ok(written) => {
                stats.delivered += written;
                Ok(())
            }
            Err((written, lost, e)) => {
                stats.delivered += written;
                stats.lost("write_error", lost.saturating_sub(in_hand));
                Err(e)
            }
        }
    }

    /// Closes the open file (written out, synced); after an error it stays
    /// closed until `reopen`.
    fn close_open(&mut self, in_hand: u64) -> Result<()> {
        match self.open.take() {
            Some(open) => self.settle(close(open), in_hand),
            None => Ok(()),
        }
    }

    fn write_out(&mut self, in_hand: u64) -> Result<()> {
        let Some(open) = self.open.as_mut() else { return Ok(()) };
        let result =
            open.write_out().map_err(|(w, l, e)| (w, l, anyhow::Error::new(e).context("writing records")));
        if result.is_err() {
            // What is left of this file's stream is unusable (a gzip
            // member cut short); the next write starts a new open.
            self.open = None;
        }
        self.settle(result, in_hand)
    }
}

impl Sink for FileSink {
    fn write(&mut self, line: &[u8], _meta: &Meta) -> Result<()> {
        if self.due(line.len() + 1) {
            self.rotate()?;
        }
        let open =
            self.open.as_mut().ok_or_else(|| anyhow::anyhow!("the output is closed after an error"))?;
        open.push(line);
        if open.buf.len() >= BUFFER {
            self.write_out(1)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.opts.as_ref().is_some_and(|o| o.rotate_every.is_some()) && self.due(0) {
            self.rotate()?;
        }
        self.write_out(0)
    }

    fn reopen(&mut self) -> Result<()> {
        let Some(opts) = self.opts.clone() else {
            // stdout cannot be opened again.
            return if self.open.is_some() { Ok(()) } else { Err(anyhow::anyhow!("stdout is closed")) };
        };
        self.close_open(0)?;
        self.open = Some(open_file(&opts)?);
        Ok(())
    }

    fn finish(&mut self, _deadline: Instant) -> Result<()> {
        let result = self.close_open(0);
        for h in self.compressing.drain(..) {
            let _ = h.join();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead as _, BufReader},
        sync::{Arc, Mutex},
        time::Duration,
    };

    use super::*;
    use crate::output::sink::SinkStats;

    fn meta() -> Meta<'static> {
        Meta { kind: "process.exec", time: "", host: "", alert: false }
    }

    fn read_all(path: &Path) -> Vec<String> {
        let mut lines = Vec::new();
        for f in rotated_files(path).into_iter().chain([path.to_path_buf()]) {
            let file = File::open(&f).unwrap();
            let reader: Box<dyn io::Read> = if f.extension().is_some_and(|e| e == "gz") {
                Box::new(flate2::read::MultiGzDecoder::new(file))
            } else {
                Box::new(file)
            };
            lines.extend(BufReader::new(reader).lines().map(Result::unwrap));
        }
        lines
    }

    fn opts(dir: &Path, keep: usize) -> FileOptions {
        FileOptions {
            path: dir.join("events.jsonl"),
            rotate_size: Some(4096),
            rotate_every: None,
            keep,
            compress: true,
            mode: 0o600,
        }
    }

    #[test]
    fn rotates_by_size_compresses_and_keeps_every_line() {
        let dir = tempdir("rotate");
        let stats: SharedStats = Arc::new(Mutex::new(SinkStats::default()));
        let mut sink = FileSink::open(opts(&dir, 1000), stats.clone()).unwrap();
        for i in 0..5000 {
            sink.write(format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 97)).as_bytes(), &meta())
                .unwrap();
        }
        sink.finish(Instant::now()).unwrap();
        let lines = read_all(&dir.join("events.jsonl"));
        let expected: Vec<String> =
            (0..5000).map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 97))).collect();
        assert_eq!(lines, expected, "every line once, in order, across the rotated files");
        let rotated = rotated_files(&dir.join("events.jsonl"));
        assert!(rotated.len() > 50, "{} rotations", rotated.len());
        assert!(rotated.iter().all(|p| p.extension().is_some_and(|e| e == "gz")));
        for p in rotated.iter().chain([&dir.join("events.jsonl")]) {
            let mode = std::fs::metadata(p).unwrap().permissions();
            assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600, "{}", p.display());
        }
        // No rotated file is over the limit (each took at least one line).
        let s = lock(&stats).clone();
        assert_eq!(s.rotations, Some(rotated.len() as u64));
        assert_eq!(s.delivered, 5000);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn retention_removes_the_oldest() {
        let dir = tempdir("retain");
        let stats: SharedStats = Arc::new(Mutex::new(SinkStats::default()));
        let mut sink = FileSink::open(opts(&dir, 3), stats.clone()).unwrap();
        for i in 0..2000 {
            sink.write(format!("{{\"n\":{i:08}}}").as_bytes(), &meta()).unwrap();
        }
        sink.finish(Instant::now()).unwrap();
        let lines = read_all(&dir.join("events.jsonl"));
        assert_eq!(rotated_files(&dir.join("events.jsonl")).len(), 3);
        // What is left is the newest, contiguous, ending at the last line.
        assert_eq!(lines.last().unwrap(), "{\"n\":00001999}");
        let first: usize = lines[0][5..13].parse().unwrap();
        assert_eq!(lines.len(), 2000 - first);
        let s = lock(&stats).clone();
        assert_eq!(s.files_removed.unwrap() + 3, s.rotations.unwrap());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn rotates_by_age_and_reopens_after_a_move() {
        let dir = tempdir("age");
        let stats: SharedStats = Arc::new(Mutex::new(SinkStats::default()));
        let mut o = opts(&dir, 10);
        o.rotate_size = None;
        o.rotate_every = Some(Duration::from_millis(50));
        let mut sink = FileSink::open(o, stats.clone()).unwrap();
        sink.write(b"{\"n\":1}", &meta()).unwrap();
        std::thread::sleep(Duration::from_millis(80));
        sink.flush().unwrap();
        assert_eq!(lock(&stats).rotations, Some(1));
        sink.write(b"{\"n\":2}", &meta()).unwrap();
        // logrotate: move the file away, then SIGHUP.
        std::fs::rename(dir.join("events.jsonl"), dir.join("moved")).unwrap();
        sink.reopen().unwrap();
        sink.write(b"{\"n\":3}", &meta()).unwrap();
        sink.finish(Instant::now()).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("moved")).unwrap(), "{\"n\":2}\n");
        assert_eq!(std::fs::read_to_string(dir.join("events.jsonl")).unwrap(), "{\"n\":3}\n");
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tracer-file-sink-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn refuses_a_symlink_and_tightens_an_existing_files_mode() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempdir("secure");
        let stats: SharedStats = Arc::new(Mutex::new(SinkStats::default()));
        let target = dir.join("elsewhere");
        std::fs::write(&target, "").unwrap();
        std::os::unix::fs::symlink(&target, dir.join("events.jsonl")).unwrap();
        let opts = FileOptions { rotate_size: None, ..opts(&dir, 1) };
        let err = FileSink::open(opts.clone(), stats.clone()).err().expect("a symlink is refused");
        assert!(format!("{err:#}").contains("symbolic link"), "{err:#}");

        std::fs::remove_file(dir.join("events.jsonl")).unwrap();
        std::fs::write(dir.join("events.jsonl"), "{}\n").unwrap();
        std::fs::set_permissions(dir.join("events.jsonl"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut sink = FileSink::open(opts, stats).unwrap();
        let mode = std::fs::metadata(dir.join("events.jsonl")).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o600, "a world-readable log is made private");
        sink.finish(Instant::now()).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn retention_knows_its_own_files_only() {
        let name = rotated_name(Path::new("/x/events.jsonl"));
        let stamp = name.to_str().unwrap().strip_prefix("/x/events.jsonl.").unwrap();
        assert!(is_our_stamp(stamp), "{stamp}");
        assert!(is_our_stamp(&format!("{stamp}.gz")));
        for other in ["20261121Tbackup", "20261121T101500.old", "20261121T101500.123456789Z.bak", ""] {
            assert!(!is_our_stamp(other), "{other}");
        }
    }

    #[test]
    fn a_torn_last_line_is_ended_before_new_records() {
        let dir = tempdir("torn");
        let stats: SharedStats = Arc::new(Mutex::new(SinkStats::default()));
        std::fs::write(dir.join("events.jsonl"), "{\"whole\":1}\n{\"cut sh").unwrap();
        let mut sink =
            FileSink::open(FileOptions { rotate_size: None, ..opts(&dir, 1) }, stats.clone()).unwrap();
        sink.write(b"{\"next\":2}", &meta()).unwrap();
        sink.finish(Instant::now()).unwrap();
        let text = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
        assert_eq!(text, "{\"whole\":1}\n{\"cut sh\n{\"next\":2}\n");
        assert_eq!(lock(&stats).delivered, 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn dev_null_is_a_sink_that_closes_cleanly() {
        let stats: SharedStats = Arc::new(Mutex::new(SinkStats::default()));
        let null = FileOptions { path: "/dev/null".into(), rotate_size: None, ..opts(Path::new("/tmp"), 1) };
        let mut sink = FileSink::open(FileOptions { compress: false, ..null }, stats.clone()).unwrap();
        sink.write(b"{\"gone\":1}", &meta()).unwrap();
        // fsync on /dev/null is EINVAL: nothing to make durable, no failure.
        sink.finish(Instant::now()).unwrap();
        assert_eq!(lock(&stats).delivered, 1);
    }
}
