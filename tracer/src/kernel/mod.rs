//! Everything that touches the kernel: loading and attaching the programs,
//! resolving what they need from BTF and tracefs, reading their counters,
//! and decoding their records.

mod batch;
pub mod btf;
pub mod events;
mod evicted;
pub mod existing_sockets;
pub mod tracefs;

use std::{collections::HashMap, path::Path};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, Map, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, KProbe, Program,
        RawTracePoint, TracePoint,
    },
};
use serde::Serialize;
use tracer_common::{
    Config, EventKind, FlowKey, FlowStats, GpuStat, GpuStatKey, NO_OFFSET, ProcStats, TracepointOffsets,
    config_flags, control, counter, table,
};

use self::{
    batch::{BatchReader, pod},
    evicted::EvictedLog,
};

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
    /// A raw tracepoint whose arguments the verifier knows by their BTF
    /// types (tp_btf): fields are read with plain loads.
    Btf {
        name: &'static str,
    },
    /// At the entry, or the return, of each of these kernel functions.
    KProbe {
        functions: &'static [&'static str],
    },
    KRetProbe {
        functions: &'static [&'static str],
    },
    /// On the cgroup2 root, so every socket on the host: a sock_addr hook
    /// (its kind is in the program), a socket create/release hook, or
    /// packets in one direction.
    CgroupSockAddr {
        name: &'static str,
    },
    /// A socket-release, device or sysctl hook.
    Cgroup {
        name: &'static str,
    },
    CgroupSkb {
        egress: bool,
    },
}

/// The inet protocol handlers every IPv4/IPv6 send or receive goes through.
const INET_SENDMSG: &[&str] = &["inet_sendmsg", "inet6_sendmsg"];
const INET_RECVMSG: &[&str] = &["inet_recvmsg", "inet6_recvmsg"];

const fn tp(category: &'static str, name: &'static str) -> Hook {
    Hook::Tracepoint { category, name }
}

const fn syscall(name: &'static str) -> Hook {
    Hook::Tracepoint { category: "syscalls", name }
}

/// Programs tried only where the program they stand in for could not be
/// attached (a hook this kernel lacks): (replaced program, program, hook).
/// Health lists them with what they replace.
const FALLBACK_HOOKS: [(&str, &str, Hook); 24] = [
    // Without the packet hooks: bytes and peers from the socket layer's
    // send and receive tracepoints (on every call, in the caller's context).
    ("skb_egress", "sock_send_length", Hook::Raw { name: "sock_send_length" }),
    ("skb_ingress", "sock_recv_length", Hook::Raw { name: "sock_recv_length" }),
    // Without BTF programs (no kernel BTF, or a kernel that refuses them):
    // the same through probe reads and a per-thread table.
    ("sched_switch_btf", "sched_switch", Hook::Raw { name: "sched_switch" }),
    ("fpu_regs_deactivated_btf", "fpu_regs_deactivated", Hook::Raw { name: "x86_fpu_regs_deactivated" }),
    ("file_read_btf", "file_read", Hook::Raw { name: "mm_filemap_get_pages" }),
    ("file_fault_btf", "file_fault", Hook::Raw { name: "mm_filemap_fault" }),
    ("file_map_pages_btf", "file_map_pages", Hook::Raw { name: "mm_filemap_map_pages" }),
    // sock_*_length appeared in 6.3; before it, bytes and peers come from
    // kprobes (IPv4/IPv6 only: the tracepoints also count Unix sockets).
    ("sock_send_length", "sock_send_enter", Hook::KProbe { functions: INET_SENDMSG }),
    ("sock_send_length", "sock_send_return", Hook::KRetProbe { functions: INET_SENDMSG }),
    ("sock_recv_length", "sock_recv_enter", Hook::KProbe { functions: INET_RECVMSG }),
    ("sock_recv_length", "sock_recv_return", Hook::KRetProbe { functions: INET_RECVMSG }),
    // Clears the fallback's calls in flight of threads that are gone.
    ("sock_send_length", "sock_calls_free", tp("sched", "sched_process_free")),
    // Without the cgroup socket hooks (no cgroup2, a kernel that refuses
    // them): connects, first bytes and DNS from syscalls, blind to io_uring.
    ("connect4", "sys_enter_connect", syscall("sys_enter_connect")),
    ("connect4", "sys_exit_connect", syscall("sys_exit_connect")),
    // Connects mark the sockets whose first sends the write hooks copy.
    ("skb_egress", "sys_enter_connect", syscall("sys_enter_connect")),
    ("skb_egress", "sys_exit_connect", syscall("sys_exit_connect")),
    ("skb_egress", "sys_enter_write", syscall("sys_enter_write")),
    ("skb_egress", "sys_enter_writev", syscall("sys_enter_writev")),
    ("skb_egress", "sys_enter_close", syscall("sys_enter_close")),
    ("skb_egress", "sys_enter_sendto", syscall("sys_enter_sendto")),
    ("skb_egress", "sys_enter_sendmsg", syscall("sys_enter_sendmsg")),
    ("skb_egress", "sys_enter_sendmmsg", syscall("sys_enter_sendmmsg")),
    ("skb_egress", "sys_enter_recvfrom", syscall("sys_enter_recvfrom")),
    ("skb_egress", "sys_exit_recvfrom", syscall("sys_exit_recvfrom")),
];

