//! cargo-fuzz target `event_body`: see `targets::event_body`.
#![no_main]

#[allow(dead_code)]
#[path = "../src/targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = targets::event_body(data);
});
