//! `cargo xtask bench`: what tracing costs, measured side by side in one run
//! and reported as medians and ratios.
//!
//! 1. Syscall microbenchmark (a tight getppid loop): untraced, the default
//!    hook set (no syscall hook), `--syscalls` (the syscall hooks too, with
//!    the per-syscall histogram), and a bpftrace one-liner counting syscalls
//!    per process.
//! 2. nginx on loopback under wrk: requests/s, the same configurations.
//! 3. Connect storm from several threads: TCP connects to a loopback
//!    listener at rising rates; records delivered vs connects made, drops.
//!    3b. Process churn: fork + exec + exit of /bin/true, untraced and
//!    traced, so the process programs are measured warm.
//! 4. What a record costs in each output format and sink.
//! 5. The tracer's own CPU, resident memory and its maps' kernel memory,
//!    idle and under each load.
//! 6. Each kernel program's cost from the kernel's own statistics, per
//!    workload, against its budget. The statistics time every program run,
//!    so they are on only in rounds of their own (shown beside the others,
//!    which gives their own cost too) and in the connect storm. Under
//!    nginx, programs that do nothing on the same packet and switch hooks
//!    have rounds of their own: the floor the statistics put under every
//!    figure.
//!
//! Runs alternate configurations (A B C D, B C D A, …) so drift on a noisy
//! machine hits them all alike; medians are printed with their spread.
//! `--only SECTION` runs one of 1–4 alone, with its rows of 5 and 6.

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

pub struct Options {
    pub runs: usize,
    /// One section alone (the idle cost is measured only with all of them).
    pub only: Option<Section>,
    pub tracer: PathBuf,
    pub out_dir: PathBuf,
}

/// The sections `--only` can pick.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    /// 1. the syscall loop
    Syscalls,
    /// 2. nginx under wrk
    Nginx,
    /// 3. the connect storm
    Storm,
    /// 3b. process churn
    Churn,
    /// 4. what a record costs in each output format and sink
    Sinks,
}

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 }
}

pub(crate) fn sigint(pid: u32) {
    // SAFETY: signalling our own child.
    unsafe { libc_kill(pid as i32, 2) };
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
    #[link_name = "listen"]
    fn libc_listen(fd: i32, backlog: i32) -> i32;
    #[link_name = "setsockopt"]
    fn libc_setsockopt(fd: i32, level: i32, name: i32, value: *const core::ffi::c_void, len: u32) -> i32;
}

/// Closes a connection with a reset (SO_LINGER 0): no TIME_WAIT, so a storm
/// of hundreds of thousands of connects does not run out of local ports
/// (which, not the tracer, is what capped an earlier storm at ~5 000/s).
fn close_with_reset(s: TcpStream) {
    const SOL_SOCKET: i32 = 1;
    const SO_LINGER: i32 = 13;
    let linger: [i32; 2] = [1, 0];
    // SAFETY: a valid fd we own and a struct linger on the stack.
    unsafe {
        libc_setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            SOL_SOCKET,
            SO_LINGER,
            linger.as_ptr().cast(),
            size_of::<[i32; 2]>() as u32,
        )
    };
}

/// CPU seconds a live process has used: the scheduler's own account of
/// each of its threads (`/proc/PID/task/TID/schedstat`, nanoseconds), else
/// user + system time in clock ticks. Ticks are 10 ms: over a few seconds
/// of a process using a fifth of a core, one tick is a few per cent.
fn cpu_seconds(pid: u32) -> f64 {
    // A thread that ends between the listing and its read is left out (the
    // tracer's threads live as long as it does).
    let Ok(threads) = fs::read_dir(format!("/proc/{pid}/task")) else { return cpu_ticks_seconds(pid) };
    let ns: u64 = threads
        .flatten()
        .filter_map(|t| {
            let text = fs::read_to_string(t.path().join("schedstat")).ok()?;
            text.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum();
    if ns > 0 { ns as f64 / 1e9 } else { cpu_ticks_seconds(pid) }
}

/// User + system time from /proc/PID/stat, which counts exited threads too.
fn cpu_ticks_seconds(pid: u32) -> f64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return f64::NAN };
    let Some(rest) = stat.rsplit(')').next() else { return f64::NAN };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the comm.
    (ticks(11) + ticks(12)) / 100.0
}

