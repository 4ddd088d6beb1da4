//! `tracer report`: one readable account (HTML or Markdown) of what a host
//! did over a capture or a log. A capture is classified offline exactly as
//! `replay` does; a log already holds the classifier's records. Either way
//! the records are folded into a [`Model`] that the writers render.

mod html;
mod markdown;
mod svg;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    io::{BufRead, Write as _},
    path::Path,
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::{
    classify::{Classifier, rules::Rules},
    cli::ReportArgs,
    replay,
};

/// What the report is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Markdown, for tickets: tables and text sparklines, no charts.
    Md,
    /// One self-contained HTML file with inline SVG charts.
    Html,
}

/// Categories in the order charts stack and tables list them.
pub const CATEGORIES: [&str; 6] =
    ["crypto_mining", "blockchain_node", "ai_training", "ai_inference", "distributed_storage", "ordinary"];

/// Most rows a table shows; the rest are counted, not listed.
pub const TOP: usize = 20;

/// Most points a chart or sparkline draws: longer runs are merged into bins.
const MAX_POINTS: usize = 120;

/// A moment of a record: its time as written and as seconds since the epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamp {
    pub secs: f64,
    pub text: String,
}

/// Where the records came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A `record` capture, classified offline.
    Capture { kernel: Option<String>, tracer_version: Option<String>, argv: Vec<String> },
    /// A `run` log, used as it is.
    Log,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    pub time: Option<Stamp>,
    pub category: String,
    pub indicator: String,
    pub what: String,
    pub seen: String,
    pub weight: f64,
    pub pid: Option<u64>,
    pub comm: String,
    pub entity_id: String,
    pub record: String,
}

/// The last verdict of one tree or container, with all evidence it gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub scope: String,
    pub key: String,
    /// The tree's leader executable or the container's cgroup, when seen.
    pub label: Option<String>,
    pub category: String,
    pub categories: Vec<String>,
    pub confidence: f64,
    pub alert: bool,
    pub scores: Vec<(String, f64)>,
    pub compliance: Option<String>,
    pub first: Option<Stamp>,
    pub last: Option<Stamp>,
    /// Each verdict it had, in order, when it first had it.
    pub history: Vec<(Option<Stamp>, String)>,
    pub evidence: Vec<Evidence>,
    /// CPU seconds its activity records account for.
    pub cpu_seconds: f64,
}

/// Use in one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
}

impl Usage {
    fn add(&mut self, o: &Usage) {
        self.cpu_seconds += o.cpu_seconds;
        self.tx_bytes += o.tx_bytes;
        self.rx_bytes += o.rx_bytes;
    }
}

/// One interval of the host's use by category, ending at `end`.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub end: f64,
    pub interval_s: f64,
    pub by_category: BTreeMap<String, Usage>,
}

