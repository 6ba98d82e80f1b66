//! The state machine: committed [`AppendRequest`]s applied to an annal [`Store`].
//!
//! Directory layout: `sm.meta` (the last applied log id, the last membership, which
//! generation directory holds the store, and the store's end at the last applied entry),
//! `store-<generation>/`, an annal store, and `sm.snapshot`, the current snapshot
//! (format-spec.md §17). A snapshot is every event of the store in seq order (JSON);
//! installing one fills a new generation and commits it with the atomic replace of
//! `sm.meta`. The current snapshot (built or installed) is written to `sm.snapshot` with the
//! atomic replace of `annal::fs::write_atomic` and loaded again at open, so a restarted node
//! can still send it; a damaged one is moved aside to `sm.snapshot.broken-<n>`, never used.
//!
//! **Crash consistency.** The store runs under `Durability::None` and `apply` syncs it once
//! per call, so its events are durable before `apply` returns (one fsync per batch of
//! entries, not per entry), but `sm.meta` is replaced (after a sync of the store) only when
//! the membership changes, every
//! [`PERSIST_EVERY_ENTRIES`] entries, and before a snapshot is built, so after a crash openraft
//! applies some entries again. That is harmless: every event gets an id derived from its log
//! index (unless the client gave one), so the store returns the original result of an append
//! it already holds (its recent-id window), and an expected-version check is evaluated
//! against the stream as of the store's end after the previous entry (the "horizon"), not
//! against events that later entries appended before the crash. Every replica therefore
//! reaches the same store and returns the same responses.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use annal::fs::{OpenMode, StdFs, Storage};
use annal::{Durability, NewEvent, Options, Store, StoreOptions};
use bytes::Bytes;
use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, BasicNode, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use crate::{AppendRequest, AppendResponse, Expected, TypeConfig, meta, snapshot_file};

type Entry = openraft::Entry<TypeConfig>;
type SResult<T> = Result<T, StorageError<u64>>;

const META_FILE: &str = "sm.meta";
/// The current snapshot (format-spec.md §17).
const SNAPSHOT_FILE: &str = "sm.snapshot";
/// At most this many damaged snapshot files are kept aside (`sm.snapshot.broken-<n>`); past
/// that the open fails rather than delete one.
pub const SNAPSHOT_SET_ASIDE_MAX: u32 = 1000;

/// `sm.meta` is replaced at least this often (in applied entries); a crash costs at most this
/// many entries applied again.
pub const PERSIST_EVERY_ENTRIES: u64 = 1024;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SmMeta {
    generation: u64,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    /// The store's visible end right after `last_applied` was applied.
    store_end: u64,
}

/// One event of a snapshot.
#[derive(Debug, Serialize, Deserialize)]
struct SnapEvent {
    stream: String,
    event_type: String,
    id: [u8; 16],
    metadata: Vec<u8>,
    data: Vec<u8>,
}

struct Inner {
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    opts: StoreOptions,
    meta: SmMeta,
    store: Store,
    /// The store's end after the last applied entry (see the module docs).
    horizon: u64,
    applied_since_persist: u64,
    snapshot: Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>,
    snapshots_built: u64,
    /// Where a damaged `sm.snapshot` was moved at open, if it was.
    snapshot_set_aside: Option<PathBuf>,
}

/// The state machine. Clones share one store.
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Mutex<Inner>>,
}

/// Builds snapshots of a [`StateMachine`].
pub struct SnapshotBuilder {
    inner: Arc<Mutex<Inner>>,
}

fn any(e: &dyn std::error::Error) -> AnyError {
    AnyError::error(e.to_string())
}

fn store_dir(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("store-{generation}"))
}

/// The id of the `i`-th event of the entry at `index` when the client gave none.
fn derived_id(index: u64, i: usize) -> uuid::Uuid {
    uuid::Uuid::from_u64_pair(index, (0xa11a_u64 << 48) | i as u64)
}

/// A digest of every event of `store` in seq order: seq, stream, version, type, id, metadata
/// and data (not the timestamp, which is each replica's own). Equal digests mean the stores
/// hold the same events.
pub fn store_digest(store: &Store) -> annal::Result<u64> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for ev in store.read_all(0) {
        let ev = ev?;
        feed(&ev.seq.to_le_bytes());
        feed(ev.stream_id.as_bytes());
        feed(&ev.version.to_le_bytes());
        feed(ev.event_type.as_bytes());
        feed(ev.event_id.as_bytes());
        feed(&ev.metadata);
        feed(&ev.data);
    }
    Ok(h)
}

