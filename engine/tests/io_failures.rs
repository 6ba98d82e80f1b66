//! RELIABILITY.md rows 12, 13 and 14: a failed fsync, a failed or short write, and a full disk.
//!
//! Property: when the k-th fsync (file or directory) or the k-th write of a workload fails, for
//! every k, the batch during which it failed gets the original error, every later append and
//! `sync` gets `Error::Poisoned` naming that first failure, nothing is acknowledged after it,
//! readers never see the failed batch, and after a simulated power loss (`SimFs::crash`) and
//! reopen every acknowledged record is present and intact (`acked ⊆ recovered ⊆ attempted`,
//! dense seqs, byte-equal payloads, whole batches only). A full disk gives
//! `Error::StorageFull`, never a generic I/O error, and no partial acknowledgement; at segment
//! creation (preallocation) it does not poison, so appends resume once space is freed,
//! without reopen; on a write (no preallocation) it poisons, and reopen recovers every ack.
//!
//! The workload is deterministic and single-threaded, so a fault-free dry run tells which
//! operation the k-th sync or write is (a group fsync, a segment header, the directory sync of
//! a new segment, a seal, an index file) and the test asserts that every kind was hit.
//! Seeds: `ANNAL_SEED` (default fixed) is printed and included in every failure message.

const FH: usize = annal::limits::FRAME_HEADER_BYTES;
const FH64: u64 = FH as u64;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, mpsc};

use annal::fs::{LockGuard, OpenMode, SimFs, Storage, StorageFile, TraceEvent};
use annal::{Appended, Error, Log, Options};

const DIR: &str = "/store";
/// Batches of the fault workload: about 150 group fsyncs plus five syncs per roll.
const BATCHES: usize = 150;

fn base_seed() -> u64 {
    let seed = std::env::var("ANNAL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x1A2B_3C4D);
    eprintln!("io_failures: ANNAL_SEED={seed}");
    seed
}

/// splitmix64, so per-case seeds derived from one base seed are unrelated.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Small segments so that a workload of 150 batches rolls about 17 times.
fn small_opts() -> Options {
    Options {
        segment_bytes: 4096,
        max_record_bytes: 1024,
        index_interval_bytes: 256,
        ..Options::default()
    }
}

fn open(sim: &SimFs, opts: &Options) -> Result<Log, Error> {
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    Log::open_with(storage, DIR, opts.clone())
}

// ---------------------------------------------------------------------------------------
// Workload and oracle
// ---------------------------------------------------------------------------------------

/// A payload that names its batch (`index`) and position, padded to `len` bytes.
fn payload(index: usize, j: usize, n: usize, len: usize) -> Vec<u8> {
    let mut p = format!("b{index}r{j}/{n}|").into_bytes();
    let fill = (index * 31 + j * 7) as u8;
    while p.len() < len {
        p.push(fill.wrapping_add(p.len() as u8));
    }
    p
}

/// Payload lengths of workload batch `b`: one to three records of 12..=200 bytes.
fn lengths(b: usize) -> Vec<usize> {
    let n = 1 + (b * 7 + 3) % 3;
    (0..n).map(|j| 12 + (b * 37 + j * 11) % 189).collect()
}

fn batch_with(index: usize, lens: &[usize]) -> Vec<Vec<u8>> {
    let n = lens.len();
    lens.iter().enumerate().map(|(j, &len)| payload(index, j, n, len)).collect()
}

fn batch(b: usize) -> Vec<Vec<u8>> {
    batch_with(b, &lengths(b))
}

/// Parses the `(index, j, n)` a payload names.
fn parse_id(p: &[u8]) -> Option<(usize, usize, usize)> {
    let bar = p.iter().position(|&c| c == b'|')?;
    let s = std::str::from_utf8(p.get(1..bar)?).ok()?;
    let (index, rest) = s.split_once('r')?;
    let (j, n) = rest.split_once('/')?;
    Some((index.parse().ok()?, j.parse().ok()?, n.parse().ok()?))
}

/// One append call as the model saw it.
#[derive(Debug)]
struct Attempt {
    index: usize,
    payloads: Vec<Vec<u8>>,
    result: Result<Appended, Error>,
}

impl Attempt {
    fn acked(&self) -> Option<Appended> {
        self.result.as_ref().ok().copied()
    }
}

fn acked_records(attempts: &[Attempt]) -> u64 {
    attempts.iter().filter_map(Attempt::acked).map(|a| u64::from(a.count)).sum()
}

/// Every record the log returns from seq 0 to its visible end, or the first read error.
fn read_all(log: &Log) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for r in log.cursor(0) {
        let r = r.map_err(|e| format!("cursor failed at seq {}: {e}", out.len()))?;
        if r.seq != out.len() as u64 {
            return Err(format!("cursor returned seq {} at position {}", r.seq, out.len()));
        }
        out.push(r.payload.to_vec());
    }
    if out.len() as u64 != log.visible_end() {
        return Err(format!(
            "cursor stopped at {} but visible_end is {}",
            out.len(),
            log.visible_end()
        ));
    }
    Ok(out)
}

