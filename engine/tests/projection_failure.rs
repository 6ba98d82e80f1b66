//! A projection whose `apply` fails or panics stops at that event with its error visible to
//! the host (status, metrics, `wait_for`), its lag keeps growing in its metrics, and neither
//! the writers nor the other projections notice; an at-least-once projection restarted with
//! fixed code resumes at the failing event. `wait_for` gives read-your-own-writes.

use std::sync::Arc;
use std::time::Duration;

use annal::fs::SimFs;
use annal::{
    BoxError, CheckpointLoad, Delivery, Error, EventCounts, ExpectedVersion, NewEvent, Projection,
    ProjectionOptions, ProjectionRunner, ProjectionStatus, RecordedEvent, Store, StoreOptions,
};

const WAIT: Duration = Duration::from_secs(20);

fn open(sim: &SimFs) -> Store {
    Store::open_with(Arc::new(sim.clone()), "/store", StoreOptions::default()).unwrap()
}

/// Fails (or panics) on the first `Poison` event, unless `fixed`.
struct Fragile {
    name: &'static str,
    panics: bool,
    fixed: bool,
    applied: Vec<u64>,
}

impl Projection for Fragile {
    fn name(&self) -> &str {
        self.name
    }
    fn version(&self) -> u32 {
        1
    }
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), BoxError> {
        if event.event_type == "Poison" && !self.fixed {
            if self.panics {
                panic!("poisoned by seq {}", event.seq);
            }
            return Err(format!("cannot handle seq {}", event.seq).into());
        }
        self.applied.push(event.seq);
        Ok(())
    }
}

fn fragile(name: &'static str, panics: bool) -> Fragile {
    Fragile { name, panics, fixed: false, applied: Vec::new() }
}

fn ev(t: &str) -> NewEvent {
    NewEvent::new(t, "d")
}

#[test]
fn failing_and_panicking_projections_stop_alone() {
    let sim = SimFs::new(5);
    let store = open(&sim);
    let runner = ProjectionRunner::new(store.clone());
    let opts = ProjectionOptions::with_delivery(Delivery::AtLeastOnce);
    let failing = runner.spawn(fragile("failing", false), opts.clone()).unwrap();
    let panicking = runner.spawn(fragile("panicking", true), opts.clone()).unwrap();
    let healthy = runner.spawn(EventCounts::new("counts"), opts.clone()).unwrap();
    for _ in 0..10 {
        store.append("a-1", ExpectedVersion::Any, &[ev("Fine")]).unwrap();
    }
    let poison = store.append("a-1", ExpectedVersion::Any, &[ev("Poison")]).unwrap().first_seq;
    // The writers go on.
    let mut last = 0;
    for _ in 0..200 {
        last = store.append("a-2", ExpectedVersion::Any, &[ev("Fine")]).unwrap().last_seq();
    }
    healthy.wait_for(last, WAIT).unwrap();
    assert_eq!(healthy.read_model().read(|v| v.total()), last + 1);
    for (h, msg) in [(&failing, "cannot handle seq 10"), (&panicking, "poisoned by seq 10")] {
        let err = h.wait_for(last, WAIT).unwrap_err();
        assert!(
            matches!(&err, Error::ProjectionFailed { seq, reason, .. }
                if *seq == poison && reason.contains(msg)),
            "{err}"
        );
        let m = h.metrics();
        assert_eq!(
            m.status,
            ProjectionStatus::Failed { seq: poison, error: m.last_error.clone().unwrap() }
        );
        assert_eq!(m.position, poison);
        assert_eq!(m.lag_events, last + 1 - poison);
        assert!(m.lag_time > Duration::ZERO || m.lag_events == 0);
        h.read_model().read(|v| assert_eq!(v.applied, (0..poison).collect::<Vec<_>>()));
    }
    // Its lag stays visible as the log grows.
    store.append("a-3", ExpectedVersion::Any, &[ev("Fine")]).unwrap();
    assert_eq!(failing.metrics().lag_events, last + 2 - poison);
    let all = runner.metrics();
    assert_eq!(all.len(), 3);
    assert!(all.iter().any(|m| m.name == "counts" && m.status == ProjectionStatus::Running));
    assert!(failing.stop().is_err());
    drop(panicking);
    // Restarted with fixed code, it resumes at the failing event (at-least-once checkpoint).
    let fixed = Fragile { fixed: true, ..fragile("failing", false) };
    let again = runner.spawn(fixed, opts).unwrap();
    assert_eq!(again.metrics().checkpoint_load, CheckpointLoad::Loaded { position: poison });
    again.wait_for(last + 1, WAIT).unwrap();
    again.read_model().read(|v| assert_eq!(v.applied, (poison..=last + 1).collect::<Vec<_>>()));
}

#[test]
fn wait_for_reads_your_own_writes() {
    let sim = SimFs::new(6);
    let store = open(&sim);
    let runner = ProjectionRunner::new(store.clone());
    let counts = runner.spawn(EventCounts::new("counts"), ProjectionOptions::default()).unwrap();
    let model = counts.read_model();
    for i in 0..100u64 {
        let r = store.append("order-1", ExpectedVersion::Exact(i.wrapping_sub(1)), &[ev("T")]);
        let r = if i == 0 {
            store.append("order-1", ExpectedVersion::NoStream, &[ev("T")]).or(r)
        } else {
            r
        };
        let seq = r.unwrap().last_seq();
        model.wait_for(seq, WAIT).unwrap();
        model.read_at(|v, position| {
            assert!(position > seq);
            assert_eq!(v.of_category("order"), position);
        });
    }
    assert!(matches!(
        model.wait_for(10_000, Duration::from_millis(10)),
        Err(Error::WaitTimedOut { .. })
    ));
    assert!(matches!(
        runner.spawn(EventCounts::new("counts"), ProjectionOptions::default()),
        Err(Error::ProjectionExists { .. })
    ));
    assert!(matches!(
        runner.spawn(EventCounts::new(""), ProjectionOptions::default()),
        Err(Error::InvalidProjectionName { .. })
    ));
    counts.stop().unwrap();
    assert!(matches!(model.wait_for(10_000, WAIT), Err(Error::ProjectionStopped { .. })));
    // Exactly-once needs a state to checkpoint.
    let stateless = fragile("stateless", false);
    let once = ProjectionOptions::with_delivery(Delivery::ExactlyOnce);
    assert!(matches!(runner.spawn(stateless, once), Err(Error::ProjectionFailed { .. })));
}