/// Where the charts' numbers came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesSource {
    /// The classifier's host.summary records.
    Summaries,
    /// Activity records, each tree counted under its verdict.
    Activity,
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Process {
    pub entity_id: String,
    pub pid: Option<u64>,
    pub comm: String,
    pub exe: String,
    pub argv: Vec<String>,
    pub session: Option<u64>,
    pub cpu_seconds: f64,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Peer {
    pub address: String,
    pub port: Option<u64>,
    pub transports: BTreeSet<String>,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub connects: u64,
    pub failed: u64,
    /// DNS names it was reached by or resolved from.
    pub names: BTreeSet<String>,
    /// What its first bytes were (protocol, detail, agent).
    pub spoken: BTreeSet<String>,
    pub comms: BTreeSet<String>,
    pub mining: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Name {
    pub name: String,
    pub lookups: u64,
    pub addresses: BTreeSet<String>,
    pub comms: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub status: String,
    pub events_read: u64,
    pub dropped_total: u64,
    pub programs_attached: u64,
    pub programs_failed: u64,
}

/// Everything a report says, in the order it says it.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub input: String,
    pub source: Source,
    pub host: Option<String>,
    pub records: u64,
    pub first: Option<Stamp>,
    pub last: Option<Stamp>,
    pub verdicts: Vec<Verdict>,
    pub series_source: SeriesSource,
    pub series: Vec<Point>,
    /// Per category over the whole span, largest CPU first.
    pub totals: Vec<(String, Usage)>,
    pub processes: Vec<Process>,
    pub peers: Vec<Peer>,
    pub names: Vec<Name>,
    pub health: Option<Health>,
}

impl Model {
    /// Seconds from the first record to the last.
    pub fn span_s(&self) -> f64 {
        match (&self.first, &self.last) {
            (Some(a), Some(b)) => (b.secs - a.secs).max(0.0),
            _ => 0.0,
        }
    }

    /// Seconds from the first record to `t`.
    pub fn offset(&self, t: &Stamp) -> f64 {
        self.first.as_ref().map_or(0.0, |f| t.secs - f.secs)
    }

    pub fn alerts(&self) -> usize {
        self.verdicts.iter().filter(|v| v.alert).count()
    }

    /// (scope, category, how many, how many alert), scopes then categories in order.
    pub fn verdict_counts(&self) -> Vec<(String, String, usize, usize)> {
        let mut counts: BTreeMap<(String, usize, String), (usize, usize)> = BTreeMap::new();
        for v in &self.verdicts {
            let rank = CATEGORIES.iter().position(|c| *c == v.category).unwrap_or(CATEGORIES.len());
            let e = counts.entry((v.scope.clone(), rank, v.category.clone())).or_default();
            e.0 += 1;
            e.1 += usize::from(v.alert);
        }
        counts.into_iter().map(|((s, _, c), (n, a))| (s, c, n, a)).collect()
    }

    /// Categories that appear in the series, in [`CATEGORIES`] order (others after).
    pub fn series_categories(&self) -> Vec<String> {
        let seen: BTreeSet<&str> =
            self.series.iter().flat_map(|p| p.by_category.keys().map(String::as_str)).collect();
        let mut out: Vec<String> =
            CATEGORIES.iter().filter(|c| seen.contains(*c)).map(|c| c.to_string()).collect();
        out.extend(seen.iter().filter(|c| !CATEGORIES.contains(c)).map(|c| c.to_string()));
        out
    }
}

/// Seconds since the epoch of an RFC 3339 time (`2026-11-21T19:39:24.649Z`,
/// or with a `+hh:mm` offset).
pub fn parse_time(s: &str) -> Option<f64> {
    // The formats' own parser: millisecond precision is more than a chart needs.
    crate::output::formats::epoch_ms(s).map(|ms| ms as f64 / 1000.0)
}

fn stamp(text: Option<&str>) -> Option<Stamp> {
    let text = text?;
    Some(Stamp { secs: parse_time(text)?, text: text.to_string() })
}

fn st<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn un(v: &Value, path: &[&str]) -> Option<u64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_u64()
}

fn fl(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_f64()
}

fn text(v: &Value, path: &[&str]) -> String {
    st(v, path).unwrap_or_default().to_string()
}

/// An activity body's use (`{interval_s, cpu, network}`).
fn activity_usage(a: &Value) -> Usage {
    Usage {
        cpu_seconds: fl(a, &["cpu", "time_ms"]).unwrap_or(0.0) / 1000.0,
        tx_bytes: un(a, &["network", "tx_bytes"]).unwrap_or(0),
        rx_bytes: un(a, &["network", "rx_bytes"]).unwrap_or(0),
    }
}

#[derive(Default)]
struct Scope {
    last: Option<Value>,
    first: Option<Stamp>,
    last_time: Option<Stamp>,
    history: Vec<(Option<Stamp>, String)>,
    evidence: Vec<Evidence>,
    order: usize,
}

/// A tree activity sample, counted under its tree's final verdict.
struct Sample {
    end: f64,
    interval_s: f64,
    scope: (String, String),
    usage: Usage,
}

/// Peer byte counts at one level of activity record (process, tree,
/// container): each level counts the same bytes, so only one is used.
type PeerBytes = HashMap<(String, Option<u64>), (String, u64, u64)>;

