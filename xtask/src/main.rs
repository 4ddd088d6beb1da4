//! Project tasks: `cargo xtask setup | run | test | bench | eval | fuzz | soak | gpu-check`.
//!
//! `run` and `test` first make sure the toolchain that builds the kernel
//! programs is present (nightly with rust-src, bpf-linker built against
//! LLVM 22) and install what is missing; a second run only checks.

mod bench;
mod bpf_stats;
mod empty_programs;
mod eval;
mod fuzz;
mod gpu_check;
mod schemas;
mod setup;
mod soak;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Tasks for the tracer: set-up, run, test, bench, eval, fuzz, soak, gpu-check")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building the kernel programs needs (idempotent).
    Setup,
    /// Build the tracer (release) and run it as root. Arguments after `--`
    /// go to the tracer; with none, `run` traces the host until Ctrl-C.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test: unit tests and the end-to-end tests that load the
    /// real programs into this kernel (needs root). Extra arguments go to
    /// `cargo test`.
    Test {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure what tracing costs: syscall loop vs bpftrace, nginx under
    /// wrk, connect storms, the tracer's own CPU and memory. Prints a table
    /// and writes target/bench/bench.md.
    Bench {
        /// Rounds per configuration (medians are taken over them).
        #[arg(long, default_value_t = 9)]
        runs: usize,
        /// Only this section (with its kernel program costs).
        #[arg(long, value_enum)]
        only: Option<bench::Section>,
    },
    /// Run labelled real workloads under the tracer (mining against a local
    /// pool simulator, ML training and inference, heavy ordinary work) and
    /// print the confusion matrix, precision, recall and time to verdict.
    Eval {
        /// Only the cases whose name contains this (a quick look at a few;
        /// the targets are checked on the whole set).
        #[arg(long)]
        only: Option<String>,
    },
    /// Fuzz the parsers (first bytes, DNS, GPU ioctls, ring-buffer records,
    /// captures, sink specs, rules) with cargo-fuzz on nightly, each target
    /// from its committed corpus in tracer/fuzz/corpus/; prints executions
    /// and results per target. Installs cargo-fuzz if missing.
    Fuzz {
        /// Only this target (see tracer/fuzz/fuzz_targets/).
        #[arg(long)]
        target: Option<String>,
        /// Executions per target.
        #[arg(long, default_value_t = 1_000_000)]
        runs: u64,
        /// Stop each target after this many seconds, even before --runs.
        #[arg(long, value_name = "SECONDS")]
        max_time: Option<u64>,
    },
    /// Run the release tracer under pid churn (about a million short
    /// processes and 100 000 sessions per 30 minutes), sample its RSS and
    /// table sizes every 10 s, and say whether they stay flat. Writes
    /// target/soak/soak.md.
    Soak {
        #[arg(long, default_value_t = 30)]
        minutes: u64,
    },
    /// Boot Debian's kernels under QEMU (software emulation) and run the
    /// tracer on a fixed workload inside each; compare its records, field
    /// by field, with the same workload traced on this host. Prints one
    /// table: kernel, programs attached, fallbacks, checks passed.
    VmTest {
        /// 5.10, 6.1, 6.12 or all.
        #[arg(long, default_value = "6.1")]
        kernel: String,
    },
    /// (kernel matrix helper) Run the fixed workload under TRACER and print
    /// the records: what each guest runs as its init's job.
    #[command(hide = true)]
    VmGuest {
        #[arg(long, default_value = "/bin/tracer")]
        tracer: PathBuf,
    },
    /// (kernel matrix helper) One step of the fixed workload.
    #[command(hide = true)]
    VmWorkload { role: String },
    /// Reduce the official ECS 8.11.0 and OCSF 1.4.0 definitions (git
    /// clones of elastic/ecs and ocsf/ocsf-schema) to the files the format
    /// tests check against, in tests/fixtures/schemas/.
    Schemas {
        #[arg(long, value_name = "REPO")]
        ecs: PathBuf,
        #[arg(long, value_name = "REPO")]
        ocsf: PathBuf,
    },
    /// (benchmark helper) N getppid calls; prints ns per call.
    #[command(hide = true)]
    SyscallLoop { n: u64 },
    /// (benchmark helper) TCP connects to a loopback listener at RATE/s.
    #[command(hide = true)]
    ConnectStorm {
        rate: u64,
        seconds: u64,
        /// Connecting threads (the rate is shared among them).
        #[arg(default_value_t = 1)]
        threads: u32,
    },
    /// On an NVIDIA GPU host: run a short PyTorch CUDA workload under the
    /// tracer and print the GPU driver activity attributed to it.
    GpuCheck {
        /// Use this tracer binary instead of building one (e.g. on a host
        /// without the build toolchain).
        #[arg(long)]
        tracer: Option<PathBuf>,
        #[arg(long, default_value = "python3")]
        python: String,
        /// How long the workload runs.
        #[arg(long, default_value_t = 15)]
        seconds: u32,
        /// Where the tracer's records go.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.task {
        Task::Setup => setup::ensure_toolchain(),
        Task::Run { args } => {
            setup::ensure_toolchain()?;
            cargo(&root, &["build", "--release", "--package", "tracer"])?;
            let mut args = args;
            if args.is_empty() {
                args.push("run".into());
            }
            require_root("the tracer loads eBPF programs")?;
            let status = Command::new(root.join("target/release/tracer"))
                .args(&args)
                .status()
                .context("starting the tracer")?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Task::GpuCheck { tracer, python, seconds, output } => {
            require_root("the tracer loads eBPF programs")?;
            let tracer = match tracer {
                Some(t) => t,
                None => {
                    setup::ensure_toolchain()?;
                    cargo(&root, &["build", "--release", "--package", "tracer"])?;
                    root.join("target/release/tracer")
                }
            };
            gpu_check::run(&tracer, &python, seconds, &output.unwrap_or_else(gpu_check::default_output))
        }
        Task::Bench { runs, only } => {
            setup::ensure_toolchain()?;
            require_root("the tracer loads eBPF programs")?;
            cargo(&root, &["build", "--release", "--package", "tracer"])?;
            bench::run(&bench::Options {
                runs,
                only,
                tracer: root.join("target/release/tracer"),
                out_dir: root.join("target/bench"),
            })
        }
        Task::Eval { only } => {
            setup::ensure_toolchain()?;
            require_root("the tracer loads eBPF programs")?;
            cargo(&root, &["build", "--release", "--package", "tracer"])?;
            eval::run(&eval::Options { tracer: root.join("target/release/tracer"), root: root.clone(), only })
        }
        Task::Fuzz { target, runs, max_time } => {
            setup::ensure_rust_src()?;
            setup::ensure_cargo_fuzz()?;
            fuzz::run(&fuzz::Options { root: root.clone(), target, runs, max_time })
        }
        Task::Soak { minutes } => {
            setup::ensure_toolchain()?;
            require_root("the tracer loads eBPF programs")?;
            cargo(&root, &["build", "--release", "--package", "tracer"])?;
            let target =
                std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
            soak::run(&soak::Options {
                minutes: minutes.max(1),
                tracer: target.join("release/tracer"),
                root: root.clone(),
                out_dir: target.join("soak"),
            })
        }
        Task::VmTest { kernel } => {
            setup::ensure_toolchain()?;
            require_root("the tracer loads eBPF programs")?;
            setup::ensure_packages(vm::PACKAGES)?;
            cargo(&root, &["build", "--package", "tracer"])?;
            vm::run(&vm::Options::new(&root, &kernel)?)
        }
        Task::Schemas { ecs, ocsf } => schemas::run(&ecs, &ocsf, &root.join("tests/fixtures/schemas")),
        Task::VmGuest { tracer } => {
            // A guest that hangs says so and powers off, well before the
            // host gives up on it; the steps above the line show where.
            std::thread::spawn(|| {
                std::thread::sleep(vm::GUEST_WATCHDOG);
                eprintln!("vm-guest: stuck for {} s", vm::GUEST_WATCHDOG.as_secs());
                std::process::exit(vm::GUEST_STUCK);
            });
            print!("{}", vm::workload::run_traced(&tracer)?);
            Ok(())
        }
        Task::VmWorkload { role } => vm::workload::role(&role),
        Task::SyscallLoop { n } => {
            bench::syscall_loop(n);
            Ok(())
        }
        Task::ConnectStorm { rate, seconds, threads } => bench::storm(rate, seconds, threads),
        Task::Test { args } => {
            setup::ensure_toolchain()?;
            require_root("the end-to-end tests load eBPF programs")?;
            // The syslog sink is tested against a real rsyslogd, node
            // recognition against real Monero daemons, the metrics against
            // a real Prometheus server, the HTML report in a real browser.
            setup::ensure_packages(&["rsyslog", "monero", "prometheus", "chromium"])?;
            // Every test binary runs even after one fails, so the closing
            // line totals them all.
            let mut cmd = vec!["test", "--workspace", "--no-fail-fast"];
            cmd.extend(args.iter().map(String::as_str));
            let tests = cargo_test(&root, &cmd);
            // The README's platform, Debian 12's own kernel, under QEMU:
            // part of every full run; a filtered run is about the host.
            if !args.is_empty() {
                println!("kernel matrix: not run (the run was filtered); `cargo xtask vm-test` runs it");
                return tests;
            }
            let matrix = setup::ensure_packages(vm::PACKAGES)
                .and_then(|()| vm::run(&vm::Options::new(&root, vm::CI_KERNEL)?));
            match &matrix {
                Ok(()) => {
                    println!("kernel matrix: Linux {} under QEMU gave this host's records", vm::CI_KERNEL)
                }
                Err(e) => println!("kernel matrix: FAILED: {e:#}"),
            }
            tests.and(matrix)
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(root)
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Runs `cargo test`, echoing its output, and closes with one line that
/// totals every test binary's result.
fn cargo_test(root: &Path, args: &[&str]) -> Result<()> {
    use std::io::{BufRead as _, BufReader};
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Tests that could not test what they name on this host say so here
    // (tracer/src/testing.rs: skip); cargo would count them as passed.
    let skips_file = root.join("target/test-skips.txt");
    let _ = std::fs::remove_file(&skips_file);
    let mut child = Command::new(&cargo)
        .args(args)
        .current_dir(root)
        .env("TRACER_TEST_SKIPS", &skips_file)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(['.', ';']) {
                let mut words = part.split_whitespace();
                if let (Some(n), Some(what)) =
                    (words.next().and_then(|n| n.parse::<u64>().ok()), words.next())
                {
                    match what {
                        "passed" => passed += n,
                        "failed" => failed += n,
                        "ignored" => ignored += n,
                        _ => {}
                    }
                }
            }
        }
    }
    let status = child.wait()?;
    let skips = std::fs::read_to_string(&skips_file).unwrap_or_default();
    let skips: Vec<&str> = skips.lines().filter(|l| !l.is_empty()).collect();
    for skip in &skips {
        println!("skipped: {skip}");
    }
    let passed = passed.saturating_sub(skips.len() as u64);
    let skipped = ignored + skips.len() as u64;
    println!("tests: {passed} passed, {failed} failed, {skipped} skipped");
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Runs a command to completion; its stdout, or its stderr as the error.
fn stdout_of(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn require_root(why: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        bail!("run as root: {why}");
    }
    Ok(())
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
