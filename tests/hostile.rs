//! Hostile strings from the traced processes: control characters, bytes that
//! are not UTF-8, a 1 MB argv, a 4 KiB path, a comm of fifteen newlines. Every
//! record must stay one line of JSON within the schema (the support code
//! checks both), and the bytes must come back exactly through the escaping
//! the README describes: non-UTF-8 bytes as `\xNN`, backslashes doubled in
//! such a string, the field listed in `process.escaped`.

mod support;

use std::{
    ffi::OsStr,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde_json::Value;
use support::{Tracer, final_health, fork_child, of_kind};

fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

/// A scratch directory removed on drop, even when the test fails.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tracer-hostile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn escaped(p: &Value) -> Vec<&str> {
    p["escaped"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

fn the_exec(records: &[Value], pid: u32) -> &Value {
    let execs = of_kind(records, "process.exec", pid);
    assert_eq!(execs.len(), 1, "one exec record for pid {pid}: {execs:#?}");
    execs[0]
}

/// Control characters are valid UTF-8 and pass as they are (JSON escapes
/// them); invalid bytes become `\xNN`, and then a literal backslash doubles.
#[test]
fn argv_with_control_and_invalid_bytes_round_trips() {
    let tracer = Tracer::start(&[]);
    let args: [&[u8]; 3] = [b"ctl\x1b[2J\r\n\x07\x7f", b"bad\xff\xfe\\x41", b"split\xe2\x82"];
    let mut child = Command::new("/bin/true").args(args.map(os)).spawn().unwrap();
    assert!(child.wait().unwrap().success());
    let records = tracer.stop();
    let p = &the_exec(&records, child.id())["process"];
    assert_eq!(p["argv"][0], "/bin/true", "{p}");
    assert_eq!(p["argv"][1], "ctl\x1b[2J\r\n\x07\x7f", "{p}");
    assert_eq!(p["argv"][2], "bad\\xff\\xfe\\\\x41", "{p}");
    assert_eq!(p["argv"][3], "split\\xe2\\x82", "{p}");
    assert_eq!(escaped(p), ["argv"], "{p}");
    assert!(p.get("argv_truncated").is_none(), "{p}");
}

/// 1 MiB of arguments (the kernel takes at most 128 KiB per argument): the
/// capture keeps the first 4095 bytes, flags the rest, and counts it all.
#[test]
fn a_1mb_argv_is_reported_truncated_with_its_size() {
    let tracer = Tracer::start(&[]);
    let big = vec![b'A'; 64 * 1024];
    let mut child = Command::new("/bin/true").args((0..16).map(|_| os(&big))).spawn().unwrap();
    assert!(child.wait().unwrap().success());
    let records = tracer.stop();
    let exec = the_exec(&records, child.id());
    let p = &exec["process"];
    assert_eq!(p["argv_truncated"], true, "{p}");
    let argv: Vec<&str> = p["argv"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(argv[0], "/bin/true");
    assert!(argv[1..].iter().all(|a| a.bytes().all(|b| b == b'A')), "only the arguments' bytes");
    let kept: usize = argv.iter().map(|a| a.len() + 1).sum();
    assert!(kept <= 4096, "at most the capture is reported: {kept} bytes");
    assert_eq!(exec["exec"]["argv_bytes"], 16 * (64 * 1024 + 1) + "/bin/true".len() + 1, "{exec}");
}

/// A comm of fifteen newlines (the most prctl keeps), and one of bytes that
/// are not UTF-8, seen in the exit records the kernel writes.
#[test]
fn hostile_comm_round_trips() {
    static NEWLINES: [u8; 16] = *b"\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\0";
    static INVALID: [u8; 8] = *b"\xff\xfe\x1b[2J\\\0";
    let tracer = Tracer::start(&[]);
    let set_name = |name: &'static [u8]| {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string from a static.
        fork_child(move || unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) })
    };
    let newlines = set_name(&NEWLINES);
    let invalid = set_name(&INVALID);
    for pid in [newlines, invalid] {
        assert_eq!(support::wait_rusage(pid).0, 0);
    }
    let records = tracer.stop();
    let exit = |pid| {
        let exits = of_kind(&records, "process.exit", pid);
        assert_eq!(exits.len(), 1, "{exits:#?}");
        exits[0]["process"].clone()
    };
    let p = exit(newlines);
    assert_eq!(p["comm"], "\n".repeat(15), "{p}");
    assert!(!escaped(&p).contains(&"comm"), "{p}");
    let p = exit(invalid);
    assert_eq!(p["comm"], "\\xff\\xfe\x1b[2J\\\\", "{p}");
    assert!(escaped(&p).contains(&"comm"), "{p}");
}

