//! The JSON Schema of the native records (schema/tracer.v1.schema.json)
//! against real records: the committed captures, and a live capture whose
//! workload makes the tracer write every record kind. Records broken on
//! purpose must fail, so the schema is known to check something.

mod support;

use std::{
    collections::BTreeMap,
    ffi::CString,
    io::Read as _,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use serde_json::{Map, Value, json};
use support::{
    READY_TIMEOUT, burn_cpu, dns_lookup, dns_query, dns_responder, fork_child, repo, validator, violations,
    wait_rusage,
};

/// Every record kind, its body object, and one field that body requires.
const KINDS: [(&str, &str, &str); 18] = [
    ("process.exec", "exec", "filename"),
    ("process.fork", "fork", "child_pid"),
    ("process.exit", "exit", "core_dumped"),
    ("network.connect", "connect", "result"),
    ("network.dns", "dns", "direction"),
    ("network.first_bytes", "first_bytes", "protocol"),
    ("network.listen", "listen", "port"),
    ("file.open", "file", "path"),
    ("process.executable", "executable", "inode"),
    ("gpu.open", "gpu", "first_op"),
    ("gpu.activity", "gpu", "summary"),
    ("process.activity", "activity", "cpu"),
    ("tree.activity", "tree", "sid"),
    ("container.activity", "container", "cgroup"),
    ("tracer.health", "health", "status"),
    ("classification", "classification", "category"),
    ("tracer.capture", "capture", "argv"),
    ("host.summary", "summary", "categories"),
];

/// Not the 127.0.0.153 of tests/ledger.rs, so the two can run at once.
const RESOLVER: [u8; 4] = [127, 0, 0, 154];
const NAME: &str = "pool.schema.test";

fn read_records(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{}:{}: not JSON ({e})", path.display(), i + 1))
        })
        .collect()
}

fn first_of_each_kind(records: &[Value]) -> Vec<&Value> {
    KINDS.iter().filter_map(|(kind, ..)| records.iter().find(|r| r["kind"] == *kind)).collect()
}

/// Copies of a valid record, each broken in one way the schema must catch.
fn mutants(record: &Value) -> Vec<(String, Value)> {
    let kind = record["kind"].as_str().unwrap_or_default();
    let &(_, body, field) =
        KINDS.iter().find(|k| k.0 == kind).unwrap_or_else(|| panic!("not a known kind: {record}"));
    let other = if kind == "process.fork" { "process.exec" } else { "process.fork" };
    let second_body = if body == "health" { "exec" } else { "health" };
    let mut out = Vec::new();
    let mut edit = |what: String, f: &dyn Fn(&mut Map<String, Value>)| {
        let mut r = record.clone();
        f(r.as_object_mut().expect("records are objects"));
        out.push((format!("{kind} {what}"), r));
    };
    edit("with an unknown kind".into(), &|r| {
        r.insert("kind".into(), "process.spawn".into());
    });
    edit(format!("relabelled {other}"), &|r| {
        r.insert("kind".into(), other.into());
    });
    edit("without time".into(), &|r| {
        r.remove("time");
    });
    edit("with mono_ns as a string".into(), &|r| {
        r.insert("mono_ns".into(), "1".into());
    });
    edit(format!("without {body}"), &|r| {
        r.remove(body);
    });
    edit(format!("without {body}.{field}"), &|r| {
        r[body].as_object_mut().expect("a body object").remove(field);
    });
    edit(format!("with an unknown field in {body}"), &|r| {
        r[body]["unexpected"] = 1.into();
    });
    edit(format!("with a {second_body} body too"), &|r| {
        r.insert(second_body.into(), json!({}));
    });
    out
}

/// The mutants that wrongly validate (none, for a schema that checks).
fn accepted_mutants(v: &jsonschema::Validator, records: &[&Value]) -> Vec<String> {
    records
        .iter()
        .flat_map(|r| mutants(r))
        .filter(|(_, m)| v.is_valid(m))
        .map(|(what, m)| format!("a record {what} validates: {m}"))
        .collect()
}

