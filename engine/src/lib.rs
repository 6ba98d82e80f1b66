//! annal: an embedded event store for event-sourced applications.
//!
//! The core is a segmented, CRC-checked write-ahead log ([`Log`]) with group commit. Every
//! other structure is derived from it. The on-disk format is specified in `format-spec.md`
//! at the repository root; [`format`] implements it as pure functions.
#![deny(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod aggregate;
mod error;
pub mod format;
pub mod fs;
pub mod inspect;
pub mod limits;
mod names;

pub use error::{CorruptionKind, Error, Result};
mod commit;
mod index;
mod log;
mod log_edit;
mod options;
mod prepare;
mod projection;
pub mod repair;
mod segment;
mod snapshot;
mod stats;
mod streams;
mod subscribe;

pub use aggregate::{
    Aggregate, Codec, EncodedEvent, ExecuteError, Executed, JsonCodec, Loaded, Repository,
    RepositoryOptions, SnapshotUse, Upcast, Upcasters, split_event_type, versioned_event_type,
};
pub use log::{Appended, Cursor, Log, Record, RecoveryReport, TruncatedTail};
pub use options::{Durability, Options};
pub use projection::{
    BoxError, CheckpointLoad, Delivery, EventCounts, Projection, ProjectionHandle,
    ProjectionMetrics, ProjectionOptions, ProjectionRunner, ProjectionStatus, ReadModel,
    RebuildHandle, RebuildOutcome, Verify, VerifyFn, digest_bytes,
};
/// The string type of [`RecordedEvent`]'s stream id and event type (from the `smol_str`
/// crate: inline up to 23 bytes, cheap to clone), re-exported so that callers need not
/// depend on it.
pub use smol_str::SmolStr;
pub use snapshot::{SetAside, SnapshotDamage, SnapshotRead, SnapshotStats, SnapshotStore};
pub use stats::StatsSnapshot;
pub use streams::{
    AllEvents, AppendResult, CheckpointState, Direction, ExpectedVersion, IndexStats, NewEvent,
    RecordedEvent, Store, StoreOptions, StoreRecovery, category_of, parse_stream_id,
};
#[cfg(feature = "serde")]
pub use streams::{CAUSATION_ID, CORRELATION_ID};
pub use subscribe::{Filter, Subscription};