impl StateMachine {
    /// Opens (creating if needed) the state machine in `dir` on the real file system. The
    /// store's durability is replaced by `Durability::None`: `apply` syncs once per call.
    pub fn open(dir: impl AsRef<Path>, opts: StoreOptions) -> Result<StateMachine, annal::Error> {
        StateMachine::open_with(Arc::new(StdFs), dir, opts)
    }

    /// [`StateMachine::open`] on the given storage (for tests: [`annal::fs::SimFs`]). Loads
    /// the current snapshot from `sm.snapshot`; a damaged one is moved aside
    /// ([`StateMachine::snapshot_set_aside`]) and the node starts without a snapshot.
    pub fn open_with(
        storage: Arc<dyn Storage>,
        dir: impl AsRef<Path>,
        opts: StoreOptions,
    ) -> Result<StateMachine, annal::Error> {
        let dir = dir.as_ref().to_path_buf();
        let bad = |e: std::io::Error| crate::io_error("open state machine", &dir, e);
        storage.create_dir_all(&dir).map_err(bad)?;
        let meta: SmMeta =
            meta::load(storage.as_ref(), &dir.join(META_FILE)).map_err(bad)?.unwrap_or_default();
        for name in storage.read_dir(&dir).map_err(bad)? {
            let Some(g) = name.strip_prefix("store-") else { continue };
            if g.parse::<u64>().is_ok_and(|g| g != meta.generation) {
                // A snapshot install that did not commit, or an old generation.
                meta::remove_tree(storage.as_ref(), &dir.join(&name)).map_err(bad)?;
            }
        }
        let (snapshot, snapshot_set_aside) = load_snapshot(storage.as_ref(), &dir)?;
        let opts =
            StoreOptions { log: Options { durability: Durability::None, ..opts.log }, ..opts };
        let store =
            Store::open_with(Arc::clone(&storage), store_dir(&dir, meta.generation), opts.clone())?;
        let horizon = meta.store_end;
        let inner = Inner {
            dir,
            storage,
            opts,
            meta,
            store,
            horizon,
            applied_since_persist: 0,
            snapshot,
            snapshots_built: 0,
            snapshot_set_aside,
        };
        Ok(StateMachine { inner: Arc::new(Mutex::new(inner)) })
    }

    /// Where a damaged `sm.snapshot` was moved when this state machine was opened, if one was.
    pub fn snapshot_set_aside(&self) -> Option<PathBuf> {
        self.lock().snapshot_set_aside.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The store the entries are applied to (for reads; write only through raft).
    pub fn store(&self) -> Store {
        self.lock().store.clone()
    }

    /// [`store_digest`] of the current store.
    pub fn digest(&self) -> annal::Result<u64> {
        store_digest(&self.lock().store)
    }
}

type SnapshotPair = (SnapshotMeta<u64, BasicNode>, Vec<u8>);

/// Replaces `sm.snapshot` with `meta` and `data`, atomically and durably.
fn save_snapshot(
    storage: &dyn Storage,
    dir: &Path,
    meta: &SnapshotMeta<u64, BasicNode>,
    data: &[u8],
) -> std::io::Result<()> {
    let path = dir.join(SNAPSHOT_FILE);
    let meta_json = serde_json::to_vec(meta).map_err(|e| meta::err(&path, e))?;
    let bytes = snapshot_file::encode(&meta_json, data).map_err(|e| meta::err(&path, e))?;
    annal::fs::write_atomic(storage, &path, &bytes)
}

/// Loads `sm.snapshot`: `(None, None)` if there is none; `(None, Some(path))` if it was
/// damaged and moved to `path`. Read errors (not damage) fail the open.
fn load_snapshot(
    storage: &dyn Storage,
    dir: &Path,
) -> Result<(Option<SnapshotPair>, Option<PathBuf>), annal::Error> {
    let path = dir.join(SNAPSHOT_FILE);
    let io = |op, e| crate::io_error(op, &path, e);
    if !storage.exists(&path).map_err(|e| io("stat", e))? {
        return Ok((None, None));
    }
    let file = storage.open(&path, OpenMode::Read).map_err(|e| io("open", e))?;
    let len = file.len().map_err(|e| io("stat", e))?;
    // The header first: its lengths must match the file's before the body is allocated.
    let mut head = vec![0u8; len.min(snapshot_file::SNAPSHOT_HEADER_BYTES as u64) as usize];
    file.read_exact_at(&mut head, 0).map_err(|e| io("read", e))?;
    let judged = snapshot_file::decode_header(&head, len).and_then(|_| {
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, 0).map_err(|_| {
            annal::format::DecodeError::Inconsistent("snapshot file changed while read")
        })?;
        let (m, d) = snapshot_file::decode(&buf)?;
        let meta: SnapshotMeta<u64, BasicNode> = serde_json::from_slice(m)
            .map_err(|_| annal::format::DecodeError::Inconsistent("snapshot meta JSON"))?;
        Ok((meta, d.to_vec()))
    });
    drop(file);
    match judged {
        Ok(pair) => Ok((Some(pair), None)),
        Err(_) => {
            // Damaged: never trusted, never deleted. The state machine's store is intact;
            // the next snapshot is built from it.
            for n in 0..SNAPSHOT_SET_ASIDE_MAX {
                let to = dir.join(format!("{SNAPSHOT_FILE}.broken-{n}"));
                if storage.exists(&to).map_err(|e| io("stat", e))? {
                    continue;
                }
                storage.rename(&path, &to).map_err(|e| io("set aside", e))?;
                storage.sync_dir(dir).map_err(|e| io("sync dir", e))?;
                return Ok((None, Some(to)));
            }
            Err(io("set aside", std::io::Error::other("too many damaged snapshots set aside")))
        }
    }
}

