//! The process table: every process the tracer knows, keyed by tgid and
//! identified by a unique id built from its boot-relative start time, so a
//! reused pid is a different process. Seeded from /proc at start so
//! processes already running are attributed too.

pub mod cgroup;
pub mod executable;
pub mod maps;
pub mod open_files;
pub mod procfs;
pub mod temp_files;

use std::{collections::HashMap, path::PathBuf};

use crate::kernel::events::Header;

/// Longest ancestor chain put into a record.
pub const MAX_ANCESTORS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub entity_id: String,
    pub tgid: u32,
    pub ppid: u32,
    pub start_ticks: u64,
    pub uid: u32,
    pub comm: Vec<u8>,
    pub exe: Option<Vec<u8>>,
    pub argv: Vec<Vec<u8>>,
    pub argv_truncated: bool,
    pub cgroup_id: Option<u64>,
    /// cgroup v2 path, from /proc or resolved from the id.
    pub cgroup: Option<String>,
    pub container_id: Option<String>,
    /// Session id: the processes of one session form one tree.
    pub sid: Option<u32>,
    /// Its /proc entry is covered by a mount (see procfs::hidden): what is
    /// known of it comes from the kernel's records only.
    pub hidden_from_proc: bool,
    /// Exited; kept until the next activity report so late counters and
    /// events still find it.
    pub exited: bool,
    /// SHA-256 of the executable, once the worker has read it (see
    /// executable.rs); a fork inherits it, an exec clears it.
    pub exe_sha256: Option<String>,
}

pub struct ProcessTable {
    boot_tag: String,
    ticks_per_second: u64,
    proc_root: PathBuf,
    by_tgid: HashMap<u32, Process>,
}

impl ProcessTable {
    pub fn new(proc_root: PathBuf) -> Self {
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        let boot_tag: String = boot_id.chars().filter(char::is_ascii_hexdigit).take(8).collect();
        Self {
            boot_tag: if boot_tag.is_empty() { "00000000".into() } else { boot_tag },
            ticks_per_second: procfs::clock_ticks_per_second(),
            proc_root,
            by_tgid: HashMap::new(),
        }
    }

    /// Adds every process now in /proc. Returns how many were added.
    pub fn seed(&mut self) -> usize {
        let entries = procfs::scan(&self.proc_root);
        let n = entries.len();
        for e in entries {
            let p = self.process_of(e);
            self.by_tgid.insert(p.tgid, p);
        }
        n
    }

    pub fn len(&self) -> usize {
        self.by_tgid.len()
    }

    /// The processes now in the table.
    pub fn tgids(&self) -> Vec<u32> {
        self.by_tgid.keys().copied().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.by_tgid.is_empty()
    }

    pub fn get(&self, tgid: u32) -> Option<&Process> {
        self.by_tgid.get(&tgid)
    }

    /// `<boot>:<start ticks>:<tgid>`, the same for a process whether it was
    /// seen in /proc or in a kernel record.
    pub fn entity_id(&self, start_ticks: u64, tgid: u32) -> String {
        format!("{}:{}:{}", self.boot_tag, start_ticks, tgid)
    }

    pub fn ns_to_ticks(&self, ns: u64) -> u64 {
        ns / (1_000_000_000 / self.ticks_per_second)
    }

    fn process_of(&self, e: procfs::ProcEntry) -> Process {
        Process {
            entity_id: self.entity_id(e.start_ticks, e.tgid),
            tgid: e.tgid,
            ppid: e.ppid,
            start_ticks: e.start_ticks,
            uid: e.uid,
            comm: e.comm,
            exe: e.exe,
            argv: e.argv,
            argv_truncated: false,
            cgroup_id: None,
            cgroup: procfs::cgroup_path(&e.cgroup_lines),
            container_id: cgroup::container_id(&e.cgroup_lines),
            sid: Some(e.sid),
            hidden_from_proc: false,
            exited: false,
            exe_sha256: None,
        }
    }

    /// The process a kernel record belongs to, created (from /proc if it is
    /// still there, else from the record) when not yet known or when the pid
    /// was reused.
    pub fn resolve(&mut self, h: &Header) -> &mut Process {
        let ticks = (h.start_boottime_ns != 0).then(|| self.ns_to_ticks(h.start_boottime_ns));
        let stale = match (self.by_tgid.get(&h.tgid), ticks) {
            (None, _) => true,
            (Some(p), Some(t)) => p.start_ticks != t,
            (Some(_), None) => false,
        };
        if stale {
            let from_proc = procfs::read(&self.proc_root, h.tgid)
                .filter(|e| ticks.is_none_or(|t| t == e.start_ticks))
                .map(|e| self.process_of(e));
            let p = from_proc.unwrap_or_else(|| {
                let t = ticks.unwrap_or(0);
                Process {
                    entity_id: self.entity_id(t, h.tgid),
                    tgid: h.tgid,
                    ppid: h.ppid,
                    start_ticks: t,
                    uid: h.uid,
                    comm: h.comm.clone(),
                    exe: None,
                    argv: Vec::new(),
                    argv_truncated: false,
                    cgroup_id: None,
                    cgroup: None,
                    container_id: None,
                    sid: None,
                    hidden_from_proc: procfs::hidden(&self.proc_root, h.tgid),
                    exited: false,
                    exe_sha256: None,
                }
            });
            self.by_tgid.insert(h.tgid, p);
        }
        let p = self.by_tgid.get_mut(&h.tgid).expect("inserted above");
        // The kernel's view is newer than /proc's or the last record's.
        if h.ppid != 0 {
            p.ppid = h.ppid;
        }
        p.uid = h.uid;
        if h.sid != 0 {
            p.sid = Some(h.sid);
        }
        if !h.comm.is_empty() && h.pid == h.tgid {
            p.comm = h.comm.clone();
        }
        p.cgroup_id = Some(h.cgroup_id);
        p
    }

