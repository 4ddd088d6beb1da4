//! The classifier: turns the record stream into a verdict per process tree
//! (session) and per container, with a confidence and the evidence behind it.
//!
//! It reads records — the same JSON the tracer writes — so a saved capture
//! replayed offline gives the same verdicts as live: it keeps no clock of its
//! own (times come from the records) and reads nothing from the host.

pub mod rules;
pub mod usage;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use serde::Serialize;
use serde_json::Value;

use self::{
    rules::{Indicator, Rules, glob},
    usage::{HostLedger, ScopeLedger, Tally, VerdictUsage},
};

/// One piece of evidence: which indicator, from which record and process.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Evidence {
    pub indicator: String,
    pub category: String,
    pub weight: f64,
    pub what: String,
    /// What in the record matched (a method, a name, a port, …).
    pub seen: String,
    /// The matching record's kind and time.
    pub record: String,
    pub time: String,
    pub entity_id: Option<String>,
    pub pid: Option<u64>,
    pub comm: Option<String>,
    /// Allowlist entry that matched the process this evidence came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowlisted: Option<String>,
    /// Declared workload (`[[declare]]`) the process belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub declared: Option<String>,
}

/// The `classification` object.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Verdict {
    /// tree (a session) or container.
    pub scope: &'static str,
    /// Session id, or the container id.
    pub key: String,
    /// crypto_mining, blockchain_node, ai_training, ai_inference,
    /// distributed_storage, or ordinary.
    pub category: String,
    pub confidence: f64,
    /// Per category, the summed weight of its evidence.
    pub scores: BTreeMap<String, f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// Allowlist entry that matched this workload, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowlisted: Option<String>,
    /// Whether this verdict calls for attention: crypto mining is among
    /// its categories and no allowlist entry or declaration covers it, or
    /// a declared workload shows a category it did not declare.
    pub alert: bool,
    /// Present when processes of a declared workload gave evidence: what
    /// was declared against what was observed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compliance: Option<Compliance>,
    /// Every category whose evidence reaches the verdict score, the primary
    /// (`category`) first, then by score: a training job that also mines
    /// is `ai_training` and `crypto_mining` at once.
    pub categories: Vec<CategoryVerdict>,
    pub evidence: Vec<Evidence>,
    /// What the scope has used since it started, in total and per category
    /// (see usage.rs for how a process's use is put down to categories).
    pub usage: VerdictUsage,
}

/// One category of a verdict.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CategoryVerdict {
    pub category: String,
    pub confidence: f64,
    pub score: f64,
    /// Allowlist entry without whose processes' evidence this category
    /// would not reach the verdict score.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowlisted: Option<String>,
    /// Declaration that lists this category and without whose processes'
    /// evidence it would not reach the verdict score: compliant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub declared: Option<String>,
    /// Declaration whose processes showed this category without listing
    /// it: an alert whatever the category.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undeclared: Option<String>,
    pub alert: bool,
    /// The indicators behind it; each is in `evidence` with what matched.
    pub indicators: Vec<String>,
}

/// A declared workload's verdict against its declaration.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Compliance {
    pub declaration: String,
    pub declared: Vec<String>,
    pub observed: Vec<String>,
    /// Every observed category is declared (or allowlisted).
    pub compliant: bool,
    /// "declared ai_training (gpu-farm-7), observed ai_training + crypto_mining".
    pub summary: String,
}

