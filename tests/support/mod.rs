//! Running the real tracer binary as root and reading its records.

#![allow(dead_code, reason = "each test file uses a different subset")]

pub mod conformance;

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    time::{Duration, Instant},
};

use serde_json::Value;

/// A fresh, empty directory of this test process's, named after `name`.
pub fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tracer-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The native records' JSON Schema, checked against the 2020-12 meta-schema.
pub fn validator() -> jsonschema::Validator {
    let path = repo().join("schema/tracer.v1.schema.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let schema: Value = serde_json::from_str(&text).expect("the schema is JSON");
    jsonschema::meta::validate(&schema).unwrap_or_else(|e| panic!("not a draft 2020-12 schema: {e}"));
    jsonschema::draft202012::new(&schema).unwrap_or_else(|e| panic!("the schema does not compile: {e}"))
}

/// One line per violation: which record, its kind, where in it, and what.
pub fn violations(v: &jsonschema::Validator, origin: &str, records: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, r) in records.iter().enumerate() {
        for e in v.iter_errors(r) {
            out.push(format!("{origin}:{} {} at '{}': {e}", i + 1, r["kind"], e.instance_path()));
        }
    }
    out
}

pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests load eBPF programs into the kernel: run them as root (cargo xtask test)"
    );
}

/// A tracer process whose stdout is parsed line by line on a thread.
pub struct Tracer {
    child: Child,
    lines: Receiver<Value>,
    pub seen: Vec<Value>,
    /// From spawn to the `started` health record.
    pub ready_after: Duration,
    /// What it wrote to stderr, where `start_keeping_stderr` started it.
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Tracer {
    /// Starts `tracer run <args>` and waits until its programs are attached.
    pub fn start(args: &[&str]) -> Self {
        Self::spawn(args, false)
    }

    /// `start`, keeping what the tracer writes to stderr (passed on to the
    /// test's own) for `stop_with_stderr`.
    pub fn start_keeping_stderr(args: &[&str]) -> Self {
        Self::spawn(args, true)
    }

    fn spawn(args: &[&str], keep_stderr: bool) -> Self {
        require_root();
        let spawned = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tracer"))
            .arg("run")
            .args(if args.contains(&"--health-interval") {
                &[][..]
            } else {
                &["--health-interval", "1h"][..]
            })
            .args(args)
            .stdout(Stdio::piped())
            .stderr(if keep_stderr { Stdio::piped() } else { Stdio::inherit() })
            .stdin(Stdio::null())
            .spawn()
            .expect("spawning the tracer");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().map(|err| {
            std::thread::spawn(move || {
                let mut kept = String::new();
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    eprintln!("{line}");
                    kept.push_str(&line);
                    kept.push('\n');
                }
                kept
            })
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("tracer wrote a line that is not JSON ({e}): {line}"));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        let mut tracer = Self { child, lines: rx, seen: Vec::new(), ready_after: Duration::ZERO, stderr };
        tracer.wait_for(READY_TIMEOUT, |r| is_health(r, "started"));
        tracer.ready_after = spawned.elapsed();
        tracer
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads records until one matches; panics after `timeout`.
    pub fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(found) = self.seen.iter().find(|r| pred(r)) {
            return found.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no matching record within {timeout:?}; saw {:#?}", self.seen)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "tracer exited ({:?}) before a matching record; saw {:#?}",
                        self.child.try_wait(),
                        self.seen
                    )
                }
            }
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// Reads records until the tracer closes its stdout, then waits for it
    /// to exit; None if it has not within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(v) => self.seen.push(v),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => return None,
            }
        }
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("waiting for the tracer") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// `stop`, and what the tracer wrote to stderr (it was started with
    /// `start_keeping_stderr`).
    pub fn stop_with_stderr(mut self) -> (Vec<Value>, String) {
        let stderr = self.stderr.take().expect("started with start_keeping_stderr");
        let records = self.stop();
        (records, stderr.join().expect("the stderr reader"))
    }

    /// SIGINT, then every record up to and including the final health record.
    pub fn stop(mut self) -> Vec<Value> {
        self.signal(libc::SIGINT);
        self.wait_for(Duration::from_secs(30), |r| is_health(r, "final"));
        let status = self.child.wait().expect("waiting for the tracer");
        assert!(status.success(), "tracer exited with {status}");
        // Anything after the final record would be a bug; collect it too.
        self.seen.extend(self.lines.try_iter());
        // Every record any test sees matches the published schema.
        let wrong = violations(&validator(), "stdout", &self.seen);
        assert!(wrong.is_empty(), "records outside schema/tracer.v1.schema.json:\n{}", wrong.join("\n"));
        std::mem::take(&mut self.seen)
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn is_health(r: &Value, status: &str) -> bool {
    r["kind"] == "tracer.health" && r["health"]["status"] == status
}

pub fn of_kind<'a>(records: &'a [Value], kind: &str, pid: u32) -> Vec<&'a Value> {
    records.iter().filter(|r| r["kind"] == kind && r["process"]["pid"] == pid).collect()
}

/// Records of `kind` the tracer did not deliver, and counted: dropped by the
/// kernel (ring full) or left unread when the shutdown's time was up.
pub fn not_delivered(health: &Value, kind: &str) -> u64 {
    health["dropped"][kind].as_u64().unwrap() + health["unread_at_shutdown"][kind].as_u64().unwrap_or(0)
}

pub fn final_health(records: &[Value]) -> &Value {
    &records.iter().rfind(|r| is_health(r, "final")).expect("a final health record")["health"]
}

