//! Everything that touches the kernel: loading and attaching the programs,
//! resolving what they need from BTF and tracefs, reading their counters,
//! and decoding their records.

mod batch;
pub mod btf;
pub mod events;
pub mod tracefs;

use std::{collections::HashMap, path::Path};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, Map, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{KProbe, Program, RawTracePoint, TracePoint},
};
use serde::Serialize;
use tracer_common::{
    Config, EventKind, FlowKey, FlowStats, GpuStat, GpuStatKey, NO_OFFSET, ProcStats, TracepointOffsets,
    config_flags, control, counter, table,
};

use self::batch::{BatchReader, pod};

use crate::gpu::devices::GpuDevice;

/// The programs, built for the BPF target by build.rs.
#[cfg(feature = "ebpf")]
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));
/// Built without them (the fuzz targets, which only parse): nothing to load.
#[cfg(not(feature = "ebpf"))]
static PROGRAMS: &[u8] = &[];

/// How a program hooks into the kernel.
#[derive(Clone, Copy)]
enum Hook {
    Tracepoint {
        category: &'static str,
        name: &'static str,
    },
    Raw {
        name: &'static str,
    },
    /// At the entry, or the return, of each of these kernel functions.
    KProbe {
        functions: &'static [&'static str],
    },
    KRetProbe {
        functions: &'static [&'static str],
    },
}

/// The inet protocol handlers every IPv4/IPv6 send or receive goes through.
const INET_SENDMSG: &[&str] = &["inet_sendmsg", "inet6_sendmsg"];
const INET_RECVMSG: &[&str] = &["inet_recvmsg", "inet6_recvmsg"];

/// Programs tried only where the program they stand in for could not be
/// attached (a hook this kernel lacks): (replaced program, program, hook).
/// Health lists them with what they replace.
const FALLBACK_HOOKS: [(&str, &str, Hook); 5] = [
    // sock_*_length appeared in 6.3; before it, bytes and peers come from
    // kprobes (IPv4/IPv6 only: the tracepoints also count Unix sockets).
    ("sock_send_length", "sock_send_enter", Hook::KProbe { functions: INET_SENDMSG }),
    ("sock_send_length", "sock_send_return", Hook::KRetProbe { functions: INET_SENDMSG }),
    ("sock_recv_length", "sock_recv_enter", Hook::KProbe { functions: INET_RECVMSG }),
    ("sock_recv_length", "sock_recv_return", Hook::KRetProbe { functions: INET_RECVMSG }),
    // Clears the fallback's calls in flight of threads that are gone.
    (
        "sock_send_length",
        "sock_calls_free",
        Hook::Tracepoint { category: "sched", name: "sched_process_free" },
    ),
];

