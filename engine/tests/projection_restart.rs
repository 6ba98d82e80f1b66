//! A projection that crashes (power loss on a [`SimFs`], while it and the writers run) and
//! restarts from its checkpoint ends with the view a replay from scratch of the recovered log
//! gives; a damaged checkpoint file makes it replay from 0 with the same result; and an
//! at-least-once projection never saw an event the crash took back.
//!
//! Each proptest case is a series of epochs (process lifetimes). An epoch opens the store
//! under `Durability::Sync`, starts two projections (an exactly-once [`EventCounts`] and an
//! at-least-once sink that records every seq and event id it is given into a list that
//! survives the "process", as an external system would), checks both against the recovered
//! log, then appends random batches from a writer thread and cuts the power at a random
//! moment (`CrashMode::Random`: every unsynced write kept, dropped, torn or garbled), with the
//! projections' threads mid-flight. Sometimes a bit of the checkpoint file is flipped, or the
//! file is replaced with garbage, before the next epoch. The checks:
//! * the restarted exactly-once view equals `EventCounts` replayed from seq 0 of the
//!   recovered log (byte-equal snapshots), whether it resumed or replayed;
//! * every (seq, event id) the sink ever received is in the recovered log (subscribers only
//!   see durable events), and every event of the recovered log reached the sink.
//!
//! `ANNAL_PROJECTION_CASES` sets the number of cases (default 256).

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use annal::fs::{CrashMode, LockGuard, OpenMode, SimFs, Storage, StorageFile};
use annal::{
    BoxError, CheckpointLoad, Delivery, EventCounts, ExpectedVersion, NewEvent, Options,
    Projection, ProjectionOptions, ProjectionRunner, RecordedEvent, Store, StoreOptions,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const DIR: &str = "/store";
const COUNTS: &str = "counts";
const COUNTS_CKPT: &str = "/store/projections/counts.ckpt";
const WAIT: Duration = Duration::from_secs(20);

/// One process lifetime on the simulated machine: after `kill` every call fails, as for a
/// dead process, and a call in flight finishes before the power goes.
#[derive(Debug)]
struct Machine {
    sim: SimFs,
    dead: RwLock<bool>,
}

impl Machine {
    fn new(sim: &SimFs) -> Arc<Machine> {
        Arc::new(Machine { sim: sim.clone(), dead: RwLock::new(false) })
    }

    fn kill(&self, mode: CrashMode) {
        let mut dead = self.dead.write().unwrap();
        *dead = true;
        self.sim.crash_with(mode);
    }

    fn run<T>(&self, op: impl FnOnce(&SimFs) -> io::Result<T>) -> io::Result<T> {
        let dead = self.dead.read().unwrap();
        if *dead {
            return Err(io::Error::other("test: the machine lost power"));
        }
        op(&self.sim)
    }
}

impl Storage for Machine {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        self.run(|s| s.open(path, mode))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.run(|s| s.create_dir_all(path))
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.run(|s| s.read_dir(path))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.run(|s| s.rename(from, to))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.run(|s| s.remove_file(path))
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.run(|s| s.sync_dir(path))
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.run(|s| s.exists(path))
    }
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        self.run(|s| s.try_lock(path))
    }
}

/// An at-least-once projection with an external effect: it records what it is given in a
/// list that outlives the process. Idempotent in the sense at-least-once needs: the checks
/// dedupe by seq.
struct Sink {
    out: Arc<Mutex<Vec<(u64, uuid::Uuid)>>>,
}

