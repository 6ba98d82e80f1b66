//! `store_compare`: the streams-layer workloads of the issue, annal's `Store` against SQLite
//! (and against annal's own log for durable appends), in one run, and a Markdown table.
//!
//! ```text
//! cargo run --release -p annal-benches --bin store_compare -- [--quick] [--dir PATH]
//!     [--allow-ram] [--reps N]
//! ```
//!
//! The store: `events` events of ~200-byte JSON-ish data over `streams` streams (each event's
//! stream drawn at random), plus one stream `hot-0` of exactly 1,000 events spread evenly
//! through the log. The same events go into SQLite (bundled, WAL) in a table
//! `events(seq INTEGER PRIMARY KEY, stream TEXT, version INTEGER, type TEXT, data BLOB,
//! UNIQUE(stream, version))`. The build is timed and reported, but it is no target.
//!
//! Workloads, each repeated; ratios are taken within a repetition, the systems run back to
//! back in rotating order, and the table shows medians:
//! - read: the whole of `hot-0`, warm, materialised (annal `read_stream`, SQLite a prepared
//!   `SELECT ... WHERE stream = ? ORDER BY version` collected into a `Vec`);
//! - open: `Store::open` after a clean close (checkpoint present) and with `streams.ckpt`
//!   removed (the whole log replayed);
//! - memory: the stream index's heap bytes per event and per stream;
//! - append: durable appends (`Durability::Sync`) from 8 threads, each on its own stream
//!   with `ExpectedVersion::Exact`, against the same payloads through `Log::append`, in
//!   alternating slices.
//!
//! Stores live under `--dir`, `$ANNAL_BENCH_DIR` or `target/bench-data`, never on a tmpfs
//! (`--allow-ram` overrides, for trying the driver out only), and are removed at the end.

use std::fs;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use annal::{
    CheckpointState, Direction, Durability, ExpectedVersion, Log, NewEvent, Options, Store,
    StoreOptions,
};
use annal_benches::machine;
use annal_benches::payload::XorShift;
use annal_benches::report::{
    self, R, Table, ms_since, per_rep, progress, settle, timed_threads, verdict,
};
use annal_benches::stats::{
    fmt_ms, fmt_rate, fmt_ratio, fmt_us, latency_histogram, median, quantile_us, record,
};
use hdrhistogram::Histogram;
use rusqlite::Connection;

/// The stream read by the read workload.
const HOT_STREAM: &str = "hot-0";
/// Its events.
const HOT_EVENTS: u64 = 1_000;
/// Bytes of every event's data.
const DATA_BYTES: usize = 200;
/// Event type names, drawn at random.
const EVENT_TYPES: [&str; 4] = ["OrderPlaced", "ItemAdded", "ItemRemoved", "OrderShipped"];
/// Appending threads of the append workload.
const APPEND_THREADS: usize = 8;
/// The checkpoint file of a store (annal's `names::STREAM_CHECKPOINT_FILE`).
const CHECKPOINT_FILE: &str = "streams.ckpt";
/// Rows per SQLite transaction during the build.
const SQLITE_TX_ROWS: u64 = 100_000;
/// SQLite page cache of the "large cache" variant, in KiB (`PRAGMA cache_size = -N`).
const SQLITE_BIG_CACHE_KIB: u64 = 256 << 10;

/// How much of everything a run does.
#[derive(Debug, Clone)]
struct Config {
    quick: bool,
    /// Events outside the hot stream.
    events: u64,
    /// Streams they are spread over.
    streams: u64,
    /// Repetitions of every workload.
    reps: usize,
    /// Seconds each system reads in one read repetition.
    read_secs: f64,
    /// Seconds each system appends in one append repetition.
    append_secs: f64,
    /// Alternating slices each append measurement is cut into.
    append_slices: usize,
}

impl Config {
    fn new(quick: bool) -> Self {
        if quick {
            Config {
                quick,
                events: 100_000,
                streams: 1_000,
                reps: 3,
                read_secs: 0.3,
                append_secs: 0.6,
                append_slices: 2,
            }
        } else {
            Config {
                quick,
                events: 1_000_000,
                streams: 10_000,
                reps: 7,
                read_secs: 1.0,
                append_secs: 2.4,
                append_slices: 8,
            }
        }
    }
}

