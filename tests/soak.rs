//! A short pid-churn soak: about 5 000 short processes and 1 000 sessions
//! in 20 s, and the tracer's tables and memory stay bounded by what is
//! alive. `cargo xtask soak` runs the same generator (tests/support/churn.sh)
//! for half an hour.

mod support;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{Tracer, is_health, repo};

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Processes alive on the host now.
fn alive() -> usize {
    pids().count()
}

fn pids() -> impl Iterator<Item = std::path::PathBuf> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .map(|e| e.path())
}

/// Threads alive on the host (the kernel's last_runtime has one per
/// thread seen switching).
fn threads() -> usize {
    pids().filter_map(|p| std::fs::read_dir(p.join("task")).ok()).map(Iterator::count).sum()
}

fn table(h: &Value, name: &str) -> u64 {
    h["tables"][name].as_u64().unwrap_or_else(|| panic!("health.tables.{name}: {h}"))
}

#[test]
fn pid_churn_keeps_the_tables_bounded() {
    let spawned = Instant::now();
    let mut tracer = Tracer::start(&["--activity-interval", "1s", "--health-interval", "5s"]);
    let rss_start = rss_kib(tracer.pid());
    let out = Command::new("bash")
        .arg(repo().join("tests/support/churn.sh"))
        .args(["5000", "1000", "20"])
        .output()
        .expect("running the churn");
    assert!(out.status.success(), "churn: {}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let counts: Vec<u64> = said.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    assert_eq!(counts, [5000, 1000], "churn said {said}");
    // A health record at least one report after the churn ended: the
    // exited processes have had their last interval and been forgotten.
    let ended = spawned.elapsed().as_secs_f64();
    let h = tracer.wait_for(Duration::from_secs(20), |r| {
        is_health(r, "running") && r["health"]["uptime_s"].as_f64().is_some_and(|u| u > ended + 2.0)
    })["health"]
        .clone();
    let rss_end = rss_kib(tracer.pid());
    let alive = alive() as u64;
    let threads = threads() as u64;
    let records = tracer.stop();

    let peak = |f: &dyn Fn(&Value) -> u64| {
        records.iter().filter(|r| is_health(r, "running")).map(|r| f(&r["health"])).max().unwrap_or(0)
    };
    let peak_table = peak(&|h| h["process_table_size"].as_u64().unwrap());
    let peak_scopes = peak(&|h| table(h, "classifier_scopes"));
    let execs = records.iter().filter(|r| r["kind"] == "process.exec").count();
    println!(
        "churn: {said}; execs seen {execs}; alive {alive}; process table {} (peak {peak_table}); scopes peak {peak_scopes}; tables {}; \
         RSS {} -> {} KiB",
        h["process_table_size"], h["tables"], rss_start, rss_end
    );
    let size = h["process_table_size"].as_u64().unwrap();
    assert!(size <= 2 * alive + 100, "process table {size} for {alive} processes alive");
    assert!(table(&h, "classifier_processes") <= alive + 100, "{}", h["tables"]);
    assert!(table(&h, "classifier_scopes") <= alive + 100, "{}", h["tables"]);
    assert!(table(&h, "kernel_proc_stats") <= 2 * alive + 100, "{}", h["tables"]);
    assert!(table(&h, "cpu_time_carried") <= 2 * alive + 100, "{}", h["tables"]);
    assert!(table(&h, "dns_names") <= 1000, "{}", h["tables"]);
    // The kernel's tables follow the living too, and nothing was evicted:
    // a few thousand processes fit in every table.
    let kernel = |name: &str| h["kernel_tables"][name].as_u64().unwrap_or_else(|| panic!("{name}: {h}"));
    assert!(kernel("proc_stats") <= 2 * alive + 100, "{}", h["kernel_tables"]);
    assert!(kernel("last_runtime") <= 2 * threads + 100, "{threads} threads: {}", h["kernel_tables"]);
    assert!(kernel("connects_in_flight") <= 100, "{}", h["kernel_tables"]);
    let evicted: u64 = h["kernel_evictions"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(evicted, 0, "{}", h["kernel_evictions"]);
    let grown = rss_end.saturating_sub(rss_start);
    assert!(grown < 30 * 1024, "RSS grew {grown} KiB over the churn");
}
