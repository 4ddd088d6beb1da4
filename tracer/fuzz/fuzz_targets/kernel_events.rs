//! A ring-buffer record from the kernel programs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracer::fuzz_targets::kernel_events(data));
