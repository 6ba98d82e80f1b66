//! The driver of `compare` (src/bin/compare.rs): every workload of the issue "Benchmarks
//! side by side with the alternatives", run against every [`crate::contenders`] adapter in
//! one run, and a Markdown report.
//!
//! Each measurement is one workload of one contender in a child process of its own
//! ([`child`]), so that the peak resident memory reported is that contender's
//! (`VmHWM`). In every repetition each contender runs once, in an order that rotates from
//! one repetition to the next, after a `syncfs` of the benchmark file system; ratios are
//! taken between the figures of one repetition, and the report shows medians.

pub mod child;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::contenders::{Kind, Role, Workload};
use crate::dirs;
use crate::machine;
use crate::payload::{BULK_BATCH_EVENTS, EVENT_BYTES};
use crate::report::{self, R, Table, per_rep, progress, settle};
use crate::stats::{fmt_ms, fmt_rate, fmt_ratio, fmt_us, median};

/// The workloads, in the order they run; `--only` selects among these.
pub const WORKLOADS: [&str; 8] = ["W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8"];

/// How much of everything a run does.
#[derive(Debug, Clone)]
pub struct Config {
    /// `full`, `quick` or `tiny`.
    pub mode: &'static str,
    /// Repetitions of every workload.
    pub reps: usize,
    /// Events of the bulk store, which W4, W5 and W7 read.
    pub events: u64,
    /// Seconds of each durable-append measurement.
    pub durable_secs: f64,
    /// Writer counts of W3 (W2 is one writer).
    pub writers: Vec<usize>,
    /// Point reads per W5 measurement.
    pub reads: u64,
    /// Events and streams of the W6 store, and stream loads per measurement.
    pub stream_events: u64,
    /// Streams of the W6 store.
    pub streams: u64,
    /// Stream loads per W6 measurement.
    pub stream_loads: u64,
    /// Opens per clean-open measurement (one process).
    pub clean_opens: u64,
    /// The larger store of the clean-open growth check holds this many times `events`.
    pub growth_factor: u64,
    /// Timed appends per W8 measurement.
    pub follow_appends: u64,
    /// The contenders that run.
    pub kinds: Vec<Kind>,
    /// The workloads that run.
    pub only: Vec<String>,
}

impl Config {
    /// The configuration of a mode: `full` (under 10 minutes), `quick` (under a minute) or
    /// `tiny` (seconds; what the test runs).
    pub fn new(mode: &str) -> R<Self> {
        let full = Config {
            mode: "full",
            // Five, not three: with one durable writer (W2) and with a cold page cache (W4)
            // single repetitions of the same binaries ranged 0.67x-1.09x and 0.43x-1.46x on
            // this machine's virtual disk, and the median of three still swung across the
            // targets from run to run.
            reps: 5,
            events: 1_000_000,
            durable_secs: 1.0,
            writers: vec![8, 32],
            reads: 50_000,
            stream_events: 1_000_000,
            streams: 10_000,
            stream_loads: 2_000,
            clean_opens: 7,
            growth_factor: 4,
            follow_appends: 1_000,
            kinds: Kind::ALL.to_vec(),
            only: WORKLOADS.iter().map(|s| s.to_string()).collect(),
        };
        Ok(match mode {
            "full" => full,
            // Under a minute on the 2-core development machine under load: the sizes are
            // what the run time scales with (the bulk builds, the crash stores' scans, the
            // streams store, one child per measurement); three repetitions stay, since
            // the ratios are taken within each.
            "quick" => Config {
                mode: "quick",
                reps: 3,
                events: 50_000,
                durable_secs: 0.1,
                reads: 5_000,
                stream_events: 50_000,
                streams: 500,
                stream_loads: 300,
                clean_opens: 3,
                follow_appends: 60,
                ..full
            },
            "tiny" => Config {
                mode: "tiny",
                reps: 2,
                events: 3_000,
                durable_secs: 0.05,
                writers: vec![4],
                reads: 500,
                stream_events: 2_000,
                streams: 100,
                stream_loads: 50,
                clean_opens: 2,
                growth_factor: 2,
                follow_appends: 30,
                ..full
            },
            other => return Err(format!("unknown mode {other:?}").into()),
        })
    }

    fn runs(&self, w: &str) -> bool {
        self.only.iter().any(|o| o == w)
    }

    fn kinds_for(&self, w: Workload) -> Vec<Kind> {
        self.kinds.iter().copied().filter(|k| k.contender().supports(w)).collect()
    }
}

/// The command line of `compare`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "compare",
    about = "annal side by side with plain files, SQLite, okaywal and redb"
)]
struct Cli {
    #[command(flatten)]
    common: crate::cli::Common,
    /// A run of seconds (what the test runs; figures meaningless).
    #[arg(long, conflicts_with = "quick")]
    tiny: bool,
    /// Workloads to run, comma-separated, of W1 to W8.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    only: Option<Vec<String>>,
    /// Contenders to run, comma-separated, of plain, plain-prealloc, sqlite, okaywal, redb,
    /// annal-log, annal-store.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    contenders: Option<Vec<String>>,
    /// Events of the bulk store, which W4, W5 and W7 read.
    #[arg(long, value_name = "N")]
    events: Option<u64>,
}