/// Folds records, one at a time, into a [`Model`].
#[derive(Default)]
pub struct Folder {
    source: Option<Source>,
    host: Option<String>,
    records: u64,
    first: Option<Stamp>,
    last: Option<Stamp>,
    scopes: HashMap<(String, String), Scope>,
    summaries: Vec<Point>,
    samples: Vec<Sample>,
    labels: HashMap<(String, String), String>,
    scope_cpu: HashMap<(String, String), f64>,
    processes: HashMap<String, Process>,
    peers: HashMap<(String, Option<u64>), Peer>,
    peer_bytes: [PeerBytes; 3],
    names: HashMap<String, Name>,
    health: Option<Health>,
}

impl Folder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn observe(&mut self, r: &Value) {
        let kind = st(r, &["kind"]).unwrap_or_default();
        self.records += 1;
        if self.source.is_none() {
            self.source = Some(if kind == "tracer.capture" {
                Source::Capture {
                    kernel: st(r, &["capture", "kernel"]).map(str::to_string),
                    tracer_version: st(r, &["capture", "tracer_version"]).map(str::to_string),
                    argv: r["capture"]["argv"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
                        .unwrap_or_default(),
                }
            } else {
                Source::Log
            });
        }
        if self.host.is_none() {
            self.host = st(r, &["host"]).map(str::to_string);
        }
        let time = stamp(st(r, &["time"]));
        if let Some(t) = &time {
            if self.first.as_ref().is_none_or(|f| t.secs < f.secs) {
                self.first = Some(t.clone());
            }
            if self.last.as_ref().is_none_or(|l| t.secs > l.secs) {
                self.last = Some(t.clone());
            }
        }
        if let Some(p) = r.get("process").filter(|p| p.is_object()) {
            self.process(kind, r, p);
        }
        match kind {
            "classification" => self.classification(&r["classification"], time),
            "host.summary" => self.summary(&r["summary"], time),
            "tree.activity" => {
                let tree = &r["tree"];
                let key = un(tree, &["sid"]).map(|s| s.to_string()).unwrap_or_default();
                let scope = ("tree".to_string(), key);
                if let Some(exe) = st(tree, &["leader", "exe"]) {
                    self.labels.insert(scope.clone(), exe.to_string());
                }
                self.activity(&tree["activity"], time, scope, 1);
            }
            "container.activity" => {
                let c = &r["container"];
                let key = st(c, &["container_id"])
                    .map(str::to_string)
                    .or_else(|| un(c, &["cgroup_id"]).map(|i| i.to_string()))
                    .unwrap_or_default();
                let scope = ("container".to_string(), key);
                if let Some(cg) = st(c, &["cgroup"]) {
                    self.labels.insert(scope.clone(), cg.to_string());
                }
                self.activity(&c["activity"], time, scope, 2);
            }
            "network.connect" => self.connect(r),
            "network.first_bytes" => self.first_bytes(r),
            "network.dns" => self.dns(r),
            "tracer.health" => {
                let h = &r["health"];
                self.health = Some(Health {
                    status: text(h, &["status"]),
                    events_read: un(h, &["events_read"]).unwrap_or(0),
                    dropped_total: un(h, &["dropped_total"]).unwrap_or(0),
                    programs_attached: un(h, &["programs_attached"]).unwrap_or(0),
                    programs_failed: un(h, &["programs_failed"]).unwrap_or(0),
                });
            }
            _ => {}
        }
    }

    fn process(&mut self, kind: &str, r: &Value, p: &Value) {
        let Some(id) = st(p, &["entity_id"]) else { return };
        let e = self.processes.entry(id.to_string()).or_insert_with(|| Process {
            entity_id: id.to_string(),
            pid: None,
            comm: String::new(),
            exe: String::new(),
            argv: Vec::new(),
            session: None,
            cpu_seconds: 0.0,
            tx_bytes: 0,
            rx_bytes: 0,
        });
        // The latest names win: an exec replaces what a fork inherited.
        e.pid = un(p, &["pid"]).or(e.pid);
        e.session = un(p, &["session"]).or(e.session);
        if let Some(c) = st(p, &["comm"]) {
            e.comm = c.to_string();
        }
        if let Some(x) = st(p, &["exe"]) {
            e.exe = x.to_string();
        }
        if let Some(a) = p["argv"].as_array() {
            e.argv = a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect();
        }
        if kind == "process.activity" {
            let u = activity_usage(&r["activity"]);
            e.cpu_seconds += u.cpu_seconds;
            e.tx_bytes += u.tx_bytes;
            e.rx_bytes += u.rx_bytes;
            let comm = e.comm.clone();
            let time = stamp(st(r, &["time"]));
            if let Some(s) = e.session {
                self.process_activity(&r["activity"], time, ("tree".into(), s.to_string()), 0, &comm);
            } else {
                self.add_peer_bytes(&r["activity"], 0, &comm);
            }
        }
    }