impl Inner {
    fn persist(&mut self) -> std::io::Result<()> {
        // `sm.meta` must never say more than the store durably holds.
        self.store.log().sync().map_err(std::io::Error::other)?;
        self.meta.store_end = self.horizon;
        meta::store(self.storage.as_ref(), &self.dir.join(META_FILE), &self.meta)?;
        self.applied_since_persist = 0;
        Ok(())
    }

    fn apply_request(&mut self, index: u64, req: &AppendRequest) -> annal::Result<AppendResponse> {
        let events: Vec<NewEvent> = req
            .events
            .iter()
            .enumerate()
            .map(|(i, e)| NewEvent {
                event_type: e.event_type.clone(),
                event_id: Some(e.id.map_or_else(|| derived_id(index, i), uuid::Uuid::from_bytes)),
                metadata: Bytes::from(e.metadata.clone()),
                data: Bytes::from(e.data.clone()),
            })
            .collect();
        let end = self.store.log().visible_end();
        if self.horizon < end {
            // Applied again after a crash: judge the version as the stream was then.
            let actual = match self.horizon.checked_sub(1) {
                None => None,
                Some(at) => match self.store.read_stream_as_of(&req.stream, at) {
                    Ok(evs) => evs.last().map(|e| e.version),
                    Err(e) if is_rejection(&e) => {
                        return Ok(AppendResponse::Rejected { reason: e.to_string() });
                    }
                    Err(e) => return Err(e),
                },
            };
            if !req.expected.admits(actual) {
                return Ok(AppendResponse::WrongExpectedVersion { expected: req.expected, actual });
            }
        }
        match self.store.append(&req.stream, req.expected.into(), &events) {
            Ok(r) => {
                self.horizon = self.horizon.max(r.last_seq() + 1);
                Ok(AppendResponse::Appended {
                    first_seq: r.first_seq,
                    first_version: r.first_version,
                    count: r.count,
                })
            }
            Err(annal::Error::WrongExpectedVersion { actual, .. }) => {
                Ok(AppendResponse::WrongExpectedVersion { expected: req.expected, actual })
            }
            Err(e) if is_rejection(&e) => Ok(AppendResponse::Rejected { reason: e.to_string() }),
            Err(e) => Err(e),
        }
    }
}

