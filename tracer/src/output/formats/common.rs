//! Shared by the ECS and OCSF mappings: reading a native record without
//! trusting its shape, and building output in which an absent value is left
//! out, never written as null.

use std::net::IpAddr;

use super::json::{Json, Obj};

/// Fields every native record has at its top level; any other top-level field
/// is the record's body (`exec`, `connect`, `activity`, …).
pub(super) const ENVELOPE: [&str; 6] = ["schema", "kind", "host", "time", "mono_ns", "process"];

/// The value at `path`; JSON null counts as absent.
pub(super) fn at<'a, 'j>(v: &'a Json<'j>, path: &[&str]) -> Option<&'a Json<'j>> {
    path.iter().try_fold(v, |v, k| v.get(k)).filter(|v| !v.is_null())
}

pub(super) fn str_at<'a>(v: &'a Json, path: &[&str]) -> Option<&'a str> {
    at(v, path)?.as_str()
}

pub(super) fn u64_at(v: &Json, path: &[&str]) -> Option<u64> {
    at(v, path)?.as_u64()
}

/// A process's exit code as shells and ECS's example (137) give it: its
/// status, or 128 + the signal that ended it.
pub(super) fn exit_code(exit: &Json) -> Option<u64> {
    u64_at(exit, &["code"]).or_else(|| u64_at(exit, &["signal"]).map(|s| 128 + s))
}

pub(super) fn f64_at(v: &Json, path: &[&str]) -> Option<f64> {
    at(v, path)?.as_f64()
}

pub(super) fn bool_at(v: &Json, path: &[&str]) -> Option<bool> {
    at(v, path)?.as_bool()
}

/// The elements of the array at `path` (none for anything else).
pub(super) fn array_at<'a, 'j>(v: &'a Json<'j>, path: &[&str]) -> &'a [Json<'j>] {
    at(v, path).and_then(Json::as_array).unwrap_or_default()
}

/// The string elements of the array at `path` (others are skipped).
pub(super) fn strings_at<'a>(v: &'a Json, path: &[&str]) -> Vec<&'a str> {
    array_at(v, path).iter().filter_map(Json::as_str).collect()
}

/// The record's body fields: everything outside the envelope.
pub(super) fn body<'a, 'j>(record: &'a Json<'j>) -> impl Iterator<Item = (&'a str, &'a Json<'j>)> {
    record.as_object().into_iter().flat_map(Obj::iter).filter(|(k, _)| !ENVELOPE.contains(k))
}

/// Sets the dot-separated `path` in `root`, creating objects on the way.
/// `None` and null leave `root` as it was.
pub(super) fn put<'a>(root: &mut Obj<'a>, path: &'a str, value: Option<Json<'a>>) {
    // A byte loop: paths are too short for `split('.')`'s memchr to pay.
    let mut rest = Some(path);
    let keys = std::iter::from_fn(|| {
        let r = rest?;
        let (key, tail) = match r.bytes().position(|b| b == b'.') {
            Some(i) => (&r[..i], Some(&r[i + 1..])),
            None => (r, None),
        };
        rest = tail;
        Some(key)
    });
    put_in(root, keys, value);
}

/// `put` with the path given as keys, for keys that may contain dots.
pub(super) fn put_at<'a>(root: &mut Obj<'a>, keys: &[&'a str], value: Option<Json<'a>>) {
    put_in(root, keys.iter().copied(), value);
}

fn put_in<'a>(root: &mut Obj<'a>, mut keys: impl Iterator<Item = &'a str>, value: Option<Json<'a>>) {
    let (Some(value), Some(mut key)) = (value.filter(|v| !v.is_null()), keys.next()) else { return };
    let mut obj = root;
    for next in keys {
        let slot = obj.slot(key);
        if !slot.is_object() {
            *slot = Json::Object(Obj::new());
        }
        let Json::Object(inner) = slot else { return };
        (obj, key) = (inner, next);
    }
    obj.insert(key, value);
}

/// A copy of `v` without nulls (object members and array elements), so
/// native bodies copied into the output keep the no-null rule; `None` for
/// null. Strings are borrowed, not copied.
pub(super) fn strip_nulls<'a>(v: &'a Json) -> Option<Json<'a>> {
    Some(match v {
        Json::Null => return None,
        // Members pushed as they are: `sort` resolves a duplicate key.
        Json::Object(m) => Json::Object(Obj::from_members(
            m.iter().filter_map(|(k, v)| Some((k.into(), strip_nulls(v)?))).collect(),
        )),
        Json::Array(a) => Json::Array(a.iter().filter_map(strip_nulls).collect()),
        Json::String(s) => Json::from(s.as_ref()),
        Json::Bool(b) => Json::Bool(*b),
        Json::Number(n) => Json::Number(n.clone()),
        Json::Written(t) => Json::Written(t.clone()),
        Json::Kept(k) => Json::Kept(k.clone()),
    })
}