/// Program name in the object, and its hook.
const PROGRAM_HOOKS: [(&str, Hook); 31] = [
    ("sched_process_exec", Hook::Tracepoint { category: "sched", name: "sched_process_exec" }),
    ("sched_process_fork", Hook::Raw { name: "sched_process_fork" }),
    ("sched_process_exit", Hook::Tracepoint { category: "sched", name: "sched_process_exit" }),
    ("sched_process_free", Hook::Tracepoint { category: "sched", name: "sched_process_free" }),
    ("sys_enter_connect", Hook::Tracepoint { category: "syscalls", name: "sys_enter_connect" }),
    ("sys_exit_connect", Hook::Tracepoint { category: "syscalls", name: "sys_exit_connect" }),
    ("inet_sock_set_state", Hook::Tracepoint { category: "sock", name: "inet_sock_set_state" }),
    ("sys_enter_ioctl", Hook::Tracepoint { category: "syscalls", name: "sys_enter_ioctl" }),
    ("sys_exit_ioctl", Hook::Tracepoint { category: "syscalls", name: "sys_exit_ioctl" }),
    // The high-rate hooks are raw tracepoints: no perf record is built per
    // event, which is most of a classic tracepoint's cost.
    ("sched_switch", Hook::Raw { name: "sched_switch" }),
    ("fpu_regs_deactivated", Hook::Raw { name: "x86_fpu_regs_deactivated" }),
    ("raw_sys_enter", Hook::Raw { name: "sys_enter" }),
    ("sock_send_length", Hook::Raw { name: "sock_send_length" }),
    ("sock_recv_length", Hook::Raw { name: "sock_recv_length" }),
    ("sys_exit_setsid", Hook::Tracepoint { category: "syscalls", name: "sys_exit_setsid" }),
    ("sys_enter_sendto", Hook::Tracepoint { category: "syscalls", name: "sys_enter_sendto" }),
    ("sys_enter_sendmsg", Hook::Tracepoint { category: "syscalls", name: "sys_enter_sendmsg" }),
    ("sys_enter_sendmmsg", Hook::Tracepoint { category: "syscalls", name: "sys_enter_sendmmsg" }),
    ("sys_enter_recvfrom", Hook::Tracepoint { category: "syscalls", name: "sys_enter_recvfrom" }),
    ("sys_exit_recvfrom", Hook::Tracepoint { category: "syscalls", name: "sys_exit_recvfrom" }),
    ("sys_enter_write", Hook::Tracepoint { category: "syscalls", name: "sys_enter_write" }),
    ("sys_enter_writev", Hook::Tracepoint { category: "syscalls", name: "sys_enter_writev" }),
    ("sys_enter_close", Hook::Tracepoint { category: "syscalls", name: "sys_enter_close" }),
    ("sys_enter_openat", Hook::Tracepoint { category: "syscalls", name: "sys_enter_openat" }),
    ("sys_enter_open", Hook::Tracepoint { category: "syscalls", name: "sys_enter_open" }),
    ("sys_enter_openat2", Hook::Tracepoint { category: "syscalls", name: "sys_enter_openat2" }),
    ("sys_enter_creat", Hook::Tracepoint { category: "syscalls", name: "sys_enter_creat" }),
    ("sys_enter_mmap", Hook::Tracepoint { category: "syscalls", name: "sys_enter_mmap" }),
    ("sys_enter_renameat2", Hook::Tracepoint { category: "syscalls", name: "sys_enter_renameat2" }),
    ("sys_enter_renameat", Hook::Tracepoint { category: "syscalls", name: "sys_enter_renameat" }),
    ("sys_enter_rename", Hook::Tracepoint { category: "syscalls", name: "sys_enter_rename" }),
];

impl Hook {
    /// Hooks on the syscall entry/exit path: attaching any of them sends
    /// every syscall of every task through the kernel's traced (slow) entry.
    fn is_syscall_level(self) -> bool {
        matches!(
            self,
            Self::Tracepoint { category: "syscalls" | "raw_syscalls", .. } | Self::Raw { name: "sys_enter" }
        )
    }

    fn describe(self) -> String {
        match self {
            Self::Tracepoint { category, name } => format!("tracepoint:{category}:{name}"),
            Self::Raw { name } => format!("raw_tracepoint:{name}"),
            Self::KProbe { functions } => format!("kprobe:{}", functions.join("+")),
            Self::KRetProbe { functions } => format!("kretprobe:{}", functions.join("+")),
        }
    }
}

/// The outcome of attaching one program, reported in every health record.
#[derive(Debug, Clone, Serialize)]
pub struct AttachStatus {
    pub program: &'static str,
    pub hook: String,
    pub attached: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A fallback: the program it stands in for on this kernel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces: Option<&'static str>,
}

#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Bytes; a power of two and a multiple of the page size.
    pub ring_buffer_bytes: u32,
    /// Trace only these processes and their descendants (empty: all).
    pub tgids: Vec<u32>,
    /// Trace only this cgroup v2 id and its subtree (0: all), at this depth
    /// below the cgroup2 root.
    pub cgroup_id: u64,
    pub cgroup_level: u32,
    /// Devices whose ioctls are attributed as GPU activity.
    pub gpu_devices: Vec<GpuDevice>,
    /// Count syscalls per process and number (else per process only).
    pub syscall_histogram: bool,
    /// Skip every syscall-level hook (see `Hook::is_syscall_level`).
    pub lite: bool,
}

/// Loaded and attached programs, with the maps user space reads.
pub struct Kernel {
    /// Dropping it detaches and unloads the programs.
    ebpf: Option<Ebpf>,
    counters: PerCpuArray<MapData, u64>,
    gpu_stats: PerCpuHashMap<MapData, GpuStatKey, GpuStat>,
    gpu_seen: BpfHashMap<MapData, u64, u8>,
    control: aya::maps::Array<MapData, u32>,
    gpu_devices: BpfHashMap<MapData, u32, u32>,
    pub map_memory: MapMemory,
    /// The LRU tables, by `tracer_common::table` number, read in batches.
    lru: Vec<BatchReader>,
    /// Keys this process removed from each LRU table.
    removed: [u64; table::COUNT as usize],
    traced_tgids: BatchReader,
    proc_stats: PerCpuHashMap<MapData, u32, ProcStats>,
    syscall_counts: PerCpuHashMap<MapData, u64, u64>,
    flows: PerCpuHashMap<MapData, FlowKey, FlowStats>,
    pub attach: Vec<AttachStatus>,
    /// Kernel fields or tracepoint fields not found: enrichments disabled.
    pub missing_fields: Vec<String>,
}

