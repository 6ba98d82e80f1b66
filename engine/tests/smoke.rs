//! Basic behaviour on the real file system: append, read, cursor, roll, reopen.

use annal::{Log, Options};

fn small() -> Options {
    Options { segment_bytes: 64 << 10, max_record_bytes: 16 << 10, ..Options::default() }
}

#[test]
fn append_read_roll_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small()).unwrap();
    let mut expected = Vec::new();
    for i in 0..500u32 {
        let payloads: Vec<Vec<u8>> = (0..(i % 5 + 1))
            .map(|j| format!("rec {i}/{j}").repeat((i % 40) as usize + 1).into_bytes())
            .collect();
        let a = log.append(&payloads).unwrap();
        assert_eq!(a.first, expected.len() as u64);
        expected.extend(payloads);
    }
    assert!(log.stats().rolls > 3, "{:?}", log.stats());
    assert_eq!(log.durable_head(), Some(expected.len() as u64 - 1));
    for (seq, p) in expected.iter().enumerate().step_by(7) {
        assert_eq!(&log.read(seq as u64).unwrap().payload[..], &p[..]);
    }
    let all: Vec<_> = log.cursor(0).map(|r| r.unwrap().payload.to_vec()).collect();
    assert_eq!(all, expected);
    log.close().unwrap();

    let log = Log::open(dir.path(), small()).unwrap();
    let report = log.recovery_report().clone();
    assert!(report.clean, "{report:?}");
    assert_eq!(report.scanned_bytes, 0);
    assert_eq!(report.next_seq, expected.len() as u64);
    let all: Vec<_> = log.cursor(3).map(|r| r.unwrap().payload.to_vec()).collect();
    assert_eq!(all, expected[3..]);
    let a = log.append(&[b"after reopen"]).unwrap();
    assert_eq!(a.first, expected.len() as u64);
    drop(log);
    let log = Log::open(dir.path(), small()).unwrap();
    assert_eq!(&log.read(a.first).unwrap().payload[..], b"after reopen");
    assert!(log.recovery_report().clean);
    // A cursor steps over the close frame the first session left mid-segment.
    expected.push(b"after reopen".to_vec());
    let all: Vec<_> = log.cursor(0).map(|r| r.unwrap().payload.to_vec()).collect();
    assert_eq!(all, expected);
}

#[test]
fn second_open_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _log = Log::open(dir.path(), small()).unwrap();
    match Log::open(dir.path(), small()) {
        Err(annal::Error::Locked { dir: d }) => assert_eq!(d, dir.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
}

#[test]
fn lowering_max_record_bytes_keeps_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let big = vec![7u8; 10 << 10];
    let log = Log::open(dir.path(), small()).unwrap();
    log.append(&[b"before".to_vec()]).unwrap();
    log.append(std::slice::from_ref(&big)).unwrap();
    log.append(&[b"after".to_vec()]).unwrap();
    drop(log);
    // The configured maximum bounds new appends only: records already acknowledged stay
    // readable and are never cut as a torn tail or called corrupt.
    for clean in [true, false] {
        if !clean {
            std::fs::remove_file(dir.path().join("segments").join(format!("{:020}.idx", 0)))
                .unwrap();
        }
        let lower = Options { max_record_bytes: 1 << 10, ..small() };
        let log = Log::open(dir.path(), lower).unwrap();
        assert_eq!(log.recovery_report().truncated, None);
        assert_eq!(log.read(1).unwrap().payload.to_vec(), big);
        assert_eq!(log.cursor(0).count(), 3);
        assert!(matches!(
            log.append(std::slice::from_ref(&big)),
            Err(annal::Error::RecordTooLarge { .. })
        ));
    }
}

#[test]
fn reopening_without_appends_leaves_the_files_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small()).unwrap();
    log.append(&[b"one".as_slice(), b"two"]).unwrap();
    log.close().unwrap();
    let seg = dir.path().join("segments").join(format!("{:020}.seg", 0));
    let before = std::fs::read(&seg).unwrap();
    for _ in 0..3 {
        let log = Log::open(dir.path(), small()).unwrap();
        assert!(log.recovery_report().clean);
        assert_eq!(log.cursor(0).count(), 2);
        log.close().unwrap();
        assert_eq!(std::fs::read(&seg).unwrap(), before, "an idle open/close changed the segment");
    }
}