/// Which programs a run attaches.
#[derive(Clone, Copy, PartialEq, Eq)]
enum HookSet {
    /// Always: none of them is on the syscall path.
    Default,
    /// With `--syscalls`: every syscall on the host pays for them.
    Syscalls,
    /// Where a GPU device exists (ioctls are syscalls too).
    Gpu,
    /// Without `--syscalls`: they stand in for the open hooks, which with it
    /// report the same opens exactly (twice would double the evidence).
    InsteadOfSyscalls,
}

/// Program name in the object, when it is attached, and its hook.
const PROGRAM_HOOKS: [(&str, HookSet, Hook); 38] = [
    ("sched_process_exec", HookSet::Default, tp("sched", "sched_process_exec")),
    ("sched_process_fork", HookSet::Default, Hook::Raw { name: "sched_process_fork" }),
    ("sched_process_exit", HookSet::Default, tp("sched", "sched_process_exit")),
    ("sched_process_free", HookSet::Default, tp("sched", "sched_process_free")),
    ("inet_sock_set_state", HookSet::Default, tp("sock", "inet_sock_set_state")),
    // The high-rate hooks are raw tracepoints: no perf record is built per
    // event, which is most of a classic tracepoint's cost.
    ("sched_switch_btf", HookSet::Default, Hook::Btf { name: "sched_switch" }),
    ("fpu_regs_deactivated_btf", HookSet::Default, Hook::Btf { name: "x86_fpu_regs_deactivated" }),
    ("connect4", HookSet::Default, Hook::CgroupSockAddr { name: "connect4" }),
    ("connect6", HookSet::Default, Hook::CgroupSockAddr { name: "connect6" }),
    // Accepted sockets get their owner when the peer's address is taken.
    ("getpeername4", HookSet::Default, Hook::CgroupSockAddr { name: "getpeername4" }),
    ("getpeername6", HookSet::Default, Hook::CgroupSockAddr { name: "getpeername6" }),
    ("sendmsg4", HookSet::Default, Hook::CgroupSockAddr { name: "sendmsg4" }),
    ("sendmsg6", HookSet::Default, Hook::CgroupSockAddr { name: "sendmsg6" }),
    ("sock_release", HookSet::Default, Hook::Cgroup { name: "sock_release" }),
    // Listeners get their process, which accepted connections inherit.
    ("post_bind4", HookSet::Default, Hook::Cgroup { name: "post_bind4" }),
    ("post_bind6", HookSet::Default, Hook::Cgroup { name: "post_bind6" }),
    // Opens of MSR devices for writing, writes to vm.nr_hugepages.
    ("device_access", HookSet::InsteadOfSyscalls, Hook::Cgroup { name: "device" }),
    ("sysctl_access", HookSet::InsteadOfSyscalls, Hook::Cgroup { name: "sysctl" }),
    // Model files written (checkpoints), whatever call wrote them.
    ("dirty_inode", HookSet::InsteadOfSyscalls, Hook::Raw { name: "writeback_dirty_inode_enqueue" }),
    // Model files read or faulted in (weights loaded), once per process.
    ("file_read_btf", HookSet::InsteadOfSyscalls, Hook::Btf { name: "mm_filemap_get_pages" }),
    ("file_fault_btf", HookSet::InsteadOfSyscalls, Hook::Btf { name: "mm_filemap_fault" }),
    ("file_map_pages_btf", HookSet::InsteadOfSyscalls, Hook::Btf { name: "mm_filemap_map_pages" }),
    ("skb_egress", HookSet::Default, Hook::CgroupSkb { egress: true }),
    ("skb_ingress", HookSet::Default, Hook::CgroupSkb { egress: false }),
    ("sys_enter_ioctl", HookSet::Gpu, syscall("sys_enter_ioctl")),
    ("sys_exit_ioctl", HookSet::Gpu, syscall("sys_exit_ioctl")),
    ("raw_sys_enter", HookSet::Syscalls, Hook::Raw { name: "sys_enter" }),
    ("sys_exit_setsid", HookSet::Syscalls, syscall("sys_exit_setsid")),
    // Unix-socket connects (the socket hooks see inet ones).
    ("sys_enter_connect", HookSet::Syscalls, syscall("sys_enter_connect")),
    ("sys_exit_connect", HookSet::Syscalls, syscall("sys_exit_connect")),
    ("sys_enter_openat", HookSet::Syscalls, syscall("sys_enter_openat")),
    ("sys_enter_open", HookSet::Syscalls, syscall("sys_enter_open")),
    ("sys_enter_openat2", HookSet::Syscalls, syscall("sys_enter_openat2")),
    ("sys_enter_creat", HookSet::Syscalls, syscall("sys_enter_creat")),
    ("sys_enter_mmap", HookSet::Syscalls, syscall("sys_enter_mmap")),
    ("sys_enter_renameat2", HookSet::Syscalls, syscall("sys_enter_renameat2")),
    ("sys_enter_renameat", HookSet::Syscalls, syscall("sys_enter_renameat")),
    ("sys_enter_rename", HookSet::Syscalls, syscall("sys_enter_rename")),
];

