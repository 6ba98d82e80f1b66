//! The repository: load (snapshot + tail), execute (load, handle, append with the expected
//! version, retry on conflict), and background snapshots.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use uuid::Uuid;

use super::codec::Codec;
use super::upcast::{Upcasters, versioned_event_type};
use super::{Aggregate, JsonCodec};
use crate::error::{Error, Result};
use crate::format::SnapshotFile;
use crate::snapshot::{SetAside, SnapshotDamage, SnapshotRead, SnapshotStore};
use crate::streams::{Direction, ExpectedVersion, NewEvent, RecordedEvent, Store};

/// Options of a [`Repository`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryOptions {
    /// How many times `execute` reloads and retries after a concurrent writer appended to
    /// the same aggregate first (default 32). Between attempts it sleeps a short random
    /// time that grows with the attempt (at most about 2 ms), so contending writers spread.
    pub max_retries: u32,
    /// Take a snapshot once at least this many events were folded since the snapshot the
    /// aggregate was loaded from (default `Some(100)`); `None` takes none (except when the
    /// aggregate asks), and `load` still uses existing ones.
    pub snapshot_every: Option<u64>,
    /// Snapshot requests waiting for the background writer (default 256). When it is full,
    /// a new request is dropped: a missed snapshot costs only replay time.
    pub snapshot_queue: usize,
    /// Aggregates whose latest state `execute` keeps in memory (default 10 000; 0 keeps
    /// none). A kept state is used only after checking that the stream's event at its
    /// version is still the one it folded (seq and event id), then the events after it are
    /// applied, so it saves reading the snapshot and the tail without ever going stale.
    /// `load` never uses it.
    pub cache_capacity: usize,
}

impl Default for RepositoryOptions {
    fn default() -> Self {
        RepositoryOptions {
            max_retries: 32,
            snapshot_every: Some(100),
            snapshot_queue: 256,
            cache_capacity: 10_000,
        }
    }
}

/// What `load` did with the aggregate's snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotUse {
    /// There was none; the stream was replayed from its start.
    None,
    /// It was used: the state came from it plus the events after `version`.
    Used {
        /// The snapshot's stream version.
        version: u64,
    },
    /// It was rejected and set aside; the stream was replayed from its start.
    Rejected(SetAside),
}

/// An aggregate as loaded.
#[derive(Debug, Clone)]
pub struct Loaded<A> {
    /// Its state: equal to the fold of all its events.
    pub state: A,
    /// Its stream version (of its last event), `None` if it has no events.
    pub version: Option<u64>,
    /// Events read and applied from the log (those after the snapshot, or all).
    pub replayed: u64,
    /// What happened to its snapshot.
    pub snapshot: SnapshotUse,
}

/// The result of a successful `execute`.
#[derive(Debug, Clone)]
pub struct Executed<A: Aggregate> {
    /// The events the command caused and the store appended (possibly none).
    pub events: Vec<A::Event>,
    /// The aggregate's stream version after them, `None` if it still has no events.
    pub version: Option<u64>,
    /// The aggregate's state after them.
    pub state: A,
    /// Attempts made: 1 unless a concurrent writer forced a retry.
    pub attempts: u32,
}

/// Why `execute` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecuteError<E: std::error::Error + 'static> {
    /// The aggregate rejected the command; nothing was written.
    #[error("command rejected: {0}")]
    Rejected(#[source] E),
    /// Every attempt lost the race to a concurrent writer; nothing was written.
    #[error("stream {stream:?}: gave up after {attempts} conflicting attempts")]
    TooManyConflicts {
        /// The aggregate's stream.
        stream: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The store failed (see [`Error`]); the events were not written unless the error says
    /// the append's durability is unknown.
    #[error(transparent)]
    Store(#[from] Error),
}

enum Job {
    Write(Box<dyn FnOnce() + Send>),
    Flush(crossbeam_channel::Sender<()>),
}

struct Inner<A: Aggregate, C> {
    store: Store,
    codec: Arc<C>,
    upcasters: Upcasters,
    opts: RepositoryOptions,
    snapshots: Arc<SnapshotStore>,
    jobs: crossbeam_channel::Sender<Job>,
    /// Stream -> version of the last snapshot requested, so a snapshot still in the queue is
    /// not asked for again.
    requested: Mutex<HashMap<String, u64>>,
    /// Stream -> the latest state `execute` saw (see `RepositoryOptions::cache_capacity`).
    cache: Mutex<HashMap<String, Current<A>>>,
    _aggregate: PhantomData<fn() -> A>,
}

/// Loads and executes aggregates of type `A` over a [`Store`], with snapshots.
///
/// A cheap handle: clone it to share it between threads; every method is thread-safe. A
/// background thread ("annal-snapshot") writes snapshots; it ends when the last handle is
/// dropped, after writing what was queued.
pub struct Repository<A: Aggregate, C: Codec<A> = JsonCodec> {
    inner: Arc<Inner<A, C>>,
}

impl<A: Aggregate, C: Codec<A>> Clone for Repository<A, C> {
    fn clone(&self) -> Self {
        Repository { inner: Arc::clone(&self.inner) }
    }
}

impl<A: Aggregate, C: Codec<A>> std::fmt::Debug for Repository<A, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("category", &A::CATEGORY)
            .field("opts", &self.inner.opts)
            .field("upcasters", &self.inner.upcasters)
            .finish()
    }
}

