//! The storage seam: the few file-system operations the engine uses, behind a trait.
//!
//! [`StdFs`] is the real implementation. [`SimFs`] is a deterministic simulation of a page
//! cache for tests: writes stay volatile until `sync_data`, directory entries stay volatile
//! until the directory is synced, and a simulated crash keeps, drops, tears or garbles each
//! unsynced operation from a seeded RNG (RELIABILITY.md rows 1, 2, 12, 13 and 16).
//!
//! All paths handed to a [`Storage`] are built by the engine from its own directory and its
//! own file names (see `crate::names`); no caller-supplied string ever becomes a path.

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};

mod sim;
mod std_fs;

pub use sim::{CrashMode, CrashReport, PendingOp, SimFs, TraceEvent};
pub use std_fs::StdFs;

/// How a file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and write; the file must not exist yet (`O_CREAT | O_EXCL`), so a name planted in
    /// advance (a symlink, say) makes the open fail instead of being followed.
    CreateNew,
}

/// What [`StorageFile::preallocate`] managed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preallocation {
    /// Blocks were reserved (`fallocate`): running out of space shows up here, not mid-append.
    Allocated,
    /// The file system does not support reservation; the file was extended sparsely instead.
    Sparse,
}

/// A held exclusive lock; dropping it releases the lock.
pub trait LockGuard: Send + Sync + Debug {}

/// One open file. Implementations are safe to share between threads; positioned reads and
/// writes never move a shared cursor.
#[allow(clippy::len_without_is_empty)]
pub trait StorageFile: Send + Sync + Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns fewer only at the end of the file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the file's data (and the size needed to read it) durable: `fdatasync`.
    fn sync_data(&self) -> io::Result<()>;
    /// Starts writing the `len` bytes at `offset` back to the device without waiting
    /// (`sync_file_range(SYNC_FILE_RANGE_WRITE)` on Linux). A hint that makes nothing
    /// durable: only `sync_data` does. The default does nothing.
    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Ok(())
    }
    /// Current length of the file in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Truncates or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Reserves space so the file is at least `len` bytes long, falling back to a sparse
    /// extension where the file system cannot reserve.
    fn preallocate(&self, len: u64) -> io::Result<Preallocation>;
    /// A read-only memory map of the whole file, where the storage supports it. Only called
    /// on sealed segments, which are never written again while the store is open.
    fn map(&self) -> io::Result<Option<memmap2::Mmap>>;

    /// Reads exactly `buf.len()` bytes at `offset`, or fails with `UnexpectedEof`.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The file-system operations the engine needs. Cheap to clone behind an `Arc`.
pub trait Storage: Send + Sync + Debug + 'static {
    /// Opens `path` in `mode`. New files are created with mode 0600.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>>;
    /// Creates `path` and its missing parents, with mode 0700 for new directories.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The names of the entries of directory `path` (not sorted, no `.` or `..`). Fails if
    /// `path` itself is a symbolic link: the engine lists only directories it owns.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Atomically renames `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes an empty directory. Storages that cannot (test wrappers that do not forward
    /// it) fail with `ErrorKind::Unsupported`, the default.
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{}: this storage does not remove directories", path.display()),
        ))
    }
    /// Makes the directory's entries durable (fsync of the directory).
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Whether `path` exists.
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Takes an exclusive lock on the file at `path` (created if missing), without blocking.
    /// Returns `Ok(None)` if another holder has it. The lock lives as long as the guard.
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>>;
    /// Whether writing a segment's space with zeros before use makes later `fdatasync`
    /// calls cheaper, which is what a real file system with unwritten extents does (ext4,
    /// XFS). When true, a writable log prepares its next segment in a background thread
    /// (format-spec.md §6.2, `Options::prepare_segments`). Default false: a storage without
    /// that cost (an in-memory simulation) keeps its operations on the callers' threads,
    /// in a reproducible order.
    /// `dir` is the directory the segments live in.
    fn zero_fill_pays(&self, dir: &Path) -> bool {
        let _ = dir;
        false
    }
}

/// Atomically replaces `path` with `bytes`: temp file in the same directory, write, fsync,
/// rename over the target, fsync the directory (STYLE.md "one helper"; RELIABILITY.md §6).
///
/// A crash at any point leaves either the complete old file or the complete new one.
pub fn write_atomic(storage: &dyn Storage, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().ok_or_else(|| io::Error::other("atomic write target has no parent"))?;
    let mut tmp_name = path
        .file_name()
        .ok_or_else(|| io::Error::other("atomic write target has no file name"))?
        .to_os_string();
    tmp_name.push(crate::names::TMP_SUFFIX);
    let tmp: PathBuf = dir.join(tmp_name);
    if storage.exists(&tmp)? {
        // A leftover from a crash mid-replace: it never became the real file, so it holds
        // nothing the store relies on.
        storage.remove_file(&tmp)?;
    }
    let file = storage.open(&tmp, OpenMode::CreateNew)?;
    file.write_all_at(bytes, 0)?;
    file.sync_data()?;
    drop(file);
    storage.rename(&tmp, path)?;
    storage.sync_dir(dir)
}
