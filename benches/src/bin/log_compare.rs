//! `log_compare`: every log-core workload of the issue, for annal and its baselines, in one
//! run, and a Markdown table of the results.
//!
//! ```text
//! cargo run --release -p annal-benches --bin log_compare -- [--quick] [--dir PATH]
//!     [--only bulk,durable,replay,read,open,sweep] [--no-okaywal] [--allow-ram]
//!     [--events N] [--reps N] [--segment-mib N]
//! ```
//!
//! Every figure is the median of several repetitions. In each repetition annal and its
//! baseline run back to back on the same data, in alternating order, and the ratio
//! annal/baseline is taken within that repetition; the table shows the median of those
//! ratios. A ratio is always a speed ratio: above 1 means annal is faster.
//!
//! Stores live in a fresh directory under `--dir`, `$ANNAL_BENCH_DIR` or
//! `target/bench-data`, on a real disk: the run refuses tmpfs and ramfs, where fsync is
//! free (`--allow-ram` overrides, for trying the driver out only). The directory is removed
//! at the end.
//!
//! "Open after a crash" is measured on a store whose writer process was killed with
//! SIGKILL: this binary re-runs itself as a child (`--crash-writer`), which appends the
//! events, syncs, reports ready and waits to be killed. The store then has no close frame
//! and no index for its active segment, exactly as after any crash whose last sync covered
//! everything; the kernel released the child's lock. The pristine active segment is kept in
//! memory and rewritten (and synced) before each repetition, because an open repairs it.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use annal::{Durability, Log, Options};
use annal_benches::group_commit::{GroupCommitFile, Space};
use annal_benches::machine;
use annal_benches::payload::{self, BULK_BATCH_EVENTS, EVENT_BYTES};
use annal_benches::peer::OkayWal;
use annal_benches::plain::{self, PlainReader, PlainWriter};
use annal_benches::report::{
    self, R, Table, ms_since, per_rep, progress, settle, timed_threads, verdict,
};
use annal_benches::stats::{
    fmt_ms, fmt_rate, fmt_ratio, fmt_us, latency_histogram, median, quantile_us,
};
use hdrhistogram::Histogram;

/// The workloads, in the order they run; `--only` selects among these names.
const WORKLOADS: [&str; 6] = ["bulk", "durable", "replay", "read", "open", "sweep"];

/// annal's default segment size, the one every workload but the sweep uses.
const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// Spare preallocated space after the data of a crashed plain file, as an active annal
/// segment has.
const PLAIN_CRASH_SLACK_BYTES: u64 = 64 << 20;

/// How much of everything a run does.
#[derive(Debug, Clone)]
struct Config {
    quick: bool,
    /// Repetitions of the bulk, replay, read and open workloads.
    reps: usize,
    /// Events in the bulk, replay, read and sweep stores.
    bulk_events: u64,
    /// Segment size of every workload but the sweep (annal's default unless overridden).
    segment_bytes: u64,
    /// Thread counts of the durable-append workload.
    threads: Vec<usize>,
    /// Seconds each system appends in one durable-append repetition.
    durable_secs: f64,
    /// Alternating slices each durable measurement is cut into.
    durable_slices: usize,
    durable_reps: usize,
    /// Reads per random-read measurement.
    read_count: usize,
    /// Store sizes of the open workload.
    open_events: Vec<u64>,
    /// Segment sizes of the sweep, in MiB.
    sweep_mib: Vec<u64>,
    sweep_reps: usize,
    okaywal: bool,
    only: BTreeSet<String>,
}

impl Config {
    fn new(quick: bool) -> Self {
        let mut c = Config {
            quick,
            reps: 5,
            bulk_events: 1_000_000,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            threads: vec![1, 8, 32],
            durable_secs: 1.6,
            durable_slices: 8,
            durable_reps: 7,
            read_count: 200_000,
            open_events: vec![1_000_000, 4_000_000],
            sweep_mib: vec![8, 16, 64, 256],
            sweep_reps: 3,
            okaywal: true,
            only: WORKLOADS.iter().map(|s| s.to_string()).collect(),
        };
        if quick {
            c.reps = 3;
            c.bulk_events = 250_000;
            c.durable_secs = 0.4;
            c.durable_slices = 2;
            c.durable_reps = 3;
            c.read_count = 50_000;
            c.open_events = vec![250_000, 1_000_000];
            c.sweep_reps = 2;
        }
        c
    }

    fn runs(&self, workload: &str) -> bool {
        self.only.contains(workload)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--crash-writer") {
        if let Err(e) = crash_writer(&args[1..]) {
            eprintln!("log_compare --crash-writer: {e}");
            std::process::exit(2);
        }
        return;
    }
    if let Err(e) = run(&args) {
        eprintln!("log_compare: {e}");
        std::process::exit(1);
    }
}

/// The command line of `log_compare`.
#[derive(Debug, clap::Parser)]
#[command(name = "log_compare", about = "annal::Log against a plain file and okaywal")]
struct Cli {
    #[command(flatten)]
    common: annal_benches::cli::Common,
    /// Workloads to run, comma-separated, of bulk, durable, replay, read, open, sweep.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    only: Option<Vec<String>>,
    /// Leave okaywal out.
    #[arg(long)]
    no_okaywal: bool,
    /// Events of the bulk/replay/read/sweep stores (for profiling).
    #[arg(long, value_name = "N")]
    events: Option<u64>,
    /// Segment size outside the sweep, MiB (default 64, annal's).
    #[arg(long, value_name = "N")]
    segment_mib: Option<u64>,
}