impl Hook {
    /// Hooks on the syscall entry/exit path: attaching any of them sends
    /// every syscall of every task through the kernel's traced (slow) entry.
    pub fn is_syscall_level(self) -> bool {
        matches!(
            self,
            Self::Tracepoint { category: "syscalls" | "raw_syscalls", .. } | Self::Raw { name: "sys_enter" }
        )
    }

    fn describe(self) -> String {
        match self {
            Self::Tracepoint { category, name } => format!("tracepoint:{category}:{name}"),
            Self::Raw { name } => format!("raw_tracepoint:{name}"),
            Self::Btf { name } => format!("tp_btf:{name}"),
            Self::KProbe { functions } => format!("kprobe:{}", functions.join("+")),
            Self::KRetProbe { functions } => format!("kretprobe:{}", functions.join("+")),
            Self::CgroupSockAddr { name } | Self::Cgroup { name } => format!("cgroup:{name}"),
            Self::CgroupSkb { egress } => format!("cgroup_skb:{}", if egress { "egress" } else { "ingress" }),
        }
    }
}

/// The outcome of attaching one program, reported in every health record.
/// Why a program was left out on purpose (not a failure).
const SKIPPED: &str = "not attached:";

impl AttachStatus {
    /// Left out on purpose: not asked for, or not needed on this host.
    pub fn skipped(&self) -> bool {
        !self.attached && self.error.as_deref().is_some_and(|e| e.starts_with(SKIPPED))
    }

