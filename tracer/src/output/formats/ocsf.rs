//! Native records to OCSF 1.4.0 events.
//!
//! Class, category and activity ids and the attributes used are those of
//! OCSF 1.4.0 (schema.ocsf.io/1.4.0), the first release with the host profile
//! (`device`, `actor`) on every class, Base Event included, and with
//! `is_alert` on Detection Finding. `time` is epoch milliseconds; the native
//! nanosecond time stays in `metadata.original_time`. What OCSF has no
//! attribute for goes under `unmapped.tracer` (OCSF's place for source data it
//! does not model): the native schema version, monotonic time, the native body
//! as it is, and process fields such as the cgroup.
//!
//! Activity, GPU, health and capture records are measurements and sensor
//! state, not security events: no OCSF class describes them (Process Activity
//! "Other" would claim a process action that did not happen), so they are
//! Base Events (class 0, activity 99 Other, `activity_name` the native kind)
//! with their content under `unmapped`.

use super::{
    OCSF_VERSION, ProcessPart,
    common::{
        alerting_category, array_at, at, attack_for, basename, body, bool_at, command_line, dirname,
        epoch_ms, exit_code, f64_at, ip_version, map_objects, object, put, put_at, some_str, some_u64,
        str_at, strings, strings_at, strip_nulls, u64_at, verdict_categories, verdict_severity,
    },
    json::{Json, Obj},
};

/// Class, category and activity of one event.
struct Class {
    uid: u64,
    name: &'static str,
    category_uid: u64,
    category_name: &'static str,
    activity_id: u64,
    /// The activity's caption in the schema.
    activity: &'static str,
}

const fn class(uid: u64, name: &'static str, activity_id: u64, activity: &'static str) -> Class {
    let (category_uid, category_name) = match uid / 1000 {
        1 => (1, "System Activity"),
        2 => (2, "Findings"),
        4 => (4, "Network Activity"),
        _ => (0, "Uncategorized"),
    };
    Class { uid, name, category_uid, category_name, activity_id, activity }
}

const BASE_EVENT: Class = class(0, "Base Event", 99, "Other");

fn class_of(kind: &str, record: &Json) -> Class {
    const PROCESS: u64 = 1007;
    const NETWORK: u64 = 4001;
    match kind {
        // Fork and exec are both a launch: of a child, of a new image.
        "process.exec" | "process.fork" => class(PROCESS, "Process Activity", 1, "Launch"),
        "process.exit" => class(PROCESS, "Process Activity", 2, "Terminate"),
        "network.connect" => match str_at(record, &["connect", "result"]) {
            Some("ECONNREFUSED") => class(NETWORK, "Network Activity", 5, "Refuse"),
            Some("ok" | "in_progress") | None => class(NETWORK, "Network Activity", 1, "Open"),
            Some(_) => class(NETWORK, "Network Activity", 4, "Fail"),
        },
        "network.listen" => class(NETWORK, "Network Activity", 7, "Listen"),
        // What a process sent first on a connection: a traffic observation.
        "network.first_bytes" => class(NETWORK, "Network Activity", 6, "Traffic"),
        "network.dns" => match str_at(record, &["dns", "direction"]) {
            Some("query") => class(4003, "DNS Activity", 1, "Query"),
            Some("response") => class(4003, "DNS Activity", 2, "Response"),
            _ => class(4003, "DNS Activity", 0, "Unknown"),
        },
        // Renames are reported at rename(2) entry, with both names.
        "file.open" if bool_at(record, &["file", "renamed"]) == Some(true) => {
            class(1001, "File System Activity", 5, "Rename")
        }
        "file.open" => class(1001, "File System Activity", 14, "Open"),
        // The executable's identity and hash: its attributes, read.
        "process.executable" => class(1001, "File System Activity", 8, "Get Attributes"),
        "classification" if at(record, &["classification", "previous"]).is_some() => {
            class(2004, "Detection Finding", 2, "Update")
        }
        "classification" => class(2004, "Detection Finding", 1, "Create"),
        _ => BASE_EVENT,
    }
}

/// What the record's process `p` gives the event: `process`,
/// `actor.process` and `unmapped.tracer.process.*`, which depend on the
/// kind (see `part_role`) and, for a fork, on `fork`, the record's body.
pub(super) fn process_part<'a>(kind: &str, p: &'a Json, fork: &'a Json) -> ProcessPart<'a> {
    let mut out = Obj::new();
    processes(&mut out, kind, p, fork);
    ProcessPart { members: out, in_container: some_str(str_at(p, &["container_id"])).is_some() }
}

