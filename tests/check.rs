//! `tracer check` against the real kernel: the programs load and attach on
//! this host, and what would stop a run (an output that cannot be written,
//! a broken rules file) fails the check, with exit status 1 and a row that
//! names it.

mod support;

use std::{
    os::unix::process::CommandExt as _,
    process::{Command, Output},
};

use serde_json::Value;

/// Runs `tracer check --json <args>`: its exit status, report and stderr.
fn check(args: &[&str]) -> (Output, Value, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tracer"));
    command.arg("check").arg("--json").args(args);
    run(command)
}

fn run(mut command: Command) -> (Output, Value, String) {
    let out = command.output().expect("running tracer check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("not one JSON object ({e}): {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr))
    });
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, report, stderr)
}

fn row<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .expect("checks is an array")
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no row {name}: {report:#}"))
}

fn assert_ok(report: &Value, name: &str) {
    assert_eq!(row(report, name)["status"], "ok", "{name}: {report:#}");
}

#[test]
fn this_host_passes_with_its_programs_attached() {
    support::require_root();
    let (out, report, stderr) = check(&[]);
    assert!(out.status.success(), "exit {:?}: {report:#}\n{stderr}", out.status);
    assert_eq!(report["ok"], true, "{report:#}");
    for name in [
        "privileges",
        "BTF",
        "tracefs",
        "programs",
        "process hooks",
        "scheduler hook",
        "socket hooks",
        "ring buffer",
        "rules",
        "sink -",
    ] {
        assert_ok(&report, name);
    }
    // What attached is named, as the health record names it.
    let sched = row(&report, "scheduler hook")["detail"].as_str().unwrap();
    assert!(sched.contains("sched_switch_btf"), "{sched}");
    let sockets = row(&report, "socket hooks")["detail"].as_str().unwrap();
    assert!(sockets.contains("connect4") && sockets.contains("connect6"), "{sockets}");
    assert!(row(&report, "ring buffer")["detail"].as_str().unwrap().contains("4096 KiB"), "{report:#}");
    for r in report["checks"].as_array().unwrap() {
        assert!(["ok", "warn", "fail"].contains(&r["status"].as_str().unwrap()), "{r}");
        assert!(r["detail"].is_string(), "{r}");
    }
}

#[test]
fn an_output_under_a_regular_file_fails_the_check() {
    support::require_root();
    let dir = support::scratch("check-output");
    let file = dir.join("regular");
    std::fs::write(&file, b"").unwrap();
    let output = file.join("events.jsonl");
    let (out, report, stderr) = check(&["--output", output.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    assert_eq!(report["ok"], false);
    let sink = row(&report, &format!("sink {}", output.display()));
    assert_eq!(sink["status"], "fail", "{sink}");
    // The reason is the last line, naming the sink.
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.contains(&format!("sink {}", output.display())), "{stderr}");
    // The rest still passes: only the output is wrong.
    assert_ok(&report, "socket hooks");
}

#[test]
fn a_broken_rules_entry_fails_the_check_by_name() {
    support::require_root();
    let dir = support::scratch("check-rules");
    let rules = dir.join("rules.toml");
    std::fs::write(
        &rules,
        "[[indicator]]\nid = \"weightless-entry\"\ncategory = \"crypto_mining\"\nweight = 0.0\n\
         what = \"broken on purpose\"\nmatch = { exe_name = [\"xmrig\"] }\n",
    )
    .unwrap();
    let (out, report, stderr) = check(&["--rules", rules.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    let r = row(&report, "rules");
    assert_eq!(r["status"], "fail", "{r}");
    let detail = r["detail"].as_str().unwrap();
    assert!(detail.contains("weightless-entry") && detail.contains(rules.to_str().unwrap()), "{detail}");
    assert!(stderr.lines().last().unwrap_or_default().contains("weightless-entry"), "{stderr}");
}

#[test]
fn an_unreachable_http_sink_is_named_and_does_not_stop_the_tracer() {
    support::require_root();
    let dir = support::scratch("check-http");
    // A port that was bound and closed: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/ingest");
    let spec = format!("{url};spool={}", dir.join("spool").display());
    let (out, report, stderr) = check(&["--sink", &spec]);
    let sink = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"].as_str().unwrap().contains(&url))
        .unwrap_or_else(|| panic!("no row names {url}: {report:#}"));
    assert_eq!(sink["status"], "warn", "{sink}");
    assert!(sink["detail"].as_str().unwrap().contains("unreachable"), "{sink}");
    assert!(sink["fallback"].as_str().unwrap().contains("spool"), "{sink}");
    // Records spool until it answers: a warning, not a failure.
    assert!(out.status.success(), "{report:#}\n{stderr}");
    assert!(!dir.join("spool").exists(), "the check creates no spool");
}

#[test]
fn without_root_a_fail_row_and_exit_1() {
    support::require_root();
    let mut command = Command::new(env!("CARGO_BIN_EXE_tracer"));
    command.args(["check", "--json"]).current_dir("/").uid(65534).gid(65534);
    let (out, report, stderr) = run(command);
    assert_eq!(out.status.code(), Some(1), "{report:#}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let privileges = row(&report, "privileges");
    assert_eq!(privileges["status"], "fail", "{privileges}");
    assert!(privileges["detail"].as_str().unwrap().contains("not root (uid 65534)"), "{privileges}");
    assert_eq!(row(&report, "programs")["status"], "fail", "{report:#}");
}

#[test]
fn a_configuration_file_is_checked_and_its_sinks_with_it() {
    support::require_root();
    let dir = support::scratch("check-config");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "api = true\nhealth_interval = \"soon\"\n").unwrap();
    let (out, report, _) = check(&["--config", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let config = row(&report, "config");
    assert_eq!(config["status"], "fail", "{report:#}");
    assert!(config["detail"].as_str().unwrap().contains("bad.toml:2: `health_interval`"), "{config}");

    let good = dir.join("good.toml");
    let records = dir.join("records.jsonl");
    std::fs::write(
        &good,
        format!("activity_interval = \"2s\"\n\n[[sink]]\ntarget = \"{}\"\n", records.display()),
    )
    .unwrap();
    let (out, report, stderr) = check(&["--config", good.to_str().unwrap()]);
    assert!(out.status.success(), "{report:#}\n{stderr}");
    assert_ok(&report, "config");
    // The file's sink is checked, not stdout.
    assert_ok(&report, &format!("sink {}", records.display()));
}
