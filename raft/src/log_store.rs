//! The raft log on an annal [`Log`]: one entry per record (JSON), one batch per entry so
//! that a truncate can cut at any entry (annal batches are atomic).
//!
//! **Group commit off openraft's core.** `append` only queues: it puts the entries in
//! memory (`pending`, where readers find them at once, as openraft requires of `append`'s
//! return) and hands openraft's flush callback to the flusher thread. The flusher takes
//! every message queued, writes every pending entry to the log (which runs under
//! `Durability::None`: a write, no fsync), syncs once, drops the synced entries from
//! `pending`, and only then calls the callbacks, with `Ok`. So one fsync covers as many
//! `append` calls as arrive while the previous one runs, and no async task blocks in an
//! fsync. (openraft 0.9.25's core itself still awaits each callback before its next command,
//! `append_to_log` in its `raft_core.rs`, so today each round holds one `append` call; an
//! openraft that pipelines appends gets group commit across calls from this same code.)
//! Each entry is its own annal batch, written by the flusher one after the other, so that a
//! truncate can cut at any entry. A failed write or fsync poisons the annal log (it is never
//! retried); the flusher
//! reports the error to every callback of that round and every later one, and every later
//! call fails: nothing is acknowledged after a failed fsync.
//!
//! `truncate`, `purge`, `save_vote` and a change of generation first drain the flusher (wait
//! until everything queued before them is durable and the flusher holds no handle of the
//! log), so they never race a queued write and `Log::truncate_from`/`purge_before` find the
//! log unshared.
//!
//! Directory layout: `raft.meta` (vote, committed log id, last purged log id, and which
//! generation directory holds the entries at which index offset) and `log-<generation>/`, an
//! annal log whose seq `s` holds the entry of raft index `offset + s`. A new generation starts
//! when an append does not follow the entries there (the first append, or an append after a
//! snapshot was installed beyond the log's end); it is committed by the atomic replace of
//! `raft.meta`, and older generation directories are removed after that and at open. All
//! file I/O goes through the [`Storage`] given to [`LogStore::open_with`].

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use annal::fs::{StdFs, Storage};
use annal::{Durability, Log, Options};
use crossbeam_channel::{Receiver, Sender};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, LogId, LogState, RaftLogId, RaftLogReader, StorageError, StorageIOError, Vote,
};
use serde::{Deserialize, Serialize};

use crate::TypeConfig;
use crate::meta;

type Entry = openraft::Entry<TypeConfig>;
type SResult<T> = Result<T, StorageError<u64>>;

const META_FILE: &str = "raft.meta";

/// What `raft.meta` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Meta {
    generation: u64,
    offset: u64,
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
    last_purged: Option<LogId<u64>>,
}

/// `save_committed` replaces `raft.meta` when the committed index has advanced this far
/// since it was last written (openraft allows the stored value to lag: it only decides how
/// much a restarted node applies before it hears from a leader).
pub const COMMITTED_PERSIST_EVERY_ENTRIES: u64 = 1024;

/// What the flusher thread is asked to do, in order.
enum Msg {
    /// Make every entry queued so far durable, then call this callback.
    Flush(LogFlushed<TypeConfig>),
    /// Make every entry queued so far durable (or fail), then answer.
    Barrier(Sender<()>),
}

