//! Prepared segments (format-spec.md §6.2): a background thread writes the next segment's
//! space with zeros and syncs it before the writer needs it, so that every `fdatasync` into
//! the segment that follows a roll flushes data only.
//!
//! Preallocated space is *unwritten* to ext4 and XFS until first written, and each
//! `fdatasync` after an append into it must also commit the conversion of those blocks to
//! the journal. Zeroing ahead of the writer inside the active segment (`zero_ahead_bytes`)
//! avoids most of that, but its zeros are flushed by the group commit's own `fdatasync`,
//! which then waits for them. A separate file has its own pages: zeroing and syncing it
//! costs the device bandwidth but never makes a group wait on those pages. PostgreSQL
//! creates its WAL segments zero-filled ahead of need for the same reason.
//!
//! The spare file (`segments/spare.seg.tmp`, [`crate::names::SPARE_SEGMENT_FILE`]) never
//! holds a record: it becomes a segment only when the writer, at a roll, writes its header,
//! syncs it, renames it to `<base>.seg` and syncs the directory, exactly the last steps of
//! an ordinary segment creation. A spare left by a crash or by a close is a temp file that
//! the next writable open removes.
//!
//! The thread starts only when the active segment is half full (short-lived logs never
//! start it), prepares one spare at a time, and is stopped and joined at close, which also
//! removes an unused spare. A failure to prepare (a full disk, an I/O error) only means the
//! next roll creates its segment the ordinary way; it never poisons the log, since no record
//! depends on the spare.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::fs::{OpenMode, Storage, StorageFile};

/// Zeros are written in chunks of this size, with a stop check between chunks.
const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// Prepares spare segments for one writable log.
#[derive(Debug)]
pub(crate) struct Preparer {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    storage: Arc<dyn Storage>,
    /// `segments/spare.seg.tmp`.
    path: PathBuf,
    /// The size of a segment, which the spare is written to in full.
    bytes: u64,
    state: Mutex<State>,
    cond: Condvar,
    /// Set by [`Preparer::stop`]; checked between zero chunks.
    stop: AtomicBool,
    /// Spares taken by rolls.
    used: AtomicU64,
    /// Preparations that failed (the roll then created its segment the ordinary way).
    failed: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// A spare is wanted and the thread has not started on it yet.
    requested: bool,
    /// The thread is writing a spare.
    busy: bool,
    /// A spare, fully zeroed and synced, waiting for a roll.
    ready: Option<Box<dyn StorageFile>>,
}

impl Preparer {
    /// A preparer of spares of `bytes` bytes at `path`; no thread runs until a request.
    pub(crate) fn new(storage: Arc<dyn Storage>, path: PathBuf, bytes: u64) -> Self {
        Preparer {
            shared: Arc::new(Shared {
                storage,
                path,
                bytes,
                state: Mutex::new(State::default()),
                cond: Condvar::new(),
                stop: AtomicBool::new(false),
                used: AtomicU64::new(0),
                failed: AtomicU64::new(0),
            }),
            thread: Mutex::new(None),
        }
    }

    /// Asks for a spare unless one is ready or being prepared; starts the thread on first
    /// use. Never blocks on the preparation itself.
    pub(crate) fn request(&self) {
        if self.shared.stop.load(Ordering::Acquire) {
            return;
        }
        {
            let mut st = self.shared.lock();
            if st.ready.is_some() || st.busy || st.requested {
                return;
            }
            st.requested = true;
        }
        self.shared.cond.notify_all();
        let mut thread = self.thread.lock().unwrap_or_else(|e| e.into_inner());
        if thread.is_none() {
            let shared = Arc::clone(&self.shared);
            match std::thread::Builder::new()
                .name("annal-prepare".into())
                .spawn(move || shared.run())
            {
                Ok(handle) => *thread = Some(handle),
                Err(_) => {
                    // No thread, no spare: rolls create their segments the ordinary way.
                    self.shared.lock().requested = false;
                    self.shared.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// The ready spare, if any, for the roll that takes it. Never waits.
    pub(crate) fn take(&self) -> Option<(PathBuf, Box<dyn StorageFile>)> {
        let file = self.shared.lock().ready.take()?;
        self.shared.used.fetch_add(1, Ordering::Relaxed);
        Some((self.shared.path.clone(), file))
    }

    /// Spares taken by rolls so far.
    pub(crate) fn used(&self) -> u64 {
        self.shared.used.load(Ordering::Relaxed)
    }

    /// Counts a spare that failed when a roll tried to use it.
    pub(crate) fn note_failure(&self) {
        self.shared.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Failed preparations so far.
    pub(crate) fn failed(&self) -> u64 {
        self.shared.failed.load(Ordering::Relaxed)
    }

    /// Whether a spare is ready for the next roll.
    pub(crate) fn is_ready(&self) -> bool {
        self.shared.lock().ready.is_some()
    }

    /// Stops the thread (it finishes at most one zero chunk), waits for it, and removes an
    /// unused spare: it holds only zeros written by this log. Idempotent.
    pub(crate) fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.cond.notify_all();
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
        if self.shared.lock().ready.take().is_some() {
            let _ = self.shared.storage.remove_file(&self.shared.path);
        }
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The thread: waits for a request, prepares one spare, repeats until stopped.
    fn run(&self) {
        loop {
            {
                let mut st = self.lock();
                while !st.requested && !self.stop.load(Ordering::Acquire) {
                    st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                if self.stop.load(Ordering::Acquire) {
                    return;
                }
                st.requested = false;
                st.busy = true;
            }
            let prepared = self.prepare();
            let mut st = self.lock();
            st.busy = false;
            match prepared {
                Ok(file) if !self.stop.load(Ordering::Acquire) => st.ready = Some(file),
                Ok(file) => {
                    drop(file);
                    let _ = self.storage.remove_file(&self.path);
                }
                Err(_) => {
                    if !self.stop.load(Ordering::Acquire) {
                        self.failed.fetch_add(1, Ordering::Relaxed);
                    }
                    // Gives the space back; the next roll creates its segment itself.
                    let _ = self.storage.remove_file(&self.path);
                }
            }
        }
    }

    /// Creates the spare, reserves its space, writes zeros over all of it and syncs it.
    fn prepare(&self) -> io::Result<Box<dyn StorageFile>> {
        if self.storage.exists(&self.path)? {
            self.storage.remove_file(&self.path)?;
        }
        let file = self.storage.open(&self.path, OpenMode::CreateNew)?;
        file.preallocate(self.bytes)?;
        let zeros = vec![0u8; ZERO_CHUNK_BYTES];
        let mut at = 0u64;
        while at < self.bytes {
            if self.stop.load(Ordering::Acquire) {
                return Err(io::Error::other("stopped"));
            }
            let n = (self.bytes - at).min(ZERO_CHUNK_BYTES as u64) as usize;
            file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        file.sync_data()?;
        Ok(file)
    }
}
