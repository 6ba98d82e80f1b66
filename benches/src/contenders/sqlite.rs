//! SQLite (rusqlite, bundled) in WAL mode, one `events` table:
//! `events(seq INTEGER PRIMARY KEY, stream TEXT, version INTEGER, type TEXT, data BLOB,
//! UNIQUE(stream, version))`.
//!
//! - Bulk: `synchronous = OFF`, one transaction per batch of prepared inserts (stream
//!   `bulk`, version = seq), then one `fdatasync` of the database and WAL files: the one
//!   sync at the end that the other contenders make.
//! - Durable: `synchronous = FULL` (every commit fsyncs the WAL), one autocommit insert per
//!   append, on one connection behind a mutex shared by the threads (SQLite has one writer
//!   at a time; connections per thread would add busy-wait sleeps, which is worse).
//!   Thread `t` appends to stream `w-<t>` with the next version.
//! - Replay: `SELECT seq, data ORDER BY seq`. SQLite keeps no checksums of its pages, so
//!   nothing is verified beyond what the reader checks (count, payloads).
//! - Point reads: `SELECT data WHERE seq = ?` through the rowid b-tree.
//! - Open: `Connection::open` and `SELECT max(seq)`; after a crash the first read
//!   recovers the WAL.
//! - Follow: the durable writer's connection (`synchronous = FULL`, one autocommit insert
//!   per append) and a reader thread with a connection of its own that polls
//!   `SELECT seq, data WHERE seq >= ? ORDER BY seq` every [`POLL`] while nothing is new,
//!   counting the rows it sees (what a projection would apply) and waking the waiter.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rusqlite::Connection;

use super::{
    Closer, Contender, Durable, Followed, Kind, Opened, StreamEvent, StreamReader, Workload,
};
use crate::report::R;

const FILE: &str = "events.db";

const SCHEMA: &str = "CREATE TABLE events(seq INTEGER PRIMARY KEY, stream TEXT NOT NULL, \
                      version INTEGER NOT NULL, type TEXT NOT NULL, data BLOB NOT NULL, \
                      UNIQUE(stream, version));";

const INSERT: &str =
    "INSERT INTO events(seq, stream, version, type, data) VALUES (?1, ?2, ?3, ?4, ?5)";

/// How long the follower's reader sleeps when a poll found nothing new.
pub const POLL: Duration = Duration::from_micros(100);

/// Rows per transaction when building the streams store.
const BUILD_TX_ROWS: usize = 10_000;

pub struct Sqlite;