/// The binary's `main`: a child run (`--child ...`) or a whole comparison. Returns the
/// process exit code.
pub fn main_with(args: &[String]) -> i32 {
    if args.first().map(String::as_str) == Some("--child") {
        return match child::run(&args[1..]) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("compare --child {}: {e}", args[1..].join(" "));
                2
            }
        };
    }
    match run(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("compare: {e}");
            1
        }
    }
}

fn run(args: &[String]) -> R<()> {
    let cli: Cli = match crate::cli::parse("compare", args) {
        Ok(c) => c,
        Err(0) => return Ok(()),
        Err(_) => return Err("bad arguments (see --help)".into()),
    };
    let mode = match (cli.common.quick, cli.tiny) {
        (true, _) => "quick",
        (_, true) => "tiny",
        _ => "full",
    };
    let mut cfg = Config::new(mode)?;
    if let Some(list) = cli.only {
        cfg.only = list.iter().map(|s| s.trim().to_uppercase()).collect();
        if let Some(bad) = cfg.only.iter().find(|w| !WORKLOADS.contains(&w.as_str())) {
            return Err(format!("unknown workload {bad:?} (see --help)").into());
        }
    }
    if let Some(list) = cli.contenders {
        cfg.kinds = list
            .iter()
            .map(|s| Kind::parse(s.trim()).ok_or_else(|| format!("unknown contender {s:?}")))
            .collect::<Result<_, _>>()?;
        cfg.kinds.sort();
    }
    if let Some(n) = cli.common.reps {
        cfg.reps = n;
    }
    if let Some(n) = cli.events {
        cfg.events = n;
    }
    let (dir, allow_ram) = (cli.common.dir, cli.common.allow_ram);
    let (run_dir, fs_info) = machine::run_dir(dir, "compare", allow_ram)?;
    progress(format!("stores in {} ({})", run_dir.path().display(), fs_info.fs_type));
    let env = Env {
        cfg,
        dir: run_dir.path().to_path_buf(),
        exe: std::env::current_exe()?,
        next: AtomicU64::new(0),
    };
    let started = Instant::now();
    let mut doc = Doc::default();
    let idle = env.child("idle", Kind::Plain, &env.dir, &[])?;
    doc.header(args, &fs_info, &env, idle.get("rss_kib"));
    let mut bulk_dirs = BTreeMap::new();
    if env.cfg.runs("W1") || env.cfg.runs("W4") || env.cfg.runs("W5") || env.cfg.runs("W7") {
        bulk_dirs = w1_bulk(&env, &mut doc)?;
    }
    if env.cfg.runs("W2") || env.cfg.runs("W3") {
        w2_w3_durable(&env, &mut doc)?;
    }
    if env.cfg.runs("W4") {
        w4_replay(&env, &bulk_dirs, &mut doc)?;
    }
    if env.cfg.runs("W5") {
        w5_read(&env, &bulk_dirs, &mut doc)?;
    }
    if env.cfg.runs("W6") {
        w6_streams(&env, &mut doc)?;
    }
    if env.cfg.runs("W7") {
        w7_open(&env, &bulk_dirs, &mut doc)?;
    }
    if env.cfg.runs("W8") {
        w8_follow(&env, &mut doc)?;
    }
    progress("done");
    doc.footer = report::run_footer(started.elapsed().as_secs_f64());
    print!("{}", doc.render());
    run_dir.close()?;
    Ok(())
}

/// One child's figures: `rate` (higher is faster) and whatever else it measured.
type Sample = BTreeMap<String, f64>;

/// One repetition: every contender's sample.
type Rep = BTreeMap<Kind, Sample>;

/// The run's directory and configuration.
struct Env {
    cfg: Config,
    dir: PathBuf,
    exe: PathBuf,
    next: AtomicU64,
}

impl Env {
    /// A path in the run directory never used before.
    fn fresh(&self, what: &str) -> PathBuf {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{what}-{n}"))
    }

    fn command(&self, workload: &str, kind: Kind, dir: &Path, kv: &[(&str, String)]) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("--child").arg(workload).arg(kind.name()).arg(dir);
        for (k, v) in kv {
            cmd.arg(format!("{k}={v}"));
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        cmd
    }

    /// Runs one child to its end and returns its figures.
    fn child(&self, workload: &str, kind: Kind, dir: &Path, kv: &[(&str, String)]) -> R<Sample> {
        let out = self.command(workload, kind, dir, kv).output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find_map(|l| l.strip_prefix("result "));
        let (true, Some(line)) = (out.status.success(), line) else {
            return Err(format!("{workload} of {} failed ({})", kind.name(), out.status).into());
        };
        let mut s = Sample::new();
        for kv in line.split_whitespace() {
            let (k, v) = kv.split_once('=').ok_or("bad child output")?;
            s.insert(k.to_string(), v.parse()?);
        }
        Ok(s)
    }

