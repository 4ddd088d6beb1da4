//! The host as it is now, folded from the tracer's own records: every tree
//! and container with its latest verdict and what it used over the last
//! activity interval, the latest host summary and health. The local API,
//! the metrics and `tracer top` all read this; built from records (not from
//! the pipeline's internals), it is the same live and from a log.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

/// A tree or container not heard of (no activity, no verdict) for this
/// long, in record time, has ended: most trees are short-lived shells.
const STALE_NS: u64 = 300 * 1_000_000_000;

/// Most trees and containers held each; the least recently heard of goes
/// first, and the health of the view counts it.
pub const MAX_ENTRIES: usize = 4096;

/// What one scope (a tree or a container) did over its last interval.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub cpu_cores: f64,
    pub tx_bytes_per_s: f64,
    pub rx_bytes_per_s: f64,
    pub peers: u64,
    pub gpu_calls_per_s: f64,
    pub gpu_submissions_per_s: f64,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub scope: &'static str,
    pub key: String,
    /// The tree's leader or the container's cgroup, as the record gave it.
    pub who: Value,
    pub active_processes: u64,
    pub usage: Usage,
    /// Sums over every interval seen.
    pub cpu_seconds: f64,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    /// Busiest peers of the last interval (as in the activity record).
    pub peers: Value,
    /// The latest `classification` body, when there is a verdict.
    pub verdict: Option<Value>,
    pub last_time: String,
    last_mono: u64,
    /// Mono time of the last activity record: usage older than two of its
    /// intervals is no longer current (the scope went quiet).
    activity_mono: u64,
    interval_ns: u64,
}

impl Entry {
    fn new(scope: &'static str, key: String) -> Self {
        Self {
            scope,
            key,
            who: Value::Null,
            active_processes: 0,
            usage: Usage::default(),
            cpu_seconds: 0.0,
            tx_bytes: 0,
            rx_bytes: 0,
            peers: Value::Array(Vec::new()),
            verdict: None,
            last_time: String::new(),
            last_mono: 0,
            activity_mono: 0,
            interval_ns: 0,
        }
    }

    /// The categories of its verdict, primary first (none: ordinary work).
    pub fn categories(&self) -> Vec<String> {
        let Some(v) = &self.verdict else { return Vec::new() };
        if let Some(list) = v["categories"].as_array() {
            return list.iter().filter_map(|c| c["category"].as_str().map(str::to_owned)).collect();
        }
        v["category"].as_str().map(|c| vec![c.to_owned()]).unwrap_or_default()
    }

    pub fn alert(&self) -> bool {
        self.verdict.as_ref().is_some_and(|v| v["alert"] == true)
    }

    pub fn confidence(&self) -> f64 {
        self.verdict.as_ref().and_then(|v| v["confidence"].as_f64()).unwrap_or(0.0)
    }

    /// Usage as of `now_mono`: a scope with no activity record for two of
    /// its intervals used nothing since.
    fn current(&self, now_mono: u64) -> Usage {
        let quiet = self.interval_ns.saturating_mul(2).max(1);
        if self.activity_mono == 0 || now_mono.saturating_sub(self.activity_mono) > quiet {
            Usage::default()
        } else {
            self.usage.clone()
        }
    }