/// An executable whose path holds control characters and bytes that are not
/// UTF-8, and one whose 18-byte name the kernel cuts to a 15-byte comm in
/// the middle of a character.
#[test]
fn hostile_exe_paths_round_trip() {
    let dir = Scratch::new("exe");
    let mut name = dir.0.as_os_str().as_bytes().to_vec();
    name.extend_from_slice(b"/\x1b]0;pwn\x07\xff\ttrue");
    let hostile = PathBuf::from(os(&name));
    let cut = dir.0.join("ééééééééé");
    for path in [&hostile, &cut] {
        std::fs::copy("/bin/true", path).unwrap();
    }
    let tracer = Tracer::start(&[]);
    let mut a = Command::new(&hostile).spawn().unwrap();
    let mut b = Command::new(&cut).spawn().unwrap();
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    let records = tracer.stop();

    let exec = the_exec(&records, a.id());
    let p = &exec["process"];
    let shown = format!("{}/\x1b]0;pwn\x07\\xff\ttrue", dir.0.display());
    assert_eq!(p["exe"], shown.as_str(), "{p}");
    assert_eq!(p["argv"][0], shown.as_str(), "{p}");
    assert_eq!(exec["exec"]["filename"], shown.as_str(), "{exec}");
    assert_eq!(
        exec["exec"]["escaped"],
        serde_json::json!(["filename"]),
        "literal \\xNN and a raw byte differ: {exec}"
    );
    // The kernel's comm is the name's first 15 bytes.
    assert_eq!(p["comm"], "\x1b]0;pwn\x07\\xff\ttrue", "{p}");
    let mut fields = escaped(p);
    fields.sort_unstable();
    assert_eq!(fields, ["argv", "comm", "exe"], "{p}");

    let p = &the_exec(&records, b.id())["process"];
    assert_eq!(p["comm"], "ééééééé\\xc3", "{p}");
    assert_eq!(escaped(p), ["comm"], "{p}");
    assert_eq!(p["exe"], cut.to_str().unwrap(), "{p}");
}

/// A model-weights file opened through a 4 KiB path (PATH_MAX is 4096) is
/// past what the kernel copies, and is counted as lost; the same file
/// opened by a short relative name from inside the deep directory is seen,
/// its hostile name escaped.
#[test]
fn a_watched_file_through_a_4kib_path() {
    let dir = Scratch::new("path");
    let name: &[u8] = b"\xff\n\x1bweights.safetensors";
    // Components of at most 250 bytes (NAME_MAX is 255) up to 4070 in all.
    let target = 4070;
    let mut deep = dir.0.clone();
    loop {
        // Bytes left for "/component"s before "/name".
        let room = target - deep.as_os_str().len() - 1 - name.len();
        if room == 0 {
            break;
        }
        // Never leave room for a lone "/".
        let len = if room - 1 == 251 { 249 } else { (room - 1).min(250) };
        deep.push(os(&vec![b'd'; len]));
    }
    std::fs::create_dir_all(&deep).unwrap();
    let file = deep.join(os(name));
    std::fs::write(&file, b"not really weights").unwrap();
    assert_eq!(file.as_os_str().len(), target);

    // Exact open watching is a syscall hook.
    let tracer = Tracer::start(&["--syscalls"]);
    let script = "import os,sys\n\
                  full=os.fsencode(sys.argv[1])\n\
                  os.close(os.open(full,os.O_RDONLY))\n\
                  os.chdir(os.path.dirname(full))\n\
                  os.close(os.open(os.path.basename(full),os.O_RDONLY))\n";
    let mut child = Command::new("python3")
        .args([OsStr::new("-c"), OsStr::new(script), file.as_os_str()])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let records = tracer.stop();
    let opens = of_kind(&records, "file.open", child.id());
    assert_eq!(opens.len(), 1, "only the short name is copied: {opens:#?}");
    assert_eq!(opens[0]["file"]["path"], "\\xff\n\x1bweights.safetensors", "{}", opens[0]);
    assert_eq!(opens[0]["file"]["escaped"], serde_json::json!(["path"]), "{}", opens[0]);
    let losses = &final_health(&records)["kernel_losses"];
    assert!(losses["open_path_too_long"].as_u64().unwrap() >= 1, "{losses}");
}

