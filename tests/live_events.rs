//! End-to-end: the real tracer binary, its programs loaded into the running
//! kernel (root), observing real child processes. Nothing is mocked.

mod support;

use std::{
    ffi::OsStr,
    io::Write as _,
    net::{TcpListener, UdpSocket},
    os::unix::ffi::OsStrExt as _,
    process::{Command, Stdio},
    time::Instant,
};

use serde_json::{Value, json};
use support::{Tracer, assert_common_fields, final_health, of_kind};

/// A loopback port on which nothing listens: bound, then released.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn connects_to(records: &[Value], pid: u32, port: u16) -> Vec<&Value> {
    of_kind(records, "network.connect", pid).into_iter().filter(|r| r["connect"]["port"] == port).collect()
}

fn bash(script: &str) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(script);
    cmd
}

#[test]
fn tcp_connect_over_ipv4_is_reported_once_with_the_child() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let tracer = Tracer::start(&[]);
    eprintln!("tracer ready after {:?}", tracer.ready_after);

    let mut child = bash(&format!("exec 3<>/dev/tcp/127.0.0.1/{port}")).spawn().unwrap();
    assert!(child.wait().unwrap().success());
    let records = tracer.stop();

    let connects = connects_to(&records, child.id(), port);
    assert_eq!(connects.len(), 1, "exactly one record per connection: {connects:#?}");
    let r = connects[0];
    assert_common_fields(r);
    assert_eq!(r["connect"]["family"], "inet");
    assert_eq!(r["connect"]["address"], "127.0.0.1");
    assert_eq!(r["connect"]["result"], "ok");
    assert_eq!(r["connect"]["source"], "socket");
    assert_eq!(r["connect"]["protocol"], "tcp");
    assert_eq!(r["connect"]["socket_type"], "stream");
    assert_eq!(r["process"]["exe"], "/usr/bin/bash", "{r}");
    assert_eq!(r["process"]["ppid"], std::process::id());
    assert_eq!(r["process"]["parent"]["pid"], std::process::id());
}

#[test]
fn tcp_connect_over_ipv6_is_reported() {
    let listener = TcpListener::bind("[::1]:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let tracer = Tracer::start(&[]);

    let mut child = bash(&format!("exec 3<>/dev/tcp/::1/{port}")).spawn().unwrap();
    assert!(child.wait().unwrap().success());
    let records = tracer.stop();

    let connects = connects_to(&records, child.id(), port);
    assert_eq!(connects.len(), 1, "{connects:#?}");
    assert_eq!(connects[0]["connect"]["family"], "inet6");
    assert_eq!(connects[0]["connect"]["address"], "::1");
    assert_eq!(connects[0]["connect"]["result"], "ok");
}

#[test]
fn refused_connect_is_reported_with_its_error() {
    let port = closed_port();
    let tracer = Tracer::start(&[]);

    let mut child =
        bash(&format!("exec 3<>/dev/tcp/127.0.0.1/{port}")).stderr(Stdio::null()).spawn().unwrap();
    assert!(!child.wait().unwrap().success());
    let records = tracer.stop();

    let connects = connects_to(&records, child.id(), port);
    assert_eq!(connects.len(), 1, "{connects:#?}");
    assert_eq!(connects[0]["connect"]["result"], "ECONNREFUSED");
    assert_eq!(connects[0]["connect"]["ret"], -111);
}

#[test]
fn exec_has_full_argv_and_exit_has_the_code() {
    let tracer = Tracer::start(&[]);
    let hostile = OsStr::from_bytes(b"\xff\x1b[31mred\nline");
    let mut child =
        Command::new("/bin/sh").args(["-c", "exit 7", "name", "two words"]).arg(hostile).spawn().unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(7));
    let long = "x".repeat(6000);
    let mut long_child = Command::new("/bin/sh").args(["-c", "exit 0", "sh", &long]).spawn().unwrap();
    assert!(long_child.wait().unwrap().success());
    let records = tracer.stop();

    let execs = of_kind(&records, "process.exec", child.id());
    assert_eq!(execs.len(), 1, "{execs:#?}");
    let exec = execs[0];
    assert_common_fields(exec);
    let argv = exec["process"]["argv"].as_array().unwrap();
    assert_eq!(argv[..4], ["/bin/sh", "-c", "exit 7", "name"].map(Value::from));
    assert_eq!(argv[4], "two words");
    // Invalid UTF-8 is escaped losslessly and flagged; control bytes stay
    // inside the JSON string.
    assert_eq!(argv[5], "\\xff\u{1b}[31mred\nline");
    assert_eq!(exec["process"]["escaped"], serde_json::json!(["argv"]));
    assert_eq!(exec["exec"]["filename"], "/bin/sh");
    assert!(exec["process"].get("argv_truncated").is_none());

    let exits = of_kind(&records, "process.exit", child.id());
    assert_eq!(exits.len(), 1, "{exits:#?}");
    assert_eq!(exits[0]["exit"]["code"], 7);
    assert_eq!(exits[0]["process"]["entity_id"], exec["process"]["entity_id"]);

    let long_exec = of_kind(&records, "process.exec", long_child.id());
    assert_eq!(long_exec.len(), 1);
    assert_eq!(long_exec[0]["process"]["argv_truncated"], true);
    let full = ["/bin/sh", "-c", "exit 0", "sh", &long].iter().map(|a| a.len() + 1).sum::<usize>();
    assert_eq!(long_exec[0]["exec"]["argv_bytes"], full);
}

