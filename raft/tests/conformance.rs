//! openraft's storage conformance suite (`openraft::testing::Suite::test_all`, every test of
//! the pinned version) against `LogStore` + `StateMachine`, each on a fresh directory.

use annal::{Options, StoreOptions};
use annal_raft::{LogStore, StateMachine, TypeConfig};
use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().unwrap();
        let log = LogStore::open(dir.path().join("raft-log"), Options::default()).unwrap();
        let sm = StateMachine::open(dir.path().join("sm"), StoreOptions::default()).unwrap();
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    if let Err(e) = Suite::test_all(Builder) {
        panic!("openraft storage suite: {e}");
    }
}

/// The suite builds each store once; this reopens one: vote, committed id, purge point and
/// entries survive, and truncate + purge are durable.
#[test]
fn log_state_survives_reopen() {
    use openraft::storage::RaftLogStorage;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, Vote};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft-log");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lid = |t, i| LogId::new(CommittedLeaderId::new(t, 0), i);
    rt.block_on(async {
        let mut log = LogStore::open(&path, Options::default()).unwrap();
        let entries: Vec<Entry<TypeConfig>> =
            (3..40).map(|i| Entry { log_id: lid(1, i), payload: EntryPayload::Blank }).collect();
        openraft::storage::RaftLogStorageExt::blocking_append(&mut log, entries).await.unwrap();
        log.save_vote(&Vote::new(2, 1)).await.unwrap();
        log.save_committed(Some(lid(1, 20))).await.unwrap();
        log.truncate(lid(1, 30)).await.unwrap();
        log.purge(lid(1, 10)).await.unwrap();
        drop(log);
        let mut log = LogStore::open(&path, Options::default()).unwrap();
        let st = log.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id, Some(lid(1, 10)));
        assert_eq!(st.last_log_id, Some(lid(1, 29)));
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
        assert_eq!(log.read_committed().await.unwrap(), Some(lid(1, 20)));
        let got = log.try_get_log_entries(0..100).await.unwrap();
        let idx: Vec<u64> = got.iter().map(|e| e.log_id.index).collect();
        assert_eq!(idx, (11..30).collect::<Vec<_>>());
        // An append past a purge beyond the end starts a new generation.
        log.purge(lid(2, 50)).await.unwrap();
        let e = Entry { log_id: lid(2, 51), payload: EntryPayload::Blank };
        openraft::storage::RaftLogStorageExt::blocking_append(&mut log, [e]).await.unwrap();
        drop(log);
        let mut log = LogStore::open(&path, Options::default()).unwrap();
        let st = log.get_log_state().await.unwrap();
        assert_eq!(st.last_log_id, Some(lid(2, 51)));
        let dirs: Vec<_> =
            std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(dirs.iter().filter(|n| n.to_string_lossy().starts_with("log-")).count(), 1);
    });
}
