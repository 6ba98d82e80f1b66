//! RELIABILITY.md row 14 on a real kernel: the disk fills up (ENOSPC from a small tmpfs).
//!
//! Property: when the file system is full, `append` fails with `Error::StorageFull` (never a
//! generic I/O error), and nothing is partially acknowledged: the log's visible end and durable
//! head cover exactly the acknowledged records, every acknowledged record reads back intact,
//! and no record of a failed append is ever visible, before or after reopening. After a reopen
//! every record verifies (a full cursor pass reads without error) and a clean close gives a
//! clean open.
//!
//! What happens once space is freed depends on where ENOSPC hit, and both cases are tested:
//!
//! - With preallocation (the default), a segment reserves its space when it is created, so
//!   ENOSPC comes from the `fallocate` of a new segment at a roll. Nothing was written to the
//!   log, so the engine does not poison: the append fails, the log stays usable, and the next
//!   append after space is freed succeeds without a reopen, at the next dense seq.
//! - Without preallocation, ENOSPC comes from the write of a batch. The file's tail is then
//!   unknown, so the engine poisons the log (as for any failed write, row 13): the failing
//!   append gets `StorageFull`, every later one `Poisoned`, even after space is freed. A
//!   reopen is needed, and recovers every acknowledged record and none of the failed batch.
//!
//! Needs root to mount a tmpfs; without it (or if `mount` fails) each test prints why it is
//! skipped and passes. The mount is undone by a guard, also when a test fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use annal::{Error, Log, Options};

/// Serialises the tests of this file. They spawn processes (`mount`, `umount`, `sh`), and a
/// child forked while another test's store is open holds a copy of that store's `LOCK`
/// descriptor until it execs (close-on-exec): a reopen in that window would see its own,
/// just-closed store as `Locked`.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A tmpfs of `size` mounted on a fresh temp directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts it, or returns why it cannot.
    fn mount(size: &str) -> Result<Tmpfs, String> {
        if !is_root() {
            return Err("not running as root".into());
        }
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let status = Command::new("umount").arg(self.dir.path()).status();
        if !matches!(status, Ok(s) if s.success()) {
            // A handle still open (a failing test) keeps it busy: detach it instead.
            let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
        }
    }
}