fn run(args: &[String]) -> R<()> {
    let cli: Cli = match annal_benches::cli::parse("log_compare", args) {
        Ok(c) => c,
        Err(0) => return Ok(()),
        Err(_) => return Err("bad arguments (see --help)".into()),
    };
    let (quick, dir, allow_ram, reps) =
        (cli.common.quick, cli.common.dir, cli.common.allow_ram, cli.common.reps);
    let (only, okaywal, events, segment_mib) =
        (cli.only, !cli.no_okaywal, cli.events, cli.segment_mib);
    let mut cfg = Config::new(quick);
    cfg.okaywal = okaywal;
    if let Some(n) = events {
        cfg.bulk_events = n;
    }
    if let Some(m) = segment_mib {
        cfg.segment_bytes = m << 20;
    }
    if let Some(n) = reps {
        cfg.reps = n;
        cfg.durable_reps = n;
        cfg.sweep_reps = n;
    }
    if let Some(list) = only {
        cfg.only = list.iter().map(|s| s.trim().to_string()).collect();
        if let Some(bad) = cfg.only.iter().find(|w| !WORKLOADS.contains(&w.as_str())) {
            return Err(format!("unknown workload {bad:?} (see --help)").into());
        }
    }
    let (run_dir, fs_info) = machine::run_dir(dir, "log_compare", allow_ram)?;
    progress(format!("stores in {} ({})", run_dir.path().display(), fs_info.fs_type));
    let env = Env {
        cfg: cfg.clone(),
        dir: run_dir.path().to_path_buf(),
        pool: payload::pool(BULK_BATCH_EVENTS, EVENT_BYTES, 0x5EED),
        next_name: AtomicU64::new(0),
    };

    let mut report = Report::default();
    report.header(args, &fs_info, &run_dir.path().display().to_string(), &cfg);
    let started = Instant::now();
    let mut stores = None;
    if cfg.runs("bulk") {
        stores = Some(bulk_section(&env, &mut report)?);
    }
    if cfg.runs("durable") {
        durable_section(&env, &mut report)?;
    }
    if cfg.runs("replay") || cfg.runs("read") {
        let stores = match stores.take() {
            Some(s) => s,
            None => build_stores(&env, cfg.bulk_events, cfg.segment_bytes)?,
        };
        if cfg.runs("replay") {
            replay_section(&env, &stores, &mut report)?;
        }
        if cfg.runs("read") {
            read_section(&env, &stores, &mut report)?;
        }
    }
    if cfg.runs("open") {
        open_section(&env, &mut report)?;
    }
    if cfg.runs("sweep") {
        sweep_section(&env, &mut report)?;
    }
    progress("done");
    report.footer(started.elapsed().as_secs_f64());
    print!("{}", report.render());
    drop(env);
    run_dir.close()?;
    Ok(())
}

/// Shared by the workloads: the configuration, the run directory and the payloads.
struct Env {
    cfg: Config,
    dir: PathBuf,
    /// One batch worth of payloads; event `seq` carries `pool[seq % pool.len()]`.
    pool: Vec<Vec<u8>>,
    next_name: AtomicU64,
}

impl Env {
    /// A path in the run directory that was never used.
    fn fresh(&self, what: &str) -> PathBuf {
        let n = self.next_name.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{what}-{n}"))
    }
}

fn remove(path: &Path) -> R<()> {
    if path.is_dir() {
        fs::remove_dir_all(path)?
    } else {
        fs::remove_file(path)?
    }
    Ok(())
}

/// annal's default options with `segment_bytes`. Segments below 64 MiB get a 1 MiB record
/// limit, as the default 16 MiB limit does not fit in them (events here are 256 B).
fn annal_options(segment_bytes: u64) -> Options {
    let opts = Options { segment_bytes, ..Options::default() };
    if segment_bytes < DEFAULT_SEGMENT_BYTES {
        Options { max_record_bytes: 1 << 20, ..opts }
    } else {
        opts
    }
}

// ---------------------------------------------------------------------------------------
// Bulk append
// ---------------------------------------------------------------------------------------

/// Appends `events` to a new annal store in `dir` in batches of 1,000 with
/// `Durability::None`, then one `sync`. Timed from `Log::open` (which creates the first
/// segment) to the end of the sync. Returns the seconds and the still-open log.
fn bulk_annal(dir: &Path, events: u64, segment_bytes: u64, pool: &[Vec<u8>]) -> R<(f64, Log)> {
    let opts = Options { durability: Durability::None, ..annal_options(segment_bytes) };
    let t = Instant::now();
    let log = Log::open(dir, opts)?;
    let mut left = events;
    while left > 0 {
        let n = left.min(pool.len() as u64) as usize;
        log.append(&pool[..n])?;
        left -= n as u64;
    }
    log.sync()?;
    let secs = t.elapsed().as_secs_f64();
    if log.durable_head() != events.checked_sub(1) {
        return Err(
            format!("annal bulk: durable head {:?} after {events}", log.durable_head()).into()
        );
    }
    Ok((secs, log))
}

/// The same frames into a new preallocated plain file: `write_all` per batch, then one
/// `sync_data`. Timed from the file's creation (and `fallocate`) to the end of the sync.
fn bulk_plain(path: &Path, events: u64, pool: &[Vec<u8>]) -> R<f64> {
    let t = Instant::now();
    let mut w = PlainWriter::create(path, plain::file_bytes(events, pool.len(), EVENT_BYTES))?;
    let mut left = events;
    while left > 0 {
        let n = left.min(pool.len() as u64) as usize;
        w.append(&pool[..n])?;
        left -= n as u64;
    }
    w.sync()?;
    let secs = t.elapsed().as_secs_f64();
    if w.events() != events {
        return Err("plain bulk: wrong event count".into());
    }
    Ok(secs)
}

/// One repetition of bulk append for both systems, in the given order. Returns (annal
/// seconds, plain seconds, the annal log, the plain file).
fn bulk_pair(
    env: &Env,
    events: u64,
    segment_bytes: u64,
    annal_first: bool,
) -> R<(f64, f64, Log, PathBuf)> {
    let adir = env.fresh("bulk-annal");
    let ppath = env.fresh("bulk-plain");
    let mut a = None;
    let mut p = None;
    for first in [annal_first, !annal_first] {
        settle(&env.dir)?;
        if first {
            a = Some(bulk_annal(&adir, events, segment_bytes, &env.pool)?);
        } else {
            p = Some(bulk_plain(&ppath, events, &env.pool)?);
        }
    }
    let ((asecs, log), psecs) = (a.ok_or("annal did not run")?, p.ok_or("plain did not run")?);
    Ok((asecs, psecs, log, ppath))
}

