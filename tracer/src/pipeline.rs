//! The live pipeline: kernel records -> process table -> JSON lines, with
//! periodic health records and a shutdown that loses nothing already read.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    time::{MissedTickBehavior, interval_at},
};

use crate::{
    classify::{Classifier, rules::Rules},
    cli::RunArgs,
    dns::NameCache,
    gpu::{GpuLedger, OpenView, decode::decode as gpu_decode, devices, devices::vendor_name, nvml::Nvml},
    kernel::{
        Kernel, LoadOptions, ProgramCounts,
        events::{Body as EventBody, ConnectSource, Event, Header, SockAddr, decode},
    },
    ledger::{AccountView, ActivityView as LedgerActivity, Delta, Ledger, online_cpus},
    output::{
        escape::bytes_to_string,
        record::{
            Body, ConnectView, ContainerView, DnsView, ExecView, ExitView, FileOpenView, FirstBytesView,
            ForkView, GpuBody, HealthView, ListenView, ParentView, ProcessEntry, ProcessView, Record,
            SCHEMA_VERSION, TreeView, errno_name, protocol_name, rfc3339_nanos, socket_type_name,
        },
        sink::{Meta, Outgoing, SinkSpec, Sinks},
    },
    process::executable::{Done as ExecutableDone, Executables},
    process::{ProcessTable, cgroup},
    protocols::first_message,
};

/// Counts kept by user space, reported in every health record.
#[derive(Debug, Default)]
pub struct Stats {
    pub events_read: u64,
    pub by_kind: BTreeMap<&'static str, u64>,
    pub decode_errors: u64,
    pub filtered_out: u64,
    /// Activity of a process that could not be identified (gone from /proc
    /// before it was ever seen).
    pub unattributed_activity: u64,
    pub dns_parse_errors: u64,
    /// Process-table entries dropped because the process vanished unseen.
    pub table_pruned: u64,
    /// First writes whose buffer could not be read at syscall entry.
    pub first_bytes_unreadable: u64,
    /// First messages with a send whose record was lost.
    pub first_bytes_gaps: u64,
    pub classifications: u64,
    /// Records with fewer bytes captured than sent or received, by kind.
    pub truncated: BTreeMap<&'static str, u64>,
    /// Records left in the ring when the shutdown's reading time was up.
    pub unread_at_shutdown: BTreeMap<&'static str, u64>,
}

/// Sums for one tree or container over an interval.
#[derive(Default)]
struct Rollup {
    delta: Delta,
    gpu: Option<crate::gpu::Summary>,
    processes: u32,
    container_id: Option<String>,
    cgroup_id: Option<u64>,
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// A string from kernel bytes, and the field's name when it had to be
/// escaped (not UTF-8), for the record's `escaped` list.
fn text(bytes: &[u8], field: &'static str) -> (String, Option<&'static str>) {
    let (s, escaped) = bytes_to_string(bytes);
    (s.into_owned(), escaped.then_some(field))
}

/// Converts CLOCK_MONOTONIC (what the kernel stamps) to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    realtime_minus_monotonic_ns: i128,
}