#[test]
fn process_started_before_the_tracer_is_attributed() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!("read go; exec 3<>/dev/tcp/127.0.0.1/{port}");
    let mut child = bash(&script).stdin(Stdio::piped()).spawn().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
    let start_ticks = stat.rsplit(')').next().unwrap().split_whitespace().nth(19).unwrap().to_string();

    let tracer = Tracer::start(&[]);
    writeln!(child.stdin.take().unwrap(), "go").unwrap();
    assert!(child.wait().unwrap().success());
    let records = tracer.stop();

    let connects = connects_to(&records, child.id(), port);
    assert_eq!(connects.len(), 1, "{connects:#?}");
    let p = &connects[0]["process"];
    assert_eq!(p["exe"], "/usr/bin/bash");
    assert_eq!(p["argv"], serde_json::json!(["bash", "-c", script]));
    let id = p["entity_id"].as_str().unwrap();
    assert!(id.ends_with(&format!(":{start_ticks}:{}", child.id())), "{id} vs start {start_ticks}");
    assert_eq!(p["parent"]["pid"], std::process::id());
}

/// io_uring's IORING_OP_CONNECT never enters connect(2); the TCP state
/// change still shows it.
/// io_uring's connect, send and sendmsg never pass through the syscall
/// hooks: a program that does its networking through it must leave the
/// same connect, first-bytes and DNS records as one that uses syscalls.
#[test]
fn connect_first_bytes_and_dns_through_io_uring_are_reported() {
    const LOGIN: &[u8] = b"{\"id\":1,\"jsonrpc\":\"2.0\",\"method\":\"login\",\"params\":{\"login\":\"4A\",\"pass\":\"x\",\"agent\":\"XMRig/6.18.1\"}}\n";
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let responder = support::dns_responder([127, 0, 0, 154]);
    let query = support::dns_query("pool.uring.test");
    let tracer = Tracer::start(&[]);

    let sockaddr = |addr: [u8; 4], port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(addr) },
        sin_zero: [0; 8],
    };
    let mut ring = io_uring::IoUring::new(4).expect("io_uring_setup");
    let mut run = |op: io_uring::squeue::Entry| -> i32 {
        // SAFETY: every buffer an entry points at outlives its completion.
        unsafe { ring.submission().push(&op).unwrap() };
        ring.submit_and_wait(1).unwrap();
        ring.completion().next().unwrap().result()
    };
    // SAFETY: plain socket calls on fds this test owns.
    let (tcp, udp) = unsafe {
        (libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0), libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0))
    };
    assert!(tcp >= 0 && udp >= 0);
    let pool = sockaddr([127, 0, 0, 1], port);
    let len = size_of::<libc::sockaddr_in>() as u32;
    let connected =
        run(io_uring::opcode::Connect::new(io_uring::types::Fd(tcp), (&raw const pool).cast(), len).build());
    assert_eq!(connected, 0, "io_uring connect: {}", std::io::Error::from_raw_os_error(-connected));
    let sent = run(
        io_uring::opcode::Send::new(io_uring::types::Fd(tcp), LOGIN.as_ptr(), LOGIN.len() as u32).build()
    );
    assert_eq!(sent, LOGIN.len() as i32);
    // An unconnected UDP socket's query, with the server's address in the
    // message (sendmsg), as resolvers that ask several servers send.
    let server = sockaddr([127, 0, 0, 154], 53);
    let mut iov = libc::iovec { iov_base: query.as_ptr() as *mut _, iov_len: query.len() };
    // SAFETY: a zeroed msghdr is valid; its pointers are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw const server) as *mut _;
    msg.msg_namelen = len;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    let asked = run(io_uring::opcode::SendMsg::new(io_uring::types::Fd(udp), &raw const msg).build());
    assert_eq!(asked, query.len() as i32);
    let mut answer = [0u8; 512];
    let got = run(io_uring::opcode::Recv::new(io_uring::types::Fd(udp), answer.as_mut_ptr(), 512).build());
    assert!(got > 28, "no DNS answer: {got}");
    responder.join().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    // SAFETY: fds this test owns.
    unsafe {
        libc::close(tcp);
        libc::close(udp);
    }
    let records = tracer.stop();

    let me = std::process::id();
    let connects = connects_to(&records, me, port);
    assert_eq!(connects.len(), 1, "{connects:#?}");
    assert_eq!(connects[0]["connect"]["source"], "socket");
    assert_eq!(connects[0]["connect"]["result"], "ok");
    assert_eq!(connects[0]["connect"]["protocol"], "tcp");
    assert_eq!(connects[0]["connect"]["address"], "127.0.0.1");
    let first: Vec<_> = of_kind(&records, "network.first_bytes", me)
        .into_iter()
        .filter(|r| r["first_bytes"]["port"] == port)
        .collect();
    assert_eq!(first.len(), 1, "{first:#?}");
    assert_eq!(first[0]["first_bytes"]["protocol"], "xmrig-stratum", "{}", first[0]);
    assert_eq!(first[0]["first_bytes"]["bytes"], LOGIN.len());
    let dns: Vec<_> = of_kind(&records, "network.dns", me)
        .into_iter()
        .filter(|r| r["dns"]["server"] == "127.0.0.154")
        .map(|r| (r["dns"]["direction"].as_str().unwrap(), r["dns"]["questions"][0]["name"].clone()))
        .collect();
    assert_eq!(dns, [("query", "pool.uring.test".into()), ("response", "pool.uring.test".into())], "{dns:?}");
}