/// The objects of the array at `path`, each made by `fill` into a new
/// object; items `fill` gives up on (None) or leaves empty are left out.
pub(super) fn map_objects<'a>(
    v: &'a Json,
    path: &[&str],
    fill: impl Fn(&'a Json, &mut Obj<'a>) -> Option<()>,
) -> Vec<Json<'a>> {
    array_at(v, path)
        .iter()
        .filter_map(|item| {
            let mut m = Obj::new();
            fill(item, &mut m)?;
            object(m)
        })
        .collect()
}

/// An object built with `put`, or none when nothing was known to put in it.
pub(super) fn object(m: Obj) -> Option<Json> {
    (!m.is_empty()).then_some(Json::Object(m))
}

/// A list of strings, or none when it is empty.
pub(super) fn strings<'a>(items: &[&'a str]) -> Option<Json<'a>> {
    (!items.is_empty()).then(|| items.to_vec().into())
}

pub(super) fn some_str(s: Option<&str>) -> Option<Json<'_>> {
    s.map(Json::from)
}

pub(super) fn some_u64(n: Option<u64>) -> Option<Json<'static>> {
    n.map(Json::from)
}

/// argv joined by spaces, as a command line (argv keeps the exact boundaries).
pub(super) fn command_line(argv: &[&str]) -> Option<String> {
    (!argv.is_empty()).then(|| argv.join(" "))
}

pub(super) fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `/a/b` of `/a/b/c`; `/` of `/c`; none for a bare name.
pub(super) fn dirname(path: &str) -> Option<&str> {
    match path.rfind('/')? {
        0 => Some("/"),
        i => path.get(..i),
    }
}

/// `safetensors` of `model.safetensors`, without the dot (ECS `file.extension`);
/// none for dotfiles and names without one.
pub(super) fn extension(path: &str) -> Option<&str> {
    let name = basename(path);
    match name.rfind('.') {
        Some(i) if i > 0 && i + 1 < name.len() => name.get(i + 1..),
        _ => None,
    }
}

/// 4 or 6 for an IP address in text, none for anything else.
pub(super) fn ip_version(addr: &str) -> Option<u8> {
    match addr.parse::<IpAddr>().ok()? {
        IpAddr::V4(_) => Some(4),
        IpAddr::V6(_) => Some(6),
    }
}

/// Milliseconds since the Unix epoch of an RFC 3339 time (the native `time`,
/// `2026-11-21T18:41:34.212761124Z`); none for anything it cannot read.
pub(crate) fn epoch_ms(s: &str) -> Option<i64> {
    let digits = |from: usize, to: usize| -> Option<i64> {
        let t = s.get(from..to)?;
        if t.bytes().all(|c| c.is_ascii_digit()) { t.parse().ok() } else { None }
    };
    let sep = |i: usize, allowed: &[u8]| s.as_bytes().get(i).is_some_and(|c| allowed.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 7)?, digits(8, 10)?);
    let (hour, min, sec) = (digits(11, 13)?, digits(14, 16)?, digits(17, 19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut rest = s.get(19..)?;
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        // First three digits, padded: ".5" is 500 ms.
        millis = frac
            .bytes()
            .take(n.min(3))
            .chain(std::iter::repeat(b'0'))
            .take(3)
            .fold(0, |acc, c| acc * 10 + i64::from(c - b'0'));
        rest = frac.get(n..)?;
    }
    let offset_s = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = rest.get(1..)?.split_once(':')?;
            if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|c| c.is_ascii_digit()) {
                return None;
            }
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60)
        }
    };
    // Days from civil (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms").
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_s;
    Some(secs * 1000 + millis)
}

/// A verdict's severity on OCSF's `severity_id` scale, also used for ECS
/// `event.severity`: informational unless it calls for attention, then by
/// confidence (the thresholds are the tracer's, not either schema's).
pub(super) fn verdict_severity(alert: bool, confidence: f64) -> (u64, &'static str) {
    match (alert, confidence) {
        (false, _) => (1, "Informational"),
        (true, c) if c >= 0.8 => (4, "High"),
        (true, c) if c >= 0.5 => (3, "Medium"),
        (true, _) => (2, "Low"),
    }
}

