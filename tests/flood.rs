//! Floods: more records than the ring buffer holds, from several threads at
//! once (connects, and processes forked, exec'd and exiting). The tracer
//! must stay alive and responsive, and account for every record: read, or
//! counted as dropped, per kind, exactly.
//!
//! A binary of its own: a flood would make other tests' tracers drop.

mod support;

use std::{
    collections::HashSet,
    net::UdpSocket,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{Tracer, final_health, is_health};

/// The flood tests trace this very process (`--pid`): one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Threads that connect a UDP socket to `port` until `stop`, or `limit`
/// times each; returns the connects made.
fn connect_flood(threads: usize, port: u16, limit: u64, stop: Arc<AtomicBool>) -> Vec<JoinHandle<u64>> {
    (0..threads)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0;
                while n < limit && !stop.load(Ordering::Relaxed) {
                    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
                    sock.connect(("127.0.0.1", port)).unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect()
}

/// Threads that start `/bin/true` and wait for it, until `stop` or `limit`
/// times each; the pids go to `pids`.
fn exec_flood(
    threads: usize,
    limit: u64,
    stop: Arc<AtomicBool>,
    pids: Arc<Mutex<HashSet<u32>>>,
) -> Vec<JoinHandle<u64>> {
    (0..threads)
        .map(|_| {
            let (stop, pids) = (stop.clone(), pids.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while n < limit && !stop.load(Ordering::Relaxed) {
                    let mut child = Command::new("/bin/true").spawn().unwrap();
                    pids.lock().unwrap().insert(child.id());
                    assert!(child.wait().unwrap().success());
                    n += 1;
                }
                n
            })
        })
        .collect()
}

fn join(handles: Vec<JoinHandle<u64>>) -> u64 {
    handles.into_iter().map(|h| h.join().unwrap()).sum()
}

/// SIGTERM while the flood goes on: the final health record is written
/// within a second (a service manager waits a few before SIGKILL), and
/// health records kept coming during the flood.
#[test]
fn sigterm_is_honoured_under_a_sustained_flood() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    let me = std::process::id().to_string();
    // Records go to a file; stdout, read by a thread of this busy process,
    // carries only health records, so the test's reader is not what slows
    // the tracer down.
    let dir = std::env::temp_dir().join(format!("tracer-flood-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("records.jsonl");
    // In ECS, which costs the tracer more per record than native: the
    // flood outruns it.
    let file_sink = format!("{};format=ecs", out.to_str().unwrap());
    let mut tracer = Tracer::start(&[
        "--pid",
        &me,
        "--health-interval",
        "250ms",
        // The final activity report covers what ran since the last one: its
        // cost grows with the processes in it (the exec flood makes ~1000/s).
        "--activity-interval",
        "1s",
        "--sink",
        "stdout;kinds=tracer.health",
        "--sink",
        &file_sink,
    ]);

    let stop = Arc::new(AtomicBool::new(false));
    let pids = Arc::new(Mutex::new(HashSet::new()));
    // Two producers and the tracer share this machine's cores: more would
    // measure the scheduler, not the tracer. Two connecting threads make
    // more records than the tracer reads (the ring overflows, see below).
    let mut flood = connect_flood(2, port, u64::MAX, stop.clone());
    flood.extend(exec_flood(1, u64::MAX, stop.clone(), pids));
    std::thread::sleep(Duration::from_secs(3));

    let sent = Instant::now();
    tracer.signal(libc::SIGTERM);
    tracer.wait_for(Duration::from_secs(30), |r| is_health(r, "final"));
    let took = sent.elapsed();
    let exited = tracer.wait_exit(Duration::from_secs(30));
    let gone = sent.elapsed();
    stop.store(true, Ordering::Relaxed);
    let made = join(flood);

    let records = tracer.seen.clone();
    let running = records.iter().filter(|r| is_health(r, "running")).count();
    let written = std::fs::read_to_string(&out).unwrap();
    let connects = written.lines().filter(|l| l.contains("\"dataset\":\"tracer.network.connect\"")).count();
    std::fs::remove_dir_all(&dir).unwrap();
    eprintln!(
        "flood: {made} connects and execs; tracer read {connects} connects, wrote {running} running health \
         records; final health {took:?} after SIGTERM, exit after {gone:?} ({exited:?})"
    );
    assert!(exited.is_some_and(|s| s.success()), "the tracer did not exit cleanly: {exited:?}");
    let health = final_health(&records);
    assert!(health["events_read"].as_u64().unwrap() > 0, "{health}");
    let lost = health["dropped_total"].as_u64().unwrap()
        + health
            .get("unread_at_shutdown")
            .map_or(0, |u| u.as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum());
    eprintln!("dropped or unread: {lost}");
    assert!(lost > 0, "the flood must outrun the tracer for this test to mean anything: {health}");
    // At least two: a starved loop writes none until the flood ends (on a
    // busy 2-core machine the tracer gets a fraction of a core, so fewer
    // than the twelve asked for).
    assert!(running >= 2, "health records stopped during the flood: {running} in 3 s at 250 ms");
    // Typically 0.25-0.5 s here: 200 ms of reading, then the final activity
    // and health records (kernel tables read in batches, at a raised
    // priority so the flood's threads do not take the tracer's core). A
    // starved loop (the ring read until empty, which a flood never lets it
    // be) takes as long as the flood lasts.
    assert!(took < Duration::from_secs(1), "the final health record came {took:?} after SIGTERM");
    // Detaching the classic tracepoints takes the kernel ~40 ms each.
    assert!(gone < Duration::from_secs(4), "the tracer exited {gone:?} after SIGTERM");
}

/// A flood several times the ring buffer's size, while the tracer is
/// stopped for part of it: every record is read or counted dropped, per
/// kind, exactly; the tracer keeps running.
#[test]
fn flood_beyond_the_ring_buffer_is_accounted_exactly_per_kind() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    const CONNECTS_PER_THREAD: u64 = 25_000;
    const EXECS_PER_THREAD: u64 = 250;
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    let me = std::process::id();
    // 256 KiB hold about 2000 connect records: the flood is ~50 times that.
    let tracer = Tracer::start_keeping_stderr(&["--pid", &me.to_string(), "--ring-buffer-kib", "256"]);

    let stop = Arc::new(AtomicBool::new(false));
    let pids = Arc::new(Mutex::new(HashSet::new()));
    tracer.signal(libc::SIGSTOP);
    let mut connects = connect_flood(4, port, CONNECTS_PER_THREAD, stop.clone());
    let execs = exec_flood(2, EXECS_PER_THREAD, stop.clone(), pids.clone());
    std::thread::sleep(Duration::from_millis(500));
    tracer.signal(libc::SIGCONT);
    connects.extend(connect_flood(2, port, CONNECTS_PER_THREAD, stop));
    let made_connects = join(connects);
    let made_execs = join(execs);
    assert_eq!(made_connects, 6 * CONNECTS_PER_THREAD);
    assert_eq!(made_execs, 2 * EXECS_PER_THREAD);
    let (records, stderr) = tracer.stop_with_stderr();

    let pids = pids.lock().unwrap().clone();
    let child = |r: &Value| r["process"]["pid"].as_u64().is_some_and(|p| pids.contains(&(p as u32)));
    let got = |kind: &str, pred: &dyn Fn(&Value) -> bool| {
        records.iter().filter(|r| r["kind"] == kind && pred(r)).count() as u64
    };
    let health = final_health(&records);
    // Dropped by the kernel (ring full), or left unread when the shutdown's
    // time to read was up: both counted.
    let dropped = |kind: &str| support::not_delivered(health, kind);
    let rows = [
        ("connect", made_connects, got("network.connect", &|r| r["connect"]["port"] == port)),
        (
            "fork",
            made_execs,
            got("process.fork", &|r| {
                r["process"]["pid"] == me && pids.contains(&(r["fork"]["child_pid"].as_u64().unwrap() as u32))
            }),
        ),
        ("exec", made_execs, got("process.exec", &child)),
        ("exit", made_execs, got("process.exit", &child)),
    ];
    for (kind, made, read) in rows {
        eprintln!("{kind}: generated {made}, read {read}, dropped {}", dropped(kind));
    }
    assert!(dropped("connect") > 0, "the flood must overflow the ring: {health}");
    // Told on stderr too, not only in the health records.
    let told = format!("{} records dropped by the kernel (", health["dropped_total"]);
    assert!(stderr.contains(&told), "stderr does not say `{told}…`: {stderr}");
    for (kind, made, read) in rows {
        assert_eq!(read + dropped(kind), made, "{kind}: read + dropped = generated; {health}");
    }
}

/// The kinds the connect/exec flood does not make, each overflowing a
/// 4 KiB ring while the tracer is stopped: read + dropped = made, per kind.
#[test]
fn every_other_kind_is_accounted_when_the_ring_overflows() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    const N: usize = 100;
    let me = std::process::id();
    let dir = support::scratch("kinds");
    let pool = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = pool.local_addr().unwrap().port();
    // file.open records come from the syscall hooks.
    let tracer = Tracer::start(&["--pid", &me.to_string(), "--ring-buffer-kib", "4", "--syscalls"]);
    tracer.signal(libc::SIGSTOP);
    let mut keep = Vec::new();
    for i in 0..N {
        // network.listen
        keep.push(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
        // network.connect and network.first_bytes
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        std::io::Write::write_all(&mut c, b"GET / HTTP/1.0\r\n\r\n").unwrap();
        // network.dns: a query to port 53 (nobody need answer)
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.send_to(&dns_query_bytes(i as u16), "127.0.0.153:53").unwrap();
        // file.open of a watched suffix
        std::fs::write(dir.join(format!("m{i}.safetensors")), b"w").unwrap();
    }
    tracer.signal(libc::SIGCONT);
    let records = tracer.stop();
    let health = final_health(&records);
    let mine = |kind: &str, pred: &dyn Fn(&Value) -> bool| {
        records.iter().filter(|r| r["kind"] == kind && r["process"]["pid"] == me && pred(r)).count() as u64
    };
    let rows = [
        ("listen", "network.listen", mine("network.listen", &|_| true)),
        (
            "first_bytes",
            "network.first_bytes",
            mine("network.first_bytes", &|r| r["first_bytes"]["port"] == port),
        ),
        ("dns", "network.dns", mine("network.dns", &|r| r["dns"]["port"] == 53)),
        (
            "file_open",
            "file.open",
            mine("file.open", &|r| r["file"]["path"].as_str().is_some_and(|p| p.ends_with(".safetensors"))),
        ),
    ];
    for (kind, record, read) in rows {
        let dropped = support::not_delivered(health, kind);
        eprintln!("{record}: made {N}, read {read}, dropped {dropped}");
        assert!(dropped > 0, "{record}: a 4 KiB ring held all {N}? {health}");
        assert_eq!(read + dropped, N as u64, "{record}: read + dropped = made; {health}");
    }
    drop(keep);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A query for `q{id}.example` A, id `id`.
fn dns_query_bytes(id: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    let label = format!("q{id}");
    q.push(label.len() as u8);
    q.extend_from_slice(label.as_bytes());
    q.extend_from_slice(&[7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0, 0, 1, 0, 1]);
    q
}

/// A burst from a tight loop with nobody stalling: how fast records are
/// read, and that counts still add up exactly. Here, not with the other
/// live tests: every tracer started meanwhile would see the burst too.
#[test]
fn connect_burst_read_rate() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    const CONNECTS: u64 = 20_000;
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    // The producer is this test process: a child would be the bottleneck.
    let tracer = Tracer::start(&["--pid", &std::process::id().to_string()]);

    let start = Instant::now();
    for _ in 0..CONNECTS {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.connect(("127.0.0.1", port)).unwrap();
    }
    let produced = start.elapsed();
    let records = tracer.stop();
    let drained = start.elapsed();
    let connects = records
        .iter()
        .filter(|r| {
            r["kind"] == "network.connect"
                && r["process"]["pid"] == std::process::id()
                && r["connect"]["port"] == port
        })
        .collect::<Vec<_>>();
    assert!(
        connects.iter().all(|c| c["connect"]["protocol"] == "udp" && c["connect"]["socket_type"] == "dgram")
    );
    let received = connects.len() as u64;
    let dropped = support::not_delivered(final_health(&records), "connect");
    eprintln!(
        "{CONNECTS} connects in {produced:?} ({:.0}/s); all read {drained:?} after the first: \
         {received} received, {dropped} dropped",
        CONNECTS as f64 / produced.as_secs_f64()
    );
    assert_eq!(received + dropped, CONNECTS);
    // Not a timing bound, a sanity one: 20 000 records overfill the 4 MiB
    // ring only if nobody reads it, so a reader that works gets most of
    // them (every run so far: all). All-dropped would also add up above.
    assert!(received * 2 >= CONNECTS, "only {received} of {CONNECTS} connects read, {dropped} dropped");
}

/// More peers than the kernel's flow table holds, all within one activity
/// interval: its LRU evicts keys that were never reported, and health
/// counts each one: peers = keys in the table + keys evicted, exactly.
#[test]
fn flow_table_evictions_are_counted() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    const PEERS: u16 = 40_000;
    let mut tracer = Tracer::start(&[
        "--pid",
        &std::process::id().to_string(),
        "--activity-interval",
        "600s",
        "--health-interval",
        "300ms",
    ]);
    // One socket connected to a new port each time is a new (process,
    // peer) key. The first send after connect may return the refusal of
    // the previous peer's port; the second is then sent.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..PEERS {
        sock.connect(("127.0.0.1", 20_000 + i)).unwrap();
        if sock.send(b"x").is_err() {
            sock.send(b"x").unwrap();
        }
    }
    let counted = |r: &Value| {
        let h = &r["health"];
        h["kernel_tables"]["flows"].as_u64().unwrap_or(0)
            + h["kernel_evictions"]["flows"].as_u64().unwrap_or(0)
    };
    let health =
        tracer
            .wait_for(Duration::from_secs(20), |r| is_health(r, "running") && counted(r) >= u64::from(PEERS))
            ["health"]
            .clone();
    drop(tracer.stop());
    let (live, evicted) = (
        health["kernel_tables"]["flows"].as_u64().unwrap(),
        health["kernel_evictions"]["flows"].as_u64().unwrap(),
    );
    eprintln!("{PEERS} peers: {live} in the flow table, {evicted} evicted");
    assert!(evicted > 0, "the table holds 32768: {PEERS} peers must evict; {health}");
    assert_eq!(live + evicted, u64::from(PEERS), "{health}");
    assert_eq!(health["ledger_keys_evicted"].as_u64().unwrap(), evicted, "{health}");
}

