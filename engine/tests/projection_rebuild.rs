//! Replay -> rebuild -> verify -> swap: a rebuild running while writers append and queries
//! read ends with a view equal to the live one (and to a replay from scratch) and swaps it
//! in; a rebuild whose view differs keeps the old view and reports the difference; a shadow
//! rebuild of a new version with changed code swaps in after a user check, and its version
//! is what the checkpoint then carries.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use annal::fs::SimFs;
use annal::{
    BoxError, CheckpointLoad, Delivery, EventCounts, ExpectedVersion, NewEvent, Projection,
    ProjectionOptions, ProjectionRunner, RebuildOutcome, RecordedEvent, Store, StoreOptions,
    Verify,
};

const WAIT: Duration = Duration::from_secs(20);

fn open(sim: &SimFs) -> Store {
    Store::open_with(Arc::new(sim.clone()), "/store", StoreOptions::default()).unwrap()
}

fn append(store: &Store, i: u64) -> u64 {
    let ty = ["Placed", "Paid", "Shipped"][(i % 3) as usize];
    let stream = format!("order-{}", i % 7);
    let r = store.append(&stream, ExpectedVersion::Any, &[NewEvent::new(ty, "d")]).unwrap();
    r.last_seq()
}

fn scratch_until(store: &Store, end: u64) -> EventCounts {
    let mut c = EventCounts::new("counts");
    for e in store.read_all(0) {
        let e = e.unwrap();
        if e.seq >= end {
            break;
        }
        c.apply(&e).unwrap();
    }
    c
}

/// Starts a writer thread appending until `stop` is set.
fn writer(store: &Store, stop: &Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    let store = store.clone();
    let stop = Arc::clone(stop);
    thread::spawn(move || {
        let mut i = 0;
        while !stop.load(Ordering::Acquire) {
            append(&store, i);
            i += 1;
        }
        i
    })
}

#[test]
fn rebuild_equals_live_and_swaps_while_writers_and_queries_run() {
    let sim = SimFs::new(1);
    let store = open(&sim);
    for i in 0..2_000 {
        append(&store, i);
    }
    let runner = ProjectionRunner::new(store.clone());
    let live = runner.spawn(EventCounts::new("counts"), ProjectionOptions::default()).unwrap();
    let model = live.read_model();
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(&store, &stop);
    let rebuild = live.rebuild(0, EventCounts::new("counts"), Verify::Digest).unwrap();
    // Queries keep being served, consistently with their position, during the rebuild.
    let mut queries = 0;
    let outcome = loop {
        model.read_at(|v, position| {
            assert_eq!(v.total(), position, "a query saw a view and a position that disagree");
        });
        queries += 1;
        if let Some(o) = rebuild.wait_timeout(Duration::from_millis(1)) {
            break o;
        }
    };
    stop.store(true, Ordering::Release);
    w.join().unwrap();
    let RebuildOutcome::Swapped { position, replayed, .. } = outcome else {
        panic!("rebuild did not swap: {outcome:?}");
    };
    assert!(position >= 2_000 && replayed >= 2_000, "{position} {replayed}");
    assert!(queries > 0);
    let head = store.log().visible_end();
    model.wait_for(head - 1, WAIT).unwrap();
    let want = scratch_until(&store, head);
    model.read(|v| assert_eq!(v, &want, "the swapped-in view differs from a replay"));
    live.stop().unwrap();
}

/// Counts like `EventCounts`, but version 2 has a bug: it counts `Paid` twice.
struct Buggy {
    inner: EventCounts,
    version: u32,
}

impl Projection for Buggy {
    fn name(&self) -> &str {
        "counts"
    }
    fn version(&self) -> u32 {
        self.version
    }
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), BoxError> {
        self.inner.apply(event)?;
        if self.version == 2 && event.event_type == "Paid" {
            self.inner.apply(event)?;
        }
        Ok(())
    }
    fn snapshot(&self) -> Option<Vec<u8>> {
        self.inner.snapshot()
    }
    fn restore(&mut self, state: &[u8]) -> Result<(), BoxError> {
        self.inner.restore(state)
    }
}

fn buggy(version: u32) -> Buggy {
    Buggy { inner: EventCounts::new("counts"), version }
}