    /// A new process: it starts as a copy of its parent's image.
    pub fn fork(&mut self, parent: &Header, child_tgid: u32, child_start_ns: u64) -> &Process {
        let (exe, argv, argv_truncated, cgroup, container_id, sid, exe_sha256) = self
            .by_tgid
            .get(&parent.tgid)
            .map(|p| {
                (
                    p.exe.clone(),
                    p.argv.clone(),
                    p.argv_truncated,
                    p.cgroup.clone(),
                    p.container_id.clone(),
                    p.sid,
                    p.exe_sha256.clone(),
                )
            })
            .unwrap_or_default();
        let ticks = self.ns_to_ticks(child_start_ns);
        let child = Process {
            entity_id: self.entity_id(ticks, child_tgid),
            tgid: child_tgid,
            ppid: parent.tgid,
            start_ticks: ticks,
            uid: parent.uid,
            comm: parent.comm.clone(),
            exe,
            argv,
            argv_truncated,
            cgroup_id: Some(parent.cgroup_id),
            cgroup,
            container_id,
            sid,
            hidden_from_proc: false,
            exited: false,
            exe_sha256,
        };
        self.by_tgid.insert(child_tgid, child);
        &self.by_tgid[&child_tgid]
    }

    /// The process with this tgid, read from /proc when not yet known.
    /// A process already in the table, to change.
    pub fn get_mut(&mut self, tgid: u32) -> Option<&mut Process> {
        self.by_tgid.get_mut(&tgid)
    }

    pub fn lookup(&mut self, tgid: u32) -> Option<&Process> {
        if !self.by_tgid.contains_key(&tgid) {
            let p = procfs::read(&self.proc_root, tgid).map(|e| self.process_of(e))?;
            self.by_tgid.insert(tgid, p);
        }
        self.by_tgid.get(&tgid)
    }

    pub fn remove(&mut self, tgid: u32) -> Option<Process> {
        self.by_tgid.remove(&tgid)
    }

    /// Drops live-looking entries whose process is gone from /proc (its exit
    /// was never seen, e.g. dropped); returns how many.
    pub fn prune_vanished(&mut self) -> Vec<u32> {
        let root = self.proc_root.clone();
        let mut pruned = Vec::new();
        self.by_tgid.retain(|tgid, p| {
            if p.exited
                || procfs::read(&root, *tgid)
                    .is_some_and(|e| e.start_ticks == p.start_ticks || p.start_ticks == 0)
            {
                return true;
            }
            // Not gone: hidden since it was first seen.
            p.hidden_from_proc |= procfs::hidden(&root, *tgid);
            if !p.hidden_from_proc {
                pruned.push(*tgid);
            }
            p.hidden_from_proc
        });
        pruned
    }

    /// Whether /proc has an entry for this tgid (hidden ones included: a
    /// bind mount over /proc/PID leaves the directory).
    pub fn in_proc(&self, tgid: u32) -> bool {
        self.proc_root.join(tgid.to_string()).exists()
    }

    /// Removes the processes marked exited; returns their tgids.
    pub fn sweep_exited(&mut self) -> Vec<u32> {
        let gone: Vec<u32> = self.by_tgid.values().filter(|p| p.exited).map(|p| p.tgid).collect();
        for t in &gone {
            self.by_tgid.remove(t);
        }
        gone
    }

    /// Entity ids of the parent, grandparent, … as far as the table knows.
    pub fn ancestors(&self, tgid: u32) -> Vec<&Process> {
        let mut out = Vec::new();
        let mut cur = self.by_tgid.get(&tgid).map(|p| p.ppid);
        while let Some(ppid) = cur {
            if ppid == 0 || out.len() >= MAX_ANCESTORS {
                break;
            }
            let Some(p) = self.by_tgid.get(&ppid) else { break };
            out.push(p);
            if p.tgid == p.ppid {
                break;
            }
            cur = Some(p.ppid);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::EventKind;

    fn header(tgid: u32, ppid: u32, start_ns: u64) -> Header {
        Header {
            kind: EventKind::Exec,
            pid: tgid,
            tgid,
            ppid,
            uid: 0,
            gid: 0,
            ktime_ns: 0,
            start_boottime_ns: start_ns,
            cgroup_id: 1,
            comm: b"x".to_vec(),
            sid: 0,
        }
    }

    #[test]
    fn seeded_process_keeps_its_id_when_seen_in_a_record() {
        let mut t = ProcessTable::new("/proc".into());
        t.seed();
        let me = std::process::id();
        let seeded = t.get(me).unwrap().clone();
        let ns = seeded.start_ticks * (1_000_000_000 / procfs::clock_ticks_per_second());
        let seen = t.resolve(&header(me, seeded.ppid, ns)).clone();
        assert_eq!(seen.entity_id, seeded.entity_id);
        assert_eq!(seen.argv, seeded.argv);
    }

    #[test]
    fn reused_pid_is_a_new_process_and_lineage_follows_parents() {
        // Pids far above pid_max so /proc has nothing for them.
        let mut t = ProcessTable::new("/nonexistent".into());
        let a = t.resolve(&header(4_000_001, 1, 1_000_000_000)).entity_id.clone();
        let child = t.fork(&header(4_000_001, 1, 1_000_000_000), 4_000_002, 2_000_000_000).entity_id.clone();
        assert_ne!(a, child);
        assert_eq!(t.ancestors(4_000_002)[0].entity_id, a);
        let reused = t.resolve(&header(4_000_001, 1, 9_000_000_000)).entity_id.clone();
        assert_ne!(a, reused);
    }
}
