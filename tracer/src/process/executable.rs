//! The executable behind each process: what file it is (device, inode,
//! size, mtime), its SHA-256, and whether it carries miner code — the string
//! sets public YARA rules match in miner binaries — or a packer. Files are
//! read through `/proc/PID/exe`, so a binary deleted after its start or run
//! from a memfd (a common way to run a miner without a file) is read too.
//! Reading happens on a worker thread, never on the event loop; each file
//! is read once (a cache keyed by its identity), and at most `MAX_BYTES` of
//! it. The strings and their sources are in `rules/miner-strings.txt`.

use std::{
    collections::HashMap,
    io::Read as _,
    os::unix::fs::MetadataExt as _,
    sync::{
        Arc,
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
};

use aho_corasick::AhoCorasick;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Bytes of a file read at most; a larger one is identified but not hashed.
pub const MAX_BYTES: u64 = 128 << 20;
/// Processes waiting for the worker; more are counted as dropped.
const QUEUE: usize = 4096;
/// Files remembered (their identity and what was found).
const CACHE: usize = 8192;

/// Strings of miner binaries (`rules/miner-strings.txt`): each is specific
/// to mining software; the rules ask for several at once, because node
/// software (monerod, p2pool) legitimately carries one or two. Kept encoded
/// in the binary (see build.rs), so that the tracer does not match itself.
pub fn miner_strings() -> &'static [String] {
    static STRINGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    STRINGS.get_or_init(|| {
        crate::embedded::decode(crate::embedded::MINER_STRINGS)
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    })
}

/// Markers of packed executables (UPX writes `UPX!` in its headers).
const PACKERS: &[(&str, &[u8])] = &[("upx", b"UPX!")];

/// What is known of one process's executable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Executable {
    /// Where /proc/PID/exe points: a path, `/memfd:NAME (deleted)` for a
    /// memfd, `PATH (deleted)` for a file removed since.
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub size: u64,
    pub device: u64,
    pub inode: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Run from a memfd (no file on any disk).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub memfd: bool,
    /// The file was deleted after the process started.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// miner_strings() found in the file, in that list's order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub miner_strings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packer: Option<&'static str>,
    /// Larger than MAX_BYTES: identified, not hashed or scanned.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub too_large: bool,
}

impl Executable {
    /// Worth a record for every process that runs it, not only the first.
    pub fn suspicious(&self) -> bool {
        self.memfd || self.deleted || !self.miner_strings.is_empty() || self.packer.is_some()
    }
}

/// A finished look at one process's executable.
pub struct Done {
    pub tgid: u32,
    /// The first process seen running this file.
    pub first: bool,
    pub result: Result<Arc<Executable>, String>,
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Counts {
    /// Files read and hashed.
    pub read: u64,
    /// Processes whose file was already known.
    pub cached: u64,
    /// Processes not looked at: the queue was full.
    pub dropped: u64,
    /// Processes gone, or executables unreadable, before the look.
    pub failed: u64,
}

/// The worker and its queues.
pub struct Executables {
    jobs: SyncSender<u32>,
    done: Receiver<Done>,
    pub counts: Counts,
    pub waiting: usize,
}

impl Executables {
    pub fn start() -> std::io::Result<Self> {
        let (jobs, rx) = sync_channel::<u32>(QUEUE);
        let (tx, done) = sync_channel::<Done>(QUEUE);
        let matcher = AhoCorasick::new(miner_strings()).expect("plain strings");
        std::thread::Builder::new().name("tracer-exe".into()).spawn(move || {
            let mut cache: HashMap<(u64, u64, u64, i64), Arc<Executable>> = HashMap::new();
            for tgid in rx {
                let done = look(tgid, &matcher, &mut cache);
                if tx.send(done).is_err() {
                    break;
                }
            }
        })?;
        Ok(Self { jobs, done, counts: Counts::default(), waiting: 0 })
    }

    /// Asks for `tgid`'s executable; never blocks.
    pub fn submit(&mut self, tgid: u32) {
        match self.jobs.try_send(tgid) {
            Ok(()) => self.waiting += 1,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.counts.dropped += 1,
        }
    }

    /// What the worker finished since the last call.
    pub fn finished(&mut self) -> Vec<Done> {
        let out: Vec<Done> = self.done.try_iter().collect();
        self.account(&out);
        out
    }

