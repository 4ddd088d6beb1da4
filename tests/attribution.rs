//! Attribution under the conditions the review found wrong: sessions made
//! inside pid namespaces, fds reused without close(2), `--pid` on a process
//! that already has children, opens through open(2), connects whose
//! address is not resident, and CPU time across thread churn.

mod support;

use std::{
    net::TcpListener,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use support::{Tracer, of_kind};

fn python(script: &str) -> Command {
    let mut c = Command::new("python3");
    c.args(["-c", script]).stdin(Stdio::null());
    c
}

/// `unshare --pid --fork setsid`: setsid returns 1 inside the namespace;
/// the session is the leader's host pid, not host session 1 (systemd's).
#[test]
fn a_session_made_in_a_pid_namespace_has_its_host_id() {
    let tracer = Tracer::start(&[]);
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "setsid", "sh", "-c", "sleep 0.3; exec sleep 0.2"])
        .status()
        .unwrap();
    assert!(out.success());
    let records = tracer.stop();
    let sleeps: Vec<&Value> = records
        .iter()
        .filter(|r| {
            r["kind"] == "process.exec" && r["process"]["comm"] == "sleep" && r["process"]["argv"][1] == "0.2"
        })
        .collect();
    assert_eq!(sleeps.len(), 1, "{sleeps:#?}");
    let p = &sleeps[0]["process"];
    // exec keeps the pid: the shell that setsid ran is the leader.
    assert_ne!(p["session"], 1, "a namespaced session merged into host session 1: {p}");
    assert_eq!(p["session"], p["pid"], "the leader's host pid is the session: {p}");
}

/// A connected socket's fd replaced with a file by dup2 (no close(2)): the
/// first write to the reused fd is not first bytes to the old peer. The
/// socket hooks read first bytes from the socket's packets, so the file
/// write cannot be taken for them; the syscall hooks (the fallback) check
/// the fd still holds the socket, and count the stale fd.
#[test]
fn a_reused_fd_is_not_reported_as_first_bytes() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accept = std::thread::spawn(move || drop(listener.accept()));
    let file = std::env::temp_dir().join(format!("tracer-dup2-{}", std::process::id()));
    let tracer = Tracer::start(&[]);
    let script = format!(
        "import os,socket\ns=socket.create_connection(('127.0.0.1',{port}))\n\
         f=os.open('{f}',os.O_WRONLY|os.O_CREAT,0o600)\nos.dup2(f,s.fileno())\n\
         os.write(s.fileno(),b'not-a-socket: a log line')\n",
        f = file.display()
    );
    let mut child = python(&script).spawn().unwrap();
    assert!(child.wait().unwrap().success());
    accept.join().unwrap();
    let records = tracer.stop();
    let _ = std::fs::remove_file(&file);
    let stale = of_kind(&records, "network.first_bytes", child.id());
    assert!(stale.is_empty(), "a file write reported as first bytes: {stale:#?}");
}