/// The crash oracle: `recovered` (records by seq from 0) must consist of whole attempted
/// batches, each at most once and in attempt order, with byte-equal payloads, and must contain
/// every acknowledged batch at the seqs its append returned.
fn check_oracle(recovered: &[Vec<u8>], attempts: &[Attempt]) -> Result<(), String> {
    let by_index: HashMap<usize, &Attempt> = attempts.iter().map(|a| (a.index, a)).collect();
    let mut seen = BTreeSet::new();
    let mut last_index = None;
    let mut pos = 0usize;
    while pos < recovered.len() {
        let rec = &recovered[pos];
        let Some((index, j, n)) = parse_id(rec) else {
            return Err(format!("seq {pos}: payload was never written: {rec:?}"));
        };
        let Some(a) = by_index.get(&index) else {
            return Err(format!("seq {pos}: batch {index} was never attempted"));
        };
        if j != 0 || n != a.payloads.len() {
            return Err(format!("seq {pos}: batch {index} starts with record {j}/{n}"));
        }
        let end = pos + n;
        if recovered.get(pos..end) != Some(&a.payloads[..]) {
            return Err(format!("seq {pos}: batch {index} is not intact (partial or altered)"));
        }
        if !seen.insert(index) {
            return Err(format!("seq {pos}: batch {index} appears twice"));
        }
        if last_index.is_some_and(|l| l > index) {
            return Err(format!("seq {pos}: batch {index} follows batch {last_index:?}"));
        }
        last_index = Some(index);
        if let Some(ack) = a.acked()
            && ack.first != pos as u64
        {
            return Err(format!(
                "batch {index} was acked at seq {} but recovered at {pos}",
                ack.first
            ));
        }
        pos = end;
    }
    for a in attempts {
        if let Some(ack) = a.acked()
            && !seen.contains(&a.index)
        {
            return Err(format!(
                "acked batch {} (seqs {}..={}) was lost; {} records recovered",
                a.index,
                ack.first,
                ack.last(),
                recovered.len()
            ));
        }
    }
    Ok(())
}

