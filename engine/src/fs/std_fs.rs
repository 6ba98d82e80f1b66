//! The real file system, through `std::fs` and `rustix`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::Path;

use super::{LockGuard, OpenMode, Preallocation, Storage, StorageFile};

/// The real file system. New files get mode 0600 and new directories 0700 (before umask).
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

#[derive(Debug)]
struct StdFile(File);

#[derive(Debug)]
struct FileLock(#[allow(dead_code)] File);

impl LockGuard for FileLock {}

impl StorageFile for StdFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    #[cfg(target_os = "linux")]
    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        // SAFETY: the descriptor is this file's own and stays open for the call (`self.0`
        // is borrowed); the call takes no pointers. SYNC_FILE_RANGE_WRITE only starts
        // write-back of dirty pages in the range: it neither waits nor consumes the file's
        // write-back error state, which the next fdatasync still reports.
        #[allow(unsafe_code)]
        let rc = unsafe {
            libc::sync_file_range(self.0.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
        };
        if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn preallocate(&self, len: u64) -> io::Result<Preallocation> {
        use rustix::fs::{FallocateFlags, fallocate};
        match fallocate(&self.0, FallocateFlags::empty(), 0, len) {
            Ok(()) => Ok(Preallocation::Allocated),
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {
                if self.len()? < len {
                    self.0.set_len(len)?;
                }
                Ok(Preallocation::Sparse)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn map(&self) -> io::Result<Option<memmap2::Mmap>> {
        if self.len()? == 0 {
            return Ok(None);
        }
        // SAFETY: the engine maps only sealed segments. A sealed segment is never written or
        // truncated again while the store is open: the store holds the directory's exclusive
        // LOCK, and the only code that modifies sealed segments (repair) takes that lock
        // first. Another process ignoring the lock could still truncate the file and make
        // reads fault; that is outside the engine's contract (format-spec.md §9).
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&self.0)? };
        Ok(Some(map))
    }
}

impl Storage for StdFs {
    /// True but on memory-backed file systems (tmpfs, ramfs), where zeros would only take
    /// memory: on ext4 and XFS, preallocated space is unwritten until first written, and
    /// every `fdatasync` after an append into it also commits a journal transaction.
    fn zero_fill_pays(&self, dir: &Path) -> bool {
        const TMPFS_MAGIC: u64 = 0x0102_1994;
        const RAMFS_MAGIC: u64 = 0x8584_58f6;
        match rustix::fs::statfs(dir) {
            // The type's width differs between targets; the magic numbers fit in 32 bits.
            #[allow(clippy::unnecessary_cast)]
            Ok(st) => !matches!(st.f_type as u64, TMPFS_MAGIC | RAMFS_MAGIC),
            Err(_) => true,
        }
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        let mut o = OpenOptions::new();
        o.read(true);
        match mode {
            OpenMode::Read => {}
            OpenMode::ReadWrite => {
                o.write(true);
            }
            OpenMode::CreateNew => {
                o.write(true).create_new(true).mode(0o600);
            }
        }
        // Never follow a symlink planted at a name the engine owns.
        o.custom_flags(libc_o_nofollow());
        Ok(Box::new(StdFile(o.open(path)?)))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        use rustix::fs::{Dir, Mode, OFlags};
        // The directories the engine lists are its own (`segments/`): a symlink planted there
        // would send every segment, index and temp file outside the store, so it is refused
        // (ELOOP), as at every file name the engine owns.
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| {
            let err = io::Error::from(e);
            if e == rustix::io::Errno::LOOP {
                return io::Error::new(err.kind(), "is a symbolic link, which is not followed");
            }
            err
        })?;
        let mut names = Vec::new();
        for entry in Dir::read_from(&fd)? {
            let name = entry?.file_name().to_bytes().to_vec();
            if name == b"." || name == b".." {
                continue;
            }
            // Names that are not UTF-8 cannot be the engine's own; report them lossily so
            // that callers can flag them as foreign.
            names.push(String::from_utf8_lossy(&name).into_owned());
        }
        Ok(names)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc_o_nofollow())
            .open(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        // The pid is for people reading the file; the kernel's flock is the lock. It is
        // written at a fixed width, so that a reopen overwrites it in place: cutting the file
        // first (a truncate frees a block, a journal commit on ext4) made every clean open
        // wait behind other processes' I/O.
        let line = format!("{:<width$}\n", std::process::id(), width = LOCK_PID_WIDTH);
        if file.metadata().map(|m| m.len()).ok() != Some(line.len() as u64) {
            file.set_len(0)?;
        }
        let _ = file.write_all_at(line.as_bytes(), 0);
        Ok(Some(Box::new(FileLock(file))))
    }
}

/// Width of the pid in `LOCK` (padded with spaces; a u32 has at most 10 digits).
const LOCK_PID_WIDTH: usize = 10;

fn libc_o_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}
