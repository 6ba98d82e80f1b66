//! RELIABILITY.md row 16: no acknowledged record lives only in a file whose directory entry
//! is not durable.
//!
//! Property: on every segment roll the new segment is created, preallocated, given its header,
//! fsynced, renamed to its final name and its directory fsynced, all successfully and in that
//! order, before the first write of a batch into it and before any record in it is
//! acknowledged; and the old segment's seal is written only after that directory fsync (so a
//! sealed last segment always means its successor went missing). And: a power loss at every
//! storage operation of a workload that rolls several times (unsynced operations dropped, kept,
//! or decided at random over many seeds) recovers to a state that satisfies the oracle
//! (`acked ⊆ recovered ⊆ attempted`, dense seqs, byte-equal, whole batches) and accepts
//! durable appends again.
//!
//! A probe `Storage` wraps `SimFs`: it adds the operations `SimFs` does not trace (create,
//! preallocate, rename, ...) to the trace as marks, and can stop the world at its n-th mutating
//! operation: it crashes the `SimFs` there and fails every later call, as a dead process
//! would. Seeds: `ANNAL_SEED` (default fixed), printed.
//!
//! RELIABILITY.md row 2's ordering half (ALICE): at every operation of a shorter workload
//! (`ANNAL_ALICE_BATCHES`, default 40), under `Sync` and under `Batched`, power is lost with the
//! unsynced operations persisted out of order: every subset of them (`CrashMode::KeepOnly`) when
//! there are at most `ANNAL_ALICE_EXHAUSTIVE` (default 10), else each dropped alone and each kept
//! alone; later writes of a file without earlier ones, and later operations on one file or
//! directory without earlier ones on another.

const FH: usize = annal::limits::FRAME_HEADER_BYTES;
const FH64: u64 = FH as u64;
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use annal::fs::{
    CrashMode, CrashReport, LockGuard, OpenMode, PendingOp, Preallocation, SimFs, Storage,
    StorageFile, TraceEvent,
};
use annal::{Appended, Durability, Error, Log, Options, RecoveryReport};

const DIR: &str = "/store";
const SEG_DIR: &str = "/store/segments";

fn base_seed() -> u64 {
    let seed = std::env::var("ANNAL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x2011_0DE5);
    eprintln!("roll_ordering: ANNAL_SEED={seed}");
    seed
}

fn opts() -> Options {
    Options {
        segment_bytes: 4096,
        max_record_bytes: 1024,
        index_interval_bytes: 256,
        ..Options::default()
    }
}

// ---------------------------------------------------------------------------------------
// The probe storage
// ---------------------------------------------------------------------------------------

/// Shared state of a probe and its files.
#[derive(Debug)]
struct Ctl {
    sim: SimFs,
    /// Mutating operations seen so far.
    ops: AtomicU64,
    /// Crash when this operation is about to run (`u64::MAX`: never).
    crash_at: AtomicU64,
    mode: Mutex<CrashMode>,
    dead: AtomicBool,
    report: Mutex<Option<CrashReport>>,
    /// The operations pending when the power went, oldest first.
    pending: Mutex<Option<Vec<PendingOp>>>,
}

fn dead() -> io::Error {
    io::Error::other("probe: the process is dead (simulated power loss)")
}

impl Ctl {
    fn alive(&self) -> io::Result<()> {
        if self.dead.load(SeqCst) { Err(dead()) } else { Ok(()) }
    }

    /// Counts one mutating operation; at the chosen one, loses power instead of running it.
    fn step(&self) -> io::Result<()> {
        self.alive()?;
        let n = self.ops.fetch_add(1, SeqCst);
        if n == self.crash_at.load(SeqCst) {
            self.dead.store(true, SeqCst);
            let mode = *self.mode.lock().unwrap();
            *self.pending.lock().unwrap() = Some(self.sim.pending_op_list());
            *self.report.lock().unwrap() = Some(self.sim.crash_with(mode));
            return Err(dead());
        }
        Ok(())
    }

    fn mark(&self, what: String) {
        self.sim.mark(what);
    }
}

#[derive(Debug, Clone)]
struct Probe(Arc<Ctl>);

impl Probe {
    fn new(sim: &SimFs) -> Probe {
        Probe(Arc::new(Ctl {
            sim: sim.clone(),
            ops: AtomicU64::new(0),
            crash_at: AtomicU64::new(u64::MAX),
            mode: Mutex::new(CrashMode::DropAll),
            dead: AtomicBool::new(false),
            report: Mutex::new(None),
            pending: Mutex::new(None),
        }))
    }

    /// Crash right before the `n`-th mutating operation from now.
    fn crash_before(&self, n: u64, mode: CrashMode) {
        *self.0.mode.lock().unwrap() = mode;
        self.0.crash_at.store(self.0.ops.load(SeqCst) + n, SeqCst);
    }
}

#[derive(Debug)]
struct ProbeFile {
    inner: Box<dyn StorageFile>,
    path: PathBuf,
    ctl: Arc<Ctl>,
}

impl StorageFile for ProbeFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.ctl.alive()?;
        self.inner.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.ctl.step()?;
        self.inner.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.ctl.step()?;
        self.inner.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        self.ctl.alive()?;
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.ctl.step()?;
        self.inner.set_len(len)?;
        self.ctl.mark(format!("set_len {} {len}", self.path.display()));
        Ok(())
    }
    fn preallocate(&self, len: u64) -> io::Result<Preallocation> {
        self.ctl.step()?;
        let r = self.inner.preallocate(len)?;
        self.ctl.mark(format!("preallocate {} {len}", self.path.display()));
        Ok(r)
    }
    fn map(&self) -> io::Result<Option<memmap2::Mmap>> {
        self.ctl.alive()?;
        self.inner.map()
    }
}

