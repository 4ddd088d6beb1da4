//! The compute ledger: what processes used (CPU, GPU, bytes, peers), put
//! down to the categories of their verdicts. A verdict carries what its
//! scope has used since it started, per category (what a mining alert cost
//! the host); `host.summary`, every summary interval of record time, gives
//! the host's share of CPU, GPU and network by category.
//!
//! A process's use goes to the categories its own evidence supports in its
//! scope's verdict, split evenly between them; a process with no evidence
//! of its own (the shell that started a miner) goes to the verdict's
//! primary category, and one in no verdict to `ordinary`. Like the rest of
//! the classifier it reads only records, so replay gives the same figures.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use serde_json::{Value, json};

use super::{Evidence, f, s, u};

/// Distinct peers remembered per process and per category, a bound on memory.
const PEERS_KEPT: usize = 1024;
/// Processes kept apart per scope; more are added up as one.
const PROCESSES_KEPT: usize = 4096;

/// Use over some time.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Usage {
    pub cpu_seconds: f64,
    /// GPU driver calls (ioctls) and work submissions through the kernel.
    pub gpu_ioctls: u64,
    pub gpu_submissions: u64,
    /// SM time NVML reported, GPU-seconds (a GPU fully busy for a second
    /// is 1), where the library is loaded.
    pub gpu_sm_seconds: f64,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    /// Distinct peers (address:port) among each report's busiest ten.
    pub peers: usize,
}

/// Usage with the peers themselves, so that sums count each peer once.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    cpu_seconds: f64,
    gpu_ioctls: u64,
    gpu_submissions: u64,
    gpu_sm_seconds: f64,
    tx_bytes: u64,
    rx_bytes: u64,
    peers: BTreeSet<String>,
    /// Peers past PEERS_KEPT, not told apart.
    peers_over: usize,
}

impl Tally {
    /// What one record says a process used; None for records that say nothing of it.
    pub fn of_record(kind: &str, r: &Value) -> Option<Self> {
        let mut t = Tally::default();
        match kind {
            "process.activity" => {
                let a = &r["activity"];
                t.cpu_seconds = f(a, &["cpu", "time_ms"]).unwrap_or(0.0).max(0.0) / 1000.0;
                t.tx_bytes = u(a, &["network", "tx_bytes"]).unwrap_or(0);
                t.rx_bytes = u(a, &["network", "rx_bytes"]).unwrap_or(0);
                t.gpu_ioctls = u(a, &["gpu", "calls"]).unwrap_or(0);
                t.gpu_submissions = u(a, &["gpu", "submissions"]).unwrap_or(0);
                for p in a["network"]["peers"].as_array().into_iter().flatten().take(16) {
                    if let (Some(addr), Some(port)) = (s(p, &["address"]), u(p, &["port"])) {
                        t.peers.insert(format!("{addr}:{port}"));
                    }
                }
            }
            "gpu.activity" => {
                let g = &r["gpu"];
                let sm = f(g, &["nvml", "sm_util_pct"])?;
                t.gpu_sm_seconds = sm.max(0.0) / 100.0 * f(g, &["interval_s"]).unwrap_or(0.0).max(0.0);
            }
            _ => return None,
        }
        t.cpu_seconds = finite(t.cpu_seconds);
        t.gpu_sm_seconds = finite(t.gpu_sm_seconds);
        Some(t)
    }

    /// Adds `share` (0..=1) of `other`; peers are added whole.
    fn add(&mut self, other: &Tally, share: f64) {
        let part = |v: u64| if share >= 1.0 { v } else { (v as f64 * share).round() as u64 };
        self.cpu_seconds += other.cpu_seconds * share;
        self.gpu_ioctls = self.gpu_ioctls.saturating_add(part(other.gpu_ioctls));
        self.gpu_submissions = self.gpu_submissions.saturating_add(part(other.gpu_submissions));
        self.gpu_sm_seconds += other.gpu_sm_seconds * share;
        self.tx_bytes = self.tx_bytes.saturating_add(part(other.tx_bytes));
        self.rx_bytes = self.rx_bytes.saturating_add(part(other.rx_bytes));
        for p in &other.peers {
            if self.peers.len() < PEERS_KEPT {
                self.peers.insert(p.clone());
            } else if !self.peers.contains(p) {
                self.peers_over += 1;
            }
        }
        self.peers_over += other.peers_over;
    }

    pub fn usage(&self) -> Usage {
        Usage {
            cpu_seconds: round3(self.cpu_seconds),
            gpu_ioctls: self.gpu_ioctls,
            gpu_submissions: self.gpu_submissions,
            gpu_sm_seconds: round3(self.gpu_sm_seconds),
            tx_bytes: self.tx_bytes,
            rx_bytes: self.rx_bytes,
            peers: self.peers.len() + self.peers_over,
        }
    }
}

