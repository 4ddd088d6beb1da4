//! The tracer as a service: its local API (state, live records, health)
//! read by `tracer state` / `tracer events` and a raw client, and its
//! metrics scraped by a real Prometheus server (Debian's `prometheus`).

mod support;

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{Tracer, scratch};

fn tracer_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tracer"))
}

/// A raw request to the API socket: (status line, body).
fn raw_get(socket: &Path, target: &str) -> (String, String) {
    let mut s = UnixStream::connect(socket).unwrap();
    write!(s, "GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").unwrap_or((&all, ""));
    (head.lines().next().unwrap_or_default().to_owned(), body.to_owned())
}

fn tree(state: &Value, sid: u32) -> Option<&Value> {
    state["trees"].as_array()?.iter().find(|t| t["key"] == sid.to_string().as_str())
}

#[test]
fn the_local_api_serves_state_live_records_and_health() {
    let dir = scratch("api");
    let socket = dir.join("run/api.sock");
    let socket_arg = socket.to_str().unwrap();
    let tracer =
        Tracer::start(&["--api", socket_arg, "--activity-interval", "1s", "--health-interval", "1s"]);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&socket), 0o600, "the socket is root's alone");
    assert_eq!(mode(socket.parent().unwrap()), 0o700);

    // A second tracer may not take the socket over.
    let second = tracer_cmd().args(["run", "--duration", "1s", "--api", socket_arg]).output().unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("another tracer"), "{second:?}");

    // Another user cannot even connect.
    // SAFETY: an all-zero sockaddr_un is valid; the path fits (scratch dirs are short).
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as u16;
    for (d, b) in addr.sun_path.iter_mut().zip(socket_arg.as_bytes()) {
        *d = *b as libc::c_char;
    }
    let refused = support::fork_child(move || {
        // SAFETY: syscalls only, on the child's own socket.
        unsafe {
            if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                return 3;
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            let rc = libc::connect(fd, (&raw const addr).cast(), len);
            if rc == 0 {
                1
            } else if *libc::__errno_location() == libc::EACCES {
                0
            } else {
                2
            }
        }
    });
    assert_eq!(support::wait_rusage(refused).0, 0);

    // `tracer events --follow`, started before the miner, sees its verdict.
    let mut follower = tracer_cmd()
        .args(["events", "--socket", socket_arg, "--follow", "--kinds", "classification"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<Value>();
    let out = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(serde_json::from_str(&line).unwrap_or(Value::Null));
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let miner = support::mining_tree(2500);
    let followed = loop {
        let r = rx.recv_timeout(Duration::from_secs(15)).expect("a classification on the followed stream");
        assert_eq!(r["kind"], "classification", "only the kinds asked for: {r}");
        if r["classification"]["key"] == miner.to_string().as_str() {
            break r;
        }
    };
    assert_eq!(followed["classification"]["category"], "crypto_mining", "{followed}");

    // The state shows the tree busy, with its verdict and evidence.
    let deadline = Instant::now() + Duration::from_secs(15);
    let state = loop {
        let out = tracer_cmd().args(["state", "--socket", socket_arg]).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let state: Value = serde_json::from_slice(&out.stdout).unwrap();
        if tree(&state, miner).is_some_and(|t| t["cpu"]["cores"].as_f64().unwrap_or(0.0) > 0.3) {
            break state;
        }
        assert!(Instant::now() < deadline, "the miner's tree, busy, in the state: {state:#}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let t = tree(&state, miner).unwrap();
    assert_eq!(t["verdict"]["category"], "crypto_mining", "{t:#}");
    assert!(t["verdict"]["evidence"].as_array().unwrap().iter().any(|e| e["indicator"] == "mining-protocol"));
    assert_eq!(t["leader"]["pid"], miner, "{t:#}");
    assert!(state["categories"]["crypto_mining"]["trees"].as_u64() >= Some(1), "{state:#}");
    assert_eq!(state["health"]["status"], "running");

    // Health, the recent records and errors, as any HTTP client sees them.
    let (status, body) = raw_get(&socket, "/v1/health");
    assert!(status.ends_with("200 OK"), "{status}");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["kind"], "tracer.health");
    let (_, recent) = raw_get(&socket, "/v1/events?kinds=process.*&format=ecs");
    let recent: Vec<Value> = recent.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!recent.is_empty());
    assert!(
        recent.iter().all(|r| r["ecs"]["version"].is_string() && r["process"].is_object()),
        "{recent:#?}"
    );
    assert!(raw_get(&socket, "/nope").0.contains("404"));
    assert!(raw_get(&socket, "/v1/events?format=xml").0.contains("400"));

    assert_eq!(support::wait_rusage(miner).0, 0);
    let records = tracer.stop();
    // The follower's stream ends with the tracer, and the socket goes.
    let status = follower.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists());
    // The API is a sink like the others: its counts are in the health.
    let fin = support::final_health(&records);
    let api = fin["sinks"].as_array().unwrap().iter().find(|s| s["sink"] == format!("api:{socket_arg}"));
    assert!(api.is_some_and(|s| s["delivered"].as_u64() > Some(0)), "{fin:#}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn http_get(port: u16, target: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut all = String::new();
    s.read_to_string(&mut all).ok()?;
    Some(all.split_once("\r\n\r\n")?.1.to_owned())
}

/// The value of the first sample of an instant query, if any.
fn query(prom_port: u16, promql: &str) -> Option<f64> {
    let q: String = promql
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' { (b as char).to_string() } else { format!("%{b:02X}") }
        })
        .collect();
    let body = http_get(prom_port, &format!("/api/v1/query?query={q}"))?;
    let v: Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[test]
