//! Native records to the Elastic Common Schema (ECS 8.11).
//!
//! Field names and the event.kind/category/type values are ECS's own; what
//! ECS has no field for goes under `tracer.*`: the native schema version,
//! kind and monotonic time, the native body as it is (`tracer.connect`,
//! `tracer.activity`, …), and the process fields with no ECS home
//! (`tracer.process.cgroup`, `ancestors`, …). Network direction is the
//! host's point of view (ingress/egress), as ECS asks of host-based sources.

use super::{
    ECS_VERSION, ProcessPart,
    common::{
        alerting_category, array_at, at, attack_for, basename, body, bool_at, command_line, dirname,
        exit_code, extension, f64_at, ip_version, map_objects, object, put, put_at, some_str, some_u64,
        str_at, strings, strings_at, strip_nulls, u64_at, verdict_severity,
    },
    json::{Json, Obj},
};

/// What the record's process `p` gives the event: `process.*`,
/// `container.id` and `tracer.process.*`. The same for every kind but a
/// fork (whose child comes from `fork`, the record's body).
pub(super) fn process_part<'a>(kind: &str, p: &'a Json, fork: &'a Json) -> ProcessPart<'a> {
    let mut out = Obj::new();
    if kind == "process.fork" {
        self::fork(&mut out, p, fork);
    } else {
        self::process(&mut out, p);
    }
    ProcessPart { members: out, in_container: false }
}

/// Kinds whose process part is the same: only a fork's is its own.
pub(super) fn part_role(kind: &str) -> Option<u8> {
    (kind != "process.fork").then_some(0)
}

/// Everything of the event but its process part (written merged with it,
/// this winning where both have a value: see `Json::write_merged`).
pub(super) fn convert<'a>(record: &'a Json, _part: &ProcessPart) -> Obj<'a> {
    let mut out = Obj::new();
    put(&mut out, "ecs.version", Some(Json::from(ECS_VERSION)));
    put(&mut out, "event.module", Some(Json::from("tracer")));
    if !record.is_object() {
        put(&mut out, "event.kind", Some(Json::from("event")));
        put(&mut out, "tracer.original", strip_nulls(record));
        return out;
    }
    let kind = str_at(record, &["kind"]).unwrap_or_default();
    let c = categorize(kind, record);
    put(&mut out, "@timestamp", some_str(str_at(record, &["time"])));
    put(&mut out, "event.kind", Some(Json::from(c.kind)));
    put(&mut out, "event.category", strings(c.category));
    put(&mut out, "event.type", strings(c.types));
    put(&mut out, "event.action", some_str(c.action));
    // `tracer.<kind>`; the tracer's own kinds already carry the prefix.
    let dataset =
        if kind.starts_with("tracer.") { Json::from(kind) } else { format!("tracer.{kind}").into() };
    put(&mut out, "event.dataset", (!kind.is_empty()).then_some(dataset));
    put(&mut out, "host.name", some_str(str_at(record, &["host"])));
    put(&mut out, "tracer.schema", some_str(str_at(record, &["schema"])));
    put(&mut out, "tracer.kind", (!kind.is_empty()).then(|| Json::from(kind)));
    put(&mut out, "tracer.mono_ns", some_u64(u64_at(record, &["mono_ns"])));
    for (key, value) in body(record) {
        put_at(&mut out, &["tracer", key], strip_nulls(value));
    }
    let b = |name: &str| at(record, &[name]).unwrap_or(&Json::Null);
    match kind {
        "process.exit" => {
            put(&mut out, "process.exit_code", some_u64(exit_code(b("exit"))));
            put(&mut out, "process.end", some_str(str_at(record, &["time"])));
        }
        "network.connect" => connect(&mut out, b("connect")),
        "network.dns" => dns(&mut out, b("dns")),
        "network.first_bytes" => first_bytes(&mut out, b("first_bytes")),
        "network.listen" => {
            let l = b("listen");
            endpoint(&mut out, "server", str_at(l, &["address"]), u64_at(l, &["port"]), None);
            put(&mut out, "network.transport", Some(Json::from("tcp")));
        }
        "file.open" => {
            let path = str_at(b("file"), &["path"]);
            put(&mut out, "file.path", some_str(path));
            put(&mut out, "file.name", some_str(path.map(basename)));
            put(&mut out, "file.directory", some_str(path.and_then(dirname)));
            put(&mut out, "file.extension", some_str(path.and_then(extension)));
        }
        "process.executable" => {
            let e = b("executable");
            let path = str_at(e, &["path"]);
            put(&mut out, "file.path", some_str(path));
            put(&mut out, "file.name", some_str(path.map(basename)));
            put(&mut out, "file.directory", some_str(path.and_then(dirname)));
            put(&mut out, "file.size", some_u64(u64_at(e, &["size"])));
            put(&mut out, "file.inode", u64_at(e, &["inode"]).map(|i| Json::from(i.to_string())));
            put(&mut out, "file.device", u64_at(e, &["device"]).map(|d| Json::from(d.to_string())));
            put(&mut out, "file.mtime", at(e, &["mtime"]).and_then(Json::as_i64).and_then(epoch_rfc3339));
            put(&mut out, "file.hash.sha256", some_str(str_at(e, &["sha256"])));
            put(&mut out, "process.hash.sha256", some_str(str_at(e, &["sha256"])));
        }
        "tree.activity" => {
            let t = b("tree");
            put(&mut out, "process.session_leader.pid", some_u64(u64_at(t, &["sid"])));
            put(&mut out, "process.session_leader.entity_id", some_str(str_at(t, &["leader", "entity_id"])));
            put(&mut out, "process.session_leader.executable", some_str(str_at(t, &["leader", "exe"])));
        }
        "container.activity" => {
            put(&mut out, "container.id", some_str(str_at(b("container"), &["container_id"])));
        }
        "tracer.capture" => {
            put(&mut out, "host.os.kernel", some_str(str_at(b("capture"), &["kernel"])));
            put(&mut out, "host.boot.id", some_str(str_at(b("capture"), &["boot_id"])));
        }
        "classification" => classification(&mut out, b("classification")),
        _ => {}
    }
    out
}

