//! cargo-fuzz target `snapshot_file`: see `targets::snapshot_file`.
#![no_main]

#[allow(dead_code)]
#[path = "../src/targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = targets::snapshot_file(data);
});