pub(crate) fn rss_mib(pid: u32) -> f64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// A running tracer writing to a file.
struct Tracer {
    child: Child,
    out: PathBuf,
}

impl Tracer {
    fn start(bin: &Path, out: &Path, extra: &[&str]) -> Result<Self> {
        let _ = fs::remove_file(out);
        let child = Command::new(bin)
            .args(["run", "--health-interval", "1h", "--activity-interval", "5s", "-o"])
            .arg(out)
            .args(extra)
            .stdin(Stdio::null())
            .spawn()
            .context("starting the tracer")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if fs::read_to_string(out).is_ok_and(|s| s.contains("\"status\":\"started\"")) {
                return Ok(Self { child, out: out.to_path_buf() });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("tracer did not start")
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) -> Result<PathBuf> {
        sigint(self.child.id());
        self.child.wait()?;
        Ok(self.out.clone())
    }
}

/// bpftrace counting syscalls per process: the peer on the same mechanism.
struct Bpftrace(Child);

impl Bpftrace {
    fn start() -> Result<Self> {
        let mut child = Command::new("bpftrace")
            .args(["-e", "tracepoint:raw_syscalls:sys_enter { @[pid] = count(); }"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting bpftrace")?;
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        match lines.next() {
            Some(Ok(l)) if l.contains("Attaching") => {}
            other => bail!("bpftrace did not attach: {other:?}"),
        }
        // Keep draining so its final map dump cannot block it.
        std::thread::spawn(move || for _ in lines {});
        Ok(Self(child))
    }

    fn stop(mut self) -> Result<()> {
        sigint(self.0.id());
        self.0.wait()?;
        Ok(())
    }
}

/// The process the syscall benchmark times: `xtask syscall-loop N` prints
/// nanoseconds per call.
pub fn syscall_loop(n: u64) {
    let start = Instant::now();
    for _ in 0..n {
        // SAFETY: getppid has no preconditions.
        unsafe { libc_getppid() };
    }
    println!("{:.2}", start.elapsed().as_nanos() as f64 / n as f64);
}

unsafe extern "C" {
    #[link_name = "getppid"]
    fn libc_getppid() -> i32;
}

/// Runs /bin/true `n` times, each waited for.
fn spawn_true(n: u32) -> Result<()> {
    for _ in 0..n {
        let status = Command::new("/bin/true").status().context("running /bin/true")?;
        if !status.success() {
            bail!("/bin/true exited with {status}");
        }
    }
    Ok(())
}

fn run_loop(xtask: &Path, n: u64) -> Result<f64> {
    let out = Command::new(xtask).args(["syscall-loop", &n.to_string()]).output()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().context("syscall-loop output")
}

/// What runs beside the workload in a round. The kernel's per-program
/// statistics time every run of every program (two clock reads each), so
/// they are on only in rounds of their own: the overhead figures come from
/// rounds without them, the per-program costs from the `*Stats` rounds,
/// and the two side by side show what the statistics themselves cost.
#[derive(Clone, Copy, PartialEq)]
enum Config {
    Untraced,
    TracedDefault,
    TracedSyscalls,
    Bpftrace,
    DefaultStats,
    SyscallsStats,
    /// Programs that do nothing on the tracer's packet and switch hooks:
    /// what the statistics measure for no work (`empty_programs`).
    EmptyStats,
}

impl Config {
    fn label(self) -> &'static str {
        match self {
            Self::Untraced => "untraced",
            Self::TracedDefault => "tracer (default: no syscall hook)",
            Self::TracedSyscalls => "tracer --syscalls",
            Self::Bpftrace => "bpftrace raw_syscalls @[pid] = count()",
            Self::DefaultStats => "tracer (default), bpf_stats on",
            Self::SyscallsStats => "tracer --syscalls, bpf_stats on",
            Self::EmptyStats => "empty programs on the packet and switch hooks, bpf_stats on",
        }
    }

    fn stats(self) -> bool {
        matches!(self, Self::DefaultStats | Self::SyscallsStats | Self::EmptyStats)
    }
}

const LOOP_CONFIGS: [Config; 6] = [
    Config::Untraced,
    Config::TracedDefault,
    Config::TracedSyscalls,
    Config::Bpftrace,
    Config::DefaultStats,
    Config::SyscallsStats,
];
const WEB_CONFIGS: [Config; 6] = [
    Config::Untraced,
    Config::TracedDefault,
    Config::TracedSyscalls,
    Config::DefaultStats,
    Config::SyscallsStats,
    Config::EmptyStats,
];
const CHURN_CONFIGS: [Config; 3] = [Config::Untraced, Config::TracedDefault, Config::DefaultStats];

/// `median (min–max)` of a sample.
fn spread(v: &[f64], digits: usize) -> String {
    let mut v = v.to_vec();
    let m = median(&mut v);
    let (lo, hi) = (v.first().copied().unwrap_or(f64::NAN), v.last().copied().unwrap_or(f64::NAN));
    format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})")
}

