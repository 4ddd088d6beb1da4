//! `cargo xtask schemas --ecs REPO --ocsf REPO`: reduces the official ECS
//! and OCSF definitions to what the tracer's format tests check against,
//! and writes them to `tests/fixtures/schemas/` with the source commit.
//!
//! - ECS 8.11.0 (`generated/ecs/ecs_flat.yml` of elastic/ecs): every field
//!   with its type and whether it is array-normalised, the allowed values
//!   of the `event.*` categorisation fields and the event types each
//!   category expects.
//! - OCSF 1.4.0 (events/, objects/, profiles/, dictionary.json,
//!   categories.json of ocsf/ocsf-schema): the classes the tracer emits
//!   and every object reachable from them, resolved as the OCSF server
//!   does (`extends`, `$include` of profiles, attribute overrides,
//!   `"profile": null`), each attribute with its type, array-ness,
//!   requirement, profile and enum values; object and class constraints.
//!
//! REPO is a git clone of each project; the tags are read with `git show`,
//! so the working tree's checkout does not matter.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Command,
};

use anyhow::{Context as _, Result};
use serde_json::{Map, Value, json};

pub const ECS_TAG: &str = "v8.11.0";
pub const OCSF_TAG: &str = "1.4.0";
/// The OCSF classes the tracer writes (tracer/src/output/formats/ocsf.rs).
const OCSF_CLASSES: &[&str] = &[
    "base_event",
    "file_activity",
    "process_activity",
    "detection_finding",
    "network_activity",
    "dns_activity",
];

fn git(repo: &Path, args: &[&str]) -> Result<String> {
    crate::stdout_of(Command::new("git").arg("-C").arg(repo).args(args))
}

fn git_show(repo: &Path, tag: &str, path: &str) -> Result<String> {
    git(repo, &["show", &format!("{tag}:{path}")])
}

fn commit_of(repo: &Path, tag: &str) -> Result<String> {
    Ok(git(repo, &["rev-parse", &format!("{tag}^{{commit}}")])?.trim().to_string())
}

fn json_at(repo: &Path, path: &str) -> Result<Value> {
    serde_json::from_str(&git_show(repo, OCSF_TAG, path)?).with_context(|| format!("parsing {path}"))
}

pub fn run(ecs: &Path, ocsf: &Path, out_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(out_dir)?;
    let e = reduce_ecs(ecs)?;
    std::fs::write(out_dir.join("ecs-8.11.0.json"), serde_json::to_string_pretty(&e)? + "\n")?;
    let o = reduce_ocsf(ocsf)?;
    std::fs::write(out_dir.join("ocsf-1.4.0.json"), serde_json::to_string_pretty(&o)? + "\n")?;
    println!(
        "wrote {} ECS fields and {} OCSF classes with {} objects to {}",
        e["fields"].as_object().map_or(0, Map::len),
        o["classes"].as_object().map_or(0, Map::len),
        o["objects"].as_object().map_or(0, Map::len),
        out_dir.display()
    );
    Ok(())
}

fn reduce_ecs(repo: &Path) -> Result<Value> {
    let text = git_show(repo, ECS_TAG, "generated/ecs/ecs_flat.yml")?;
    let flat: BTreeMap<String, serde_yaml::Value> =
        serde_yaml::from_str(&text).context("parsing ecs_flat.yml")?;
    let s = |v: &serde_yaml::Value, k: &str| v.get(k).and_then(serde_yaml::Value::as_str).map(str::to_string);
    let mut fields = Map::new();
    let mut allowed = Map::new();
    let mut expected = Map::new();
    for (name, def) in &flat {
        let array = def
            .get("normalize")
            .and_then(serde_yaml::Value::as_sequence)
            .is_some_and(|n| n.iter().any(|x| x.as_str() == Some("array")));
        fields.insert(name.clone(), json!({"type": s(def, "type"), "array": array}));
        if let Some(values) = def.get("allowed_values").and_then(serde_yaml::Value::as_sequence) {
            let names: Vec<String> = values.iter().filter_map(|v| s(v, "name")).collect();
            allowed.insert(name.clone(), json!(names));
            if name == "event.category" {
                for v in values {
                    let types: Vec<&str> = v
                        .get("expected_event_types")
                        .and_then(serde_yaml::Value::as_sequence)
                        .into_iter()
                        .flatten()
                        .filter_map(serde_yaml::Value::as_str)
                        .collect();
                    if let Some(n) = s(v, "name") {
                        expected.insert(n, json!(types));
                    }
                }
            }
        }
    }
    Ok(json!({
        "source": {"repository": "https://github.com/elastic/ecs", "tag": ECS_TAG,
                   "commit": commit_of(repo, ECS_TAG)?, "file": "generated/ecs/ecs_flat.yml"},
        "licence": "Apache License 2.0 (elastic/ecs LICENSE.txt); reduced: field names, types, normalisation, allowed values",
        "fields": fields,
        "allowed_values": allowed,
        "expected_event_types": expected,
    }))
}