fn finite(v: f64) -> f64 {
    if v.is_finite() { v } else { 0.0 }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// What a scope's processes used since the scope started.
#[derive(Default)]
pub struct ScopeLedger {
    /// Time of the scope's first record.
    since: String,
    processes: HashMap<String, Tally>,
    /// Processes past PROCESSES_KEPT: their use goes to the primary category.
    others: Tally,
}

impl ScopeLedger {
    pub fn add(&mut self, entity: &str, time: &str, t: &Tally) {
        if self.since.is_empty() {
            self.since = time.to_string();
        }
        if let Some(mine) = self.processes.get_mut(entity) {
            mine.add(t, 1.0);
        } else if self.processes.len() < PROCESSES_KEPT {
            self.processes.insert(entity.to_string(), t.clone());
        } else {
            self.others.add(t, 1.0);
        }
    }

    pub fn begin(&mut self, time: &str) {
        if self.since.is_empty() {
            self.since = time.to_string();
        }
    }

    /// Per category of a verdict (and in total), what the scope used.
    pub fn verdict(&self, evidence: &[Evidence], categories: &[&str]) -> VerdictUsage {
        let mut by: BTreeMap<String, Tally> =
            categories.iter().map(|c| ((*c).to_string(), Tally::default())).collect();
        let mut total = Tally::default();
        let primary = categories.first().copied().unwrap_or("ordinary");
        for (entity, t) in &self.processes {
            total.add(t, 1.0);
            let own = own_categories(entity, evidence, categories, primary);
            let share = 1.0 / own.len() as f64;
            for c in own {
                by.entry(c.to_string()).or_default().add(t, share);
            }
        }
        total.add(&self.others, 1.0);
        by.entry(primary.to_string()).or_default().add(&self.others, 1.0);
        VerdictUsage {
            since: self.since.clone(),
            total: total.usage(),
            by_category: by.into_iter().map(|(c, t)| (c, t.usage())).collect(),
        }
    }
}

/// The categories a process's use goes to: those among `categories` its own
/// evidence supports, else the primary.
pub fn own_categories<'a>(
    entity: &str,
    evidence: &[Evidence],
    categories: &[&'a str],
    primary: &'a str,
) -> Vec<&'a str> {
    let own: Vec<&str> = categories
        .iter()
        .copied()
        .filter(|c| evidence.iter().any(|e| e.category == *c && e.entity_id.as_deref() == Some(entity)))
        .collect();
    if own.is_empty() { vec![primary] } else { own }
}

/// The `usage` of a classification.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VerdictUsage {
    /// Time of the scope's first record.
    pub since: String,
    pub total: Usage,
    pub by_category: BTreeMap<String, Usage>,
}

/// The host's use by category, for `host.summary`.
pub struct HostLedger {
    every_ns: u64,
    /// Record time the current interval began and the ledger's first record.
    interval_from: Option<u64>,
    started: Option<u64>,
    interval: BTreeMap<String, Tally>,
    since_start: BTreeMap<String, Tally>,
}

