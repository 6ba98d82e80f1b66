//! Power loss at random points of the raft log storage never breaks its invariants: after
//! every recovery the vote never went backwards (it is at least the last vote `save_vote`
//! acknowledged), no entry whose flush callback reported success is lost (unless a later
//! truncate or purge that covers it was attempted), the log is contiguous, and every entry in
//! it is one that was appended, with its log id.
//!
//! Each case runs epochs on a [`SimFs`]: open `LogStore`, random appends, truncates, purges
//! and vote saves, and a power loss either at a chosen persistence call *inside* one of them
//! (a write, fsync, create, rename, unlink or directory fsync, also on the flusher thread,
//! intercepted by a storage wrapper that crashes the `SimFs` instead of performing it) or
//! after the last one. The crash keeps, drops, tears or garbles every unsynced write
//! (`CrashMode::Random`), or keeps or drops all of them. A failure prints the seed and the
//! history of the case. `ANNAL_RAFT_CRASH_CASES` sets the number of cases (default 256).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use annal::Options;
use annal::fs::{CrashMode, LockGuard, OpenMode, Preallocation, SimFs, Storage, StorageFile};
use annal_raft::{LogStore, TypeConfig};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, Vote};

const DIR: &str = "/raft-log";

/// A small deterministic generator (xorshift64*), so a seed replays a case.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One process lifetime on the simulated machine: the `k`-th persistence call crashes it.
#[derive(Debug)]
struct Ctl {
    sim: SimFs,
    mode: CrashMode,
    remaining: Mutex<Option<u64>>,
    dead: AtomicBool,
}

impl Ctl {
    fn alive(&self) -> io::Result<()> {
        if self.dead.load(Ordering::SeqCst) {
            return Err(io::Error::other("test: the machine lost power"));
        }
        Ok(())
    }
    fn kill(&self) {
        if !self.dead.swap(true, Ordering::SeqCst) {
            self.sim.crash_with(self.mode);
        }
    }
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
struct CrashFs(Arc<Ctl>);

#[derive(Debug)]
struct CrashFile(Box<dyn StorageFile>, Arc<Ctl>);

impl StorageFile for CrashFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.1.alive()?;
        self.0.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.1.tick()?;
        self.0.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.1.tick()?;
        self.0.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        self.1.alive()?;
        self.0.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.1.tick()?;
        self.0.set_len(len)
    }
    fn preallocate(&self, len: u64) -> io::Result<Preallocation> {
        self.1.tick()?;
        self.0.preallocate(len)
    }
    fn map(&self) -> io::Result<Option<memmap2::Mmap>> {
        self.1.alive()?;
        self.0.map()
    }
}

impl Storage for CrashFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        if mode == OpenMode::CreateNew {
            self.0.tick()?
        } else {
            self.0.alive()?
        }
        Ok(Box::new(CrashFile(self.0.sim.open(path, mode)?, Arc::clone(&self.0))))
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
        self.0.tick()?;
        self.0.sim.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.0.tick()?;
        self.0.sim.remove_file(path)
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.0.tick()?;
        self.0.sim.remove_dir(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.0.tick()?;
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

fn lid(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 0), index)
}

/// What the test knows: what was attempted, and what the storage acknowledged.
#[derive(Default, Debug)]
struct Model {
    /// Every log id ever handed to `append`.
    attempted: BTreeSet<LogId<u64>>,
    /// Entries whose flush callback reported success and that no later attempted truncate
    /// or purge covers.
    acked: BTreeMap<u64, LogId<u64>>,
    /// Every vote handed to `save_vote`.
    votes: Vec<Vote<u64>>,
    /// The last vote `save_vote` acknowledged.
    vote: Option<Vote<u64>>,
    /// The highest purge point attempted, and the highest acknowledged.
    purge_attempted: Option<LogId<u64>>,
    purge_acked: Option<LogId<u64>>,
}

