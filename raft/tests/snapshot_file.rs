//! The state machine's current snapshot survives a restart (`sm.snapshot`, format-spec.md
//! §17), whether it was built or installed, and a damaged snapshot file is moved aside to
//! `sm.snapshot.broken-<n>`, never used: the node opens without a snapshot and its store
//! is untouched.

use std::path::Path;
use std::sync::Arc;

use annal::StoreOptions;
use annal::fs::{SimFs, Storage};
use annal_raft::{AppendRequest, EventData, Expected, StateMachine, TypeConfig};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder};

const DIR: &str = "/sm";
const FILE: &str = "/sm/sm.snapshot";

fn open(sim: &SimFs) -> StateMachine {
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    StateMachine::open_with(storage, DIR, StoreOptions::default()).unwrap()
}

fn entries(range: std::ops::Range<u64>) -> Vec<Entry<TypeConfig>> {
    range
        .map(|i| Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), i),
            payload: EntryPayload::Normal(AppendRequest {
                stream: format!("s-{}", i % 3),
                expected: Expected::Any,
                events: vec![EventData::new("Happened", format!("event {i}").into_bytes())],
            }),
        })
        .collect()
}

async fn current(
    sm: &mut StateMachine,
) -> Option<(openraft::SnapshotMeta<u64, openraft::BasicNode>, Vec<u8>)> {
    sm.get_current_snapshot().await.unwrap().map(|s| (s.meta, s.snapshot.into_inner()))
}

#[tokio::test]
async fn a_built_snapshot_is_the_current_one_after_a_restart() {
    let sim = SimFs::new(21);
    let mut sm = open(&sim);
    sm.apply(entries(1..20)).await.unwrap();
    let built = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let built = (built.meta, built.snapshot.into_inner());
    // Power loss right after: the snapshot was durable when `build_snapshot` returned.
    sim.crash_with(annal::fs::CrashMode::DropAll);
    drop(sm);
    let mut sm = open(&sim);
    assert_eq!(sm.snapshot_set_aside(), None);
    assert_eq!(current(&mut sm).await, Some(built));
}

#[tokio::test]
async fn an_installed_snapshot_is_the_current_one_after_a_restart() {
    let sim = SimFs::new(22);
    let mut leader = open(&sim);
    leader.apply(entries(1..30)).await.unwrap();
    let snap = leader.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let digest = leader.digest().unwrap();
    drop(leader);
    let follower_fs = SimFs::new(23);
    let mut follower = open(&follower_fs);
    let data = snap.snapshot.into_inner();
    follower
        .install_snapshot(&snap.meta, Box::new(std::io::Cursor::new(data.clone())))
        .await
        .unwrap();
    // Power loss right after the install: `sm.meta` names the new store, whose events must be
    // durable by then.
    follower_fs.crash_with(annal::fs::CrashMode::DropAll);
    drop(follower);
    let mut follower = open(&follower_fs);
    assert_eq!(current(&mut follower).await, Some((snap.meta, data)));
    assert_eq!(follower.digest().unwrap(), digest);
}

#[tokio::test]
async fn a_damaged_snapshot_file_is_moved_aside_and_never_used() {
    let sim = SimFs::new(24);
    let mut sm = open(&sim);
    sm.apply(entries(1..10)).await.unwrap();
    sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let digest = sm.digest().unwrap();
    drop(sm);
    let good = sim.current_bytes(FILE).unwrap();
    // One flipped bit in the data, in the header, then a file cut short: each is set aside
    // under the next free name, and the store is what it was.
    let damages: [&dyn Fn(&SimFs); 3] = [
        &|s| s.flip_bit(FILE, good.len() as u64 - 3, 2).unwrap(),
        &|s| s.flip_bit(FILE, 17, 0).unwrap(),
        &|s| s.write_file_raw(FILE, &good[..good.len() / 2]).unwrap(),
    ];
    for (n, damage) in damages.iter().enumerate() {
        sim.write_file_raw(FILE, &good).unwrap();
        damage(&sim);
        let damaged = sim.current_bytes(FILE).unwrap();
        let mut sm = open(&sim);
        let aside = format!("{FILE}.broken-{n}");
        assert_eq!(sm.snapshot_set_aside().as_deref(), Some(Path::new(&aside)));
        assert_eq!(current(&mut sm).await, None);
        assert!(!sim.exists(Path::new(FILE)).unwrap());
        assert_eq!(sim.current_bytes(&aside).unwrap(), damaged, "set aside byte for byte");
        assert_eq!(sm.digest().unwrap(), digest);
        drop(sm);
    }
    // The undamaged file is used again.
    sim.write_file_raw(FILE, &good).unwrap();
    let mut sm = open(&sim);
    assert!(current(&mut sm).await.is_some());
}