/// ECS categorization of one native record.
struct Categorization {
    kind: &'static str,
    category: &'static [&'static str],
    types: &'static [&'static str],
    action: Option<&'static str>,
}

const fn c(
    kind: &'static str,
    category: &'static [&'static str],
    types: &'static [&'static str],
    action: &'static str,
) -> Categorization {
    Categorization { kind, category, types, action: Some(action) }
}

fn categorize(kind: &str, record: &Json) -> Categorization {
    match kind {
        "process.exec" => c("event", &["process"], &["start"], "exec"),
        // The child starting (ECS, like Elastic Defend, describes the new process).
        "process.fork" => c("event", &["process"], &["start"], "fork"),
        "process.exit" => c("event", &["process"], &["end"], "exit"),
        "network.connect" => c("event", &["network"], &["connection", "start"], "connect"),
        "network.dns" => {
            let action = match str_at(record, &["dns", "direction"]) {
                Some("query") => "dns-query",
                Some("response") => "dns-response",
                _ => "dns",
            };
            c("event", &["network"], &["protocol"], action)
        }
        "network.first_bytes" => c("event", &["network"], &["protocol"], "first-bytes"),
        // A server socket starting to accept connections.
        "network.listen" => c("event", &["network"], &["start"], "listen"),
        // Renames are reported at rename(2) entry, onto the watched path.
        "file.open" if bool_at(record, &["file", "renamed"]) == Some(true) => {
            c("event", &["file"], &["change"], "rename")
        }
        "file.open" => c("event", &["file"], &["access"], "open"),
        "process.executable" => c("event", &["file"], &["info"], "executable"),
        "gpu.open" => c("event", &["driver"], &["info"], "gpu-open"),
        "gpu.activity" => c("metric", &["driver"], &["info"], "gpu-activity"),
        "process.activity" => c("metric", &["process"], &["info"], "process-activity"),
        "tree.activity" => c("metric", &["process"], &["info"], "tree-activity"),
        "container.activity" => c("metric", &["process"], &["info"], "container-activity"),
        // ECS has no category for a sensor's own health; these describe the
        // kernel hooks on this host, and the capture header the host itself.
        "tracer.health" => c("metric", &["host"], &["info"], "health"),
        "tracer.capture" => c("state", &["host"], &["info"], "capture"),
        // The host's use by workload category over an interval.
        "host.summary" => c("metric", &["host"], &["info"], "summary"),
        "classification" => {
            let alert = bool_at(record, &["classification", "alert"]) == Some(true);
            c(if alert { "alert" } else { "event" }, &["intrusion_detection"], &["info"], "classification")
        }
        _ => Categorization { kind: "event", category: &[], types: &[], action: None },
    }
}

