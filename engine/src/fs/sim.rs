//! [`SimFs`]: a deterministic, in-memory simulation of a file system with a page cache, for
//! crash-consistency tests (in the spirit of SQLite's crash VFS, redb's durable/live images
//! and LevelDB's fault-injection env). It owns every simulated byte; no real disk is touched.
//!
//! # Model
//!
//! * Every file is an inode with a `current` image (what reads see) and a `durable` image
//!   (what survives power loss). `write_all_at`, `set_len` and `preallocate` change `current`
//!   at once and append an entry to the inode's list of pending (unsynced) operations.
//!   `sync_data` applies the operations pending when it started to `durable`, in order.
//! * Every directory has `current` and `durable` entries (name -> inode). Creating, renaming
//!   and removing a file change `current` at once and are pending operations of the directory
//!   (of both directories for a rename across directories, each deciding independently).
//!   `sync_dir` applies them to `durable`. Directories themselves are durable as soon as
//!   `create_dir_all` returns, and gone for good once `remove_dir` returns.
//! * [`SimFs::crash`] simulates power loss. Each pending file operation is independently kept,
//!   dropped, torn (a prefix of a write reaches the disk, possibly nothing) or garbled (random
//!   bytes over a sub-range of the write, with the rest of the write either intact or absent);
//!   each pending directory operation is kept or dropped. Every decision comes from an RNG
//!   seeded from the [`SimFs`] seed and the crash's index, so a run is reproducible. Then every
//!   `current` becomes its `durable`, handles opened before the crash go stale and all locks
//!   are released (the process died). Inodes that no durable entry names are discarded.
//! * **Powersafe overwrite**: a torn or garbled write never damages bytes outside its own
//!   byte range. The engine relies on this, as SQLite does with `SQLITE_IOCAP_POWERSAFE_OVERWRITE`;
//!   the only bytes outside a write's range that a crash can change are ones past the old end
//!   of the file, which read as zeros when a write beyond them extends the file.
//! * A failed sync behaves like Linux after an `fsync` error: the operations it covered are
//!   forgotten (their pages are marked clean) without reaching the durable image, so a later
//!   successful sync does not make them durable.
//!
//! Paths are opaque keys after lexical normalisation (`.` dropped, `..` pops a component,
//! trailing separators ignored). `/` and the relative root `""` always exist.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::{LockGuard, OpenMode, Preallocation, Storage, StorageFile};

/// Percentage of pending file operations a random crash keeps intact.
const KEEP_PCT: u32 = 40;
/// Percentage of pending file operations a random crash drops.
const DROP_PCT: u32 = 20;
/// Percentage of pending file operations a random crash tears; the rest (20%) are garbled.
const TEAR_PCT: u32 = 20;
/// Percentage of pending directory operations a random crash keeps.
const DIR_KEEP_PCT: u32 = 50;

/// How [`SimFs::crash_with`] treats the operations that were not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Each pending operation is independently kept (40%), dropped (20%), torn (20%) or
    /// garbled (20%); each pending directory operation is kept or dropped (50% each).
    Random,
    /// Every pending operation reaches the disk intact, as if synced just before power loss.
    KeepAll,
    /// No pending operation reaches the disk: only what was synced survives.
    DropAll,
    /// Exactly the pending operations whose bit is set reach the disk intact; the others are
    /// dropped. Bit `i` stands for the `i`-th oldest pending operation, file and directory
    /// operations together, in the order they were issued (the order
    /// [`SimFs::pending_op_list`] lists them in); operations past the 64th are dropped. This
    /// is how a test enumerates ALICE's reordering states: a later unsynced operation on disk
    /// while an earlier one is not, in the same file or in different ones.
    KeepOnly(u64),
}

/// One pending (unsynced) operation, as [`SimFs::pending_op_list`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingOp {
    /// The file (a current or durable name of its inode) or directory it changes.
    pub path: String,
    /// Whether it is a directory operation (create, unlink, rename) rather than a write,
    /// `set_len` or preallocation of a file's data.
    pub dir_op: bool,
    /// What it does, for messages.
    pub what: String,
}

/// One event of the [`SimFs`] trace, in the global order the operations happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceEvent {
    /// A write changed the current image of the file opened at `path` (a short failed write
    /// records the prefix it applied).
    Write {
        /// The path the file was opened with.
        path: PathBuf,
        /// Byte offset of the write.
        offset: u64,
        /// Number of bytes written.
        len: u64,
    },
    /// A `sync_data` started; the operations pending now are the ones it covers.
    SyncStart {
        /// The path the file was opened with.
        path: PathBuf,
    },
    /// A `sync_data` finished.
    SyncEnd {
        /// The path the file was opened with.
        path: PathBuf,
        /// Whether it succeeded.
        ok: bool,
    },
    /// A `sync_dir` happened.
    DirSync {
        /// The directory.
        path: PathBuf,
        /// Whether it succeeded.
        ok: bool,
    },
    /// A label added by a test with [`SimFs::mark`].
    Mark(String),
}

/// What a simulated crash did to the pending operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashReport {
    /// The seed of the [`SimFs`]; with `crash_index` it determines every random decision.
    pub seed: u64,
    /// How many crashes this [`SimFs`] had before this one.
    pub crash_index: u64,
    /// The mode the crash ran in.
    pub mode: CrashMode,
    /// Operations (file and directory) that reached the disk intact.
    pub kept: u64,
    /// Operations (file and directory) that did not reach the disk at all.
    pub dropped: u64,
    /// Writes of which only a prefix reached the disk.
    pub torn: u64,
    /// Writes of which a sub-range reached the disk as random bytes.
    pub garbled: u64,
    /// One human-readable line per decided operation, in decision order.
    pub details: Vec<String>,
}

/// A deterministic simulated file system with a page cache; see the module documentation.
///
/// Clones share the same state.
#[derive(Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

/// A pending operation on a file's data.
#[derive(Debug, Clone)]
enum FileOp {
    Write { offset: usize, data: Vec<u8> },
    SetLen(usize),
    Preallocate(usize),
}

/// A pending operation on a directory's entries.
#[derive(Debug, Clone)]
enum DirOp {
    Create { name: String, ino: u64 },
    Unlink { name: String, ino: u64 },
    Rename { from: String, to: String, ino: u64 },
    MoveOut { name: String, ino: u64, to: PathBuf },
    MoveIn { name: String, ino: u64, from: PathBuf },
}

#[derive(Debug, Default)]
struct Inode {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// Pending operations with their issue numbers (`State::next_op`), oldest first.
    pending: Vec<(u64, FileOp)>,
    /// Live (non-stale) handles.
    handles: usize,
}

#[derive(Debug, Default)]
struct Dir {
    current: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
    /// Pending operations with their issue numbers (`State::next_op`), oldest first.
    pending: Vec<(u64, DirOp)>,
}

/// A one-shot fault firing on the `remaining`-th next call.
#[derive(Debug, Clone, Copy)]
struct Countdown {
    remaining: u64,
}

impl Countdown {
    /// Counts one call; returns whether the fault fires on it.
    fn tick(&mut self) -> bool {
        if self.remaining == 0 {
            true
        } else {
            self.remaining -= 1;
            false
        }
    }
}

#[derive(Debug)]
struct State {
    seed: u64,
    /// Number of crashes so far; handles remember the epoch they were opened in.
    epoch: u64,
    fault_rng: fastrand::Rng,
    dirs: BTreeMap<PathBuf, Dir>,
    inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
    locks: BTreeMap<PathBuf, u64>,
    next_token: u64,
    capacity: Option<u64>,
    sync_fault: Option<Countdown>,
    write_fault: Option<(Countdown, bool)>,
    preallocate_supported: bool,
    /// What [`Storage::zero_fill_pays`] answers (false unless a test turns it on).
    zero_fill_pays: bool,
    sync_delay: Duration,
    tracing: bool,
    trace: Vec<TraceEvent>,
    /// Issue number of the next pending operation, over all files and directories.
    next_op: u64,
    sync_count: u64,
    dir_sync_count: u64,
    write_count: u64,
    /// A directory fsync failed: the file system has shut down (as ext4 and XFS do when
    /// their journal cannot be written) and refuses every change until the next crash.
    aborted: bool,
}

fn lock_state(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn stale() -> io::Error {
    io::Error::other("simulated crash: stale handle")
}

fn shut_down() -> io::Error {
    io::Error::other("simulated file system shut down after a failed directory fsync")
}

impl State {
    /// Fails if the file system has shut down.
    fn check_alive(&self) -> io::Result<()> {
        if self.aborted { Err(shut_down()) } else { Ok(()) }
    }
}

fn eio() -> io::Error {
    io::Error::other("simulated EIO")
}

fn not_found(what: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{}: not found", what.display()))
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_owned())
}

fn to_usize(v: u64) -> io::Result<usize> {
    usize::try_from(v).map_err(|_| invalid("offset or length does not fit in memory"))
}