/// Kinds whose process part is the same: exec, exit, and all the others
/// but a fork, whose part is its own.
pub(super) fn part_role(kind: &str) -> Option<u8> {
    match kind {
        "process.fork" => None,
        "process.exec" => Some(1),
        "process.exit" => Some(2),
        _ => Some(0),
    }
}

/// Everything of the event but its process part (written merged with it,
/// this winning where both have a value: see `Json::write_merged`).
pub(super) fn convert<'a>(record: &'a Json, part: &ProcessPart) -> Obj<'a> {
    let kind = str_at(record, &["kind"]).unwrap_or_default();
    let c = class_of(kind, record);
    let mut out = Obj::new();
    header(&mut out, &c, kind);
    if !record.is_object() {
        put(&mut out, "unmapped.tracer.original", strip_nulls(record));
        return out;
    }
    put(&mut out, "metadata.event_code", (!kind.is_empty()).then(|| Json::from(kind)));
    let time = str_at(record, &["time"]);
    put(&mut out, "metadata.original_time", some_str(time));
    put(&mut out, "time", time.and_then(epoch_ms).map(Json::from));
    put(&mut out, "device.hostname", some_str(str_at(record, &["host"])));
    if out.contains_key("device") {
        // Device's one required attribute; the tracer does not know the host's kind.
        put(&mut out, "device.type_id", Some(Json::from(0)));
        put(&mut out, "device.type", Some(Json::from("Unknown")));
    }
    put(&mut out, "unmapped.tracer.schema", some_str(str_at(record, &["schema"])));
    put(&mut out, "unmapped.tracer.mono_ns", some_u64(u64_at(record, &["mono_ns"])));
    for (key, value) in body(record) {
        put_at(&mut out, &["unmapped", "tracer", key], strip_nulls(value));
    }
    let b = |name: &str| at(record, &[name]).unwrap_or(&Json::Null);
    match kind {
        "process.exit" => put(&mut out, "exit_code", some_u64(exit_code(b("exit")))),
        "network.connect" => {
            connect(&mut out, b("connect"));
            // Network Activity needs an endpoint (at_least_one of dst and
            // src, events/network/network.json); a sockaddr the tracer could
            // not read as any family leaves only this host, the source.
            if !out.contains_key("dst_endpoint") {
                put(&mut out, "src_endpoint.hostname", some_str(str_at(record, &["host"])));
            }
        }
        "network.listen" => {
            let (addr, port) = (str_at(b("listen"), &["address"]), u64_at(b("listen"), &["port"]));
            // The listening socket is the responder of connections to come.
            put(&mut out, "dst_endpoint", endpoint(addr, port, None));
            put(&mut out, "connection_info", Some(connection_info(Some("tcp"), addr, (1, "Inbound"))));
        }
        "network.first_bytes" => {
            let f = b("first_bytes");
            let (addr, port, name) =
                (str_at(f, &["address"]), u64_at(f, &["port"]), str_at(f, &["dns_name"]));
            // The peer: where an outbound message went, where an inbound
            // one came from.
            let inbound = str_at(f, &["direction"]) == Some("inbound");
            let (side, direction) =
                if inbound { ("src_endpoint", (1, "Inbound")) } else { ("dst_endpoint", (2, "Outbound")) };
            put(&mut out, side, endpoint(addr, port, name));
            let transport = if str_at(f, &["transport"]) == Some("udp") { "udp" } else { "tcp" };
            put(&mut out, "connection_info", Some(connection_info(Some(transport), addr, direction)));
            // The tls object requires a version; a hello cut before it has none.
            if let Some(version) = str_at(f, &["tls", "version"]).filter(|v| *v != "unknown") {
                let mut tls = Obj::new();
                put(&mut tls, "version", Some(version.into()));
                put(&mut tls, "sni", some_str(str_at(f, &["tls", "sni"])));
                put(&mut out, "tls", Some(tls.into()));
            }
        }
        "network.dns" => dns(&mut out, b("dns"), time.and_then(epoch_ms)),
        "file.open" => {
            let path = str_at(b("file"), &["path"]);
            match str_at(b("file"), &["renamed_from"]) {
                // Rename: `file` is the activity's target, the name it had;
                // `file_result` what it became (file_activity.json).
                Some(from) => {
                    put(&mut out, "file", Some(file(from, 0, "Unknown")));
                    put(&mut out, "file_result", path.map(|path| file(path, 0, "Unknown")));
                }
                None => put(&mut out, "file", path.map(|path| file(path, 0, "Unknown"))),
            }
        }
        "process.executable" => {
            let e = b("executable");
            if let Some(path) = str_at(e, &["path"]) {
                let mut f = file(path, 1, "Regular File");
                if let Json::Object(m) = &mut f {
                    put(m, "size", some_u64(u64_at(e, &["size"])));
                    put(
                        m,
                        "uid",
                        u64_at(e, &["inode"])
                            .map(|i| Json::from(format!("{}:{i}", u64_at(e, &["device"]).unwrap_or(0)))),
                    );
                    put(
                        m,
                        "modified_time",
                        at(e, &["mtime"]).and_then(Json::as_i64).map(|s| Json::from(s * 1000)),
                    );
                    put(m, "is_deleted", bool_at(e, &["deleted"]).filter(|d| *d).map(Json::from));
                    put(m, "hashes", str_at(e, &["sha256"]).map(sha256));
                }
                put(&mut out, "file", Some(f));
            }
        }
        "classification" => finding(&mut out, b("classification"), str_at(record, &["host"])),
        _ => {}
    }

    let mut profiles = Vec::new();
    if out.contains_key("device") || out.contains_key("actor") || part.members.contains_key("actor") {
        profiles.push("host");
    }
    if part.in_container {
        profiles.push("container");
    }
    put(&mut out, "metadata.profiles", strings(&profiles));
    out
}