/// Unix sockets named with control characters and invalid bytes (one in
/// the abstract namespace), and DNS-shaped junk sent to port 53: the
/// records stay valid, the tracer keeps running.
#[test]
fn hostile_socket_paths_and_dns_junk() {
    let dir = Scratch::new("sock");
    // Unix-socket connects come from the syscall hooks.
    let tracer = Tracer::start(&["--syscalls"]);
    let script = "import os,socket,sys\n\
                  d=os.fsencode(sys.argv[1])\n\
                  for name in [d+b'/\\x1b[31m\\n\\xff\\\\s', b'\\0abs\\n\\x1b\\xfe']:\n\
                  \x20   l=socket.socket(socket.AF_UNIX); l.bind(name); l.listen(1)\n\
                  \x20   c=socket.socket(socket.AF_UNIX); c.connect(name); c.close(); l.close()\n\
                  u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
                  junk=[os.urandom(300), b'\\x42\\x42\\x01\\x00\\x00\\x01'+b'\\x00'*6+b'\\x3f'+b'\\xc0'*63+b'\\x00',\n\
                  \x20     b'\\x42\\x42\\x01\\x00\\x00\\x01'+b'\\x00'*6+b'\\x07\\x1b[2J\\n\\xff\\xfe\\x00\\x00\\x01\\x00\\x01',\n\
                  \x20     b'\\x00'*12+b'\\xc0\\x0c']\n\
                  for j in junk: u.sendto(j,('127.0.0.1',53))\n";
    let mut child = Command::new("python3")
        .args([OsStr::new("-c"), OsStr::new(script), dir.0.as_os_str()])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let records = tracer.stop();
    let unix: Vec<&Value> = of_kind(&records, "network.connect", child.id())
        .into_iter()
        .filter(|r| r["connect"]["family"] == "unix")
        .collect();
    let paths: Vec<&str> = unix.iter().filter_map(|r| r["connect"]["path"].as_str()).collect();
    let named = format!("{}/\x1b[31m\n\\xff\\\\s", dir.0.display());
    assert!(paths.contains(&named.as_str()), "{paths:?}");
    assert!(paths.iter().any(|p| p.starts_with('@') && p.contains("abs\n\x1b")), "{paths:?}");
}

/// Undoes a mount when dropped, so a failing test leaves /proc as it was.
struct Unmount(std::ffi::CString);

impl Drop for Unmount {
    fn drop(&mut self) {
        // SAFETY: a NUL-terminated path; MNT_DETACH never blocks.
        unsafe { libc::umount2(self.0.as_ptr(), libc::MNT_DETACH) };
    }
}

/// `mount --bind <cover> /proc/<pid>`, as kits that hide a miner do.
fn hide(pid: u32, cover: &Path) -> Unmount {
    let cstr = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let (source, target) = (cstr(cover), cstr(Path::new(&format!("/proc/{pid}"))));
    // SAFETY: NUL-terminated paths; a bind mount takes no type or data.
    let r = unsafe {
        libc::mount(source.as_ptr(), target.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null())
    };
    assert_eq!(r, 0, "mount --bind: {}", std::io::Error::last_os_error());
    Unmount(target)
}

/// A process already running and hidden when the tracer starts: /proc
/// shows an empty directory, yet its records carry its pid and comm from
/// the kernel, say it is hidden, and the hiding counts as evidence.
#[test]
fn a_process_hidden_under_an_empty_dir_is_attributed_from_the_kernel() {
    let empty = Scratch::new("empty");
    hidden_process_is_attributed(&empty.0);
}