/// A 64-bit mix (splitmix64 finaliser) so nearby seeds give unrelated streams.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Lexical normalisation: drops `.`, resolves `..` against the preceding component.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Prefix(p) => out.push(p.as_os_str()),
            Component::RootDir => out.push(Component::RootDir.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(".."),
            },
            Component::Normal(n) => out.push(n),
        }
    }
    out
}

/// Splits a normalised path into its parent directory and its file name.
fn split(key: &Path) -> io::Result<(PathBuf, String)> {
    let name = key
        .file_name()
        .ok_or_else(|| invalid("path has no file name"))?
        .to_string_lossy()
        .into_owned();
    let parent = key.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok((parent, name))
}

/// Writes `data` at `offset`, zero-extending the image first if needed.
fn write_into(image: &mut Vec<u8>, offset: usize, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let end = offset + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[offset..end].copy_from_slice(data);
}

fn apply_file_op(image: &mut Vec<u8>, op: &FileOp) {
    match op {
        FileOp::Write { offset, data } => write_into(image, *offset, data),
        FileOp::SetLen(len) => image.resize(*len, 0),
        FileOp::Preallocate(len) => {
            if image.len() < *len {
                image.resize(*len, 0);
            }
        }
    }
}

impl DirOp {
    fn apply(&self, entries: &mut BTreeMap<String, u64>) {
        match self {
            DirOp::Create { name, ino } | DirOp::MoveIn { name, ino, .. } => {
                entries.insert(name.clone(), *ino);
            }
            DirOp::Unlink { name, ino } | DirOp::MoveOut { name, ino, .. } => {
                if entries.get(name) == Some(ino) {
                    entries.remove(name);
                }
            }
            DirOp::Rename { from, to, ino } => {
                if entries.get(from) == Some(ino) {
                    entries.remove(from);
                }
                entries.insert(to.clone(), *ino);
            }
        }
    }

    fn ino(&self) -> u64 {
        match self {
            DirOp::Create { ino, .. }
            | DirOp::Unlink { ino, .. }
            | DirOp::Rename { ino, .. }
            | DirOp::MoveOut { ino, .. }
            | DirOp::MoveIn { ino, .. } => *ino,
        }
    }

    fn describe(&self) -> String {
        match self {
            DirOp::Create { name, ino } => format!("create {name} (ino {ino})"),
            DirOp::Unlink { name, ino } => format!("unlink {name} (ino {ino})"),
            DirOp::Rename { from, to, ino } => format!("rename {from} -> {to} (ino {ino})"),
            DirOp::MoveOut { name, ino, to } => {
                format!("move {name} out to {} (ino {ino})", to.display())
            }
            DirOp::MoveIn { name, ino, from } => {
                format!("move {name} in from {} (ino {ino})", from.display())
            }
        }
    }
}

impl State {
    fn new(seed: u64) -> State {
        let mut dirs = BTreeMap::new();
        dirs.insert(PathBuf::from("/"), Dir::default());
        dirs.insert(PathBuf::new(), Dir::default());
        State {
            seed,
            epoch: 0,
            fault_rng: fastrand::Rng::with_seed(mix(seed ^ 0x5EED_FA17)),
            dirs,
            inodes: BTreeMap::new(),
            next_ino: 1,
            locks: BTreeMap::new(),
            next_token: 1,
            capacity: None,
            sync_fault: None,
            write_fault: None,
            preallocate_supported: true,
            zero_fill_pays: false,
            sync_delay: Duration::ZERO,
            tracing: false,
            trace: Vec::new(),
            next_op: 0,
            sync_count: 0,
            dir_sync_count: 0,
            write_count: 0,
            aborted: false,
        }
    }

    fn record(&mut self, event: TraceEvent) {
        if self.tracing {
            self.trace.push(event);
        }
    }

    fn take_sync_fault(&mut self) -> bool {
        let fire = self.sync_fault.as_mut().is_some_and(Countdown::tick);
        if fire {
            self.sync_fault = None;
        }
        fire
    }

    /// Returns `Some(short)` if the write fault fires on this call.
    fn take_write_fault(&mut self) -> Option<bool> {
        let (countdown, short) = self.write_fault.as_mut()?;
        let short = *short;
        if countdown.tick() {
            self.write_fault = None;
            Some(short)
        } else {
            None
        }
    }

    fn alloc_inode(&mut self) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, Inode::default());
        ino
    }

    fn inode_mut(&mut self, ino: u64) -> io::Result<&mut Inode> {
        self.inodes.get_mut(&ino).ok_or_else(stale)
    }

    fn dir_mut(&mut self, key: &Path) -> io::Result<&mut Dir> {
        self.dirs.get_mut(key).ok_or_else(|| not_found(key))
    }

    /// The inode the current entry `key` names, if any.
    fn lookup_current(&self, key: &Path) -> Option<u64> {
        let (parent, name) = split(key).ok()?;
        self.dirs.get(&parent)?.current.get(&name).copied()
    }

    /// The inode the durable entry `key` names, if any.
    fn lookup_durable(&self, key: &Path) -> Option<u64> {
        let (parent, name) = split(key).ok()?;
        self.dirs.get(&parent)?.durable.get(&name).copied()
    }

    /// Bytes used by the current images of files that are linked or open.
    fn used_bytes(&self) -> u64 {
        let linked: BTreeSet<u64> =
            self.dirs.values().flat_map(|d| d.current.values().copied()).collect();
        self.inodes
            .iter()
            .filter(|(ino, inode)| inode.handles > 0 || linked.contains(ino))
            .map(|(_, inode)| inode.current.len() as u64)
            .sum()
    }

    /// Fails with `StorageFull` if growing a file from `old_len` to `new_len` would exceed
    /// the capacity.
    fn check_growth(&self, old_len: usize, new_len: usize) -> io::Result<()> {
        let Some(capacity) = self.capacity else {
            return Ok(());
        };
        if new_len <= old_len {
            return Ok(());
        }
        let grow = (new_len - old_len) as u64;
        if self.used_bytes().saturating_add(grow) > capacity {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "simulated ENOSPC"));
        }
        Ok(())
    }

    /// Applies `op` to the current image of `ino` (after a capacity check) and records it as
    /// pending.
    fn apply_current(&mut self, ino: u64, op: FileOp) -> io::Result<()> {
        let inode = self.inodes.get(&ino).ok_or_else(stale)?;
        let old_len = inode.current.len();
        let new_len = match &op {
            FileOp::Write { offset, data } => old_len.max(offset + data.len()),
            FileOp::SetLen(len) => *len,
            FileOp::Preallocate(len) => old_len.max(*len),
        };
        self.check_growth(old_len, new_len)?;
        let seq = self.issue();
        let inode = self.inode_mut(ino)?;
        apply_file_op(&mut inode.current, &op);
        inode.pending.push((seq, op));
        Ok(())
    }

    /// The issue number of a new pending operation.
    fn issue(&mut self) -> u64 {
        self.next_op += 1;
        self.next_op - 1
    }

    /// Discards `ino` if nothing can reach it any more: no handle, no current or durable
    /// entry, no pending directory operation.
    fn maybe_gc(&mut self, ino: u64) {
        let Some(inode) = self.inodes.get(&ino) else {
            return;
        };
        if inode.handles > 0 {
            return;
        }
        let referenced = self.dirs.values().any(|d| {
            d.current.values().any(|&i| i == ino)
                || d.durable.values().any(|&i| i == ino)
                || d.pending.iter().any(|(_, op)| op.ino() == ino)
        });
        if !referenced {
            self.inodes.remove(&ino);
        }
    }

    /// A name for `ino` in crash reports.
    fn inode_names(&self) -> BTreeMap<u64, String> {
        let mut names = BTreeMap::new();
        for (dir_path, dir) in &self.dirs {
            for (name, ino) in dir.durable.iter().chain(dir.current.iter()) {
                names.insert(*ino, dir_path.join(name).display().to_string());
            }
        }
        names
    }

    fn crash(&mut self, mode: CrashMode) -> CrashReport {
        // The machine comes back up: the file system is mounted again.
        self.aborted = false;
        let crash_index = self.epoch;
        let mut rng = fastrand::Rng::with_seed(mix(self.seed ^ mix(crash_index)));
        let names = self.inode_names();
        // For `KeepOnly`: whether each pending operation, by issue number, is kept.
        let keep_only: BTreeMap<u64, bool> = match mode {
            CrashMode::KeepOnly(mask) => {
                let mut seqs: Vec<u64> = self
                    .inodes
                    .values()
                    .flat_map(|i| i.pending.iter().map(|(seq, _)| *seq))
                    .chain(self.dirs.values().flat_map(|d| d.pending.iter().map(|(seq, _)| *seq)))
                    .collect();
                seqs.sort_unstable();
                seqs.iter()
                    .enumerate()
                    .map(|(rank, seq)| (*seq, rank < 64 && mask >> rank & 1 == 1))
                    .collect()
            }
            _ => BTreeMap::new(),
        };
        let mut report = CrashReport {
            seed: self.seed,
            crash_index,
            mode,
            kept: 0,
            dropped: 0,
            torn: 0,
            garbled: 0,
            details: Vec::new(),
        };
        for (ino, inode) in &mut self.inodes {
            let who = names.get(ino).map_or("<unlinked>", String::as_str);
            for (seq, op) in std::mem::take(&mut inode.pending) {
                let forced = keep_only.get(&seq).copied();
                crash_file_op(&mut rng, mode, forced, &mut inode.durable, &op, &mut report, who);
            }
            inode.current = inode.durable.clone();
            inode.handles = 0;
        }
        for (path, dir) in &mut self.dirs {
            for (seq, op) in std::mem::take(&mut dir.pending) {
                let keep = match mode {
                    CrashMode::KeepAll => true,
                    CrashMode::DropAll => false,
                    CrashMode::Random => rng.u32(0..100) < DIR_KEEP_PCT,
                    CrashMode::KeepOnly(_) => keep_only.get(&seq).copied().unwrap_or(false),
                };
                let verdict = if keep {
                    op.apply(&mut dir.durable);
                    report.kept += 1;
                    "kept"
                } else {
                    report.dropped += 1;
                    "dropped"
                };
                report.details.push(format!(
                    "dir {}: {}: {verdict}",
                    path.display(),
                    op.describe()
                ));
            }
        }
        let inodes = &self.inodes;
        for dir in self.dirs.values_mut() {
            dir.durable.retain(|_, ino| inodes.contains_key(ino));
            dir.current = dir.durable.clone();
        }
        let referenced: BTreeSet<u64> =
            self.dirs.values().flat_map(|d| d.durable.values().copied()).collect();
        self.inodes.retain(|ino, _| referenced.contains(ino));
        self.locks.clear();
        self.epoch += 1;
        report
    }
}

