//! A `--sink` spec.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracer::fuzz_targets::sink_spec(data));