/// Classification, severity and metadata every event has.
fn header<'a>(out: &mut Obj<'a>, c: &Class, kind: &'a str) {
    put(out, "class_uid", Some(Json::from(c.uid)));
    put(out, "class_name", Some(Json::from(c.name)));
    put(out, "category_uid", Some(Json::from(c.category_uid)));
    put(out, "category_name", Some(Json::from(c.category_name)));
    put(out, "activity_id", Some(Json::from(c.activity_id)));
    // For "Other" the name is the source's own: the native kind.
    let activity_name = if c.activity_id == 99 && !kind.is_empty() { kind } else { c.activity };
    put(out, "activity_name", Some(Json::from(activity_name)));
    put(out, "type_uid", Some(Json::from(c.uid * 100 + c.activity_id)));
    put(out, "type_name", Some(Json::from(format!("{}: {}", c.name, c.activity))));
    put(out, "severity_id", Some(Json::from(1)));
    put(out, "severity", Some(Json::from("Informational")));
    put(out, "metadata.version", Some(Json::from(OCSF_VERSION)));
    put(out, "metadata.product.name", Some(Json::from("tracer")));
    put(out, "metadata.product.vendor_name", Some(Json::from("tracer")));
    put(out, "metadata.product.version", Some(Json::from(env!("CARGO_PKG_VERSION"))));
}

/// `process` and `actor.process` of a record about native process `p`.
fn processes<'a>(out: &mut Obj<'a>, kind: &str, p: &'a Json, fork: &'a Json) {
    let ancestors = strings_at(p, &["ancestors"]);
    match kind {
        "process.fork" => {
            // The child launched, with the forking process's image, user and
            // cgroup; the forking process is the actor.
            let mut child = process(p);
            for own in ["pid", "uid", "tid", "parent_process"] {
                child.remove(own);
            }
            put(&mut child, "pid", some_u64(u64_at(fork, &["child_pid"])));
            put(&mut child, "uid", some_str(str_at(fork, &["child_entity_id"])));
            put(&mut child, "parent_process", object(brief(p)));
            put(out, "process", object(child));
            put(out, "actor.process", object(process(p)));
            // The child's grandparent is the forking process's parent.
            let mut lineage: Vec<&str> = str_at(p, &["parent", "entity_id"]).into_iter().collect();
            lineage.extend(ancestors);
            extras(out, p, &lineage);
        }
        "process.exec" | "process.exit" => {
            put(out, "process", object(process(p)));
            // A launch's actor is the parent, as for the fork that made the
            // process; an exit is reported from the exiting task itself.
            let actor = if kind == "process.exec" { parent(p) } else { brief(p) };
            put(out, "actor.process", object(actor));
            extras(out, p, &ancestors);
        }
        _ => {
            put(out, "actor.process", object(process(p)));
            extras(out, p, &ancestors);
        }
    }
}

/// The `hashes` of a file whose SHA-256 is `hash`.
fn sha256(hash: &str) -> Json<'_> {
    let mut h = Obj::new();
    put(&mut h, "algorithm_id", Some(3u64.into()));
    put(&mut h, "algorithm", Some("SHA-256".into()));
    put(&mut h, "value", Some(hash.into()));
    vec![Json::from(h)].into()
}