/// A consumer that stalls (SIGSTOP) while a traced process bursts: the kernel
/// drops what does not fit, counts it per kind, and the counts add up exactly.
#[test]
fn ring_buffer_overflow_is_counted_exactly() {
    const CONNECTS: u64 = 3000;
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    let script =
        format!("read go; for ((i=0; i<{CONNECTS}; i++)); do exec 3<>/dev/udp/127.0.0.1/{port}; done");
    let mut child = bash(&script).stdin(Stdio::piped()).spawn().unwrap();
    let pid = child.id().to_string();
    // One page of ring buffer holds ~19 connect records.
    let tracer = Tracer::start(&["--pid", &pid, "--ring-buffer-kib", "4"]);

    tracer.signal(libc::SIGSTOP);
    let burst = Instant::now();
    writeln!(child.stdin.take().unwrap(), "go").unwrap();
    assert!(child.wait().unwrap().success());
    let burst = burst.elapsed();
    tracer.signal(libc::SIGCONT);
    let records = tracer.stop();

    let received = connects_to(&records, child.id(), port).len() as u64;
    let health = final_health(&records);
    let dropped = support::not_delivered(health, "connect");
    eprintln!(
        "burst of {CONNECTS} connects in {burst:?} ({:.0}/s): received {received}, dropped {dropped}",
        CONNECTS as f64 / burst.as_secs_f64()
    );
    assert!(dropped > 0, "a stalled 4 KiB ring buffer must overflow: {health}");
    assert_eq!(received + dropped, CONNECTS, "sent = received + dropped; {health}");
    assert_eq!(
        health["dropped_total"].as_u64().unwrap(),
        health["dropped"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum::<u64>()
    );
}

#[test]
fn unix_socket_connect_is_reported_with_its_path() {
    let dir = std::env::temp_dir().join(format!("tracer-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("unix.sock");
    let _ = std::fs::remove_file(&path);
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    // Unix sockets pass no inet socket hook: their connects need --syscalls.
    let tracer = Tracer::start(&["--syscalls"]);
    let _stream = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let records = tracer.stop();
    let _ = std::fs::remove_dir_all(&dir);

    let connects: Vec<_> = of_kind(&records, "network.connect", std::process::id())
        .into_iter()
        .filter(|r| r["connect"]["path"] == path.to_str().unwrap())
        .collect();
    assert_eq!(connects.len(), 1, "{connects:#?}");
    assert_eq!(connects[0]["connect"]["family"], "unix");
    assert_eq!(connects[0]["connect"]["socket_type"], "stream");
    assert_eq!(connects[0]["connect"]["result"], "ok");
}

/// `--cgroup` takes the subtree, as a container's or a systemd unit's
/// processes live in cgroups below the one named (`init.scope`, a pod's
/// containers under its slice).
#[test]
fn cgroup_filter_keeps_only_tasks_in_that_cgroup_and_below() {
    let mount = tracer::process::cgroup::cgroup2_mount().expect("a cgroup2 mount");
    let cg = mount.join(format!("tracer-test-{}", std::process::id()));
    let below = cg.join("below");
    std::fs::create_dir_all(&below).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!("read go; exec 3<>/dev/tcp/127.0.0.1/{port}");
    let mut inside = bash(&script).stdin(Stdio::piped()).spawn().unwrap();
    let mut nested = bash(&script).stdin(Stdio::piped()).spawn().unwrap();
    let mut outside = bash(&script).stdin(Stdio::piped()).spawn().unwrap();
    std::fs::write(cg.join("cgroup.procs"), inside.id().to_string()).unwrap();
    std::fs::write(below.join("cgroup.procs"), nested.id().to_string()).unwrap();

    let tracer = Tracer::start(&["--cgroup", cg.to_str().unwrap()]);
    for child in [&mut inside, &mut nested, &mut outside] {
        writeln!(child.stdin.take().unwrap(), "go").unwrap();
        assert!(child.wait().unwrap().success());
    }
    let records = tracer.stop();
    // A cgroup2 directory's inode number is its cgroup id.
    let cg_id = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&cg).unwrap());
    std::fs::remove_dir(&below).unwrap();
    std::fs::remove_dir(&cg).unwrap();

    let nested_seen = connects_to(&records, nested.id(), port);
    assert_eq!(nested_seen.len(), 1, "a task in a cgroup below the filter: {nested_seen:#?}");
    assert!(nested_seen[0]["process"]["cgroup"].as_str().unwrap().ends_with("/below"), "{nested_seen:#?}");

    let seen = connects_to(&records, inside.id(), port);
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0]["process"]["cgroup_id"], cg_id, "the record carries the child's own cgroup");
    assert!(
        seen[0]["process"]["cgroup"]
            .as_str()
            .unwrap()
            .ends_with(&format!("tracer-test-{}", std::process::id()))
    );
    assert!(connects_to(&records, outside.id(), port).is_empty(), "a task outside the cgroup was reported");
}

