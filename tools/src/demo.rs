//! `annal demo`: a small event-sourced bank run end to end on a fresh store, every number
//! measured in the run that prints it.
//!
//! The domain is the `bank` example's (engine/examples/bank/domain.rs, compiled here as a
//! module, not copied): accounts are aggregates, transfers a process manager across two.
//! The demo shows, in order:
//! 1. commands validated against aggregates (a duplicate open and an overdraft rejected), and
//!    reading your own write from the read model with `wait_for`;
//! 2. threads executing deposits, withdrawals and transfers with optimistic concurrency,
//!    some contending on a few hot accounts (conflicts retried and counted), with
//!    throughput and execute latency;
//! 3. queries served by a projection thread's read model, and money conservation: the read
//!    model's total equals the sum of the aggregates' balances and the opening balances plus
//!    deposits minus withdrawals;
//! 4. snapshots: the busiest account loaded from its snapshot vs a full replay;
//! 5. a replay rebuilding the projection from seq 0 while writes go on, verified against the
//!    live view by digest and swapped in;
//! 6. the store as `annal inspect` shows it.
//!
//! A failed check (conservation, a rebuild that does not verify, a store that inspects with
//! problems) is an error: the demo exits non-zero.
//!
//! **Directory.** The demo wants a fresh store: a missing or empty directory is used as
//! is. A directory holding a previous demo's store (its first event is in stream
//! [`MARKER_STREAM`]) is left alone and the run goes to its first free subdirectory
//! `demo-run-N` (N = 2, 3, ...), said in the output. Anything else is refused
//! ([`DemoError::Usage`], exit 2): the demo never writes into someone's data.

#[path = "../../engine/examples/bank/domain.rs"]
mod bank;

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use annal::BoxError;
use annal::inspect::{EventReader, LogItem};
use annal::{
    Aggregate, Direction, ExecuteError, ExpectedVersion, Filter, NewEvent, Projection,
    ProjectionOptions, RebuildOutcome, RecordedEvent, Repository, SnapshotUse, Store, StoreOptions,
    Verify,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use self::bank::{Account, AccountCommand, AccountEvent, Bank, Stage};
use crate::check;
use crate::escape;
use crate::inspect::{Verdict, grouped};

/// The stream of the demo's first event, which marks a store as a demo's.
pub const MARKER_STREAM: &str = "demo-run";
/// The type of that event.
const MARKER_TYPE: &str = "DemoStarted";
/// Every account opens with this balance.
const OPENING_BALANCE: u64 = 1_000;
/// Accounts one in four commands goes to, so that threads contend on them.
const HOT_ACCOUNTS: usize = 8;
/// How long a query waits for the read model to reach a seq.
const WAIT: Duration = Duration::from_secs(30);
/// Loads timed per measurement in the snapshot step.
const LOAD_REPEATS: usize = 30;
/// Most deposits made while the projection rebuilds.
const REBUILD_DEPOSITS_MAX: u64 = 100_000;

/// A fault the tests inject to see that the demo's checks fail when they should.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// The live projection counts one deposit twice: conservation must fail.
    Projection,
    /// The rebuilt projection starts one unit off: verification must fail.
    Rebuild,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// The directory asked for (see the module documentation).
    pub dir: PathBuf,
    /// Writer threads.
    pub threads: usize,
    /// Accounts.
    pub accounts: usize,
    /// Commands per writer thread.
    pub commands: u64,
    /// A fault to inject (tests only).
    pub fault: Option<Fault>,
}

/// Why the demo stopped.
#[derive(Debug)]
pub enum DemoError {
    /// The directory cannot be used (exit 2).
    Usage(String),
    /// The store failed.
    Store(annal::Error),
    /// Writing the report failed (a closed pipe, say).
    Output(io::Error),
    /// A check failed: money not conserved, a rebuild that did not verify, a command that
    /// should have been rejected was not, ... (a bug, reported with details).
    Check(String),
}

