//! `inspect::survey` checks aggregate snapshots (format-spec.md §13) and projection checkpoints
//! (§14) against the log, and `repair` sets the damaged ones aside so that a survey is clean
//! again. Valid files produce no finding.

use std::path::{Path, PathBuf};

use annal::format::{ProjectionCheckpoint, SnapshotFile};
use annal::inspect::{FindingKind, SurveyOptions, survey};
use annal::repair::{ActionKind, RepairOptions, repair};
use annal::{Direction, ExpectedVersion, NewEvent, SnapshotStore, Store, StoreOptions};

const STREAM: &str = "acct-1";

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    log_id: [u8; 16],
    /// (seq, event id) of the events of `STREAM`, by version.
    events: Vec<(u64, [u8; 16])>,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::open(&dir, StoreOptions::default()).unwrap();
    for i in 0..3 {
        let e = NewEvent::new("Deposited", format!("{{\"n\":{i}}}"));
        store.append(STREAM, ExpectedVersion::Any, &[e]).unwrap();
        store.append("acct-2", ExpectedVersion::Any, &[NewEvent::new("X", "{}")]).unwrap();
    }
    let events = store
        .read_stream(STREAM, 0, Direction::Forward, 10)
        .unwrap()
        .into_iter()
        .map(|e| (e.seq, *e.event_id.as_bytes()))
        .collect();
    let log_id = store.log().log_id();
    store.close().unwrap();
    Fixture { _tmp: tmp, dir, log_id, events }
}

fn snapshot(f: &Fixture, stream: &str, version: u64, seq: u64, id: [u8; 16]) -> SnapshotFile {
    SnapshotFile {
        log_id: f.log_id,
        stream_id: stream.into(),
        stream_version: version,
        seq,
        event_id: id,
        schema: "test.account/1".into(),
        payload: b"{\"balance\":3}".to_vec(),
    }
}

fn write_snapshot(f: &Fixture, snap: &SnapshotFile) -> PathBuf {
    let store = Store::open(&f.dir, StoreOptions::default()).unwrap();
    let snaps = SnapshotStore::for_store(&store);
    snaps.write(snap).unwrap();
    store.close().unwrap();
    snaps.path_for(&snap.stream_id)
}

/// Where the snapshot of `stream` goes.
fn snapshot_path(f: &Fixture, stream: &str) -> PathBuf {
    SnapshotStore::new(std::sync::Arc::new(annal::fs::StdFs), &f.dir, f.log_id).path_for(stream)
}

fn write_checkpoint(f: &Fixture, file: &str, ck: &ProjectionCheckpoint) -> PathBuf {
    let dir = f.dir.join("projections");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(file);
    std::fs::write(&path, ck.encode()).unwrap();
    path
}

fn checkpoint(f: &Fixture, name: &str, position: u64) -> ProjectionCheckpoint {
    ProjectionCheckpoint {
        log_id: f.log_id,
        name: name.into(),
        position,
        projection_version: 1,
        state: None,
    }
}

/// The side-file findings of a survey, as (file, kind).
fn side_findings(dir: &Path) -> Vec<(PathBuf, FindingKind)> {
    let s = survey(dir, SurveyOptions::default(), &mut |_, _| {}).unwrap();
    let mut v: Vec<_> = s
        .findings
        .into_iter()
        .filter(|f| {
            matches!(
                f.kind,
                FindingKind::SnapshotDamaged | FindingKind::ProjectionCheckpointDamaged
            )
        })
        .map(|f| (f.file, f.kind))
        .collect();
    v.sort();
    v
}

#[test]
fn valid_snapshots_and_checkpoints_are_clean() {
    let f = fixture();
    let (seq, id) = f.events[1];
    write_snapshot(&f, &snapshot(&f, STREAM, 1, seq, id));
    let ck = write_checkpoint(&f, "counts.ckpt", &checkpoint(&f, "counts", 4));
    let s = survey(&f.dir, SurveyOptions::default(), &mut |_, _| {}).unwrap();
    assert!(s.findings.is_empty(), "{:?}", s.findings);
    // Six events, the projection applied four: two behind.
    let p = &s.projection_positions;
    assert_eq!(p.len(), 1);
    assert_eq!(
        (p[0].path.clone(), p[0].name.as_str(), p[0].position, p[0].lag),
        (ck, "counts", 4, 2)
    );
}