/// Decides the fate of one pending file operation in a crash and applies it to `durable`.
fn crash_file_op(
    rng: &mut fastrand::Rng,
    mode: CrashMode,
    forced: Option<bool>,
    durable: &mut Vec<u8>,
    op: &FileOp,
    report: &mut CrashReport,
    who: &str,
) {
    enum Fate {
        Keep,
        Drop,
        Tear,
        Garble,
    }
    let fate = match mode {
        CrashMode::KeepAll => Fate::Keep,
        CrashMode::DropAll => Fate::Drop,
        CrashMode::KeepOnly(_) => {
            if forced.unwrap_or(false) {
                Fate::Keep
            } else {
                Fate::Drop
            }
        }
        CrashMode::Random => {
            let r = rng.u32(0..100);
            if r < KEEP_PCT {
                Fate::Keep
            } else if r < KEEP_PCT + DROP_PCT {
                Fate::Drop
            } else if r < KEEP_PCT + DROP_PCT + TEAR_PCT {
                Fate::Tear
            } else {
                Fate::Garble
            }
        }
    };
    let what = match op {
        FileOp::Write { offset, data } => format!("write {} bytes at {offset}", data.len()),
        FileOp::SetLen(len) => format!("set_len {len}"),
        FileOp::Preallocate(len) => format!("preallocate {len}"),
    };
    let verdict = match (fate, op) {
        (Fate::Keep, _) => {
            apply_file_op(durable, op);
            report.kept += 1;
            "kept".to_owned()
        }
        (Fate::Drop, _) => {
            report.dropped += 1;
            "dropped".to_owned()
        }
        (Fate::Tear, FileOp::Write { offset, data }) if !data.is_empty() => {
            let n = rng.usize(0..data.len());
            write_into(durable, *offset, &data[..n]);
            report.torn += 1;
            format!("torn to {n} bytes")
        }
        (Fate::Garble, FileOp::Write { offset, data }) if !data.is_empty() => {
            let start = rng.usize(0..data.len());
            let end = rng.usize(start + 1..=data.len());
            let rest_intact = rng.bool();
            if rest_intact {
                write_into(durable, *offset, data);
            }
            let mut noise = vec![0u8; end - start];
            rng.fill(&mut noise);
            write_into(durable, offset + start, &noise);
            report.garbled += 1;
            let rest = if rest_intact { "intact" } else { "absent" };
            format!("garbled bytes {start}..{end} of it, rest {rest}")
        }
        // An empty write, a set_len or a preallocate is either done or not.
        (Fate::Tear | Fate::Garble, _) => {
            if rng.bool() {
                apply_file_op(durable, op);
                report.kept += 1;
                "kept".to_owned()
            } else {
                report.dropped += 1;
                "dropped".to_owned()
            }
        }
    };
    report.details.push(format!("file {who}: {what}: {verdict}"));
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("SimFs");
        match self.state.try_lock() {
            Ok(st) => d
                .field("seed", &st.seed)
                .field("crashes", &st.epoch)
                .field("dirs", &st.dirs.len())
                .field("inodes", &st.inodes.len()),
            Err(_) => d.field("state", &"<locked>"),
        };
        d.finish()
    }
}

impl SimFs {
    /// A fresh simulated file system holding only the roots `/` and `""`, whose every random
    /// decision derives from `seed`.
    pub fn new(seed: u64) -> SimFs {
        SimFs { state: Arc::new(Mutex::new(State::new(seed))) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock_state(&self.state)
    }

    /// The seed this file system was created with.
    pub fn seed(&self) -> u64 {
        self.lock().seed
    }

    /// Simulates power loss with `CrashMode::Random`; see [`SimFs::crash_with`].
    pub fn crash(&self) -> CrashReport {
        self.crash_with(CrashMode::Random)
    }

    /// Simulates power loss: every pending operation is decided according to `mode`, then
    /// every current image and entry becomes its durable one, every handle opened before
    /// goes stale and every lock is released. Fault settings, tracing and counters persist.
    pub fn crash_with(&self, mode: CrashMode) -> CrashReport {
        self.lock().crash(mode)
    }

    /// Simulates power loss in which every unsynced operation reaches the disk intact.
    pub fn crash_keep_all(&self) -> CrashReport {
        self.crash_with(CrashMode::KeepAll)
    }

    /// Simulates power loss in which no unsynced operation reaches the disk.
    pub fn crash_drop_all(&self) -> CrashReport {
        self.crash_with(CrashMode::DropAll)
    }

    /// Makes the `k`-th next call (0-based) to `sync_data` or `sync_dir` fail with EIO
    /// (`ErrorKind::Other`). A failed `sync_data` forgets the writes it covered without making
    /// them durable, as Linux does (the pages are marked clean; reads still see them). A
    /// failed `sync_dir` shuts the file system down, as a journaling file system does when
    /// its journal cannot be written: every later change fails until the next crash. One-shot;
    /// replaces an earlier setting.
    pub fn fail_sync_at(&self, k: u64) {
        self.lock().sync_fault = Some(Countdown { remaining: k });
    }

    /// Makes the `k`-th next call (0-based) to `write_all_at` fail with EIO
    /// (`ErrorKind::Other`). If `short`, a random non-empty proper prefix of the write (when
    /// it has at least two bytes) is applied and left pending first. One-shot.
    pub fn fail_write_at(&self, k: u64, short: bool) {
        self.lock().write_fault = Some((Countdown { remaining: k }, short));
    }

    /// Limits the total length of the current images of linked or open files; a write,
    /// `set_len` or `preallocate` that would exceed it fails with `StorageFull` and changes
    /// nothing. `None` means unlimited. Shrinking and overwriting never fail.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.lock().capacity = bytes;
    }

    /// Removes every injected fault: sync and write failures and the capacity limit.
    pub fn clear_faults(&self) {
        let mut st = self.lock();
        st.sync_fault = None;
        st.write_fault = None;
        st.capacity = None;
    }

    /// Whether `preallocate` reports [`Preallocation::Allocated`] (the default) or
    /// [`Preallocation::Sparse`]; the effect on the file is the same.
    pub fn set_preallocate_supported(&self, supported: bool) {
        self.lock().preallocate_supported = supported;
    }

    /// What [`Storage::zero_fill_pays`] answers. Off by default, so logs on a `SimFs` run no
    /// background preparer thread and every operation happens in a reproducible order; a
    /// test of prepared segments (format-spec.md §6.2) turns it on.
    pub fn set_zero_fill_pays(&self, pays: bool) {
        self.lock().zero_fill_pays = pays;
    }

    /// How long each `sync_data` stays in flight (with the state unlocked, so other threads
    /// can write meanwhile). `Duration::ZERO`, the default, means no sleep.
    pub fn set_sync_delay(&self, delay: Duration) {
        self.lock().sync_delay = delay;
    }

    /// Turns recording of [`TraceEvent`]s on or off (off by default).
    pub fn set_tracing(&self, on: bool) {
        self.lock().tracing = on;
    }

    /// Adds a [`TraceEvent::Mark`] to the trace, if tracing is on.
    pub fn mark(&self, label: impl Into<String>) {
        self.lock().record(TraceEvent::Mark(label.into()));
    }

    /// A copy of the trace so far.
    pub fn trace(&self) -> Vec<TraceEvent> {
        self.lock().trace.clone()
    }

    /// Returns the trace so far and empties it.
    pub fn take_trace(&self) -> Vec<TraceEvent> {
        std::mem::take(&mut self.lock().trace)
    }