impl std::fmt::Display for DemoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DemoError::Usage(m) => f.write_str(m),
            DemoError::Store(e) => write!(f, "{e}"),
            DemoError::Output(e) => write!(f, "writing output: {e}"),
            DemoError::Check(m) => write!(f, "check failed: {m}"),
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

impl<E: std::error::Error + 'static> From<ExecuteError<E>> for DemoError {
    fn from(e: ExecuteError<E>) -> Self {
        match e {
            ExecuteError::Store(e) => DemoError::Store(e),
            other => DemoError::Check(other.to_string()),
        }
    }
}

fn failed(e: impl std::fmt::Display) -> DemoError {
    DemoError::Check(e.to_string())
}

/// What the run measured and checked, for callers that look at it.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoSummary {
    /// Where the store is.
    pub dir: PathBuf,
    /// Commands executed by the concurrent workload.
    pub commands: u64,
    /// Retries caused by concurrent writers (optimistic-concurrency conflicts).
    pub retries: u64,
    /// The money in the read model at the end, equal to the sum of the aggregates'.
    pub total_money: u64,
    /// The seq the rebuilt projection was verified and swapped in at.
    pub rebuilt_at: u64,
}

// ---------------------------------------------------------------------------------------
// The read model

/// The projection: each account's balance and the total, from `account` events.
struct Balances {
    accounts: Repository<Account>,
    balances: BTreeMap<String, u64>,
    total: u64,
    /// Fault injection: the first deposit at or after this seq is applied twice (`u64::MAX`:
    /// never; set by the demo once the live projection runs).
    double_from: Arc<AtomicU64>,
    doubled: bool,
}

#[derive(Serialize, Deserialize)]
struct BalancesState {
    balances: BTreeMap<String, u64>,
    total: u64,
}

impl Balances {
    fn new(accounts: Repository<Account>) -> Self {
        let double_from = Arc::new(AtomicU64::new(u64::MAX));
        Balances { accounts, balances: BTreeMap::new(), total: 0, double_from, doubled: false }
    }

    fn balance(&self, id: &str) -> Option<u64> {
        self.balances.get(id).copied()
    }

    fn fold(&mut self, id: &str, event: &AccountEvent) -> Result<(), BoxError> {
        let balance = self.balances.entry(id.to_owned()).or_insert(0);
        match event {
            AccountEvent::Opened { .. } => {}
            AccountEvent::Deposited { amount, .. } => {
                *balance += amount;
                self.total += amount;
            }
            AccountEvent::Withdrawn { amount, .. } => {
                *balance = balance.checked_sub(*amount).ok_or("a balance went negative")?;
                self.total = self.total.checked_sub(*amount).ok_or("the total went negative")?;
            }
        }
        Ok(())
    }
}

impl Projection for Balances {
    fn name(&self) -> &str {
        "balances"
    }

    fn version(&self) -> u32 {
        1
    }

    fn filter(&self) -> Filter {
        Filter::all().category(Account::CATEGORY)
    }

