//! The configuration file of `run` and `record` (`/etc/tracer/tracer.toml`
//! when it exists, or `--config FILE`): every option the command line has,
//! keyed by its long flag name (`health_interval` or `health-interval`).
//! Flags given on the command line override the file.
//!
//! ```toml
//! activity_interval = "5s"
//! rules = "/etc/tracer/rules.toml"
//! api = true                      # or a socket path
//! metrics = "127.0.0.1:9464"
//! comm = ["xmrig", "python3"]
//!
//! [[sink]]
//! target = "/var/log/tracer/records.jsonl"
//! rotate_size = "100M"
//! keep = 5
//!
//! [[sink]]
//! target = "syslog+udp://127.0.0.1:514"
//! format = "ecs"
//! kinds = ["classification", "network.*"]
//! ```
//!
//! The file is turned into flags and read by the same parser as the
//! command line, so a value is checked exactly as the flag would be; the
//! error names the file, the line and the key.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{ArgAction, CommandFactory as _, FromArgMatches as _, Parser as _, parser::ValueSource};

use crate::cli::{Cli, Command};

/// Read by `run` and `record` when it exists and no `--config` is given.
pub const DEFAULT_PATH: &str = "/etc/tracer/tracer.toml";

/// Keys that name a repeatable flag in the plural, as a file would.
const PLURALS: &[(&str, &str)] =
    &[("sinks", "sink"), ("pids", "pid"), ("comms", "comm"), ("gpu-devices", "gpu-device")];

/// Parses the command line, with the configuration file's options under it
/// for `run` and `record`.
pub fn parse_args(argv: Vec<OsString>) -> Result<Cli, clap::Error> {
    let matches = Cli::command().try_get_matches_from(&argv)?;
    let Some((sub, sub_matches)) = matches.subcommand() else { return Cli::from_arg_matches(&matches) };
    if !matches!(sub, "run" | "record") {
        return Cli::from_arg_matches(&matches);
    }
    let given = sub_matches.get_one::<PathBuf>("config").cloned();
    let path = match given {
        Some(p) => p,
        None if Path::new(DEFAULT_PATH).exists() => PathBuf::from(DEFAULT_PATH),
        None => return Cli::from_arg_matches(&matches),
    };
    let on_command_line = |id: &str| sub_matches.value_source(id) == Some(ValueSource::CommandLine);
    let from_file = match std::fs::read_to_string(&path)
        .with_context(|| format!("reading the configuration {}", path.display()))
        .and_then(|text| flags(&path, &text, sub, &on_command_line))
    {
        Ok(f) => f,
        Err(e) => {
            return Err(Cli::command().error(clap::error::ErrorKind::InvalidValue, format!("{e:#}")));
        }
    };
    // The file's flags first: those on the command line come after them.
    let mut merged: Vec<OsString> = argv.iter().take(2).cloned().collect();
    merged.extend(from_file.into_iter().map(OsString::from));
    merged.extend(argv.into_iter().skip(2));
    Cli::try_parse_from(merged)
}

/// The line a byte offset is on, from 1.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.matches('\n').count()) + 1
}

