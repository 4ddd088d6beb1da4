//! The compute and network ledger against real processes: CPU time checked
//! against what the kernel's own accounting (wait4 rusage) says, exact byte
//! counts, and roll-ups per process tree (session) and per cgroup.

mod support;

use std::{io::Read as _, net::TcpListener};

use serde_json::Value;
use support::{Tracer, burn_cpu, dns_lookup, dns_query, dns_responder, fork_child, of_kind, wait_rusage};

/// The test of sockets opened before the tracer runs alone. Another test's
/// tracer, started beside it, adopts this process's sockets too: it copies
/// each with pidfd_getfd and asks its peer with getpeername, which this
/// test's tracer sees as that tracer using the socket (a traced descendant
/// of this process) and stamps it as that tracer's, before its own pass
/// gets there. Seen in about one run in six. The others run side by side.
static ALONE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Sends exactly `bytes` over a fresh TCP connection to `port`, from
/// syscalls only (safe after fork).
fn send_tcp(port: u16, bytes: usize) -> i32 {
    static BUF: [u8; 8192] = [7; 8192];
    // SAFETY: plain socket calls on our own fd.
    unsafe {
        let fd = support::connect_loopback(port);
        if fd < 0 {
            return 3;
        }
        let mut left = bytes;
        while left > 0 {
            let n = libc::send(fd, BUF.as_ptr().cast(), left.min(BUF.len()), 0);
            if n <= 0 {
                return 4;
            }
            left -= n as usize;
        }
        libc::close(fd);
    }
    0
}

fn cpu_ms(activity: &Value) -> f64 {
    activity["cpu"]["time_ms"].as_f64().unwrap()
}

#[test]
fn cpu_time_and_bytes_are_attributed_to_the_child() {
    let _beside = ALONE.read().unwrap_or_else(|e| e.into_inner());
    const BYTES: usize = 50_000;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // The per-syscall histogram is a syscall hook.
    let tracer = Tracer::start(&["--activity-interval", "1h", "--syscalls"]);

    let child = fork_child(|| {
        burn_cpu(300);
        // A syscall nothing else in the child makes, a known number of times.
        for _ in 0..GETPPIDS {
            // SAFETY: no arguments.
            unsafe { libc::getppid() };
        }
        send_tcp(port, BYTES)
    });
    let (mut peer, _) = listener.accept().unwrap();
    let mut got = Vec::new();
    peer.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), BYTES);
    let (status, kernel_cpu_ms) = wait_rusage(child);
    assert_eq!(status, 0);
    let records = tracer.stop();

    let exits = of_kind(&records, "process.exit", child);
    assert_eq!(exits.len(), 1);
    let account = &exits[0]["exit"]["account"];
    let traced_ms = account["cpu_ms"].as_f64().unwrap();
    eprintln!("child CPU: traced {traced_ms:.1} ms, kernel rusage {kernel_cpu_ms:.1} ms");
    assert!((traced_ms - kernel_cpu_ms).abs() <= kernel_cpu_ms * 0.10, "{traced_ms} vs {kernel_cpu_ms}");
    assert_eq!(account["tx_bytes"], BYTES, "{account}");
    assert_eq!(account["rx_bytes"], 0);

    // The activity record of the interval carries the same figures.
    let activity = of_kind(&records, "process.activity", child);
    assert_eq!(activity.len(), 1, "{activity:#?}");
    let a = &activity[0]["activity"];
    assert_eq!(a["network"]["tx_bytes"], BYTES);
    // ... and the remote endpoint it went to.
    assert_eq!(a["network"]["distinct_peers"], 1, "{}", a["network"]);
    assert_eq!(a["network"]["tcp_peers"], 1);
    let peer = &a["network"]["peers"][0];
    assert_eq!((peer["address"].as_str(), peer["port"].as_u64()), (Some("127.0.0.1"), Some(u64::from(port))));
    assert_eq!(peer["protocol"], "tcp");
    assert_eq!(peer["tx_bytes"], BYTES);
    assert!((cpu_ms(a) - kernel_cpu_ms).abs() <= kernel_cpu_ms * 0.10);
    // The histogram counts by syscall number, exactly.
    let top = a["syscalls"]["top"].as_array().unwrap();
    let getppid =
        top.iter().find(|s| s["name"] == "getppid").unwrap_or_else(|| panic!("no getppid in {top:?}"));
    assert_eq!((getppid["nr"].as_u64(), getppid["count"].as_u64()), (Some(110), Some(GETPPIDS)), "{top:?}");
}

const GETPPIDS: u64 = 500;