/// Reads everything back from a reopened log and applies the oracle, plus a random-access
/// read of every acknowledged batch's first record.
fn verify(log: &Log, attempts: &[Attempt]) -> Result<(), String> {
    let recovered = read_all(log)?;
    check_oracle(&recovered, attempts)?;
    for a in attempts {
        if let Some(ack) = a.acked() {
            let r = log.read(ack.first).map_err(|e| format!("read({}): {e}", ack.first))?;
            if r.payload[..] != a.payloads[0][..] {
                return Err(format!("read({}) returned another payload", ack.first));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Which operation the k-th sync or write is
// ---------------------------------------------------------------------------------------

/// The operation a failing sync or write hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Site {
    /// The group fsync covering a batch.
    GroupSync,
    /// The fsync of a new segment's temp file after its header.
    HeaderSync,
    /// The directory fsync that makes a new segment's name durable.
    SegmentDirSync,
    /// The fsync of the old segment after its seal frame and cut.
    SealSync,
    /// The fsync of an index file's temp file.
    IndexSync,
    /// The directory fsync after an index file's rename.
    IndexDirSync,
    /// The write of a batch (group).
    BatchWrite,
    /// The write of a new segment's header.
    HeaderWrite,
    /// The write of a seal frame.
    SealWrite,
    /// The write of an index file.
    IndexWrite,
}

impl Site {
    /// `SimFs` models a failed directory fsync as a journal abort: the file system refuses
    /// every change until the next crash (remount).
    fn shuts_down_fs(self) -> bool {
        matches!(self, Site::SegmentDirSync | Site::IndexDirSync)
    }
}

fn is_index_path(p: &Path) -> bool {
    p.to_string_lossy().ends_with(".idx.tmp")
}

/// Classifies every sync call and every write call of a trace, in call order (the order
/// `fail_sync_at` and `fail_write_at` count them in).
fn classify(trace: &[TraceEvent]) -> (Vec<Site>, Vec<Site>) {
    let mut syncs = Vec::new();
    let mut writes = Vec::new();
    let mut last_write: HashMap<&Path, (u64, u64)> = HashMap::new();
    let mut last_sync_index = false;
    for ev in trace {
        match ev {
            TraceEvent::Write { path, offset, len } => {
                let site = if is_index_path(path) {
                    Site::IndexWrite
                } else if *offset == 0 && *len == 64 {
                    Site::HeaderWrite
                } else if *len == FH64 {
                    // A batch frame is at least FRAME_HEADER_BYTES + 16 bytes; only markers are FRAME_HEADER_BYTES.
                    Site::SealWrite
                } else {
                    Site::BatchWrite
                };
                writes.push(site);
                last_write.insert(path, (*offset, *len));
            }
            TraceEvent::SyncStart { path } => {
                last_sync_index = is_index_path(path);
                let site = if last_sync_index {
                    Site::IndexSync
                } else {
                    match last_write.get(path.as_path()) {
                        Some((0, 64)) => Site::HeaderSync,
                        Some((_, FH64)) => Site::SealSync,
                        _ => Site::GroupSync,
                    }
                };
                syncs.push(site);
            }
            TraceEvent::DirSync { .. } => {
                syncs.push(if last_sync_index { Site::IndexDirSync } else { Site::SegmentDirSync });
            }
            TraceEvent::SyncEnd { .. } | TraceEvent::Mark(_) => {}
        }
    }
    (syncs, writes)
}

/// Runs the workload without faults and classifies its syncs and writes.
fn dry_run(seed: u64) -> (Vec<Site>, Vec<Site>) {
    let sim = SimFs::new(seed);
    let log = open(&sim, &small_opts()).unwrap();
    let syncs_at_open = sim.sync_count() + sim.dir_sync_count();
    let writes_at_open = sim.write_count();
    sim.set_tracing(true);
    for b in 0..BATCHES {
        log.append(&batch(b)).unwrap();
    }
    let trace = sim.take_trace();
    sim.set_tracing(false);
    let (syncs, writes) = classify(&trace);
    assert_eq!(
        syncs.len() as u64,
        sim.sync_count() + sim.dir_sync_count() - syncs_at_open,
        "every sync call is in the trace"
    );
    assert_eq!(
        writes.len() as u64,
        sim.write_count() - writes_at_open,
        "every write call is in the trace"
    );
    (syncs, writes)
}

// ---------------------------------------------------------------------------------------
// One faulted run
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Sync,
    Write { short: bool },
}

/// How the store is reopened after the failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reopen {
    /// Power loss (`CrashMode::Random`), then reopen.
    AfterCrash,
    /// The process keeps running: drop the poisoned handle and reopen, append more, then
    /// lose power and reopen again.
    InProcess,
}

struct FaultRun {
    /// Violations of the data promises (acks lost, reads of unacknowledged data, open fails).
    safety: Vec<String>,
    /// Violations of the error protocol (poisoning, which batch fails, no ack after).
    poison: Vec<String>,
}

fn describe(r: &Result<Appended, Error>) -> String {
    match r {
        Ok(a) => format!("Ok(seqs {}..={})", a.first, a.last()),
        Err(e) => format!("Err({e})"),
    }
}

fn run_fault(fault: Fault, k: u64, site: Site, seed: u64, reopen: Reopen) -> FaultRun {
    let ctx = format!("{fault:?} #{k} ({site:?}), seed {seed}, {reopen:?}");
    let mut safety = Vec::new();
    let mut poison = Vec::new();
    let sim = SimFs::new(seed);
    let log = open(&sim, &small_opts()).unwrap();
    let calls = |sim: &SimFs| match fault {
        Fault::Sync => sim.sync_count() + sim.dir_sync_count(),
        Fault::Write { .. } => sim.write_count(),
    };
    let start = calls(&sim);
    match fault {
        Fault::Sync => sim.fail_sync_at(k),
        Fault::Write { short } => sim.fail_write_at(k, short),
    }
    let mut attempts = Vec::new();
    // The append during which the k-th call happened (single-threaded, so exact).
    let mut failing = None;
    for b in 0..BATCHES {
        let before = calls(&sim) - start;
        let result = log.append(&batch(b));
        let after = calls(&sim) - start;
        if (before..after).contains(&k) {
            failing = Some(b);
        }
        attempts.push(Attempt { index: b, payloads: batch(b), result });
    }
    let Some(failing) = failing else {
        panic!("{ctx}: the fault never fired; the workload differs from the dry run");
    };

    // The error protocol.
    let first_err = attempts.iter().position(|a| a.result.is_err());
    match first_err {
        None => poison.push(format!("{ctx}: no append failed")),
        Some(f) => {
            let e = attempts[f].result.as_ref().unwrap_err();
            if f != failing {
                poison.push(format!(
                    "{ctx}: the failure happened during append {failing} \
                    ({}) but the first error went to append {f}",
                    describe(&attempts[failing].result)
                ));
            }
            if !matches!(e, Error::Io { .. }) {
                poison.push(format!("{ctx}: the failing append got {e:?}, not the I/O error"));
            }
            let first = e.to_string();
            for a in &attempts[f + 1..] {
                match &a.result {
                    Err(Error::Poisoned { first_failure })
                        if first_failure.to_string() == first => {}
                    other => poison.push(format!(
                        "{ctx}: append {} after the failure returned \
                        {}, expected Poisoned naming {first}",
                        a.index,
                        describe(other)
                    )),
                }
            }
            match log.sync() {
                Err(Error::Poisoned { first_failure }) if first_failure.to_string() == first => {}
                other => poison.push(format!("{ctx}: sync after the failure returned {other:?}")),
            }
            if log.visible_end() != acked_records(&attempts) {
                poison.push(format!(
                    "{ctx}: visible_end {} but {} records acked",
                    log.visible_end(),
                    acked_records(&attempts)
                ));
            }
        }
    }
    // Readers of the live log see acknowledged records only (never the failed group).
    let live: Vec<&Attempt> = attempts.iter().filter(|a| a.acked().is_some()).collect();
    match read_all(&log) {
        Ok(recs) => {
            let want: Vec<Vec<u8>> = live.iter().flat_map(|a| a.payloads.clone()).collect();
            if recs != want {
                safety.push(format!(
                    "{ctx}: the live log shows {} records, {} were acked",
                    recs.len(),
                    want.len()
                ));
            }
        }
        Err(e) => safety.push(format!("{ctx}: reading the live log: {e}")),
    }

    match reopen {
        Reopen::AfterCrash => {
            let report = sim.crash();
            drop(log);
            let ctx = format!(
                "{ctx}, crash {:?}",
                (report.kept, report.dropped, report.torn, report.garbled)
            );
            reopen_and_check(&sim, &mut attempts, &ctx, &mut safety);
        }
        Reopen::InProcess => {
            drop(log);
            sim.clear_faults();
            let log = match open(&sim, &small_opts()) {
                Ok(log) => log,
                Err(e @ Error::Io { .. }) if fault == Fault::Sync && site.shuts_down_fs() => {
                    // The file system refuses changes until it is remounted: the reopen may
                    // fail, but must leave the store recoverable.
                    let ctx = format!("{ctx}, reopen refused ({e}), then crash");
                    sim.crash();
                    reopen_and_check(&sim, &mut attempts, &ctx, &mut safety);
                    return FaultRun { safety, poison };
                }
                Err(e) => {
                    safety.push(format!("{ctx}: in-process reopen failed: {e}"));
                    return FaultRun { safety, poison };
                }
            };
            if let Err(v) = verify(&log, &attempts) {
                safety.push(format!("{ctx}: after in-process reopen: {v}"));
            }
            for b in BATCHES..BATCHES + 3 {
                let result = log.append(&batch(b));
                if let Err(e) = &result {
                    safety.push(format!("{ctx}: append after in-process reopen: {e}"));
                }
                attempts.push(Attempt { index: b, payloads: batch(b), result });
            }
            let report = sim.crash();
            drop(log);
            let ctx = format!(
                "{ctx}, then crash {:?}",
                (report.kept, report.dropped, report.torn, report.garbled)
            );
            reopen_and_check(&sim, &mut attempts, &ctx, &mut safety);
        }
    }
    FaultRun { safety, poison }
}

/// Reopens after a crash, applies the oracle, then checks the reopened log takes a durable
/// append (recovery left it consistent).
fn reopen_and_check(sim: &SimFs, attempts: &mut Vec<Attempt>, ctx: &str, out: &mut Vec<String>) {
    sim.clear_faults();
    let log = match open(sim, &small_opts()) {
        Ok(log) => log,
        Err(e) => {
            out.push(format!("{ctx}: reopen failed: {e}"));
            return;
        }
    };
    if let Err(v) = verify(&log, attempts) {
        out.push(format!("{ctx}: after reopen: {v}"));
        return;
    }
    let b = attempts.len() + 1000;
    let result = log.append(&batch(b));
    if let Err(e) = &result {
        out.push(format!("{ctx}: append after reopen: {e}"));
    }
    attempts.push(Attempt { index: b, payloads: batch(b), result });
    sim.crash_drop_all();
    drop(log);
    match open(sim, &small_opts()) {
        Ok(log) => {
            if let Err(v) = verify(&log, attempts) {
                out.push(format!("{ctx}: after the second reopen: {v}"));
            }
        }
        Err(e) => out.push(format!("{ctx}: second reopen failed: {e}")),
    }
}

/// Runs every k of `sites` and collects the violations.
fn sweep(fault: Fault, sites: &[Site], seed: u64, reopen: Reopen) -> Sweep {
    let mut sweep = Sweep::default();
    for (k, &site) in sites.iter().enumerate() {
        let run = run_fault(fault, k as u64, site, mix(seed ^ k as u64), reopen);
        *sweep.hits.entry(site).or_default() += 1;
        sweep.safety.extend(run.safety);
        sweep.poison.extend(run.poison);
    }
    sweep
}

#[derive(Default)]
struct Sweep {
    hits: BTreeMap<Site, usize>,
    safety: Vec<String>,
    poison: Vec<String>,
}

/// Fails listing the violations, with a count per fault kind and site (the `Sync #k (Site)`
/// prefix of each message).
fn assert_none(what: &str, v: &[String]) {
    let mut by_site: BTreeMap<String, usize> = BTreeMap::new();
    for m in v {
        let key = m.split(", seed").next().unwrap_or(m);
        let kind = key.split(' ').next().unwrap_or("");
        let site = key.split(['(', ')']).nth(1).unwrap_or("");
        *by_site.entry(format!("{kind} {site}")).or_default() += 1;
    }
    assert!(
        v.is_empty(),
        "{what}: {} violations {by_site:?}; first 20:\n{}",
        v.len(),
        v.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}

fn assert_covers(hits: &BTreeMap<Site, usize>, want: &[Site]) {
    for s in want {
        assert!(hits.get(s).copied().unwrap_or(0) > 0, "workload never hit {s:?}: {hits:?}");
    }
}

const SYNC_SITES: [Site; 6] = [
    Site::GroupSync,
    Site::HeaderSync,
    Site::SegmentDirSync,
    Site::SealSync,
    Site::IndexSync,
    Site::IndexDirSync,
];
const WRITE_SITES: [Site; 4] =
    [Site::BatchWrite, Site::HeaderWrite, Site::SealWrite, Site::IndexWrite];

// ---------------------------------------------------------------------------------------
// Row 12: the k-th fsync fails
// ---------------------------------------------------------------------------------------

#[test]
fn every_failed_fsync_poisons_and_loses_no_ack() {
    let seed = base_seed();
    let (syncs, _) = dry_run(seed);
    assert!(syncs.len() >= 200, "only {} syncs in the workload", syncs.len());
    let s = sweep(Fault::Sync, &syncs, seed, Reopen::AfterCrash);
    eprintln!("fsync failure sites: {:?}", s.hits);
    assert_covers(&s.hits, &SYNC_SITES);
    assert_none("data lost or wrong after a failed fsync", &s.safety);
    assert_none("error protocol after a failed fsync", &s.poison);
}

// ---------------------------------------------------------------------------------------
// Row 13: the k-th write fails, with nothing or a prefix applied
// ---------------------------------------------------------------------------------------

#[test]
fn every_failed_write_poisons_and_loses_no_ack() {
    let seed = base_seed();
    let (_, writes) = dry_run(seed);
    for short in [false, true] {
        let s = sweep(Fault::Write { short }, &writes, seed ^ u64::from(short), Reopen::AfterCrash);
        eprintln!("write failure sites (short {short}): {:?}", s.hits);
        assert_covers(&s.hits, &WRITE_SITES);
        assert_none(&format!("data lost or wrong after a failed write (short {short})"), &s.safety);
        assert_none(&format!("error protocol after a failed write (short {short})"), &s.poison);
    }
}

/// Reopening in the same process is the documented way out of a poisoned log ("accepts no
/// more writes until reopened"). After a failed fsync the page cache still holds the unsynced
/// bytes (Linux marks them clean; `SimFs` keeps them in the current image but never makes
/// them durable), and a failed directory fsync forgets the new entries the same way. The
/// reopened log must not build on them: records acknowledged after the reopen must survive a
/// later power loss. (After a failed directory fsync `SimFs` refuses every change until a
/// crash, as a journaling file system does; there the reopen may fail, and the store must
/// still recover after the crash.)
#[test]
fn reopen_in_process_after_a_failure_keeps_later_acks() {
    let seed = base_seed() ^ 0x5151;
    let (syncs, writes) = dry_run(seed);
    let mut v = Vec::new();
    let s = sweep(Fault::Sync, &syncs, seed, Reopen::InProcess);
    v.extend(s.safety);
    for short in [false, true] {
        v.extend(sweep(Fault::Write { short }, &writes, seed, Reopen::InProcess).safety);
    }
    assert_none("acknowledged data lost after an in-process reopen", &v);
}

// ---------------------------------------------------------------------------------------
// A failed directory fsync on the read path, racing a roll
// ---------------------------------------------------------------------------------------

/// A storage that parks the writer inside the directory fsync that follows a new segment's
/// rename, and fails the first directory fsync of one chosen (reader) thread.
#[derive(Debug)]
struct Gate {
    sim: SimFs,
    armed: AtomicBool,
    renamed_segment: AtomicBool,
    parked: Mutex<Option<mpsc::Sender<()>>>,
    release: Mutex<Option<mpsc::Receiver<()>>>,
    reader: Mutex<Option<std::thread::ThreadId>>,
    reader_failed: AtomicBool,
}

impl Storage for Gate {
    fn open(&self, p: &Path, m: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        self.sim.open(p, m)
    }
    fn create_dir_all(&self, p: &Path) -> io::Result<()> {
        self.sim.create_dir_all(p)
    }
    fn read_dir(&self, p: &Path) -> io::Result<Vec<String>> {
        self.sim.read_dir(p)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.sim.rename(from, to)?;
        if to.to_string_lossy().ends_with(".seg") {
            self.renamed_segment.store(true, SeqCst);
        }
        Ok(())
    }
    fn remove_file(&self, p: &Path) -> io::Result<()> {
        self.sim.remove_file(p)
    }
    fn sync_dir(&self, p: &Path) -> io::Result<()> {
        if self.armed.load(SeqCst) && self.renamed_segment.swap(false, SeqCst) {
            self.armed.store(false, SeqCst);
            let parked = self.parked.lock().unwrap().take().unwrap();
            let release = self.release.lock().unwrap().take().unwrap();
            parked.send(()).unwrap();
            release.recv().unwrap();
        }
        let me = Some(std::thread::current().id());
        if *self.reader.lock().unwrap() == me && !self.reader_failed.swap(true, SeqCst) {
            // Nothing else runs now: the writer is parked (or, if the engine serialises
            // directory operations, finished its own).
            self.sim.fail_sync_at(0);
        }
        self.sim.sync_dir(p)
    }
    fn exists(&self, p: &Path) -> io::Result<bool> {
        self.sim.exists(p)
    }
    fn try_lock(&self, p: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        self.sim.try_lock(p)
    }
}

/// A reader rebuilding a missing index while the writer is between a new segment's rename and
/// its directory fsync must not make that segment's name non-durable. A reader that wrote
/// the index back (`write_atomic`) would fsync `segments/`, covering the writer's pending
/// rename; if that fsync failed and the failure were ignored, the rename would be forgotten,
/// the writer's own directory fsync would succeed with nothing left to do, and records acked
/// in the new segment would live in a file whose name is not durable (rows 12 and 16). The
/// test parks the writer at exactly that point, fails the reader's directory fsync if it
/// makes one, and checks every ack survives a power loss.
#[test]
fn a_reader_cannot_make_a_new_segment_non_durable() {
    let seed = base_seed();
    let sim = SimFs::new(seed);
    // Two sealed segments, then lose their index files so the first read rebuilds one.
    let log = open(&sim, &small_opts()).unwrap();
    let mut attempts = Vec::new();
    let mut b = 0;
    while log.stats().rolls < 2 {
        let result = log.append(&batch(b));
        attempts.push(Attempt { index: b, payloads: batch(b), result });
        b += 1;
    }
    sim.crash_drop_all();
    drop(log);
    let seg_dir = Path::new(DIR).join("segments");
    for name in sim.read_dir(&seg_dir).unwrap() {
        if name.ends_with(".idx") {
            sim.remove_file(&seg_dir.join(name)).unwrap();
        }
    }
    sim.sync_dir(&seg_dir).unwrap();

    let (parked_tx, parked_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let gate = Arc::new(Gate {
        sim: sim.clone(),
        armed: false.into(),
        renamed_segment: false.into(),
        parked: Some(parked_tx).into(),
        release: Some(release_rx).into(),
        reader: None.into(),
        reader_failed: false.into(),
    });
    let log = Log::open_with(Arc::clone(&gate) as Arc<dyn Storage>, DIR, small_opts()).unwrap();
    let rolls = log.stats().rolls;
    gate.armed.store(true, SeqCst);
    let writer = {
        let log = log.clone();
        let first = b;
        std::thread::spawn(move || {
            // Append until two batches landed after the roll (or one failed).
            let mut mine = Vec::new();
            let mut after_roll = 0;
            for b in first..first + 100 {
                let result = log.append(&batch(b));
                let failed = result.is_err();
                mine.push(Attempt { index: b, payloads: batch(b), result });
                after_roll += usize::from(log.stats().rolls > rolls);
                if failed || after_roll == 2 {
                    break;
                }
            }
            mine
        })
    };
    parked_rx.recv().unwrap();
    // The writer is parked between the new segment's rename and its directory fsync. A reader
    // now rebuilds segment 0's index, and its directory fsync fails.
    let (done_tx, done_rx) = mpsc::channel();
    let reader = {
        let log = log.clone();
        let gate = Arc::clone(&gate);
        std::thread::spawn(move || {
            *gate.reader.lock().unwrap() = Some(std::thread::current().id());
            let r = log.read(0).map(|r| r.payload.to_vec());
            let _ = done_tx.send(());
            r
        })
    };
    // Orchestration only (nothing is asserted on time): an engine that serialises index
    // writes with segment creation would block the reader behind the parked writer, so the
    // writer is released after the reader finished or after a grace period.
    let _ = done_rx.recv_timeout(std::time::Duration::from_secs(2));
    release_tx.send(()).unwrap();
    attempts.extend(writer.join().unwrap());
    let read = reader.join().unwrap().unwrap_or_else(|e| panic!("read(0) failed: {e}"));
    assert_eq!(read, attempts[0].payloads[0]);
    sim.clear_faults();
    let acked = attempts.iter().filter(|a| a.acked().is_some()).count();
    sim.crash_drop_all();
    drop(log);
    let ctx = format!(
        "seed {seed}: {acked} batches acked, reader's dir fsync failed: {}",
        gate.reader_failed.load(SeqCst)
    );
    match open(&sim, &small_opts()) {
        Ok(log) => {
            if let Err(v) = verify(&log, &attempts) {
                panic!("{ctx}: {v}");
            }
        }
        Err(e) => panic!("{ctx}; reopen after power loss failed: {e}"),
    }
}

// ---------------------------------------------------------------------------------------
// Row 14: the disk fills up
// ---------------------------------------------------------------------------------------

/// With preallocation (the default) a new segment reserves all its space when it is created,
/// so a full disk shows up at a roll: `segment::create` fails with `StorageFull`, the roll
/// changes nothing, and the engine deliberately does not poison (`commit.rs`, `roll`). The
/// batch that needed the new segment gets `StorageFull`; the log stays usable, and as soon as
/// space is freed the next append succeeds, without reopen, with the next dense seq. The
/// capacity is swept in 41-byte steps over a whole segment, so the limit also falls between
/// the new segment and the old segment's index file, a cache whose write may fail for lack of
/// space without making anything uncertain: that must not poison either. Then a crash and
/// reopen keep every acknowledged record and none of the failed batches.
#[test]
fn storage_full_at_a_roll_fails_cleanly_and_appends_resume() {
    let seed = base_seed();
    let opts = Options { segment_bytes: 8192, ..small_opts() };
    for j in 0..200u64 {
        let seed = mix(seed ^ j);
        let ctx = format!("capacity step {j}, seed {seed}");
        let sim = SimFs::new(seed);
        let log = open(&sim, &opts).unwrap();
        // Room for about two more segments, at a different byte boundary each time.
        sim.set_capacity(Some(sim.used_bytes() + 2 * 8192 + j * 41));
        let mut attempts = Vec::new();
        let mut next = 0usize;
        let full_at = loop {
            assert!(next < 400, "{ctx}: never ran out of space");
            let result = log.append(&batch(next));
            let failed = result.is_err();
            attempts.push(Attempt { index: next, payloads: batch(next), result });
            next += 1;
            if failed {
                break next - 1;
            }
        };
        let err = attempts[full_at].result.as_ref().unwrap_err();
        assert!(matches!(err, Error::StorageFull { .. }), "{ctx}: expected StorageFull: {err:?}");
        assert_eq!(log.visible_end(), acked_records(&attempts), "{ctx}: partial ack");
        assert_eq!(log.durable_head().map_or(0, |h| h + 1), acked_records(&attempts), "{ctx}");
        log.sync().unwrap_or_else(|e| panic!("{ctx}: StorageFull poisoned the log: {e}"));
        // Still full: a batch of the same shape fails the same way, and is not poisoned.
        let lens = lengths(full_at);
        let again = batch_with(next, &lens);
        let result = log.append(&again);
        assert!(matches!(result, Err(Error::StorageFull { .. })), "{ctx}: retry: {result:?}");
        attempts.push(Attempt { index: next, payloads: again, result });
        next += 1;
        // Free space: the same shape now succeeds, without reopen, at the next dense seq.
        sim.set_capacity(None);
        let retry = batch_with(next, &lens);
        let result = log.append(&retry);
        let a = result.as_ref().unwrap_or_else(|e| panic!("{ctx}: after freeing space: {e}"));
        assert_eq!(a.first, acked_records(&attempts), "{ctx}: seq gap after StorageFull");
        attempts.push(Attempt { index: next, payloads: retry, result });
        next += 1;
        let rolls = log.stats().rolls;
        for _ in 0..40 {
            let result = log.append(&batch(next));
            assert!(result.is_ok(), "{ctx}: append after freeing space: {result:?}");
            attempts.push(Attempt { index: next, payloads: batch(next), result });
            next += 1;
        }
        assert!(log.stats().rolls > rolls, "{ctx}: no roll after freeing space");
        verify(&log, &attempts).unwrap_or_else(|v| panic!("{ctx}: live log: {v}"));
        sim.crash();
        drop(log);
        let log = open(&sim, &opts).unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
        verify(&log, &attempts).unwrap_or_else(|v| panic!("{ctx}: after reopen: {v}"));
        assert_failed_absent(&log, &attempts, &ctx);
    }
}

/// A batch that failed with `StorageFull` before any of its bytes were written must not come
/// back after a crash (the oracle alone would allow an unacknowledged batch).
fn assert_failed_absent(log: &Log, attempts: &[Attempt], ctx: &str) {
    let recovered = read_all(log).unwrap();
    let present: BTreeSet<usize> =
        recovered.iter().filter_map(|p| parse_id(p)).map(|(i, _, _)| i).collect();
    for a in attempts {
        if matches!(a.result, Err(Error::StorageFull { .. })) {
            assert!(!present.contains(&a.index), "{ctx}: failed batch {} recovered", a.index);
        }
    }
}

/// Without preallocation the segment grows with every write, so the disk fills up in the
/// middle of a group write. A failed write leaves the file's tail unknown, so the engine
/// poisons: that batch gets `StorageFull`, every later append and sync `Poisoned` naming it.
/// After space is freed, reopening (in process, or after a power loss) recovers every
/// acknowledged record and appends work again.
#[test]
fn storage_full_on_a_write_without_preallocation_poisons_and_reopen_recovers() {
    let seed = base_seed() ^ 0xF11;
    // Large segments: no roll happens, so ENOSPC can only hit a batch write.
    let opts = Options { segment_bytes: 1 << 20, preallocate: false, ..small_opts() };
    for j in 0..24u64 {
        let seed = mix(seed ^ j);
        let in_process = j % 2 == 1;
        let ctx = format!("capacity step {j}, seed {seed}, in_process {in_process}");
        let sim = SimFs::new(seed);
        let log = open(&sim, &opts).unwrap();
        sim.set_capacity(Some(sim.used_bytes() + 4000 + j * 97));
        let mut attempts = Vec::new();
        let mut next = 0;
        while attempts.last().is_none_or(|a: &Attempt| a.result.is_ok()) {
            assert!(next < 400, "{ctx}: never ran out of space");
            let result = log.append(&batch(next));
            attempts.push(Attempt { index: next, payloads: batch(next), result });
            next += 1;
        }
        let err = attempts.last().unwrap().result.as_ref().unwrap_err().clone();
        assert!(matches!(err, Error::StorageFull { .. }), "{ctx}: expected StorageFull: {err:?}");
        assert_eq!(log.visible_end(), acked_records(&attempts), "{ctx}: partial ack");
        for _ in 0..3 {
            let result = log.append(&batch(next));
            match &result {
                Err(Error::Poisoned { first_failure }) => {
                    assert_eq!(first_failure.to_string(), err.to_string(), "{ctx}");
                }
                other => panic!("{ctx}: expected Poisoned after StorageFull: {other:?}"),
            }
            attempts.push(Attempt { index: next, payloads: batch(next), result });
            next += 1;
        }
        assert!(matches!(log.sync(), Err(Error::Poisoned { .. })), "{ctx}: sync not poisoned");
        sim.set_capacity(None);
        if in_process {
            drop(log);
            let log = open(&sim, &opts).unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
            verify(&log, &attempts).unwrap_or_else(|v| panic!("{ctx}: after reopen: {v}"));
            for _ in 0..5 {
                let result = log.append(&batch(next));
                assert!(result.is_ok(), "{ctx}: append after reopen: {result:?}");
                attempts.push(Attempt { index: next, payloads: batch(next), result });
                next += 1;
            }
            sim.crash();
            drop(log);
        } else {
            sim.crash();
            drop(log);
        }
        let log = open(&sim, &opts).unwrap_or_else(|e| panic!("{ctx}: reopen after crash: {e}"));
        verify(&log, &attempts).unwrap_or_else(|v| panic!("{ctx}: after crash: {v}"));
        assert_failed_absent(&log, &attempts, &ctx);
    }
}

/// The oracle must be able to fail: it rejects a lost ack, a torn batch, a duplicate, a
/// reordering and a foreign record.
#[test]
fn oracle_rejects_what_it_must() {
    let attempts: Vec<Attempt> = (0..3)
        .map(|b| Attempt {
            index: b,
            payloads: batch(b),
            result: Ok(Appended {
                first: (0..b).map(|x| batch(x).len() as u64).sum(),
                count: batch(b).len() as u32,
            }),
        })
        .collect();
    let all: Vec<Vec<u8>> = attempts.iter().flat_map(|a| a.payloads.clone()).collect();
    assert!(check_oracle(&all, &attempts).is_ok());
    assert!(check_oracle(&all[..all.len() - 1], &attempts).is_err(), "torn last batch");
    let n0 = attempts[0].payloads.len();
    assert!(check_oracle(&all[n0..], &attempts).is_err(), "lost first batch");
    let mut dup = all.clone();
    dup.extend(attempts[2].payloads.clone());
    assert!(check_oracle(&dup, &attempts).is_err(), "duplicate");
    let mut altered = all.clone();
    altered[1][3] ^= 1;
    assert!(check_oracle(&altered, &attempts).is_err(), "altered payload");
    let n1 = attempts[1].payloads.len();
    let mut reordered = attempts[1].payloads.clone();
    reordered.extend(attempts[0].payloads.clone());
    reordered.extend(all[n0 + n1..].to_vec());
    assert!(check_oracle(&reordered, &attempts).is_err(), "reordered batches");
    let mut foreign = all.clone();
    foreign.push(b"x".to_vec());
    assert!(check_oracle(&foreign, &attempts).is_err(), "foreign record");
}