    /// Calls to `sync_data`, successful or not.
    pub fn sync_count(&self) -> u64 {
        self.lock().sync_count
    }

    /// Calls to `sync_dir`, successful or not.
    pub fn dir_sync_count(&self) -> u64 {
        self.lock().dir_sync_count
    }

    /// Calls to `write_all_at` on writable live handles, successful or not.
    pub fn write_count(&self) -> u64 {
        self.lock().write_count
    }

    /// Total length of the current images of linked or open files (what the capacity limits).
    pub fn used_bytes(&self) -> u64 {
        self.lock().used_bytes()
    }

    /// Number of pending (unsynced) operations, over all files and directories.
    pub fn pending_ops(&self) -> usize {
        let st = self.lock();
        st.inodes.values().map(|i| i.pending.len()).sum::<usize>()
            + st.dirs.values().map(|d| d.pending.len()).sum::<usize>()
    }

    /// The pending (unsynced) operations, oldest first, in the order they were issued: bit
    /// `i` of [`CrashMode::KeepOnly`] stands for the `i`-th of them.
    pub fn pending_op_list(&self) -> Vec<PendingOp> {
        let st = self.lock();
        let names = st.inode_names();
        let mut ops: Vec<(u64, PendingOp)> = Vec::new();
        for (ino, inode) in &st.inodes {
            let path = names.get(ino).cloned().unwrap_or_else(|| format!("<unlinked {ino}>"));
            for (seq, op) in &inode.pending {
                let what = match op {
                    FileOp::Write { offset, data } => {
                        format!("write {} bytes at {offset}", data.len())
                    }
                    FileOp::SetLen(len) => format!("set_len {len}"),
                    FileOp::Preallocate(len) => format!("preallocate {len}"),
                };
                ops.push((*seq, PendingOp { path: path.clone(), dir_op: false, what }));
            }
        }
        for (path, dir) in &st.dirs {
            for (seq, op) in &dir.pending {
                let path = path.display().to_string();
                ops.push((*seq, PendingOp { path, dir_op: true, what: op.describe() }));
            }
        }
        ops.sort_by_key(|(seq, _)| *seq);
        ops.into_iter().map(|(_, op)| op).collect()
    }

    /// The durable image of the file the durable entry `path` names: what a crash that drops
    /// everything pending would leave there. `None` if there is no such durable entry.
    pub fn durable_bytes(&self, path: impl AsRef<Path>) -> Option<Vec<u8>> {
        let st = self.lock();
        let ino = st.lookup_durable(&normalize(path.as_ref()))?;
        st.inodes.get(&ino).map(|i| i.durable.clone())
    }

    /// The current image (what reads see) of the file at `path`, if it exists.
    pub fn current_bytes(&self, path: impl AsRef<Path>) -> Option<Vec<u8>> {
        let st = self.lock();
        let ino = st.lookup_current(&normalize(path.as_ref()))?;
        st.inodes.get(&ino).map(|i| i.current.clone())
    }

    /// Creates or overwrites the file at `path` with `bytes`, in both the current and the
    /// durable image and entries, with nothing pending: a fixture as if written and synced
    /// long ago. Missing parent directories are created. Ignores capacity and faults.
    pub fn write_file_raw(&self, path: impl AsRef<Path>, bytes: &[u8]) -> io::Result<()> {
        let key = normalize(path.as_ref());
        let (parent, name) = split(&key)?;
        self.create_dir_all(&parent)?;
        let mut st = self.lock();
        if st.dirs.contains_key(&key) {
            return Err(io::Error::new(io::ErrorKind::IsADirectory, "is a directory"));
        }
        let ino = match st.lookup_current(&key) {
            Some(ino) => ino,
            None => st.alloc_inode(),
        };
        let dir = st.dir_mut(&parent)?;
        dir.current.insert(name.clone(), ino);
        let old = dir.durable.insert(name, ino);
        let inode = st.inode_mut(ino)?;
        inode.current = bytes.to_vec();
        inode.durable = bytes.to_vec();
        inode.pending.clear();
        if let Some(old) = old.filter(|&o| o != ino) {
            st.maybe_gc(old);
        }
        Ok(())
    }

    /// Flips bit `bit` (0..8) of byte `byte_offset` of the file at `path`, in its current
    /// and durable images (where they are long enough): latent corruption on the medium.
    pub fn flip_bit(&self, path: impl AsRef<Path>, byte_offset: u64, bit: u8) -> io::Result<()> {
        if bit >= 8 {
            return Err(invalid("bit must be below 8"));
        }
        let key = normalize(path.as_ref());
        let at = to_usize(byte_offset)?;
        let mut st = self.lock();
        let ino = st
            .lookup_current(&key)
            .or_else(|| st.lookup_durable(&key))
            .ok_or_else(|| not_found(&key))?;
        let inode = st.inode_mut(ino)?;
        let mut flipped = false;
        for image in [&mut inode.current, &mut inode.durable] {
            if let Some(b) = image.get_mut(at) {
                *b ^= 1 << bit;
                flipped = true;
            }
        }
        if flipped { Ok(()) } else { Err(invalid("byte offset past the end of the file")) }
    }
}

/// An open file of a [`SimFs`].
struct SimFile {
    state: Arc<Mutex<State>>,
    ino: u64,
    epoch: u64,
    path: PathBuf,
    writable: bool,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile")
            .field("path", &self.path)
            .field("ino", &self.ino)
            .field("epoch", &self.epoch)
            .field("writable", &self.writable)
            .finish()
    }
}

impl SimFile {
    /// Locks the state, failing if a crash happened since this handle was opened.
    fn live(&self) -> io::Result<MutexGuard<'_, State>> {
        let st = lock_state(&self.state);
        if st.epoch != self.epoch {
            return Err(stale());
        }
        Ok(st)
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::PermissionDenied, "file opened read-only"))
        }
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut st = lock_state(&self.state);
        if st.epoch != self.epoch {
            return;
        }
        if let Some(inode) = st.inodes.get_mut(&self.ino) {
            inode.handles = inode.handles.saturating_sub(1);
        }
        st.maybe_gc(self.ino);
    }
}

impl StorageFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut st = self.live()?;
        let image = &st.inode_mut(self.ino)?.current;
        let Ok(start) = usize::try_from(offset) else {
            return Ok(0);
        };
        if start >= image.len() {
            return Ok(0);
        }
        let n = buf.len().min(image.len() - start);
        buf[..n].copy_from_slice(&image[start..start + n]);
        Ok(n)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut st = self.live()?;
        self.check_writable()?;
        st.check_alive()?;
        st.write_count += 1;
        let start = to_usize(offset)?;
        start.checked_add(buf.len()).ok_or_else(|| invalid("write past the largest offset"))?;
        if let Some(short) = st.take_write_fault() {
            if short && buf.len() >= 2 {
                let n = st.fault_rng.usize(1..buf.len());
                let op = FileOp::Write { offset: start, data: buf[..n].to_vec() };
                if st.apply_current(self.ino, op).is_ok() {
                    let path = self.path.clone();
                    st.record(TraceEvent::Write { path, offset, len: n as u64 });
                }
            }
            return Err(eio());
        }
        if !buf.is_empty() {
            st.apply_current(self.ino, FileOp::Write { offset: start, data: buf.to_vec() })?;
        }
        let path = self.path.clone();
        st.record(TraceEvent::Write { path, offset, len: buf.len() as u64 });
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let (upto, fail, delay) = {
            let mut st = self.live()?;
            st.check_alive()?;
            st.sync_count += 1;
            let fail = st.take_sync_fault();
            // Covers the operations issued before it started (of this file: the others'
            // issue numbers are in other lists).
            let upto = st.next_op;
            st.record(TraceEvent::SyncStart { path: self.path.clone() });
            (upto, fail, st.sync_delay)
        };
        // The sync is in flight: other threads may write (or crash the machine) meanwhile.
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let mut st = lock_state(&self.state);
        if st.epoch != self.epoch {
            st.record(TraceEvent::SyncEnd { path: self.path.clone(), ok: false });
            return Err(stale());
        }
        let inode = st.inode_mut(self.ino)?;
        let covered = inode.pending.iter().take_while(|(seq, _)| *seq < upto).count();
        let ops: Vec<(u64, FileOp)> = inode.pending.drain(..covered).collect();
        if !fail {
            for (_, op) in &ops {
                apply_file_op(&mut inode.durable, op);
            }
        }
        st.record(TraceEvent::SyncEnd { path: self.path.clone(), ok: !fail });
        if fail { Err(eio()) } else { Ok(()) }
    }

    fn len(&self) -> io::Result<u64> {
        let mut st = self.live()?;
        Ok(st.inode_mut(self.ino)?.current.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut st = self.live()?;
        self.check_writable()?;
        st.check_alive()?;
        let len = to_usize(len)?;
        st.apply_current(self.ino, FileOp::SetLen(len))
    }

    fn preallocate(&self, len: u64) -> io::Result<Preallocation> {
        let mut st = self.live()?;
        self.check_writable()?;
        st.check_alive()?;
        let len = to_usize(len)?;
        if st.inode_mut(self.ino)?.current.len() < len {
            st.apply_current(self.ino, FileOp::Preallocate(len))?;
        }
        Ok(if st.preallocate_supported { Preallocation::Allocated } else { Preallocation::Sparse })
    }

    fn map(&self) -> io::Result<Option<memmap2::Mmap>> {
        drop(self.live()?);
        Ok(None)
    }
}