/// A process that lives for under a millisecond: the scheduler has often
/// not counted any of its run when its exit hook fires, so its account
/// depends on the switches after it. Summed over many, the exit accounts
/// match the kernel's own.
#[test]
fn short_lived_processes_have_their_whole_cpu_time_at_exit() {
    let _beside = ALONE.read().unwrap_or_else(|e| e.into_inner());
    let tracer = Tracer::start(&["--activity-interval", "1h"]);
    let (path, argv0) = (c"/bin/true", c"true");
    let argv = [argv0.as_ptr(), std::ptr::null()];
    let (mut pids, mut kernel_ms) = (Vec::new(), 0.0);
    for _ in 0..40 {
        // SAFETY: execv with NUL-terminated strings made before the fork.
        let pid = fork_child(|| unsafe {
            libc::execv(path.as_ptr(), argv.as_ptr());
            127
        });
        let (status, ms) = wait_rusage(pid);
        assert_eq!(status, 0);
        kernel_ms += ms;
        pids.push(pid);
    }
    let records = tracer.stop();
    let traced_ms: f64 = pids
        .iter()
        .map(|pid| {
            let exits = of_kind(&records, "process.exit", *pid);
            assert_eq!(exits.len(), 1, "pid {pid}");
            exits[0]["exit"]["account"]["cpu_ms"].as_f64().unwrap()
        })
        .sum();
    eprintln!("40 short-lived processes' CPU: traced {traced_ms:.2} ms, kernel rusage {kernel_ms:.2} ms");
    assert!(
        (traced_ms - kernel_ms).abs() <= kernel_ms * 0.25,
        "traced {traced_ms} ms against the kernel's {kernel_ms} ms"
    );
}

/// Eight processes pinned to CPU 0, each running `work`, under a tracer
/// with no activity report (which would empty the per-process table) for
/// an hour. Each one's CPU time at exit, traced and by rusage, and the
/// per-process table's size in a health record written after all ended.
fn eight_on_one_cpu(work: fn()) -> (Vec<(f64, f64)>, u64) {
    let mut tracer = Tracer::start(&["--activity-interval", "1h", "--health-interval", "1s"]);
    let pids: Vec<u32> = (0..8)
        .map(|_| {
            fork_child(|| {
                // SAFETY: syscalls on this process only.
                unsafe {
                    let mut one: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(0, &mut one);
                    if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &one) != 0 {
                        return 2;
                    }
                }
                work();
                0
            })
        })
        .collect();
    let kernel_ms: Vec<f64> = pids
        .iter()
        .map(|pid| {
            let (status, ms) = wait_rusage(*pid);
            assert_eq!(status, 0);
            ms
        })
        .collect();
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let ended_ns = now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64;
    let health = tracer.wait_for(std::time::Duration::from_secs(10), |r| {
        support::is_health(r, "running") && r["mono_ns"].as_u64().is_some_and(|t| t > ended_ns)
    });
    let records = tracer.stop();
    let accounts = pids
        .iter()
        .zip(kernel_ms)
        .map(|(pid, kernel_ms)| {
            let exits = of_kind(&records, "process.exit", *pid);
            assert_eq!(exits.len(), 1, "pid {pid}");
            (exits[0]["exit"]["account"]["cpu_ms"].as_f64().unwrap(), kernel_ms)
        })
        .collect();
    (accounts, health["health"]["kernel_tables"]["proc_stats"].as_u64().unwrap())
}

/// More processes than a CPU keeps slots for (four), taking turns on one
/// CPU: their slots are given away again and again. That time goes through
/// the CPU's log of evicted slots, not into the per-process table (one
/// insert each), and still adds up to what the kernel's rusage says.
#[test]
fn processes_taking_turns_on_one_cpu_keep_their_cpu_time() {
    let _alone = ALONE.write().unwrap_or_else(|e| e.into_inner());
    // 30 bursts of 2 ms, a sleep between: each wakes into a CPU the others
    // took turns on meanwhile.
    let (accounts, table) = eight_on_one_cpu(|| {
        for round in 1..=30 {
            burn_cpu(2 * round);
            // SAFETY: a plain syscall.
            unsafe { libc::usleep(500) };
        }
    });
    for (traced_ms, kernel_ms) in &accounts {
        eprintln!("traced {traced_ms:.1} ms, kernel rusage {kernel_ms:.1} ms");
        assert!((traced_ms - kernel_ms).abs() <= kernel_ms * 0.10, "{traced_ms} vs {kernel_ms}");
    }
    eprintln!("per-process table entries after 8 processes took turns: {table}");
    assert!(table < 8, "{table} entries: the evicted slots went to the table");
}