    /// Process activity counts toward its session's samples only when the
    /// input has no tree activity (see [`Folder::finish`]).
    fn process_activity(
        &mut self,
        a: &Value,
        time: Option<Stamp>,
        scope: (String, String),
        level: usize,
        comm: &str,
    ) {
        self.add_peer_bytes(a, level, comm);
        if let Some(t) = time {
            self.samples.push(Sample {
                end: t.secs,
                interval_s: fl(a, &["interval_s"]).unwrap_or(0.0),
                scope: (format!("process:{}", scope.0), scope.1),
                usage: activity_usage(a),
            });
        }
    }

    fn add_peer_bytes(&mut self, a: &Value, level: usize, comm: &str) {
        for p in a["network"]["peers"].as_array().into_iter().flatten() {
            let Some(addr) = st(p, &["address"]) else { continue };
            let key = (addr.to_string(), un(p, &["port"]));
            let e =
                self.peer_bytes[level].entry(key.clone()).or_insert_with(|| (text(p, &["protocol"]), 0, 0));
            e.1 += un(p, &["tx_bytes"]).unwrap_or(0);
            e.2 += un(p, &["rx_bytes"]).unwrap_or(0);
            if !comm.is_empty() {
                self.peer(key).comms.insert(comm.to_string());
            }
        }
    }

    fn activity(&mut self, a: &Value, time: Option<Stamp>, scope: (String, String), level: usize) {
        let u = activity_usage(a);
        *self.scope_cpu.entry(scope.clone()).or_default() += u.cpu_seconds;
        self.add_peer_bytes(a, level, "");
        if level == 1
            && let Some(t) = time
        {
            self.samples.push(Sample {
                end: t.secs,
                interval_s: fl(a, &["interval_s"]).unwrap_or(0.0),
                scope,
                usage: u,
            });
        }
    }

    fn peer(&mut self, key: (String, Option<u64>)) -> &mut Peer {
        self.peers.entry(key.clone()).or_insert_with(|| Peer {
            address: key.0,
            port: key.1,
            ..Peer::default()
        })
    }

    fn connect(&mut self, r: &Value) {
        let c = &r["connect"];
        let Some(addr) = st(c, &["address"]) else { return };
        let comm = text(r, &["process", "comm"]);
        let peer = self.peer((addr.to_string(), un(c, &["port"])));
        peer.connects += 1;
        peer.failed += u64::from(st(c, &["result"]).is_some_and(|res| res != "ok" && res != "in_progress"));
        if let Some(t) = st(c, &["protocol"]) {
            peer.transports.insert(t.to_string());
        }
        if !comm.is_empty() {
            peer.comms.insert(comm.clone());
        }
        if let Some(name) = st(c, &["dns_name"]) {
            peer.names.insert(name.to_string());
            let n = self.name(name);
            n.addresses.insert(addr.to_string());
            if !comm.is_empty() {
                n.comms.insert(comm);
            }
        }
    }

    fn first_bytes(&mut self, r: &Value) {
        let f = &r["first_bytes"];
        let Some(addr) = st(f, &["address"]) else { return };
        let comm = text(r, &["process", "comm"]);
        let peer = self.peer((addr.to_string(), un(f, &["port"])));
        let mut said = text(f, &["protocol"]);
        for part in [st(f, &["detail"]), st(f, &["agent"]).map(|a| a.trim())].into_iter().flatten() {
            if !part.is_empty() {
                said = if said.is_empty() { part.to_string() } else { format!("{said} {part}") };
            }
        }
        if !said.is_empty() {
            peer.spoken.insert(said);
        }
        peer.mining |= f["mining"].as_bool().unwrap_or(false);
        if !comm.is_empty() {
            peer.comms.insert(comm);
        }
    }