/// Definitions by name, from every JSON file under `dir` of the tag.
fn definitions(repo: &Path, dir: &str) -> Result<BTreeMap<String, (String, Value)>> {
    let listing = git(repo, &["ls-tree", "-r", "--name-only", OCSF_TAG, dir])?;
    let mut defs = BTreeMap::new();
    for path in listing.lines().filter(|p| p.ends_with(".json")) {
        let v = json_at(repo, path)?;
        if let Some(name) = v["name"].as_str() {
            defs.insert(name.to_string(), (path.to_string(), v));
        }
    }
    Ok(defs)
}

struct Ocsf {
    repo: std::path::PathBuf,
    dictionary: Map<String, Value>,
    events: BTreeMap<String, (String, Value)>,
    objects: BTreeMap<String, (String, Value)>,
}

impl Ocsf {
    /// Attributes of a class or object after `extends` and `$include`,
    /// with their constraints; each attribute as the definition says,
    /// merged key by key over what it inherits.
    fn resolve(
        &self,
        defs: &BTreeMap<String, (String, Value)>,
        name: &str,
    ) -> Result<(Map<String, Value>, Value)> {
        let (_, def) = defs.get(name).with_context(|| format!("no OCSF definition {name}"))?;
        let (mut attrs, mut constraints) = match def["extends"].as_str() {
            Some(parent) if defs.contains_key(parent) => self.resolve(defs, parent)?,
            _ => (Map::new(), Value::Null),
        };
        let own = def["attributes"].as_object().cloned().unwrap_or_default();
        let includes: Vec<String> = match &own.get("$include") {
            Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        };
        for inc in includes {
            let profile = json_at(&self.repo, &inc)?;
            let pname = profile["name"].as_str().unwrap_or("").to_string();
            for (k, v) in profile["attributes"].as_object().into_iter().flatten() {
                let mut v = v.clone();
                v["profile"] = json!(pname);
                merge(&mut attrs, k, &v);
            }
        }
        for (k, v) in &own {
            if k != "$include" {
                merge(&mut attrs, k, v);
            }
        }
        if !def["constraints"].is_null() {
            constraints = def["constraints"].clone();
        }
        Ok((attrs, constraints))
    }

    /// An attribute reduced to what a validator needs, and the object type
    /// it names, if any.
    fn reduce_attribute(&self, name: &str, a: &Value) -> (Value, Option<String>) {
        let dict = self.dictionary.get(name).cloned().unwrap_or(Value::Null);
        let ty = a["type"].as_str().or(dict["type"].as_str()).unwrap_or("").to_string();
        let array = a["is_array"].as_bool().or(dict["is_array"].as_bool()).unwrap_or(false);
        let mut enums: BTreeSet<String> = BTreeSet::new();
        for src in [&dict["enum"], &a["enum"]] {
            enums.extend(src.as_object().into_iter().flatten().map(|(k, _)| k.clone()));
        }
        let mut out = json!({
            "array": array,
            "requirement": a["requirement"].as_str().unwrap_or("optional"),
            "known": !dict.is_null() || !a["type"].is_null(),
        });
        let object = (!ty.ends_with("_t") && !ty.is_empty()).then(|| ty.clone());
        match &object {
            Some(o) => out["object"] = json!(o),
            None => out["type"] = json!(ty),
        }
        if let Some(p) = a["profile"].as_str() {
            out["profile"] = json!(p);
        }
        if !enums.is_empty() {
            out["enum"] = json!(enums);
        }
        (out, object)
    }
}