impl Storage for Probe {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        if mode == OpenMode::CreateNew {
            self.0.step()?;
        } else {
            self.0.alive()?;
        }
        let inner = self.0.sim.open(path, mode)?;
        if mode == OpenMode::CreateNew {
            self.0.mark(format!("create {}", path.display()));
        }
        Ok(Box::new(ProbeFile { inner, path: path.to_path_buf(), ctl: Arc::clone(&self.0) }))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.0.alive()?;
        self.0.sim.create_dir_all(path)
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.0.alive()?;
        self.0.sim.read_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.0.step()?;
        self.0.sim.rename(from, to)?;
        self.0.mark(format!("rename {} -> {}", from.display(), to.display()));
        Ok(())
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.0.step()?;
        self.0.sim.remove_file(path)?;
        self.0.mark(format!("remove {}", path.display()));
        Ok(())
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.0.step()?;
        self.0.sim.sync_dir(path)
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.0.alive()?;
        self.0.sim.exists(path)
    }
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        self.0.alive()?;
        self.0.sim.try_lock(path)
    }
}

// ---------------------------------------------------------------------------------------
// Workload and oracle
// ---------------------------------------------------------------------------------------

fn payload(t: usize, i: usize, j: usize, n: usize, len: usize) -> Vec<u8> {
    let mut p = format!("t{t}b{i}r{j}/{n}|").into_bytes();
    let fill = (t * 131 + i * 31 + j * 7) as u8;
    while p.len() < len {
        p.push(fill.wrapping_add(p.len() as u8));
    }
    p
}

fn batch(t: usize, i: usize) -> Vec<Vec<u8>> {
    let n = 1 + (t + i * 7 + 3) % 3;
    (0..n).map(|j| payload(t, i, j, n, 12 + (t * 53 + i * 37 + j * 11) % 260)).collect()
}

fn parse_id(p: &[u8]) -> Option<(usize, usize, usize, usize)> {
    let bar = p.iter().position(|&c| c == b'|')?;
    let s = std::str::from_utf8(p.get(1..bar)?).ok()?;
    let (t, rest) = s.split_once('b')?;
    let (i, rest) = rest.split_once('r')?;
    let (j, n) = rest.split_once('/')?;
    Some((t.parse().ok()?, i.parse().ok()?, j.parse().ok()?, n.parse().ok()?))
}

/// Per thread, each batch with its append's result.
type Attempts = Vec<Vec<(Vec<Vec<u8>>, Result<Appended, Error>)>>;

