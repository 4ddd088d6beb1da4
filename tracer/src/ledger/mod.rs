//! The compute and network ledger: per-interval activity per process from
//! the kernel's cumulative per-CPU counters, and roll-ups per process tree
//! (session) and per container (cgroup).

pub mod syscalls;

use std::collections::{BTreeMap, HashMap, HashSet};

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;
use tracer_common::{FlowKey, FlowStats, ProcStats};

/// Activity of one process over one interval.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    pub stats: ProcStats,
    /// Syscall number -> calls (empty with the histogram off).
    pub by_syscall: BTreeMap<u32, u64>,
    /// Remote endpoint -> bytes and calls.
    pub flows: BTreeMap<Peer, FlowStats>,
}

/// A remote endpoint, decoded from a `FlowKey`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Peer {
    /// None for sockets with no peer (unconnected UDP).
    pub addr: Option<IpAddr>,
    pub port: u16,
    pub protocol: u16,
}

impl Peer {
    pub fn of(key: &FlowKey) -> Self {
        let addr = match key.family {
            2 => Some(IpAddr::V4(Ipv4Addr::new(key.addr[0], key.addr[1], key.addr[2], key.addr[3]))),
            10 => Some(IpAddr::V6(Ipv6Addr::from(key.addr))),
            _ => None,
        };
        Self { addr, port: key.port, protocol: key.protocol }
    }
}

impl Delta {
    pub fn is_idle(&self) -> bool {
        self.stats == ProcStats::default() && self.by_syscall.is_empty()
    }

    pub fn add(&mut self, other: &Delta) {
        let (a, b) = (&mut self.stats, &other.stats);
        a.cpu_ns += b.cpu_ns;
        a.syscalls += b.syscalls;
        a.hugetlb_mmaps += b.hugetlb_mmaps;
        a.tx_bytes += b.tx_bytes;
        a.rx_bytes += b.rx_bytes;
        a.tx_calls += b.tx_calls;
        a.rx_calls += b.rx_calls;
        a.fpu_rounding += b.fpu_rounding;
        a.waits += b.waits;
        for (nr, n) in &other.by_syscall {
            *self.by_syscall.entry(*nr).or_default() += n;
        }
        for (peer, f) in &other.flows {
            let e = self.flows.entry(peer.clone()).or_default();
            e.tx_bytes += f.tx_bytes;
            e.rx_bytes += f.rx_bytes;
            e.tx_calls += f.tx_calls;
            e.rx_calls += f.rx_calls;
        }
    }
}

/// Keeps the cumulative values last reported, to turn snapshots into deltas.
#[derive(Default)]
pub struct Ledger {
    last_proc: HashMap<u32, ProcStats>,
    last_sys: HashMap<(u32, u32), u64>,
    last_flows: HashMap<FlowKey, FlowStats>,
}

fn sub(now: &ProcStats, before: &ProcStats) -> ProcStats {
    ProcStats {
        cpu_ns: now.cpu_ns.saturating_sub(before.cpu_ns),
        syscalls: now.syscalls.saturating_sub(before.syscalls),
        hugetlb_mmaps: now.hugetlb_mmaps.saturating_sub(before.hugetlb_mmaps),
        tx_bytes: now.tx_bytes.saturating_sub(before.tx_bytes),
        rx_bytes: now.rx_bytes.saturating_sub(before.rx_bytes),
        tx_calls: now.tx_calls.saturating_sub(before.tx_calls),
        rx_calls: now.rx_calls.saturating_sub(before.rx_calls),
        fpu_rounding: now.fpu_rounding.saturating_sub(before.fpu_rounding),
        waits: now.waits.saturating_sub(before.waits),
    }
}

impl Ledger {
    /// Keys of PROC_STATS, SYSCALL_COUNTS and FLOWS at the last report: the
    /// kernel maps' occupancy then, for the health record.
    pub fn keys(&self) -> (usize, usize, usize) {
        (self.last_proc.len(), self.last_sys.len(), self.last_flows.len())
    }