/// The command line of `store_compare`.
#[derive(Debug, clap::Parser)]
#[command(name = "store_compare", about = "annal::Store against SQLite (streams workloads)")]
struct Cli {
    #[command(flatten)]
    common: annal_benches::cli::Common,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("store_compare: {e}");
        std::process::exit(1);
    }
}

fn run(args: &[String]) -> R<()> {
    let cli: Cli = match annal_benches::cli::parse("store_compare", args) {
        Ok(c) => c,
        Err(0) => return Ok(()),
        Err(_) => return Err("bad arguments (see --help)".into()),
    };
    let mut cfg = Config::new(cli.common.quick);
    if let Some(n) = cli.common.reps {
        cfg.reps = n;
    }
    let (dir, allow_ram) = (cli.common.dir, cli.common.allow_ram);
    let (run_dir, fs_info) = machine::run_dir(dir, "store_compare", allow_ram)?;
    progress(format!("stores in {} ({})", run_dir.path().display(), fs_info.fs_type));

    let mut report = Report::default();
    report.header(args, &fs_info, &run_dir.path().display().to_string(), &cfg);
    let started = Instant::now();

    let built = build(&cfg, run_dir.path(), &mut report)?;
    read_section(&cfg, &built, &mut report)?;
    open_section(&cfg, &built, &mut report)?;
    append_section(&cfg, run_dir.path(), &mut report)?;

    progress("done");
    report.footer(started.elapsed().as_secs_f64());
    print!("{}", report.render());
    run_dir.close()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------

/// One generated event.
struct GenEvent {
    stream: String,
    version: u64,
    event_type: &'static str,
    data: Vec<u8>,
}

/// ~200-byte JSON-ish event data, exactly [`DATA_BYTES`] long, different for every `n`.
fn event_data(n: u64, rng: &mut XorShift) -> Vec<u8> {
    let mut s = format!(
        "{{\"order\":{n},\"customer\":\"cust-{:06}\",\"sku\":\"SKU-{:05}\",\"qty\":{},\
         \"price_cents\":{},\"currency\":\"EUR\",\"channel\":\"web\",\"note\":\"",
        rng.below(1_000_000),
        rng.below(100_000),
        1 + rng.below(9),
        rng.below(100_000),
    );
    while s.len() < DATA_BYTES - 2 {
        s.push((b'a' + rng.below(26) as u8) as char);
    }
    s.push_str("\"}");
    s.truncate(DATA_BYTES);
    s.into_bytes()
}

/// The events of the store, in log order: `events` events over `streams` random streams
/// `s-<n>`, with the [`HOT_EVENTS`] events of [`HOT_STREAM`] spread evenly among them.
struct EventGen {
    total: u64,
    next: u64,
    hot_done: u64,
    versions: Vec<u64>,
    rng: XorShift,
}

impl EventGen {
    fn new(events: u64, streams: u64) -> Self {
        EventGen {
            total: events + HOT_EVENTS,
            next: 0,
            hot_done: 0,
            versions: vec![0; streams as usize],
            rng: XorShift::new(0x5EED_0002),
        }
    }

    /// Log position of hot event `k`: the middle of the `k`-th of `HOT_EVENTS` equal spans.
    fn hot_pos(&self, k: u64) -> u64 {
        k * self.total / HOT_EVENTS + self.total / (2 * HOT_EVENTS)
    }
}

impl Iterator for EventGen {
    type Item = GenEvent;

    fn next(&mut self) -> Option<GenEvent> {
        if self.next == self.total {
            return None;
        }
        let g = self.next;
        self.next += 1;
        let event_type = EVENT_TYPES[self.rng.below(EVENT_TYPES.len() as u64) as usize];
        let data = event_data(g, &mut self.rng);
        if self.hot_done < HOT_EVENTS && self.hot_pos(self.hot_done) == g {
            let version = self.hot_done;
            self.hot_done += 1;
            return Some(GenEvent { stream: HOT_STREAM.into(), version, event_type, data });
        }
        let s = self.rng.below(self.versions.len() as u64) as usize;
        let version = self.versions[s];
        self.versions[s] += 1;
        Some(GenEvent { stream: format!("s-{s}"), version, event_type, data })
    }
}

// ---------------------------------------------------------------------------------------
// Build
// ---------------------------------------------------------------------------------------

/// The two stores every read and open workload uses.
struct Built {
    annal_dir: PathBuf,
    sqlite_path: PathBuf,
    events: u64,
}

/// Fills annal: one `Store::append` per event (`ExpectedVersion::Any`, `Durability::None`;
/// consecutive events of one stream are rare here), then a sync and a clean close.
fn build_annal(cfg: &Config, dir: &Path) -> R<f64> {
    let opts = StoreOptions {
        log: Options { durability: Durability::None, ..Options::default() },
        ..StoreOptions::default()
    };
    let t = Instant::now();
    let store = Store::open(dir, opts)?;
    for (seq, e) in (0u64..).zip(EventGen::new(cfg.events, cfg.streams)) {
        let ev = NewEvent::new(e.event_type, e.data);
        let r = store.append(&e.stream, ExpectedVersion::Any, &[ev])?;
        if r.first_seq != seq || r.first_version != e.version {
            return Err(format!(
                "annal build: event {seq} of {} landed at seq {} version {}, expected {}",
                e.stream, r.first_seq, r.first_version, e.version
            )
            .into());
        }
    }
    store.log().sync()?;
    store.close()?;
    Ok(t.elapsed().as_secs_f64())
}

/// Fills SQLite: WAL, `synchronous = OFF`, prepared inserts in transactions of
/// [`SQLITE_TX_ROWS`], then a WAL checkpoint and close.
fn build_sqlite(cfg: &Config, path: &Path) -> R<f64> {
    let t = Instant::now();
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    conn.execute_batch(
        "CREATE TABLE events(seq INTEGER PRIMARY KEY, stream TEXT NOT NULL, \
         version INTEGER NOT NULL, type TEXT NOT NULL, data BLOB NOT NULL, \
         UNIQUE(stream, version));",
    )?;
    let mut gen_events = EventGen::new(cfg.events, cfg.streams);
    let mut seq = 0u64;
    loop {
        let tx = conn.transaction()?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO events(seq, stream, version, type, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for e in gen_events.by_ref().take(SQLITE_TX_ROWS as usize) {
                ins.execute((seq as i64, &e.stream, e.version as i64, e.event_type, &e.data))?;
                seq += 1;
            }
        }
        tx.commit()?;
        if seq == cfg.events + HOT_EVENTS {
            break;
        }
    }
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    conn.close().map_err(|(_, e)| e)?;
    Ok(t.elapsed().as_secs_f64())
}

fn dir_bytes(dir: &Path) -> R<u64> {
    let mut n = 0;
    for e in fs::read_dir(dir)? {
        let e = e?;
        let md = e.metadata()?;
        n += if md.is_dir() { dir_bytes(&e.path())? } else { md.len() };
    }
    Ok(n)
}

fn build(cfg: &Config, root: &Path, report: &mut Report) -> R<Built> {
    let events = cfg.events + HOT_EVENTS;
    let annal_dir = root.join("annal-store");
    let sqlite_path = root.join("sqlite.db");
    progress(format!("building annal store of {events} events"));
    settle(root)?;
    let asecs = build_annal(cfg, &annal_dir)?;
    progress(format!("annal built in {asecs:.1} s; building SQLite"));
    settle(root)?;
    let ssecs = build_sqlite(cfg, &sqlite_path)?;
    progress(format!("SQLite built in {ssecs:.1} s"));
    let mut t = Table::new(
        &format!(
            "Build (not a target): {} events ({} over {} random streams + {HOT_EVENTS} of \
             `{HOT_STREAM}` spread evenly), {DATA_BYTES}-byte data, one run",
            fmt_rate(events as f64),
            fmt_rate(cfg.events as f64),
            fmt_rate(cfg.streams as f64)
        ),
        &["system", "seconds", "events/s", "size on disk"],
    );
    let mib = |b: u64| format!("{:.0} MiB", b as f64 / (1 << 20) as f64);
    t.row(vec![
        "annal Store, one append per event, Durability::None, sync + close".into(),
        format!("{asecs:.1}"),
        fmt_rate(events as f64 / asecs),
        mib(dir_bytes(&annal_dir)?),
    ]);
    t.row(vec![
        format!("SQLite, WAL, synchronous=OFF, {SQLITE_TX_ROWS}-row transactions"),
        format!("{ssecs:.1}"),
        fmt_rate(events as f64 / ssecs),
        mib(fs::metadata(&sqlite_path)?.len()),
    ]);
    t.note(
        "annal's size includes the preallocated tail of its active segment (64 MiB segments)."
            .into(),
    );
    report.table(t);
    Ok(Built { annal_dir, sqlite_path, events })
}

// ---------------------------------------------------------------------------------------
// Warm stream read
// ---------------------------------------------------------------------------------------

/// A row of SQLite's `events`, materialised.
#[allow(dead_code)] // The fields are read through `black_box` only.
struct SqlEvent {
    seq: i64,
    stream: String,
    version: i64,
    event_type: String,
    data: Vec<u8>,
}

const SQLITE_READ: &str =
    "SELECT seq, stream, version, type, data FROM events WHERE stream = ?1 ORDER BY version";

fn sqlite_read(conn: &Connection) -> R<usize> {
    let mut st = conn.prepare_cached(SQLITE_READ)?;
    let rows = st.query_map([HOT_STREAM], |r| {
        Ok(SqlEvent {
            seq: r.get(0)?,
            stream: r.get(1)?,
            version: r.get(2)?,
            event_type: r.get(3)?,
            data: r.get(4)?,
        })
    })?;
    let v: Vec<SqlEvent> = rows.collect::<Result<_, _>>()?;
    let ok = v.len() as u64 == HOT_EVENTS
        && v.iter().enumerate().all(|(i, e)| e.version == i as i64 && e.data.len() == DATA_BYTES);
    if !ok {
        return Err(format!("SQLite read {} events of {HOT_STREAM}, not in order", v.len()).into());
    }
    let n = v.len();
    black_box(v);
    Ok(n)
}

fn annal_read(store: &Store) -> R<usize> {
    let v = store.read_stream(HOT_STREAM, 0, Direction::Forward, HOT_EVENTS as usize)?;
    let ok = v.len() as u64 == HOT_EVENTS
        && v.iter().enumerate().all(|(i, e)| e.version == i as u64 && e.data.len() == DATA_BYTES);
    if !ok {
        return Err(format!("annal read {} events of {HOT_STREAM}, not in order", v.len()).into());
    }
    let n = v.len();
    black_box(v);
    Ok(n)
}

/// Reads the hot stream for `secs` seconds; returns (reads, seconds, per-read histogram).
fn read_for(secs: f64, read: &dyn Fn() -> R<usize>) -> R<(u64, f64, Histogram<u64>)> {
    let mut h = latency_histogram();
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        read()?;
        record(&mut h, t.elapsed());
        n += 1;
    }
    Ok((n, t0.elapsed().as_secs_f64(), h))
}

