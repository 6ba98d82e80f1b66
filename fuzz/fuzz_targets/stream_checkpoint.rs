//! cargo-fuzz target `stream_checkpoint`: see `targets::stream_checkpoint`.
#![no_main]

#[allow(dead_code)]
#[path = "../src/targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = targets::stream_checkpoint(data);
});
