//! RELIABILITY.md rows 25, 26 and 27 (read-only part) and §3.5, §3.8: hostile surroundings.
//!
//! Properties:
//!
//! - **Symlinks at the engine's names** (row 25). A symlink planted at any name the engine
//!   creates or replaces in a store directory (`LOCK`, `streams.ckpt`, `segments/`, segment and
//!   index files of this and future segments, and the `.tmp` name of each), pointing at a file
//!   outside the store or at a not-yet-existing path outside it, planted before the store is
//!   opened or while it is open: the engine writes nothing outside the store (a canary
//!   directory with a sentinel file is byte-for-byte unchanged and gains no entry). Each open
//!   and append either succeeds, working inside the directory (it replaces the link, never
//!   follows it), or fails with an error; once the link is removed the store opens and holds
//!   every acknowledged event.
//! - **Permissions** (row 26). Every file the engine creates is mode 0600 and every directory
//!   0700, under umask 000 (nothing is widened) and 077. The store is written by a child
//!   process (this test binary, re-run) so the umask does not leak into other tests.
//! - **Read-only mount** (row 27, `verify` part). `Log::open_read_only` opens and reads every
//!   record of a store on a read-only bind mount, and changes no byte; a writer's open there
//!   fails with an error. Needs root (skips with a printed reason otherwise).
//! - **Junk in `segments/`** (§3.8). Thousands of foreign files beside a store are ignored:
//!   the store opens, reads and appends, opens no more descriptors than without them, and
//!   leaves them alone. Thousands of files with segment names but no valid header make the
//!   open fail with `Corrupt` naming the first, without leaking a descriptor.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use annal::{Durability, Error, ExpectedVersion, Log, NewEvent, Options, Store, StoreOptions};

/// Serialises the tests of this file. They spawn processes (`mount`, `umount`, `sh`), and a
/// child forked while another test's store is open holds a copy of that store's `LOCK`
/// descriptor until it execs (close-on-exec): a reopen in that window would see its own,
/// just-closed store as `Locked`.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn opts() -> StoreOptions {
    let log = Options {
        segment_bytes: 8 << 10,
        max_record_bytes: 2048,
        durability: Durability::None,
        ..Options::default()
    };
    StoreOptions { log, ..StoreOptions::default() }
}

fn event(i: usize) -> NewEvent {
    NewEvent::new("Planted", format!("event {i} ").repeat(40 + i % 30))
}

/// Every entry under `root` (relative path -> kind, mode, contents), symlinks not followed.
fn listing(root: &Path) -> BTreeMap<PathBuf, (String, u32, Option<Vec<u8>>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let md = std::fs::symlink_metadata(&path).unwrap();
            let kind = if md.file_type().is_symlink() {
                format!("symlink -> {}", std::fs::read_link(&path).unwrap().display())
            } else if md.is_dir() {
                stack.push(path.clone());
                "dir".into()
            } else {
                "file".into()
            };
            let contents = md.is_file().then(|| std::fs::read(&path).unwrap());
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            out.insert(rel, (kind, md.mode() & 0o7777, contents));
        }
    }
    out
}

/// Names of the files under `dir`, relative to it, without `LOCK`'s contents mattering.
fn names(dir: &Path) -> Vec<String> {
    listing(dir).into_keys().map(|p| p.to_string_lossy().into_owned()).collect()
}

/// A store with two segments, closed: the state every symlink case starts from.
fn prepared(dir: &Path) -> usize {
    let store = Store::open(dir, opts()).unwrap();
    for i in 0..24 {
        store.append("s-1", ExpectedVersion::Any, &[event(i)]).unwrap();
    }
    assert!(store.log().stats().rolls >= 1);
    store.close().unwrap();
    24
}

/// The workload run on the prepared store: enough appends for several rolls, a checkpoint,
/// a close. Returns how many events were acknowledged, stopping at the first error.
fn workload(store: &Store, first: usize) -> Result<usize, Error> {
    for i in first..first + 30 {
        store.append("s-1", ExpectedVersion::Any, &[event(i)])?;
    }
    store.checkpoint()?;
    Ok(30)
}

#[derive(Debug, Clone, Copy)]
enum When {
    BeforeOpen,
    WhileOpen,
}

#[derive(Debug, Clone, Copy)]
enum Target {
    /// The sentinel file outside the store.
    Sentinel,
    /// A path outside the store that does not exist (an `O_CREAT` that follows would make it).
    Dangling,
}