struct Inner {
    /// The committed log id as openraft last reported it (`meta.committed` is what is on
    /// disk).
    committed: Option<LogId<u64>>,
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    opts: Options,
    meta: Meta,
    /// `None` only after a failed truncate or purge left no open log (every later call fails).
    log: Option<Log>,
    /// Entries handed to `append` that are not yet durable, contiguous and in index order,
    /// following the log's durable entries. The first ones may already be written to the
    /// log (not yet synced): readers take an index from the log when it holds it.
    pending: VecDeque<Entry>,
    /// Whether the flusher holds a handle of the log (between taking the pending entries and
    /// dropping its handle after the sync).
    in_flight: bool,
    /// Why the flusher failed, once it has: the log is poisoned until reopened.
    failed: Option<String>,
    /// The flusher's queue and thread; `None` only while dropping.
    flusher: Option<(Sender<Msg>, std::thread::JoinHandle<()>)>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Disconnecting the queue ends the flusher after the messages already queued (their
        // callbacks are dropped: openraft is shutting down). Joining it means the log is
        // closed, and its directory unlocked, once the last `LogStore` is gone. The flusher
        // itself can hold the last reference for an instant: it must not join itself.
        if let Some((tx, handle)) = self.flusher.take() {
            drop(tx);
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
    }
}

/// The raft log storage. Clones share one log.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

/// A reader of the raft log, for openraft's replication tasks.
#[derive(Clone)]
pub struct LogReader {
    inner: Arc<Mutex<Inner>>,
}

fn io_err(e: &dyn std::error::Error) -> AnyError {
    AnyError::error(e.to_string())
}

fn generation_dir(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("log-{generation}"))
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|e| e.into_inner())
}

impl LogStore {
    /// Opens (creating if needed) the raft log in `dir` on the real file system, with annal
    /// `opts` for its segments (their durability is replaced by `Durability::None`: the
    /// flusher syncs once per round of `append` calls).
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<LogStore, annal::Error> {
        LogStore::open_with(Arc::new(StdFs), dir, opts)
    }

    /// [`LogStore::open`] on the given storage (for tests: [`annal::fs::SimFs`]). Starts the
    /// flusher thread, which ends when the last clone of this store is dropped.
    pub fn open_with(
        storage: Arc<dyn Storage>,
        dir: impl AsRef<Path>,
        opts: Options,
    ) -> Result<LogStore, annal::Error> {
        let dir = dir.as_ref().to_path_buf();
        let io = |op, e| crate::io_error(op, &dir, e);
        storage.create_dir_all(&dir).map_err(|e| io("create dir", e))?;
        let meta_path = dir.join(META_FILE);
        let meta: Meta = meta::load(storage.as_ref(), &meta_path)
            .map_err(|e| io("read raft.meta", e))?
            .unwrap_or_default();
        // Generations other than the current one are leftovers of a change of generation.
        remove_other_generations(storage.as_ref(), &dir, meta.generation)
            .map_err(|e| io("remove old generations", e))?;
        let opts = Options { durability: Durability::None, ..opts };
        let log = Log::open_with(
            Arc::clone(&storage),
            generation_dir(&dir, meta.generation),
            opts.clone(),
        )?;
        let inner = Arc::new(Mutex::new(Inner {
            committed: meta.committed,
            dir: dir.clone(),
            storage,
            opts,
            meta,
            log: Some(log),
            pending: VecDeque::new(),
            in_flight: false,
            failed: None,
            flusher: None,
        }));
        let (tx, rx) = crossbeam_channel::unbounded();
        let weak = Arc::downgrade(&inner);
        let handle = std::thread::Builder::new()
            .name("annal-raft-flusher".into())
            .spawn(move || run_flusher(&rx, &weak))
            .map_err(|e| io("start flusher thread", e))?;
        lock(&inner).flusher = Some((tx, handle));
        Ok(LogStore { inner })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Waits until every entry queued before this call is durable and the flusher holds no
    /// handle of the log, and returns the lock with nothing in flight. Fails if the flusher
    /// failed (the log is poisoned).
    fn drain(&self) -> SResult<MutexGuard<'_, Inner>> {
        loop {
            let (done_tx, done_rx) = crossbeam_channel::bounded(1);
            {
                let inner = self.lock();
                inner.check_failed()?;
                if inner.pending.is_empty() && !inner.in_flight {
                    return Ok(inner);
                }
                inner.send(Msg::Barrier(done_tx))?;
            }
            // The flusher answers after the round that makes the entries queued so far
            // durable; a clone may have queued more meanwhile, hence the loop.
            if done_rx.recv().is_err() {
                return Err(flusher_gone());
            }
        }
    }
}

fn flusher_gone() -> StorageError<u64> {
    StorageIOError::write_logs(AnyError::error("the raft log's flusher thread is gone")).into()
}

