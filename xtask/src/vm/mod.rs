//! The kernel matrix: Debian's kernels booted under QEMU (software
//! emulation: this host's KVM cannot run nested guests), each running the
//! tracer on the fixed workload (see `workload`) from an initramfs, with
//! loopback networking only. The records each guest writes are reduced to
//! facts (see `compare`) and compared with the same workload traced on
//! this host. One table: per kernel, what attached, what fell back to
//! what, what is missing, and how many facts matched.

mod compare;
mod initramfs;
mod kernels;
pub mod workload;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// What the matrix runs with: QEMU, and a static busybox for the guest.
/// (Debian 12's QEMU replaces a newer backported qemu-utils where one is
/// installed; asking for qemu-utils keeps `qemu-img` on the machine.)
pub const PACKAGES: &[&str] = &["qemu-system-x86", "qemu-utils", "busybox-static"];
/// The kernel every full test run boots: Debian 12's, the README's platform.
pub const CI_KERNEL: &str = "6.1";

pub struct Options {
    /// The tracer under test (debug build: what the tests use).
    pub tracer: PathBuf,
    pub work: PathBuf,
    pub kernels: Vec<&'static kernels::Series>,
}

impl Options {
    pub fn new(root: &Path, kernel: &str) -> Result<Self> {
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
        let kernels = if kernel == "all" {
            kernels::SERIES.iter().collect()
        } else {
            kernel.split(',').map(kernels::series).collect::<Result<_>>()?
        };
        Ok(Self { tracer: target.join("debug/tracer"), work: target.join("vm"), kernels })
    }
}

/// What one kernel's run gave.
struct Row {
    kernel: String,
    release: String,
    seconds: f64,
    programs: Vec<Program>,
    diff: Option<compare::Diff>,
    error: Option<String>,
    /// Why the kernel was booted a second time (`boot_again_if_stuck`).
    booted_again: Option<String>,
}

struct Program {
    name: String,
    hook: String,
    attached: bool,
    replaces: Option<String>,
    error: String,
}

/// A guest gets this long to boot, load, run and power off.
const GUEST_TIMEOUT: Duration = Duration::from_secs(480);

/// The guest's own limit on its run (it takes 10-20 s), and the exit
/// status it reports when it gives up.
pub const GUEST_WATCHDOG: Duration = Duration::from_secs(240);
pub const GUEST_STUCK: i32 = 124;

pub fn run(opts: &Options) -> Result<()> {
    std::fs::create_dir_all(&opts.work)?;
    let started = Instant::now();
    let host_records = workload::run_traced(&opts.tracer).context("the workload on this host")?;
    let host = parse(&host_records);
    let expected = compare::facts(&host);
    write_facts(&opts.work.join("facts-host.txt"), &expected)?;
    let mut rows = vec![Row {
        kernel: "host".into(),
        release: uname_r(),
        seconds: started.elapsed().as_secs_f64(),
        programs: programs(&host),
        diff: Some(compare::diff(&expected, &expected)),
        error: None,
        booted_again: None,
    }];
    if expected.is_empty() {
        bail!("the workload traced on this host gave no records to compare");
    }

    let xtask = std::env::current_exe()?;
    let image = initramfs::build(&opts.tracer, &xtask, &opts.work.join("bin"))?;
    let initrd = opts.work.join("initramfs.cpio");
    std::fs::write(&initrd, image)?;
    let mut fetcher = kernels::Fetcher::new(&opts.work.join("kernels"));
    for series in &opts.kernels {
        let row = match fetcher.fetch(series) {
            Ok(kernel) => boot_again_if_stuck(&opts.work.join(format!("run-{}", series.name)), || {
                boot(opts, series.name, &kernel, &initrd, &expected)
            }),
            Err(e) => Row {
                kernel: series.name.into(),
                release: "?".into(),
                seconds: 0.0,
                programs: Vec::new(),
                diff: None,
                error: Some(format!("fetching the kernel: {e:#}")),
                booted_again: None,
            },
        };
        rows.push(row);
    }
    let report = report(&rows);
    print!("{report}");
    std::fs::write(opts.work.join("vm-test.md"), &report)?;
    let failed: Vec<_> = rows
        .iter()
        .filter(|r| {
            r.error.is_some() || r.diff.as_ref().is_none_or(|d| !d.missing.is_empty() || !d.extra.is_empty())
        })
        .map(|r| r.kernel.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("kernel matrix: {} did not give this host's records (details above)", failed.join(", "));
    }
    Ok(())
}