/// Plants the symlink `name` (relative to the store) in `dir`, replacing a cache file (index,
/// checkpoint) or `LOCK` if it is there. Returns false if the name holds a segment, which the
/// test never replaces: that would destroy data before the engine is even involved.
fn plant(dir: &Path, name: &str, target: &Path) -> bool {
    let path = dir.join(name);
    if let Ok(md) = std::fs::symlink_metadata(&path) {
        if name.ends_with(".seg") || md.is_dir() {
            return false;
        }
        std::fs::remove_file(&path).unwrap();
    }
    std::os::unix::fs::symlink(target, &path).unwrap();
    true
}

/// Every name the workload makes in a store, found by running it once on a scratch copy (the
/// workload is deterministic in sizes, so rolls happen at the same seqs), plus each one's
/// `.tmp` name.
fn names_the_engine_writes(scratch: &Path) -> Vec<String> {
    let dir = scratch.join("dry-run");
    let n = prepared(&dir);
    let store = Store::open(&dir, opts()).unwrap();
    workload(&store, n).unwrap();
    store.close().unwrap();
    let mut out = Vec::new();
    for name in names(&dir) {
        if name == "segments" {
            continue;
        }
        out.push(format!("{name}.tmp"));
        out.push(name);
    }
    out.sort();
    out
}

#[test]
fn symlinks_at_the_engines_names_are_never_followed() {
    let _serial = serial();
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let canary = root.path().join("canary");
    std::fs::create_dir(&canary).unwrap();
    let sentinel = canary.join("sentinel");
    std::fs::write(&sentinel, b"the engine must never write here").unwrap();
    std::fs::set_permissions(&sentinel, std::fs::Permissions::from_mode(0o644)).unwrap();
    let canary_before = listing(&canary);
    let candidates = names_the_engine_writes(root.path());
    assert!(candidates.iter().any(|n| n.ends_with(".seg.tmp")), "{candidates:?}");
    assert!(candidates.iter().any(|n| n == "streams.ckpt.tmp"), "{candidates:?}");

    let mut case = 0;
    let (mut refused, mut worked) = (Vec::new(), 0);
    for name in &candidates {
        for when in [When::BeforeOpen, When::WhileOpen] {
            for target in [Target::Sentinel, Target::Dangling] {
                case += 1;
                let ctx = format!("symlink at {name} -> {target:?}, planted {when:?}");
                let dir = root.path().join(format!("case-{case}"));
                let mut acked = prepared(&dir);
                let link_target = match target {
                    Target::Sentinel => sentinel.clone(),
                    Target::Dangling => canary.join(format!("dangling-{case}")),
                };
                let mut planted = false;
                if let When::BeforeOpen = when {
                    planted = plant(&dir, name, &link_target);
                }
                let outcome = Store::open(&dir, opts()).and_then(|store| {
                    if let When::WhileOpen = when {
                        planted = plant(&dir, name, &link_target);
                    }
                    let n = workload(&store, acked);
                    if let Ok(n) = &n {
                        acked += n;
                    }
                    let closed = store.close();
                    n.and(closed)
                });
                assert_eq!(listing(&canary), canary_before, "{ctx}: wrote outside the store");
                if !planted {
                    continue;
                }
                match outcome {
                    Ok(()) => worked += 1,
                    Err(e) => refused.push(format!("{ctx}: {e}")),
                }
                // With the link gone the store opens, whole.
                let path = dir.join(name);
                if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
                    std::fs::remove_file(&path).unwrap();
                }
                let store = Store::open(&dir, opts())
                    .unwrap_or_else(|e| panic!("{ctx}: open after removing the link: {e}"));
                let n = store.read_all(0).collect::<Result<Vec<_>, _>>().unwrap().len();
                assert!(n >= acked, "{ctx}: {n} events, {acked} acknowledged");
                store.close().unwrap();
            }
        }
    }
    println!("{case} cases; {worked} worked around the link; refused: {refused:#?}");
    assert!(worked > 0);
}

/// `segments` itself, or the data directory's own `LOCK`, replaced by a symlink to a
/// directory or file outside before the store is opened: the open refuses, and nothing is
/// created outside.
#[test]
fn a_symlinked_segments_directory_is_refused() {
    let _serial = serial();
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let outside = root.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    // A fresh store whose segments/ is a link to an empty directory elsewhere.
    let dir = root.path().join("fresh");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("segments")).unwrap();
    let opened = Log::open(&dir, opts().log);
    assert!(names(&outside).is_empty(), "a store was created through the link: {opened:?}");
    assert!(opened.is_err(), "a symlinked segments/ was followed");
    let opened = Log::open_read_only(&dir, opts().log);
    assert!(opened.is_err(), "read-only open followed a symlinked segments/");

    // An existing store whose segments/ was moved away and replaced by a link to it.
    let dir = root.path().join("existing");
    prepared(&dir);
    let moved = outside.join("segments");
    std::fs::rename(dir.join("segments"), &moved).unwrap();
    std::os::unix::fs::symlink(&moved, dir.join("segments")).unwrap();
    let before = listing(&outside);
    let opened = Log::open(&dir, opts().log);
    assert_eq!(listing(&outside), before, "wrote through a symlinked segments/: {opened:?}");
    assert!(opened.is_err(), "a symlinked segments/ was followed");
}

