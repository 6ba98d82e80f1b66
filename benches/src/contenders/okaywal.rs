//! okaywal 0.3 with its default configuration ([`crate::peer::OkayWal`]).
//!
//! okaywal is a write-ahead log that checkpoints its entries away (to a `LogManager`, here
//! one that keeps nothing) once enough are written: it is no store, so it runs the write
//! workloads only. Bulk: one entry of every event as a chunk, one commit (its one fsync).
//! Durable: one entry of one chunk per append, committed (okaywal's shared fsync).

use std::path::Path;

use super::{Closer, Contender, Durable, Kind, Opened, Workload};
use crate::peer::OkayWal;
use crate::report::R;

pub struct Okaywal;

impl Contender for Okaywal {
    fn kind(&self) -> Kind {
        Kind::Okaywal
    }

    fn describe(&self) -> String {
        "okaywal 0.3, default configuration; bulk: one entry with every event as a chunk, one \
         commit; durable: an entry of one chunk per append, committed; no reads (it \
         checkpoints entries away)"
            .into()
    }

    fn supports(&self, w: Workload) -> bool {
        matches!(w, Workload::Bulk | Workload::Durable)
    }

    fn bulk(&self, dir: &Path, events: u64, pool: &[Vec<u8>]) -> R<Box<dyn Closer>> {
        let wal = OkayWal::open(dir)?;
        wal.append_all((0..events).map(|s| pool[(s % pool.len() as u64) as usize].as_slice()))?;
        Ok(Box::new(wal))
    }

    fn durable(&self, dir: &Path, _threads: usize) -> R<Box<dyn Durable>> {
        Ok(Box::new(Counted { wal: OkayWal::open(dir)?, ops: Default::default() }))
    }

    fn open(&self, _dir: &Path) -> R<Box<dyn Opened>> {
        Err("okaywal keeps no events to open".into())
    }
}

impl Closer for OkayWal {
    fn close(self: Box<Self>) -> R<()> {
        Ok(self.shutdown()?)
    }
}

/// okaywal reports no count: the adapter counts its committed appends.
struct Counted {
    wal: OkayWal,
    ops: std::sync::atomic::AtomicU64,
}

impl Durable for Counted {
    fn append(&self, _thread: usize, payload: &[u8]) -> R<()> {
        self.wal.append(payload)?;
        self.ops.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn finish(self: Box<Self>, ops: u64) -> R<()> {
        let n = self.ops.into_inner();
        if n != ops {
            return Err(format!("okaywal committed {n} appends, the threads made {ops}").into());
        }
        Ok(self.wal.shutdown()?)
    }
}
