//! A LazyFS-like FUSE file system for crash tests through a real kernel path
//! (RELIABILITY.md rows 3 and 12).
//!
//! [`FaultFs`] serves a *backing directory* through FUSE. The backing directory always holds
//! exactly the **durable image**: what would survive a power loss. Everything since the last
//! sync lives only in this process's memory, like a page cache that never writes back on its
//! own:
//!
//! * A write or truncate changes the file's in-memory image at once (reads, `stat` and mmap see
//!   it) and marks the byte range dirty. `fsync`/`fdatasync` on the file writes the dirty
//!   ranges and the new length to the backing file and fsyncs it (if the file has a durable
//!   name yet; otherwise its synced content is kept in memory until one of its names becomes
//!   durable).
//! * Creating, renaming and unlinking a file change the in-memory directory at once and become
//!   durable only when the directory is fsynced: `fsync` on the directory makes the backing
//!   directory's entries equal to the in-memory ones (each newly named file gets the content
//!   of its last file sync, or nothing) and fsyncs the backing directory. A rename across
//!   directories needs both directories synced, each deciding for its own entry.
//! * Directories themselves are created and removed durably at once (as in the engine's
//!   `SimFs`). Renaming a directory changes the in-memory tree at once and becomes durable
//!   when its new parent is fsynced (a directory cannot have two durable names, so the old
//!   name goes at the same moment; the old parent's fsync alone does not move it). Until
//!   then its old name is taken in the durable image, so creating a file or directory there,
//!   or renaming something else to it, fails with `EBUSY`. Hard links, symlinks and special
//!   files are refused.
//!
//! [`Control::power_loss`] is LazyFS's `clear-cache`: it drops the whole unsynced state (every
//! dirty range, every unsynced directory change) and switches the mount off, so every later
//! operation fails with `EIO` until it is unmounted. The backing directory is then the state
//! after power loss; mount it again, or open it directly, to recover.
//!
//! [`Control::fail_fsync_at`] makes one future fsync (file or directory) fail with `EIO`. A
//! failed file fsync behaves like Linux after a writeback error: the dirty ranges it covered
//! are marked clean without reaching the backing file, so a later successful fsync does not
//! make them durable, although reads still see them. A failed directory fsync changes nothing.
//!
//! Every file's current image is held in memory (loaded from the backing directory at mount),
//! so this is meant for test-sized data, not for large stores.
//!
//! Mounting needs `/dev/fuse` and the right to call `mount(2)` (root, or a user namespace
//! with `CAP_SYS_ADMIN`); [`can_mount`] tells a test whether to skip.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! let mounted = faultfs::Mounted::mount("/tmp/backing".as_ref(), "/tmp/mnt".as_ref())?;
//! // ... run a writer against /tmp/mnt ...
//! let report = mounted.control().power_loss();
//! println!("dropped {} unsynced bytes", report.dirty_bytes);
//! mounted.unmount()?;
//! // /tmp/backing now holds what survived.
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]
#![deny(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};

/// How long the kernel may cache attributes and entries. This process is the only one that
/// changes the tree, and the kernel updates its cache on the changes it sends us.
const TTL: Duration = Duration::from_secs(1);
const ROOT: u64 = 1;

/// What [`Control::power_loss`] dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PowerLossReport {
    /// Files that had unsynced writes or length changes.
    pub dirty_files: u64,
    /// Bytes in unsynced write ranges (before merging overlaps).
    pub dirty_bytes: u64,
    /// Unsynced directory entries (names created, replaced or removed since the last
    /// directory fsync).
    pub unsynced_dir_entries: u64,
    /// Files whose last sync happened while they had no durable name and that never got one.
    pub unnamed_synced_files: u64,
    /// Unsynced bytes that reached the backing files at a torn power loss
    /// ([`Control::power_loss_torn`]); 0 for [`Control::power_loss`].
    pub persisted_bytes: u64,
    /// Files with a durable name that a torn power loss left with some, but not all, of
    /// their unsynced bytes (or with their unsynced length change but not all of the bytes).
    pub torn_files: u64,
    /// What a torn power loss did to each file with a durable name and unsynced writes.
    pub files: Vec<TornFile>,
}

/// What a torn power loss did to one file (see [`PowerLossReport::files`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornFile {
    /// A durable name of the file, relative to the mount.
    pub path: PathBuf,
    /// The mode drawn for it.
    pub mode: TornMode,
    /// Bytes in its unsynced write ranges (past its current length not counted).
    pub unsynced_bytes: u64,
    /// Of those, bytes written to the backing file.
    pub kept_bytes: u64,
    /// Whether it got some, but not all, of its unsynced state.
    pub partly: bool,
}

/// What a torn power loss ([`Control::power_loss_torn`]) did to one file's unsynced writes.
/// Only bytes written since the file's last sync can change: durable bytes never do (the
/// powersafe-overwrite assumption of format-spec.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TornMode {
    /// None reached the disk: what [`Control::power_loss`] does to every file.
    Dropped,
    /// All of them and the file's length did (the page cache was written back just before
    /// the power went).
    Kept,
    /// A prefix in write order, cut at a random byte: the writes before the cut reached
    /// the disk, the one it falls in partly, the later ones not (LazyFS's `torn-seq`; with
    /// the cut inside one write, its `torn-op`).
    Prefix,
    /// Each aligned block of [`TornWrites::block_bytes`] of the unsynced byte ranges reached
    /// the disk or not, independently, whatever the write order (out-of-order writeback of
    /// sectors or pages; LazyFS's `torn-op` with a random `persist` set).
    Blocks,
}