impl<A: Aggregate> Repository<A, JsonCodec>
where
    JsonCodec: Codec<A>,
{
    /// A repository over `store` with the JSON codec and no upcasters.
    pub fn new(store: Store, opts: RepositoryOptions) -> Result<Self> {
        Repository::with_codec(store, JsonCodec, Upcasters::new(), opts)
    }
}

impl<A: Aggregate, C: Codec<A>> Repository<A, C> {
    /// A repository over `store` with `codec` and `upcasters`. Fails if `A::CATEGORY` is
    /// empty or holds `-`, or `A::SNAPSHOT_SCHEMA` is empty or too long.
    pub fn with_codec(
        store: Store,
        codec: C,
        upcasters: Upcasters,
        opts: RepositoryOptions,
    ) -> Result<Self> {
        if A::CATEGORY.is_empty() || A::CATEGORY.contains('-') {
            return Err(Error::InvalidOptions(format!(
                "aggregate category {:?} must be non-empty and free of '-'",
                A::CATEGORY
            )));
        }
        if A::SNAPSHOT_SCHEMA.is_empty()
            || A::SNAPSHOT_SCHEMA.len() > crate::limits::SNAPSHOT_SCHEMA_BYTES_MAX
        {
            return Err(Error::InvalidOptions("snapshot schema tag length".into()));
        }
        if opts.snapshot_every == Some(0) {
            return Err(Error::InvalidOptions("snapshot_every must be at least 1".into()));
        }
        let snapshots = Arc::new(SnapshotStore::for_store(&store));
        let (jobs, queue) = crossbeam_channel::bounded(opts.snapshot_queue.max(1));
        std::thread::Builder::new()
            .name("annal-snapshot".into())
            .spawn(move || {
                for job in queue {
                    match job {
                        Job::Write(write) => write(),
                        Job::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })
            .map_err(|e| Error::io("start snapshot thread", store.log().dir(), e))?;
        Ok(Repository {
            inner: Arc::new(Inner {
                store,
                codec: Arc::new(codec),
                upcasters,
                opts,
                snapshots,
                jobs,
                requested: Mutex::new(HashMap::new()),
                cache: Mutex::new(HashMap::new()),
                _aggregate: PhantomData,
            }),
        })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The snapshot store (for its counters and set-aside files).
    pub fn snapshots(&self) -> &SnapshotStore {
        &self.inner.snapshots
    }

    /// The stream of aggregate `id`: `<A::CATEGORY>-<id>`.
    pub fn stream_id(&self, id: &str) -> String {
        format!("{}-{id}", A::CATEGORY)
    }

    /// Decodes one recorded event of this aggregate: upcast to the current schema version,
    /// then the codec.
    pub fn decode_event(&self, event: &RecordedEvent) -> Result<A::Event> {
        let up = self.inner.upcasters.upcast(&event.event_type, &event.data)?;
        let current = A::schema_version(&up.event_type);
        if up.version != current {
            return Err(Error::Codec {
                reason: format!(
                    "event {} (seq {}) is {} v{} after upcasting, the aggregate reads v{current}",
                    event.event_id, event.seq, up.event_type, up.version
                ),
            });
        }
        self.inner.codec.decode_event(&up.event_type, &up.data)
    }

    /// Loads aggregate `id` by replaying its whole stream, ignoring snapshots: the reference
    /// a snapshot-based load must equal.
    pub fn replay(&self, id: &str) -> Result<Loaded<A>> {
        let stream = self.stream_id(id);
        let f = self.fold(&stream, A::default(), 0, None)?;
        let version = f.last.map(|l| l.0);
        Ok(Loaded { state: f.state, version, replayed: f.replayed, snapshot: SnapshotUse::None })
    }

    /// Loads aggregate `id`: its latest valid snapshot and the events after it. A snapshot
    /// that fails any check of format-spec.md §13 is set aside and reported in
    /// [`Loaded::snapshot`], and the state comes from a full replay. Either way the state
    /// equals [`Repository::replay`]'s.
    pub fn load(&self, id: &str) -> Result<Loaded<A>> {
        let stream = self.stream_id(id);
        self.load_stream(&stream)
    }

    fn load_stream(&self, stream: &str) -> Result<Loaded<A>> {
        Ok(self.load_with_last(stream)?.0)
    }

    /// Loads `stream`, also returning (version, seq, id) of its last event.
    fn load_with_last(&self, stream: &str) -> Result<(Loaded<A>, Option<Anchor>)> {
        let rejected = match self.inner.snapshots.read(stream) {
            SnapshotRead::Missing => None,
            SnapshotRead::Damaged { damage, bytes } => Some((damage, bytes)),
            SnapshotRead::Found { file, bytes } => match self.load_from_snapshot(stream, &file)? {
                Ok(loaded) => return Ok(loaded),
                Err(damage) => Some((damage, bytes)),
            },
        };
        let f = self.fold(stream, A::default(), 0, None)?;
        let snapshot = match rejected {
            None => SnapshotUse::None,
            Some((damage, bytes)) => {
                SnapshotUse::Rejected(self.inner.snapshots.set_aside(stream, damage, &bytes))
            }
        };
        let version = f.last.map(|l| l.0);
        Ok((Loaded { state: f.state, version, replayed: f.replayed, snapshot }, f.last))
    }

    /// Loads from a snapshot that passed the file's checks, or says why it cannot be used.
    fn load_from_snapshot(
        &self,
        stream: &str,
        file: &SnapshotFile,
    ) -> Result<std::result::Result<LoadedWithLast<A>, SnapshotDamage>> {
        if file.schema != A::SNAPSHOT_SCHEMA {
            return Ok(Err(SnapshotDamage::WrongSchema { found: file.schema.clone() }));
        }
        let state = match self.inner.codec.decode_state(&file.payload) {
            Ok(s) => s,
            Err(e) => return Ok(Err(SnapshotDamage::BadState { reason: e.to_string() })),
        };
        let anchor = (file.stream_version, file.seq, Uuid::from_bytes(file.event_id));
        let f = match self.fold(stream, state, file.stream_version, Some(anchor)) {
            Ok(folded) => folded,
            Err(FoldError::Anchor) => {
                let stream_version = self.inner.store.stream_version(stream);
                let damage = if stream_version.is_none_or(|v| v < file.stream_version) {
                    SnapshotDamage::AheadOfLog {
                        snapshot_version: file.stream_version,
                        stream_version,
                    }
                } else {
                    SnapshotDamage::NotInLog { snapshot_version: file.stream_version }
                };
                return Ok(Err(damage));
            }
            Err(FoldError::Store(e)) => return Err(e),
        };
        let snapshot = SnapshotUse::Used { version: file.stream_version };
        let version = f.last.map(|l| l.0);
        Ok(Ok((Loaded { state: f.state, version, replayed: f.replayed, snapshot }, f.last)))
    }

    /// Applies the events of `stream` from version `from` on to `state`. With an `anchor`
    /// (version, seq, event id), the event at `from` must be that one and is skipped (the
    /// state already holds it). Returns the state, version and number of events applied.
    fn fold(
        &self,
        stream: &str,
        mut state: A,
        from: u64,
        anchor: Option<(u64, u64, Uuid)>,
    ) -> std::result::Result<Folded<A>, FoldError> {
        let events = self.inner.store.read_stream(stream, from, Direction::Forward, usize::MAX)?;
        let mut iter = events.iter();
        let mut last = None;
        if let Some((v, seq, event_id)) = anchor {
            match iter.next() {
                Some(e) if e.version == v && e.seq == seq && e.event_id == event_id => {
                    last = Some(e);
                }
                _ => return Err(FoldError::Anchor),
            }
        }
        let mut replayed = 0;
        for e in iter {
            let event = self.decode_event(e)?;
            state.apply(&event);
            replayed += 1;
            last = Some(e);
        }
        let last = last.map(|e| (e.version, e.seq, e.event_id));
        Ok(Folded { state, replayed, last })
    }

    /// The latest state of `stream` for `execute`: from the cache when it holds the stream
    /// (checked and brought up to date by `fold`), else a full `load`.
    fn current(&self, stream: &str) -> Result<Current<A>> {
        let inner = &self.inner;
        if inner.opts.cache_capacity > 0 {
            let cached = inner.cache.lock().unwrap_or_else(|e| e.into_inner()).get(stream).cloned();
            if let Some(c) = cached {
                match self.fold(stream, c.state, c.last.0, Some(c.last)) {
                    Ok(f) => {
                        let last = f.last.unwrap_or(c.last);
                        return Ok(Current { state: f.state, last, snap_base: c.snap_base });
                    }
                    Err(FoldError::Anchor) => {
                        inner.cache.lock().unwrap_or_else(|e| e.into_inner()).remove(stream);
                    }
                    Err(FoldError::Store(e)) => return Err(e),
                }
            }
        }
        let (loaded, last) = self.load_with_last(stream)?;
        let snap_base = match loaded.snapshot {
            SnapshotUse::Used { version } => Some(version),
            _ => None,
        };
        Ok(Current { state: loaded.state, last: last.unwrap_or(NO_EVENT), snap_base })
    }

    /// Remembers `cur` as the latest state of `stream`.
    fn remember(&self, stream: &str, cur: Current<A>) {
        let inner = &self.inner;
        if inner.opts.cache_capacity == 0 || cur.last == NO_EVENT {
            return;
        }
        let mut cache = inner.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= inner.opts.cache_capacity && !cache.contains_key(stream) {
            // Crude but bounded: forget everything; the next command of each reloads.
            cache.clear();
        }
        match cache.get(stream) {
            // Keep the newer of two states (concurrent commands finish in any order).
            Some(old) if old.last.0 >= cur.last.0 => {}
            _ => {
                cache.insert(stream.to_owned(), cur);
            }
        }
    }

    /// Executes `cmd` on aggregate `id`: loads it, runs `handle`, and appends the events with
    /// `ExpectedVersion::Exact` of the loaded version (`NoStream` for a new aggregate). If a
    /// concurrent writer appended first, reloads and retries, up to `max_retries` times, so
    /// no update is ever lost. Returns once the events are as durable as the store's policy
    /// promises; a snapshot, when due, is written afterwards by the background thread.
    pub fn execute(
        &self,
        id: &str,
        cmd: &A::Command,
    ) -> std::result::Result<Executed<A>, ExecuteError<A::Error>> {
        let stream = self.stream_id(id);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let cur = self.current(&stream)?;
            let loaded_version = (cur.last.0 != NO_EVENT.0).then_some(cur.last.0);
            let events = cur.state.handle(cmd).map_err(ExecuteError::Rejected)?;
            if events.is_empty() {
                let state = cur.state.clone();
                self.remember(&stream, cur);
                return Ok(Executed { events, version: loaded_version, state, attempts });
            }
            let mut new_events = Vec::with_capacity(events.len());
            let mut ids = Vec::with_capacity(events.len());
            for e in &events {
                let enc = self.inner.codec.encode_event(e)?;
                let version = A::schema_version(&enc.event_type);
                let event_type = versioned_event_type(&enc.event_type, version)?;
                let id = Uuid::now_v7();
                ids.push(id);
                new_events.push(NewEvent::new(event_type, enc.data).with_id(id));
            }
            let expected = match loaded_version {
                Some(v) => ExpectedVersion::Exact(v),
                None => ExpectedVersion::NoStream,
            };
            match self.inner.store.append(&stream, expected, &new_events) {
                Ok(appended) => {
                    let mut state = cur.state;
                    for e in &events {
                        state.apply(e);
                    }
                    let version = appended.next_expected_version();
                    let last_id = ids.last().copied().unwrap_or_else(Uuid::nil);
                    let wants = state.wants_snapshot(&events);
                    let last = (version, appended.last_seq(), last_id);
                    let snap_base =
                        self.maybe_snapshot(&stream, &state, cur.snap_base, last, wants);
                    self.remember(&stream, Current { state: state.clone(), last, snap_base });
                    return Ok(Executed { events, version: Some(version), state, attempts });
                }
                Err(Error::WrongExpectedVersion { .. })
                    if attempts <= self.inner.opts.max_retries =>
                {
                    backoff(attempts);
                }
                Err(Error::WrongExpectedVersion { .. }) => {
                    return Err(ExecuteError::TooManyConflicts { stream, attempts });
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Queues a snapshot of `state`, whose last event is `last` (version, seq, id), if the
    /// policy says one is due. Returns the version of the newest snapshot known written or
    /// queued.
    fn maybe_snapshot(
        &self,
        stream: &str,
        state: &A,
        snapshot_version: Option<u64>,
        last: (u64, u64, Uuid),
        asked: bool,
    ) -> Option<u64> {
        let inner = &self.inner;
        let (version, seq, event_id) = last;
        {
            let mut requested = inner.requested.lock().unwrap_or_else(|e| e.into_inner());
            let base = requested.get(stream).copied().max(snapshot_version);
            // Events folded since the newest snapshot written or queued.
            let since = base.map_or(version + 1, |b| version.saturating_sub(b));
            let due = inner.opts.snapshot_every.is_some_and(|n| since >= n);
            if !(due || asked) || since == 0 {
                return base;
            }
            if requested.len() >= 100_000 {
                requested.clear();
            }
            requested.insert(stream.to_owned(), version);
        }
        let state = state.clone();
        let codec = Arc::clone(&inner.codec);
        let snapshots = Arc::clone(&inner.snapshots);
        let stream = stream.to_owned();
        let write = move || {
            let Ok(payload) = codec.encode_state(&state) else { return };
            let file = SnapshotFile {
                log_id: snapshots.log_id(),
                stream_id: stream,
                stream_version: version,
                seq,
                event_id: *event_id.as_bytes(),
                schema: A::SNAPSHOT_SCHEMA.to_owned(),
                payload,
            };
            // A failed write costs only replay time; the store counts it.
            let _ = snapshots.write(&file);
        };
        let _ = inner.jobs.try_send(Job::Write(Box::new(write)));
        Some(version)
    }

    /// Waits until every snapshot queued so far is written (or failed).
    pub fn flush_snapshots(&self) {
        let (done, wait) = crossbeam_channel::bounded(1);
        if self.inner.jobs.send(Job::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

/// What `fold` made: the state, the events it applied, and (version, seq, id) of the
/// stream's last event (`None` if it has none).
struct Folded<A> {
    state: A,
    replayed: u64,
    last: Option<(u64, u64, Uuid)>,
}

/// The latest state of a stream as `execute` keeps it: `last` is (version, seq, id) of its
/// last event, or `NO_EVENT`; `snap_base` the version of the newest snapshot known.
#[derive(Clone)]
struct Current<A> {
    state: A,
    last: (u64, u64, Uuid),
    snap_base: Option<u64>,
}

/// (version, seq, event id) of an event: what a snapshot or cached state was folded up to.
type Anchor = (u64, u64, Uuid);

/// A load and the anchor of its last event.
type LoadedWithLast<A> = (Loaded<A>, Option<Anchor>);

/// `Current::last` of a stream without events.
const NO_EVENT: (u64, u64, Uuid) = (u64::MAX, u64::MAX, Uuid::nil());

/// Why a fold stopped.
enum FoldError {
    /// The event at the snapshot's version is not the one it folded (or is missing).
    Anchor,
    /// The store failed or an event did not decode.
    Store(Error),
}

impl From<Error> for FoldError {
    fn from(e: Error) -> Self {
        FoldError::Store(e)
    }
}

impl From<FoldError> for Error {
    fn from(e: FoldError) -> Self {
        match e {
            FoldError::Store(e) => e,
            FoldError::Anchor => Error::Codec { reason: "snapshot anchor mismatch".into() },
        }
    }
}

/// A short random sleep before retry `attempt` (1-based), growing with it, capped near 2 ms.
fn backoff(attempt: u32) {
    let cap_us = (50u64 << attempt.min(6)).min(2_000);
    std::thread::sleep(Duration::from_micros(fastrand::u64(0..=cap_us)));
}