#[test]
fn committed_captures_validate() {
    let v = validator();
    let dir = repo().join("tests/fixtures/captures");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    let (mut checked, mut bad) = (0, Vec::new());
    for f in &files {
        let records = read_records(f);
        checked += records.len();
        bad.extend(violations(&v, &f.file_name().unwrap().to_string_lossy(), &records));
    }
    assert!(checked > 0, "no records in {}", dir.display());
    assert!(bad.is_empty(), "{} violations:\n{}", bad.len(), bad.join("\n"));
}

#[test]
fn broken_records_fail() {
    let v = validator();
    let records = read_records(&repo().join("tests/fixtures/captures/mining-xmrig-login.capture.jsonl"));
    let samples = first_of_each_kind(&records);
    assert!(samples.len() >= 10, "the fixture has most kinds: {}", samples.len());
    let accepted = accepted_mutants(&v, &samples);
    assert!(accepted.is_empty(), "{}", accepted.join("\n"));
}

/// A character device on /dev/full's driver (1:7), registered as a GPU
/// below, as tests/gpu_ioctls.rs does: these hosts have no GPU.
/// Every record as ECS and as OCSF, checked against the official
/// definitions; problems once per (format, kind, problem).
fn format_problems(records: &[Value]) -> Vec<String> {
    use tracer::output::formats::{Format, convert};
    let mut seen = std::collections::BTreeSet::new();
    for r in records {
        let kind = r["kind"].as_str().unwrap_or("?");
        for p in support::conformance::ecs(&convert(Format::Ecs, r)) {
            seen.insert(format!("ECS {kind}: {p}"));
        }
        for p in support::conformance::ocsf(&convert(Format::Ocsf, r)) {
            seen.insert(format!("OCSF {kind}: {p}"));
        }
    }
    seen.into_iter().collect()
}

/// The committed native record of every kind, and the variants the live
/// run may not produce here: a process in a container, a signalled exit,
/// a connect whose address could not be read, a rename, a verdict that
/// changed.
fn native_fixtures_and_variants() -> Vec<Value> {
    let dir = repo().join("tests/fixtures/formats");
    let mut records: Vec<Value> = KINDS
        .iter()
        .map(|(kind, _, _)| {
            let path = dir.join(format!("{kind}.native.json"));
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
        })
        .collect();
    let of = |kind: &str| records.iter().find(|r| r["kind"] == kind).unwrap().clone();
    let mut variants = Vec::new();
    for kind in [
        "process.exec",
        "process.fork",
        "process.exit",
        "network.connect",
        "network.dns",
        "file.open",
        "process.activity",
    ] {
        let mut r = of(kind);
        r["process"]["container_id"] =
            json!("4f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff");
        variants.push(r);
    }
    let mut killed = of("process.exit");
    killed["exit"]["code"] = Value::Null;
    killed["exit"]["signal"] = json!(9);
    variants.push(killed);
    let mut unreadable = of("network.connect");
    unreadable["connect"] =
        json!({"family": "other", "result": "ok", "ret": 0, "source": "syscall", "fd": 3});
    variants.push(unreadable);
    let mut renamed = of("file.open");
    renamed["file"]["renamed"] = json!(true);
    renamed["file"]["renamed_from"] = json!("/models/ckpt.partial");
    variants.push(renamed);
    // A process whose executable has been read carries its hash.
    for kind in ["process.exec", "network.connect", "process.executable"] {
        let mut r = of(kind);
        r["process"]["exe_sha256"] =
            json!("4add4bb89d8ca0e3b1bd861130ddd7ae0fd9617a8055de0a38c8d2ca1ac95723");
        variants.push(r);
    }
    let mut changed = of("classification");
    changed["classification"]["previous"] = json!("ai_training");
    variants.push(changed);
    records.extend(variants);
    records
}