/// Counters the kernel keeps, summed over CPUs.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct KernelCounters {
    pub dropped: HashMap<&'static str, u64>,
    pub read_errors: u64,
    pub threads_created: u64,
    /// Keys the programs added to each LRU table and removed from it.
    pub table_inserted: [u64; table::COUNT as usize],
    pub table_deleted: [u64; table::COUNT as usize],
    /// Evidence the programs saw and could not report, by why.
    pub losses: std::collections::BTreeMap<&'static str, u64>,
}

impl KernelCounters {
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }
}

impl Kernel {
    /// Loads and attaches the programs; returns them with the ring buffer
    /// their records arrive on.
    pub fn load(opts: &LoadOptions) -> Result<(Self, RingBuf<MapData>)> {
        if PROGRAMS.is_empty() {
            bail!("this tracer was built without its kernel programs (cargo feature `ebpf` off)");
        }
        if !opts.ring_buffer_bytes.is_power_of_two() || opts.ring_buffer_bytes < page_size() {
            bail!(
                "ring buffer size {} is not a power of two of at least one page ({} bytes)",
                opts.ring_buffer_bytes,
                page_size()
            );
        }
        let tracefs = tracefs::ensure_mounted()?;
        let mut missing_fields = Vec::new();

        let kernel_offsets = match btf::resolve(Path::new(btf::VMLINUX_BTF)) {
            Ok(r) => {
                missing_fields.extend(r.missing);
                r.offsets
            }
            Err(e) => {
                missing_fields.push(format!("kernel BTF unavailable: {e:#}"));
                tracer_common::KernelOffsets::UNKNOWN
            }
        };
        let tp = tracepoint_offsets(&tracefs, &mut missing_fields);

        let config = Config {
            tracer_tgid: std::process::id(),
            filter_tgids: u32::from(!opts.tgids.is_empty()),
            filter_cgroup_id: opts.cgroup_id,
            filter_cgroup_level: opts.cgroup_level,
            flags: if opts.syscall_histogram { config_flags::SYSCALL_HISTOGRAM } else { 0 },
            started_ns: monotonic_ns(),
            kernel: kernel_offsets,
            tp,
        };
        let mut ebpf = EbpfLoader::new()
            .override_global("CONFIG", &config, true)
            .map_max_entries("EVENTS", opts.ring_buffer_bytes)
            .load(PROGRAMS)
            .context("loading the tracer's eBPF object")?;

        if !opts.tgids.is_empty() {
            let mut traced: BpfHashMap<_, u32, u8> = BpfHashMap::try_from(
                ebpf.map_mut("TRACED_TGIDS").ok_or_else(|| anyhow!("map TRACED_TGIDS missing"))?,
            )?;
            // The processes asked for and those already below them: forks
            // after load are followed by the kernel.
            for tgid in crate::process::procfs::with_descendants(Path::new("/proc"), &opts.tgids) {
                traced.insert(tgid, 1, 0).with_context(|| format!("adding pid {tgid} to the filter"))?;
            }
        }

        let mut try_attach = |program: &'static str, hook: Hook, replaces: Option<&'static str>| {
            let result = if opts.lite && hook.is_syscall_level() {
                Err(anyhow!("not loaded: --lite skips syscall hooks"))
            } else {
                match required_missing(program, &config) {
                    Some(why) => Err(anyhow!("not loaded: {why}")),
                    None => attach_one(&mut ebpf, program, hook),
                }
            };
            AttachStatus {
                program,
                hook: hook.describe(),
                attached: result.is_ok(),
                error: result.err().map(|e| format!("{e:#}")),
                replaces,
            }
        };
        let mut attach: Vec<_> =
            PROGRAM_HOOKS.iter().map(|&(program, hook)| try_attach(program, hook, None)).collect();
        let failed: Vec<&str> = attach.iter().filter(|a| !a.attached).map(|a| a.program).collect();
        for &(replaced, program, hook) in &FALLBACK_HOOKS {
            // Not where the primary was left out on purpose (--lite).
            if failed.contains(&replaced) && !(opts.lite && hook.is_syscall_level()) {
                attach.push(try_attach(program, hook, Some(replaced)));
            }
        }
        if attach.iter().all(|a| !a.attached) {
            let reasons: Vec<_> = attach.iter().filter_map(|a| a.error.clone()).collect();
            bail!("no program could be attached: {}", reasons.join("; "));
        }

        let events = take_map(&mut ebpf, "EVENTS")?;
        let lru = table::MAPS.iter().map(|name| reader(&ebpf, name)).collect::<Result<_>>()?;
        let mut kernel = Self {
            counters: take_map(&mut ebpf, "COUNTERS")?,
            gpu_stats: take_map(&mut ebpf, "GPU_STATS")?,
            gpu_seen: take_map(&mut ebpf, "GPU_SEEN")?,
            control: take_map(&mut ebpf, "CONTROL")?,
            gpu_devices: take_map(&mut ebpf, "GPU_DEVICES")?,
            map_memory: MapMemory::of_this_process(),
            lru,
            removed: [0; table::COUNT as usize],
            traced_tgids: reader(&ebpf, "TRACED_TGIDS")?,
            proc_stats: take_map(&mut ebpf, "PROC_STATS")?,
            syscall_counts: take_map(&mut ebpf, "SYSCALL_COUNTS")?,
            flows: take_map(&mut ebpf, "FLOWS")?,
            ebpf: Some(ebpf),
            attach,
            missing_fields,
        };
        kernel.add_gpu_devices(&opts.gpu_devices)?;
        Ok((kernel, events))
    }

