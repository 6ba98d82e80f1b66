//! Every kind of bad snapshot (torn, corrupt, another aggregate's, another store's, another
//! schema, ahead of the log, of a history the log does not hold, undecodable state) is set
//! aside (moved, never deleted), reported by `load`, and the state comes from a full replay.

mod support;

use std::sync::Arc;

use annal::format::SnapshotFile;
use annal::fs::{SimFs, Storage};
use annal::{
    Durability, Options, Repository, RepositoryOptions, SnapshotDamage, SnapshotUse, Store,
    StoreOptions,
};
use support::{Account, Cmd};

fn opts(durability: Durability) -> StoreOptions {
    StoreOptions {
        log: Options {
            durability,
            segment_bytes: 64 << 10,
            max_record_bytes: 4 << 10,
            ..Options::default()
        },
        ..StoreOptions::default()
    }
}

fn repo(storage: &Arc<dyn Storage>, dir: &str, durability: Durability) -> Repository<Account> {
    let store = Store::open_with(Arc::clone(storage), dir, opts(durability)).unwrap();
    let o = RepositoryOptions { snapshot_every: Some(5), ..RepositoryOptions::default() };
    Repository::new(store, o).unwrap()
}

/// Opens account `id` and deposits `n` times, leaving a snapshot.
fn fill(repo: &Repository<Account>, id: &str, n: u64) {
    repo.execute(id, &Cmd::Open).unwrap();
    for i in 0..n {
        repo.execute(id, &Cmd::Deposit(i + 1)).unwrap();
    }
    repo.flush_snapshots();
}

/// Loads `id`, expects the snapshot rejected with a damage `what` accepts, moved aside with
/// its bytes intact, and the state equal to a full replay; then a second load finds no
/// snapshot and a new execute writes a good one again.
fn expect_set_aside(
    sim: &SimFs,
    repo: &Repository<Account>,
    id: &str,
    what: impl Fn(&SnapshotDamage) -> bool,
) {
    let path = repo.snapshots().path_for(&repo.stream_id(id));
    let bad = sim.current_bytes(&path).expect("a snapshot file to damage");
    let loaded = repo.load(id).unwrap();
    let SnapshotUse::Rejected(report) = &loaded.snapshot else {
        panic!("{id}: snapshot not rejected: {:?}", loaded.snapshot)
    };
    assert!(what(&report.damage), "{id}: wrong damage {:?}", report.damage);
    assert_eq!(report.stream_id, repo.stream_id(id));
    let moved = report.moved_to.as_ref().expect("moved aside");
    assert_eq!(sim.current_bytes(moved).as_deref(), Some(&bad[..]), "kept byte for byte");
    assert!(sim.current_bytes(&path).is_none(), "no longer in place");
    assert_eq!(loaded.state, repo.replay(id).unwrap().state);
    assert_eq!(loaded.replayed, loaded.state.events, "full replay");
    assert_eq!(repo.load(id).unwrap().snapshot, SnapshotUse::None);
    for _ in 0..5 {
        repo.execute(id, &Cmd::Deposit(1)).unwrap();
    }
    repo.flush_snapshots();
    let again = repo.load(id).unwrap();
    assert!(matches!(again.snapshot, SnapshotUse::Used { .. }), "{:?}", again.snapshot);
    assert_eq!(again.state, repo.replay(id).unwrap().state);
}

fn rewrite(sim: &SimFs, path: &std::path::Path, f: impl FnOnce(&mut SnapshotFile)) {
    let mut file = SnapshotFile::decode(&sim.current_bytes(path).unwrap()).unwrap();
    f(&mut file);
    sim.write_file_raw(path, &file.encode().unwrap()).unwrap();
}