#[test]
fn every_kind_conforms_to_ecs_8_11_and_ocsf_1_4() {
    let problems = format_problems(&native_fixtures_and_variants());
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

/// The checkers catch what the reviews found and what a mapper could get
/// wrong, so a pass means something.
#[test]
fn the_format_checkers_catch_broken_records() {
    use support::conformance::{ecs, ocsf};
    use tracer::output::formats::{Format, convert};
    let exec = native_fixtures_and_variants().into_iter().find(|r| r["kind"] == "process.exec").unwrap();
    let good_ocsf = convert(Format::Ocsf, &exec);
    let good_ecs = convert(Format::Ecs, &exec);
    assert!(ocsf(&good_ocsf).is_empty() && ecs(&good_ecs).is_empty());
    let broken_ocsf: [(&str, fn(&mut Value)); 6] = [
        ("top-level container", |e| e["container"] = json!({"uid": "c"})),
        ("type_uid arithmetic", |e| e["type_uid"] = json!(100702)),
        ("enum", |e| e["activity_id"] = json!(42)),
        ("type", |e| e["process"]["pid"] = json!("12")),
        ("required", |e| _ = e.as_object_mut().unwrap().remove("process")),
        ("profile not declared", |e| {
            e["process"]["container"] = json!({"uid": "c"});
            e["metadata"]["profiles"] = json!(["host"]);
        }),
    ];
    for (what, broken) in broken_ocsf {
        let mut e = good_ocsf.clone();
        broken(&mut e);
        assert!(!ocsf(&e).is_empty(), "OCSF checker passed a record with a broken {what}");
    }
    let broken_ecs: [(&str, fn(&mut Value)); 4] = [
        ("unknown field", |e| e["process"]["nonsense"] = json!(1)),
        ("array where ECS keeps one value", |e| e["process"]["pid"] = json!([1, 2])),
        ("allowed value", |e| e["event"]["kind"] = json!("happening")),
        ("category/type pair", |e| e["event"]["type"] = json!(["allowed"])),
    ];
    for (what, broken) in broken_ecs {
        let mut e = good_ecs.clone();
        broken(&mut e);
        assert!(!ecs(&e).is_empty(), "ECS checker passed a record with a broken {what}");
    }
}

fn mknod_fake_gpu(path: &Path) {
    let c = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: mknod with a valid path; these tests run as root.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 7)) };
    assert_eq!(rc, 0, "mknod {}: {}", path.display(), std::io::Error::last_os_error());
}

/// `tracer record`, killed if the test fails before stopping it.
struct Recorder {
    child: Child,
    capture: PathBuf,
}