/// `v` over whatever `attrs[k]` holds, key by key (so a class can narrow a
/// requirement or lift a profile gate with `"profile": null`).
fn merge(attrs: &mut Map<String, Value>, k: &str, v: &Value) {
    let entry = attrs.entry(k.to_string()).or_insert_with(|| json!({}));
    for (field, value) in v.as_object().into_iter().flatten() {
        if value.is_null() {
            entry.as_object_mut().expect("attribute object").remove(field);
        } else {
            entry[field] = value.clone();
        }
    }
}

fn reduce_ocsf(repo: &Path) -> Result<Value> {
    let dictionary = json_at(repo, "dictionary.json")?;
    let categories = json_at(repo, "categories.json")?;
    let o = Ocsf {
        repo: repo.to_path_buf(),
        dictionary: dictionary["attributes"].as_object().cloned().unwrap_or_default(),
        events: definitions(repo, "events")?,
        objects: definitions(repo, "objects")?,
    };
    // Scalar types and what each is built on.
    let mut types = Map::new();
    for (name, t) in dictionary["types"]["attributes"].as_object().into_iter().flatten() {
        types.insert(name.clone(), json!({"base": t["type"].as_str().unwrap_or(name), "regex": t["regex"]}));
    }
    let mut classes = Map::new();
    let mut wanted: Vec<String> = Vec::new();
    for name in OCSF_CLASSES {
        let (_, def) = o.events.get(*name).with_context(|| format!("no class {name}"))?;
        let (attrs, constraints) = o.resolve(&o.events, name)?;
        let category = def["category"].as_str().or_else(|| {
            // A class's category may come from what it extends.
            o.events.get(def["extends"].as_str()?).and_then(|(_, p)| p["category"].as_str())
        });
        let category_uid = category.and_then(|c| categories["attributes"][c]["uid"].as_u64()).unwrap_or(0);
        let uid = category_uid * 1000 + def["uid"].as_u64().unwrap_or(0);
        let mut reduced = Map::new();
        for (k, a) in &attrs {
            let (r, object) = o.reduce_attribute(k, a);
            wanted.extend(object);
            reduced.insert(k.clone(), r);
        }
        // As the OCSF server does: a class's own uid and category are the
        // only values of these (base_event's enums list 0 alone).
        reduced["class_uid"]["enum"] = json!([uid.to_string()]);
        reduced["category_uid"]["enum"] = json!([category_uid.to_string()]);
        classes.insert(
            uid.to_string(),
            json!({"name": name, "attributes": reduced, "constraints": constraints}),
        );
    }
    let mut objects = Map::new();
    while let Some(name) = wanted.pop() {
        if objects.contains_key(&name) || !o.objects.contains_key(&name) {
            continue;
        }
        let (attrs, constraints) = o.resolve(&o.objects, &name)?;
        let mut reduced = Map::new();
        for (k, a) in &attrs {
            let (r, object) = o.reduce_attribute(k, a);
            wanted.extend(object);
            reduced.insert(k.clone(), r);
        }
        objects.insert(name.clone(), json!({"attributes": reduced, "constraints": constraints}));
    }
    Ok(json!({
        "source": {"repository": "https://github.com/ocsf/ocsf-schema", "tag": OCSF_TAG,
                   "commit": commit_of(repo, OCSF_TAG)?},
        "licence": "Apache License 2.0 (ocsf-schema LICENSE); reduced: attribute names, types, requirements, profiles, enum values, constraints",
        "types": types,
        "classes": classes,
        "objects": objects,
    }))
}
