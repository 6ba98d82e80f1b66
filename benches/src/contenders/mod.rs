//! The systems `compare` measures, each behind one small adapter.
//!
//! A [`Contender`] opens stores of one system for each kind of workload; what a system
//! cannot do it says through [`Contender::supports`], and the report prints `n/a` there.
//! Every adapter writes and reads the same events: payload `seq` is
//! `pool[seq % pool.len()]` (see [`crate::payload`]), 256 bytes, so a reader checks what it
//! got back against the pool.
//!
//! | kind | system |
//! |---|---|
//! | `plain` | annal's frames in one file that grows with each `write_all`; `sync_data` |
//! | `plain-prealloc` | the same, space reserved (fallocated; zero-filled for durable work) |
//! | `sqlite` | SQLite (bundled), WAL, an `events` table with `UNIQUE(stream, version)` |
//! | `okaywal` | okaywal 0.3, default configuration |
//! | `redb` | redb, one table `u64 -> &[u8]` |
//! | `annal-log` | `annal::Log` |
//! | `annal-store` | `annal::Store`, appends with `ExpectedVersion` |

mod annal;
mod okaywal;
mod plain;
mod redb;
mod sqlite;

use std::path::Path;

pub use sqlite::POLL as SQLITE_POLL;

use crate::report::R;

/// The systems, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A plain file that grows with each write.
    Plain,
    /// A plain file with its space reserved ahead.
    PlainPrealloc,
    /// SQLite.
    Sqlite,
    /// okaywal.
    Okaywal,
    /// redb.
    Redb,
    /// `annal::Log`.
    AnnalLog,
    /// `annal::Store`.
    AnnalStore,
}

/// What a contender is to the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A plain file: the limit of what the hardware gives.
    Plain,
    /// Another embedded store: the competition.
    Peer,
    /// annal itself.
    Annal,
}

impl Kind {
    /// Every contender, in report order.
    pub const ALL: [Kind; 7] = [
        Kind::Plain,
        Kind::PlainPrealloc,
        Kind::Sqlite,
        Kind::Okaywal,
        Kind::Redb,
        Kind::AnnalLog,
        Kind::AnnalStore,
    ];

    /// Its name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Plain => "plain",
            Kind::PlainPrealloc => "plain-prealloc",
            Kind::Sqlite => "sqlite",
            Kind::Okaywal => "okaywal",
            Kind::Redb => "redb",
            Kind::AnnalLog => "annal-log",
            Kind::AnnalStore => "annal-store",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether it is a plain file, a peer or annal.
    pub fn role(self) -> Role {
        match self {
            Kind::Plain | Kind::PlainPrealloc => Role::Plain,
            Kind::Sqlite | Kind::Okaywal | Kind::Redb => Role::Peer,
            Kind::AnnalLog | Kind::AnnalStore => Role::Annal,
        }
    }

    /// Its adapter.
    pub fn contender(self) -> Box<dyn Contender> {
        match self {
            Kind::Plain => Box::new(plain::PlainFile { prealloc: false }),
            Kind::PlainPrealloc => Box::new(plain::PlainFile { prealloc: true }),
            Kind::Sqlite => Box::new(sqlite::Sqlite),
            Kind::Okaywal => Box::new(okaywal::Okaywal),
            Kind::Redb => Box::new(redb::Redb),
            Kind::AnnalLog => Box::new(annal::AnnalLog),
            Kind::AnnalStore => Box::new(annal::AnnalStore),
        }
    }
}

/// The workloads, as far as a contender may be unable to run one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// W1: bulk append, one sync at the end.
    Bulk,
    /// W2, W3: durable appends, each writer waiting for its own.
    Durable,
    /// W4: replay scan with checksums.
    Replay,
    /// W5: random point reads by seq.
    Read,
    /// W6: one stream read whole among many.
    Stream,
    /// W7: open after a clean close and after a crash.
    Open,
    /// W8: a durable append until a follower of the store (a projection, a polling reader)
    /// has seen it.
    Follow,
}

/// One system's adapter.
pub trait Contender {
    /// Which system.
    fn kind(&self) -> Kind;

    /// How it is configured, in one line for the report.
    fn describe(&self) -> String;

    /// Whether it can run `w` in a meaningful way.
    fn supports(&self, w: Workload) -> bool;

    /// W1: creates a store in the empty directory `dir` and appends `events` payloads
    /// (`pool[seq % pool.len()]`) in batches of `pool.len()`, then makes them durable with
    /// one sync. Returns the store still open: closing it is not part of the timing.
    fn bulk(&self, dir: &Path, events: u64, pool: &[Vec<u8>]) -> R<Box<dyn Closer>>;

    /// W2, W3: a fresh store in the empty directory `dir` for durable appends from
    /// `threads` threads.
    fn durable(&self, dir: &Path, threads: usize) -> R<Box<dyn Durable>>;

    /// W4, W5, W7: opens the store a [`Contender::bulk`] left in `dir` (closed or crashed),
    /// recovering it if needed.
    fn open(&self, dir: &Path) -> R<Box<dyn Opened>>;

    /// W6: creates a store in `dir` holding `events` in log order (untimed set-up), closed
    /// cleanly.
    fn build_streams(&self, _dir: &Path, _events: &mut dyn Iterator<Item = StreamEvent>) -> R<()> {
        Err(format!("{} has no streams", self.kind().name()).into())
    }

