//! What the criterion benches share: a short measurement configuration (so that
//! `cargo bench -p annal-benches` takes minutes, not hours) and store directories on the
//! real disk.

#![allow(dead_code, reason = "each bench uses a different part")]

use std::time::Duration;

use annal::{Durability, Log, Options};
use annal_benches::machine;
use criterion::Criterion;

/// Criterion with 10 samples, 0.5 s of warm-up and 2 s of measurement per benchmark.
pub fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

/// A fresh directory under the benchmark root (`$ANNAL_BENCH_DIR` or `target/bench-data`),
/// removed when dropped.
pub fn store_dir(what: &str) -> tempfile::TempDir {
    let root = machine::bench_root();
    std::fs::create_dir_all(&root).expect("create the benchmark root");
    tempfile::Builder::new()
        .prefix(&format!("criterion-{what}-"))
        .tempdir_in(root)
        .expect("create a benchmark directory")
}

/// An open log in `dir` with segments of `segment_bytes` holding `events` payloads from
/// `pool`, appended in batches of `batch` with `Durability::None` and synced.
pub fn filled_log(
    dir: &std::path::Path,
    segment_bytes: u64,
    events: u64,
    batch: usize,
    pool: &[Vec<u8>],
) -> Log {
    let opts = Options {
        durability: Durability::None,
        segment_bytes,
        max_record_bytes: 1 << 20,
        ..Options::default()
    };
    let log = Log::open(dir, opts).expect("open the log");
    let mut seq = 0u64;
    while seq < events {
        let n = (events - seq).min(batch as u64) as usize;
        let start = (seq % pool.len() as u64) as usize;
        let payloads: Vec<&[u8]> =
            (0..n).map(|i| pool[(start + i) % pool.len()].as_slice()).collect();
        log.append(&payloads).expect("append");
        seq += n as u64;
    }
    log.sync().expect("sync");
    log
}

/// The base seq of the active (last) segment of the store in `dir`, from the segment file
/// names (20-digit base seqs).
pub fn active_base(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir.join("segments"))
        .expect("list segments")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".seg")?.parse::<u64>().ok()
        })
        .max()
        .expect("a segment")
}
