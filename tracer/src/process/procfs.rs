//! Reading processes from /proc: used to seed the process table at start and
//! to fill in a process first seen through one of its events.

use std::{fs, path::Path};

/// What /proc says about one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcEntry {
    pub tgid: u32,
    pub ppid: u32,
    pub comm: Vec<u8>,
    /// Field 22 of /proc/PID/stat: clock ticks since boot.
    pub start_ticks: u64,
    pub uid: u32,
    pub exe: Option<Vec<u8>>,
    pub argv: Vec<Vec<u8>>,
    /// Lines of /proc/PID/cgroup, for container ids.
    pub cgroup_lines: String,
    /// Session id (field 6 of stat).
    pub sid: u32,
}

/// The fields of /proc/PID/stat the table needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub comm: Vec<u8>,
    pub ppid: u32,
    pub sid: u32,
    pub start_ticks: u64,
}

/// Parses /proc/PID/stat. The command name is in parentheses and may hold
/// spaces and ')' itself, so fields are counted from the last ')'.
pub fn parse_stat(raw: &[u8]) -> Option<Stat> {
    let open = raw.iter().position(|&b| b == b'(')?;
    let close = raw.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let comm = raw[open + 1..close].to_vec();
    let rest = std::str::from_utf8(raw.get(close + 1..)?).ok()?;
    // rest: " S ppid pgrp ... ": state is field 3, ppid 4, starttime 22.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let sid = fields.get(3)?.parse().ok()?;
    let start_ticks = fields.get(19)?.parse().ok()?;
    Some(Stat { comm, ppid, sid, start_ticks })
}

fn parse_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

pub fn read(proc_root: &Path, tgid: u32) -> Option<ProcEntry> {
    use std::os::unix::ffi::OsStrExt as _;
    let dir = proc_root.join(tgid.to_string());
    let stat = parse_stat(&fs::read(dir.join("stat")).ok()?)?;
    let uid = fs::read_to_string(dir.join("status")).ok().as_deref().and_then(parse_uid).unwrap_or(u32::MAX);
    let exe = fs::read_link(dir.join("exe")).ok().map(|p| p.as_os_str().as_bytes().to_vec());
    let argv =
        fs::read(dir.join("cmdline")).map(|c| crate::kernel::events::split_argv(&c)).unwrap_or_default();
    let cgroup_lines = fs::read_to_string(dir.join("cgroup")).unwrap_or_default();
    Some(ProcEntry {
        tgid,
        ppid: stat.ppid,
        comm: stat.comm,
        start_ticks: stat.start_ticks,
        uid,
        exe,
        argv,
        cgroup_lines,
        sid: stat.sid,
    })
}

/// The cgroup v2 path from /proc/PID/cgroup's `0::` line.
pub fn cgroup_v2_path(cgroup_lines: &str) -> Option<String> {
    cgroup_lines.lines().find_map(|l| l.strip_prefix("0::")).map(str::to_string)
}

/// Every process in /proc at this moment (threads excluded).
pub fn scan(proc_root: &Path) -> Vec<ProcEntry> {
    let Ok(dir) = fs::read_dir(proc_root) else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|tgid| read(proc_root, tgid))
        .collect()
}

pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|&h| h > 0).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_hostile_comm() {
        let raw = b"4242 (a) b (c)) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        let s = parse_stat(raw).unwrap();
        assert_eq!(s.comm, b"a) b (c)");
        assert_eq!(s.ppid, 17);
        assert_eq!(s.sid, 4242);
        assert_eq!(s.start_ticks, 987654);
    }

    #[test]
    fn truncated_stat_is_none() {
        assert_eq!(parse_stat(b"1 (init) S 0 1"), None);
        assert_eq!(parse_stat(b"garbage"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = read(Path::new("/proc"), std::process::id()).unwrap();
        assert_eq!(me.ppid, std::os::unix::process::parent_id());
        assert!(me.start_ticks > 0);
        assert!(!me.argv.is_empty());
    }
}
