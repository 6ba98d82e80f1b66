//! Snapshot + tail equals a full replay, always: random command sequences on a few accounts,
//! interleaved with snapshot damage (bit flips, truncation, zeros, another account's file,
//! a snapshot relabelled to another version, ahead of the log or inside it), power loss in
//! every crash mode, and crashes in the middle of a snapshot write (a failed fsync of the log
//! or of the snapshot, then power loss), on the simulated file system. After every step each
//! account's `load` equals its `replay` and never fails; under `Durability::Sync` both also
//! equal a model of the acknowledged commands.
//!
//! Cases: `ANNAL_SNAPSHOT_CASES` (default 256).

mod support;

use std::sync::Arc;

use annal::format::SnapshotFile;
use annal::fs::{CrashMode, SimFs, Storage};
use annal::{
    Aggregate, Durability, Options, Repository, RepositoryOptions, SnapshotUse, Store, StoreOptions,
};
use proptest::prelude::*;
use support::{Account, Cmd};

const ACCOUNTS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Exec {
        acct: usize,
        cmd: Cmd,
    },
    Damage {
        acct: usize,
        kind: u8,
        at: u32,
    },
    Crash(CrashMode),
    /// Fails the `k`-th next fsync (the log's, or the snapshot file's or directory's) during
    /// a command and its snapshot, then loses power.
    FailSyncThenCrash {
        acct: usize,
        k: u64,
        burst: u64,
    },
}

fn cmd() -> impl Strategy<Value = Cmd> {
    prop_oneof![
        1 => Just(Cmd::Open),
        4 => (1u64..100).prop_map(Cmd::Deposit),
        2 => (1u64..150).prop_map(Cmd::Withdraw),
        2 => (1u64..9).prop_map(Cmd::Burst),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0..ACCOUNTS, cmd()).prop_map(|(acct, cmd)| Op::Exec { acct, cmd }),
        3 => (0..ACCOUNTS, 0u8..6, any::<u32>())
            .prop_map(|(acct, kind, at)| Op::Damage { acct, kind, at }),
        1 => prop_oneof![
            Just(CrashMode::Random),
            Just(CrashMode::KeepAll),
            Just(CrashMode::DropAll)
        ]
        .prop_map(Op::Crash),
        1 => (0..ACCOUNTS, 0u64..4, 1u64..9)
            .prop_map(|(acct, k, burst)| Op::FailSyncThenCrash { acct, k, burst }),
    ]
}

struct World {
    sim: SimFs,
    storage: Arc<dyn Storage>,
    durability: Durability,
    every: u64,
    /// `RepositoryOptions::cache_capacity`: 0 (every execute loads), 1 (constant eviction
    /// with three accounts) or the default.
    cache: usize,
    repo: Repository<Account>,
    /// The state of the acknowledged commands, per account (checked under `Sync`).
    model: Vec<Account>,
    /// Loads that used a snapshot, that rejected one, and commands that failed on a fault.
    used: u64,
    rejected: u64,
    failed: u64,
}

impl World {
    fn open(sim: &SimFs, durability: Durability, every: u64, cache: usize) -> Repository<Account> {
        let storage: Arc<dyn Storage> = Arc::new(sim.clone());
        let opts = StoreOptions {
            log: Options {
                durability,
                segment_bytes: 16 << 10,
                max_record_bytes: 2 << 10,
                ..Options::default()
            },
            ..StoreOptions::default()
        };
        let store = Store::open_with(storage, "/s", opts).expect("reopen after a crash");
        let o = RepositoryOptions {
            snapshot_every: Some(every),
            cache_capacity: cache,
            ..RepositoryOptions::default()
        };
        Repository::new(store, o).unwrap()
    }

    fn crash(&mut self, mode: CrashMode) {
        self.repo.flush_snapshots();
        self.sim.crash_with(mode);
        self.sim.clear_faults();
        self.repo = World::open(&self.sim, self.durability, self.every, self.cache);
    }

    fn exec(&mut self, acct: usize, cmd: &Cmd) -> bool {
        let res = self.repo.execute(&acct.to_string(), cmd);
        self.repo.flush_snapshots();
        match res {
            Ok(done) => {
                for e in &done.events {
                    self.model[acct].apply(e);
                }
                // The state execute decided on (from its cache, a snapshot or a replay) is
                // the fold of the stream.
                let replayed = self.repo.replay(&acct.to_string()).unwrap();
                assert_eq!(done.state, replayed.state, "execute's state");
                assert_eq!(done.version, replayed.version);
                true
            }
            Err(annal::ExecuteError::Rejected(_)) => true,
            Err(_) => false,
        }
    }

    fn snapshot_path(&self, acct: usize) -> std::path::PathBuf {
        self.repo.snapshots().path_for(&self.repo.stream_id(&acct.to_string()))
    }

    fn damage(&mut self, acct: usize, kind: u8, at: u32) {
        let path = self.snapshot_path(acct);
        let current = self.sim.current_bytes(&path);
        let bytes = match (kind, current) {
            (0, Some(mut b)) if !b.is_empty() => {
                let i = at as usize % (b.len() * 8);
                b[i / 8] ^= 1 << (i % 8);
                b
            }
            (1, Some(b)) => b[..at as usize % (b.len() + 1)].to_vec(),
            (2, _) => {
                let other = self.snapshot_path((acct + 1) % ACCOUNTS);
                match self.sim.current_bytes(other) {
                    Some(b) => b,
                    None => return,
                }
            }
            (3, Some(b)) => match SnapshotFile::decode(&b) {
                Ok(mut f) => {
                    // Another version, within the log or beyond it, with the same anchor.
                    let v = u64::from(at) % (f.stream_version + 6);
                    f.stream_version = if v == f.stream_version { v + 1 } else { v };
                    f.encode().unwrap()
                }
                Err(_) => return,
            },
            (4, Some(b)) => vec![0; b.len()],
            (5, None) => (0..at % 300).map(|i| (i * 7 + at) as u8).collect(),
            _ => return,
        };
        self.sim.write_file_raw(&path, &bytes).unwrap();
    }