    fn apply(&mut self, event: &RecordedEvent) -> Result<(), BoxError> {
        let prefix = Account::CATEGORY.len() + 1;
        let id = event.stream_id.get(prefix..).ok_or("not an account stream")?.to_owned();
        let decoded = self.accounts.decode_event(event)?;
        self.fold(&id, &decoded)?;
        if !self.doubled
            && self.double_from.load(Ordering::Relaxed) <= event.seq
            && matches!(decoded, AccountEvent::Deposited { .. })
        {
            self.doubled = true;
            self.fold(&id, &decoded)?;
        }
        Ok(())
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        let state = BalancesState { balances: self.balances.clone(), total: self.total };
        serde_json::to_vec(&state).ok()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), BoxError> {
        let s: BalancesState = serde_json::from_slice(state)?;
        (self.balances, self.total) = (s.balances, s.total);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The directory

/// Whether `dir` holds a store whose first event is a demo's marker.
fn is_demo_store(dir: &Path) -> bool {
    let Ok(mut reader) = EventReader::open(dir, 0) else { return false };
    matches!(reader.next(), Some(Ok(LogItem::Event(e)))
        if e.stream_id == MARKER_STREAM && e.event_type == MARKER_TYPE)
}

/// The directory this run uses, and a note to print when it is not the one asked for.
fn choose_dir(dir: &Path) -> Result<(PathBuf, Option<String>), DemoError> {
    let shown = escape::path(dir);
    let mut entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((dir.to_path_buf(), None)),
        Err(e) => return Err(DemoError::Usage(format!("cannot use {shown}: {e}"))),
    };
    if entries.next().is_none() {
        return Ok((dir.to_path_buf(), None));
    }
    if !is_demo_store(dir) {
        return Err(DemoError::Usage(format!(
            "{shown} is not empty and holds no demo store; the demo runs on a fresh store only \
             (give another --dir, or a missing or empty directory)"
        )));
    }
    for n in 2..10_000u32 {
        let sub = dir.join(format!("demo-run-{n}"));
        if !sub.exists() {
            let note = format!(
                "{shown} holds a previous demo store (left as it is); this run uses {}",
                escape::path(&sub)
            );
            return Ok((sub, Some(note)));
        }
    }
    Err(DemoError::Usage(format!("{shown} holds too many demo runs; give another --dir")))
}

// ---------------------------------------------------------------------------------------
// Helpers

/// A counting progress bar on stderr, drawn only when stderr is a terminal.
fn progress_bar(len: u64, what: &'static str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("  {msg} [{bar:40}] {pos}/{len} ({per_sec}, {eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what);
    bar
}

fn account_id(i: usize) -> String {
    format!("{i:04}")
}

/// The seq of the last event of aggregate `id`'s stream.
fn last_seq(repo: &Repository<Account>, id: &str) -> Result<u64, DemoError> {
    let stream = repo.stream_id(id);
    let last = repo.store().read_stream(&stream, u64::MAX, Direction::Backward, 1)?;
    last.first().map(|e| e.seq).ok_or_else(|| failed(format!("stream {stream} is empty")))
}

/// The nearest-rank percentile `p` of sorted `values` (0 for none).
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied().unwrap_or(0)
}

fn ms(nanos: u64) -> f64 {
    nanos as f64 / 1e6
}

fn per_sec(n: u64, d: Duration) -> String {
    grouped((n as f64 / d.as_secs_f64().max(1e-9)) as u64)
}

/// The median time of `repeats` runs of `f`, and its last result.
fn timed<T>(
    repeats: usize,
    mut f: impl FnMut() -> Result<T, DemoError>,
) -> Result<(Duration, T), DemoError> {
    let mut times = Vec::with_capacity(repeats);
    let mut last = None;
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        last = Some(f()?);
        times.push(t.elapsed());
    }
    times.sort_unstable();
    let median = times.get(times.len() / 2).copied().unwrap_or_default();
    last.map(|v| (median, v)).ok_or_else(|| failed("nothing was timed"))
}

// ---------------------------------------------------------------------------------------
// The workload

/// What the writer threads did, summed.
#[derive(Default)]
struct Tally {
    deposits: AtomicU64,
    deposited: AtomicU64,
    withdrawals: AtomicU64,
    withdrawn: AtomicU64,
    overdrafts: AtomicU64,
    transfers: AtomicU64,
    transfers_failed: AtomicU64,
    retries: AtomicU64,
    gave_up: AtomicU64,
    done: AtomicU64,
}

/// One writer's latencies, in nanoseconds.
struct Latencies {
    execute: Vec<u64>,
    transfer: Vec<u64>,
}

