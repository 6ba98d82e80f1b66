//! Leader/follower group commit over a preallocated plain file: the baseline of durable
//! appends from many threads.
//!
//! The shape is the one annal's brief names and raft-engine's write barrier uses, done as
//! cheaply as we know how:
//! - An appender encodes its batch on its own thread ([`PreparedBatch::new`]: record headers
//!   and payload CRCs), takes the queue lock, pushes the batch and gets a ticket (its
//!   position in the queue order).
//! - If no leader is active it becomes the leader: it takes the whole queue, drops the lock,
//!   fills in seqs and offsets ([`PreparedBatch::finalize`]), writes the group with one
//!   `write_all_at` and makes it durable with one `sync_data`, then publishes a durable
//!   watermark (the last ticket of the group) and wakes everyone with one `notify_all`.
//! - Followers sleep on the condvar until the watermark covers their ticket, or until the
//!   leader seat is free and they take it (their batch was queued during the previous
//!   fsync: the next group is everything that queued meanwhile).
//! - The condvar is notified after the lock is released: woken followers then find it free
//!   instead of waking into a held lock and going back to sleep (this alone costs about a
//!   third more CPU per append with 32 threads on 2 cores).
//!
//! Compared with annal there is no per-append channel, no segment roll, no index, no
//! readers to publish to: a watermark replaces all of that. Reads of this file use
//! [`crate::plain`].

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard};

use annal::format::{Placement, PreparedBatch};

use crate::plain::{PLAIN_HEADER_BYTES, PLAIN_LOG_TAG, preallocate, zero_fill};

/// How the file's space is prepared ahead of the writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// `fallocate` chunks of this many bytes (unwritten extents, as annal's segments).
    Fallocate(u64),
    /// Write and sync zeros in chunks of this many bytes before use, so an append is a
    /// plain overwrite of initialized blocks (PostgreSQL's WAL segments).
    ZeroFill(u64),
    /// Nothing reserved: every append extends the file, and every fdatasync also commits
    /// the new size and blocks to the journal.
    Grow,
}

impl Space {
    fn chunk(self) -> u64 {
        match self {
            Space::Fallocate(n) | Space::ZeroFill(n) => n,
            Space::Grow => 0,
        }
    }

    fn reserve(self, file: &File, offset: u64, len: u64) -> io::Result<()> {
        match self {
            Space::Fallocate(_) => preallocate(file, offset, len),
            Space::ZeroFill(_) => zero_fill(file, offset, len),
            Space::Grow => Ok(()),
        }
    }
}

/// The queue and the durable watermark, under one lock.
#[derive(Default)]
struct State {
    queue: Vec<PreparedBatch>,
    /// An empty vector kept for the next leader to swap in, so the queue is not reallocated.
    spare: Vec<PreparedBatch>,
    /// Tickets handed out (batches ever queued).
    enqueued: u64,
    /// Every ticket up to this one is durable.
    durable: u64,
    leader: bool,
    /// The first failed write or fsync: later appends fail too, nothing is retried.
    failed: Option<(io::ErrorKind, String)>,
}

/// The file and positions, touched only by the current leader.
struct Writer {
    file: File,
    space: Space,
    pos: u64,
    synced: u64,
    allocated: u64,
    next_seq: u64,
    buf: Vec<u8>,
    fsyncs: u64,
}

/// A plain file with leader/follower group commit. Thread-safe: share it by reference.
pub struct GroupCommitFile {
    state: Mutex<State>,
    cond: Condvar,
    writer: Mutex<Writer>,
}

impl std::fmt::Debug for GroupCommitFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommitFile").finish_non_exhaustive()
    }
}

