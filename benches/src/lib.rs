//! Benchmarks of annal, and the baselines and peers they are measured against.
//!
//! The crate has three comparison binaries and the criterion benches. `src/bin/compare.rs`
//! runs every workload against every contender (plain files, SQLite, okaywal, redb, annal's
//! log and store) in one run; `log_compare` and `store_compare` are the earlier, narrower
//! comparisons of the log core with its plain-file baseline and of the streams layer with
//! SQLite. Each prints a Markdown report (see `benches/README.md`). The criterion benches in
//! `benches/` time one component each.
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
//! - [`contenders`]: one adapter per system `compare` measures, behind one trait.
//! - [`compare`]: the driver of `compare`, parent and child sides.
//! - [`cli`]: the command-line options the drivers share (clap).
//! - [`dirs`]: store directories seen from outside: size on disk, dropping them from the
//!   page cache, sparse copies of crashed stores, and the peak RSS of a process.
//! - [`machine`]: what machine and file system the figures come from, and the refusal to
//!   measure durability on a RAM-backed file system.
//! - [`payload`]: deterministic event payloads.
//! - [`report`]: progress lines, settling the file system, Markdown tables.
//! - [`stats`]: medians, latency histograms and the table's number formats.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod compare;
pub mod contenders;
pub mod dirs;
pub mod group_commit;
pub mod machine;
pub mod payload;
pub mod peer;
pub mod plain;
pub mod report;
pub mod stats;