    /// Activity since the last call, for every process that did something.
    pub fn deltas(
        &mut self,
        procs: &HashMap<u32, ProcStats>,
        syscalls: &HashMap<(u32, u32), u64>,
        flows: &HashMap<FlowKey, FlowStats>,
    ) -> BTreeMap<u32, Delta> {
        let mut out: BTreeMap<u32, Delta> = BTreeMap::new();
        // Keys gone from a kernel map (evicted; counted by the kernel tables).
        self.last_proc.retain(|k, _| procs.contains_key(k));
        self.last_sys.retain(|k, _| syscalls.contains_key(k));
        self.last_flows.retain(|k, _| flows.contains_key(k));
        for (tgid, now) in procs {
            let before = self.last_proc.insert(*tgid, *now).unwrap_or_default();
            let d = sub(now, &before);
            if d != ProcStats::default() {
                out.entry(*tgid).or_default().stats = d;
            }
        }
        for (key, now) in syscalls {
            let before = self.last_sys.insert(*key, *now).unwrap_or(0);
            if *now > before {
                out.entry(key.0).or_default().by_syscall.insert(key.1, now - before);
            }
        }
        for (key, now) in flows {
            let before = self.last_flows.insert(*key, *now).unwrap_or_default();
            let d = FlowStats {
                tx_bytes: now.tx_bytes.saturating_sub(before.tx_bytes),
                rx_bytes: now.rx_bytes.saturating_sub(before.rx_bytes),
                tx_calls: now.tx_calls.saturating_sub(before.tx_calls),
                rx_calls: now.rx_calls.saturating_sub(before.rx_calls),
            };
            if d != FlowStats::default() {
                out.entry(key.tgid).or_default().flows.insert(Peer::of(key), d);
            }
        }
        out
    }

    /// Flow keys seen for a process (to delete its kernel keys).
    /// Forgets these processes in one pass over the tables (per process,
    /// a pass each made the work of an interval with a thousand exits
    /// quadratic); returns their kernel keys to delete.
    pub fn forget(&mut self, tgids: &HashSet<u32>) -> KernelKeys {
        let mut keys = KernelKeys::default();
        if tgids.is_empty() {
            return keys;
        }
        self.last_proc.retain(|t, _| !tgids.contains(t));
        self.last_sys.retain(|k, _| {
            let gone = tgids.contains(&k.0);
            if gone {
                keys.syscalls.push(*k);
            }
            !gone
        });
        self.last_flows.retain(|k, _| {
            let gone = tgids.contains(&k.tgid);
            if gone {
                keys.flows.push(*k);
            }
            !gone
        });
        keys
    }

    /// Processes with counters reported, for the sweep of the vanished.
    pub fn tgids(&self) -> impl Iterator<Item = u32> + '_ {
        self.last_proc.keys().copied()
    }
}