/// The stores the replay and random-read workloads read: an annal store (closed cleanly)
/// and a plain file with the same events.
struct Stores {
    events: u64,
    annal_dir: PathBuf,
    plain_path: PathBuf,
}

fn build_stores(env: &Env, events: u64, segment_bytes: u64) -> R<Stores> {
    progress(format!("building stores of {events} events"));
    let (_, _, log, plain_path) = bulk_pair(env, events, segment_bytes, true)?;
    let annal_dir = log.dir().to_path_buf();
    log.close()?;
    Ok(Stores { events, annal_dir, plain_path })
}

fn bulk_section(env: &Env, report: &mut Report) -> R<Stores> {
    let events = env.cfg.bulk_events;
    let mut annal = Vec::new();
    let mut plain_r = Vec::new();
    let mut ratios = Vec::new();
    let mut last = None;
    let mut rolls = 0;
    for rep in 0..env.cfg.reps {
        progress(format!("bulk append rep {}/{}", rep + 1, env.cfg.reps));
        let (asecs, psecs, log, ppath) =
            bulk_pair(env, events, env.cfg.segment_bytes, rep % 2 == 0)?;
        rolls = log.stats().rolls;
        let adir = log.dir().to_path_buf();
        log.close()?;
        annal.push(events as f64 / asecs);
        plain_r.push(events as f64 / psecs);
        ratios.push(psecs / asecs);
        if let Some((d, p)) = last.replace((adir, ppath)) {
            remove(&d)?;
            remove(&p)?;
        }
    }
    let (annal_dir, plain_path) = last.ok_or("no repetition ran")?;
    let mb = |rate: f64| {
        rate * (plain::file_bytes(events, BULK_BATCH_EVENTS, EVENT_BYTES) as f64)
            / events as f64
            / 1e6
    };
    let ratio = median(&ratios);
    report.target("Bulk append", ratio, 0.8);
    let mut t = Table::new(
        &format!(
            "Bulk append: {} events of {EVENT_BYTES} B in batches of {BULK_BATCH_EVENTS}, one \
             sync at the end",
            fmt_rate(events as f64)
        ),
        &["system", "events/s", "MB/s (frames)", "annal/plain", "target"],
    );
    t.row(vec![
        "annal (Durability::None, then sync)".into(),
        fmt_rate(median(&annal)),
        format!("{:.0}", mb(median(&annal))),
        fmt_ratio(ratio),
        verdict(ratio, 0.8),
    ]);
    t.row(vec![
        "plain file (write_all, then sync_data)".into(),
        fmt_rate(median(&plain_r)),
        format!("{:.0}", mb(median(&plain_r))),
        String::new(),
        String::new(),
    ]);
    t.note(format!(
        "Timed from creating the store (annal: `Log::open` of an empty directory; plain: \
         create + fallocate) to the end of the final fsync; annal rolled {rolls} segments of \
         {} MiB on the way. Both encode the same frames (annal::format) on the timed path.",
        env.cfg.segment_bytes >> 20
    ));
    t.note(per_rep("ratios", &ratios));
    report.table(t);
    Ok(Stores { events, annal_dir, plain_path })
}

// ---------------------------------------------------------------------------------------
// Durable single-event appends
// ---------------------------------------------------------------------------------------

/// The accumulated result of one system in one repetition.
struct Run {
    ops: u64,
    secs: f64,
    hist: Histogram<u64>,
    fsyncs: Option<u64>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.secs
    }
}

/// The payload thread `t` appends at its `i`-th call.
fn durable_payload(pool: &[Vec<u8>], t: usize, i: u64) -> &[u8] {
    &pool[(t * 31 + i as usize) % pool.len()]
}

/// The systems compared on durable appends, in table order. The zero-filled plain file is
/// the target baseline: it is the faster of the two plain files (its appends overwrite
/// initialized blocks, so an fdatasync flushes data and no extent conversion).
const DURABLE_SYSTEMS: [&str; 5] = [
    "annal, established store (segment prepared ahead)",
    "annal, fresh store (first segment, zeros ahead inline)",
    "plain group commit, zero-filled 64 MiB chunks",
    "plain group commit, fallocate 64 MiB chunks",
    "okaywal 0.3 (reference)",
];

/// Space chunks of the plain group-commit files: annal's segment size.
const PLAIN_CHUNK_BYTES: u64 = 64 << 20;

/// One store receiving durable single-event appends.
enum Durable {
    /// annal with `Options::default()`: `Durability::Sync`, 64 MiB preallocated segments;
    /// and the appends and fsyncs made before timing (to get past the first segment).
    Annal(Log, u64, u64),
    /// The leader/follower group commit over a plain file prepared in chunks.
    Plain(Box<GroupCommitFile>, PathBuf),
    /// okaywal with its default configuration.
    Okaywal(OkayWal, PathBuf),
}

impl Durable {
    /// Opens system number `i` of [`DURABLE_SYSTEMS`] on a fresh path.
    fn open(env: &Env, i: usize) -> R<Self> {
        Ok(match i {
            0 => {
                let log = Log::open(env.fresh("durable-annal"), Options::default())?;
                establish(&log)?;
                let st = log.stats();
                Durable::Annal(log, st.appends, st.fsyncs)
            }
            1 => Durable::Annal(Log::open(env.fresh("durable-annal"), Options::default())?, 0, 0),
            2 | 3 => {
                let path = env.fresh("durable-plain");
                let space = if i == 2 {
                    Space::ZeroFill(PLAIN_CHUNK_BYTES)
                } else {
                    Space::Fallocate(PLAIN_CHUNK_BYTES)
                };
                Durable::Plain(Box::new(GroupCommitFile::create(&path, space)?), path)
            }
            _ => {
                let dir = env.fresh("durable-okaywal");
                Durable::Okaywal(OkayWal::open(&dir)?, dir)
            }
        })
    }

    /// Appends one event and returns once it is durable.
    fn append(&self, payload: &[u8]) -> R<()> {
        match self {
            Durable::Annal(log, ..) => {
                log.append(&[payload])?;
            }
            Durable::Plain(gc, _) => gc.append(&[payload])?,
            Durable::Okaywal(wal, _) => wal.append(payload)?,
        }
        Ok(())
    }

