//! The snapshot store (ARCHITECTURE.md layer `snapshot`): one sidecar file per aggregate in
//! `<dir>/snapshots/`, replaced atomically, verified on read, set aside (never deleted) when
//! bad. The byte layout is `format::SnapshotFile` (format-spec.md §13); file names come from
//! `names::snapshot_file_name` (§13.1).
//!
//! This layer checks what the file alone can prove (checksums, bounds, the stream and store
//! it names). Whether the snapshot matches the log and the aggregate's schema is decided by
//! the aggregate layer, which calls [`SnapshotStore::set_aside`] when it does not.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::format::{DecodeError, SnapshotFile};
use crate::fs::{OpenMode, Storage};
use crate::limits::{SNAPSHOT_FILE_BYTES_MAX, SNAPSHOT_SET_ASIDE_MAX};
use crate::names;
use crate::streams::Store;

/// Why a snapshot was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SnapshotDamage {
    /// The file did not decode: torn (truncated), bit rot, or not a snapshot at all.
    Corrupt(DecodeError),
    /// The file is larger than `SNAPSHOT_FILE_BYTES_MAX`; it was not read.
    TooLarge {
        /// Its length.
        bytes: u64,
    },
    /// The file holds another stream's snapshot.
    WrongStream {
        /// The stream id inside the file.
        found: String,
    },
    /// The file was written by another store (another log id).
    ForeignStore,
    /// The file holds another schema of state (another aggregate type, or an older encoding
    /// of this one).
    WrongSchema {
        /// The schema tag inside the file.
        found: String,
    },
    /// The snapshot covers events the stream does not have (yet).
    AheadOfLog {
        /// The snapshot's stream version.
        snapshot_version: u64,
        /// The stream's version, `None` if it has no events.
        stream_version: Option<u64>,
    },
    /// The stream's event at the snapshot's version is not the one the snapshot folded
    /// (another seq or event id): the snapshot describes a history the log does not hold.
    NotInLog {
        /// The snapshot's stream version.
        snapshot_version: u64,
    },
    /// The payload passed its checksums but the aggregate's codec cannot decode it.
    BadState {
        /// The codec's message.
        reason: String,
    },
    /// The file could not be read (an I/O error); it was left in place.
    Unreadable {
        /// The error.
        reason: String,
    },
}

impl std::fmt::Display for SnapshotDamage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotDamage::Corrupt(e) => write!(f, "corrupt: {e}"),
            SnapshotDamage::TooLarge { bytes } => write!(f, "{bytes} bytes is over the limit"),
            SnapshotDamage::WrongStream { found } => write!(f, "it is the snapshot of {found:?}"),
            SnapshotDamage::ForeignStore => write!(f, "it belongs to another store"),
            SnapshotDamage::WrongSchema { found } => write!(f, "its schema is {found:?}"),
            SnapshotDamage::AheadOfLog { snapshot_version, stream_version } => write!(
                f,
                "it covers version {snapshot_version}, the stream ends at {stream_version:?}"
            ),
            SnapshotDamage::NotInLog { snapshot_version } => {
                write!(f, "the log's event at version {snapshot_version} is not the one it folded")
            }
            SnapshotDamage::BadState { reason } => write!(f, "its state does not decode: {reason}"),
            SnapshotDamage::Unreadable { reason } => write!(f, "unreadable: {reason}"),
        }
    }
}

/// A snapshot that was rejected, and where it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    /// The stream whose snapshot it was.
    pub stream_id: String,
    /// Why it was rejected.
    pub damage: SnapshotDamage,
    /// Where it was moved (`<name>.snap.broken-<n>`), or `None` if it was left in place
    /// (unreadable, changed meanwhile, or too many set aside already).
    pub moved_to: Option<PathBuf>,
}

/// What [`SnapshotStore::read`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotRead {
    /// No snapshot of the stream.
    Missing,
    /// A snapshot that passed the file's own checks (checksums, bounds, stream id, log id).
    Found {
        /// The decoded file.
        file: SnapshotFile,
        /// Its bytes, to hand back to [`SnapshotStore::set_aside`] if the caller rejects it.
        bytes: Vec<u8>,
    },
    /// A snapshot that failed them.
    Damaged {
        /// Why.
        damage: SnapshotDamage,
        /// Its bytes (empty if it could not be read).
        bytes: Vec<u8>,
    },
}

