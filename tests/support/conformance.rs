//! ECS and OCSF records checked against the official definitions, reduced
//! by `cargo xtask schemas` into tests/fixtures/schemas/ (ECS 8.11.0's
//! ecs_flat.yml, OCSF 1.4.0's classes, objects and dictionary), not
//! against fixtures the mapper wrote.
//!
//! ECS: every leaf outside `tracer.*` is a field of the reference, of its
//! type, an array only where the field is array-normalised, with allowed
//! values for `event.kind/category/type/outcome` and only the event types
//! each category expects; `@timestamp` and `ecs.version` present.
//!
//! OCSF, following the OCSF server's validator: every attribute exists in
//! the class or object (a profile's only when the record declares it in
//! `metadata.profiles`), has its dictionary type, is an array exactly when
//! the schema says, has an enum value the schema lists; required
//! attributes are present; `at_least_one` / `just_one` constraints hold;
//! `type_uid` = `class_uid` × 100 + `activity_id`. Anything is allowed
//! under `unmapped`.

#![allow(dead_code)]

use std::sync::OnceLock;

use serde_json::{Map, Value};

fn load(name: &str) -> Value {
    let path = super::repo().join("tests/fixtures/schemas").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ecs_schema() -> &'static Value {
    static S: OnceLock<Value> = OnceLock::new();
    S.get_or_init(|| load("ecs-8.11.0.json"))
}

fn ocsf_schema() -> &'static Value {
    static S: OnceLock<Value> = OnceLock::new();
    S.get_or_init(|| load("ocsf-1.4.0.json"))
}

/// What is wrong with an ECS document, one line per problem.
pub fn ecs(doc: &Value) -> Vec<String> {
    let schema = ecs_schema();
    let mut out = Vec::new();
    for required in ["@timestamp", "ecs.version"] {
        if leaf(doc, required).is_none() {
            out.push(format!("{required}: missing"));
        }
    }
    let mut leaves = Vec::new();
    ecs_leaves("", doc, &mut leaves);
    for (path, value) in leaves {
        if path == "tracer" || path.starts_with("tracer.") {
            continue;
        }
        let Some(field) = schema["fields"].get(&path) else {
            out.push(format!("{path}: not an ECS 8.11 field"));
            continue;
        };
        let ty = field["type"].as_str().unwrap_or("");
        let items: Vec<&Value> = match &value {
            Value::Array(a) => {
                if field["array"] != true {
                    out.push(format!("{path}: an array, but ECS keeps one {ty} value here"));
                }
                a.iter().collect()
            }
            v => vec![v],
        };
        for v in items {
            if !ecs_type_ok(ty, v) {
                out.push(format!("{path}: {v} is not of ECS type {ty}"));
            }
            if let Some(allowed) = schema["allowed_values"][&path].as_array()
                && !allowed.contains(v)
            {
                out.push(format!("{path}: {v} is not an allowed value"));
            }
        }
    }
    let strings = |p: &str| -> Vec<String> {
        match leaf(doc, p) {
            Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        }
    };
    for category in strings("event.category") {
        let expected = schema["expected_event_types"][&category].as_array().cloned().unwrap_or_default();
        for t in strings("event.type") {
            if !expected.iter().any(|e| e == &Value::String(t.clone())) {
                out.push(format!("event.type {t} is not one event.category {category} expects"));
            }
        }
    }
    out
}

/// Dotted paths to leaves; an array of objects is walked element by
/// element (ECS has no such fields but `threat.*` style arrays of scalars).
fn ecs_leaves(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                ecs_leaves(&path, v, out);
            }
        }
        Value::Array(a) if a.iter().any(Value::is_object) => {
            for item in a {
                ecs_leaves(prefix, item, out);
            }
        }
        leaf => out.push((prefix.to_string(), leaf.clone())),
    }
}

fn leaf<'a>(doc: &'a Value, dotted: &str) -> Option<&'a Value> {
    // Flat keys ("@timestamp") or nested objects.
    if let Some(v) = doc.get(dotted) {
        return Some(v);
    }
    dotted.split('.').try_fold(doc, |v, k| v.get(k))
}

fn ecs_type_ok(ty: &str, v: &Value) -> bool {
    match ty {
        "keyword" | "wildcard" | "match_only_text" | "text" | "constant_keyword" | "ip" | "date"
        | "version" => v.is_string(),
        "long" | "integer" | "short" | "byte" | "unsigned_long" => v.is_i64() || v.is_u64(),
        "float" | "double" | "half_float" | "scaled_float" => v.is_number(),
        "boolean" => v.is_boolean(),
        "object" | "flattened" | "nested" => v.is_object(),
        _ => true,
    }
}