/// One writer thread: `commands` random deposits, withdrawals and transfers.
fn writer(
    bank: &Bank,
    cfg: &DemoConfig,
    t: usize,
    tally: &Tally,
    stop: &AtomicBool,
) -> Result<Latencies, DemoError> {
    let mut rng = fastrand::Rng::with_seed(0x5eed_0000 + t as u64);
    let mut lat = Latencies { execute: Vec::new(), transfer: Vec::new() };
    let pick = |rng: &mut fastrand::Rng| {
        let hot = rng.u32(0..4) == 0;
        account_id(rng.usize(0..if hot { HOT_ACCOUNTS.min(cfg.accounts) } else { cfg.accounts }))
    };
    for n in 0..cfg.commands {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let id = pick(&mut rng);
        let kind = rng.u32(0..100);
        let started = Instant::now();
        if kind < 70 {
            let deposit = kind < 40;
            let cmd = if deposit {
                AccountCommand::Deposit { amount: rng.u64(1..=200), step: None }
            } else {
                AccountCommand::Withdraw { amount: rng.u64(1..=400), step: None }
            };
            let result = bank.accounts.execute(&id, &cmd);
            let nanos = started.elapsed().as_nanos() as u64;
            match (result, &cmd) {
                (Ok(done), AccountCommand::Deposit { amount, .. }) => {
                    tally.deposits.fetch_add(1, Ordering::Relaxed);
                    tally.deposited.fetch_add(*amount, Ordering::Relaxed);
                    tally.retries.fetch_add(u64::from(done.attempts - 1), Ordering::Relaxed);
                    lat.execute.push(nanos);
                }
                (Ok(done), AccountCommand::Withdraw { amount, .. }) => {
                    tally.withdrawals.fetch_add(1, Ordering::Relaxed);
                    tally.withdrawn.fetch_add(*amount, Ordering::Relaxed);
                    tally.retries.fetch_add(u64::from(done.attempts - 1), Ordering::Relaxed);
                    lat.execute.push(nanos);
                }
                (Err(ExecuteError::Rejected(bank::AccountError::InsufficientFunds { .. })), _) => {
                    tally.overdrafts.fetch_add(1, Ordering::Relaxed);
                    lat.execute.push(nanos);
                }
                (Err(ExecuteError::TooManyConflicts { .. }), _) => {
                    tally.gave_up.fetch_add(1, Ordering::Relaxed);
                }
                (Ok(_), AccountCommand::Open { .. }) => {}
                (Err(e), _) => return Err(e.into()),
            }
        } else {
            let mut to = pick(&mut rng);
            if to == id {
                to = account_id((rng.usize(0..cfg.accounts.max(2) - 1) + 1) % cfg.accounts);
            }
            let tid = format!("t{t}.{n}");
            let stage = bank.transfer(&tid, &id, &to, rng.u64(1..=300)).map_err(failed)?;
            lat.transfer.push(started.elapsed().as_nanos() as u64);
            tally.transfers.fetch_add(1, Ordering::Relaxed);
            match stage {
                Stage::Completed => {}
                Stage::Failed { .. } => {
                    tally.transfers_failed.fetch_add(1, Ordering::Relaxed);
                }
                other => return Err(failed(format!("transfer {tid} ended at {other:?}"))),
            }
        }
        tally.done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(lat)
}

/// Runs `f(thread)` on `threads` threads while a progress bar counts `done` up to `total`;
/// returns the results in thread order and the wall time from the common start.
fn on_threads<T: Send>(
    threads: usize,
    total: u64,
    what: &'static str,
    done: &AtomicU64,
    stop: &AtomicBool,
    f: impl Fn(usize) -> Result<T, DemoError> + Sync,
) -> Result<(Vec<T>, Duration), DemoError> {
    let barrier = Barrier::new(threads + 1);
    let bar = progress_bar(total, what);
    let (results, took) = thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (f, barrier) = (&f, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let r = f(t);
                    if r.is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    r
                })
            })
            .collect();
        barrier.wait();
        let started = Instant::now();
        while !handles.iter().all(|h| h.is_finished()) {
            bar.set_position(done.load(Ordering::Relaxed));
            thread::sleep(Duration::from_millis(50));
        }
        let took = started.elapsed();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(failed("a writer thread panicked"))))
            .collect();
        (results, took)
    });
    bar.finish_and_clear();
    Ok((results.into_iter().collect::<Result<Vec<T>, DemoError>>()?, took))
}

// ---------------------------------------------------------------------------------------

