//! Optimistic concurrency: in every round, of many racers appending to one stream with the
//! same `Exact(v)`, exactly one wins and every other gets `WrongExpectedVersion` naming the
//! winner's version; stream versions stay dense and appends to other streams are unaffected.

use std::sync::{Arc, Barrier};

use annal::{Error, ExpectedVersion, NewEvent, Store, StoreOptions};

#[test]
fn exactly_one_racer_wins_each_round() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    const RACERS: usize = 8;
    const ROUNDS: u64 = 40;
    let barrier = Arc::new(Barrier::new(RACERS));
    let handles: Vec<_> = (0..RACERS)
        .map(|t| {
            let store = store.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut wins = Vec::new();
                for round in 0..ROUNDS {
                    barrier.wait();
                    let expected = if round == 0 {
                        ExpectedVersion::NoStream
                    } else {
                        ExpectedVersion::Exact(round - 1)
                    };
                    let ev = NewEvent::new("Raced", format!("{t}/{round}"));
                    match store.append("race-1", expected, &[ev]) {
                        Ok(r) => {
                            assert_eq!(r.first_version, round);
                            wins.push(round);
                        }
                        Err(Error::WrongExpectedVersion { actual, .. }) => {
                            assert_eq!(actual, Some(round), "loser must see the winner");
                        }
                        Err(e) => panic!("unexpected error {e}"),
                    }
                    // Unrelated stream: always succeeds, shares group commits.
                    store
                        .append(
                            &format!("own-{t}"),
                            ExpectedVersion::Any,
                            &[NewEvent::new("Own", "x")],
                        )
                        .unwrap();
                    barrier.wait();
                }
                wins
            })
        })
        .collect();
    let mut all_wins: Vec<u64> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    all_wins.sort_unstable();
    assert_eq!(all_wins, (0..ROUNDS).collect::<Vec<_>>(), "exactly one winner per round");
    assert_eq!(store.stream_version("race-1"), Some(ROUNDS - 1));
    let events = store.read_stream("race-1", 0, annal::Direction::Forward, usize::MAX).unwrap();
    assert_eq!(
        events.iter().map(|e| e.version).collect::<Vec<_>>(),
        (0..ROUNDS).collect::<Vec<_>>()
    );
    for t in 0..RACERS {
        assert_eq!(store.stream_version(&format!("own-{t}")), Some(ROUNDS - 1));
    }
    assert!(store.log().stats().fsyncs < store.log().stats().appends, "{:?}", store.log().stats());
}