/// The same, hidden under another process's /proc entry: /proc/PID then
/// reads as that process (a `sleep`), whose identity must not be taken.
#[test]
fn a_process_hidden_under_another_is_attributed_from_the_kernel() {
    struct Decoy(std::process::Child);
    impl Drop for Decoy {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let decoy = Decoy(Command::new("sleep").arg("60").spawn().unwrap());
    hidden_process_is_attributed(Path::new(&format!("/proc/{}", decoy.0.id())));
}

fn hidden_process_is_attributed(cover: &Path) {
    let url = "stratum+tcp://pool.example:3333";
    let mut shell = Command::new("bash")
        .args(["-c", &format!("read x; exec /bin/sh -c 'sleep 0.3' {url}")])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = shell.id();
    let mounted = hide(pid, cover);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(!stat.starts_with(&format!("{pid} ")), "the mount hides the process: {stat}");
    let tracer = Tracer::start(&[]);
    use std::io::Write as _;
    writeln!(shell.stdin.take().unwrap(), "go").unwrap();
    assert!(shell.wait().unwrap().success());
    drop(mounted);
    let records = tracer.stop();

    let mine: Vec<&Value> = records.iter().filter(|r| r["process"]["pid"] == pid).collect();
    assert!(!mine.is_empty(), "records of the hidden process");
    for r in &mine {
        assert_eq!(r["process"]["hidden_from_proc"], true, "{r}");
    }
    let exec = mine
        .iter()
        .find(|r| r["kind"] == "process.exec" && r["process"]["comm"] == "sh")
        .unwrap_or_else(|| panic!("the shell's exec: {mine:#?}"));
    let p = &exec["process"];
    assert_eq!(p["exe"], "/bin/sh", "{p}");
    assert_eq!(p["argv"][3], url, "{p}");
    // Its children have their own /proc entries.
    let forks = of_kind(&records, "process.fork", pid);
    for f in forks {
        let child = f["fork"]["child_pid"].as_u64().unwrap() as u32;
        for r in records.iter().filter(|r| r["process"]["pid"] == child) {
            assert!(r["process"].get("hidden_from_proc").is_none(), "{r}");
        }
    }
    let verdict = records
        .iter()
        .filter(|r| r["kind"] == "classification")
        .map(|r| &r["classification"])
        .find(|c| c["evidence"].as_array().unwrap().iter().any(|e| e["pid"] == pid))
        .unwrap_or_else(|| panic!("a verdict on the hidden process"));
    assert_eq!(verdict["category"], "crypto_mining", "{verdict}");
    let indicators: Vec<&str> =
        verdict["evidence"].as_array().unwrap().iter().filter_map(|e| e["indicator"].as_str()).collect();
    assert!(indicators.contains(&"hidden-from-proc") && indicators.contains(&"stratum-url"), "{verdict}");
}

/// A process the tracer already knows that hides afterwards: the next
/// check of the table against /proc (every twelfth activity report) marks
/// it, and its later records say so.
#[test]
fn a_process_that_hides_while_traced_is_marked() {
    let empty = Scratch::new("later");
    let tracer = Tracer::start(&["--activity-interval", "1s"]);
    let mut shell = Command::new("bash")
        .args(["-c", "read x; exec /bin/sh -c 'sleep 0.3'"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = shell.id();
    // Seen before it hides (its exec record is read from the ring).
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mounted = hide(pid, &empty.0);
    std::thread::sleep(std::time::Duration::from_secs(14));
    use std::io::Write as _;
    writeln!(shell.stdin.take().unwrap(), "go").unwrap();
    assert!(shell.wait().unwrap().success());
    drop(mounted);
    let records = tracer.stop();
    let mine = of_kind(&records, "process.exec", pid);
    let before = mine.iter().find(|r| r["process"]["comm"] == "bash").expect("bash's exec");
    assert!(before["process"].get("hidden_from_proc").is_none(), "{before}");
    let after = mine.iter().find(|r| r["process"]["comm"] == "sh").expect("the shell's exec");
    assert_eq!(after["process"]["hidden_from_proc"], true, "{after}");
    assert_eq!(after["process"]["exe"], "/bin/sh", "{after}");
}

/// Hostile bytes are parsed by a tracer that is no longer full root: once
/// attached it keeps CAP_BPF, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH,
/// CAP_DAC_OVERRIDE and CAP_SYS_NICE (effective, permitted and bounding),
/// with no_new_privs, and goes on working.
#[test]
fn after_load_the_tracer_keeps_only_the_capabilities_it_needs() {
    let mut tracer = Tracer::start(&[]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", tracer.pid())).unwrap();
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or_else(|| panic!("{name}"))
    };
    let kept = format!("{:016x}", tracer::privileges::KEPT);
    assert_eq!(kept, "0000008000880006");
    for set in ["CapEff:", "CapPrm:", "CapBnd:"] {
        assert_eq!(field(set), kept, "{set} in\n{status}");
    }
    assert_eq!(
        (field("CapInh:"), field("CapAmb:"), field("NoNewPrivs:")),
        ("0000000000000000", "0000000000000000", "1")
    );
    // Still at work: a process started now is seen, with its exe (read
    // from another process's /proc entry).
    let mut child = Command::new("/bin/true").spawn().unwrap();
    let pid = child.id();
    assert!(child.wait().unwrap().success());
    let exec = tracer.wait_for(std::time::Duration::from_secs(10), |r| {
        r["kind"] == "process.exec" && r["process"]["pid"] == pid
    });
    assert!(exec["process"]["exe"].as_str().is_some_and(|e| e.ends_with("true")), "{exec}");
    drop(tracer.stop());
}

/// The miner string set, read from the rules file at run time: this test's
/// own binary must not carry the strings (a tracer beside it would scan it).
fn miner_strings() -> Vec<String> {
    let path = support::repo().join("rules/miner-strings.txt");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

/// A miner renamed after a system daemon, in a directory of its own, in a
/// session of its own: its name and its network say nothing, its code does.
#[test]
fn a_renamed_miner_binary_is_known_by_its_code() {
    let dir = Scratch::new("miner-code");
    let exe = dir.0.join("dbus-daemon-helper");
    let mut bytes = std::fs::read("/bin/sleep").unwrap();
    for s in miner_strings().iter().take(4) {
        bytes.push(0);
        bytes.extend_from_slice(s.as_bytes());
    }
    std::fs::write(&exe, &bytes).unwrap();
    std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let tracer = Tracer::start(&[]);
    let mut child = Command::new("setsid").arg(&exe).arg("2").spawn().unwrap();
    let pid = child.id();
    assert!(child.wait().unwrap().success());
    let records = tracer.stop();

    // setsid(1) runs first in the same process, then execs the miner.
    let found: Vec<&Value> = of_kind(&records, "process.executable", pid)
        .into_iter()
        .filter(|r| r["executable"]["path"] == exe.to_str().unwrap())
        .collect();
    assert_eq!(found.len(), 1, "{found:#?}");
    let e = &found[0]["executable"];
    assert_eq!(e["sha256"], sha256_of(&exe));
    assert_eq!(e["size"], bytes.len());
    assert_eq!(e["miner_strings"].as_array().map(Vec::len), Some(4), "{e}");
    // Its records from then on carry the hash: its exit, two seconds later.
    let exits = of_kind(&records, "process.exit", pid);
    assert_eq!(exits.len(), 1, "{exits:#?}");
    assert_eq!(exits[0]["process"]["exe_sha256"], sha256_of(&exe), "{}", exits[0]);
    let verdict = records
        .iter()
        .filter(|r| r["kind"] == "classification")
        .map(|r| &r["classification"])
        .find(|c| c["evidence"].as_array().unwrap().iter().any(|e| e["pid"] == pid))
        .unwrap_or_else(|| panic!("a verdict on the renamed miner"));
    assert_eq!(verdict["category"], "crypto_mining", "{verdict}");
    assert!(
        verdict["evidence"].as_array().unwrap().iter().any(|e| e["indicator"] == "exe-miner-code"),
        "{verdict}"
    );
    assert_eq!(final_health(&records)["executables"]["dropped"], 0);
}

/// Fileless: a binary written to a memfd and run from it is read through
/// /proc/PID/exe all the same, and named for what it is.
#[test]
fn a_program_run_from_a_memfd_is_identified() {
    let tracer = Tracer::start(&[]);
    let sleep = std::fs::read("/bin/sleep").unwrap();
    let child = fork_child(|| {
        // SAFETY: syscalls only, in the child.
        unsafe {
            let fd = libc::memfd_create(c"kworker".as_ptr(), 0);
            if fd < 0 || libc::write(fd, sleep.as_ptr().cast(), sleep.len()) != sleep.len() as isize {
                return 2;
            }
            let argv = [c"kworker".as_ptr(), c"1".as_ptr(), std::ptr::null()];
            let envp = [std::ptr::null()];
            libc::fexecve(fd, argv.as_ptr(), envp.as_ptr());
        }
        3
    });
    assert_eq!(support::wait_rusage(child).0, 0);
    let records = tracer.stop();

    let found = of_kind(&records, "process.executable", child);
    assert_eq!(found.len(), 1, "{found:#?}");
    let e = &found[0]["executable"];
    assert_eq!(
        (e["memfd"].as_bool(), e["path"].as_str()),
        (Some(true), Some("/memfd:kworker (deleted)")),
        "{e}"
    );
    assert_eq!(e["sha256"], sha256_of(Path::new("/bin/sleep")));
}