/// Fewer runs a round than this: the program's runs are mostly cold.
const COLD_BELOW_RUNS: f64 = 1000.0;

/// Per program name, the ns per run of each round and the runs in it.
#[derive(Default)]
struct ProgramCosts(std::collections::BTreeMap<String, (Vec<f64>, Vec<f64>)>);

impl ProgramCosts {
    fn sample(&mut self, pid: u32) {
        let Ok(progs) = crate::bpf_stats::of_process(pid) else { return };
        for (name, r) in progs {
            if r.count == 0 {
                continue;
            }
            let e = self.0.entry(name).or_default();
            e.0.push(r.ns as f64 / r.count as f64);
            e.1.push(r.count as f64);
        }
    }

    fn table(&self, report: &mut String, title: &str) -> Result<()> {
        writeln!(report, "\n{title}\n")?;
        writeln!(
            report,
            "| program | runs per round (median) | ns per run (median, min–max) | CPU ms per round | budget |"
        )?;
        writeln!(report, "|---|---|---|---|---|")?;
        for (name, (ns, runs)) in &self.0 {
            let (mut ns_m, mut runs_m) = (ns.clone(), runs.clone());
            let (ns_med, runs_med) = (median(&mut ns_m), median(&mut runs_m));
            let budget = crate::bpf_stats::budget_ns(name);
            // A program on a hot path that ran a few hundred times in a
            // round ran cold (caches and branch predictors filled by the
            // workload): its figure is not its steady cost, and is marked
            // so. Event programs (connect, exec) are held to theirs however
            // often they ran.
            let steady = runs_med >= COLD_BELOW_RUNS || budget > 100;
            let verdict = match (ns_med <= budget as f64, steady) {
                (true, _) => format!("{budget} ns: within"),
                (false, true) => format!("{budget} ns: OVER"),
                (false, false) => format!("{budget} ns: over, few runs (cold)"),
            };
            // The bench's own empty programs are the floor, held to nothing.
            let verdict = if name.starts_with("empty_") { "- (the floor)".to_string() } else { verdict };
            writeln!(
                report,
                "| {name} | {runs_med:.0} | {} | {:.2} | {verdict} |",
                spread(ns, 0),
                ns_med * runs_med / 1e6
            )?;
        }
        Ok(())
    }
}

enum Running {
    None,
    Tracer(Tracer, Option<crate::bpf_stats::Enabled>),
    Bpftrace(Bpftrace),
    /// Held by this process, so their statistics are read from its fds.
    Empty(crate::empty_programs::EmptyPrograms, Option<crate::bpf_stats::Enabled>),
}

fn start(config: Config, opts: &Options, out: &Path) -> Result<Running> {
    let stats = if config.stats() { Some(crate::bpf_stats::enable()?) } else { None };
    let syscalls: &[&str] = &["--syscalls"];
    Ok(match config {
        Config::Untraced => Running::None,
        Config::TracedDefault | Config::DefaultStats => Running::Tracer(Tracer::start(&opts.tracer, out, &[])?, stats),
        Config::TracedSyscalls | Config::SyscallsStats => {
            Running::Tracer(Tracer::start(&opts.tracer, out, syscalls)?, stats)
        }
        Config::Bpftrace => Running::Bpftrace(Bpftrace::start()?),
        Config::EmptyStats => Running::Empty(crate::empty_programs::EmptyPrograms::attach()?, stats),
    })
}

