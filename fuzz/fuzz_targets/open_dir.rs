//! cargo-fuzz target `open_dir`: see `targets::open_dir`.
#![no_main]

#[allow(dead_code)]
#[path = "../src/targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = targets::open_dir(data);
});