/// Runs the demo, writing a human-readable report to `out`.
pub fn run(cfg: &DemoConfig, out: &mut dyn Write) -> Result<DemoSummary, DemoError> {
    let cfg = DemoConfig {
        threads: cfg.threads.max(1),
        accounts: cfg.accounts.max(2),
        commands: cfg.commands.max(1),
        ..cfg.clone()
    };
    let run_started = Instant::now();
    let (dir, note) = choose_dir(&cfg.dir)?;
    let shown = escape::path(&dir);
    writeln!(out, "annal demo: an event-sourced bank on a fresh store in {shown}")?;
    if let Some(note) = note {
        writeln!(out, "  note: {note}")?;
    }
    let store = Store::open(&dir, StoreOptions::default())?;
    let marker = serde_json::json!({
        "threads": cfg.threads, "accounts": cfg.accounts, "commands": cfg.commands,
    });
    let marker = NewEvent::new(MARKER_TYPE, marker.to_string().into_bytes());
    store.append(MARKER_STREAM, ExpectedVersion::NoStream, &[marker])?;
    let bank = Bank::open(store.clone()).map_err(failed)?;
    writeln!(
        out,
        "  every command returns once its events are durable (Durability::Sync: after \
         fdatasync;\n  concurrent appends share one)"
    )?;

    let runner = annal::ProjectionRunner::new(store.clone());
    let live = Balances::new(bank.accounts.clone());
    let double_from = Arc::clone(&live.double_from);
    let opts = ProjectionOptions::with_delivery(annal::Delivery::ExactlyOnce);
    let projection = runner.spawn(live, opts)?;
    let model = projection.read_model();
    writeln!(
        out,
        "  projection \"balances\" (balance per account, total money) runs on its own thread,\n  \
         with exactly-once checkpoints"
    )?;

    // 1. Commands validated against aggregates.
    writeln!(out, "\n1. commands are validated against aggregates")?;
    let opened = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let (_, took) = on_threads(cfg.threads, cfg.accounts as u64, "opening", &opened, &stop, |t| {
        for i in (t..cfg.accounts).step_by(cfg.threads) {
            let id = account_id(i);
            bank.accounts.execute(&id, &AccountCommand::Open { owner: format!("owner {i}") })?;
            let deposit = AccountCommand::Deposit { amount: OPENING_BALANCE, step: None };
            bank.accounts.execute(&id, &deposit)?;
            opened.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    })?;
    writeln!(
        out,
        "   opened {} accounts with {} each in {:.2} s",
        grouped(cfg.accounts as u64),
        grouped(OPENING_BALANCE),
        took.as_secs_f64()
    )?;
    let (a, b) = (account_id(0), account_id(1));
    let open_again = AccountCommand::Open { owner: "someone else".into() };
    match bank.accounts.execute(&a, &open_again) {
        Err(ExecuteError::Rejected(why)) => {
            writeln!(out, "   open account {a} again        -> rejected: {why}")?
        }
        other => return Err(failed(format!("a second open of {a} was not rejected: {other:?}"))),
    }
    let overdraft = AccountCommand::Withdraw { amount: 1_000_000, step: None };
    match bank.accounts.execute(&b, &overdraft) {
        Err(ExecuteError::Rejected(why)) => {
            writeln!(out, "   withdraw 1,000,000 from {b}  -> rejected: {why}")?
        }
        other => return Err(failed(format!("an overdraft of {b} was not rejected: {other:?}"))),
    }
    let done = bank.accounts.execute(&a, &AccountCommand::Deposit { amount: 25, step: None })?;
    let seq = last_seq(&bank.accounts, &a)?;
    let waited = Instant::now();
    model.wait_for(seq, WAIT)?;
    let waited = waited.elapsed();
    let seen = model.read(|m| m.balance(&a));
    writeln!(
        out,
        "   deposit 25 into {a}           -> accepted at seq {seq}\n   read your write: \
         wait_for({seq}) took {:.2} ms, the read model shows {}",
        waited.as_secs_f64() * 1e3,
        seen.map_or_else(|| "nothing".into(), grouped)
    )?;
    if seen != Some(done.state.balance) {
        return Err(failed(format!(
            "the read model shows {seen:?} for {a} after wait_for, the aggregate {}",
            done.state.balance
        )));
    }

    // 2. The concurrent workload.
    let total = cfg.threads as u64 * cfg.commands;
    writeln!(
        out,
        "\n2. {} threads x {} commands (40% deposits, 30% withdrawals, 30% transfers) on {} \
         accounts,\n   one in four on {} hot accounts so that writers conflict",
        cfg.threads,
        grouped(cfg.commands),
        grouped(cfg.accounts as u64),
        HOT_ACCOUNTS.min(cfg.accounts)
    )?;
    let tally = Tally::default();
    let seq_before = store.log().visible_end();
    if cfg.fault == Some(Fault::Projection) {
        double_from.store(seq_before, Ordering::Relaxed);
    }
    let (lats, took) = on_threads(cfg.threads, total, "commands", &tally.done, &stop, |t| {
        writer(&bank, &cfg, t, &tally, &stop)
    })?;
    let events = store.log().visible_end() - seq_before;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let mut execute: Vec<u64> = lats.iter().flat_map(|l| l.execute.iter().copied()).collect();
    let mut transfer: Vec<u64> = lats.iter().flat_map(|l| l.transfer.iter().copied()).collect();
    execute.sort_unstable();
    transfer.sort_unstable();
    let commands = get(&tally.done);
    writeln!(
        out,
        "   {} commands in {:.2} s = {} commands/s; {} events appended = {} events/s",
        grouped(commands),
        took.as_secs_f64(),
        per_sec(commands, took),
        grouped(events),
        per_sec(events, took)
    )?;
    writeln!(
        out,
        "   deposits {}, withdrawals {} (+{} rejected: insufficient funds),\n   transfers {} \
         ({} failed: insufficient funds)",
        grouped(get(&tally.deposits)),
        grouped(get(&tally.withdrawals)),
        grouped(get(&tally.overdrafts)),
        grouped(get(&tally.transfers)),
        grouped(get(&tally.transfers_failed))
    )?;
    let retries = get(&tally.retries) + bank.transfer_retries();
    writeln!(
        out,
        "   optimistic concurrency: {} conflicts, each retried on the reloaded aggregate\n   \
         ({} in deposits/withdrawals, {} in transfer steps); {} gave up",
        grouped(retries),
        grouped(get(&tally.retries)),
        grouped(bank.transfer_retries()),
        grouped(get(&tally.gave_up))
    )?;
    writeln!(
        out,
        "   execute latency (deposit/withdraw, until durable, retries included):\n     p50 \
         {:.2} ms, p99 {:.2} ms",
        ms(percentile(&execute, 50.0)),
        ms(percentile(&execute, 99.0))
    )?;
    writeln!(
        out,
        "   transfer latency (4 to 5 commands on 3 aggregates):\n     p50 {:.2} ms, p99 {:.2} ms",
        ms(percentile(&transfer, 50.0)),
        ms(percentile(&transfer, 99.0))
    )?;

    // 3. Queries and money conservation.
    writeln!(out, "\n3. queries are served from the read model")?;
    let expected = |tally: &Tally| {
        cfg.accounts as u64 * OPENING_BALANCE + 25 + get(&tally.deposited) - get(&tally.withdrawn)
    };
    let total_money = conservation(&bank, &model, &cfg, expected(&tally), out)?;
    let richest = model.read(|m| {
        let mut v: Vec<(u64, String)> = m.balances.iter().map(|(k, b)| (*b, k.clone())).collect();
        v.sort_unstable_by(|x, y| y.cmp(x));
        v.into_iter().take(3).map(|(b, k)| format!("{k} {}", grouped(b))).collect::<Vec<_>>()
    });
    writeln!(out, "   richest accounts: {}", richest.join(", "))?;
    let m = projection.metrics();
    writeln!(
        out,
        "   projection: applied {} events, position {}, lag {} events",
        grouped(m.applied_events),
        grouped(m.position),
        m.lag_events
    )?;

    // 4. Snapshots.
    writeln!(out, "\n4. snapshots (an account is snapshotted every 50 events)")?;
    bank.accounts.flush_snapshots();
    // The busiest account that has a snapshot (a snapshot request is dropped when the
    // background writer's queue is full, so the very busiest may have none yet).
    let mut by_events: Vec<(u64, String)> = (0..cfg.accounts)
        .map(account_id)
        .map(|id| (store.stream_version(&bank.accounts.stream_id(&id)).unwrap_or(0) + 1, id))
        .collect();
    by_events.sort_unstable_by(|x, y| y.cmp(x));
    let mut found = None;
    for (_, id) in &by_events {
        let loaded = bank.accounts.load(id)?;
        if let SnapshotUse::Used { version } = loaded.snapshot {
            found = Some((id.clone(), version));
            break;
        }
    }
    let Some((busiest, version)) = found else {
        let most = by_events.first().map_or(0, |b| b.0);
        return Err(failed(format!(
            "no account has a snapshot (the busiest has {most} events; one is taken every 50): \
             run with more --commands"
        )));
    };
    let (from_snapshot, loaded) = timed(LOAD_REPEATS, || Ok(bank.accounts.load(&busiest)?))?;
    let (from_start, replayed) = timed(LOAD_REPEATS, || Ok(bank.accounts.replay(&busiest)?))?;
    if loaded.state != replayed.state {
        return Err(failed(format!("{busiest}: the snapshot load differs from a full replay")));
    }
    let used = format!("its snapshot at version {version}");
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    writeln!(
        out,
        "   busiest account with a snapshot, {busiest}: {} events\n   load from {used} + {} \
         events: {:.0} us\n   full replay of {} events: {:.0} us ({:.1}x the time); same state",
        grouped(replayed.replayed),
        loaded.replayed,
        us(from_snapshot),
        grouped(replayed.replayed),
        us(from_start),
        from_start.as_secs_f64() / from_snapshot.as_secs_f64().max(1e-9)
    )?;
    let (accounts, transfers) =
        (bank.accounts.snapshots().stats(), bank.transfers.snapshots().stats());
    writeln!(
        out,
        "   (medians of {LOAD_REPEATS} loads each)\n   snapshots written: {} of accounts, {} of \
         finished transfers; {} failed, {} set aside",
        grouped(accounts.written),
        grouped(transfers.written),
        accounts.write_failures + transfers.write_failures,
        accounts.set_aside + transfers.set_aside
    )?;

    // 5. Rebuild, verify, swap.
    writeln!(
        out,
        "\n5. replay: rebuild \"balances\" from seq 0, verify against the live view, swap"
    )?;
    let mut fresh = Balances::new(bank.accounts.clone());
    if cfg.fault == Some(Fault::Rebuild) {
        fresh.total = 1;
    }
    let head = store.log().visible_end();
    let rebuild = projection.rebuild(0, fresh, Verify::Digest)?;
    // Writes go on during the rebuild; the old view serves queries meanwhile.
    let deposited = AtomicU64::new(0);
    let rebuilt = AtomicBool::new(false);
    let bar = progress_bar(head, "rebuilding");
    let (outcome, during, during_rebuild) = thread::scope(|s| {
        let depositor = s.spawn(|| -> Result<u64, DemoError> {
            let mut n = 0;
            while n < REBUILD_DEPOSITS_MAX && !rebuilt.load(Ordering::Relaxed) {
                let id = account_id(n as usize % cfg.accounts);
                bank.accounts.execute(&id, &AccountCommand::Deposit { amount: 1, step: None })?;
                n += 1;
                deposited.store(n, Ordering::Relaxed);
            }
            Ok(n)
        });
        let outcome = loop {
            if let Some(o) = rebuild.wait_timeout(Duration::from_millis(20)) {
                break o;
            }
            bar.set_position(rebuild.progress().min(head));
        };
        let during_rebuild = deposited.load(Ordering::Relaxed);
        rebuilt.store(true, Ordering::Relaxed);
        let during = depositor.join().unwrap_or_else(|_| Err(failed("the depositor panicked")));
        (outcome, during, during_rebuild)
    });
    bar.finish_and_clear();
    let during = during?;
    let rebuilt_at = match outcome {
        RebuildOutcome::Swapped { position, replayed, took } => {
            writeln!(
                out,
                "   verified and swapped in at seq {}: digests equal\n   {} events replayed in \
                 {:.3} s = {} events/s\n   meanwhile {} deposits were executed and queries \
                 were served by the old view",
                grouped(position),
                grouped(replayed),
                took.as_secs_f64(),
                per_sec(replayed, took),
                grouped(during_rebuild)
            )?;
            position
        }
        other => {
            writeln!(out, "   NOT swapped: {other:?}")?;
            return Err(failed(format!("the rebuilt projection did not verify: {other:?}")));
        }
    };
    writeln!(out, "   after the swap:")?;
    let total_money = conservation(&bank, &model, &cfg, total_money + during, out)?;

    // 6. Close and inspect.
    bank.accounts.flush_snapshots();
    bank.transfers.flush_snapshots();
    projection.stop()?;
    store.close()?;
    writeln!(out, "\n6. the store, as `annal inspect` shows it\n")?;
    let verdict = check::inspect(&dir, false, out)?;
    if verdict != Verdict::Ok {
        return Err(failed("annal inspect found problems in the store"));
    }
    writeln!(out, "\ndemo finished in {:.1} s", run_started.elapsed().as_secs_f64())?;
    writeln!(out, "check it:   cargo run --release -p annal-tools -- verify --dir {shown}")?;
    Ok(DemoSummary { dir, commands, retries, total_money, rebuilt_at })
}

/// Waits for the read model to reach the log's head, then checks money conservation: the
/// read model's total equals the sum of its balances, the sum of the aggregates' balances
/// (each loaded from the store), and `expected`. Every account's balance must match too.
fn conservation(
    bank: &Bank,
    model: &annal::ReadModel<Balances>,
    cfg: &DemoConfig,
    expected: u64,
    out: &mut dyn Write,
) -> Result<u64, DemoError> {
    let head = bank.accounts.store().log().visible_end();
    let waited = Instant::now();
    model.wait_for(head.saturating_sub(1), WAIT)?;
    let waited = waited.elapsed();
    let (balances, total) = model.read(|m| (m.balances.clone(), m.total));
    let mut aggregates = 0u64;
    let mut differ = Vec::new();
    for i in 0..cfg.accounts {
        let id = account_id(i);
        let b = bank.accounts.load(&id)?.state.balance;
        aggregates += b;
        if balances.get(&id) != Some(&b) {
            differ.push(id);
        }
    }
    let summed: u64 = balances.values().sum();
    let ok = total == aggregates && summed == total && expected == total && differ.is_empty();
    writeln!(
        out,
        "   read model caught up with the log: wait_for(seq {}) took {:.2} ms",
        grouped(head.saturating_sub(1)),
        waited.as_secs_f64() * 1e3
    )?;
    writeln!(out, "   money conservation: {}", if ok { "ok" } else { "FAILED" })?;
    let n = grouped(cfg.accounts as u64);
    let rows = [
        ("read model total".to_string(), total),
        (format!("sum of its {} balances", grouped(balances.len() as u64)), summed),
        (format!("sum of the {n} aggregates' balances (loaded)"), aggregates),
        ("opening balances + deposits - withdrawals".to_string(), expected),
    ];
    for (what, v) in rows {
        writeln!(out, "     {what:<44} {:>12}", grouped(v))?;
    }
    if !ok {
        return Err(failed(format!(
            "money is not conserved: read model {total} (balances sum {summed}), aggregates \
             {aggregates}, expected {expected}; accounts whose balances differ: {differ:?}"
        )));
    }
    writeln!(
        out,
        "     every account's read-model balance equals its aggregate's:\n     transfers \
         moved money and created none"
    )?;
    Ok(total)
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
}
