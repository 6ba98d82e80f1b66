//! `annal demo`: a group-commit workload, a full replay and a reopen, with every number
//! measured in the run that prints it.
//!
//! Several threads each append small JSON events one at a time, each append durable
//! (`Durability::Sync`: it returns after `fdatasync`), so concurrent appends share fsyncs
//! through group commit. Every append's latency is measured. Then the whole log is replayed
//! through a cursor (every record's CRC is checked, and every event of this run is compared
//! byte for byte with what was appended), and the store is closed and reopened to show what
//! recovery reports.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use annal::{Durability, Log, Options};

use crate::escape;
use crate::inspect::{grouped, human_bytes};

/// How often progress is printed while the writers run.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// The store directory (created if missing; appended to if it holds a store).
    pub dir: PathBuf,
    /// Writer threads.
    pub threads: usize,
    /// Appends per writer thread, one event each.
    pub events_per_thread: u64,
}

/// Why the demo stopped.
#[derive(Debug)]
pub enum DemoError {
    /// The store failed.
    Store(annal::Error),
    /// Writing the report failed (a closed pipe, say).
    Output(io::Error),
    /// The replay did not return what was appended: a bug, reported with details.
    Mismatch(String),
}

impl std::fmt::Display for DemoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DemoError::Store(e) => write!(f, "{e}"),
            DemoError::Output(e) => write!(f, "writing output: {e}"),
            DemoError::Mismatch(m) => write!(f, "replay check failed: {m}"),
        }
    }
}

impl std::error::Error for DemoError {}

impl From<annal::Error> for DemoError {
    fn from(e: annal::Error) -> Self {
        DemoError::Store(e)
    }
}

impl From<io::Error> for DemoError {
    fn from(e: io::Error) -> Self {
        DemoError::Output(e)
    }
}

/// The measured results, for callers that check them.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoSummary {
    /// Records in the store before this run.
    pub records_before: u64,
    /// Appends made by this run.
    pub appended: u64,
    /// Records the replay read (the whole log).
    pub replayed: u64,
    /// fsyncs of segment files during this run's session.
    pub fsyncs: u64,
    /// Whether the reopen found a clean store.
    pub reopen_clean: bool,
    /// Bytes the reopen scanned.
    pub reopen_scanned_bytes: u64,
    /// The seq after the last record, as the reopen reported it.
    pub reopen_next_seq: u64,
}

/// One writer's results.
struct WriterResult {
    /// Latency of each append, in nanoseconds.
    latencies: Vec<u64>,
    /// `(seq, n)` of each append: the seq the log gave the writer's `n`-th event.
    seqs: Vec<(u64, u64)>,
    finished: Instant,
}