#[test]
fn a_mismatching_rebuild_keeps_the_old_view_and_reports_the_difference() {
    let sim = SimFs::new(2);
    let store = open(&sim);
    for i in 0..500 {
        append(&store, i);
    }
    let runner = ProjectionRunner::new(store.clone());
    let live = runner.spawn(buggy(1), ProjectionOptions::default()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(&store, &stop);
    let outcome = live.rebuild(0, buggy(2), Verify::Digest).unwrap().wait();
    stop.store(true, Ordering::Release);
    w.join().unwrap();
    let RebuildOutcome::Mismatch { position, difference } = outcome else {
        panic!("a different view was not reported: {outcome:?}");
    };
    assert!(position >= 500);
    assert!(difference.contains("digest"), "{difference}");
    // The old view serves on, and keeps up.
    let head = store.log().visible_end();
    live.wait_for(head - 1, WAIT).unwrap();
    assert_eq!(live.metrics().version, 1);
    let want = scratch_until(&store, head);
    live.read_model().read(|v| assert_eq!(v.inner, want));
    // A user check says what differed.
    let check = Verify::Check(Box::new(|old: &Buggy, new: &Buggy| {
        let (a, b) = (old.inner.of_type("Paid"), new.inner.of_type("Paid"));
        if a == b { Ok(()) } else { Err(format!("Paid: live {a}, rebuilt {b}")) }
    }));
    let outcome = live.rebuild(0, buggy(2), check).unwrap().wait();
    let named = |d: &String| d.starts_with("Paid");
    assert!(
        matches!(&outcome, RebuildOutcome::Mismatch { difference, .. } if named(difference)),
        "{outcome:?}"
    );
    assert_eq!(live.metrics().version, 1);
}

#[test]
fn a_shadow_rebuild_of_a_new_version_swaps_in_after_a_user_check() {
    let sim = SimFs::new(3);
    let store = open(&sim);
    for i in 0..300 {
        append(&store, i);
    }
    let opts = ProjectionOptions::with_delivery(Delivery::ExactlyOnce);
    let runner = ProjectionRunner::new(store.clone());
    let live = runner.spawn(buggy(1), opts.clone()).unwrap();
    live.wait_for(299, WAIT).unwrap();
    // Version 2 counts `Paid` twice on purpose; the check knows the rest must agree.
    let check = Verify::Check(Box::new(|old: &Buggy, new: &Buggy| {
        let paid = old.inner.of_type("Paid");
        if new.inner.of_type("Paid") == 2 * paid && new.inner.total() == old.inner.total() + paid {
            Ok(())
        } else {
            Err("the new version disagrees beyond its intended change".into())
        }
    }));
    let outcome = live.rebuild(0, buggy(2), check).unwrap().wait();
    assert!(matches!(outcome, RebuildOutcome::Swapped { .. }), "{outcome:?}");
    assert_eq!(live.metrics().version, 2);
    for i in 300..400 {
        append(&store, i);
    }
    live.wait_for(399, WAIT).unwrap();
    let paid = scratch_until(&store, 400).of_type("Paid");
    live.read_model().read(|v| assert_eq!(v.inner.of_type("Paid"), 2 * paid));
    live.stop().unwrap();
    drop(runner);
    store.close().unwrap();
    // The checkpoint now carries version 2: version 2 resumes, version 1 starts over.
    let store = open(&sim);
    let runner = ProjectionRunner::new(store.clone());
    let v2 = runner.spawn(buggy(2), opts.clone()).unwrap();
    assert_eq!(v2.metrics().checkpoint_load, CheckpointLoad::Loaded { position: 400 });
    v2.stop().unwrap();
    let v1 = runner.spawn(buggy(1), opts).unwrap();
    assert_eq!(v1.metrics().checkpoint_load, CheckpointLoad::VersionChanged { found: 2 });
    v1.wait_for(399, WAIT).unwrap();
    v1.read_model().read(|v| assert_eq!(v.inner.of_type("Paid"), paid));
}

#[test]
fn a_rebuild_from_a_later_seq_continues_a_given_state() {
    let sim = SimFs::new(4);
    let store = open(&sim);
    for i in 0..400 {
        append(&store, i);
    }
    let runner = ProjectionRunner::new(store.clone());
    let live = runner.spawn(EventCounts::new("counts"), ProjectionOptions::default()).unwrap();
    // The state as of seq 250 (as a snapshot would give it), rebuilt from there.
    let from = scratch_until(&store, 250);
    let outcome = live.rebuild(250, from, Verify::Digest).unwrap().wait();
    let RebuildOutcome::Swapped { replayed, .. } = outcome else { panic!("{outcome:?}") };
    assert_eq!(replayed, 150);
}