    /// Runs a crash writer of `events` into `dir` and kills it with SIGKILL once its bulk
    /// append is synced.
    fn crash(&self, kind: Kind, dir: &Path, events: u64) -> R<()> {
        let mut child =
            self.command("crash-writer", kind, dir, &[("events", events.to_string())]).spawn()?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            BufReader::new(out).read_line(&mut line)?;
        }
        child.kill()?;
        let status = child.wait()?;
        if line.trim() != "ready" {
            return Err(format!("the crash writer of {} failed ({status})", kind.name()).into());
        }
        Ok(())
    }

    /// `reps` repetitions of `one(kind, rep)` for every kind in `kinds`, in an order that
    /// rotates by one each repetition, each after a `syncfs`.
    fn rounds(
        &self,
        what: &str,
        kinds: &[Kind],
        mut one: impl FnMut(Kind, usize) -> R<Sample>,
    ) -> R<Vec<Rep>> {
        let mut reps = Vec::new();
        for rep in 0..self.cfg.reps {
            progress(format!("{what}, rep {}/{}", rep + 1, self.cfg.reps));
            let mut r = Rep::new();
            for i in 0..kinds.len() {
                let k = kinds[(i + rep) % kinds.len()];
                settle(&self.dir)?;
                r.insert(k, one(k, rep)?);
            }
            reps.push(r);
        }
        Ok(reps)
    }
}

fn remove(path: &Path) -> R<()> {
    if path.exists() {
        fs::remove_dir_all(path)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Figures across repetitions
// ---------------------------------------------------------------------------------------

fn get(rep: &Rep, k: Kind, key: &str) -> Option<f64> {
    rep.get(&k).and_then(|s| s.get(key)).copied()
}

/// The median of `key` of `k` over the repetitions.
fn med(reps: &[Rep], k: Kind, key: &str) -> f64 {
    median(&reps.iter().filter_map(|r| get(r, k, key)).collect::<Vec<_>>())
}

/// The fastest rate among the contenders of `role` in one repetition.
fn best_of(rep: &Rep, role: Role) -> Option<f64> {
    rep.iter()
        .filter(|(k, _)| k.role() == role)
        .filter_map(|(_, s)| s.get("rate").copied())
        .reduce(f64::max)
}

/// Per-repetition ratios of `k`'s rate to `base` of the same repetition.
fn ratios(reps: &[Rep], k: Kind, base: impl Fn(&Rep) -> Option<f64>) -> Vec<f64> {
    reps.iter().filter_map(|r| Some(get(r, k, "rate")? / base(r)?)).collect()
}

fn vs_plain(reps: &[Rep], k: Kind) -> Vec<f64> {
    ratios(reps, k, |r| best_of(r, Role::Plain))
}

fn vs_peer(reps: &[Rep], k: Kind) -> Vec<f64> {
    ratios(reps, k, |r| best_of(r, Role::Peer))
}

fn vs_kind(reps: &[Rep], k: Kind, base: Kind) -> Vec<f64> {
    ratios(reps, k, |r| get(r, base, "rate"))
}

fn mib(kib: f64) -> String {
    if kib.is_finite() { format!("{:.1}", kib / 1024.0) } else { "n/a".into() }
}

/// A column of a contender table: its head and how a row's cell is made.
type Col<'a> = (&'a str, Box<dyn Fn(&[Rep], Kind) -> String + 'a>);

/// The usual table: one row per contender; the given columns, peak RSS, and the ratios to
/// the plain-file limit and to the best peer.
fn contender_table(title: &str, reps: &[Rep], kinds: &[Kind], cols: Vec<Col<'_>>) -> Table {
    let mut head = vec!["system"];
    head.extend(cols.iter().map(|c| c.0));
    head.extend(["peak RSS MiB", "x plain limit", "x best peer"]);
    let mut t = Table::new(title, &head);
    for &k in kinds {
        let mut row = vec![k.name().to_string()];
        row.extend(cols.iter().map(|c| (c.1)(reps, k)));
        row.push(mib(med(reps, k, "rss_kib")));
        row.push(fmt_ratio(median(&vs_plain(reps, k))));
        let peer = if k.role() == Role::Peer { f64::NAN } else { median(&vs_peer(reps, k)) };
        row.push(if k.role() == Role::Peer { "-".into() } else { fmt_ratio(peer) });
        t.row(row);
    }
    t.note(
        "x plain limit: the rate over the faster of plain and plain-prealloc in the same \
         repetition; x best peer: over the fastest of sqlite, okaywal and redb in the same \
         repetition (medians of the per-repetition ratios; above 1: faster). peak RSS: the \
         child process's VmHWM."
            .into(),
    );
    t
}

fn rate_col<'a>(head: &'a str) -> Col<'a> {
    (head, Box::new(|reps, k| fmt_rate(med(reps, k, "rate"))))
}