    /// Closes and removes the store after checking it counted `ops` appends; returns its
    /// fsync count where the system reports one.
    fn finish(self, ops: u64) -> R<Option<u64>> {
        match self {
            Durable::Annal(log, appends_before, fsyncs_before) => {
                let st = log.stats();
                let dir = log.dir().to_path_buf();
                log.close()?;
                remove(&dir)?;
                if st.appends - appends_before != ops {
                    return Err(
                        format!("annal counted {} appends, the threads {ops}", st.appends).into()
                    );
                }
                Ok(Some(st.fsyncs - fsyncs_before))
            }
            Durable::Plain(gc, path) => {
                let (events, fsyncs) = (gc.events(), gc.fsyncs());
                drop(gc);
                remove(&path)?;
                if events != ops {
                    return Err(format!("the plain file holds {events} events, not {ops}").into());
                }
                Ok(Some(fsyncs))
            }
            Durable::Okaywal(wal, dir) => {
                wal.shutdown()?;
                remove(&dir)?;
                Ok(None)
            }
        }
    }
}

/// Brings a fresh log to the state of any store past its first segment: fills the first
/// segment in batches until its half, waits for the spare the background thread prepares
/// (format-spec.md §6.2), and rolls onto it.
fn establish(log: &Log) -> R<()> {
    let batch: Vec<Vec<u8>> = (0..1000).map(|i| vec![(i % 251) as u8; EVENT_BYTES]).collect();
    let half = Options::default().segment_bytes / 2;
    while log.stats().bytes_written < half + (1 << 20) {
        log.append(&batch)?;
    }
    let waited = Instant::now();
    while !log.stats().spare_ready {
        if waited.elapsed() > std::time::Duration::from_secs(60) {
            return Err("no spare segment after 60 s".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    while log.stats().rolls == 0 {
        log.append(&batch)?;
    }
    if log.stats().prepared_rolls != 1 {
        return Err("the roll did not take the prepared spare".into());
    }
    Ok(())
}

/// One repetition at one thread count: every system gets `durable_secs` in total, cut into
/// `durable_slices` slices that alternate between the systems (rotating who goes first), so
/// that a burst of outside disk traffic hits all of them alike.
fn durable_rep(env: &Env, systems: usize, threads: usize, rep: usize) -> R<Vec<Run>> {
    let cfg = &env.cfg;
    let stores: Vec<Durable> = (0..systems).map(|i| Durable::open(env, i)).collect::<R<_>>()?;
    settle(&env.dir)?;
    let mut runs: Vec<Run> = (0..systems)
        .map(|_| Run { ops: 0, secs: 0.0, hist: latency_histogram(), fsyncs: None })
        .collect();
    let slice_secs = cfg.durable_secs / cfg.durable_slices as f64;
    for slice in 0..cfg.durable_slices {
        for k in 0..systems {
            let i = (k + slice + rep) % systems;
            let store = &stores[i];
            let (ops, secs, hist) = timed_threads(threads, slice_secs, |t, n| {
                store.append(durable_payload(&env.pool, t, n))
            })?;
            let run = &mut runs[i];
            run.ops += ops;
            run.secs += secs;
            run.hist.add(&hist).map_err(|e| format!("merging histograms: {e}"))?;
        }
    }
    for (store, run) in stores.into_iter().zip(runs.iter_mut()) {
        run.fsyncs = store.finish(run.ops)?;
    }
    Ok(runs)
}

/// Medians over repetitions of one system at one thread count.
#[derive(Default)]
struct DurableFigures {
    rate: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    per_fsync: Vec<f64>,
}

impl DurableFigures {
    fn add(&mut self, r: &Run) {
        self.rate.push(r.rate());
        self.p50.push(quantile_us(&r.hist, 0.50));
        self.p99.push(quantile_us(&r.hist, 0.99));
        if let Some(f) = r.fsyncs {
            self.per_fsync.push(r.ops as f64 / f.max(1) as f64);
        }
    }

    fn row(&self, threads: usize, name: &str, ratio: String, target: String) -> Vec<String> {
        let per_fsync = if self.per_fsync.is_empty() {
            "n/a".into()
        } else {
            format!("{:.1}", median(&self.per_fsync))
        };
        vec![
            threads.to_string(),
            name.into(),
            fmt_rate(median(&self.rate)),
            fmt_us(median(&self.p50)),
            fmt_us(median(&self.p99)),
            per_fsync,
            ratio,
            target,
        ]
    }
}

fn durable_section(env: &Env, report: &mut Report) -> R<()> {
    let cfg = &env.cfg;
    let mut t = Table::new(
        &format!(
            "Durable single-event appends ({EVENT_BYTES} B, fdatasync before returning): {} s \
             per system per repetition, in {} alternating slices",
            cfg.durable_secs, cfg.durable_slices
        ),
        &[
            "threads",
            "system",
            "appends/s",
            "p50 µs",
            "p99 µs",
            "appends/fsync",
            "annal/x",
            "target",
        ],
    );
    let systems = if cfg.okaywal { 5 } else { 4 };
    for &threads in &cfg.threads {
        let mut figs: Vec<DurableFigures> =
            (0..systems).map(|_| DurableFigures::default()).collect();
        let mut vs_plain = Vec::new();
        let mut vs_fallocate = Vec::new();
        let mut vs_okaywal = Vec::new();
        let mut fresh_vs_plain = Vec::new();
        for rep in 0..cfg.durable_reps {
            progress(format!(
                "durable appends, {} rep {}/{}",
                plural(threads, "thread"),
                rep + 1,
                cfg.durable_reps
            ));
            let runs = durable_rep(env, systems, threads, rep)?;
            for (f, r) in figs.iter_mut().zip(&runs) {
                f.add(r);
            }
            vs_plain.push(runs[0].rate() / runs[2].rate());
            vs_fallocate.push(runs[0].rate() / runs[3].rate());
            fresh_vs_plain.push(runs[1].rate() / runs[2].rate());
            if let Some(ok) = runs.get(4) {
                vs_okaywal.push(runs[0].rate() / ok.rate());
            }
        }
        let ratio = median(&vs_plain);
        report.target(&format!("Durable appends, {}", plural(threads, "thread")), ratio, 1.0);
        let mut ratio_cell = format!(
            "{} vs zero-filled, {} vs fallocate",
            fmt_ratio(ratio),
            fmt_ratio(median(&vs_fallocate))
        );
        if !vs_okaywal.is_empty() {
            ratio_cell.push_str(&format!(", {} vs okaywal", fmt_ratio(median(&vs_okaywal))));
        }
        let fresh = median(&fresh_vs_plain);
        for (i, f) in figs.iter().enumerate() {
            let (ratio, target) = match i {
                0 => (ratio_cell.clone(), verdict(ratio, 1.0)),
                1 => (format!("{} vs zero-filled", fmt_ratio(fresh)), String::new()),
                _ => (String::new(), String::new()),
            };
            t.row(f.row(threads, DURABLE_SYSTEMS[i], ratio, target));
        }
        t.note(per_rep(
            &format!(
                "annal (established)/zero-filled plain ratios at {}",
                plural(threads, "thread")
            ),
            &vs_plain,
        ));
        t.note(per_rep(
            &format!("annal (fresh)/zero-filled plain ratios at {}", plural(threads, "thread")),
            &fresh_vs_plain,
        ));
    }
    t.note(
        "plain group commit: leader/follower over one plain file \
         (benches/src/group_commit.rs): the first waiting appender writes every queued frame \
         with one write_all_at and one sync_data, publishes a durable watermark and wakes \
         the others. Its space is prepared 64 MiB at a time, either zero-filled and synced \
         (appends overwrite initialized blocks: fdatasync flushes data only) or fallocated \
         (unwritten extents, as annal's segments: every fdatasync also commits the \
         extent conversion to the journal). The target is the zero-filled one, the faster. \
         annal uses Options::default() (Durability::Sync, 64 MiB fallocated segments, \
         the next one prepared ahead): established = the store was filled past its first \
         segment before timing and rolled onto a segment a background thread had zero-filled \
         and synced (format-spec.md §6.2), which is where every store spends its life after \
         its first 64 MiB; fresh = a new store's first segment, fallocated, with zeros \
         written 1 MiB ahead inside the group's own fsync. okaywal its default configuration. Latency is per append call, from \
         hdrhistogram over every call of every thread. appends/fsync is each system's own \
         count of fdatasync calls (okaywal does not report one)."
            .into(),
    );
    report.table(t);
    Ok(())
}

/// `1 thread`, `8 threads`.
fn plural(n: usize, noun: &str) -> String {
    if n == 1 { format!("{n} {noun}") } else { format!("{n} {noun}s") }
}

// ---------------------------------------------------------------------------------------
// Replay and random reads
// ---------------------------------------------------------------------------------------

/// Reads every record with a cursor (CRC checked by annal); returns (records, checksum).
fn replay_annal(log: &Log) -> R<(u64, u64)> {
    let mut n = 0u64;
    let mut acc = 0u64;
    for r in log.cursor(0) {
        let r = r?;
        acc = acc.wrapping_add(u64::from(r.payload[0]));
        n += 1;
    }
    Ok((n, acc))
}

/// Reads the plain file sequentially, checking every CRC; returns (records, checksum).
fn replay_plain(path: &Path) -> R<(u64, u64)> {
    let mut acc = 0u64;
    let end = plain::scan(path, |_, _, p| acc = acc.wrapping_add(u64::from(p[0])))?;
    Ok((end.events, acc))
}

/// One timed replay of each, in the given order: (annal seconds, plain seconds).
fn replay_pair(log: &Log, plain_path: &Path, events: u64, annal_first: bool) -> R<(f64, f64)> {
    let mut a = f64::NAN;
    let mut p = f64::NAN;
    let mut sums = [0u64; 2];
    for first in [annal_first, !annal_first] {
        let t = Instant::now();
        let (n, acc) = if first { replay_annal(log)? } else { replay_plain(plain_path)? };
        let secs = t.elapsed().as_secs_f64();
        if n != events {
            return Err(format!("replay saw {n} records of {events}").into());
        }
        if first {
            a = secs
        } else {
            p = secs
        }
        sums[usize::from(!first)] = black_box(acc);
    }
    if sums[0] != sums[1] {
        return Err("annal and the plain file replayed different payloads".into());
    }
    Ok((a, p))
}

fn replay_section(env: &Env, stores: &Stores, report: &mut Report) -> R<()> {
    let log = Log::open(&stores.annal_dir, Options::default())?;
    progress("replay: warming both stores");
    replay_pair(&log, &stores.plain_path, stores.events, true)?;
    let (mut a, mut p, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..env.cfg.reps {
        progress(format!("replay rep {}/{}", rep + 1, env.cfg.reps));
        let (asecs, psecs) = replay_pair(&log, &stores.plain_path, stores.events, rep % 2 == 0)?;
        a.push(stores.events as f64 / asecs);
        p.push(stores.events as f64 / psecs);
        ratios.push(psecs / asecs);
    }
    log.close()?;
    let ratio = median(&ratios);
    report.target("Replay scan (warm)", ratio, 0.8);
    let mut t = Table::new(
        &format!("Replay scan of {} events with CRC checks, warm", fmt_rate(stores.events as f64)),
        &["system", "events/s", "annal/plain", "target"],
    );
    t.row(vec![
        "annal (cursor(0) to the end)".into(),
        fmt_rate(median(&a)),
        fmt_ratio(ratio),
        verdict(ratio, 0.8),
    ]);
    t.row(vec![
        "plain file (read 4 MiB chunks, check frame + record CRCs)".into(),
        fmt_rate(median(&p)),
        String::new(),
        String::new(),
    ]);
    t.note(per_rep("ratios", &ratios));
    report.table(t);
    Ok(())
}

fn read_section(env: &Env, stores: &Stores, report: &mut Report) -> R<()> {
    let log = Log::open(&stores.annal_dir, Options::default())?;
    let mut reader = PlainReader::open(&stores.plain_path, EVENT_BYTES)?;
    if reader.events() != stores.events {
        return Err("the plain index does not cover the store".into());
    }
    let seqs = payload::random_seqs(env.cfg.read_count, stores.events, 0xAB5E_11CE);
    // Both must return the right bytes, not just something.
    for &s in seqs.iter().take(1_000) {
        let want = payload::expected(&env.pool, s);
        if log.read(s)?.payload != want || reader.read(s)? != want {
            return Err(format!("random read of seq {s} returned the wrong payload").into());
        }
    }
    let annal_pass = || -> R<f64> {
        let t = Instant::now();
        let mut acc = 0u64;
        for &s in &seqs {
            acc = acc.wrapping_add(u64::from(log.read(s)?.payload[0]));
        }
        black_box(acc);
        Ok(t.elapsed().as_secs_f64())
    };
    let plain_pass = |reader: &mut PlainReader| -> R<f64> {
        let t = Instant::now();
        let mut acc = 0u64;
        for &s in &seqs {
            acc = acc.wrapping_add(u64::from(reader.read(s)?[0]));
        }
        black_box(acc);
        Ok(t.elapsed().as_secs_f64())
    };
    progress("random reads: warming both stores");
    annal_pass()?;
    plain_pass(&mut reader)?;
    let n = seqs.len() as f64;
    let (mut a, mut p, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..env.cfg.reps {
        progress(format!("random reads rep {}/{}", rep + 1, env.cfg.reps));
        let (asecs, psecs) = if rep % 2 == 0 {
            let x = annal_pass()?;
            (x, plain_pass(&mut reader)?)
        } else {
            let y = plain_pass(&mut reader)?;
            (annal_pass()?, y)
        };
        a.push(n / asecs);
        p.push(n / psecs);
        ratios.push(psecs / asecs);
    }
    log.close()?;
    let ratio = median(&ratios);
    report.target("Random read(seq)", ratio, 0.8);
    let mut t = Table::new(
        &format!(
            "Random read(seq): {} uniformly random seqs over {} events, one thread, warm",
            fmt_rate(n),
            fmt_rate(stores.events as f64)
        ),
        &["system", "reads/s", "mean µs/read", "annal/plain", "target"],
    );
    t.row(vec![
        "annal (Log::read)".into(),
        fmt_rate(median(&a)),
        fmt_us(1e6 / median(&a)),
        fmt_ratio(ratio),
        verdict(ratio, 0.8),
    ]);
    t.row(vec![
        "plain file (dense Vec<u64> index, pread, CRC)".into(),
        fmt_rate(median(&p)),
        fmt_us(1e6 / median(&p)),
        String::new(),
        String::new(),
    ]);
    t.note(per_rep("ratios", &ratios));
    report.table(t);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Open after a clean close and after a crash
// ---------------------------------------------------------------------------------------

/// The child side of the crash simulation: `--crash-writer DIR EVENTS SEGMENT_BYTES`.
/// Appends EVENTS in batches of 1,000 (Durability::None), syncs, prints `ready` and waits to
/// be killed; the log is never closed.
fn crash_writer(args: &[String]) -> R<()> {
    let [dir, events, segment_bytes] = args else {
        return Err("usage: --crash-writer DIR EVENTS SEGMENT_BYTES".into());
    };
    let pool = payload::pool(BULK_BATCH_EVENTS, EVENT_BYTES, 0x5EED);
    let (_, log) = bulk_annal(Path::new(dir), events.parse()?, segment_bytes.parse()?, &pool)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    drop(out);
    loop {
        // Keep the log open (and never closed) until the parent kills the process.
        std::thread::park();
        black_box(&log);
    }
}

/// Builds an annal store of `events` in `dir` in a child process and kills it with SIGKILL
/// once everything is synced.
fn crash_store(dir: &Path, events: u64, segment_bytes: u64) -> R<()> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("--crash-writer")
        .arg(dir)
        .arg(events.to_string())
        .arg(segment_bytes.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        BufReader::new(out).read_line(&mut line)?;
    }
    child.kill()?;
    let status = child.wait()?;
    if line.trim() != "ready" {
        return Err(format!("the crash writer failed ({status})").into());
    }
    Ok(())
}

/// A crashed store's segments directory as the killed writer left it, so that every
/// repetition opens the same crashed state: an open repairs the active segment (cuts the
/// zeroed tail, re-reserves space) and a close adds a close frame and an index file.
struct CrashSnapshot {
    seg_dir: PathBuf,
    names: BTreeSet<String>,
    active: PathBuf,
    active_len: u64,
    /// The active segment's bytes up to its last non-zero byte (rounded up to 4 KiB).
    prefix: Vec<u8>,
}

impl CrashSnapshot {
    fn take(dir: &Path) -> R<Self> {
        let seg_dir = dir.join("segments");
        let mut names = BTreeSet::new();
        for e in fs::read_dir(&seg_dir)? {
            names.insert(e?.file_name().to_string_lossy().into_owned());
        }
        let active_name = names
            .iter()
            .filter(|n| n.ends_with(".seg"))
            .max()
            .ok_or("the crashed store has no segment")?
            .clone();
        let active = seg_dir.join(&active_name);
        let mut prefix = fs::read(&active)?;
        let active_len = prefix.len() as u64;
        let used = prefix.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        prefix.truncate(used.next_multiple_of(4096).min(prefix.len()));
        Ok(CrashSnapshot { seg_dir, names, active, active_len, prefix })
    }

    /// Puts the crashed state back, durably (so no later fsync pays for the restore).
    fn restore(&self) -> R<()> {
        for e in fs::read_dir(&self.seg_dir)? {
            let e = e?;
            if !self.names.contains(e.file_name().to_string_lossy().as_ref()) {
                fs::remove_file(e.path())?;
            }
        }
        fs::remove_file(&self.active)?;
        let f = plain::create_preallocated(&self.active, self.active_len)?;
        f.write_all_at(&self.prefix, 0)?;
        f.sync_data()?;
        File::open(&self.seg_dir)?.sync_all()?;
        Ok(())
    }
}

/// Open figures of one store size and segment size.
struct OpenFigures {
    segments: usize,
    crash_scanned: u64,
    crash: Vec<f64>,
    plain_crash: Vec<f64>,
    crash_ratio: Vec<f64>,
    clean: Vec<f64>,
    plain_clean: Vec<f64>,
    clean_ratio: Vec<f64>,
}

/// The smallest of `xs`: for opens, the cost without waits on other processes' journal
/// commits (a clean open makes two syncing calls, whose latency other disk users set).
fn min(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(f64::INFINITY, f64::min)
}

fn open_workload(env: &Env, events: u64, segment_bytes: u64, reps: usize) -> R<OpenFigures> {
    let opts = annal_options(segment_bytes);
    let adir = env.fresh("open-annal");
    let ppath = env.fresh("open-plain");
    progress(format!("open: {events} events, {} MiB segments: killed writer", segment_bytes >> 20));
    crash_store(&adir, events, segment_bytes)?;
    let snap = CrashSnapshot::take(&adir)?;
    progress("open: plain file of the same events");
    let mut w = PlainWriter::create(
        &ppath,
        plain::file_bytes(events, BULK_BATCH_EVENTS, EVENT_BYTES) + PLAIN_CRASH_SLACK_BYTES,
    )?;
    let mut left = events;
    while left > 0 {
        let n = left.min(env.pool.len() as u64) as usize;
        w.append(&env.pool[..n])?;
        left -= n as u64;
    }
    w.sync()?;
    drop(w);

    let mut f = OpenFigures {
        segments: 0,
        crash_scanned: 0,
        crash: Vec::new(),
        plain_crash: Vec::new(),
        crash_ratio: Vec::new(),
        clean: Vec::new(),
        plain_clean: Vec::new(),
        clean_ratio: Vec::new(),
    };
    for rep in 0..reps {
        progress(format!("open after crash rep {}/{reps}", rep + 1));
        snap.restore()?;
        settle(&env.dir)?;
        let mut a = f64::NAN;
        let mut p = f64::NAN;
        for annal_turn in [rep % 2 == 0, rep % 2 != 0] {
            if annal_turn {
                let t = Instant::now();
                let log = Log::open(&adir, opts.clone())?;
                a = ms_since(t);
                let rr = log.recovery_report();
                if rr.clean || rr.next_seq != events {
                    return Err(format!("crashed store opened as {rr:?}").into());
                }
                f.crash_scanned = rr.scanned_bytes;
                log.close()?;
            } else {
                let t = Instant::now();
                let end = plain::recover(&ppath)?;
                p = ms_since(t);
                if end.events != events {
                    return Err("the plain file lost events".into());
                }
            }
        }
        f.crash.push(a);
        f.plain_crash.push(p);
        f.crash_ratio.push(p / a);
    }
    // From here on both stores are cleanly closed.
    Log::open(&adir, opts.clone())?.close()?;
    plain::close_after_crash(&ppath)?;
    // A clean open takes about a millisecond: more repetitions steady its median.
    let clean_reps = reps * 3;
    for rep in 0..clean_reps {
        progress(format!("open after clean close rep {}/{clean_reps}", rep + 1));
        settle(&env.dir)?;
        let mut a = f64::NAN;
        let mut p = f64::NAN;
        for annal_turn in [rep % 2 == 0, rep % 2 != 0] {
            if annal_turn {
                let t = Instant::now();
                let log = Log::open(&adir, opts.clone())?;
                a = ms_since(t);
                let rr = log.recovery_report();
                if !rr.clean || rr.next_seq != events || rr.scanned_bytes != 0 {
                    return Err(format!("cleanly closed store opened as {rr:?}").into());
                }
                f.segments = rr.segments;
                log.close()?;
            } else {
                let t = Instant::now();
                let next = plain::open_clean(&ppath)?;
                p = ms_since(t);
                if next != events {
                    return Err("the closed plain file has the wrong end".into());
                }
            }
        }
        f.clean.push(a);
        f.plain_clean.push(p);
        f.clean_ratio.push(p / a);
    }
    remove(&adir)?;
    remove(&ppath)?;
    Ok(f)
}

fn open_section(env: &Env, report: &mut Report) -> R<()> {
    let mut t = Table::new(
        &format!(
            "Open after a clean close and after a crash ({} MiB segments, warm page cache)",
            env.cfg.segment_bytes >> 20
        ),
        &["events", "segments", "open", "annal ms", "plain ms", "plain/annal time", "scanned MiB"],
    );
    for &events in &env.cfg.open_events {
        let f = open_workload(env, events, env.cfg.segment_bytes, env.cfg.reps)?;
        t.row(vec![
            fmt_rate(events as f64),
            f.segments.to_string(),
            "clean".into(),
            format!("{} (best {})", fmt_ms(median(&f.clean)), fmt_ms(min(&f.clean))),
            fmt_ms(median(&f.plain_clean)),
            fmt_ratio(median(&f.clean_ratio)),
            "0".into(),
        ]);
        t.row(vec![
            fmt_rate(events as f64),
            f.segments.to_string(),
            "crash".into(),
            fmt_ms(median(&f.crash)),
            fmt_ms(median(&f.plain_crash)),
            fmt_ratio(median(&f.crash_ratio)),
            format!("{:.1}", f.crash_scanned as f64 / (1 << 20) as f64),
        ]);
        report.clean_open(f.segments, min(&f.clean));
    }
    t.note(
        "clean: annal trusts each sealed segment's seal frame and the close frame its active \
         index points to (nothing scanned); the plain file checks its header and close frame. \
         crash: a writer process killed with SIGKILL after its last sync (no close frame, no \
         active index); annal scans only its active segment, the plain file must scan itself \
         whole. The ratio column is plain time / annal time (above 1: annal opens faster). \
         best: the fastest clean open, free of waits on other processes' journal commits \
         (a clean open makes two syncing calls)."
            .into(),
    );
    report.table(t);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Segment size sweep
// ---------------------------------------------------------------------------------------

fn sweep_section(env: &Env, report: &mut Report) -> R<()> {
    let events = env.cfg.bulk_events;
    let reps = env.cfg.sweep_reps;
    let mut t = Table::new(
        &format!(
            "Segment size sweep: {} events, {reps} repetitions per size (segment_bytes chosen \
             by benchmark)",
            fmt_rate(events as f64)
        ),
        &[
            "segment MiB",
            "segments",
            "bulk events/s",
            "bulk annal/plain",
            "replay events/s",
            "replay annal/plain",
            "clean open ms (best)",
            "crash open ms",
        ],
    );
    for &mib in &env.cfg.sweep_mib {
        let segment_bytes = mib << 20;
        let (mut bulk, mut bulk_ratio, mut replay, mut replay_ratio) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for rep in 0..reps {
            progress(format!("sweep {mib} MiB: bulk + replay rep {}/{reps}", rep + 1));
            let (asecs, psecs, log, ppath) = bulk_pair(env, events, segment_bytes, rep % 2 == 0)?;
            bulk.push(events as f64 / asecs);
            bulk_ratio.push(psecs / asecs);
            let (ra, rp) = replay_pair(&log, &ppath, events, rep % 2 == 0)?;
            replay.push(events as f64 / ra);
            replay_ratio.push(rp / ra);
            let adir = log.dir().to_path_buf();
            log.close()?;
            remove(&adir)?;
            remove(&ppath)?;
        }
        let f = open_workload(env, events, segment_bytes, reps)?;
        report.clean_open(f.segments, min(&f.clean));
        t.row(vec![
            mib.to_string(),
            f.segments.to_string(),
            fmt_rate(median(&bulk)),
            fmt_ratio(median(&bulk_ratio)),
            fmt_rate(median(&replay)),
            fmt_ratio(median(&replay_ratio)),
            format!("{} ({})", fmt_ms(median(&f.clean)), fmt_ms(min(&f.clean))),
            fmt_ms(median(&f.crash)),
        ]);
    }
    t.note(
        "Segments below 64 MiB run with max_record_bytes = 1 MiB: the default 16 MiB limit \
         does not fit in them. Replay here reads the store just written (warm, log still \
         open). Crash open scans the active segment, so its cost grows with the segment size; \
         clean open touches every segment's header and seal, so it grows with the segment \
         count."
            .into(),
    );
    report.table(t);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Report {
    header: String,
    footer: String,
    /// (segments, best clean-open ms) of every store opened after a clean close.
    clean_opens: Vec<(usize, f64)>,
    targets: Vec<(String, f64, f64)>,
    tables: Vec<Table>,
}

impl Report {
    fn header(&mut self, args: &[String], fs: &machine::FsInfo, dir: &str, cfg: &Config) {
        let mut h = report::run_header(
            "annal log core vs plain-file baselines",
            "log_compare",
            args,
            fs,
            dir,
        );
        h.push_str(&format!(
            "- mode: {}; medians of {} repetitions ({} for durable appends, {} per sweep size); \
             ratios are annal speed / baseline speed within one repetition (above 1: annal \
             faster)\n\n",
            if cfg.quick { "quick" } else { "full" },
            cfg.reps,
            cfg.durable_reps,
            cfg.sweep_reps
        ));
        self.header = h;
    }

    fn footer(&mut self, secs: f64) {
        self.footer = report::run_footer(secs);
    }

    fn clean_open(&mut self, segments: usize, ms: f64) {
        self.clean_opens.push((segments, ms));
    }

    /// Least-squares line through the clean opens: (ms at zero segments, µs per segment),
    /// if at least two segment counts were measured.
    fn clean_open_fit(&self) -> Option<(f64, f64)> {
        let pts = &self.clean_opens;
        let n = pts.len() as f64;
        let mx = pts.iter().map(|p| p.0 as f64).sum::<f64>() / n;
        let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = pts.iter().map(|p| (p.0 as f64 - mx).powi(2)).sum();
        let sxy: f64 = pts.iter().map(|p| (p.0 as f64 - mx) * (p.1 - my)).sum();
        if pts.len() < 2 || sxx == 0.0 {
            return None;
        }
        let slope = sxy / sxx;
        Some((my - slope * mx, slope * 1e3))
    }

    fn target(&mut self, what: &str, ratio: f64, target: f64) {
        self.targets.push((what.into(), ratio, target));
    }

    /// Adds a table, noting the machine's load as the workload ends.
    fn table(&mut self, mut t: Table) {
        report::note_load(&mut t);
        self.tables.push(t);
    }

    fn render(&self) -> String {
        let mut out = self.header.clone();
        if !self.targets.is_empty() {
            out.push_str("### Targets (annal / baseline, median of the per-repetition ratios)\n\n");
            out.push_str("| workload | ratio | target | verdict |\n|---|---|---|---|\n");
            for (what, ratio, target) in &self.targets {
                let word = if *ratio >= *target { "met" } else { "MISSED" };
                out.push_str(&format!(
                    "| {what} | {} | >= {target:.1}x | {word} |\n",
                    fmt_ratio(*ratio)
                ));
            }
            out.push('\n');
        }
        if let Some((base_ms, per_segment_us)) = self.clean_open_fit() {
            let (lo, hi) = self
                .clean_opens
                .iter()
                .fold((usize::MAX, 0), |(lo, hi), p| (lo.min(p.0), hi.max(p.0)));
            let points: Vec<String> = self
                .clean_opens
                .iter()
                .map(|(segs, ms)| format!("{} {} ms", plural(*segs, "segment"), fmt_ms(*ms)))
                .collect();
            out.push_str(&format!(
                "Clean open against the number of segments (best of each store's clean opens): \
                 least-squares fit over {} stores ({lo} to {hi} segments) = {} ms + \
                 {per_segment_us:.1} µs per segment. Points: {}.\n\n",
                self.clean_opens.len(),
                fmt_ms(base_ms),
                points.join("; ")
            ));
        }
        for t in &self.tables {
            t.render(&mut out);
        }
        out.push_str(&self.footer);
        out
    }
}