    /// Tried, and not attached.
    pub fn failed(&self) -> bool {
        !self.attached && !self.skipped()
    }
}

/// Programs attached, failed and left out on purpose, as health counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgramCounts {
    pub attached: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl ProgramCounts {
    pub fn of(attach: &[AttachStatus]) -> Self {
        Self {
            attached: attach.iter().filter(|a| a.attached).count(),
            failed: attach.iter().filter(|a| a.failed()).count(),
            skipped: attach.iter().filter(|a| a.skipped()).count(),
        }
    }
}

/// The attached programs that stand in for `program` on this kernel,
/// through fallbacks of fallbacks (skb_egress, then sock_send_length, then
/// the kprobes).
pub fn stand_ins<'a>(attach: &'a [AttachStatus], program: &str) -> Vec<&'a AttachStatus> {
    let mut out = Vec::new();
    for a in attach.iter().filter(|a| a.replaces == Some(program) && a.program != program) {
        if a.attached {
            out.push(a);
        } else {
            out.extend(stand_ins(attach, a.program));
        }
    }
    out
}

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
    #[serde(skip)]
    pub syscall_level: bool,
    /// Time to load (verify) and attach it, milliseconds.
    pub load_ms: f64,
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
    /// With `syscalls`: count syscalls per process and number (else per
    /// process only).
    pub syscall_histogram: bool,
    /// Also attach the syscall hooks (`HookSet::Syscalls`).
    pub syscalls: bool,
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
    /// CPU time the kernel holds nowhere any more: carried by exit records,
    /// or logged as a CPU gave a process's slot to another. Added to the
    /// processes' own until they are forgotten.
    carried: HashMap<u32, tracer_common::CpuSlot>,
    cpu_slots: PerCpuArray<MapData, tracer_common::CpuSlots>,
    evicted: EvictedLog,
    syscall_counts: PerCpuHashMap<MapData, u64, u64>,
    flows: PerCpuHashMap<MapData, FlowKey, FlowStats>,
    pub attach: Vec<AttachStatus>,
    /// Sockets that existed at start, given their owners.
    pub sockets_adopted: existing_sockets::Adopted,
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
            // A sixteenth of the ring: the reader is woken for batches, and
            // polls the ring for what comes slower (pipeline::RING_POLL).
            wake_bytes: u64::from(opts.ring_buffer_bytes / 16),
            hz: kernel_hz().unwrap_or_else(|e| {
                missing_fields.push(format!("CONFIG_HZ: {e:#} (250 assumed)"));
                250
            }),
            kernel: kernel_offsets,
            tp,
        };
        let cpu_ids = possible_cpu_ids();
        let mut ebpf = EbpfLoader::new()
            .override_global("CONFIG", &config, true)
            .map_max_entries("EVENTS", opts.ring_buffer_bytes)
            .map_max_entries("EVICTED_HEADS", cpu_ids)
            .map_max_entries("EVICTED_SLOTS", cpu_ids * tracer_common::EVICTED_PER_CPU)
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

        let cgroup_root = crate::process::cgroup::cgroup2_mount()
            .ok_or_else(|| anyhow!("no cgroup2 mount"))
            .and_then(|p| std::fs::File::open(&p).with_context(|| format!("opening {}", p.display())));
        let kernel_btf = aya::Btf::from_sys_fs();
        let mut try_attach = |program: &'static str, hook: Hook, replaces: Option<&'static str>| {
            let started = std::time::Instant::now();
            let result = match required_missing(program, &config) {
                Some(why) => Err(anyhow!("not loaded: {why}")),
                None => attach_one(&mut ebpf, program, hook, &cgroup_root, &kernel_btf),
            };
            // Nearly all of it is the kernel's verifier; a slow one (old
            // kernels, emulated CPUs) delays the start, so it is said.
            let took = started.elapsed();
            if took > std::time::Duration::from_secs(1) {
                eprintln!(
                    "tracer: loading {program} took {:.1} s (the kernel's verifier)",
                    took.as_secs_f64()
                );
            }
            AttachStatus {
                load_ms: (took.as_secs_f64() * 1e4).round() / 10.0,
                program,
                hook: hook.describe(),
                attached: result.is_ok(),
                error: result.err().map(|e| format!("{e:#}")),
                replaces,
                syscall_level: hook.is_syscall_level(),
            }
        };
        let wanted = |set: HookSet| match set {
            HookSet::Default => Ok(()),
            HookSet::Syscalls if opts.syscalls => Ok(()),
            HookSet::Syscalls => Err(format!("{SKIPPED} syscall hooks only with --syscalls")),
            HookSet::Gpu if !opts.gpu_devices.is_empty() || opts.syscalls => Ok(()),
            HookSet::Gpu => Err(format!("{SKIPPED} no GPU device on this host")),
            HookSet::InsteadOfSyscalls if opts.syscalls => {
                Err(format!("{SKIPPED} the open hooks (--syscalls) report these opens"))
            }
            HookSet::InsteadOfSyscalls => Ok(()),
        };
        let mut attach: Vec<_> = PROGRAM_HOOKS
            .iter()
            .map(|&(program, set, hook)| match wanted(set) {
                Ok(()) => try_attach(program, hook, None),
                Err(why) => AttachStatus {
                    program,
                    hook: hook.describe(),
                    attached: false,
                    error: Some(why),
                    replaces: None,
                    syscall_level: hook.is_syscall_level(),
                    load_ms: 0.0,
                },
            })
            .collect();
        // In order, so a fallback that fails has its own fallback tried.
        for &(replaced, program, hook) in &FALLBACK_HOOKS {
            let failed = attach.iter().any(|a| a.program == replaced && a.failed());
            let already = attach.iter().any(|a| a.program == program && a.attached);
            if failed && !already {
                attach.retain(|a| a.program != program);
                attach.push(try_attach(program, hook, Some(replaced)));
            }
        }
        if attach.iter().all(|a| !a.attached) {
            let reasons: Vec<_> = attach.iter().filter_map(|a| a.error.clone()).collect();
            bail!("no program could be attached: {}", reasons.join("; "));
        }
        // The connect hooks serve inet sockets: connect(2)'s programs, when
        // attached for unix sockets (--syscalls), leave those to them.
        let socket_hooks = attach.iter().any(|a| a.program == "connect4" && a.attached);
        let packet_hooks = attach.iter().any(|a| a.program == "skb_egress" && a.attached);

        // Sockets opened before now get their owners (the filters as the
        // kernel applies them; with --cgroup, running processes are left
        // out, as for the executables pass).
        let mut sockets_adopted = existing_sockets::Adopted::default();
        if packet_hooks && opts.cgroup_id == 0 {
            let traced: std::collections::HashSet<u32> = if opts.tgids.is_empty() {
                Default::default()
            } else {
                crate::process::procfs::with_descendants(Path::new("/proc"), &opts.tgids)
                    .into_iter()
                    .collect()
            };
            let mut map: aya::maps::SkStorage<MapData, tracer_common::SocketState> =
                take_map(&mut ebpf, "SOCKET_STATE")?;
            sockets_adopted = existing_sockets::adopt(&mut map, Path::new("/proc"), |tgid| {
                opts.tgids.is_empty() || traced.contains(&tgid)
            });
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
            carried: HashMap::new(),
            traced_tgids: reader(&ebpf, "TRACED_TGIDS")?,
            proc_stats: take_map(&mut ebpf, "PROC_STATS")?,
            cpu_slots: take_map(&mut ebpf, "CPU_SLOTS_MAP")?,
            evicted: EvictedLog::map(&ebpf, cpu_ids)?,
            syscall_counts: take_map(&mut ebpf, "SYSCALL_COUNTS")?,
            flows: take_map(&mut ebpf, "FLOWS")?,
            ebpf: Some(ebpf),
            attach,
            sockets_adopted,
            missing_fields,
        };
        kernel.add_gpu_devices(&opts.gpu_devices)?;
        if socket_hooks {
            kernel.control.set(control::SOCKET_HOOKS, 1, 0).context("setting CONTROL[SOCKET_HOOKS]")?;
        }
        if packet_hooks {
            kernel.control.set(control::PACKET_HOOKS, 1, 0).context("setting CONTROL[PACKET_HOOKS]")?;
        }
        if kernel.attach.iter().any(|a| a.program == "sched_switch_btf" && a.attached) {
            kernel.control.set(control::SLICE_CPU, 1, 0).context("setting CONTROL[SLICE_CPU]")?;
        }
        Ok((kernel, events))
    }

    /// Whether syscalls are counted (the raw sys_enter hook, --syscalls).
    pub fn counts_syscalls(&self) -> bool {
        self.attach.iter().any(|a| a.program == "raw_sys_enter" && a.attached)
    }

    /// Syscall-level programs attached: with any, every syscall on the host
    /// takes the kernel's slower traced entry.
    pub fn syscall_hooks(&self) -> usize {
        self.attach.iter().filter(|a| a.attached && a.syscall_level).count()
    }

    /// Each attached program's (name, runs, run time ns) from the kernel's
    /// own statistics; all zero unless `kernel.bpf_stats_enabled` is 1.
    /// Read through the programs' own fds, which needs no capability.
    pub fn program_stats(&self) -> Vec<(String, u64, u64)> {
        let Some(ebpf) = &self.ebpf else { return Vec::new() };
        let attached: std::collections::HashSet<&str> =
            self.attach.iter().filter(|a| a.attached).map(|a| a.program).collect();
        let mut out: Vec<(String, u64, u64)> = ebpf
            .programs()
            .filter(|(name, _)| attached.contains(name))
            .filter_map(|(name, p)| {
                let info = p.info().ok()?;
                Some((name.to_owned(), info.run_count(), info.run_time().as_nanos() as u64))
            })
            .collect();
        if out.iter().all(|(_, runs, _)| *runs == 0) {
            out.clear();
        }
        out
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
                    Program::BtfTracePoint(p) => drop(p.unload()),
                    _ => {}
                };
                // No thread to be had (pid limit): the Drop below unloads it.
                let _ = std::thread::Builder::new().spawn_scoped(scope, unload);
            }
        });
    }

    /// Cumulative per-process counters, summed over CPUs.
    ///
    /// PROC_STATS and the eviction logs are read before the per-CPU slots:
    /// time that moves out of a slot between the reads is missing from
    /// this snapshot (the next one has it), never counted twice.
    pub fn proc_snapshot(&mut self) -> Result<HashMap<u32, ProcStats>> {
        self.collect_evicted();
        let mut out = HashMap::new();
        self.lru[table::PROC_STATS as usize]
            .for_each(|k, per_cpu| {
                out.insert(pod::<u32>(k), sum_proc_stats(per_cpu.map(pod::<ProcStats>)));
            })
            .context("reading PROC_STATS")?;
        for slot in self.cpu_slots()?.iter().chain(self.carried.values()) {
            add_slot(out.entry(slot.tgid).or_default(), slot);
        }
        Ok(out)
    }

    /// The CPU time and waits an exit record carried: the process's time on
    /// the CPU it ended on, taken from that CPU's slot so that an ended
    /// process never costs a table entry.
    pub fn carry_exit_share(&mut self, tgid: u32, cpu_ns: u64, waits: u64) {
        carry(&mut self.carried, &tracer_common::CpuSlot { tgid, _pad: 0, cpu_ns, waits });
    }

    /// Processes whose CPU time is carried here (see `carried`), for health.
    pub fn cpu_time_carried(&self) -> usize {
        self.carried.len()
    }

    /// Empties the CPUs' logs of slots given to other processes into
    /// `carried`. Cheap (no system call): done at every snapshot and exit
    /// record, and often enough between them that a CPU's log seldom
    /// fills (a full one sends slots to PROC_STATS, the slower way).
    pub fn collect_evicted(&mut self) {
        let carried = &mut self.carried;
        self.evicted.drain(|slot| carry(carried, slot));
    }

    /// The CPU time the context-switch program holds in each CPU's slots.
    fn cpu_slots(&self) -> Result<Vec<tracer_common::CpuSlot>> {
        let per_cpu = self.cpu_slots.get(&0, 0).context("reading CPU_SLOTS_MAP")?;
        Ok(per_cpu.iter().flat_map(|c| c.slots).filter(|s| s.tgid != 0).collect())
    }

    /// One process's cumulative counters (for its final account at exit).
    pub fn proc_stats_of(&mut self, tgid: u32) -> Option<ProcStats> {
        self.collect_evicted();
        let mut stats = self.proc_stats.get(&tgid, 0).ok().map(|v| sum_proc_stats(v.iter().copied()));
        let slots = self.cpu_slots().unwrap_or_default();
        for slot in slots.iter().chain(self.carried.get(&tgid)).filter(|s| s.tgid == tgid) {
            add_slot(stats.get_or_insert_with(ProcStats::default), slot);
        }
        stats
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
            self.carried.remove(tgid);
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
                ("first_bytes_out_of_order", counter::FIRST_BYTES_OUT_OF_ORDER),
                ("packets_unparsed", counter::PACKETS_UNPARSED),
                ("packets_unowned", counter::PACKETS_UNOWNED),
                ("socket_state_full", counter::SOCKET_STATE_FULL),
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

/// The CPU id ranges the kernel may ever bring online
/// (/sys/devices/system/cpu/possible, "0-63" or "0,2-5"), first and last.
fn possible_cpu_ranges() -> Vec<(u32, u32)> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
    text.trim()
        .split(',')
        .filter_map(|r| match r.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => r.parse().ok().map(|n| (n, n)),
        })
        .filter(|(a, b)| a <= b)
        .collect()
}