/// `--pid` on a shell whose children already run: they are traced too.
#[test]
fn pid_filter_includes_existing_descendants() {
    let mut shell = Command::new("sh")
        .args(["-c", "sleep 2 & sleep 2 & read x; wait"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let tracer = Tracer::start(&["--pid", &shell.id().to_string()]);
    drop(shell.stdin.take());
    assert!(shell.wait().unwrap().success());
    let records = tracer.stop();
    let exits: Vec<&Value> =
        records.iter().filter(|r| r["kind"] == "process.exit" && r["process"]["comm"] == "sleep").collect();
    assert_eq!(exits.len(), 2, "both sleeps, children from before the tracer, exit traced: {exits:#?}");
}

/// Opens through open(2) (musl's open on x86_64) and openat2 are watched
/// like openat.
#[test]
fn open_and_openat2_are_watched() {
    let dir = std::env::temp_dir().join(format!("tracer-open2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b) = (dir.join("a.safetensors"), dir.join("b.gguf"));
    let tracer = Tracer::start(&["--syscalls"]);
    // SYS_open = 2, SYS_openat2 = 437 on x86_64; struct open_how {flags, mode, resolve}.
    let script = format!(
        "import ctypes,os,struct\nlibc=ctypes.CDLL(None,use_errno=True)\n\
         fd=libc.syscall(2,b'{a}',os.O_WRONLY|os.O_CREAT,0o600)\nassert fd>=0,ctypes.get_errno()\n\
         how=ctypes.create_string_buffer(struct.pack('QQQ',os.O_WRONLY|os.O_CREAT,0o600,0))\n\
         fd=libc.syscall(437,-100,b'{b}',how,24)\nassert fd>=0,ctypes.get_errno()\n",
        a = a.display(),
        b = b.display()
    );
    let mut child = python(&script).spawn().unwrap();
    assert!(child.wait().unwrap().success());
    let records = tracer.stop();
    std::fs::remove_dir_all(&dir).unwrap();
    let opened: Vec<&str> = of_kind(&records, "file.open", child.id())
        .iter()
        .filter_map(|r| r["file"]["path"].as_str())
        .collect();
    for f in [&a, &b] {
        assert!(opened.contains(&f.to_str().unwrap()), "{} not reported: {opened:?}", f.display());
    }
}

/// A UDP connect whose sockaddr sits in a file mapping not yet faulted in:
/// the kernel's own copy faults it in and the connect succeeds, where a
/// syscall hook's non-faulting read of the caller's memory fails (the
/// fallback counts that loss). The connect hook reads the kernel's copy:
/// the connect is reported.
#[test]
fn a_connect_whose_address_is_not_resident_is_reported() {
    let file = std::env::temp_dir().join(format!("tracer-sockaddr-{}", std::process::id()));
    let tracer = Tracer::start(&[]);
    // The mapping's address from Python's mmap without touching it.
    let script = format!(
        "import ctypes,mmap,os,socket,struct\n\
         addr=struct.pack('<HH4s8x',socket.AF_INET,socket.htons(9),socket.inet_aton('127.0.0.1'))\n\
         fd=os.open('{f}',os.O_RDWR|os.O_CREAT|os.O_TRUNC,0o600)\nos.write(fd,addr+bytes(4096-len(addr)))\n\
         os.fsync(fd)\nos.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED)\n\
         libc=ctypes.CDLL(None,use_errno=True)\nlibc.mmap.restype=ctypes.c_void_p\n\
         libc.mmap.argtypes=[ctypes.c_void_p,ctypes.c_size_t,ctypes.c_int,ctypes.c_int,ctypes.c_int,ctypes.c_long]\n\
         p=libc.mmap(None,4096,mmap.PROT_READ,mmap.MAP_PRIVATE,fd,0)\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         rc=libc.connect(s.fileno(),ctypes.c_void_p(p),16)\nassert rc==0,ctypes.get_errno()\n",
        f = file.display()
    );
    let mut child = python(&script).spawn().unwrap();
    assert!(child.wait().unwrap().success());
    let records = tracer.stop();
    let _ = std::fs::remove_file(&file);
    let connects = of_kind(&records, "network.connect", child.id());
    let to_9: Vec<_> = connects.iter().filter(|c| c["connect"]["port"] == 9).collect();
    assert_eq!(to_9.len(), 1, "{connects:#?}");
    assert_eq!(to_9[0]["connect"]["source"], "socket");
    assert_eq!(to_9[0]["connect"]["address"], "127.0.0.1");
}

/// Thread churn: each thread's runtime entry goes when the thread does, so
/// the table holds live threads only (it once kept every thread ever seen,
/// and a reused tid inherited a dead thread's runtime).
#[test]
fn thread_runtime_entries_leave_with_their_threads() {
    const THREADS: usize = 4000;
    let mut tracer = Tracer::start(&["--health-interval", "300ms"]);
    let first = tracer.wait_for(Duration::from_secs(30), |r| support::is_health(r, "running"));
    let before = first["health"]["kernel_tables"]["last_runtime"].as_u64().unwrap();
    for _ in 0..THREADS {
        // Each switches out at least once (it sleeps), so it gets an entry.
        std::thread::spawn(|| std::thread::sleep(Duration::from_micros(50))).join().unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let done = first["health"]["uptime_s"].as_f64().unwrap() + 0.5;
    let after = tracer.wait_for(Duration::from_secs(30), |r| {
        support::is_health(r, "running") && r["health"]["uptime_s"].as_f64().unwrap() > done
    });
    let after = after["health"]["kernel_tables"]["last_runtime"].as_u64().unwrap();
    tracer.stop();
    eprintln!("last_runtime entries: {before} before {THREADS} short threads, {after} after");
    assert!(after < before + (THREADS as u64) / 4, "{after} entries after {THREADS} threads came and went");
}
