//! Record formats: the native `tracer.v1` records as they are, or mapped to
//! the Elastic Common Schema or to OCSF for a SIEM that expects one of those.
//!
//! Each mapping is a pure function of one native record (no clock, no host
//! lookups), so a saved capture converts the same way as a live stream. It
//! never panics: a record of an unknown kind, with fields missing or of the
//! wrong type, or not an object at all, still gives a well-formed event.
//! Absent values are left out, never written as null. What the target schema
//! has no field for stays in a `tracer` object (ECS `tracer.*`, OCSF
//! `unmapped.tracer.*`), including the native schema version and the native
//! body, so nothing is lost.
//!
//! | kind                   | ECS category / type         | OCSF class, activity                          |
//! |------------------------|-----------------------------|-----------------------------------------------|
//! | process.exec, .fork    | process / start             | Process Activity 1007, Launch 1               |
//! | process.exit           | process / end               | Process Activity 1007, Terminate 2            |
//! | network.connect        | network / connection, start | Network Activity 4001, Open 1/Refuse 5/Fail 4 |
//! | network.listen         | network / start             | Network Activity 4001, Listen 7               |
//! | network.first_bytes    | network / protocol          | Network Activity 4001, Traffic 6              |
//! | network.dns            | network / protocol          | DNS Activity 4003, Query 1/Response 2         |
//! | file.open              | file / access or change     | File System Activity 1001, Open 14/Rename 5   |
//! | classification         | intrusion_detection / info  | Detection Finding 2004, Create 1/Update 2     |
//! | gpu.open, .activity    | driver / info               | Base Event 0, Other 99                        |
//! | *.activity             | process / info              | Base Event 0, Other 99                        |
//! | tracer.health/.capture | host / info                 | Base Event 0, Other 99                        |
//!
//! File renames (reported as file.open with `renamed`) are ECS `change`. ECS
//! `event.kind` is `metric` for activity and health records, `state` for the
//! capture header, `alert` for a verdict calling for attention and `event`
//! otherwise.

mod common;
mod ecs;
mod json;
mod ocsf;

pub(crate) use common::epoch_ms;

use std::{fmt, ops::Range, rc::Rc, str::FromStr};

use common::{at, str_at};
use json::{Json, Obj};

/// The ECS release whose field names and categorization values are used.
pub const ECS_VERSION: &str = "8.11.0";

/// The OCSF schema release whose classes, ids and attributes are used.
pub const OCSF_VERSION: &str = "1.4.0";

/// How records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Format {
    /// The tracer's own records, unchanged.
    #[default]
    Native,
    /// Elastic Common Schema.
    Ecs,
    /// Open Cybersecurity Schema Framework.
    Ocsf,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Ecs => "ecs",
            Self::Ocsf => "ocsf",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "native" => Ok(Self::Native),
            "ecs" => Ok(Self::Ecs),
            "ocsf" => Ok(Self::Ocsf),
            _ => Err(format!("unknown record format {s:?}: choose native, ecs or ocsf")),
        }
    }
}

/// What a record's process gives its event, apart from the rest: made once
/// for the many records of one process (see `write_shared`).
#[derive(Default)]
pub(super) struct ProcessPart<'a> {
    /// Sorted (`Json::sort`) before the event is written.
    pub members: Obj<'a>,
    /// The process is in a container (OCSF's container profile).
    pub in_container: bool,
}

/// One schema's mapping, in its two halves.
struct Mapping {
    /// The part from the record's process, given the kind and the body of
    /// a fork.
    part: for<'a> fn(&str, &'a Json<'a>, &'a Json<'a>) -> ProcessPart<'a>,
    /// Kinds with the same part have the same role; none where the part
    /// depends on the body.
    role: fn(&str) -> Option<u8>,
    /// Everything else, given the part.
    rest: for<'a> fn(&'a Json<'a>, &ProcessPart) -> Obj<'a>,
}

fn mapping(format: Format) -> Option<Mapping> {
    match format {
        Format::Native => None,
        Format::Ecs => Some(Mapping { part: ecs::process_part, role: ecs::part_role, rest: ecs::convert }),
        Format::Ocsf => {
            Some(Mapping { part: ocsf::process_part, role: ocsf::part_role, rest: ocsf::convert })
        }
    }
}