fn stop(r: Running) -> Result<()> {
    match r {
        Running::None => Ok(()),
        Running::Empty(programs, stats) => {
            // Detached before the statistics go off.
            drop(programs);
            drop(stats);
            Ok(())
        }
        Running::Tracer(t, _stats) => t.stop().map(|_| ()),
        Running::Bpftrace(b) => b.stop(),
    }
}

fn tracer_pid(r: &Running) -> Option<u32> {
    match r {
        Running::Tracer(t, _) => Some(t.pid()),
        _ => None,
    }
}

/// One section's alternating rounds: per configuration (in the order
/// given), the workload's figure each round, and the program costs of the
/// statistics rounds.
struct Rounds {
    values: Vec<Vec<f64>>,
    programs: Vec<ProgramCosts>,
}

impl Rounds {
    /// Per round, `f(value of configuration i, value of configuration j)`.
    fn per_round(&self, i: usize, j: usize, f: impl Fn(f64, f64) -> f64) -> Vec<f64> {
        self.values[i].iter().zip(&self.values[j]).map(|(a, b)| f(*a, *b)).collect()
    }
}

/// Runs `measure` once per configuration per round, in rotating order (A B
/// C, B C A, …) so drift hits them all alike; the tracer's own cost is
/// sampled into `cost` in the default configuration's rounds.
fn alternate(
    opts: &Options,
    configs: &[Config],
    rounds: usize,
    out: &Path,
    cost: &mut Cost,
    mut measure: impl FnMut() -> Result<f64>,
) -> Result<Rounds> {
    let n = configs.len();
    let mut r = Rounds { values: vec![Vec::new(); n], programs: (0..n).map(|_| ProgramCosts::default()).collect() };
    for round in 0..rounds {
        for k in 0..n {
            let i = (k + round) % n;
            let running = start(configs[i], opts, out)?;
            let pid = tracer_pid(&running);
            let before = pid.map(cpu_seconds).unwrap_or(0.0);
            let t0 = Instant::now();
            let v = measure()?;
            if let (Some(pid), Config::TracedDefault) = (pid, configs[i]) {
                cost.sample(pid, before, t0.elapsed().as_secs_f64());
            }
            // The programs' holder: the tracer, or this process for the empty ones.
            let holder = if matches!(running, Running::Empty(..)) { Some(std::process::id()) } else { pid };
            if let (Some(holder), true) = (holder, configs[i].stats()) {
                r.programs[i].sample(holder);
            }
            stop(running)?;
            r.values[i].push(v);
        }
    }
    Ok(r)
}

/// The program tables of a section's statistics rounds.
fn program_tables(configs: &[Config], rounds: Rounds, what: &str, programs: &mut Vec<(String, ProgramCosts)>) {
    for (c, p) in configs.iter().zip(rounds.programs) {
        match c {
            Config::DefaultStats => programs.push((format!("{what}, default hooks"), p)),
            Config::SyscallsStats => programs.push((format!("{what}, --syscalls"), p)),
            Config::EmptyStats => programs
                .push((format!("{what}, empty programs on the same hooks (the statistics' floor)"), p)),
            _ => {}
        }
    }
}

/// Per-load tracer resource figures: CPU percent of one core, RSS MiB.
#[derive(Default)]
struct Cost {
    cpu_pct: Vec<f64>,
    rss_mib: Vec<f64>,
    maps_mib: Vec<f64>,
}

impl Cost {
    fn sample(&mut self, pid: u32, cpu_before: f64, wall: f64) {
        self.cpu_pct.push((cpu_seconds(pid) - cpu_before) / wall * 100.0);
        self.rss_mib.push(rss_mib(pid));
        self.maps_mib.push(maps_mib(pid));
    }
}

