//! cargo-fuzz target `segment_header`: see `targets::segment_header`.
#![no_main]

#[allow(dead_code)]
#[path = "../src/targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = targets::segment_header(data);
});