/// `--pid`: the process, a descendant it already had when the tracer
/// started, and descendants forked later (two levels down) are traced;
/// nothing else is, not even this test process's own children.
#[test]
fn pid_filter_follows_descendants_and_excludes_the_rest() {
    let dir = support::scratch("pid-filter");
    let go = dir.join("go");
    let script = format!(
        "( while [ ! -e {go} ]; do sleep 0.05; done; exec /bin/true pid-filter-old ) &
         while [ ! -e {go} ]; do sleep 0.05; done
         bash -c '/bin/true pid-filter-grandchild; exit 0'
         wait",
        go = go.display()
    );
    let mut parent = bash(&script).spawn().unwrap();
    // The waiting subshell exists before the tracer starts.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let tracer = Tracer::start(&["--pid", &parent.id().to_string()]);
    let mut others: Vec<_> =
        (0..3).map(|_| Command::new("/bin/true").arg("pid-filter-other").spawn().unwrap()).collect();
    for o in &mut others {
        assert!(o.wait().unwrap().success());
    }
    std::fs::write(&go, b"").unwrap();
    assert!(parent.wait().unwrap().success());
    let records = tracer.stop();
    let execs_with = |marker: &str| {
        records
            .iter()
            .filter(|r| r["kind"] == "process.exec")
            .filter(|r| r["process"]["argv"].as_array().is_some_and(|a| a.iter().any(|x| x == marker)))
            .count()
    };
    assert_eq!(execs_with("pid-filter-old"), 1, "the descendant that predates the tracer");
    assert_eq!(execs_with("pid-filter-grandchild"), 1, "a descendant two levels down, forked later");
    assert_eq!(execs_with("pid-filter-other"), 0, "processes outside the tree");
    for o in &others {
        assert!(
            records.iter().all(|r| r["process"]["pid"] != o.id()),
            "a process outside the tree was reported"
        );
    }
    assert!(
        records.iter().all(|r| r["process"]["pid"] != std::process::id()),
        "the test process was reported"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn comm_filter_keeps_only_matching_threads() {
    let tracer = Tracer::start(&["--comm", "sh"]);
    let mut sh = Command::new("/bin/sh").args(["-c", "exit 0"]).spawn().unwrap();
    let mut other = bash("exit 0").spawn().unwrap();
    assert!(sh.wait().unwrap().success());
    assert!(other.wait().unwrap().success());
    let records = tracer.stop();

    assert_eq!(of_kind(&records, "process.exec", sh.id()).len(), 1);
    assert_eq!(of_kind(&records, "process.exit", sh.id()).len(), 1);
    assert!(records.iter().filter(|r| r["process"]["pid"] == other.id()).count() == 0);
    assert!(final_health(&records)["filtered_out"].as_u64().unwrap() > 0);
}

/// What a client says first on a new connection is captured once (write(2)
/// from a forked child) and recognised: a Stratum subscribe to a "pool" on a
/// non-mining port, with an innocuous agent name.
#[test]
fn first_bytes_of_a_new_connection_are_recognised() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut all = Vec::new();
        std::io::Read::read_to_end(&mut s, &mut all).unwrap();
        all
    });
    let tracer = Tracer::start(&[]);
    let first = b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[\"backup-agent/1.0\"]}\n";
    let second = b"{\"id\":2,\"method\":\"mining.authorize\",\"params\":[\"w\",\"x\"]}\n";
    let child = support::fork_child(|| {
        // SAFETY: syscalls only, on our own socket.
        unsafe {
            let fd = support::connect_loopback(port);
            if fd < 0 {
                return 2;
            }
            // From a buffer the child has written, as a real client's is: the
            // kernel side cannot fault in pages at syscall entry.
            let mut buf = [0u8; 128];
            buf[..first.len()].copy_from_slice(first);
            libc::write(fd, buf.as_ptr().cast(), first.len());
            buf[..second.len()].copy_from_slice(second);
            libc::write(fd, buf.as_ptr().cast(), second.len());
            libc::close(fd);
        }
        0
    });
    assert_eq!(support::wait_rusage(child).0, 0);
    let sent = reader.join().unwrap();
    assert_eq!(sent.len(), first.len() + second.len());
    let records = tracer.stop();

    let found = of_kind(&records, "network.first_bytes", child);
    assert_eq!(found.len(), 1, "only the first write of the connection: {found:#?}");
    let f = &found[0]["first_bytes"];
    assert_eq!(f["protocol"], "stratum", "{f}");
    assert_eq!(f["mining"], true);
    assert_eq!(f["detail"], "mining.subscribe");
    assert_eq!(f["agent"], "backup-agent/1.0");
    assert_eq!(f["port"], port);
    assert_eq!(f["bytes"], first.len());
}