/// Kernel keys of forgotten processes: (tgid, syscall number) and flows.
#[derive(Debug, Default)]
pub struct KernelKeys {
    pub syscalls: Vec<(u32, u32)>,
    pub flows: Vec<FlowKey>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CpuView {
    pub time_ms: f64,
    /// Share of the whole host's CPU capacity over the interval, percent.
    pub host_share_pct: f64,
    /// CPU-seconds per second: 1.0 is one core busy, whatever the host's
    /// size (a miner throttled to one thread is 1.6 % of a 64-core host).
    pub cores: f64,
    /// FPU state saves that found the SSE rounding mode off its default
    /// (RandomX's signature; x86 only).
    #[serde(skip_serializing_if = "is_zero")]
    pub fpu_rounding_saves: u64,
    /// Context switches that were not preemptions (blocking, yielding):
    /// what stands for the syscall rate where syscalls are not counted.
    pub waits: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SyscallCount {
    pub name: String,
    pub nr: u32,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SyscallsView {
    pub count: u64,
    /// The most frequent, at most 10 (absent with the histogram off).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<SyscallCount>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NetworkView {
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub tx_calls: u64,
    pub rx_calls: u64,
    /// Remote endpoints talked to in the interval.
    pub distinct_peers: usize,
    pub tcp_peers: usize,
    pub udp_peers: usize,
    /// The busiest endpoints by bytes, at most 10. Sockets without a peer
    /// (unconnected UDP) appear once with a null address.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<PeerView>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PeerView {
    pub address: Option<String>,
    pub port: u16,
    pub protocol: String,
    /// The name this process looked up that resolved to the address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
}

/// The `activity` object of process, tree and container records.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ActivityView {
    pub interval_s: f64,
    pub cpu: CpuView,
    /// Counted with --syscalls only (a syscall hook); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscalls: Option<SyscallsView>,
    pub network: NetworkView,
    /// GPU driver activity summary, where the process used a GPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<crate::gpu::Summary>,
    /// mmap calls asking for huge pages (MAP_HUGETLB).
    #[serde(skip_serializing_if = "is_zero")]
    pub hugetlb_mmaps: u64,
    /// Machine-learning runtimes mapped into the process (libtorch,
    /// libcudart, libnccl, …), reported once, the first time seen.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ml_libraries: Vec<String>,
    /// The memory footprint of a busy process, where it shows RandomX's
    /// or JIT code's (see process::maps); looked at with the libraries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<crate::process::maps::MemoryView>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl ActivityView {
    pub fn new(d: &Delta, interval_s: f64, ncpus: u32, gpu: Option<crate::gpu::Summary>) -> Self {
        Self::with_names(d, interval_s, ncpus, gpu, |_| None)
    }

    /// `name_of` gives the DNS name an address was resolved from.
    pub fn with_names(
        d: &Delta,
        interval_s: f64,
        ncpus: u32,
        gpu: Option<crate::gpu::Summary>,
        name_of: impl Fn(&IpAddr) -> Option<String>,
    ) -> Self {
        let with_peer = || d.flows.keys().filter(|p| p.addr.is_some());
        let mut peers: Vec<(&Peer, &FlowStats)> = d.flows.iter().collect();
        peers.sort_by(|a, b| {
            (b.1.tx_bytes + b.1.rx_bytes).cmp(&(a.1.tx_bytes + a.1.rx_bytes)).then(a.0.cmp(b.0))
        });
        let peers = peers
            .into_iter()
            .take(10)
            .map(|(p, f)| PeerView {
                address: p.addr.map(|a| a.to_string()),
                port: p.port,
                protocol: crate::output::record::protocol_name(p.protocol, true)
                    .unwrap_or_else(|| "unknown".into()),
                name: p.addr.as_ref().and_then(&name_of),
                tx_bytes: f.tx_bytes,
                rx_bytes: f.rx_bytes,
            })
            .collect();
        let mut top: Vec<_> = d.by_syscall.iter().map(|(nr, n)| (*nr, *n)).collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let capacity_ms = interval_s * 1000.0 * f64::from(ncpus.max(1));
        let time_ms = d.stats.cpu_ns as f64 / 1e6;
        Self {
            interval_s,
            cpu: CpuView {
                time_ms: (time_ms * 1000.0).round() / 1000.0,
                host_share_pct: if capacity_ms > 0.0 {
                    (time_ms / capacity_ms * 10_000.0).round() / 100.0
                } else {
                    0.0
                },
                cores: if interval_s > 0.0 {
                    (time_ms / (interval_s * 1000.0) * 1000.0).round() / 1000.0
                } else {
                    0.0
                },
                fpu_rounding_saves: d.stats.fpu_rounding,
                waits: d.stats.waits,
            },
            syscalls: Some(SyscallsView {
                count: d.stats.syscalls,
                top: top
                    .into_iter()
                    .take(10)
                    .map(|(nr, count)| SyscallCount { name: syscalls::name(nr), nr, count })
                    .collect(),
            }),
            network: NetworkView {
                tx_bytes: d.stats.tx_bytes,
                rx_bytes: d.stats.rx_bytes,
                tx_calls: d.stats.tx_calls,
                rx_calls: d.stats.rx_calls,
                distinct_peers: with_peer().count(),
                tcp_peers: with_peer().filter(|p| p.protocol == 6).count(),
                udp_peers: with_peer().filter(|p| p.protocol == 17).count(),
                peers,
            },
            gpu,
            hugetlb_mmaps: d.stats.hugetlb_mmaps,
            ml_libraries: Vec::new(),
            memory: None,
        }
    }
}

/// Lifetime totals of a process, in its exit record.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AccountView {
    pub cpu_ms: f64,
    /// With --syscalls only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscalls: Option<u64>,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
}

impl AccountView {
    pub fn new(s: &ProcStats) -> Self {
        Self {
            cpu_ms: (s.cpu_ns as f64 / 1e3).round() / 1e3,
            syscalls: Some(s.syscalls),
            tx_bytes: s.tx_bytes,
            rx_bytes: s.rx_bytes,
        }
    }
}

/// The host's online CPUs. Not `available_parallelism()`: that honours the
/// tracer's own affinity and cgroup CPU quota, and a tracer confined to one
/// core of a 64-core host would read a one-thread process as 100 % of it.
pub fn online_cpus() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    u32::try_from(n).ok().filter(|&n| n > 0).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPUs listed in /sys/devices/system/cpu/online ("0-1,4").
    fn sysfs_online() -> u32 {
        let text = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
        text.trim()
            .split(',')
            .map(|r| match r.split_once('-') {
                Some((a, b)) => b.parse::<u32>().unwrap() - a.parse::<u32>().unwrap() + 1,
                None => 1,
            })
            .sum()
    }