fn us_col<'a>(head: &'a str, key: &'a str) -> Col<'a> {
    (head, Box::new(move |reps, k| fmt_us(med(reps, k, key))))
}

// ---------------------------------------------------------------------------------------
// W1: bulk append
// ---------------------------------------------------------------------------------------

/// Runs W1 and returns the stores of its last repetition (closed cleanly), which W4, W5
/// and W7 read.
fn w1_bulk(env: &Env, doc: &mut Doc) -> R<BTreeMap<Kind, PathBuf>> {
    let events = env.cfg.events;
    let kinds = env.cfg.kinds_for(Workload::Bulk);
    let mut last: BTreeMap<Kind, PathBuf> = BTreeMap::new();
    let reps = env.rounds("W1 bulk append", &kinds, |k, _| {
        let dir = env.fresh(&format!("w1-{}", k.name()));
        let s = env.child("bulk", k, &dir, &[("events", events.to_string())])?;
        if let Some(old) = last.insert(k, dir) {
            remove(&old)?;
        }
        Ok(s)
    })?;
    let mut t = contender_table(
        &format!(
            "W1 bulk append: {} events of {EVENT_BYTES} B in batches of {BULK_BATCH_EVENTS}, \
             one sync at the end",
            fmt_rate(events as f64)
        ),
        &reps,
        &kinds,
        vec![
            rate_col("events/s"),
            (
                "disk B/event",
                Box::new(|reps, k| format!("{:.0}", med(reps, k, "disk_bytes") / events as f64)),
            ),
        ],
    );
    t.note(
        "Timed from creating the store in an empty directory to the end of its one sync. \
         disk B/event: blocks allocated to the store's files after a clean close \
         (st_blocks × 512, preallocated space included) over the events."
            .into(),
    );
    for k in [Kind::AnnalLog, Kind::AnnalStore] {
        if kinds.contains(&k) {
            let r = vs_plain(&reps, k);
            t.note(per_rep(&format!("{} / plain limit", k.name()), &r));
            doc.target("W1 bulk append", k, "x plain limit", median(&r), 0.8);
        }
    }
    if !env.cfg.runs("W1") {
        return Ok(last);
    }
    doc.table(t);
    Ok(last)
}

// ---------------------------------------------------------------------------------------
// W2, W3: durable appends
// ---------------------------------------------------------------------------------------