/// Processes whose exit record was lost (a ring too small while the tracer
/// was stopped) are forgotten anyway once they are gone from /proc: their
/// counters, in the kernel's table or carried by the tracer (from the CPUs'
/// logs of evicted slots), do not stay until the tables fill and evict.
#[test]
fn processes_whose_exit_was_dropped_are_forgotten() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    const CHILDREN: usize = 300;
    let mut tracer = Tracer::start(&[
        "--pid",
        &std::process::id().to_string(),
        "--ring-buffer-kib",
        "4",
        // The sweep of the vanished runs every twelfth report.
        "--activity-interval",
        "200ms",
        "--health-interval",
        "300ms",
    ]);
    tracer.signal(libc::SIGSTOP);
    for _ in 0..CHILDREN {
        assert!(Command::new("/bin/true").status().unwrap().success());
    }
    tracer.signal(libc::SIGCONT);
    let procs = |r: &Value| {
        let count = |v: &Value| v.as_u64().unwrap_or(u64::MAX / 2);
        count(&r["health"]["kernel_tables"]["proc_stats"]) + count(&r["health"]["tables"]["cpu_time_carried"])
    };
    // While stopped, the children's counters were made in the kernel.
    let full = tracer.wait_for(Duration::from_secs(10), |r| is_health(r, "running"));
    let forgotten = tracer.wait_for(Duration::from_secs(15), |r| is_health(r, "running") && procs(r) < 20);
    let records = tracer.stop();
    let health = final_health(&records);
    let dropped = health["dropped"]["exit"].as_u64().unwrap();
    eprintln!(
        "{CHILDREN} children, {dropped} exit records dropped; counters held {} -> {}; pruned {}",
        procs(&full),
        procs(&forgotten),
        health["process_table_pruned"]
    );
    assert!(dropped > 100, "the ring must lose most exits for this test to mean anything: {health}");
    assert!(procs(&full) > 100, "the children's counters were held: {full}");
    assert_eq!(health["kernel_evictions"]["proc_stats"], 0, "{health}");
}
