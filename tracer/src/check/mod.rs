//! `tracer check`: whether the tracer can do its job on this host. The
//! programs are really loaded and attached, as `run` does, and detached
//! again; outputs, sinks and rules are checked as `run` would use them.
//! Each finding is a row: ok, warn (the tracer runs, with less) or fail
//! (it cannot do its main job).

mod probes;
mod table;

use std::{path::Path, time::Instant};

use anyhow::{Result, anyhow};
use serde::Serialize;

use crate::{
    classify::rules::Rules,
    cli::CheckArgs,
    gpu::{devices, nvml::Nvml},
    kernel::{AttachStatus, Kernel, LoadOptions, ProgramCounts, btf, stand_ins, tracefs},
    output::{formats::Format, sink::spec::Target},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    pub status: Status,
    pub detail: String,
    /// What the tracer uses instead of what is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

impl Row {
    pub fn new(name: impl Into<String>, status: Status, detail: impl Into<String>) -> Self {
        Self { name: name.into(), status, detail: detail.into(), fallback: None }
    }

    pub fn instead(mut self, fallback: impl Into<String>) -> Self {
        self.fallback = Some(fallback.into());
        self
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<Row>,
}

impl Report {
    pub fn new(checks: Vec<Row>) -> Self {
        Self { ok: checks.iter().all(|r| r.status != Status::Fail), checks }
    }

    /// The last line: why the tracer cannot run here, or that it can.
    pub fn verdict(&self) -> String {
        let failed: Vec<_> = self
            .checks
            .iter()
            .filter(|r| r.status == Status::Fail)
            .map(|r| format!("{}: {}", r.name, table::shorten(&r.detail, 120)))
            .collect();
        if failed.is_empty() {
            let warnings = self.checks.iter().filter(|r| r.status == Status::Warn).count();
            format!("the tracer can run on this host ({warnings} warning(s))")
        } else {
            format!("the tracer cannot do its job on this host: {}", failed.join("; "))
        }
    }
}

pub fn run(args: &CheckArgs) -> Result<()> {
    let report = Report::new(checks(args));
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", table::render(&report.checks));
    }
    if report.ok {
        if !args.json {
            println!("{}", report.verdict());
        }
        Ok(())
    } else {
        // main prints it as the last line and exits with status 1.
        Err(anyhow!(report.verdict()))
    }
}

/// The configuration file run would read (--config, or the default one
/// when it exists): its row, and check's arguments with what the file sets
/// and the command line does not (rules, outputs, sinks, ring size).
fn configured(args: &CheckArgs) -> (Option<Row>, CheckArgs) {
    let path = match &args.config {
        Some(p) => p.clone(),
        None if Path::new(crate::config::DEFAULT_PATH).exists() => crate::config::DEFAULT_PATH.into(),
        None => return (None, args.clone()),
    };
    let argv = ["tracer".into(), "run".into(), "--config".into(), path.clone().into_os_string()];
    match crate::config::parse_args(argv.to_vec()) {
        Ok(crate::cli::Cli { command: crate::cli::Command::Run(run) }) => {
            let mut merged = args.clone();
            merged.rules = args.rules.clone().or(run.rules);
            if args.output.is_none() && args.sinks.is_empty() {
                (merged.output, merged.sinks) = (run.output, run.sinks);
            }
            if args.ring_buffer_kib == 4096 {
                merged.ring_buffer_kib = run.ring_buffer_kib;
            }
            merged.syscalls |= run.syscalls;
            let row = Row::new(
                "config",
                Status::Ok,
                format!("{}: valid; its rules and sinks are checked below", path.display()),
            );
            (Some(row), merged)
        }
        Ok(_) => unreachable!("parsed as run"),
        Err(e) => {
            let first = crate::config::reason(&e);
            (Some(Row::new("config", Status::Fail, first)), args.clone())
        }
    }
}

fn checks(args: &CheckArgs) -> Vec<Row> {
    let (config, args) = configured(args);
    let args = &args;
    let mut rows = vec![probes::privileges(), probes::kernel_version()];
    rows.extend(config);
    rows.extend(probes::sysctls());
    let btf = btf_row();
    rows.push(btf.0);
    let tracefs_before = tracefs::mounted();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    rows.push(probes::cgroups(&mountinfo));
    rows.extend(programs(args, &btf.1, tracefs_before, &mountinfo));
    rows.extend(gpu());
    rows.push(rules(args.rules.as_deref()));
    rows.extend(outputs(args));
    rows
}

/// The BTF row, and the fields it could not find (the load reports them too).
fn btf_row() -> (Row, Vec<String>) {
    let name = "BTF";
    let path = Path::new(btf::VMLINUX_BTF);
    if !path.exists() {
        return (
            Row::new(name, Status::Warn, format!("no {}", path.display())).instead(
                "the probe-read programs in place of the tp_btf ones; struct fields unknown, \
                 their enrichments off",
            ),
            Vec::new(),
        );
    }
    match btf::resolve(path) {
        Ok(r) if r.missing.is_empty() => (
            Row::new(name, Status::Ok, format!("{} parsed, every kernel field found", path.display())),
            r.missing,
        ),
        Ok(r) => (
            Row::new(
                name,
                Status::Warn,
                format!("{} parsed; fields not found: {}", path.display(), r.missing.join("; ")),
            )
            .instead("the enrichments that read these fields are off"),
            r.missing,
        ),
        Err(e) => (
            Row::new(name, Status::Warn, format!("{e:#}"))
                .instead("the probe-read programs; struct fields unknown, their enrichments off"),
            Vec::new(),
        ),
    }
}

/// Hook groups: (row name, programs, those the tracer cannot do without).
/// Fallbacks are counted in the group of the program they replace.
const GROUPS: &[(&str, &[&str], &[&str])] = &[
    (
        "process hooks",
        &["sched_process_exec", "sched_process_fork", "sched_process_exit", "sched_process_free"],
        &["sched_process_exec", "sched_process_fork", "sched_process_exit"],
    ),
    ("scheduler hook", &["sched_switch_btf"], &["sched_switch_btf"]),
    (
        "socket hooks",
        &[
            "connect4",
            "connect6",
            "inet_sock_set_state",
            "getpeername4",
            "getpeername6",
            "sendmsg4",
            "sendmsg6",
            "sock_release",
            "post_bind4",
            "post_bind6",
        ],
        &["connect4", "connect6", "inet_sock_set_state"],
    ),
    ("packet hooks", &["skb_egress", "skb_ingress"], &[]),
    ("FPU hook", &["fpu_regs_deactivated_btf"], &[]),
    (
        "file hooks",
        &["device_access", "sysctl_access", "dirty_inode", "file_read_btf", "file_fault_btf", "file_map_pages_btf"],
        &[],
    ),
    ("GPU ioctl hooks", &["sys_enter_ioctl", "sys_exit_ioctl"], &[]),
];

/// The group a program's row goes in: its own, or that of what it replaces.
fn group_of(attach: &[AttachStatus], a: &AttachStatus) -> &'static str {
    let mut program = a.program;
    let mut replaces = a.replaces;
    // Up the fallback chain to the program the kernel was first asked for.
    for _ in 0..attach.len() {
        let Some(r) = replaces else { break };
        program = r;
        replaces = attach.iter().find(|x| x.program == r).and_then(|x| x.replaces);
    }
    GROUPS
        .iter()
        .find(|(_, programs, _)| programs.contains(&program))
        .map_or(if a.syscall_level { "syscall hooks" } else { "other hooks" }, |(name, _, _)| name)
}