/// A File object; `type_id` 1 (Regular File) for executables, 0 (Unknown)
/// where the tracer cannot tell.
fn file<'a>(path: &'a str, type_id: u64, type_name: &'static str) -> Json<'a> {
    let mut m = Obj::new();
    put(&mut m, "path", Some(Json::from(path)));
    put(&mut m, "name", Some(Json::from(basename(path))));
    put(&mut m, "parent_folder", some_str(dirname(path)));
    put(&mut m, "type_id", Some(Json::from(type_id)));
    put(&mut m, "type", Some(Json::from(type_name)));
    Json::Object(m)
}

fn executable(path: Option<&str>) -> Option<Json<'_>> {
    path.map(|p| file(p, 1, "Regular File"))
}

/// The Process object of a native process, with its parent.
fn process<'a>(p: &'a Json) -> Obj<'a> {
    let mut m = brief(p);
    let argv = strings_at(p, &["argv"]);
    put(&mut m, "tid", some_u64(u64_at(p, &["tid"])));
    put(&mut m, "cmd_line", command_line(&argv).map(Json::from));
    put(&mut m, "user.uid", u64_at(p, &["uid"]).map(|u| Json::from(u.to_string())));
    // OCSF 1.4.0's container profile adds `container` to the Process object
    // (objects/process.json), not to any event class.
    put(&mut m, "container.uid", some_str(str_at(p, &["container_id"])));
    put(&mut m, "parent_process", object(parent(p)));
    m
}

/// Identity of a native process: pid, unique id, name and executable.
fn brief<'a>(p: &'a Json) -> Obj<'a> {
    let mut m = Obj::new();
    put(&mut m, "pid", some_u64(u64_at(p, &["pid"])));
    put(&mut m, "uid", some_str(str_at(p, &["entity_id"])));
    put(&mut m, "name", some_str(str_at(p, &["comm"])));
    let mut file = executable(str_at(p, &["exe"]));
    if let (Some(Json::Object(f)), Some(hash)) = (file.as_mut(), str_at(p, &["exe_sha256"])) {
        put(f, "hashes", Some(sha256(hash)));
    }
    put(&mut m, "file", file);
    m
}

/// The parent of a native process, as far as the record knows it.
fn parent<'a>(p: &'a Json) -> Obj<'a> {
    let mut m = Obj::new();
    put(&mut m, "pid", some_u64(u64_at(p, &["ppid"]).or_else(|| u64_at(p, &["parent", "pid"]))));
    put(&mut m, "uid", some_str(str_at(p, &["parent", "entity_id"])));
    put(&mut m, "file", executable(str_at(p, &["parent", "exe"])));
    m
}

/// What OCSF has no attribute for.
fn extras<'a>(out: &mut Obj<'a>, p: &'a Json, ancestors: &[&'a str]) {
    let argv = strings_at(p, &["argv"]);
    // cmd_line loses argument boundaries; argv keeps them.
    put(out, "unmapped.tracer.process.argv", strings(&argv));
    put(out, "unmapped.tracer.process.session", some_u64(u64_at(p, &["session"])));
    put(out, "unmapped.tracer.process.cgroup", some_str(str_at(p, &["cgroup"])));
    put(out, "unmapped.tracer.process.cgroup_id", some_u64(u64_at(p, &["cgroup_id"])));
    put(out, "unmapped.tracer.process.ancestors", strings(ancestors));
    let escaped = strings_at(p, &["escaped"]);
    put(out, "unmapped.tracer.process.escaped", strings(&escaped));
    let truncated = bool_at(p, &["argv_truncated"]).filter(|t| *t);
    put(out, "unmapped.tracer.process.argv_truncated", truncated.map(Json::from));
    // Evidence in itself (rootkits hide their pids from /proc).
    let hidden = bool_at(p, &["hidden_from_proc"]).filter(|h| *h);
    put(out, "unmapped.tracer.process.hidden_from_proc", hidden.map(Json::from));
}

/// A Network Endpoint; an address that is not an IP is left out (it stays
/// in the native body).
fn endpoint<'a>(addr: Option<&'a str>, port: Option<u64>, hostname: Option<&'a str>) -> Option<Json<'a>> {
    let mut m = Obj::new();
    put(&mut m, "ip", some_str(addr.filter(|a| ip_version(a).is_some())));
    put(&mut m, "port", some_u64(port));
    put(&mut m, "hostname", some_str(hostname));
    object(m)
}