/// `process.*` fields of one native process, as seen in the ECS `process`
/// fieldset or its reuse under `process.parent`.
fn process_fields<'a>(p: &'a Json) -> Obj<'a> {
    let mut m = Obj::new();
    let argv = strings_at(p, &["argv"]);
    put(&mut m, "entity_id", some_str(str_at(p, &["entity_id"])));
    put(&mut m, "pid", some_u64(u64_at(p, &["pid"])));
    put(&mut m, "thread.id", some_u64(u64_at(p, &["tid"])));
    put(&mut m, "name", some_str(str_at(p, &["comm"])));
    put(&mut m, "executable", some_str(str_at(p, &["exe"])));
    put(&mut m, "args", strings(&argv));
    put(&mut m, "args_count", (!argv.is_empty()).then(|| Json::from(argv.len())));
    put(&mut m, "command_line", command_line(&argv).map(Json::from));
    // The native uid is the real uid (current_cred()->uid), not the effective one.
    put(&mut m, "real_user.id", u64_at(p, &["uid"]).map(|u| Json::from(u.to_string())));
    m
}

/// The process that acted, its parent, session and container.
fn process<'a>(out: &mut Obj<'a>, p: &'a Json) {
    let mut m = process_fields(p);
    let parent_pid = u64_at(p, &["ppid"]).or_else(|| u64_at(p, &["parent", "pid"]));
    put(&mut m, "parent.pid", some_u64(parent_pid));
    put(&mut m, "parent.entity_id", some_str(str_at(p, &["parent", "entity_id"])));
    put(&mut m, "parent.executable", some_str(str_at(p, &["parent", "exe"])));
    put(&mut m, "session_leader.pid", some_u64(u64_at(p, &["session"])));
    put(&mut m, "hash.sha256", some_str(str_at(p, &["exe_sha256"])));
    put(out, "process", object(m));
    put(out, "container.id", some_str(str_at(p, &["container_id"])));
    extras(out, p, &strings_at(p, &["ancestors"]));
}

/// A fork as the child's start: the child has the forking process's image,
/// arguments, user, session and cgroup; the forking process is its parent.
fn fork<'a>(out: &mut Obj<'a>, p: &'a Json, f: &'a Json) {
    let mut child = process_fields(p);
    for own in ["entity_id", "pid", "thread"] {
        child.remove(own);
    }
    put(&mut child, "entity_id", some_str(str_at(f, &["child_entity_id"])));
    put(&mut child, "pid", some_u64(u64_at(f, &["child_pid"])));
    put(&mut child, "session_leader.pid", some_u64(u64_at(p, &["session"])));
    put(&mut child, "parent", object(process_fields(p)));
    put(out, "process", object(child));
    put(out, "container.id", some_str(str_at(p, &["container_id"])));
    // The child's grandparent is the forking process's parent.
    let mut ancestors: Vec<&str> = str_at(p, &["parent", "entity_id"]).into_iter().collect();
    ancestors.extend(strings_at(p, &["ancestors"]));
    extras(out, p, &ancestors);
}

