//! The raft log's flusher (`raft/src/log_store.rs`): `append` returns with its entries
//! readable but not yet acknowledged; openraft's flush callback reports success only once they
//! are durable (a crash right after it loses none); a failed fsync is reported to the callback
//! and every later append fails, so nothing is acknowledged after it.

use std::sync::Arc;
use std::time::Duration;

use annal::Options;
use annal::fs::{CrashMode, SimFs, Storage};
use annal_raft::{LogStore, TypeConfig};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader};

const DIR: &str = "/raft-log";

fn lid(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(1, 0), index)
}

fn blanks(range: std::ops::Range<u64>) -> Vec<Entry<TypeConfig>> {
    range.map(|i| Entry { log_id: lid(i), payload: EntryPayload::Blank }).collect()
}

fn open(sim: &SimFs) -> LogStore {
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    LogStore::open_with(storage, DIR, Options::default()).unwrap()
}

async fn indexes(log: &mut LogStore) -> Vec<u64> {
    log.try_get_log_entries(0..u64::MAX).await.unwrap().iter().map(|e| e.log_id.index).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_are_readable_at_once_and_acknowledged_only_once_durable() {
    let sim = SimFs::new(11);
    let mut log = open(&sim);
    log.blocking_append(blanks(1..4)).await.unwrap();
    // Every fsync now takes a while: the append below is queued long before it is durable.
    sim.set_sync_delay(Duration::from_millis(300));
    let mut writer = log.clone();
    let acked = tokio::spawn(async move { writer.blocking_append(blanks(4..9)).await });
    let mut reader = log.get_log_reader().await;
    let read = loop {
        let got = reader.try_get_log_entries(4..9).await.unwrap();
        if !got.is_empty() {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    assert_eq!(read.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), (4..9).collect::<Vec<_>>());
    assert!(!acked.is_finished(), "acknowledged while its fsync is still in flight");
    assert_eq!(log.get_log_state().await.unwrap().last_log_id, Some(lid(8)));
    acked.await.unwrap().unwrap();
    sim.set_sync_delay(Duration::ZERO);
    // Acknowledged means durable: a power loss dropping every unsynced write keeps them. The
    // crash comes first: closing the log would sync it.
    sim.crash_with(CrashMode::DropAll);
    drop((log, reader));
    let mut log = open(&sim);
    assert_eq!(indexes(&mut log).await, (1..9).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_is_reported_and_nothing_is_acknowledged_after_it() {
    let sim = SimFs::new(12);
    let mut log = open(&sim);
    log.blocking_append(blanks(1..10)).await.unwrap();
    sim.fail_sync_at(0);
    let failed = log.blocking_append(blanks(10..20)).await;
    assert!(failed.is_err(), "the callback must carry the fsync's failure");
    // The log is poisoned: later appends, truncates, purges and votes fail, they are not
    // acknowledged on the strength of a later fsync that "succeeds".
    assert!(log.blocking_append(blanks(20..21)).await.is_err());
    assert!(log.truncate(lid(5)).await.is_err());
    assert!(log.purge(lid(2)).await.is_err());
    assert!(log.save_vote(&openraft::Vote::new(2, 1)).await.is_err());
    sim.crash_with(CrashMode::DropAll);
    drop(log);
    let mut log = open(&sim);
    let got = indexes(&mut log).await;
    assert_eq!(got[..9], (1..10).collect::<Vec<_>>()[..], "acknowledged entries were lost");
    assert!(got.iter().copied().eq(1..1 + got.len() as u64), "a hole: {got:?}");
    // The reopened log works again.
    let next = 1 + got.len() as u64;
    log.blocking_append(blanks(next..next + 3)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_and_purge_wait_for_queued_appends() {
    let sim = SimFs::new(13);
    let mut log = open(&sim);
    sim.set_sync_delay(Duration::from_millis(100));
    let mut writer = log.clone();
    let acked = tokio::spawn(async move { writer.blocking_append(blanks(1..30)).await });
    // Queued, not durable yet: the truncate must let the flusher finish first (a shared log
    // handle would make `Log::truncate_from` fail), then cut.
    while log.get_log_state().await.unwrap().last_log_id != Some(lid(29)) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    log.truncate(lid(20)).await.unwrap();
    acked.await.unwrap().unwrap();
    log.purge(lid(5)).await.unwrap();
    sim.set_sync_delay(Duration::ZERO);
    assert_eq!(indexes(&mut log).await, (6..20).collect::<Vec<_>>());
    sim.crash_with(CrashMode::DropAll);
    drop(log);
    let mut log = open(&sim);
    assert_eq!(indexes(&mut log).await, (6..20).collect::<Vec<_>>());
}