    fn dns(&mut self, r: &Value) {
        let d = &r["dns"];
        let comm = text(r, &["process", "comm"]);
        let response = d["response"].as_bool().unwrap_or(false);
        for q in d["questions"].as_array().into_iter().flatten() {
            let Some(name) = st(q, &["name"]) else { continue };
            let n = self.name(name);
            // A lookup is its query; its response only adds answers.
            if !response {
                n.lookups += 1;
            }
            if !comm.is_empty() {
                n.comms.insert(comm.clone());
            }
        }
        for a in d["answers"].as_array().into_iter().flatten() {
            let (Some(name), Some(data)) = (st(a, &["name"]), st(a, &["data"])) else { continue };
            if !matches!(st(a, &["type"]), Some("A" | "AAAA")) {
                continue;
            }
            self.name(name).addresses.insert(data.to_string());
        }
    }

    fn name(&mut self, name: &str) -> &mut Name {
        self.names
            .entry(name.to_string())
            .or_insert_with(|| Name { name: name.to_string(), ..Name::default() })
    }

    fn classification(&mut self, c: &Value, time: Option<Stamp>) {
        let key = (text(c, &["scope"]), text(c, &["key"]));
        let order = self.scopes.len();
        let scope = self.scopes.entry(key).or_insert_with(|| Scope { order, ..Scope::default() });
        let category = text(c, &["category"]);
        if scope.history.last().is_none_or(|(_, last)| *last != category) {
            scope.history.push((time.clone(), category));
        }
        if scope.first.is_none() {
            scope.first = time.clone();
        }
        scope.last_time = time;
        // Each record repeats the evidence found so far; keep each item once.
        for e in c["evidence"].as_array().into_iter().flatten() {
            let item = Evidence {
                time: stamp(st(e, &["time"])),
                category: text(e, &["category"]),
                indicator: text(e, &["indicator"]),
                what: text(e, &["what"]),
                seen: text(e, &["seen"]),
                weight: fl(e, &["weight"]).unwrap_or(0.0),
                pid: un(e, &["pid"]),
                comm: text(e, &["comm"]),
                entity_id: text(e, &["entity_id"]),
                record: text(e, &["record"]),
            };
            let same = |o: &Evidence| {
                o.indicator == item.indicator
                    && o.entity_id == item.entity_id
                    && o.seen == item.seen
                    && o.time.as_ref().map(|t| &t.text) == item.time.as_ref().map(|t| &t.text)
            };
            if !scope.evidence.iter().any(same) {
                scope.evidence.push(item);
            }
        }
        scope.last = Some(c.clone());
    }

    fn summary(&mut self, s: &Value, time: Option<Stamp>) {
        let Some(t) = time else { return };
        let mut by_category = BTreeMap::new();
        for c in s["categories"].as_array().into_iter().flatten() {
            let Some(cat) = st(c, &["category"]) else { continue };
            let i = &c["interval"];
            by_category.insert(
                cat.to_string(),
                Usage {
                    cpu_seconds: fl(i, &["cpu_seconds"]).unwrap_or(0.0),
                    tx_bytes: un(i, &["tx_bytes"]).unwrap_or(0),
                    rx_bytes: un(i, &["rx_bytes"]).unwrap_or(0),
                },
            );
        }
        self.summaries.push(Point {
            end: t.secs,
            interval_s: fl(s, &["interval_s"]).unwrap_or(0.0),
            by_category,
        });
    }

