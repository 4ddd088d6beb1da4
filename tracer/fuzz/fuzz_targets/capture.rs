//! A capture replayed through the classifier.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracer::fuzz_targets::capture(data));
