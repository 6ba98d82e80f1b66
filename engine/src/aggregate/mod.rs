//! The command side (ARCHITECTURE.md layer `aggregate`): the [`Aggregate`] trait, and the
//! [`Repository`] that loads aggregates (latest valid snapshot plus the events after it),
//! executes commands against them with optimistic concurrency, and snapshots them in the
//! background.
//!
//! An aggregate is a stream: aggregate `id` of type `A` lives in stream `<A::CATEGORY>-<id>`,
//! so its events can also be read by category. Events are encoded by a [`Codec`] (JSON by
//! default, feature `serde`), and old event shapes are turned into current ones on read by
//! registered [`Upcasters`] (format-spec.md §13.2 says where the schema version lives).

mod codec;
mod repository;
mod upcast;

pub use codec::{Codec, EncodedEvent, JsonCodec};
pub use repository::{ExecuteError, Executed, Loaded, Repository, RepositoryOptions, SnapshotUse};
pub use upcast::{Upcast, Upcasters, split_event_type, versioned_event_type};

/// An event-sourced aggregate. The implementing type is the aggregate's **state**; its
/// associated types are the commands it accepts, the events it emits and the error a
/// rejected command gets.
///
/// `handle` and `apply` must be pure (deterministic, no I/O, no clock): the repository
/// re-runs `handle` when a concurrent writer got there first, and rebuilds state by running
/// `apply` over the stream, from a snapshot or from the start, with the same result.
pub trait Aggregate: Default + Clone + Send + Sync + 'static {
    /// What the aggregate is asked to do.
    type Command;
    /// What happened; the only input of `apply`.
    type Event: Send + Sync;
    /// Why a command was rejected.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The stream category of this aggregate type: aggregate `id` lives in stream
    /// `<CATEGORY>-<id>`. Non-empty, without `-`.
    const CATEGORY: &'static str;

    /// The schema tag stored in snapshots (for example `bank.account/1`). Change it whenever
    /// the state's encoding changes: snapshots with another tag are set aside and the state
    /// is rebuilt by replay.
    const SNAPSHOT_SCHEMA: &'static str;

    /// Validates `cmd` against the current state and returns the events it causes (none is
    /// fine), or why it is rejected.
    fn handle(&self, cmd: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Folds one event into the state.
    fn apply(&mut self, event: &Self::Event);

    /// The current schema version of the data of events of type `event_type` (default 1).
    /// Events are written at this version; older ones must be upcast to it on read.
    fn schema_version(event_type: &str) -> u32 {
        let _ = event_type;
        1
    }

    /// Whether a snapshot should be taken now, after `new_events` were applied, regardless
    /// of the every-N-events policy (default: never).
    fn wants_snapshot(&self, new_events: &[Self::Event]) -> bool {
        let _ = new_events;
        false
    }
}
