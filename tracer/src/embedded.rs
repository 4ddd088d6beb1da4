//! Data files built into the binary, encoded (build.rs): the shipped rules
//! and the miner string set name pools, stratum URLs and miner messages,
//! which a scan for miner code (ours, or anyone's YARA rules) would find in
//! the tracer's own executable if they were kept as plain bytes.

/// build.rs XORs every byte with this.
const KEY: u8 = 0xa5;

pub static DEFAULT_RULES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/default.toml.x"));
pub static MINER_STRINGS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/miner-strings.txt.x"));

pub fn decode(bytes: &[u8]) -> String {
    String::from_utf8(bytes.iter().map(|b| b ^ KEY).collect()).expect("the files are UTF-8")
}

#[cfg(test)]
mod tests {
    #[test]
    fn decodes_to_the_files() {
        let rules =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../rules/default.toml")).unwrap();
        assert_eq!(super::decode(super::DEFAULT_RULES), rules);
        assert!(!super::DEFAULT_RULES.windows(14).any(|w| w == b"stratum+tcp://"));
    }
}
