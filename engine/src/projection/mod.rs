//! Projections, their threads and checkpoints, read models, and replay -> rebuild -> verify
//! -> swap (ARCHITECTURE.md layer `projection`).
//!
//! A [`Projection`] folds events into a view. A [`ProjectionRunner`] runs each projection on
//! a thread of its own, fed by a [`crate::Subscription`] (so it sees only visible events, in
//! order, each once per run). The view lives in a [`ReadModel`]: queries read it under a read
//! lock while the thread applies batches of events under the write lock, so a query sees the
//! view after a whole batch and the position that goes with it, never half a batch.
//!
//! **Delivery across restarts** ([`Delivery`]):
//! - `Replay`: no checkpoint; every start replays the log from seq 0 into a fresh view (for
//!   in-memory views that are cheap to rebuild).
//! - `AtLeastOnce`: the runner persists the position in `<dir>/projections/<name>.ckpt`
//!   (format-spec.md §14) and a restart resumes from it. Events applied after the last
//!   checkpoint are applied again after a crash, so the projection's effects must be
//!   idempotent: applying an event twice must leave what applying it once leaves (an upsert
//!   keyed by the event id or seq, or remembering the highest seq applied and skipping
//!   events at or below it).
//! - `ExactlyOnce`: the checkpoint carries the projection's state ([`Projection::snapshot`])
//!   together with its exact position, replaced by one atomic write, and a restart restores
//!   it ([`Projection::restore`]): the view after a crash and restart is the view a replay
//!   from scratch gives. [`EventCounts`] is an example.
//!
//! Checkpoints are never ahead of the durable log (format-spec.md §14 "Writing").
//!
//! **Failure.** If `apply` returns an error or panics, that projection stops: its status
//! becomes [`ProjectionStatus::Failed`] with the error, its read model stays readable with
//! the events before the failing one (a panic may leave part of the failing event applied),
//! and its lag keeps growing in its metrics. Writers and other projections do not notice.
//!
//! **Rebuild** ([`ProjectionHandle::rebuild`]): a fresh instance replays from any seq on a
//! background thread while the old view keeps serving; when it has caught up, the
//! projection's thread brings it to exactly its own position, verifies both views at that
//! seq ([`Verify`]: equal digests or a check of your own), and swaps the new one in
//! atomically, or keeps the old one and reports the difference. The fresh instance may be a
//! new version of the projection (a shadow rebuild of changed code): verify it with a check
//! that knows what may differ.

mod checkpoint;
mod counts;
mod runner;

use std::time::Duration;

pub use counts::EventCounts;
pub use runner::{ProjectionHandle, ProjectionRunner, ReadModel, RebuildHandle};

use crate::streams::RecordedEvent;
use crate::subscribe::Filter;

/// The error type projections return: anything that is an error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A projection: folds events, in seq order, into a view.
///
/// The runner calls `apply` from the projection's own thread; queries read the projection
/// through its [`ReadModel`] from any thread (hence `Sync`).
pub trait Projection: Send + Sync + 'static {
    /// Its name: 1..=`PROJECTION_NAME_BYTES_MAX` bytes, unique within a store; it names the
    /// checkpoint file.
    fn name(&self) -> &str;

    /// Its version. Bump it when `apply` changes meaning: a checkpoint written by another
    /// version is not resumed from, and the projection replays from seq 0.
    fn version(&self) -> u32;

    /// Which events it wants; the others are skipped (its position still moves past them).
    /// Default: all.
    fn filter(&self) -> Filter {
        Filter::all()
    }

    /// Applies one event. An error (or a panic) stops the projection at this event.
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), BoxError>;

    /// The projection's whole state as bytes, for exactly-once checkpoints and the default
    /// digest. Must be deterministic: equal states give equal bytes. Default: `None` (the
    /// projection cannot run [`Delivery::ExactlyOnce`] or verify by digest).
    fn snapshot(&self) -> Option<Vec<u8>> {
        None
    }

    /// Replaces the state with one produced by `snapshot` (called on a fresh instance at
    /// start, before any `apply`). Default: fails.
    fn restore(&mut self, state: &[u8]) -> Result<(), BoxError> {
        let _ = state;
        Err("this projection cannot restore a state".into())
    }

    /// A digest of the state, compared by [`Verify::Digest`] after a rebuild. Default: a
    /// 64-bit hash of `snapshot()`.
    fn digest(&self) -> Option<u64> {
        self.snapshot().map(|s| digest_bytes(&s))
    }
}

/// A 64-bit digest of `bytes` (FNV-1a; for comparing two states in one process, not for
/// security).
pub fn digest_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// How a projection's progress survives restarts (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    /// No checkpoint: every start replays from seq 0 into the fresh instance.
    #[default]
    Replay,
    /// The position is checkpointed; events after it are applied again after a crash
    /// (effects must be idempotent).
    AtLeastOnce,
    /// Position and state are checkpointed together; a restart continues exactly where the
    /// checkpoint left off. Needs `snapshot` and `restore`.
    ExactlyOnce,
}