#[test]
fn every_damaged_side_file_is_found_and_repair_sets_it_aside() {
    let f = fixture();
    let (seq1, id1) = f.events[1];
    let (seq2, _) = f.events[2];
    // Ahead of the log: version 7 does not exist.
    let ahead = write_snapshot(&f, &snapshot(&f, "acct-3", 7, 40, [7; 16]));
    // The right version and seq, another event id (a snapshot of an event lost in a crash).
    let lost = write_snapshot(&f, &snapshot(&f, STREAM, 1, seq1, [9; 16]));
    // The right event id at the wrong seq.
    let moved = write_snapshot(&f, &snapshot(&f, "acct-2", 0, seq2, id1));
    // A good snapshot copied under another stream's name.
    let good = write_snapshot(&f, &snapshot(&f, "acct-4", 0, 0, [0; 16]));
    let misplaced = snapshot_path(&f, "acct-5");
    std::fs::rename(&good, &misplaced).unwrap();
    // A flipped bit.
    let flipped = snapshot_path(&f, "x-1");
    let mut bytes = snapshot(&f, "x-1", 0, 0, [0; 16]).encode().unwrap();
    bytes[40] ^= 0x10;
    std::fs::write(&flipped, &bytes).unwrap();
    // Projection checkpoints: ahead of the log, garbage, another store, another name.
    let p_ahead = write_checkpoint(&f, "a.ckpt", &checkpoint(&f, "a", 7));
    let p_garbage = f.dir.join("projections").join("b.ckpt");
    std::fs::write(&p_garbage, [0xAB; 100]).unwrap();
    let mut foreign = checkpoint(&f, "c", 1);
    foreign.log_id = [1; 16];
    let p_foreign = write_checkpoint(&f, "c.ckpt", &foreign);
    let p_renamed = write_checkpoint(&f, "d.ckpt", &checkpoint(&f, "e", 1));
    // Files the engine leaves alone: a temp file and a set-aside snapshot.
    std::fs::write(f.dir.join("projections").join("z.ckpt.tmp"), b"half").unwrap();
    std::fs::write(f.dir.join("snapshots").join("p-x.snap.broken-1"), b"old").unwrap();

    let snap = FindingKind::SnapshotDamaged;
    let proj = FindingKind::ProjectionCheckpointDamaged;
    let mut expected = vec![
        (ahead, snap),
        (lost, snap),
        (moved, snap),
        (misplaced, snap),
        (flipped, snap),
        (p_ahead, proj),
        (p_garbage, proj),
        (p_foreign, proj),
        (p_renamed, proj),
    ];
    expected.sort();
    assert_eq!(side_findings(&f.dir), expected);

    let report = repair(&f.dir, RepairOptions::default(), &mut |_, _| {}).unwrap();
    assert!(report.succeeded(), "{:?}", report.remaining);
    let set_aside: Vec<&PathBuf> = report
        .actions
        .iter()
        .filter(|a| {
            matches!(
                a.kind,
                ActionKind::SetAsideSnapshot | ActionKind::SetAsideProjectionCheckpoint
            )
        })
        .map(|a| &a.file)
        .collect();
    assert_eq!(set_aside.len(), expected.len());
    for (file, _) in &expected {
        assert!(!file.exists(), "{} is still in the store", file.display());
        let saved = report.actions.iter().find(|a| &a.file == file).unwrap();
        assert!(saved.saved_to.as_ref().is_some_and(|p| p.exists()), "{saved:?}");
    }
    assert!(side_findings(&f.dir).is_empty());
    // The files the engine does not own were not touched.
    assert!(f.dir.join("projections").join("z.ckpt.tmp").exists());
    assert!(f.dir.join("snapshots").join("p-x.snap.broken-1").exists());
}