    fn check(&mut self) {
        for acct in 0..ACCOUNTS {
            let id = acct.to_string();
            let loaded = self.repo.load(&id).expect("load never fails on a bad snapshot");
            let replayed = self.repo.replay(&id).unwrap();
            assert_eq!(loaded.state, replayed.state, "account {id}: {:?}", loaded.snapshot);
            assert_eq!(loaded.version, replayed.version);
            match &loaded.snapshot {
                SnapshotUse::Rejected(r) => {
                    assert!(r.moved_to.is_some(), "{r:?}");
                    self.rejected += 1;
                }
                SnapshotUse::Used { .. } => self.used += 1,
                SnapshotUse::None => {}
            }
            if self.durability == Durability::Sync {
                assert_eq!(loaded.state, self.model[acct], "account {id}: acked commands");
            }
        }
    }
}

/// Runs `ops`; returns (loads from a snapshot, snapshots rejected, commands failed).
fn run(seed: u64, durability: Durability, every: u64, ops: Vec<Op>) -> (u64, u64, u64) {
    let sim = SimFs::new(seed);
    let cache = [0, 1, 10_000][(seed % 3) as usize];
    let repo = World::open(&sim, durability, every, cache);
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let model = vec![Account::default(); ACCOUNTS];
    let mut w = World {
        sim,
        storage,
        durability,
        every,
        cache,
        repo,
        model,
        used: 0,
        rejected: 0,
        failed: 0,
    };
    let _ = &w.storage;
    for op in ops {
        match op {
            Op::Exec { acct, cmd } => {
                assert!(w.exec(acct, &cmd), "an execute failed without a fault");
            }
            Op::Damage { acct, kind, at } => w.damage(acct, kind, at),
            Op::Crash(mode) => {
                w.crash(mode);
                if durability != Durability::Sync {
                    w.model = (0..ACCOUNTS)
                        .map(|a| w.repo.replay(&a.to_string()).unwrap().state)
                        .collect();
                }
            }
            Op::FailSyncThenCrash { acct, k, burst } => {
                w.sim.fail_sync_at(k);
                let before = w.model[acct].clone();
                let ok = w.exec(acct, &Cmd::Burst(burst));
                w.failed += u64::from(!ok);
                w.crash(CrashMode::Random);
                let after = w.repo.replay(&acct.to_string()).unwrap().state;
                if ok {
                    // Acknowledged: it must have survived (under Sync).
                } else {
                    // Failed: all of its events or none (an append is atomic), never part.
                    let mut all = before.clone();
                    for e in Account::handle(&before, &Cmd::Burst(burst)).unwrap_or_default() {
                        all.apply(&e);
                    }
                    assert!(after == before || after == all, "partial append survived");
                    w.model[acct] = after;
                }
                if durability != Durability::Sync {
                    w.model = (0..ACCOUNTS)
                        .map(|a| w.repo.replay(&a.to_string()).unwrap().state)
                        .collect();
                }
            }
        }
        w.check();
    }
    (w.used, w.rejected, w.failed)
}

fn cases() -> u32 {
    std::env::var("ANNAL_SNAPSHOT_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn snapshot_plus_tail_equals_full_replay(
        seed in any::<u64>(),
        sync in any::<bool>(),
        every in 1u64..6,
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let durability = if sync { Durability::Sync } else { Durability::None };
        run(seed, durability, every, ops);
    }
}

/// The same property on a fixed long run, so every kind of step surely happens.
#[test]
fn long_fixed_run() {
    let mut ops = Vec::new();
    for round in 0..12u32 {
        for acct in 0..ACCOUNTS {
            ops.push(Op::Exec { acct, cmd: Cmd::Open });
            ops.push(Op::Exec { acct, cmd: Cmd::Burst(3 + u64::from(round)) });
            ops.push(Op::Exec { acct, cmd: Cmd::Withdraw(2) });
            ops.push(Op::Damage { acct, kind: (round % 6) as u8, at: round * 977 });
            ops.push(Op::Exec { acct, cmd: Cmd::Deposit(5) });
        }
        ops.push(Op::FailSyncThenCrash {
            acct: round as usize % ACCOUNTS,
            k: u64::from(round % 4),
            burst: 4,
        });
        ops.push(Op::Crash(
            [CrashMode::Random, CrashMode::KeepAll, CrashMode::DropAll][round as usize % 3],
        ));
    }
    let runs = [(0, Durability::Sync, 3), (1, Durability::None, 2), (2, Durability::Sync, 4)];
    for (seed, durability, every) in runs {
        let (used, rejected, failed) = run(seed, durability, every, ops.clone());
        println!(
            "{durability:?}: {used} loads from snapshots, {rejected} rejected, {failed} failed"
        );
        let faults_hit = failed > 2 || durability != Durability::Sync;
        assert!(used > 50 && rejected > 10 && faults_hit, "{used} {rejected} {failed}");
    }
}
