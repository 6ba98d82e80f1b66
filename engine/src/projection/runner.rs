//! The projection runner: one thread per projection, its read model, checkpoints, metrics,
//! and the rebuild -> verify -> swap protocol.
//!
//! Only the projection's thread ever writes its view. A rebuild replays into a fresh instance
//! on a thread of its own and then hands it to the projection's thread, which brings it to its
//! own position, compares both at that same seq, and swaps under the write lock: queries see
//! the old view or the new one, never a mixture, and never a view behind one they saw.

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, select};

use super::checkpoint;
use super::{
    CheckpointLoad, Delivery, Projection, ProjectionMetrics, ProjectionOptions, ProjectionStatus,
    RebuildOutcome, Verify,
};
use crate::error::{Error, Result};
use crate::format::ProjectionCheckpoint;
use crate::streams::{RecordedEvent, Store};
use crate::subscribe::Subscription;

/// How long an idle projection thread sleeps before it looks at its timers again.
const IDLE_WAKE: Duration = Duration::from_millis(100);
/// Window over which `events_per_sec` is measured.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// What the projection's thread publishes besides the view.
#[derive(Debug)]
struct Progress {
    status: ProjectionStatus,
    last_error: Option<String>,
    rate: f64,
    checkpointed: Option<u64>,
}

/// State shared by the projection's thread, its handle and its read models.
struct Shared<P> {
    name: String,
    store: Store,
    view: RwLock<P>,
    /// Every event below it is applied; written under the view's write lock.
    position: AtomicU64,
    version: AtomicU32,
    progress: Mutex<Progress>,
    /// Signalled (under `progress`) after every status change, and after a batch that
    /// reaches what someone waits for.
    moved: Condvar,
    /// The lowest seq a thread in `wait_for` waits for (`u64::MAX`: none). The projection's
    /// thread signals `moved` only when its position passes it, so waiters are woken once
    /// for their seq, not once per batch, and nobody waiting costs no lock at all.
    wake_at: AtomicU64,
    /// Events applied since start.
    applied: AtomicU64,
    started_from: u64,
    checkpoint_load: CheckpointLoad,
}

impl<P> Shared<P> {
    fn progress(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read_view(&self) -> RwLockReadGuard<'_, P> {
        // A panic inside `apply` poisons the lock; the view is still what it is (see the
        // module documentation on failure), and queries may read it.
        self.view.read().unwrap_or_else(|e| e.into_inner())
    }

    fn set_status(&self, status: ProjectionStatus) {
        let mut p = self.progress();
        if let ProjectionStatus::Failed { error, .. } = &status {
            p.last_error = Some(error.clone());
        }
        p.status = status;
        self.moved.notify_all();
    }
}

/// A query handle on a projection's view. Cheap to clone; every method is thread-safe.
pub struct ReadModel<P> {
    shared: Arc<Shared<P>>,
}

impl<P> Clone for ReadModel<P> {
    fn clone(&self) -> Self {
        ReadModel { shared: Arc::clone(&self.shared) }
    }
}

impl<P> std::fmt::Debug for ReadModel<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadModel")
            .field("name", &self.shared.name)
            .field("position", &self.shared.position.load(Ordering::Acquire))
            .finish()
    }
}

impl<P: Projection> ReadModel<P> {
    /// Runs `query` on the view under its read lock. Concurrent queries run in parallel;
    /// the projection's thread waits for them only between batches.
    pub fn read<R>(&self, query: impl FnOnce(&P) -> R) -> R {
        query(&self.shared.read_view())
    }

    /// Like [`ReadModel::read`], also passing the view's position (every event below it is
    /// in the view; none at or above it).
    pub fn read_at<R>(&self, query: impl FnOnce(&P, u64) -> R) -> R {
        let view = self.shared.read_view();
        query(&view, self.shared.position.load(Ordering::Acquire))
    }

    /// The view's position: every event below this seq is applied (or filtered out).
    pub fn position(&self) -> u64 {
        self.shared.position.load(Ordering::Acquire)
    }

