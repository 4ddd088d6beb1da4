//! `cargo xtask soak`: the release tracer under pid churn for a long run. The
//! generator (tests/support/churn.sh, which tests/soak.rs runs for 20 s)
//! starts about a million short processes and 100 000 sessions per 30
//! minutes. Every 10 s the tracer's RSS and the table sizes of its latest
//! health record are sampled. Each series gets a verdict: flat when the
//! median of the last third of the churn's samples is within 20 % of the
//! first third's, else growing.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::bench::{median, rss_mib, sigint};

pub struct Options {
    pub minutes: u64,
    pub tracer: PathBuf,
    pub root: PathBuf,
    pub out_dir: PathBuf,
}

/// After health's process table: (object in health, entry, column). The
/// tracer's own tables (`tables`), then the kernel's (`kernel_tables`).
const TABLES: &[(&str, &str, &str)] = &[
    ("tables", "classifier_scopes", "scopes"),
    ("tables", "classifier_processes", "cl_procs"),
    ("tables", "dns_names", "dns_names"),
    ("tables", "cgroup_paths", "cgroups"),
    ("tables", "kernel_proc_stats", "ledger_p"),
    ("tables", "kernel_syscall_counts", "ledger_sys"),
    ("tables", "kernel_flows", "ledger_fl"),
    ("kernel_tables", "proc_stats", "k_procs"),
    ("kernel_tables", "syscall_counts", "k_sys"),
    ("kernel_tables", "last_runtime", "k_threads"),
    ("kernel_tables", "flows", "k_flows"),
    ("kernel_tables", "fresh_sockets", "k_fresh"),
];

const SAMPLE_EVERY: Duration = Duration::from_secs(10);

struct Sample {
    t_s: f64,
    rss_mib: f64,
    process_table: f64,
    tables: Vec<f64>,
    events_read: f64,
    dropped: f64,
    /// Keys the kernel's LRU tables evicted, all tables together.
    evicted: f64,
}

fn last_health(path: &Path) -> Option<Value> {
    let text = fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|r| r["kind"] == "tracer.health")
}

fn sample(t0: Instant, pid: u32, health: &Path) -> Sample {
    let h = last_health(health).map(|r| r["health"].clone()).unwrap_or(Value::Null);
    let n = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    Sample {
        t_s: t0.elapsed().as_secs_f64().round(),
        rss_mib: rss_mib(pid),
        process_table: n(&h["process_table_size"]),
        tables: TABLES.iter().map(|(object, t, _)| n(&h[object][t])).collect(),
        evicted: h["kernel_evictions"]
            .as_object()
            .map_or(f64::NAN, |e| e.values().filter_map(Value::as_f64).sum()),
        events_read: n(&h["events_read"]),
        dropped: n(&h["dropped_total"]),
    }
}

/// flat or growing, from the first and last thirds' medians; a rise of a
/// few entries on a small table is noise, not growth.
fn verdict(series: &[f64]) -> (f64, f64, &'static str) {
    let third = (series.len() / 3).max(1);
    let first = median(&mut series[..third].to_vec());
    let last = median(&mut series[series.len() - third..].to_vec());
    let flat = last <= first * 1.2 || last - first < 16.0;
    (first, last, if flat { "flat" } else { "growing" })
}

