//! One entry point per fuzz target: the fuzz crate (`tracer/fuzz`) and the
//! test that replays its committed corpus both call these, so an input that
//! crashed once keeps being checked by the default test suite.
//!
//! Each takes arbitrary bytes. It may reject them; it must not panic, hang
//! or allocate without bound.

use std::{io::Cursor, sync::OnceLock};

use crate::{
    classify::{Classifier, rules::Rules},
    dns,
    gpu::decode,
    kernel::events::{self, Body},
    output::{escape, formats::Format, sink::SinkSpec},
    protocols, replay,
};

/// A target: arbitrary bytes in, nothing out but a panic on a bug.
pub type Target = fn(&[u8]);

/// Every target, by the name of its binary in `tracer/fuzz` and its corpus
/// folder `tracer/fuzz/corpus/<name>`.
pub const TARGETS: &[(&str, Target)] = &[
    ("recognise", recognise),
    ("dns", dns),
    ("gpu_decode", gpu_decode),
    ("kernel_events", kernel_events),
    ("capture", capture),
    ("sink_spec", sink_spec),
    ("rules", rules),
];

/// The shipped rules, parsed once: each input gets a fresh classifier.
fn shipped_rules() -> Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| Rules::load(None).expect("the shipped rules parse")).clone()
}

/// The first bytes of a new connection, and a UDP socket's first
/// datagram (QUIC Initials are decrypted and parsed), as the pipeline sees
/// them; the first two bytes pick a port, so the port-dependent names are
/// reached too.
pub fn recognise(data: &[u8]) {
    let port = data.get(..2).map(|p| u16::from_be_bytes([p[0], p[1]]));
    for r in [
        protocols::recognise(data),
        protocols::recognise_message(data, data.len() as u64, port),
        protocols::recognise_datagram(data, data.len() as u64, port),
    ] {
        // Records carry the result as JSON.
        serde_json::to_vec(&r).expect("a recognised protocol serialises");
    }
}

/// A DNS payload, and what the name cache learns from it.
pub fn dns(data: &[u8]) {
    if let Ok(msg) = dns::parse(data) {
        let mut names = dns::NameCache::default();
        names.learn(1, &msg);
        names.forget(1);
    }
}

/// GPU ioctl keys, 9 bytes each: vendor (one byte, the vendor ids are
/// small), command, sub-operation.
pub fn gpu_decode(data: &[u8]) {
    for key in data.chunks_exact(9) {
        let word = |at: usize| u32::from_ne_bytes([key[at], key[at + 1], key[at + 2], key[at + 3]]);
        let (cmd, sub) = (word(1), word(5));
        decode::decode(u32::from(key[0]), cmd, sub);
        decode::nvidia_class(sub);
    }
}

/// A ring-buffer record, and the parsers and escaping its fields go
/// through on the way to a record.
pub fn kernel_events(data: &[u8]) {
    let Ok(event) = events::decode(data) else { return };
    let round_trip = |bytes: &[u8]| {
        let (text, escaped) = escape::bytes_to_string(bytes);
        assert_eq!(escape::unescape(&text, escaped), bytes, "escaping loses nothing");
    };
    round_trip(&event.header.comm);
    match &event.body {
        Body::Exec(e) => {
            round_trip(&e.filename);
            e.argv.iter().flatten().for_each(|a| round_trip(a));
        }
        Body::FileOpen { path, .. } => round_trip(path),
        Body::Dns { payload, .. } => dns(payload),
        Body::FirstBytes { payload, .. } => recognise(payload),
        _ => {}
    }
}

/// A capture (any number of lines, gzip or not) replayed through the
/// classifier with the shipped rules.
pub fn capture(data: &[u8]) {
    let Ok(input) = replay::from_reader(Cursor::new(data.to_vec())) else { return };
    let mut classifier = Classifier::new(shipped_rules());
    let _ = replay::classify(input, &mut classifier, &mut std::io::sink());
}

/// A `--sink` spec.
pub fn sink_spec(data: &[u8]) {
    let Ok(spec) = std::str::from_utf8(data) else { return };
    // token_file reads the file it names; the fuzzer must not read (or
    // block on) arbitrary paths of the machine it runs on.
    if spec.contains("token_file") {
        return;
    }
    let _ = SinkSpec::parse(spec, Format::Native);
}

/// A `--rules` file; rules that parse then classify a committed capture,
/// so their globs and thresholds meet real records.
pub fn rules(data: &[u8]) {
    static RECORDS: OnceLock<Vec<serde_json::Value>> = OnceLock::new();
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(rules) = Rules::parse(text, "fuzz input") else { return };
    let records = RECORDS.get_or_init(|| {
        include_str!("../../tests/fixtures/captures/mining-xmrig-login.capture.jsonl")
            .lines()
            .map(|l| serde_json::from_str(l).expect("the committed capture is JSON"))
            .collect()
    });
    let mut classifier = Classifier::new(rules);
    for r in records {
        classifier.observe(r);
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn fuzz_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
    }

    /// Every input ever committed to the corpus (seeds, and each input that
    /// once crashed a target) still runs cleanly.
    #[test]
    fn the_committed_corpus_replays_cleanly() {
        let mut failures = Vec::new();
        for (name, target) in TARGETS {
            let dir = fuzz_dir().join("corpus").join(name);
            let mut inputs = 0;
            for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                if std::panic::catch_unwind(|| target(&data)).is_err() {
                    failures.push(path.display().to_string());
                }
                inputs += 1;
            }
            assert!(inputs > 0, "{name}: no seed corpus in {}", dir.display());
        }
        assert!(failures.is_empty(), "inputs that panic: {failures:#?}");
    }

    /// The fuzz crate has one binary per target here, calling this module,
    /// and no others.
    #[test]
    fn the_fuzz_crate_runs_these_targets() {
        let dir = fuzz_dir().join("fuzz_targets");
        let mut binaries: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path().file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        binaries.sort();
        let mut names: Vec<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
        names.sort();
        assert_eq!(binaries, names);
        let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
        for name in names {
            let source = std::fs::read_to_string(dir.join(format!("{name}.rs"))).unwrap();
            assert!(
                source.contains(&format!("fuzz_targets::{name}(")),
                "{name}.rs calls another entry point"
            );
            assert!(
                manifest.contains(&format!("name = \"{name}\"")),
                "{name} is not a [[bin]] of the fuzz crate"
            );
        }
    }
}
