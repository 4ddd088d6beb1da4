//! GPU ioctl keys (vendor, command, sub-operation).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracer::fuzz_targets::gpu_decode(data));