fn is_root() -> bool {
    // The effective uid, read the portable way (no libc dependency in the tests).
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The mount, or a printed skip reason.
fn tmpfs_or_skip(test: &str) -> Option<Tmpfs> {
    match Tmpfs::mount("4m") {
        Ok(t) => Some(t),
        Err(reason) => {
            println!("SKIPPED {test}: {reason} (needs root and tmpfs)");
            None
        }
    }
}

fn payload(i: usize) -> Vec<u8> {
    let mut p = format!("append {i}:").into_bytes();
    p.resize(700 + i % 500, b'a' + (i % 26) as u8);
    p
}

/// Fills the file system around `dir` with a ballast file of `bytes`, to be removed later to
/// free space.
fn ballast(root: &Path, bytes: usize) -> PathBuf {
    let path = root.join("ballast");
    std::fs::write(&path, vec![0x55u8; bytes]).unwrap();
    path
}

/// Appends one record per call until an append fails; returns the acknowledged payloads (at
/// seqs 0..) and the error.
fn append_until_full(log: &Log, acked: &mut Vec<Vec<u8>>) -> Error {
    loop {
        assert!(acked.len() < 100_000, "the disk never filled up");
        let p = payload(acked.len());
        match log.append(&[&p]) {
            Ok(a) => {
                assert_eq!(a.first, acked.len() as u64, "seqs not dense");
                acked.push(p);
            }
            Err(e) => return e,
        }
    }
}

/// Every acknowledged record reads back intact, the log holds nothing else (no record of a
/// failed append is visible), and a cursor pass reads without error.
fn assert_exactly(log: &Log, acked: &[Vec<u8>], ctx: &str) {
    assert_eq!(log.visible_end(), acked.len() as u64, "{ctx}: visible end");
    for (seq, r) in log.cursor(0).enumerate() {
        let r = r.unwrap_or_else(|e| panic!("{ctx}: cursor at seq {seq}: {e}"));
        assert_eq!(r.seq, seq as u64, "{ctx}");
        assert_eq!(r.payload[..], acked[seq][..], "{ctx}: seq {seq}");
    }
    if let Some(last) = acked.len().checked_sub(1) {
        assert_eq!(log.read(last as u64).unwrap().payload[..], acked[last][..], "{ctx}");
    }
}

/// Reopens, checks, closes, reopens: the second open must be clean.
fn reopen_and_verify(dir: &Path, opts: &Options, acked: &[Vec<u8>], ctx: &str) {
    let log = Log::open(dir, opts.clone()).unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
    assert!(log.recovery_report().truncated.is_none(), "{ctx}: {:?}", log.recovery_report());
    assert_exactly(&log, acked, &format!("{ctx}, reopened"));
    log.close().unwrap_or_else(|e| panic!("{ctx}: close: {e}"));
    let log = Log::open(dir, opts.clone()).unwrap();
    assert!(log.recovery_report().clean, "{ctx}: {:?}", log.recovery_report());
    assert_exactly(&log, acked, &format!("{ctx}, reopened after a clean close"));
}

#[test]
fn full_tmpfs_with_preallocation_fails_the_roll_and_appends_resume_without_reopen() {
    let _serial = serial();
    let Some(fs) = tmpfs_or_skip("full_tmpfs_with_preallocation") else { return };
    let opts = Options { segment_bytes: 256 << 10, max_record_bytes: 4096, ..Options::default() };
    let dir = fs.path().join("store");
    let ballast = ballast(fs.path(), 768 << 10);
    let log = Log::open(&dir, opts.clone()).unwrap();
    let mut acked = Vec::new();
    let err = append_until_full(&log, &mut acked);
    assert!(matches!(err, Error::StorageFull { .. }), "expected StorageFull, got {err:?}");
    assert!(log.stats().rolls >= 5, "the store rolled segments before filling the disk");
    assert_eq!(log.durable_head(), acked.len().checked_sub(1).map(|h| h as u64));
    assert_exactly(&log, &acked, "full");
    // Still full: the same failure, and the log is not poisoned by it.
    let again = log.append(&[payload(acked.len())]);
    assert!(matches!(again, Err(Error::StorageFull { .. })), "second attempt: {again:?}");
    log.sync().expect("StorageFull at a roll must not poison the log");
    assert_exactly(&log, &acked, "full, after a retry");

    std::fs::remove_file(&ballast).unwrap();
    for _ in 0..400 {
        let p = payload(acked.len());
        let a = log.append(&[&p]).unwrap_or_else(|e| panic!("append after freeing space: {e}"));
        assert_eq!(a.first, acked.len() as u64, "seq gap after StorageFull");
        acked.push(p);
    }
    assert_exactly(&log, &acked, "after freeing space");
    drop(log);
    reopen_and_verify(&dir, &opts, &acked, "preallocated");
}

#[test]
fn full_tmpfs_without_preallocation_poisons_and_reopen_recovers() {
    let _serial = serial();
    let Some(fs) = tmpfs_or_skip("full_tmpfs_without_preallocation") else { return };
    // One large segment: no roll, so ENOSPC can only hit a batch write.
    let opts = Options {
        segment_bytes: 64 << 20,
        max_record_bytes: 4096,
        preallocate: false,
        ..Options::default()
    };
    let dir = fs.path().join("store");
    let ballast = ballast(fs.path(), 768 << 10);
    let log = Log::open(&dir, opts.clone()).unwrap();
    let mut acked = Vec::new();
    let err = append_until_full(&log, &mut acked);
    assert!(matches!(err, Error::StorageFull { .. }), "expected StorageFull, got {err:?}");
    assert_eq!(log.stats().rolls, 0);
    assert_eq!(log.durable_head(), acked.len().checked_sub(1).map(|h| h as u64));
    assert_exactly(&log, &acked, "full");
    // The failed write poisoned the log: every later append fails, naming the first failure,
    // also after space is freed.
    std::fs::remove_file(&ballast).unwrap();
    match log.append(&[payload(acked.len())]) {
        Err(Error::Poisoned { first_failure }) => {
            assert!(matches!(*first_failure, Error::StorageFull { .. }), "{first_failure:?}");
        }
        other => panic!("expected Poisoned after StorageFull on a write, got {other:?}"),
    }
    assert!(matches!(log.sync(), Err(Error::Poisoned { .. })));
    assert_exactly(&log, &acked, "poisoned");
    drop(log);

    // A reopen recovers exactly the acknowledged records, and appends work again.
    let log = Log::open(&dir, opts.clone()).unwrap_or_else(|e| panic!("reopen: {e}"));
    assert_exactly(&log, &acked, "reopened after the failure");
    for _ in 0..200 {
        let p = payload(acked.len());
        let a = log.append(&[&p]).unwrap_or_else(|e| panic!("append after reopen: {e}"));
        assert_eq!(a.first, acked.len() as u64);
        acked.push(p);
    }
    drop(log);
    reopen_and_verify(&dir, &opts, &acked, "not preallocated");
}
