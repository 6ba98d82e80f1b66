//! After a crash the state machine's `sm.meta` may be older than its store (it is replaced
//! only now and then): openraft then applies entries again. The responses and the store must
//! be exactly those of the first application, including a request that failed its expected
//! version before a later entry made that version true.

use annal::StoreOptions;
use annal_raft::{AppendRequest, AppendResponse, EventData, Expected, StateMachine, TypeConfig};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

fn req(stream: &str, expected: Expected, n: usize) -> AppendRequest {
    let events = (0..n).map(|i| EventData::new("E", format!("{stream}-{i}"))).collect();
    AppendRequest { stream: stream.into(), expected, events }
}

fn entries(from: u64, reqs: &[AppendRequest]) -> Vec<Entry<TypeConfig>> {
    reqs.iter()
        .enumerate()
        .map(|(i, r)| Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), from + i as u64),
            payload: EntryPayload::Normal(r.clone()),
        })
        .collect()
}

#[test]
fn entries_applied_again_after_a_crash_give_the_same_responses_and_store() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let reqs = vec![
            req("a", Expected::NoStream, 2),     // ok: a@0..1
            req("b", Expected::Exact(0), 1),     // wrong: b has no events yet
            req("b", Expected::NoStream, 1),     // ok: b@0 (now b is at 0, which the last wanted)
            req("a", Expected::Exact(1), 1),     // ok: a@2
            req("a", Expected::Exact(1), 1),     // wrong: a is at 2
            req("", Expected::Any, 1),           // rejected: invalid stream id
            req("c", Expected::StreamExists, 1), // wrong
        ];
        let mut sm = StateMachine::open(dir.path(), StoreOptions::default()).unwrap();
        let first = sm.apply(entries(1, &reqs)).await.unwrap();
        assert!(matches!(first[0], AppendResponse::Appended { first_version: 0, count: 2, .. }));
        assert_eq!(
            first[1],
            AppendResponse::WrongExpectedVersion { expected: Expected::Exact(0), actual: None }
        );
        assert!(matches!(first[2], AppendResponse::Appended { first_version: 0, .. }));
        assert!(matches!(first[5], AppendResponse::Rejected { .. }));
        let digest = sm.digest().unwrap();
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(7));
        // A crash: sm.meta was never replaced (fewer entries than PERSIST_EVERY_ENTRIES and no
        // membership change), so the reopened state machine has applied nothing.
        drop(sm);
        let mut sm = StateMachine::open(dir.path(), StoreOptions::default()).unwrap();
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied, None);
        let again = sm.apply(entries(1, &reqs)).await.unwrap();
        assert_eq!(again, first);
        assert_eq!(sm.digest().unwrap(), digest);
        // New entries after the replay are judged against the current store.
        let more = sm.apply(entries(8, &[req("b", Expected::Exact(0), 1)])).await.unwrap();
        assert!(matches!(more[0], AppendResponse::Appended { first_version: 1, .. }));
    });
}
