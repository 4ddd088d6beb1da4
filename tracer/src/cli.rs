//! Command line.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tracer",
    version,
    about = "Trace which processes run, exit and connect where on this host, from the kernel, as JSON lines.",
    long_about = "Loads eBPF programs into the running kernel (root required) and writes one JSON \
object per line for every process exec, fork and exit and every socket connect, attributed to the \
process (unique id, parent lineage, executable, argv, user, cgroup/container). A periodic \
tracer.health record reports events read, records dropped and which hooks are attached."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace this host live until interrupted (Ctrl-C) or --duration ends.
    Run(RunArgs),
    /// Like run, writing a forensic capture to --output (gzip-compressed when
    /// the name ends in .gz), headed by a tracer.capture record.
    Record(RunArgs),
    /// Run the classifier offline over a capture; prints its classification
    /// records, the same as live.
    Replay(ReplayArgs),
    /// Print the host's current state (trees, containers, verdicts, use)
    /// from a running `tracer run --api`, as JSON.
    State(ClientArgs),
    /// Print records from a running `tracer run --api`: the latest ones,
    /// or with --follow every new one as it is written.
    Events(EventsArgs),
    /// Whether the tracer can do its job on this host: loads and attaches
    /// the programs as run does, then detaches them; checks outputs, sinks
    /// and rules. Exit status 1 when it cannot.
    Check(CheckArgs),
    /// Write one readable report (HTML or Markdown) of what the host did
    /// over a capture (classified offline, as replay does) or a log of run.
    Report(ReportArgs),
    /// A live terminal view of the host's trees and containers, their
    /// verdicts, evidence and use, from a running `tracer run --api` (or,
    /// when none answers, from a tracer of its own).
    Top(TopArgs),
}

#[derive(Debug, Args, Clone)]
pub struct TopArgs {
    /// The API socket of the running tracer; when nothing answers there,
    /// top traces the host itself (root required).
    #[arg(long, default_value = crate::service::api::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// How often the view is refreshed.
    #[arg(long, default_value = "1s", value_parser = parse_period)]
    pub interval: Duration,
    /// Print the table once as plain text and exit (also what a stdout that
    /// is not a terminal gets).
    #[arg(long, visible_alias = "snapshot")]
    pub once: bool,
}

#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// The API socket of the running tracer.
    #[arg(long, default_value = crate::service::api::DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

#[derive(Debug, Args, Clone)]
pub struct EventsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Keep printing records as they are written, until interrupted.
    #[arg(short, long)]
    pub follow: bool,
    /// Only these kinds (globs, comma-separated or repeated): classification,network.*
    #[arg(long, value_delimiter = ',')]
    pub kinds: Vec<String>,
    /// native, ecs or ocsf.
    #[arg(long, default_value = "native", value_parser = parse_format)]
    pub format: crate::output::formats::Format,
}

#[derive(Debug, Args, Clone)]
pub struct CheckArgs {
    /// The configuration file to check, and to take rules and sinks from
    /// (default: /etc/tracer/tracer.toml when it exists).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// One JSON object, `{"ok": …, "checks": [{name, status, detail, fallback?}]}`.
    #[arg(long)]
    pub json: bool,
    /// Extra rules to validate with the shipped ones, as for run.
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// An output file to check, as for run (opened for append, not written).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// A sink to check, as for run; repeat for several.
    #[arg(long = "sink", value_name = "SPEC")]
    pub sinks: Vec<String>,
    /// Also try the syscall hooks, as run --syscalls.
    #[arg(long)]
    pub syscalls: bool,
    /// The ring buffer size to try, as for run.
    #[arg(long, default_value_t = 4096)]
    pub ring_buffer_kib: u32,
}