    /// Waits until the event with seq `seq` is in the view (or filtered out): read your own
    /// writes by waiting for the `last_seq()` of your append. Fails with
    /// [`Error::WaitTimedOut`] after `timeout`, with [`Error::ProjectionFailed`] if the
    /// projection failed before getting there, and with [`Error::ProjectionStopped`] if it
    /// was stopped.
    pub fn wait_for(&self, seq: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now().checked_add(timeout);
        let mut p = self.shared.progress();
        loop {
            // Announced (under the lock) before the position is read, both SeqCst: either
            // the projection's thread sees the announcement and signals, or this read sees
            // its new position. Every round announces again: a signal resets it.
            self.shared.wake_at.fetch_min(seq, Ordering::SeqCst);
            let position = self.shared.position.load(Ordering::SeqCst);
            if position > seq {
                return Ok(());
            }
            match &p.status {
                ProjectionStatus::Running => {}
                ProjectionStatus::Failed { seq: at, error } => {
                    return Err(Error::ProjectionFailed {
                        name: self.shared.name.clone(),
                        seq: *at,
                        reason: error.clone(),
                    });
                }
                ProjectionStatus::Stopped => {
                    return Err(Error::ProjectionStopped {
                        name: self.shared.name.clone(),
                        position,
                    });
                }
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            if left.is_zero() {
                return Err(Error::WaitTimedOut { seq, position });
            }
            p = self.shared.moved.wait_timeout(p, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

/// Messages to a projection's thread.
enum Control<P> {
    Stop,
    Swap(Box<SwapRequest<P>>),
}

/// A rebuilt instance ready to be verified and swapped in.
struct SwapRequest<P> {
    candidate: P,
    /// The candidate's position.
    at: u64,
    verify: Verify<P>,
    replayed: u64,
    started: Instant,
    reply: Sender<RebuildOutcome>,
}

/// Runs projections, each on its own thread, against one store. Projection names are unique
/// within a runner (they name the checkpoint files).
#[derive(Clone)]
pub struct ProjectionRunner {
    store: Store,
    running: Arc<Mutex<HashSet<String>>>,
    metrics: Arc<Mutex<Vec<MetricsSource>>>,
}

impl std::fmt::Debug for ProjectionRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("ProjectionRunner").field("running", &*running).finish()
    }
}

type MetricsSource = (String, Arc<dyn Fn() -> Option<ProjectionMetrics> + Send + Sync>);

impl ProjectionRunner {
    /// A runner for `store`.
    pub fn new(store: Store) -> Self {
        ProjectionRunner { store, running: Arc::default(), metrics: Arc::default() }
    }

    /// The metrics of every projection started by this runner and still running or
    /// stopped-with-a-live-handle, by name.
    pub fn metrics(&self) -> Vec<ProjectionMetrics> {
        let sources = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        sources.iter().filter_map(|(_, f)| f()).collect()
    }

    /// Starts `projection` on a thread of its own.
    ///
    /// Under `AtLeastOnce` and `ExactlyOnce` it resumes from its checkpoint (restoring the
    /// state under `ExactlyOnce`) when the checkpoint is usable, and otherwise starts from 0
    /// with `projection` as given (which should then be fresh); see
    /// [`ProjectionMetrics::checkpoint_load`]. Fails with [`Error::InvalidProjectionName`],
    /// [`Error::ProjectionExists`], or [`Error::ProjectionFailed`] if the checkpoint's state
    /// does not restore or an `ExactlyOnce` projection has no `snapshot`.
    pub fn spawn<P: Projection>(
        &self,
        mut projection: P,
        opts: ProjectionOptions,
    ) -> Result<ProjectionHandle<P>> {
        let name = projection.name().to_owned();
        checkpoint::check_name(&name)?;
        if !self.running.lock().unwrap_or_else(|e| e.into_inner()).insert(name.clone()) {
            return Err(Error::ProjectionExists { name });
        }
        let release = NameGuard { running: Arc::clone(&self.running), name: name.clone() };
        if opts.delivery == Delivery::ExactlyOnce && projection.snapshot().is_none() {
            return Err(Error::ProjectionFailed {
                name,
                seq: 0,
                reason: "Delivery::ExactlyOnce needs Projection::snapshot and restore".into(),
            });
        }
        let log = self.store.log();
        let resume = match opts.delivery {
            Delivery::Replay => {
                checkpoint::Resume { position: 0, state: None, load: CheckpointLoad::NotUsed }
            }
            d => checkpoint::load(log, &name, projection.version(), d == Delivery::ExactlyOnce),
        };
        if let Some(state) = &resume.state {
            projection.restore(state).map_err(|e| Error::ProjectionFailed {
                name: name.clone(),
                seq: resume.position,
                reason: format!("restoring its checkpointed state: {e}"),
            })?;
        }
        let sub = self.store.subscribe(resume.position).with_filter(projection.filter());
        let shared = Arc::new(Shared {
            name: name.clone(),
            store: self.store.clone(),
            version: AtomicU32::new(projection.version()),
            view: RwLock::new(projection),
            position: AtomicU64::new(resume.position),
            progress: Mutex::new(Progress {
                status: ProjectionStatus::Running,
                last_error: None,
                rate: 0.0,
                checkpointed: matches!(resume.load, CheckpointLoad::Loaded { .. })
                    .then_some(resume.position),
            }),
            moved: Condvar::new(),
            wake_at: AtomicU64::new(u64::MAX),
            applied: AtomicU64::new(0),
            started_from: resume.position,
            checkpoint_load: resume.load,
        });
        let (ctl_tx, ctl_rx) = crossbeam_channel::unbounded();
        let worker = Worker { shared: Arc::clone(&shared), sub, ctl: ctl_rx, opts, release };
        let thread = std::thread::Builder::new()
            .name(format!("annal-projection-{name}"))
            .spawn(move || worker.run())
            .map_err(|e| Error::io("start projection thread", self.store.log().dir(), e))?;
        let weak = Arc::downgrade(&shared);
        let source: Arc<dyn Fn() -> Option<ProjectionMetrics> + Send + Sync> =
            Arc::new(move || weak.upgrade().map(|s| metrics_of(&s)));
        let mut sources = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        sources.retain(|(n, f)| *n != name && f().is_some());
        sources.push((name, source));
        Ok(ProjectionHandle { shared, ctl: ctl_tx, thread: Some(thread) })
    }
}

/// Frees the projection's name in its runner when its thread ends.
struct NameGuard {
    running: Arc<Mutex<HashSet<String>>>,
    name: String,
}

impl Drop for NameGuard {
    fn drop(&mut self) {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.name);
    }
}

/// The handle of a running projection. Dropping it stops the projection (as
/// [`ProjectionHandle::stop`], ignoring errors); the read models stay readable.
pub struct ProjectionHandle<P: Projection> {
    shared: Arc<Shared<P>>,
    ctl: Sender<Control<P>>,
    thread: Option<JoinHandle<()>>,
}

impl<P: Projection> std::fmt::Debug for ProjectionHandle<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionHandle").field("name", &self.shared.name).finish()
    }
}