fn essential(program: &str) -> bool {
    GROUPS.iter().any(|(_, _, e)| e.contains(&program))
}

/// Rows from the programs' outcomes: one per hook group, and one per
/// program that failed (with what stands in for it).
pub fn hook_rows(attach: &[AttachStatus]) -> Vec<Row> {
    let mut names: Vec<&str> = GROUPS.iter().map(|g| g.0).collect();
    names.extend(["syscall hooks", "other hooks"]);
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for name in names {
        let members: Vec<_> = attach.iter().filter(|a| group_of(attach, a) == name).collect();
        if members.is_empty() {
            continue;
        }
        let asked: Vec<_> = members.iter().filter(|a| a.replaces.is_none()).collect();
        let attached: Vec<_> = asked.iter().filter(|a| a.attached).map(|a| a.program).collect();
        let skipped: Vec<_> = asked.iter().filter(|a| a.skipped()).collect();
        let (mut fell_back, mut missing, mut essential_missing) = (Vec::new(), Vec::new(), Vec::new());
        for a in asked.iter().filter(|a| a.failed()) {
            let instead = stand_ins(attach, a.program);
            if instead.is_empty() {
                missing.push(a.program);
                if essential(a.program) {
                    essential_missing.push(a.program);
                }
            } else {
                fell_back.push(format!(
                    "{} in place of {}",
                    instead
                        .iter()
                        .map(|s| format!("{} ({})", s.program, s.hook))
                        .collect::<Vec<_>>()
                        .join(", "),
                    a.program
                ));
            }
        }
        for a in members.iter().filter(|a| a.failed()) {
            let status = if essential_missing.contains(&a.program) { Status::Fail } else { Status::Warn };
            let mut row = Row::new(
                format!("program {}", a.program),
                status,
                format!("{}: {}", a.hook, a.error.as_deref().unwrap_or("not attached")),
            );
            let instead = stand_ins(attach, a.program);
            if !instead.is_empty() {
                row = row.instead(instead.iter().map(|s| s.program).collect::<Vec<_>>().join(", "));
            }
            failures.push(row);
        }
        let status = if !essential_missing.is_empty() {
            Status::Fail
        } else if !fell_back.is_empty() || !missing.is_empty() {
            Status::Warn
        } else {
            Status::Ok
        };
        let mut detail = Vec::new();
        if !attached.is_empty() {
            detail.push(format!("attached: {}", attached.join(", ")));
        }
        if !missing.is_empty() {
            detail.push(format!("could not attach: {}", missing.join(", ")));
        }
        if !skipped.is_empty() {
            let mut why: Vec<_> = skipped.iter().filter_map(|a| a.error.as_deref()).collect();
            why.dedup();
            detail.push(format!("{} left out ({})", skipped.len(), why.join("; ")));
        }
        let mut row = Row::new(name, status, detail.join("; "));
        if !fell_back.is_empty() {
            row = row.instead(fell_back.join("; "));
        }
        rows.push(row);
    }
    rows.extend(failures);
    rows
}