    /// Entries in the kernel tables that follow threads, processes and
    /// sockets (they must stay flat however long the tracer runs), and the
    /// keys each LRU table evicted: added, neither removed nor there now.
    ///
    /// The counters are read before the walk and again after it: a key
    /// added during the walk is in neither the first count nor, perhaps,
    /// the walk, and one removed during it is in the second count, so what
    /// is reported is at most what was evicted.
    pub fn tables(&self) -> Result<KernelTables> {
        let before = self.counters()?;
        let mut out = KernelTables::default();
        for (i, reader) in self.lru.iter().enumerate() {
            out.entries.insert(
                table::NAMES[i],
                reader.len().with_context(|| format!("reading {}", table::MAPS[i]))?,
            );
        }
        let after = self.counters()?;
        for (i, name) in table::NAMES.iter().copied().enumerate() {
            let gone = after.table_deleted[i] + self.removed[i] + out.entries[name];
            out.evicted.insert(name, before.table_inserted[i].saturating_sub(gone));
        }
        out.entries.insert("traced_tgids", self.traced_tgids.len().context("reading TRACED_TGIDS")?);
        Ok(out)
    }

    /// Stops every record at once (the programs check a flag before they
    /// reserve ring space). Detaching takes the kernel tens of milliseconds
    /// per classic tracepoint, so a shutdown stops the records first, reads
    /// what is left and writes its final records, then detaches.
    pub fn stop_records(&mut self) -> Result<()> {
        self.control.set(control::STOPPED, 1, 0).context("setting CONTROL[STOPPED]")
    }

    /// Registers GPU devices whose ioctls are counted; also while running,
    /// for drivers loaded after start (nvidia-uvm on the first CUDA call).
    pub fn add_gpu_devices(&mut self, devices: &[GpuDevice]) -> Result<()> {
        for d in devices {
            self.gpu_devices
                .insert(d.key(), d.vendor, 0)
                .with_context(|| format!("registering GPU device {d:?}"))?;
        }
        if !devices.is_empty() {
            self.control.set(control::GPU_DEVICES, 1, 0).context("setting CONTROL[GPU_DEVICES]")?;
        }
        Ok(())
    }

    /// Detaches and unloads every program; the maps stay readable so what is
    /// already in the ring buffer can be drained.
    ///
    /// Each program is detached on a thread of its own: releasing a hook
    /// waits for the kernel's RCU grace period, and one after another they
    /// took over a second on a busy host; together they wait once.
    pub fn detach(&mut self) {
        let Some(mut ebpf) = self.ebpf.take() else { return };
        std::thread::scope(|scope| {
            for (_, program) in ebpf.programs_mut() {
                let unload = move || match program {
                    Program::TracePoint(p) => drop(p.unload()),
                    Program::RawTracePoint(p) => drop(p.unload()),
                    _ => {}
                };
                // No thread to be had (pid limit): the Drop below unloads it.
                let _ = std::thread::Builder::new().spawn_scoped(scope, unload);
            }
        });
    }