/// The event a writer appends as its `n`-th: small JSON, as an event-sourced bank account
/// might store. `run` is the log's first seq of this run, so events differ between runs.
pub fn event(run: u64, writer: usize, n: u64) -> Vec<u8> {
    const KINDS: [&str; 4] = ["Deposited", "Withdrawn", "TransferSent", "TransferReceived"];
    let mix = (writer as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n.wrapping_mul(0xBF58_476D);
    let kind = KINDS.get((mix % 4) as usize).copied().unwrap_or("Deposited");
    let account = mix % 1000;
    let amount = (mix >> 16) % 100_000;
    format!(
        "{{\"type\":\"{kind}\",\"account\":\"acct-{account:03}\",\"amount_cents\":{amount},\
         \"writer\":{writer},\"n\":{n},\"run\":{run}}}"
    )
    .into_bytes()
}

/// Runs the demo, writing a human-readable report to `out`.
pub fn run(cfg: &DemoConfig, out: &mut dyn Write) -> Result<DemoSummary, DemoError> {
    let threads = cfg.threads.max(1);
    let per_thread = cfg.events_per_thread.max(1);
    let total = threads as u64 * per_thread;
    let opts = Options { durability: Durability::Sync, ..Options::default() };

    writeln!(out, "annal demo: {}", escape::path(&cfg.dir))?;
    let started_open = Instant::now();
    let log = Log::open(&cfg.dir, opts.clone())?;
    let open_ms = started_open.elapsed().as_secs_f64() * 1e3;
    let start_seq = log.recovery_report().next_seq;
    if start_seq == 0 {
        writeln!(out, "  new store (opened in {open_ms:.1} ms)")?;
    } else {
        writeln!(
            out,
            "  existing store with {} records (opened in {open_ms:.1} ms); appending more",
            grouped(start_seq)
        )?;
    }
    writeln!(
        out,
        "  {threads} writer threads x {} appends of one small JSON event each, every append \
         durable:\n  it returns after fdatasync (Durability::Sync); concurrent appends share one \
         (group commit)",
        grouped(per_thread)
    )?;

    // Writers.
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(threads + 1));
    let mut handles = Vec::with_capacity(threads);
    for writer in 0..threads {
        let (log, done, stop, barrier) =
            (log.clone(), Arc::clone(&done), Arc::clone(&stop), Arc::clone(&barrier));
        handles.push(thread::spawn(move || -> Result<WriterResult, annal::Error> {
            let mut latencies = Vec::with_capacity(per_thread as usize);
            let mut seqs = Vec::with_capacity(per_thread as usize);
            barrier.wait();
            for n in 0..per_thread {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let payload = event(start_seq, writer, n);
                let t = Instant::now();
                let appended = log.append(&[&payload]);
                let nanos = t.elapsed().as_nanos();
                match appended {
                    Ok(a) => seqs.push((a.first, n)),
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
                latencies.push(u64::try_from(nanos).unwrap_or(u64::MAX));
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(WriterResult { latencies, seqs, finished: Instant::now() })
        }));
    }
    barrier.wait();
    let started = Instant::now();
    let mut last_report = started;
    while !handles.iter().all(|h| h.is_finished()) {
        thread::sleep(Duration::from_millis(50));
        if last_report.elapsed() >= PROGRESS_INTERVAL {
            last_report = Instant::now();
            let n = done.load(Ordering::Relaxed);
            let secs = started.elapsed().as_secs_f64();
            writeln!(
                out,
                "  ... {:>9} / {} appends ({} appends/s so far)",
                grouped(n),
                grouped(total),
                grouped((n as f64 / secs) as u64)
            )?;
        }
    }
    let mut results = Vec::with_capacity(threads);
    let mut first_error = None;
    for h in handles {
        match h.join() {
            Ok(Ok(r)) => results.push(r),
            Ok(Err(e)) => {
                first_error.get_or_insert(DemoError::Store(e));
            }
            Err(_) => {
                first_error.get_or_insert(DemoError::Mismatch("a writer thread panicked".into()));
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let finished = results.iter().map(|r| r.finished).max().unwrap_or(started);
    let write_secs = finished.duration_since(started).as_secs_f64();
    let stats = log.stats();

    let mut latencies: Vec<u64> =
        results.iter().flat_map(|r| r.latencies.iter().copied()).collect();
    latencies.sort_unstable();
    let appended = latencies.len() as u64;
    let ms = |nanos: u64| nanos as f64 / 1e6;
    writeln!(out)?;
    writeln!(
        out,
        "appends       {} in {write_secs:.2} s = {} appends/s ({threads} threads)",
        grouped(appended),
        grouped((appended as f64 / write_secs) as u64)
    )?;
    writeln!(
        out,
        "latency       p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (each append, until durable)",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(latencies.last().copied().unwrap_or(0))
    )?;
    let per_fsync =
        if stats.fsyncs == 0 { 0.0 } else { stats.appends as f64 / stats.fsyncs as f64 };
    writeln!(
        out,
        "fsyncs        {} = {per_fsync:.2} appends per fsync; mean fsync {:.2} ms, max {:.2} ms",
        grouped(stats.fsyncs),
        ms(stats.fsync_nanos_mean()),
        ms(stats.fsync_nanos_max)
    )?;
    writeln!(
        out,
        "written       {} in {} write calls, {} segment roll(s)",
        human_bytes(stats.bytes_written),
        grouped(stats.writes),
        stats.rolls
    )?;

    // Replay: every record of the log, with this run's events compared byte for byte.
    let mut owner = vec![None; appended as usize];
    for (writer, r) in results.iter().enumerate() {
        for &(seq, n) in &r.seqs {
            let slot = seq.checked_sub(start_seq).and_then(|i| owner.get_mut(i as usize));
            match slot {
                Some(slot @ None) => *slot = Some((writer, n)),
                _ => {
                    return Err(DemoError::Mismatch(format!(
                        "seq {seq} was given to two appends or lies outside this run's range"
                    )));
                }
            }
        }
    }
    let started = Instant::now();
    let mut replayed = 0u64;
    let mut replayed_bytes = 0u64;
    let mut sample = None;
    for item in log.cursor(0) {
        let rec = item?;
        if rec.seq != replayed {
            return Err(DemoError::Mismatch(format!(
                "seq {} came where {replayed} was due",
                rec.seq
            )));
        }
        if let Some(i) = rec.seq.checked_sub(start_seq) {
            let Some(&Some((writer, n))) = owner.get(i as usize) else {
                return Err(DemoError::Mismatch(format!(
                    "seq {} was not appended by this run",
                    rec.seq
                )));
            };
            if rec.payload.as_ref() != event(start_seq, writer, n).as_slice() {
                return Err(DemoError::Mismatch(format!("seq {} holds other bytes", rec.seq)));
            }
        }
        replayed += 1;
        replayed_bytes += rec.payload.len() as u64;
        if rec.seq + 1 == start_seq + appended {
            sample = Some(rec);
        }
    }
    let replay_secs = started.elapsed().as_secs_f64();
    if replayed != start_seq + appended {
        return Err(DemoError::Mismatch(format!(
            "replay returned {replayed} records, expected {}",
            start_seq + appended
        )));
    }
    writeln!(
        out,
        "replay        {} records ({} of payload) in {:.3} s = {} records/s\n              \
         every CRC verified; all {} events of this run matched byte for byte",
        grouped(replayed),
        human_bytes(replayed_bytes),
        replay_secs,
        grouped((replayed as f64 / replay_secs.max(1e-9)) as u64),
        grouped(appended)
    )?;
    if let Some(rec) = sample {
        writeln!(out, "last event    seq {}: {}", rec.seq, escape::bytes(&rec.payload))?;
    }

    // Close cleanly, reopen, and show what recovery did.
    let fsyncs = stats.fsyncs;
    log.close()?;
    let started = Instant::now();
    let log = Log::open(&cfg.dir, opts)?;
    let reopen_ms = started.elapsed().as_secs_f64() * 1e3;
    let r = log.recovery_report().clone();
    writeln!(
        out,
        "reopen        {} in {reopen_ms:.1} ms: {} segment(s), next seq {}, scanned {} bytes",
        if r.clean { "clean" } else { "NOT clean" },
        r.segments,
        grouped(r.next_seq),
        grouped(r.scanned_bytes)
    )?;
    if let Some(t) = &r.truncated {
        writeln!(
            out,
            "              cut a torn tail of {} bytes ({})",
            t.bytes,
            escape::text(&t.cause.to_string())
        )?;
    }
    log.close()?;
    let dir = escape::path(&cfg.dir);
    writeln!(out, "check it:     cargo run --release -p annal-tools -- verify --dir {dir}")?;
    Ok(DemoSummary {
        records_before: start_seq,
        appended,
        replayed,
        fsyncs,
        reopen_clean: r.clean,
        reopen_scanned_bytes: r.scanned_bytes,
        reopen_next_seq: r.next_seq,
    })
}

/// The nearest-rank percentile `p` of sorted `values` (0 for none).
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn events_are_distinct_json_ish_and_small() {
        let a = event(0, 1, 2);
        assert_ne!(a, event(0, 1, 3));
        assert_ne!(a, event(0, 2, 2));
        assert_ne!(a, event(5, 1, 2));
        let s = String::from_utf8(a).unwrap();
        assert!(s.starts_with("{\"type\":\"") && s.ends_with('}'), "{s}");
        assert!(s.len() < 160, "{s}");
    }
}