/// `acked ⊆ recovered ⊆ attempted`: whole batches, each once, each thread's in order,
/// byte-equal, every acked batch at its acked seq; plus a read of every acked batch.
fn check_oracle(log: &Log, attempts: &Attempts) -> Result<(), String> {
    let mut recovered = Vec::new();
    for r in log.cursor(0) {
        let r = r.map_err(|e| format!("cursor at {}: {e}", recovered.len()))?;
        recovered.push(r.payload.to_vec());
    }
    if recovered.len() as u64 != log.visible_end() {
        return Err(format!("cursor ended at {} of {}", recovered.len(), log.visible_end()));
    }
    let mut seen = BTreeSet::new();
    let mut last: HashMap<usize, usize> = HashMap::new();
    let mut pos = 0;
    while pos < recovered.len() {
        let Some((t, i, j, n)) = parse_id(&recovered[pos]) else {
            return Err(format!("seq {pos}: a record nobody wrote"));
        };
        let Some((b, r)) = attempts.get(t).and_then(|l| l.get(i)) else {
            return Err(format!("seq {pos}: t{t}b{i} was never attempted"));
        };
        if j != 0 || n != b.len() || recovered.get(pos..pos + n) != Some(&b[..]) {
            return Err(format!("seq {pos}: t{t}b{i} is not intact"));
        }
        if !seen.insert((t, i)) || last.insert(t, i).is_some_and(|l| l > i) {
            return Err(format!("seq {pos}: t{t}b{i} repeated or out of order"));
        }
        if let Ok(a) = r
            && a.first != pos as u64
        {
            return Err(format!("t{t}b{i} acked at {} but recovered at {pos}", a.first));
        }
        pos += n;
    }
    for (t, l) in attempts.iter().enumerate() {
        for (i, (b, r)) in l.iter().enumerate() {
            let Ok(a) = r else { continue };
            if !seen.contains(&(t, i)) {
                return Err(format!(
                    "acked t{t}b{i} (seqs {}..={}) lost; {} recovered",
                    a.first,
                    a.last(),
                    recovered.len()
                ));
            }
            let got = log.read(a.first).map_err(|e| format!("read({}): {e}", a.first))?;
            if got.payload[..] != b[0][..] {
                return Err(format!("read({}) returned another payload", a.first));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Ordering on every roll
// ---------------------------------------------------------------------------------------

/// The base seq in a segment path (`.../<base>.seg` or `.seg.tmp`).
fn seg_base(p: &str) -> Option<u64> {
    let name = p.rsplit('/').next()?;
    name.strip_suffix(".seg.tmp").or_else(|| name.strip_suffix(".seg"))?.parse().ok()
}

fn is_write(ev: &TraceEvent, path: &str, pred: impl Fn(u64, u64) -> bool) -> bool {
    matches!(ev, TraceEvent::Write { path: p, offset, len }
        if p.to_string_lossy() == path && pred(*offset, *len))
}

/// Checks the row-16 order for every segment created in `trace`; returns how many.
fn check_roll_order(trace: &[TraceEvent], preallocate: bool) -> Result<usize, String> {
    let find = |from: usize, what: &str, f: &dyn Fn(&TraceEvent) -> bool| {
        (from..trace.len())
            .find(|&i| f(&trace[i]))
            .ok_or_else(|| format!("{what} not found after event {from}"))
    };
    let mut created = 0;
    for (c, ev) in trace.iter().enumerate() {
        let TraceEvent::Mark(m) = ev else { continue };
        let Some(tmp) = m.strip_prefix("create ") else { continue };
        let Some(base) = seg_base(tmp).filter(|_| tmp.ends_with(".seg.tmp")) else { continue };
        let seg = tmp.strip_suffix(".tmp").unwrap_or(tmp);
        let ctx = format!("segment {base}");
        let header = find(c, "header write", &|e| is_write(e, tmp, |o, l| o == 0 && l == 64))?;
        if preallocate {
            let want = format!("preallocate {tmp} ");
            let pre = find(c, "preallocate", &|e| {
                matches!(e, TraceEvent::Mark(m)
                if m.starts_with(&want))
            })?;
            if pre > header {
                return Err(format!("{ctx}: preallocated after its header"));
            }
        }
        let sync_start = find(
            header,
            "header fsync",
            &|e| matches!(e, TraceEvent::SyncStart { path } if path.to_string_lossy() == tmp),
        )?;
        let sync_end = find(
            sync_start,
            "header fsync end",
            &|e| matches!(e, TraceEvent::SyncEnd { path, .. } if path.to_string_lossy() == tmp),
        )?;
        if trace[sync_end] != (TraceEvent::SyncEnd { path: tmp.into(), ok: true }) {
            return Err(format!("{ctx}: header fsync failed"));
        }
        let rename = format!("rename {tmp} -> {seg}");
        let renamed = find(sync_end, "rename", &|e| *e == TraceEvent::Mark(rename.clone()))?;
        let dir_sync = find(renamed, "directory fsync", &|e| {
            matches!(e,
            TraceEvent::DirSync { path, .. } if path == Path::new(SEG_DIR))
        })?;
        if trace[dir_sync] != (TraceEvent::DirSync { path: SEG_DIR.into(), ok: true }) {
            return Err(format!("{ctx}: directory fsync failed"));
        }
        // Nothing but the header may be written into the new file before its name is durable.
        if let Some(w) = (c..dir_sync).find(|&i| is_write(&trace[i], tmp, |o, _| o >= 64)) {
            return Err(format!(
                "{ctx}: batch written (event {w}) before the directory fsync \
                (event {dir_sync})"
            ));
        }
        for (i, e) in trace.iter().enumerate().take(dir_sync).skip(c) {
            if let TraceEvent::Mark(m) = e
                && let Some(first) = ack_first(m)
                && first >= base
            {
                return Err(format!(
                    "{ctx}: seq {first} acked (event {i}) before the directory \
                    fsync (event {dir_sync})"
                ));
            }
        }
        // The old segment is sealed only once its successor's name is durable.
        if base > 0 {
            let seal = (c..trace.len()).find(|&i| {
                matches!(&trace[i],
                TraceEvent::Write { path, len: FH64, .. }
                if seg_base(&path.to_string_lossy()).is_some_and(|b| b < base)
                    && path.to_string_lossy() != tmp)
            });
            if let Some(s) = seal
                && s < dir_sync
            {
                return Err(format!(
                    "{ctx}: predecessor sealed (event {s}) before the directory \
                    fsync (event {dir_sync})"
                ));
            }
        }
        created += 1;
    }
    Ok(created)
}

fn ack_first(mark: &str) -> Option<u64> {
    mark.strip_prefix("ack ")?.split(' ').next()?.parse().ok()
}

/// Appends from `threads` threads through a tracing probe and checks the order of every roll,
/// including segment 0's creation at open.
fn ordering_case(seed: u64, threads: usize, batches: usize, preallocate: bool) {
    let sim = SimFs::new(seed);
    sim.set_tracing(true);
    let probe = Probe::new(&sim);
    let opts = Options { preallocate, ..opts() };
    let log = Log::open_with(Arc::new(probe) as Arc<dyn Storage>, DIR, opts.clone()).unwrap();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let log = log.clone();
            let sim = sim.clone();
            std::thread::spawn(move || {
                (0..batches)
                    .map(|i| {
                        let b = batch(t, i);
                        let r = log.append(&b);
                        if let Ok(a) = &r {
                            sim.mark(format!("ack {} {}", a.first, a.last()));
                        }
                        (b, r)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let attempts: Attempts = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for l in &attempts {
        for (_, r) in l {
            assert!(r.is_ok(), "seed {seed}: {r:?}");
        }
    }
    let rolls = log.stats().rolls;
    assert!(rolls >= 4, "seed {seed}: only {rolls} rolls");
    let trace = sim.take_trace();
    let created = check_roll_order(&trace, preallocate)
        .unwrap_or_else(|e| panic!("seed {seed}, {threads} threads: {e}"));
    assert_eq!(created as u64, rolls + 1, "seed {seed}: every roll and the first segment");
    sim.crash_drop_all();
    drop(log);
    let log = Log::open_with(Arc::new(sim.clone()) as Arc<dyn Storage>, DIR, opts).unwrap();
    check_oracle(&log, &attempts).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
}

#[test]
fn new_segments_are_durable_before_their_first_write_and_ack() {
    let seed = base_seed();
    ordering_case(seed, 1, 80, true);
    ordering_case(seed ^ 1, 1, 80, false);
    for n in 0..4 {
        ordering_case(seed.wrapping_add(n), 4, 40, true);
    }
}

/// The order checker must be able to fail: an ack or a batch write into the new segment
/// before its directory fsync, and a seal before it, are rejected.
#[test]
fn roll_order_checker_rejects_misordered_traces() {
    let tmp = "/store/segments/00000000000000000005.seg.tmp";
    let old = "/store/segments/00000000000000000000.seg";
    let w = |path: &str, offset, len| TraceEvent::Write { path: path.into(), offset, len };
    let mark = |s: &str| TraceEvent::Mark(s.to_string());
    let good = vec![
        mark(&format!("create {tmp}")),
        mark(&format!("preallocate {tmp} 4096")),
        w(tmp, 0, 64),
        TraceEvent::SyncStart { path: tmp.into() },
        TraceEvent::SyncEnd { path: tmp.into(), ok: true },
        mark(&format!("rename {tmp} -> {}", tmp.trim_end_matches(".tmp"))),
        TraceEvent::DirSync { path: SEG_DIR.into(), ok: true },
        w(old, 3000, FH64),
        w(tmp, 64, 100),
        mark("ack 5 6"),
    ];
    assert_eq!(check_roll_order(&good, true), Ok(1));
    let swap = |a: usize, b: usize| {
        let mut t = good.clone();
        t.swap(a, b);
        t
    };
    assert!(check_roll_order(&swap(6, 8), true).is_err(), "write before dir fsync");
    assert!(check_roll_order(&swap(6, 9), true).is_err(), "ack before dir fsync");
    assert!(check_roll_order(&swap(6, 7), true).is_err(), "seal before dir fsync");
    assert!(check_roll_order(&swap(5, 6), true).is_err(), "dir fsync before rename");
    assert!(check_roll_order(&swap(1, 2), true).is_err(), "preallocate after header");
    let mut failed = good.clone();
    failed[6] = TraceEvent::DirSync { path: SEG_DIR.into(), ok: false };
    assert!(check_roll_order(&failed, true).is_err(), "failed dir fsync");
}

// ---------------------------------------------------------------------------------------
// Power loss at every storage operation around rolls
// ---------------------------------------------------------------------------------------

const CRASH_BATCHES: usize = 60;

/// What a crash run saw: the attempts, the crash report and the operations pending at the
/// crash (oldest first).
type CrashRun = (Attempts, Option<CrashReport>, Option<Vec<PendingOp>>);

/// Runs the single-threaded roll workload of `batches` appends with `durability` and loses
/// power right before its `n`-th mutating storage operation after open. Under
/// `Durability::Batched` an append counts as acknowledged only once `durable_head()` covered
/// it; the others are recorded as failed (attempted, not acknowledged).
fn crash_run(
    sim: &SimFs,
    n: u64,
    mode: CrashMode,
    batches: usize,
    durability: Durability,
) -> CrashRun {
    let probe = Probe::new(sim);
    let o = Options { durability, ..opts() };
    let log = Log::open_with(Arc::new(probe.clone()) as Arc<dyn Storage>, DIR, o).unwrap();
    probe.crash_before(n, mode);
    let mut mine = Vec::new();
    let mut durable = None;
    for i in 0..batches {
        let b = batch(0, i);
        let r = log.append(&b);
        durable = durable.max(log.durable_head());
        let failed = r.is_err();
        mine.push((b, r));
        if failed {
            break;
        }
    }
    for (_, r) in &mut mine {
        if let Ok(a) = r
            && durable.is_none_or(|d| a.last() > d)
        {
            *r = Err(Error::Closed);
        }
    }
    drop(log);
    let report = probe.0.report.lock().unwrap().take();
    let pending = probe.0.pending.lock().unwrap().take();
    (vec![mine], report, pending)
}

/// One crash state: crash, reopen, oracle, append, crash again, reopen, oracle. Returns what
/// the first recovery reported.
fn crash_case(
    seed: u64,
    n: u64,
    mode: CrashMode,
    batches: usize,
    durability: Durability,
) -> Result<RecoveryReport, String> {
    let sim = SimFs::new(seed);
    let (mut attempts, report, _) = crash_run(&sim, n, mode, batches, durability);
    let Some(report) = report else {
        return Err("the workload ended before the crash point".into());
    };
    // Every append after the one the crash interrupted never ran; the interrupted one failed.
    if let Some((_, Ok(a))) = attempts[0].last() {
        return Err(format!("the append in flight at the crash was acked: {a:?}"));
    }
    let reopen = |attempts: &Attempts| -> Result<Log, String> {
        let log = Log::open_with(Arc::new(sim.clone()) as Arc<dyn Storage>, DIR, opts())
            .map_err(|e| format!("reopen failed: {e}"))?;
        check_oracle(&log, attempts)?;
        Ok(log)
    };
    let ctx = |e: String| {
        format!(
            "{e}; crash: kept {} dropped {} torn {} garbled {}; {:?}",
            report.kept, report.dropped, report.torn, report.garbled, report.details
        )
    };
    let log = reopen(&attempts).map_err(ctx)?;
    let recovery = log.recovery_report().clone();
    // Recovery left a log that takes durable appends.
    let b = batch(1, 0);
    let r = log.append(&b);
    if let Err(e) = &r {
        return Err(ctx(format!("append after recovery: {e}")));
    }
    attempts.push(vec![(b, r)]);
    sim.crash_drop_all();
    drop(log);
    reopen(&attempts).map_err(|e| ctx(format!("after a second crash: {e}")))?;
    Ok(recovery)
}

#[test]
fn power_loss_at_every_operation_around_rolls_keeps_every_ack() {
    let seed = base_seed();
    let total = {
        // Count the dry run's operations with a fresh probe over a fresh store.
        let sim = SimFs::new(seed);
        let probe = Probe::new(&sim);
        let log = Log::open_with(Arc::new(probe.clone()) as Arc<dyn Storage>, DIR, opts()).unwrap();
        let start = probe.0.ops.load(SeqCst);
        for i in 0..CRASH_BATCHES {
            log.append(&batch(0, i)).unwrap();
        }
        assert!(log.stats().rolls >= 4, "only {} rolls", log.stats().rolls);
        let n = probe.0.ops.load(SeqCst) - start;
        probe.0.dead.store(true, SeqCst);
        n
    };
    eprintln!("{total} storage operations in the roll workload");
    let mut failures = Vec::new();
    let mut runs = 0;
    // How often recovery had to repair something: evidence the crash points fall inside rolls.
    let (mut seals, mut cuts, mut temps) = (0, 0, 0);
    for n in 0..total {
        let mut modes = vec![(CrashMode::DropAll, seed), (CrashMode::KeepAll, seed)];
        for r in 0..16u64 {
            modes.push((CrashMode::Random, seed.wrapping_mul(31).wrapping_add(n * 101 + r)));
        }
        for (mode, s) in modes {
            runs += 1;
            match crash_case(s, n, mode, CRASH_BATCHES, Durability::Sync) {
                Ok(report) => {
                    seals += usize::from(!report.seals_completed.is_empty());
                    cuts += usize::from(report.truncated.is_some());
                    temps += usize::from(!report.temp_files_removed.is_empty());
                }
                Err(e) => failures.push(format!("crash before op {n}, {mode:?}, seed {s}: {e}")),
            }
        }
    }
    eprintln!(
        "{runs} crash states: {seals} seals completed, {cuts} tails cut, {temps} with temp \
        files removed"
    );
    assert!(seals > 0 && cuts > 0 && temps > 0, "crash points missed the roll's repair paths");
    assert!(
        failures.is_empty(),
        "{} of {runs} crash states failed; first 10:\n{}",
        failures.len(),
        failures.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// ALICE's reordering phase
// ---------------------------------------------------------------------------------------

/// Batches of the short workload whose crash states are enumerated with reordering
/// (`ANNAL_ALICE_BATCHES`); the default rolls four times.
fn alice_batches() -> usize {
    std::env::var("ANNAL_ALICE_BATCHES").ok().and_then(|s| s.parse().ok()).unwrap_or(40)
}

/// Up to this many pending operations at a crash point, every subset of them is a crash
/// state (`ANNAL_ALICE_EXHAUSTIVE`, at most 16); above it, ALICE's own choice: each one
/// dropped with all the others kept, and each one kept alone.
fn alice_exhaustive() -> usize {
    std::env::var("ANNAL_ALICE_EXHAUSTIVE").ok().and_then(|s| s.parse().ok()).unwrap_or(10).min(16)
}

/// Whether `mask` keeps a later pending operation while an earlier one is dropped, and
/// whether such a pair exists within one file's data and across different files.
fn reorders(mask: u64, pending: &[PendingOp]) -> (bool, bool) {
    let (mut same, mut different) = (false, false);
    for (j, later) in pending.iter().enumerate().take(64) {
        if mask >> j & 1 == 0 {
            continue;
        }
        for earlier in pending.iter().take(j).enumerate().filter(|(i, _)| mask >> i & 1 == 0) {
            let earlier = earlier.1;
            if !earlier.dir_op && !later.dir_op && earlier.path == later.path {
                same = true;
            } else if earlier.path != later.path {
                different = true;
            }
        }
    }
    (same, different)
}

/// The durabilities of the reordering phase: `Sync` (each batch fsynced before its ack, so
/// few operations are pending at once, most of them inside rolls) and `Batched` with a
/// flush every ~2 KiB (several batches pending: their writes reordered among themselves).
fn alice_durabilities() -> [Durability; 2] {
    let batched =
        Durability::Batched { max_delay: std::time::Duration::from_secs(3600), max_bytes: 2048 };
    [Durability::Sync, batched]
}

/// RELIABILITY.md row 2, ALICE's ordering phase: at every storage operation of a short
/// rolling workload, power is lost with the unsynced operations persisted *out of order*:
/// every subset of them (or, when there are many, each one dropped alone and each one kept
/// alone), so a later write, create or rename reaches the disk while an earlier one does not,
/// in the same file and across files. Every such state recovers and satisfies the oracle.
#[test]
fn power_loss_with_unsynced_operations_reordered_keeps_every_ack() {
    let seed = base_seed() ^ 0xA11CE;
    let batches = alice_batches();
    let exhaustive = alice_exhaustive();
    let mut failures = Vec::new();
    for durability in alice_durabilities() {
        let total = {
            let sim = SimFs::new(seed);
            let probe = Probe::new(&sim);
            let o = Options { durability, ..opts() };
            let log = Log::open_with(Arc::new(probe.clone()) as Arc<dyn Storage>, DIR, o).unwrap();
            let start = probe.0.ops.load(SeqCst);
            for i in 0..batches {
                log.append(&batch(0, i)).unwrap();
            }
            assert!(log.stats().rolls >= 1, "the short workload never rolls");
            let n = probe.0.ops.load(SeqCst) - start;
            probe.0.dead.store(true, SeqCst);
            n
        };
        let (mut states, mut same_file, mut across_files, mut most) = (0u64, 0u64, 0u64, 0);
        // How often recovery had to repair the reordered state.
        let (mut cuts, mut seals, mut temps) = (0u64, 0u64, 0u64);
        for n in 0..total {
            // The operations pending at this crash point (the workload is deterministic).
            let sim = SimFs::new(seed);
            let (_, _, pending) = crash_run(&sim, n, CrashMode::DropAll, batches, durability);
            let pending = pending.expect("the workload ended before the crash point");
            let p = pending.len().min(64);
            most = most.max(p);
            let masks: Vec<u64> = if p <= exhaustive {
                (0..1u64 << p).collect()
            } else {
                let all = if p == 64 { u64::MAX } else { (1u64 << p) - 1 };
                (0..p).flat_map(|i| [all & !(1 << i), 1 << i]).collect()
            };
            for mask in masks {
                let (same, different) = reorders(mask, &pending);
                states += 1;
                same_file += u64::from(same);
                across_files += u64::from(different);
                let mode = CrashMode::KeepOnly(mask);
                let result = crash_case(seed, n, mode, batches, durability);
                if let Ok(r) = &result
                    && (same || different)
                {
                    cuts += u64::from(r.truncated.is_some());
                    seals += u64::from(!r.seals_completed.is_empty());
                    temps += u64::from(!r.temp_files_removed.is_empty());
                }
                if let Err(e) = result {
                    let kept: Vec<String> = (0..p)
                        .filter(|i| mask >> i & 1 == 1)
                        .map(|i| format!("{} {}", pending[i].path, pending[i].what))
                        .collect();
                    failures.push(format!(
                        "{durability:?}, crash before op {n}, kept only {kept:?}: {e}"
                    ));
                }
            }
        }
        eprintln!(
            "{durability:?}: {total} crash points of {batches} batches, {states} crash states \
             (up to {most} pending operations, all subsets up to {exhaustive}): {same_file} \
             persist a later write of a file without an earlier one, {across_files} a later \
             operation on one file or directory without an earlier one on another; recovery \
             of the reordered ones cut {cuts} tails, completed {seals} seals, removed temp \
             files {temps} times"
        );
        assert!(same_file > 0 && across_files > 0, "{durability:?}: no reordered state");
        assert!(cuts + seals + temps > 0, "{durability:?}: no reordered state needed a repair");
    }
    assert!(
        failures.is_empty(),
        "{} reordered crash states failed; first 10:\n{}",
        failures.len(),
        failures.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
}
