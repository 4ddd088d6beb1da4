//! `cargo xtask gpu-check`: on a host with an NVIDIA GPU and PyTorch, runs a
//! short CUDA workload under the tracer and prints what was attributed to it.
//! Hosts without a GPU get a clear message, not a failure of the test suite.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// Initialises CUDA, allocates, runs matmuls for `seconds`, synchronises.
const WORKLOAD: &str = r#"
import sys, time, torch
assert torch.cuda.is_available(), "CUDA not available to PyTorch"
dev = torch.device("cuda")
a = torch.randn(4096, 4096, device=dev)
b = torch.randn(4096, 4096, device=dev)
end = time.time() + float(sys.argv[1])
n = 0
while time.time() < end:
    c = a @ b
    n += 1
    if n % 50 == 0:
        torch.cuda.synchronize()
torch.cuda.synchronize()
print(f"workload: {n} matmuls of 4096x4096 on {torch.cuda.get_device_name(0)}")
"#;

pub fn run(tracer: &Path, python: &str, seconds: u32, out: &Path) -> Result<()> {
    if !Path::new("/dev/nvidiactl").exists() {
        bail!("no /dev/nvidiactl: this host has no NVIDIA driver loaded; gpu-check needs a GPU host");
    }
    let _ = std::fs::remove_file(out);
    let mut tracer_proc = Command::new(tracer)
        .args(["run", "--activity-interval", "2s", "-o"])
        .arg(out)
        .spawn()
        .with_context(|| format!("starting {}", tracer.display()))?;
    wait_for_started(out)?;

    let started = Instant::now();
    let status = Command::new(python)
        .arg("-c")
        .arg(WORKLOAD)
        .arg(seconds.to_string())
        .status()
        .with_context(|| format!("starting {python}"))?;
    let workload_s = started.elapsed().as_secs_f64();
    // SAFETY: signalling our own child.
    unsafe { libc_kill(tracer_proc.id() as i32, 2) };
    tracer_proc.wait()?;
    if !status.success() {
        bail!("the CUDA workload failed ({status})");
    }
    summarise(out, workload_s)
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn wait_for_started(out: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if std::fs::read_to_string(out).is_ok_and(|s| s.contains("\"status\":\"started\"")) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the tracer did not start within 60 s")
}

fn summarise(out: &Path, workload_s: f64) -> Result<()> {
    let file = std::fs::File::open(out)?;
    let mut opens = Vec::new();
    let mut ops: BTreeMap<(String, String), (u64, u64, u64, u64)> = BTreeMap::new();
    let mut summary: BTreeMap<String, u64> = BTreeMap::new();
    for line in BufReader::new(file).lines() {
        let r: Value = serde_json::from_str(&line?)?;
        let who = format!("{} ({})", r["process"]["comm"].as_str().unwrap_or("?"), r["process"]["pid"]);
        match r["kind"].as_str() {
            Some("gpu.open") => opens.push(format!("{who}: {} {}", r["gpu"]["device"], r["gpu"]["first_op"])),
            Some("gpu.activity") => {
                for (k, v) in r["gpu"]["summary"].as_object().into_iter().flatten() {
                    *summary.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
                }
                for d in r["gpu"]["devices"].as_array().into_iter().flatten() {
                    for o in d["ops"].as_array().into_iter().flatten() {
                        let e = ops
                            .entry((
                                d["driver"].as_str().unwrap_or("?").to_string(),
                                o["op"].as_str().unwrap_or("?").to_string(),
                            ))
                            .or_default();
                        e.0 += o["calls"].as_u64().unwrap_or(0);
                        e.1 += o["errors"].as_u64().unwrap_or(0);
                        e.2 += o["time_us"].as_u64().unwrap_or(0);
                        e.3 += o["bytes"].as_u64().unwrap_or(0);
                    }
                }
            }
            _ => {}
        }
    }
    println!("workload ran {workload_s:.1} s; records in {}", out.display());
    println!("\nfirst uses ({}):", opens.len());
    for o in &opens {
        println!("  {o}");
    }
    println!("\ntotals: {summary:?}");
    let mut by_calls: Vec<_> = ops.into_iter().collect();
    by_calls.sort_by_key(|e| std::cmp::Reverse(e.1.0));
    println!(
        "\n{:<12} {:<48} {:>8} {:>7} {:>10} {:>14}",
        "driver", "op", "calls", "errors", "time_us", "bytes"
    );
    for ((driver, op), (calls, errors, time_us, bytes)) in by_calls.iter().take(40) {
        println!("{driver:<12} {op:<48} {calls:>8} {errors:>7} {time_us:>10} {bytes:>14}");
    }
    // A CUDA workload opens the driver and makes calls that succeed; a
    // tracer that saw none of it, or only failures, missed the GPU.
    let (calls, errors) = by_calls.iter().fold((0, 0), |(c, e), (_, v)| (c + v.0, e + v.1));
    if opens.is_empty() {
        bail!("no gpu.open record: the workload's first driver call was not seen");
    }
    if calls == 0 || errors == calls {
        bail!("{calls} GPU driver calls attributed, {errors} of them failed: no successful call was seen");
    }
    println!(
        "
gpu-check: passed ({} first uses, {calls} driver calls, {errors} failed)",
        opens.len()
    );
    Ok(())
}

pub fn default_output() -> PathBuf {
    std::env::temp_dir().join("tracer-gpu-check.jsonl")
}
