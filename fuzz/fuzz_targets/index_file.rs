//! cargo-fuzz target `index_file`: see `targets::index_file`.
#![no_main]

#[allow(dead_code)]
#[path = "../src/targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = targets::index_file(data);
});