/// How [`Control::power_loss_torn`] tears unsynced writes. The outcome is a function of the
/// seed and of the unsynced state, so a failure replays from the printed seed when the same
/// writes are pending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornWrites {
    /// Seeds the choices.
    pub seed: u64,
    /// Size of the aligned blocks of [`TornMode::Blocks`] (512 models sector atomicity,
    /// 4096 pages; 1 tears anywhere). Values below 1 count as 1.
    pub block_bytes: u64,
    /// The modes each file draws from, uniformly (an empty list means [`TornMode::Dropped`]).
    pub modes: Vec<TornMode>,
}

impl TornWrites {
    /// Every mode, 512-byte blocks.
    pub fn new(seed: u64) -> TornWrites {
        let modes = vec![TornMode::Dropped, TornMode::Kept, TornMode::Prefix, TornMode::Blocks];
        TornWrites { seed, block_bytes: 512, modes }
    }
}

/// Counters of the operations the mount served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Write requests.
    pub writes: u64,
    /// File fsync/fdatasync requests (including failed ones).
    pub file_syncs: u64,
    /// Directory fsync requests (including failed ones).
    pub dir_syncs: u64,
    /// Fsyncs failed on purpose with `EIO`.
    pub injected_failures: u64,
}

#[derive(Debug)]
struct FileNode {
    /// The current image: what reads see.
    data: Vec<u8>,
    /// Byte ranges written since the last sync, `(start, end)`, unmerged.
    dirty: Vec<(u64, u64)>,
    /// Whether the length changed since the last sync.
    len_dirty: bool,
    /// Durable names: (directory inode, name); the backing file at each holds the durable
    /// content.
    durable_links: BTreeSet<(u64, OsString)>,
    /// The synced content of a file without a durable name.
    staged: Option<Vec<u8>>,
    /// Current names.
    links: u32,
    mode: u32,
    mtime: SystemTime,
}

#[derive(Debug)]
struct DirNode {
    /// Absolute path of the backing directory.
    backing: PathBuf,
    parent: u64,
    /// Current file and directory entries.
    entries: BTreeMap<OsString, u64>,
    /// Durable file entries (directories are durable at once and not listed here).
    durable: BTreeMap<OsString, u64>,
    mode: u32,
}

#[derive(Debug)]
enum Node {
    File(FileNode),
    Dir(DirNode),
}

#[derive(Debug)]
struct Inner {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    /// After a power loss every operation fails.
    dead: bool,
    /// Fsyncs still to pass before the one that fails.
    fail_fsync_in: Option<u64>,
    /// The path (relative to the mount) of the file or directory whose fsync failed on
    /// purpose last.
    injected_at: Option<PathBuf>,
    /// How long each fsync waits before it syncs (a slow disk).
    sync_latency: Duration,
    stats: Stats,
}

/// The FUSE file system; see the crate documentation. Mount it with [`Mounted::mount`] (or
/// pass it to `fuser` yourself) and drive it with its [`Control`].
#[derive(Debug)]
pub struct FaultFs {
    inner: Arc<Mutex<Inner>>,
}

