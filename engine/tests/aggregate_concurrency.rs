//! Concurrent `Repository::execute` on one aggregate from 8 threads loses no update: every
//! successful command's event is in the stream exactly once, and the loaded state equals
//! the sum of all of them.

mod support;

use std::sync::Arc;

use annal::{Durability, Options, Repository, RepositoryOptions, Store, StoreOptions};
use support::{Account, Cmd};

const THREADS: u64 = 8;
const PER_THREAD: u64 = 40;

fn run(durability: Durability, snapshot_every: Option<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        log: Options { durability, ..Options::default() },
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), opts).unwrap();
    let repo_opts =
        RepositoryOptions { max_retries: 10_000, snapshot_every, ..RepositoryOptions::default() };
    let repo: Repository<Account> = Repository::new(store, repo_opts).unwrap();
    repo.execute("1", &Cmd::Open).unwrap();
    let barrier = Arc::new(std::sync::Barrier::new(THREADS as usize));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let repo = repo.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let mut retries = 0;
                for i in 0..PER_THREAD {
                    // Distinct amounts: the final balance proves which updates landed.
                    let amount = 1 + t * PER_THREAD + i;
                    let done = repo.execute("1", &Cmd::Deposit(amount)).unwrap();
                    retries += done.attempts - 1;
                }
                retries
            })
        })
        .collect();
    let retries: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let n = THREADS * PER_THREAD;
    let expected_balance = n * (n + 1) / 2;
    repo.flush_snapshots();
    let loaded = repo.load("1").unwrap();
    let replayed = repo.replay("1").unwrap();
    assert_eq!(loaded.state, replayed.state);
    assert_eq!(loaded.state.balance, expected_balance, "an update was lost");
    assert_eq!(loaded.version, Some(n), "open + {n} deposits");
    assert_eq!(loaded.state.events, n + 1);
    println!("{durability:?}: {retries} retries over {n} commands; snapshot {:?}", loaded.snapshot);
}

#[test]
fn eight_threads_on_one_aggregate_lose_no_update() {
    run(Durability::Sync, Some(25));
}

#[test]
fn eight_threads_without_fsync_wait_lose_no_update() {
    run(Durability::None, None);
}
