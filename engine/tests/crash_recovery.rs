//! Simulated power loss at random points never loses an acknowledged record and never returns
//! a wrong one (RELIABILITY.md row 1).
//!
//! Each proptest case runs random workloads on a [`SimFs`]: append batches of random sizes
//! (empty payloads up to a few KiB, enough of them to roll small segments), explicit syncs,
//! clean close + reopen and drop + reopen, under `Sync`, `Batched` and `None` durability. A
//! case is a series of epochs; each ends in a crash, either between two operations or at a
//! chosen persistence call *inside* one (a write, fsync, `set_len`, create, rename, unlink or
//! directory fsync of the engine, intercepted by a storage wrapper that crashes the [`SimFs`]
//! instead of performing it), sometimes again inside the recovery that follows. The crash
//! keeps, drops, tears or garbles every unsynced operation (`CrashMode::Random`), or keeps or
//! drops all of them. After every recovery the oracle must hold:
//!
//! * `acked ⊆ recovered ⊆ attempted`: every record that was durable when the crash hit (an
//!   `Ok` append under `Sync`, or covered by `durable_head()` / a successful `sync` / `close`)
//!   is there, and nothing is there that was not appended;
//! * seqs are dense from 0 and every payload is byte-equal to what was appended;
//! * each batch is all-or-nothing; after a `DropAll` crash exactly the durable records
//!   remain, after a `KeepAll` crash every `Ok` append remains;
//! * every record read through `read(seq)` and through cursors verifies and is the right one;
//! * open never panics and never fails.
//!
//! A failure prints the whole history of the case: the [`SimFs`] seed, every operation and
//! its result, and every `CrashReport`; proptest keeps the failing case in
//! `crash_recovery.regressions` beside this file and replays it first on later runs.
//! `ANNAL_CRASH_CASES` sets the number of cases (default 256).

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annal::fs::{
    CrashMode, CrashReport, LockGuard, OpenMode, Preallocation, SimFs, Storage, StorageFile,
};
use annal::{Durability, Error, Log, Options};
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestCaseError, TestRunner};

const DIR: &str = "/store";
const MAX_RECORD_BYTES: u32 = 3072;

// ---------------------------------------------------------------------------------------------
// A storage wrapper that turns the k-th persistence call into a power loss.
// ---------------------------------------------------------------------------------------------

/// Shared control of one "process lifetime" on the simulated machine.
#[derive(Debug)]
struct Ctl {
    sim: SimFs,
    mode: CrashMode,
    /// Persistence calls still allowed before the crash; `None`: no crash armed.
    remaining: Mutex<Option<u64>>,
    /// Set once the machine lost power: every later call fails, as for a dead process.
    dead: AtomicBool,
    report: Mutex<Option<CrashReport>>,
}

impl Ctl {
    fn new(sim: &SimFs, arm: Option<u64>, mode: CrashMode) -> Arc<Ctl> {
        Arc::new(Ctl {
            sim: sim.clone(),
            mode,
            remaining: Mutex::new(arm),
            dead: AtomicBool::new(false),
            report: Mutex::new(None),
        })
    }

    fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    /// Power loss now (once).
    fn kill(&self) {
        if !self.dead.swap(true, Ordering::SeqCst) {
            let report = self.sim.crash_with(self.mode);
            *self.report.lock().unwrap() = Some(report);
        }
    }

    /// Arms the crash at the `k`-th persistence call from now.
    fn arm(&self, k: Option<u64>) {
        *self.remaining.lock().unwrap() = k;
    }

    fn take_report(&self) -> Option<CrashReport> {
        self.report.lock().unwrap().take()
    }

    fn alive(&self) -> io::Result<()> {
        if self.is_dead() {
            return Err(io::Error::other("test: the machine lost power"));
        }
        Ok(())
    }

    /// Counts one persistence call; crashes instead of performing the armed one.
    fn tick(&self) -> io::Result<()> {
        self.alive()?;
        let fire = {
            let mut r = self.remaining.lock().unwrap();
            match *r {
                Some(0) => {
                    *r = None;
                    true
                }
                Some(k) => {
                    *r = Some(k - 1);
                    false
                }
                None => false,
            }
        };
        if fire {
            self.kill();
        }
        self.alive()
    }
}

#[derive(Debug, Clone)]
struct CrashFs {
    ctl: Arc<Ctl>,
}