    pub fn finish(self, input: &str) -> Model {
        let mut verdicts: Vec<(usize, Verdict)> = self
            .scopes
            .into_iter()
            .filter_map(|(key, s)| {
                let c = s.last?;
                let mut evidence = s.evidence;
                evidence.sort_by(|a, b| {
                    let t = |e: &Evidence| e.time.as_ref().map_or(f64::INFINITY, |t| t.secs);
                    t(a).total_cmp(&t(b))
                });
                let mut scores: Vec<(String, f64)> = c["scores"]
                    .as_object()
                    .map(|o| o.iter().filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect())
                    .unwrap_or_default();
                scores.sort_by(|a, b| b.1.total_cmp(&a.1));
                let category = text(&c, &["category"]);
                let mut categories: Vec<String> = c["categories"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|x| st(x, &["category"]).map(str::to_string)).collect())
                    .unwrap_or_default();
                if categories.is_empty() {
                    categories.push(category.clone());
                }
                Some((
                    s.order,
                    Verdict {
                        label: self.labels.get(&key).cloned(),
                        cpu_seconds: self.scope_cpu.get(&key).copied().unwrap_or(0.0),
                        scope: key.0,
                        key: key.1,
                        category,
                        categories,
                        confidence: fl(&c, &["confidence"]).unwrap_or(0.0),
                        alert: c["alert"].as_bool().unwrap_or(false),
                        scores,
                        compliance: st(&c, &["compliance", "summary"]).map(str::to_string),
                        first: s.first,
                        last: s.last_time,
                        history: s.history,
                        evidence,
                    },
                ))
            })
            .collect();
        // Alerts first, then in the order they were first classified.
        verdicts.sort_by_key(|(order, v)| (!v.alert, *order));
        let mut verdicts: Vec<Verdict> = verdicts.into_iter().map(|(_, v)| v).collect();
        // A tree without a label gets its leader's executable from its processes.
        for v in verdicts.iter_mut().filter(|v| v.label.is_none() && v.scope == "tree") {
            v.label = self
                .processes
                .values()
                .find(|p| p.session.map(|s| s.to_string()) == Some(v.key.clone()) && p.pid == p.session)
                .map(|p| p.exe.clone())
                .filter(|e| !e.is_empty());
        }

        let (series_source, series) = if !self.summaries.is_empty() {
            let mut s = self.summaries;
            s.sort_by(|a, b| a.end.total_cmp(&b.end));
            (SeriesSource::Summaries, s)
        } else {
            let verdict_of: HashMap<(&str, &str), &str> =
                verdicts.iter().map(|v| ((v.scope.as_str(), v.key.as_str()), v.category.as_str())).collect();
            // Tree activity when there is any; else process activity by session.
            let trees = self.samples.iter().any(|s| s.scope.0 == "tree");
            let mut buckets: BTreeMap<i64, Point> = BTreeMap::new();
            for s in self.samples.iter().filter(|s| (s.scope.0 == "tree") == trees) {
                let scope = s.scope.0.trim_start_matches("process:");
                let category = verdict_of.get(&(scope, s.scope.1.as_str())).copied().unwrap_or("ordinary");
                // One activity tick writes all its records at one time.
                let p = buckets.entry((s.end * 1000.0).round() as i64).or_insert_with(|| Point {
                    end: s.end,
                    interval_s: 0.0,
                    by_category: BTreeMap::new(),
                });
                p.interval_s = p.interval_s.max(s.interval_s);
                p.by_category.entry(category.to_string()).or_default().add(&s.usage);
            }
            let points: Vec<Point> = buckets.into_values().collect();
            (if points.is_empty() { SeriesSource::None } else { SeriesSource::Activity }, points)
        };
        let mut totals: BTreeMap<String, Usage> = BTreeMap::new();
        for p in &series {
            for (c, u) in &p.by_category {
                totals.entry(c.clone()).or_default().add(u);
            }
        }
        let mut totals: Vec<(String, Usage)> = totals.into_iter().collect();
        totals.sort_by(|a, b| b.1.cpu_seconds.total_cmp(&a.1.cpu_seconds));

        let mut processes: Vec<Process> =
            self.processes.into_values().filter(|p| p.cpu_seconds > 0.0).collect();
        processes.sort_by(|a, b| b.cpu_seconds.total_cmp(&a.cpu_seconds).then(a.entity_id.cmp(&b.entity_id)));

        let mut peers = self.peers;
        // The finest level of activity that reported peers gives the bytes.
        if let Some(bytes) = self.peer_bytes.iter().find(|b| !b.is_empty()) {
            for (key, (transport, tx, rx)) in bytes {
                let p = peers.entry(key.clone()).or_insert_with(|| Peer {
                    address: key.0.clone(),
                    port: key.1,
                    ..Peer::default()
                });
                p.tx_bytes += tx;
                p.rx_bytes += rx;
                if !transport.is_empty() {
                    p.transports.insert(transport.clone());
                }
            }
        }
        let mut peers: Vec<Peer> = peers.into_values().collect();
        for p in &mut peers {
            for n in self.names.values().filter(|n| n.addresses.contains(&p.address)) {
                p.names.insert(n.name.clone());
            }
        }
        peers.sort_by(|a, b| {
            (b.tx_bytes + b.rx_bytes)
                .cmp(&(a.tx_bytes + a.rx_bytes))
                .then(b.connects.cmp(&a.connects))
                .then((&a.address, a.port).cmp(&(&b.address, b.port)))
        });
        let mut names: Vec<Name> = self.names.into_values().collect();
        names.sort_by(|a, b| b.lookups.cmp(&a.lookups).then(a.name.cmp(&b.name)));