struct Case {
    seed: u64,
    history: Vec<String>,
}

impl Case {
    fn fail(&self, what: String) -> ! {
        panic!("seed {}: {what}\nhistory:\n  {}", self.seed, self.history.join("\n  "));
    }
}

fn opts() -> Options {
    // Small segments, so appends roll and purges remove whole segments.
    Options { segment_bytes: 4096, max_record_bytes: 1024, ..Options::default() }
}

fn open(ctl: &Arc<Ctl>) -> annal::Result<LogStore> {
    let storage: Arc<dyn Storage> = Arc::new(CrashFs(Arc::clone(ctl)));
    LogStore::open_with(storage, DIR, opts())
}

/// One random operation; returns false once the storage refused (after the power loss).
async fn step(log: &mut LogStore, rng: &mut Rng, m: &mut Model, c: &mut Case) -> bool {
    let st = log.get_log_state().await;
    let Ok(st) = st else { return false };
    let last = st.last_log_id.map_or(0, |l| l.index);
    let first = st.last_purged_log_id.map_or(1, |p| p.index + 1);
    let term = m.vote.map_or(1, |v| v.leader_id().term);
    match rng.below(10) {
        0..=5 => {
            let n = 1 + rng.below(6);
            let entries: Vec<Entry<TypeConfig>> = (last + 1..=last + n)
                .map(|i| Entry { log_id: lid(term, i), payload: EntryPayload::Blank })
                .collect();
            m.attempted.extend(entries.iter().map(|e| e.log_id));
            let r = log.blocking_append(entries.clone()).await;
            c.history.push(format!(
                "append {}..={} term {term}: {}",
                last + 1,
                last + n,
                r.is_ok()
            ));
            if r.is_err() {
                return false;
            }
            m.acked.extend(entries.iter().map(|e| (e.log_id.index, e.log_id)));
        }
        6 | 7 if last >= first => {
            let at = first + rng.below(last - first + 1);
            // Attempted: the entries from `at` may be gone whatever the outcome.
            m.acked.retain(|&i, _| i < at);
            let r = log.truncate(lid(term, at)).await;
            c.history.push(format!("truncate {at}: {}", r.is_ok()));
            if r.is_err() {
                return false;
            }
        }
        8 if last >= first => {
            let upto = first + rng.below(last - first + 1);
            let Some(&id) = m.acked.get(&upto).or(m.attempted.iter().find(|l| l.index == upto))
            else {
                return true;
            };
            m.acked.retain(|&i, _| i > upto);
            m.purge_attempted = m.purge_attempted.max(Some(id));
            let r = log.purge(id).await;
            c.history.push(format!("purge {upto}: {}", r.is_ok()));
            if r.is_err() {
                return false;
            }
            m.purge_acked = m.purge_acked.max(Some(id));
        }
        _ => {
            let v = Vote::new(term + 1, 1);
            m.votes.push(v);
            let r = log.save_vote(&v).await;
            c.history.push(format!("save_vote term {}: {}", term + 1, r.is_ok()));
            if r.is_err() {
                return false;
            }
            m.vote = Some(v);
        }
    }
    true
}