/// Counters of a [`SnapshotStore`], since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Snapshots written.
    pub written: u64,
    /// Snapshot writes that failed (each costs only replay time).
    pub write_failures: u64,
    /// Snapshots moved aside.
    pub set_aside: u64,
}

/// The snapshot files of one store, in `<dir>/snapshots/`.
///
/// Thread-safe; writers and set-asides take turns on one lock (they share temp names, and a
/// set-aside must not move a snapshot written after it was judged). Every path is built from
/// the store directory and `names::snapshot_file_name`, so no stream id reaches outside
/// `snapshots/`.
#[derive(Debug)]
pub struct SnapshotStore {
    storage: Arc<dyn Storage>,
    store_dir: PathBuf,
    dir: PathBuf,
    log_id: [u8; 16],
    lock: Mutex<()>,
    dir_ready: AtomicBool,
    written: AtomicU64,
    write_failures: AtomicU64,
    set_aside: AtomicU64,
}

impl SnapshotStore {
    /// The snapshot store of `store` (on the store's own storage and directory).
    pub fn for_store(store: &Store) -> SnapshotStore {
        let log = store.log();
        SnapshotStore::new(Arc::clone(&log.inner.storage), log.dir(), log.log_id())
    }

    /// The snapshot store of the store in `store_dir` whose log id is `log_id`.
    pub fn new(storage: Arc<dyn Storage>, store_dir: &Path, log_id: [u8; 16]) -> SnapshotStore {
        SnapshotStore {
            storage,
            store_dir: store_dir.to_path_buf(),
            dir: names::snapshots_dir(store_dir),
            log_id,
            lock: Mutex::new(()),
            dir_ready: AtomicBool::new(false),
            written: AtomicU64::new(0),
            write_failures: AtomicU64::new(0),
            set_aside: AtomicU64::new(0),
        }
    }

    /// The store's log id, which every snapshot written here carries.
    pub fn log_id(&self) -> [u8; 16] {
        self.log_id
    }

    /// `<dir>/snapshots`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of `stream`'s snapshot file.
    pub fn path_for(&self, stream: &str) -> PathBuf {
        self.dir.join(names::snapshot_file_name(stream))
    }

    /// Counters since this store was created.
    pub fn stats(&self) -> SnapshotStats {
        SnapshotStats {
            written: self.written.load(Ordering::Relaxed),
            write_failures: self.write_failures.load(Ordering::Relaxed),
            set_aside: self.set_aside.load(Ordering::Relaxed),
        }
    }