/// Process fields ECS has no home for.
fn extras<'a>(out: &mut Obj<'a>, p: &'a Json, ancestors: &[&'a str]) {
    put(out, "tracer.process.cgroup", some_str(str_at(p, &["cgroup"])));
    put(out, "tracer.process.cgroup_id", some_u64(u64_at(p, &["cgroup_id"])));
    put(out, "tracer.process.ancestors", strings(ancestors));
    let escaped = strings_at(p, &["escaped"]);
    put(out, "tracer.process.escaped", strings(&escaped));
    let truncated = bool_at(p, &["argv_truncated"]).filter(|t| *t);
    put(out, "tracer.process.argv_truncated", truncated.map(Json::from));
    // Evidence in itself (rootkits hide their pids from /proc).
    let hidden = bool_at(p, &["hidden_from_proc"]).filter(|h| *h);
    put(out, "tracer.process.hidden_from_proc", hidden.map(Json::from));
}

/// `<side>.ip/port/address/domain` and `network.type` for an endpoint; an
/// address that is not an IP is kept in `.address` only.
fn endpoint<'a>(
    out: &mut Obj<'a>,
    side: &'static str,
    addr: Option<&'a str>,
    port: Option<u64>,
    name: Option<&'a str>,
) {
    let version = addr.and_then(ip_version);
    put_at(out, &[side, "address"], some_str(addr));
    put_at(out, &[side, "ip"], some_str(addr.filter(|_| version.is_some())));
    put_at(out, &[side, "port"], some_u64(port));
    put_at(out, &[side, "domain"], some_str(name));
    put(out, "network.type", version.map(|v| Json::from(if v == 4 { "ipv4" } else { "ipv6" })));
}

fn connect<'a>(out: &mut Obj<'a>, c: &'a Json) {
    // Unix sockets have a path, not a network destination; it stays in tracer.connect.
    if matches!(str_at(c, &["family"]), Some("inet" | "inet6")) {
        endpoint(out, "destination", str_at(c, &["address"]), u64_at(c, &["port"]), str_at(c, &["dns_name"]));
        put(out, "network.direction", Some(Json::from("egress")));
    }
    put(out, "network.transport", some_str(str_at(c, &["protocol"])));
    let outcome = match str_at(c, &["result"]) {
        Some("ok") => Some("success"),
        // A non-blocking connect not finished yet, or a TCP open seen outside connect(2).
        Some("in_progress") => Some("unknown"),
        Some(_) => Some("failure"),
        None => None,
    };
    put(out, "event.outcome", some_str(outcome));
}

fn dns<'a>(out: &mut Obj<'a>, d: &'a Json) {
    // One exchange, host as client: the server is the destination either way.
    endpoint(out, "destination", str_at(d, &["server"]), u64_at(d, &["port"]), None);
    put(out, "network.protocol", Some(Json::from("dns")));
    put(out, "network.direction", Some(Json::from("egress")));
    let dns_type = match str_at(d, &["direction"]) {
        Some("query") => Some("query"),
        Some("response") => Some("answer"),
        _ => None,
    };
    put(out, "dns.type", some_str(dns_type));
    put(out, "dns.id", u64_at(d, &["id"]).map(|id| Json::from(id.to_string())));
    // ECS has one question per event; all of them stay in tracer.dns.
    put(out, "dns.question.name", some_str(first_question(d, "name")));
    put(out, "dns.question.type", some_str(first_question(d, "type")));
    put(out, "dns.response_code", some_str(str_at(d, &["rcode"])));
    let answers = map_objects(d, &["answers"], |a, m| {
        put(m, "name", some_str(str_at(a, &["name"])));
        put(m, "type", some_str(str_at(a, &["type"])));
        put(m, "data", some_str(str_at(a, &["data"])));
        put(m, "ttl", some_u64(u64_at(a, &["ttl"])));
        Some(())
    });
    // The answers' data that are addresses (those with data are the ones mapped).
    let resolved: Vec<&str> = array_at(d, &["answers"])
        .iter()
        .filter_map(|a| str_at(a, &["data"]))
        .filter(|d| ip_version(d).is_some())
        .collect();
    put(out, "dns.resolved_ip", strings(&resolved));
    put(out, "dns.answers", (!answers.is_empty()).then_some(Json::Array(answers)));
}

