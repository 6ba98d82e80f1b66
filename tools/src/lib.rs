//! The `annal` command-line tool as a library: the demo workload ([`demo`]), JSON-line append,
//! read and tail ([`events`]), the renderings of the engine's inspect and repair APIs
//! ([`check`]: inspect, verify, repair, streams, snapshots) and `stat` ([`inspect`]). The
//! binary (`src/main.rs`) only parses arguments, picks text or JSON, and maps results to exit
//! codes.
//!
//! Nothing here panics on what it reads from disk or from the user: every failure is a value
//! ([`inspect::ErrorInfo`], [`demo::DemoError`]) with a message.
#![deny(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)
)]

pub mod check;
pub mod demo;
pub mod escape;
pub mod events;
pub mod inspect;