/// A handle that controls a [`FaultFs`] from outside the FUSE session (clones share it).
#[derive(Debug, Clone)]
pub struct Control {
    inner: Arc<Mutex<Inner>>,
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

fn errno(e: &io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

impl FaultFs {
    /// Loads the tree under `backing` (directories and regular files; other entries are not
    /// shown) into memory and returns the file system and its control handle.
    pub fn new(backing: &Path) -> io::Result<(FaultFs, Control)> {
        let backing = backing.canonicalize()?;
        let mut inner = Inner {
            nodes: HashMap::new(),
            next_ino: ROOT + 1,
            dead: false,
            fail_fsync_in: None,
            injected_at: None,
            sync_latency: Duration::ZERO,
            stats: Stats::default(),
        };
        let mode = std::fs::metadata(&backing)?.mode() & 0o7777;
        inner.nodes.insert(
            ROOT,
            Node::Dir(DirNode {
                backing: backing.clone(),
                parent: ROOT,
                entries: BTreeMap::new(),
                durable: BTreeMap::new(),
                mode,
            }),
        );
        inner.load_dir(ROOT, &backing)?;
        let inner = Arc::new(Mutex::new(inner));
        Ok((FaultFs { inner: inner.clone() }, Control { inner }))
    }
}

impl Inner {
    fn load_dir(&mut self, dir: u64, path: &Path) -> io::Result<()> {
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            let name = entry.file_name();
            let ino = self.next_ino;
            if meta.is_dir() {
                self.next_ino += 1;
                self.nodes.insert(
                    ino,
                    Node::Dir(DirNode {
                        backing: entry.path(),
                        parent: dir,
                        entries: BTreeMap::new(),
                        durable: BTreeMap::new(),
                        mode: meta.mode() & 0o7777,
                    }),
                );
                self.dir_mut(dir).map_err(errno_to_io)?.entries.insert(name, ino);
                self.load_dir(ino, &entry.path())?;
            } else if meta.is_file() {
                self.next_ino += 1;
                let data = std::fs::read(entry.path())?;
                let mut durable_links = BTreeSet::new();
                durable_links.insert((dir, name.clone()));
                self.nodes.insert(
                    ino,
                    Node::File(FileNode {
                        data,
                        dirty: Vec::new(),
                        len_dirty: false,
                        durable_links,
                        staged: None,
                        links: 1,
                        mode: meta.mode() & 0o7777,
                        mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    }),
                );
                let d = self.dir_mut(dir).map_err(errno_to_io)?;
                d.entries.insert(name.clone(), ino);
                d.durable.insert(name, ino);
            }
        }
        Ok(())
    }

    fn check_alive(&self) -> Result<(), Errno> {
        if self.dead { Err(Errno::EIO) } else { Ok(()) }
    }

    fn dir(&self, ino: u64) -> Result<&DirNode, Errno> {
        match self.nodes.get(&ino) {
            Some(Node::Dir(d)) => Ok(d),
            Some(Node::File(_)) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> Result<&mut DirNode, Errno> {
        match self.nodes.get_mut(&ino) {
            Some(Node::Dir(d)) => Ok(d),
            Some(Node::File(_)) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn file_mut(&mut self, ino: u64) -> Result<&mut FileNode, Errno> {
        match self.nodes.get_mut(&ino) {
            Some(Node::File(f)) => Ok(f),
            Some(Node::Dir(_)) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let (kind, size, perm, nlink, mtime) = match self.nodes.get(&ino) {
            Some(Node::File(f)) => {
                (FileType::RegularFile, f.data.len() as u64, f.mode, f.links, f.mtime)
            }
            Some(Node::Dir(d)) => (FileType::Directory, 0, d.mode, 2, SystemTime::UNIX_EPOCH),
            None => return Err(Errno::ENOENT),
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: mtime,
            mtime,
            ctime: mtime,
            crtime: mtime,
            kind,
            perm: (perm & 0o7777) as u16,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    /// A current path of `ino` relative to the mount (the first found), for diagnostics.
    fn path_of(&self, ino: u64) -> PathBuf {
        let mut parts = Vec::new();
        let mut at = ino;
        while at != ROOT {
            let found = self.nodes.iter().find_map(|(dino, n)| match n {
                Node::Dir(d) => {
                    d.entries.iter().find(|(_, i)| **i == at).map(|(name, _)| (*dino, name.clone()))
                }
                Node::File(_) => None,
            });
            let Some((parent, name)) = found else {
                parts.push(OsString::from(format!("<unlinked inode {at}>")));
                break;
            };
            parts.push(name);
            at = parent;
        }
        parts.iter().rev().collect()
    }

    /// Whether the fsync of `ino` about to happen fails on purpose; counts down.
    fn fsync_fault_fires(&mut self, ino: u64) -> bool {
        match self.fail_fsync_in {
            Some(0) => {
                self.fail_fsync_in = None;
                self.stats.injected_failures += 1;
                self.injected_at = Some(self.path_of(ino));
                true
            }
            Some(n) => {
                self.fail_fsync_in = Some(n - 1);
                false
            }
            None => false,
        }
    }

    /// Whether the backing path of `name` in `dir` belongs to a directory other than
    /// `except`: a directory renamed away whose rename is not durable yet keeps its old
    /// backing path, so the name cannot get a new durable entry until then.
    fn slot_held(&self, dir: u64, name: &OsStr, except: &[u64]) -> Result<bool, Errno> {
        let path = self.backing_path(dir, name)?;
        Ok(self.nodes.iter().any(|(ino, n)| match n {
            Node::Dir(d) => d.backing == path && !except.contains(ino),
            Node::File(_) => false,
        }))
    }

    fn backing_path(&self, dir: u64, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.dir(dir)?.backing.join(name))
    }

    /// The content a file would have after power loss right now.
    fn durable_content(&self, ino: u64) -> io::Result<Vec<u8>> {
        let Some(Node::File(f)) = self.nodes.get(&ino) else {
            return Ok(Vec::new());
        };
        if let Some((dir, name)) = f.durable_links.iter().next() {
            let path = self.backing_path(*dir, name).map_err(errno_to_io)?;
            return std::fs::read(path);
        }
        Ok(f.staged.clone().unwrap_or_default())
    }

    fn sync_file(&mut self, ino: u64) -> Result<(), Errno> {
        self.stats.file_syncs += 1;
        let fail = self.fsync_fault_fires(ino);
        let f = self.file_mut(ino)?;
        let dirty = std::mem::take(&mut f.dirty);
        let len_dirty = std::mem::replace(&mut f.len_dirty, false);
        if fail {
            // Linux after a writeback error: the pages are clean now, their data never
            // reached the disk.
            return Err(Errno::EIO);
        }
        if f.durable_links.is_empty() {
            f.staged = Some(f.data.clone());
            return Ok(());
        }
        if dirty.is_empty() && !len_dirty {
            return Ok(());
        }
        let links: Vec<(u64, OsString)> = f.durable_links.iter().cloned().collect();
        for (dir, name) in links {
            let path = self.backing_path(dir, &name)?;
            let Some(Node::File(f)) = self.nodes.get(&ino) else {
                return Err(Errno::ENOENT);
            };
            let file = OpenOptions::new().write(true).open(&path).map_err(|e| errno(&e))?;
            let len = f.data.len() as u64;
            file.set_len(len).map_err(|e| errno(&e))?;
            for &(start, end) in &dirty {
                let end = end.min(len);
                if start < end {
                    let bytes = &f.data[start as usize..end as usize];
                    file.write_all_at(bytes, start).map_err(|e| errno(&e))?;
                }
            }
            file.sync_data().map_err(|e| errno(&e))?;
        }
        Ok(())
    }

    fn sync_dir(&mut self, dir: u64) -> Result<(), Errno> {
        self.stats.dir_syncs += 1;
        let fail = self.fsync_fault_fires(dir);
        let d = self.dir(dir)?;
        if fail {
            return Err(Errno::EIO);
        }
        let current: BTreeMap<OsString, u64> = d
            .entries
            .iter()
            .filter(|(_, ino)| matches!(self.nodes.get(ino), Some(Node::File(_))))
            .map(|(n, i)| (n.clone(), *i))
            .collect();
        let removed: Vec<(OsString, u64)> = d
            .durable
            .iter()
            .filter(|(name, ino)| current.get(*name) != Some(ino))
            .map(|(n, i)| (n.clone(), *i))
            .collect();
        let added: Vec<(OsString, u64)> = current
            .iter()
            .filter(|(name, ino)| d.durable.get(*name) != Some(ino))
            .map(|(n, i)| (n.clone(), *i))
            .collect();
        let backing = d.backing.clone();
        // Directories renamed into this one whose backing directory is still elsewhere.
        let moved_in: Vec<(OsString, u64)> = d
            .entries
            .iter()
            .filter(|(name, ino)| match self.nodes.get(ino) {
                Some(Node::Dir(c)) => c.backing != backing.join(name),
                _ => false,
            })
            .map(|(n, i)| (n.clone(), *i))
            .collect();
        if removed.is_empty() && added.is_empty() && moved_in.is_empty() {
            return Ok(());
        }
        // Every involved file's durable content, read before any backing file changes.
        let mut content: HashMap<u64, Vec<u8>> = HashMap::new();
        for (_, ino) in removed.iter().chain(&added) {
            if !content.contains_key(ino) {
                content.insert(*ino, self.durable_content(*ino).map_err(|e| errno(&e))?);
            }
        }
        for (name, ino) in &removed {
            match std::fs::remove_file(backing.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(errno(&e)),
            }
            if let Some(Node::File(f)) = self.nodes.get_mut(ino) {
                f.durable_links.remove(&(dir, name.clone()));
                if f.durable_links.is_empty() && f.links > 0 {
                    f.staged = content.get(ino).cloned();
                }
            }
        }
        for (name, ino) in &added {
            let Some(Node::File(f)) = self.nodes.get_mut(ino) else { continue };
            let bytes = content.get(ino).map(Vec::as_slice).unwrap_or_default();
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(f.mode)
                .open(backing.join(name))
                .map_err(|e| errno(&e))?;
            file.write_all_at(bytes, 0).map_err(|e| errno(&e))?;
            file.sync_data().map_err(|e| errno(&e))?;
            f.durable_links.insert((dir, name.clone()));
            f.staged = None;
        }
        // After the removals, which may have freed the names (renames at creation check
        // that no other directory's backing holds them).
        for (name, ino) in &moved_in {
            let to = backing.join(name);
            let from = self.dir(*ino)?.backing.clone();
            std::fs::rename(&from, &to).map_err(|e| errno(&e))?;
            if let Some(old_parent) = from.parent() {
                File::open(old_parent).and_then(|f| f.sync_all()).map_err(|e| errno(&e))?;
            }
            // The directory and everything under it now lives at the new path.
            for node in self.nodes.values_mut() {
                if let Node::Dir(c) = node
                    && let Ok(rest) = c.backing.strip_prefix(&from)
                {
                    c.backing =
                        if rest.as_os_str().is_empty() { to.clone() } else { to.join(rest) };
                }
            }
        }
        File::open(&backing).and_then(|f| f.sync_all()).map_err(|e| errno(&e))?;
        self.dir_mut(dir)?.durable = current;
        Ok(())
    }

    fn power_loss(&mut self) -> PowerLossReport {
        let mut report = PowerLossReport::default();
        for node in self.nodes.values() {
            match node {
                Node::File(f) => {
                    if !f.dirty.is_empty() || f.len_dirty {
                        report.dirty_files += 1;
                    }
                    report.dirty_bytes += f.dirty.iter().map(|(s, e)| e - s).sum::<u64>();
                    if f.durable_links.is_empty() && f.staged.is_some() {
                        report.unnamed_synced_files += 1;
                    }
                }
                Node::Dir(d) => {
                    let files: BTreeMap<&OsString, &u64> = d
                        .entries
                        .iter()
                        .filter(|(_, i)| matches!(self.nodes.get(i), Some(Node::File(_))))
                        .collect();
                    let changed = files.iter().filter(|(n, i)| d.durable.get(**n) != Some(i));
                    let gone = d.durable.keys().filter(|n| !files.contains_key(n));
                    let moved_in = d.entries.iter().filter(|(n, i)| match self.nodes.get(i) {
                        Some(Node::Dir(c)) => c.backing != d.backing.join(n),
                        _ => false,
                    });
                    report.unsynced_dir_entries +=
                        (changed.count() + gone.count() + moved_in.count()) as u64;
                }
            }
        }
        self.dead = true;
        self.nodes.clear();
        report
    }

    /// Writes what `torn` lets survive of each named file's unsynced writes to its backing
    /// files, before [`Inner::power_loss`] drops the rest. Files are visited in inode order,
    /// so the seed decides the outcome for a given unsynced state.
    fn persist_torn(&self, torn: &TornWrites, report: &mut PowerLossReport) -> io::Result<()> {
        let mut rng = fastrand::Rng::with_seed(torn.seed);
        let mut inos: Vec<u64> = self.nodes.keys().copied().collect();
        inos.sort_unstable();
        for ino in inos {
            let Some(Node::File(f)) = self.nodes.get(&ino) else { continue };
            if f.durable_links.is_empty() || (f.dirty.is_empty() && !f.len_dirty) {
                continue;
            }
            let mode = match torn.modes.len() {
                0 => TornMode::Dropped,
                n => torn.modes[rng.usize(0..n)],
            };
            // Every durable name holds the same content: the same draws for each.
            let start = rng.clone();
            let mut path_counted = false;
            for (dir, name) in &f.durable_links {
                let path = self.backing_path(*dir, name).map_err(errno_to_io)?;
                rng = start.clone();
                let durable = std::fs::read(&path)?;
                let (image, kept) = torn_image(&durable, f, mode, torn.block_bytes, &mut rng);
                if image != durable {
                    let file = OpenOptions::new().write(true).truncate(true).open(&path)?;
                    file.write_all_at(&image, 0)?;
                    file.sync_data()?;
                }
                if path_counted {
                    continue;
                }
                path_counted = true;
                report.persisted_bytes += kept.bytes;
                report.torn_files += u64::from(kept.partly);
                report.files.push(TornFile {
                    path: self.path_of(*dir).join(name),
                    mode,
                    unsynced_bytes: kept.unsynced,
                    kept_bytes: kept.bytes,
                    partly: kept.partly,
                });
            }
        }
        Ok(())
    }

    fn insert_file(&mut self, parent: u64, name: &OsStr, mode: u32) -> Result<u64, Errno> {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(
            ino,
            Node::File(FileNode {
                data: Vec::new(),
                dirty: Vec::new(),
                len_dirty: false,
                durable_links: BTreeSet::new(),
                staged: None,
                links: 1,
                mode: mode & 0o7777,
                mtime: SystemTime::now(),
            }),
        );
        self.dir_mut(parent)?.entries.insert(name.to_owned(), ino);
        Ok(ino)
    }

    /// Removes the current entry `name` of `parent` (a file); returns its inode.
    fn unlink_entry(&mut self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        let ino = *self.dir(parent)?.entries.get(name).ok_or(Errno::ENOENT)?;
        if matches!(self.nodes.get(&ino), Some(Node::Dir(_))) {
            return Err(Errno::EISDIR);
        }
        self.dir_mut(parent)?.entries.remove(name);
        if let Some(Node::File(f)) = self.nodes.get_mut(&ino) {
            f.links = f.links.saturating_sub(1);
        }
        Ok(ino)
    }

    fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        self.stats.writes += 1;
        let f = self.file_mut(ino)?;
        let start = usize::try_from(offset).map_err(|_| Errno::EFBIG)?;
        let end = start.checked_add(data.len()).ok_or(Errno::EFBIG)?;
        if f.data.len() < end {
            f.data.resize(end, 0);
            f.len_dirty = true;
        }
        f.data[start..end].copy_from_slice(data);
        let (s, e) = (offset, end as u64);
        match f.dirty.last_mut() {
            Some(last) if last.1 == s => last.1 = e,
            _ => f.dirty.push((s, e)),
        }
        f.mtime = SystemTime::now();
        u32::try_from(data.len()).map_err(|_| Errno::EFBIG)
    }

    fn set_len(&mut self, ino: u64, len: u64) -> Result<(), Errno> {
        let f = self.file_mut(ino)?;
        let new = usize::try_from(len).map_err(|_| Errno::EFBIG)?;
        let old = f.data.len();
        if new != old {
            // Bytes between the two lengths are zeros if the file grows back; the backing
            // file still has the old ones there.
            f.dirty.push((new.min(old) as u64, new.max(old) as u64));
            f.len_dirty = true;
            f.data.resize(new, 0);
            f.mtime = SystemTime::now();
        }
        Ok(())
    }
}

/// What [`torn_image`] kept of a file's unsynced state.
#[derive(Debug, Default)]
struct Kept {
    /// Unsynced bytes (past the current length not counted).
    unsynced: u64,
    /// Unsynced bytes written.
    bytes: u64,
    /// Whether some, but not all, of the unsynced state was kept.
    partly: bool,
}

/// The content a file's backing file has after a torn power loss: `durable` with the parts of
/// `f`'s unsynced byte ranges that `mode` keeps copied in from its current image. A kept byte
/// range past the durable length extends the file (zeros before it, as a write past the end
/// does); the length change itself (growth or truncation) is kept with [`TornMode::Kept`],
/// never with [`TornMode::Dropped`], and by a coin flip otherwise.
fn torn_image(
    durable: &[u8],
    f: &FileNode,
    mode: TornMode,
    block_bytes: u64,
    rng: &mut fastrand::Rng,
) -> (Vec<u8>, Kept) {
    let cur = &f.data;
    let cur_len = cur.len() as u64;
    let total: u64 = f.dirty.iter().map(|&(s, e)| e.min(cur_len).saturating_sub(s)).sum();
    let pieces: Vec<(u64, u64)> = match mode {
        TornMode::Dropped => Vec::new(),
        TornMode::Kept => f.dirty.clone(),
        TornMode::Prefix => {
            // Bytes in write order up to the cut (overlapping writes count each time).
            let mut left = rng.u64(0..=total);
            let mut out = Vec::new();
            for &(s, e) in &f.dirty {
                let e = e.min(cur_len);
                if s >= e {
                    continue;
                }
                let n = (e - s).min(left);
                if n == 0 {
                    break;
                }
                out.push((s, s + n));
                left -= n;
            }
            out
        }
        TornMode::Blocks => {
            let block = block_bytes.max(1);
            let mut ranges: Vec<(u64, u64)> =
                f.dirty.iter().map(|&(s, e)| (s, e.min(cur_len))).filter(|(s, e)| s < e).collect();
            ranges.sort_unstable();
            let mut merged: Vec<(u64, u64)> = Vec::new();
            for (s, e) in ranges {
                match merged.last_mut() {
                    Some(last) if s <= last.1 => last.1 = last.1.max(e),
                    _ => merged.push((s, e)),
                }
            }
            let mut out = Vec::new();
            for (s, e) in merged {
                let mut at = s;
                while at < e {
                    let end = ((at / block + 1) * block).min(e);
                    if rng.bool() {
                        out.push((at, end));
                    }
                    at = end;
                }
            }
            out
        }
    };
    let len_kept = match mode {
        TornMode::Dropped => false,
        TornMode::Kept => true,
        TornMode::Prefix | TornMode::Blocks => f.len_dirty && rng.bool(),
    };
    let mut len = if len_kept { cur_len } else { durable.len() as u64 };
    for &(s, e) in &pieces {
        if s < e && e <= cur_len {
            len = len.max(e);
        }
    }
    let mut image = durable.to_vec();
    image.resize(len as usize, 0);
    let mut kept = Kept { unsynced: total, ..Kept::default() };
    for (s, e) in pieces {
        let e = e.min(len).min(cur_len);
        if s < e {
            image[s as usize..e as usize].copy_from_slice(&cur[s as usize..e as usize]);
            kept.bytes += e - s;
        }
    }
    let all = kept.bytes >= total && (len_kept || !f.len_dirty);
    kept.partly = (kept.bytes > 0 || len_kept) && !all;
    (image, kept)
}

fn errno_to_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e.code())
}

impl Control {
    /// Simulates power loss (LazyFS's `clear-cache`): drops every unsynced write, length
    /// change and directory change, and fails every later operation on the mount with `EIO`.
    /// The backing directory then holds exactly what survived.
    pub fn power_loss(&self) -> PowerLossReport {
        lock(&self.inner).power_loss()
    }

    /// Simulates power loss with torn writes: like [`Control::power_loss`], except that each
    /// file with a durable name first keeps a part of its unsynced writes, as `torn` draws
    /// it (see [`TornMode`]); unsynced directory changes are dropped as before. The mount is
    /// off afterwards even if writing a backing file failed (the error is returned then, and
    /// the backing directory may hold only some of the kept writes).
    pub fn power_loss_torn(&self, torn: &TornWrites) -> io::Result<PowerLossReport> {
        let mut inner = lock(&self.inner);
        if inner.dead {
            return Ok(PowerLossReport::default());
        }
        let mut kept = PowerLossReport::default();
        let persisted = inner.persist_torn(torn, &mut kept);
        let mut report = inner.power_loss();
        report.persisted_bytes = kept.persisted_bytes;
        report.torn_files = kept.torn_files;
        report.files = kept.files;
        persisted.map(|()| report)
    }

    /// Makes the fsync `n` fsyncs from now (0 = the next one; file and directory fsyncs
    /// count alike) fail with `EIO`, once. Replaces an earlier pending injection.
    pub fn fail_fsync_at(&self, n: u64) {
        lock(&self.inner).fail_fsync_in = Some(n);
    }

    /// Whether the injection set by [`Control::fail_fsync_at`] has fired (or none is set).
    pub fn fsync_fault_pending(&self) -> bool {
        lock(&self.inner).fail_fsync_in.is_some()
    }

    /// The path (relative to the mount) of the file or directory whose fsync was last failed
    /// on purpose.
    pub fn injected_at(&self) -> Option<PathBuf> {
        lock(&self.inner).injected_at.clone()
    }

    /// Makes every later fsync (file or directory) wait `latency` before it syncs, as a
    /// slow disk would, so that a power loss at a random moment usually finds writes in
    /// flight. The mount serves one request at a time, so other operations wait too. A power
    /// loss during the wait fails the fsync with `EIO` and makes nothing durable.
    pub fn set_sync_latency(&self, latency: Duration) {
        lock(&self.inner).sync_latency = latency;
    }

    /// Operation counters so far.
    pub fn stats(&self) -> Stats {
        lock(&self.inner).stats
    }
}

/// Whether this process can mount a FUSE file system, or why not.
pub fn can_mount() -> Result<(), String> {
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse does not exist".into());
    }
    if let Err(e) = OpenOptions::new().read(true).write(true).open("/dev/fuse") {
        return Err(format!("cannot open /dev/fuse: {e}"));
    }
    // mount(2) needs CAP_SYS_ADMIN; there is no fusermount fallback on purpose (it is not
    // installed on a fresh machine).
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    if cap_eff & CAP_SYS_ADMIN == 0 {
        return Err("no CAP_SYS_ADMIN (not root), so mount(2) is not allowed".into());
    }
    Ok(())
}

/// A [`FaultFs`] mounted in a background thread of this process. Dropping it unmounts.
#[derive(Debug)]
pub struct Mounted {
    session: Option<BackgroundSession>,
    control: Control,
    mountpoint: PathBuf,
}

impl Mounted {
    /// Mounts a [`FaultFs`] over `backing` at `mountpoint` (an existing directory).
    pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<Mounted> {
        let (fs, control) = FaultFs::new(backing)?;
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("annal-faultfs".into()),
            MountOption::Subtype("faultfs".into()),
            MountOption::RW,
            MountOption::DefaultPermissions,
        ];
        let session = fuser::spawn_mount(fs, mountpoint, &config)?;
        Ok(Mounted { session: Some(session), control, mountpoint: mountpoint.to_path_buf() })
    }

    /// The control handle.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Unmounts and waits for the session thread to finish. A busy mount (a file on it
    /// still open or mapped, perhaps only by a process between `fork` and `exec`) is retried
    /// for up to 2 s, then detached lazily and the error returned.
    pub fn unmount(mut self) -> io::Result<()> {
        self.unmount_now()
    }

    fn unmount_now(&mut self) -> io::Result<()> {
        use rustix::mount::{UnmountFlags, unmount};
        let Some(session) = self.session.take() else { return Ok(()) };
        let mut tries = 0;
        loop {
            match unmount(&self.mountpoint, UnmountFlags::empty()) {
                Ok(()) => break,
                Err(rustix::io::Errno::BUSY) if tries < 200 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    // Never leave a mount behind: it would outlive the test that made it.
                    let _ = unmount(&self.mountpoint, UnmountFlags::DETACH);
                    return Err(e.into());
                }
            }
        }
        // The kernel ends the session now; `fuser`'s own unmount (when the session is
        // dropped) finds nothing left to do and ignores the error it gets. Reading the
        // device of an unmounted file system fails with ENODEV (which `fuser` takes as the
        // end) or, when the kernel aborted the connection, ECONNABORTED: the end too.
        match session.join() {
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::CONNABORTED.raw_os_error()) => {
                Ok(())
            }
            other => other,
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = self.unmount_now();
    }
}

macro_rules! tri {
    ($reply:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return $reply.error(e),
        }
    };
}