/// A captured first message from tests/fixtures/first_bytes.
fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/../tests/fixtures/first_bytes/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// A Bitcoin `version` message: its 24-byte header (mainnet magic) and a
/// 100-byte payload, 124 bytes.
fn bitcoin_version() -> Vec<u8> {
    let mut version = vec![0xf9, 0xbe, 0xb4, 0xd9];
    version.extend_from_slice(b"version\0\0\0\0\0");
    version.extend_from_slice(&100u32.to_le_bytes());
    version.extend_from_slice(&[0x11, 0x22, 0x33, 0x44]);
    version.extend_from_slice(&[0x7f; 100]);
    version
}

/// A first message longer than one small record and split over sends is
/// joined whole: a real XMRig login (571 bytes) in two writes, a real
/// ClientHello (517 bytes) in one, and a Bitcoin `version` whose 24-byte
/// header and payload go in two sends, as Bitcoin Core sends them.
#[test]
fn whole_first_messages_are_gathered_across_sends() {
    let login = fixture("xmrig-6.18.1-login.txt");
    let hello = fixture("python-ssl-to-ip.bin");
    let version = bitcoin_version();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let reader = std::thread::spawn(move || {
        for _ in 0..3 {
            let (mut s, _) = listener.accept().unwrap();
            let mut all = Vec::new();
            std::io::Read::read_to_end(&mut s, &mut all).unwrap();
        }
    });
    let tracer = Tracer::start(&[]);
    let messages: [(&[u8], usize); 3] = [(&login, 200), (&hello, hello.len()), (&version, 24)];
    let child = support::fork_child(|| {
        for (message, split) in messages {
            // SAFETY: syscalls only, on our own socket.
            unsafe {
                let fd = support::connect_loopback(port);
                if fd < 0 {
                    return 2;
                }
                let buf = message.to_vec();
                libc::write(fd, buf.as_ptr().cast(), split);
                if split < buf.len() {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    libc::send(fd, buf[split..].as_ptr().cast(), buf.len() - split, 0);
                }
                libc::close(fd);
            }
        }
        0
    });
    assert_eq!(support::wait_rusage(child).0, 0);
    reader.join().unwrap();
    let records = tracer.stop();

    let found = of_kind(&records, "network.first_bytes", child);
    assert_eq!(found.len(), 3, "one record per connection: {found:#?}");
    let f = |i: usize| &found[i]["first_bytes"];
    assert_eq!((f(0)["protocol"].as_str(), f(0)["mining"].as_bool()), (Some("xmrig-stratum"), Some(true)));
    assert_eq!(f(0)["agent"], "XMRig/6.18.1 (Linux x86_64) libuv/1.44.1 gcc/5.4.0");
    assert_eq!(
        (f(0)["bytes"].as_u64(), f(0)["captured"].as_u64(), f(0)["sends"].as_u64()),
        (Some(571), Some(571), Some(2))
    );
    assert_eq!(f(1)["protocol"], "tls");
    assert_eq!((f(1)["captured"].as_u64(), f(1)["sends"].as_u64()), (Some(517), Some(1)));
    assert!(f(1)["tls"]["ja4"].as_str().is_some_and(|j| j.starts_with("t13i")), "{}", f(1));
    assert_eq!((f(2)["captured"].as_u64(), f(2)["sends"].as_u64()), (Some(124), Some(2)));
    assert_eq!(final_health(&records)["first_bytes_gaps"], 0);
}