#[derive(Debug)]
struct CrashFile {
    inner: Box<dyn StorageFile>,
    ctl: Arc<Ctl>,
}

impl StorageFile for CrashFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.ctl.alive()?;
        self.inner.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.ctl.tick()?;
        self.inner.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.ctl.tick()?;
        self.inner.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        self.ctl.alive()?;
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.ctl.tick()?;
        self.inner.set_len(len)
    }
    fn preallocate(&self, len: u64) -> io::Result<Preallocation> {
        self.ctl.tick()?;
        self.inner.preallocate(len)
    }
    fn map(&self) -> io::Result<Option<memmap2::Mmap>> {
        self.ctl.alive()?;
        self.inner.map()
    }
}

impl Storage for CrashFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        if mode == OpenMode::CreateNew {
            self.ctl.tick()?;
        } else {
            self.ctl.alive()?;
        }
        let inner = self.ctl.sim.open(path, mode)?;
        Ok(Box::new(CrashFile { inner, ctl: Arc::clone(&self.ctl) }))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.ctl.alive()?;
        self.ctl.sim.create_dir_all(path)
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.ctl.alive()?;
        self.ctl.sim.read_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.ctl.tick()?;
        self.ctl.sim.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.ctl.tick()?;
        self.ctl.sim.remove_file(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.ctl.tick()?;
        self.ctl.sim.sync_dir(path)
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.ctl.alive()?;
        self.ctl.sim.exists(path)
    }
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        self.ctl.alive()?;
        self.ctl.sim.try_lock(path)
    }
}

// ---------------------------------------------------------------------------------------------
// The generated workload.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dur {
    Sync,
    /// Batched with this `max_bytes` (and a `max_delay` far beyond most test cases).
    Batched(u64),
    None,
}

#[derive(Debug, Clone)]
enum Op {
    /// One batch: the payload lengths.
    Append(Vec<u16>),
    Sync,
    CloseReopen,
    DropReopen,
    /// Read a seq (taken modulo the records appended so far, plus 2).
    Read(u16),
}

#[derive(Debug, Clone)]
struct Epoch {
    dur: Dur,
    ops: Vec<Op>,
    /// Crash instead of performing this persistence call (counted from the epoch's start);
    /// `None` or a count past the last call: crash after the last op.
    crash_at: Option<u64>,
    mode: CrashMode,
    /// Crash again at this persistence call of the open that follows the crash.
    recovery_crash: Option<u64>,
    recovery_mode: CrashMode,
}

#[derive(Debug, Clone)]
struct Case {
    seed: u64,
    segment_bytes: u64,
    index_interval_bytes: u64,
    preallocate: bool,
    epochs: Vec<Epoch>,
}

fn payload_len() -> impl Strategy<Value = u16> {
    prop_oneof![
        2 => Just(0u16),
        8 => 1u16..64,
        4 => 64u16..512,
        2 => 512u16..3000,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        14 => prop::collection::vec(payload_len(), 1..6).prop_map(Op::Append),
        2 => prop::collection::vec(0u16..48, 6..40).prop_map(Op::Append),
        2 => Just(Op::Sync),
        1 => Just(Op::CloseReopen),
        1 => Just(Op::DropReopen),
        2 => any::<u16>().prop_map(Op::Read),
    ]
}

fn mode() -> impl Strategy<Value = CrashMode> {
    prop_oneof![
        7 => Just(CrashMode::Random),
        2 => Just(CrashMode::DropAll),
        2 => Just(CrashMode::KeepAll),
    ]
}

fn dur() -> impl Strategy<Value = Dur> {
    prop_oneof![
        5 => Just(Dur::Sync),
        3 => prop_oneof![Just(1u64 << 20), 256u64..16384].prop_map(Dur::Batched),
        2 => Just(Dur::None),
    ]
}