impl FaultFs {
    /// Sleeps for the configured sync latency, without holding the state (a power loss may
    /// happen meanwhile).
    fn wait_for_sync(&self) {
        let latency = lock(&self.inner).sync_latency;
        if !latency.is_zero() {
            std::thread::sleep(latency);
        }
    }
}

impl Filesystem for FaultFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let inner = lock(&self.inner);
        tri!(reply, inner.check_alive());
        let ino = tri!(
            reply,
            inner.dir(parent.0).and_then(|d| d.entries.get(name).copied().ok_or(Errno::ENOENT))
        );
        let attr = tri!(reply, inner.attr(ino));
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let inner = lock(&self.inner);
        tri!(reply, inner.check_alive());
        let attr = tri!(reply, inner.attr(ino.0));
        reply.attr(&TTL, &attr);
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut inner = lock(&self.inner);
        tri!(reply, inner.check_alive());
        if let Some(size) = size {
            tri!(reply, inner.set_len(ino.0, size));
        }
        if let Some(mode) = mode {
            // Permissions are metadata the engine never syncs on their own; they apply to
            // the current image and to backing files created from now on.
            match inner.nodes.get_mut(&ino.0) {
                Some(Node::File(f)) => f.mode = mode & 0o7777,
                Some(Node::Dir(d)) => d.mode = mode & 0o7777,
                None => return reply.error(Errno::ENOENT),
            }
        }
        let attr = tri!(reply, inner.attr(ino.0));
        reply.attr(&TTL, &attr);
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut inner = lock(&self.inner);
        tri!(reply, inner.check_alive());
        let d = tri!(reply, inner.dir(parent.0));
        if d.entries.contains_key(name) {
            return reply.error(Errno::EEXIST);
        }
        if tri!(reply, inner.slot_held(parent.0, name, &[])) {
            return reply.error(Errno::EBUSY);
        }
        let path = d.backing.join(name);
        let parent_backing = d.backing.clone();
        let mode = mode & !umask & 0o7777;
        // Directories are durable at once.
        let made = std::fs::DirBuilder::new()
            .mode(mode)
            .create(&path)
            .and_then(|()| File::open(&parent_backing)?.sync_all());
        tri!(reply, made.map_err(|e| errno(&e)));
        let ino = inner.next_ino;
        inner.next_ino += 1;
        inner.nodes.insert(
            ino,
            Node::Dir(DirNode {
                backing: path,
                parent: parent.0,
                entries: BTreeMap::new(),
                durable: BTreeMap::new(),
                mode,
            }),
        );
        tri!(reply, inner.dir_mut(parent.0)).entries.insert(name.to_owned(), ino);
        let attr = tri!(reply, inner.attr(ino));
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut inner = lock(&self.inner);
        tri!(reply, inner.check_alive());
        tri!(reply, inner.unlink_entry(parent.0, name));
        reply.ok();
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut inner = lock(&self.inner);
        tri!(reply, inner.check_alive());
        let ino = tri!(
            reply,
            inner.dir(parent.0).and_then(|d| d.entries.get(name).copied().ok_or(Errno::ENOENT))
        );
        let d = tri!(reply, inner.dir(ino));
        if !d.entries.is_empty() || !d.durable.is_empty() {
            return reply.error(Errno::ENOTEMPTY);
        }
        let path = d.backing.clone();
        // Where the directory durably is: its parent's backing directory, or the old one if
        // a rename of it is not durable yet.
        let parent_backing = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let removed =
            std::fs::remove_dir(&path).and_then(|()| File::open(&parent_backing)?.sync_all());
        tri!(reply, removed.map_err(|e| errno(&e)));
        tri!(reply, inner.dir_mut(parent.0)).entries.remove(name);
        inner.nodes.remove(&ino);
        reply.ok();
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut inner = lock(&self.inner);
        tri!(reply, inner.check_alive());
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return reply.error(Errno::EINVAL);
        }
        let ino = tri!(
            reply,
            inner.dir(parent.0).and_then(|d| d.entries.get(name).copied().ok_or(Errno::ENOENT))
        );
        let is_dir = matches!(inner.nodes.get(&ino), Some(Node::Dir(_)));
        let target = tri!(reply, inner.dir(newparent.0)).entries.get(newname).copied();
        let target_dir = target.filter(|t| matches!(inner.nodes.get(t), Some(Node::Dir(_))));
        match target {
            Some(t) if t == ino => return reply.ok(),
            Some(_) if flags.contains(RenameFlags::RENAME_NOREPLACE) => {
                return reply.error(Errno::EEXIST);
            }
            Some(_) if target_dir.is_some() && !is_dir => return reply.error(Errno::EISDIR),
            Some(_) if target_dir.is_none() && is_dir => return reply.error(Errno::ENOTDIR),
            _ => {}
        }
        if is_dir {
            // Not into itself or below itself.
            let mut at = newparent.0;
            loop {
                if at == ino {
                    return reply.error(Errno::EINVAL);
                }
                if at == ROOT {
                    break;
                }
                at = tri!(reply, inner.dir(at)).parent;
            }
        }
        let except: Vec<u64> = [ino].into_iter().chain(target_dir).collect();
        if tri!(reply, inner.slot_held(newparent.0, newname, &except)) {
            return reply.error(Errno::EBUSY);
        }
        match (target, target_dir) {
            (Some(_), Some(t)) => {
                // An empty directory is replaced; like `rmdir`, its removal is durable at
                // once.
                let d = tri!(reply, inner.dir(t));
                if !d.entries.is_empty() || !d.durable.is_empty() {
                    return reply.error(Errno::ENOTEMPTY);
                }
                let path = d.backing.clone();
                let parent_backing = path.parent().map(Path::to_path_buf).unwrap_or_default();
                let removed = std::fs::remove_dir(&path)
                    .and_then(|()| File::open(&parent_backing)?.sync_all());
                tri!(reply, removed.map_err(|e| errno(&e)));
                tri!(reply, inner.dir_mut(newparent.0)).entries.remove(newname);
                inner.nodes.remove(&t);
            }
            (Some(_), None) => {
                tri!(reply, inner.unlink_entry(newparent.0, newname));
            }
            (None, _) => {}
        }
        tri!(reply, inner.dir_mut(parent.0)).entries.remove(name);
        tri!(reply, inner.dir_mut(newparent.0)).entries.insert(newname.to_owned(), ino);
        if is_dir {
            tri!(reply, inner.dir_mut(ino)).parent = newparent.0;
        }
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let inner = lock(&self.inner);
        tri!(reply, inner.check_alive());
        tri!(reply, inner.attr(ino.0));
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut inner = lock(&self.inner);
        tri!(reply, inner.check_alive());
        let f = tri!(reply, inner.file_mut(ino.0));
        let len = f.data.len() as u64;
        let start = offset.min(len) as usize;
        let end = offset.saturating_add(u64::from(size)).min(len) as usize;
        reply.data(&f.data[start..end]);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut inner = lock(&self.inner);
        tri!(reply, inner.check_alive());
        let n = tri!(reply, inner.write(ino.0, offset, data));
        reply.written(n);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) does not sync.
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.wait_for_sync();
        let mut inner = lock(&self.inner);
        tri!(reply, inner.check_alive());
        tri!(reply, inner.sync_file(ino.0));
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let inner = lock(&self.inner);
        tri!(reply, inner.check_alive());
        tri!(reply, inner.dir(ino.0));
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let inner = lock(&self.inner);
        tri!(reply, inner.check_alive());
        let d = tri!(reply, inner.dir(ino.0));
        let mut all: Vec<(u64, FileType, OsString)> = vec![
            (ino.0, FileType::Directory, ".".into()),
            (d.parent, FileType::Directory, "..".into()),
        ];
        for (name, child) in &d.entries {
            let kind = match inner.nodes.get(child) {
                Some(Node::Dir(_)) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            all.push((*child, kind, name.clone()));
        }
        for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.wait_for_sync();
        let mut inner = lock(&self.inner);
        tri!(reply, inner.check_alive());
        tri!(reply, inner.sync_dir(ino.0));
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut inner = lock(&self.inner);
        tri!(reply, inner.check_alive());
        let existing = tri!(reply, inner.dir(parent.0)).entries.get(name).copied();
        let ino = match existing {
            Some(_) if flags & libc::O_EXCL != 0 => return reply.error(Errno::EEXIST),
            Some(ino) => ino,
            None if tri!(reply, inner.slot_held(parent.0, name, &[])) => {
                return reply.error(Errno::EBUSY);
            }
            None => tri!(reply, inner.insert_file(parent.0, name, mode & !umask)),
        };
        if flags & libc::O_TRUNC != 0 {
            tri!(reply, inner.set_len(ino, 0));
        }
        let attr = tri!(reply, inner.attr(ino));
        reply.created(&TTL, &attr, Generation(0), FileHandle(0), FopenFlags::empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `torn_image` after random writes and truncations: durable bytes outside the unsynced
    /// ranges never change, an unsynced byte is its durable or its current value (or zero
    /// where neither exists), and `Dropped`/`Kept` give the durable/current image exactly.
    #[test]
    fn torn_images_keep_only_unsynced_bytes() {
        for seed in 0..2000u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let durable: Vec<u8> = (0..rng.usize(0..3000)).map(|_| rng.u8(1..)).collect();
            let mut inner = Inner {
                nodes: HashMap::new(),
                next_ino: 3,
                dead: false,
                fail_fsync_in: None,
                injected_at: None,
                sync_latency: Duration::ZERO,
                stats: Stats::default(),
            };
            let node = FileNode {
                data: durable.clone(),
                dirty: Vec::new(),
                len_dirty: false,
                durable_links: BTreeSet::new(),
                staged: None,
                links: 1,
                mode: 0o600,
                mtime: SystemTime::UNIX_EPOCH,
            };
            inner.nodes.insert(2, Node::File(node));
            for _ in 0..rng.usize(0..6) {
                if rng.u8(0..4) == 0 {
                    inner.set_len(2, rng.u64(0..4000)).unwrap();
                } else {
                    let data: Vec<u8> = (0..rng.usize(1..1500)).map(|_| rng.u8(1..)).collect();
                    inner.write(2, rng.u64(0..3500), &data).unwrap();
                }
            }
            let Some(Node::File(f)) = inner.nodes.get(&2) else { unreachable!() };
            let dirty = |i: u64| f.dirty.iter().any(|&(s, e)| s <= i && i < e);
            for mode in [TornMode::Dropped, TornMode::Kept, TornMode::Prefix, TornMode::Blocks] {
                let block = [1, 512, 4096][rng.usize(0..3)];
                let (image, kept) = torn_image(&durable, f, mode, block, &mut rng);
                let ctx = format!("seed {seed} {mode:?} block {block}: {:?}", f.dirty);
                match mode {
                    TornMode::Dropped => assert!(image == durable, "{ctx}"),
                    TornMode::Kept => assert!(image == f.data, "{ctx}"),
                    _ => {}
                }
                // The durable or current length, or the end of a kept write past the durable
                // end (a torn append extends the file as far as it got).
                let n = image.len();
                let len_ok = [durable.len(), f.data.len()].contains(&n)
                    || (durable.len() < n && n <= f.data.len() && dirty(n as u64 - 1));
                assert!(len_ok, "{ctx}: length {}", image.len());
                for (i, &b) in image.iter().enumerate() {
                    let old = durable.get(i).copied().unwrap_or(0);
                    let new = f.data.get(i).copied().unwrap_or(0);
                    if dirty(i as u64) {
                        assert!(b == old || b == new, "{ctx}: byte {i}");
                    } else {
                        assert_eq!(b, old, "{ctx}: durable byte {i} changed");
                    }
                }
                assert!(kept.bytes <= kept.unsynced || mode == TornMode::Kept, "{ctx}");
            }
        }
    }
}
