//! Sinks against real receivers on loopback: rsyslogd (Debian's package)
//! over TCP, UDP and a Unix socket; an HTTP receiver stopped and started
//! again mid-stream; a rotating file sink under load with a logrotate-style
//! move and SIGHUP. Every record the tracer wrote to stdout must arrive,
//! exactly once.

mod support;

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{Tracer, final_health};

fn scratch(name: &str) -> PathBuf {
    support::scratch(&format!("sinks-{name}"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Short-lived processes whose argv carries `marker-i`: each gives exec,
/// fork and exit records.
fn spawn_marked(marker: &str, n: usize) {
    for i in 0..n {
        let status =
            Command::new("/bin/sh").args(["-c", "exit 0", &format!("{marker}-{i}")]).status().unwrap();
        assert!(status.success());
    }
}

/// Records in a canonical text form (keys sorted), to compare as multisets.
fn canonical(records: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in records {
        *m.entry(r.to_string()).or_default() += 1;
    }
    m
}

fn exec_markers(records: &[Value], marker: &str) -> usize {
    records
        .iter()
        .filter(|r| r["kind"] == "process.exec")
        .filter(|r| {
            r["process"]["argv"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x.as_str().is_some_and(|s| s.starts_with(marker))))
        })
        .count()
}

/// Waits until `f` holds, or panics with `what` after `timeout`.
fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------- syslog

struct Rsyslog {
    child: Child,
    dir: PathBuf,
}

impl Rsyslog {
    /// rsyslogd in the foreground with inputs on loopback TCP and UDP and a
    /// Unix socket, each writing the parsed header fields and the message.
    fn start(dir: &Path, tcp: u16, udp: u16) -> Self {
        let d = dir.display();
        let conf = format!(
            r#"global(workDirectory="{d}" maxMessageSize="256k")
module(load="imtcp")
module(load="imudp")
module(load="imuxsock" SysSock.Use="off")
template(name="fields" type="string" string="%pri%|%app-name%|%procid%|%msgid%|%hostname%|%msg%\n")
ruleset(name="tcp") {{ action(type="omfile" file="{d}/tcp.log" template="fields") }}
ruleset(name="udp") {{ action(type="omfile" file="{d}/udp.log" template="fields") }}
ruleset(name="unix") {{ action(type="omfile" file="{d}/unix.log" template="fields") }}
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="tcp")
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="udp" rcvBufSize="4m")
input(type="imuxsock" socket="{d}/log.sock" ruleset="unix" useSpecialParser="off" parseHostname="on"
      rateLimit.interval="0")
"#
        );
        std::fs::write(dir.join("rsyslog.conf"), conf).unwrap();
        let child = Command::new("rsyslogd")
            .args(["-n", "-f"])
            .arg(dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(dir.join("rsyslog.pid"))
            .stdin(Stdio::null())
            .spawn()
            .expect("rsyslogd (Debian package rsyslog; cargo xtask test installs it)");
        let r = Self { child, dir: dir.to_path_buf() };
        wait_until(Duration::from_secs(15), "rsyslogd to listen", || {
            TcpStream::connect(("127.0.0.1", tcp)).is_ok() && dir.join("log.sock").exists()
        });
        r
    }

    /// (pri, app, procid, msgid, host, msg) per line of one output file.
    fn lines(&self, name: &str) -> Vec<[String; 6]> {
        let Ok(text) = std::fs::read_to_string(self.dir.join(name)) else { return Vec::new() };
        text.lines()
            .map(|l| {
                let f: Vec<&str> = l.splitn(6, '|').collect();
                assert_eq!(f.len(), 6, "rsyslog line without all fields: {l}");
                std::array::from_fn(|i| f[i].to_string())
            })
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn rsyslog_receives_every_record_over_tcp_udp_and_unix() {
    let dir = scratch("rsyslog");
    let (tcp, udp) = (free_port(), free_port());
    let rsyslog = Rsyslog::start(&dir, tcp, udp);
    let sock = dir.join("log.sock");
    let mut tracer = Tracer::start(&[
        "--activity-interval",
        "1s",
        "--sink",
        "-",
        "--sink",
        &format!("syslog+tcp://127.0.0.1:{tcp};app_name=tracer-test;facility=local3"),
        "--sink",
        &format!("syslog+udp://127.0.0.1:{udp};format=ecs"),
        "--sink",
        &format!("syslog+unix://{};kinds=tracer.health,process.exec", sock.display()),
    ]);
    spawn_marked("syslog-test", 20);
    tracer.wait_for(Duration::from_secs(10), |r| r["kind"] == "process.activity");
    let pid = tracer.pid().to_string();
    let records = tracer.stop();
    assert!(exec_markers(&records, "syslog-test") == 20, "the workload was traced");

    let expected_tcp = records.len();
    wait_until(Duration::from_secs(20), "rsyslog to write every record", || {
        rsyslog.lines("tcp.log").len() >= expected_tcp && rsyslog.lines("udp.log").len() >= expected_tcp
    });

    // TCP, native: every record, byte-identical JSON, header fields right.
    let tcp_lines = rsyslog.lines("tcp.log");
    let mut got = Vec::new();
    for [pri, app, procid, msgid, _host, msg] in &tcp_lines {
        let v: Value = serde_json::from_str(msg).unwrap_or_else(|e| panic!("not JSON ({e}): {msg}"));
        assert_eq!((app.as_str(), procid.as_str()), ("tracer-test", pid.as_str()));
        assert_eq!(msgid, v["kind"].as_str().unwrap(), "MSGID is the record kind");
        let severity = if v["kind"] == "classification" { [4, 5] } else { [6, 6] };
        let pri: u32 = pri.parse().unwrap();
        assert!(pri / 8 == 19 && severity.contains(&(pri % 8)), "local3 and severity, got {pri} for {msgid}");
        got.push(v);
    }
    assert_eq!(canonical(&got), canonical(&records), "rsyslog over TCP holds exactly the records");

    // UDP, ECS: one message per record, each an ECS document of its kind.
    let udp_lines = rsyslog.lines("udp.log");
    assert_eq!(udp_lines.len(), records.len());
    let mut kinds_sent: Vec<String> =
        records.iter().map(|r| r["kind"].as_str().unwrap().to_string()).collect();
    let mut kinds_got = Vec::new();
    for [pri, _, _, msgid, _, msg] in &udp_lines {
        let v: Value = serde_json::from_str(msg).unwrap_or_else(|e| panic!("not JSON ({e}): {msg}"));
        assert!(v["ecs"]["version"].is_string(), "an ECS document: {msg}");
        assert_eq!(v["tracer"]["kind"], msgid.as_str());
        assert_eq!(pri.parse::<u32>().unwrap() / 8, 16, "local0 by default");
        kinds_got.push(msgid.clone());
    }
    kinds_sent.sort();
    kinds_got.sort();
    assert_eq!(kinds_got, kinds_sent);

    // Unix socket, filtered to two kinds.
    let wanted: Vec<&Value> =
        records.iter().filter(|r| r["kind"] == "tracer.health" || r["kind"] == "process.exec").collect();
    wait_until(Duration::from_secs(10), "the Unix socket messages", || {
        rsyslog.lines("unix.log").len() >= wanted.len()
    });
    let unix: Vec<Value> =
        rsyslog.lines("unix.log").iter().map(|l| serde_json::from_str(&l[5]).unwrap()).collect();
    assert_eq!(canonical(&unix), canonical(&wanted.into_iter().cloned().collect::<Vec<_>>()));

    // The tracer's own account agrees.
    let sinks = &final_health(&records)["sinks"];
    let unix_sink =
        sinks.as_array().unwrap().iter().find(|s| s["sink"].as_str().unwrap().contains("unix")).unwrap();
    assert!(unix_sink["filtered_out"].as_u64().unwrap() > 0);
    for s in sinks.as_array().unwrap() {
        assert_eq!(s["dropped"], serde_json::json!({}), "nothing dropped: {s}");
    }
    drop(rsyslog);
    std::fs::remove_dir_all(dir).unwrap();
}

// ------------------------------------------------------------------ HTTP

/// A minimal HTTP/1.1 receiver: stores each POSTed body's lines, answers
/// 200. Stopping it closes the port; connections the client kept alive are
/// closed, unanswered, at their next request — nothing is stored and left
/// unanswered, so a record can only arrive twice if the sender sends it twice.
struct Receiver {
    stopped: Arc<AtomicBool>,
    gate: Arc<Mutex<()>>,
    accept: Option<JoinHandle<()>>,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut length = None;
    let mut chunked = false;
    let mut first = true;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if first {
            assert!(line.starts_with("POST /ingest "), "unexpected request: {line}");
            first = false;
            continue;
        }
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':')?;
        match k.to_ascii_lowercase().as_str() {
            "content-length" => length = v.trim().parse::<usize>().ok(),
            "transfer-encoding" => chunked = v.trim().eq_ignore_ascii_case("chunked"),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        body.resize(length?, 0);
        reader.read_exact(&mut body).ok()?;
    }
    Some(body)
}

impl Receiver {
    fn start(port: u16, store: Arc<Mutex<Vec<String>>>) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("binding the receiver's port");
        listener.set_nonblocking(true).unwrap();
        let stopped = Arc::new(AtomicBool::new(false));
        let gate = Arc::new(Mutex::new(()));
        let (stop, g) = (stopped.clone(), gate.clone());
        let accept = std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let Ok((conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                conn.set_nonblocking(false).unwrap();
                let (stop, gate, store) = (stop.clone(), g.clone(), store.clone());
                std::thread::spawn(move || {
                    let mut writer = conn.try_clone().unwrap();
                    let mut reader = BufReader::new(conn);
                    while let Some(body) = read_request(&mut reader) {
                        let _held = gate.lock().unwrap();
                        if stop.load(Ordering::SeqCst) {
                            return; // down: the request goes unanswered
                        }
                        let text = String::from_utf8(body).expect("UTF-8 body");
                        store.lock().unwrap().extend(text.lines().map(String::from));
                        let ok = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
                        if writer.write_all(ok).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { stopped, gate, accept: Some(accept) }
    }

    fn stop(mut self) {
        // Requests being answered finish first; none is answered after.
        let _held = self.gate.lock().unwrap();
        self.stopped.store(true, Ordering::SeqCst);
        drop(_held);
        self.accept.take().unwrap().join().unwrap();
    }
}

#[test]
fn http_receiver_down_mid_stream_gets_every_record_once() {
    let dir = scratch("http");
    let port = free_port();
    let store = Arc::new(Mutex::new(Vec::new()));
    let received = |store: &Arc<Mutex<Vec<String>>>| -> Vec<Value> {
        store
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).expect("a JSON record per line"))
            .collect()
    };
    let receiver = Receiver::start(port, store.clone());
    let mut tracer = Tracer::start(&[
        "--activity-interval",
        "1s",
        "--sink",
        "-",
        "--sink",
        &format!(
            "http://127.0.0.1:{port}/ingest;spool={};batch_age=100ms;batch_records=25",
            dir.join("spool").display()
        ),
    ]);
    spawn_marked("http-up", 10);
    wait_until(Duration::from_secs(15), "the first records at the receiver", || {
        exec_markers(&received(&store), "http-up") == 10
    });

    receiver.stop();
    spawn_marked("http-down", 10);
    // Records keep coming (activity, health) while the sender retries.
    tracer.wait_for(Duration::from_secs(10), |r| {
        r["kind"] == "process.activity" && r["mono_ns"].as_u64() > Some(0)
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(exec_markers(&received(&store), "http-down"), 0, "the receiver is down");
    let spooled = std::fs::read_dir(dir.join("spool")).unwrap().count();
    assert!(spooled > 0, "records wait in the spool");

    let receiver = Receiver::start(port, store.clone());
    spawn_marked("http-back", 10);
    let records = tracer.stop();
    receiver.stop();

    let got = received(&store);
    assert_eq!(exec_markers(&got, "http-down"), 10, "records emitted while the receiver was down arrived");
    assert_eq!(exec_markers(&got, "http-back"), 10);
    let got_counts = canonical(&got);
    let dupes: Vec<&String> = got_counts.iter().filter(|(_, n)| **n > 1).map(|(k, _)| k).collect();
    assert!(dupes.is_empty(), "records delivered twice: {dupes:#?}");
    assert_eq!(got_counts, canonical(&records), "the receiver holds exactly what the tracer wrote");

    let sink = &final_health(&records)["sinks"][1];
    assert!(sink["errors"].as_u64().unwrap() > 0, "the outage was seen: {sink}");
    assert_eq!(sink["dropped"], serde_json::json!({}));
    let left: Vec<_> = std::fs::read_dir(dir.join("spool"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "lock")
        .collect();
    assert!(left.is_empty(), "the spool is empty at the end (but for its lock): {left:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

// ------------------------------------------------------------------ files

fn read_jsonl(path: &Path) -> Vec<Value> {
    let file = std::fs::File::open(path).unwrap();
    let reader: Box<dyn std::io::Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    BufReader::new(reader)
        .lines()
        .map(|l| {
            let l = l.unwrap();
            serde_json::from_str(&l).unwrap_or_else(|e| panic!("{}: not JSON ({e}): {l}", path.display()))
        })
        .collect()
}

#[test]
fn rotation_under_load_and_sighup_lose_and_duplicate_nothing() {
    let dir = scratch("rotate");
    let live = dir.join("events.jsonl");
    let tracer = Tracer::start(&[
        "--sink",
        "-",
        "--sink",
        &format!("{};rotate_size=16KiB;keep=100000", live.display()),
    ]);
    let load = std::thread::spawn(|| spawn_marked("rotate-a", 150));
    std::thread::sleep(Duration::from_millis(300));
    // logrotate's way: move the file, then SIGHUP; records written between
    // the two go to the moved file.
    std::fs::rename(&live, dir.join("events.jsonl.moved")).unwrap();
    tracer.signal(libc::SIGHUP);
    load.join().unwrap();
    spawn_marked("rotate-b", 150);
    let records = tracer.stop();
    // The load check: each exec is on stdout, or counted as not delivered
    // (ring full, unread at shutdown) or with its argv unreadable. Nothing
    // goes missing without a count.
    let on_stdout = exec_markers(&records, "rotate-a") + exec_markers(&records, "rotate-b");
    let health = final_health(&records);
    let counted = support::not_delivered(health, "exec") + health["kernel_read_errors"].as_u64().unwrap();
    let sh_execs =
        records.iter().filter(|r| r["kind"] == "process.exec" && r["exec"]["filename"] == "/bin/sh").count();
    assert!(
        on_stdout <= 300 && on_stdout as u64 + counted >= 300,
        "{on_stdout} of 300 execs on stdout ({sh_execs} of /bin/sh in all), {counted} counted lost; the tracer's own account: {health}"
    );

    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let rotated = files.iter().filter(|p| p.extension().is_some_and(|e| e == "gz")).count();
    assert!(rotated >= 10, "rotated {rotated} times: {files:?}");
    let mut got = Vec::new();
    for f in &files {
        let mode = std::fs::metadata(f).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600, "{}", f.display());
        got.extend(read_jsonl(f));
    }
    assert_eq!(got.len(), records.len(), "as many records across {} files as written", files.len());
    assert_eq!(canonical(&got), canonical(&records), "every record exactly once");
    std::fs::remove_dir_all(dir).unwrap();
}

/// SIGHUP reopens the file at its path: without it, nothing would create
/// a new `events.jsonl` here (no size limit), and records would go on into
/// the moved file.
/// ECS and OCSF written live (a thread's process part made once and kept
/// for its next records) are, line for line, what converting the native
/// file afterwards gives (each record read whole).
#[test]
fn live_ecs_and_ocsf_are_the_native_records_converted() {
    use tracer::output::formats::{Format, write};
    let dir = scratch("formats");
    let path = |name: &str| dir.join(name).display().to_string();
    let tracer = Tracer::start(&[
        "--activity-interval",
        "1s",
        "--sink",
        "-",
        "--sink",
        &path("native.jsonl"),
        "--sink",
        &format!("{};format=ecs", path("ecs.jsonl")),
        "--sink",
        &format!("{};format=ocsf", path("ocsf.jsonl")),
    ]);
    spawn_marked("formats-test", 5);
    // One thread's connects: records that share its process.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    for _ in 0..20 {
        drop(TcpStream::connect(listener.local_addr().unwrap()).unwrap());
    }
    std::thread::sleep(Duration::from_millis(1500));
    tracer.stop();
    let lines = |name: &str| -> Vec<String> {
        std::fs::read_to_string(dir.join(name)).unwrap().lines().map(str::to_owned).collect()
    };
    let native = lines("native.jsonl");
    let connects = native.iter().filter(|l| l.contains("\"kind\":\"network.connect\"")).count();
    assert!(connects >= 20, "{connects} connect records");
    for (format, name) in [(Format::Ecs, "ecs.jsonl"), (Format::Ocsf, "ocsf.jsonl")] {
        let live = lines(name);
        assert_eq!(live.len(), native.len(), "{format}");
        for (n, l) in native.iter().zip(&live) {
            let mut converted = Vec::new();
            write(format, n.as_bytes(), &mut converted).unwrap();
            assert_eq!(l, &String::from_utf8(converted).unwrap(), "{format} of {n}");
        }
    }
}

#[test]
fn sighup_reopens_the_file_at_its_path() {
    let dir = scratch("sighup");
    let live = dir.join("events.jsonl");
    let moved = dir.join("events.jsonl.moved");
    let tracer = Tracer::start(&["--sink", "-", "--sink", &live.display().to_string()]);
    spawn_marked("before-hup", 3);
    // Written before the move (records reach the sinks within the ring's
    // poll interval, not at once).
    wait_until(Duration::from_secs(5), "the first records in events.jsonl", || {
        // Whole lines only: the tracer may be writing the next one.
        let text = std::fs::read_to_string(&live).unwrap_or_default();
        let written: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        exec_markers(&written, "before-hup") == 3
    });
    std::fs::rename(&live, &moved).unwrap();
    tracer.signal(libc::SIGHUP);
    wait_until(Duration::from_secs(5), "a new events.jsonl after SIGHUP", || live.exists());
    spawn_marked("after-hup", 3);
    let records = tracer.stop();
    assert_eq!(exec_markers(&records, "after-hup"), 3);
    assert_eq!(exec_markers(&read_jsonl(&live), "after-hup"), 3, "after the HUP: the new file");
    assert_eq!(exec_markers(&read_jsonl(&moved), "after-hup"), 0, "not the moved one");
    assert_eq!(exec_markers(&read_jsonl(&moved), "before-hup"), 3);
    std::fs::remove_dir_all(dir).unwrap();
}

// -------------------------------------------------------------- examples

#[test]
fn example_rsyslog_relay_configuration_validates() {
    // The relay's disk-assisted queue lives here; rsyslogd -N1 checks it exists.
    std::fs::create_dir_all("/var/spool/rsyslog-tracer").unwrap();
    let out = Command::new("rsyslogd")
        .args(["-N1", "-f"])
        .arg(support::repo().join("examples/rsyslog/tracer-relay.conf"))
        .output()
        .expect("rsyslogd (Debian package rsyslog; cargo xtask test installs it)");
    assert!(
        out.status.success(),
        "rsyslogd -N1 rejects the example: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ------------------------------------------------------------ failures

fn mount_tmpfs(dir: &Path, options: &str) {
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", options, "tracer-test", dir.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success(), "mount -t tmpfs -o {options} {}", dir.display());
}

/// A file sink on a disk that fills: that sink is marked failed and counts
/// what it loses; the tracer and its other sink (stdout) go on; once there
/// is room again the sink is reopened and takes records again. Every record
/// the file sink was handed is delivered or counted lost, exactly.
#[test]
fn a_full_disk_fails_one_sink_and_the_others_go_on() {
    let dir = scratch("full");
    let disk = dir.join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    mount_tmpfs(&disk, "size=64k");
    let live = disk.join("events.jsonl");
    // Health records every 250 ms keep records coming to the failed sink,
    // and show here when it has recovered.
    let mut tracer =
        Tracer::start(&["--health-interval", "250ms", "--sink", "-", "--sink", live.to_str().unwrap()]);
    spawn_marked("full-a", 150);
    // Room again: the sink's next retry (back-off 0.5 s doubling to 30 s)
    // reopens it.
    mount_tmpfs(&disk, "remount,size=16m");
    // A retry while the disk was still full can reopen the file and fail
    // again at the next write: only health written after the remount (after
    // this marker's exec) tells that the sink took records again.
    spawn_marked("full-remounted", 1);
    tracer
        .wait_for(Duration::from_secs(60), |r| exec_markers(std::slice::from_ref(r), "full-remounted") == 1);
    let file_sink_recovered = |r: &Value| {
        r["kind"] == "tracer.health"
            && r["health"]["sinks"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|s| s["sink"] != "-" && s["failed"] == false && s["recovered"].as_u64() >= Some(1))
            })
    };
    tracer.wait_for(Duration::from_secs(60), file_sink_recovered);
    spawn_marked("full-b", 50);
    let records = tracer.stop();

    // stdout missed nothing.
    assert_eq!(exec_markers(&records, "full-a"), 150);
    assert_eq!(exec_markers(&records, "full-b"), 50);
    let health = final_health(&records);
    let sink = health["sinks"].as_array().unwrap().iter().find(|s| s["sink"] != "-").unwrap().clone();
    let dropped: u64 = sink["dropped"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    let delivered = sink["delivered"].as_u64().unwrap();
    eprintln!("file sink on a full disk: {sink}");
    assert!(dropped > 0, "a 64 KiB disk must fill: {sink}");
    assert!(sink["recovered"].as_u64().unwrap() >= 1, "the sink took records again: {sink}");
    assert_eq!(sink["failed"], false, "{sink}");
    assert!(sink["last_error"].as_str().unwrap().contains("No space left"), "{sink}");
    // Counted before the final health record itself was handed over.
    assert_eq!(sink["records"].as_u64().unwrap(), delivered + dropped, "{sink}");

    // What reached the file: the delivered records, whole; a write cut
    // short by the full disk leaves at most one partial line per failure.
    let text = std::fs::read_to_string(&live).unwrap();
    let (whole, torn): (Vec<&str>, Vec<&str>) =
        text.lines().partition(|l| serde_json::from_str::<Value>(l).is_ok());
    assert_eq!(whole.len() as u64, delivered + 1, "whole lines = delivered, plus the final health record");
    assert!(torn.len() as u64 <= sink["errors"].as_u64().unwrap(), "{} torn lines", torn.len());
    assert!(whole.iter().any(|l| l.contains("full-b-49")), "records after the recovery reached the file");
    let c = std::ffi::CString::new(disk.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::umount2(c.as_ptr(), 0) }, 0);
    std::fs::remove_dir_all(dir).unwrap();
}

/// The reader of stdout goes away (a log shipper restarts): the tracer
/// stops, and not with success, so that a supervisor starts it again.
#[test]
fn a_broken_stdout_exits_non_zero() {
    support::require_root();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["run", "--health-interval", "100ms"])
        .stdout(std::process::Stdio::piped())
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("\"started\""), "{first}");
    drop(stdout);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the tracer kept running with its stdout closed");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(141), "{status}");
}

/// A receiver that accepts and never answers holds a request for the HTTP
/// timeout (10 s by default); the shutdown still ends within its grace, and
/// the unacknowledged batch waits in the spool for the next start.
#[test]
fn a_stalled_receiver_does_not_hold_the_shutdown_past_its_grace() {
    let dir = scratch("stalled");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts every connection and keeps it open, silent.
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in listener.incoming().take(4) {
            conns.push(c);
        }
        std::thread::sleep(Duration::from_secs(30));
        drop(conns);
    });
    let mut tracer = Tracer::start(&[
        "--shutdown-grace",
        "1s",
        "--sink",
        "-",
        "--sink",
        &format!("http://127.0.0.1:{port}/ingest;spool={};batch_age=100ms", dir.join("spool").display()),
    ]);
    spawn_marked("stalled", 5);
    std::thread::sleep(Duration::from_millis(800));
    let sent = Instant::now();
    tracer.signal(libc::SIGTERM);
    let exited = tracer.wait_exit(Duration::from_secs(30));
    let took = sent.elapsed();
    eprintln!("exit {took:?} after SIGTERM with a 1 s grace ({exited:?})");
    assert!(exited.is_some_and(|s| s.success()), "{exited:?}");
    // 0.2 s of reading, the grace, then detaching (~1 s): well short of
    // the 10 s the request in flight would hold.
    assert!(took < Duration::from_secs(5), "the tracer exited {took:?} after SIGTERM");
    let spooled: u64 = std::fs::read_dir(dir.join("spool"))
        .unwrap()
        .flatten()
        .filter(|f| f.path().extension().is_some_and(|e| e == "seg"))
        .map(|f| f.metadata().map_or(0, |m| m.len()))
        .sum();
    assert!(spooled > 0, "the batch in flight stays in the spool");
    drop(held);
    let _ = std::fs::remove_dir_all(&dir);
}
