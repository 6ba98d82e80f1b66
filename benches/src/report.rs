//! What both comparison binaries share to run and report: progress lines, settling the file
//! system between timed steps, timing calls on many threads, and the Markdown tables of the
//! results.

use std::error::Error;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::stats::{latency_histogram, record};

/// The error type of the comparison binaries.
pub type R<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// Prints a progress line to stderr, prefixed with the seconds since the first call.
pub fn progress(msg: impl AsRef<str>) {
    static START: OnceLock<Instant> = OnceLock::new();
    let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("[{t:7.1}s] {}", msg.as_ref());
}

/// Flushes the file system holding `dir` (`syncfs`), so that the writeback of a previous
/// step is not billed to the next one.
pub fn settle(dir: &Path) -> io::Result<()> {
    rustix::fs::syncfs(File::open(dir)?)?;
    Ok(())
}

/// Milliseconds since `t`.
pub fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Runs `op` on `threads` threads for `secs` seconds, timing every call. The clock runs
/// from the moment all threads are released until the last one returns.
pub fn timed_threads<F>(threads: usize, secs: f64, op: F) -> R<(u64, f64, Histogram<u64>)>
where
    F: Fn(usize, u64) -> R<()> + Sync,
{
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(threads + 1);
    let (results, elapsed) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (stop, barrier, op) = (&stop, &barrier, &op);
                s.spawn(move || -> R<(u64, Histogram<u64>)> {
                    let mut h = latency_histogram();
                    let mut n = 0u64;
                    barrier.wait();
                    while !stop.load(Ordering::Relaxed) {
                        let t0 = Instant::now();
                        op(t, n)?;
                        record(&mut h, t0.elapsed());
                        n += 1;
                    }
                    Ok((n, h))
                })
            })
            .collect();
        barrier.wait();
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
        let results: Vec<R<(u64, Histogram<u64>)>> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a benchmark thread panicked".into())))
            .collect();
        (results, t0.elapsed().as_secs_f64())
    });
    let mut hist = latency_histogram();
    let mut ops = 0;
    for r in results {
        let (n, h) = r?;
        ops += n;
        hist.add(&h).map_err(|e| format!("merging histograms: {e}"))?;
    }
    Ok((ops, elapsed, hist))
}

/// The opening lines of a report: its title, the date, the machine, where the stores are,
/// the command that made it and the machine's load at the start.
pub fn run_header(
    title: &str,
    bin: &str,
    args: &[String],
    fs: &crate::machine::FsInfo,
    dir: &str,
) -> String {
    use crate::machine;
    let mut h = format!("## {title}\n\n");
    h.push_str(&format!("- date: {}\n", machine::utc_now()));
    for (k, v) in machine::describe() {
        h.push_str(&format!("- {k}: {v}\n"));
    }
    h.push_str(&format!(
        "- stores: {dir} on {} ({}, mounted at {})\n",
        fs.fs_type, fs.device, fs.mount_point
    ));
    let extra = if args.is_empty() { String::new() } else { format!(" -- {}", args.join(" ")) };
    h.push_str(&format!("- command: `cargo run --release -p annal-benches --bin {bin}{extra}`\n"));
    h.push_str(&format!("- machine load at the start: {}\n", machine::load()));
    h
}

/// The closing line of a report: how long the run took and the machine's load at its end.
pub fn run_footer(secs: f64) -> String {
    format!("Run took {secs:.0} s. Machine load at the end: {}.\n", crate::machine::load())
}

/// Notes the machine's load under `t`, as its workload ends.
pub fn note_load(t: &mut Table) {
    t.note(format!("Machine at the end of this workload: {}.", crate::machine::load()));
}

/// `>= 0.8x: met` or `>= 0.8x: MISSED`.
pub fn verdict(ratio: f64, target: f64) -> String {
    let word = if ratio >= target { "met" } else { "MISSED" };
    format!(">= {target:.1}x: {word}")
}

/// A note listing per-repetition values.
pub fn per_rep(what: &str, xs: &[f64]) -> String {
    let list: Vec<String> = xs.iter().map(|x| format!("{x:.2}")).collect();
    format!("Per-repetition {what}: {}.", list.join(", "))
}

/// A Markdown table with a title and notes.
#[derive(Debug, Clone)]
pub struct Table {
    title: String,
    head: Vec<String>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

impl Table {
    /// An empty table with these column heads.
    pub fn new(title: &str, head: &[&str]) -> Self {
        Table {
            title: title.into(),
            head: head.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Adds a note printed under the table.
    pub fn note(&mut self, n: String) {
        self.notes.push(n);
    }

    /// Appends the table as Markdown to `out`.
    pub fn render(&self, out: &mut String) {
        out.push_str(&format!("### {}\n\n", self.title));
        out.push_str(&format!("| {} |\n", self.head.join(" | ")));
        out.push_str(&format!("|{}\n", "---|".repeat(self.head.len())));
        for r in &self.rows {
            out.push_str(&format!("| {} |\n", r.join(" | ")));
        }
        out.push('\n');
        for n in &self.notes {
            out.push_str(&format!("{n}\n\n"));
        }
    }
}