// ---------------------------------------------------------------------------------------
// Permissions
// ---------------------------------------------------------------------------------------

const UMASK_CHILD_DIR_ENV: &str = "ANNAL_HOSTILE_UMASK_CHILD_DIR";

/// Writes a store whose every kind of file exists: several segments and their indexes, the
/// checkpoint, the lock, and a moved-aside torn tail.
fn write_every_kind_of_file(dir: &Path) {
    let n = prepared(dir);
    let store = Store::open(dir, opts()).unwrap();
    workload(&store, n).unwrap();
    store.close().unwrap();
    // A torn tail for recovery to move aside: garbage after the last segment's data.
    let seg_dir = dir.join("segments");
    let mut segs: Vec<_> = names(&seg_dir).into_iter().filter(|n| n.ends_with(".seg")).collect();
    segs.sort();
    let last = seg_dir.join(segs.last().unwrap());
    let len = std::fs::metadata(&last).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0xEE; 100], len).unwrap();
    drop(f);
    let log = Log::open(dir, opts().log).unwrap();
    assert!(!log.recovery_report().moved_aside.is_empty(), "{:?}", log.recovery_report());
    log.close().unwrap();
}

#[test]
fn files_are_0600_and_directories_0700_under_any_umask() {
    let _serial = serial();
    for umask in ["000", "077", "022"] {
        let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        // Two levels the engine creates: the store directory's parent is missing too.
        let dir = root.path().join("parent").join("store");
        let exe = std::env::current_exe().unwrap();
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "umask {umask} && exec \"$0\" umask_child --exact --ignored --nocapture -q"
            ))
            .arg(&exe)
            .env(UMASK_CHILD_DIR_ENV, &dir)
            .status()
            .unwrap();
        assert!(status.success(), "umask {umask}: the child failed: {status:?}");
        let all = listing(&root.path().join("parent"));
        let mut kinds = std::collections::BTreeSet::new();
        for (path, (kind, mode, _)) in &all {
            let want = if kind == "dir" { 0o700 } else { 0o600 };
            assert_eq!(mode & 0o777, want, "umask {umask}: {} is {mode:o}", path.display());
            let name = path.to_string_lossy();
            kinds.insert(match () {
                _ if kind == "dir" => "dir",
                _ if name.contains(".broken-") => "broken",
                _ if name.ends_with(".seg") => "segment",
                _ if name.ends_with(".idx") => "index",
                _ if name.ends_with("LOCK") => "LOCK",
                _ if name.ends_with("streams.ckpt") => "streams.ckpt",
                _ => panic!("umask {umask}: unexpected file {name}"),
            });
        }
        let want = ["LOCK", "broken", "dir", "index", "segment", "streams.ckpt"];
        assert_eq!(kinds.into_iter().collect::<Vec<_>>(), want, "umask {umask}");
    }
}

/// Not a test of its own: the child of `files_are_0600_and_directories_0700_under_any_umask`.
#[test]
#[ignore = "child process helper of files_are_0600_and_directories_0700_under_any_umask"]
fn umask_child() {
    let Some(dir) = std::env::var_os(UMASK_CHILD_DIR_ENV) else { return };
    write_every_kind_of_file(Path::new(&dir));
}

// ---------------------------------------------------------------------------------------
// Read-only bind mount
// ---------------------------------------------------------------------------------------

/// A read-only bind mount of a directory, unmounted on drop.
struct RoBind(PathBuf);