/// Seconds since the epoch as RFC 3339 (UTC).
fn epoch_rfc3339(secs: i64) -> Option<Json<'static>> {
    let ns = u128::try_from(secs).ok()? * 1_000_000_000;
    Some(Json::from(crate::output::record::rfc3339_nanos(ns)))
}

fn first_question<'a>(d: &'a Json, field: &str) -> Option<&'a str> {
    array_at(d, &["questions"]).first()?.get(field)?.as_str()
}

fn first_bytes<'a>(out: &mut Obj<'a>, f: &'a Json) {
    // The peer is where an outbound message went, and where an inbound one
    // (on a connection accepted, or to a UDP socket) came from.
    let inbound = str_at(f, &["direction"]) == Some("inbound");
    let (side, direction) = if inbound { ("source", "ingress") } else { ("destination", "egress") };
    endpoint(out, side, str_at(f, &["address"]), u64_at(f, &["port"]), str_at(f, &["dns_name"]));
    let transport = if str_at(f, &["transport"]) == Some("udp") { "udp" } else { "tcp" };
    put(out, "network.transport", Some(Json::from(transport)));
    put(out, "network.direction", Some(Json::from(direction)));
    let protocol = str_at(f, &["protocol"]).filter(|p| *p != "unknown");
    put(out, "network.protocol", some_str(protocol));
    // A ClientHello: TLS's own, or the one inside a QUIC Initial.
    if let Some(version) = str_at(f, &["tls", "version"]).filter(|v| *v != "unknown") {
        put(out, "tls.client.server_name", some_str(str_at(f, &["tls", "sni"])));
        put(out, "tls.version", Some(Json::from(version)));
        put(out, "tls.version_protocol", Some(Json::from("tls")));
    } else if protocol == Some("tls") {
        put(out, "tls.client.server_name", some_str(str_at(f, &["detail"])));
    }
    if protocol == Some("http") {
        put(out, "user_agent.original", some_str(str_at(f, &["agent"])));
    }
}