/// The same, switching far faster than user space empties the CPU's log
/// (every few hundred microseconds, not every 250 ms): a full log sends
/// the slots to the per-process table instead, and the time still adds up.
#[test]
fn cpu_time_adds_up_when_the_cpus_log_of_slots_is_full() {
    let _alone = ALONE.write().unwrap_or_else(|e| e.into_inner());
    // Each yield hands the CPU to one of the other seven, whose slot was
    // given away meanwhile.
    let (accounts, table) = eight_on_one_cpu(|| {
        for _ in 0..20_000 {
            // SAFETY: a plain syscall.
            unsafe { libc::sched_yield() };
        }
    });
    let (traced, kernel) = accounts.iter().fold((0.0, 0.0), |(a, b), (t, k)| (a + t, b + k));
    eprintln!(
        "8 processes yielding to each other: traced {traced:.1} ms, rusage {kernel:.1} ms; {table} table entries"
    );
    assert!((traced - kernel).abs() <= kernel * 0.10, "traced {traced} ms against the kernel's {kernel} ms");
    assert!(table >= 8, "{table} entries: the log never filled, so this tested nothing");
}

#[test]
fn a_session_rolls_up_into_one_tree_account() {
    let _beside = ALONE.read().unwrap_or_else(|e| e.into_inner());
    let tracer = Tracer::start(&["--activity-interval", "1h"]);
    let leader = fork_child(|| {
        // SAFETY: syscalls only.
        unsafe {
            if libc::setsid() < 0 {
                return 2;
            }
            let mut kids = [0; 2];
            for k in &mut kids {
                *k = libc::fork();
                if *k == 0 {
                    burn_cpu(150);
                    libc::_exit(0);
                }
            }
            burn_cpu(50);
            for k in kids {
                libc::waitpid(k, std::ptr::null_mut(), 0);
            }
        }
        0
    });
    let (status, own_ms) = wait_rusage(leader);
    assert_eq!(status, 0);
    let records = tracer.stop();

    let trees: Vec<&Value> =
        records.iter().filter(|r| r["kind"] == "tree.activity" && r["tree"]["sid"] == leader).collect();
    assert_eq!(trees.len(), 1, "{trees:#?}");
    let tree = &trees[0]["tree"];
    assert_eq!(tree["active_processes"], 3, "{tree}");
    // rusage of the leader covers its waited-for children too.
    let tree_ms = cpu_ms(&tree["activity"]);
    eprintln!("tree CPU: traced {tree_ms:.1} ms, kernel rusage (leader + children) {own_ms:.1} ms");
    assert!((tree_ms - own_ms).abs() <= own_ms * 0.10, "{tree_ms} vs {own_ms}");
    assert!(tree_ms >= 330.0, "two children of 150 ms and a leader of 50 ms: {tree_ms}");
}

#[test]
fn a_cgroup_rolls_up_into_one_container_account() {
    let _beside = ALONE.read().unwrap_or_else(|e| e.into_inner());
    let mount = tracer::process::cgroup::cgroup2_mount().expect("a cgroup2 mount");
    let name = format!("tracer-ledger-{}", std::process::id());
    let cg = mount.join(&name);
    std::fs::create_dir_all(&cg).unwrap();
    let tracer = Tracer::start(&["--activity-interval", "1h"]);

    let mut pipe = [0; 2];
    // SAFETY: pipe into a valid array.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    let child = fork_child(|| {
        let mut b = 0u8;
        // SAFETY: blocking read on our pipe until the parent moved us.
        unsafe { libc::read(pipe[0], (&raw mut b).cast(), 1) };
        burn_cpu(200);
        0
    });
    std::fs::write(cg.join("cgroup.procs"), child.to_string()).unwrap();
    // SAFETY: write one byte to release the child.
    unsafe { libc::write(pipe[1], b"g".as_ptr().cast(), 1) };
    let (status, child_ms) = wait_rusage(child);
    assert_eq!(status, 0);
    let records = tracer.stop();
    std::fs::remove_dir(&cg).unwrap();

    let containers: Vec<&Value> = records
        .iter()
        .filter(|r| {
            r["kind"] == "container.activity"
                && r["container"]["cgroup"].as_str().is_some_and(|c| c.ends_with(&name))
        })
        .collect();
    assert_eq!(containers.len(), 1, "{containers:#?}");
    let c = &containers[0]["container"];
    assert_eq!(c["active_processes"], 1);
    let ms = cpu_ms(&c["activity"]);
    assert!((ms - child_ms).abs() <= child_ms * 0.10, "{ms} vs {child_ms}");
}