fn remove_other_generations(storage: &dyn Storage, dir: &Path, keep: u64) -> std::io::Result<()> {
    for name in storage.read_dir(dir)? {
        let Some(n) = name.strip_prefix("log-") else { continue };
        if n.parse::<u64>().is_ok_and(|g| g != keep) {
            meta::remove_tree(storage, &dir.join(&name))?;
        }
    }
    Ok(())
}

/// The flusher thread: one round per batch of queued messages.
fn run_flusher(rx: &Receiver<Msg>, inner: &Weak<Mutex<Inner>>) {
    while let Ok(first) = rx.recv() {
        let mut msgs = vec![first];
        msgs.extend(rx.try_iter());
        // The strong reference lives for the round only, so the store can be dropped.
        let result = match inner.upgrade() {
            Some(inner) => flush_round(&inner),
            None => Err("the raft log store was dropped".to_string()),
        };
        for msg in msgs {
            match msg {
                Msg::Flush(callback) => {
                    callback.log_io_completed(result.clone().map_err(std::io::Error::other));
                }
                Msg::Barrier(done) => {
                    let _ = done.send(());
                }
            }
        }
    }
}

/// Writes every pending entry, syncs, and drops the synced ones from `pending`. The lock is
/// not held while writing and syncing, so `append` and readers go on meanwhile.
fn flush_round(inner: &Mutex<Inner>) -> Result<(), String> {
    let (log, offset, batch) = {
        let mut g = lock(inner);
        if let Some(why) = &g.failed {
            return Err(why.clone());
        }
        let Some(log) = g.log.clone() else {
            let why = "the raft log was lost by a failed truncate or purge".to_string();
            g.failed = Some(why.clone());
            return Err(why);
        };
        let written = g.meta.offset + log.visible_end();
        let batch: Vec<Entry> =
            g.pending.iter().filter(|e| e.log_id.index >= written).cloned().collect();
        g.in_flight = true;
        (log, g.meta.offset, batch)
    };
    let outcome = write_and_sync(&log, offset, &batch);
    // Only the flusher writes to the log, so after the sync everything it holds is durable.
    let durable_end = offset + log.visible_end();
    drop(log);
    let mut g = lock(inner);
    g.in_flight = false;
    match outcome {
        Ok(()) => {
            while g.pending.front().is_some_and(|e| e.log_id.index < durable_end) {
                g.pending.pop_front();
            }
            Ok(())
        }
        Err(why) => {
            g.failed = Some(why.clone());
            Err(why)
        }
    }
}

fn write_and_sync(log: &Log, offset: u64, batch: &[Entry]) -> Result<(), String> {
    for entry in batch {
        let index = entry.log_id.index;
        let bytes = serde_json::to_vec(entry).map_err(|e| format!("encode entry {index}: {e}"))?;
        let appended = log.append(&[bytes]).map_err(|e| format!("write entry {index}: {e}"))?;
        if offset + appended.first != index {
            // `append` checks that entries follow; this would be a bug of this module.
            return Err(format!("entry {index} landed at index {}", offset + appended.first));
        }
    }
    log.sync().map_err(|e| format!("sync the raft log: {e}"))
}

impl Inner {
    fn log(&self) -> SResult<&Log> {
        self.log
            .as_ref()
            .ok_or_else(|| StorageIOError::read_logs(AnyError::error("log lost")).into())
    }

    fn check_failed(&self) -> SResult<()> {
        match &self.failed {
            Some(why) => Err(StorageIOError::write_logs(AnyError::error(why.clone())).into()),
            None => Ok(()),
        }
    }

    fn send(&self, msg: Msg) -> SResult<()> {
        let Some((tx, _)) = &self.flusher else { return Err(flusher_gone()) };
        tx.send(msg).map_err(|_| flusher_gone())
    }

    /// The first index still held (after the purged ones).
    fn first_index(&self) -> SResult<u64> {
        let physical = self.meta.offset + self.log()?.first_seq();
        let logical = self.meta.last_purged.map_or(0, |l| l.index + 1);
        Ok(physical.max(logical))
    }

    /// One past the last index written to the log (durable or not).
    fn log_end(&self) -> SResult<u64> {
        Ok(self.meta.offset + self.log()?.visible_end())
    }