    /// W6: opens a store [`Contender::build_streams`] made.
    fn open_streams(&self, _dir: &Path) -> R<Box<dyn StreamReader>> {
        Err(format!("{} has no streams", self.kind().name()).into())
    }

    /// W8: a fresh store in the empty directory `dir`, durable appends, and a follower
    /// running in the same process that sees each append after it is durable.
    fn follow(&self, _dir: &Path) -> R<Box<dyn Followed>> {
        Err(format!("{} has no follower", self.kind().name()).into())
    }
}

/// W8: a store with a follower (a projection, or a reader thread polling the store).
pub trait Followed {
    /// Appends `payload` as one event, returns once it is durable, with its seq.
    fn append(&mut self, payload: &[u8]) -> R<u64>;

    /// Returns once the follower has seen event `seq` (has counted it).
    fn wait_seen(&mut self, seq: u64) -> R<()>;

    /// Checks the follower saw `events` events, stops it and closes the store.
    fn finish(self: Box<Self>, events: u64) -> R<()>;
}

/// A store to close cleanly.
pub trait Closer {
    /// Closes it cleanly.
    fn close(self: Box<Self>) -> R<()>;
}

/// A store receiving durable appends from many threads.
pub trait Durable: Sync {
    /// Appends `payload` as one event on behalf of thread `thread` and returns once it is
    /// durable.
    fn append(&self, thread: usize, payload: &[u8]) -> R<()>;

    /// Checks that the store holds `ops` events and closes it.
    fn finish(self: Box<Self>, ops: u64) -> R<()>;
}

/// An opened store with events `0..events()`.
pub trait Opened {
    /// Events it holds (found by the open).
    fn events(&mut self) -> R<u64>;

    /// Reads every event in order, checksums verified where the system keeps them, calling
    /// `f(seq, payload)` for each; returns the count.
    fn replay(&mut self, f: &mut dyn FnMut(u64, &[u8])) -> R<u64>;

    /// Set-up before point reads (untimed), such as building the plain file's offsets.
    fn prepare_reads(&mut self) -> R<()> {
        Ok(())
    }

    /// Reads event `seq` and calls `f(payload)`.
    fn read(&mut self, seq: u64, f: &mut dyn FnMut(&[u8])) -> R<()>;

    /// Closes it cleanly.
    fn close(self: Box<Self>) -> R<()>;
}

/// One event of the streams store (W6).
#[derive(Debug, Clone)]
pub struct StreamEvent {
    /// Its stream, `s-<n>`.
    pub stream: String,
    /// Its version in the stream (dense from 0).
    pub version: u64,
    /// Its type name.
    pub event_type: &'static str,
    /// Its data.
    pub data: Vec<u8>,
}

/// An opened streams store.
pub trait StreamReader {
    /// Reads the whole of `stream` (every field of every event, materialised); calls
    /// `f(version, data)` for each, in version order; returns the count.
    fn load(&mut self, stream: &str, f: &mut dyn FnMut(u64, &[u8])) -> R<u64>;

    /// Closes it.
    fn close(self: Box<Self>) -> R<()>;
}

/// Event type names of the streams store.
pub const EVENT_TYPES: [&str; 4] = ["OrderPlaced", "ItemAdded", "ItemRemoved", "OrderShipped"];

/// The streams store's events: `count` events of `data_bytes` over `streams` streams
/// `s-<n>`, each event's stream drawn at random (seeded), in log order.
pub fn stream_events(count: u64, streams: u64, data_bytes: usize) -> StreamEvents {
    StreamEvents {
        rng: crate::payload::XorShift::new(STREAM_SEED),
        pool: crate::payload::pool(1_000, data_bytes, STREAM_SEED + 1),
        versions: vec![0u64; streams as usize],
        next: 0,
        count,
    }
}

/// The number of events of each stream `s-<n>` in [`stream_events`]`(count, streams, _)`.
pub fn stream_lengths(count: u64, streams: u64) -> Vec<u64> {
    let mut rng = crate::payload::XorShift::new(STREAM_SEED);
    let mut lengths = vec![0u64; streams as usize];
    for _ in 0..count {
        lengths[rng.below(streams) as usize] += 1;
    }
    lengths
}

const STREAM_SEED: u64 = 0x57EA_4D00;

/// The iterator of [`stream_events`].
#[derive(Debug)]
pub struct StreamEvents {
    rng: crate::payload::XorShift,
    pool: Vec<Vec<u8>>,
    versions: Vec<u64>,
    next: u64,
    count: u64,
}

impl Iterator for StreamEvents {
    type Item = StreamEvent;

    fn next(&mut self) -> Option<StreamEvent> {
        if self.next == self.count {
            return None;
        }
        let i = self.next;
        self.next += 1;
        let s = self.rng.below(self.versions.len() as u64) as usize;
        let version = self.versions[s];
        self.versions[s] += 1;
        Some(StreamEvent {
            stream: format!("s-{s}"),
            version,
            event_type: EVENT_TYPES[(i % EVENT_TYPES.len() as u64) as usize],
            data: self.pool[(i % self.pool.len() as u64) as usize].clone(),
        })
    }
}