/// A category's confidence: 0.5 at the verdict score, approaching 1 with
/// more evidence.
fn confidence(score: f64, verdict_score: f64) -> f64 {
    round3(1.0 - 0.5f64.powf(score / verdict_score))
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// (primary, every category, evidence count).
type Reported = (String, Vec<CategoryVerdict>, usize);

#[derive(Default)]
struct Scope {
    evidence: Vec<Evidence>,
    /// (indicator, the allow or declare entry of the process): an indicator
    /// is evidence once per entry and once from processes without one, so
    /// a covered process cannot hide what another one does.
    seen: BTreeSet<(String, Option<String>)>,
    category: Option<String>,
    /// What was last reported: the primary, every category with its
    /// allowlist entry, and how much evidence there was.
    reported: Option<Reported>,
    /// Processes with records in this scope that have not exited.
    members: HashSet<String>,
    ledger: ScopeLedger,
    /// The session leader exited: once no member is left, the sid is free
    /// for the kernel to hand out again, and the scope ends.
    leader_gone: bool,
    last_ns: u64,
}

/// Per process, state that spans records (behaviour over intervals,
/// cumulative GPU use).
#[derive(Default)]
struct ProcessState {
    /// Consecutive reports in which a behaviour indicator held, by id.
    streaks: HashMap<String, u32>,
    gpu_contexts: u64,
    gpu_bytes: u64,
    last_ns: u64,
    /// TCP peers of the last two activity reports, with the bytes
    /// exchanged: a peer in both is a long-lived connection.
    peers_before: HashMap<String, u64>,
    peers_now: HashMap<String, u64>,
    /// The allow and declare entries last found for it: a declaration by
    /// hash matches only once the executable's hash is known.
    cover: Option<Cover>,
}

/// (allow entry, declaration) matching a process; at most one is set.
type Cover = (Option<String>, Option<String>);

/// How long a process with no record is remembered: its exit record may
/// have been lost.
const PROCESS_TTL_NS: u64 = 3600 * 1_000_000_000;
/// How often, in record time, forgotten processes and idle scopes are swept.
const SWEEP_EVERY_NS: u64 = 60 * 1_000_000_000;
/// Exited processes remembered, so that their final activity record (written
/// after the exit) neither brings back their state nor reopens a scope.
const EXITED_REMEMBERED: usize = 16_384;

pub struct Classifier {
    rules: Rules,
    scopes: HashMap<(&'static str, String), Scope>,
    processes: HashMap<String, ProcessState>,
    connect_ports: HashSet<u16>,
    /// With the categories its use went to at exit (its final activity
    /// account comes after the exit, when its tree may have ended).
    exited: HashMap<String, Vec<String>>,
    exited_order: VecDeque<String>,
    /// Record time (the latest `mono_ns` seen): the classifier has no clock
    /// of its own, so replay expires state exactly as live did.
    now_ns: u64,
    swept_ns: u64,
    host: HostLedger,
}

fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn u(v: &Value, path: &[&str]) -> Option<u64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_u64()
}

fn f(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_f64()
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl Classifier {
    pub fn new(rules: Rules) -> Self {
        let connect_ports = Self::connect_ports(&rules);
        Self {
            rules,
            scopes: HashMap::new(),
            processes: HashMap::new(),
            connect_ports,
            exited: HashMap::new(),
            exited_order: VecDeque::new(),
            now_ns: 0,
            swept_ns: 0,
            host: HostLedger::new(0),
        }
    }

    fn connect_ports(rules: &Rules) -> HashSet<u16> {
        rules.indicators.iter().filter_map(|i| i.when.remote_port.as_ref()).flatten().copied().collect()
    }

    /// New rules (SIGHUP), keeping every scope's evidence and verdict: each
    /// process's next record is matched by the new indicators, and finds
    /// its allowlist entry or declaration again (what covers it is worked
    /// out at every record, and its evidence is re-tagged when that changes).
    pub fn set_rules(&mut self, rules: Rules) {
        self.connect_ports = Self::connect_ports(&rules);
        self.rules = rules;
    }

    /// Also writes a `host.summary` record every `every` of record time
    /// (zero: none).
    pub fn with_summaries(mut self, every: std::time::Duration) -> Self {
        self.host = HostLedger::new(u64::try_from(every.as_nanos()).unwrap_or(u64::MAX));
        self
    }

    /// (scopes, processes) tracked, for the health record.
    pub fn tables(&self) -> (usize, usize) {
        (self.scopes.len(), self.processes.len())
    }

    /// Whether a connect record could match any indicator: only its port and
    /// the name it was resolved from are ever matched. Live, the pipeline
    /// skips the others (connect storms are the hottest record stream);
    /// replay feeding them changes nothing, as they match nothing.
    pub fn wants_connect(&self, port: Option<u16>, named: bool) -> bool {
        named || port.is_some_and(|p| self.connect_ports.contains(&p))
    }

    /// Feeds one record; returns the classification records it caused, as
    /// complete records (same host and time as the record that caused them).
    pub fn observe(&mut self, record: &Value) -> Vec<Value> {
        let kind = s(record, &["kind"]).unwrap_or_default();
        if kind == "classification"
            || kind == "tracer.health"
            || kind == "tracer.capture"
            || kind == "host.summary"
        {
            return Vec::new();
        }
        if kind == "network.connect"
            && !self.wants_connect(
                u(record, &["connect", "port"]).and_then(|p| u16::try_from(p).ok()),
                s(record, &["connect", "dns_name"]).is_some(),
            )
        {
            // Live never feeds these (see wants_connect); replay must not
            // let them count as scope members either.
            return Vec::new();
        }
        if let Some(ns) = u(record, &["mono_ns"]) {
            self.now_ns = self.now_ns.max(ns);
        }
        let now = self.now_ns;
        let mut out = Vec::new();
        if self.host.enabled()
            && let Some(summary) = self.host.due(now, || scope_counts(&self.scopes))
        {
            out.push(envelope(record, "host.summary", "summary", summary));
        }
        let Some(process) = record.get("process").filter(|p| p.is_object()) else { return out };
        let entity = s(process, &["entity_id"]).unwrap_or_default().to_string();
        let cover = self.cover(process);
        let exit = kind == "process.exit";
        // A record after the process's exit: its final activity account.
        let late = self.exited.contains_key(&entity);
        let mut matched: Vec<(usize, String)> = Vec::new();
        let mut gone = None;
        let state = if exit || late {
            gone.insert(self.processes.remove(&entity).unwrap_or_default())
        } else {
            self.processes.entry(entity.clone()).or_default()
        };
        state.last_ns = now;
        // Its evidence so far was found under another entry (or none).
        let recovered = state.cover.replace(cover.clone()).is_some_and(|old| old != cover);
        Self::update_state(state, kind, record);
        for (i, ind) in self.rules.indicators.iter().enumerate() {
            if let Some(seen) = matches(ind, kind, record, state) {
                matched.push((i, seen));
            }
        }

        let scopes = scope_keys(process);
        let (allow, declared) = cover;
        // A process seen in its container for the first time brings the
        // evidence it gave its tree before: the tracer learns a new
        // container's cgroup a moment after its first records.
        let joining: Vec<Evidence> = match scopes.iter().find(|k| k.0 == "container") {
            Some(key) if !late && self.scopes.get(key).is_none_or(|c| !c.members.contains(&entity)) => scopes
                .iter()
                .find(|k| k.0 == "tree")
                .and_then(|t| self.scopes.get(t))
                .map(|t| {
                    t.evidence
                        .iter()
                        .filter(|e| e.entity_id.as_deref() == Some(entity.as_str()))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        // The tree's key is the session id, or the pid when there is none.
        let leader = u(process, &["pid"]).is_some_and(|pid| u(process, &["session"]).unwrap_or(pid) == pid);
        let time = s(record, &["time"]).unwrap_or_default();
        let used = Tally::of_record(kind, record);
        let mut host_counted = false;
        let mut exit_categories = None;
        for key in scopes {
            let scope = if late {
                // The scope may have ended with the exit; what the process
                // did then must not open a new one under a sid that the
                // kernel can already have reused.
                match self.scopes.get_mut(&key) {
                    Some(scope) => scope,
                    None => continue,
                }
            } else {
                self.scopes.entry(key.clone()).or_default()
            };
            scope.last_ns = now;
            scope.ledger.begin(time);
            if let Some(t) = &used {
                scope.ledger.add(&entity, time, t);
            }
            if exit {
                scope.members.remove(&entity);
                scope.leader_gone |= key.0 == "tree" && leader;
            }
            let mut joined = false;
            if !exit && !late && !scope.members.contains(&entity) {
                scope.members.insert(entity.clone());
                if key.0 == "container" {
                    for e in &joining {
                        let entry = e.allowlisted.clone().or_else(|| e.declared.clone());
                        if scope.seen.insert((e.indicator.clone(), entry)) {
                            scope.evidence.push(e.clone());
                            joined = true;
                        }
                    }
                }
            }
            if recovered {
                for e in scope.evidence.iter_mut().filter(|e| e.entity_id.as_deref() == Some(entity.as_str()))
                {
                    (e.allowlisted, e.declared) = (allow.clone(), declared.clone());
                }
                scope.seen = scope
                    .evidence
                    .iter()
                    .map(|e| (e.indicator.clone(), e.allowlisted.clone().or_else(|| e.declared.clone())))
                    .collect();
            }
            let entry = allow.clone().or_else(|| declared.clone());
            for (i, seen) in &matched {
                let ind = &self.rules.indicators[*i];
                if scope.seen.insert((ind.id.clone(), entry.clone())) {
                    scope.evidence.push(Evidence {
                        indicator: ind.id.clone(),
                        category: ind.category.clone(),
                        weight: ind.weight,
                        what: ind.what.clone(),
                        seen: seen.clone(),
                        record: kind.to_string(),
                        time: s(record, &["time"]).unwrap_or_default().to_string(),
                        entity_id: Some(entity.clone()).filter(|e| !e.is_empty()),
                        pid: u(process, &["pid"]),
                        comm: s(process, &["comm"]).map(str::to_string),
                        allowlisted: allow.clone(),
                        declared: declared.clone(),
                    });
                }
            }
            if (!matched.is_empty() || joined || scope.reported.is_some())
                && let Some(v) = Self::decide(&self.rules, key.0, &key.1, scope)
            {
                out.push(envelope(record, "classification", "classification", serde_json::json!(v)));
            }
            if key.0 == "tree" && self.host.enabled() && (used.is_some() || exit) {
                let cats = host_categories(scope, &entity);
                if let Some(t) = &used {
                    self.host.add(&cats, t);
                    host_counted = true;
                }
                exit_categories = Some(cats);
            }
            if scope.leader_gone && scope.members.is_empty() {
                self.scopes.remove(&key);
            }
        }
        if let (Some(t), false) = (&used, host_counted) {
            // Its tree ended before this final account: where its use went at exit.
            let cats = self.exited.get(&entity).filter(|c| !c.is_empty()).cloned();
            self.host.add(&cats.unwrap_or_else(|| vec!["ordinary".into()]), t);
        }
        if exit && !late && !entity.is_empty() {
            self.remember_exit(&entity, exit_categories.unwrap_or_default());
        }
        if now >= self.swept_ns.saturating_add(SWEEP_EVERY_NS) {
            self.sweep();
        }
        out
    }

    fn remember_exit(&mut self, entity: &str, categories: Vec<String>) {
        if self.exited_order.len() >= EXITED_REMEMBERED
            && let Some(old) = self.exited_order.pop_front()
        {
            self.exited.remove(&old);
        }
        self.exited.insert(entity.to_string(), categories);
        self.exited_order.push_back(entity.to_string());
    }

    /// Forgets processes without a record for PROCESS_TTL_NS (their exit
    /// record was lost), and scopes left without members that long.
    fn sweep(&mut self) {
        let now = self.now_ns;
        self.swept_ns = now;
        let fresh = |last: u64| last.saturating_add(PROCESS_TTL_NS) > now;
        self.processes.retain(|_, p| fresh(p.last_ns));
        let processes = &self.processes;
        self.scopes.retain(|_, scope| {
            scope.members.retain(|e| processes.contains_key(e));
            !scope.members.is_empty() || (!scope.leader_gone && fresh(scope.last_ns))
        });
    }

    fn update_state(state: &mut ProcessState, kind: &str, record: &Value) {
        if kind != "process.activity" {
            return;
        }
        let a = &record["activity"];
        // Saturating: a capture is hostile input, and its counts can be anything.
        state.gpu_contexts =
            state.gpu_contexts.saturating_add(u(a, &["gpu", "compute_contexts"]).unwrap_or(0));
        state.gpu_bytes =
            state.gpu_bytes.saturating_add(u(a, &["gpu", "memory_allocated_bytes"]).unwrap_or(0));
        let peers: HashMap<String, u64> = a["network"]["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["protocol"] == "tcp")
            .filter_map(|p| {
                let bytes = u(p, &["tx_bytes"]).unwrap_or(0).saturating_add(u(p, &["rx_bytes"]).unwrap_or(0));
                Some((format!("{}:{}", s(p, &["address"])?, u(p, &["port"])?), bytes))
            })
            .take(16)
            .collect();
        state.peers_before = std::mem::replace(&mut state.peers_now, peers);
    }

    /// The allow entry (any of its keys) or, failing one, the declaration
    /// (all of its keys) that matches a process.
    fn cover(&self, process: &Value) -> Cover {
        let exe = s(process, &["exe"]).unwrap_or_default();
        let cgroup = s(process, &["cgroup"]).unwrap_or_default();
        let container = s(process, &["container_id"]).unwrap_or_default();
        let allow = self.rules.allow.iter().find(|a| {
            a.exe.iter().any(|e| e == exe)
                || a.exe_name.iter().any(|n| n == basename(exe))
                || (!container.is_empty() && a.container_id.iter().any(|c| c == container))
                || a.cgroup_prefix.iter().any(|p| cgroup.starts_with(p.as_str()))
        });
        if let Some(a) = allow {
            return (Some(a.id.clone()), None);
        }
        let hash = s(process, &["exe_sha256"]).unwrap_or_default();
        let uid = u(process, &["uid"]);
        // An empty list does not constrain; a given one must hold.
        fn holds<T>(list: &[T], ok: impl Fn(&T) -> bool) -> bool {
            list.is_empty() || list.iter().any(ok)
        }
        let declared = self.rules.declare.iter().find(|d| {
            let m = &d.when;
            holds(&m.container_id, |c| !container.is_empty() && c == container)
                && holds(&m.cgroup_prefix, |p| !cgroup.is_empty() && cgroup.starts_with(p.as_str()))
                && holds(&m.exe, |e| e == exe)
                && holds(&m.exe_name, |n| !exe.is_empty() && n == basename(exe))
                && holds(&m.exe_sha256, |h| h.eq_ignore_ascii_case(hash))
                && holds(&m.uid, |x| uid == Some(u64::from(*x)))
        });
        (None, declared.map(|d| d.id.clone()))
    }

    /// The scope's verdict, if it changed since last reported.
    fn decide(rules: &Rules, scope_kind: &'static str, key: &str, scope: &mut Scope) -> Option<Verdict> {
        // Each indicator counts once.
        let mut scores: BTreeMap<String, f64> = BTreeMap::new();
        let mut counted = BTreeSet::new();
        for e in &scope.evidence {
            if counted.insert(e.indicator.as_str()) {
                *scores.entry(e.category.clone()).or_default() += e.weight;
            }
        }
        let (best, best_score) = scores
            .iter()
            .max_by(|a, b| a.1.total_cmp(b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(c, v)| (c.clone(), *v))
            .unwrap_or_else(|| ("ordinary".into(), 0.0));
        let current = scope.category.clone();
        let category = if best_score < rules.verdict_score {
            current.clone().unwrap_or_else(|| "ordinary".into())
        } else {
            match &current {
                // Stable: another category must lead the current one clearly.
                Some(cur) if cur != &best && cur != "ordinary" => {
                    let cur_score = scores.get(cur).copied().unwrap_or(0.0);
                    if best_score >= cur_score + rules.stable_margin { best.clone() } else { cur.clone() }
                }
                _ => best.clone(),
            }
        };
        scope.category = Some(category.clone());
        if category == "ordinary" {
            return None;
        }
        // Every category at the verdict score, the primary first. Evidence
        // only accumulates in a scope, so a category once reported stays:
        // none flaps.
        let mut listed: Vec<(&String, f64)> = scores
            .iter()
            .filter(|(c, v)| **v >= rules.verdict_score || **c == category)
            .map(|(c, v)| (c, *v))
            .collect();
        listed.sort_by(|a, b| {
            (b.0 == &category).cmp(&(a.0 == &category)).then(b.1.total_cmp(&a.1)).then(a.0.cmp(b.0))
        });
        let categories: Vec<CategoryVerdict> =
            listed.into_iter().map(|(cat, score)| category_verdict(rules, scope, cat, score)).collect();
        let state = (category.clone(), categories.clone(), scope.evidence.len());
        if scope.reported.as_ref() == Some(&state) {
            return None;
        }
        let previous = scope.reported.as_ref().map(|r| r.0.clone()).filter(|p| p != &category);
        scope.reported = Some(state);
        let primary = &categories[0];
        let names: Vec<&str> = categories.iter().map(|c| c.category.as_str()).collect();
        let usage = scope.ledger.verdict(&scope.evidence, &names);
        Some(Verdict {
            scope: scope_kind,
            key: key.to_string(),
            category,
            confidence: primary.confidence,
            scores: scores.into_iter().map(|(k, v)| (k, round3(v))).collect(),
            previous,
            allowlisted: primary.allowlisted.clone(),
            alert: categories.iter().any(|c| c.alert),
            compliance: compliance(rules, scope, &categories),
            categories,
            evidence: scope.evidence.clone(),
            usage,
        })
    }
}

/// One category of a scope's verdict, with what covers it.
fn category_verdict(rules: &Rules, scope: &Scope, cat: &str, score: f64) -> CategoryVerdict {
    let declares = |d: &Option<String>| {
        d.as_ref().is_some_and(|d| {
            rules.declare.iter().any(|x| &x.id == d && x.categories.iter().any(|c| c == cat))
        })
    };
    let of_cat = || scope.evidence.iter().filter(move |e| e.category == cat);
    // Covered when the covered processes' evidence is needed for it: the
    // others' alone would not make it.
    let mut uncovered = 0.0;
    let mut counted = BTreeSet::new();
    for e in of_cat().filter(|e| e.allowlisted.is_none() && !declares(&e.declared)) {
        if counted.insert(e.indicator.as_str()) {
            uncovered += e.weight;
        }
    }
    let covered = uncovered < rules.verdict_score;
    let (mut allowlisted, mut declared, mut undeclared) = (None, None, None);
    if covered {
        allowlisted = of_cat().find_map(|e| e.allowlisted.clone());
        if allowlisted.is_none() {
            declared = of_cat().find_map(|e| e.declared.clone().filter(|_| declares(&e.declared)));
        }
    }
    if allowlisted.is_none() && declared.is_none() {
        undeclared = of_cat().find_map(|e| e.declared.clone().filter(|_| !declares(&e.declared)));
    }
    let mut indicators: Vec<String> = Vec::new();
    for e in of_cat() {
        if !indicators.contains(&e.indicator) {
            indicators.push(e.indicator.clone());
        }
    }
    let open = allowlisted.is_none() && declared.is_none();
    CategoryVerdict {
        category: cat.to_string(),
        confidence: confidence(score, rules.verdict_score),
        score: round3(score),
        alert: open && (cat == "crypto_mining" || undeclared.is_some()),
        allowlisted,
        declared,
        undeclared,
        indicators,
    }
}

/// What a declared workload declared against what it showed; None when
/// no declared process gave evidence.
fn compliance(rules: &Rules, scope: &Scope, categories: &[CategoryVerdict]) -> Option<Compliance> {
    let id = scope.evidence.iter().find_map(|e| e.declared.clone())?;
    let declared =
        rules.declare.iter().find(|d| d.id == id).map(|d| d.categories.clone()).unwrap_or_default();
    let observed: Vec<String> = categories.iter().map(|c| c.category.clone()).collect();
    let compliant = categories.iter().all(|c| c.undeclared.is_none() && !c.alert);
    let list = |l: &[String]| if l.is_empty() { "nothing".to_string() } else { l.join(" + ") };
    let summary = format!(
        "declared {} ({id}), observed {}{}",
        list(&declared),
        list(&observed),
        if compliant { ": compliant" } else { "" }
    );
    Some(Compliance { declaration: id, declared, observed, compliant, summary })
}

/// The categories a process's use in its tree goes to now.
fn host_categories(scope: &Scope, entity: &str) -> Vec<String> {
    match &scope.reported {
        Some((primary, listed, _)) => {
            let names: Vec<&str> = listed.iter().map(|c| c.category.as_str()).collect();
            usage::own_categories(entity, &scope.evidence, &names, primary)
                .into_iter()
                .map(String::from)
                .collect()
        }
        None => vec!["ordinary".into()],
    }
}

/// (trees, containers) per category as the verdicts stand; scopes without
/// one are ordinary.
fn scope_counts(scopes: &HashMap<(&'static str, String), Scope>) -> BTreeMap<String, (u64, u64)> {
    let mut counts: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for ((kind, _), scope) in scopes {
        let names: Vec<&str> = match &scope.reported {
            Some((_, listed, _)) => listed.iter().map(|c| c.category.as_str()).collect(),
            None => vec!["ordinary"],
        };
        for c in names {
            let e = counts.entry(c.to_string()).or_default();
            if *kind == "tree" { e.0 += 1 } else { e.1 += 1 }
        }
    }
    counts
}

/// A record the classifier writes, with the envelope of the record that caused it.
fn envelope(cause: &Value, kind: &str, body: &str, value: Value) -> Value {
    let mut out = serde_json::json!({
        "schema": crate::output::record::SCHEMA_VERSION,
        "kind": kind,
        "host": cause.get("host").cloned().unwrap_or(Value::Null),
        "time": cause.get("time").cloned().unwrap_or(Value::Null),
        "mono_ns": cause.get("mono_ns").cloned().unwrap_or(Value::Null),
    });
    out[body] = value;
    out
}

/// The tree (session) and, when it has one, the container of a process.
fn scope_keys(process: &Value) -> Vec<(&'static str, String)> {
    let mut keys = Vec::new();
    let session = u(process, &["session"]).or_else(|| u(process, &["pid"]));
    if let Some(sid) = session {
        keys.push(("tree", sid.to_string()));
    }
    if let Some(c) = s(process, &["container_id"]) {
        keys.push(("container", c.to_string()));
    }
    keys
}

fn any_port(list: &Option<Vec<u16>>, port: Option<u64>) -> Option<String> {
    let (list, port) = (list.as_ref()?, port?);
    list.iter().any(|p| u64::from(*p) == port).then(|| format!("port {port}"))
}

fn any_glob(list: &Option<Vec<String>>, names: &[&str]) -> Option<String> {
    let list = list.as_ref()?;
    names.iter().find(|n| list.iter().any(|p| glob(p, n))).map(|n| (*n).to_string())
}

/// Whether `ind` matches this record: every key it names must apply to the
/// record's kind and hold. Returns what matched, for the evidence.
fn matches(ind: &Indicator, kind: &str, r: &Value, state: &mut ProcessState) -> Option<String> {
    let m = &ind.when;
    let mut seen = Vec::new();
    let fb = &r["first_bytes"];
    // A peer's first message says what the process serves, not what it
    // does: only indicators that ask for it see one.
    let inbound = kind == "network.first_bytes" && fb["direction"] == "inbound";
    if inbound != (m.first_bytes_inbound == Some(true)) {
        return None;
    }
    if let Some(protocols) = &m.first_bytes_protocol {
        let p = (kind == "network.first_bytes").then(|| s(fb, &["protocol"])).flatten()?;
        protocols.iter().any(|x| x == p).then_some(())?;
        let detail = s(fb, &["detail"]).map(|d| format!(" {d}")).unwrap_or_default();
        seen.push(match inbound {
            true => format!("a peer sent {p}{detail} on a connection it accepted"),
            false => format!("protocol {p}{detail}"),
        });
    }
    if let Some(want) = m.first_bytes_mining {
        (kind == "network.first_bytes" && fb["mining"].as_bool() == Some(want)).then_some(())?;
        seen.push(format!(
            "{} {} to {}:{}",
            s(fb, &["protocol"]).unwrap_or("?"),
            s(fb, &["detail"]).unwrap_or(""),
            s(fb, &["address"]).unwrap_or("?"),
            u(fb, &["port"]).unwrap_or(0)
        ));
    }
    if let Some(needles) = &m.agent_contains {
        let agent = (kind == "network.first_bytes").then(|| s(fb, &["agent"])).flatten()?;
        let n = needles.iter().find(|n| agent.contains(n.as_str()))?;
        seen.push(format!("agent {agent:?} ({n})"));
    }
    if m.tls_sni.is_some() {
        let sni = (kind == "network.first_bytes" && s(fb, &["protocol"]) == Some("tls"))
            .then(|| s(fb, &["detail"]))
            .flatten()?;
        seen.push(format!("SNI {}", any_glob(&m.tls_sni, &[sni])?));
    }
    if let Some(prints) = &m.ja4 {
        let ja4 = (kind == "network.first_bytes").then(|| s(fb, &["tls", "ja4"])).flatten()?;
        prints.iter().any(|p| p == ja4).then_some(())?;
        seen.push(format!("TLS fingerprint JA4 {ja4}"));
    }
    if m.tls_no_sni == Some(true) {
        // TLS over TCP only: libp2p's QUIC hello omits the name by design.
        let tcp_tls = kind == "network.first_bytes" && s(fb, &["protocol"]) == Some("tls");
        let hello = tcp_tls.then(|| fb["tls"].as_object()).flatten()?;
        hello.get("sni").is_none().then_some(())?;
        seen.push(format!(
            "TLS with no server name to {}:{}",
            s(fb, &["address"]).unwrap_or("?"),
            u(fb, &["port"]).unwrap_or(0)
        ));
    }
    // With a CPU condition, the rounding mode is one more condition of its
    // streak: a node verifying a block changes the mode for a moment, a
    // miner for as long as it hashes.
    let streaked = m.cpu_cores.is_some() || m.cpu_share_pct.is_some();
    let mut fpu_held = true;
    if let Some(min) = m.fpu_rounding_saves {
        let n = (kind == "process.activity")
            .then(|| u(r, &["activity", "cpu", "fpu_rounding_saves"]))
            .flatten()
            .unwrap_or(0);
        fpu_held = n >= min.max(1);
        if !streaked {
            fpu_held.then_some(())?;
            seen.push(format!("{n} FPU saves with the SSE rounding mode changed (RandomX) in one report"));
        }
    }
    if m.randomx_memory == Some(true) || m.randomx_size.is_some() {
        let what =
            (kind == "process.activity").then(|| s(r, &["activity", "memory", "randomx_sized"])).flatten()?;
        m.randomx_size.as_ref().is_none_or(|want| want == what).then_some(())?;
        let size = if what == "dataset" { "2080 MiB" } else { "256 MiB" };
        seen.push(format!("a private anonymous mapping of RandomX's {what} size ({size})"));
    }
    if m.anon_exec_memory == Some(true) {
        let kib =
            (kind == "process.activity").then(|| u(r, &["activity", "memory", "anon_exec_kib"])).flatten()?;
        seen.push(format!("{kib} KiB of anonymous memory writable and executable at once"));
    }
    let exe = &r["executable"];
    let is_exe = kind == "process.executable";
    if let Some(min) = m.exe_miner_strings {
        let found: Vec<&str> = is_exe
            .then(|| exe["miner_strings"].as_array())
            .flatten()?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        (found.len() >= min.max(1)).then_some(())?;
        seen.push(format!(
            "{} contains miner code ({} strings: {})",
            s(exe, &["path"]).unwrap_or("?"),
            found.len(),
            found.iter().take(6).map(|f| format!("{f:?}")).collect::<Vec<_>>().join(", ")
        ));
    }
    if m.exe_packed == Some(true) {
        let packer = is_exe.then(|| s(exe, &["packer"])).flatten()?;
        seen.push(format!("{} is packed ({packer})", s(exe, &["path"]).unwrap_or("?")));
    }
    if m.exe_memfd == Some(true) {
        (is_exe && exe["memfd"].as_bool() == Some(true)).then_some(())?;
        seen.push(format!("runs from memory, no file: {}", s(exe, &["path"]).unwrap_or("?")));
    }
    if m.exe_deleted == Some(true) {
        (is_exe && exe["deleted"].as_bool() == Some(true)).then_some(())?;
        seen.push(format!("its executable was deleted: {}", s(exe, &["path"]).unwrap_or("?")));
    }
    if m.dns_name.is_some() {
        let names: Vec<&str> = match kind {
            "network.dns" => r["dns"]["questions"]
                .as_array()
                .map(|q| q.iter().filter_map(|q| q["name"].as_str()).collect())
                .unwrap_or_default(),
            "network.connect" => s(r, &["connect", "dns_name"]).into_iter().collect(),
            "network.first_bytes" => s(fb, &["dns_name"]).into_iter().collect(),
            _ => Vec::new(),
        };
        seen.push(format!("name {}", any_glob(&m.dns_name, &names)?));
    }
    if m.remote_port.is_some() {
        let port = match kind {
            "network.connect" => u(r, &["connect", "port"]),
            "network.first_bytes" => u(fb, &["port"]),
            _ => None,
        };
        seen.push(format!("connect to {}", any_port(&m.remote_port, port)?));
    }
    if m.listen_port.is_some() {
        let port = (kind == "network.listen").then(|| u(r, &["listen", "port"])).flatten();
        seen.push(format!("listens on {}", any_port(&m.listen_port, port)?));
    }
    if m.listens == Some(true) {
        let port = (kind == "network.listen").then(|| u(r, &["listen", "port"])).flatten()?;
        seen.push(format!("listens on port {port}"));
    }
    if let Some(names) = &m.exe_name {
        let exe = (kind == "process.exec").then(|| s(r, &["process", "exe"])).flatten()?;
        let base = basename(exe);
        names.iter().any(|n| n == base).then_some(())?;
        seen.push(format!("exe {exe}"));
    }
    if let Some(needles) = &m.argv_contains {
        let argv = (kind == "process.exec").then(|| r["process"]["argv"].as_array()).flatten()?;
        let line = argv.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" ");
        let n = needles.iter().find(|n| line.contains(n.as_str()))?;
        seen.push(format!("argv contains {n:?}"));
    }
    if let Some(min) = m.gpu_compute_contexts {
        (kind == "process.activity" && state.gpu_contexts >= min.max(1)).then_some(())?;
        seen.push(format!("{} GPU compute contexts", state.gpu_contexts));
    }
    if let Some(min) = m.gpu_memory_bytes {
        (kind == "process.activity" && state.gpu_bytes >= min.max(1)).then_some(())?;
        seen.push(format!("{} MiB of GPU memory", state.gpu_bytes >> 20));
    }
    if m.cpu_share_pct.is_some() || m.cpu_cores.is_some() {
        if kind != "process.activity" {
            return None;
        }
        let a = &r["activity"];
        let share = f(a, &["cpu", "host_share_pct"]).unwrap_or(0.0);
        let cpu_s = f(a, &["cpu", "time_ms"]).unwrap_or(0.0) / 1000.0;
        // Captures from before `cores` was recorded: from the interval.
        let cores = f(a, &["cpu", "cores"])
            .or_else(|| f(a, &["interval_s"]).filter(|i| *i > 0.0).map(|i| cpu_s / i))
            .unwrap_or(0.0);
        // Syscalls where counted (--syscalls); else the waits (switches
        // that were not preemptions), which a syscall-heavy process makes
        // on many of its syscalls and a hashing loop almost never.
        let (per, unit) = match u(a, &["syscalls", "count"]) {
            Some(n) => (Some(n), "syscalls"),
            None => (u(a, &["cpu", "waits"]), "waits"),
        };
        let rate = match per {
            Some(n) if cpu_s > 0.0 => n as f64 / cpu_s,
            _ => f64::INFINITY,
        };
        let max_rate = m.syscalls_per_cpu_second.unwrap_or(f64::INFINITY);
        let needed = m.intervals.unwrap_or(1);
        let busy =
            m.cpu_share_pct.is_none_or(|min| share >= min) && m.cpu_cores.is_none_or(|min| cores >= min);
        // A long-lived connection with little on it: a pool's jobs and shares.
        let quiet = m.quiet_peer_bytes.is_none_or(|max| {
            state.peers_now.iter().any(|(peer, bytes)| {
                (1..=max).contains(bytes)
                    && state.peers_before.get(peer).is_some_and(|b| (1..=max).contains(b))
            })
        });
        let streak = state.streaks.entry(ind.id.clone()).or_default();
        *streak = if busy && quiet && fpu_held && rate <= max_rate { streak.saturating_add(1) } else { 0 };
        if *streak < needed {
            return None;
        }
        let with = match (m.quiet_peer_bytes.is_some(), m.fpu_rounding_saves.is_some()) {
            (true, _) => ", with a long-lived quiet connection,",
            (_, true) => ", changing the SSE rounding mode (RandomX),",
            _ => "",
        };
        seen.push(format!(
            "{cores:.2} cores ({share:.0} % of host CPU) at {rate:.0} {unit} per CPU-second{with} for {needed} reports"
        ));
    }
    if let Some(min) = m.distinct_peers {
        let peers =
            (kind == "process.activity").then(|| r["activity"]["network"]["peers"].as_array()).flatten()?;
        let ports = m.peer_ports.as_deref().unwrap_or(&[]);
        let n = peers
            .iter()
            .filter(|p| p["address"].is_string())
            .filter(|p| {
                ports.is_empty()
                    || p["port"].as_u64().is_some_and(|x| ports.iter().any(|q| u64::from(*q) == x))
            })
            .count();
        (n >= min).then_some(())?;
        seen.push(format!("{n} peers on peer-to-peer ports"));
    }
    if let Some(suffixes) = &m.file_suffix {
        let path = (kind == "file.open").then(|| s(r, &["file", "path"])).flatten()?;
        // Weights told by their content stand for their format's suffix.
        let format = s(r, &["file", "format"]);
        let as_if = format.and_then(crate::process::open_files::format_suffix);
        let suffix = suffixes.iter().find(|x| path.ends_with(x.as_str()) || as_if == Some(x.as_str()))?;
        match format {
            Some(f) if !path.ends_with(suffix.as_str()) => {
                seen.push(format!("opened {path} ({f} weights by their content)"))
            }
            _ => seen.push(format!("opened {path} ({suffix})")),
        }
    }
    if let Some(formats) = &m.file_format {
        let path = (kind == "file.open").then(|| s(r, &["file", "path"])).flatten()?;
        let format = s(r, &["file", "format"]).filter(|f| formats.iter().any(|x| x == f))?;
        // Where the format alone is common (LMDB, LevelDB), the rule asks
        // for a node's own data layout too.
        if let Some(parts) = &m.file_path_contains {
            parts.iter().any(|p| path.contains(p.as_str())).then_some(())?;
        }
        seen.push(format!("holds {path} ({format} by its content)"));
    }
    if let Some(write) = m.file_write {
        (kind == "file.open" && r["file"]["write"].as_bool() == Some(write)).then_some(())?;
    }
    if let Some(min) = m.hugetlb_mmaps {
        (kind == "process.activity").then_some(())?;
        // The mmaps where the syscall hooks count them; else the huge-page
        // memory the process's map shows.
        match (u(r, &["activity", "hugetlb_mmaps"]), u(r, &["activity", "memory", "hugetlb_kib"])) {
            (Some(n), _) if n >= min.max(1) => seen.push(format!("{n} huge-page mmaps")),
            (_, Some(kib)) if kib > 0 => {
                seen.push(format!("{} MiB mapped in explicit huge pages", kib >> 10))
            }
            _ => return None,
        }
    }
    if let Some(prefixes) = &m.library {
        let libs =
            (kind == "process.activity").then(|| r["activity"]["ml_libraries"].as_array()).flatten()?;
        let lib = libs
            .iter()
            .filter_map(Value::as_str)
            .find(|l| prefixes.iter().any(|p| l.starts_with(p.as_str())))?;
        seen.push(format!("maps {lib}"));
    }
    if let Some(want) = m.hidden_from_proc {
        (r["process"]["hidden_from_proc"].as_bool().unwrap_or(false) == want).then_some(())?;
        seen.push(format!("{} hidden from /proc", r["process"]["pid"]));
    }
    (!seen.is_empty()).then(|| seen.join("; "))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn proc(pid: u64, session: u64) -> Value {
        json!({"entity_id": format!("b:1:{pid}"), "pid": pid, "comm": "backup", "exe": "/usr/bin/backup",
               "session": session, "cgroup": "/", "container_id": null})
    }

    fn rec(kind: &str, pid: u64, session: u64, time: &str, body: (&str, Value)) -> Value {
        let mut r = json!({"schema": "tracer.v1", "kind": kind, "host": "h", "time": time, "mono_ns": 1,
                           "process": proc(pid, session)});
        r[body.0] = body.1;
        r
    }

    fn classifier() -> Classifier {
        Classifier::new(Rules::load(None).unwrap())
    }

    #[test]
    fn a_mining_protocol_is_a_verdict_with_its_evidence() {
        let mut c = classifier();
        let out = c.observe(&rec(
            "network.first_bytes",
            10,
            10,
            "t1",
            (
                "first_bytes",
                json!({"protocol": "stratum", "mining": true, "detail": "mining.subscribe",
                                   "address": "10.0.0.1", "port": 443}),
            ),
        ));
        assert_eq!(out.len(), 1);
        let v = &out[0]["classification"];
        assert_eq!(v["category"], "crypto_mining");
        assert_eq!(v["scope"], "tree");
        assert_eq!(v["key"], "10");
        assert!(v["confidence"].as_f64().unwrap() > 0.9);
        assert_eq!(v["evidence"][0]["indicator"], "mining-protocol");
        assert_eq!(v["evidence"][0]["seen"], "stratum mining.subscribe to 10.0.0.1:443");
        assert_eq!(out[0]["time"], "t1", "a verdict carries the time of the record that caused it");
        // The same evidence again changes nothing: no new record.
        let again = c.observe(&rec(
            "network.first_bytes",
            11,
            10,
            "t2",
            (
                "first_bytes",
                json!({"protocol": "stratum", "mining": true, "detail": "mining.submit", "port": 443}),
            ),
        ));
        assert!(again.is_empty());
    }

    #[test]
    fn hiding_from_proc_is_weak_alone_and_counts_with_other_mining_evidence() {
        let mut c = classifier();
        let mut exec = rec("process.exec", 30, 30, "t", ("exec", json!({})));
        exec["process"]["hidden_from_proc"] = json!(true);
        assert!(c.observe(&exec).is_empty(), "a rootkit hides other things than miners too");
        exec["process"]["argv"] = json!(["/tmp/x", "-o", "stratum+tcp://pool:3333"]);
        let out = c.observe(&exec);
        assert_eq!(out.len(), 1, "{out:?}");
        let v = &out[0]["classification"];
        assert_eq!(v["category"], "crypto_mining");
        let ids: Vec<&str> =
            v["evidence"].as_array().unwrap().iter().filter_map(|e| e["indicator"].as_str()).collect();
        assert_eq!(ids, ["hidden-from-proc", "stratum-url"]);
        assert_eq!(v["evidence"][0]["seen"], "30 hidden from /proc");
    }

    #[test]
    fn names_and_ports_alone_are_not_a_verdict() {
        let mut c = classifier();
        let exec = rec("process.exec", 20, 20, "t", ("exec", json!({})));
        let mut exec = exec;
        exec["process"]["exe"] = json!("/tmp/xmrig");
        assert!(c.observe(&exec).is_empty());
        assert!(
            c.observe(&rec("network.connect", 20, 20, "t", ("connect", json!({"port": 3333})))).is_empty()
        );
        // Behaviour alone (a benchmark) is not either, however long it lasts.
        for _ in 0..10 {
            let a = rec(
                "process.activity",
                21,
                21,
                "t",
                (
                    "activity",
                    json!({"cpu": {"time_ms": 2000.0, "host_share_pct": 100.0, "cores": 1.0}, "syscalls": {"count": 3}}),
                ),
            );
            assert!(c.observe(&a).is_empty());
        }
        // Weak name plus behaviour plus a pool port: now it is.
        let mut verdicts = Vec::new();
        for _ in 0..3 {
            verdicts.extend(c.observe(&rec(
                "process.activity",
                20,
                20,
                "t",
                (
                    "activity",
                    json!({"cpu": {"time_ms": 2000.0, "host_share_pct": 100.0, "cores": 1.0}, "syscalls": {"count": 3}}),
                ),
            )));
        }
        assert_eq!(verdicts.len(), 1, "{verdicts:#?}");
        assert_eq!(verdicts[0]["classification"]["category"], "crypto_mining");
    }

    #[test]
    fn a_training_job_that_also_mines_gets_both_categories() {
        let mut c = classifier();
        let exec = |pid, argv: Value| {
            let mut r = rec("process.exec", pid, 40, "t", ("exec", json!({})));
            r["process"]["argv"] = argv;
            r
        };
        let listen = rec("network.listen", 41, 40, "t2", ("listen", json!({"port": 29500})));
        let mut out = c.observe(&exec(41, json!(["python3", "train.py"])));
        out.extend(c.observe(&listen));
        let v = &out.last().unwrap()["classification"];
        assert_eq!(v["category"], "ai_training");
        assert_eq!(v["alert"], false, "training alone calls for no attention: {v:#}");
        assert_eq!(v["categories"].as_array().unwrap().len(), 1);
        // A second process of the tree mines.
        let out = c.observe(&rec(
            "network.first_bytes",
            42,
            40,
            "t3",
            (
                "first_bytes",
                json!({"protocol": "xmrig-stratum", "mining": true, "detail": "login", "port": 443}),
            ),
        ));
        let v = &out[0]["classification"];
        let cats: Vec<&str> =
            v["categories"].as_array().unwrap().iter().filter_map(|c| c["category"].as_str()).collect();
        assert_eq!(cats, ["crypto_mining", "ai_training"], "{v:#}");
        assert_eq!(v["category"], "crypto_mining", "the clearly stronger category leads");
        assert_eq!(v["alert"], true);
        assert_eq!(v["categories"][0]["indicators"], json!(["mining-protocol"]));
        assert_eq!(v["categories"][0]["alert"], true);
        assert_eq!(v["categories"][1]["alert"], false);
        assert_eq!(v["categories"][1]["indicators"], json!(["ml-command-line", "torch-rendezvous-listen"]));
        assert!(v["categories"][1]["confidence"].as_f64().unwrap() > 0.5);
    }

    #[test]
    fn a_node_is_a_verdict_without_an_alert() {
        let mut c = classifier();
        let out = c.observe(&rec(
            "network.first_bytes",
            50,
            50,
            "t",
            ("first_bytes", json!({"protocol": "monero-levin", "mining": false, "detail": "handshake"})),
        ));
        // Speaking a chain's peer-to-peer protocol is a verdict by itself.
        let v = &out[0]["classification"];
        assert_eq!(v["category"], "blockchain_node");
        assert_eq!(v["alert"], false);
        assert_eq!(v["categories"][0]["category"], "blockchain_node");
    }

    #[test]
    fn what_peers_send_says_what_a_process_serves() {
        let mut c = classifier();
        let inbound = |pid, protocol: &str| {
            rec(
                "network.first_bytes",
                pid,
                pid,
                "t",
                ("first_bytes", json!({"protocol": protocol, "mining": false, "direction": "inbound"})),
            )
        };
        let v = &c.observe(&inbound(60, "monero-levin"))[0]["classification"];
        assert_eq!(v["category"], "blockchain_node");
        assert_eq!(v["evidence"][0]["indicator"], "chain-p2p-peer-inbound");
        let v = &c.observe(&inbound(61, "inference-api"))[0]["classification"];
        assert_eq!(v["category"], "ai_inference");
        let v = &c.observe(&inbound(62, "libp2p"))[0]["classification"];
        assert_eq!(v["category"], "distributed_storage");
        // Calling an inference API is not serving one.
        let mut out = inbound(63, "inference-api");
        out["first_bytes"]["direction"] = json!("outbound");
        assert!(c.observe(&out).is_empty());
        // A pool receiving a solo miner's request is not mining.
        let mut pool = inbound(64, "solo-mining-rpc");
        pool["first_bytes"]["mining"] = json!(true);
        assert!(c.observe(&pool).is_empty());
    }

    /// The rounding-mode signal as monerod showed it (Debian's 0.18 on
    /// regtest, three nodes, one mining): the verifying nodes change the
    /// mode in bursts of a few ms; the miner for report after report.
    #[test]
    fn a_node_verifying_blocks_is_not_a_miner_and_one_hashing_is() {
        let mut c = classifier();
        let report = |pid, cores: f64, saves: u64| {
            rec(
                "process.activity",
                pid,
                pid,
                "t",
                (
                    "activity",
                    json!({"interval_s": 5.0, "cpu": {"time_ms": cores * 5000.0, "cores": cores,
                                     "waits": 50, "fpu_rounding_saves": saves}}),
                ),
            )
        };
        let mut out = Vec::new();
        for (cores, saves) in [(0.201, 73), (0.013, 9), (0.0, 0), (0.013, 8), (0.012, 5), (0.2, 60)] {
            out.extend(c.observe(&report(70, cores, saves)));
        }
        assert!(out.is_empty(), "verification is not mining: {out:#?}");
        for (cores, saves) in [(1.166, 154), (0.938, 21)] {
            out.extend(c.observe(&report(71, cores, saves)));
        }
        let v = &out.last().expect("a verdict")["classification"];
        assert_eq!(v["category"], "crypto_mining");
        assert_eq!(v["evidence"][0]["indicator"], "fpu-rounding-mode");
    }

    /// The default rules, with executables named `backup` allowlisted.
    fn allowing_backup() -> Rules {
        let mut rules = Rules::load(None).unwrap();
        rules.allow.push(rules::Allow {
            id: "backups".into(),
            exe_name: vec!["backup".into()],
            ..Default::default()
        });
        rules
    }

    #[test]
    fn allowlisted_workloads_keep_their_verdict_without_alert() {
        let mut c = Classifier::new(allowing_backup());
        let out = c.observe(&rec(
            "network.first_bytes",
            30,
            30,
            "t",
            ("first_bytes", json!({"protocol": "stratum", "mining": true, "port": 3333})),
        ));
        let v = &out[0]["classification"];
        assert_eq!(v["allowlisted"], "backups");
        assert_eq!(v["alert"], false);
    }

    #[test]
    fn an_allowlisted_process_does_not_silence_its_session() {
        let mut c = Classifier::new(allowing_backup());
        assert!(c.observe(&rec("process.exec", 10, 10, "t1", ("exec", json!({})))).is_empty());
        let mut miner = rec(
            "network.first_bytes",
            11,
            10,
            "t2",
            ("first_bytes", json!({"protocol": "stratum", "mining": true, "port": 3333})),
        );
        miner["process"]["exe"] = json!("/tmp/.x/kworker");
        miner["process"]["comm"] = json!("kworker");
        let out = c.observe(&miner);
        assert_eq!(out.len(), 1, "{out:#?}");
        let v = &out[0]["classification"];
        assert_eq!(v["category"], "crypto_mining");
        assert_eq!(v["alert"], true, "{v:#}");
        assert!(v.get("allowlisted").is_none(), "{v:#}");
    }

    #[test]
    fn allowlisted_evidence_does_not_hide_the_same_evidence_from_another_process() {
        let mut c = Classifier::new(allowing_backup());
        let fb = || ("first_bytes", json!({"protocol": "stratum", "mining": true, "port": 3333}));
        let out = c.observe(&rec("network.first_bytes", 60, 60, "t1", fb()));
        assert_eq!(out[0]["classification"]["alert"], false);
        let score = out[0]["classification"]["scores"]["crypto_mining"].clone();
        let mut other = rec("network.first_bytes", 61, 60, "t2", fb());
        other["process"]["exe"] = json!("/usr/bin/python3");
        let out = c.observe(&other);
        assert_eq!(out.len(), 1, "{out:#?}");
        let v = &out[0]["classification"];
        assert_eq!(v["alert"], true, "{v:#}");
        assert!(v.get("allowlisted").is_none(), "{v:#}");
        assert_eq!(v["scores"]["crypto_mining"], score, "an indicator counts once: {v:#}");
        let evidence = v["evidence"].as_array().unwrap();
        assert_eq!(evidence[0]["allowlisted"], "backups");
        assert!(evidence.last().unwrap().get("allowlisted").is_none());
    }

    /// A GPU farm's container, declared as training.
    fn declaring_farm(hash: Option<&str>) -> Rules {
        let mut rules = Rules::load(None).unwrap();
        rules.declare.push(rules::Declare {
            id: "gpu-farm-7".into(),
            categories: vec!["ai_training".into()],
            when: rules::DeclareMatch {
                container_id: vec!["farm7".into()],
                exe_sha256: hash.map(|h| vec![h.to_string()]).unwrap_or_default(),
                ..Default::default()
            },
            comment: String::new(),
        });
        rules
    }

    fn in_farm(mut r: Value) -> Value {
        r["process"]["container_id"] = json!("farm7");
        r
    }

    fn training(pid: u64) -> [Value; 2] {
        let mut exec = in_farm(rec("process.exec", pid, 70, "t1", ("exec", json!({}))));
        exec["process"]["argv"] = json!(["python3", "train.py"]);
        [exec, in_farm(rec("network.listen", pid, 70, "t2", ("listen", json!({"port": 29500}))))]
    }

    fn mining(pid: u64) -> Value {
        rec(
            "network.first_bytes",
            pid,
            70,
            "t3",
            (
                "first_bytes",
                json!({"protocol": "xmrig-stratum", "mining": true, "detail": "login", "port": 443}),
            ),
        )
    }

    #[test]
    fn a_declared_workload_doing_what_it_declared_is_compliant() {
        let mut c = Classifier::new(declaring_farm(None));
        let out: Vec<Value> = training(71).iter().flat_map(|r| c.observe(r)).collect();
        let v = &out.iter().find(|o| o["classification"]["scope"] == "container").unwrap()["classification"];
        assert_eq!(v["category"], "ai_training");
        assert_eq!(v["alert"], false);
        assert_eq!(v["categories"][0]["declared"], "gpu-farm-7", "{v:#}");
        let cmp = &v["compliance"];
        assert_eq!(cmp["compliant"], true, "{v:#}");
        assert_eq!(cmp["summary"], "declared ai_training (gpu-farm-7), observed ai_training: compliant");
        assert_eq!(v["evidence"][0]["declared"], "gpu-farm-7");
    }

    #[test]
    fn a_declared_workload_that_also_mines_alerts_naming_both() {
        let mut c = Classifier::new(declaring_farm(None));
        for r in training(71) {
            c.observe(&r);
        }
        let out = c.observe(&in_farm(mining(72)));
        let v = &out.iter().find(|o| o["classification"]["scope"] == "container").unwrap()["classification"];
        assert_eq!(v["alert"], true, "{v:#}");
        let cmp = &v["compliance"];
        assert_eq!(cmp["compliant"], false);
        assert_eq!(cmp["summary"], "declared ai_training (gpu-farm-7), observed crypto_mining + ai_training");
        let mining =
            v["categories"].as_array().unwrap().iter().find(|c| c["category"] == "crypto_mining").unwrap();
        assert_eq!(mining["undeclared"], "gpu-farm-7");
        assert_eq!(mining["alert"], true);
        let train =
            v["categories"].as_array().unwrap().iter().find(|c| c["category"] == "ai_training").unwrap();
        assert_eq!(train["declared"], "gpu-farm-7");
        assert_eq!(train["alert"], false);
    }

    #[test]
    fn an_undeclared_category_alerts_even_when_it_is_not_mining() {
        let mut c = Classifier::new(declaring_farm(None));
        let peer = in_farm(rec(
            "network.first_bytes",
            73,
            70,
            "t",
            ("first_bytes", json!({"protocol": "monero-levin", "detail": "handshake", "port": 47180})),
        ));
        let out = c.observe(&peer);
        let v = &out.iter().find(|o| o["classification"]["scope"] == "container").unwrap()["classification"];
        assert_eq!(v["category"], "blockchain_node", "{v:#}");
        assert_eq!(v["alert"], true, "a node in a training farm is outside the declaration: {v:#}");
        assert_eq!(v["categories"][0]["undeclared"], "gpu-farm-7");
        // The same outside any declaration is a node, no alert.
        let mut c = Classifier::new(declaring_farm(None));
        let mut free = peer.clone();
        free["process"]["container_id"] = json!("elsewhere");
        let out = c.observe(&free);
        assert_eq!(out[0]["classification"]["alert"], false);
        assert!(out[0]["classification"].get("compliance").is_none());
    }

    #[test]
    fn a_declaration_by_hash_covers_evidence_found_before_the_hash_was_known() {
        let hash = "ab".repeat(32);
        let mut c = Classifier::new(declaring_farm(Some(&hash)));
        let [exec, listen] = training(71);
        c.observe(&exec);
        let out = c.observe(&listen);
        let v = &out.iter().find(|o| o["classification"]["scope"] == "container").unwrap()["classification"];
        assert!(v.get("compliance").is_none(), "not declared until the hash matches: {v:#}");
        // The executable's hash arrives: the same evidence is now the
        // declaration's, and the verdict says so.
        let mut report = in_farm(rec("process.activity", 71, 70, "t4", ("activity", json!({}))));
        report["process"]["exe_sha256"] = json!(hash.to_uppercase());
        let out = c.observe(&report);
        let v = &out.iter().find(|o| o["classification"]["scope"] == "container").unwrap()["classification"];
        assert_eq!(v["compliance"]["compliant"], true, "{v:#}");
        assert!(v["evidence"].as_array().unwrap().iter().all(|e| e["declared"] == "gpu-farm-7"), "{v:#}");
        // Another binary in the same container is not covered.
        let mut other = in_farm(mining(74));
        other["process"]["exe_sha256"] = json!("cd".repeat(32));
        let out = c.observe(&other);
        let v = &out.iter().find(|o| o["classification"]["scope"] == "container").unwrap()["classification"];
        assert_eq!(v["alert"], true);
        let mining =
            v["categories"].as_array().unwrap().iter().find(|c| c["category"] == "crypto_mining").unwrap();
        assert!(mining.get("undeclared").is_none(), "the miner is not the declared binary: {v:#}");
    }

    #[test]
    fn a_declaration_that_lists_mining_covers_it() {
        let mut rules = declaring_farm(None);
        rules.declare[0].categories.push("crypto_mining".into());
        let mut c = Classifier::new(rules);
        let out = c.observe(&in_farm(mining(75)));
        let v = &out.iter().find(|o| o["classification"]["scope"] == "container").unwrap()["classification"];
        assert_eq!(v["alert"], false, "{v:#}");
        assert_eq!(v["compliance"]["compliant"], true);
    }

    fn activity(pid: u64, session: u64, mono_ns: u64, cpu_ms: f64) -> Value {
        let mut r = rec(
            "process.activity",
            pid,
            session,
            "t",
            ("activity", json!({"cpu": {"time_ms": cpu_ms}, "network": {"tx_bytes": 10, "rx_bytes": 20}})),
        );
        r["mono_ns"] = json!(mono_ns);
        r
    }

    #[test]
    fn verdicts_and_host_summaries_say_what_each_category_used() {
        let mut c = classifier().with_summaries(std::time::Duration::from_secs(10));
        let s = 1_000_000_000;
        // A miner (session 80) and an ordinary process (81).
        c.observe(&activity(80, 80, s, 2000.0));
        c.observe(&activity(81, 81, 2 * s, 500.0));
        let mut login = rec(
            "network.first_bytes",
            80,
            80,
            "t",
            (
                "first_bytes",
                json!({"protocol": "xmrig-stratum", "mining": true, "detail": "login", "port": 443}),
            ),
        );
        login["mono_ns"] = json!(3 * s);
        let out = c.observe(&login);
        let v = &out[0]["classification"];
        assert_eq!(v["usage"]["by_category"]["crypto_mining"]["cpu_seconds"], 2.0, "{v:#}");
        assert_eq!(v["usage"]["total"]["rx_bytes"], 20);
        c.observe(&activity(80, 80, 4 * s, 1000.0));
        // The miner exits; its final account comes after the exit, when its
        // tree has ended, and is still the mining's.
        let mut exit = rec("process.exit", 80, 80, "t", ("exit", json!({"code": 0})));
        exit["mono_ns"] = json!(5 * s);
        c.observe(&exit);
        c.observe(&activity(80, 80, 5 * s, 250.0));
        let out = c.observe(&activity(81, 81, 12 * s, 100.0));
        assert_eq!(out.len(), 1, "{out:#?}");
        let summary = &out[0];
        assert_eq!(summary["kind"], "host.summary");
        let body = &summary["summary"];
        assert_eq!(body["interval_s"], 11.0, "from the first record");
        let cat = |name: &str| {
            body["categories"].as_array().unwrap().iter().find(|c| c["category"] == name).unwrap().clone()
        };
        // Use before the verdict was ordinary when it was reported.
        assert_eq!(cat("crypto_mining")["interval"]["cpu_seconds"], 1.25, "{body:#}");
        assert_eq!(cat("ordinary")["interval"]["cpu_seconds"], 2.5);
        assert_eq!(cat("crypto_mining")["cpu_share_pct"], 33.333);
        assert_eq!(body["total"]["cpu_seconds"], 3.75);
        // The summary came before the record that ended the interval.
        assert_eq!(cat("ordinary")["since_start"]["cpu_seconds"], 2.5);
    }

    #[test]
    fn a_reused_session_id_inherits_nothing() {
        let mut c = classifier();
        let out = c.observe(&rec(
            "network.first_bytes",
            4242,
            4242,
            "t1",
            ("first_bytes", json!({"protocol": "stratum", "mining": true, "port": 3333})),
        ));
        assert_eq!(out[0]["classification"]["category"], "crypto_mining");
        c.observe(&rec("process.exit", 4242, 4242, "t2", ("exit", json!({"code": 0}))));
        // The pid comes round again as the leader of an unrelated session.
        let mut listen = rec("network.listen", 4242, 4242, "t3", ("listen", json!({"port": 8080})));
        listen["process"]["entity_id"] = json!("b:2:4242");
        let out = c.observe(&listen);
        assert!(out.iter().all(|v| v["classification"]["category"] != "crypto_mining"), "{out:#?}");
    }

    #[test]
    fn a_session_outlives_its_leader_while_members_run() {
        let mut c = classifier();
        let fb = ("first_bytes", json!({"protocol": "stratum", "mining": true, "port": 3333}));
        c.observe(&rec("network.first_bytes", 4243, 4242, "t1", fb));
        c.observe(&rec("process.exit", 4242, 4242, "t2", ("exit", json!({"code": 0}))));
        // The miner, left behind by its shell, is still the same session.
        let out = c.observe(&rec("network.listen", 4243, 4242, "t3", ("listen", json!({"port": 8080}))));
        assert_eq!(out.len(), 1, "{out:#?}");
        assert_eq!(out[0]["classification"]["category"], "crypto_mining");
        let evidence = out[0]["classification"]["evidence"].as_array().unwrap();
        assert_eq!(evidence[0]["indicator"], "mining-protocol");
        assert_eq!(evidence.last().unwrap()["indicator"], "serves");
    }

    #[test]
    fn classifier_tables_stay_bounded() {
        let mut c = classifier();
        let second = 1_000_000_000u64;
        for i in 0..5000u64 {
            let (pid, t) = (100_000 + i, i * second);
            let fb = ("first_bytes", json!({"protocol": "stratum", "mining": i % 7 == 0, "port": 3333}));
            let activity = (
                "activity",
                json!({"cpu": {"time_ms": 5.0, "host_share_pct": 1.0}, "syscalls": {"count": 9}}),
            );
            for (kind, body) in [
                ("process.exec", ("exec", json!({}))),
                ("network.first_bytes", fb),
                ("process.exit", ("exit", json!({"code": 0}))),
                // The final account comes after the exit.
                ("process.activity", activity.clone()),
            ] {
                let mut r = rec(kind, pid, pid, "t", body);
                r["mono_ns"] = json!(t);
                c.observe(&r);
            }
            // A process whose exit record was lost.
            let mut r = rec("process.activity", pid + 500_000, 7, "t", activity);
            r["mono_ns"] = json!(t);
            c.observe(&r);
        }
        let mut r = rec("network.listen", 9, 9, "t", ("listen", json!({"port": 8080})));
        r["mono_ns"] = json!(5000 * second + 2 * PROCESS_TTL_NS);
        c.observe(&r);
        let (scopes, processes) = c.tables();
        assert!(scopes <= 2 && processes <= 2, "{scopes} scopes, {processes} processes");
    }

    #[test]
    fn verdicts_are_stable_against_a_weaker_category() {
        // Weights chosen so that only the margin decides: mining at 1.2,
        // then a rival at 1.5 (leads, but by less than the 0.5 margin),
        // then at 1.8 (leads by 0.6).
        let rules = Rules::parse(
            "verdict_score = 1.0\nstable_margin = 0.5\n\
             [[indicator]]\nid='t-mine'\ncategory='crypto_mining'\nweight=1.2\nwhat='w'\nmatch={remote_port=[3333]}\n\
             [[indicator]]\nid='t-ai-a'\ncategory='ai_training'\nweight=1.5\nwhat='w'\nmatch={listen_port=[29500]}\n\
             [[indicator]]\nid='t-ai-b'\ncategory='ai_training'\nweight=0.3\nwhat='w'\nmatch={listen_port=[29501]}\n",
            "test",
        )
        .unwrap();
        let mut c = Classifier::new(rules);
        let verdicts = |out: Vec<Value>| -> Vec<(String, Value)> {
            out.iter()
                .map(|v| {
                    let c = &v["classification"];
                    (c["category"].as_str().unwrap().to_string(), c["previous"].clone())
                })
                .collect()
        };
        let first = c.observe(&rec("network.connect", 40, 40, "t", ("connect", json!({"port": 3333}))));
        assert_eq!(verdicts(first), [("crypto_mining".to_string(), Value::Null)]);
        // The rival leads by 0.3: the verdict stays, re-reported with the
        // new evidence.
        let second = c.observe(&rec("network.listen", 40, 40, "t", ("listen", json!({"port": 29500}))));
        assert_eq!(verdicts(second), [("crypto_mining".to_string(), Value::Null)]);
        // Now by 0.6: it flips, and says what it was.
        let third = c.observe(&rec("network.listen", 40, 40, "t", ("listen", json!({"port": 29501}))));
        assert_eq!(verdicts(third), [("ai_training".to_string(), json!("crypto_mining"))]);
    }

    #[test]
    fn a_container_learned_late_gets_the_evidence_its_processes_gave_before() {
        let mut c = classifier();
        // The login comes before the tracer has resolved the new cgroup.
        let login = rec(
            "network.first_bytes",
            51,
            51,
            "t",
            ("first_bytes", json!({"protocol": "xmrig-stratum", "mining": true, "port": 443})),
        );
        let out = c.observe(&login);
        assert_eq!(out.len(), 1, "the tree's verdict only: {out:#?}");
        let mut later = rec("process.activity", 51, 51, "t2", ("activity", json!({})));
        later["process"]["container_id"] = json!("c0ffee");
        let out = c.observe(&later);
        let v = &out
            .iter()
            .find(|o| o["classification"]["scope"] == "container")
            .expect("a container verdict")["classification"];
        assert_eq!(v["category"], "crypto_mining", "{v:#}");
        assert_eq!(v["evidence"][0]["indicator"], "mining-protocol");
    }

    #[test]
    fn containers_get_their_own_verdict() {
        let mut c = classifier();
        let mut r = rec(
            "network.first_bytes",
            50,
            50,
            "t",
            ("first_bytes", json!({"protocol": "xmrig-stratum", "mining": true, "port": 443})),
        );
        r["process"]["container_id"] = json!("c0ffee");
        let out = c.observe(&r);
        let scopes: Vec<_> =
            out.iter().map(|v| v["classification"]["scope"].as_str().unwrap().to_string()).collect();
        assert_eq!(scopes, ["tree", "container"]);
    }
}