        Model {
            input: input.to_string(),
            source: self.source.unwrap_or(Source::Log),
            host: self.host,
            records: self.records,
            first: self.first,
            last: self.last,
            verdicts,
            series_source,
            series: rebin(series, MAX_POINTS),
            totals,
            processes,
            peers,
            names,
            health: self.health,
        }
    }
}

/// Merges consecutive points so that at most `max` remain.
fn rebin(points: Vec<Point>, max: usize) -> Vec<Point> {
    if points.len() <= max {
        return points;
    }
    let per = points.len().div_ceil(max);
    points
        .chunks(per)
        .map(|chunk| {
            let mut merged =
                Point { end: chunk[chunk.len() - 1].end, interval_s: 0.0, by_category: BTreeMap::new() };
            for p in chunk {
                merged.interval_s += p.interval_s;
                for (c, u) in &p.by_category {
                    merged.by_category.entry(c.clone()).or_default().add(u);
                }
            }
            merged
        })
        .collect()
}

/// Folds the records of `input` (a capture or a log) into a model. A
/// capture, headed by a tracer.capture record, is classified as replay does
/// and its own classification and host.summary records are set aside.
pub fn load(
    input: Box<dyn BufRead>,
    name: &str,
    rules: Rules,
    summary_interval: std::time::Duration,
) -> Result<Model> {
    let mut folder = Folder::new();
    let mut classifier: Option<Classifier> = None;
    let mut rules = Some(rules);
    let records = replay::for_each_record(input, |_, record| {
        let kind = record["kind"].as_str().unwrap_or_default();
        if folder.records == 0
            && kind == "tracer.capture"
            && let Some(rules) = rules.take()
        {
            classifier = Some(Classifier::new(rules).with_summaries(summary_interval));
        }
        match &mut classifier {
            Some(c) => {
                for written in c.observe(&record) {
                    folder.observe(&written);
                }
                if kind != "classification" && kind != "host.summary" {
                    folder.observe(&record);
                }
            }
            None => folder.observe(&record),
        }
        Ok(())
    })?;
    if records == 0 {
        bail!("{name}: no records");
    }
    // The input's own count: the folder also saw the replayed records.
    Ok(Model { records, ..folder.finish(name) })
}

pub fn run(args: &ReportArgs) -> Result<()> {
    let rules = Rules::load(args.rules.as_deref())?;
    let name = args.input.display().to_string();
    let model = load(replay::open(&args.input)?, &name, rules, args.summary_interval)?;
    let (format, output) = match (&args.html, &args.output) {
        (Some(file), _) => (Format::Html, Some(file.as_path())),
        (None, out) => (args.format.unwrap_or_else(|| format_for(out.as_deref())), out.as_deref()),
    };
    let text = match format {
        Format::Html => html::render(&model),
        Format::Md => markdown::render(&model),
    };
    match output {
        Some(path) if path != Path::new("-") => {
            std::fs::write(path, text).with_context(|| format!("writing report {}", path.display()))?;
            eprintln!(
                "report: {} records, {} verdict(s), {} alert(s), written to {}",
                model.records,
                model.verdicts.len(),
                model.alerts(),
                path.display()
            );
        }
        _ => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
    }
    Ok(())
}

/// Markdown for a `.md` output, HTML otherwise.
fn format_for(output: Option<&Path>) -> Format {
    match output.and_then(|p| p.extension()).and_then(|e| e.to_str()) {
        Some("md" | "markdown") => Format::Md,
        _ => Format::Html,
    }
}

