//! Records of the fixed workload reduced to facts that must be the same on
//! every kernel: each record of a workload process, flattened to
//! `kind role path=value` lines, with what legitimately differs between
//! runs (pids, times, ids, CPU time, syscall counts, ephemeral ports) left
//! out. Activity is summed per process first, since where an interval
//! boundary falls differs from run to run.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::workload::{ARG0, BURN, REFUSED_PORT, TCP_PORT, UDP_PORT};

/// Keys whose values differ between runs and kernels by nature.
const VOLATILE: &[&str] = &[
    "time",
    "mono_ns",
    "host",
    "schema",
    "entity_id",
    "child_entity_id",
    "child_pid",
    "pid",
    "tid",
    "ppid",
    "session",
    "cgroup_id",
    "cgroup",
    "ancestors",
    "interval_s",
    "cpu_ms",
    "time_ms",
    "host_share_pct",
    "syscalls",
    "tx_calls",
    "rx_calls",
];

/// The workload role of a record's process, if it is one of the workload's.
fn role(record: &Value) -> Option<String> {
    let argv = record.pointer("/process/argv")?.as_array()?;
    (argv.first()?.as_str()? == ARG0).then(|| argv.get(2)?.as_str().map(str::to_string)).flatten()
}

/// Ports the workload fixes; any other is the kernel's choice.
fn stable_port(port: u64) -> bool {
    [TCP_PORT, REFUSED_PORT, UDP_PORT, 53].iter().any(|&p| u64::from(p) == port)
}

fn flatten(prefix: &str, value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if VOLATILE.contains(&k.as_str()) {
                    continue;
                }
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                if k == "port" && v.as_u64().is_some_and(|p| !stable_port(p)) {
                    out.push(format!("{path}=ephemeral"));
                } else {
                    flatten(&path, v, out);
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, out);
            }
        }
        leaf => out.push(format!("{prefix}={leaf}")),
    }
}

/// The process as far as it is the same everywhere: its executable's name
/// (paths differ between host and guest), comm, argv, uid.
fn process_facts(record: &Value) -> Vec<String> {
    let p = &record["process"];
    let exe = p["exe"].as_str().unwrap_or("").rsplit('/').next().unwrap_or("").to_string();
    vec![
        format!("exe={exe}"),
        format!("comm={}", p["comm"]),
        format!("argv={}", p["argv"]),
        format!("uid={}", p["uid"]),
    ]
}

/// Facts per (kind, role); the value is how many records gave the fact, so
/// a record reported twice, or once too few, is a difference.
pub fn facts(records: &[Value]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let mut activity: BTreeMap<String, Activity> = BTreeMap::new();
    for record in records {
        let (Some(kind), Some(role)) = (record["kind"].as_str(), role(record)) else { continue };
        if kind == "process.activity" {
            activity.entry(role).or_default().add(&record["activity"]);
            continue;
        }
        // Summaries of the tree and cgroup the workload sits in differ
        // between host and guest by what else runs there.
        if kind == "tree.activity" || kind == "container.activity" || kind == "tracer.health" {
            continue;
        }
        // The file's identity differs by nature (another file system, a
        // stripped copy), and which role is first to run the shared binary
        // (the one that gets the record) is a race.
        if kind == "process.executable" {
            continue;
        }
        let mut lines = process_facts(record);
        let body: Map<String, Value> = record
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "kind" | "process"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let mut body_lines = Vec::new();
        flatten("", &Value::Object(body), &mut body_lines);
        lines.extend(body_lines);
        // The exec filename is a path of the host or the guest.
        for line in &mut lines {
            if let Some(path) = line.strip_prefix("exec.filename=") {
                let name = path.trim_matches('"').rsplit('/').next().unwrap_or("").to_string();
                *line = format!("exec.filename={name}");
            }
        }
        if kind == "process.exit" && role == "burn" {
            let cpu = record.pointer("/exit/account/cpu_ms").and_then(Value::as_f64).unwrap_or(0.0);
            lines.push(format!("account.cpu_ms>={}", burn_floor_ms(cpu)));
        }
        *out.entry(format!("{kind} {role} {}", lines.join(" "))).or_insert(0) += 1;
    }
    for (role, a) in activity {
        for line in a.facts(&role) {
            *out.entry(format!("process.activity {role} {line}")).or_insert(0) += 1;
        }
    }
    out
}

/// The burner spins for `BURN`: on any kernel it is charged most of that.
fn burn_floor_ms(cpu_ms: f64) -> String {
    let floor = BURN.as_millis() as f64 * 0.6;
    if cpu_ms >= floor { format!("{floor}") } else { format!("{floor} NOT MET ({cpu_ms} ms)") }
}

/// A process's activity over the whole run.
#[derive(Default)]
struct Activity {
    tx: u64,
    rx: u64,
    cpu_ms: f64,
    /// (protocol, address, port) -> (tx, rx).
    peers: BTreeMap<(String, String, String), (u64, u64)>,
}