fn prometheus_scrapes_the_metrics() {
    let prometheus = Path::new("/usr/bin/prometheus");
    assert!(prometheus.exists(), "Debian's prometheus is needed (`cargo xtask test` installs it)");
    let dir = scratch("prometheus");
    let metrics_port = free_port();
    let tracer = Tracer::start(&[
        "--metrics",
        &format!("127.0.0.1:{metrics_port}"),
        "--activity-interval",
        "1s",
        "--health-interval",
        "1s",
    ]);
    let text = http_get(metrics_port, "/metrics").expect("the metrics endpoint answers");
    assert!(text.contains("# TYPE tracer_events_read_total counter"), "{text}");

    let prom_port = free_port();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: tracer\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
        ),
    )
    .unwrap();
    let mut prom = Command::new(prometheus)
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .unwrap();

    let miner = support::mining_tree(8000);
    let deadline = Instant::now() + Duration::from_secs(40);
    let (mut up, mut trees, mut cores) = (None, None, None);
    while Instant::now() < deadline {
        up = query(prom_port, "up{job=\"tracer\"}");
        trees = query(prom_port, "tracer_category_trees{category=\"crypto_mining\"}");
        cores = query(prom_port, "max_over_time(tracer_category_cpu_cores{category=\"crypto_mining\"}[1m])");
        if up == Some(1.0) && trees >= Some(1.0) && cores > Some(0.3) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let events = query(prom_port, "tracer_events_read_total");
    let _ = prom.kill();
    let _ = prom.wait();
    assert_eq!(support::wait_rusage(miner).0, 0);
    tracer.stop();
    let log = std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
    assert_eq!(up, Some(1.0), "Prometheus scraped the tracer: {log}");
    assert!(trees >= Some(1.0), "a mining tree in Prometheus: {trees:?}");
    assert!(cores > Some(0.3), "its CPU in cores: {cores:?}");
    assert!(events > Some(0.0), "{events:?}");
}

/// The shipped unit with this build's binary and a scratch configuration.
fn unit_for_test(dir: &Path, config: &Path) -> (String, std::path::PathBuf) {
    let unit = std::fs::read_to_string(support::repo().join("examples/tracer.service")).unwrap();
    let unit = unit.replace(
        "/usr/local/bin/tracer run --config /etc/tracer/tracer.toml",
        &format!("{} run --config {}", env!("CARGO_BIN_EXE_tracer"), config.display()),
    );
    let path = dir.join("tracer-test.service");
    std::fs::write(&path, &unit).unwrap();
    (unit, path)
}

/// The shipped example configuration, with its paths moved into `dir`.
fn config_for_test(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(support::repo().join("examples/tracer.toml")).unwrap();
    let text = text
        .replace("/var/log/tracer/", &format!("{}/", dir.display()))
        .replace("/run/tracer/tracer.sock", &dir.join("api.sock").display().to_string())
        .replace("127.0.0.1:9464", &format!("127.0.0.1:{}", free_port()));
    let path = dir.join("tracer.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_systemd_unit_verifies_and_its_capabilities_suffice() {
    support::require_root();
    let dir = scratch("unit");
    let config = config_for_test(&dir);
    let (unit, path) = unit_for_test(&dir, &config);
    let verify = Command::new("systemd-analyze").arg("verify").arg(&path).output().expect("systemd-analyze");
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && complaints.trim().is_empty(), "systemd-analyze verify: {complaints}");
    for hardening in ["ProtectSystem=strict", "ProtectHome=", "NoNewPrivileges=yes", "Restart=on-failure"] {
        assert!(unit.contains(hardening), "{hardening}");
    }
    // Run with exactly the unit's bounding set: every program attaches.
    let caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("a CapabilityBoundingSet")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert!(!caps.contains(&"+sys_admin".to_owned()), "the service runs without CAP_SYS_ADMIN");
    let out = Command::new("setpriv")
        .arg(format!("--bounding-set=-all,{}", caps.join(",")))
        .arg("--inh-caps=-all")
        .arg(env!("CARGO_BIN_EXE_tracer"))
        .args(["run", "--config"])
        .arg(&config)
        .args(["--duration", "3s", "--health-interval", "1h"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records: Vec<Value> = std::fs::read_to_string(dir.join("records.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let fin = support::final_health(&records);
    assert_eq!(fin["programs_failed"], 0, "{:#}", fin["programs"]);
    assert!(fin["programs_attached"].as_u64() > Some(10), "{fin:#}");
    assert_eq!(fin["sockets_adopted"]["failed"], 0, "{fin:#}");
}

#[test]
fn the_unit_starts_under_systemd() {
    support::require_root();
    if !Path::new("/run/systemd/system").exists() {
        support::skip("the_unit_starts_under_systemd", "systemd is not this host's init");
        return;
    }
    let dir = scratch("systemd");
    let config = config_for_test(&dir);
    let (unit, _) = unit_for_test(&dir, &config);
    let installed = Path::new("/run/systemd/system/tracer-test.service");
    std::fs::write(installed, unit).unwrap();
    let systemctl = |args: &[&str]| Command::new("systemctl").args(args).status().unwrap().success();
    assert!(systemctl(&["daemon-reload"]));
    let started = systemctl(&["start", "tracer-test.service"]);
    let socket = dir.join("api.sock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while started && !socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let state = tracer_cmd().args(["state", "--socket"]).arg(&socket).output().unwrap();
    let reloaded = systemctl(&["reload", "tracer-test.service"]);
    systemctl(&["stop", "tracer-test.service"]);
    let _ = std::fs::remove_file(installed);
    systemctl(&["daemon-reload"]);
    assert!(started, "systemctl start");
    assert!(state.status.success(), "the service's API: {state:?}");
    assert!(reloaded, "systemctl reload");
}
