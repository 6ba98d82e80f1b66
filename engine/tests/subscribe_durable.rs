//! Subscribers never see an event that is not durable under the durable policies: not under
//! `Batched` before the fsync that covers it, not when that fsync fails, and not across a
//! crash; every event they were given survives the crash.

use std::sync::Arc;
use std::time::Duration;

use annal::fs::{CrashMode, SimFs};
use annal::{Durability, ExpectedVersion, NewEvent, Options, Store, StoreOptions};

fn open(sim: &SimFs, durability: Durability) -> Store {
    let opts =
        StoreOptions { log: Options { durability, ..Options::default() }, ..Default::default() };
    Store::open_with(Arc::new(sim.clone()), "/store", opts).unwrap()
}

fn ev() -> NewEvent {
    NewEvent::new("T", "d")
}

#[test]
fn batched_events_reach_subscribers_only_once_synced() {
    let sim = SimFs::new(1);
    let lazy = Durability::Batched { max_delay: Duration::from_secs(3600), max_bytes: u64::MAX };
    let store = open(&sim, lazy);
    let mut sub = store.subscribe(0);
    let r = store.append("a-1", ExpectedVersion::Any, &[ev(), ev()]).unwrap();
    assert_eq!(r.last_seq(), 1);
    assert_eq!(sub.next_timeout(Duration::from_millis(50)).unwrap(), None, "not yet durable");
    store.log().sync().unwrap();
    let got: Vec<u64> = (0..2).map(|_| sub.recv().unwrap().seq).collect();
    assert_eq!(got, vec![0, 1]);
    assert!(store.log().durable_head() >= Some(1));
}

#[test]
fn a_failed_fsync_hides_its_events_from_subscribers_and_the_crash_keeps_what_they_saw() {
    for k in 0..12 {
        let sim = SimFs::new(100 + k);
        let store = open(&sim, Durability::Sync);
        let mut sub = store.subscribe(0);
        let mut delivered = Vec::new();
        sim.fail_sync_at(k);
        for _ in 0..20 {
            if store.append("a-1", ExpectedVersion::Any, &[ev()]).is_err() {
                break;
            }
            while let Some(e) = sub.try_next().unwrap() {
                let durable = store.log().durable_head().map_or(0, |d| d + 1);
                assert!(e.seq < durable, "k={k}: seq {} delivered, durable end {durable}", e.seq);
                delivered.push((e.seq, e.event_id));
            }
        }
        assert!(store.log().stats().records < 20, "k={k}: the fsync failure never hit");
        while let Some(e) = sub.try_next().unwrap() {
            delivered.push((e.seq, e.event_id));
        }
        drop(sub);
        sim.crash_with(CrashMode::DropAll);
        drop(store);
        let store = open(&sim, Durability::Sync);
        let recovered: Vec<_> = store.read_all(0).map(|e| e.unwrap()).collect();
        for (seq, id) in &delivered {
            let e = recovered.get(*seq as usize);
            assert!(e.is_some_and(|e| e.event_id == *id), "k={k}: delivered seq {seq} was lost");
        }
        assert_eq!(delivered.len(), recovered.len(), "k={k}: durable events not delivered");
    }
}