pub fn run(opts: &Options) -> Result<()> {
    fs::create_dir_all(&opts.out_dir)?;
    let health = opts.out_dir.join("health.jsonl");
    let events = opts.out_dir.join("events.jsonl");
    for f in [&health, &events] {
        let _ = fs::remove_file(f);
    }
    // Every record goes to a rotated file, as in production; health to its
    // own file, which the sampler reads.
    let mut tracer = Command::new(&opts.tracer)
        .args(["run", "--activity-interval", "1s", "--health-interval", "5s", "--sink"])
        .arg(format!("{};kinds=tracer.health", health.display()))
        .arg("--sink")
        .arg(format!("{};rotate_size=256MiB;keep=2", events.display()))
        .stdin(Stdio::null())
        .spawn()
        .context("starting the tracer")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while last_health(&health).is_none() {
        if Instant::now() > deadline {
            let _ = tracer.kill();
            bail!("the tracer did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let seconds = opts.minutes * 60;
    let procs = (1_000_000 * opts.minutes / 30).max(1000);
    let sessions = (100_000 * opts.minutes / 30).max(100);
    println!("soak: {procs} processes and {sessions} sessions over {} min", opts.minutes);
    let churn = Command::new("bash")
        .arg(opts.root.join("tests/support/churn.sh"))
        .args([procs.to_string(), sessions.to_string(), seconds.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the churn")?;
    let churn_pid = churn.id();
    let t0 = Instant::now();
    let mut samples = vec![sample(t0, tracer.id(), &health)];
    print!("{}{}", header(), row(&samples[0]));
    let mut during = 0;
    let waited = std::thread::spawn(move || churn.wait_with_output());
    while !waited.is_finished() {
        std::thread::sleep(SAMPLE_EVERY);
        samples.push(sample(t0, tracer.id(), &health));
        during = samples.len();
        print_row(samples.last().expect("just pushed"));
    }
    let out = waited.join().expect("the churn's waiter").with_context(|| format!("churn {churn_pid}"))?;
    println!("churn: {}", String::from_utf8_lossy(&out.stdout).trim());
    // The reports after the churn: what the tracer keeps once it is over.
    std::thread::sleep(SAMPLE_EVERY);
    samples.push(sample(t0, tracer.id(), &health));
    sigint(tracer.id());
    let status = tracer.wait()?;

    let mut table = header();
    for s in &samples {
        table.push_str(&row(s));
    }
    let mut report = String::from("\nseries (first third -> last third of the churn's samples): verdict\n");
    // The first sample is from before the churn.
    let churned = &samples[1.min(during.saturating_sub(1))..during.max(1)];
    let mut all: Vec<(String, Vec<f64>)> = vec![
        ("rss_mib".into(), churned.iter().map(|s| s.rss_mib).collect()),
        ("process_table_size".into(), churned.iter().map(|s| s.process_table).collect()),
    ];
    for (i, (object, t, _)) in TABLES.iter().enumerate() {
        let name = if *object == "kernel_tables" { format!("kernel {t}") } else { t.to_string() };
        all.push((name, churned.iter().map(|s| s.tables[i]).collect()));
    }
    let mut growing = Vec::new();
    for (name, series) in &all {
        let (first, last, v) = verdict(series);
        report.push_str(&format!("  {name:<22} {first:>10.1} -> {last:>10.1}: {v}\n"));
        if v == "growing" {
            growing.push(name.as_str());
        }
    }
    let (start, end) = (&samples[0], samples.last().expect("at least one sample"));
    report.push_str(&format!(
        "\nbefore the churn -> {} s after it: RSS {:.1} -> {:.1} MiB, process table {} -> {}\n",
        SAMPLE_EVERY.as_secs(),
        start.rss_mib,
        end.rss_mib,
        start.process_table,
        end.process_table
    ));
    report.push_str(&format!(
        "events read {:.0}, dropped {:.0}, kernel table keys evicted {:.0}; tracer exited {status}\nverdict: {}\n",
        end.events_read,
        end.dropped,
        end.evicted,
        if growing.is_empty() { "flat".to_string() } else { format!("growing ({})", growing.join(", ")) }
    ));
    println!("{report}");
    fs::write(opts.out_dir.join("soak.md"), table + &report)?;
    println!("written to {}", opts.out_dir.join("soak.md").display());
    Ok(())
}

fn header() -> String {
    let mut h = format!("{:>6} {:>8} {:>8}", "t_s", "rss_mib", "procs");
    for (_, _, column) in TABLES {
        h.push_str(&format!(" {column:>10}"));
    }
    h + "\n"
}

fn row(s: &Sample) -> String {
    let mut r = format!("{:>6.0} {:>8.1} {:>8.0}", s.t_s, s.rss_mib, s.process_table);
    for v in &s.tables {
        r.push_str(&format!(" {v:>10.0}"));
    }
    r + "\n"
}

fn print_row(s: &Sample) {
    print!("{}", row(s));
}
