//! Replication for annal through [openraft](https://docs.rs/openraft/0.9.25): a raft log kept
//! in an annal [`Log`](annal::Log) ([`LogStore`]) and a state machine that applies committed
//! appends to an annal [`Store`](annal::Store) ([`StateMachine`]).
//!
//! A client proposes an [`AppendRequest`] ("append these events to stream S if its version is
//! E") with `Raft::client_write`; once the entry is committed every replica applies it to its
//! own store, evaluating the expected version deterministically at apply time, and the
//! leader returns the [`AppendResponse`] (the `AppendResult`, or the wrong-expected-version
//! outcome) to the client. [`mem_network`] connects replicas of one process (tests, the
//! example, the bench).
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
// openraft's `StorageError` and `RPCError` are the error types its traits require; helpers
// return them as they are rather than boxing and unboxing at every trait method.
#![allow(clippy::result_large_err)]

use std::io::Cursor;

use serde::{Deserialize, Serialize};

mod log_store;
pub mod mem_network;
mod meta;
mod snapshot_file;
mod state_machine;

pub use log_store::{LogReader, LogStore};
pub use state_machine::{SnapshotBuilder, StateMachine, store_digest};

openraft::declare_raft_types!(
    /// The openraft type configuration of an annal replica group.
    pub TypeConfig:
        D = AppendRequest,
        R = AppendResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

/// A raft node of an annal replica group.
pub type Raft = openraft::Raft<TypeConfig>;

/// The expected version of an append, as [`annal::ExpectedVersion`] (serializable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expected {
    /// No check.
    Any,
    /// The stream must have no events.
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream's last event must have exactly this version.
    Exact(u64),
}

impl From<Expected> for annal::ExpectedVersion {
    fn from(e: Expected) -> Self {
        match e {
            Expected::Any => annal::ExpectedVersion::Any,
            Expected::NoStream => annal::ExpectedVersion::NoStream,
            Expected::StreamExists => annal::ExpectedVersion::StreamExists,
            Expected::Exact(v) => annal::ExpectedVersion::Exact(v),
        }
    }
}

impl Expected {
    /// Whether a stream whose last version is `actual` satisfies this expectation.
    pub fn admits(self, actual: Option<u64>) -> bool {
        match self {
            Expected::Any => true,
            Expected::NoStream => actual.is_none(),
            Expected::StreamExists => actual.is_some(),
            Expected::Exact(v) => actual == Some(v),
        }
    }
}

/// One event of an [`AppendRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventData {
    /// Its type name.
    pub event_type: String,
    /// Its id. `None` gets an id derived from the raft log index and the event's position,
    /// the same on every replica (and the same when an entry is applied again after a crash,
    /// which makes that re-application idempotent).
    pub id: Option<[u8; 16]>,
    /// Metadata bytes.
    pub metadata: Vec<u8>,
    /// Data bytes.
    pub data: Vec<u8>,
}

impl EventData {
    /// An event of `event_type` with `data` and no metadata.
    pub fn new(event_type: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        EventData {
            event_type: event_type.into(),
            id: None,
            metadata: Vec::new(),
            data: data.into(),
        }
    }
}

/// What a client proposes: append `events` to `stream` if it is at `expected`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendRequest {
    /// The stream.
    pub stream: String,
    /// The version check, evaluated when the entry is applied.
    pub expected: Expected,
    /// The events, appended atomically.
    pub events: Vec<EventData>,
}

/// The outcome of an applied [`AppendRequest`], the same on every replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendResponse {
    /// Appended, as [`annal::AppendResult`].
    Appended {
        /// Store seq of the first event.
        first_seq: u64,
        /// Stream version of the first event.
        first_version: u64,
        /// Events appended.
        count: u32,
    },
    /// The stream was not at the expected version; nothing was appended.
    WrongExpectedVersion {
        /// What the request expected.
        expected: Expected,
        /// The stream's version (its last event's), or `None` if it has none.
        actual: Option<u64>,
    },
    /// The store refused the request for a reason that does not depend on its state (an
    /// invalid stream id or event type, too many events); nothing was appended.
    Rejected {
        /// The store's error.
        reason: String,
    },
    /// A blank or membership entry: no client request.
    None,
}

/// An I/O failure while opening a raft directory, as an `annal::Error`.
fn io_error(op: &'static str, path: &std::path::Path, e: std::io::Error) -> annal::Error {
    annal::Error::Io { op, path: path.to_path_buf(), source: std::sync::Arc::new(e) }
}