/// Errors that depend only on the request, never on the replica: the same on every replica.
fn is_rejection(e: &annal::Error) -> bool {
    matches!(
        e,
        annal::Error::InvalidStreamId { .. }
            | annal::Error::InvalidEventType { .. }
            | annal::Error::TooManyEvents { .. }
            | annal::Error::EmptyBatch
            | annal::Error::RecordTooLarge { .. }
            | annal::Error::BatchTooLarge { .. }
    )
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> SResult<Snapshot<TypeConfig>> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let werr = |e: &dyn std::error::Error| -> StorageError<u64> {
            StorageIOError::write_snapshot(None, any(e)).into()
        };
        // openraft purges the log up to the snapshot: what it covers must be durable here.
        inner.persist().map_err(|e| werr(&e))?;
        let mut events = Vec::new();
        for ev in inner.store.read_all(0) {
            let ev = ev.map_err(|e| werr(&e))?;
            events.push(SnapEvent {
                stream: ev.stream_id.into(),
                event_type: ev.event_type.into(),
                id: *ev.event_id.as_bytes(),
                metadata: ev.metadata.to_vec(),
                data: ev.data.to_vec(),
            });
        }
        let data = serde_json::to_vec(&events).map_err(|e| werr(&e))?;
        inner.snapshots_built += 1;
        let snapshot_id = match inner.meta.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, inner.snapshots_built),
            None => format!("none-{}", inner.snapshots_built),
        };
        let meta = SnapshotMeta {
            last_log_id: inner.meta.last_applied,
            last_membership: inner.meta.membership.clone(),
            snapshot_id,
        };
        save_snapshot(inner.storage.as_ref(), &inner.dir, &meta, &data).map_err(|e| werr(&e))?;
        inner.snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> SResult<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>)> {
        let inner = self.lock();
        Ok((inner.meta.last_applied, inner.meta.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> SResult<Vec<AppendResponse>>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut inner = self.lock();
        let mut out = Vec::new();
        let mut membership_changed = false;
        for entry in entries {
            let log_id = entry.log_id;
            let resp = match &entry.payload {
                EntryPayload::Blank => AppendResponse::None,
                EntryPayload::Membership(m) => {
                    inner.meta.membership = StoredMembership::new(Some(log_id), m.clone());
                    membership_changed = true;
                    AppendResponse::None
                }
                EntryPayload::Normal(req) => inner
                    .apply_request(log_id.index, req)
                    .map_err(|e| StorageIOError::apply(log_id, any(&e)))?,
            };
            inner.meta.last_applied = Some(log_id);
            inner.applied_since_persist += 1;
            out.push(resp);
        }
        if membership_changed || inner.applied_since_persist >= PERSIST_EVERY_ENTRIES {
            inner.persist().map_err(|e| StorageIOError::write_state_machine(any(&e)))?;
        } else {
            // One fsync for the whole batch of entries (the store runs `Durability::None`).
            inner.store.log().sync().map_err(|e| StorageIOError::write_state_machine(any(&e)))?;
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder { inner: Arc::clone(&self.inner) }
    }

    async fn begin_receiving_snapshot(&mut self) -> SResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> SResult<()> {
        let mut inner = self.lock();
        let sig = Some(meta.signature());
        let rerr = |e: &dyn std::error::Error| -> StorageError<u64> {
            StorageIOError::read_snapshot(sig.clone(), any(e)).into()
        };
        let data = snapshot.into_inner();
        let events: Vec<SnapEvent> = serde_json::from_slice(&data).map_err(|e| rerr(&e))?;
        // Fill a new generation; `sm.meta` naming it is the commit point.
        let generation = inner.meta.generation + 1;
        let gdir = store_dir(&inner.dir, generation);
        if inner.storage.exists(&gdir).map_err(|e| rerr(&e))? {
            meta::remove_tree(inner.storage.as_ref(), &gdir).map_err(|e| rerr(&e))?;
        }
        let store = Store::open_with(Arc::clone(&inner.storage), &gdir, inner.opts.clone())
            .map_err(|e| rerr(&e))?;
        let mut i = 0;
        while i < events.len() {
            let stream = &events[i].stream;
            let run = events[i..].iter().take_while(|e| &e.stream == stream).count();
            let batch: Vec<NewEvent> = events[i..i + run]
                .iter()
                .map(|e| NewEvent {
                    event_type: e.event_type.clone(),
                    event_id: Some(uuid::Uuid::from_bytes(e.id)),
                    metadata: Bytes::from(e.metadata.clone()),
                    data: Bytes::from(e.data.clone()),
                })
                .collect();
            store.append(stream, Expected::Any.into(), &batch).map_err(|e| rerr(&e))?;
            i += run;
        }
        // The new store's events must be durable before `sm.meta` names it (`persist` below
        // syncs the store in use, which is still the old one).
        store.log().sync().map_err(|e| rerr(&e))?;
        let old = inner.meta.generation;
        let end = store.log().visible_end();
        let mut new_meta = SmMeta {
            generation,
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            store_end: end,
        };
        std::mem::swap(&mut inner.meta, &mut new_meta);
        inner.horizon = end;
        if let Err(e) = inner.persist() {
            std::mem::swap(&mut inner.meta, &mut new_meta);
            return Err(rerr(&e));
        }
        let old_store = std::mem::replace(&mut inner.store, store);
        let _ = old_store.close();
        let old_dir = store_dir(&inner.dir, old);
        meta::remove_tree(inner.storage.as_ref(), &old_dir).map_err(|e| rerr(&e))?;
        // The installed snapshot is the current one, also after a restart.
        save_snapshot(inner.storage.as_ref(), &inner.dir, meta, &data).map_err(|e| rerr(&e))?;
        inner.snapshot = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> SResult<Option<Snapshot<TypeConfig>>> {
        let inner = self.lock();
        Ok(inner.snapshot.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        }))
    }
}