/// Loads and attaches the programs as `run` does, reads what attached,
/// then detaches them.
fn programs(
    args: &CheckArgs,
    btf_missing: &[String],
    tracefs_before: Option<std::path::PathBuf>,
    mountinfo: &str,
) -> Vec<Row> {
    let mut rows = Vec::new();
    let ring_bytes = args.ring_buffer_kib.checked_mul(1024);
    let opts = LoadOptions {
        ring_buffer_bytes: ring_bytes.unwrap_or(0),
        gpu_devices: devices::discover(),
        syscall_histogram: true,
        syscalls: args.syscalls,
        ..LoadOptions::default()
    };
    let started = Instant::now();
    let loaded = Kernel::load(&opts);
    let took = started.elapsed().as_secs_f64();
    let tracefs_after = tracefs::mounted();
    rows.push(match (&tracefs_before, &tracefs_after) {
        (Some(at), _) => Row::new("tracefs", Status::Ok, format!("mounted at {}", at.display())),
        (None, Some(at)) => Row::new(
            "tracefs",
            Status::Ok,
            format!("was not mounted; the tracer mounted it at {} (it stays mounted)", at.display()),
        )
        .instead("the tracer mounts it itself at start"),
        // Mounted, and its events unreadable to this user (not root).
        (None, None) => match probes::tracefs_mount(mountinfo) {
            Some(at) => Row::new(
                "tracefs",
                Status::Fail,
                format!("mounted at {}, but its events/ directory cannot be read by this user", at.display()),
            ),
            None => Row::new(
                "tracefs",
                Status::Fail,
                "not mounted at /sys/kernel/tracing nor /sys/kernel/debug/tracing, and the tracer could not \
                 mount it",
            ),
        },
    });
    let (mut kernel, ring) = match loaded {
        Ok(k) => k,
        Err(e) => {
            rows.push(Row::new("programs", Status::Fail, format!("loading failed: {e:#}")));
            rows.push(Row::new(
                "ring buffer",
                Status::Fail,
                match ring_bytes {
                    Some(b) => format!("{} KiB not created: the programs did not load", b / 1024),
                    None => format!("--ring-buffer-kib {} is too large", args.ring_buffer_kib),
                },
            ));
            return rows;
        }
    };
    let counts = ProgramCounts::of(&kernel.attach);
    let fell_back = kernel.attach.iter().filter(|a| a.attached && a.replaces.is_some()).count();
    rows.push(Row::new(
        "programs",
        Status::Ok,
        format!(
            "loaded in {took:.1} s: {} attached ({fell_back} as fallbacks), {} failed, {} left out on purpose",
            counts.attached, counts.failed, counts.skipped
        ),
    ));
    rows.extend(hook_rows(&kernel.attach));
    // BTF's own findings are in its row; the rest are tracepoint fields
    // and CONFIG_HZ.
    let other: Vec<_> = kernel
        .missing_fields
        .iter()
        .filter(|m| !btf_missing.contains(m) && !m.starts_with("kernel BTF unavailable"))
        .cloned()
        .collect();
    rows.push(if other.is_empty() {
        Row::new("tracepoint fields", Status::Ok, "every field found in tracefs; CONFIG_HZ read")
    } else {
        Row::new("tracepoint fields", Status::Warn, other.join("; "))
            .instead("the enrichments that read these fields are off")
    });
    rows.push(Row::new(
        "ring buffer",
        Status::Ok,
        format!("BPF ring buffer of {} KiB created (--ring-buffer-kib)", opts.ring_buffer_bytes / 1024),
    ));
    drop(ring);
    kernel.detach();
    drop(kernel);
    rows
}