    /// One past the last index held, pending entries included.
    fn end_index(&self) -> SResult<u64> {
        let log_end = self.log_end()?;
        Ok(self.pending.back().map_or(log_end, |e| (e.log_id.index + 1).max(log_end)))
    }

    /// Replaces `raft.meta`, with the latest committed log id.
    fn save_meta(&mut self) -> std::io::Result<()> {
        self.meta.committed = self.committed;
        meta::store(self.storage.as_ref(), &self.dir.join(META_FILE), &self.meta)
    }

    fn read_range(&self, start: u64, end: u64) -> SResult<Vec<Entry>> {
        let start = start.max(self.first_index()?);
        let end = end.min(self.end_index()?);
        if start >= end {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity((end - start) as usize);
        // From the log what it holds, from `pending` the rest (the same entries where both
        // hold one: the flusher wrote it but has not synced it yet).
        let log_end = self.log_end()?.min(end);
        if start < log_end {
            let log = self.log()?;
            for rec in log.cursor(start - self.meta.offset).take((log_end - start) as usize) {
                let rec = rec.map_err(|e| StorageIOError::read_logs(io_err(&e)))?;
                let entry: Entry = serde_json::from_slice(&rec.payload)
                    .map_err(|e| StorageIOError::read_logs(io_err(&e)))?;
                out.push(entry);
            }
        }
        let from = start.max(log_end);
        out.extend(self.pending.iter().filter(|e| (from..end).contains(&e.log_id.index)).cloned());
        if out.len() as u64 != end - start {
            let e = std::io::Error::other(format!(
                "read {} entries of {start}..{end}: the log has a hole",
                out.len()
            ));
            return Err(StorageIOError::read_logs(io_err(&e)).into());
        }
        Ok(out)
    }

    /// Starts a new, empty generation whose first entry will have index `offset`. Only with
    /// the flusher drained (nothing pending, no handle of the old log elsewhere).
    fn new_generation(&mut self, offset: u64) -> std::io::Result<()> {
        let old = self.meta.generation;
        let generation = old + 1;
        let gdir = generation_dir(&self.dir, generation);
        if self.storage.exists(&gdir)? {
            meta::remove_tree(self.storage.as_ref(), &gdir)?;
        }
        let log = Log::open_with(Arc::clone(&self.storage), &gdir, self.opts.clone())
            .map_err(std::io::Error::other)?;
        let mut meta = self.meta.clone();
        meta.generation = generation;
        meta.offset = offset;
        meta.committed = self.committed;
        meta::store(self.storage.as_ref(), &self.dir.join(META_FILE), &meta)?;
        self.meta = meta;
        if let Some(old_log) = self.log.replace(log) {
            // Its entries were all purged or truncated: nothing of it is needed any more.
            let _ = old_log.close();
        }
        meta::remove_tree(self.storage.as_ref(), &generation_dir(&self.dir, old))
    }
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + openraft::OptionalSend>(
        &mut self,
        range: RB,
    ) -> SResult<Vec<Entry>> {
        let (start, end) = bounds(&range);
        lock(&self.inner).read_range(start, end)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + openraft::OptionalSend>(
        &mut self,
        range: RB,
    ) -> SResult<Vec<Entry>> {
        let (start, end) = bounds(&range);
        self.lock().read_range(start, end)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> SResult<LogState<TypeConfig>> {
        let inner = self.lock();
        let (first, end) = (inner.first_index()?, inner.end_index()?);
        let last = if end > first {
            let e = inner.read_range(end - 1, end)?;
            e.last().map(|e| *e.get_log_id())
        } else {
            None
        };
        let last_purged_log_id = inner.meta.last_purged;
        Ok(LogState { last_purged_log_id, last_log_id: last.or(last_purged_log_id) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader { inner: Arc::clone(&self.inner) }
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> SResult<()> {
        // Drained first: the vote is never durable ahead of appends queued before it.
        let mut inner = self.drain()?;
        let old = inner.meta.vote.replace(*vote);
        inner.save_meta().map_err(|e| {
            inner.meta.vote = old;
            StorageIOError::write_vote(io_err(&e)).into()
        })
    }

    async fn read_vote(&mut self) -> SResult<Option<Vote<u64>>> {
        Ok(self.lock().meta.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> SResult<()> {
        let mut inner = self.lock();
        inner.committed = committed;
        let on_disk = inner.meta.committed.map_or(0, |l| l.index);
        let now = committed.map_or(0, |l| l.index);
        if now < on_disk + COMMITTED_PERSIST_EVERY_ENTRIES && inner.meta.committed.is_some() {
            return Ok(());
        }
        let old = std::mem::replace(&mut inner.meta.committed, committed);
        inner.save_meta().map_err(|e| {
            inner.meta.committed = old;
            StorageIOError::write(io_err(&e)).into()
        })
    }

    async fn read_committed(&mut self) -> SResult<Option<LogId<u64>>> {
        Ok(self.lock().committed)
    }

    /// Queues the entries (readable at once) and returns; the flusher calls `callback` once
    /// they are durable (see the module docs).
    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> SResult<()>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut inner = self.lock();
        inner.check_failed()?;
        if let Some(first) = entries.first() {
            let index = first.log_id.index;
            let (start, end) = (inner.first_index()?, inner.end_index()?);
            if index != end {
                if end > start {
                    let e = std::io::Error::other(format!(
                        "entry {index} does not follow the log's last entry {}",
                        end - 1
                    ));
                    return Err(StorageIOError::write_log_entry(first.log_id, io_err(&e)).into());
                }
                // The log holds nothing: the entries start a new generation at `index`.
                drop(inner);
                inner = self.drain()?;
                let first_id = first.log_id;
                inner.new_generation(index).map_err(|e| {
                    StorageError::from(StorageIOError::write_log_entry(first_id, io_err(&e)))
                })?;
            }
        }
        for (i, entry) in entries.into_iter().enumerate() {
            let expected = inner.end_index()?;
            if entry.log_id.index != expected {
                let e = std::io::Error::other(format!(
                    "entry {} of an append does not follow entry {}",
                    entry.log_id.index,
                    expected.wrapping_sub(1)
                ));
                debug_assert!(i > 0);
                return Err(StorageIOError::write_log_entry(entry.log_id, io_err(&e)).into());
            }
            inner.pending.push_back(entry);
        }
        inner.send(Msg::Flush(callback))
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> SResult<()> {
        let mut inner = self.drain()?;
        let werr = |e: &dyn std::error::Error| -> StorageError<u64> {
            StorageIOError::write_logs(io_err(e)).into()
        };
        if log_id.index >= inner.end_index()? {
            return Ok(());
        }
        let first_physical = inner.meta.offset + inner.log()?.first_seq();
        if log_id.index < first_physical {
            // Everything this generation holds goes.
            return inner.new_generation(log_id.index).map_err(|e| werr(&e));
        }
        let offset = inner.meta.offset;
        let log = inner.log.take().ok_or_else(|| werr(&std::io::Error::other("log lost")))?;
        let log = log.truncate_from(log_id.index - offset).map_err(|e| werr(&e))?;
        inner.log = Some(log);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> SResult<()> {
        let mut inner = self.drain()?;
        let werr = |e: &dyn std::error::Error| -> StorageError<u64> {
            StorageIOError::write_logs(io_err(e)).into()
        };
        if inner.meta.last_purged.is_some_and(|p| p.index >= log_id.index) {
            return Ok(());
        }
        // The purge point first: from here on the entries up to it are gone for openraft.
        let old = inner.meta.last_purged.replace(log_id);
        if let Err(e) = inner.save_meta() {
            inner.meta.last_purged = old;
            return Err(werr(&e));
        }
        let Some(before) = (log_id.index + 1).checked_sub(inner.meta.offset) else {
            return Ok(());
        };
        let log = inner.log.take().ok_or_else(|| werr(&std::io::Error::other("log lost")))?;
        let log = log.purge_before(before).map_err(|e| werr(&e))?;
        inner.log = Some(log);
        Ok(())
    }
}