    /// At shutdown: waits up to `limit` for what is queued.
    pub fn finish(&mut self, limit: std::time::Duration) -> Vec<Done> {
        let until = std::time::Instant::now() + limit;
        let mut out = Vec::new();
        while self.waiting > out.len() {
            let left = until.saturating_duration_since(std::time::Instant::now());
            match self.done.recv_timeout(left) {
                Ok(d) => out.push(d),
                Err(_) => break,
            }
        }
        self.account(&out);
        out
    }

    fn account(&mut self, done: &[Done]) {
        self.waiting = self.waiting.saturating_sub(done.len());
        for d in done {
            match (&d.result, d.first) {
                (Err(_), _) => self.counts.failed += 1,
                (Ok(e), true) if !e.too_large => self.counts.read += 1,
                (Ok(_), true) => {}
                (Ok(_), false) => self.counts.cached += 1,
            }
        }
    }
}

fn look(
    tgid: u32,
    matcher: &AhoCorasick,
    cache: &mut HashMap<(u64, u64, u64, i64), Arc<Executable>>,
) -> Done {
    let exe = format!("/proc/{tgid}/exe");
    let result = (|| -> Result<(bool, Arc<Executable>), String> {
        let path = std::fs::read_link(&exe).map_err(|e| format!("{exe}: {e}"))?;
        let path = path.to_string_lossy().into_owned();
        let file = std::fs::File::open(&exe).map_err(|e| format!("{exe}: {e}"))?;
        let meta = file.metadata().map_err(|e| format!("{exe}: {e}"))?;
        let key = (meta.dev(), meta.ino(), meta.size(), meta.mtime());
        if let Some(known) = cache.get(&key) {
            // Same file, perhaps under another name (a hard link, a move).
            if known.path == path {
                return Ok((false, known.clone()));
            }
            let mut renamed = (**known).clone();
            renamed.path = path;
            return Ok((false, Arc::new(renamed)));
        }
        let mut e = Executable {
            memfd: path.starts_with("/memfd:"),
            deleted: path.ends_with(" (deleted)") && !path.starts_with("/memfd:"),
            path,
            sha256: None,
            size: meta.size(),
            device: meta.dev(),
            inode: meta.ino(),
            mtime: meta.mtime(),
            miner_strings: Vec::new(),
            packer: None,
            too_large: meta.size() > MAX_BYTES,
        };
        if !e.too_large {
            let scan = scan(file.take(MAX_BYTES), matcher).map_err(|err| format!("{exe}: {err}"))?;
            (e.sha256, e.miner_strings, e.packer) = (Some(scan.0), scan.1, scan.2);
        }
        let e = Arc::new(e);
        if cache.len() >= CACHE {
            cache.clear();
        }
        cache.insert(key, e.clone());
        Ok((true, e))
    })();
    match result {
        Ok((first, e)) => Done { tgid, first, result: Ok(e) },
        Err(why) => Done { tgid, first: false, result: Err(why) },
    }
}

/// SHA-256, the miner strings and a packer's marker of a stream, read in
/// chunks; a string cut by a chunk boundary is found through an overlap.
pub fn scan(
    mut r: impl std::io::Read,
    matcher: &AhoCorasick,
) -> std::io::Result<(String, Vec<String>, Option<&'static str>)> {
    let all = miner_strings();
    let overlap = all.iter().map(String::len).max().unwrap_or(0);
    let mut hash = Sha256::new();
    let mut found = vec![false; all.len()];
    let mut packer = None;
    let mut buf = vec![0u8; 1 << 20];
    let mut carry = 0usize;
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf[carry..])?;
        if n == 0 {
            break;
        }
        hash.update(&buf[carry..carry + n]);
        let window = &buf[..carry + n];
        for m in matcher.find_overlapping_iter(window) {
            found[m.pattern().as_usize()] = true;
        }
        // Packer headers sit in the first pages of the file.
        if total < 4096 && packer.is_none() {
            packer = PACKERS
                .iter()
                .find(|(_, marker)| {
                    window[..window.len().min(4096)].windows(marker.len()).any(|w| w == *marker)
                })
                .map(|(name, _)| *name);
        }
        total += n as u64;
        let keep = overlap.min(window.len());
        let start = window.len() - keep;
        buf.copy_within(start..start + keep, 0);
        carry = keep;
    }
    let hex = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let strings = all.iter().zip(found).filter(|(_, f)| *f).map(|(s, _)| s.clone()).collect();
    Ok((hex, strings, packer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher() -> AhoCorasick {
        AhoCorasick::new(miner_strings()).unwrap()
    }

    #[test]
    fn strings_across_chunk_boundaries_and_the_hash() {
        // From the list, not literals: this test's own binary must not
        // look like a miner's to a tracer running beside it.
        let all = miner_strings();
        let (a, b) = (&all[0], &all[3]);
        // A string straddling the first 1 MiB chunk's end is still found.
        let mut data = vec![0u8; (1 << 20) - 5];
        data.extend_from_slice(b.as_bytes());
        data.push(0);
        data.extend_from_slice(a.as_bytes());
        data.extend_from_slice(&[0x41; 100]);
        let (hash, strings, packer) = scan(&data[..], &matcher()).unwrap();
        assert_eq!(strings, vec![a.clone(), b.clone()], "in the list's order");
        assert_eq!(packer, None);
        let want: String = Sha256::digest(&data).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hash, want);
        // A string found twice is listed once.
        let twice = format!("{a} {a}");
        let (_, strings, _) = scan(twice.as_bytes(), &matcher()).unwrap();
        assert_eq!(strings, vec![a.clone()]);
    }

    /// Node software carries a miner string or two, not three: the real
    /// Monero daemon, where Debian's package is installed.
    #[test]
    fn the_monero_daemon_is_not_miner_code() {
        let Ok(file) = std::fs::File::open("/usr/bin/monerod") else {
            crate::testing::skip(
                "process::executable::the_monero_daemon_is_not_miner_code",
                "no /usr/bin/monerod",
            );
            return;
        };
        let (_, strings, packer) = scan(file, &matcher()).unwrap();
        assert!(strings.len() < 3 && packer.is_none(), "{strings:?}");
    }

    #[test]
    fn upx_marker_near_the_start() {
        let mut elf = b"\x7fELF".to_vec();
        elf.extend_from_slice(&[0; 200]);
        elf.extend_from_slice(b"UPX!");
        assert_eq!(scan(&elf[..], &matcher()).unwrap().2, Some("upx"));
    }

    /// The worker reads a live process's executable, once: a second look is
    /// served from the cache. The process is a `sleep`, not this test, whose
    /// debug binary can outgrow MAX_BYTES.
    #[test]
    fn the_worker_identifies_a_live_process_once() {
        let mut x = Executables::start().unwrap();
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        x.submit(child.id());
        x.submit(child.id());
        let done = x.finish(std::time::Duration::from_secs(30));
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(done.len(), 2);
        let first = done[0].result.as_ref().unwrap();
        assert!(done[0].first && !done[1].first);
        assert_eq!(first.sha256.as_ref().map(String::len), Some(64));
        assert!(first.miner_strings.len() < 3, "{first:?}");
        assert_eq!((x.counts.read, x.counts.cached), (1, 1));
        x.submit(u32::MAX);
        let gone = x.finish(std::time::Duration::from_secs(5));
        assert!(gone[0].result.is_err());
        assert_eq!(x.counts.failed, 1);
    }

    /// A binary run from a memfd is read through /proc/PID/exe and named so.
    #[test]
    fn a_memfd_executable_is_read_and_flagged() {
        use std::io::Write as _;
        // SAFETY: plain syscall.
        let fd = unsafe { libc::memfd_create(c"payload".as_ptr(), 0) };
        assert!(fd >= 0);
        // SAFETY: a fresh fd we own.
        let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        f.write_all(&std::fs::read("/bin/sleep").unwrap()).unwrap();
        let mut child = std::process::Command::new(format!("/proc/self/fd/{fd}")).arg("5").spawn().unwrap();
        let mut x = Executables::start().unwrap();
        x.submit(child.id());
        let done = x.finish(std::time::Duration::from_secs(30));
        let _ = child.kill();
        let _ = child.wait();
        let e = done[0].result.as_ref().unwrap();
        assert!(e.memfd && e.suspicious(), "{e:?}");
        assert!(e.path.starts_with("/memfd:payload"), "{}", e.path);
    }
}