impl<P: Projection> ProjectionHandle<P> {
    /// A query handle on the projection's view.
    pub fn read_model(&self) -> ReadModel<P> {
        ReadModel { shared: Arc::clone(&self.shared) }
    }

    /// Its status.
    pub fn status(&self) -> ProjectionStatus {
        self.shared.progress().status.clone()
    }

    /// Its figures now: position, lag in events and in time, rate, last error.
    pub fn metrics(&self) -> ProjectionMetrics {
        metrics_of(&self.shared)
    }

    /// See [`ReadModel::wait_for`].
    pub fn wait_for(&self, seq: u64, timeout: Duration) -> Result<()> {
        self.read_model().wait_for(seq, timeout)
    }

    /// Stops the projection: it finishes its batch, writes a last checkpoint (unless it
    /// failed under `ExactlyOnce`) and ends. Returns its error if it had failed.
    pub fn stop(mut self) -> Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<()> {
        let _ = self.ctl.send(Control::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        match self.status() {
            ProjectionStatus::Failed { seq, error } => {
                Err(Error::ProjectionFailed { name: self.shared.name.clone(), seq, reason: error })
            }
            _ => Ok(()),
        }
    }

    /// Rebuilds the view from `from_seq` into `fresh` (which must hold the state before
    /// `from_seq`: a new instance for 0) on a background thread while the current view keeps
    /// serving; when the rebuild has caught up with the head, the projection's thread brings
    /// it to its own position, verifies both views at that seq with `verify`, and swaps the
    /// rebuilt one in, or keeps the current one and reports the difference.
    ///
    /// `fresh` may be a new version with changed code (a shadow rebuild): it must have the
    /// same name; after the swap, checkpoints carry its version. Fails with
    /// [`Error::InvalidProjectionName`] if the names differ.
    pub fn rebuild(&self, from_seq: u64, fresh: P, verify: Verify<P>) -> Result<RebuildHandle> {
        if fresh.name() != self.shared.name {
            return Err(Error::InvalidProjectionName {
                reason: format!(
                    "a rebuild of {:?} got an instance named {:?}",
                    self.shared.name,
                    fresh.name()
                ),
            });
        }
        let (reply, outcome) = crossbeam_channel::bounded(1);
        let progress = Arc::new(AtomicU64::new(from_seq));
        let store = self.shared.store.clone();
        let ctl = self.ctl.clone();
        let seen = Arc::clone(&progress);
        std::thread::Builder::new()
            .name(format!("annal-rebuild-{}", self.shared.name))
            .spawn(move || replay(store, fresh, from_seq, verify, ctl, reply, seen))
            .map_err(|e| Error::io("start rebuild thread", self.shared.store.log().dir(), e))?;
        Ok(RebuildHandle { outcome, progress })
    }
}

impl<P: Projection> Drop for ProjectionHandle<P> {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

/// A rebuild in progress.
#[derive(Debug)]
pub struct RebuildHandle {
    outcome: Receiver<RebuildOutcome>,
    progress: Arc<AtomicU64>,
}

impl RebuildHandle {
    /// The rebuild's position during its replay.
    pub fn progress(&self) -> u64 {
        self.progress.load(Ordering::Acquire)
    }

