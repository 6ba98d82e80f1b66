//! The `annal` command-line tool as a library: the demo workload and the inspect API behind
//! `annal verify` and `annal stat`. The binary (`src/main.rs`) only parses arguments, picks
//! text or JSON, and maps results to exit codes.
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
