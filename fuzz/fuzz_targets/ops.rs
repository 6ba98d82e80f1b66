//! cargo-fuzz target `ops`: see `targets::ops`.
#![no_main]

#[allow(dead_code)]
#[path = "../src/targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = targets::ops(data);
});