/// Every record carries the common fields of the schema.
pub fn assert_common_fields(r: &Value) {
    assert_eq!(r["schema"], "tracer.v1", "{r}");
    for key in ["kind", "host", "time", "mono_ns"] {
        assert!(!r[key].is_null(), "missing {key} in {r}");
    }
    if r["kind"] != "tracer.health" {
        for key in ["entity_id", "pid", "ppid", "uid", "comm", "argv", "cgroup_id"] {
            assert!(r["process"].get(key).is_some(), "missing process.{key} in {r}");
        }
    }
}

/// Forks; the child runs `f` and `_exit`s with its return value. `f` must
/// only make syscalls (no allocation: the test process has other threads).
pub fn fork_child(f: impl FnOnce() -> i32) -> u32 {
    // SAFETY: the child only runs `f`, which the caller keeps to syscalls.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            libc::_exit(f());
        }
        pid as u32
    }
}

/// Waits for a child; returns its exit status and the CPU time the kernel
/// accounted to it (user + system), in milliseconds.
pub fn wait_rusage(pid: u32) -> (i32, f64) {
    let mut status = 0;
    // SAFETY: zeroed rusage is valid; wait4 on our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut ru) };
    assert_eq!(r, pid as i32, "wait4: {}", std::io::Error::last_os_error());
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
    (status, ms(ru.ru_utime) + ms(ru.ru_stime))
}

/// Spins on the CPU until this thread has used `ms` of CPU time.
pub fn burn_cpu(ms: u64) {
    let target = ms as i64 * 1_000_000;
    loop {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: valid out pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        if ts.tv_sec * 1_000_000_000 + ts.tv_nsec >= target {
            return;
        }
    }
}

/// A TCP socket connected to 127.0.0.1:`port`, from syscalls only (safe in a
/// forked child); -1 on failure.
pub fn connect_loopback(port: u16) -> i32 {
    // SAFETY: plain socket calls on our own fd.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes([127, 0, 0, 1]) },
            sin_zero: [0; 8],
        };
        if libc::connect(fd, (&raw const addr).cast(), size_of::<libc::sockaddr_in>() as u32) != 0 {
            libc::close(fd);
            return -1;
        }
        fd
    }
}

/// A DNS query for `name`, type A, id 0x4242 (RFC 1035 §4.1).
pub fn dns_query(name: &str) -> Vec<u8> {
    let mut b = vec![0x42, 0x42, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        b.push(label.len() as u8);
        b.extend_from_slice(label.as_bytes());
    }
    b.extend_from_slice(&[0, 0, 1, 0, 1]);
    b
}

/// Sends `query` to a resolver on `resolver`:53 and waits for an answer, as
/// glibc does (connect, send, recvfrom); syscalls only (safe after fork).
/// 0 on success, else 2 (connect), 3 (send) or 4 (no answer).
pub fn dns_lookup(resolver: [u8; 4], query: &[u8]) -> i32 {
    let mut answer = [0u8; 512];
    // SAFETY: plain socket calls on our own fd and buffers.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        let server = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 53u16.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(resolver) },
            sin_zero: [0; 8],
        };
        let code =
            if libc::connect(fd, (&raw const server).cast(), size_of::<libc::sockaddr_in>() as u32) != 0 {
                2
            } else if libc::send(fd, query.as_ptr().cast(), query.len(), 0) != query.len() as isize {
                3
            } else {
                let n = libc::recvfrom(
                    fd,
                    answer.as_mut_ptr().cast(),
                    answer.len(),
                    0,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                );
                if n < 28 { 4 } else { 0 }
            };
        libc::close(fd);
        code
    }
}

/// A resolver of the test's own on `addr`:53 that answers one query with
/// 127.0.0.1 (an A record pointing back at the question's name). Binds
/// before returning, so a query sent afterwards is not refused.
pub fn dns_responder(addr: [u8; 4]) -> std::thread::JoinHandle<()> {
    let resolver = std::net::UdpSocket::bind((std::net::Ipv4Addr::from(addr), 53))
        .unwrap_or_else(|e| panic!("bind {addr:?}:53: {e}"));
    resolver.set_read_timeout(Some(READY_TIMEOUT)).unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let Ok((n, from)) = resolver.recv_from(&mut buf) else { return };
        let mut answer = buf[..n].to_vec();
        answer[2] = 0x81; // response, recursion desired and available
        answer[3] = 0x80;
        answer[7] = 1; // one answer
        answer.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
        resolver.send_to(&answer, from).unwrap();
    })
}

/// A mining tree: a child in a session of its own that logs in to a local
/// "pool" with a real XMRig 6.18.1 login (tests/fixtures/first_bytes) and
/// then hashes, i.e. burns `cpu_ms` of CPU, with the connection open.
/// Returns the child's pid (its session id, the tree's key); reap it with
/// `wait_rusage`.
pub fn mining_tree(cpu_ms: u64) -> u32 {
    let login = std::fs::read(repo().join("tests/fixtures/first_bytes/xmrig-6.18.1-login.txt")).unwrap();
    let pool = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = pool.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = pool.accept() {
            let mut all = Vec::new();
            let _ = std::io::Read::read_to_end(&mut s, &mut all);
        }
    });
    fork_child(move || {
        // SAFETY: syscalls only, on the child's own socket.
        unsafe {
            libc::setsid();
            let fd = connect_loopback(port);
            if fd < 0 {
                return 2;
            }
            libc::write(fd, login.as_ptr().cast(), login.len());
            burn_cpu(cpu_ms);
            libc::close(fd);
        }
        0
    })
}

/// Says that a test could not test what it names on this host, and why;
/// `cargo xtask test` counts it as skipped, not passed (as the library's
/// tests do, tracer/src/testing.rs).
pub fn skip(test: &str, reason: &str) {
    eprintln!("{test}: skipped: {reason}");
    if let Some(path) = std::env::var_os("TRACER_TEST_SKIPS") {
        use std::io::Write as _;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{test}: {reason}");
        }
    }
}
