//! `Options::writeback_bytes`: under `Durability::Batched` and `None`, written and unsynced
//! bytes are handed to the kernel's write-back in ranges of that size (a hint that makes
//! nothing durable), and never under `Durability::Sync`, where every group is synced anyway.

use std::sync::Arc;
use std::time::Duration;

use annal::fs::{SimFs, StdFs, Storage};
use annal::{Durability, Log, Options};

const RECORD: usize = 4000;
const EVERY: u64 = 64 << 10;

/// Appends `n` records of `RECORD` bytes, one per call, and returns the hints counted.
fn hints_after(durability: Durability, writeback_bytes: u64, n: usize) -> u64 {
    let storage: Arc<dyn Storage> = Arc::new(SimFs::new(3));
    let opts = Options { durability, writeback_bytes, ..Options::default() };
    let log = Log::open_with(storage, "/s", opts).unwrap();
    for i in 0..n {
        log.append(&[vec![i as u8; RECORD]]).unwrap();
    }
    let hints = log.stats().writeback_hints;
    log.close().unwrap();
    hints
}

#[test]
fn unsynced_bytes_go_to_write_back_in_ranges_of_writeback_bytes() {
    // 100 records of about 4 KiB: about 400 KiB, so 6 full ranges of 64 KiB.
    let written = 100 * (RECORD as u64 + 16 + 56);
    let expected = written / EVERY;
    let none = hints_after(Durability::None, EVERY, 100);
    assert!(none >= expected - 1 && none <= expected, "{none} hints, expected about {expected}");
    // A flusher that rarely runs: the hints come from the appends.
    let batched = Durability::Batched { max_delay: Duration::from_secs(60), max_bytes: 1 << 30 };
    let b = hints_after(batched, EVERY, 100);
    assert!(b >= expected - 1 && b <= expected, "{b} hints, expected about {expected}");
}

#[test]
fn no_write_back_hints_when_every_group_is_synced_or_when_turned_off() {
    assert_eq!(hints_after(Durability::Sync, EVERY, 100), 0);
    assert_eq!(hints_after(Durability::None, 0, 100), 0);
}

/// On the real file system the hint is `sync_file_range`: it must succeed on a segment, and
/// a store written with it reopens with every record.
#[test]
fn write_back_on_the_real_file_system() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let opts =
        Options { durability: Durability::None, writeback_bytes: EVERY, ..Options::default() };
    let log = Log::open(&dir, opts.clone()).unwrap();
    let payloads: Vec<Vec<u8>> = (0..300).map(|i| vec![(i % 251) as u8; RECORD]).collect();
    for p in &payloads {
        log.append(&[p]).unwrap();
    }
    assert!(log.stats().writeback_hints >= 10, "{:?}", log.stats());
    log.close().unwrap();
    let log = Log::open(&dir, opts).unwrap();
    let got: Vec<Vec<u8>> = log.cursor(0).map(|r| r.unwrap().payload.to_vec()).collect();
    assert_eq!(got, payloads);
    // And directly: a range that is written, one past the end, an empty one.
    let path = tmp.path().join("f");
    let f = StdFs.open(&path, annal::fs::OpenMode::CreateNew).unwrap();
    f.write_all_at(&[7u8; 8192], 0).unwrap();
    f.start_writeback(0, 8192).unwrap();
    f.start_writeback(4096, 1 << 20).unwrap();
    f.start_writeback(0, 0).unwrap();
}