fn gpu() -> Vec<Row> {
    let found = devices::discover();
    let nvidia = found.iter().any(|d| d.driver.starts_with("nvidia"));
    let devices = if found.is_empty() {
        Row::new("GPU devices", Status::Ok, "none found (the GPU ioctl hooks are left out)")
    } else {
        let list: Vec<_> = found
            .iter()
            .map(|d| {
                let minor = d.minor.map_or_else(|| "*".to_string(), |m| m.to_string());
                format!("{} {}:{minor}", d.driver, d.major)
            })
            .collect();
        Row::new("GPU devices", Status::Ok, list.join(", "))
    };
    let nvml = match Nvml::open() {
        Ok(Some(n)) => Row::new("NVML", Status::Ok, format!("loaded ({} GPUs)", n.device_count())),
        Ok(None) if nvidia => Row::new("NVML", Status::Warn, "libnvidia-ml.so.1 absent")
            .instead("GPU use from the driver ioctls alone (no utilisation or memory per process)"),
        Ok(None) => Row::new("NVML", Status::Ok, "absent (no NVIDIA device)"),
        Err(e) => Row::new("NVML", Status::Warn, format!("error: {e:#}"))
            .instead("GPU use from the driver ioctls alone"),
    };
    vec![devices, nvml]
}

fn rules(extra: Option<&Path>) -> Row {
    let origin = match extra {
        Some(p) => format!("rules/default.toml + {}", p.display()),
        None => "rules/default.toml".to_string(),
    };
    match Rules::load(extra) {
        Ok(r) => Row::new(
            "rules",
            Status::Ok,
            format!(
                "{origin}: {} indicators, {} allow, {} declare entries",
                r.indicators.len(),
                r.allow.len(),
                r.declare.len()
            ),
        ),
        Err(e) => Row::new("rules", Status::Fail, format!("{e:#}")),
    }
}