/// Watched files (model weights here) are reported with the access mode;
/// ordinary opens are not.
#[test]
fn watched_file_opens_are_reported() {
    let dir = std::env::temp_dir().join(format!("tracer-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("model.safetensors");
    let other = dir.join("notes.txt");
    // Exact open watching is a syscall hook, attached with --syscalls.
    let tracer = Tracer::start(&["--syscalls"]);
    let script =
        format!("echo w > {m}; cat {m} > /dev/null; echo x > {o}", m = model.display(), o = other.display());
    let mut child = bash(&script).spawn().unwrap();
    assert!(child.wait().unwrap().success());
    let records = tracer.stop();
    std::fs::remove_dir_all(&dir).unwrap();

    let opens: Vec<&Value> = records
        .iter()
        .filter(|r| {
            r["kind"] == "file.open"
                && r["file"]["path"].as_str().is_some_and(|p| p.starts_with(dir.to_str().unwrap()))
        })
        .collect();
    let seen: Vec<(String, bool)> = opens
        .iter()
        .map(|r| (r["file"]["path"].as_str().unwrap().to_string(), r["file"]["write"].as_bool().unwrap()))
        .collect();
    let m = model.to_str().unwrap().to_string();
    assert_eq!(seen, vec![(m.clone(), true), (m, false)], "the .txt open is not reported");
}

/// A checkpoint saved the atomic way: written under a temporary name,
/// renamed into place. The record names both.
#[test]
fn a_rename_into_place_names_the_old_and_new_path() {
    let dir = support::scratch("rename");
    let (tmp, saved) = (dir.join("ckpt.partial"), dir.join("ckpt.safetensors"));
    std::fs::write(&tmp, b"w").unwrap();
    // A source path longer than the 255 bytes kept of it.
    let deep = dir.join("d".repeat(200));
    std::fs::create_dir_all(&deep).unwrap();
    let long_tmp = deep.join("p".repeat(100));
    std::fs::write(&long_tmp, b"w").unwrap();
    let tracer = Tracer::start(&["--syscalls"]);
    let mut child = Command::new("mv").arg(&tmp).arg(&saved).spawn().unwrap();
    assert!(child.wait().unwrap().success());
    let mut long = Command::new("mv").arg(&long_tmp).arg(dir.join("long.safetensors")).spawn().unwrap();
    assert!(long.wait().unwrap().success());
    let records = tracer.stop();
    std::fs::remove_dir_all(&dir).unwrap();
    let cut = of_kind(&records, "file.open", long.id());
    assert_eq!(cut.len(), 1, "{cut:#?}");
    assert_eq!(cut[0]["file"]["renamed_from_truncated"], true, "{}", cut[0]);
    assert_eq!(cut[0]["file"]["renamed_from"].as_str().map(str::len), Some(255));
    assert_eq!(final_health(&records)["truncated"]["renamed_from"], 1);
    let renames: Vec<&Value> = of_kind(&records, "file.open", child.id());
    assert_eq!(renames.len(), 1, "{renames:#?}");
    assert!(renames[0]["file"].get("renamed_from_truncated").is_none());
    let f = &renames[0]["file"];
    assert_eq!(
        (&f["renamed"], f["path"].as_str(), f["renamed_from"].as_str()),
        (&Value::Bool(true), saved.to_str(), tmp.to_str()),
        "{f}"
    );
}

/// With no syscall hook attached: an MSR device opened for writing (a node
/// with the MSR major, made for the test: the device hook sees the device
/// number before any driver is asked, so the open fails with ENXIO here and
/// is still seen), a write to vm.nr_hugepages (its own value back), model
/// files written, and read, and closed at once, and the model files a busy
/// process holds open or mapped.
#[test]
fn file_evidence_without_syscall_hooks() {
    let dir = support::scratch("held");
    let node = dir.join("msr-node");
    let c_node = std::ffi::CString::new(node.to_str().unwrap()).unwrap();
    // SAFETY: a path this test owns; makedev(202, 3) is cpu 3's MSR device.
    assert_eq!(unsafe { libc::mknod(c_node.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(202, 3)) }, 0);
    let (ckpt, weights) = (dir.join("ckpt.pt"), dir.join("model.gguf"));
    // Written and closed at once: only the written-file hook sees it.
    let quick = dir.join("saved.safetensors");
    // Read and closed at once (300 KiB: model-sized for the read hooks).
    let loaded = dir.join("loaded.onnx");
    std::fs::write(&loaded, vec![7u8; 300 * 1024]).unwrap();
    std::fs::write(&weights, [b"GGUF".as_slice(), &[0u8; 8188]].concat()).unwrap();
    let tracer = Tracer::start(&["--activity-interval", "1s"]);
    let script = format!(
        "import mmap,os,time\n\
         try: os.open('{node}',os.O_WRONLY)\nexcept OSError: pass\n\
         v=open('/proc/sys/vm/nr_hugepages').read()\nopen('/proc/sys/vm/nr_hugepages','w').write(v)\n\
         open('{quick}','wb').write(b'w')\nopen('{loaded}','rb').read()\n\
         w=open('{ckpt}','wb')\nimport ctypes\nlibc=ctypes.CDLL(None)\nlibc.mmap.restype=ctypes.c_void_p\n\
         libc.mmap.argtypes=[ctypes.c_void_p,ctypes.c_size_t,ctypes.c_int,ctypes.c_int,ctypes.c_int,ctypes.c_long]\n\
         fd=os.open('{weights}',os.O_RDONLY)\np=libc.mmap(None,8192,mmap.PROT_READ,mmap.MAP_SHARED,fd,0)\nos.close(fd)\n\
         t=time.time()\nwhile time.time()-t<2.5: pass\n",
        node = node.display(),
        quick = quick.display(),
        loaded = loaded.display(),
        ckpt = ckpt.display(),
        weights = weights.display()
    );
    let mut child = Command::new("python3").args(["-c", &script]).stdin(Stdio::null()).spawn().unwrap();
    assert!(child.wait().unwrap().success());
    let records = tracer.stop();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(final_health(&records)["syscall_hooks"], 0, "{}", final_health(&records));
    let mut seen: Vec<(String, bool, String)> = of_kind(&records, "file.open", child.id())
        .iter()
        .map(|r| {
            let f = &r["file"];
            (
                f["path"].as_str().unwrap().into(),
                f["write"].as_bool().unwrap(),
                f["source"].as_str().unwrap().into(),
            )
        })
        .collect();
    seen.sort();
    let mut want = vec![
        ("/dev/cpu/3/msr".to_string(), true, "device".to_string()),
        ("/proc/sys/vm/nr_hugepages".into(), true, "sysctl".into()),
        (ckpt.to_str().unwrap().into(), true, "fd".into()),
        (weights.to_str().unwrap().into(), false, "map".into()),
        ("saved.safetensors".into(), true, "write".into()),
        ("loaded.onnx".into(), false, "read".into()),
    ];
    want.sort();
    assert_eq!(seen, want);
}

/// A checkpoint saved as safetensors saves it: written under a temporary
/// name (`.tmpXXXXXX`, Rust's tempfile) and renamed into place. With no
/// syscall hook, the written-file hook sees only the temporary name; the
/// file is found again by its inode at the next activity report and
/// reported under its final name, with the name it was written as.
#[test]
fn a_checkpoint_renamed_into_place_is_seen_under_its_final_name() {
    let dir = support::scratch("renamed-into-place");
    let (temp, saved) = (dir.join(".tmpAbC123"), dir.join("model.safetensors"));
    let tracer = Tracer::start(&["--activity-interval", "1s"]);
    let script = format!(
        "import os,time\nf=open('{temp}','wb')\nf.write(b'w'*4096)\nf.close()\nos.rename('{temp}','{saved}')\n\
         t=time.time()\nwhile time.time()-t<2.5: pass\n",
        temp = temp.display(),
        saved = saved.display()
    );
    let mut child = Command::new("python3").args(["-c", &script]).stdin(Stdio::null()).spawn().unwrap();
    assert!(child.wait().unwrap().success());
    let records = tracer.stop();
    std::fs::remove_dir_all(&dir).unwrap();
    let opens = of_kind(&records, "file.open", child.id());
    assert_eq!(opens.len(), 1, "{opens:#?}");
    let f = &opens[0]["file"];
    assert_eq!(
        (f["path"].as_str(), f["renamed_from"].as_str(), &f["renamed"], &f["write"], &f["source"]),
        (saved.to_str(), temp.to_str(), &json!(true), &json!(true), &json!("write")),
        "{f}"
    );
    let counts = &final_health(&records)["temp_files"];
    assert!(counts["renamed_to_model"].as_u64() >= Some(1), "{counts}");
}

/// What peers send first on connections the process accepted, whether the
/// message arrives before the accept (queued on the new socket) or after:
/// a real XMRig login (this process would be a pool or a proxy) and a
/// Bitcoin `version` in two sends. Each is reported once, inbound, for the
/// process that listens; the connecting child's own records stay outbound.
#[test]
fn the_peers_first_message_on_accepted_connections_is_reported() {
    let login = fixture("xmrig-6.18.1-login.txt");
    let version = bitcoin_version();
    let tracer = Tracer::start(&[]);
    // Bound while the tracer runs: its connections inherit this process.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut got, mut peers) = (Vec::new(), Vec::new());
        // The first peer's login is queued before it is accepted.
        std::thread::sleep(std::time::Duration::from_millis(300));
        for _ in 0..2 {
            let (mut s, peer) = listener.accept().unwrap();
            let mut all = Vec::new();
            std::io::Read::read_to_end(&mut s, &mut all).unwrap();
            got.push(all.len());
            peers.push(peer.port());
        }
        (got, peers)
    });
    let messages: [(&[u8], usize, u64); 2] = [(&login, 200, 0), (&version, 24, 600)];
    let child = support::fork_child(|| {
        for (message, split, wait_ms) in messages {
            // SAFETY: syscalls only, on our own socket.
            unsafe {
                let fd = support::connect_loopback(port);
                if fd < 0 {
                    return 2;
                }
                // The second peer speaks once it has been accepted.
                std::thread::sleep(std::time::Duration::from_millis(wait_ms));
                let buf = message.to_vec();
                libc::write(fd, buf.as_ptr().cast(), split);
                std::thread::sleep(std::time::Duration::from_millis(20));
                libc::send(fd, buf[split..].as_ptr().cast(), buf.len() - split, 0);
                libc::close(fd);
            }
        }
        0
    });
    assert_eq!(support::wait_rusage(child).0, 0);
    let (got, peers) = server.join().unwrap();
    assert_eq!(got, [login.len(), version.len()]);
    let records = tracer.stop();

    // This process's other tests' listeners may be stamped too: the
    // records of these two connections are those from the child's ports.
    let me = std::process::id();
    let inbound: Vec<&Value> = of_kind(&records, "network.first_bytes", me)
        .into_iter()
        .filter(|r| r["first_bytes"]["direction"] == "inbound")
        .filter(|r| r["first_bytes"]["port"].as_u64().is_some_and(|p| peers.contains(&(p as u16))))
        .collect();
    assert_eq!(
        inbound.len(),
        2,
        "one per accepted connection (peers {peers:?}): {:#?} {}",
        records
            .iter()
            .filter(|r| r["kind"] == "network.first_bytes")
            .map(|r| (
                &r["process"]["pid"],
                &r["first_bytes"]["direction"],
                &r["first_bytes"]["port"],
                &r["first_bytes"]["bytes"],
                &r["first_bytes"]["sends"]
            ))
            .collect::<Vec<_>>(),
        final_health(&records)
    );
    let f = |i: usize| &inbound[i]["first_bytes"];
    assert_eq!((f(0)["protocol"].as_str(), f(0)["mining"].as_bool()), (Some("xmrig-stratum"), Some(true)));
    assert_eq!((f(0)["bytes"].as_u64(), f(0)["sends"].as_u64()), (Some(571), Some(2)), "{}", f(0));
    assert_eq!((f(1)["captured"].as_u64(), f(1)["sends"].as_u64()), (Some(124), Some(2)), "{}", f(1));
    assert_eq!(f(0)["address"], "127.0.0.1");
    let own = of_kind(&records, "network.first_bytes", child);
    assert_eq!(own.len(), 2, "{own:#?}");
    assert!(own.iter().all(|r| r["first_bytes"]["direction"] == "outbound"), "{own:#?}");
}

