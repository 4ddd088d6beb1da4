//! Helpers for unit tests.

/// `count` pseudo-random byte strings up to `max_len` long (xorshift64, so
/// every run sees the same inputs): for parsers of hostile input.
pub fn random_inputs(mut seed: u64, max_len: u64, count: usize) -> impl Iterator<Item = Vec<u8>> {
    (0..count).map(move |_| {
        let len = (seed % max_len) as usize;
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    })
}

/// A committed real first message (tests/fixtures/first_bytes/).
pub fn first_bytes_fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../tests/fixtures/first_bytes/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Says that a test could not test what it names on this host, and why.
/// cargo has no way to report a skip, so `cargo xtask test` collects these
/// (from the file named by `TRACER_TEST_SKIPS`) and counts the test as
/// skipped, not passed.
pub fn skip(test: &str, reason: &str) {
    eprintln!("{test}: skipped: {reason}");
    if let Some(path) = std::env::var_os("TRACER_TEST_SKIPS") {
        use std::io::Write as _;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{test}: {reason}");
        }
    }
}

/// A record of `kind` as the tracer writes it (tests/fixtures/formats).
pub fn record_fixture(kind: &str) -> serde_json::Value {
    let path = format!("{}/../tests/fixtures/formats/{kind}.native.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}