/// Appends one native record, the JSON text the tracer wrote, in `format`
/// to `out` (written straight into it: an event was made in a buffer of
/// its own and copied). Any JSON maps to an event; text that is not JSON
/// is an error, and leaves `out` as it was.
pub fn write(format: Format, native: &[u8], out: &mut Vec<u8>) -> serde_json::Result<()> {
    let Some(m) = mapping(format) else {
        out.extend_from_slice(native);
        return Ok(());
    };
    let record = read(native)?;
    let kind = str_at(&record, &["kind"]).unwrap_or_default();
    let mut part = match at(&record, &["process"]).filter(|p| p.is_object()) {
        Some(p) => (m.part)(kind, p, at(&record, &["fork"]).unwrap_or(&Json::Null)),
        None => ProcessPart::default(),
    };
    part.members.sort();
    write_event(&m, &record, &part, native.len(), out)
}

/// A record's process as `Record::to_line` wrote it: the bytes of
/// `,"process":…` in the line, and the text shared by the records of one
/// thread that they copy.
pub struct SharedProcess {
    pub span: Range<usize>,
    pub text: Rc<[u8]>,
}

/// `write` for a record whose process text is shared: the event's part
/// from that process is made once and kept in `parts`, and only the rest
/// of the line is read. The same event, byte for byte; a connect storm's
/// records were mostly their process.
pub fn write_shared(
    format: Format,
    native: &[u8],
    process: &SharedProcess,
    parts: &mut PartCache,
    out: &mut Vec<u8>,
) -> serde_json::Result<()> {
    let Some(m) = mapping(format) else { return write(format, native, out) };
    let Some(cut) = native.get(..process.span.start).zip(native.get(process.span.end..)) else {
        return write(format, native, out);
    };
    let mut rest = Vec::with_capacity(cut.0.len() + cut.1.len());
    rest.extend_from_slice(cut.0);
    rest.extend_from_slice(cut.1);
    let record = read(&rest)?;
    let kind = str_at(&record, &["kind"]).unwrap_or_default();
    let Some(role) = (m.role)(kind) else { return write(format, native, out) };
    let part = parts.get_or_make(format, role, &process.text, |text| {
        let (p, no_fork) = (read(text)?, Json::Null);
        let mut part = (m.part)(kind, &p, &no_fork);
        part.members.sort();
        Ok(ProcessPart { members: part.members.into_written(), in_container: part.in_container })
    })?;
    write_event(&m, &record, part, native.len(), out)
}

/// Native JSON text, checked as UTF-8 in one pass, not string by string.
fn read(native: &[u8]) -> serde_json::Result<Json<'_>> {
    serde_json::from_str(std::str::from_utf8(native).map_err(serde::de::Error::custom)?)
}

fn write_event(
    m: &Mapping,
    record: &Json,
    part: &ProcessPart,
    native_len: usize,
    out: &mut Vec<u8>,
) -> serde_json::Result<()> {
    let mut event = (m.rest)(record, part);
    event.sort();
    out.reserve(native_len * 2);
    event.write_merged(&part.members, out);
    Ok(())
}

/// The process parts of the processes whose records were written last, by
/// the shared text they came from (held, so the pointer stays theirs).
#[derive(Default)]
pub struct PartCache {
    parts: Vec<(Rc<[u8]>, Format, u8, ProcessPart<'static>)>,
    next: usize,
}

impl PartCache {
    /// Processes whose parts are kept; a connect storm or a busy server has
    /// a few threads writing at once.
    const KEPT: usize = 32;

    fn get_or_make(
        &mut self,
        format: Format,
        role: u8,
        text: &Rc<[u8]>,
        make: impl FnOnce(&[u8]) -> serde_json::Result<ProcessPart<'static>>,
    ) -> serde_json::Result<&ProcessPart<'static>> {
        let found =
            self.parts.iter().position(|(t, f, r, _)| Rc::ptr_eq(t, text) && *f == format && *r == role);
        let i = match found {
            Some(i) => i,
            None => {
                let entry = (text.clone(), format, role, make(text)?);
                if self.parts.len() < Self::KEPT {
                    self.parts.push(entry);
                    self.parts.len() - 1
                } else {
                    let i = self.next;
                    self.next = (self.next + 1) % Self::KEPT;
                    self.parts[i] = entry;
                    i
                }
            }
        };
        Ok(&self.parts[i].3)
    }
}