    #[test]
    fn online_cpus_ignores_the_tracers_own_affinity() {
        // On a thread of its own: the affinity is per thread.
        std::thread::spawn(|| {
            // SAFETY: a zeroed cpu_set_t is empty; CPU 0 is always present.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(0, &mut set);
                assert_eq!(libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set), 0);
            }
            assert_eq!(online_cpus(), sysfs_online(), "pinned to one CPU, the host still has them all");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn deltas_skip_idle_processes_and_sum_histograms() {
        let mut l = Ledger::default();
        let mut procs = HashMap::new();
        procs.insert(1, ProcStats { cpu_ns: 5_000_000, syscalls: 10, tx_bytes: 100, ..Default::default() });
        procs.insert(2, ProcStats { cpu_ns: 1, ..Default::default() });
        let mut sys = HashMap::new();
        sys.insert((1, 0), 7);
        sys.insert((1, 1), 3);
        let d = l.deltas(&procs, &sys, &HashMap::new());
        assert_eq!(d[&1].stats.tx_bytes, 100);
        assert_eq!(d[&1].by_syscall[&0], 7);
        assert_eq!(d.len(), 2);

        procs.get_mut(&1).unwrap().tx_bytes = 150;
        let d = l.deltas(&procs, &sys, &HashMap::new());
        assert_eq!(d.len(), 1, "process 2 was idle");
        assert_eq!(d[&1].stats.tx_bytes, 50);
        assert!(d[&1].by_syscall.is_empty());
    }

    #[test]
    fn activity_view_shares_and_top() {
        let mut d = Delta::default();
        d.stats.cpu_ns = 1_000_000_000;
        d.stats.syscalls = 12;
        for nr in 0..12 {
            d.by_syscall.insert(nr, u64::from(nr) + 1);
        }
        let v = ActivityView::new(&d, 2.0, 2, None);
        assert_eq!(v.cpu.time_ms, 1000.0);
        assert_eq!(v.cpu.host_share_pct, 25.0);
        let syscalls = v.syscalls.as_ref().unwrap();
        assert_eq!(syscalls.top.len(), 10);
        assert_eq!(syscalls.top[0].nr, 11);
    }
}