/// The invariants, on a freshly recovered log; then the model learns what survived.
async fn check(log: &mut LogStore, m: &mut Model, c: &Case) {
    let st = log.get_log_state().await.unwrap_or_else(|e| c.fail(format!("log state: {e}")));
    let vote = log.read_vote().await.unwrap_or_else(|e| c.fail(format!("read vote: {e}")));
    if vote < m.vote {
        c.fail(format!("vote went backwards: {vote:?} < acknowledged {:?}", m.vote));
    }
    if let Some(v) = vote
        && !m.votes.contains(&v)
    {
        c.fail(format!("vote {v:?} was never saved"));
    }
    let purged = st.last_purged_log_id;
    if purged < m.purge_acked || purged > m.purge_attempted {
        c.fail(format!("purged {purged:?}, acked {:?}", m.purge_acked));
    }
    let entries = log
        .try_get_log_entries(0..u64::MAX)
        .await
        .unwrap_or_else(|e| c.fail(format!("read entries: {e}")));
    let first = purged.map_or(1, |p| p.index + 1);
    for (k, e) in entries.iter().enumerate() {
        if e.log_id.index != first + k as u64 {
            c.fail(format!("not contiguous from {first}: entry {k} is {}", e.log_id));
        }
        if !m.attempted.contains(&e.log_id) {
            c.fail(format!("entry {} was never appended", e.log_id));
        }
    }
    if st.last_log_id != entries.last().map(|e| e.log_id).or(purged) {
        c.fail(format!("last log id {:?} disagrees with the entries", st.last_log_id));
    }
    for (&i, &id) in &m.acked {
        if i >= first && entries.get((i - first) as usize).map(|e| e.log_id) != Some(id) {
            c.fail(format!("acknowledged entry {id} lost"));
        }
    }
    // What recovered is durable now: it is what later epochs must keep.
    m.acked = entries.iter().map(|e| (e.log_id.index, e.log_id)).collect();
    m.vote = vote;
    m.purge_acked = purged;
}

/// Counts of what the cases did, printed at the end (a run that crashed nothing or acked
/// nothing would prove nothing).
#[derive(Default, Debug)]
struct Tally {
    acked_appends: u64,
    failed_ops: u64,
    truncates: u64,
    purges: u64,
    votes: u64,
    open_crashes: u64,
}

async fn run_case(seed: u64, tally: &mut Tally) {
    let sim = SimFs::new(seed);
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut m = Model::default();
    let mut c = Case { seed, history: Vec::new() };
    for epoch in 0..4 {
        let mode = match rng.below(4) {
            0 => CrashMode::KeepAll,
            1 => CrashMode::DropAll,
            _ => CrashMode::Random,
        };
        let arm = if rng.below(5) == 0 { None } else { Some(rng.below(60)) };
        let from = c.history.len();
        c.history.push(format!("epoch {epoch}: crash at call {arm:?}, {mode:?}"));
        let ctl = Arc::new(Ctl {
            sim: sim.clone(),
            mode,
            remaining: Mutex::new(arm),
            dead: AtomicBool::new(false),
        });
        // The crash may hit the open itself; the next open (unarmed) recovers.
        match open(&ctl) {
            Ok(mut log) => {
                for _ in 0..12 {
                    if !step(&mut log, &mut rng, &mut m, &mut c).await {
                        tally.failed_ops += 1;
                        break;
                    }
                }
                ctl.kill();
                drop(log);
            }
            Err(_) => tally.open_crashes += 1,
        }
        ctl.kill();
        let calm = Arc::new(Ctl {
            sim: sim.clone(),
            mode,
            remaining: Mutex::new(None),
            dead: AtomicBool::new(false),
        });
        let mut log = open(&calm).unwrap_or_else(|e| c.fail(format!("recovery open: {e}")));
        check(&mut log, &mut m, &c).await;
        for h in c.history[from..].iter().filter(|h| h.ends_with("true")) {
            let n = |p: &str| u64::from(h.starts_with(p));
            tally.acked_appends += n("append");
            tally.truncates += n("truncate");
            tally.purges += n("purge");
            tally.votes += n("save_vote");
        }
        // A clean close between epochs, so the next one starts from the checked state.
        drop(log);
    }
}

#[test]
fn power_loss_never_breaks_the_raft_log_invariants() {
    let cases: u64 =
        std::env::var("ANNAL_RAFT_CRASH_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut tally = Tally::default();
    for seed in 1..=cases {
        rt.block_on(run_case(seed, &mut tally));
    }
    eprintln!("{cases} cases: {tally:?}");
    assert!(tally.acked_appends > 0 && tally.failed_ops > 0, "the cases exercised nothing");
}