fn create(dir: &Path, synchronous: &str) -> R<Connection> {
    std::fs::create_dir_all(dir)?;
    let conn = Connection::open(dir.join(FILE))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// `fdatasync` of the database file and its WAL (where there is one).
fn sync_files(dir: &Path) -> R<()> {
    let db = dir.join(FILE);
    File::open(&db)?.sync_data()?;
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    if wal.exists() {
        File::open(&wal)?.sync_data()?;
    }
    Ok(())
}

impl Contender for Sqlite {
    fn kind(&self) -> Kind {
        Kind::Sqlite
    }

    fn describe(&self) -> String {
        format!(
            "SQLite {} (rusqlite, bundled), WAL; events table with UNIQUE(stream, version); \
             synchronous=OFF + batch transactions + one fdatasync of db and WAL for bulk, \
             synchronous=FULL and one autocommit insert per durable append (one connection \
             behind a mutex)",
            rusqlite::version()
        )
    }

    fn supports(&self, _w: Workload) -> bool {
        true
    }

    fn bulk(&self, dir: &Path, events: u64, pool: &[Vec<u8>]) -> R<Box<dyn Closer>> {
        let mut conn = create(dir, "OFF")?;
        let mut seq = 0u64;
        while seq < events {
            let n = (events - seq).min(pool.len() as u64);
            let tx = conn.transaction()?;
            {
                let mut ins = tx.prepare_cached(INSERT)?;
                for i in 0..n {
                    let s = (seq + i) as i64;
                    ins.execute((s, "bulk", s, "E", &pool[i as usize]))?;
                }
            }
            tx.commit()?;
            seq += n;
        }
        sync_files(dir)?;
        Ok(Box::new(SqliteCloser(conn)))
    }

    fn durable(&self, dir: &Path, threads: usize) -> R<Box<dyn Durable>> {
        let conn = create(dir, "FULL")?;
        Ok(Box::new(SqliteDurable {
            conn: Mutex::new((conn, 0)),
            versions: (0..threads).map(|_| Mutex::new(0)).collect(),
        }))
    }

    fn open(&self, dir: &Path) -> R<Box<dyn Opened>> {
        let conn = Connection::open(dir.join(FILE))?;
        let max: Option<i64> = conn.query_row("SELECT max(seq) FROM events", [], |r| r.get(0))?;
        let events = max.map_or(0, |m| m as u64 + 1);
        Ok(Box::new(SqliteOpened { conn, events }))
    }

    fn build_streams(&self, dir: &Path, events: &mut dyn Iterator<Item = StreamEvent>) -> R<()> {
        let mut conn = create(dir, "OFF")?;
        let mut seq = 0i64;
        loop {
            let tx = conn.transaction()?;
            let mut n = 0;
            {
                let mut ins = tx.prepare_cached(INSERT)?;
                for e in (&mut *events).take(BUILD_TX_ROWS) {
                    ins.execute((seq, &e.stream, e.version as i64, e.event_type, &e.data))?;
                    seq += 1;
                    n += 1;
                }
            }
            tx.commit()?;
            if n < BUILD_TX_ROWS {
                break;
            }
        }
        sync_files(dir)?;
        conn.close().map_err(|(_, e)| e)?;
        Ok(())
    }

    fn open_streams(&self, dir: &Path) -> R<Box<dyn StreamReader>> {
        Ok(Box::new(SqliteOpened { conn: Connection::open(dir.join(FILE))?, events: 0 }))
    }

    fn follow(&self, dir: &Path) -> R<Box<dyn Followed>> {
        let conn = create(dir, "FULL")?;
        let seen = Arc::new((Mutex::new(Seen::default()), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = Connection::open(dir.join(FILE))?;
        let thread = {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("sqlite-follower".into())
                .spawn(move || poll_rows(&reader, &seen, &stop))?
        };
        Ok(Box::new(SqliteFollowed { conn, next: 0, seen, stop, thread: Some(thread) }))
    }
}

/// What the follower's reader has seen.
#[derive(Debug, Default)]
struct Seen {
    /// One past the last seq it read.
    end: u64,
    /// Rows it counted.
    rows: u64,
    /// Why it ended, if it failed.
    failed: Option<String>,
}

type SeenShared = Arc<(Mutex<Seen>, Condvar)>;

/// The follower's reader: reads new rows in seq order, counts them, publishes how far it got.
fn poll_rows(conn: &Connection, seen: &SeenShared, stop: &AtomicBool) {
    let (lock, cond) = &**seen;
    let poll = || -> R<u64> {
        let from = lock.lock().unwrap_or_else(|e| e.into_inner()).end;
        let mut st =
            conn.prepare_cached("SELECT seq, data FROM events WHERE seq >= ?1 ORDER BY seq")?;
        let mut rows = st.query([from as i64])?;
        let (mut n, mut end) = (0u64, from);
        while let Some(r) = rows.next()? {
            let seq: i64 = r.get(0)?;
            let _ = r.get_ref(1)?.as_blob()?;
            end = seq as u64 + 1;
            n += 1;
        }
        if n > 0 {
            let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
            s.end = end;
            s.rows += n;
            cond.notify_all();
        }
        Ok(n)
    };
    while !stop.load(Ordering::Acquire) {
        match poll() {
            Ok(0) => std::thread::sleep(POLL),
            Ok(_) => {}
            Err(e) => {
                lock.lock().unwrap_or_else(|e| e.into_inner()).failed = Some(e.to_string());
                cond.notify_all();
                return;
            }
        }
    }
}

struct SqliteFollowed {
    conn: Connection,
    /// The next seq (the version too: one stream).
    next: i64,
    seen: SeenShared,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Followed for SqliteFollowed {
    fn append(&mut self, payload: &[u8]) -> R<u64> {
        let seq = self.next;
        self.conn.prepare_cached(INSERT)?.execute((seq, "follow", seq, "E", payload))?;
        self.next += 1;
        Ok(seq as u64)
    }

    fn wait_seen(&mut self, seq: u64) -> R<()> {
        let (lock, cond) = &*self.seen;
        let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
        while s.end <= seq {
            if let Some(e) = &s.failed {
                return Err(format!("the SQLite follower failed: {e}").into());
            }
            let (next, timeout) =
                cond.wait_timeout(s, Duration::from_secs(60)).unwrap_or_else(|e| e.into_inner());
            if timeout.timed_out() {
                return Err(format!("the SQLite follower did not see seq {seq}").into());
            }
            s = next;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>, events: u64) -> R<()> {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.join().map_err(|_| "the SQLite follower panicked")?;
        }
        let rows = self.seen.0.lock().unwrap_or_else(|e| e.into_inner()).rows;
        let SqliteFollowed { conn, .. } = *self;
        conn.close().map_err(|(_, e)| e)?;
        if rows != events {
            return Err(format!("the SQLite follower counted {rows} of {events} rows").into());
        }
        Ok(())
    }
}

struct SqliteCloser(Connection);

impl Closer for SqliteCloser {
    fn close(self: Box<Self>) -> R<()> {
        self.0.close().map_err(|(_, e)| e)?;
        Ok(())
    }
}

struct SqliteDurable {
    /// The connection and the next seq.
    conn: Mutex<(Connection, i64)>,
    /// Next version of each thread's stream.
    versions: Vec<Mutex<i64>>,
}

impl Durable for SqliteDurable {
    fn append(&self, thread: usize, payload: &[u8]) -> R<()> {
        let mut v = self.versions[thread].lock().unwrap_or_else(|e| e.into_inner());
        let mut c = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let seq = c.1;
        let stream = format!("w-{thread}");
        c.0.prepare_cached(INSERT)?.execute((seq, &stream, *v, "E", payload))?;
        c.1 += 1;
        *v += 1;
        Ok(())
    }

    fn finish(self: Box<Self>, ops: u64) -> R<()> {
        let (conn, _) = self.conn.into_inner().unwrap_or_else(|e| e.into_inner());
        let n: i64 = conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?;
        if n as u64 != ops {
            return Err(format!("SQLite holds {n} events, the threads made {ops}").into());
        }
        conn.close().map_err(|(_, e)| e)?;
        Ok(())
    }
}

struct SqliteOpened {
    conn: Connection,
    events: u64,
}

/// A row of the events table, every column materialised (what a stream read returns).
#[allow(dead_code, reason = "the fields are what a reader would get; only some are checked")]
struct Row {
    seq: i64,
    stream: String,
    version: i64,
    event_type: String,
    data: Vec<u8>,
}

impl Opened for SqliteOpened {
    fn events(&mut self) -> R<u64> {
        Ok(self.events)
    }

    fn replay(&mut self, f: &mut dyn FnMut(u64, &[u8])) -> R<u64> {
        let mut st = self.conn.prepare_cached("SELECT seq, data FROM events ORDER BY seq")?;
        let mut rows = st.query([])?;
        let mut n = 0;
        while let Some(r) = rows.next()? {
            let seq: i64 = r.get(0)?;
            f(seq as u64, r.get_ref(1)?.as_blob()?);
            n += 1;
        }
        Ok(n)
    }

    fn read(&mut self, seq: u64, f: &mut dyn FnMut(&[u8])) -> R<()> {
        let mut st = self.conn.prepare_cached("SELECT data FROM events WHERE seq = ?1")?;
        let mut rows = st.query([seq as i64])?;
        let r = rows.next()?.ok_or_else(|| format!("SQLite has no event {seq}"))?;
        f(r.get_ref(0)?.as_blob()?);
        Ok(())
    }

    fn close(self: Box<Self>) -> R<()> {
        self.conn.close().map_err(|(_, e)| e)?;
        Ok(())
    }
}

impl StreamReader for SqliteOpened {
    fn load(&mut self, stream: &str, f: &mut dyn FnMut(u64, &[u8])) -> R<u64> {
        let mut st = self.conn.prepare_cached(
            "SELECT seq, stream, version, type, data FROM events WHERE stream = ?1 \
             ORDER BY version",
        )?;
        let rows = st.query_map([stream], |r| {
            Ok(Row {
                seq: r.get(0)?,
                stream: r.get(1)?,
                version: r.get(2)?,
                event_type: r.get(3)?,
                data: r.get(4)?,
            })
        })?;
        let v: Vec<Row> = rows.collect::<Result<_, _>>()?;
        for r in &v {
            f(r.version as u64, &r.data);
        }
        Ok(v.len() as u64)
    }

    fn close(self: Box<Self>) -> R<()> {
        Opened::close(self)
    }
}
