//! `cargo xtask fuzz`: runs the parser fuzz targets in `tracer/fuzz`
//! (cargo-fuzz, libFuzzer with AddressSanitizer, on nightly) one after the
//! other, each for a fixed number of executions, and prints a table.
//! cargo fuzz builds optimised with debug assertions and overflow checks
//! on, so an arithmetic overflow on hostile input is a crash too.
//!
//! Each target starts from its committed corpus, `tracer/fuzz/corpus/<target>/`,
//! and libFuzzer writes the new inputs it finds there. A crash leaves the
//! input in `tracer/fuzz/artifacts/<target>/`; once fixed, it belongs in the
//! corpus, which the default test suite replays.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::setup::NIGHTLY;

pub struct Options {
    pub root: PathBuf,
    /// Only this target; all of them when None.
    pub target: Option<String>,
    /// Executions per target.
    pub runs: u64,
    /// Stop a target after this many seconds even if `runs` are not done.
    pub max_time: Option<u64>,
}

/// What one target's run came to.
struct Outcome {
    target: String,
    executions: Option<u64>,
    /// Wall time of the run (libFuzzer's own counts whole seconds).
    seconds: f64,
    crash: Option<String>,
}

/// cargo-fuzz with the nightly toolchain, whatever the directory pins or
/// the calling cargo exported (it would build with the stable cargo).
fn cargo_fuzz(fuzz_dir: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.env("RUSTUP_TOOLCHAIN", NIGHTLY).env_remove("CARGO").env_remove("RUSTC").arg("fuzz");
    cmd.current_dir(fuzz_dir.parent().expect("tracer/fuzz has a parent"));
    cmd
}

fn targets(fuzz_dir: &Path) -> Result<Vec<String>> {
    let out = cargo_fuzz(fuzz_dir)
        .args(["list", "--fuzz-dir"])
        .arg(fuzz_dir)
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo fuzz list")?;
    if !out.status.success() {
        bail!("cargo fuzz list failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

pub fn run(opts: &Options) -> Result<()> {
    let fuzz_dir = opts.root.join("tracer/fuzz");
    let mut names = targets(&fuzz_dir)?;
    if let Some(only) = &opts.target {
        if !names.contains(only) {
            bail!("no fuzz target `{only}` (targets: {})", names.join(", "));
        }
        names.retain(|n| n == only);
    }
    // One build for all of them; each run below then starts at once.
    let status = cargo_fuzz(&fuzz_dir)
        .args(["build", "--fuzz-dir"])
        .arg(&fuzz_dir)
        .status()
        .context("running cargo fuzz build")?;
    if !status.success() {
        bail!("cargo fuzz build failed ({status})");
    }
    let mut outcomes = Vec::new();
    for name in &names {
        outcomes.push(run_one(&fuzz_dir, name, opts)?);
    }
    print_table(&outcomes, opts.runs);
    let crashed: Vec<&str> =
        outcomes.iter().filter(|o| o.crash.is_some()).map(|o| o.target.as_str()).collect();
    if !crashed.is_empty() {
        bail!("fuzz targets crashed: {}", crashed.join(", "));
    }
    Ok(())
}

fn run_one(fuzz_dir: &Path, name: &str, opts: &Options) -> Result<Outcome> {
    let corpus = fuzz_dir.join("corpus").join(name);
    std::fs::create_dir_all(&corpus)?;
    std::fs::create_dir_all(fuzz_dir.join("artifacts").join(name))?;
    let mut cmd = cargo_fuzz(fuzz_dir);
    cmd.args(["run", "--fuzz-dir"]).arg(fuzz_dir).arg(name).arg(&corpus).arg("--");
    // cargo fuzz sets -artifact_prefix to artifacts/<target>/ itself.
    cmd.arg(format!("-runs={}", opts.runs))
        .arg("-print_final_stats=1")
        // An input that takes this long is a hang, reported like a crash.
        .arg("-timeout=10");
    if let Some(secs) = opts.max_time {
        cmd.arg(format!("-max_total_time={secs}"));
    }
    eprintln!("xtask: fuzzing {name} ({} executions)", opts.runs);
    let mut child = cmd.stderr(Stdio::piped()).spawn().context("running cargo fuzz run")?;
    let start = std::time::Instant::now();
    let mut outcome = Outcome { target: name.to_string(), executions: None, seconds: 0.0, crash: None };
    // libFuzzer reports on stderr; echo it and keep the final statistics.
    for line in BufReader::new(child.stderr.take().expect("piped")).lines() {
        let line = line?;
        eprintln!("{line}");
        let number = |prefix: &str| line.strip_prefix(prefix).and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(n) = number("stat::number_of_executed_units:") {
            outcome.executions = Some(n);
        } else if let Some(at) = line.find("Test unit written to ") {
            outcome.crash = Some(line[at + "Test unit written to ".len()..].trim().to_string());
        }
    }
    let status = child.wait()?;
    outcome.seconds = start.elapsed().as_secs_f64();
    if !status.success() && outcome.crash.is_none() {
        outcome.crash = Some(format!("exited {status}"));
    }
    Ok(outcome)
}

fn print_table(outcomes: &[Outcome], runs: u64) {
    let show = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    let rate = |o: &Outcome| o.executions.map(|n| (n as f64 / o.seconds.max(0.001)) as u64);
    println!();
    println!("{:<16} {:>12} {:>9} {:>8}  result", "target", "executions", "exec/s", "seconds");
    for o in outcomes {
        let result = match (&o.crash, o.executions) {
            (Some(c), _) => format!("CRASH {c}"),
            (None, Some(n)) if n < runs => "ok (stopped by --max-time)".to_string(),
            (None, _) => "ok".to_string(),
        };
        println!(
            "{:<16} {:>12} {:>9} {:>8.1}  {result}",
            o.target,
            show(o.executions),
            show(rate(o)),
            o.seconds
        );
    }
}