/// Network Connection Information; direction is the host's point of view.
fn connection_info<'a>(
    protocol: Option<&'a str>,
    addr: Option<&str>,
    direction: (u64, &'static str),
) -> Json<'a> {
    let mut m = Obj::new();
    put(&mut m, "protocol_name", some_str(protocol));
    // IANA numbers only (Linux's IPPROTO_MPTCP, 262, is not one).
    let number = match protocol {
        Some("icmp") => Some(1),
        Some("tcp") => Some(6),
        Some("udp") => Some(17),
        Some("icmpv6") => Some(58),
        Some("sctp") => Some(132),
        Some("udplite") => Some(136),
        _ => None,
    };
    put(&mut m, "protocol_num", some_u64(number));
    put(&mut m, "protocol_ver_id", addr.and_then(ip_version).map(Json::from));
    put(&mut m, "direction_id", Some(Json::from(direction.0)));
    put(&mut m, "direction", Some(Json::from(direction.1)));
    Json::Object(m)
}

fn connect<'a>(out: &mut Obj<'a>, c: &'a Json) {
    let addr = str_at(c, &["address"]);
    if matches!(str_at(c, &["family"]), Some("inet" | "inet6")) {
        let dst = endpoint(addr, u64_at(c, &["port"]), str_at(c, &["dns_name"]));
        put(out, "dst_endpoint", dst);
    } else if let Some(path) = str_at(c, &["path"]) {
        // A unix socket's address is its path: the endpoint's name.
        put(out, "dst_endpoint.name", Some(Json::from(path)));
    }
    put(out, "connection_info", Some(connection_info(str_at(c, &["protocol"]), addr, (2, "Outbound"))));
    let result = str_at(c, &["result"]);
    let status = match result {
        Some("ok") => Some((1, "Success")),
        // Not finished (non-blocking), or a TCP open seen outside connect(2).
        Some("in_progress") => Some((0, "Unknown")),
        Some(_) => Some((2, "Failure")),
        None => None,
    };
    if let Some((id, name)) = status {
        put(out, "status_id", Some(Json::from(id)));
        put(out, "status", Some(Json::from(name)));
        put(out, "status_code", some_str(result));
    }
}

fn dns<'a>(out: &mut Obj<'a>, d: &'a Json, time_ms: Option<i64>) {
    let server = str_at(d, &["server"]);
    put(out, "dst_endpoint", endpoint(server, u64_at(d, &["port"]), None));
    // One exchange with the host as client; the transport is not recorded.
    put(out, "connection_info", Some(connection_info(None, server, (2, "Outbound"))));
    let id = u64_at(d, &["id"]);
    // OCSF has one query per event; every question stays in unmapped.
    if let Some(q) = array_at(d, &["questions"]).first() {
        put(out, "query.hostname", some_str(str_at(q, &["name"])));
        if out.get("query").is_some() {
            put(out, "query.type", some_str(str_at(q, &["type"])));
            put(out, "query.packet_uid", some_u64(id));
        }
    }
    // rdata is required: answers without data (other than A, AAAA, CNAME) stay in unmapped.
    let answers = map_objects(d, &["answers"], |a, m| {
        put(m, "rdata", some_str(Some(str_at(a, &["data"])?)));
        put(m, "type", some_str(str_at(a, &["type"])));
        put(m, "ttl", some_u64(u64_at(a, &["ttl"])));
        put(m, "packet_uid", some_u64(id));
        Some(())
    });
    put(out, "answers", (!answers.is_empty()).then_some(Json::Array(answers)));
    if let Some(native) = str_at(d, &["rcode"]) {
        let (id, caption) = rcode(native);
        put(out, "rcode_id", Some(Json::from(id)));
        put(out, "rcode", Some(Json::from(caption.unwrap_or(native))));
    }
    let when = match str_at(d, &["direction"]) {
        Some("query") => "query_time",
        Some("response") => "response_time",
        _ => return,
    };
    put(out, when, time_ms.map(Json::from));
}

/// OCSF `rcode_id` and caption of a native response code name (RFC 6895
/// numbering); the caption is none for Other, whose name is the source's.
fn rcode(native: &str) -> (u64, Option<&'static str>) {
    const NAMES: [&str; 12] = [
        "NoError",
        "FormError",
        "ServError",
        "NXDomain",
        "NotImp",
        "Refused",
        "YXDomain",
        "YXRRSet",
        "NXRRSet",
        "NotAuth",
        "NotZone",
        "DSOTYPENI",
    ];
    let number = match native {
        "NOERROR" => Some(0),
        "FORMERR" => Some(1),
        "SERVFAIL" => Some(2),
        "NXDOMAIN" => Some(3),
        "NOTIMP" => Some(4),
        "REFUSED" => Some(5),
        other => other.strip_prefix("RCODE").and_then(|n| n.parse::<u64>().ok()),
    };
    match number {
        Some(n @ 0..=11) => (n, usize::try_from(n).ok().and_then(|i| NAMES.get(i)).copied()),
        Some(12..=15) => (24, Some("Unassigned")),
        _ => (99, None),
    }
}