    /// Cumulative per-process counters, summed over CPUs.
    pub fn proc_snapshot(&self) -> Result<HashMap<u32, ProcStats>> {
        let mut out = HashMap::new();
        self.lru[table::PROC_STATS as usize]
            .for_each(|k, per_cpu| {
                out.insert(pod::<u32>(k), sum_proc_stats(per_cpu.map(pod::<ProcStats>)));
            })
            .context("reading PROC_STATS")?;
        Ok(out)
    }

    /// One process's cumulative counters (for its final account at exit).
    pub fn proc_stats_of(&self, tgid: u32) -> Option<ProcStats> {
        self.proc_stats.get(&tgid, 0).ok().map(|v| sum_proc_stats(v.iter().copied()))
    }

    /// Cumulative syscall counts per (tgid, syscall number).
    pub fn syscall_snapshot(&self) -> Result<HashMap<(u32, u32), u64>> {
        let mut out = HashMap::new();
        self.lru[table::SYSCALL_COUNTS as usize]
            .for_each(|k, per_cpu| {
                let key = pod::<u64>(k);
                out.insert(((key >> 32) as u32, key as u32), per_cpu.map(pod::<u64>).sum());
            })
            .context("reading SYSCALL_COUNTS")?;
        Ok(out)
    }

    /// Cumulative bytes per (process, remote endpoint).
    pub fn flow_snapshot(&self) -> Result<HashMap<FlowKey, FlowStats>> {
        let mut out = HashMap::new();
        self.lru[table::FLOWS as usize]
            .for_each(|k, per_cpu| {
                let total = per_cpu.map(pod::<FlowStats>).fold(FlowStats::default(), |a, v| FlowStats {
                    tx_bytes: a.tx_bytes + v.tx_bytes,
                    rx_bytes: a.rx_bytes + v.rx_bytes,
                    tx_calls: a.tx_calls + v.tx_calls,
                    rx_calls: a.rx_calls + v.rx_calls,
                });
                out.insert(pod::<FlowKey>(k), total);
            })
            .context("reading FLOWS")?;
        Ok(out)
    }

    /// Drops gone processes' counters: their keys in PROC_STATS and the
    /// (tgid, syscall) and flow keys the ledger knew for them.
    pub fn forget_processes(
        &mut self,
        tgids: &std::collections::HashSet<u32>,
        keys: crate::ledger::KernelKeys,
    ) {
        let removed = &mut self.removed;
        let mut count =
            |table: u32, r: Result<(), aya::maps::MapError>| removed[table as usize] += u64::from(r.is_ok());
        for tgid in tgids {
            count(table::PROC_STATS, self.proc_stats.remove(tgid));
        }
        for (tgid, nr) in keys.syscalls {
            count(
                table::SYSCALL_COUNTS,
                self.syscall_counts.remove(&((u64::from(tgid) << 32) | u64::from(nr))),
            );
        }
        for key in keys.flows {
            count(table::FLOWS, self.flows.remove(&key));
        }
    }

    /// Cumulative GPU ioctl counters, summed over CPUs.
    pub fn gpu_snapshot(&self) -> Result<HashMap<GpuStatKey, GpuStat>> {
        let mut out = HashMap::new();
        self.lru[table::GPU_STATS as usize]
            .for_each(|k, per_cpu| {
                let mut total = GpuStat::default();
                for v in per_cpu.map(pod::<GpuStat>) {
                    total.calls += v.calls;
                    total.errors += v.errors;
                    total.total_ns += v.total_ns;
                    total.bytes += v.bytes;
                    total.bytes_requested += v.bytes_requested;
                }
                out.insert(pod::<GpuStatKey>(k), total);
            })
            .context("reading GPU_STATS")?;
        Ok(out)
    }