/// Kernel memory of the maps process `pid` holds: the sum of their
/// `memlock` (what the kernel charges for each map) from fdinfo.
fn maps_mib(pid: u32) -> f64 {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else { return f64::NAN };
    let bytes: u64 = fds
        .flatten()
        .filter(|fd| fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == "anon_inode:bpf-map"))
        .filter_map(|fd| fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy())).ok())
        .filter_map(|info| info.lines().find_map(|l| l.strip_prefix("memlock:"))?.trim().parse::<u64>().ok())
        .sum();
    bytes as f64 / (1024.0 * 1024.0)
}

pub fn run(opts: &Options) -> Result<()> {
    crate::setup::ensure_packages(&["bpftrace", "bpftool", "nginx", "wrk"])?;
    fs::create_dir_all(&opts.out_dir)?;
    let xtask = std::env::current_exe()?;
    let out = opts.out_dir.join("bench-records.jsonl");
    let mut report = String::new();
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    writeln!(
        report,
        "machine: {ncpu} CPUs, kernel {}",
        fs::read_to_string("/proc/sys/kernel/osrelease")?.trim()
    )?;
    writeln!(
        report,
        "runs per configuration: {} (medians; ratios are medians of per-round ratios)\n",
        opts.runs
    )?;

    let wanted = |s: Section| opts.only.is_none_or(|o| o == s);
    // Each load's tracer cost, for section 5; a section not run leaves its row out.
    let (mut idle, mut loop_cost, mut nginx_cost, mut storm_cost) =
        (Cost::default(), Cost::default(), Cost::default(), Cost::default());

    // 0. Idle cost.
    if opts.only.is_none() {
        let idle_wall = 5.0;
        let t = Tracer::start(&opts.tracer, &out, &[])?;
        let before = cpu_seconds(t.pid());
        std::thread::sleep(Duration::from_secs_f64(idle_wall));
        idle.sample(t.pid(), before, idle_wall);
        t.stop()?;
    }

    let mut programs: Vec<(String, ProgramCosts)> = Vec::new();

    // 1. Syscall microbenchmark.
    if wanted(Section::Syscalls) {
        const CALLS: u64 = 3_000_000;
        let configs = &LOOP_CONFIGS;
        let r = alternate(opts, configs, opts.runs, &out, &mut loop_cost, || run_loop(&xtask, CALLS))?;
        writeln!(report, "1. syscall loop ({CALLS} getppid calls)\n")?;
        writeln!(
            report,
            "| configuration | ns per syscall: median (min–max) | vs untraced: median (min–max) |"
        )?;
        writeln!(report, "|---|---|---|")?;
        for (i, c) in configs.iter().enumerate() {
            let ratio = r.per_round(i, 0, |t, u| t / u);
            writeln!(report, "| {} | {} | {} |", c.label(), spread(&r.values[i], 1), spread(&ratio, 3))?;
        }
        writeln!(
            report,
            "\nper round: tracer default / bpftrace {}; tracer --syscalls / bpftrace {}\n",
            spread(&r.per_round(1, 3, |a, b| a / b), 3),
            spread(&r.per_round(2, 3, |a, b| a / b), 3)
        )?;
        program_tables(configs, r, "syscall loop", &mut programs);
    }

    // 2. nginx + wrk.
    if wanted(Section::Nginx) {
        let nginx = Nginx::start(&opts.out_dir)?;
        let configs = &WEB_CONFIGS;
        let r = alternate(opts, configs, opts.runs, &out, &mut nginx_cost, || nginx.wrk(5))?;
        drop(nginx);
        writeln!(report, "2. nginx (1 worker) under wrk (1 thread, 16 connections, 5 s) on loopback\n")?;
        writeln!(
            report,
            "| configuration | requests/s: median (min–max) | cost, untraced / traced per round: median (min–max) |"
        )?;
        writeln!(report, "|---|---|---|")?;
        for (i, c) in configs.iter().enumerate() {
            let cost = r.per_round(0, i, |u, t| u / t);
            writeln!(report, "| {} | {} | {} |", c.label(), spread(&r.values[i], 0), spread(&cost, 3))?;
        }
        writeln!(report)?;
        program_tables(configs, r, "nginx + wrk", &mut programs);
    }

    // 3. Connect storm, from several threads.
    if wanted(Section::Storm) {
        const STORM_THREADS: u32 = 4;
        writeln!(
            report,
            "3. connect storm: TCP connects from {STORM_THREADS} threads to a loopback listener for 3 s, default ring buffer, bpf_stats on\n"
        )?;
        writeln!(
            report,
            "| target rate | achieved connects/s | refused or failed | records delivered | dropped | tracer CPU % |"
        )?;
        writeln!(report, "|---|---|---|---|---|---|")?;
        // What the generator reaches with nothing traced, for scale.
        let flat_out = connect_storm(&xtask, 200_000, 3, STORM_THREADS)?;
        writeln!(
            report,
            "| 200000, untraced | {:.0} | {} | - | - | - |",
            flat_out.achieved, flat_out.failed
        )?;
        let mut storm_progs = ProgramCosts::default();
        let mut drops_from = None;
        // One run per rate, so the statistics are on in all of them.
        let _stats = crate::bpf_stats::enable()?;
        for rate in [10_000u64, 25_000, 50_000, 100_000, 200_000] {
            let t = Tracer::start(&opts.tracer, &out, &[])?;
            let before = cpu_seconds(t.pid());
            let t0 = Instant::now();
            let storm = connect_storm(&xtask, rate, 3, STORM_THREADS)?;
            let wall = t0.elapsed().as_secs_f64();
            let cpu_pct = (cpu_seconds(t.pid()) - before) / wall * 100.0;
            storm_cost.sample(t.pid(), before, wall);
            storm_progs.sample(t.pid());
            let records = t.stop()?;
            let (delivered, dropped) = count_connects(&records, storm.pid, storm.port)?;
            if dropped > 0 && drops_from.is_none() {
                drops_from = Some(storm.achieved);
            }
            writeln!(
                report,
                "| {rate} | {:.0} | {} | {delivered} of {} | {dropped} | {cpu_pct:.1} |",
                storm.achieved, storm.failed, storm.made
            )?;
        }
        match drops_from {
            Some(r) => writeln!(report, "\ndrops begin at about {r:.0} connects/s")?,
            None => writeln!(report, "\nno drops at any rate reached")?,
        }
        programs.push(("connect storm, default hooks (one run per rate)".into(), storm_progs));
    }

    // 3b. Process churn: fork + exec + exit at the rate a shell loop makes
    // them, so those programs are measured warm, not at the odd start.
    if wanted(Section::Churn) {
        const SPAWNS: u32 = 2_000;
        let configs = &CHURN_CONFIGS;
        let r = alternate(opts, configs, opts.runs.min(5), &out, &mut Cost::default(), || {
            let t0 = Instant::now();
            spawn_true(SPAWNS)?;
            Ok(t0.elapsed().as_secs_f64() * 1e6 / f64::from(SPAWNS))
        })?;
        writeln!(
            report,
            "\n3b. process churn: {SPAWNS} fork + exec + exit of /bin/true, one after another\n"
        )?;
        writeln!(report, "| configuration | µs per process: median (min–max) | traced / untraced per round |")?;
        writeln!(report, "|---|---|---|")?;
        for (i, c) in configs.iter().enumerate() {
            let ratio = r.per_round(i, 0, |t, u| t / u);
            writeln!(report, "| {} | {} | {} |", c.label(), spread(&r.values[i], 0), spread(&ratio, 3))?;
        }
        program_tables(configs, r, "process churn", &mut programs);
    }

    // 4. What a record costs the tracer in each output format and sink.
    if wanted(Section::Sinks) {
        let (per_k, vs_native) = sink_costs(opts, &xtask, &out)?;
        writeln!(
            report,
            "\n4. output cost: tracer CPU per 1000 records during a 3 s connect storm at 5000/s (after a 1 s storm in which the tracer identified the generator's executable)\n"
        )?;
        writeln!(report, "| output | CPU ms per 1000 records (median) | vs native file |")?;
        writeln!(report, "|---|---|---|")?;
        for (i, (label, _)) in SINK_CONFIGS.iter().enumerate() {
            writeln!(
                report,
                "| {label} | {:.1} | {:.3} |",
                median(&mut per_k[i].clone()),
                median(&mut vs_native[i].clone())
            )?;
        }
    }

    let mut loads: Vec<(&str, &mut Cost)> = [
        ("idle", &mut idle),
        ("syscall loop", &mut loop_cost),
        ("nginx + wrk", &mut nginx_cost),
        ("connect storm", &mut storm_cost),
    ]
    .into_iter()
    .filter(|(_, c)| !c.cpu_pct.is_empty())
    .collect();
    if !loads.is_empty() {
        writeln!(
            report,
            "\n5. the tracer's own cost (CPU % of one core, resident MiB, kernel MiB of its maps; medians)\n"
        )?;
        writeln!(report, "| load | CPU % | RSS MiB | maps MiB (kernel) |")?;
        writeln!(report, "|---|---|---|---|")?;
    }
    for (name, c) in &mut loads {
        writeln!(
            report,
            "| {name} | {:.1} | {:.1} | {:.1} |",
            median(&mut c.cpu_pct),
            median(&mut c.rss_mib),
            median(&mut c.maps_mib)
        )?;
    }
    if !programs.is_empty() {
        writeln!(
            report,
            "\n6. each kernel program's cost (kernel.bpf_stats_enabled: run_time_ns / run_cnt of the tracer's programs, in the bpf_stats rounds)"
        )?;
    }
    for (title, costs) in &programs {
        costs.table(&mut report, title)?;
    }
    print!("{report}");
    let path = opts.out_dir.join("bench.md");
    fs::write(&path, &report)?;
    eprintln!("\nwritten to {}", path.display());
    Ok(())
}