/// A boot that hung (the guest stuck, or silent past the host's limit) is
/// booted once more: software emulation on a loaded 2-core host has hung
/// once in many boots with nothing in the tracer's records to show for it.
/// The row says so, and the first boot's console is kept beside the
/// second's (in `dir`, the boot's folder); any other failure stands as it is.
fn boot_again_if_stuck(dir: &Path, boot: impl Fn() -> Row) -> Row {
    let first = boot();
    let hung =
        |e: &str| e.contains("did not finish within") || e.contains(&format!("exit Some(\"{GUEST_STUCK}\")"));
    let Some(error) = first.error.clone().filter(|e| hung(e)) else { return first };
    let kept = dir.join("console-first-boot.txt");
    let _ = std::fs::rename(dir.join("console.txt"), &kept);
    let mut second = boot();
    second.seconds += first.seconds;
    second.booted_again = Some(format!("{error} (console: {})", kept.display()));
    second
}

fn boot(
    opts: &Options,
    name: &str,
    kernel: &kernels::Kernel,
    initrd: &Path,
    expected: &std::collections::BTreeMap<String, usize>,
) -> Row {
    let dir = opts.work.join(format!("run-{name}"));
    let started = Instant::now();
    let mut row = Row {
        kernel: name.into(),
        release: kernel.release.clone(),
        seconds: 0.0,
        programs: Vec::new(),
        diff: None,
        error: None,
        booted_again: None,
    };
    let result = (|| -> Result<Vec<Value>> {
        std::fs::create_dir_all(&dir)?;
        let console = dir.join("console.txt");
        let records = dir.join("records.jsonl");
        let mut qemu = Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-cpu", "max", "-m", "2048", "-smp", "2"])
            .args(["-nodefaults", "-display", "none", "-no-reboot", "-nic", "none"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-serial")
            .arg(format!("file:{}", records.display()))
            .arg("-kernel")
            .arg(&kernel.vmlinuz)
            .arg("-initrd")
            .arg(initrd)
            // Warnings and errors on the console (a hung task, an RCU stall), not the boot chatter.
            .args(["-append", "console=ttyS0 loglevel=5 panic=-1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting qemu-system-x86_64")?;
        loop {
            if qemu.try_wait()?.is_some() {
                break;
            }
            if started.elapsed() > GUEST_TIMEOUT {
                let _ = qemu.kill();
                let _ = qemu.wait();
                bail!(
                    "the guest did not finish within {} s (console: {})",
                    GUEST_TIMEOUT.as_secs(),
                    console.display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let log = String::from_utf8_lossy(&std::fs::read(&console)?).into_owned();
        let status = log.lines().find_map(|l| l.trim().strip_prefix("vm-guest: exit ")).map(str::trim);
        if status != Some("0") {
            let tail: Vec<_> = log.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
            bail!("the guest's workload failed (exit {status:?}); console:\n{}", tail.join("\n"));
        }
        Ok(parse(&String::from_utf8_lossy(&std::fs::read(&records)?)))
    })();
    row.seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(records) => {
            row.programs = programs(&records);
            let got = compare::facts(&records);
            let _ = write_facts(&dir.join("facts.txt"), &got);
            row.diff = Some(compare::diff(expected, &got));
        }
        Err(e) => row.error = Some(format!("{e:#}")),
    }
    row
}

/// JSON lines; the serial port may add carriage returns and the console
/// noise around them.
fn parse(text: &str) -> Vec<Value> {
    text.lines().filter_map(|l| serde_json::from_str(l.trim_end_matches('\r')).ok()).collect()
}

/// The programs the final health record lists.
fn programs(records: &[Value]) -> Vec<Program> {
    let health = records.iter().rev().find(|r| r["kind"] == "tracer.health");
    let list = health.and_then(|h| h.pointer("/health/programs")).and_then(Value::as_array);
    list.into_iter()
        .flatten()
        .map(|p| Program {
            name: p["program"].as_str().unwrap_or("?").into(),
            hook: p["hook"].as_str().unwrap_or("?").into(),
            attached: p["attached"].as_bool().unwrap_or(false),
            replaces: p["replaces"].as_str().map(str::to_string),
            error: p["error"].as_str().unwrap_or("").lines().next().unwrap_or("").into(),
        })
        .collect()
}

/// The facts a run gave, one per line, for a person comparing by hand.
fn write_facts(path: &Path, facts: &std::collections::BTreeMap<String, usize>) -> Result<()> {
    let text: String = facts.iter().map(|(f, n)| format!("{n}× {f}\n")).collect();
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn uname_r() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string()
}

fn report(rows: &[Row]) -> String {
    let mut out = String::from(
        "\n## Kernel matrix (fixed workload; facts: records compared with this host's, field by field)\n\n\
         | kernel | release | run (s) | programs attached | fell back | not attached | facts matched |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let attached = r.programs.iter().filter(|p| p.attached).count();
        // "sock_send_length → kprobe:… + kretprobe:…", once per replaced program.
        let mut fallbacks: Vec<(String, Vec<String>)> = Vec::new();
        for p in r.programs.iter().filter(|p| p.attached) {
            let Some(replaced) = &p.replaces else { continue };
            match fallbacks.iter_mut().find(|(name, _)| name == replaced) {
                Some((_, hooks)) => hooks.push(p.hook.clone()),
                None => fallbacks.push((replaced.clone(), vec![p.hook.clone()])),
            }
        }
        let fallbacks: Vec<_> =
            fallbacks.iter().map(|(name, hooks)| format!("{name} → {}", hooks.join(" + "))).collect();
        let replaced: Vec<_> =
            r.programs.iter().filter(|p| p.attached).filter_map(|p| p.replaces.as_deref()).collect();
        let missing: Vec<_> = r
            .programs
            .iter()
            .filter(|p| !p.attached && !replaced.contains(&p.name.as_str()))
            .map(|p| p.name.clone())
            .collect();
        let facts = match (&r.diff, &r.error) {
            (_, Some(_)) => "error".to_string(),
            (Some(d), None) => format!(
                "{}/{}{}",
                d.matched,
                d.expected,
                if d.extra.is_empty() { String::new() } else { format!(" (+{} extra)", d.extra.len()) }
            ),
            (None, None) => "-".into(),
        };
        out.push_str(&format!(
            "| {} | {} | {:.0} | {}/{} | {} | {} | {} |\n",
            r.kernel,
            r.release,
            r.seconds,
            attached,
            r.programs.len(),
            if fallbacks.is_empty() { "-".into() } else { fallbacks.join(", ") },
            if missing.is_empty() { "-".into() } else { missing.join(", ") },
            facts,
        ));
    }
    for r in rows {
        if let Some(e) = &r.booted_again {
            out.push_str(&format!("\n{}: booted a second time, the first boot hung: {e}\n", r.kernel));
        }
        if let Some(e) = &r.error {
            out.push_str(&format!("\n{}: {e}\n", r.kernel));
        }
        for p in r.programs.iter().filter(|p| !p.attached && !p.error.is_empty()) {
            out.push_str(&format!("\n{} {}: {}", r.kernel, p.name, p.error));
        }
        if let Some(d) = &r.diff {
            for m in &d.missing {
                out.push_str(&format!("\n{} missing: {m}", r.kernel));
            }
            for x in &d.extra {
                out.push_str(&format!("\n{} extra: {x}", r.kernel));
            }
        }
    }
    out.push('\n');
    out
}