impl GroupCommitFile {
    /// Creates `path` (it must not exist) with its first chunk of space prepared as `space`
    /// says, writes its header and syncs it. Later chunks are prepared by the leader that
    /// needs them.
    pub fn create(path: &Path, space: Space) -> io::Result<Self> {
        let mut file =
            std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        let first = space.chunk().max(PLAIN_HEADER_BYTES);
        space.reserve(&file, 0, first)?;
        let mut header = [0u8; PLAIN_HEADER_BYTES as usize];
        header[..8].copy_from_slice(b"PLAINLOG");
        file.write_all(&header)?;
        file.sync_data()?;
        let writer = Writer {
            file,
            space,
            pos: PLAIN_HEADER_BYTES,
            synced: PLAIN_HEADER_BYTES,
            allocated: first,
            next_seq: 0,
            buf: Vec::new(),
            fsyncs: 0,
        };
        Ok(GroupCommitFile {
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
            writer: Mutex::new(writer),
        })
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `payloads` as one batch and returns once it is durable (`sync_data`).
    pub fn append<P: AsRef<[u8]>>(&self, payloads: &[P]) -> io::Result<()> {
        let batch = PreparedBatch::new(payloads);
        let mut st = self.lock_state();
        st.queue.push(batch);
        st.enqueued += 1;
        let ticket = st.enqueued;
        loop {
            if st.durable >= ticket {
                return Ok(());
            }
            if let Some((kind, msg)) = &st.failed {
                return Err(io::Error::new(*kind, msg.clone()));
            }
            if !st.leader {
                st.leader = true;
                let mut group = std::mem::take(&mut st.spare);
                std::mem::swap(&mut group, &mut st.queue);
                let through = st.enqueued;
                drop(st);
                let result = self.write_group(&mut group);
                group.clear();
                let mut st = self.lock_state();
                st.spare = group;
                st.leader = false;
                match &result {
                    Ok(()) => st.durable = through,
                    Err(e) => st.failed = Some((e.kind(), e.to_string())),
                }
                // Wake the others only after unlocking, so they do not wake into a held
                // lock and sleep again. The leader's own batch was in the group it wrote.
                drop(st);
                self.cond.notify_all();
                return result;
            }
            st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The leader's job: one write and one fsync for the whole group.
    fn write_group(&self, group: &mut [PreparedBatch]) -> io::Result<()> {
        let mut guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let w = &mut *guard;
        w.buf.clear();
        for batch in group.iter_mut() {
            let off = w.pos + w.buf.len() as u64;
            let count = batch.count();
            let at = Placement {
                seq: w.next_seq,
                file_offset: off,
                synced_through: w.synced,
                log_tag: PLAIN_LOG_TAG,
                timestamp_us: 0,
            };
            let bytes = batch.finalize(at);
            w.buf.extend_from_slice(bytes);
            w.next_seq += u64::from(count);
        }
        let end = w.pos + w.buf.len() as u64;
        if end > w.allocated {
            let grow = w.space.chunk().max(end - w.allocated);
            w.space.reserve(&w.file, w.allocated, grow)?;
            w.allocated += grow;
        }
        w.file.write_all_at(&w.buf, w.pos)?;
        w.pos = end;
        w.file.sync_data()?;
        w.synced = end;
        w.fsyncs += 1;
        Ok(())
    }

    /// `sync_data` calls made so far (one per group).
    pub fn fsyncs(&self) -> u64 {
        self.writer.lock().unwrap_or_else(|e| e.into_inner()).fsyncs
    }

    /// Events made durable so far.
    pub fn events(&self) -> u64 {
        self.writer.lock().unwrap_or_else(|e| e.into_inner()).next_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{payload, plain};

    #[test]
    fn concurrent_appends_all_land_and_share_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gc.log");
        let gc = GroupCommitFile::create(&path, Space::Fallocate(4096)).unwrap();
        let pool = payload::pool(1, 100, 1);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..25 {
                        gc.append(&[&pool[0]]).unwrap();
                    }
                });
            }
        });
        assert_eq!(gc.events(), 100);
        assert!(gc.fsyncs() >= 1 && gc.fsyncs() <= 100);
        // The file outgrew its preallocation: it was extended, and every frame verifies.
        let end = plain::recover(&path).unwrap();
        assert_eq!(end.events, 100);
    }

    #[test]
    fn a_zero_filled_file_grows_by_zero_filled_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gc.log");
        let gc = GroupCommitFile::create(&path, Space::ZeroFill(1024)).unwrap();
        let pool = payload::pool(3, 300, 2);
        for p in &pool {
            gc.append(&[p]).unwrap();
        }
        assert_eq!(gc.fsyncs(), 3);
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(len % 1024, 0, "grown in whole chunks: {len}");
        assert_eq!(plain::recover(&path).unwrap().events, 3);
    }
}
