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
    /// Field 1: the pid the kernel wrote this file for.
    pub pid: u32,
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
    let pid = std::str::from_utf8(&raw[..open]).ok()?.trim().parse().ok()?;
    let comm = raw[open + 1..close].to_vec();
    let rest = std::str::from_utf8(raw.get(close + 1..)?).ok()?;
    // rest: " S ppid pgrp ... ": state is field 3, ppid 4, starttime 22.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let sid = fields.get(3)?.parse().ok()?;
    let start_ticks = fields.get(19)?.parse().ok()?;
    Some(Stat { pid, comm, ppid, sid, start_ticks })
}

fn parse_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// What /proc says about `tgid`; None when it is gone, or when the
/// directory shows another process's files (a bind mount over it).
pub fn read(proc_root: &Path, tgid: u32) -> Option<ProcEntry> {
    use std::os::unix::ffi::OsStrExt as _;
    let dir = proc_root.join(tgid.to_string());
    let stat = parse_stat(&fs::read(dir.join("stat")).ok()?)?;
    if stat.pid != tgid {
        return None;
    }
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

/// Whether /proc/`tgid` is there but is not the kernel's own view of that
/// process: something is mounted over it (an empty directory, or another
/// process's /proc entry), as rootkits and cryptojacking kits do to hide a
/// process from ps and top. A process that exited has no directory at all.
pub fn hidden(proc_root: &Path, tgid: u32) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let dir = proc_root.join(tgid.to_string());
    let (Ok(root), Ok(entry)) = (fs::metadata(proc_root), fs::metadata(&dir)) else { return false };
    if root.dev() != entry.dev() {
        return true;
    }
    fs::read(dir.join("stat")).ok().as_deref().and_then(parse_stat).is_some_and(|s| s.pid != tgid)
}

/// The process's cgroup path: its cgroup v2 path, unless that is the root
/// and a cgroup v1 hierarchy places it deeper. Hybrid hosts (and older
/// Kubernetes nodes) mount the v1 controllers and keep every process in the
/// v2 root; their containers show only in v1 paths such as
/// `4:memory:/kubepods/…/<id>` or `1:name=systemd:/docker/<id>`.
pub fn cgroup_path(cgroup_lines: &str) -> Option<String> {
    let v2 = cgroup_lines.lines().find_map(|l| l.strip_prefix("0::")).map(str::to_string);
    if v2.as_deref().is_some_and(|p| p != "/") {
        return v2;
    }
    let v1 = |controller: &str| {
        cgroup_lines.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            (controllers.split(',').any(|c| c == controller) && path != "/").then(|| path.to_string())
        })
    };
    // The systemd hierarchy names units; memory and pids are where
    // container runtimes always put their containers.
    v1("name=systemd").or_else(|| v1("memory")).or_else(|| v1("pids")).or(v2)
}

/// Every process in /proc at this moment (threads excluded).
pub fn scan(proc_root: &Path) -> Vec<ProcEntry> {
    let Ok(dir) = fs::read_dir(proc_root) else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|tgid| read(proc_root, tgid))
        .collect()
}

/// `roots` and every process now below them in the process tree, from the
/// ppid in each /proc/PID/stat.
pub fn with_descendants(proc_root: &Path, roots: &[u32]) -> Vec<u32> {
    let Ok(dir) = fs::read_dir(proc_root) else { return roots.to_vec() };
    let parents: Vec<(u32, u32)> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|tgid| {
            Some((tgid, parse_stat(&fs::read(proc_root.join(tgid.to_string()).join("stat")).ok()?)?.ppid))
        })
        .collect();
    let mut out = roots.to_vec();
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(
            parents
                .iter()
                .filter(|(tgid, ppid)| *ppid == parent && !out.contains(tgid))
                .map(|(t, _)| *t)
                .collect::<Vec<_>>(),
        );
        i += 1;
    }
    out
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
        assert_eq!(s.pid, 4242);
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
    fn cgroup_path_from_v1_on_hybrid_hosts() {
        let id = "3f4e5d6c7b8a99001122334455667788990011223344556677889900aabbccdd";
        let hybrid = format!(
            "12:pids:/kubepods/besteffort/pod1/{id}\n4:memory:/kubepods/besteffort/pod1/{id}\n0::/\n"
        );
        assert_eq!(cgroup_path(&hybrid), Some(format!("/kubepods/besteffort/pod1/{id}")));
        let systemd = "1:name=systemd:/system.slice/ssh.service\n4:memory:/system.slice/ssh.service\n0::/\n";
        assert_eq!(cgroup_path(systemd).as_deref(), Some("/system.slice/ssh.service"));
        // A pure v2 host, and a process in the root of everything.
        assert_eq!(cgroup_path("0::/user.slice/user-0.slice\n").as_deref(), Some("/user.slice/user-0.slice"));
        assert_eq!(cgroup_path("4:memory:/\n0::/\n").as_deref(), Some("/"));
    }

    #[test]
    fn descendants_of_a_process_are_found() {
        let mut child =
            std::process::Command::new("/bin/sh").args(["-c", "sleep 30 & sleep 30 & wait"]).spawn().unwrap();
        let me = std::process::id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let found = loop {
            let found = with_descendants(Path::new("/proc"), &[me]);
            // This process, the shell and its two sleeps (and any test threads' children).
            if found.contains(&child.id()) && found.len() >= 4 || std::time::Instant::now() > deadline {
                break found;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let _ = std::process::Command::new("pkill").args(["-P", &child.id().to_string()]).status();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found[0], me);
        assert!(found.contains(&child.id()), "{found:?}");
        assert!(found.len() >= 4, "the shell's two sleeps are grandchildren: {found:?}");
    }

    #[test]
    fn a_live_process_is_not_hidden_nor_a_gone_one() {
        assert!(!hidden(Path::new("/proc"), std::process::id()));
        assert!(!hidden(Path::new("/proc"), 4_000_000_001));
    }

    #[test]
    fn reads_this_process() {
        let me = read(Path::new("/proc"), std::process::id()).unwrap();
        assert_eq!(me.ppid, std::os::unix::process::parent_id());
        assert!(me.start_ticks > 0);
        assert!(!me.argv.is_empty());
    }
}
