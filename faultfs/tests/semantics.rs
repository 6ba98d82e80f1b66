//! The file system's own semantics through the kernel, beyond what `power_loss.rs` checks:
//!
//! * `torn_power_loss_keeps_only_parts_of_unsynced_writes`: [`Control::power_loss_torn`] in
//!   each [`TornMode`] over several seeds: synced bytes never change, an unsynced byte
//!   survives only with its current value, `Prefix` keeps a prefix of the writes in write
//!   order, `Blocks` keeps whole aligned blocks, the length follows the kept writes, a file
//!   without a durable name still vanishes, and the same seed gives the same result.
//! * `directory_renames_are_durable_after_the_new_parent_is_synced`: renaming directories
//!   (same parent, across parents, over an empty directory) is lost at power loss unless the
//!   new parent was fsynced; files synced inside a renamed directory land where the
//!   directory durably is; the old name is refused (`EBUSY`) until the rename is durable;
//!   a directory cannot move below itself.
//!
//! Every test skips with a printed reason when this process cannot mount FUSE.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use faultfs::{Mounted, TornMode, TornWrites};

fn skip() -> bool {
    match faultfs::can_mount() {
        Ok(()) => false,
        Err(why) => {
            println!("SKIPPED: cannot mount a FUSE file system here: {why}");
            true
        }
    }
}

fn sync_dir(p: &Path) {
    File::open(p).unwrap().sync_all().unwrap();
}

/// The unsynced writes of the torn test, in write order: (offset, length, byte).
const WRITES: [(u64, u64, u8); 3] = [(1000, 600, b'b'), (3000, 2500, b'c'), (6000, 700, b'd')];
const SYNCED_LEN: u64 = 3000;
const FINAL_LEN: u64 = 6700;

/// Runs one torn power loss over a fixed workload and returns the surviving bytes of `f`
/// and the report.
fn torn_case(root: &Path, torn: &TornWrites) -> (Vec<u8>, faultfs::PowerLossReport) {
    let (backing, mnt) = (root.join("backing"), root.join("mnt"));
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(&backing).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    let m = Mounted::mount(&backing, &mnt).unwrap();
    let f = File::create(mnt.join("f")).unwrap();
    f.write_all_at(&vec![b'a'; SYNCED_LEN as usize], 0).unwrap();
    f.sync_data().unwrap();
    sync_dir(&mnt);
    for (off, len, byte) in WRITES {
        f.write_all_at(&vec![byte; len as usize], off).unwrap();
    }
    // Synced, but its name never is: it must vanish whatever is torn.
    let g = File::create(mnt.join("g")).unwrap();
    g.write_all_at(b"no durable name", 0).unwrap();
    g.sync_data().unwrap();
    g.write_all_at(b"NO", 0).unwrap();
    let report = m.control().power_loss_torn(torn).unwrap();
    drop((f, g));
    m.unmount().unwrap();
    assert!(!backing.join("g").exists(), "{torn:?}: a file without a durable name survived");
    (std::fs::read(backing.join("f")).unwrap(), report)
}

#[test]
fn torn_power_loss_keeps_only_parts_of_unsynced_writes() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("case");
    let mut current = vec![b'a'; SYNCED_LEN as usize];
    current.resize(FINAL_LEN as usize, 0);
    for (off, len, byte) in WRITES {
        current[off as usize..(off + len) as usize].fill(byte);
    }
    // The unsynced positions in write order.
    let order: Vec<u64> = WRITES.iter().flat_map(|&(o, l, _)| o..o + l).collect();
    for mode in [TornMode::Dropped, TornMode::Kept, TornMode::Prefix, TornMode::Blocks] {
        let mut torn_cases = 0;
        for seed in 0..6u64 {
            let torn = TornWrites { seed, block_bytes: 512, modes: vec![mode] };
            let (got, report) = torn_case(&root, &torn);
            let ctx = format!("{mode:?} seed {seed}");
            let len = got.len() as u64;
            assert!((SYNCED_LEN..=FINAL_LEN).contains(&len), "{ctx}: length {len}");
            // Synced bytes never change; an unsynced byte is old or its current value.
            for (i, &b) in got.iter().enumerate() {
                let old = if (i as u64) < SYNCED_LEN { b'a' } else { 0 };
                assert!(b == old || b == current[i], "{ctx}: byte {i} is {b}");
            }
            let kept = |p: u64| {
                got.get(p as usize).is_some_and(|&b| b == current[p as usize] && b != b'a')
            };
            let kept_bytes = order.iter().filter(|&&p| kept(p)).count() as u64;
            assert_eq!(report.persisted_bytes, kept_bytes, "{ctx}");
            // The length grows to the end of the last kept write, or to the final length.
            let last_kept = order.iter().filter(|&&p| kept(p)).max().map_or(0, |p| p + 1);
            assert!(len == SYNCED_LEN.max(last_kept) || len == FINAL_LEN, "{ctx}: length {len}");
            match mode {
                TornMode::Dropped => assert!(got == [b'a'; SYNCED_LEN as usize], "{ctx}"),
                TornMode::Kept => assert!(got == current, "{ctx}: not the current image"),
                TornMode::Prefix => {
                    let k = order.iter().take_while(|&&p| kept(p)).count();
                    assert!(order[k..].iter().all(|&p| !kept(p)), "{ctx}: not a prefix");
                }
                TornMode::Blocks => {
                    for &p in &order {
                        let first = order.iter().find(|&&q| q / 512 == p / 512).unwrap();
                        assert_eq!(kept(p), kept(*first), "{ctx}: block of {p} split");
                    }
                }
            }
            torn_cases += report.torn_files;
        }
        if matches!(mode, TornMode::Prefix | TornMode::Blocks) {
            assert!(torn_cases >= 3, "{mode:?}: only {torn_cases} of 6 seeds tore the file");
        } else {
            assert_eq!(torn_cases, 0, "{mode:?}");
        }
    }
    // Same seed, same unsynced state: same outcome.
    let torn = TornWrites::new(0xA11CE);
    let runs: Vec<_> = (0..2).map(|_| torn_case(&root, &torn).0).collect();
    assert!(runs[0] == runs[1], "the same seed tore differently");
}