fn outputs(args: &CheckArgs) -> Vec<Row> {
    let specs = match crate::pipeline::sink_specs(args.output.as_deref(), &args.sinks, Format::Native, false)
    {
        Ok(s) => s,
        Err(e) => return vec![Row::new("sinks", Status::Fail, format!("{e:#}"))],
    };
    specs
        .iter()
        .map(|spec| {
            let name = format!("sink {}", spec.display);
            match &spec.target {
                Target::Stdout => Row::new(name, Status::Ok, "records to stdout"),
                Target::File(f) => match probes::file(&f.path) {
                    Ok(detail) => Row::new(name, Status::Ok, detail),
                    Err(e) => Row::new(name, Status::Fail, format!("{e:#}")),
                },
                Target::Syslog(s) => probes::syslog_row(name, s),
                Target::Http(h) => probes::http_row(name, h),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(
        program: &'static str,
        attached: bool,
        error: Option<&str>,
        replaces: Option<&'static str>,
    ) -> AttachStatus {
        AttachStatus {
            program,
            hook: format!("hook:{program}"),
            attached,
            error: error.map(String::from),
            replaces,
            syscall_level: false,
            load_ms: 0.0,
        }
    }

    fn row<'a>(rows: &'a [Row], name: &str) -> &'a Row {
        rows.iter().find(|r| r.name == name).unwrap_or_else(|| panic!("no row {name}: {rows:#?}"))
    }

    #[test]
    fn check_exit_decision_fails_only_on_fail_rows() {
        let warn = Report::new(vec![Row::new("a", Status::Ok, ""), Row::new("b", Status::Warn, "")]);
        assert!(warn.ok);
        assert_eq!(warn.verdict(), "the tracer can run on this host (1 warning(s))");
        let fail = Report::new(vec![Row::new("a", Status::Fail, "x"), Row::new("b", Status::Fail, "y")]);
        assert!(!fail.ok);
        assert_eq!(fail.verdict(), "the tracer cannot do its job on this host: a: x; b: y");
        let json = serde_json::to_value(&fail).unwrap();
        assert_eq!(json["ok"], false);
        assert_eq!(json["checks"][0]["status"], "fail");
        assert!(json["checks"][0].get("fallback").is_none());
    }

    #[test]
    fn check_fallbacks_warn_and_missing_essential_hooks_fail() {
        let attach = vec![
            status("sched_process_exec", true, None, None),
            status("sched_switch_btf", false, Some("kernel BTF: no file"), None),
            status("sched_switch", true, None, Some("sched_switch_btf")),
            status("connect4", false, Some("attach: EPERM"), None),
            status("skb_egress", false, Some("load: refused"), None),
            status("sock_send_length", false, Some("attach: no tracepoint"), Some("skb_egress")),
            status("sock_send_enter", true, None, Some("sock_send_length")),
            status("raw_sys_enter", false, Some("not attached: syscall hooks only with --syscalls"), None),
        ];
        let rows = hook_rows(&attach);
        let sched = row(&rows, "scheduler hook");
        assert_eq!(sched.status, Status::Warn);
        assert!(sched.fallback.as_deref().unwrap().contains("sched_switch (hook:sched_switch)"), "{sched:?}");
        // A fallback of a fallback stands in for the first program.
        let packets = row(&rows, "packet hooks");
        assert_eq!(packets.status, Status::Warn);
        assert!(packets.fallback.as_deref().unwrap().contains("sock_send_enter"), "{packets:?}");
        let sockets = row(&rows, "socket hooks");
        assert_eq!(sockets.status, Status::Fail, "{sockets:?}");
        let connect = row(&rows, "program connect4");
        assert_eq!(connect.status, Status::Fail);
        assert_eq!(connect.detail, "hook:connect4: attach: EPERM");
        assert_eq!(row(&rows, "program sched_switch_btf").fallback.as_deref(), Some("sched_switch"));
        assert_eq!(row(&rows, "process hooks").status, Status::Ok);
        assert!(!Report::new(rows.clone()).ok);
        // Left out on purpose is not a failure.
        let other = row(&rows, "other hooks");
        assert_eq!(other.status, Status::Ok, "{other:?}");
        assert!(other.detail.contains("1 left out"), "{other:?}");
        assert!(rows.iter().all(|r| r.name != "program raw_sys_enter"));
    }
}