fn clock_ns(id: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid clock id and out pointer.
    unsafe { libc::clock_gettime(id, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

impl Clock {
    pub fn new() -> Self {
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        Self { realtime_minus_monotonic_ns: real - mono }
    }

    pub fn now_mono_ns() -> u64 {
        clock_ns(libc::CLOCK_MONOTONIC) as u64
    }

    pub fn wall(&self, mono_ns: u64) -> String {
        rfc3339_nanos((i128::from(mono_ns) + self.realtime_minus_monotonic_ns).max(0) as u128)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Turns decoded kernel records into output records.
pub struct Pipeline {
    pub table: ProcessTable,
    cgroups: cgroup::CgroupResolver,
    pub sinks: Sinks,
    host: String,
    clock: Clock,
    comms: Vec<Vec<u8>>,
    pub stats: Stats,
    started: Instant,
    pub gpu: GpuLedger,
    /// Processes that used a GPU device and still live.
    gpu_tgids: HashSet<u32>,
    last_activity: Instant,
    nvml: Option<Nvml>,
    nvml_status: String,
    ledger: Ledger,
    names: NameCache,
    reports: u64,
    pub classifier: Option<Classifier>,
    /// Busy processes whose memory map was read, and how many ML runtimes
    /// it showed last.
    libraries_checked: HashMap<u32, usize>,
    /// Model files each busy process was seen holding (see emit_held_files).
    files_held: HashMap<u32, HashSet<crate::process::open_files::Held>>,
    /// Formats of large open files told by their content, by identity.
    sniffed: crate::process::open_files::Sniffed,
    /// The local API's and the metrics' shared state, when served.
    service: Option<std::sync::Arc<crate::service::api::Shared>>,
    /// `--rules`, reread at SIGHUP, and what the rereading did.
    pub rules_path: Option<PathBuf>,
    /// SIGHUP reloads of the rules, and when those in use were loaded (in
    /// the health record once a SIGHUP came).
    rules_reloads: crate::output::record::RulesReloads,
    /// The worker that identifies and scans executables (not in replay).
    pub executables: Option<Executables>,
    /// The file last reported as each live process's executable.
    exe_reported: HashMap<u32, (u64, u64)>,
    /// New connections' first sends, until each first message is whole.
    first_messages: first_message::FirstMessages<SendContext>,
    /// Files written under a temporary name, until the name they are
    /// renamed to is known (see process/temp_files.rs).
    temp_files: crate::process::temp_files::Pending<ProcessEntry>,
    /// Per thread, the process view of its last record (see `view`).
    views: HashMap<u32, ProcessEntry>,
    /// Records the kernel had dropped when stderr was last told (or last
    /// looked), and when that was.
    drops_told: (u64, Instant),
}

/// What the first send of a connection carried besides its bytes.
#[derive(Clone)]
struct SendContext {
    header: Header,
    peer: Option<(IpAddr, u16)>,
    /// The peer sent it (on a connection the process accepted, or to its
    /// UDP socket).
    inbound: bool,
    /// A UDP datagram (else a TCP connection's first message).
    datagram: bool,
}

impl Pipeline {
    /// `started`: when the tracer started, so the first health record's
    /// `uptime_s` is the time it took to load, attach and seed.
    pub fn new(sinks: Sinks, comms: Vec<String>, started: Instant, gpu: GpuLedger) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        Self {
            table: ProcessTable::new(PathBuf::from("/proc")),
            cgroups: cgroup::CgroupResolver::new(),
            sinks,
            host,
            clock: Clock::new(),
            comms: comms.into_iter().map(String::into_bytes).collect(),
            stats: Stats::default(),
            started,
            gpu,
            gpu_tgids: HashSet::new(),
            last_activity: Instant::now(),
            nvml: None,
            nvml_status: "disabled".into(),
            ledger: Ledger::default(),
            names: NameCache::default(),
            first_messages: Default::default(),
            temp_files: Default::default(),
            views: HashMap::new(),
            drops_told: (0, Instant::now()),
            executables: None,
            exe_reported: HashMap::new(),
            reports: 0,
            classifier: None,
            libraries_checked: HashMap::new(),
            files_held: HashMap::new(),
            sniffed: Default::default(),
            service: None,
            rules_path: None,
            rules_reloads: crate::output::record::RulesReloads {
                loaded_at: Clock::new().wall(Clock::now_mono_ns()),
                ..Default::default()
            },
        }
    }

    /// SIGHUP: the rules file is read again. The classifier keeps its
    /// state; a file that does not load leaves the rules in use as they
    /// are, and the health record says why.
    pub fn reload_rules(&mut self) {
        let Some(classifier) = self.classifier.as_mut() else { return };
        let reloads = &mut self.rules_reloads;
        match Rules::load(self.rules_path.as_deref()) {
            Ok(rules) => {
                classifier.set_rules(rules);
                reloads.reloaded += 1;
                reloads.last_error = None;
                reloads.loaded_at = self.clock.wall(Clock::now_mono_ns());
            }
            Err(e) => {
                reloads.failed += 1;
                reloads.last_error = Some(format!("{e:#}"));
                eprintln!("tracer: SIGHUP: the rules were not reloaded, those in use are kept: {e:#}");
            }
        }
    }

    /// The first record of a capture: what it was taken on and with.
    pub fn write_capture_header(&mut self) -> Result<()> {
        let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string()).ok();
        let mono_ns = Clock::now_mono_ns();
        let header = serde_json::json!({
            "schema": SCHEMA_VERSION,
            "kind": "tracer.capture",
            "host": self.host,
            "time": self.clock.wall(mono_ns),
            "mono_ns": mono_ns,
            "capture": {
                "tracer_version": env!("CARGO_PKG_VERSION"),
                "kernel": read("/proc/sys/kernel/osrelease"),
                "boot_id": read("/proc/sys/kernel/random/boot_id"),
                "cpus": online_cpus(),
                "argv": std::env::args().map(|a| crate::output::sink::spec::redact_arg(&a)).collect::<Vec<_>>(),
            },
        });
        let line = serde_json::to_vec(&header)?;
        self.sinks.write(Outgoing::of_value(&header, &line))
    }

    /// Loads NVIDIA's management library if it is installed.
    pub fn enable_nvml(&mut self) {
        match Nvml::open() {
            Ok(Some(n)) => {
                self.nvml_status = format!("loaded ({} GPUs)", n.device_count());
                self.nvml = Some(n);
            }
            Ok(None) => self.nvml_status = "absent".into(),
            Err(e) => self.nvml_status = format!("error: {e:#}"),
        }
    }

    fn emit(&mut self, mono_ns: u64, process: Option<ProcessEntry>, body: Body) -> Result<()> {
        let record = Record {
            schema: SCHEMA_VERSION,
            kind: body.kind(),
            host: &self.host,
            time: self.clock.wall(mono_ns),
            mono_ns,
            process,
            body,
        };
        let (line, shared_process) = record.to_line()?;
        debug_assert_eq!(
            String::from_utf8_lossy(&line),
            String::from_utf8_lossy(&serde_json::to_vec(&record)?),
            "a record's line is what serde writes"
        );
        // The classifier reads the record as written, exactly as replay
        // will read it from a capture.
        let classify = match (&record.body, self.classifier.as_ref()) {
            (_, None) | (Body::Health(_), _) => false,
            (Body::Connect(c), Some(cl)) => cl.wants_connect(c.port, c.dns_name.is_some()),
            _ => true,
        };
        let value = if classify { Some(serde_json::to_value(&record)?) } else { None };
        let meta = Meta { kind: record.kind, time: &record.time, host: record.host, alert: false };
        self.sinks.write(Outgoing::new(meta, &line).with_shared_process(shared_process.as_ref()))?;
        if let (Some(classifier), Some(value), true) = (self.classifier.as_mut(), value.as_ref(), classify) {
            for written in classifier.observe(value) {
                let line = serde_json::to_vec(&written)?;
                self.sinks.write(Outgoing::of_value(&written, &line))?;
                if written["kind"] == "classification" {
                    self.stats.classifications += 1;
                }
            }
        }
        Ok(())
    }

    /// The process view of a record's process, parents from the table.
    fn view(&mut self, h: &Header) -> ProcessEntry {
        let kernel_path = self.cgroups.path(h.cgroup_id).map(str::to_owned);
        let p = self.table.resolve(h);
        // The kernel's view (a process moved between cgroups follows),
        // except the v2 root on hybrid hosts, where /proc's v1 path says more.
        let cgroup_path = match kernel_path {
            Some(root) if root == "/" && p.cgroup.as_deref().is_some_and(|c| c != "/") => p.cgroup.clone(),
            other => other,
        };
        // Looked again only when the cgroup changed (every record passes here).
        if let Some(path) = cgroup_path.as_ref().filter(|path| p.cgroup.as_ref() != Some(*path)) {
            p.cgroup = Some(path.clone());
            if let Some(id) = cgroup::container_id(path) {
                p.container_id = Some(id);
            }
        }
        // Borrowed again, not copied: the view copies what it writes.
        let p = self.table.get(h.tgid).expect("resolved above");
        let parents = self.table.ancestors(h.tgid);
        // The thread's last view, while it still describes the process.
        if let Some(last) = self.views.get(&h.pid)
            && last.describes(p, h.pid, &parents, cgroup_path.as_deref())
        {
            debug_assert_eq!(
                serde_json::to_string(&**last).ok(),
                serde_json::to_string(&ProcessView::new(p, h.pid, &parents, cgroup_path)).ok(),
                "a kept view is the one that would be made now"
            );
            return last.clone();
        }
        let entry = ProcessEntry::shared(ProcessView::new(p, h.pid, &parents, cgroup_path));
        if self.views.len() >= VIEWS_KEPT {
            self.views.clear();
        }
        self.views.insert(h.pid, entry.clone());
        entry
    }

    /// The process view for a tgid outside any kernel record (activity).
    fn view_of_tgid(&mut self, tgid: u32) -> Option<ProcessView> {
        let cgroup_id = self.table.lookup(tgid)?.cgroup_id;
        let cgroup_path = cgroup_id.and_then(|id| self.cgroups.path(id).map(str::to_owned));
        let p = self.table.get(tgid)?;
        let parents = self.table.ancestors(tgid);
        Some(ProcessView::new(p, tgid, &parents, cgroup_path))
    }

    /// The GPU activity since the last report, NVML merged in where loaded
    /// (NVML sees kernel launches that make no ioctl). `only`: one process's
    /// final account.
    fn gpu_activity(
        &mut self,
        kernel: &Kernel,
        only: Option<u32>,
        interval_s: f64,
    ) -> Result<BTreeMap<u32, crate::gpu::ActivityView>> {
        let snapshot = kernel.gpu_snapshot()?;
        let mut activity = self.gpu.activity(&snapshot, only, interval_s);
        if only.is_none()
            && let Some(nvml) = self.nvml.as_mut()
        {
            for (pid, sample) in nvml.sample() {
                let view = activity.entry(pid).or_insert_with(|| crate::gpu::ActivityView {
                    interval_s,
                    summary: Default::default(),
                    devices: Vec::new(),
                    nvml: None,
                });
                view.nvml = Some(sample);
            }
        }
        Ok(activity)
    }

    /// One exited process's last GPU activity, then its GPU keys go.
    fn emit_final_gpu_account(&mut self, kernel: &mut Kernel, tgid: u32) -> Result<()> {
        let interval_s = round3(self.last_activity.elapsed().as_secs_f64());
        let activity = self.gpu_activity(kernel, Some(tgid), interval_s)?;
        let now = Clock::now_mono_ns();
        for (pid, view) in activity {
            let process = self.view_of_tgid(pid).map(ProcessEntry::from);
            self.emit(now, process, Body::Gpu(GpuBody::Activity(view)))?;
        }
        kernel.forget_gpu_process(tgid);
        self.gpu.forget(tgid);
        Ok(())
    }

    /// `file.open` records for the model files a busy process has open or
    /// mapped, each (file, access) once per process.
    /// `file.open` records per process and data format (a node holds
    /// hundreds of LevelDB tables); more are counted in `truncated`.
    const DATA_FILES_PER_FORMAT: usize = 4;

    fn emit_held_files(
        &mut self,
        now: u64,
        process: &ProcessView,
        tgid: u32,
        mapped: &[String],
        mapped_data: &[String],
    ) -> Result<()> {
        use crate::process::open_files::{Held, open_model_files};
        let (open, cut) = open_model_files(std::path::Path::new("/proc"), tgid, &mut self.sniffed);
        if cut {
            *self.stats.truncated.entry("open_files").or_default() += 1;
        }
        // Mapped data files whose name does not say, told by their content.
        let sniffed: Vec<Held> = mapped_data
            .iter()
            .filter_map(|p| {
                let format = self.sniffed.format_of(std::path::Path::new(p))?;
                Some(Held { path: p.as_bytes().to_vec(), write: false, format: Some(format) })
            })
            .collect();
        let found = open
            .into_iter()
            .map(|h| (h, "fd"))
            .chain(
                mapped
                    .iter()
                    .map(|p| (Held { path: p.as_bytes().to_vec(), write: false, format: None }, "map")),
            )
            .chain(sniffed.into_iter().map(|h| (h, "map")));
        for (h, source) in found {
            let held = self.files_held.entry(tgid).or_default();
            if held.contains(&h) {
                continue;
            }
            let data = h.format.filter(|f| crate::process::open_files::format_suffix(f).is_none());
            let over = data.is_some_and(|f| {
                held.iter().filter(|x| x.format == Some(f)).count() >= Self::DATA_FILES_PER_FORMAT
            });
            // Remembered either way, so a file is counted once.
            held.insert(h.clone());
            if over {
                *self.stats.truncated.entry("held_data_files").or_default() += 1;
                continue;
            }
            let (path, escaped) = text(&h.path, "path");
            let body = Body::FileOpen(FileOpenView {
                path,
                source,
                write: h.write,
                renamed: false,
                renamed_from: None,
                renamed_from_truncated: false,
                flags: u32::from(h.write),
                format: h.format,
                escaped: escaped.into_iter().collect(),
            });
            self.emit(now, Some(process.clone().into()), body)?;
        }
        Ok(())
    }

    /// The activity interval: process.activity for every process that did
    /// something, gpu.activity with the driver detail, and the roll-ups
    /// tree.activity (per session) and container.activity (per cgroup).
    pub fn emit_activity(&mut self, kernel: &mut Kernel) -> Result<()> {
        self.clock = Clock::new();
        let interval_s = round3(self.last_activity.elapsed().as_secs_f64());
        self.last_activity = Instant::now();
        let deltas = self.ledger.deltas(
            &kernel.proc_snapshot()?,
            &kernel.syscall_snapshot()?,
            &kernel.flow_snapshot()?,
        );
        let gpu = self.gpu_activity(kernel, None, interval_s)?;
        let now = Clock::now_mono_ns();
        let ncpus = online_cpus();
        // Syscall counts exist only where their hook runs (--syscalls).
        let counted = kernel.counts_syscalls();
        let syscalls_if_counted = |mut a: LedgerActivity| {
            if !counted {
                a.syscalls = None;
            }
            a
        };

        let mut trees: BTreeMap<u32, Rollup> = BTreeMap::new();
        let mut containers: BTreeMap<String, Rollup> = BTreeMap::new();
        let mut first_looks = 0;
        let tgids: std::collections::BTreeSet<u32> = deltas.keys().chain(gpu.keys()).copied().collect();
        for tgid in tgids {
            let delta = deltas.get(&tgid).cloned().unwrap_or_default();
            let gpu_summary = gpu.get(&tgid).map(|a| a.summary.clone());
            let Some(process) = self.view_of_tgid(tgid) else {
                self.stats.unattributed_activity += 1;
                continue;
            };
            if !self.wants_comm(process.comm.as_bytes()) {
                self.stats.filtered_out += 1;
                continue;
            }
            let (sid, cgroup) = match self.table.get(tgid) {
                Some(p) => (p.sid.unwrap_or(tgid), p.cgroup.clone()),
                None => (tgid, None),
            };
            let cgroup = cgroup.or_else(|| process.cgroup.clone()).unwrap_or_else(|| "unknown".into());
            for rollup in [trees.entry(sid).or_default(), containers.entry(cgroup.clone()).or_default()] {
                rollup.delta.add(&delta);
                rollup.processes += 1;
                if let Some(g) = &gpu_summary {
                    rollup.gpu.get_or_insert_with(Default::default).add(g);
                }
                // The first process that knows them names the roll-up.
                if rollup.container_id.is_none() {
                    rollup.container_id = process.container_id.clone();
                }
                if rollup.cgroup_id.is_none() {
                    rollup.cgroup_id = process.cgroup_id;
                }
            }
            let names = &self.names;
            let busy = gpu_summary.is_some() || delta.stats.cpu_ns > 100_000_000;
            let mut activity = syscalls_if_counted(LedgerActivity::with_names(
                &delta,
                interval_s,
                ncpus,
                gpu_summary,
                |ip| names.name(tgid, ip),
            ));
            // Busy processes' memory maps are read each interval they are
            // busy, for ML runtimes (a job that imports numpy first and
            // torch later) and a miner's footprint; the libraries are
            // reported when something new shows, the footprint each time.
            // Every other process that did something is looked at once (a
            // node verifying blocks idles, and holds its chain database), a
            // few per interval.
            let first_look = !busy
                && first_looks < FIRST_LOOKS_PER_INTERVAL
                && !self.libraries_checked.contains_key(&tgid)
                && std::path::Path::new(&format!("/proc/{tgid}")).exists();
            first_looks += usize::from(first_look);
            if busy || first_look {
                let found = crate::process::maps::scan(tgid);
                let before = self.libraries_checked.insert(tgid, found.ml_libraries.len()).unwrap_or(0);
                if found.ml_libraries.len() > before {
                    activity.ml_libraries = found.ml_libraries;
                }
                if busy && !found.memory.is_empty() {
                    activity.memory = Some(found.memory);
                }
                // Without the open hooks, the model files it holds now.
                if !counted {
                    self.emit_held_files(now, &process, tgid, &found.model_files, &found.data_files)?;
                }
            }
            self.emit(now, Some(process.into()), Body::Activity(activity))?;
        }
        self.emit_temp_files(now, false)?;
        for (pid, view) in gpu {
            let process = self.view_of_tgid(pid).map(ProcessEntry::from);
            self.emit(now, process, Body::Gpu(GpuBody::Activity(view)))?;
        }
        for (sid, r) in trees {
            let leader = self.table.get(sid).filter(|p| p.sid == Some(sid)).map(|p| ParentView {
                entity_id: p.entity_id.clone(),
                pid: p.tgid,
                exe: p.exe.as_deref().map(|e| bytes_to_string(e).0.into_owned()),
            });
            let activity = syscalls_if_counted(LedgerActivity::new(&r.delta, interval_s, ncpus, r.gpu));
            let body = Body::Tree(TreeView { sid, leader, active_processes: r.processes, activity });
            self.emit(now, None, body)?;
        }
        for (cgroup, r) in containers {
            let activity = syscalls_if_counted(LedgerActivity::new(&r.delta, interval_s, ncpus, r.gpu));
            let body = Body::Container(ContainerView {
                cgroup,
                cgroup_id: r.cgroup_id,
                container_id: r.container_id,
                active_processes: r.processes,
                activity,
            });
            self.emit(now, None, body)?;
        }
        // Exited processes have had their last interval: forget them.
        let mut gone: HashSet<u32> = self.table.sweep_exited().into_iter().collect();
        // Every twelfth report, also those whose exit was never seen (its
        // record dropped in a full ring): gone from /proc, whether the
        // table knew them or only the kernel's counters did.
        self.reports += 1;
        if self.reports.is_multiple_of(12) {
            let pruned = self.table.prune_vanished();
            self.stats.table_pruned += pruned.len() as u64;
            gone.extend(pruned);
            let unknown: Vec<u32> = self
                .ledger
                .tgids()
                .filter(|t| self.table.get(*t).is_none() && !self.table.in_proc(*t))
                .collect();
            gone.extend(unknown);
            for tgid in &gone {
                if self.gpu_tgids.remove(tgid) {
                    kernel.forget_gpu_process(*tgid);
                    self.gpu.forget(*tgid);
                }
            }
        }
        let keys = self.ledger.forget(&gone);
        kernel.forget_processes(&gone, keys);
        for tgid in &gone {
            self.names.forget(*tgid);
            self.libraries_checked.remove(tgid);
            self.files_held.remove(tgid);
            self.exe_reported.remove(tgid);
        }
        Ok(())
    }

    /// Temporarily named files the kernel reported written, looked for:
    /// at each activity report, and (`first_looks_only`) once soon after
    /// each was reported.
    fn emit_temp_files(&mut self, now: u64, first_looks_only: bool) -> Result<()> {
        // Files renamed into place since they were written under a
        // temporary name: model weights are what the open hooks watch. And
        // files still being written under one whose content is a data
        // format (a plot, a chain's database) by their header.
        use std::os::unix::ffi::OsStrExt as _;
        use crate::process::open_files::{format_suffix, is_model_file};
        let sniffed = &mut self.sniffed;
        let mut data_format = |path: &std::path::Path| {
            sniffed.format_at_least(path, 0).filter(|f| format_suffix(f).is_none())
        };
        let wanted = |path: &std::path::Path, renamed: bool| {
            (renamed && is_model_file(path.as_os_str().as_bytes())) || data_format(path).is_some()
        };
        let found = match first_looks_only {
            true => self.temp_files.resolve_due(now, wanted),
            false => self.temp_files.resolve(wanted),
        };
        let found: Vec<_> = found
            .into_iter()
            .map(|(process, temp, path)| {
                let format = data_format(&path);
                (process, temp, path, format)
            })
            .collect();
        for (process, temp, path, format) in found {
            let renamed = temp != path;
            let (path, escaped) = text(path.as_os_str().as_bytes(), "path");
            let (renamed_from, old_escaped) = match renamed {
                true => {
                    let (from, e) = text(temp.as_os_str().as_bytes(), "renamed_from");
                    (Some(from), e)
                }
                false => (None, None),
            };
            let body = Body::FileOpen(FileOpenView {
                path,
                source: "write",
                write: true,
                renamed,
                renamed_from,
                renamed_from_truncated: false,
                flags: 1,
                format,
                escaped: escaped.into_iter().chain(old_escaped).collect(),
            });
            self.emit(now, Some(process), body)?;
        }
        Ok(())
    }

    /// A connection's first message, joined from its first sends.
    fn emit_first_message(&mut self, m: first_message::Message<SendContext>) -> Result<()> {
        let SendContext { header: h, peer, inbound, datagram } = &m.header;
        if m.data.is_empty() && m.bytes > 0 && !m.gap {
            // The buffer was not resident at syscall entry; the record
            // says captured 0, and health counts it.
            self.stats.first_bytes_unreadable += 1;
        }
        if (m.data.len() as u64) < m.bytes {
            *self.stats.truncated.entry("first_bytes").or_default() += 1;
        }
        if m.gap {
            self.stats.first_bytes_gaps += 1;
        }
        let process = self.view(h);
        let preview = &crate::protocols::redact::redact(&m.data)[..m.data.len().min(96)];
        let (preview_text, preview_escaped) = text(preview, "preview");
        let body = Body::FirstBytes(FirstBytesView {
            address: peer.map(|(ip, _)| ip.to_string()),
            port: peer.map(|(_, port)| port),
            dns_name: peer.and_then(|(ip, _)| self.names.name(h.tgid, &ip)),
            fd: (m.fd >= 0).then_some(m.fd),
            direction: if *inbound { "inbound" } else { "outbound" },
            transport: if *datagram { "udp" } else { "tcp" },
            bytes: m.bytes.min(u64::from(u32::MAX)) as u32,
            captured: m.data.len() as u32,
            sends: m.sends,
            recognised: if *datagram {
                crate::protocols::recognise_datagram(&m.data, m.bytes, peer.map(|(_, port)| port))
            } else {
                // The service's port: the peer's on a connection opened (on
                // one accepted, the peer's port is its own ephemeral one).
                let port = peer.filter(|_| !*inbound).map(|(_, port)| port);
                crate::protocols::recognise_message(&m.data, m.bytes, port)
            },
            preview: preview_text,
            escaped: preview_escaped.into_iter().collect(),
        });
        self.emit(h.ktime_ns, Some(process), body)
    }

    /// Executables the worker finished: a record for the first process seen
    /// running each file, and for every process whose file is suspicious
    /// (miner strings, a packer, a memfd, deleted).
    fn emit_executables(&mut self, done: Vec<ExecutableDone>) -> Result<()> {
        for d in done {
            let Ok(e) = d.result else { continue };
            // Every later record of the process carries the hash.
            if let Some(p) = self.table.get_mut(d.tgid) {
                p.exe_sha256.clone_from(&e.sha256);
            }
            if !(d.first || e.suspicious()) {
                continue;
            }
            // The worker reads the file a process runs when it gets to it: a
            // quick second exec (setsid, a wrapper) can show the same file twice.
            if self.exe_reported.insert(d.tgid, (e.device, e.inode)) == Some((e.device, e.inode)) {
                continue;
            }
            let Some(process) = self.view_of_tgid(d.tgid) else { continue };
            if !self.wants_comm(process.comm.as_bytes()) {
                self.stats.filtered_out += 1;
                continue;
            }
            let now = Clock::now_mono_ns();
            self.emit(now, Some(process.into()), Body::Executable((*e).clone()))?;
        }
        Ok(())
    }

    /// What finished since the last look: executables the worker
    /// identified, first messages that waited long enough for a next send.
    /// `all` at shutdown: everything still waiting.
    fn collect_finished(&mut self, all: bool) -> Result<()> {
        let finished = match self.executables.as_mut() {
            Some(x) if all => x.finish(Duration::from_millis(500)),
            Some(x) => x.finished(),
            None => Vec::new(),
        };
        self.emit_executables(finished)?;
        self.emit_temp_files(Clock::now_mono_ns(), true)?;
        let done =
            if all { self.first_messages.drain() } else { self.first_messages.expired(Clock::now_mono_ns()) };
        for m in done {
            self.emit_first_message(m)?;
        }
        Ok(())
    }

    /// Whether `--comm` (none given: everything) keeps a thread of this name.
    fn wants_comm(&self, comm: &[u8]) -> bool {
        self.comms.is_empty() || self.comms.iter().any(|c| c.as_slice() == comm)
    }

    /// Handles one raw ring-buffer record.
    pub fn handle(&mut self, bytes: &[u8], kernel: &mut Kernel) -> Result<()> {
        self.stats.events_read += 1;
        let Ok(Event { header: h, body }) = decode(bytes) else {
            self.stats.decode_errors += 1;
            return Ok(());
        };
        *self.stats.by_kind.entry(h.kind.name()).or_default() += 1;
        let wanted = self.wants_comm(&h.comm);
        match body {
            EventBody::Exec(exec) => {
                let p = self.table.resolve(&h);
                p.comm = h.comm.clone();
                // A new image: its hash comes with its process.executable.
                p.exe_sha256 = None;
                p.exe = Some(if exec.filename.starts_with(b"/") {
                    exec.filename.clone()
                } else {
                    std::fs::read_link(format!("/proc/{}/exe", h.tgid))
                        .map(|l| std::os::unix::ffi::OsStrExt::as_bytes(l.as_os_str()).to_vec())
                        .unwrap_or_else(|_| exec.filename.clone())
                });
                if let Some(argv) = exec.argv {
                    p.argv = argv;
                    p.argv_truncated = exec.argv_truncated;
                }
                if !wanted {
                    self.stats.filtered_out += 1;
                    return Ok(());
                }
                if let Some(x) = self.executables.as_mut() {
                    x.submit(h.tgid);
                }
                let process = self.view(&h);
                let (filename, escaped) = text(&exec.filename, "filename");
                let body = Body::Exec(ExecView {
                    filename,
                    filename_truncated: exec.filename_truncated,
                    argv_bytes: exec.argv_full_len,
                    old_pid: (exec.old_pid != h.pid && exec.old_pid != 0).then_some(exec.old_pid),
                    escaped: escaped.into_iter().collect(),
                });
                self.emit(h.ktime_ns, Some(process), body)
            }
            EventBody::Fork { child_pid, child_tgid, child_start_boottime_ns } => {
                self.table.resolve(&h);
                let child_entity_id =
                    self.table.fork(&h, child_tgid, child_start_boottime_ns).entity_id.clone();
                if !wanted {
                    self.stats.filtered_out += 1;
                    return Ok(());
                }
                let process = self.view(&h);
                self.emit(h.ktime_ns, Some(process), Body::Fork(ForkView { child_pid, child_entity_id }))
            }
            EventBody::Exit { exit_code, cpu_ns, waits } => {
                kernel.carry_exit_share(h.tgid, cpu_ns, waits);
                let result = if wanted {
                    let process = self.view(&h);
                    let mut exit = ExitView::from_raw(exit_code);
                    // Always present: a process that exits before the
                    // scheduler first charges it has an account of zeros,
                    // not none, so the record's shape does not depend on
                    // timing.
                    let mut account = AccountView::new(&kernel.proc_stats_of(h.tgid).unwrap_or_default());
                    if !kernel.counts_syscalls() {
                        account.syscalls = None;
                    }
                    exit.account = Some(account);
                    self.emit(h.ktime_ns, Some(process), Body::Exit(exit))
                } else {
                    self.stats.filtered_out += 1;
                    Ok(())
                };
                // The process's last GPU activity is its final GPU account.
                if self.gpu_tgids.remove(&h.tgid) {
                    self.emit_final_gpu_account(kernel, h.tgid)?;
                }
                // Kept until the next activity report, which closes its books.
                self.table.resolve(&h).exited = true;
                result
            }
            EventBody::Dns { response, server, port, len, payload } => {
                let (message, error) = match crate::dns::parse(&payload) {
                    Ok(m) => (Some(m), None),
                    Err(e) => {
                        self.stats.dns_parse_errors += 1;
                        (None, Some(e.to_string()))
                    }
                };
                if let Some(m) = message.as_ref().filter(|m| m.response) {
                    self.names.learn(h.tgid, m);
                }
                if !wanted {
                    self.stats.filtered_out += 1;
                    return Ok(());
                }
                if (payload.len() as u32) < len {
                    *self.stats.truncated.entry("dns").or_default() += 1;
                }
                let process = self.view(&h);
                let body = Body::Dns(DnsView {
                    direction: if response { "response" } else { "query" },
                    server: server.map(|s| s.to_string()),
                    port,
                    bytes: len,
                    captured: payload.len() as u32,
                    message,
                    error,
                });
                self.emit(h.ktime_ns, Some(process), body)
            }
            EventBody::FirstBytes { peer, fd, conn, len, offset, last, inbound, datagram, payload } => {
                if !wanted {
                    self.stats.filtered_out += 1;
                    return Ok(());
                }
                let send = first_message::Send {
                    header: SendContext { header: h.clone(), peer, inbound, datagram },
                    tgid: h.tgid,
                    fd,
                    conn,
                    now_ns: h.ktime_ns,
                    len,
                    offset,
                    last,
                    payload: &payload,
                };
                for message in self.first_messages.add(send) {
                    self.emit_first_message(message)?;
                }
                Ok(())
            }
            EventBody::FileOpen { flags, source, path, old_path, old_path_truncated } => {
                if !wanted {
                    self.stats.filtered_out += 1;
                    return Ok(());
                }
                let process = self.view(&h);
                let (path, escaped) = text(&path, "path");
                let (renamed_from, old_escaped) = match old_path {
                    Some(old) => {
                        let (old, e) = text(&old, "renamed_from");
                        (Some(old), e)
                    }
                    None => (None, None),
                };
                if old_path_truncated {
                    *self.stats.truncated.entry("renamed_from").or_default() += 1;
                }
                let body = Body::FileOpen(FileOpenView {
                    path,
                    source,
                    write: flags & 3 != 0,
                    renamed: flags & (1 << 31) != 0,
                    renamed_from,
                    renamed_from_truncated: old_path_truncated,
                    flags: flags & !(1 << 31),
                    format: None,
                    escaped: escaped.into_iter().chain(old_escaped).collect(),
                });
                self.emit(h.ktime_ns, Some(process), body)
            }
            EventBody::TempWrite(write) => {
                if !wanted {
                    self.stats.filtered_out += 1;
                    return Ok(());
                }
                let process = self.view(&h);
                self.temp_files.add(process, write, Clock::now_mono_ns(), || {
                    std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()
                });
                Ok(())
            }
            EventBody::Listen { local } => {
                if !wanted {
                    self.stats.filtered_out += 1;
                    return Ok(());
                }
                let process = self.view(&h);
                let body = Body::Listen(ListenView {
                    address: local.map(|(ip, _)| ip.to_string()),
                    port: local.map(|(_, port)| port),
                });
                self.emit(h.ktime_ns, Some(process), body)
            }
            EventBody::SetSid { sid } => {
                self.table.resolve(&h).sid = Some(sid);
                Ok(())
            }
            EventBody::GpuOpen { rdev, vendor, fd, cmd, sub } => {
                self.gpu_tgids.insert(h.tgid);
                if !wanted {
                    self.stats.filtered_out += 1;
                    return Ok(());
                }
                let process = self.view(&h);
                let (major, minor) = (rdev >> 20, rdev & 0xfffff);
                let body = Body::Gpu(GpuBody::Open(OpenView {
                    device: self.gpu.device_path(rdev),
                    major,
                    minor,
                    vendor: vendor_name(vendor),
                    driver: self.gpu.device_for(rdev).map_or_else(|| "unknown".into(), |d| d.driver.clone()),
                    fd,
                    first_op: gpu_decode(vendor, cmd, sub).name,
                }));
                self.emit(h.ktime_ns, Some(process), body)
            }
            EventBody::Connect(c) => {
                if !wanted {
                    self.stats.filtered_out += 1;
                    return Ok(());
                }
                let process = self.view(&h);
                let mut escaped = Vec::new();
                let (family, address, port, path) = match &c.addr {
                    SockAddr::Inet { ip, port } => {
                        (if ip.is_ipv4() { "inet" } else { "inet6" }, Some(ip.to_string()), Some(*port), None)
                    }
                    SockAddr::Unix { path } => {
                        let (path, esc) = text(path, "path");
                        escaped.extend(esc);
                        ("unix", None, None, Some(path))
                    }
                    SockAddr::Other { .. } => ("other", None, None, None),
                };
                let body = Body::Connect(ConnectView {
                    family,
                    address,
                    port,
                    path,
                    protocol: protocol_name(c.protocol, family != "unix"),
                    socket_type: socket_type_name(c.sock_type),
                    result: errno_name(c.ret),
                    ret: c.ret,
                    source: match c.source {
                        ConnectSource::Syscall => "syscall",
                        ConnectSource::SockState => "sock_state",
                        ConnectSource::Socket => "socket",
                    },
                    dns_name: match &c.addr {
                        SockAddr::Inet { ip, .. } => self.names.name(h.tgid, ip),
                        _ => None,
                    },
                    fd: (c.fd >= 0).then_some(c.fd),
                    escaped,
                });
                self.emit(h.ktime_ns, Some(process), body)
            }
        }
    }

    /// Records dropped since stderr was last told, on stderr, at most every
    /// `DROPS_TOLD_EVERY`: the health records count them, but an operator
    /// watching the terminal or the journal should not have to look there
    /// to learn that records are being lost.
    fn tell_of_drops(&mut self, kernel: &Kernel) -> Result<()> {
        let (told, at) = self.drops_told;
        if at.elapsed() < DROPS_TOLD_EVERY {
            return Ok(());
        }
        let counters = kernel.counters()?;
        let total = counters.dropped_total();
        if total > told {
            eprintln!(
                "tracer: the kernel dropped {} records in the last {} s (ring buffer full; {total} in all: \
                 {}); a larger --ring-buffer-kib or a filter (--pid, --cgroup) keeps up",
                total - told,
                at.elapsed().as_secs(),
                by_kind(&counters.dropped)
            );
        }
        self.drops_told = (total, Instant::now());
        Ok(())
    }

    /// At exit: what was lost in all, if anything.
    fn tell_of_losses_at_exit(&self, kernel: &Kernel) {
        let Ok(counters) = kernel.counters() else { return };
        let unread: u64 = self.stats.unread_at_shutdown.values().sum();
        if counters.dropped_total() > 0 || unread > 0 {
            eprintln!(
                "tracer: {} records dropped by the kernel ({}), {unread} left unread at shutdown; \
                 the final health record has the counts",
                counters.dropped_total(),
                by_kind(&counters.dropped)
            );
        }
    }

    /// The periodic health record. Also the moment to catch up with GPU
    /// drivers loaded after start.
    fn tick_health(&mut self, kernel: &mut Kernel) -> Result<()> {
        let new = self.gpu.add_new(devices::discover());
        if let Err(e) = kernel.add_gpu_devices(&new) {
            eprintln!("tracer: {e:#}");
        }
        self.emit_health(kernel, "running")
    }

    fn tables(&self, kernel: &Kernel) -> BTreeMap<&'static str, usize> {
        let (scopes, processes) = self.classifier.as_ref().map_or((0, 0), Classifier::tables);
        let (proc_keys, syscall_keys, flow_keys) = self.ledger.keys();
        BTreeMap::from([
            ("classifier_scopes", scopes),
            ("classifier_processes", processes),
            ("dns_names", self.names.len()),
            ("cgroup_paths", self.cgroups.len()),
            ("libraries_checked", self.libraries_checked.len()),
            ("files_held", self.files_held.len()),
            ("executables_reported", self.exe_reported.len()),
            ("executables_waiting", self.executables.as_ref().map_or(0, |x| x.waiting)),
            ("gpu_processes", self.gpu_tgids.len()),
            ("kernel_proc_stats", proc_keys),
            ("kernel_syscall_counts", syscall_keys),
            ("kernel_flows", flow_keys),
            ("cpu_time_carried", kernel.cpu_time_carried()),
        ])
    }

    pub fn emit_health(&mut self, kernel: &Kernel, status: &'static str) -> Result<()> {
        self.clock = Clock::new();
        if let Some(service) = &self.service {
            *service.program_stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                kernel.program_stats();
        }
        // Written out first, so that the sinks' counts add up: every record
        // handed to a sink is delivered or counted lost, none in between.
        self.sinks.flush()?;
        let counters = kernel.counters()?;
        let tables = kernel.tables()?;
        let evicted =
            |names: &[&str]| names.iter().map(|n| tables.evicted.get(n).copied().unwrap_or(0)).sum();
        let programs = ProgramCounts::of(&kernel.attach);
        let body = Body::Health(HealthView {
            status,
            uptime_s: (self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            events_read: self.stats.events_read,
            events_by_kind: self.stats.by_kind.clone(),
            dropped: HealthView::dropped_map(&counters),
            dropped_total: counters.dropped_total(),
            decode_errors: self.stats.decode_errors,
            filtered_out: self.stats.filtered_out,
            unattributed_activity: self.stats.unattributed_activity,
            dns_parse_errors: self.stats.dns_parse_errors,
            dns_names_evicted: self.names.evicted,
            ledger_keys_evicted: evicted(&["proc_stats", "syscall_counts", "flows"]),
            process_table_pruned: self.stats.table_pruned,
            first_bytes_unreadable: self.stats.first_bytes_unreadable,
            first_bytes_gaps: self.stats.first_bytes_gaps,
            executables: self.executables.as_ref().map(|x| x.counts),
            kernel_maps: kernel.map_memory.clone(),
            gpu_stats_full: evicted(&["gpu_stats"]),
            kernel_tables: tables.entries,
            kernel_evictions: tables.evicted,
            kernel_losses: counters.losses.clone(),
            truncated: self.stats.truncated.clone(),
            temp_files: self.temp_files.counts.clone(),
            rules_reloads: (self.rules_reloads.reloaded + self.rules_reloads.failed > 0)
                .then(|| Box::new(self.rules_reloads.clone())),
            unread_at_shutdown: self.stats.unread_at_shutdown.clone(),
            kernel_read_errors: counters.read_errors,
            threads_created: counters.threads_created,
            gpu_devices: self.gpu.describe_devices(),
            nvml: self.nvml_status.clone(),
            process_table_size: self.table.len(),
            tables: self.tables(kernel),
            programs_attached: programs.attached,
            programs_failed: programs.failed,
            programs_skipped: programs.skipped,
            syscall_hooks: kernel.syscall_hooks(),
            sockets_adopted: kernel.sockets_adopted,
            programs: kernel.attach.clone(),
            missing_kernel_fields: kernel.missing_fields.clone(),
            sinks: self.sinks.stats(),
        });
        self.emit(Clock::now_mono_ns(), None, body)?;
        self.sinks.flush()
    }

    /// Reads what is in the ring buffer until it is empty or `until`
    /// passes: under a sustained flood the buffer never empties, and the
    /// caller must get back to signals, timers and SIGHUP. Returns whether
    /// the buffer was emptied.
    pub fn drain(
        &mut self,
        ring: &mut RingBuf<MapData>,
        kernel: &mut Kernel,
        until: Instant,
    ) -> Result<bool> {
        // Wall time follows a clock step (NTP, `date -s`, a resumed VM)
        // from the next turn on: two vDSO reads.
        self.clock = Clock::new();
        let mut n = 0u32;
        loop {
            // The clock is read every 64 records: a record takes microseconds.
            if n % 64 == 63 && Instant::now() >= until {
                self.collect_finished(false)?;
                return Ok(false);
            }
            let Some(item) = ring.next() else {
                self.collect_finished(false)?;
                return Ok(true);
            };
            self.handle(&item, kernel)?;
            n = n.wrapping_add(1);
        }
    }

    /// At shutdown, once the drain's time is up: the records still in the
    /// ring are counted by kind, not processed, and the final health record
    /// reports them as `unread_at_shutdown`.
    pub fn count_unread(&mut self, ring: &mut RingBuf<MapData>) {
        while let Some(item) = ring.next() {
            let kind = item.get(..4).and_then(|b| {
                tracer_common::EventKind::from_u32(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            });
            *self.stats.unread_at_shutdown.entry(kind.map_or("unknown", |k| k.name())).or_default() += 1;
        }
    }
}

/// Processes looked at for the first time per activity interval when not
/// busy (their maps and descriptors, see emit_activity).
const FIRST_LOOKS_PER_INTERVAL: usize = 64;

/// Threads whose last process view is kept; past this many, all are let go
/// and made again as records come.
const VIEWS_KEPT: usize = 4096;

/// Drop counts by kind, the non-zero ones: `exec 80, connect 3`.
fn by_kind(counts: &HashMap<&'static str, u64>) -> String {
    let mut kinds: Vec<_> = counts.iter().filter(|(_, n)| **n > 0).collect();
    kinds.sort();
    kinds.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
}

/// How often, at most, stderr is told of records dropped.
const DROPS_TOLD_EVERY: Duration = Duration::from_secs(10);

/// How often the event loop collects what its worker finished.
const BACKGROUND_POLL: Duration = Duration::from_millis(250);

/// How often the ring buffer is read without a wakeup: the kernel wakes
/// the reader only once a sixteenth of the ring is waiting
/// (`Config::wake_bytes`), so a record written at a slow rate waits at
/// most this long.
pub const RING_POLL: Duration = Duration::from_millis(20);

/// How long one turn of the event loop reads records before it looks at
/// signals and timers again.
const DRAIN_TURN: Duration = Duration::from_millis(50);

/// How long the shutdown reads what the ring still holds; the rest is
/// counted. A service manager waits a few seconds at most before SIGKILL.
const DRAIN_AT_SHUTDOWN: Duration = Duration::from_millis(200);

/// Resolves `--cgroup` to a cgroup v2 id and its depth below the root.
fn cgroup_filter(arg: &str) -> Result<(u64, u32)> {
    let mount =
        cgroup::cgroup2_mount().ok_or_else(|| anyhow!("--cgroup {arg}: no cgroup2 mount on this host"))?;
    if let Ok(id) = arg.parse::<u64>() {
        let level = cgroup::level_of_id(&mount, id).ok_or_else(|| {
            anyhow!("--cgroup {arg}: no cgroup2 directory under {} has that id", mount.display())
        })?;
        return Ok((id, level));
    }
    let path = Path::new(arg);
    let path = if path.exists() { path.to_path_buf() } else { mount.join(arg.trim_start_matches('/')) };
    let id = cgroup::id_of_path(&path).with_context(|| format!("cgroup {arg} ({})", path.display()))?;
    let level = cgroup::level_of_path(&mount, &path).ok_or_else(|| {
        anyhow!("--cgroup {arg}: {} is not a cgroup v2 directory (under {})", path.display(), mount.display())
    })?;
    Ok((id, level))
}

/// `record`: the same as run, to a file, headed by a capture record.
pub fn run(args: RunArgs, record: bool) -> Result<()> {
    if record && args.output.is_none() {
        anyhow::bail!("record needs --output FILE (add .gz to compress)");
    }
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(run_async(args, record))
}

async fn run_async(args: RunArgs, record: bool) -> Result<()> {
    let started = Instant::now();
    let specs = sink_specs(args.output.as_deref(), &args.sinks, args.format, record)?;
    let rules = if args.no_classify { None } else { Some(Rules::load(args.rules.as_deref())?) };
    let mut gpu_devices = devices::discover();
    let mut gpu_paths = HashMap::new();
    for spec in &args.gpu_devices {
        let d = devices::parse_spec(spec)?;
        if let Some((path, _)) = spec.rsplit_once('=').filter(|(p, _)| p.starts_with('/'))
            && let Some(minor) = d.minor
        {
            gpu_paths.insert((d.major, minor), path.to_string());
        }
        gpu_devices.push(d);
    }
    let cgroup = args.cgroup.as_deref().map(cgroup_filter).transpose()?.unwrap_or((0, 0));
    let opts = LoadOptions {
        ring_buffer_bytes: args
            .ring_buffer_kib
            .checked_mul(1024)
            .ok_or_else(|| anyhow!("--ring-buffer-kib {} is too large", args.ring_buffer_kib))?,
        tgids: args.pids.clone(),
        cgroup_id: cgroup.0,
        cgroup_level: cgroup.1,
        gpu_devices: gpu_devices.clone(),
        syscall_histogram: !args.no_syscall_histogram,
        syscalls: args.syscalls,
    };
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;

    // Bound first: a socket another tracer serves is an error before any
    // program loads.
    let api = args.api.as_deref().map(crate::service::api::Listener::bind).transpose()?;
    let (mut kernel, ring) = Kernel::load(&opts)?;
    // Before any thread is started: capabilities are per thread, and the
    // sinks' threads inherit what the main thread has when they start.
    if !args.keep_privileges {
        crate::privileges::drop_after_load().context("dropping privileges after load")?;
    }
    let mut sinks = Sinks::open(&specs)?;
    let service = (api.is_some() || args.metrics.is_some())
        .then(|| std::sync::Arc::new(crate::service::api::Shared::default()));
    let mut _serving = None;
    if let Some(shared) = &service {
        let display =
            args.api.as_ref().map_or_else(|| "metrics".to_owned(), |p| format!("api:{}", p.display()));
        let (sink, stats) = crate::service::api::ApiSink::new(shared.clone(), display, api.is_some());
        sinks.attach(Box::new(sink), stats);
        if let Some(listener) = api {
            _serving = Some(listener.serve(shared.clone())?);
        }
        if let Some(addr) = args.metrics {
            crate::service::metrics::serve(addr, shared.clone())?;
        }
    }
    let mut pipeline =
        Pipeline::new(sinks, args.comms.clone(), started, GpuLedger::new(gpu_devices, gpu_paths));
    pipeline.service = service;
    if !args.no_nvml {
        pipeline.enable_nvml();
    }
    pipeline.classifier = rules.map(|r| Classifier::new(r).with_summaries(args.summary_interval));
    pipeline.rules_path.clone_from(&args.rules);
    if record {
        pipeline.write_capture_header()?;
    }
    // Seeded after the programs attach: a process is either in /proc now or
    // its exec/fork arrives through the ring buffer.
    pipeline.table.seed();
    // Processes already running have their executables looked at too.
    match Executables::start() {
        Ok(mut x) => {
            // Only those the filters trace: the kernel applies them to what
            // it reports, the seed comes from /proc. With --cgroup, running
            // processes are left out (their cgroup is the kernel's to tell);
            // those that exec later are looked at.
            let me = std::process::id();
            let table = &pipeline.table;
            let traced = |tgid: u32| {
                if !args.pids.is_empty() {
                    args.pids.contains(&tgid)
                        || table.ancestors(tgid).iter().any(|p| args.pids.contains(&p.tgid))
                } else {
                    cgroup.0 == 0
                }
            };
            for tgid in table.tgids().into_iter().filter(|t| *t != me && traced(*t)) {
                x.submit(tgid);
            }
            pipeline.executables = Some(x);
        }
        Err(e) => eprintln!("tracer: no executable identification: starting its thread: {e}"),
    }
    pipeline.emit_health(&kernel, "started")?;

    // SAFETY: the ring buffer owns its fd and outlives the registration,
    // which into_inner() ends before the map is read synchronously.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow!("registering the ring buffer with the event loop: {}", e.into_parts().1))?;
    let mut activity =
        interval_at(tokio::time::Instant::now() + args.activity_interval, args.activity_interval);
    activity.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut health = interval_at(tokio::time::Instant::now() + args.health_interval, args.health_interval);
    health.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Work finished off the event loop (executables) and first messages
    // whose wait is over are written within this, even when no record comes.
    let mut background = interval_at(tokio::time::Instant::now() + BACKGROUND_POLL, BACKGROUND_POLL);
    background.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut ring_poll = interval_at(tokio::time::Instant::now() + RING_POLL, RING_POLL);
    ring_poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let until_deadline = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until_deadline);

    // An error inside the loop still goes through the shutdown below: the
    // programs detach, the ring is read out, the final health record is
    // written to every sink that still works.
    let outcome: Result<()> = loop {
        let turn: Result<()> = tokio::select! {
            guard = ring.readable_mut() => match guard {
                Err(e) => Err(e.into()),
                Ok(mut guard) => {
                    let read = pipeline.drain(guard.get_inner_mut(), &mut kernel, Instant::now() + DRAIN_TURN);
                    if read.as_ref().is_ok_and(|&emptied| emptied) {
                        // Empty: wait for the next wakeup. Otherwise the fd
                        // stays ready and the loop comes back after a yield.
                        guard.clear_ready();
                    }
                    drop(guard);
                    let full = read.as_ref().is_ok_and(|&emptied| !emptied);
                    let result = read.and_then(|_| pipeline.sinks.flush());
                    if full {
                        // Lets the runtime poll its drivers: signals and
                        // timers are delivered only when the task gives way.
                        tokio::task::yield_now().await;
                    }
                    result
                }
            },
            _ = ring_poll.tick() => pipeline
                .drain(ring.get_mut(), &mut kernel, Instant::now() + DRAIN_TURN)
                .and_then(|_| pipeline.sinks.flush()),
            _ = health.tick() => pipeline.tick_health(&mut kernel),
            _ = background.tick() => {
                // 250 ms: a CPU's log of evicted slots fills only past 4 000 a second.
                kernel.collect_evicted();
                pipeline
                    .collect_finished(false)
                    .and_then(|()| pipeline.tell_of_drops(&kernel))
                    .and_then(|()| pipeline.sinks.flush())
            }
            _ = activity.tick() => pipeline.emit_activity(&mut kernel).and_then(|()| pipeline.sinks.flush()),
            _ = sighup.recv() => {
                pipeline.reload_rules();
                pipeline.sinks.reopen()
            }
            _ = sigint.recv() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
            _ = &mut until_deadline => break Ok(()),
        };
        if let Err(e) = turn {
            break Err(e);
        }
        if pipeline.sinks.stdout_broken() {
            // `finish` reports it, after the other sinks had the final records.
            break Ok(());
        }
    };

    // Stop the producers, then read what they left: programs still running
    // when the flag is set finish within microseconds. Detaching, which
    // takes the kernel most of a second, comes after the final records.
    // The final records must be out before a service manager's stop
    // timeout, and under a flood the producers take the CPU they need: the
    // rest of the shutdown runs at a raised priority (root may; if not, as
    // it is).
    // SAFETY: plain syscall on this thread.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, -10) };
    let mut ring = ring.into_inner();
    if let Err(e) = kernel.stop_records() {
        eprintln!("tracer: {e:#}; detaching now instead");
        kernel.detach();
    }
    let shutdown = (|| {
        let until = Instant::now() + DRAIN_AT_SHUTDOWN;
        if pipeline.drain(&mut ring, &mut kernel, until)? {
            std::thread::sleep(Duration::from_millis(20));
            pipeline.drain(&mut ring, &mut kernel, until)?;
        }
        pipeline.count_unread(&mut ring);
        pipeline.collect_finished(true)?;
        pipeline.emit_activity(&mut kernel)?;
        pipeline.emit_health(&kernel, "final")?;
        pipeline.tell_of_losses_at_exit(&kernel);
        Ok(())
    })();
    let finished = pipeline.sinks.finish(args.shutdown_grace);
    kernel.detach();
    outcome.and(shutdown).and(finished)
}

/// The sinks asked for: `--output` (a native capture for `record`), each
/// `--sink`, and stdout when neither is given.
pub fn sink_specs(
    output: Option<&Path>,
    sinks: &[String],
    format: crate::output::formats::Format,
    record: bool,
) -> Result<Vec<SinkSpec>> {
    let mut specs = Vec::new();
    if let Some(path) = output {
        let format = if record { crate::output::formats::Format::Native } else { format };
        specs.push(SinkSpec::file(path.to_path_buf(), format));
    }
    for s in sinks {
        specs.push(SinkSpec::parse(s, format)?);
    }
    if specs.is_empty() {
        specs.push(SinkSpec::parse("-", format)?);
    }
    Ok(specs)
}