    /// Drops a process's GPU counters and first-use marks once it has
    /// exited and its final account is written.
    pub fn forget_gpu_process(&mut self, tgid: u32) {
        let keys: Vec<GpuStatKey> =
            self.gpu_stats.keys().filter_map(Result::ok).filter(|k| k.tgid == tgid).collect();
        for k in keys {
            self.removed[table::GPU_STATS as usize] += u64::from(self.gpu_stats.remove(&k).is_ok());
        }
        let seen: Vec<u64> =
            self.gpu_seen.keys().filter_map(Result::ok).filter(|k| (k >> 32) as u32 == tgid).collect();
        for k in seen {
            self.removed[table::GPU_SEEN as usize] += u64::from(self.gpu_seen.remove(&k).is_ok());
        }
    }

    pub fn counters(&self) -> Result<KernelCounters> {
        let sum = |slot: u32| -> Result<u64> {
            Ok(self.counters.get(&slot, 0).with_context(|| format!("reading counter {slot}"))?.iter().sum())
        };
        let per_table = |base: u32| -> Result<[u64; table::COUNT as usize]> {
            let mut out = [0; table::COUNT as usize];
            for (t, v) in out.iter_mut().enumerate() {
                *v = sum(base + t as u32)?;
            }
            Ok(out)
        };
        let mut dropped = HashMap::new();
        for kind in EventKind::ALL {
            dropped.insert(kind.name(), sum(counter::DROPPED_BASE + kind as u32)?);
        }
        Ok(KernelCounters {
            dropped,
            read_errors: sum(counter::READ_ERRORS)?,
            threads_created: sum(counter::THREADS_CREATED)?,
            table_inserted: per_table(counter::TABLE_INSERTED_BASE)?,
            table_deleted: per_table(counter::TABLE_DELETED_BASE)?,
            losses: [
                ("traced_tgids_full", counter::TRACED_TGIDS_FULL),
                ("first_bytes_stale_fd", counter::FIRST_BYTES_STALE),
                ("connect_addr_unreadable", counter::CONNECT_ADDR_UNREADABLE),
                ("open_path_unreadable", counter::OPEN_PATH_UNREADABLE),
                ("open_path_too_long", counter::OPEN_PATH_TOO_LONG),
                ("sock_calls_full", counter::SOCK_CALLS_FULL),
                ("sock_returns_missed", counter::SOCK_RETURNS_MISSED),
            ]
            .into_iter()
            .map(|(name, slot)| Ok((name, sum(slot)?)))
            .collect::<Result<_>>()?,
        })
    }
}

/// What the tracer's maps hold of kernel memory: the kernel's own figure
/// (`memlock` in each map fd's fdinfo). Per-CPU maps are preallocated for
/// every possible CPU, so this grows with the host, not with the load.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MapMemory {
    pub maps: u32,
    pub bytes: u64,
    pub possible_cpus: u32,
}

impl MapMemory {
    pub fn of_this_process() -> Self {
        let mut out = Self { possible_cpus: possible_cpus(), ..Self::default() };
        let Ok(fds) = std::fs::read_dir("/proc/self/fd") else { return out };
        for fd in fds.flatten() {
            if !std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == "anon_inode:bpf-map") {
                continue;
            }
            let info =
                std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.file_name().to_string_lossy()));
            if let Some(bytes) = info.ok().as_deref().and_then(|i| {
                i.lines().find_map(|l| l.strip_prefix("memlock:")).and_then(|v| v.trim().parse::<u64>().ok())
            }) {
                out.maps += 1;
                out.bytes += bytes;
            }
        }
        out
    }
}

/// CPUs the kernel may ever bring online (/sys/devices/system/cpu/possible,
/// "0-63"): what per-CPU maps are sized by.
pub fn possible_cpus() -> u32 {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .map(|t| {
            t.trim()
                .split(',')
                .filter_map(|r| match r.split_once('-') {
                    Some((a, b)) => Some(b.parse::<u32>().ok()? - a.parse::<u32>().ok()? + 1),
                    None => r.parse::<u32>().ok().map(|_| 1),
                })
                .sum()
        })
        .filter(|&n: &u32| n > 0)
        .unwrap_or(1)
}

/// Occupancy and evictions of the kernel tables, for health.
#[derive(Debug, Default)]
pub struct KernelTables {
    pub entries: std::collections::BTreeMap<&'static str, u64>,
    pub evicted: std::collections::BTreeMap<&'static str, u64>,
}

