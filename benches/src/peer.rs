//! okaywal as a peer reference for durable appends.
//!
//! okaywal 0.3 is the best Rust write-ahead log measured on this machine (the issue quotes
//! about 27k durable appends/s with 8 writers and 67k with 32). It runs with its default
//! configuration; each append is one entry of one 256-byte chunk, committed (`commit`
//! returns after okaywal's shared `fdatasync`). It is not a target, only context for the
//! plain-file group commit figures.

use std::io;
use std::path::Path;

use okaywal::{LogVoid, WriteAheadLog};

/// An okaywal log. Thread-safe: share it by reference.
#[derive(Debug)]
pub struct OkayWal {
    wal: WriteAheadLog,
}

impl OkayWal {
    /// Opens (creating) an okaywal log in `dir`; existing entries are abandoned.
    pub fn open(dir: &Path) -> io::Result<Self> {
        Ok(OkayWal { wal: WriteAheadLog::recover(dir, LogVoid)? })
    }

    /// Appends `payload` as one entry and returns once it is durable.
    pub fn append(&self, payload: &[u8]) -> io::Result<()> {
        let mut entry = self.wal.begin_entry()?;
        entry.write_chunk(payload)?;
        entry.commit()?;
        Ok(())
    }

    /// Appends every payload as a chunk of one entry and commits it: one fsync for all.
    pub fn append_all<'a>(&self, payloads: impl IntoIterator<Item = &'a [u8]>) -> io::Result<()> {
        let mut entry = self.wal.begin_entry()?;
        for p in payloads {
            entry.write_chunk(p)?;
        }
        entry.commit()?;
        Ok(())
    }

    /// Shuts the log down (waits for its checkpointing thread).
    pub fn shutdown(self) -> io::Result<()> {
        self.wal.shutdown()
    }
}