/// How a projection runs. `ProjectionOptions::default()`: `Replay`, checkpoints every
/// 10,000 events or 1 s, batches of up to 256 events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionOptions {
    /// How progress survives restarts.
    pub delivery: Delivery,
    /// Write a checkpoint after this many applied events...
    pub checkpoint_events: u64,
    /// ...or this long after the last one, whichever comes first (if anything new was
    /// applied).
    pub checkpoint_interval: Duration,
    /// Most events applied under one hold of the view's write lock; queries wait at most
    /// one batch.
    pub batch_events: usize,
}

impl Default for ProjectionOptions {
    fn default() -> Self {
        ProjectionOptions {
            delivery: Delivery::Replay,
            checkpoint_events: 10_000,
            checkpoint_interval: Duration::from_secs(1),
            batch_events: 256,
        }
    }
}

impl ProjectionOptions {
    /// The defaults with `delivery`.
    pub fn with_delivery(delivery: Delivery) -> Self {
        ProjectionOptions { delivery, ..ProjectionOptions::default() }
    }
}

/// Where a projection is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectionStatus {
    /// Applying events as they become visible.
    Running,
    /// Stopped by an error or panic in `apply` (or a failed read or checkpoint).
    Failed {
        /// The seq it failed on.
        seq: u64,
        /// The error or panic message.
        error: String,
    },
    /// Stopped on request, or because the store was closed.
    Stopped,
}

/// What the runner found in the projection's checkpoint at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointLoad {
    /// `Delivery::Replay`: checkpoints are not used.
    NotUsed,
    /// No checkpoint: started from seq 0.
    Missing,
    /// Resumed from `position`.
    Loaded {
        /// The checkpoint's position.
        position: u64,
    },
    /// The checkpoint was written by another version of the projection: started from 0.
    VersionChanged {
        /// The version in the checkpoint.
        found: u32,
    },
    /// The checkpoint was unusable (damaged, another store's or projection's, beyond the
    /// log, or without the state an exactly-once projection needs): started from 0.
    Rejected {
        /// Why.
        reason: String,
    },
}

/// A projection's figures (see [`ProjectionHandle::metrics`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectionMetrics {
    /// Its name.
    pub name: String,
    /// The version of the instance serving now.
    pub version: u32,
    /// Its status.
    pub status: ProjectionStatus,
    /// Every event below this seq is applied (or filtered out).
    pub position: u64,
    /// The log's visible end now (what subscribers may see).
    pub head: u64,
    /// `head - position`: events visible but not yet applied.
    pub lag_events: u64,
    /// How long ago the oldest event not yet applied was appended (zero when caught up).
    pub lag_time: Duration,
    /// Events applied per second, over the last second or so.
    pub events_per_sec: f64,
    /// Events applied since start.
    pub applied_events: u64,
    /// The last error (the one that stopped it, or a checkpoint write that failed).
    pub last_error: Option<String>,
    /// The position of the last checkpoint written, if any.
    pub checkpointed: Option<u64>,
    /// The seq it started from.
    pub started_from: u64,
    /// What it found in its checkpoint at start.
    pub checkpoint_load: CheckpointLoad,
}

/// How a rebuilt view is checked against the live one before it is swapped in; both are
/// compared at the same seq.
pub enum Verify<P> {
    /// Equal [`Projection::digest`]s.
    Digest,
    /// A check of your own: `Ok` to swap, `Err(difference)` to keep the old view. Called as
    /// `check(live, rebuilt)`.
    Check(VerifyFn<P>),
}

/// A check of [`Verify::Check`]: `check(live, rebuilt)`, `Err(difference)` on a mismatch.
pub type VerifyFn<P> = Box<dyn Fn(&P, &P) -> Result<(), String> + Send>;

impl<P> std::fmt::Debug for Verify<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verify::Digest => f.write_str("Digest"),
            Verify::Check(_) => f.write_str("Check(..)"),
        }
    }
}

/// How a rebuild ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebuildOutcome {
    /// Verified and swapped in: the rebuilt view serves from `position` on.
    Swapped {
        /// The seq both views were compared at.
        position: u64,
        /// Events the rebuild applied.
        replayed: u64,
        /// From the start of the rebuild to the swap.
        took: Duration,
    },
    /// The views differed at `position`: the old view keeps serving.
    Mismatch {
        /// The seq both views were compared at.
        position: u64,
        /// What differed.
        difference: String,
    },
    /// The rebuild failed (its `apply` failed or panicked, a read failed, or the projection
    /// has no digest): the old view keeps serving.
    Failed {
        /// Why.
        error: String,
    },
    /// The live projection stopped before the swap.
    Abandoned,
}