/// Output configurations compared in the sink-cost section (the file sink
/// is always there; `{udp}` is a local port that drains datagrams).
const SINK_CONFIGS: [(&str, &[&str]); 4] = [
    ("native, file", &[]),
    ("ecs, file", &["--format", "ecs"]),
    ("ocsf, file", &["--format", "ocsf"]),
    ("native, file + syslog UDP (ecs)", &["--sink", "syslog+udp://{udp};format=ecs"]),
];

/// Per configuration: CPU ms per 1000 records, and the ratio to the native
/// file in the same round.
fn sink_costs(opts: &Options, xtask: &Path, out: &Path) -> Result<(Vec<Vec<f64>>, Vec<Vec<f64>>)> {
    let drain = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let udp = drain.local_addr()?.to_string();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while drain.recv(&mut buf).is_ok() {}
    });
    let n = SINK_CONFIGS.len();
    let (mut per_k, mut vs_native) = (vec![Vec::new(); n], vec![Vec::new(); n]);
    // Fewer rounds than the rest: each is a storm per output.
    for round in 0..opts.runs.min(5) {
        let mut this_round = vec![0.0; n];
        for k in 0..n {
            let i = (k + round) % n;
            let extra: Vec<String> = SINK_CONFIGS[i].1.iter().map(|a| a.replace("{udp}", &udp)).collect();
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            let t = Tracer::start(&opts.tracer, out, &extra)?;
            // A first, short storm: the tracer identifies the generator's
            // executable (reads, hashes and scans its 17 MB) once per start,
            // which is no record's cost; the records it made are not counted.
            connect_storm(xtask, 1_000, 1, 1)?;
            std::thread::sleep(Duration::from_millis(500));
            let lines =
                |path: &Path| -> Result<usize> { Ok(BufReader::new(fs::File::open(path)?).lines().count()) };
            let warm_up = lines(out)?;
            let before = cpu_seconds(t.pid());
            connect_storm(xtask, 5_000, 3, 1)?;
            let cpu = cpu_seconds(t.pid()) - before;
            let records = lines(&t.stop()?)?.saturating_sub(warm_up).max(1);
            this_round[i] = cpu * 1e6 / records as f64;
            per_k[i].push(this_round[i]);
        }
        for i in 0..n {
            vs_native[i].push(this_round[i] / this_round[0]);
        }
    }
    Ok((per_k, vs_native))
}

