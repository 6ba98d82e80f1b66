//! annal at the log level ([`annal::Log`]) and at the store level ([`annal::Store`]).
//!
//! - Bulk: `Durability::None`, `append` of each batch, then `sync` (the one fsync; rolls
//!   sync the segments they seal). The store appends each batch to stream `bulk` with
//!   `ExpectedVersion::Exact`.
//! - Durable: `Options::default()` (`Durability::Sync`, group commit). The store: thread
//!   `t` appends to stream `w-<t>` with `ExpectedVersion::NoStream`, then `Exact`.
//! - Replay: the log's cursor from 0 (every record's CRC checked); the store's `read_all`
//!   (the same, plus decoding each event).
//! - Point reads: `Log::read(seq)`; the store's `event(seq)` (the same point read, plus
//!   decoding the event and finding its version in the stream index).
//! - Open: `Log::open` / `Store::open` with default options.
//! - Streams (store only): one `append` per event with `Exact` while building;
//!   `read_stream(stream, 0, Forward, all)` to load one.
//! - Follow (store only): `Options::default()` (`Durability::Sync`); one `EventCounts`
//!   projection on a `ProjectionRunner` with default options, waited on with
//!   `ProjectionHandle::wait_for(seq)`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use std::time::Duration;

use annal::{
    Direction, Durability, EventCounts, ExpectedVersion, Log, NewEvent, Options, ProjectionHandle,
    ProjectionOptions, ProjectionRunner, Store, StoreOptions,
};
use bytes::Bytes;

use super::{
    Closer, Contender, Durable, Followed, Kind, Opened, StreamEvent, StreamReader, Workload,
};
use crate::report::R;

/// The event type of the log-level workloads at the store level.
const EVENT_TYPE: &str = "E";

fn bulk_options() -> Options {
    Options { durability: Durability::None, ..Options::default() }
}

/// `NoStream` for an empty stream, else `Exact` of its last version.
fn expected(next_version: u64) -> ExpectedVersion {
    match next_version {
        0 => ExpectedVersion::NoStream,
        n => ExpectedVersion::Exact(n - 1),
    }
}

pub struct AnnalLog;

impl Contender for AnnalLog {
    fn kind(&self) -> Kind {
        Kind::AnnalLog
    }

    fn describe(&self) -> String {
        "annal::Log, 64 MiB segments; bulk: Durability::None + one sync; durable: \
         Options::default() (Durability::Sync, group commit)"
            .into()
    }

    fn supports(&self, w: Workload) -> bool {
        !matches!(w, Workload::Stream | Workload::Follow)
    }

    fn bulk(&self, dir: &Path, events: u64, pool: &[Vec<u8>]) -> R<Box<dyn Closer>> {
        let log = Log::open(dir, bulk_options())?;
        let mut left = events;
        while left > 0 {
            let n = left.min(pool.len() as u64) as usize;
            log.append(&pool[..n])?;
            left -= n as u64;
        }
        log.sync()?;
        if log.durable_head() != events.checked_sub(1) {
            return Err(
                format!("annal: durable head {:?} after {events}", log.durable_head()).into()
            );
        }
        Ok(Box::new(log))
    }

    fn durable(&self, dir: &Path, _threads: usize) -> R<Box<dyn Durable>> {
        Ok(Box::new(Log::open(dir, Options::default())?))
    }

    fn open(&self, dir: &Path) -> R<Box<dyn Opened>> {
        Ok(Box::new(Log::open(dir, Options::default())?))
    }
}

impl Closer for Log {
    fn close(self: Box<Self>) -> R<()> {
        Ok(Log::close(*self)?)
    }
}

impl Durable for Log {
    fn append(&self, _thread: usize, payload: &[u8]) -> R<()> {
        Log::append(self, &[payload])?;
        Ok(())
    }

    fn finish(self: Box<Self>, ops: u64) -> R<()> {
        let n = self.stats().appends;
        Log::close(*self)?;
        if n != ops {
            return Err(format!("annal counted {n} appends, the threads made {ops}").into());
        }
        Ok(())
    }
}

impl Opened for Log {
    fn events(&mut self) -> R<u64> {
        Ok(self.visible_end())
    }

    fn replay(&mut self, f: &mut dyn FnMut(u64, &[u8])) -> R<u64> {
        let mut n = 0;
        for r in self.cursor(0) {
            let r = r?;
            f(r.seq, &r.payload);
            n += 1;
        }
        Ok(n)
    }

    fn read(&mut self, seq: u64, f: &mut dyn FnMut(&[u8])) -> R<()> {
        f(&Log::read(self, seq)?.payload);
        Ok(())
    }

    fn close(self: Box<Self>) -> R<()> {
        Ok(Log::close(*self)?)
    }
}

pub struct AnnalStore;

impl Contender for AnnalStore {
    fn kind(&self) -> Kind {
        Kind::AnnalStore
    }

    fn describe(&self) -> String {
        "annal::Store over the same log; appends with ExpectedVersion::Exact (each event gets \
         a type, a UUID v7 id and a timestamp: about 60 bytes more per record); point reads \
         via Store::event(seq)"
            .into()
    }

    fn supports(&self, _w: Workload) -> bool {
        true
    }

