//! The raft log on an annal [`Log`]: one entry per record (JSON), one batch per entry so
//! that a truncate can cut at any entry (annal batches are atomic), and one fsync per
//! `append` call (the log runs under `Durability::None`; `append` calls `Log::sync` and then
//! openraft's flush callback).
//!
//! Directory layout: `raft.meta` (vote, committed log id, last purged log id, and which
//! generation directory holds the entries at which index offset) and `log-<generation>/`, an
//! annal log whose seq `s` holds the entry of raft index `offset + s`. A new generation starts
//! when an append does not follow the entries there (the first append, or an append after a
//! snapshot was installed beyond the log's end); it is committed by the atomic replace of
//! `raft.meta`, and older generation directories are removed after that and at open.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use annal::fs::{StdFs, Storage};
use annal::{Durability, Log, Options};
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

impl LogStore {
    /// Opens (creating if needed) the raft log in `dir`, with annal `opts` for its segments
    /// (their durability is replaced by `Durability::None`: `append` syncs once per call).
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<LogStore, annal::Error> {
        let dir = dir.as_ref().to_path_buf();
        let io = |op, e| crate::io_error(op, &dir, e);
        std::fs::create_dir_all(&dir).map_err(|e| io("create dir", e))?;
        let storage: Arc<dyn Storage> = Arc::new(StdFs);
        let meta_path = dir.join(META_FILE);
        let meta: Meta = meta::load(storage.as_ref(), &meta_path)
            .map_err(|e| io("read raft.meta", e))?
            .unwrap_or_default();
        // Generations other than the current one are leftovers of a change of generation.
        remove_other_generations(&dir, meta.generation)
            .map_err(|e| io("remove old generations", e))?;
        let opts = Options { durability: Durability::None, ..opts };
        let log = Log::open_with(
            Arc::clone(&storage),
            generation_dir(&dir, meta.generation),
            opts.clone(),
        )?;
        let inner = Inner { committed: meta.committed, dir, storage, opts, meta, log: Some(log) };
        Ok(LogStore { inner: Arc::new(Mutex::new(inner)) })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn remove_other_generations(dir: &Path, keep: u64) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(n) = name.to_str().and_then(|n| n.strip_prefix("log-")) else { continue };
        if n.parse::<u64>().is_ok_and(|g| g != keep) {
            std::fs::remove_dir_all(e.path())?;
        }
    }
    Ok(())
}

impl Inner {
    fn log(&self) -> SResult<&Log> {
        self.log
            .as_ref()
            .ok_or_else(|| StorageIOError::read_logs(AnyError::error("log lost")).into())
    }

    /// The first index still held (after the purged ones).
    fn first_index(&self) -> SResult<u64> {
        let physical = self.meta.offset + self.log()?.first_seq();
        let logical = self.meta.last_purged.map_or(0, |l| l.index + 1);
        Ok(physical.max(logical))
    }

    /// One past the last index held.
    fn end_index(&self) -> SResult<u64> {
        Ok(self.meta.offset + self.log()?.visible_end())
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
        let log = self.log()?;
        let mut out = Vec::with_capacity((end - start) as usize);
        for rec in log.cursor(start - self.meta.offset).take((end - start) as usize) {
            let rec = rec.map_err(|e| StorageIOError::read_logs(io_err(&e)))?;
            let entry: Entry = serde_json::from_slice(&rec.payload)
                .map_err(|e| StorageIOError::read_logs(io_err(&e)))?;
            out.push(entry);
        }
        Ok(out)
    }

    /// Starts a new, empty generation whose first entry will have index `offset`.
    fn new_generation(&mut self, offset: u64) -> std::io::Result<()> {
        let old = self.meta.generation;
        let generation = old + 1;
        let gdir = generation_dir(&self.dir, generation);
        if gdir.exists() {
            std::fs::remove_dir_all(&gdir)?;
        }
        let log = Log::open_with(Arc::clone(&self.storage), &gdir, self.opts.clone())
            .map_err(std::io::Error::other)?;
        let mut meta = self.meta.clone();
        meta.generation = generation;
        meta.offset = offset;
        meta::store(self.storage.as_ref(), &self.dir.join(META_FILE), &meta)?;
        self.meta = meta;
        if let Some(old_log) = self.log.replace(log) {
            // Its entries were all purged or truncated: nothing of it is needed any more.
            let _ = old_log.close();
        }
        std::fs::remove_dir_all(generation_dir(&self.dir, old))
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
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).read_range(start, end)
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
        let mut inner = self.lock();
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

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> SResult<()>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut inner = self.lock();
        for entry in entries {
            let index = entry.log_id.index;
            let wlog = |e: &dyn std::error::Error| {
                StorageIOError::write_log_entry(entry.log_id, io_err(e))
            };
            if index != inner.end_index()? {
                if inner.end_index()? > inner.first_index()? {
                    let e = std::io::Error::other(format!(
                        "entry {index} does not follow the log's last entry {}",
                        inner.end_index()? - 1
                    ));
                    return Err(wlog(&e).into());
                }
                inner.new_generation(index).map_err(|e| wlog(&e))?;
            }
            let bytes = serde_json::to_vec(&entry).map_err(|e| wlog(&e))?;
            inner.log()?.append(&[bytes]).map_err(|e| wlog(&e))?;
        }
        // Durable before openraft hears of it: one fsync for the whole call.
        let synced = inner.log()?.sync();
        drop(inner);
        match synced {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(io_err(&e)).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> SResult<()> {
        let mut inner = self.lock();
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
        let mut inner = self.lock();
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