#[derive(Debug, Args, Clone)]
pub struct ReportArgs {
    /// A capture (from record) or a log (run's native records), optionally
    /// gzip-compressed; `-` reads stdin.
    #[arg(value_name = "CAPTURE|LOG")]
    pub input: PathBuf,
    /// Write an HTML report to FILE (the same as --format html -o FILE).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["format", "output"])]
    pub html: Option<PathBuf>,
    /// md (Markdown, for tickets) or html. Default: md for an -o ending in
    /// .md, else html.
    #[arg(long, value_enum)]
    pub format: Option<crate::report::Format>,
    /// Write the report here instead of stdout.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Extra rules for classifying a capture, as for run.
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// For a capture: a host.summary every this much of its time, the
    /// charts' resolution; 0 draws them from activity records instead.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub summary_interval: Duration,
}

#[derive(Debug, Args, Clone)]
pub struct ReplayArgs {
    /// The capture (JSON lines, optionally gzip-compressed); `-` reads stdin.
    pub capture: PathBuf,
    /// Extra rules, as for run.
    #[arg(long)]
    pub rules: Option<PathBuf>,

    /// As for run: a host.summary record every this much of the capture's time.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub summary_interval: Duration,
}

#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Read options from this TOML file (keys are the long flag names;
    /// flags given here override it). Default: /etc/tracer/tracer.toml
    /// when it exists.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Stop after this long (e.g. 30s, 5m, 1h, 250ms). Default: run until SIGINT/SIGTERM.
    #[arg(long, value_parser = parse_period)]
    pub duration: Option<Duration>,

    /// Write records to this file (appended, created 0600) instead of
    /// stdout; the same as `--sink FILE`. A capture (`record`) is always native.
    #[arg(short, long)]
    pub output: Option<PathBuf>,

    /// Record format for sinks that name none: native (the tracer's own
    /// schema), ecs (Elastic Common Schema) or ocsf.
    #[arg(long, default_value = "native", value_parser = parse_format)]
    pub format: crate::output::formats::Format,

    /// Send records to a sink; repeat for several. TARGET[;OPTION=VALUE...]:
    /// a file path, `-` (stdout), syslog+udp://HOST:PORT, syslog+tcp://HOST:PORT,
    /// syslog+unix:///dev/log, or an http(s):// URL. Options: format, kinds
    /// (globs: classification,network.*); files: rotate_size, rotate_every,
    /// keep, compress, mode; syslog: facility, app_name, max_message, queue;
    /// http: shape (ndjson, splunk-hec, es-bulk), token, token_file, index,
    /// sourcetype, batch_records, batch_bytes, batch_age, spool, spool_max,
    /// timeout, ca_file. See the README.
    #[arg(long = "sink", value_name = "SPEC")]
    pub sinks: Vec<String>,

    /// At shutdown, how long network sinks may take to deliver what is
    /// queued (the HTTP spool keeps the rest for the next start).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Trace only this process and its descendants; repeat for several.
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Report only records whose thread name (comm) is this; repeat for several.
    #[arg(long = "comm", value_name = "NAME")]
    pub comms: Vec<String>,

    /// Trace only tasks in this cgroup v2 and the cgroups below it: a path
    /// (absolute, or relative to the cgroup2 mount) or a numeric cgroup id.
    #[arg(long, value_name = "PATH|ID")]
    pub cgroup: Option<String>,

    /// Interval between tracer.health records.
    #[arg(long, default_value = "10s", value_parser = parse_period)]
    pub health_interval: Duration,

    /// Also treat this device as a GPU: MAJOR[:MINOR]=VENDOR or /dev/PATH=VENDOR,
    /// VENDOR one of nvidia, nvidia-uvm, amd-kfd, amdgpu, i915, xe, other.
    /// NVIDIA, nvidia-uvm, kfd and DRM nodes are found without it.
    #[arg(long = "gpu-device", value_name = "SPEC")]
    pub gpu_devices: Vec<String>,

    /// Also attach the syscall hooks: syscall counts per process and number,
    /// exact file-open and rename watching (model files, checkpoints, MSR
    /// devices), hugetlb mmaps, setsid, and unix-socket connects. Every
    /// syscall on the host then takes the kernel's slower traced path (see
    /// the README's figures); without it the tracer hooks the scheduler and
    /// the socket layer only.
    #[arg(long)]
    pub syscalls: bool,

    /// With --syscalls: count syscalls per process only, not per process
    /// and syscall number (one map update per syscall instead of two).
    #[arg(long)]
    pub no_syscall_histogram: bool,

    /// Do not sample NVIDIA's management library (libnvidia-ml) even where present.
    #[arg(long)]
    pub no_nvml: bool,

    /// Keep every capability after the programs are attached. By default
    /// the tracer keeps only CAP_BPF, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH,
    /// CAP_DAC_OVERRIDE and CAP_SYS_NICE, and sets no_new_privs.
    #[arg(long)]
    pub keep_privileges: bool,

    /// Interval between activity records (process, tree, container, GPU).
    #[arg(long, default_value = "5s", value_parser = parse_period)]
    pub activity_interval: Duration,

    /// Extra classification rules (TOML) added to the shipped ones; see
    /// rules/default.toml for the format.
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,

    /// Do not classify workloads (no classification records).
    #[arg(long)]
    pub no_classify: bool,

    /// Interval between host.summary records (the host's CPU, GPU and
    /// network by category); 0 for none.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub summary_interval: Duration,

    /// Serve the local API on this Unix socket (root only): the host's
    /// state, live records, health and metrics; see `tracer state`,
    /// `tracer events`, `tracer top`.
    #[arg(long, value_name = "SOCKET", num_args = 0..=1, default_missing_value = crate::service::api::DEFAULT_SOCKET)]
    pub api: Option<PathBuf>,

    /// Serve Prometheus metrics over HTTP at this address (e.g.
    /// 127.0.0.1:9464; GET /metrics). Off by default.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,

    /// Size of the kernel-to-user ring buffer in KiB (a power of two, at least one page).
    #[arg(long, default_value_t = 4096)]
    pub ring_buffer_kib: u32,
}