    /// Waits for the outcome.
    pub fn wait(self) -> RebuildOutcome {
        self.outcome.recv().unwrap_or(RebuildOutcome::Abandoned)
    }

    /// Waits up to `timeout` for the outcome; `None` if it is not there yet.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<RebuildOutcome> {
        match self.outcome.recv_timeout(timeout) {
            Ok(o) => Some(o),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                Some(RebuildOutcome::Abandoned)
            }
        }
    }
}

/// Applies `event` to `p`, turning an error or a panic into a message.
fn apply_caught<P: Projection>(
    p: &mut P,
    event: &RecordedEvent,
) -> std::result::Result<(), String> {
    match catch_unwind(AssertUnwindSafe(|| p.apply(event))) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => Err(panic_message(&panic)),
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    format!("panicked: {msg}")
}

/// The rebuild thread: replays into `fresh` up to the visible end, then hands it to the
/// projection's thread.
fn replay<P: Projection>(
    store: Store,
    mut fresh: P,
    from_seq: u64,
    verify: Verify<P>,
    ctl: Sender<Control<P>>,
    reply: Sender<RebuildOutcome>,
    progress: Arc<AtomicU64>,
) {
    let started = Instant::now();
    let filter = fresh.filter();
    let mut at = from_seq;
    let mut replayed = 0;
    for event in store.read_all(from_seq) {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                let _ = reply.send(RebuildOutcome::Failed { error: e.to_string() });
                return;
            }
        };
        if filter.matches(&event) {
            if let Err(error) = apply_caught(&mut fresh, &event) {
                let error = format!("at seq {}: {error}", event.seq);
                let _ = reply.send(RebuildOutcome::Failed { error });
                return;
            }
            replayed += 1;
        }
        at = event.seq + 1;
        progress.store(at, Ordering::Release);
    }
    let req = SwapRequest { candidate: fresh, at, verify, replayed, started, reply };
    if let Err(crossbeam_channel::SendError(Control::Swap(req))) =
        ctl.send(Control::Swap(Box::new(req)))
    {
        let _ = req.reply.send(RebuildOutcome::Abandoned);
    }
}

/// The projection's thread.
struct Worker<P> {
    shared: Arc<Shared<P>>,
    sub: Subscription,
    ctl: Receiver<Control<P>>,
    opts: ProjectionOptions,
    /// Frees the name when the thread ends.
    #[allow(dead_code, reason = "held for its Drop")]
    release: NameGuard,
}

/// Why the loop ended.
enum End {
    Stopped,
    Failed,
}

impl<P: Projection> Worker<P> {
    fn run(mut self) {
        let end = self.work();
        let failed = matches!(end, End::Failed);
        let exactly_once_failed = failed && self.opts.delivery == Delivery::ExactlyOnce;
        if self.opts.delivery != Delivery::Replay && !exactly_once_failed {
            self.checkpoint();
        }
        if !failed {
            self.shared.set_status(super::ProjectionStatus::Stopped);
        }
    }