impl Projection for Sink {
    fn name(&self) -> &str {
        "sink"
    }
    fn version(&self) -> u32 {
        1
    }
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), BoxError> {
        self.out.lock().unwrap().push((event.seq, event.event_id));
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Epoch {
    batches: Vec<(u8, u8, u8)>,
    /// Batches appended before the power is cut (the rest are never attempted).
    crash_after: usize,
    crash_sleep_us: u64,
    /// 0: leave the checkpoint, 1: flip a bit, 2: garbage, 3.. leave.
    damage: u8,
    damage_at: u64,
}

fn epoch() -> impl Strategy<Value = Epoch> {
    (
        prop::collection::vec((0u8..4, 1u8..4, 0u8..3), 1..60),
        any::<prop::sample::Index>(),
        0u64..3000,
        0u8..8,
        any::<u64>(),
    )
        .prop_map(|(batches, at, crash_sleep_us, damage, damage_at)| Epoch {
            crash_after: at.index(batches.len() + 1),
            batches,
            crash_sleep_us,
            damage,
            damage_at,
        })
}

/// Small segments: quick to create on the simulated disk, and rolls happen.
fn store_options() -> StoreOptions {
    let log = Options { segment_bytes: 16 << 10, max_record_bytes: 4096, ..Options::default() };
    StoreOptions { log, ..StoreOptions::default() }
}

fn options(delivery: Delivery) -> ProjectionOptions {
    ProjectionOptions {
        delivery,
        checkpoint_events: 5,
        checkpoint_interval: Duration::from_millis(2),
        batch_events: 4,
    }
}

fn scratch(store: &Store) -> EventCounts {
    let mut c = EventCounts::new(COUNTS);
    for e in store.read_all(0) {
        c.apply(&e.unwrap()).unwrap();
    }
    c
}

#[derive(Default)]
struct Tally {
    resumed: AtomicU64,
    rejected: AtomicU64,
}

fn run_case(seed: u64, epochs: &[Epoch], tally: &Tally) -> Result<(), TestCaseError> {
    let sim = SimFs::new(seed);
    let sink_out: Arc<Mutex<Vec<(u64, uuid::Uuid)>>> = Arc::default();
    for (i, ep) in epochs.iter().chain(std::iter::once(&epochs[0])).enumerate() {
        let last = i == epochs.len();
        let machine = Machine::new(&sim);
        let store = Store::open_with(machine.clone(), DIR, store_options())
            .map_err(|e| TestCaseError::fail(format!("epoch {i}: open: {e}")))?;
        let runner = ProjectionRunner::new(store.clone());
        let counts = runner
            .spawn(EventCounts::new(COUNTS), options(Delivery::ExactlyOnce))
            .map_err(|e| TestCaseError::fail(format!("spawn: {e}")))?;
        let sink = runner
            .spawn(Sink { out: Arc::clone(&sink_out) }, options(Delivery::AtLeastOnce))
            .map_err(|e| TestCaseError::fail(format!("spawn: {e}")))?;
        match counts.metrics().checkpoint_load {
            CheckpointLoad::Loaded { position } if position > 0 => {
                tally.resumed.fetch_add(1, Ordering::Relaxed);
            }
            CheckpointLoad::Rejected { .. } => {
                tally.rejected.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        // The restart against the recovered log.
        let recovered: Vec<RecordedEvent> = store.read_all(0).map(|e| e.unwrap()).collect();
        if let Some(last_event) = recovered.last() {
            counts.wait_for(last_event.seq, WAIT).unwrap();
            sink.wait_for(last_event.seq, WAIT).unwrap();
        }
        let want = scratch(&store).snapshot();
        let got = counts.read_model().read(|v| v.snapshot());
        prop_assert_eq!(
            got,
            want,
            "epoch {}: restarted view differs from a replay ({:?})",
            i,
            counts.metrics().checkpoint_load
        );
        {
            let seen = sink_out.lock().unwrap();
            for &(seq, id) in seen.iter() {
                let e = recovered.get(seq as usize);
                prop_assert!(
                    e.is_some_and(|e| e.event_id == id),
                    "epoch {}: the sink saw seq {} ({}), which the crash took back",
                    i,
                    seq,
                    id
                );
            }
            let mut delivered: Vec<u64> = seen.iter().map(|s| s.0).collect();
            delivered.sort_unstable();
            delivered.dedup();
            prop_assert_eq!(delivered.len(), recovered.len(), "epoch {}: sink missed events", i);
        }
        if last {
            drop((counts, sink));
            store.close().unwrap();
            break;
        }
        // The workload, and the power cut while it and the projections run.
        let writer = {
            let store = store.clone();
            let ep = ep.clone();
            std::thread::spawn(move || {
                for &(stream, n, ty) in &ep.batches[..ep.crash_after] {
                    let events: Vec<NewEvent> = (0..n)
                        .map(|k| NewEvent::new(["Placed", "Paid", "Shipped"][ty as usize], vec![k]))
                        .collect();
                    let stream = ["order-1", "order-2", "user-1", "misc"][stream as usize];
                    if store.append(stream, ExpectedVersion::Any, &events).is_err() {
                        return;
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_micros(ep.crash_sleep_us));
        machine.kill(CrashMode::Random);
        writer.join().unwrap();
        drop((counts, sink, runner));
        drop(store);
        match ep.damage {
            1 => {
                if let Some(b) = sim.durable_bytes(COUNTS_CKPT).filter(|b| !b.is_empty()) {
                    let at = ep.damage_at % (b.len() as u64 * 8);
                    sim.flip_bit(COUNTS_CKPT, at / 8, (at % 8) as u8).unwrap();
                }
            }
            2 if sim.durable_bytes(COUNTS_CKPT).is_some() => {
                sim.write_file_raw(COUNTS_CKPT, &ep.damage_at.to_le_bytes()).unwrap();
            }
            _ => {}
        }
    }
    Ok(())
}

#[test]
fn crash_and_restart_equals_a_replay_from_scratch() {
    let cases =
        std::env::var("ANNAL_PROJECTION_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let mut runner = TestRunner::new(Config { cases, ..Config::default() });
    let tally = Tally::default();
    runner
        .run(&(any::<u64>(), prop::collection::vec(epoch(), 1..5)), |(seed, epochs)| {
            run_case(seed, &epochs, &tally)
        })
        .unwrap();
    eprintln!(
        "resumed from a checkpoint {} times, rejected a damaged one {} times",
        tally.resumed.load(Ordering::Relaxed),
        tally.rejected.load(Ordering::Relaxed)
    );
    if cases >= 16 {
        assert!(tally.resumed.load(Ordering::Relaxed) > 0, "no case resumed from a checkpoint");
    }
}