impl RoBind {
    fn mount(src: &Path, at: &Path) -> Result<RoBind, String> {
        let run = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("mount")
                .args(args)
                .output()
                .map_err(|e| format!("cannot run mount: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!("mount {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
            }
        };
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let (s, a) = (src.to_str().unwrap(), at.to_str().unwrap());
        run(&["--bind", s, a])?;
        let guard = RoBind(at.to_path_buf());
        run(&["-o", "remount,bind,ro", a])?;
        Ok(guard)
    }
}

impl Drop for RoBind {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.0).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

#[test]
fn read_only_open_works_on_a_read_only_bind_mount_and_changes_nothing() {
    let _serial = serial();
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = root.path().join("store");
    let n = prepared(&dir);
    // A clean close cuts the last segment's preallocated space, so its file ends at the
    // close frame; garbage written after it is a torn tail for the read-only open to report
    // (and not cut).
    let store = Store::open(&dir, opts()).unwrap();
    workload(&store, n).unwrap();
    store.close().unwrap();
    let seg_dir = dir.join("segments");
    let mut segs: Vec<_> = names(&seg_dir).into_iter().filter(|n| n.ends_with(".seg")).collect();
    segs.sort();
    let last = seg_dir.join(segs.last().unwrap());
    let len = std::fs::metadata(&last).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0xEE; 77], len).unwrap();
    drop(f);
    let before = listing(&dir);

    let ro_path = root.path().join("ro");
    let _bind = match RoBind::mount(&dir, &ro_path) {
        Ok(b) => b,
        Err(reason) => {
            println!("SKIPPED read-only bind mount: {reason} (needs root)");
            return;
        }
    };
    assert!(std::fs::write(ro_path.join("probe"), b"x").is_err(), "the mount is writable");
    let log = Log::open_read_only(&ro_path, opts().log).unwrap();
    let report = log.recovery_report().clone();
    assert!(report.truncated.is_some(), "the torn tail is reported: {report:?}");
    let mut count = 0u64;
    for r in log.cursor(0) {
        let r = r.unwrap();
        assert_eq!(r.seq, count);
        count += 1;
    }
    assert_eq!(count, 54);
    drop(log);
    let w = Log::open(&ro_path, opts().log);
    assert!(w.is_err(), "a writer opened a store on a read-only mount");
    assert_eq!(listing(&dir), before, "the read-only open or the refused writer changed a byte");
}

// ---------------------------------------------------------------------------------------
// Junk in segments/
// ---------------------------------------------------------------------------------------

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

#[test]
fn thousands_of_junk_files_are_ignored_or_refused_without_leaking_descriptors() {
    let _serial = serial();
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = root.path().join("store");
    let n = prepared(&dir) as u64;
    let seg_dir = dir.join("segments");

    // Descriptors a plain open takes, for comparison (other tests run in parallel threads and
    // open files too, so the comparison leaves generous slack).
    let fds_before = open_fds();
    let log = Log::open(&dir, opts().log).unwrap();
    let plain = open_fds().saturating_sub(fds_before);
    log.close().unwrap();

    // 5000 foreign names: none is the engine's, so none is opened or removed.
    let junk = 5000;
    for i in 0..junk {
        let name = match i % 5 {
            0 => format!("junk-{i}"),
            1 => format!("{i:020}.seg.bak"),
            2 => format!("{i}.seg"),
            3 => format!("{i:020}.idx.old"),
            _ => format!(".{i:020}.seg"),
        };
        std::fs::write(seg_dir.join(name), b"not the engine's").unwrap();
    }
    let fds_before = open_fds();
    let log = Log::open(&dir, opts().log).unwrap();
    let with_junk = open_fds().saturating_sub(fds_before);
    assert!(with_junk <= plain + 16, "junk made the open take {with_junk} fds, not {plain}");
    assert_eq!(log.visible_end(), n);
    assert_eq!(log.cursor(0).filter(|r| r.is_ok()).count() as u64, n);
    log.append(&[b"after junk"]).unwrap();
    log.close().unwrap();
    let left = std::fs::read_dir(&seg_dir)
        .unwrap()
        .filter(|e| std::fs::read(e.as_ref().unwrap().path()).unwrap() == b"not the engine's")
        .count();
    assert_eq!(left, junk, "the engine removed or changed foreign files");

    // 3000 files with segment names past the real ones but no valid header: refused with
    // Corrupt, and every descriptor the open took is closed again.
    for i in 0..3000u64 {
        std::fs::write(seg_dir.join(format!("{:020}.seg", 1_000_000 + i)), b"").unwrap();
    }
    let fds_before = open_fds();
    match Log::open(&dir, opts().log) {
        Err(Error::Corrupt { file, .. }) => {
            assert_eq!(file, seg_dir.join(format!("{:020}.seg", 1_000_000)), "names the first");
        }
        other => panic!("expected Corrupt for a header-less segment, got {other:?}"),
    }
    let after = open_fds();
    assert!(
        after <= fds_before + 16,
        "the refused open leaked descriptors: {fds_before} -> {after}"
    );
}