const READ_SYSTEMS: [&str; 3] = [
    "annal `read_stream`",
    "SQLite, default page cache (2 MiB)",
    "SQLite, 256 MiB page cache (reference)",
];

fn read_section(cfg: &Config, b: &Built, report: &mut Report) -> R<()> {
    let store = Store::open(&b.annal_dir, StoreOptions::default())?;
    let conn = Connection::open(&b.sqlite_path)?;
    let big = Connection::open(&b.sqlite_path)?;
    big.pragma_update(None, "cache_size", -(SQLITE_BIG_CACHE_KIB as i64))?;
    let reads: [&dyn Fn() -> R<usize>; 3] =
        [&|| annal_read(&store), &|| sqlite_read(&conn), &|| sqlite_read(&big)];
    // Warm-up: the page cache and SQLite's own cache hold what the reads touch.
    for r in &reads {
        for _ in 0..5 {
            r()?;
        }
    }
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut p50: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut p99: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut vs_sqlite = Vec::new();
    let mut vs_big = Vec::new();
    for rep in 0..cfg.reps {
        progress(format!("warm stream read rep {}/{}", rep + 1, cfg.reps));
        let mut rep_rates = [0.0; 3];
        for k in 0..3 {
            let i = (k + rep) % 3;
            let (n, secs, h) = read_for(cfg.read_secs, reads[i])?;
            rep_rates[i] = n as f64 / secs;
            rates[i].push(rep_rates[i]);
            p50[i].push(quantile_us(&h, 0.5));
            p99[i].push(quantile_us(&h, 0.99));
        }
        vs_sqlite.push(rep_rates[0] / rep_rates[1]);
        vs_big.push(rep_rates[0] / rep_rates[2]);
    }
    let ratio = median(&vs_sqlite);
    report.target(
        &format!("Warm read of a {HOT_EVENTS}-event stream, vs SQLite (default cache)"),
        ratio,
        2.0,
    );
    let mut t = Table::new(
        &format!(
            "Warm read of the {HOT_EVENTS} events of `{HOT_STREAM}` among {} events, \
             materialised; {} s per system per repetition",
            fmt_rate(b.events as f64),
            cfg.read_secs
        ),
        &["system", "reads/s", "events/s", "p50 µs per read", "p99 µs", "annal/x", "target"],
    );
    for i in 0..3 {
        let (r, target) = match i {
            1 => (fmt_ratio(ratio), verdict(ratio, 2.0)),
            2 => (fmt_ratio(median(&vs_big)), String::new()),
            _ => (String::new(), String::new()),
        };
        t.row(vec![
            READ_SYSTEMS[i].into(),
            fmt_rate(median(&rates[i])),
            fmt_rate(median(&rates[i]) * HOT_EVENTS as f64),
            fmt_us(median(&p50[i])),
            fmt_us(median(&p99[i])),
            r,
            target,
        ]);
    }
    t.note(per_rep("annal/SQLite (default cache) ratios", &vs_sqlite));
    t.note(per_rep("annal/SQLite (256 MiB cache) ratios", &vs_big));
    t.note(format!(
        "annal: `store.read_stream(\"{HOT_STREAM}\", 0, Direction::Forward, {HOT_EVENTS})` \
         on a store reopened after the build (Options::default()), every event a \
         `RecordedEvent` (stream id and type as `String`, data and metadata as `Bytes` \
         slices of the record). SQLite: a cached prepared `{SQLITE_READ}`, every row \
         collected into a struct of (i64, String, i64, String, Vec<u8>), through the \
         UNIQUE(stream, version) index. Both check that they got {HOT_EVENTS} events in \
         version order. Warm: each system read the stream 5 times before the first \
         repetition; the store files are in the OS page cache."
    ));
    report.table(t);
    store.close()?;
    drop((conn, big));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Open and index memory
// ---------------------------------------------------------------------------------------

/// Opens the store, returns (ms, replayed events, checkpoint loaded, index stats) and
/// closes it (the close, untimed, writes the checkpoint again).
fn timed_open(dir: &Path) -> R<(f64, u64, bool, annal::IndexStats)> {
    let t = Instant::now();
    let store = Store::open(dir, StoreOptions::default())?;
    let ms = ms_since(t);
    let rec = store.recovery().clone();
    let loaded = matches!(rec.checkpoint, CheckpointState::Loaded { .. });
    let stats = store.index_stats();
    store.close()?;
    Ok((ms, rec.replayed_events, loaded, stats))
}

fn open_section(cfg: &Config, b: &Built, report: &mut Report) -> R<()> {
    let ckpt = b.annal_dir.join(CHECKPOINT_FILE);
    let mut with_ms = Vec::new();
    let mut without_ms = Vec::new();
    let mut replayed = [0u64; 2];
    let mut stats = None;
    let ckpt_bytes = fs::metadata(&ckpt)?.len();
    // One untimed open/close so the store's files are in the page cache.
    timed_open(&b.annal_dir)?;
    for rep in 0..cfg.reps {
        progress(format!("store open rep {}/{}", rep + 1, cfg.reps));
        for with in [rep % 2 == 0, rep % 2 != 0] {
            if !with {
                fs::remove_file(&ckpt)?;
            }
            settle(&b.annal_dir)?;
            let (ms, rep_events, loaded, st) = timed_open(&b.annal_dir)?;
            if loaded != with {
                return Err(format!("open: checkpoint loaded = {loaded}, expected {with}").into());
            }
            if st.events != b.events {
                return Err(
                    format!("open: index holds {} events, not {}", st.events, b.events).into()
                );
            }
            if with {
                with_ms.push(ms);
                replayed[0] = rep_events;
                stats = Some(st);
            } else {
                without_ms.push(ms);
                replayed[1] = rep_events;
            }
        }
    }
    let mut t = Table::new(
        &format!("Store::open of the {}-event store, warm page cache", fmt_rate(b.events as f64)),
        &["open", "ms (median)", "ms (best)", "replayed events"],
    );
    let best = |xs: &[f64]| xs.iter().copied().fold(f64::INFINITY, f64::min);
    t.row(vec![
        "after a clean close (checkpoint present)".into(),
        fmt_ms(median(&with_ms)),
        fmt_ms(best(&with_ms)),
        fmt_rate(replayed[0] as f64),
    ]);
    t.row(vec![
        format!("`{CHECKPOINT_FILE}` removed (whole log replayed)"),
        fmt_ms(median(&without_ms)),
        fmt_ms(best(&without_ms)),
        fmt_rate(replayed[1] as f64),
    ]);
    t.note(format!(
        "The checkpoint file is {} bytes ({:.1} per event). Each timed open is followed by \
         an untimed close, which writes the checkpoint again. Per-repetition ms: with \
         checkpoint {}; without {}.",
        fmt_rate(ckpt_bytes as f64),
        ckpt_bytes as f64 / b.events as f64,
        list(&with_ms),
        list(&without_ms)
    ));
    report.table(t);

    let st = stats.ok_or("no open with a checkpoint ran")?;
    // The same index without the recent-id window, to separate the two.
    let no_ids = {
        let opts = StoreOptions { recent_event_ids: 0, ..StoreOptions::default() };
        let store = Store::open(&b.annal_dir, opts)?;
        let st = store.index_stats();
        store.close()?;
        st
    };
    let mut m = Table::new(
        "Stream-index memory (`Store::index_stats`, after an open from the checkpoint)",
        &[
            "recent-id window",
            "streams",
            "events",
            "heap bytes",
            "bytes per event",
            "bytes per stream",
        ],
    );
    for (what, st) in [("100,000 (default)", st), ("0", no_ids)] {
        m.row(vec![
            what.into(),
            fmt_rate(st.streams as f64),
            fmt_rate(st.events as f64),
            fmt_rate(st.heap_bytes as f64),
            format!("{:.1}", st.heap_bytes as f64 / st.events as f64),
            format!("{:.0}", st.heap_bytes as f64 / st.streams as f64),
        ]);
    }
    m.note(
        "heap_bytes is the index's own estimate: per stream a map entry, its id and a \
         Vec<u64> of seqs; the same per category (the streams `s-<n>` all fall in category \
         `s`, so every event is counted twice, 8 bytes each); and the recent-event-id window \
         (StoreOptions::recent_event_ids, default 100,000) as far as it is filled. The second \
         row opens the same store with a window of 0."
            .into(),
    );
    report.table(m);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Durable appends with expected-version checks
// ---------------------------------------------------------------------------------------

/// One system receiving durable appends.
enum Appender {
    /// The store; thread `t` appends to stream `append-<t>` whose event count is
    /// `counts[t]`.
    Store(Store, Vec<AtomicU64>),
    /// The plain log.
    Log(Log),
}

impl Appender {
    fn append(&self, t: usize, data: &[u8]) -> R<()> {
        match self {
            Appender::Store(store, counts) => {
                let n = counts[t].load(Ordering::Relaxed);
                let expected = match n {
                    0 => ExpectedVersion::NoStream,
                    n => ExpectedVersion::Exact(n - 1),
                };
                let ev = NewEvent::new(EVENT_TYPES[t % EVENT_TYPES.len()], data.to_vec());
                let r = store.append(&format!("append-{t}"), expected, &[ev])?;
                if r.first_version != n {
                    return Err(format!("append-{t}: version {} not {n}", r.first_version).into());
                }
                counts[t].store(n + 1, Ordering::Relaxed);
            }
            Appender::Log(log) => {
                log.append(&[data])?;
            }
        }
        Ok(())
    }

    /// Checks the system holds `ops` appends, closes it and returns its fsync count.
    fn finish(self, ops: u64) -> R<u64> {
        let (log, dir, held) = match self {
            Appender::Store(store, counts) => {
                let per_stream: u64 = (0..APPEND_THREADS)
                    .map(|t| store.stream_version(&format!("append-{t}")).map_or(0, |v| v + 1))
                    .sum();
                let counted: u64 = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
                if per_stream != counted {
                    return Err(
                        format!("store streams hold {per_stream}, counted {counted}").into()
                    );
                }
                let log = store.log().clone();
                let dir = log.dir().to_path_buf();
                let st = log.stats();
                store.close()?;
                (st, dir, per_stream)
            }
            Appender::Log(log) => {
                let dir = log.dir().to_path_buf();
                let st = log.stats();
                log.close()?;
                (st, dir, st.records)
            }
        };
        fs::remove_dir_all(&dir)?;
        if held != ops || log.appends != ops {
            return Err(format!(
                "{held} events held, {} appends counted, the threads made {ops}",
                log.appends
            )
            .into());
        }
        Ok(log.fsyncs)
    }
}

const APPEND_SYSTEMS: [&str; 2] =
    ["annal Store::append, ExpectedVersion::Exact", "annal Log::append (plain log)"];

fn append_section(cfg: &Config, root: &Path, report: &mut Report) -> R<()> {
    let mut rng = XorShift::new(0xA99E_4D00);
    let pool: Vec<Vec<u8>> = (0..1_000).map(|n| event_data(n, &mut rng)).collect();
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); 2];
    let mut p50: Vec<Vec<f64>> = vec![Vec::new(); 2];
    let mut p99: Vec<Vec<f64>> = vec![Vec::new(); 2];
    let mut per_fsync: Vec<Vec<f64>> = vec![Vec::new(); 2];
    let mut ratios = Vec::new();
    let slice_secs = cfg.append_secs / cfg.append_slices as f64;
    for rep in 0..cfg.reps {
        progress(format!(
            "durable appends, {APPEND_THREADS} threads, rep {}/{}",
            rep + 1,
            cfg.reps
        ));
        let systems = [
            Appender::Store(
                Store::open(root.join(format!("append-store-{rep}")), StoreOptions::default())?,
                (0..APPEND_THREADS).map(|_| AtomicU64::new(0)).collect(),
            ),
            Appender::Log(Log::open(root.join(format!("append-log-{rep}")), Options::default())?),
        ];
        settle(root)?;
        let mut ops = [0u64; 2];
        let mut secs = [0.0; 2];
        let mut hists = [latency_histogram(), latency_histogram()];
        for slice in 0..cfg.append_slices {
            for k in 0..2 {
                let i = (k + slice + rep) % 2;
                let sys = &systems[i];
                let (n, s, h) = timed_threads(APPEND_THREADS, slice_secs, |t, n| {
                    sys.append(t, &pool[(t * 31 + n as usize) % pool.len()])
                })?;
                ops[i] += n;
                secs[i] += s;
                hists[i].add(&h).map_err(|e| format!("merging histograms: {e}"))?;
            }
        }
        let mut rep_rates = [0.0; 2];
        for (i, sys) in systems.into_iter().enumerate() {
            let fsyncs = sys.finish(ops[i])?;
            rep_rates[i] = ops[i] as f64 / secs[i];
            rates[i].push(rep_rates[i]);
            p50[i].push(quantile_us(&hists[i], 0.5));
            p99[i].push(quantile_us(&hists[i], 0.99));
            per_fsync[i].push(ops[i] as f64 / fsyncs.max(1) as f64);
        }
        ratios.push(rep_rates[0] / rep_rates[1]);
    }
    let ratio = median(&ratios);
    report.target(
        &format!(
            "Durable appends with expected-version checks, {APPEND_THREADS} threads, \
             vs plain log appends"
        ),
        ratio,
        0.8,
    );
    let mut t = Table::new(
        &format!(
            "Durable single-event appends (Durability::Sync), {APPEND_THREADS} threads, \
             {} s per system per repetition in {} alternating slices",
            cfg.append_secs, cfg.append_slices
        ),
        &["system", "appends/s", "p50 µs", "p99 µs", "appends/fsync", "store/log", "target"],
    );
    for i in 0..2 {
        let (r, target) =
            if i == 0 { (fmt_ratio(ratio), verdict(ratio, 0.8)) } else { Default::default() };
        t.row(vec![
            APPEND_SYSTEMS[i].into(),
            fmt_rate(median(&rates[i])),
            fmt_us(median(&p50[i])),
            fmt_us(median(&p99[i])),
            format!("{:.1}", median(&per_fsync[i])),
            r,
            target,
        ]);
    }
    t.note(per_rep("store/log ratios", &ratios));
    t.note(format!(
        "Both systems get fresh directories each repetition, Options::default() (Sync, \
         64 MiB fallocated segments). Store: thread t appends one event ({DATA_BYTES}-byte \
         data, fresh UUID v7 id, no metadata) to its own stream `append-<t>` with \
         ExpectedVersion::NoStream, then Exact(last version), and checks the version it \
         got; the event body adds the stream id, type and id (about 50 bytes) to the log \
         record. Log: the same {DATA_BYTES}-byte data through Log::append. Every repetition \
         checks the count of events held against the threads' count."
    ));
    report.table(t);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------

fn list(xs: &[f64]) -> String {
    xs.iter().map(|x| fmt_ms(*x)).collect::<Vec<_>>().join(", ")
}

#[derive(Default)]
struct Report {
    header: String,
    footer: String,
    targets: Vec<(String, f64, f64)>,
    tables: Vec<Table>,
}

impl Report {
    fn header(&mut self, args: &[String], fs: &machine::FsInfo, dir: &str, cfg: &Config) {
        let title = "annal streams layer vs SQLite and the plain log";
        let mut h = report::run_header(title, "store_compare", args, fs, dir);
        h.push_str(&format!("- SQLite: {} (rusqlite, bundled)\n", rusqlite::version()));
        h.push_str(&format!(
            "- mode: {}; medians of {} repetitions; ratios are annal speed / the other's \
             speed within one repetition (above 1: annal faster)\n\n",
            if cfg.quick { "quick" } else { "full" },
            cfg.reps
        ));
        self.header = h;
    }

    fn footer(&mut self, secs: f64) {
        self.footer = report::run_footer(secs);
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
        out.push_str("### Targets (median of the per-repetition ratios)\n\n");
        out.push_str("| workload | ratio | target | verdict |\n|---|---|---|---|\n");
        for (what, ratio, target) in &self.targets {
            let word = if *ratio >= *target { "met" } else { "MISSED" };
            out.push_str(&format!(
                "| {what} | {} | >= {target:.1}x | {word} |\n",
                fmt_ratio(*ratio)
            ));
        }
        out.push('\n');
        for t in &self.tables {
            t.render(&mut out);
        }
        out.push_str(&self.footer);
        out
    }
}
