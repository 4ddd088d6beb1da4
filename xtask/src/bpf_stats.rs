//! Each kernel program's own cost, from the kernel's statistics
//! (`kernel.bpf_stats_enabled=1`): how often it ran and for how long, read
//! from the fdinfo of the tracer's program fds, named by `bpftool`.

use std::{collections::BTreeMap, fs, process::Command};

use anyhow::{Context as _, Result};

/// Statistics on while it lives; the previous setting back after.
pub struct Enabled(String);

pub fn enable() -> Result<Enabled> {
    const KNOB: &str = "/proc/sys/kernel/bpf_stats_enabled";
    let before = fs::read_to_string(KNOB).context("reading kernel.bpf_stats_enabled")?;
    fs::write(KNOB, "1").context("enabling kernel.bpf_stats_enabled")?;
    Ok(Enabled(before.trim().to_string()))
}

impl Drop for Enabled {
    fn drop(&mut self) {
        let _ = fs::write("/proc/sys/kernel/bpf_stats_enabled", &self.0);
    }
}

/// One program's totals.
#[derive(Clone, Copy, Default, Debug)]
pub struct Runs {
    pub count: u64,
    pub ns: u64,
}

/// The programs process `pid` holds, by name (the kernel keeps 15 bytes).
pub fn of_process(pid: u32) -> Result<BTreeMap<String, Runs>> {
    let mut by_id: BTreeMap<u64, Runs> = BTreeMap::new();
    for fd in fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
        if !fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == "anon_inode:bpf-prog") {
            continue;
        }
        let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy()))
            .unwrap_or_default();
        let field = |name: &str| {
            info.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let Some(id) = field("prog_id:") {
            by_id.insert(
                id,
                Runs { count: field("run_cnt:").unwrap_or(0), ns: field("run_time_ns:").unwrap_or(0) },
            );
        }
    }
    let out =
        Command::new("bpftool").args(["prog", "show", "--json"]).output().context("bpftool prog show")?;
    let progs: serde_json::Value = serde_json::from_slice(&out.stdout).context("bpftool's JSON")?;
    let mut named = BTreeMap::new();
    for p in progs.as_array().into_iter().flatten() {
        let (Some(id), Some(name)) = (p["id"].as_u64(), p["name"].as_str()) else { continue };
        if let Some(r) = by_id.get(&id) {
            let e: &mut Runs = named.entry(name.to_string()).or_default();
            e.count += r.count;
            e.ns += r.ns;
        }
    }
    Ok(named)
}

/// The budget a program is held to: on a path every packet, context switch
/// or syscall takes, 100 ns a run; on process and connection events, 3 µs.
pub fn budget_ns(name: &str) -> u64 {
    const HOT: [&str; 11] = [
        "sched_switch",
        "fpu_regs_deact",
        "sock_send_lengt",
        "sock_recv_lengt",
        "skb_",
        "raw_sys_enter",
        "sys_enter_",
        "sys_exit_",
        // Every buffered read and file-mapping fault on the host.
        "file_read",
        "file_fault",
        "file_map_pages",
    ];
    if HOT.iter().any(|h| name.starts_with(h)) { 100 } else { 3_000 }
}