/// One past the highest CPU id the kernel may ever bring online (its
/// `nr_cpu_ids`): what arrays indexed by CPU id are sized by.
fn possible_cpu_ids() -> u32 {
    possible_cpu_ranges().iter().map(|(_, last)| last + 1).max().unwrap_or(1)
}

/// CPUs the kernel may ever bring online: what per-CPU maps are sized by.
pub fn possible_cpus() -> u32 {
    possible_cpu_ranges().iter().map(|(first, last)| last - first + 1).sum::<u32>().max(1)
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

/// Adds time the kernel no longer holds to its process's.
fn carry(carried: &mut HashMap<u32, tracer_common::CpuSlot>, slot: &tracer_common::CpuSlot) {
    if slot.tgid != 0 && (slot.cpu_ns != 0 || slot.waits != 0) {
        let c = carried
            .entry(slot.tgid)
            .or_insert(tracer_common::CpuSlot { tgid: slot.tgid, ..Default::default() });
        c.cpu_ns += slot.cpu_ns;
        c.waits += slot.waits;
    }
}

/// Adds a slot's time (held by a CPU, or carried) to its process's counters.
fn add_slot(stats: &mut ProcStats, slot: &tracer_common::CpuSlot) {
    stats.cpu_ns += slot.cpu_ns;
    stats.waits += slot.waits;
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
        waits: a.waits + v.waits,
    })
}