/// `2026-11-21T19:39:24.649057144Z` as `2026-11-21 19:39:24.649Z`: to the
/// millisecond, which is what a reader compares.
pub fn short_time(t: &str) -> String {
    if !t.is_ascii() || t.len() < 19 {
        return t.to_string();
    }
    let (head, rest) = t.split_at(19);
    let (frac, zone) = match rest.strip_prefix('.') {
        Some(r) => {
            let digits = r.bytes().take_while(u8::is_ascii_digit).count();
            (&r[..digits.min(3)], &r[digits..])
        }
        None => ("", rest),
    };
    let head = head.replacen('T', " ", 1);
    if frac.is_empty() { format!("{head}{zone}") } else { format!("{head}.{frac}{zone}") }
}

/// At most `max` characters of `s`, with an ellipsis when cut: command
/// lines can be kilobytes long, and a table of them would be unreadable.
pub fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Bytes in B, KiB, MiB or GiB.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Seconds, to a precision that suits their size.
pub fn secs(s: f64) -> String {
    if s >= 100.0 {
        format!("{s:.0} s")
    } else if s >= 10.0 {
        format!("{s:.1} s")
    } else {
        format!("{s:.2} s")
    }
}

/// The one-paragraph account both formats open with, as plain sentences.
pub fn summary_lines(m: &Model) -> Vec<String> {
    let mut lines = Vec::new();
    let host = m.host.as_deref().unwrap_or("an unnamed host");
    let span = match (&m.first, &m.last) {
        (Some(a), Some(b)) => {
            format!("from {} to {} ({})", short_time(&a.text), short_time(&b.text), secs(m.span_s()))
        }
        _ => "at unknown times".to_string(),
    };
    let from = match &m.source {
        Source::Capture { .. } => "a capture, classified offline with the shipped rules",
        Source::Log => "a log, with the verdicts it holds",
    };
    lines.push(format!("Host {host}, {span}: {} records from {from}.", m.records));
    if m.verdicts.is_empty() {
        lines.push("No tree or container got a verdict.".to_string());
    } else {
        let mut parts = Vec::new();
        for scope in ["tree", "container"] {
            let counts: Vec<String> = m
                .verdict_counts()
                .into_iter()
                .filter(|c| c.0 == scope)
                .map(|(_, c, n, a)| if a > 0 { format!("{n} {c} ({a} alert)") } else { format!("{n} {c}") })
                .collect();
            let total: usize = m.verdict_counts().iter().filter(|c| c.0 == scope).map(|c| c.2).sum::<usize>();
            if total > 0 {
                let noun = if total == 1 { scope.to_string() } else { format!("{scope}s") };
                parts.push(format!("{total} {noun}: {}", counts.join(", ")));
            }
        }
        lines.push(format!("Verdicts: {}.", parts.join("; ")));
    }
    let alerts: Vec<String> = m
        .verdicts
        .iter()
        .filter(|v| v.alert)
        .map(|v| format!("{} {} ({}) is {}", v.scope, v.key, v.label.as_deref().unwrap_or("?"), v.category))
        .collect();
    lines.push(if alerts.is_empty() {
        "Alerts: none.".to_string()
    } else {
        format!("Alerts: {}: {}.", alerts.len(), alerts.join("; "))
    });
    let cpu: f64 = m.totals.iter().map(|t| t.1.cpu_seconds).sum();
    if cpu > 0.0 {
        let top: Vec<String> = m
            .totals
            .iter()
            .take(3)
            .map(|(c, u)| format!("{c} {} ({:.0}%)", secs(u.cpu_seconds), 100.0 * u.cpu_seconds / cpu))
            .collect();
        lines.push(format!("Top categories by CPU: {}.", top.join(", ")));
    }
    if let Some(h) = &m.health {
        lines.push(format!(
            "Tracer health ({}): {} events read, {} records dropped, {} programs attached, {} failed.",
            h.status, h.events_read, h.dropped_total, h.programs_attached, h.programs_failed
        ));
    }
    lines
}

/// A peer as `address:port` (IPv6 in brackets).
pub fn peer_name(p: &Peer) -> String {
    match p.port {
        Some(port) if p.address.contains(':') => format!("[{}]:{port}", p.address),
        Some(port) => format!("{}:{port}", p.address),
        None => p.address.clone(),
    }
}

#[cfg(test)]
mod tests;
