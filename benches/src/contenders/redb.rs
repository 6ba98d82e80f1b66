//! redb, one table `events: u64 -> &[u8]` (key = seq).
//!
//! - Bulk: one write transaction holding every insert, committed with
//!   `Durability::Immediate` (the one sync; redb's `Durability::None` commits would only
//!   defer it, and pin the pages of every uncommitted transaction).
//! - Durable: one write transaction per append, `Durability::Immediate`; redb has one
//!   writer at a time, so concurrent appends queue on `begin_write`.
//! - Replay: a read transaction's range over the table. Point reads: `get(seq)`. redb
//!   keeps no checksums of its data pages (it checksums its commit slots), so nothing else
//!   is verified.
//! - Open: `Database::open`; after a crash redb repairs its allocator state first.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, ReadOnlyTable, ReadableDatabase, ReadableTableMetadata, TableDefinition};

use super::{Closer, Contender, Durable, Kind, Opened, Workload};
use crate::report::R;

const FILE: &str = "events.redb";
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

pub struct Redb;

impl Contender for Redb {
    fn kind(&self) -> Kind {
        Kind::Redb
    }

    fn describe(&self) -> String {
        "redb 4 (default cache), table u64 -> &[u8] keyed by seq; bulk: one write transaction, \
         Durability::Immediate commit; durable: one write transaction per append, Immediate"
            .into()
    }

    fn supports(&self, w: Workload) -> bool {
        !matches!(w, Workload::Stream | Workload::Follow)
    }

    fn bulk(&self, dir: &Path, events: u64, pool: &[Vec<u8>]) -> R<Box<dyn Closer>> {
        std::fs::create_dir_all(dir)?;
        let db = Database::create(dir.join(FILE))?;
        let mut tx = db.begin_write()?;
        tx.set_durability(redb::Durability::Immediate)?;
        {
            let mut t = tx.open_table(EVENTS)?;
            for seq in 0..events {
                t.insert(seq, pool[(seq % pool.len() as u64) as usize].as_slice())?;
            }
        }
        tx.commit()?;
        Ok(Box::new(RedbDb(db)))
    }

    fn durable(&self, dir: &Path, _threads: usize) -> R<Box<dyn Durable>> {
        std::fs::create_dir_all(dir)?;
        let db = Database::create(dir.join(FILE))?;
        Ok(Box::new(RedbDurable { db, next: AtomicU64::new(0) }))
    }

    fn open(&self, dir: &Path) -> R<Box<dyn Opened>> {
        let db = Database::open(dir.join(FILE))?;
        let table = db.begin_read()?.open_table(EVENTS)?;
        let events = table.len()?;
        Ok(Box::new(RedbOpened { _db: db, table, events }))
    }
}

struct RedbDb(Database);

impl Closer for RedbDb {
    fn close(self: Box<Self>) -> R<()> {
        drop(self.0);
        Ok(())
    }
}

struct RedbDurable {
    db: Database,
    next: AtomicU64,
}

impl Durable for RedbDurable {
    fn append(&self, _thread: usize, payload: &[u8]) -> R<()> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(redb::Durability::Immediate)?;
        {
            let mut t = tx.open_table(EVENTS)?;
            // Write transactions are serial: the counter moves under the writer's lock.
            let seq = self.next.fetch_add(1, Ordering::Relaxed);
            t.insert(seq, payload)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn finish(self: Box<Self>, ops: u64) -> R<()> {
        let n = self.db.begin_read()?.open_table(EVENTS)?.len()?;
        if n != ops {
            return Err(format!("redb holds {n} events, the threads made {ops}").into());
        }
        Ok(())
    }
}

struct RedbOpened {
    _db: Database,
    table: ReadOnlyTable<u64, &'static [u8]>,
    events: u64,
}

impl Opened for RedbOpened {
    fn events(&mut self) -> R<u64> {
        Ok(self.events)
    }

    fn replay(&mut self, f: &mut dyn FnMut(u64, &[u8])) -> R<u64> {
        let mut n = 0;
        for item in self.table.range::<u64>(..)? {
            let (k, v) = item?;
            f(k.value(), v.value());
            n += 1;
        }
        Ok(n)
    }

    fn read(&mut self, seq: u64, f: &mut dyn FnMut(&[u8])) -> R<()> {
        let v = self.table.get(seq)?.ok_or_else(|| format!("redb has no event {seq}"))?;
        f(v.value());
        Ok(())
    }

    fn close(self: Box<Self>) -> R<()> {
        Ok(())
    }
}