fn parse_format(s: &str) -> Result<crate::output::formats::Format, String> {
    s.parse()
}

/// Longest duration accepted: ten years. Anything longer is a typo, and
/// far larger values overflow `Duration` and the clock's deadlines.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Parses `250ms`, `30s`, `5m`, `1h`, or plain seconds (`2.5`), from zero
/// up to [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let value: f64 =
        num.trim().parse().map_err(|_| format!("`{s}` is not a duration like 30s, 5m or 250ms"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("`{s}` is not a non-negative duration"));
    }
    let secs = value * scale;
    if secs > MAX_DURATION.as_secs_f64() {
        return Err(format!("`{s}` is too long: at most {}h (ten years)", MAX_DURATION.as_secs() / 3600));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A duration that must be more than zero: a period (a zero period would
/// spin, and tokio's interval panics on it) or a time limit.
pub fn parse_period(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("`{s}` must be more than zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2.5").unwrap(), Duration::from_millis(2500));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn absurd_durations_are_errors_not_panics() {
        for s in ["1e20", "1e20s", "1e19", "11y", "inf", "NaN", "1e300h"] {
            assert!(parse_duration(s).is_err(), "{s}");
        }
        let e = parse_duration("1e20").unwrap_err();
        assert!(e.contains("at most"), "{e}");
        // Ten years still parses, and a deadline that far away is representable.
        let ten_years = parse_duration("87600h").unwrap();
        assert!(std::time::Instant::now().checked_add(ten_years).is_some());
        assert!(tokio::time::Instant::now().checked_add(ten_years).is_some());
    }

    #[test]
    fn zero_intervals_are_cli_errors() {
        use clap::Parser as _;
        for flag in ["--activity-interval", "--health-interval", "--duration"] {
            for zero in ["0", "0s", "0ms", "1e-12s"] {
                let e = Cli::try_parse_from(["tracer", "run", flag, zero]).unwrap_err();
                assert!(e.to_string().contains("more than zero"), "{flag} {zero}: {e}");
            }
        }
        // Waiting no time at shutdown is a choice, not a mistake.
        let cli = Cli::try_parse_from(["tracer", "run", "--shutdown-grace", "0"]).unwrap();
        let Command::Run(args) = cli.command else { panic!("not run") };
        assert_eq!(args.shutdown_grace, Duration::ZERO);
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