/// A lock taken with [`Storage::try_lock`] on a [`SimFs`].
struct SimLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
    token: u64,
}

impl fmt::Debug for SimLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimLock").field("path", &self.path).field("token", &self.token).finish()
    }
}

impl LockGuard for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut st = lock_state(&self.state);
        // Tokens are never reused, so a guard from before a crash cannot release a lock
        // taken after it.
        if st.locks.get(&self.path) == Some(&self.token) {
            st.locks.remove(&self.path);
        }
    }
}

fn is_a_directory(key: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::IsADirectory, format!("{}: is a directory", key.display()))
}

impl Storage for SimFs {
    fn zero_fill_pays(&self, _dir: &Path) -> bool {
        self.lock().zero_fill_pays
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        let key = normalize(path);
        let (parent, name) = split(&key)?;
        let mut st = self.lock();
        let is_dir = st.dirs.contains_key(&key);
        let dir = st.dirs.get(&parent).ok_or_else(|| not_found(&key))?;
        let existing = dir.current.get(&name).copied();
        let ino = match mode {
            OpenMode::Read | OpenMode::ReadWrite => {
                if is_dir {
                    return Err(is_a_directory(&key));
                }
                existing.ok_or_else(|| not_found(&key))?
            }
            OpenMode::CreateNew => {
                st.check_alive()?;
                if is_dir || existing.is_some() {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{}: already exists", key.display()),
                    ));
                }
                let ino = st.alloc_inode();
                let seq = st.issue();
                let dir = st.dir_mut(&parent)?;
                dir.current.insert(name.clone(), ino);
                dir.pending.push((seq, DirOp::Create { name, ino }));
                ino
            }
        };
        st.inode_mut(ino)?.handles += 1;
        Ok(Box::new(SimFile {
            state: Arc::clone(&self.state),
            ino,
            epoch: st.epoch,
            path: key,
            writable: mode != OpenMode::Read,
        }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let key = normalize(path);
        let mut st = self.lock();
        let mut missing = Vec::new();
        let mut cursor = Some(key.as_path());
        while let Some(p) = cursor {
            if st.dirs.contains_key(p) {
                break;
            }
            missing.push(p.to_path_buf());
            cursor = p.parent();
        }
        for dir in missing.into_iter().rev() {
            if st.lookup_current(&dir).is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{}: a file is in the way", dir.display()),
                ));
            }
            st.dirs.insert(dir, Dir::default());
        }
        Ok(())
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let key = normalize(path);
        let st = self.lock();
        let Some(dir) = st.dirs.get(&key) else {
            if st.lookup_current(&key).is_some() {
                return Err(io::Error::new(io::ErrorKind::NotADirectory, "not a directory"));
            }
            return Err(not_found(&key));
        };
        let mut names: Vec<String> = dir.current.keys().cloned().collect();
        for sub in st.dirs.keys() {
            if sub.parent() == Some(key.as_path())
                && let Some(name) = sub.file_name()
            {
                names.push(name.to_string_lossy().into_owned());
            }
        }
        Ok(names)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let from_key = normalize(from);
        let to_key = normalize(to);
        let (from_dir, from_name) = split(&from_key)?;
        let (to_dir, to_name) = split(&to_key)?;
        let mut st = self.lock();
        st.check_alive()?;
        if st.dirs.contains_key(&from_key) {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "SimFs renames files only"));
        }
        let ino = st.lookup_current(&from_key).ok_or_else(|| not_found(&from_key))?;
        if !st.dirs.contains_key(&to_dir) {
            return Err(not_found(&to_key));
        }
        if st.dirs.contains_key(&to_key) {
            return Err(is_a_directory(&to_key));
        }
        if from_key == to_key || st.lookup_current(&to_key) == Some(ino) {
            return Ok(());
        }
        st.dir_mut(&from_dir)?.current.remove(&from_name);
        let replaced = st.dir_mut(&to_dir)?.current.insert(to_name.clone(), ino);
        if from_dir == to_dir {
            let op = DirOp::Rename { from: from_name, to: to_name, ino };
            let seq = st.issue();
            st.dir_mut(&from_dir)?.pending.push((seq, op));
        } else {
            let out = DirOp::MoveOut { name: from_name, ino, to: to_dir.clone() };
            let seq = st.issue();
            st.dir_mut(&from_dir)?.pending.push((seq, out));
            let into = DirOp::MoveIn { name: to_name, ino, from: from_dir };
            let seq = st.issue();
            st.dir_mut(&to_dir)?.pending.push((seq, into));
        }
        if let Some(old) = replaced {
            st.maybe_gc(old);
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let key = normalize(path);
        let (parent, name) = split(&key)?;
        let mut st = self.lock();
        st.check_alive()?;
        if st.dirs.contains_key(&key) {
            return Err(is_a_directory(&key));
        }
        let seq = st.issue();
        let dir = st.dirs.get_mut(&parent).ok_or_else(|| not_found(&key))?;
        let ino = dir.current.remove(&name).ok_or_else(|| not_found(&key))?;
        dir.pending.push((seq, DirOp::Unlink { name, ino }));
        st.maybe_gc(ino);
        Ok(())
    }

    /// Directories are durable from their creation in the simulation, and so is their
    /// removal: a crash neither loses a directory nor brings a removed one back. Only an
    /// empty directory (no file, no subdirectory, as `current` sees it) can be removed.
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let key = normalize(path);
        let mut st = self.lock();
        st.check_alive()?;
        let dir = st.dirs.get(&key).ok_or_else(|| not_found(&key))?;
        let has_subdir = st.dirs.keys().any(|d| d.parent() == Some(key.as_path()));
        if !dir.current.is_empty() || has_subdir {
            return Err(io::Error::new(
                io::ErrorKind::DirectoryNotEmpty,
                format!("{}: directory not empty", key.display()),
            ));
        }
        let orphans: Vec<u64> = dir.durable.values().copied().collect();
        st.dirs.remove(&key);
        for ino in orphans {
            st.maybe_gc(ino);
        }
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let key = normalize(path);
        let mut st = self.lock();
        if !st.dirs.contains_key(&key) {
            if st.lookup_current(&key).is_some() {
                return Err(io::Error::new(io::ErrorKind::NotADirectory, "not a directory"));
            }
            return Err(not_found(&key));
        }
        st.check_alive()?;
        st.dir_sync_count += 1;
        let fail = st.take_sync_fault();
        st.aborted |= fail;
        let dir = st.dir_mut(&key)?;
        let ops = std::mem::take(&mut dir.pending);
        if !fail {
            for (_, op) in &ops {
                op.apply(&mut dir.durable);
            }
        }
        st.record(TraceEvent::DirSync { path: key, ok: !fail });
        for (_, op) in &ops {
            st.maybe_gc(op.ino());
        }
        if fail { Err(eio()) } else { Ok(()) }
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let key = normalize(path);
        let st = self.lock();
        Ok(st.dirs.contains_key(&key) || st.lookup_current(&key).is_some())
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        let key = normalize(path);
        let (parent, name) = split(&key)?;
        let mut st = self.lock();
        if st.dirs.contains_key(&key) {
            return Err(is_a_directory(&key));
        }
        if !st.dirs.contains_key(&parent) {
            return Err(not_found(&key));
        }
        if st.lookup_current(&key).is_none() {
            // Created and made durable at once: the lock file holds no data.
            let ino = st.alloc_inode();
            let dir = st.dir_mut(&parent)?;
            dir.current.insert(name.clone(), ino);
            if let Some(old) = dir.durable.insert(name, ino) {
                st.maybe_gc(old);
            }
        }
        if st.locks.contains_key(&key) {
            return Ok(None);
        }
        let token = st.next_token;
        st.next_token += 1;
        st.locks.insert(key.clone(), token);
        Ok(Some(Box::new(SimLock { state: Arc::clone(&self.state), path: key, token })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;
    use std::time::Instant;

    fn p(s: &str) -> &Path {
        Path::new(s)
    }

    /// A SimFs with directory `/d` and an open, empty, created-and-dir-synced file `/d/f`.
    fn setup(seed: u64) -> (SimFs, Box<dyn StorageFile>) {
        let sim = SimFs::new(seed);
        sim.create_dir_all(p("/d")).unwrap();
        let f = sim.open(p("/d/f"), OpenMode::CreateNew).unwrap();
        sim.sync_dir(p("/d")).unwrap();
        (sim, f)
    }

    fn read_all(f: &dyn StorageFile) -> Vec<u8> {
        let mut buf = vec![0u8; f.len().unwrap() as usize];
        f.read_exact_at(&mut buf, 0).unwrap();
        buf
    }

    #[test]
    fn unsynced_write_lost_on_drop_all_crash() {
        let (sim, f) = setup(1);
        f.write_all_at(b"hello", 0).unwrap();
        assert_eq!(sim.current_bytes("/d/f").unwrap(), b"hello");
        assert_eq!(sim.durable_bytes("/d/f").unwrap(), b"");
        let report = sim.crash_drop_all();
        assert_eq!(report.dropped, 1);
        assert_eq!(sim.current_bytes("/d/f").unwrap(), b"");
        let f = sim.open(p("/d/f"), OpenMode::Read).unwrap();
        assert_eq!(f.len().unwrap(), 0);
    }

    #[test]
    fn unsynced_write_kept_on_keep_all_crash() {
        let (sim, f) = setup(1);
        f.write_all_at(b"hello", 0).unwrap();
        let report = sim.crash_keep_all();
        assert_eq!(report.kept, 1);
        assert_eq!(sim.current_bytes("/d/f").unwrap(), b"hello");
    }

    #[test]
    fn synced_write_survives_any_crash() {
        for seed in 0..50 {
            let (sim, f) = setup(seed);
            f.write_all_at(b"hello", 0).unwrap();
            f.sync_data().unwrap();
            assert_eq!(sim.durable_bytes("/d/f").unwrap(), b"hello");
            let report = sim.crash();
            assert_eq!(report.kept + report.dropped + report.torn + report.garbled, 0);
            assert_eq!(sim.current_bytes("/d/f").unwrap(), b"hello", "seed {seed}");
        }
    }

    #[test]
    fn create_without_dir_sync_vanishes_on_drop_all() {
        let sim = SimFs::new(3);
        sim.create_dir_all(p("/d")).unwrap();
        let f = sim.open(p("/d/new"), OpenMode::CreateNew).unwrap();
        f.write_all_at(b"x", 0).unwrap();
        f.sync_data().unwrap();
        assert!(sim.exists(p("/d/new")).unwrap());
        assert_eq!(sim.durable_bytes("/d/new"), None);
        sim.crash_drop_all();
        assert!(!sim.exists(p("/d/new")).unwrap());
        assert!(sim.exists(p("/d")).unwrap(), "directories are durable at once");
        let err = sim.open(p("/d/new"), OpenMode::Read).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(sim.read_dir(p("/d")).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn create_with_dir_sync_survives() {
        let sim = SimFs::new(3);
        sim.create_dir_all(p("/d")).unwrap();
        let f = sim.open(p("/d/new"), OpenMode::CreateNew).unwrap();
        f.write_all_at(b"x", 0).unwrap();
        f.sync_data().unwrap();
        sim.sync_dir(p("/d")).unwrap();
        assert_eq!(sim.durable_bytes("/d/new").unwrap(), b"x");
        sim.crash_drop_all();
        assert_eq!(sim.current_bytes("/d/new").unwrap(), b"x");
        assert_eq!(sim.read_dir(p("/d")).unwrap(), vec!["new".to_owned()]);
    }

    #[test]
    fn failed_sync_forgets_pending_ops() {
        let (sim, f) = setup(4);
        f.write_all_at(b"lost", 0).unwrap();
        sim.fail_sync_at(0);
        let err = f.sync_data().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Other);
        assert_eq!(sim.pending_ops(), 0);
        // The retry succeeds but has nothing left to make durable.
        f.sync_data().unwrap();
        assert_eq!(sim.durable_bytes("/d/f").unwrap(), b"");
        assert_eq!(sim.current_bytes("/d/f").unwrap(), b"lost");
        assert_eq!(sim.sync_count(), 2);
        sim.crash_keep_all();
        assert_eq!(sim.current_bytes("/d/f").unwrap(), b"");
    }

    #[test]
    fn failed_sync_counts_from_when_set_and_covers_sync_dir() {
        let (sim, f) = setup(4);
        f.sync_data().unwrap();
        sim.fail_sync_at(1);
        f.sync_data().unwrap();
        let g = sim.open(p("/d/g"), OpenMode::CreateNew).unwrap();
        drop(g);
        assert!(sim.sync_dir(p("/d")).is_err());
        assert_eq!(sim.dir_sync_count(), 2);
        // The file system shut down: the retry fails too and the entry never became durable.
        assert!(sim.sync_dir(p("/d")).is_err());
        assert_eq!(sim.durable_bytes("/d/g"), None);
        sim.crash_keep_all();
        assert!(!sim.exists(p("/d/g")).unwrap());
    }

    #[test]
    fn failed_write_short_applies_a_proper_prefix() {
        for seed in 0..20 {
            let (sim, f) = setup(seed);
            sim.fail_write_at(1, true);
            f.write_all_at(b"ok", 0).unwrap();
            let err = f.write_all_at(b"0123456789", 2).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::Other);
            let cur = sim.current_bytes("/d/f").unwrap();
            let n = cur.len() - 2;
            assert!((1..10).contains(&n), "seed {seed}: {n}");
            assert_eq!(&cur[2..], &b"0123456789"[..n]);
            f.write_all_at(b"z", 0).unwrap();
            assert_eq!(sim.write_count(), 3);
        }
        let (sim, f) = setup(0);
        sim.fail_write_at(0, false);
        assert!(f.write_all_at(b"abc", 0).is_err());
        assert_eq!(sim.current_bytes("/d/f").unwrap(), b"");
    }

    #[test]
    fn capacity_gives_storage_full_and_changes_nothing() {
        let (sim, f) = setup(5);
        f.write_all_at(&[1; 60], 0).unwrap();
        sim.set_capacity(Some(100));
        let err = f.write_all_at(&[2; 50], 60).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(f.set_len(101).unwrap_err().kind(), io::ErrorKind::StorageFull);
        assert_eq!(f.preallocate(200).unwrap_err().kind(), io::ErrorKind::StorageFull);
        assert_eq!(sim.current_bytes("/d/f").unwrap(), vec![1; 60]);
        assert_eq!(sim.pending_ops(), 1);
        // Overwrites and growth within the limit still work.
        f.write_all_at(&[3; 10], 0).unwrap();
        f.write_all_at(&[3; 40], 60).unwrap();
        assert_eq!(sim.used_bytes(), 100);
        let g = sim.open(p("/d/g"), OpenMode::CreateNew).unwrap();
        assert_eq!(g.write_all_at(b"x", 0).unwrap_err().kind(), io::ErrorKind::StorageFull);
        // Shrinking a file frees its space.
        f.set_len(10).unwrap();
        g.write_all_at(&[4; 90], 0).unwrap();
        sim.clear_faults();
        g.write_all_at(&[4; 90], 90).unwrap();
    }

    #[test]
    fn stale_handles_error_after_crash() {
        let (sim, f) = setup(6);
        f.write_all_at(b"abc", 0).unwrap();
        f.sync_data().unwrap();
        sim.crash();
        let is_stale = |e: io::Error| {
            assert_eq!(e.kind(), io::ErrorKind::Other);
            assert_eq!(e.to_string(), "simulated crash: stale handle");
        };
        let mut buf = [0u8; 3];
        is_stale(f.read_at(&mut buf, 0).unwrap_err());
        is_stale(f.write_all_at(b"x", 0).unwrap_err());
        is_stale(f.sync_data().unwrap_err());
        is_stale(f.len().unwrap_err());
        is_stale(f.set_len(0).unwrap_err());
        is_stale(f.preallocate(10).unwrap_err());
        is_stale(f.map().unwrap_err());
        // A fresh handle works and sees the durable data.
        let g = sim.open(p("/d/f"), OpenMode::ReadWrite).unwrap();
        assert_eq!(read_all(&*g), b"abc");
        drop(f);
        assert_eq!(sim.current_bytes("/d/f").unwrap(), b"abc");
    }

    #[test]
    fn locks_released_by_crash() {
        let sim = SimFs::new(7);
        sim.create_dir_all(p("/d")).unwrap();
        let a = sim.try_lock(p("/d/LOCK")).unwrap().unwrap();
        assert!(sim.exists(p("/d/LOCK")).unwrap());
        assert!(sim.try_lock(p("/d/LOCK")).unwrap().is_none());
        sim.crash();
        assert!(sim.exists(p("/d/LOCK")).unwrap(), "lock files are durable at once");
        let b = sim.try_lock(p("/d/LOCK")).unwrap().unwrap();
        // The pre-crash guard must not release the post-crash lock.
        drop(a);
        assert!(sim.try_lock(p("/d/LOCK")).unwrap().is_none());
        drop(b);
        assert!(sim.try_lock(p("/d/LOCK")).unwrap().is_some());
        let err = sim.try_lock(p("/nope/LOCK")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    /// Runs one random crash over a synced 64-byte file of 0xAA with a pending write of 32
    /// bytes of 0x55 at `offset`; returns the report and the durable image.
    fn crash_one_write(seed: u64, offset: u64) -> (CrashReport, Vec<u8>) {
        let sim = SimFs::new(seed);
        sim.write_file_raw("/d/f", &[0xAA; 64]).unwrap();
        let f = sim.open(p("/d/f"), OpenMode::ReadWrite).unwrap();
        f.write_all_at(&[0x55; 32], offset).unwrap();
        let report = sim.crash();
        (report, sim.durable_bytes("/d/f").unwrap())
    }

    fn expected_prefix(offset: usize, n: usize) -> Vec<u8> {
        let mut img = vec![0xAA; 64];
        write_into(&mut img, offset, &vec![0x55; n]);
        img
    }

    #[test]
    fn tear_keeps_a_prefix_only() {
        let mut torn = 0;
        for seed in 0..300 {
            for offset in [16usize, 48] {
                let (report, d) = crash_one_write(seed, offset as u64);
                if report.torn == 1 {
                    torn += 1;
                    let ok = (0..32).any(|n| d == expected_prefix(offset, n));
                    assert!(ok, "seed {seed} offset {offset}: {d:?} {report:?}");
                }
            }
        }
        assert!(torn > 50, "only {torn} torn writes");
    }

    #[test]
    fn garble_never_touches_bytes_outside_the_write() {
        let mut garbled = 0;
        for seed in 0..400 {
            for offset in [0usize, 16, 48, 100] {
                let (report, d) = crash_one_write(seed, offset as u64);
                let end = offset + 32;
                assert!(d.len() <= 64.max(end), "seed {seed}: grew too far");
                assert!(d.len() >= 64, "seed {seed}: shrank");
                for (i, &b) in d.iter().enumerate() {
                    if (offset..end).contains(&i) {
                        continue;
                    }
                    let want = if i < 64 { 0xAA } else { 0 };
                    assert_eq!(b, want, "seed {seed} offset {offset} byte {i}: {report:?}");
                }
                garbled += report.garbled;
            }
        }
        assert!(garbled > 100, "only {garbled} garbled writes");
    }

    #[test]
    fn garble_and_tear_respect_each_write_range_with_several_writes() {
        for seed in 0..200 {
            let sim = SimFs::new(seed);
            sim.write_file_raw("/f", &[0xAA; 100]).unwrap();
            let f = sim.open(p("/f"), OpenMode::ReadWrite).unwrap();
            f.write_all_at(&[1; 10], 5).unwrap();
            f.write_all_at(&[2; 10], 50).unwrap();
            sim.crash();
            let d = sim.durable_bytes("/f").unwrap();
            assert_eq!(d.len(), 100);
            for (i, &b) in d.iter().enumerate() {
                if !(5..15).contains(&i) && !(50..60).contains(&i) {
                    assert_eq!(b, 0xAA, "seed {seed} byte {i}");
                }
            }
        }
    }

    /// A fixed workload; returns the crash report and every durable image.
    fn scenario(seed: u64) -> (CrashReport, Vec<Option<Vec<u8>>>) {
        let sim = SimFs::new(seed);
        sim.create_dir_all(p("/db")).unwrap();
        let a = sim.open(p("/db/a"), OpenMode::CreateNew).unwrap();
        a.write_all_at(&[1; 100], 0).unwrap();
        a.sync_data().unwrap();
        sim.sync_dir(p("/db")).unwrap();
        for i in 0..20u8 {
            a.write_all_at(&[i; 17], u64::from(i) * 13).unwrap();
        }
        a.set_len(150).unwrap();
        let b = sim.open(p("/db/b"), OpenMode::CreateNew).unwrap();
        b.write_all_at(b"bbbbbbbbbbbbbbbb", 0).unwrap();
        b.preallocate(64).unwrap();
        sim.rename(p("/db/b"), p("/db/c")).unwrap();
        sim.remove_file(p("/db/a")).unwrap();
        let report = sim.crash();
        let images = ["/db/a", "/db/b", "/db/c"].iter().map(|n| sim.durable_bytes(n)).collect();
        (report, images)
    }

    #[test]
    fn same_seed_same_outcome() {
        for seed in [0, 1, 42, u64::MAX] {
            assert_eq!(scenario(seed), scenario(seed), "seed {seed}");
        }
        let outcomes: BTreeSet<String> = (0..20).map(|s| format!("{:?}", scenario(s).1)).collect();
        assert!(outcomes.len() > 1, "different seeds should differ");
    }

    #[test]
    fn keep_only_persists_a_later_op_without_an_earlier_one() {
        let (sim, f) = setup(3);
        f.write_all_at(b"first", 0).unwrap();
        let g = sim.open(p("/d/g"), OpenMode::CreateNew).unwrap();
        f.write_all_at(b"second", 5).unwrap();
        g.write_all_at(b"other", 0).unwrap();
        let list = sim.pending_op_list();
        let described: Vec<(&str, bool, &str)> =
            list.iter().map(|o| (o.path.as_str(), o.dir_op, o.what.as_str())).collect();
        assert_eq!(
            described,
            [
                ("/d/f", false, "write 5 bytes at 0"),
                ("/d", true, "create g (ino 2)"),
                ("/d/f", false, "write 6 bytes at 5"),
                ("/d/g", false, "write 5 bytes at 0"),
            ]
        );
        // The same file: the second write without the first (the gap reads as zeros).
        // Different files: g's name and data without f's first write.
        let report = sim.crash_with(CrashMode::KeepOnly(0b1110));
        assert_eq!((report.kept, report.dropped), (3, 1));
        assert_eq!(sim.current_bytes("/d/f").unwrap(), b"\0\0\0\0\0second");
        assert_eq!(sim.current_bytes("/d/g").unwrap(), b"other");
        assert_eq!(sim.pending_ops(), 0);
        // A data write kept without the create of its file's name is unreachable.
        let g = sim.open(p("/d/h"), OpenMode::CreateNew).unwrap();
        g.write_all_at(b"lost", 0).unwrap();
        sim.crash_with(CrashMode::KeepOnly(0b10));
        assert!(sim.current_bytes("/d/h").is_none());
    }

    #[test]
    fn sync_covers_only_ops_pending_at_sync_start() {
        let (sim, f) = setup(8);
        let f: Arc<dyn StorageFile> = Arc::from(f);
        f.write_all_at(b"aaaa", 0).unwrap();
        sim.set_tracing(true);
        sim.set_sync_delay(Duration::from_millis(300));
        let syncer = {
            let f = Arc::clone(&f);
            thread::spawn(move || f.sync_data())
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sim.trace().iter().any(|e| matches!(e, TraceEvent::SyncStart { .. })) {
            assert!(Instant::now() < deadline, "sync never started");
            thread::sleep(Duration::from_millis(1));
        }
        sim.mark("during");
        f.write_all_at(b"bbbb", 4).unwrap();
        syncer.join().unwrap().unwrap();
        let path = PathBuf::from("/d/f");
        assert_eq!(
            sim.take_trace(),
            vec![
                TraceEvent::SyncStart { path: path.clone() },
                TraceEvent::Mark("during".into()),
                TraceEvent::Write { path: path.clone(), offset: 4, len: 4 },
                TraceEvent::SyncEnd { path, ok: true },
            ]
        );
        assert!(sim.trace().is_empty());
        assert_eq!(sim.durable_bytes("/d/f").unwrap(), b"aaaa");
        assert_eq!(sim.current_bytes("/d/f").unwrap(), b"aaaabbbb");
        assert_eq!(sim.pending_ops(), 1);
        sim.crash_drop_all();
        assert_eq!(sim.current_bytes("/d/f").unwrap(), b"aaaa");
    }

    #[test]
    fn rename_replaces_atomically_and_dropped_rename_keeps_old_name() {
        let sim = SimFs::new(9);
        sim.write_file_raw("/d/target", b"old").unwrap();
        let t = sim.open(p("/d/target.tmp"), OpenMode::CreateNew).unwrap();
        t.write_all_at(b"new", 0).unwrap();
        t.sync_data().unwrap();
        drop(t);
        sim.rename(p("/d/target.tmp"), p("/d/target")).unwrap();
        assert!(!sim.exists(p("/d/target.tmp")).unwrap());
        assert_eq!(sim.current_bytes("/d/target").unwrap(), b"new");
        assert_eq!(sim.durable_bytes("/d/target").unwrap(), b"old");
        sim.crash_drop_all();
        assert_eq!(sim.current_bytes("/d/target").unwrap(), b"old");
        assert!(!sim.exists(p("/d/target.tmp")).unwrap());
        let err = sim.rename(p("/d/missing"), p("/d/x")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn write_atomic_is_all_or_nothing_over_many_seeds() {
        for seed in 0..100 {
            let sim = SimFs::new(seed);
            sim.write_file_raw("/d/meta", b"version one").unwrap();
            crate::fs::write_atomic(&sim, p("/d/meta"), b"version two").unwrap();
            sim.crash();
            assert_eq!(sim.current_bytes("/d/meta").unwrap(), b"version two", "seed {seed}");
        }
        for seed in 0..100 {
            // Crash before the directory sync: either version, never a mix.
            let sim = SimFs::new(seed);
            sim.write_file_raw("/d/meta", b"version one").unwrap();
            let t = sim.open(p("/d/meta.tmp"), OpenMode::CreateNew).unwrap();
            t.write_all_at(b"version two", 0).unwrap();
            t.sync_data().unwrap();
            sim.rename(p("/d/meta.tmp"), p("/d/meta")).unwrap();
            sim.crash();
            let got = sim.current_bytes("/d/meta").unwrap();
            assert!(got == b"version one" || got == b"version two", "seed {seed}: {got:?}");
        }
    }

    #[test]
    fn dropped_unlink_brings_file_back() {
        let sim = SimFs::new(10);
        sim.write_file_raw("/d/seg", b"durable").unwrap();
        let f = sim.open(p("/d/seg"), OpenMode::ReadWrite).unwrap();
        f.write_all_at(b"X", 0).unwrap();
        drop(f);
        sim.remove_file(p("/d/seg")).unwrap();
        assert!(!sim.exists(p("/d/seg")).unwrap());
        sim.crash_drop_all();
        assert_eq!(sim.current_bytes("/d/seg").unwrap(), b"durable");
        sim.remove_file(p("/d/seg")).unwrap();
        sim.sync_dir(p("/d")).unwrap();
        sim.crash_drop_all();
        assert!(!sim.exists(p("/d/seg")).unwrap());
        assert_eq!(sim.lock().inodes.len(), 0, "unreachable inodes are discarded");
    }

    #[test]
    fn open_modes_and_directories() {
        let sim = SimFs::new(11);
        let err = sim.open(p("/no/such/f"), OpenMode::CreateNew).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        sim.create_dir_all(p("/a/b/c/")).unwrap();
        assert!(sim.exists(p("/a/b")).unwrap());
        assert!(sim.exists(p("/a/./b/../b/c")).unwrap());
        let err = sim.open(p("/a/b/f"), OpenMode::Read).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let err = sim.open(p("/a/b/f"), OpenMode::ReadWrite).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let f = sim.open(p("/a/b/f"), OpenMode::CreateNew).unwrap();
        let err = sim.open(p("/a/b/f"), OpenMode::CreateNew).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        let err = sim.open(p("/a/b"), OpenMode::CreateNew).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        let mut names = sim.read_dir(p("/a/b")).unwrap();
        names.sort();
        assert_eq!(names, vec!["c".to_owned(), "f".to_owned()]);
        let r = sim.open(p("/a/b/f"), OpenMode::Read).unwrap();
        assert!(r.write_all_at(b"x", 0).is_err());
        drop(f);
        // Relative paths are their own namespace.
        sim.create_dir_all(p("rel")).unwrap();
        sim.open(p("rel/f"), OpenMode::CreateNew).unwrap();
        assert!(sim.exists(p("./rel/f")).unwrap());
        assert!(!sim.exists(p("/rel/f")).unwrap());
        sim.remove_file(p("rel/f")).unwrap();
        assert!(!sim.exists(p("rel/f")).unwrap());
    }

    #[test]
    fn reads_lengths_and_preallocation() {
        let (sim, f) = setup(12);
        f.write_all_at(b"hello", 2).unwrap();
        assert_eq!(f.len().unwrap(), 7);
        assert_eq!(read_all(&*f), b"\0\0hello");
        let mut buf = [0u8; 10];
        assert_eq!(f.read_at(&mut buf, 5).unwrap(), 2);
        assert_eq!(&buf[..2], b"lo");
        assert_eq!(f.read_at(&mut buf, 7).unwrap(), 0);
        assert_eq!(f.read_at(&mut buf, 1000).unwrap(), 0);
        let err = f.read_exact_at(&mut buf, 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(f.preallocate(16).unwrap(), Preallocation::Allocated);
        assert_eq!(f.len().unwrap(), 16);
        assert_eq!(f.preallocate(8).unwrap(), Preallocation::Allocated);
        assert_eq!(f.len().unwrap(), 16);
        sim.set_preallocate_supported(false);
        assert_eq!(f.preallocate(20).unwrap(), Preallocation::Sparse);
        assert_eq!(f.len().unwrap(), 20);
        f.set_len(3).unwrap();
        assert_eq!(read_all(&*f), b"\0\0h");
        f.set_len(5).unwrap();
        assert_eq!(read_all(&*f), b"\0\0h\0\0");
        assert!(f.map().unwrap().is_none());
        f.sync_data().unwrap();
        assert_eq!(sim.durable_bytes("/d/f").unwrap(), b"\0\0h\0\0");
    }

    #[test]
    fn flip_bit_corrupts_both_images() {
        let sim = SimFs::new(13);
        sim.write_file_raw("/d/f", &[0u8; 4]).unwrap();
        sim.flip_bit("/d/f", 2, 7).unwrap();
        assert_eq!(sim.current_bytes("/d/f").unwrap(), [0, 0, 0x80, 0]);
        assert_eq!(sim.durable_bytes("/d/f").unwrap(), [0, 0, 0x80, 0]);
        sim.crash();
        assert_eq!(sim.current_bytes("/d/f").unwrap(), [0, 0, 0x80, 0]);
        assert!(sim.flip_bit("/d/f", 4, 0).is_err());
        assert!(sim.flip_bit("/d/f", 0, 8).is_err());
        assert!(sim.flip_bit("/d/g", 0, 0).is_err());
    }

    #[test]
    fn dir_sync_trace_and_counters() {
        let (sim, f) = setup(14);
        sim.set_tracing(true);
        f.write_all_at(b"x", 0).unwrap();
        f.sync_data().unwrap();
        sim.sync_dir(p("/d")).unwrap();
        sim.fail_sync_at(0);
        assert!(sim.sync_dir(p("/d")).is_err());
        let d = PathBuf::from("/d");
        let fp = PathBuf::from("/d/f");
        assert_eq!(
            sim.trace(),
            vec![
                TraceEvent::Write { path: fp.clone(), offset: 0, len: 1 },
                TraceEvent::SyncStart { path: fp.clone() },
                TraceEvent::SyncEnd { path: fp, ok: true },
                TraceEvent::DirSync { path: d.clone(), ok: true },
                TraceEvent::DirSync { path: d, ok: false },
            ]
        );
        assert_eq!(sim.sync_count(), 1);
        assert_eq!(sim.dir_sync_count(), 3);
        assert_eq!(sim.write_count(), 1);
        assert!(format!("{sim:?}").contains("seed: 14"));
        let clone = sim.clone();
        clone.mark("m");
        assert_eq!(sim.trace().last(), Some(&TraceEvent::Mark("m".into())));
    }

    #[test]
    fn crash_during_in_flight_sync_makes_it_fail() {
        let (sim, f) = setup(15);
        let f: Arc<dyn StorageFile> = Arc::from(f);
        f.write_all_at(b"abc", 0).unwrap();
        sim.set_tracing(true);
        sim.set_sync_delay(Duration::from_millis(200));
        let syncer = {
            let f = Arc::clone(&f);
            thread::spawn(move || f.sync_data())
        };
        while !sim.trace().iter().any(|e| matches!(e, TraceEvent::SyncStart { .. })) {
            thread::sleep(Duration::from_millis(1));
        }
        sim.crash_drop_all();
        assert!(syncer.join().unwrap().is_err());
        assert_eq!(sim.current_bytes("/d/f").unwrap(), b"");
    }

    #[test]
    fn failed_dir_sync_shuts_the_file_system_down_until_a_crash() {
        let sim = SimFs::new(3);
        sim.create_dir_all(Path::new("/d")).unwrap();
        let f = sim.open(Path::new("/d/a"), OpenMode::CreateNew).unwrap();
        sim.fail_sync_at(0);
        assert!(sim.sync_dir(Path::new("/d")).is_err());
        assert!(f.write_all_at(b"x", 0).is_err());
        assert!(f.sync_data().is_err());
        assert!(sim.open(Path::new("/d/b"), OpenMode::CreateNew).is_err());
        assert!(sim.rename(Path::new("/d/a"), Path::new("/d/c")).is_err());
        assert!(sim.sync_dir(Path::new("/d")).is_err());
        sim.crash_with(CrashMode::KeepAll);
        let g = sim.open(Path::new("/d/b"), OpenMode::CreateNew).unwrap();
        g.write_all_at(b"y", 0).unwrap();
        g.sync_data().unwrap();
        sim.sync_dir(Path::new("/d")).unwrap();
    }

    #[test]
    fn remove_dir_needs_an_empty_directory_and_survives_a_crash() {
        let sim = SimFs::new(4);
        sim.create_dir_all(Path::new("/d/sub")).unwrap();
        let f = sim.open(Path::new("/d/sub/f"), OpenMode::CreateNew).unwrap();
        f.sync_data().unwrap();
        sim.sync_dir(Path::new("/d/sub")).unwrap();
        drop(f);
        assert!(sim.remove_dir(Path::new("/d")).is_err(), "has a subdirectory");
        assert!(sim.remove_dir(Path::new("/d/sub")).is_err(), "has a file");
        sim.remove_file(Path::new("/d/sub/f")).unwrap();
        sim.remove_dir(Path::new("/d/sub")).unwrap();
        assert!(!sim.exists(Path::new("/d/sub")).unwrap());
        sim.crash_with(CrashMode::DropAll);
        assert!(!sim.exists(Path::new("/d/sub")).unwrap());
        assert!(sim.read_dir(Path::new("/d")).unwrap().is_empty());
    }
}