impl HostLedger {
    /// `every_ns` 0: no summaries.
    pub fn new(every_ns: u64) -> Self {
        Self {
            every_ns,
            interval_from: None,
            started: None,
            interval: BTreeMap::new(),
            since_start: BTreeMap::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.every_ns > 0
    }

    /// Puts a process's use down to `categories` (evenly).
    pub fn add(&mut self, categories: &[String], t: &Tally) {
        let share = 1.0 / categories.len().max(1) as f64;
        for c in categories {
            self.interval.entry(c.clone()).or_default().add(t, share);
            self.since_start.entry(c.clone()).or_default().add(t, share);
        }
    }

    /// The summary body when an interval has ended at record time `now`;
    /// `scopes` counts (trees, containers) per category as the verdicts stand.
    pub fn due(&mut self, now: u64, scopes: impl FnOnce() -> BTreeMap<String, (u64, u64)>) -> Option<Value> {
        if !self.enabled() || now == 0 {
            return None;
        }
        let from = *self.interval_from.get_or_insert(now);
        let started = *self.started.get_or_insert(now);
        if now < from.saturating_add(self.every_ns) {
            return None;
        }
        self.interval_from = Some(now);
        let interval = std::mem::take(&mut self.interval);
        let counts = scopes();
        let mut total = Tally::default();
        for t in interval.values() {
            total.add(t, 1.0);
        }
        let total_use = total.usage();
        let gpu_total =
            if total.gpu_sm_seconds > 0.0 { total.gpu_sm_seconds } else { total.gpu_ioctls as f64 };
        let pct = |part: f64, whole: f64| if whole > 0.0 { round3(part / whole * 100.0) } else { 0.0 };
        let mut names: BTreeSet<&String> = interval.keys().collect();
        names.extend(counts.keys());
        names.extend(self.since_start.keys());
        let empty = Tally::default();
        let categories: Vec<Value> = names
            .into_iter()
            .map(|c| {
                let t = interval.get(c).unwrap_or(&empty);
                let gpu = if total.gpu_sm_seconds > 0.0 { t.gpu_sm_seconds } else { t.gpu_ioctls as f64 };
                let (trees, containers) = counts.get(c).copied().unwrap_or((0, 0));
                json!({
                    "category": c,
                    "trees": trees,
                    "containers": containers,
                    "cpu_share_pct": pct(t.cpu_seconds, total.cpu_seconds),
                    "gpu_share_pct": pct(gpu, gpu_total),
                    "network_share_pct": pct((t.tx_bytes + t.rx_bytes) as f64, (total.tx_bytes + total.rx_bytes) as f64),
                    "interval": t.usage(),
                    "since_start": self.since_start.get(c).unwrap_or(&empty).usage(),
                })
            })
            .collect();
        Some(json!({
            "interval_s": round3((now - from) as f64 / 1e9),
            "since_start_s": round3((now - started) as f64 / 1e9),
            "total": total_use,
            "categories": categories,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activity(cpu_ms: f64, tx: u64, peers: &[&str]) -> Tally {
        let peers: Vec<Value> =
            peers.iter().map(|p| json!({"address": p, "port": 443, "protocol": "tcp"})).collect();
        Tally::of_record(
            "process.activity",
            &json!({"activity": {"cpu": {"time_ms": cpu_ms}, "network": {"tx_bytes": tx, "rx_bytes": 0, "peers": peers}}}),
        )
        .unwrap()
    }

    fn evidence(category: &str, entity: &str) -> Evidence {
        Evidence {
            indicator: format!("{category}-x"),
            category: category.into(),
            weight: 1.0,
            what: String::new(),
            seen: String::new(),
            record: String::new(),
            time: String::new(),
            entity_id: Some(entity.into()),
            pid: None,
            comm: None,
            allowlisted: None,
            declared: None,
        }
    }

    #[test]
    fn each_process_pays_for_its_own_categories() {
        let mut l = ScopeLedger::default();
        l.add("miner", "t0", &activity(9000.0, 100, &["10.0.0.1"]));
        l.add("trainer", "t0", &activity(3000.0, 0, &[]));
        l.add("shell", "t0", &activity(10.0, 0, &[]));
        l.add("node", "t0", &activity(1000.0, 5000, &["10.0.0.2", "10.0.0.3"]));
        let ev = [
            evidence("crypto_mining", "miner"),
            evidence("ai_training", "trainer"),
            evidence("crypto_mining", "node"),
            evidence("blockchain_node", "node"),
        ];
        let v = l.verdict(&ev, &["ai_training", "crypto_mining", "blockchain_node"]);
        assert_eq!(v.since, "t0");
        assert_eq!(v.total.cpu_seconds, 13.01);
        assert_eq!(v.total.peers, 3);
        // The shell has no evidence: the primary's.
        assert_eq!(v.by_category["ai_training"].cpu_seconds, 3.01);
        // The node that mines splits its use between its two categories.
        assert_eq!(v.by_category["crypto_mining"].cpu_seconds, 9.5);
        assert_eq!(v.by_category["blockchain_node"].cpu_seconds, 0.5);
        assert_eq!(v.by_category["blockchain_node"].tx_bytes, 2500);
        assert_eq!(v.by_category["crypto_mining"].peers, 3, "peers are shared whole");
    }

    #[test]
    fn host_shares_add_up_per_interval() {
        let mut h = HostLedger::new(10_000_000_000);
        assert!(h.due(1, BTreeMap::new).is_none(), "the first record starts the interval");
        h.add(&["crypto_mining".into()], &activity(3000.0, 0, &[]));
        h.add(&["ordinary".into()], &activity(1000.0, 100, &[]));
        assert!(h.due(9_000_000_000, BTreeMap::new).is_none());
        let s = h.due(10_000_000_001, || BTreeMap::from([("crypto_mining".to_string(), (1, 0))])).unwrap();
        assert_eq!(s["interval_s"], 10.0);
        assert_eq!(s["total"]["cpu_seconds"], 4.0);
        let cats = s["categories"].as_array().unwrap();
        let mining = cats.iter().find(|c| c["category"] == "crypto_mining").unwrap();
        assert_eq!((&mining["cpu_share_pct"], &mining["trees"]), (&json!(75.0), &json!(1)));
        let ordinary = cats.iter().find(|c| c["category"] == "ordinary").unwrap();
        assert_eq!(ordinary["network_share_pct"], 100.0);
        // The next interval starts empty; since_start keeps counting.
        h.add(&["crypto_mining".into()], &activity(1000.0, 0, &[]));
        let s = h.due(20_000_000_001, BTreeMap::new).unwrap();
        let mining =
            s["categories"].as_array().unwrap().iter().find(|c| c["category"] == "crypto_mining").unwrap();
        assert_eq!(mining["interval"]["cpu_seconds"], 1.0);
        assert_eq!(mining["since_start"]["cpu_seconds"], 4.0);
        assert_eq!(s["since_start_s"], 20.0);
    }

    #[test]
    fn hostile_counts_do_not_overflow_or_poison() {
        let t = Tally::of_record(
            "process.activity",
            &json!({"activity": {"cpu": {"time_ms": -5.0}, "network": {"tx_bytes": u64::MAX, "rx_bytes": u64::MAX}}}),
        )
        .unwrap();
        let mut sum = Tally::default();
        sum.add(&t, 1.0);
        sum.add(&t, 1.0);
        assert_eq!(sum.usage().tx_bytes, u64::MAX);
        assert_eq!(sum.usage().cpu_seconds, 0.0);
    }
}