/// A batch reader on one of the object's hash maps (its own fd: the map
/// may also be taken, typed, for lookups and removals).
fn reader(ebpf: &Ebpf, name: &str) -> Result<BatchReader> {
    let (data, per_cpu) = match ebpf.map(name) {
        Some(Map::HashMap(m) | Map::LruHashMap(m)) => (m, false),
        Some(Map::PerCpuHashMap(m) | Map::PerCpuLruHashMap(m)) => (m, true),
        Some(_) => bail!("map {name} is not a hash map"),
        None => bail!("map {name} missing from the object"),
    };
    BatchReader::new(data, per_cpu).with_context(|| format!("map {name}"))
}

/// Takes a map out of the object, typed; it outlives the programs.
fn take_map<T>(ebpf: &mut Ebpf, name: &str) -> Result<T>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or_else(|| anyhow!("map {name} missing from the object"))?;
    T::try_from(map).with_context(|| format!("map {name}"))
}

fn sum_proc_stats(per_cpu: impl Iterator<Item = ProcStats>) -> ProcStats {
    per_cpu.fold(ProcStats::default(), |a, v| ProcStats {
        cpu_ns: a.cpu_ns + v.cpu_ns,
        syscalls: a.syscalls + v.syscalls,
        hugetlb_mmaps: a.hugetlb_mmaps + v.hugetlb_mmaps,
        tx_bytes: a.tx_bytes + v.tx_bytes,
        rx_bytes: a.rx_bytes + v.rx_bytes,
        tx_calls: a.tx_calls + v.tx_calls,
        rx_calls: a.rx_calls + v.rx_calls,
        fpu_rounding: a.fpu_rounding + v.fpu_rounding,
    })
}

fn attach_one(ebpf: &mut Ebpf, program: &str, hook: Hook) -> Result<()> {
    let prog = ebpf.program_mut(program).ok_or_else(|| anyhow!("program {program} not in the object"))?;
    match hook {
        Hook::Tracepoint { category, name } => {
            let tp: &mut TracePoint = prog.try_into()?;
            tp.load().context("load")?;
            tp.attach(category, name).context("attach")?;
        }
        Hook::Raw { name } => {
            let tp: &mut RawTracePoint = prog.try_into()?;
            tp.load().context("load")?;
            tp.attach(name).context("attach")?;
        }
        Hook::KProbe { functions } | Hook::KRetProbe { functions } => {
            let probe: &mut KProbe = prog.try_into()?;
            probe.load().context("load")?;
            for function in functions {
                probe.attach(*function, 0).with_context(|| format!("attach to {function}"))?;
            }
        }
    }
    Ok(())
}

/// A program whose essential inputs are missing on this kernel is not loaded;
/// the reason goes into the health record.
fn required_missing(program: &str, cfg: &Config) -> Option<String> {
    let k = &cfg.kernel;
    let t = &cfg.tp;
    let need: &[(u32, &str)] = match program {
        "sched_process_fork" => &[(k.task_pid, "task_struct.pid"), (k.task_tgid, "task_struct.tgid")],
        "sys_enter_connect" => &[
            (t.connect_fd, "sys_enter_connect.fd"),
            (t.connect_uservaddr, "sys_enter_connect.uservaddr"),
            (t.connect_addrlen, "sys_enter_connect.addrlen"),
        ],
        "sys_exit_connect" => &[(t.connect_ret, "sys_exit_connect.ret")],
        "sys_enter_ioctl" => &[
            (t.ioctl_fd, "sys_enter_ioctl.fd"),
            (t.ioctl_cmd, "sys_enter_ioctl.cmd"),
            (t.ioctl_arg, "sys_enter_ioctl.arg"),
            (k.task_files, "task_struct.files"),
            (k.files_fdt, "files_struct.fdt"),
            (k.fdtable_fd, "fdtable.fd"),
            (k.fdtable_max_fds, "fdtable.max_fds"),
            (k.file_inode, "file.f_inode"),
            (k.inode_mode, "inode.i_mode"),
            (k.inode_rdev, "inode.i_rdev"),
        ],
        "sys_exit_ioctl" => &[(t.ioctl_ret, "sys_exit_ioctl.ret")],
        "sys_exit_setsid" => &[(t.setsid_ret, "sys_exit_setsid.ret")],
        "sched_process_free" | "sock_calls_free" => &[(t.free_pid, "sched_process_free.pid")],
        "sys_enter_sendto" | "sys_enter_sendmsg" | "sys_enter_sendmmsg" | "sys_enter_recvfrom" => &[
            (t.syscall_arg0, "sys_enter_sendto.fd"),
            (k.task_files, "task_struct.files"),
            (k.file_private_data, "file.private_data"),
            (k.socket_sk, "socket.sk"),
            (k.sk_family, "sock_common.skc_family"),
            (k.sk_dport, "sock_common.skc_dport"),
        ],
        "sys_exit_recvfrom" => &[(t.syscall_ret, "sys_exit_recvfrom.ret")],
        "sock_send_enter" | "sock_recv_enter" => {
            &[(k.socket_sk, "socket.sk"), (k.sk_family, "sock_common.skc_family")]
        }
        "sys_enter_write"
        | "sys_enter_writev"
        | "sys_enter_openat"
        | "sys_enter_open"
        | "sys_enter_openat2"
        | "sys_enter_creat"
        | "sys_enter_mmap"
        | "sys_enter_renameat2"
        | "sys_enter_renameat"
        | "sys_enter_rename" => &[(t.syscall_arg0, "sys_enter_sendto.fd")],
        "inet_sock_set_state" => &[
            (t.sock_oldstate, "inet_sock_set_state.oldstate"),
            (t.sock_newstate, "inet_sock_set_state.newstate"),
            (t.sock_family, "inet_sock_set_state.family"),
            (t.sock_dport, "inet_sock_set_state.dport"),
        ],
        _ => &[],
    };
    let missing: Vec<_> = need.iter().filter(|(off, _)| *off == NO_OFFSET).map(|(_, n)| *n).collect();
    (!missing.is_empty()).then(|| format!("missing field(s) {}", missing.join(", ")))
}