/// The category of a verdict that calls for attention, with its confidence:
/// the first of `categories` with `alert` (a training job that also mines
/// alerts for the mining), or, in records written before verdicts had
/// several categories, the verdict's own.
pub(super) fn alerting_category<'a>(v: &'a Json) -> Option<(&'a str, f64)> {
    if let Some(list) = v.get("categories").and_then(Json::as_array) {
        let alerts = |c: &&Json| c.get("alert").and_then(Json::as_bool) == Some(true);
        // Mining first: a declared farm that also runs a node alerts for both.
        let mining = list
            .iter()
            .filter(alerts)
            .find(|c| c.get("category").and_then(Json::as_str) == Some("crypto_mining"));
        return mining.or_else(|| list.iter().find(alerts)).and_then(|c| {
            Some((c.get("category")?.as_str()?, c.get("confidence").and_then(Json::as_f64).unwrap_or(0.0)))
        });
    }
    (v.get("alert").and_then(Json::as_bool) == Some(true)).then(|| {
        (
            v.get("category").and_then(Json::as_str).unwrap_or(""),
            v.get("confidence").and_then(Json::as_f64).unwrap_or(0.0),
        )
    })
}

/// Every category of a verdict, the primary first.
pub(super) fn verdict_categories<'a>(v: &'a Json) -> Vec<&'a str> {
    match v.get("categories").and_then(Json::as_array) {
        Some(list) => list.iter().filter_map(|c| c.get("category")?.as_str()).collect(),
        None => v.get("category").and_then(Json::as_str).into_iter().collect(),
    }
}

/// A MITRE ATT&CK technique a verdict category stands for.
pub(super) struct Attack {
    pub tactic_id: &'static str,
    pub tactic_name: &'static str,
    pub technique_id: &'static str,
    pub technique_name: &'static str,
}

/// Only unsanctioned mining has an honest ATT&CK equivalent: T1496 Resource
/// Hijacking (tactic TA0040 Impact). AI training, inference, blockchain nodes
/// and storage are workloads, not techniques.
pub(super) fn attack_for(category: &str) -> Option<Attack> {
    (category == "crypto_mining").then_some(Attack {
        tactic_id: "TA0040",
        tactic_name: "Impact",
        technique_id: "T1496",
        technique_name: "Resource Hijacking",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_to_epoch_ms() {
        assert_eq!(epoch_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(epoch_ms("1970-01-01T00:00:00.000000000Z"), Some(0));
        assert_eq!(epoch_ms("2000-02-29T12:34:56.000000007Z"), Some(951_827_696_000));
        assert_eq!(epoch_ms("2026-11-21T00:00:00.123000000Z"), Some(1_795_219_200_123));
        assert_eq!(epoch_ms("2026-11-21T00:00:00.5Z"), Some(1_795_219_200_500));
        assert_eq!(epoch_ms("2026-11-21T01:00:00+01:00"), Some(1_795_219_200_000));
        assert_eq!(epoch_ms("1969-12-31T23:59:59Z"), Some(-1000));
        for bad in
            ["", "t1", "2026-11-21", "2026-13-21T00:00:00Z", "2026-11-21T00:00:00", "2026-11-21T00:00:00.Z"]
        {
            assert_eq!(epoch_ms(bad), None, "{bad}");
        }
        assert_eq!(epoch_ms("2026-11-21T00:00:00.1€Z"), None);
    }

    #[test]
    fn paths() {
        assert_eq!(
            (basename("/a/b.c"), dirname("/a/b.c"), extension("/a/b.c")),
            ("b.c", Some("/a"), Some("c"))
        );
        assert_eq!(
            (dirname("/msr"), extension("/dev/cpu/0/msr"), extension("/x/.hidden")),
            (Some("/"), None, None)
        );
        assert_eq!((dirname("name"), extension("name."), basename("")), (None, None, ""));
    }

    #[test]
    fn put_nests_and_skips_absent() {
        let mut m = Obj::new();
        put(&mut m, "a.b.c", Some(Json::from(1u64)));
        put(&mut m, "a.b.d", None);
        put(&mut m, "a.e", Some(Json::Null));
        put_at(&mut m, &["a", "x.y"], Some(Json::from(2u64)));
        put(&mut m, "top", Some(Json::from("level")));
        let mut built = Json::Object(m);
        built.sort();
        assert_eq!(serde_json::to_string(&built).unwrap(), r#"{"a":{"b":{"c":1},"x.y":2},"top":"level"}"#);
    }
}