    fn position(&self) -> u64 {
        self.shared.position.load(Ordering::Acquire)
    }

    fn work(&mut self) -> End {
        let mut batch = Vec::with_capacity(self.opts.batch_events.max(1));
        let mut pending: Option<Box<SwapRequest<P>>> = None;
        let mut since_checkpoint = 0u64;
        let mut last_checkpoint = Instant::now();
        let mut window = (Instant::now(), 0u64);
        loop {
            loop {
                match self.ctl.try_recv() {
                    Ok(Control::Stop) | Err(TryRecvError::Disconnected) => return End::Stopped,
                    Ok(Control::Swap(req)) => pending = Some(req),
                    Err(TryRecvError::Empty) => break,
                }
            }
            batch.clear();
            let mut read_error = None;
            while batch.len() < self.opts.batch_events.max(1) {
                match self.sub.try_next() {
                    Ok(Some(e)) => batch.push(e),
                    Ok(None) => break,
                    Err(e) => {
                        read_error = Some(e);
                        break;
                    }
                }
            }
            let end = self.sub.position();
            if !batch.is_empty() || end != self.position() {
                let mut view = self.shared.view.write().unwrap_or_else(|e| e.into_inner());
                for event in &batch {
                    if let Err(error) = apply_caught(&mut *view, event) {
                        self.shared.position.store(event.seq, Ordering::Release);
                        drop(view);
                        self.fail(event.seq, error);
                        return End::Failed;
                    }
                }
                self.shared.position.store(end, Ordering::SeqCst);
                drop(view);
                self.shared.applied.fetch_add(batch.len() as u64, Ordering::Relaxed);
                if end > self.shared.wake_at.load(Ordering::SeqCst) {
                    let _p = self.shared.progress();
                    self.shared.wake_at.store(u64::MAX, Ordering::SeqCst);
                    self.shared.moved.notify_all();
                }
                since_checkpoint += batch.len() as u64;
                window.1 += batch.len() as u64;
            }
            if let Some(e) = read_error {
                self.fail(end, format!("reading the log: {e}"));
                return End::Failed;
            }
            if let Some(req) = pending.take() {
                if self.position() >= req.at {
                    if self.swap(*req) {
                        last_checkpoint = Instant::now();
                        since_checkpoint = 0;
                    }
                } else {
                    pending = Some(req);
                }
            }
            let due = since_checkpoint >= self.opts.checkpoint_events
                || (since_checkpoint > 0
                    && last_checkpoint.elapsed() >= self.opts.checkpoint_interval);
            if due && self.opts.delivery != Delivery::Replay {
                self.checkpoint();
                since_checkpoint = 0;
                last_checkpoint = Instant::now();
            }
            if window.0.elapsed() >= RATE_WINDOW {
                let rate = window.1 as f64 / window.0.elapsed().as_secs_f64();
                self.shared.progress().rate = rate;
                window = (Instant::now(), 0);
            }
            if batch.is_empty() {
                if self.sub.is_closed() {
                    return End::Stopped;
                }
                select! {
                    recv(self.sub.wake()) -> r => if r.is_err() { self.sub.note_closed() },
                    recv(self.ctl) -> c => match c {
                        Ok(Control::Stop) | Err(_) => return End::Stopped,
                        Ok(Control::Swap(req)) => pending = Some(req),
                    },
                    default(IDLE_WAKE) => {}
                }
            }
        }
    }

    fn fail(&self, seq: u64, error: String) {
        self.shared.set_status(ProjectionStatus::Failed { seq, error });
    }