    fn to_json(&self, now_mono: u64) -> Value {
        let u = self.current(now_mono);
        let label = if self.scope == "tree" { "leader" } else { "cgroup" };
        json!({
            "scope": self.scope,
            "key": self.key,
            label: self.who,
            "active_processes": self.active_processes,
            "cpu": { "cores": round3(u.cpu_cores), "seconds": round3(self.cpu_seconds) },
            "gpu": { "calls_per_s": round3(u.gpu_calls_per_s), "submissions_per_s": round3(u.gpu_submissions_per_s) },
            "network": {
                "tx_bytes_per_s": u.tx_bytes_per_s.round(),
                "rx_bytes_per_s": u.rx_bytes_per_s.round(),
                "tx_bytes": self.tx_bytes,
                "rx_bytes": self.rx_bytes,
                "peers": u.peers,
                "top_peers": self.peers,
            },
            "verdict": self.verdict,
            "last_seen": self.last_time,
        })
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Per-category totals over the current entries: what the metrics export.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CategoryTotals {
    pub trees: u64,
    pub containers: u64,
    pub cpu_cores: f64,
    pub tx_bytes_per_s: f64,
    pub rx_bytes_per_s: f64,
}

/// The category a scope with no verdict counts under.
pub const ORDINARY: &str = "ordinary";

#[derive(Debug, Default)]
pub struct HostView {
    pub host: String,
    pub first_time: Option<String>,
    pub last_time: Option<String>,
    last_mono: u64,
    trees: HashMap<String, Entry>,
    containers: HashMap<String, Entry>,
    /// The latest host.summary body.
    pub summary: Option<Value>,
    /// The latest tracer.health record.
    pub health: Option<Value>,
    pub records: BTreeMap<String, u64>,
    /// Entries dropped to stay within [`MAX_ENTRIES`].
    pub evicted: u64,
    /// Entries that ended (no word of them for [`STALE_NS`]).
    pub expired: u64,
    /// When ended entries were last swept (record time).
    swept_mono: u64,
}

impl HostView {
    /// Takes one native record; the kinds the view does not hold are counted.
    pub fn observe(&mut self, r: &Value) {
        let kind = r["kind"].as_str().unwrap_or_default();
        *self.records.entry(kind.to_owned()).or_default() += 1;
        let time = r["time"].as_str().unwrap_or_default();
        let mono = r["mono_ns"].as_u64().unwrap_or(self.last_mono);
        if self.first_time.is_none() && !time.is_empty() {
            self.first_time = Some(time.to_owned());
        }
        if let Some(h) = r["host"].as_str() {
            h.clone_into(&mut self.host);
        }
        self.last_time = Some(time.to_owned());
        self.last_mono = self.last_mono.max(mono);
        match kind {
            "tree.activity" => {
                let t = &r["tree"];
                let Some(sid) = t["sid"].as_u64() else { return };
                let e = self.entry("tree", sid.to_string());
                e.who = t["leader"].clone();
                Self::activity(e, t, time, mono);
            }
            "container.activity" => {
                let c = &r["container"];
                let Some(id) = c["container_id"].as_str() else { return };
                let e = self.entry("container", id.to_owned());
                e.who = json!({ "path": c["cgroup"], "cgroup_id": c["cgroup_id"] });
                Self::activity(e, c, time, mono);
            }
            "classification" => {
                let c = &r["classification"];
                let (Some(scope), Some(key)) = (c["scope"].as_str(), c["key"].as_str()) else { return };
                let scope = if scope == "container" { "container" } else { "tree" };
                let e = self.entry(scope, key.to_owned());
                e.verdict = Some(c.clone());
                e.last_time = time.to_owned();
                e.last_mono = mono;
            }
            "host.summary" => self.summary = Some(r["summary"].clone()),
            "tracer.health" => self.health = Some(r.clone()),
            _ => {}
        }
        self.expire();
    }

    fn entry(&mut self, scope: &'static str, key: String) -> &mut Entry {
        let map = if scope == "tree" { &mut self.trees } else { &mut self.containers };
        if !map.contains_key(&key)
            && map.len() >= MAX_ENTRIES
            && let Some(oldest) = map.values().min_by_key(|e| e.last_mono).map(|e| e.key.clone())
        {
            map.remove(&oldest);
            self.evicted += 1;
        }
        map.entry(key.clone()).or_insert_with(|| Entry::new(scope, key))
    }

    fn activity(e: &mut Entry, body: &Value, time: &str, mono: u64) {
        let a = &body["activity"];
        let interval = a["interval_s"].as_f64().filter(|s| *s > 0.0).unwrap_or(1.0);
        let cpu_ms = a["cpu"]["time_ms"].as_f64().unwrap_or(0.0);
        let net = &a["network"];
        let (tx, rx) = (net["tx_bytes"].as_u64().unwrap_or(0), net["rx_bytes"].as_u64().unwrap_or(0));
        let gpu = &a["gpu"];
        e.usage = Usage {
            cpu_cores: a["cpu"]["cores"].as_f64().unwrap_or(cpu_ms / 1000.0 / interval),
            tx_bytes_per_s: tx as f64 / interval,
            rx_bytes_per_s: rx as f64 / interval,
            peers: net["distinct_peers"].as_u64().unwrap_or(0),
            gpu_calls_per_s: gpu["calls"].as_u64().unwrap_or(0) as f64 / interval,
            gpu_submissions_per_s: gpu["submissions"].as_u64().unwrap_or(0) as f64 / interval,
        };
        e.cpu_seconds += cpu_ms / 1000.0;
        e.tx_bytes += tx;
        e.rx_bytes += rx;
        e.peers = net["peers"].clone();
        if e.peers.is_null() {
            e.peers = Value::Array(Vec::new());
        }
        e.active_processes = body["active_processes"].as_u64().unwrap_or(0);
        e.last_time = time.to_owned();
        e.last_mono = mono;
        e.activity_mono = mono;
        e.interval_ns = (interval * 1e9) as u64;
    }

    /// Sweeps ended entries, once a second of record time: a sweep walks
    /// every entry, and records come thousands a second.
    fn expire(&mut self) {
        let now = self.last_mono;
        if now.saturating_sub(self.swept_mono) < 1_000_000_000 {
            return;
        }
        self.swept_mono = now;
        for map in [&mut self.trees, &mut self.containers] {
            let before = map.len();
            map.retain(|_, e| now.saturating_sub(e.last_mono) <= STALE_NS);
            self.expired += (before - map.len()) as u64;
        }
    }

    /// Trees and containers, busiest first.
    pub fn entries(&self) -> Vec<&Entry> {
        let mut all: Vec<&Entry> = self.trees.values().chain(self.containers.values()).collect();
        let now = self.last_mono;
        all.sort_by(|a, b| {
            b.current(now).cpu_cores.total_cmp(&a.current(now).cpu_cores).then_with(|| a.key.cmp(&b.key))
        });
        all
    }

    /// Trees, containers, CPU cores and bytes/s by category, a scope's use
    /// split evenly over its verdict's categories (as the ledger does);
    /// scopes with no verdict count as ordinary.
    pub fn by_category(&self) -> BTreeMap<String, CategoryTotals> {
        let mut out: BTreeMap<String, CategoryTotals> = BTreeMap::new();
        for e in self.trees.values().chain(self.containers.values()) {
            let mut cats = e.categories();
            if cats.is_empty() {
                cats.push(ORDINARY.to_owned());
            }
            let u = e.current(self.last_mono);
            let share = 1.0 / cats.len() as f64;
            for c in cats {
                let t = out.entry(c).or_default();
                if e.scope == "tree" {
                    t.trees += 1;
                    // Containers hold trees: their use is already counted.
                    t.cpu_cores += u.cpu_cores * share;
                    t.tx_bytes_per_s += u.tx_bytes_per_s * share;
                    t.rx_bytes_per_s += u.rx_bytes_per_s * share;
                } else {
                    t.containers += 1;
                }
            }
        }
        out
    }

    /// The whole view as the API's `/v1/state` answers it.
    pub fn to_json(&self) -> Value {
        let now = self.last_mono;
        let entries: Vec<&Entry> = self.entries();
        let list = |scope: &str| -> Vec<Value> {
            entries.iter().filter(|e| e.scope == scope).map(|e| e.to_json(now)).collect()
        };
        let categories: serde_json::Map<String, Value> = self
            .by_category()
            .into_iter()
            .map(|(c, t)| {
                (
                    c,
                    json!({
                        "trees": t.trees,
                        "containers": t.containers,
                        "cpu_cores": round3(t.cpu_cores),
                        "tx_bytes_per_s": t.tx_bytes_per_s.round(),
                        "rx_bytes_per_s": t.rx_bytes_per_s.round(),
                    }),
                )
            })
            .collect();
        json!({
            "host": self.host,
            "since": self.first_time,
            "time": self.last_time,
            "trees": list("tree"),
            "containers": list("container"),
            "categories": categories,
            "summary": self.summary,
            "health": self.health.as_ref().map(|h| health_digest(&h["health"])),
            "view": {
                "records": self.records,
                "trees": self.trees.len(),
                "containers": self.containers.len(),
                "evicted": self.evicted,
                "expired": self.expired,
            },
        })
    }
}

/// The health fields a person looks at first; `/v1/health` has the rest.
fn health_digest(h: &Value) -> Value {
    json!({
        "status": h["status"],
        "uptime_s": h["uptime_s"],
        "events_read": h["events_read"],
        "dropped_total": h["dropped_total"],
        "programs_attached": h["programs_attached"],
        "programs_failed": h["programs_failed"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::record_fixture as fixture;

    #[test]
    fn a_verdict_and_its_trees_activity_meet_in_one_entry() {
        let mut v = HostView::default();
        let verdict = fixture("classification");
        let activity = fixture("tree.activity");
        v.observe(&verdict);
        v.observe(&activity);
        let entries = v.entries();
        let trees: Vec<_> = entries.iter().filter(|e| e.scope == "tree").collect();
        assert_eq!(trees.len(), 1, "{:?}", v.to_json());
        let t = trees[0];
        assert_eq!(t.key, "1077");
        assert_eq!(t.categories(), ["crypto_mining"]);
        assert!(t.alert());
        // 825.915 ms over 1.01 s.
        assert!((t.usage.cpu_cores - 0.8177).abs() < 0.001, "{}", t.usage.cpu_cores);
        assert_eq!(t.tx_bytes, 246);
        let by = v.by_category();
        assert_eq!(by["crypto_mining"].trees, 1);
        assert!((by["crypto_mining"].cpu_cores - 0.8177).abs() < 0.001);
        let state = v.to_json();
        assert_eq!(state["trees"][0]["verdict"]["category"], "crypto_mining");
        assert_eq!(state["trees"][0]["leader"]["exe"], "/usr/bin/bash");
        assert_eq!(state["categories"]["crypto_mining"]["trees"], 1);
    }

    #[test]
    fn the_host_root_is_not_a_container_and_quiet_scopes_use_nothing() {
        let mut v = HostView::default();
        let mut c = fixture("container.activity");
        v.observe(&c);
        // container_id null: the host's own cgroup.
        assert!(v.to_json()["containers"].as_array().unwrap().is_empty());
        c["container"]["container_id"] = "abc123".into();
        v.observe(&c);
        assert_eq!(v.to_json()["containers"][0]["key"], "abc123");
        assert!(v.to_json()["containers"][0]["cpu"]["cores"].as_f64().unwrap() > 0.5);
        // Ten seconds later, with no activity record: it used nothing since.
        let mut health = fixture("tracer.health");
        health["mono_ns"] = (c["mono_ns"].as_u64().unwrap() + 10_000_000_000).into();
        v.observe(&health);
        assert_eq!(v.to_json()["containers"][0]["cpu"]["cores"], 0.0);
        assert_eq!(v.to_json()["health"]["status"], health["health"]["status"]);
        // After five minutes it has ended.
        health["mono_ns"] = (c["mono_ns"].as_u64().unwrap() + STALE_NS + 1).into();
        v.observe(&health);
        assert!(v.to_json()["containers"].as_array().unwrap().is_empty());
        assert_eq!(v.expired, 1);
    }

    #[test]
    fn entries_beyond_the_limit_evict_the_oldest_and_are_counted() {
        let mut v = HostView::default();
        let mut a = fixture("tree.activity");
        let base = a["mono_ns"].as_u64().unwrap();
        for i in 0..(MAX_ENTRIES as u64 + 3) {
            a["tree"]["sid"] = (100_000 + i).into();
            a["mono_ns"] = (base + i).into();
            v.observe(&a);
        }
        assert_eq!(v.trees.len(), MAX_ENTRIES);
        assert_eq!(v.evicted, 3);
        assert!(!v.trees.contains_key("100000"));
    }

    #[test]
    fn a_scope_with_two_categories_splits_its_use() {
        let mut v = HostView::default();
        let mut verdict = fixture("classification");
        verdict["classification"]["categories"] = json!([
            {"category": "ai_training", "confidence": 0.9, "score": 3.0, "alert": false, "indicators": []},
            {"category": "crypto_mining", "confidence": 0.9, "score": 3.0, "alert": true, "indicators": []},
        ]);
        v.observe(&verdict);
        v.observe(&fixture("tree.activity"));
        let by = v.by_category();
        assert!((by["ai_training"].cpu_cores - by["crypto_mining"].cpu_cores).abs() < 1e-9);
        assert!((by["ai_training"].cpu_cores * 2.0 - 0.8177).abs() < 0.001);
    }
}