fn attach_one(
    ebpf: &mut Ebpf,
    program: &str,
    hook: Hook,
    cgroup_root: &Result<std::fs::File>,
    btf: &Result<aya::Btf, aya::BtfError>,
) -> Result<()> {
    let root = || cgroup_root.as_ref().map_err(|e| anyhow!("{e:#}"));
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
        Hook::Btf { name } => {
            let btf = btf.as_ref().map_err(|e| anyhow!("kernel BTF: {e}"))?;
            let tp: &mut BtfTracePoint = prog.try_into()?;
            tp.load(name, btf).context("load")?;
            tp.attach().context("attach")?;
        }
        Hook::KProbe { functions } | Hook::KRetProbe { functions } => {
            let probe: &mut KProbe = prog.try_into()?;
            probe.load().context("load")?;
            for function in functions {
                probe.attach(*function, 0).with_context(|| format!("attach to {function}"))?;
            }
        }
        // Attached as links (5.7+), which the kernel always lets share a
        // cgroup with other programs; link_create takes no mode flag
        // (AllowMultiple there is EINVAL).
        Hook::CgroupSockAddr { .. } => {
            let p: &mut CgroupSockAddr = prog.try_into()?;
            p.load().context("load")?;
            p.attach(root()?, CgroupAttachMode::Single).context("attach")?;
        }
        Hook::Cgroup { .. } => match prog {
            Program::CgroupSock(p) => {
                p.load().context("load")?;
                p.attach(root()?, CgroupAttachMode::Single).context("attach")?;
            }
            Program::CgroupDevice(p) => {
                p.load().context("load")?;
                p.attach(root()?, CgroupAttachMode::Single).context("attach")?;
            }
            Program::CgroupSysctl(p) => {
                p.load().context("load")?;
                p.attach(root()?, CgroupAttachMode::Single).context("attach")?;
            }
            _ => bail!("program {program} is not a cgroup socket, device or sysctl program"),
        },
        Hook::CgroupSkb { egress } => {
            let p: &mut CgroupSkb = prog.try_into()?;
            p.load().context("load")?;
            let direction = if egress { CgroupSkbAttachType::Egress } else { CgroupSkbAttachType::Ingress };
            p.attach(root()?, direction, CgroupAttachMode::Single).context("attach")?;
        }
    }
    Ok(())
}

