//! The rules file: indicators (what to match, the category it points to, its
//! weight) and allowlist entries, as data. The shipped defaults are
//! `rules/default.toml`; an operator's file adds to them.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;

/// The shipped rules (`rules/default.toml`), kept encoded in the binary so
/// that its pool names and stratum URLs do not make the tracer's own
/// executable look like a miner's.
pub fn default_rules() -> String {
    crate::embedded::decode(crate::embedded::DEFAULT_RULES)
}

pub const CATEGORIES: &[&str] =
    &["crypto_mining", "blockchain_node", "ai_training", "ai_inference", "distributed_storage"];

#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Match {
    pub first_bytes_protocol: Option<Vec<String>>,
    pub first_bytes_mining: Option<bool>,
    /// true: the indicator is about what peers send first on connections
    /// the process accepted (it serves that protocol). Without it, an
    /// indicator sees only what the process itself sent first.
    pub first_bytes_inbound: Option<bool>,
    pub agent_contains: Option<Vec<String>>,
    pub dns_name: Option<Vec<String>>,
    pub tls_sni: Option<Vec<String>>,
    pub remote_port: Option<Vec<u16>>,
    pub listen_port: Option<Vec<u16>>,
    pub listens: Option<bool>,
    pub exe_name: Option<Vec<String>>,
    pub argv_contains: Option<Vec<String>>,
    pub gpu_compute_contexts: Option<u64>,
    pub gpu_memory_bytes: Option<u64>,
    pub cpu_share_pct: Option<f64>,
    pub syscalls_per_cpu_second: Option<f64>,
    pub intervals: Option<u32>,
    pub distinct_peers: Option<usize>,
    pub peer_ports: Option<Vec<u16>>,
    pub file_suffix: Option<Vec<String>>,
    pub file_write: Option<bool>,
    pub file_format: Option<Vec<String>>,
    pub file_path_contains: Option<Vec<String>>,
    pub hugetlb_mmaps: Option<u64>,
    pub library: Option<Vec<String>>,
    pub hidden_from_proc: Option<bool>,
    pub ja4: Option<Vec<String>>,
    pub tls_no_sni: Option<bool>,
    pub cpu_cores: Option<f64>,
    pub fpu_rounding_saves: Option<u64>,
    pub randomx_memory: Option<bool>,
    pub randomx_size: Option<String>,
    pub anon_exec_memory: Option<bool>,
    pub exe_miner_strings: Option<usize>,
    pub quiet_peer_bytes: Option<u64>,
    pub exe_packed: Option<bool>,
    pub exe_memfd: Option<bool>,
    pub exe_deleted: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Indicator {
    pub id: String,
    pub category: String,
    pub weight: f64,
    pub what: String,
    #[serde(rename = "match")]
    pub when: Match,
}

#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Allow {
    pub id: String,
    #[serde(default)]
    pub exe_name: Vec<String>,
    #[serde(default)]
    pub exe: Vec<String>,
    #[serde(default)]
    pub container_id: Vec<String>,
    #[serde(default)]
    pub cgroup_prefix: Vec<String>,
    #[serde(default)]
    pub comment: String,
}

/// Which processes a declaration covers: every key given must hold (any
/// value of its list), so `{cgroup_prefix, exe_sha256}` means that binary
/// in that cgroup and nothing else.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeclareMatch {
    #[serde(default)]
    pub container_id: Vec<String>,
    #[serde(default)]
    pub cgroup_prefix: Vec<String>,
    /// The path the process passed to execve.
    #[serde(default)]
    pub exe: Vec<String>,
    #[serde(default)]
    pub exe_name: Vec<String>,
    /// The executable's SHA-256 (hex): known once the tracer has read the
    /// file, a moment after the exec; evidence found before is re-examined.
    #[serde(default)]
    pub exe_sha256: Vec<String>,
    #[serde(default)]
    pub uid: Vec<u32>,
}