    /// Writes `snap` as its stream's snapshot, replacing the old one atomically
    /// (format-spec.md §6.5). `snap.log_id` must be this store's. Returns once the new file
    /// and its directory entry are durable.
    pub fn write(&self, snap: &SnapshotFile) -> Result<()> {
        let result = self.write_inner(snap);
        let counter = if result.is_ok() { &self.written } else { &self.write_failures };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    fn write_inner(&self, snap: &SnapshotFile) -> Result<()> {
        if snap.log_id != self.log_id {
            return Err(Error::InvalidOptions("snapshot of another store".into()));
        }
        let bytes = snap.encode().map_err(|e| Error::Codec { reason: e.to_string() })?;
        let path = self.path_for(&snap.stream_id);
        let _turn = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.ensure_dir()?;
        crate::fs::write_atomic(self.storage.as_ref(), &path, &bytes)
            .map_err(|e| Error::io("write snapshot", &path, e))
    }

    /// Creates `snapshots/` durably if it is missing (format-spec.md §2 "Directories").
    fn ensure_dir(&self) -> Result<()> {
        if self.dir_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let exists = self.storage.exists(&self.dir).map_err(|e| Error::io("stat", &self.dir, e))?;
        if !exists {
            self.storage
                .create_dir_all(&self.dir)
                .map_err(|e| Error::io("create dir", &self.dir, e))?;
            self.storage
                .sync_dir(&self.store_dir)
                .map_err(|e| Error::io("sync dir", &self.store_dir, e))?;
        }
        self.dir_ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Reads and checks `stream`'s snapshot: size limit before reading, then
    /// `SnapshotFile::decode`, then the stream id and log id inside it.
    pub fn read(&self, stream: &str) -> SnapshotRead {
        let path = self.path_for(stream);
        let bytes = match self.read_bytes(&path) {
            Ok(Some(b)) => b,
            Ok(None) => return SnapshotRead::Missing,
            Err(damage) => return SnapshotRead::Damaged { damage, bytes: Vec::new() },
        };
        let file = match SnapshotFile::decode(&bytes) {
            Ok(f) => f,
            Err(e) => return SnapshotRead::Damaged { damage: SnapshotDamage::Corrupt(e), bytes },
        };
        if file.stream_id != stream {
            let damage = SnapshotDamage::WrongStream { found: file.stream_id };
            return SnapshotRead::Damaged { damage, bytes };
        }
        if file.log_id != self.log_id {
            return SnapshotRead::Damaged { damage: SnapshotDamage::ForeignStore, bytes };
        }
        SnapshotRead::Found { file, bytes }
    }

    /// The whole file, `None` if missing; a file over the limit is refused before reading.
    fn read_bytes(&self, path: &Path) -> std::result::Result<Option<Vec<u8>>, SnapshotDamage> {
        let unreadable = |e: io::Error| SnapshotDamage::Unreadable { reason: e.to_string() };
        let file = match self.storage.open(path, OpenMode::Read) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unreadable(e)),
        };
        let len = file.len().map_err(unreadable)?;
        if len > SNAPSHOT_FILE_BYTES_MAX {
            return Err(SnapshotDamage::TooLarge { bytes: len });
        }
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, 0).map_err(unreadable)?;
        Ok(Some(buf))
    }

    /// Moves `stream`'s snapshot aside to `<name>.snap.broken-<n>`, if its bytes are still
    /// `judged` (the bytes that were found bad), and reports it. Never deletes anything. A
    /// file over the size limit is judged by its length alone (`judged` empty).
    pub fn set_aside(&self, stream: &str, damage: SnapshotDamage, judged: &[u8]) -> SetAside {
        // Not moving it only means the next load judges it again.
        let moved_to = self.move_aside(stream, &damage, judged).unwrap_or_default();
        if moved_to.is_some() {
            self.set_aside.fetch_add(1, Ordering::Relaxed);
        }
        SetAside { stream_id: stream.to_owned(), damage, moved_to }
    }

    fn move_aside(
        &self,
        stream: &str,
        damage: &SnapshotDamage,
        judged: &[u8],
    ) -> Result<Option<PathBuf>> {
        if matches!(damage, SnapshotDamage::Unreadable { .. }) {
            return Ok(None);
        }
        let name = names::snapshot_file_name(stream);
        let path = self.dir.join(&name);
        let _turn = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let still_bad = match self.read_bytes(&path) {
            Ok(Some(now)) => now == judged,
            Ok(None) => false,
            Err(SnapshotDamage::TooLarge { .. }) => {
                matches!(damage, SnapshotDamage::TooLarge { .. })
            }
            Err(_) => false,
        };
        if !still_bad {
            return Ok(None);
        }
        for n in 0..SNAPSHOT_SET_ASIDE_MAX {
            let to = self.dir.join(names::snapshot_broken_name(&name, n));
            if self.storage.exists(&to).map_err(|e| Error::io("stat", &to, e))? {
                continue;
            }
            self.storage.rename(&path, &to).map_err(|e| Error::io("set aside", &path, e))?;
            self.storage.sync_dir(&self.dir).map_err(|e| Error::io("sync dir", &self.dir, e))?;
            return Ok(Some(to));
        }
        Ok(None)
    }

    /// The names in `snapshots/` that are snapshots set aside (`.broken-<n>`), sorted.
    pub fn set_aside_files(&self) -> Result<Vec<String>> {
        let mut out: Vec<String> = match self.storage.read_dir(&self.dir) {
            Ok(v) => v,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("list", &self.dir, e)),
        };
        out.retain(|n| names::parse_snapshot_dir_entry(n) == names::SnapshotDirEntry::Broken);
        out.sort();
        Ok(out)
    }
}