fn w2_w3_durable(env: &Env, doc: &mut Doc) -> R<()> {
    let kinds = env.cfg.kinds_for(Workload::Durable);
    let mut counts = Vec::new();
    if env.cfg.runs("W2") {
        counts.push(1);
    }
    if env.cfg.runs("W3") {
        counts.extend(env.cfg.writers.iter().copied());
    }
    for threads in counts {
        let w = if threads == 1 { "W2" } else { "W3" };
        let reps =
            env.rounds(&format!("{w} durable appends, {threads} writer(s)"), &kinds, |k, _| {
                let dir = env.fresh(&format!("{w}-{}", k.name()));
                let s = env.child(
                    "durable",
                    k,
                    &dir,
                    &[("threads", threads.to_string()), ("secs", env.cfg.durable_secs.to_string())],
                )?;
                remove(&dir)?;
                Ok(s)
            })?;
        let mut t = contender_table(
            &format!(
                "{w} durable appends: {threads} writer{}, each waiting for its own {EVENT_BYTES} B \
                 event to be durable, {} s per system per repetition",
                if threads == 1 { "" } else { "s" },
                env.cfg.durable_secs
            ),
            &reps,
            &kinds,
            vec![
                rate_col("appends/s"),
                us_col("p50 µs", "p50_us"),
                us_col("p99 µs", "p99_us"),
                (
                    "x plain-prealloc",
                    Box::new(|reps, k| fmt_ratio(median(&vs_kind(reps, k, Kind::PlainPrealloc)))),
                ),
            ],
        );
        for k in [Kind::AnnalLog, Kind::AnnalStore] {
            if !kinds.contains(&k) {
                continue;
            }
            if threads == 1 {
                let r = vs_kind(&reps, k, Kind::PlainPrealloc);
                t.note(per_rep(&format!("{} / plain-prealloc", k.name()), &r));
                doc.target("W2 one durable writer", k, "x plain-prealloc", median(&r), 0.95);
            } else {
                let r = vs_peer(&reps, k);
                t.note(per_rep(&format!("{} / best peer", k.name()), &r));
                doc.target(
                    &format!("W3 {threads} durable writers"),
                    k,
                    "x best peer",
                    median(&r),
                    1.2,
                );
            }
        }
        t.note(
            "Each system gets a fresh directory per repetition. Latency is per append call \
             (hdrhistogram over every call of every writer)."
                .into(),
        );
        doc.table(t);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// W4: replay, W5: point reads
// ---------------------------------------------------------------------------------------

fn w4_replay(env: &Env, stores: &BTreeMap<Kind, PathBuf>, doc: &mut Doc) -> R<()> {
    let events = env.cfg.events;
    let kinds: Vec<Kind> = env
        .cfg
        .kinds_for(Workload::Replay)
        .into_iter()
        .filter(|k| stores.contains_key(k))
        .collect();
    for warm in [false, true] {
        let what = if warm { "warm" } else { "cold" };
        let reps = env.rounds(&format!("W4 replay, {what}"), &kinds, |k, _| {
            let dir = &stores[&k];
            if !warm {
                // settle() already synced: every page of the store is clean and can go.
                dirs::drop_cached(dir)?;
            }
            env.child(
                "replay",
                k,
                dir,
                &[("events", events.to_string()), ("warm", u8::from(warm).to_string())],
            )
        })?;
        let mut t = contender_table(
            &format!(
                "W4 replay scan of {} events, checksums verified, {what} page cache",
                fmt_rate(events as f64)
            ),
            &reps,
            &kinds,
            vec![rate_col("events/s")],
        );
        t.note(if warm {
            "Warm: the child opens the store, replays it once untimed, then once timed.".into()
        } else {
            "Cold: after a syncfs, posix_fadvise(POSIX_FADV_DONTNEED) on every file of the \
             store (the page cache of other processes' files is left alone; the VM's host \
             may still cache the disk), then a fresh child opens the store (untimed) and \
             replays it once."
                .into()
        });
        t.note(
            "Checksums: plain and annal verify every record's CRC-32; SQLite and redb keep \
             none on their data pages, so they verify nothing. Every reader's payloads are \
             compared with the pool."
                .into(),
        );
        for k in [Kind::AnnalLog, Kind::AnnalStore] {
            if kinds.contains(&k) {
                let r = vs_plain(&reps, k);
                t.note(per_rep(&format!("{} / plain limit", k.name()), &r));
                doc.target(&format!("W4 replay, {what}"), k, "x plain limit", median(&r), 0.8);
            }
        }
        doc.table(t);
    }
    Ok(())
}

fn w5_read(env: &Env, stores: &BTreeMap<Kind, PathBuf>, doc: &mut Doc) -> R<()> {
    let events = env.cfg.events;
    let kinds: Vec<Kind> =
        env.cfg.kinds_for(Workload::Read).into_iter().filter(|k| stores.contains_key(k)).collect();
    let reps = env.rounds("W5 random point reads", &kinds, |k, _| {
        env.child(
            "read",
            k,
            &stores[&k],
            &[("events", events.to_string()), ("count", env.cfg.reads.to_string())],
        )
    })?;
    let mut t = contender_table(
        &format!(
            "W5 random point reads by seq: {} uniformly random seqs over {} events, one \
             thread, warm",
            fmt_rate(env.cfg.reads as f64),
            fmt_rate(events as f64)
        ),
        &reps,
        &kinds,
        vec![rate_col("reads/s"), us_col("p50 µs", "p50_us"), us_col("p99 µs", "p99_us")],
    );
    t.note(
        "Each child checks every read's payload in an untimed pass (which also warms the \
         store), then times each read of a second pass. plain builds its dense offset index \
         before the first pass. annal-store reads through Store::event(seq): the log's point \
         read, the event decoded and its version found in the stream index."
            .into(),
    );
    for k in [Kind::AnnalLog, Kind::AnnalStore] {
        if kinds.contains(&k) {
            let r = vs_plain(&reps, k);
            t.note(per_rep(&format!("{} / plain limit", k.name()), &r));
            doc.target("W5 random point reads", k, "x plain limit", median(&r), 0.8);
        }
    }
    doc.table(t);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// W6: stream reads
// ---------------------------------------------------------------------------------------

fn w6_streams(env: &Env, doc: &mut Doc) -> R<()> {
    let cfg = &env.cfg;
    let kinds = cfg.kinds_for(Workload::Stream);
    let kv = |loads: bool| {
        let mut v =
            vec![("events", cfg.stream_events.to_string()), ("streams", cfg.streams.to_string())];
        if loads {
            v.push(("loads", cfg.stream_loads.to_string()));
        }
        v
    };
    let mut built = BTreeMap::new();
    for &k in &kinds {
        progress(format!("W6: building the streams store of {}", k.name()));
        let dir = env.fresh(&format!("w6-{}", k.name()));
        settle(&env.dir)?;
        built.insert(k, (env.child("streams-build", k, &dir, &kv(false))?, dir));
    }
    let reps = env.rounds("W6 stream reads", &kinds, |k, _| {
        env.child("streams-read", k, &built[&k].1, &kv(true))
    })?;
    let mut t = contender_table(
        &format!(
            "W6 stream read as an aggregate load: one whole stream of {} events among {} \
             streams, warm",
            fmt_rate(cfg.stream_events as f64),
            fmt_rate(cfg.streams as f64)
        ),
        &reps,
        &kinds,
        vec![
            rate_col("loads/s"),
            ("events/load", Box::new(|reps, k| format!("{:.1}", med(reps, k, "events_per_load")))),
            us_col("p50 µs", "p50_us"),
            us_col("p99 µs", "p99_us"),
            ("x sqlite", Box::new(|reps, k| fmt_ratio(median(&vs_kind(reps, k, Kind::Sqlite))))),
        ],
    );
    for (k, (s, _)) in &built {
        t.note(format!(
            "{}: built (one event per append, untimed for the target) in {:.1} s, {:.0} disk \
             bytes per event.",
            k.name(),
            s.get("secs").copied().unwrap_or(f64::NAN),
            s.get("disk_bytes").copied().unwrap_or(f64::NAN) / cfg.stream_events as f64
        ));
    }
    t.note(format!(
        "Each event's stream is drawn at random, so a stream's events are spread over the \
         whole log. A load reads one stream whole, every field materialised (annal: \
         read_stream(s, 0, Forward, all) -> Vec<RecordedEvent>; SQLite: SELECT seq, stream, \
         version, type, data WHERE stream = ? ORDER BY version through the UNIQUE(stream, \
         version) index, collected into a Vec of structs), checked for count and version \
         order. {} streams drawn at random per measurement, the same for both, after an \
         untimed pass over the same streams. The other contenders have no streams.",
        fmt_rate(cfg.stream_loads as f64)
    ));
    if kinds.contains(&Kind::AnnalStore) && kinds.contains(&Kind::Sqlite) {
        let r = vs_kind(&reps, Kind::AnnalStore, Kind::Sqlite);
        t.note(per_rep("annal-store / sqlite", &r));
        doc.target("W6 stream read", Kind::AnnalStore, "x sqlite", median(&r), 2.0);
    }
    doc.table(t);
    for (_, (_, dir)) in built {
        remove(&dir)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// W7: open
// ---------------------------------------------------------------------------------------

fn w7_open(env: &Env, stores: &BTreeMap<Kind, PathBuf>, doc: &mut Doc) -> R<()> {
    let cfg = &env.cfg;
    let events = cfg.events;
    let kinds: Vec<Kind> =
        cfg.kinds_for(Workload::Open).into_iter().filter(|k| stores.contains_key(k)).collect();
    let open_kv = |events: u64, times: u64| {
        vec![("events", events.to_string()), ("times", times.to_string())]
    };
    // Clean opens of the W1 stores.
    let clean = env.rounds("W7 open after a clean close", &kinds, |k, _| {
        env.child("open", k, &stores[&k], &open_kv(events, cfg.clean_opens))
    })?;
    // The same for annal at a larger size: does a clean open grow with the store?
    let big_events = events * cfg.growth_factor;
    let annal: Vec<Kind> = kinds.iter().copied().filter(|k| k.role() == Role::Annal).collect();
    let mut big_dirs = BTreeMap::new();
    for &k in &annal {
        progress(format!("W7: building a {big_events}-event store of {}", k.name()));
        let dir = env.fresh(&format!("w7-big-{}", k.name()));
        env.child("bulk", k, &dir, &[("events", big_events.to_string())])?;
        big_dirs.insert(k, dir);
    }
    let big = env.rounds("W7 clean open of the larger stores", &annal, |k, _| {
        env.child("open", k, &big_dirs[&k], &open_kv(big_events, cfg.clean_opens))
    })?;
    for dir in big_dirs.values() {
        remove(dir)?;
    }
    // Crash: a writer killed with SIGKILL after its sync, restored before every open.
    let mut crashed = BTreeMap::new();
    for &k in &kinds {
        progress(format!("W7: crash writer of {}", k.name()));
        let dir = env.fresh(&format!("w7-crash-{}", k.name()));
        env.crash(k, &dir, events)?;
        let snap = env.fresh(&format!("w7-snap-{}", k.name()));
        dirs::copy_sparse(&dir, &snap)?;
        crashed.insert(k, (dir, snap));
    }
    let crash = env.rounds("W7 open after a crash", &kinds, |k, _| {
        let (dir, snap) = &crashed[&k];
        remove(dir)?;
        dirs::copy_sparse(snap, dir)?;
        settle(&env.dir)?;
        env.child("open", k, dir, &open_kv(events, 1))
    })?;
    for (dir, snap) in crashed.values() {
        remove(dir)?;
        remove(snap)?;
    }

    let mut t = Table::new(
        &format!(
            "W7 open of a {}-event store, warm page cache: after a clean close and after a \
             crash",
            fmt_rate(events as f64)
        ),
        &[
            "system",
            "clean ms (best)",
            &format!("clean ms at {}", fmt_rate(big_events as f64)),
            "crash ms",
            "clean peak RSS MiB",
            "crash peak RSS MiB",
            "crash x plain limit",
            "crash x best peer",
        ],
    );
    for &k in &kinds {
        let big_cell = if annal.contains(&k) {
            format!("{} (best {})", fmt_ms(med(&big, k, "ms")), fmt_ms(med(&big, k, "best_ms")))
        } else {
            "-".into()
        };
        t.row(vec![
            k.name().into(),
            format!("{} ({})", fmt_ms(med(&clean, k, "ms")), fmt_ms(med(&clean, k, "best_ms"))),
            big_cell,
            fmt_ms(med(&crash, k, "ms")),
            mib(med(&clean, k, "rss_kib")),
            mib(med(&crash, k, "rss_kib")),
            fmt_ratio(median(&vs_plain(&crash, k))),
            if k.role() == Role::Peer {
                "-".into()
            } else {
                fmt_ratio(median(&vs_peer(&crash, k)))
            },
        ]);
    }
    t.note(format!(
        "Open = the contender's open call and the query of how many events it holds (SQLite: \
         SELECT max(seq); redb: the table's len), timed in a child process; the close after \
         it is untimed. clean: the W1 store, {} opens per child, median (best) over the \
         opens, then median over repetitions; the larger store is built by the same bulk \
         append. crash: a child ran the W1 bulk append and was killed with SIGKILL once its \
         sync returned (no clean close); the directory is kept as a sparse copy (zeros \
         become holes) and copied back and synced before every repetition; one open per \
         child, so it includes the first open's one-time costs in a process. Crash ratios \
         are speed ratios (time of the other / own time, above 1: faster). plain after a \
         crash scans the whole file for its valid end.",
        cfg.clean_opens
    ));
    for &k in &annal {
        let (small, large) = (med(&clean, k, "ms"), med(&big, k, "ms"));
        let met = small < 5.0 && large < 5.0 && large <= 1.25 * small;
        t.note(format!(
            "{}: clean open {} ms at {} events, {} ms at {} ({:.2}x).",
            k.name(),
            fmt_ms(small),
            fmt_rate(events as f64),
            fmt_ms(large),
            fmt_rate(big_events as f64),
            large / small
        ));
        doc.target_text(
            "W7 clean open",
            k,
            format!(
                "{} ms at {}, {} ms at {}",
                fmt_ms(small),
                fmt_rate(events as f64),
                fmt_ms(large),
                fmt_rate(big_events as f64)
            ),
            "< 5 ms, not growing (larger store <= 1.25x)",
            met,
        );
    }
    doc.table(t);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// W8: append to a follower
// ---------------------------------------------------------------------------------------

fn w8_follow(env: &Env, doc: &mut Doc) -> R<()> {
    let kinds = env.cfg.kinds_for(Workload::Follow);
    let count = env.cfg.follow_appends;
    let reps = env.rounds("W8 append to follower", &kinds, |k, _| {
        let dir = env.fresh(&format!("W8-{}", k.name()));
        let s = env.child("follow", k, &dir, &[("count", count.to_string())])?;
        remove(&dir)?;
        Ok(s)
    })?;
    // The follower's own share, as a speed ratio to SQLite's polling reader.
    let lag_vs_sqlite = |k: Kind| -> Vec<f64> {
        reps.iter()
            .filter_map(|r| Some(get(r, Kind::Sqlite, "lag_p50_us")? / get(r, k, "lag_p50_us")?))
            .collect()
    };
    let mut t = contender_table(
        &format!(
            "W8 append-to-projection latency: one writer, {count} durable appends of \
             {EVENT_BYTES} B, each waited on until a follower in the same process has seen it"
        ),
        &reps,
        &kinds,
        vec![
            rate_col("appends seen/s"),
            us_col("visible p50 µs", "p50_us"),
            us_col("visible p99 µs", "p99_us"),
            us_col("durable p50 µs", "ack_p50_us"),
            us_col("lag p50 µs", "lag_p50_us"),
            us_col("lag p99 µs", "lag_p99_us"),
            ("lag x sqlite", Box::new(move |_, k| fmt_ratio(median(&lag_vs_sqlite(k))))),
        ],
    );
    t.note(format!(
        "visible: from the append call to the follower having seen the event; durable: from \
         the call to its durable return; lag: visible minus durable, per append (the \
         follower's own share). annal-store: Durability::Sync, one EventCounts projection on \
         a ProjectionRunner, waited on with wait_for(seq). sqlite: synchronous=FULL, and a \
         reader thread on its own connection polling for rows after the last it saw, \
         sleeping {} µs when a poll finds none, waking the waiter through a condition \
         variable. lag x sqlite: SQLite's lag p50 over the contender's, per repetition \
         (above 1: the follower is faster). 20 untimed appends start each follower up.",
        crate::contenders::SQLITE_POLL.as_micros()
    ));
    if kinds.contains(&Kind::AnnalStore) && kinds.contains(&Kind::Sqlite) {
        t.note(per_rep(
            "annal-store / sqlite, appends seen/s",
            &vs_kind(&reps, Kind::AnnalStore, Kind::Sqlite),
        ));
        t.note(per_rep("sqlite lag / annal-store lag", &lag_vs_sqlite(Kind::AnnalStore)));
    }
    doc.table(t);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Doc {
    header: String,
    /// (workload, system, measured, target, met)
    targets: Vec<(String, String, String, String, bool)>,
    tables: Vec<Table>,
    footer: String,
}

impl Doc {
    fn header(&mut self, args: &[String], fs: &machine::FsInfo, env: &Env, idle: Option<&f64>) {
        let cfg = &env.cfg;
        let dir = env.dir.display().to_string();
        let mut h = report::run_header(
            "annal side by side with the alternatives",
            "compare",
            args,
            fs,
            &dir,
        );
        h.push_str(&format!(
            "- mode: {}; medians of {} repetitions; each measurement is one child process \
             per contender, in an order rotating by repetition, after a syncfs; ratios are \
             speed ratios taken within one repetition (above 1: faster)\n",
            cfg.mode, cfg.reps
        ));
        h.push_str(&format!(
            "- peak RSS: VmHWM of the child process, which includes the harness (an idle \
             child peaks at {} MiB) and the pages of mapped files it touched; the page cache \
             behind read() is not in it\n\n",
            mib(idle.copied().unwrap_or(f64::NAN))
        ));
        h.push_str("Contenders:\n\n");
        for k in &cfg.kinds {
            h.push_str(&format!("- `{}`: {}\n", k.name(), k.contender().describe()));
        }
        h.push('\n');
        self.header = h;
    }

    fn target(&mut self, workload: &str, k: Kind, what: &str, ratio: f64, target: f64) {
        self.target_text(
            workload,
            k,
            format!("{} {what}", fmt_ratio(ratio)),
            &format!(">= {target:.2}x"),
            ratio >= target,
        );
    }

    fn target_text(&mut self, workload: &str, k: Kind, measured: String, target: &str, met: bool) {
        self.targets.push((workload.into(), k.name().into(), measured, target.into(), met));
    }

    fn table(&mut self, mut t: Table) {
        report::note_load(&mut t);
        self.tables.push(t);
    }

    fn render(&self) -> String {
        let mut out = self.header.clone();
        if !self.targets.is_empty() {
            out.push_str("### Targets\n\n| workload | system | measured | target | verdict |\n");
            out.push_str("|---|---|---|---|---|\n");
            for (w, k, m, t, met) in &self.targets {
                let v = if *met { "met" } else { "MISSED" };
                out.push_str(&format!("| {w} | {k} | {m} | {t} | {v} |\n"));
            }
            out.push('\n');
        }
        for t in &self.tables {
            t.render(&mut out);
        }
        out.push_str(&self.footer);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(rates: &[(Kind, f64)]) -> Rep {
        rates.iter().map(|&(k, r)| (k, Sample::from([("rate".to_string(), r)]))).collect()
    }

    #[test]
    fn ratios_are_taken_within_each_repetition() {
        // Repetition 1 is slow for everyone, repetition 2 fast: the ratios must not mix
        // them (annal / plain limit is 0.5 in both, whatever the medians of the rates).
        let reps = vec![
            rep(&[
                (Kind::Plain, 100.0),
                (Kind::PlainPrealloc, 80.0),
                (Kind::Sqlite, 10.0),
                (Kind::Redb, 25.0),
                (Kind::AnnalLog, 50.0),
            ]),
            rep(&[
                (Kind::Plain, 900.0),
                (Kind::PlainPrealloc, 1000.0),
                (Kind::Sqlite, 250.0),
                (Kind::Redb, 100.0),
                (Kind::AnnalLog, 500.0),
            ]),
        ];
        assert_eq!(vs_plain(&reps, Kind::AnnalLog), vec![0.5, 0.5]);
        assert_eq!(vs_peer(&reps, Kind::AnnalLog), vec![2.0, 2.0]);
        assert_eq!(vs_kind(&reps, Kind::AnnalLog, Kind::PlainPrealloc), vec![0.625, 0.5]);
        // A contender missing from a repetition gives no ratio for it.
        assert!(vs_kind(&reps, Kind::AnnalStore, Kind::Plain).is_empty());
        assert_eq!(med(&reps, Kind::Sqlite, "rate"), 130.0);
    }

    #[test]
    fn every_mode_is_known_and_full_is_the_largest() {
        let full = Config::new("full").unwrap();
        let quick = Config::new("quick").unwrap();
        let tiny = Config::new("tiny").unwrap();
        assert!(Config::new("huge").is_err());
        assert_eq!(full.events, 1_000_000);
        assert_eq!(full.streams, 10_000);
        assert_eq!(full.writers, vec![8, 32]);
        assert!(full.reps >= 3 && quick.reps >= 3);
        assert!(quick.events < full.events && tiny.events < quick.events);
    }
}
