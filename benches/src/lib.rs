//! Benchmarks of annal's log core, and the baselines they are measured against.
//!
//! The crate has two front ends. `src/bin/log_compare.rs` runs every workload of the issue
//! for annal and for its baseline in the same run, interleaved, and prints a Markdown table
//! (see `benches/README.md`). The criterion benches in `benches/` time one component each.
//!
//! This library holds what both share, kept apart from the driver so that the baselines can
//! be read on their own:
//! - [`plain`]: the plain-file baseline: the same frames (made by
//!   [`annal::format::encode_batch`]) in one preallocated file, written with `write_all`
//!   and `sync_data`, read back sequentially with CRC checks, or through a dense in-memory
//!   offset index.
//! - [`group_commit`]: leader/follower group commit over such a plain file, the baseline of
//!   durable appends from many threads.
//! - [`peer`]: okaywal, the best Rust write-ahead log measured on this machine, as a
//!   second reference for durable appends.
//! - [`machine`]: what machine and file system the figures come from, and the refusal to
//!   measure durability on a RAM-backed file system.
//! - [`payload`]: deterministic event payloads.
//! - [`report`]: progress lines, settling the file system, Markdown tables.
//! - [`stats`]: medians, latency histograms and the table's number formats.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod group_commit;
pub mod machine;
pub mod payload;
pub mod peer;
pub mod plain;
pub mod report;
pub mod stats;
