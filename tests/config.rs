//! The configuration file, run for real: its options take effect, bad ones
//! stop the tracer naming the line, and SIGHUP reloads the rules and the
//! allowlist without losing what the classifier knew.

mod support;

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use support::scratch;

fn tracer_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tracer"))
}

fn read_records(path: &std::path::Path) -> Vec<Value> {
    let Ok(f) = std::fs::File::open(path) else { return Vec::new() };
    BufReader::new(f).lines().map_while(Result::ok).filter_map(|l| serde_json::from_str(&l).ok()).collect()
}

/// Waits until the file holds a record that matches.
fn wait_record(path: &std::path::Path, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(r) = read_records(path).into_iter().find(|r| pred(r)) {
            return r;
        }
        assert!(Instant::now() < deadline, "no matching record in {} within {timeout:?}", path.display());
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_bad_configuration_stops_the_tracer_naming_the_line() {
    let dir = scratch("config-bad");
    let file = dir.join("tracer.toml");
    std::fs::write(&file, "activity_interval = \"1s\"\n\n[[sink]]\ntarget = \"-\"\nformat = \"cef\"\n")
        .unwrap();
    let out = tracer_cmd().args(["run", "--duration", "1s", "--config"]).arg(&file).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tracer.toml:3: `sink`") && err.contains("cef"), "{err}");
    std::fs::write(&file, "activity-interval = \"1s\"\nhealth_interval = 0\n").unwrap();
    let out = tracer_cmd().args(["run", "--duration", "1s", "--config"]).arg(&file).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(":2: `health_interval`") && err.contains("more than zero"),
        "{err}"
    );
}

#[test]
fn the_file_configures_the_run_and_sighup_reloads_the_rules() {
    support::require_root();
    let dir = scratch("config-run");
    let records = dir.join("records.jsonl");
    let verdicts = dir.join("verdicts.jsonl");
    let rules = dir.join("rules.toml");
    let socket = dir.join("api.sock");
    std::fs::write(&rules, "# no extra rules yet\n").unwrap();
    let file = dir.join("tracer.toml");
    std::fs::write(
        &file,
        format!(
            r#"activity_interval = "1s"
health_interval = "1s"
rules = "{rules}"
api = "{socket}"

[[sink]]
target = "{records}"

[[sink]]
target = "{verdicts}"
kinds = ["classification", "tracer.health"]
"#,
            rules = rules.display(),
            socket = socket.display(),
            records = records.display(),
            verdicts = verdicts.display(),
        ),
    )
    .unwrap();
    let mut tracer = tracer_cmd()
        .args(["run", "--config"])
        .arg(&file)
        // The command line overrides the file.
        .args(["--health-interval", "2s"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let started = wait_record(&verdicts, Duration::from_secs(30), |r| r["kind"] == "tracer.health");
    assert!(socket.exists(), "the file's api option serves the socket");
    let argv_sinks: Vec<&str> =
        started["health"]["sinks"].as_array().unwrap().iter().filter_map(|s| s["sink"].as_str()).collect();
    assert_eq!(argv_sinks.len(), 3, "two file sinks and the API: {argv_sinks:?}");

    // A miner before any reload: an alert.
    let first = support::mining_tree(300);
    assert_eq!(support::wait_rusage(first).0, 0);
    let alert = wait_record(&verdicts, Duration::from_secs(15), |r| {
        r["kind"] == "classification" && r["classification"]["key"] == first.to_string().as_str()
    });
    assert_eq!(alert["classification"]["alert"], true, "{alert}");

    let health_after = |n: u64, what: &'static str| {
        move |r: &Value| {
            r["kind"] == "tracer.health" && r["health"]["rules_reloads"][what].as_u64() == Some(n)
        }
    };
    // A broken rules file is refused and the rules in use are kept.
    std::fs::write(&rules, "[[allow]]\nid = \"lab\"\nexe_nam = [\"x\"]\n").unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGHUP) };
    let refused = wait_record(&verdicts, Duration::from_secs(15), health_after(1, "failed"));
    let reloads = &refused["health"]["rules_reloads"];
    assert_eq!(reloads["reloaded"], 0, "{reloads}");
    assert!(reloads["last_error"].as_str().unwrap().contains("exe_nam"), "{reloads}");

    // An allowlist entry for this binary: the next miner is allowlisted.
    let me = std::env::current_exe().unwrap();
    std::fs::write(&rules, format!("[[allow]]\nid = \"lab\"\nexe = [\"{}\"]\n", me.display())).unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGHUP) };
    let reloaded = wait_record(&verdicts, Duration::from_secs(15), health_after(1, "reloaded"));
    assert!(reloaded["health"]["rules_reloads"].get("last_error").is_none(), "{reloaded}");
    let second = support::mining_tree(300);
    assert_eq!(support::wait_rusage(second).0, 0);
    let allowed = wait_record(&verdicts, Duration::from_secs(15), |r| {
        r["kind"] == "classification" && r["classification"]["key"] == second.to_string().as_str()
    });
    assert_eq!(allowed["classification"]["alert"], false, "{allowed}");
    assert_eq!(allowed["classification"]["allowlisted"], "lab", "{allowed}");

    // Nothing was lost: the first miner's verdict is still in the state.
    let state = tracer_cmd().args(["state", "--socket"]).arg(&socket).output().unwrap();
    let state: Value = serde_json::from_slice(&state.stdout).unwrap();
    let kept = state["trees"].as_array().unwrap().iter().find(|t| t["key"] == first.to_string().as_str());
    assert!(kept.is_some_and(|t| t["verdict"]["category"] == "crypto_mining"), "{state:#}");

    // SAFETY: as above.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    assert!(tracer.wait().unwrap().success());
    // The first sink took every kind, the second only those it asked for.
    let all = read_records(&records);
    assert!(all.iter().any(|r| r["kind"] == "process.fork"));
    let kinds: std::collections::BTreeSet<String> =
        read_records(&verdicts).iter().filter_map(|r| r["kind"].as_str().map(str::to_owned)).collect();
    assert_eq!(kinds.into_iter().collect::<Vec<_>>(), ["classification", "tracer.health"]);
}