fn classification<'a>(out: &mut Obj<'a>, v: &'a Json) {
    let category = str_at(v, &["category"]);
    let alert = bool_at(v, &["alert"]) == Some(true);
    let evidence = array_at(v, &["evidence"]);
    // ECS has one rule per event (rule.id is a keyword, not an array): the
    // strongest indicator behind the verdict's category. All of them stay
    // in tracer.classification.evidence.
    let strongest = evidence.iter().filter(|e| str_at(e, &["category"]) == category).max_by(|a, b| {
        f64_at(a, &["weight"]).unwrap_or(0.0).total_cmp(&f64_at(b, &["weight"]).unwrap_or(0.0))
    });
    put(out, "rule.category", some_str(category));
    // A declared workload: what it declared against what it showed.
    put(out, "message", some_str(str_at(v, &["compliance", "summary"])));
    put(out, "rule.ruleset", Some(Json::from("tracer")));
    put(out, "rule.id", some_str(strongest.and_then(|e| str_at(e, &["indicator"]))));
    put(out, "rule.name", some_str(strongest.and_then(|e| str_at(e, &["what"]))));
    // Severity and threat follow the category that alerts (mining in a
    // training job's tree), not necessarily the primary one.
    let alerting = alerting_category(v);
    let (severity, _) = verdict_severity(alert, alerting.map_or(0.0, |(_, c)| c));
    put(out, "event.severity", Some(Json::from(severity)));
    if let Some(a) = alerting.and_then(|(c, _)| attack_for(c)).filter(|_| alert) {
        put(out, "threat.framework", Some(Json::from("MITRE ATT&CK")));
        put(out, "threat.tactic.id", Some(Json::from(vec![a.tactic_id])));
        put(out, "threat.tactic.name", Some(Json::from(vec![a.tactic_name])));
        let tactic_ref = format!("https://attack.mitre.org/tactics/{}/", a.tactic_id);
        put(out, "threat.tactic.reference", Some(Json::from(vec![tactic_ref])));
        put(out, "threat.technique.id", Some(Json::from(vec![a.technique_id])));
        put(out, "threat.technique.name", Some(Json::from(vec![a.technique_name])));
        let technique_ref = format!("https://attack.mitre.org/techniques/{}/", a.technique_id);
        put(out, "threat.technique.reference", Some(Json::from(vec![technique_ref])));
    }
    // The verdict is about a process tree (a session) or a container.
    match (str_at(v, &["scope"]), str_at(v, &["key"])) {
        (Some("tree"), Some(key)) => {
            put(out, "process.session_leader.pid", key.parse::<u64>().ok().map(Json::from))
        }
        (Some("container"), Some(key)) => put(out, "container.id", Some(Json::from(key))),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::{super::Format, *};

    fn ecs(record: Value) -> Value {
        super::super::convert(Format::Ecs, &record)
    }

    #[test]
    fn connect_outcomes() {
        for (result, outcome) in [("ok", "success"), ("in_progress", "unknown"), ("ECONNREFUSED", "failure")]
        {
            let out =
                ecs(json!({"kind": "network.connect", "connect": {"family": "inet", "result": result}}));
            assert_eq!(out["event"]["outcome"], outcome);
        }
        let unix = ecs(json!({"kind": "network.connect",
                              "connect": {"family": "unix", "path": "/run/x.sock", "result": "ENOENT"}}));
        assert!(unix.get("destination").is_none(), "{unix}");
        assert_eq!(unix["tracer"]["connect"]["path"], "/run/x.sock");
    }

    #[test]
    fn tls_sni_and_mining_protocols() {
        let first = json!({"address": "::1", "port": 443, "protocol": "tls", "detail": "pool.example"});
        let tls = ecs(json!({"kind": "network.first_bytes", "first_bytes": first}));
        assert_eq!(tls["tls"]["client"]["server_name"], "pool.example");
        assert_eq!((&tls["network"]["type"], &tls["network"]["protocol"]), (&json!("ipv6"), &json!("tls")));
        let unknown = ecs(json!({"kind": "network.first_bytes", "first_bytes": {"protocol": "unknown"}}));
        assert!(unknown["network"].get("protocol").is_none());
    }

    /// A peer's first datagram to a QUIC server: the peer is the source,
    /// the traffic ingress over UDP, the hello's name from inside QUIC.
    #[test]
    fn an_inbound_quic_datagram() {
        let first = json!({"address": "10.1.2.3", "port": 50000, "direction": "inbound", "transport": "udp",
                           "protocol": "quic", "detail": "example.org",
                           "tls": {"version": "1.3", "sni": "example.org", "ja4": "q13d0310h3_x_y"}});
        let e = ecs(json!({"kind": "network.first_bytes", "first_bytes": first}));
        assert_eq!((&e["source"]["ip"], &e["source"]["port"]), (&json!("10.1.2.3"), &json!(50000)));
        assert!(e.get("destination").is_none(), "{e}");
        assert_eq!(
            (&e["network"]["transport"], &e["network"]["direction"]),
            (&json!("udp"), &json!("ingress"))
        );
        assert_eq!(e["tls"]["client"]["server_name"], "example.org");
        let o = super::super::convert(
            Format::Ocsf,
            &json!({"kind": "network.first_bytes", "first_bytes": first}),
        );
        assert_eq!(o["src_endpoint"]["ip"], "10.1.2.3");
        assert_eq!(
            (&o["connection_info"]["protocol_name"], &o["connection_info"]["direction"]),
            (&json!("udp"), &json!("Inbound"))
        );
    }

    #[test]
    fn dns_query_and_rename() {
        let q = ecs(
            json!({"kind": "network.dns", "dns": {"direction": "query", "server": "10.0.0.53", "port": 53,
                           "id": 7, "questions": [{"name": "a.example", "type": "AAAA"}]}}),
        );
        assert_eq!((&q["dns"]["type"], &q["dns"]["id"]), (&json!("query"), &json!("7")));
        assert_eq!(q["event"]["action"], "dns-query");
        let r = ecs(json!({"kind": "file.open", "file": {"path": "/m/w.safetensors", "renamed": true}}));
        assert_eq!((&r["event"]["type"], &r["event"]["action"]), (&json!(["change"]), &json!("rename")));
    }

    #[test]
    fn a_signalled_exit_has_an_exit_code() {
        let killed = ecs(json!({"kind": "process.exit", "exit": {"code": null, "signal": 9}}));
        assert_eq!(killed["process"]["exit_code"], 137);
        let exited = ecs(json!({"kind": "process.exit", "exit": {"code": 3, "signal": null}}));
        assert_eq!(exited["process"]["exit_code"], 3);
    }

    #[test]
    fn a_process_hidden_from_proc_says_so() {
        let hidden = ecs(json!({"kind": "process.exec", "process": {"pid": 9, "hidden_from_proc": true}}));
        assert_eq!(hidden["tracer"]["process"]["hidden_from_proc"], true);
        let seen = ecs(json!({"kind": "process.exec", "process": {"pid": 9, "hidden_from_proc": false}}));
        assert!(seen["tracer"]["process"].get("hidden_from_proc").is_none(), "{seen}");
    }

    #[test]
    fn containers_and_non_objects() {
        let out = ecs(json!({"kind": "process.activity", "process": {"pid": 1, "container_id": "c0ffee"}}));
        assert_eq!((&out["container"]["id"], &out["process"]["pid"]), (&json!("c0ffee"), &json!(1)));
        let odd = ecs(json!([1, 2]));
        assert_eq!(
            (&odd["tracer"]["original"], &odd["ecs"]["version"]),
            (&json!([1, 2]), &json!(ECS_VERSION))
        );
    }

    #[test]
    fn mining_beside_another_category_is_the_threat() {
        let verdict = json!({"scope": "tree", "key": "40", "category": "blockchain_node", "confidence": 0.5,
            "alert": true, "categories": [
                {"category": "blockchain_node", "confidence": 0.5, "score": 1.0, "alert": false, "indicators": []},
                {"category": "crypto_mining", "confidence": 0.9, "score": 3.3, "alert": true, "indicators": []}]});
        let v = ecs(json!({"kind": "classification", "classification": verdict}));
        assert_eq!(v["rule"]["category"], "blockchain_node");
        assert_eq!(v["threat"]["technique"]["id"], json!(["T1496"]));
        assert_eq!(v["event"]["severity"], 4);
        assert_eq!(v["event"]["kind"], "alert");
    }

    #[test]
    fn allowlisted_verdicts_are_not_alerts_and_have_no_threat() {
        let verdict = json!({"scope": "container", "key": "c0ffee", "category": "crypto_mining",
                             "confidence": 0.97, "alert": false, "allowlisted": "pool"});
        let v = ecs(json!({"kind": "classification", "classification": verdict}));
        assert_eq!((&v["event"]["kind"], &v["event"]["severity"]), (&json!("event"), &json!(1)));
        assert!(v.get("threat").is_none());
        assert_eq!(v["container"]["id"], "c0ffee");
    }
}