/// Counts the connect records of `pid` to `port`, and the final drop count.
fn count_connects(records: &Path, pid: u32, port: u16) -> Result<(u64, u64)> {
    let mut delivered = 0;
    let mut dropped = 0;
    for line in BufReader::new(fs::File::open(records)?).lines() {
        let r: serde_json::Value = serde_json::from_str(&line?)?;
        if r["kind"] == "network.connect" && r["process"]["pid"] == pid && r["connect"]["port"] == port {
            delivered += 1;
        }
        if r["kind"] == "tracer.health" && r["health"]["status"] == "final" {
            dropped = r["health"]["dropped"]["connect"].as_u64().unwrap_or(0);
        }
    }
    Ok((delivered, dropped))
}

/// What one `xtask connect-storm` run did.
struct Storm {
    /// Connects attempted, and of those refused or failed.
    made: u64,
    failed: u64,
    /// The generator's pid and its listener's port, to find its records.
    pid: u32,
    port: u16,
    /// Connects per second.
    achieved: f64,
}

/// Runs `xtask connect-storm` as its own process.
fn connect_storm(xtask: &Path, rate: u64, seconds: u64, threads: u32) -> Result<Storm> {
    let child = Command::new(xtask)
        .args(["connect-storm", &rate.to_string(), &seconds.to_string(), &threads.to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<f64> = text.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    let [made, port, achieved, failed] = v[..] else { bail!("connect-storm printed {text}") };
    Ok(Storm { made: made as u64, failed: failed as u64, pid, port: port as u16, achieved })
}

/// The storm itself: a listener thread accepts and closes; `threads`
/// threads connect and close, together at `rate` per second. Prints "made
/// port achieved failed".
pub fn storm(rate: u64, seconds: u64, threads: u32) -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    // A deep accept queue and a blocking accept: a full queue drops SYNs,
    // and each costs its connect a one-second retransmission.
    // SAFETY: the listener's own fd.
    unsafe { libc_listen(std::os::fd::AsRawFd::as_raw_fd(&listener), 4096) };
    let acceptor = std::thread::spawn(move || {
        while !stop2.load(Ordering::Relaxed) {
            if let Ok((s, _)) = listener.accept() {
                drop(s);
            }
        }
    });
    let threads = u64::from(threads.max(1));
    let start = Instant::now();
    let connectors: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let (per_thread, mut made, mut failed) = (rate / threads, 0u64, 0u64);
                let total = per_thread * seconds;
                while made < total {
                    let due = Duration::from_secs_f64(made as f64 / per_thread as f64);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                    // Every attempt is a connect the tracer must report,
                    // refused or not.
                    match TcpStream::connect(("127.0.0.1", port)) {
                        Ok(s) => close_with_reset(s),
                        Err(_) => failed += 1,
                    }
                    made += 1;
                    if start.elapsed() > Duration::from_secs(seconds * 3) {
                        break;
                    }
                }
                (made, failed)
            })
        })
        .collect();
    let (made, failed) = connectors
        .into_iter()
        .map(|c| c.join().unwrap_or((0, 0)))
        .fold((0, 0), |(m, f), (a, b)| (m + a, f + b));
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    // Wakes the acceptor so it sees the flag.
    let _ = TcpStream::connect(("127.0.0.1", port));
    acceptor.join().ok();
    println!("{made} {port} {:.0} {failed}", made as f64 / elapsed);
    Ok(())
}

/// nginx serving a fixed 200 on loopback, for wrk.
pub struct Nginx {
    child: Child,
    pub port: u16,
}

impl Nginx {
    pub fn start(dir: &Path) -> Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let prefix = dir.join("nginx");
        fs::create_dir_all(prefix.join("logs"))?;
        let conf = prefix.join("nginx.conf");
        fs::write(
            &conf,
            format!(
                "worker_processes 1;\ndaemon off;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log;\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{ access_log off; server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"ok\\n\"; }} }} }}\n",
                p = prefix.display()
            ),
        )?;
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf)
            .spawn()
            .context("starting nginx")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("nginx did not listen on {port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self { child, port })
    }

    fn wrk(&self, seconds: u32) -> Result<f64> {
        let out = Command::new("wrk")
            .args(["-t1", "-c16", &format!("-d{seconds}s"), &format!("http://127.0.0.1:{}/", self.port)])
            .output()
            .context("running wrk")?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.strip_prefix("Requests/sec:"))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("wrk output: {text}"))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        sigint(self.child.id());
        let _ = self.child.wait();
    }
}