/// The file's options as flags, leaving out those `on_command_line` says
/// the command line sets. Each is checked alone by the command-line
/// parser, so that its error can name its line.
pub fn flags(
    path: &Path,
    text: &str,
    sub: &str,
    on_command_line: &dyn Fn(&str) -> bool,
) -> Result<Vec<String>> {
    let table: std::collections::BTreeMap<String, toml::Spanned<toml::Value>> =
        toml::from_str(text).map_err(|e| anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
    let command = Cli::command();
    let run = command.find_subcommand(sub).expect("run and record are subcommands");
    let mut out = Vec::new();
    for (key, value) in &table {
        let line = line_of(text, value.span().start);
        let at = |msg: String| anyhow!("{}:{line}: `{key}`: {msg}", path.display());
        let mut name = key.replace('_', "-");
        if let Some((_, singular)) = PLURALS.iter().find(|(p, _)| *p == name) {
            name = (*singular).to_owned();
        }
        let Some(arg) = run.get_arguments().find(|a| a.get_long() == Some(name.as_str())) else {
            let mut known: Vec<&str> = run.get_arguments().filter_map(|a| a.get_long()).collect();
            known.retain(|k| !matches!(*k, "help" | "config"));
            return Err(at(format!(
                "not an option of `tracer {sub}`; the options are: {}",
                known.join(", ")
            )));
        };
        if name == "config" {
            return Err(at("a configuration file cannot name another".into()));
        }
        if on_command_line(arg.get_id().as_str()) {
            continue;
        }
        let takes_value = !matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
        let optional_value = arg.get_num_args().is_some_and(|n| n.min_values() == 0);
        let repeatable = matches!(arg.get_action(), ArgAction::Append);
        let scalar = |v: &toml::Value| -> Result<Option<String>> {
            Ok(match v {
                toml::Value::String(s) => Some(format!("--{name}={s}")),
                toml::Value::Integer(i) => Some(format!("--{name}={i}")),
                toml::Value::Float(f) => Some(format!("--{name}={f}")),
                toml::Value::Boolean(true) if !takes_value || optional_value => Some(format!("--{name}")),
                toml::Value::Boolean(false) if !takes_value || optional_value => None,
                toml::Value::Table(t) if name == "sink" => {
                    // `format` is both a sink's option and run's.
                    if let Some(stray) = t.keys().filter(|k| *k != "format").find(|k| {
                        run.get_arguments().any(|a| a.get_long() == Some(k.replace('_', "-").as_str()))
                    }) {
                        return Err(at(format!(
                            "`{stray}` is inside a [[sink]] table (keys after [[sink]] belong to it): \
                             put the options before the first [[sink]]"
                        )));
                    }
                    Some(format!("--sink={}", sink_spec(t).map_err(at)?))
                }
                other => return Err(at(format!("{} is not a value this option takes", other.type_str()))),
            })
        };
        let mut these = Vec::new();
        match value.get_ref() {
            toml::Value::Array(list) if repeatable => {
                for v in list {
                    these.extend(scalar(v)?);
                }
            }
            toml::Value::Array(_) => return Err(at("takes one value, not a list".into())),
            v => these.extend(scalar(v)?),
        }
        // Checked alone, as the command line would check it.
        let mut probe = vec!["tracer".to_owned(), sub.to_owned()];
        probe.extend(these.iter().cloned());
        if sub == "record" {
            probe.push("--output=/dev/null".into());
        }
        match Cli::try_parse_from(&probe) {
            Err(e) => return Err(at(reason(&e))),
            Ok(Cli { command: Command::Run(args) | Command::Record(args) }) => {
                // Sink specs are parsed when the sinks open; check them now, by line.
                for s in &args.sinks {
                    crate::output::sink::SinkSpec::parse(s, args.format).map_err(|e| at(format!("{e:#}")))?;
                }
            }
            Ok(_) => unreachable!("the probe is run or record"),
        }
        out.extend(these);
    }
    Ok(out)
}

/// A command-line error's first line, without clap's `error: ` prefix: what
/// a row or a file's line number goes in front of.
pub fn reason(e: &clap::Error) -> String {
    let msg = e.to_string();
    msg.lines().next().unwrap_or_default().trim_start_matches("error: ").to_owned()
}

/// `[[sink]]` as a table: `target` and the sink's options, as the
/// `TARGET;OPTION=VALUE` spec the command line takes.
fn sink_spec(t: &toml::Table) -> Result<String, String> {
    let target = t
        .get("target")
        .and_then(toml::Value::as_str)
        .ok_or_else(|| "a [[sink]] table needs target = \"PATH or URL\"".to_owned())?;
    let mut spec = target.to_owned();
    for (k, v) in t.iter().filter(|(k, _)| *k != "target") {
        let v = match v {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(list) if k == "kinds" => list
                .iter()
                .map(|k| k.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| "kinds is a list of strings (globs such as \"network.*\")".to_owned())?
                .join(","),
            other => return Err(format!("sink option {k}: {} is not a value it takes", other.type_str())),
        };
        if v.contains(';') {
            return Err(format!("sink option {k}: a value cannot contain `;`"));
        }
        spec.push_str(&format!(";{k}={v}"));
    }
    Ok(spec)
}

/// Checks a configuration file without running (`tracer check` and tests).
pub fn validate(path: &Path, sub: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if !matches!(sub, "run" | "record") {
        bail!("only run and record read a configuration file");
    }
    flags(path, &text, sub, &|_| false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, cli: &[&str]) -> Result<crate::cli::RunArgs, String> {
        let dir = std::env::temp_dir().join(format!("tracer-config-{}-{}", std::process::id(), cli.len()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("t{}.toml", text.len()));
        std::fs::write(&path, text).unwrap();
        let mut argv: Vec<OsString> = ["tracer", "run", "--config"].map(OsString::from).to_vec();
        argv.push(path.clone().into());
        argv.extend(cli.iter().map(OsString::from));
        let r = parse_args(argv).map_err(|e| e.to_string());
        std::fs::remove_file(&path).unwrap();
        match r? {
            Cli { command: Command::Run(a) } => Ok(a),
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_file_sets_options_and_the_command_line_overrides_them() {
        let text = r#"
activity_interval = "2s"
health-interval = "30s"
syscalls = true
no_nvml = false
api = true
metrics = "127.0.0.1:9464"
comms = ["xmrig", "python3"]
ring_buffer_kib = 8192

[[sink]]
target = "/tmp/x.jsonl"
rotate_size = "100M"
keep = 5

[[sink]]
target = "syslog+udp://127.0.0.1:514"
format = "ecs"
kinds = ["classification", "network.*"]
"#;
        let a = parse(text, &["--activity-interval", "1s", "--comm", "bash"]).unwrap();
        assert_eq!(a.activity_interval, std::time::Duration::from_secs(1), "the flag wins");
        assert_eq!(a.health_interval, std::time::Duration::from_secs(30));
        assert!(a.syscalls && !a.no_nvml);
        assert_eq!(a.api.as_deref(), Some(Path::new(crate::service::api::DEFAULT_SOCKET)));
        assert_eq!(a.metrics, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(a.comms, ["bash"], "a list on the command line replaces the file's");
        assert_eq!(a.ring_buffer_kib, 8192);
        assert_eq!(
            a.sinks,
            [
                "/tmp/x.jsonl;keep=5;rotate_size=100M",
                "syslog+udp://127.0.0.1:514;format=ecs;kinds=classification,network.*"
            ]
        );
        let a = parse("api = \"/run/x.sock\"\nno_classify = true\n", &[]).unwrap();
        assert_eq!(a.api.as_deref(), Some(Path::new("/run/x.sock")));
        assert!(a.no_classify);
    }

    #[test]
    fn bad_keys_and_values_name_the_key_and_line() {
        let e = parse("activity_interval = \"1s\"\n\nhealth_intervall = \"5s\"\n", &[]).unwrap_err();
        assert!(e.contains(":3: `health_intervall`: not an option"), "{e}");
        let e = parse("# x\nactivity_interval = \"soon\"\n", &[]).unwrap_err();
        assert!(e.contains(":2: `activity_interval`:") && e.contains("not a duration"), "{e}");
        let e = parse("activity_interval = [\"1s\", \"2s\"]\n", &[]).unwrap_err();
        assert!(e.contains("takes one value"), "{e}");
        let e = parse("syscalls = \"yes\"\n", &[]).unwrap_err();
        assert!(e.contains("`syscalls`"), "{e}");
        let e = parse("\n[[sink]]\ntarget = \"/tmp/y\"\nrotate_sise = \"1M\"\n", &[]).unwrap_err();
        assert!(e.contains(":2: `sink`:") && e.contains("rotate_sise"), "{e}");
        let e = parse("[[sink]]\ntarget = \"-\"\nactivity_interval = \"1s\"\n", &[]).unwrap_err();
        assert!(e.contains("`activity_interval` is inside a [[sink]] table"), "{e}");
        let e = parse("[[sink]]\nformat = \"ecs\"\n", &[]).unwrap_err();
        assert!(e.contains("needs target"), "{e}");
        let e = parse("activity_interval = \n", &[]).unwrap_err();
        assert!(e.contains("line 1"), "a TOML error has its line: {e}");
        let e = parse("config = \"/etc/other.toml\"\n", &[]).unwrap_err();
        assert!(e.contains("cannot name another"), "{e}");
    }

    #[test]
    fn every_run_option_can_be_set_from_the_file() {
        // The file reaches every flag of run by its long name.
        let command = Cli::command();
        let run = command.find_subcommand("run").unwrap();
        for arg in run.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if matches!(long, "help" | "config") {
                continue;
            }
            let found =
                flags(Path::new("t.toml"), &format!("{} = 1\n", long.replace('-', "_")), "run", &|_| false);
            if let Err(e) = found {
                assert!(!e.to_string().contains("not an option"), "{long}: {e}");
            }
        }
    }
}