#[test]
fn directory_renames_are_durable_after_the_new_parent_is_synced() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (backing, mnt) = (tmp.path().join("backing"), tmp.path().join("mnt"));
    std::fs::create_dir(&backing).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let errno = |r: std::io::Result<()>| r.unwrap_err().raw_os_error();
    let write_synced = |p: &Path, bytes: &[u8]| {
        let f = File::create(p).unwrap();
        f.write_all_at(bytes, 0).unwrap();
        f.sync_data().unwrap();
    };

    // Same parent, no directory sync: lost. A file synced inside it after the rename lands
    // under the old name, where the directory durably still is.
    let m = Mounted::mount(&backing, &mnt).unwrap();
    std::fs::create_dir(mnt.join("d1")).unwrap();
    write_synced(&mnt.join("d1/x"), b"x1");
    sync_dir(&mnt.join("d1"));
    std::fs::rename(mnt.join("d1"), mnt.join("d2")).unwrap();
    assert_eq!(std::fs::read(mnt.join("d2/x")).unwrap(), b"x1");
    assert!(!mnt.join("d1").exists());
    write_synced(&mnt.join("d2/x"), b"x2");
    // The old name is taken in the durable image until the rename is durable.
    assert_eq!(errno(std::fs::create_dir(mnt.join("d1"))), Some(libc::EBUSY));
    assert_eq!(errno(File::create(mnt.join("d1")).map(drop)), Some(libc::EBUSY));
    // Not into itself.
    assert_eq!(errno(std::fs::rename(mnt.join("d2"), mnt.join("d2/in"))), Some(libc::EINVAL));
    let report = m.control().power_loss();
    assert_eq!(report.unsynced_dir_entries, 1, "{report:?}");
    m.unmount().unwrap();
    assert_eq!(std::fs::read(backing.join("d1/x")).unwrap(), b"x2");
    assert!(!backing.join("d2").exists());

    // Same parent, synced: durable; files keep their durable names inside it, and later file
    // syncs go to the new place.
    let m = Mounted::mount(&backing, &mnt).unwrap();
    std::fs::rename(mnt.join("d1"), mnt.join("d2")).unwrap();
    sync_dir(&mnt);
    std::fs::create_dir(mnt.join("d1")).unwrap(); // the old name is free now
    write_synced(&mnt.join("d2/x"), b"x3");
    m.control().power_loss();
    m.unmount().unwrap();
    assert_eq!(std::fs::read(backing.join("d2/x")).unwrap(), b"x3");
    assert!(
        backing.join("d1").is_dir() && std::fs::read_dir(backing.join("d1")).unwrap().count() == 0
    );

    // Across parents, with a subdirectory: only the new parent's sync makes it durable.
    let m = Mounted::mount(&backing, &mnt).unwrap();
    std::fs::create_dir_all(mnt.join("a/sub/deep")).unwrap();
    std::fs::create_dir(mnt.join("b")).unwrap();
    write_synced(&mnt.join("a/sub/deep/f"), b"deep");
    sync_dir(&mnt.join("a/sub/deep"));
    std::fs::rename(mnt.join("a/sub"), mnt.join("b/sub2")).unwrap();
    sync_dir(&mnt.join("a"));
    m.control().power_loss();
    m.unmount().unwrap();
    assert_eq!(std::fs::read(backing.join("a/sub/deep/f")).unwrap(), b"deep");
    assert!(!backing.join("b/sub2").exists());
    let m = Mounted::mount(&backing, &mnt).unwrap();
    std::fs::rename(mnt.join("a/sub"), mnt.join("b/sub2")).unwrap();
    sync_dir(&mnt.join("b"));
    // Below the moved directory, file syncs follow it.
    write_synced(&mnt.join("b/sub2/deep/f"), b"deeper");
    m.control().power_loss();
    m.unmount().unwrap();
    assert_eq!(std::fs::read(backing.join("b/sub2/deep/f")).unwrap(), b"deeper");
    assert!(!backing.join("a/sub").exists());

    // Over an empty directory (its removal is durable at once, like rmdir), not over a
    // non-empty one or a file.
    let m = Mounted::mount(&backing, &mnt).unwrap();
    std::fs::create_dir(mnt.join("empty")).unwrap();
    write_synced(&mnt.join("file"), b"file");
    sync_dir(&mnt);
    assert_eq!(errno(std::fs::rename(mnt.join("b"), mnt.join("d2"))), Some(libc::ENOTEMPTY));
    assert_eq!(errno(std::fs::rename(mnt.join("b"), mnt.join("file"))), Some(libc::ENOTDIR));
    std::fs::rename(mnt.join("b"), mnt.join("empty")).unwrap();
    assert_eq!(std::fs::read(mnt.join("empty/sub2/deep/f")).unwrap(), b"deeper");
    sync_dir(&mnt);
    m.control().power_loss();
    m.unmount().unwrap();
    assert_eq!(std::fs::read(backing.join("empty/sub2/deep/f")).unwrap(), b"deeper");
    assert!(!backing.join("b").exists());
    assert_eq!(std::fs::read(backing.join("file")).unwrap(), b"file");
}