/// A declared workload: what the processes it matches are allowed to be.
/// A category of theirs inside `categories` is compliant; one outside is
/// an alert that names the declaration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Declare {
    pub id: String,
    pub categories: Vec<String>,
    #[serde(rename = "match")]
    pub when: DeclareMatch,
    #[serde(default)]
    pub comment: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    #[serde(default = "one")]
    pub verdict_score: f64,
    #[serde(default = "half")]
    pub stable_margin: f64,
    #[serde(default, rename = "indicator")]
    pub indicators: Vec<Indicator>,
    #[serde(default)]
    pub allow: Vec<Allow>,
    #[serde(default)]
    pub declare: Vec<Declare>,
}

fn one() -> f64 {
    1.0
}
fn half() -> f64 {
    0.5
}

impl Rules {
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let rules: Rules = toml::from_str(text).with_context(|| format!("rules {origin}"))?;
        rules.check(origin)?;
        Ok(rules)
    }

    fn check(&self, origin: &str) -> Result<()> {
        for i in &self.indicators {
            if !CATEGORIES.contains(&i.category.as_str()) {
                bail!(
                    "rules {origin}: indicator {} has unknown category {} (one of {})",
                    i.id,
                    i.category,
                    CATEGORIES.join(", ")
                );
            }
            if !(i.weight.is_finite() && i.weight > 0.0) {
                bail!("rules {origin}: indicator {} needs a positive weight", i.id);
            }
            if i.when == Match::default() {
                bail!("rules {origin}: indicator {} matches nothing", i.id);
            }
        }
        for d in &self.declare {
            if let Some(c) = d.categories.iter().find(|c| !CATEGORIES.contains(&c.as_str())) {
                bail!(
                    "rules {origin}: declaration {} has unknown category {c} (one of {})",
                    d.id,
                    CATEGORIES.join(", ")
                );
            }
            if d.when == DeclareMatch::default() {
                bail!(
                    "rules {origin}: declaration {} matches nothing (give container_id, cgroup_prefix, exe, exe_name, exe_sha256 or uid)",
                    d.id
                );
            }
            if let Some(h) =
                d.when.exe_sha256.iter().find(|h| h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                bail!("rules {origin}: declaration {} has exe_sha256 {h:?}, not 64 hex digits", d.id);
            }
        }
        Self::unique_entries(origin, &self.allow, &self.declare)
    }

    /// Allow and declare entries are named in verdicts by id alone.
    fn unique_entries(origin: &str, allow: &[Allow], declare: &[Declare]) -> Result<()> {
        let mut ids = std::collections::HashSet::new();
        for id in allow.iter().map(|a| &a.id).chain(declare.iter().map(|d| &d.id)) {
            if !ids.insert(id) {
                bail!("rules {origin}: two allow/declare entries are called {id}");
            }
        }
        Ok(())
    }

    /// The shipped rules, plus an operator's file: its indicators replace
    /// those with the same id or are added; its allow entries are added.
    pub fn load(extra: Option<&Path>) -> Result<Self> {
        let mut rules = Self::parse(&default_rules(), "rules/default.toml")?;
        if let Some(path) = extra {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let more = Self::parse(&text, &path.display().to_string())?;
            for ind in more.indicators {
                rules.indicators.retain(|i| i.id != ind.id);
                rules.indicators.push(ind);
            }
            rules.allow.extend(more.allow);
            rules.declare.extend(more.declare);
            Self::unique_entries(&path.display().to_string(), &rules.allow, &rules.declare)?;
            if text.contains("verdict_score") {
                rules.verdict_score = more.verdict_score;
            }
            if text.contains("stable_margin") {
                rules.stable_margin = more.stable_margin;
            }
        }
        Ok(rules)
    }
}

