//! Under `Durability::Batched` a background flusher makes appends durable within about
//! `max_delay` without a `sync()` call, and its thread ends with its log (at close or when the
//! last handle is dropped) instead of lingering for another `max_delay`.

use std::time::{Duration, Instant};

use annal::{Durability, Log, Options};

fn flusher_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|name| name.trim() == "annal-flusher")
                .count()
        })
        .unwrap_or(0)
}

fn batched(max_delay: Duration) -> Options {
    Options {
        durability: Durability::Batched { max_delay, max_bytes: 1 << 30 },
        ..Options::default()
    }
}

/// Polls `cond` for up to 10 s (a bound, not a timing assertion: it only fails if the
/// condition never comes true).
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

#[test]
fn flusher_syncs_in_the_background_and_ends_with_its_log() {
    if !std::path::Path::new("/proc/self/task").exists() {
        eprintln!("skipped: /proc/self/task is not available to count threads");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("a"), batched(Duration::from_millis(20))).unwrap();
    let a = log.append(&[b"x"]).unwrap();
    assert!(eventually(|| log.durable_head() == Some(a.first)), "flusher never synced");
    assert_eq!(log.visible_end(), a.first + 1);
    // A new thread names itself once it runs: wait for it rather than race it.
    assert!(eventually(|| flusher_threads() == 1));

    // A long delay must not keep threads alive after their logs are gone.
    let long = batched(Duration::from_secs(600));
    let closed = Log::open(dir.path().join("b"), long.clone()).unwrap();
    let dropped = Log::open(dir.path().join("c"), long).unwrap();
    assert!(eventually(|| flusher_threads() == 3));
    closed.close().unwrap();
    drop(dropped);
    drop(log);
    assert!(eventually(|| flusher_threads() == 0), "{} flusher threads linger", flusher_threads());
}