fn epoch() -> impl Strategy<Value = Epoch> {
    (
        dur(),
        prop::collection::vec(op(), 1..60),
        prop::option::weighted(0.75, 0u64..160),
        mode(),
        prop::option::weighted(0.25, 0u64..14),
        mode(),
    )
        .prop_map(|(dur, ops, crash_at, mode, recovery_crash, recovery_mode)| Epoch {
            dur,
            ops,
            crash_at,
            mode,
            recovery_crash,
            recovery_mode,
        })
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<u64>(),
        prop_oneof![Just(4096u64), Just(8192), Just(12288), Just(16384)],
        prop_oneof![Just(64u64), Just(512), Just(4096)],
        prop::bool::weighted(0.75),
        prop::collection::vec(epoch(), 1..6),
    )
        .prop_map(|(seed, segment_bytes, index_interval_bytes, preallocate, epochs)| Case {
            seed,
            segment_bytes,
            index_interval_bytes,
            preallocate,
            epochs,
        })
}

/// A payload unique to (`id`, `len`): records are never interchangeable unless empty.
fn payload(id: u64, len: usize) -> Vec<u8> {
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..len)
        .map(|i| {
            if i < 8 {
                return (id >> (8 * i)) as u8;
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The runner and the oracle.
// ---------------------------------------------------------------------------------------------

/// Everything a failure report needs.
struct History {
    lines: Vec<String>,
}

impl History {
    fn note(&mut self, s: impl Into<String>) {
        self.lines.push(s.into());
    }
}

/// The state the oracle tracks across one epoch.
#[derive(Default)]
struct Model {
    /// Records known to be in the log at the start of the epoch (all durable).
    base: Vec<Vec<u8>>,
    /// Batches attempted in this epoch, in order, with whether `append` returned `Ok`.
    attempted: Vec<(Vec<Vec<u8>>, bool)>,
    /// Records (counted from seq 0) that must survive any crash from now on.
    durable_floor: u64,
    /// Source of unique payloads.
    next_id: u64,
    /// The crash hit inside a drop's close, so the exact durable point is unknown (only the
    /// floor holds).
    floor_inexact: bool,
}

impl Model {
    fn attempted_records(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.base.iter().chain(self.attempted.iter().flat_map(|(b, _)| b.iter()))
    }

    fn written_ok(&self) -> u64 {
        // Appends are sequential: every Ok batch follows the base and earlier Ok batches.
        self.base.len() as u64
            + self.attempted.iter().filter(|(_, ok)| *ok).map(|(b, _)| b.len() as u64).sum::<u64>()
    }
}

fn options(case: &Case, dur: Dur) -> Options {
    Options {
        segment_bytes: case.segment_bytes,
        max_record_bytes: MAX_RECORD_BYTES,
        index_interval_bytes: case.index_interval_bytes,
        durability: match dur {
            Dur::Sync => Durability::Sync,
            Dur::Batched(max_bytes) => {
                // Short enough that the flusher threads of dropped logs end soon (they wake
                // only every max_delay); the oracle tolerates a background flush.
                Durability::Batched { max_delay: Duration::from_millis(500), max_bytes }
            }
            Dur::None => Durability::None,
        },
        preallocate: case.preallocate,
        // Off, several chunks per segment, or the default (the rest of the segment at once);
        // taken from the seed so that the regression file's cases keep their shapes.
        zero_ahead_bytes: [0, 1000, 1 << 20][(case.seed % 3) as usize],
        // Small, so that point reads also run past the budget and fall back to a cursor.
        point_read_index_bytes: 4 << 10,
        // On, as by default; a `SimFs` does not prepare segments unless a test asks it to
        // (`SimFs::set_zero_fill_pays`), which tests/prepared_segments.rs does.
        prepare_segments: true,
        // Off, every few groups, or the default: the hint changes nothing a crash can see.
        writeback_bytes: [0, 4096, 1 << 20][(case.seed / 3 % 3) as usize],
    }
}

fn open(ctl: &Arc<Ctl>, opts: &Options) -> Result<Log, Error> {
    let fs: Arc<dyn Storage> = Arc::new(CrashFs { ctl: Arc::clone(ctl) });
    Log::open_with(fs, DIR, opts.clone())
}

/// Reads the whole log back through a cursor and through `read(seq)` and checks it equals
/// `expected` exactly.
fn verify(log: &Log, expected: &[Vec<u8>], what: &str) -> Result<(), String> {
    let n = expected.len() as u64;
    if log.visible_end() != n {
        return Err(format!("{what}: visible_end {} != expected {n}", log.visible_end()));
    }
    let mut count = 0u64;
    for r in log.cursor(0) {
        let r = r.map_err(|e| format!("{what}: cursor(0) failed at seq {count}: {e:?}"))?;
        if r.seq != count {
            return Err(format!("{what}: cursor returned seq {} at position {count}", r.seq));
        }
        let want = expected.get(count as usize).ok_or_else(|| {
            format!("{what}: cursor returned seq {} beyond the expected {n}", r.seq)
        })?;
        if r.payload[..] != want[..] {
            return Err(format!(
                "{what}: cursor returned wrong bytes for seq {count}: {} bytes vs {} expected",
                r.payload.len(),
                want.len()
            ));
        }
        count += 1;
    }
    if count != n {
        return Err(format!("{what}: cursor(0) ended after {count} of {n} records"));
    }
    for (seq, want) in expected.iter().enumerate() {
        let seq = seq as u64;
        match log.read(seq) {
            Ok(r) if r.seq == seq && r.payload[..] == want[..] => {}
            Ok(r) => return Err(format!("{what}: read({seq}) returned wrong record {r:?}")),
            Err(e) => return Err(format!("{what}: read({seq}) failed: {e:?}")),
        }
    }
    // Cursors starting mid-log, across segment and session boundaries.
    for from in [n / 3, n / 2, n.saturating_sub(3)] {
        let mut seq = from;
        for r in log.cursor(from) {
            let r = r.map_err(|e| format!("{what}: cursor({from}) failed at {seq}: {e:?}"))?;
            if r.seq != seq || r.payload[..] != expected[seq as usize][..] {
                return Err(format!("{what}: cursor({from}) returned a wrong record at {seq}"));
            }
            seq += 1;
        }
        if seq != n.max(from) {
            return Err(format!("{what}: cursor({from}) stopped at {seq} of {n}"));
        }
    }
    match log.read(n) {
        Err(Error::SeqOutOfRange { seq, head }) if seq == n && head == n => {}
        other => return Err(format!("{what}: read({n}) past the end gave {other:?}")),
    }
    if log.durable_head() != n.checked_sub(1) {
        return Err(format!("{what}: durable_head {:?} with {n} records", log.durable_head()));
    }
    Ok(())
}

/// Checks the report of a recovery and the moved-aside bytes of a cut tail.
fn check_report(log: &Log, sim: &SimFs, n: u64) -> Result<(), String> {
    let report = log.recovery_report();
    if report.next_seq != n {
        return Err(format!("report.next_seq {} != recovered {n}: {report:?}", report.next_seq));
    }
    if let Some(t) = &report.truncated {
        if t.offset % 8 != 0 || t.offset < 64 || t.bytes == 0 {
            return Err(format!("implausible truncation report {t:?}"));
        }
        let moved = t.moved_to.as_ref().ok_or_else(|| format!("cut bytes not kept: {t:?}"))?;
        let kept = sim.current_bytes(moved).ok_or_else(|| format!("{moved:?} missing"))?;
        if kept.len() as u64 != t.bytes {
            return Err(format!("{moved:?} holds {} bytes, report says {t:?}", kept.len()));
        }
    }
    Ok(())
}

/// Runs one epoch's operations on `log` (opened through `ctl`) and returns the handle if
/// the machine did not lose power meanwhile.
fn run_epoch(
    case: &Case,
    e: &Epoch,
    ctl: &Arc<Ctl>,
    log: Log,
    model: &mut Model,
    hist: &mut History,
) -> Result<Option<Log>, String> {
    let opts = options(case, e.dur);
    let mut log = Some(log);
    ctl.arm(e.crash_at);
    let capacity = opts.segment_capacity();
    for (i, op) in e.ops.iter().enumerate() {
        let Some(l) = log.as_ref() else { break };
        match op {
            Op::Append(lens) => {
                let batch: Vec<Vec<u8>> = lens
                    .iter()
                    .map(|&len| {
                        model.next_id += 1;
                        payload(model.next_id ^ case.seed.rotate_left(17), len.into())
                    })
                    .collect();
                let bytes = annal::format::batch_frame_bytes(batch.iter().map(Vec::len));
                let too_large = bytes > capacity;
                let expected_first = model.written_ok();
                let r = l.append(&batch);
                hist.note(format!("  op {i}: append {lens:?} ({bytes} B) -> {r:?}"));
                match r {
                    Err(Error::BatchTooLarge { .. }) if too_large => continue,
                    _ if too_large => return Err(format!("oversized batch gave {r:?}")),
                    Ok(a) => {
                        if a.first != expected_first || a.count as usize != batch.len() {
                            return Err(format!(
                                "append placed at {a:?}, {expected_first} expected"
                            ));
                        }
                        model.attempted.push((batch, true));
                        if e.dur == Dur::Sync {
                            model.durable_floor = model.written_ok();
                        }
                    }
                    Err(err) if ctl.is_dead() => {
                        hist.note(format!("    (crashed: {err})"));
                        model.attempted.push((batch, false));
                    }
                    Err(err) => return Err(format!("append failed unexpectedly: {err:?}")),
                }
            }
            Op::Sync => {
                let r = l.sync();
                hist.note(format!("  op {i}: sync -> {r:?}"));
                match r {
                    Ok(()) => model.durable_floor = model.written_ok(),
                    Err(_) if ctl.is_dead() => {}
                    Err(err) => return Err(format!("sync failed unexpectedly: {err:?}")),
                }
            }
            Op::Read(k) => {
                let total = model.written_ok();
                let seq = u64::from(*k) % (total + 2);
                let visible = l.visible_end();
                let r = l.read(seq);
                // A background flush may make more visible meanwhile.
                let visible_after = l.visible_end();
                let want: Option<&Vec<u8>> =
                    model.attempted_records().take(model.written_ok() as usize).nth(seq as usize);
                // Only records of Ok appends precede the visible end (failed ones end the
                // epoch), so `want` is the record at `seq` if it is visible.
                match (&r, want) {
                    (Ok(rec), Some(w)) if seq < visible_after && rec.payload[..] == w[..] => {}
                    (Err(Error::SeqOutOfRange { .. }), _) if seq >= visible => {}
                    (Err(_), _) if ctl.is_dead() => {}
                    _ => {
                        return Err(format!(
                            "read({seq}) with visible_end {visible}, {total} written: {r:?}"
                        ));
                    }
                }
            }
            Op::CloseReopen | Op::DropReopen => {
                let handle = log.take().expect("checked above");
                let closed = if matches!(op, Op::CloseReopen) {
                    // A second handle to read the durable head after a close that crashed.
                    let probe = handle.clone();
                    let closed = handle.close();
                    let head = probe.durable_head().map_or(0, |h| h + 1);
                    model.durable_floor = model.durable_floor.max(head);
                    closed
                } else {
                    drop(handle);
                    if ctl.is_dead() {
                        // The drop's close crashed; what it synced first is unknown.
                        model.floor_inexact = true;
                    }
                    Ok(())
                };
                hist.note(format!("  op {i}: {op:?}: close -> {closed:?}"));
                if ctl.is_dead() {
                    break;
                }
                if let Err(err) = closed {
                    return Err(format!("close failed unexpectedly: {err:?}"));
                }
                model.durable_floor = model.written_ok();
                match open(ctl, &opts) {
                    Ok(l) => {
                        let report = l.recovery_report().clone();
                        hist.note(format!("    reopened: {report:?}"));
                        if !report.clean || report.scanned_bytes != 0 {
                            return Err(format!(
                                "open after a clean close was not clean: {report:?}"
                            ));
                        }
                        // A clean close makes the model's records the new durable base.
                        let all: Vec<Vec<u8>> = model
                            .attempted_records()
                            .take(model.written_ok() as usize)
                            .cloned()
                            .collect();
                        verify(&l, &all, "after clean close and reopen")?;
                        model.base = all;
                        model.attempted.clear();
                        log = Some(l);
                    }
                    Err(err) if ctl.is_dead() => {
                        hist.note(format!("    reopen crashed: {err}"));
                        break;
                    }
                    Err(err) => return Err(format!("reopen after clean close failed: {err:?}")),
                }
            }
        }
        if let Some(l) = log.as_ref() {
            // Whatever the log calls durable must survive from now on; after a crash inside
            // the op the head is exactly what was durable at the crash (nothing syncs later).
            let head = l.durable_head().map_or(0, |h| h + 1);
            model.durable_floor = model.durable_floor.max(head);
            if !ctl.is_dead() {
                if head > model.written_ok() {
                    return Err(format!(
                        "durable_head {head} beyond {} written",
                        model.written_ok()
                    ));
                }
                if e.dur == Dur::Sync && head != model.written_ok() {
                    return Err(format!(
                        "Sync: durable_head covers {head} of {} acked records",
                        model.written_ok()
                    ));
                }
            }
        }
        if ctl.is_dead() {
            break;
        }
    }
    Ok(log)
}

fn run_case(case: &Case, hist: &mut History) -> Result<(), String> {
    let sim = SimFs::new(case.seed);
    hist.note(format!("SimFs seed {:#x}; {case:?}", case.seed));
    let mut model = Model::default();
    bump(&COVERAGE.cases);
    let mut ctl = Ctl::new(&sim, None, case.epochs[0].mode);
    let mut log = open(&ctl, &options(case, case.epochs[0].dur))
        .map_err(|e| format!("first open failed: {e:?}"))?;
    for (ei, e) in case.epochs.iter().enumerate() {
        hist.note(format!(
            "epoch {ei}: {:?}, crash_at {:?} {:?}, recovery crash {:?} {:?}",
            e.dur, e.crash_at, e.mode, e.recovery_crash, e.recovery_mode
        ));
        let alive = run_epoch(case, e, &ctl, log, &mut model, hist)?;
        // Power loss between operations if none happened inside one.
        if ctl.is_dead() {
            bump(&COVERAGE.crashes_inside_ops);
        }
        ctl.kill();
        if let Some(l) = alive.as_ref() {
            // Read after the power loss: no sync can succeed any more, so this is exactly
            // what was durable when it hit (a background flush included).
            let head = l.durable_head().map_or(0, |h| h + 1);
            model.durable_floor = model.durable_floor.max(head);
        }
        drop(alive);
        let report = ctl.take_report().expect("the crash happened");
        if report.torn + report.garbled > 0 {
            bump(&COVERAGE.torn_or_garbled_writes);
        }
        hist.note(format!("  crash: {report:#?}"));
        let written_ok = model.written_ok();
        let floor = model.durable_floor;

        // Recover (with the next epoch's options), possibly crashing once more inside the
        // recovery first.
        let next = case.epochs.get(ei + 1).unwrap_or(e);
        let opts = options(case, next.dur);
        if let Some(k) = e.recovery_crash {
            let rctl = Ctl::new(&sim, Some(k), e.recovery_mode);
            match catch_unwind(AssertUnwindSafe(|| open(&rctl, &opts))) {
                Err(_) => return Err("open panicked (armed recovery)".into()),
                Ok(Ok(l)) => {
                    hist.note(format!("  armed recovery finished: {:?}", l.recovery_report()));
                    rctl.kill();
                    drop(l);
                }
                Ok(Err(err)) if rctl.is_dead() => {
                    bump(&COVERAGE.crashes_inside_recovery);
                    hist.note(format!("  recovery crashed: {err}"));
                }
                Ok(Err(err)) => return Err(format!("open failed: {err:?}")),
            }
            if let Some(rep) = rctl.take_report() {
                hist.note(format!("  recovery crash: {rep:#?}"));
            }
        }
        ctl = Ctl::new(&sim, None, next.mode);
        let l = match catch_unwind(AssertUnwindSafe(|| open(&ctl, &opts))) {
            Err(_) => return Err("open panicked".into()),
            Ok(Err(err)) => return Err(format!("open after crash failed: {err:?}")),
            Ok(Ok(l)) => l,
        };
        let n = l.visible_end();
        hist.note(format!("  recovered {n} records: {:?}", l.recovery_report()));

        // The oracle.
        let attempted: Vec<Vec<u8>> = model.attempted_records().cloned().collect();
        if n < floor {
            return Err(format!("lost acknowledged records: recovered {n} < durable {floor}"));
        }
        if n > attempted.len() as u64 {
            return Err(format!("recovered {n} records, only {} attempted", attempted.len()));
        }
        let mut boundary = model.base.len() as u64;
        let mut boundaries = vec![boundary];
        for (b, _) in &model.attempted {
            boundary += b.len() as u64;
            boundaries.push(boundary);
        }
        if !boundaries.contains(&n) {
            return Err(format!("recovered {n} records: not a batch boundary {boundaries:?}"));
        }
        match report.mode {
            CrashMode::DropAll if n != floor && !model.floor_inexact => {
                return Err(format!("DropAll crash: recovered {n}, durable was {floor}"));
            }
            CrashMode::KeepAll if n < written_ok => {
                return Err(format!("KeepAll crash: recovered {n} < {written_ok} written Ok"));
            }
            _ => {}
        }
        verify(&l, &attempted[..n as usize], "after crash recovery")?;
        check_report(&l, &sim, n)?;
        let rr = l.recovery_report();
        for (hit, counter) in [
            (n < attempted.len() as u64, &COVERAGE.unacked_records_lost),
            (rr.truncated.is_some(), &COVERAGE.tails_cut),
            (!rr.seals_completed.is_empty(), &COVERAGE.seals_completed),
            (!rr.temp_files_removed.is_empty(), &COVERAGE.temp_files_removed),
            (rr.segments > 1, &COVERAGE.multi_segment_recoveries),
        ] {
            if hit {
                bump(counter);
            }
        }

        model.base = attempted[..n as usize].to_vec();
        model.attempted.clear();
        model.durable_floor = n;
        model.floor_inexact = false;
        log = l;
    }
    // A final clean close and reopen sees everything, scanning nothing.
    log.close().map_err(|e| format!("final close failed: {e:?}"))?;
    let ctl = Ctl::new(&sim, None, CrashMode::Random);
    let l = open(&ctl, &options(case, Dur::Sync)).map_err(|e| format!("final open: {e:?}"))?;
    let report = l.recovery_report();
    if !report.clean || report.scanned_bytes != 0 {
        return Err(format!("final open after close was not clean: {report:?}"));
    }
    verify(&l, &model.base, "final reopen")
}

fn cases() -> u32 {
    std::env::var("ANNAL_CRASH_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256)
}

/// What the cases exercised, summed over a run: the run fails if a path the property is
/// about was never taken (a generator or wrapper regression would otherwise pass silently).
#[derive(Debug, Default)]
struct Coverage {
    cases: AtomicU64,
    crashes_inside_ops: AtomicU64,
    crashes_inside_recovery: AtomicU64,
    torn_or_garbled_writes: AtomicU64,
    unacked_records_lost: AtomicU64,
    tails_cut: AtomicU64,
    seals_completed: AtomicU64,
    temp_files_removed: AtomicU64,
    multi_segment_recoveries: AtomicU64,
}

static COVERAGE: Coverage = Coverage {
    cases: AtomicU64::new(0),
    crashes_inside_ops: AtomicU64::new(0),
    crashes_inside_recovery: AtomicU64::new(0),
    torn_or_garbled_writes: AtomicU64::new(0),
    unacked_records_lost: AtomicU64::new(0),
    tails_cut: AtomicU64::new(0),
    seals_completed: AtomicU64::new(0),
    temp_files_removed: AtomicU64::new(0),
    multi_segment_recoveries: AtomicU64::new(0),
};

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

#[test]
fn crash_anywhere_loses_no_acked_record() {
    let config = ProptestConfig {
        cases: cases(),
        max_shrink_iters: 4096,
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&case(), |case| {
        let mut hist = History { lines: Vec::new() };
        let r = catch_unwind(AssertUnwindSafe(|| run_case(&case, &mut hist)));
        if std::env::var_os("ANNAL_CRASH_DEBUG").is_some() {
            eprintln!("{}\n=====", hist.lines.join("\n"));
        }
        let verdict = match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(msg)) => Err(msg),
            Err(p) => Err(format!(
                "panic: {}",
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )),
        };
        match verdict {
            Ok(()) => Ok(()),
            Err(msg) => {
                let history = hist.lines.join("\n");
                Err(TestCaseError::fail(format!("{msg}\n--- history ---\n{history}")))
            }
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let c = &COVERAGE;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    eprintln!("crash_recovery coverage: {c:?}");
    // Calibrated on the default 256 cases; smaller runs only report.
    if get(&c.cases) >= 256 {
        for (name, counter) in [
            ("crashes inside an operation", &c.crashes_inside_ops),
            ("crashes inside a recovery", &c.crashes_inside_recovery),
            ("torn or garbled writes", &c.torn_or_garbled_writes),
            ("unacknowledged records lost", &c.unacked_records_lost),
            ("tails cut and reported", &c.tails_cut),
            ("interrupted rolls completed", &c.seals_completed),
            ("temp files removed", &c.temp_files_removed),
            ("recoveries of several segments", &c.multi_segment_recoveries),
        ] {
            assert!(get(counter) > 0, "no case exercised: {name}; {c:?}");
        }
    }
}