    /// Writes a checkpoint at the current position (format-spec.md §14 "Writing"). A
    /// failure is recorded as the last error; the projection goes on (the checkpoint only
    /// saves replay time).
    fn checkpoint(&self) {
        let log = self.shared.store.log();
        let (position, state, version) = {
            let view = self.shared.read_view();
            let position = self.position();
            let state = match self.opts.delivery {
                Delivery::ExactlyOnce => match view.snapshot() {
                    Some(s) => Some(s),
                    None => {
                        drop(view);
                        self.note_error("ExactlyOnce needs Projection::snapshot".into());
                        return;
                    }
                },
                _ => None,
            };
            (position, state, view.version())
        };
        let durable = log.durable_head().map_or(0, |h| h + 1);
        let position = if state.is_some() {
            // The state is exactly at `position`: make the log durable that far first (only
            // needed under `Durability::None`).
            if position > durable
                && let Err(e) = log.sync()
            {
                self.note_error(format!("sync before checkpoint: {e}"));
                return;
            }
            position
        } else {
            position.min(durable)
        };
        let ck = ProjectionCheckpoint {
            log_id: log.log_id(),
            name: self.shared.name.clone(),
            position,
            projection_version: version,
            state,
        };
        match checkpoint::store(log, &ck) {
            Ok(()) => self.shared.progress().checkpointed = Some(position),
            Err(e) => self.note_error(e.to_string()),
        }
    }

    fn note_error(&self, e: String) {
        self.shared.progress().last_error = Some(e);
    }

    /// Brings a rebuilt candidate to the live position, verifies and swaps it in. Returns
    /// whether it was swapped.
    fn swap(&self, req: SwapRequest<P>) -> bool {
        let SwapRequest { mut candidate, at, verify, mut replayed, started, reply } = req;
        let live = self.position();
        let filter = candidate.filter();
        for event in self.shared.store.read_all(at) {
            let event = match event {
                Ok(e) if e.seq >= live => break,
                Ok(e) => e,
                Err(e) => {
                    let _ = reply.send(RebuildOutcome::Failed { error: e.to_string() });
                    return false;
                }
            };
            if filter.matches(&event) {
                if let Err(error) = apply_caught(&mut candidate, &event) {
                    let error = format!("at seq {}: {error}", event.seq);
                    let _ = reply.send(RebuildOutcome::Failed { error });
                    return false;
                }
                replayed += 1;
            }
        }
        let verdict = {
            let view = self.shared.read_view();
            match &verify {
                Verify::Digest => match (view.digest(), candidate.digest()) {
                    (Some(a), Some(b)) if a == b => Ok(()),
                    (Some(a), Some(b)) => Err(Ok(format!(
                        "digest of the live view {a:#018x}, of the rebuilt view {b:#018x}"
                    ))),
                    _ => Err(Err("the projection has no digest; verify with Verify::Check")),
                },
                Verify::Check(check) => {
                    match catch_unwind(AssertUnwindSafe(|| check(&view, &candidate))) {
                        Ok(r) => r.map_err(Ok),
                        Err(_) => Err(Err("the check panicked")),
                    }
                }
            }
        };
        let outcome = match verdict {
            Ok(()) => {
                let mut view = self.shared.view.write().unwrap_or_else(|e| e.into_inner());
                std::mem::swap(&mut *view, &mut candidate);
                self.shared.version.store(view.version(), Ordering::Release);
                drop(view);
                if self.opts.delivery != Delivery::Replay {
                    self.checkpoint();
                }
                RebuildOutcome::Swapped { position: live, replayed, took: started.elapsed() }
            }
            Err(Ok(difference)) => RebuildOutcome::Mismatch { position: live, difference },
            Err(Err(error)) => RebuildOutcome::Failed { error: error.into() },
        };
        let swapped = matches!(outcome, RebuildOutcome::Swapped { .. });
        let _ = reply.send(outcome);
        swapped
    }
}

fn metrics_of<P>(s: &Shared<P>) -> ProjectionMetrics {
    let log = s.store.log();
    let head = log.visible_end();
    let position = s.position.load(Ordering::Acquire);
    let lag_events = head.saturating_sub(position);
    let lag_time = if lag_events > 0 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        log.read(position)
            .map(|r| Duration::from_micros(now.saturating_sub(r.timestamp_us)))
            .unwrap_or_default()
    } else {
        Duration::ZERO
    };
    let p = s.progress();
    ProjectionMetrics {
        name: s.name.clone(),
        version: s.version.load(Ordering::Acquire),
        status: p.status.clone(),
        position,
        head,
        lag_events,
        lag_time,
        events_per_sec: if p.status == ProjectionStatus::Running { p.rate } else { 0.0 },
        applied_events: s.applied.load(Ordering::Relaxed),
        last_error: p.last_error.clone(),
        checkpointed: p.checkpointed,
        started_from: s.started_from,
        checkpoint_load: s.checkpoint_load.clone(),
    }
}