#[test]
fn a_name_looked_up_through_a_local_resolver_names_the_peer() {
    let _beside = ALONE.read().unwrap_or_else(|e| e.into_inner());
    const NAME: &str = "svc.tracer.test";
    // A resolver of our own on a loopback address nothing else uses.
    let responder = dns_responder([127, 0, 0, 153]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let tracer = Tracer::start(&["--activity-interval", "1h"]);

    let query = dns_query(NAME);
    let child = fork_child(|| {
        let code = dns_lookup([127, 0, 0, 153], &query);
        if code != 0 {
            return code;
        }
        // The answer says 127.0.0.1: connect there.
        send_tcp(port, 1000)
    });
    let (mut peer, _) = listener.accept().unwrap();
    let mut got = Vec::new();
    peer.read_to_end(&mut got).unwrap();
    responder.join().unwrap();
    assert_eq!(wait_rusage(child).0, 0);
    let records = tracer.stop();

    let dns = of_kind(&records, "network.dns", child);
    assert_eq!(dns.len(), 2, "a query and its response: {dns:#?}");
    let q = dns.iter().find(|r| r["dns"]["direction"] == "query").unwrap();
    assert_eq!(q["dns"]["questions"][0]["name"], NAME);
    assert_eq!(q["dns"]["server"], "127.0.0.153");
    assert_eq!(q["dns"]["port"], 53);
    let r = dns.iter().find(|r| r["dns"]["direction"] == "response").unwrap();
    assert_eq!(r["dns"]["answers"][0]["data"], "127.0.0.1");
    assert_eq!(r["dns"]["rcode"], "NOERROR");

    let connects: Vec<&Value> = of_kind(&records, "network.connect", child)
        .into_iter()
        .filter(|c| c["connect"]["port"] == port)
        .collect();
    assert_eq!(connects.len(), 1);
    assert_eq!(connects[0]["connect"]["dns_name"], NAME);
    let activity = of_kind(&records, "process.activity", child);
    let peers = activity[0]["activity"]["network"]["peers"].as_array().unwrap();
    let tcp_peer = peers.iter().find(|p| p["port"] == port).unwrap();
    assert_eq!(tcp_peer["name"], NAME);
    assert_eq!(tcp_peer["tx_bytes"], 1000);
    assert_eq!(activity[0]["activity"]["network"]["udp_peers"], 1, "the resolver is a UDP peer");
}

/// A connection opened before the tracer started: its sockets are given
/// their owner at start (the kernel learns owners at connect and accept,
/// which it did not see), so the bytes sent afterwards are attributed to
/// the process and the peer, both ways.
#[test]
fn bytes_of_a_connection_opened_before_the_tracer_are_attributed() {
    let _alone = ALONE.write().unwrap_or_else(|e| e.into_inner());
    use std::io::Write as _;
    const BEFORE: usize = 3_000;
    const AFTER: usize = 70_000;
    const LATE: usize = 5_000;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    client.write_all(&[1; BEFORE]).unwrap();
    let mut buf = vec![0; BEFORE];
    server.read_exact(&mut buf).unwrap();

    let me = std::process::id();
    let tracer = Tracer::start(&["--pid", &me.to_string(), "--activity-interval", "1h"]);
    client.write_all(&[2; AFTER]).unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    server.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), AFTER);
    drop((client, server));
    // A new connection to the old listener, accepted without asking the
    // peer's address (as libuv does): it inherits the listener's owner.
    let mut late = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    late.write_all(&[3; LATE]).unwrap();
    drop(late);
    use std::os::fd::{AsRawFd as _, FromRawFd as _};
    // SAFETY: accept on our own listener; the descriptor is owned below.
    let fd = unsafe { libc::accept(listener.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut()) };
    assert!(fd >= 0);
    // SAFETY: a descriptor this process now owns.
    let mut accepted = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    let mut got = Vec::new();
    accepted.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), LATE);
    drop(accepted);
    let records = tracer.stop();

    let activity = of_kind(&records, "process.activity", me);
    let peers: Vec<Value> = activity
        .iter()
        .flat_map(|a| a["activity"]["network"]["peers"].as_array().cloned().unwrap_or_default())
        .filter(|p| p["address"] == "127.0.0.1")
        .collect();
    let to_server: u64 =
        peers.iter().filter(|p| p["port"] == port).map(|p| p["tx_bytes"].as_u64().unwrap()).sum();
    let from_client: u64 =
        peers.iter().filter(|p| p["port"] != port).map(|p| p["rx_bytes"].as_u64().unwrap()).sum();
    assert_eq!(to_server, (AFTER + LATE) as u64, "the client side: {peers:#?}");
    assert_eq!(from_client, (AFTER + LATE) as u64, "the accepted side: {peers:#?}");
    let health = support::final_health(&records);
    assert!(health["sockets_adopted"]["sockets"].as_u64().unwrap() >= 2, "{}", health["sockets_adopted"]);
}