/// A UDP socket's first datagram each way is reported, whole, for the
/// process that owns the socket, however the socket came to be owned: a
/// server bound while the tracer runs (it receives before it sends), a
/// client sending unconnected (sendto) and one connected first. The bytes
/// are real: a discv4 `ping` answered by a `pong` (@ethereumjs/devp2p) and
/// a libp2p QUIC Initial (@chainsafe/libp2p-quic). Later datagrams are not
/// reported.
#[test]
fn first_datagrams_are_reported_both_ways() {
    let (ping, pong) = (
        fixture("ethereumjs-devp2p-10.0.0-discv4-ping.bin"),
        fixture("ethereumjs-devp2p-10.0.0-discv4-pong.bin"),
    );
    let quic = fixture("chainsafe-libp2p-quic-2.1.1-quic-initial-libp2p.bin");
    let tracer = Tracer::start(&[]);
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let reply = pong.clone();
    let served = std::thread::spawn(move || {
        let mut buf = vec![0u8; 2048];
        let mut peers = Vec::new();
        // The ping (answered), a second datagram, then the QUIC Initial.
        for i in 0..3 {
            let (n, peer) = server.recv_from(&mut buf).unwrap();
            if i == 0 {
                server.send_to(&reply, peer).unwrap();
                server.send_to(b"a second datagram", peer).unwrap();
            }
            peers.push((n, peer.port()));
        }
        peers
    });
    let discovery = support::fork_child(move || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(&ping, ("127.0.0.1", port)).unwrap();
        let mut buf = [0u8; 2048];
        let n = s.recv(&mut buf).unwrap();
        let _ = s.recv(&mut buf);
        s.send_to(b"and a second one", ("127.0.0.1", port)).unwrap();
        i32::from(n != 149)
    });
    assert_eq!(support::wait_rusage(discovery).0, 0);
    let dialer = support::fork_child(move || {
        // SAFETY: syscalls on our own socket; a connected UDP socket.
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.connect(("127.0.0.1", port)).unwrap();
        i32::from(s.send(&quic).unwrap() != 1200)
    });
    assert_eq!(support::wait_rusage(dialer).0, 0);
    let peers = served.join().unwrap();
    assert_eq!(peers.iter().map(|p| p.0).collect::<Vec<_>>(), [127, 16, 1200]);
    let records = tracer.stop();

    let udp = |pid: u32| -> Vec<&Value> {
        of_kind(&records, "network.first_bytes", pid)
            .into_iter()
            .filter(|r| r["first_bytes"]["transport"] == "udp")
            .filter(|r| {
                let p = r["first_bytes"]["port"].as_u64().unwrap_or(0) as u16;
                p == port || peers.iter().any(|(_, peer)| *peer == p)
            })
            .collect()
    };
    let summary = |rs: &[&Value]| -> Vec<(String, String, String, u64)> {
        let mut v: Vec<_> = rs
            .iter()
            .map(|r| {
                let f = &r["first_bytes"];
                (
                    f["direction"].as_str().unwrap_or("?").to_string(),
                    f["protocol"].as_str().unwrap_or("?").to_string(),
                    f["detail"].as_str().unwrap_or("").to_string(),
                    f["bytes"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        v.sort();
        v
    };
    let s = |d: &str, p: &str, detail: &str, n: u64| (d.to_string(), p.to_string(), detail.to_string(), n);
    assert_eq!(
        summary(&udp(discovery)),
        [s("inbound", "ethereum-discv4", "pong", 149), s("outbound", "ethereum-discv4", "ping", 127)],
        "{:#?}",
        udp(discovery)
    );
    let dial = udp(dialer);
    assert_eq!(summary(&dial), [s("outbound", "libp2p", "quic-v1", 1200)], "{dial:#?}");
    assert_eq!(dial[0]["first_bytes"]["tls"]["alpn"], json!(["libp2p"]));
    assert_eq!(dial[0]["first_bytes"]["captured"], 1200);
    // The server's socket: the ping it received first, the pong it sent.
    let me = std::process::id();
    assert_eq!(
        summary(&udp(me)),
        [s("inbound", "ethereum-discv4", "ping", 127), s("outbound", "ethereum-discv4", "pong", 149)],
        "{:#?}",
        udp(me)
    );
}