    fn bulk(&self, dir: &Path, events: u64, pool: &[Vec<u8>]) -> R<Box<dyn Closer>> {
        let store = Store::open(dir, StoreOptions { log: bulk_options(), ..Default::default() })?;
        let data: Vec<Bytes> = pool.iter().map(|p| Bytes::copy_from_slice(p)).collect();
        let mut version = 0u64;
        while version < events {
            let n = (events - version).min(pool.len() as u64) as usize;
            let batch: Vec<NewEvent> =
                data[..n].iter().map(|d| NewEvent::new(EVENT_TYPE, d.clone())).collect();
            let r = store.append("bulk", expected(version), &batch)?;
            if r.first_version != version {
                return Err(
                    format!("annal store: version {} not {version}", r.first_version).into()
                );
            }
            version += n as u64;
        }
        store.log().sync()?;
        Ok(Box::new(store))
    }

    fn durable(&self, dir: &Path, threads: usize) -> R<Box<dyn Durable>> {
        let store = Store::open(dir, StoreOptions::default())?;
        Ok(Box::new(StoreDurable {
            store,
            versions: (0..threads).map(|_| AtomicU64::new(0)).collect(),
        }))
    }

    fn open(&self, dir: &Path) -> R<Box<dyn Opened>> {
        Ok(Box::new(Store::open(dir, StoreOptions::default())?))
    }

    fn build_streams(&self, dir: &Path, events: &mut dyn Iterator<Item = StreamEvent>) -> R<()> {
        let store = Store::open(dir, StoreOptions { log: bulk_options(), ..Default::default() })?;
        for e in events {
            let ev = NewEvent::new(e.event_type, e.data);
            store.append(&e.stream, expected(e.version), &[ev])?;
        }
        store.log().sync()?;
        store.close()?;
        Ok(())
    }

    fn open_streams(&self, dir: &Path) -> R<Box<dyn StreamReader>> {
        Ok(Box::new(Store::open(dir, StoreOptions::default())?))
    }

    fn follow(&self, dir: &Path) -> R<Box<dyn Followed>> {
        let store = Store::open(dir, StoreOptions::default())?;
        let runner = ProjectionRunner::new(store.clone());
        let counts = runner.spawn(EventCounts::new("counts"), ProjectionOptions::default())?;
        Ok(Box::new(StoreFollowed { store, runner, counts, next_version: 0 }))
    }
}

/// How long a follower may take to see an event before the measurement fails.
const FOLLOW_WAIT: Duration = Duration::from_secs(60);

struct StoreFollowed {
    store: Store,
    runner: ProjectionRunner,
    counts: ProjectionHandle<EventCounts>,
    next_version: u64,
}

impl Followed for StoreFollowed {
    fn append(&mut self, payload: &[u8]) -> R<u64> {
        let ev = NewEvent::new(EVENT_TYPE, Bytes::copy_from_slice(payload));
        let r = self.store.append("follow", expected(self.next_version), &[ev])?;
        self.next_version += 1;
        Ok(r.last_seq())
    }

    fn wait_seen(&mut self, seq: u64) -> R<()> {
        Ok(self.counts.wait_for(seq, FOLLOW_WAIT)?)
    }

    fn finish(self: Box<Self>, events: u64) -> R<()> {
        let seen = self.counts.read_model().read(|v| v.total());
        self.counts.stop()?;
        drop(self.runner);
        self.store.close()?;
        if seen != events {
            return Err(format!("the projection counted {seen} of {events} events").into());
        }
        Ok(())
    }
}

impl Closer for Store {
    fn close(self: Box<Self>) -> R<()> {
        Ok(Store::close(*self)?)
    }
}

struct StoreDurable {
    store: Store,
    /// Next version of each thread's stream `w-<t>`.
    versions: Vec<AtomicU64>,
}

impl Durable for StoreDurable {
    fn append(&self, thread: usize, payload: &[u8]) -> R<()> {
        let v = self.versions[thread].load(Ordering::Relaxed);
        let ev = NewEvent::new(EVENT_TYPE, Bytes::copy_from_slice(payload));
        let r = self.store.append(&format!("w-{thread}"), expected(v), &[ev])?;
        if r.first_version != v {
            return Err(format!("w-{thread}: version {} not {v}", r.first_version).into());
        }
        self.versions[thread].store(v + 1, Ordering::Relaxed);
        Ok(())
    }

    fn finish(self: Box<Self>, ops: u64) -> R<()> {
        let held: u64 = (0..self.versions.len())
            .map(|t| self.store.stream_version(&format!("w-{t}")).map_or(0, |v| v + 1))
            .sum();
        self.store.close()?;
        if held != ops {
            return Err(format!("annal store holds {held} events, the threads made {ops}").into());
        }
        Ok(())
    }
}

impl Opened for Store {
    fn events(&mut self) -> R<u64> {
        Ok(self.log().visible_end())
    }

    fn replay(&mut self, f: &mut dyn FnMut(u64, &[u8])) -> R<u64> {
        let mut n = 0;
        for e in self.read_all(0) {
            let e = e?;
            f(e.seq, &e.data);
            n += 1;
        }
        Ok(n)
    }

    fn read(&mut self, seq: u64, f: &mut dyn FnMut(&[u8])) -> R<()> {
        let e = self.event(seq)?.ok_or_else(|| format!("annal has no event {seq}"))?;
        f(&e.data);
        Ok(())
    }

    fn close(self: Box<Self>) -> R<()> {
        Ok(Store::close(*self)?)
    }
}

impl StreamReader for Store {
    fn load(&mut self, stream: &str, f: &mut dyn FnMut(u64, &[u8])) -> R<u64> {
        let v = self.read_stream(stream, 0, Direction::Forward, usize::MAX)?;
        for e in &v {
            f(e.version, &e.data);
        }
        Ok(v.len() as u64)
    }

    fn close(self: Box<Self>) -> R<()> {
        Ok(Store::close(*self)?)
    }
}