fn tracepoint_offsets(root: &Path, missing: &mut Vec<String>) -> TracepointOffsets {
    let mut formats: HashMap<(&str, &str), HashMap<String, u32>> = HashMap::new();
    let mut get = |category: &'static str, name: &'static str, field: &str| -> u32 {
        let fields = formats.entry((category, name)).or_insert_with(|| {
            tracefs::field_offsets(root, category, name).unwrap_or_else(|e| {
                missing.push(format!("{category}:{name}: {e:#}"));
                HashMap::new()
            })
        });
        match fields.get(field) {
            Some(&off) => off,
            None => {
                if !fields.is_empty() {
                    missing.push(format!("{category}:{name}.{field}"));
                }
                NO_OFFSET
            }
        }
    };
    TracepointOffsets {
        exec_filename: get("sched", "sched_process_exec", "filename"),
        exec_old_pid: get("sched", "sched_process_exec", "old_pid"),
        exit_group_dead: get("sched", "sched_process_exit", "group_dead"),
        connect_fd: get("syscalls", "sys_enter_connect", "fd"),
        connect_uservaddr: get("syscalls", "sys_enter_connect", "uservaddr"),
        connect_addrlen: get("syscalls", "sys_enter_connect", "addrlen"),
        connect_ret: get("syscalls", "sys_exit_connect", "ret"),
        sock_oldstate: get("sock", "inet_sock_set_state", "oldstate"),
        sock_newstate: get("sock", "inet_sock_set_state", "newstate"),
        sock_dport: get("sock", "inet_sock_set_state", "dport"),
        sock_family: get("sock", "inet_sock_set_state", "family"),
        sock_protocol: get("sock", "inet_sock_set_state", "protocol"),
        sock_daddr: get("sock", "inet_sock_set_state", "daddr"),
        sock_daddr_v6: get("sock", "inet_sock_set_state", "daddr_v6"),
        sock_sport: get("sock", "inet_sock_set_state", "sport"),
        sock_saddr: get("sock", "inet_sock_set_state", "saddr"),
        sock_saddr_v6: get("sock", "inet_sock_set_state", "saddr_v6"),
        _pad0: 0,
        ioctl_fd: get("syscalls", "sys_enter_ioctl", "fd"),
        ioctl_cmd: get("syscalls", "sys_enter_ioctl", "cmd"),
        ioctl_arg: get("syscalls", "sys_enter_ioctl", "arg"),
        ioctl_ret: get("syscalls", "sys_exit_ioctl", "ret"),
        setsid_ret: get("syscalls", "sys_exit_setsid", "ret"),
        syscall_arg0: get("syscalls", "sys_enter_sendto", "fd"),
        syscall_ret: get("syscalls", "sys_exit_recvfrom", "ret"),
        free_pid: get("sched", "sched_process_free", "pid"),
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid clock id and out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(size).unwrap_or(4096)
}