impl Recorder {
    fn start(capture: &Path, args: &[&str]) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_tracer"))
            .args(["record", "--health-interval", "1h"])
            .args(args)
            .arg("-o")
            .arg(capture)
            .spawn()
            .expect("spawning the tracer");
        let mut recorder = Self { child, capture: capture.to_path_buf() };
        recorder.wait_for("the started health record", |r| support::is_health(r, "started"));
        recorder
    }

    /// Polls the capture (flushed after every batch) until a record matches.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(&self.capture).unwrap_or_default();
            // A line still being written does not parse, and is left for later.
            if text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).any(|r| pred(&r)) {
                return;
            }
            assert!(self.child.try_wait().unwrap().is_none(), "the tracer exited before {what}");
            assert!(Instant::now() < deadline, "no {what} within {READY_TIMEOUT:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGINT, then every record of the capture.
    fn stop(mut self) -> Vec<Value> {
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) }, 0);
        let status = self.child.wait().expect("waiting for the tracer");
        assert!(status.success(), "tracer exited with {status}");
        read_records(&self.capture)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_live_capture_has_every_kind_and_every_record_validates() {
    support::require_root();
    let v = validator();
    let dir = std::env::temp_dir().join(format!("tracer-schema-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (capture, gpu) = (dir.join("capture.jsonl"), dir.join("nvidia0"));
    let (weights, partial, saved) =
        (dir.join("model.safetensors"), dir.join("ckpt.partial"), dir.join("ckpt.safetensors"));
    mknod_fake_gpu(&gpu);
    std::fs::write(&weights, b"weights").unwrap();

    // A resolver of our own, answering NAME with 127.0.0.1.
    let responder = dns_responder(RESOLVER);

    let spec = format!("{}=nvidia", gpu.display());
    // Every kind, file.open and setsid included: the syscall hooks too.
    let mut recorder = Recorder::start(
        &capture,
        &["--activity-interval", "1s", "--summary-interval", "1s", "--gpu-device", &spec, "--syscalls"],
    );

    // Listening once the tracer runs, so that network.listen is seen.
    let pool = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = pool.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = pool.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got.len()
    });

    // Everything the child uses is made before fork: it only makes syscalls.
    let query = dns_query(NAME);
    let subscribe = b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[\"cpuminer/2.5.1\"]}\n";
    let path = |p: &Path| CString::new(p.to_str().unwrap()).unwrap();
    let (gpu_c, weights_c, partial_c, saved_c) = (path(&gpu), path(&weights), path(&partial), path(&saved));
    // NVOS64 for RM_ALLOC: hClass @12 = HOPPER_COMPUTE_A.
    let mut rm_alloc = [0u8; 48];
    rm_alloc[12..16].copy_from_slice(&0xcbc0u32.to_ne_bytes());
    let child = fork_child(|| {
        // The exit code says which step failed.
        if dns_lookup(RESOLVER, &query) != 0 {
            return 2;
        }
        // SAFETY: syscalls only, on our own fds and buffers.
        unsafe {
            // A Stratum subscribe as the first bytes, from a buffer the child
            // wrote: the kernel side cannot fault pages in at syscall entry.
            let fd = support::connect_loopback(port);
            if fd < 0 {
                return 3;
            }
            let mut buf = [0u8; 128];
            buf[..subscribe.len()].copy_from_slice(subscribe);
            if libc::write(fd, buf.as_ptr().cast(), subscribe.len()) != subscribe.len() as isize {
                return 4;
            }
            libc::close(fd);
            // Model weights read, and a checkpoint saved atomically.
            let fd = libc::open(weights_c.as_ptr(), libc::O_RDONLY);
            if fd < 0 {
                return 5;
            }
            libc::close(fd);
            let fd = libc::open(partial_c.as_ptr(), libc::O_WRONLY | libc::O_CREAT, 0o600 as libc::c_uint);
            if fd < 0 {
                return 6;
            }
            libc::close(fd);
            if libc::rename(partial_c.as_ptr(), saved_c.as_ptr()) != 0 {
                return 7;
            }
            // The driver of /dev/full rejects these; they count all the same.
            let fd = libc::open(gpu_c.as_ptr(), libc::O_RDWR);
            if fd < 0 {
                return 8;
            }
            for _ in 0..2 {
                libc::ioctl(fd, 0xc030462b, rm_alloc.as_mut_ptr());
            }
            libc::close(fd);
        }
        burn_cpu(300);
        0
    });
    let (status, _) = wait_rusage(child);
    assert_eq!(status, 0, "the workload child failed: wait status {status:#x} (exit code: the step)");
    assert_eq!(server.join().unwrap(), subscribe.len());
    responder.join().unwrap();
    let sh = Command::new("/bin/sh").args(["-c", "exit 0"]).status().unwrap();
    assert!(sh.success());
    // The child's books close at the first activity report after its exit.
    recorder.wait_for("the child's process.activity", |r| {
        r["kind"] == "process.activity" && r["process"]["pid"] == child
    });
    recorder.wait_for("a host summary with the child's mining", |r| {
        r["kind"] == "host.summary"
            && r["summary"]["categories"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["category"] == "crypto_mining"))
    });
    let records = recorder.stop();

    let mut problems = violations(&v, &capture.display().to_string(), &records);
    let mut counts: BTreeMap<&str, usize> = KINDS.iter().map(|k| (k.0, 0)).collect();
    for r in &records {
        if let Some(n) = r["kind"].as_str().and_then(|k| counts.get_mut(k)) {
            *n += 1;
        }
    }
    eprintln!("{} records by kind: {counts:?}", records.len());
    problems.extend(counts.iter().filter(|(_, n)| **n == 0).map(|(k, _)| format!("no {k} record")));
    problems.extend(accepted_mutants(&v, &first_of_each_kind(&records)));
    // Every live record, as ECS and OCSF, against the official definitions.
    problems.extend(format_problems(&records));
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
    std::fs::remove_dir_all(&dir).unwrap();
}