/// One native record held as a Value, in `format`, as a Value (what the
/// tracer writes goes through `write`, from the text).
pub fn convert(format: Format, record: &serde_json::Value) -> serde_json::Value {
    if format == Format::Native {
        return record.clone();
    }
    let mut out = Vec::new();
    // A Value is always JSON, and so is every event made of one.
    write(format, &serde_json::to_vec(record).expect("a Value is JSON"), &mut out).expect("JSON maps");
    serde_json::from_slice(&out).expect("an event is JSON")
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::{Value, json};

    use super::*;

    /// Every kind the tracer writes; each has a native, an ECS and an OCSF fixture.
    const KINDS: [&str; 18] = [
        "process.exec",
        "process.fork",
        "process.exit",
        "network.connect",
        "network.dns",
        "network.first_bytes",
        "network.listen",
        "file.open",
        "process.executable",
        "gpu.open",
        "gpu.activity",
        "process.activity",
        "tree.activity",
        "container.activity",
        "tracer.health",
        "classification",
        "tracer.capture",
        "host.summary",
    ];

    /// `FORMATS_FIXTURES` overrides the folder, for running these tests
    /// outside the workspace.
    fn fixtures() -> PathBuf {
        std::env::var_os("FORMATS_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/formats/").into())
    }

    fn fixture(name: &str) -> Value {
        let path = fixtures().join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Every JSON path where `actual` differs from `expected`: missing,
    /// unexpected, or a different value (`4` and `4.0` differ: integer or
    /// float is part of the schema).
    fn diff(path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>) {
        match (expected, actual) {
            (Value::Object(e), Value::Object(a)) => {
                for (k, ev) in e {
                    match a.get(k) {
                        Some(av) => diff(&format!("{path}.{k}"), ev, av, out),
                        None => out.push(format!("{path}.{k}: missing (expected {ev})")),
                    }
                }
                for (k, av) in a.iter().filter(|(k, _)| !e.contains_key(*k)) {
                    out.push(format!("{path}.{k}: unexpected {av}"));
                }
            }
            (Value::Array(e), Value::Array(a)) => {
                for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                    diff(&format!("{path}[{i}]"), ev, av, out);
                }
                for (i, ev) in e.iter().enumerate().skip(a.len()) {
                    out.push(format!("{path}[{i}]: missing (expected {ev})"));
                }
                for (i, av) in a.iter().enumerate().skip(e.len()) {
                    out.push(format!("{path}[{i}]: unexpected {av}"));
                }
            }
            (e, a) if e != a => out.push(format!("{path}: expected {e}, got {a}")),
            _ => {}
        }
    }

    /// Objects left empty by the mapping (the copied native bodies under
    /// `tracer` and `unmapped` may hold empty objects of their own).
    fn empty_objects(path: &str, v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) if m.is_empty() => out.push(path.to_string()),
            Value::Object(m) => m
                .iter()
                .filter(|(k, _)| !(path == "$" && (*k == "tracer" || *k == "unmapped")))
                .for_each(|(k, v)| empty_objects(&format!("{path}.{k}"), v, out)),
            Value::Array(a) => {
                a.iter().enumerate().for_each(|(i, v)| empty_objects(&format!("{path}[{i}]"), v, out))
            }
            _ => {}
        }
    }

    /// Paths holding null anywhere in `v`.
    fn nulls(path: &str, v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Null => out.push(path.to_string()),
            Value::Object(m) => m.iter().for_each(|(k, v)| nulls(&format!("{path}.{k}"), v, out)),
            Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| nulls(&format!("{path}[{i}]"), v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_kind_maps_field_by_field_to_its_fixtures() {
        let mut problems = Vec::new();
        for kind in KINDS {
            let native = fixture(&format!("{kind}.native.json"));
            assert_eq!(native["kind"], kind, "{kind}.native.json holds a {} record", native["kind"]);
            for format in [Format::Ecs, Format::Ocsf] {
                let name = format!("{kind}.{format}.json");
                let expected = expected(kind, format);
                let actual = convert(format, &native);
                let mut diffs = Vec::new();
                diff("$", &expected, &actual, &mut diffs);
                nulls("$", &actual, &mut diffs);
                empty_objects("$", &actual, &mut diffs);
                problems.extend(diffs.into_iter().map(|d| format!("{name}: {d}")));
            }
        }
        assert!(problems.is_empty(), "{} differences:\n{}", problems.len(), problems.join("\n"));
    }

    /// The `format` fixture of `kind`.
    fn expected(kind: &str, format: Format) -> Value {
        let mut expected = fixture(&format!("{kind}.{format}.json"));
        if format == Format::Ocsf {
            // The product version is the crate's own; fixtures outlive releases.
            expected["metadata"]["product"]["version"] = json!(env!("CARGO_PKG_VERSION"));
        }
        expected
    }

    /// From the native fixture's text (members in the tracer's order) to
    /// the text serde_json writes for the expected event: members in key
    /// order at every level, as events have always been written.
    #[test]
    fn every_kind_is_written_byte_for_byte() {
        for kind in KINDS {
            let path = fixtures().join(format!("{kind}.native.json"));
            let native = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for format in [Format::Ecs, Format::Ocsf] {
                let mut out = Vec::new();
                write(format, &native, &mut out).unwrap();
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    expected(kind, format).to_string(),
                    "{kind} {format}"
                );
            }
        }
    }

    /// `native` as the tracer writes a record whose process text is shared:
    /// the process a member of its own (last here), and where it is.
    fn shared_line(native: &Value) -> Option<(Vec<u8>, SharedProcess)> {
        let mut rest = native.as_object()?.clone();
        let process = rest.remove("process")?;
        let mut line = serde_json::to_vec(&rest).unwrap();
        line.pop();
        let start = line.len();
        line.extend_from_slice(if rest.is_empty() { b"\"process\":" } else { b",\"process\":" });
        let text: Rc<[u8]> = serde_json::to_vec(&process).unwrap().into();
        line.extend_from_slice(&text);
        let span = start..line.len();
        line.push(b'}');
        Some((line, SharedProcess { span, text }))
    }

    /// The process part made once and kept gives the same bytes as the
    /// whole record read, first and second time, whatever kind came before:
    /// one process text shared by records of every kind, as one thread's
    /// records share it (a part kept for one kind must not serve another
    /// whose part differs).
    #[test]
    fn a_shared_process_gives_the_same_event() {
        let mut parts = PartCache::default();
        let one_process = fixture("process.exec.native.json")["process"].clone();
        let text: Rc<[u8]> = serde_json::to_vec(&one_process).unwrap().into();
        for round in 0..2 {
            for format in [Format::Ecs, Format::Ocsf] {
                for kind in KINDS {
                    let mut native = fixture(&format!("{kind}.native.json"));
                    if native.get("process").is_none() {
                        continue;
                    }
                    native["process"] = one_process.clone();
                    let Some((line, mut process)) = shared_line(&native) else { continue };
                    process.text = text.clone();
                    let (mut whole, mut shared) = (Vec::new(), Vec::new());
                    write(format, &line, &mut whole).unwrap();
                    write_shared(format, &line, &process, &mut parts, &mut shared).unwrap();
                    assert_eq!(
                        String::from_utf8(shared).unwrap(),
                        String::from_utf8(whole).unwrap(),
                        "{kind} {format} round {round}"
                    );
                }
            }
        }
    }

    /// Merging on write is putting the lower object's values first and the
    /// upper's after: objects merge, the upper's value wins otherwise.
    #[test]
    fn merged_objects_are_written_as_one() {
        let read = |t: &'static str| {
            let mut j: Json = serde_json::from_str(t).unwrap();
            j.sort();
            j
        };
        let upper = read(r#"{"b": {"y": 2, "z": {"q": 1}}, "d": 4, "a": 1, "e": {"k": 1}}"#);
        let lower = read(r#"{"b": {"x": 1, "y": 9, "z": 3}, "c": [1], "e": 5, "0": {}}"#);
        let (Json::Object(u), Json::Object(l)) = (&upper, &lower) else { unreachable!() };
        let mut out = Vec::new();
        u.write_merged(l, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"0":{},"a":1,"b":{"x":1,"y":2,"z":{"q":1}},"c":[1],"d":4,"e":{"k":1}}"#
        );
        let mut out = Vec::new();
        Obj::new().write_merged(&Obj::new(), &mut out);
        assert_eq!(out, b"{}");
    }

    /// Text that is not JSON is an error, never an event.
    #[test]
    fn text_that_is_not_json_is_an_error() {
        for bad in [&b"{\"kind\": "[..], b"", b"{\"kind\": \"\xff\"}", b"{} {}"] {
            for format in [Format::Ecs, Format::Ocsf] {
                let err = write(format, bad, &mut Vec::new()).unwrap_err();
                assert!(!err.to_string().is_empty(), "{format} of {bad:?}");
            }
        }
    }

    #[test]
    fn every_output_carries_both_schema_versions() {
        for kind in KINDS {
            let native = fixture(&format!("{kind}.native.json"));
            let ecs = convert(Format::Ecs, &native);
            assert_eq!(
                (&ecs["ecs"]["version"], &ecs["tracer"]["schema"]),
                (&json!(ECS_VERSION), &native["schema"])
            );
            let ocsf = convert(Format::Ocsf, &native);
            assert_eq!(
                (&ocsf["metadata"]["version"], &ocsf["unmapped"]["tracer"]["schema"]),
                (&json!(OCSF_VERSION), &native["schema"])
            );
            assert_eq!(convert(Format::Native, &native), native);
        }
    }

    /// Sparse, null-filled, mistyped and non-object input: no panic, an
    /// object out with the schema versions, and no nulls.
    #[test]
    fn odd_input_never_panics_and_never_writes_null() {
        let mut inputs =
            vec![json!(null), json!(7), json!("process.exec"), json!([1, null]), json!(true), json!({})];
        for kind in KINDS.iter().chain(&["no.such.kind", ""]) {
            inputs.push(json!({"kind": kind}));
            inputs.push(
                json!({"schema": "tracer.v1", "kind": kind, "host": null, "time": null, "mono_ns": null,
                               "process": null}),
            );
            // Every field of every fixture of this kind set to null, then to a wrong type.
            if let Ok(text) = std::fs::read_to_string(fixtures().join(format!("{kind}.native.json"))) {
                let real: Value = serde_json::from_str(&text).unwrap();
                inputs.push(replace_leaves(&real, &json!(null)));
                inputs.push(replace_leaves(&real, &json!({"unexpected": [null]})));
                inputs.push(replace_leaves(&real, &json!(-1)));
                inputs.push(replace_leaves(&real, &json!("")));
                inputs.push(replace_leaves(&real, &json!(1e300)));
            }
            inputs.push(json!({"kind": kind, "process": {"argv": "not an array", "parent": 3, "uid": "x"},
                               "time": "yesterday", "connect": [], "dns": {"questions": [null, 1]},
                               "classification": {"evidence": "none", "confidence": "high"}}));
        }
        let mut parts = PartCache::default();
        for input in &inputs {
            for format in [Format::Ecs, Format::Ocsf] {
                if let Some((line, process)) = shared_line(input) {
                    let (mut whole, mut shared) = (Vec::new(), Vec::new());
                    write(format, &line, &mut whole).unwrap();
                    write_shared(format, &line, &process, &mut parts, &mut shared).unwrap();
                    assert_eq!(shared, whole, "{format} of {input}, its process shared");
                }
                let out = convert(format, input);
                assert!(out.is_object(), "{format} of {input}: {out}");
                let version =
                    if format == Format::Ecs { &out["ecs"]["version"] } else { &out["metadata"]["version"] };
                assert!(version.is_string(), "{format} of {input}: {out}");
                let mut found = Vec::new();
                nulls("$", &out, &mut found);
                assert!(found.is_empty(), "{format} of {input}: null at {found:?}");
                empty_objects("$", &out, &mut found);
                assert!(found.is_empty(), "{format} of {input}: empty object at {found:?}");
            }
        }
    }

    /// `v` with every scalar (keeping "kind", so the mapping is exercised)
    /// replaced by `with`.
    fn replace_leaves(v: &Value, with: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), if k == "kind" { v.clone() } else { replace_leaves(v, with) }))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(|v| replace_leaves(v, with)).collect()),
            _ => with.clone(),
        }
    }

    #[test]
    fn formats_parse_by_name() {
        for f in [Format::Native, Format::Ecs, Format::Ocsf] {
            assert_eq!(f.name().parse::<Format>(), Ok(f));
        }
        assert_eq!("ECS".parse::<Format>(), Ok(Format::Ecs));
        let err = "cef".parse::<Format>().unwrap_err();
        assert!(["native", "ecs", "ocsf", "cef"].iter().all(|w| err.contains(w)), "{err}");
    }
}
