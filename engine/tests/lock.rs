//! RELIABILITY.md row 23 (and §3.6): one writer per store directory.
//!
//! Property: while a handle holds a store (in this process or in another one), `Log::open` on
//! the same directory, under any spelling of its path, fails with `Error::Locked` naming the
//! directory it was given, and creates, modifies or removes no file (the directory tree's names,
//! sizes, inodes, mtimes, ctimes and the LOCK file's contents are unchanged). Once the holder
//! is gone (its handle dropped, or its process killed with SIGKILL, which releases the kernel's
//! flock without any clean-up) the store opens and every record the holder acknowledged is
//! there.
//!
//! The second process is this test binary itself, re-run with `CHILD_DIR_ENV` set so that the
//! ignored test `child_holds_the_store` opens the store, appends, reports, and waits to be
//! killed.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use annal::{Error, Log, Options};

const CHILD_DIR_ENV: &str = "ANNAL_LOCK_TEST_CHILD_DIR";
const READY: &str = "ANNAL-CHILD-READY";

fn opts() -> Options {
    Options { segment_bytes: 64 << 10, max_record_bytes: 4096, ..Options::default() }
}

/// Kind, size, inode, mtime and ctime (seconds, nanoseconds) and contents of every entry
/// under `root`; symlinks are listed, not followed. File timestamps tick at the kernel's coarse
/// clock, so the contents are compared too: an overwrite within one tick cannot hide.
type Listing = BTreeMap<PathBuf, (String, u64, u64, i64, i64, i64, i64, Option<Vec<u8>>)>;

fn listing(root: &Path) -> Listing {
    let mut out = Listing::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let md = std::fs::symlink_metadata(&path).unwrap();
            let kind = if md.is_dir() {
                stack.push(path.clone());
                "dir"
            } else if md.file_type().is_symlink() {
                "symlink"
            } else {
                "file"
            };
            let contents = (kind == "file").then(|| std::fs::read(&path).unwrap());
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            out.insert(
                rel,
                (
                    kind.into(),
                    md.len(),
                    md.ino(),
                    md.mtime(),
                    md.mtime_nsec(),
                    md.ctime(),
                    md.ctime_nsec(),
                    contents,
                ),
            );
        }
    }
    out
}

/// Opening `dir` must fail with `Locked { dir }` and leave the tree under `root` untouched.
fn assert_locked_and_untouched(root: &Path, dir: &Path) {
    let before = listing(root);
    match Log::open(dir, opts()) {
        Err(Error::Locked { dir: d }) => assert_eq!(d, dir, "Locked names another directory"),
        other => panic!("expected Locked for {}, got {other:?}", dir.display()),
    }
    let after = listing(root);
    assert_eq!(before, after, "a refused open changed the directory tree");
}

fn store_dir() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = root.path().join("store");
    (root, dir)
}

#[test]
fn second_open_in_process_is_locked_and_touches_nothing() {
    let (root, dir) = store_dir();
    let log = Log::open(&dir, opts()).unwrap();
    let mut acked = Vec::new();
    for i in 0..300u32 {
        let p = format!("record {i} ").repeat(20).into_bytes();
        let a = log.append(&[&p]).unwrap();
        acked.push((a.first, p));
    }
    assert!(log.stats().rolls > 0, "the store should have several segments and an index");
    assert_locked_and_untouched(root.path(), &dir);
    // Other spellings of the same directory: the lock is on the file, not on a path string.
    assert_locked_and_untouched(root.path(), &dir.join("."));
    let alias = root.path().join("alias");
    std::os::unix::fs::symlink(&dir, &alias).unwrap();
    assert_locked_and_untouched(root.path(), &alias);
    // A clone shares the lock: the store is released only when the last handle goes.
    let clone = log.clone();
    drop(log);
    assert_locked_and_untouched(root.path(), &dir);
    drop(clone);
    let log = Log::open(&dir, opts()).unwrap();
    for (seq, p) in &acked {
        assert_eq!(log.read(*seq).unwrap().payload[..], p[..]);
    }
    assert!(log.recovery_report().clean, "dropping the last handle closes cleanly");
    // And the reopened handle holds the lock again.
    assert_locked_and_untouched(root.path(), &alias);
}

/// Kills the child if the parent fails first, so no parked process outlives the test.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_killed_holder_process_releases_the_store() {
    let (root, dir) = store_dir();
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["child_holds_the_store", "--exact", "--ignored", "--nocapture", "-q"])
        .env(CHILD_DIR_ENV, &dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = Reaper(child);
    let child_stdout = child.0.stdout.take().unwrap();
    let mut lines = BufReader::new(child_stdout).lines();
    // Blocks until the child has the store and an acknowledged record, or has died.
    let acked: u64 = loop {
        match lines.next() {
            Some(line) => {
                let line = line.unwrap();
                if let Some(rest) = line.split(READY).nth(1) {
                    break rest.trim().parse().unwrap();
                }
            }
            None => panic!("the child exited before holding the store: {:?}", child.0.wait()),
        }
    };
    assert_locked_and_untouched(root.path(), &dir);
    assert!(child.0.try_wait().unwrap().is_none(), "the child must still hold the store");
    child.0.kill().unwrap(); // SIGKILL: no destructor runs, no clean close, no unlock call.
    let status = child.0.wait().unwrap();
    assert!(!status.success(), "the child was killed: {status:?}");
    let log = Log::open(&dir, opts()).expect("the kernel released the dead holder's lock");
    assert!(!log.recovery_report().clean, "the killed holder could not close cleanly");
    assert_eq!(log.visible_end(), acked + 1);
    assert_eq!(&log.read(acked).unwrap().payload[..], b"written by the child");
    assert_locked_and_untouched(root.path(), &dir);
}

/// Not a test of its own: the child process of `a_killed_holder_process_releases_the_store`.
/// Without `CHILD_DIR_ENV` it does nothing.
#[test]
#[ignore = "child process helper of a_killed_holder_process_releases_the_store"]
fn child_holds_the_store() {
    use std::io::Write;
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else { return };
    let log = Log::open(&dir, opts()).unwrap();
    for i in 0..10 {
        log.append(&[format!("child record {i}")]).unwrap();
    }
    let a = log.append(&[b"written by the child"]).unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{READY} {}", a.first).unwrap();
    out.flush().unwrap();
    drop(out);
    loop {
        std::thread::park();
    }
}

/// `LOCK` holds the holder's pid at a fixed width, rewritten in place at each open (so that a
/// reopen does not truncate the file: a truncate waits on the file system's journal), and a
/// file of any other length (an older format, junk) is cut to the pid line.
#[test]
fn lock_file_names_the_holder_at_a_fixed_width() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let expected = format!("{:<10}\n", std::process::id());
    Log::open(&dir, opts()).unwrap().close().unwrap();
    let lock = dir.join("LOCK");
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), expected);
    let inode = std::fs::metadata(&lock).unwrap().ino();
    for junk in ["1\n", "another holder's much longer line, left over\n", "9999999999\n"] {
        std::fs::write(&lock, junk).unwrap();
        Log::open(&dir, opts()).unwrap().close().unwrap();
        assert_eq!(std::fs::read_to_string(&lock).unwrap(), expected, "after {junk:?}");
        assert_eq!(std::fs::metadata(&lock).unwrap().ino(), inode, "the same file");
    }
}