/// `*` matches any run of characters; matching ignores ASCII case.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.to_ascii_lowercase(), text.to_ascii_lowercase());
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == t;
    }
    let mut rest = t.as_str();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else { return false };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            let Some(at) = rest.find(part) else { return false };
            rest = &rest[at + part.len()..];
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_rules_parse() {
        let r = Rules::load(None).unwrap();
        assert!(r.indicators.iter().any(|i| i.id == "mining-protocol"));
        // Weak evidence alone never reaches a verdict.
        for i in &r.indicators {
            let strong = [
                "mining-protocol",
                "miner-agent",
                "p2p-node-fanout",
                "chain-p2p-protocol",
                "chain-p2p-peer-inbound",
                "storage-p2p-protocol",
                "storage-p2p-peer-inbound",
                "inference-api-served",
                "proof-of-space-plot",
                "storage-fanout",
                "msr-write",
                "fpu-rounding-mode",
                "exe-miner-code",
            ];
            assert!(
                strong.contains(&i.id.as_str()) || i.weight < r.verdict_score,
                "{} is weak but weighs {}",
                i.id,
                i.weight
            );
        }
    }

    #[test]
    fn bad_rules_are_clear_errors() {
        let e = Rules::parse(
            "[[indicator]]\nid='x'\ncategory='fishing'\nweight=1\nwhat='w'\nmatch={remote_port=[1]}",
            "t",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("unknown category fishing"));
        let e = Rules::parse(
            "[[indicator]]\nid='x'\ncategory='crypto_mining'\nweight=1\nwhat='w'\nmatch={colour='red'}",
            "t",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("colour"), "{e:#}");
        assert!(Rules::parse("verdict_score = [", "t").is_err());
        let declare = |body: &str| {
            Rules::parse(&format!("[[declare]]\nid='farm'\n{body}"), "t").map_err(|e| format!("{e:#}"))
        };
        let ok = declare("categories=['ai_training']\nmatch={container_id=['c1'], uid=[1000]}").unwrap();
        assert_eq!(ok.declare[0].when.uid, [1000]);
        let e = declare("categories=['gold']\nmatch={uid=[0]}").unwrap_err();
        assert!(e.contains("declaration farm has unknown category gold"), "{e}");
        let e = declare("categories=['ai_training']\nmatch={}").unwrap_err();
        assert!(e.contains("matches nothing"), "{e}");
        let e = declare("categories=['ai_training']\nmatch={exe_sha256=['abc']}").unwrap_err();
        assert!(e.contains("not 64 hex digits"), "{e}");
        let e = declare("categories=['ai_training']\nmatch={host=['x']}").unwrap_err();
        assert!(e.contains("host"), "{e}");
        let e = Rules::parse(
            "[[allow]]\nid='farm'\nexe_name=['x']\n[[declare]]\nid='farm'\ncategories=[]\nmatch={uid=[1]}",
            "t",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("two allow/declare entries are called farm"), "{e:#}");
    }

    #[test]
    fn operator_file_extends_and_overrides() {
        let dir = std::env::temp_dir().join(format!("rules-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("site.toml");
        std::fs::write(
            &f,
            "[[indicator]]\nid='miner-port'\ncategory='crypto_mining'\nweight=0.1\nwhat='w'\nmatch={remote_port=[1]}\n\
             [[indicator]]\nid='our-pool'\ncategory='crypto_mining'\nweight=2\nwhat='our pool'\nmatch={dns_name=['pool.corp']}\n\
             [[allow]]\nid='lab'\nexe_name=['trainer']\n",
        )
        .unwrap();
        let r = Rules::load(Some(&f)).unwrap();
        assert_eq!(r.indicators.iter().find(|i| i.id == "miner-port").unwrap().weight, 0.1);
        assert!(r.indicators.iter().any(|i| i.id == "our-pool"));
        assert_eq!(r.allow[0].id, "lab");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn globs() {
        assert!(glob("*.nanopool.org", "xmr-eu1.nanopool.org"));
        assert!(!glob("*.nanopool.org", "nanopool.org.evil"));
        assert!(glob("*antpool.com", "stratum.antpool.com"));
        assert!(glob("pool.*.example", "POOL.a.EXAMPLE"));
        assert!(glob("exact", "exact") && !glob("exact", "exactly"));
    }
}
