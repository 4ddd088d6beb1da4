//! A DNS message as captured on port 53.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracer::fuzz_targets::dns(data));
