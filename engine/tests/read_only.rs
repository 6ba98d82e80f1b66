//! A read-only open takes no lock and changes no byte: it works beside a running writer and
//! reports (without cutting) a torn tail, and it refuses writes.

const FH: usize = annal::limits::FRAME_HEADER_BYTES;
use std::collections::BTreeMap;
use std::path::Path;

use annal::{Error, Log, Options};

fn small() -> Options {
    Options { segment_bytes: 32 << 10, max_record_bytes: 4 << 10, ..Options::default() }
}

/// Every file under `dir` with its full contents.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

#[test]
fn reads_beside_a_writer_without_changing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Log::open(dir.path(), small()).unwrap();
    let payloads: Vec<Vec<u8>> =
        (0..300u32).map(|i| vec![(i % 251) as u8; (i % 97) as usize]).collect();
    for chunk in payloads.chunks(3) {
        writer.append(chunk).unwrap();
    }
    let before = snapshot(dir.path());
    let reader = Log::open_read_only(dir.path(), small()).unwrap();
    let got: Vec<Vec<u8>> = reader.cursor(0).map(|r| r.unwrap().payload.to_vec()).collect();
    assert_eq!(got, payloads);
    assert!(matches!(reader.append(&[b"x"]), Err(Error::ReadOnly)));
    drop(reader);
    assert_eq!(snapshot(dir.path()), before, "a read-only open changed files");
    // The writer still owns the store.
    writer.append(&[b"more"]).unwrap();
}

#[test]
fn torn_tail_is_reported_and_hidden_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small()).unwrap();
    log.append(&[b"first".as_slice(), b"second"]).unwrap();
    let last = log.append(&[b"torn away"]).unwrap();
    log.close().unwrap();
    // Cut the last batch in half, as a crash mid-write would.
    let seg = dir.path().join("segments").join(format!("{:020}.seg", 0));
    let bytes = std::fs::read(&seg).unwrap();
    let idx = dir.path().join("segments").join(format!("{:020}.idx", 0));
    std::fs::remove_file(idx).unwrap();
    // The last batch starts after header (64) + first batch frame; cut 20 bytes into it and
    // drop the close frame.
    let first_batch: usize = FH + 16 + 5 + 16 + 6;
    let cut = 64 + first_batch.div_ceil(8) * 8 + 20;
    std::fs::write(&seg, &bytes[..cut]).unwrap();
    let before = snapshot(dir.path());
    let reader = Log::open_read_only(dir.path(), small()).unwrap();
    let t = reader.recovery_report().truncated.clone().expect("torn tail reported");
    assert_eq!(t.moved_to, None);
    assert_eq!(reader.visible_end(), last.first);
    assert!(matches!(reader.read(last.first), Err(Error::SeqOutOfRange { .. })));
    drop(reader);
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn empty_directory_is_not_a_store() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(Log::open_read_only(dir.path(), small()), Err(Error::NoStore { .. })));
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}

#[test]
fn read_only_never_rebuilds_files_and_reads_through_a_missing_seal() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small()).unwrap();
    let payloads: Vec<Vec<u8>> = (0..400u32).map(|i| vec![(i % 251) as u8; 100]).collect();
    for p in &payloads {
        log.append(&[p]).unwrap();
    }
    assert!(log.stats().rolls >= 2);
    log.close().unwrap();
    let segs = dir.path().join("segments");
    // Interrupted roll: the first segment lost its seal frame; and its index is gone.
    let first = segs.join(format!("{:020}.seg", 0));
    let bytes = std::fs::read(&first).unwrap();
    std::fs::write(&first, &bytes[..bytes.len() - FH]).unwrap();
    std::fs::remove_file(segs.join(format!("{:020}.idx", 0))).unwrap();
    let before = snapshot(dir.path());
    let reader = Log::open_read_only(dir.path(), small()).unwrap();
    assert_eq!(reader.recovery_report().seals_completed, vec![0]);
    assert!(!reader.recovery_report().clean);
    let got: Vec<Vec<u8>> = reader.cursor(0).map(|r| r.unwrap().payload.to_vec()).collect();
    assert_eq!(got, payloads);
    assert_eq!(reader.read(3).unwrap().payload.to_vec(), payloads[3]);
    drop(reader);
    assert_eq!(snapshot(dir.path()), before, "a read-only open changed files");
    // A writer completes the seal and the store reads the same.
    let log = Log::open(dir.path(), small()).unwrap();
    assert_eq!(log.recovery_report().seals_completed, vec![0]);
    let got: Vec<Vec<u8>> = log.cursor(0).map(|r| r.unwrap().payload.to_vec()).collect();
    assert_eq!(got, payloads);
}