/// A verdict as a Detection Finding about a process tree or a container.
fn finding<'a>(out: &mut Obj<'a>, v: &'a Json, host: Option<&str>) {
    let category = str_at(v, &["category"]);
    let (scope, key) = (str_at(v, &["scope"]), str_at(v, &["key"]));
    let alert = bool_at(v, &["alert"]) == Some(true);
    let confidence = f64_at(v, &["confidence"]);

    // One finding per host and scope, so updates correlate with the first verdict.
    let uid: Vec<&str> = [host, scope, key].into_iter().flatten().collect();
    put(out, "finding_info.uid", (!uid.is_empty()).then(|| Json::from(uid.join(":"))));
    let title = match (category, scope, key) {
        (Some(c), Some(s), Some(k)) => Some(format!("{c} workload ({s} {k})")),
        (Some(c), _, _) => Some(format!("{c} workload")),
        _ => None,
    };
    put(out, "finding_info.title", title.clone().map(Json::from));
    put(out, "message", title.map(Json::from));
    let categories = verdict_categories(v);
    put(out, "finding_info.types", strings(&categories));
    put(out, "finding_info.analytic.name", Some(Json::from("tracer workload classifier")));
    // Weighted indicator rules (rules/default.toml).
    put(out, "finding_info.analytic.type_id", Some(Json::from(1)));
    put(out, "finding_info.analytic.type", Some(Json::from("Rule")));
    // Severity and ATT&CK follow the category that alerts (mining in a
    // training job's tree), not necessarily the primary one.
    let alerting = alerting_category(v);
    if let Some(a) = alerting.and_then(|(c, _)| attack_for(c)).filter(|_| alert) {
        let mut attack = Obj::new();
        put(&mut attack, "tactic.uid", Some(a.tactic_id.into()));
        put(&mut attack, "tactic.name", Some(a.tactic_name.into()));
        put(&mut attack, "technique.uid", Some(a.technique_id.into()));
        put(&mut attack, "technique.name", Some(a.technique_name.into()));
        put(out, "finding_info.attacks", Some(vec![Json::from(attack)].into()));
    }

    put(out, "is_alert", Some(Json::from(alert)));
    let (severity_id, severity) = verdict_severity(alert, alerting.map_or(0.0, |(_, c)| c));
    put(out, "severity_id", Some(Json::from(severity_id)));
    put(out, "severity", Some(Json::from(severity)));
    if let Some(c) = confidence {
        put(out, "confidence_score", Some(Json::from((c * 100.0).round().clamp(0.0, 100.0) as u64)));
        let (id, name) = match c {
            c if c >= 0.8 => (3, "High"),
            c if c >= 0.5 => (2, "Medium"),
            _ => (1, "Low"),
        };
        put(out, "confidence_id", Some(Json::from(id)));
        put(out, "confidence", Some(Json::from(name)));
    }
    // An allowlisted workload, or a declared one doing what it declared,
    // keeps its verdict without the alert; a declared one doing more says
    // what it declared and what it did.
    let compliance = str_at(v, &["compliance", "summary"]);
    match (str_at(v, &["allowlisted"]), compliance) {
        (Some(entry), _) => {
            put(out, "status_id", Some(Json::from(3)));
            put(out, "status", Some(Json::from("Suppressed")));
            put(out, "status_detail", Some(Json::from(format!("allowlisted by {entry}"))));
        }
        (None, Some(summary)) if !alert => {
            put(out, "status_id", Some(Json::from(3)));
            put(out, "status", Some(Json::from("Suppressed")));
            put(out, "status_detail", Some(Json::from(summary)));
        }
        (None, summary) => {
            put(out, "status_detail", summary.map(Json::from));
            put(out, "status_id", Some(Json::from(1)));
            put(out, "status", Some(Json::from("New")));
        }
    }
    if let (Some(scope), Some(key)) = (scope, key) {
        let resource = Obj::from_iter([("type", Json::from(scope)), ("uid", key.into())]);
        put(out, "resources", Some(vec![Json::from(resource)].into()));
    }

    let evidences = map_objects(v, &["evidence"], |e, m| {
        put(m, "process.pid", some_u64(u64_at(e, &["pid"])));
        put(m, "process.uid", some_str(str_at(e, &["entity_id"])));
        put(m, "process.name", some_str(str_at(e, &["comm"])));
        for field in ["indicator", "category", "weight", "what", "seen", "record", "time"] {
            put_at(m, &["data", field], e.get(field).and_then(strip_nulls));
        }
        Some(())
    });
    put(out, "evidences", (!evidences.is_empty()).then_some(Json::Array(evidences)));
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::{super::Format, *};

    fn ocsf(record: Value) -> Value {
        super::super::convert(Format::Ocsf, &record)
    }

    #[test]
    fn a_verdict_with_mining_among_its_categories_alerts_for_the_mining() {
        let v = ocsf(json!({"kind": "classification", "host": "h",
            "classification": {"scope": "tree", "key": "40", "category": "ai_training", "confidence": 0.6,
                "alert": true, "categories": [
                    {"category": "ai_training", "confidence": 0.6, "score": 1.3, "alert": false, "indicators": ["a"]},
                    {"category": "crypto_mining", "confidence": 0.94, "score": 4.0, "alert": true, "indicators": ["m"]}]}}));
        assert_eq!(v["finding_info"]["types"], json!(["ai_training", "crypto_mining"]));
        assert_eq!(v["finding_info"]["attacks"][0]["technique"]["uid"], "T1496");
        assert_eq!(v["severity"], "High", "the mining's confidence, not the training's: {v:#}");
        assert_eq!(v["is_alert"], true);
    }

    #[test]
    fn connect_results_pick_the_activity() {
        for (result, activity, status) in
            [("ok", 1, 1), ("in_progress", 1, 0), ("ECONNREFUSED", 5, 2), ("ETIMEDOUT", 4, 2)]
        {
            let out =
                ocsf(json!({"kind": "network.connect", "connect": {"family": "inet", "result": result}}));
            assert_eq!(
                (&out["activity_id"], &out["status_id"]),
                (&json!(activity), &json!(status)),
                "{result}"
            );
            assert_eq!(out["type_uid"], json!(400_100 + activity));
        }
        let unix =
            ocsf(json!({"kind": "network.connect", "connect": {"family": "unix", "path": "/run/x.sock"}}));
        assert_eq!(unix["dst_endpoint"], json!({"name": "/run/x.sock"}));
    }

    #[test]
    fn dns_queries_and_response_codes() {
        let dns = json!({"direction": "query", "id": 9, "questions": [{"name": "a.example", "type": "A"}]});
        let q = ocsf(json!({"kind": "network.dns", "time": "1970-01-01T00:00:01Z", "dns": dns}));
        assert_eq!(
            (&q["activity_id"], &q["type_uid"], &q["query_time"]),
            (&json!(1), &json!(400_301), &json!(1000))
        );
        assert_eq!(q["query"], json!({"hostname": "a.example", "type": "A", "packet_uid": 9}));
        assert_eq!(
            (rcode("NXDOMAIN"), rcode("RCODE9"), rcode("RCODE13")),
            ((3, Some("NXDomain")), (9, Some("NotAuth")), (24, Some("Unassigned")))
        );
        assert_eq!(rcode("RCODE4095"), (99, None));
    }

    #[test]
    fn renames_and_opens() {
        let r = ocsf(json!({"kind": "file.open", "file": {"path": "/m/w.safetensors", "renamed": true}}));
        assert_eq!((&r["activity_id"], &r["type_uid"]), (&json!(5), &json!(100_105)));
        assert_eq!(r["file"]["name"], "w.safetensors");
    }

    #[test]
    fn updated_and_allowlisted_verdicts() {
        let v = ocsf(json!({"kind": "classification", "host": "h",
                            "classification": {"scope": "tree", "key": "7", "category": "crypto_mining",
                                               "confidence": 0.4, "alert": false, "previous": "ordinary",
                                               "allowlisted": "pool"}}));
        assert_eq!(
            (&v["activity_id"], &v["status_id"], &v["severity_id"]),
            (&json!(2), &json!(3), &json!(1))
        );
        assert_eq!((&v["confidence_id"], &v["confidence_score"]), (&json!(1), &json!(40)));
        assert_eq!(v["finding_info"]["uid"], "h:tree:7");
        assert!(v["finding_info"].get("attacks").is_none(), "no ATT&CK technique without an alert");
    }

    #[test]
    fn declared_workloads_say_what_they_declared_and_did() {
        let finding = |alert: bool, compliant: bool, summary: &str| {
            ocsf(json!({"kind": "classification", "host": "h",
                "classification": {"scope": "container", "key": "c1", "category": "ai_training",
                    "confidence": 0.9, "alert": alert,
                    "compliance": {"declaration": "farm", "declared": ["ai_training"], "observed": ["ai_training"],
                                   "compliant": compliant, "summary": summary},
                    "categories": [{"category": "ai_training", "confidence": 0.9, "score": 3.0, "alert": false,
                                    "declared": "farm", "indicators": []},
                                   {"category": "blockchain_node", "confidence": 0.5, "score": 1.0, "alert": alert,
                                    "undeclared": "farm", "indicators": []}]}}))
        };
        let ok = finding(false, true, "declared ai_training (farm), observed ai_training: compliant");
        assert_eq!((&ok["status_id"], &ok["is_alert"]), (&json!(3), &json!(false)));
        assert_eq!(ok["status_detail"], "declared ai_training (farm), observed ai_training: compliant");
        let bad = finding(true, false, "declared ai_training (farm), observed ai_training + blockchain_node");
        assert_eq!((&bad["status_id"], &bad["is_alert"]), (&json!(1), &json!(true)));
        assert_eq!(
            bad["status_detail"],
            "declared ai_training (farm), observed ai_training + blockchain_node"
        );
        assert!(bad["finding_info"].get("attacks").is_none(), "a node is no ATT&CK technique: {bad}");
        assert_eq!(bad["severity_id"], 3, "severity follows the undeclared category (0.5: medium)");
    }

    #[test]
    fn a_signalled_exit_has_an_exit_code() {
        let killed = ocsf(json!({"kind": "process.exit", "host": "h", "exit": {"code": null, "signal": 15}}));
        assert_eq!(killed["exit_code"], 143, "{killed}");
    }

    #[test]
    fn a_process_hidden_from_proc_says_so() {
        let p = json!({"pid": 9, "hidden_from_proc": true});
        let exec = ocsf(json!({"kind": "process.exec", "host": "h", "process": p}));
        assert_eq!(exec["unmapped"]["tracer"]["process"]["hidden_from_proc"], true, "{exec}");
    }

    #[test]
    fn a_rename_has_the_old_name_as_file_and_the_new_as_file_result() {
        let r = ocsf(json!({"kind": "file.open", "host": "h",
            "file": {"path": "/m/w.safetensors", "renamed": true, "renamed_from": "/m/w.tmp", "write": true, "flags": 1}}));
        assert_eq!(
            (&r["activity_id"], &r["file"]["path"], &r["file_result"]["path"]),
            (&json!(5), &json!("/m/w.tmp"), &json!("/m/w.safetensors")),
            "{r}"
        );
    }

    #[test]
    fn a_connect_with_no_readable_address_still_has_an_endpoint() {
        let r = ocsf(
            json!({"kind": "network.connect", "host": "h", "connect": {"family": "other", "result": "ok"}}),
        );
        assert!(r.get("dst_endpoint").is_none());
        assert_eq!(r["src_endpoint"]["hostname"], "h", "{r}");
        let inet = ocsf(json!({"kind": "network.connect", "host": "h",
            "connect": {"family": "inet", "address": "10.0.0.1", "port": 80, "result": "ok"}}));
        assert!(inet.get("src_endpoint").is_none() && inet["dst_endpoint"]["ip"] == "10.0.0.1");
    }

    #[test]
    fn containers_belong_to_the_process_object() {
        let p = json!({"pid": 1, "container_id": "c0ffee"});
        let exec = ocsf(json!({"kind": "process.exec", "host": "h", "process": p}));
        // No event class has a top-level `container` in OCSF 1.4.0.
        assert!(exec.get("container").is_none(), "{exec}");
        assert_eq!(
            (&exec["process"]["container"]["uid"], &exec["metadata"]["profiles"]),
            (&json!("c0ffee"), &json!(["host", "container"]))
        );
        let connect = ocsf(json!({"kind": "network.connect", "host": "h", "process": p, "connect": {}}));
        assert_eq!(connect["actor"]["process"]["container"]["uid"], "c0ffee", "{connect}");
        let activity = ocsf(json!({"kind": "process.activity", "host": "h", "process": p}));
        assert_eq!(activity["actor"]["process"]["container"]["uid"], "c0ffee", "{activity}");
        let none =
            ocsf(json!({"kind": "process.exec", "host": "h", "process": {"pid": 1, "container_id": null}}));
        assert_eq!(none["metadata"]["profiles"], json!(["host"]));
    }

    #[test]
    fn base_events_name_the_native_kind() {
        let h = ocsf(json!({"kind": "tracer.health", "health": {"status": "running"}}));
        assert_eq!((&h["class_uid"], &h["activity_id"], &h["type_uid"]), (&json!(0), &json!(99), &json!(99)));
        assert_eq!(h["activity_name"], "tracer.health");
        assert_eq!(h["unmapped"]["tracer"]["health"]["status"], "running");
    }
}