/// The kernel's CONFIG_HZ, from its build configuration (Debian installs
/// it in /boot; others expose /proc/config.gz).
fn kernel_hz() -> Result<u64> {
    use std::io::Read as _;
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    let boot = format!("/boot/config-{}", release.trim());
    let text = match std::fs::read_to_string(&boot) {
        Ok(t) => t,
        Err(_) => {
            let mut t = String::new();
            flate2::read::GzDecoder::new(
                std::fs::File::open("/proc/config.gz")
                    .with_context(|| format!("no {boot} nor /proc/config.gz"))?,
            )
            .read_to_string(&mut t)
            .context("reading /proc/config.gz")?;
            t
        }
    };
    text.lines()
        .find_map(|l| l.strip_prefix("CONFIG_HZ="))
        .and_then(|v| v.trim().parse().ok())
        .filter(|hz| *hz > 0)
        .ok_or_else(|| anyhow!("no CONFIG_HZ in the kernel's configuration"))
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
        "file_read" | "file_fault" | "file_map_pages" | "file_read_btf" | "file_fault_btf"
        | "file_map_pages_btf" => &[
            (k.mapping_host, "address_space.host"),
            (k.inode_size, "inode.i_size"),
            (k.task_flags, "task_struct.flags"),
            (k.inode_mode, "inode.i_mode"),
            (k.inode_dentries, "inode.i_dentry"),
            (k.dentry_alias, "dentry.d_u"),
            (k.dentry_name, "dentry.d_name"),
        ],
        "dirty_inode" => &[
            (k.task_flags, "task_struct.flags"),
            (k.inode_mode, "inode.i_mode"),
            (k.inode_dentries, "inode.i_dentry"),
            (k.dentry_alias, "dentry.d_u"),
            (k.dentry_name, "dentry.d_name"),
            (k.dentry_parent, "dentry.d_parent"),
            (k.inode_ino, "inode.i_ino"),
            (k.inode_sb, "inode.i_sb"),
            (k.sb_dev, "super_block.s_dev"),
        ],
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
        sock_skaddr: get("sock", "inet_sock_set_state", "skaddr"),
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
