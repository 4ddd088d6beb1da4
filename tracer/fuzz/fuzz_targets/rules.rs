//! A `--rules` file.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracer::fuzz_targets::rules(data));