impl Activity {
    fn add(&mut self, a: &Value) {
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        self.tx += n(&a["network"]["tx_bytes"]);
        self.rx += n(&a["network"]["rx_bytes"]);
        self.cpu_ms += a["cpu"]["time_ms"].as_f64().unwrap_or(0.0);
        for peer in a["network"]["peers"].as_array().into_iter().flatten() {
            let port = peer["port"].as_u64().unwrap_or(0);
            let port = if stable_port(port) { port.to_string() } else { "ephemeral".into() };
            let key = (peer["protocol"].to_string(), peer["address"].to_string(), port);
            let e = self.peers.entry(key).or_default();
            e.0 += n(&peer["tx_bytes"]);
            e.1 += n(&peer["rx_bytes"]);
        }
    }

    fn facts(&self, role: &str) -> BTreeSet<String> {
        // A process with no traffic has no network facts: whether a
        // short-lived one gets an activity record at all depends on whether
        // the scheduler charged it CPU before it exited.
        let mut out = BTreeSet::new();
        if self.tx != 0 || self.rx != 0 || !self.peers.is_empty() {
            out.insert(format!("network.tx_bytes={} network.rx_bytes={}", self.tx, self.rx));
        }
        for ((proto, addr, port), (tx, rx)) in &self.peers {
            out.insert(format!(
                "peer protocol={proto} address={addr} port={port} tx_bytes={tx} rx_bytes={rx}"
            ));
        }
        if role == "burn" {
            out.insert(format!("cpu.time_ms>={}", burn_floor_ms(self.cpu_ms)));
        }
        out
    }
}

/// What one side has that the other lacks, as lines for a report.
pub struct Diff {
    pub expected: usize,
    pub matched: usize,
    pub missing: Vec<String>,
    pub extra: Vec<String>,
}

pub fn diff(expected: &BTreeMap<String, usize>, got: &BTreeMap<String, usize>) -> Diff {
    let mut d =
        Diff { expected: expected.values().sum(), matched: 0, missing: Vec::new(), extra: Vec::new() };
    for (fact, &n) in expected {
        let m = got.get(fact).copied().unwrap_or(0);
        d.matched += m.min(n);
        if m < n {
            d.missing.push(format!("{}× {fact}", n - m));
        }
    }
    for (fact, &m) in got {
        let n = expected.get(fact).copied().unwrap_or(0);
        if m > n {
            d.extra.push(format!("{}× {fact}", m - n));
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    const EXIT: &str = r#"{"kind":"process.exit","time":"t1","process":{"pid":7,"exe":"/a/xtask","comm":"xtask","uid":0,
        "argv":["vm-workload","vm-workload","short"]},"exit":{"code":3,"account":{"cpu_ms":1.5,"tx_bytes":0}}}"#;

    #[test]
    fn volatile_values_do_not_count_and_stable_ones_do() {
        let a = facts(&[rec(EXIT)]);
        let other_run =
            EXIT.replace("\"pid\":7", "\"pid\":9").replace("/a/xtask", "/bin/xtask").replace("1.5", "2.5");
        assert!(diff(&a, &facts(&[rec(&other_run)])).missing.is_empty());
        let wrong_code = EXIT.replace("\"code\":3", "\"code\":0");
        let d = diff(&a, &facts(&[rec(&wrong_code)]));
        assert_eq!((d.matched, d.missing.len(), d.extra.len()), (0, 1, 1));
        // A record the guest lost is missing; one it repeated is extra.
        assert_eq!(diff(&a, &BTreeMap::new()).missing.len(), 1);
        assert_eq!(diff(&a, &facts(&[rec(EXIT), rec(EXIT)])).extra.len(), 1);
    }

    #[test]
    fn activity_is_summed_per_process_and_ephemeral_ports_hidden() {
        let act = |tx: u64, port: u64| {
            rec(&format!(
                r#"{{"kind":"process.activity","process":{{"argv":["vm-workload","vm-workload","tcp-server"]}},
                "activity":{{"network":{{"tx_bytes":{tx},"rx_bytes":0,"peers":[{{"address":"127.0.0.1","port":{port},
                "protocol":"tcp","tx_bytes":{tx},"rx_bytes":0}}]}}}}}}"#
            ))
        };
        let one = facts(&[act(8192, 40000)]);
        let split = facts(&[act(4096, 51000), act(4096, 51000)]);
        let d = diff(&one, &split);
        assert!(d.missing.is_empty() && d.extra.is_empty(), "{:?} {:?}", d.missing, d.extra);
        assert!(!diff(&one, &facts(&[act(8000, 40000)])).missing.is_empty());
    }

    #[test]
    fn a_quiet_process_has_no_activity_facts_whether_or_not_it_was_reported() {
        let quiet =
            rec(r#"{"kind":"process.activity","process":{"argv":["vm-workload","vm-workload","short"]},
            "activity":{"cpu":{"time_ms":0.4},"network":{"tx_bytes":0,"rx_bytes":0}}}"#);
        assert!(facts(&[quiet]).is_empty());
    }
}