#[test]
fn every_damage_kind_is_set_aside_and_reported() {
    let sim = SimFs::new(11);
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let repo = repo(&storage, "/s", Durability::Sync);
    let ids = ["torn", "flip", "zeros", "wrong", "foreign", "schema", "ahead", "state", "huge"];
    for id in ids {
        fill(&repo, id, 12);
    }
    let path = |id: &str| repo.snapshots().path_for(&repo.stream_id(id));
    let good = sim.current_bytes(path("torn")).unwrap();
    // Open at version 0, 12 deposits, a snapshot every 5 events: the last at version 9.
    assert_eq!(repo.load("torn").unwrap().snapshot, SnapshotUse::Used { version: 9 });

    // Torn: the file ends early.
    sim.write_file_raw(path("torn"), &good[..good.len() - 7]).unwrap();
    expect_set_aside(&sim, &repo, "torn", |d| matches!(d, SnapshotDamage::Corrupt(_)));

    // Corrupt: one bit flipped in the payload.
    let len = sim.current_bytes(path("flip")).unwrap().len() as u64;
    sim.flip_bit(path("flip"), len - 2, 3).unwrap();
    expect_set_aside(&sim, &repo, "flip", |d| matches!(d, SnapshotDamage::Corrupt(_)));

    // All zeros must never validate.
    sim.write_file_raw(path("zeros"), &vec![0; good.len()]).unwrap();
    expect_set_aside(&sim, &repo, "zeros", |d| matches!(d, SnapshotDamage::Corrupt(_)));

    // Another aggregate's valid snapshot under this one's name.
    let other = sim.current_bytes(path("flip")).unwrap();
    sim.write_file_raw(path("wrong"), &other).unwrap();
    expect_set_aside(
        &sim,
        &repo,
        "wrong",
        |d| matches!(d, SnapshotDamage::WrongStream { found } if found == "account-flip"),
    );

    // Another store's snapshot (valid, same stream and versions).
    rewrite(&sim, &path("foreign"), |f| f.log_id = [9; 16]);
    expect_set_aside(&sim, &repo, "foreign", |d| *d == SnapshotDamage::ForeignStore);

    // Another schema of state.
    rewrite(&sim, &path("schema"), |f| f.schema = "test.account/0".into());
    expect_set_aside(&sim, &repo, "schema", |d| matches!(d, SnapshotDamage::WrongSchema { .. }));

    // Ahead of the log: it claims events the stream does not have.
    rewrite(&sim, &path("ahead"), |f| f.stream_version += 100);
    expect_set_aside(&sim, &repo, "ahead", |d| {
        matches!(d, SnapshotDamage::AheadOfLog { snapshot_version: 109, stream_version: Some(12) })
    });

    // Valid checksums, but a payload the codec cannot read.
    rewrite(&sim, &path("state"), |f| f.payload = b"{not json".to_vec());
    expect_set_aside(&sim, &repo, "state", |d| matches!(d, SnapshotDamage::BadState { .. }));

    // Larger than any snapshot may be: refused by its length.
    let huge = vec![0u8; (annal::limits::SNAPSHOT_FILE_BYTES_MAX + 1) as usize];
    sim.write_file_raw(path("huge"), &huge).unwrap();
    drop(huge);
    expect_set_aside(&sim, &repo, "huge", |d| matches!(d, SnapshotDamage::TooLarge { .. }));

    let aside = repo.snapshots().set_aside_files().unwrap();
    assert_eq!(aside.len(), ids.len(), "{aside:?}");
    assert_eq!(repo.snapshots().stats().set_aside, ids.len() as u64);
}

/// Under `Durability::None` a snapshot can cover events a crash then loses; once other
/// events are written at those versions, the snapshot's anchor (seq + event id) no longer
/// matches the log and it is set aside as a history the log does not hold.
#[test]
fn snapshot_of_lost_events_is_not_in_log() {
    let sim = SimFs::new(12);
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let repo1 = repo(&storage, "/s", Durability::Sync);
    fill(&repo1, "a", 3);
    drop(repo1);
    let repo2 = repo(&storage, "/s", Durability::None);
    for _ in 0..6 {
        repo2.execute("a", &Cmd::Deposit(7)).unwrap();
    }
    repo2.flush_snapshots();
    let path = repo2.snapshots().path_for("account-a");
    let snap = SnapshotFile::decode(&sim.current_bytes(&path).unwrap()).unwrap();
    assert_eq!(snap.stream_version, 9);
    // The snapshot was synced; the events after version 3 were not.
    sim.crash_drop_all();
    drop(repo2);
    let repo3 = repo(&storage, "/s", Durability::Sync);
    assert_eq!(repo3.store().stream_version("account-a"), Some(3));
    let ahead = repo3.load("a").unwrap();
    assert!(
        matches!(&ahead.snapshot, SnapshotUse::Rejected(r)
            if matches!(r.damage, SnapshotDamage::AheadOfLog { .. })),
        "{:?}",
        ahead.snapshot
    );
    // Put it back and write other events at the lost versions: now it is not the log's.
    let aside = repo3.snapshots().set_aside_files().unwrap();
    let moved = repo3.snapshots().dir().join(&aside[0]);
    sim.write_file_raw(&path, &sim.current_bytes(&moved).unwrap()).unwrap();
    let store = repo3.store().clone();
    for _ in 0..6 {
        store
            .append(
                "account-a",
                annal::ExpectedVersion::Any,
                &[annal::NewEvent::new("Deposited", r#"{"amount":1}"#)],
            )
            .unwrap();
    }
    expect_set_aside(&sim, &repo3, "a", |d| {
        matches!(d, SnapshotDamage::NotInLog { snapshot_version: 9 })
    });
}