/// What is wrong with an OCSF event, one line per problem.
pub fn ocsf(event: &Value) -> Vec<String> {
    let schema = ocsf_schema();
    let mut out = Vec::new();
    let Some(class_uid) = event["class_uid"].as_u64() else {
        return vec!["class_uid: missing".into()];
    };
    let Some(class) = schema["classes"].get(class_uid.to_string()) else {
        return vec![format!("class_uid {class_uid}: not a class the reduced schema holds")];
    };
    match (event["type_uid"].as_u64(), event["activity_id"].as_u64()) {
        (Some(t), Some(a)) if t == class_uid * 100 + a => {}
        (t, a) => out.push(format!("type_uid {t:?} is not class_uid {class_uid} × 100 + activity_id {a:?}")),
    }
    let profiles: Vec<&str> = event
        .pointer("/metadata/profiles")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let Some(obj) = event.as_object() else { return vec!["not an object".into()] };
    check_object("", obj, class, &profiles, &mut out);
    out
}

fn check_object(path: &str, obj: &Map<String, Value>, def: &Value, profiles: &[&str], out: &mut Vec<String>) {
    let attrs = &def["attributes"];
    let active = |a: &Value| a["profile"].as_str().is_none_or(|p| profiles.contains(&p));
    for (k, v) in obj {
        let here = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
        let Some(a) = attrs.get(k).filter(|a| active(a)) else {
            let gated = attrs.get(k).and_then(|a| a["profile"].as_str());
            out.push(match gated {
                Some(p) => format!("{here}: needs profile {p} in metadata.profiles"),
                None => format!("{here}: unknown attribute"),
            });
            continue;
        };
        let array = a["array"] == true;
        let items: Vec<&Value> = match (v, array) {
            (Value::Array(items), true) => items.iter().collect(),
            (_, true) => {
                out.push(format!("{here}: must be an array"));
                continue;
            }
            (Value::Array(_), false) => {
                out.push(format!("{here}: an array, but the schema has one value"));
                continue;
            }
            (v, false) => vec![v],
        };
        for item in items {
            check_value(&here, item, a, profiles, out);
        }
    }
    for (k, a) in attrs.as_object().into_iter().flatten() {
        if a["requirement"] == "required" && active(a) && !obj.contains_key(k) {
            let here = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
            out.push(format!("{here}: required, missing"));
        }
    }
    let present = |names: &Value| {
        names
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n.as_str().is_some_and(|n| obj.contains_key(n)))
            .count()
    };
    let at = if path.is_empty() { "event" } else { path };
    if let Some(names) = def["constraints"].get("at_least_one")
        && present(names) == 0
    {
        out.push(format!("{at}: needs at least one of {names}"));
    }
    if let Some(names) = def["constraints"].get("just_one")
        && present(names) != 1
    {
        out.push(format!("{at}: needs exactly one of {names}"));
    }
}

fn check_value(path: &str, v: &Value, a: &Value, profiles: &[&str], out: &mut Vec<String>) {
    let schema = ocsf_schema();
    if let Some(object) = a["object"].as_str() {
        // `object` is the open-ended JSON object (unmapped and the like).
        if object == "object" {
            if !v.is_object() {
                out.push(format!("{path}: {v} is not an object"));
            }
            return;
        }
        match (v.as_object(), schema["objects"].get(object)) {
            (Some(m), Some(def)) => check_object(path, m, def, profiles, out),
            (None, _) => out.push(format!("{path}: {v} is not a {object} object")),
            (_, None) => out.push(format!("{path}: object {object} missing from the reduced schema")),
        }
        return;
    }
    let ty = a["type"].as_str().unwrap_or("");
    let base = schema["types"][ty]["base"].as_str().unwrap_or(ty);
    let ok = match base {
        "string_t" => v.is_string(),
        "integer_t" | "long_t" => v.is_i64() || v.is_u64(),
        "float_t" => v.is_number(),
        "boolean_t" => v.is_boolean(),
        "json_t" => true,
        "object_t" => v.is_object(),
        _ => true,
    };
    if !ok {
        out.push(format!("{path}: {v} is not of type {ty}"));
    }
    if let (Some(enums), Some(n)) =
        (a["enum"].as_array(), v.as_i64().map(|n| n.to_string()).or(v.as_str().map(str::to_string)))
        && !enums.iter().any(|e| e.as_str() == Some(&n))
    {
        out.push(format!("{path}: {v} is not one of the enum values {}", Value::Array(enums.clone())));
    }
    if let (Some(regex), Some(_s)) = (schema["types"][ty]["regex"].as_str(), v.as_str()) {
        // Regexes are checked for the types whose meaning is their format:
        // IP addresses are parsed instead, dates by shape.
        if ty == "ip_t" && v.as_str().is_some_and(|s| s.parse::<std::net::IpAddr>().is_err()) {
            out.push(format!("{path}: {v} is not an IP address ({regex})"));
        }
    }
}
