//! The first bytes of a new TCP connection (protocol recognisers).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracer::fuzz_targets::recognise(data));
