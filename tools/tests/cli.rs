//! Property: the `annal` binary does what its help says on real stores — `demo` runs the bank
//! end to end with checks that hold (and fail when a fault is injected), and refuses a
//! directory it does not own; `verify` and `stat` report a store's state
//! and exit 0 (ok), 1 (problems, or no store), 2 (usage) or 3 (locked) for healthy, torn,
//! corrupted, missing and locked stores; nothing read from disk reaches the terminal
//! unescaped.

use std::path::Path;
use std::process::{Command, Output};

use annal::{Log, Options, Store, StoreOptions};
use serde_json::Value;

fn annal(args: &[&str], dir: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_annal"));
    cmd.args(args).env_remove("ANNAL_DIR");
    if let Some(dir) = dir {
        cmd.arg("--dir").arg(dir);
    }
    cmd.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

/// Opens `dir` as the writer, retrying for up to a second while it is locked. The tests in this
/// file spawn `annal` processes concurrently; a child spawned while this process holds a store
/// lock shares the locked file until its exec closes it, so a close followed at once by a
/// reopen can find the lock still held for a moment.
fn open_writer(dir: &Path, opts: Options) -> Log {
    for _ in 0..100 {
        match Log::open(dir, opts.clone()) {
            Err(annal::Error::Locked { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            other => return other.unwrap(),
        }
    }
    panic!("{} stayed locked", dir.display());
}

/// A store of `n` single-record appends written by the library, cleanly closed.
fn store(dir: &Path, n: usize) {
    let opts = Options { preallocate: false, ..Options::default() };
    let log = open_writer(dir, opts);
    for i in 0..n {
        log.append(&[format!("payload-{i:04}-{}", "x".repeat(40))]).unwrap();
    }
    log.close().unwrap();
}

fn segment_file(dir: &Path) -> std::path::PathBuf {
    dir.join("segments").join(format!("{:020}.seg", 0))
}

/// A small demo run: quick, still contended (4 threads on 40 accounts, 8 of them hot), and
/// with hot accounts past the 50 events at which a snapshot is taken.
const DEMO: [&str; 7] = ["demo", "--threads", "4", "--accounts", "40", "--commands", "300"];

/// The amounts in the conservation table the demo prints after `after` (in order: read model
/// total, sum of its balances, sum of the aggregates' balances, opening + deposits -
/// withdrawals).
fn conservation_rows(text: &str, after: &str) -> Vec<u64> {
    let from = text.find(after).unwrap_or_else(|| panic!("no {after:?} in {text}"));
    let table = &text[from..];
    let start = table.find("money conservation:").unwrap();
    table[start..]
        .lines()
        .skip(1)
        .take(4)
        .map(|l| l.split_whitespace().last().unwrap().replace(',', "").parse().unwrap())
        .collect()
}

/// Money in the store's account events, computed here from the raw events (not by the demo).
fn money_in_events(dir: &Path) -> u64 {
    let store = Store::open(dir, StoreOptions::default()).unwrap();
    let mut total = 0i64;
    for e in store.read_all(0) {
        let e = e.unwrap();
        if !e.stream_id.starts_with("account-") {
            continue;
        }
        let data: Value = serde_json::from_slice(&e.data).unwrap();
        let amount = data["amount"].as_i64().unwrap_or(0);
        match e.event_type.as_str() {
            "Deposited" => total += amount,
            "Withdrawn" => total -= amount,
            "Opened" => {}
            other => panic!("unexpected event type {other}"),
        }
    }
    store.close().unwrap();
    u64::try_from(total).unwrap()
}

#[test]
fn demo_runs_the_bank_end_to_end_and_verifies_its_own_store() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let first = annal(&DEMO, Some(&dir));
    let text = stdout(&first);
    assert!(first.status.success(), "{text}\n{}", String::from_utf8_lossy(&first.stderr));
    for stage in [
        "1. commands are validated against aggregates",
        "again        -> rejected: the account is open already",
        "-> rejected: insufficient funds",
        "read your write: wait_for(",
        "2. 4 threads x 300 commands",
        "optimistic concurrency: ",
        "execute latency (deposit/withdraw, until durable, retries included):\n     p50 ",
        "3. queries are served from the read model",
        "money conservation: ok",
        "4. snapshots",
        "load from its snapshot at version ",
        "5. replay: rebuild \"balances\" from seq 0",
        "verified and swapped in at seq ",
        "digests equal",
        "6. the store, as `annal inspect` shows it",
        "annal inspect ",
        "last shutdown   clean",
        "projections/balances.ckpt",
    ] {
        assert!(text.contains(stage), "missing {stage:?} in:\n{text}");
    }
    // The conservation checks print real figures: all four agree, and they are the money
    // this test finds in the events, computed without the demo.
    let before = conservation_rows(&text, "3. queries");
    let after = conservation_rows(&text, "after the swap:");
    assert_eq!(before.len(), 4, "{text}");
    assert!(before.iter().all(|&v| v == before[0]), "{before:?}");
    assert!(after.iter().all(|&v| v == after[0]), "{after:?}");
    assert!(after[0] >= before[0], "only deposits are made during the rebuild");
    assert_eq!(money_in_events(&dir), after[0], "{text}");
    // The workload contended: conflicts were retried (the hot accounts see ~300 commands
    // from 4 threads at once).
    let retries: u64 = text
        .split("optimistic concurrency: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .map(|n| n.replace(',', "").parse().unwrap())
        .unwrap();
    assert!(retries > 0, "no conflicts were retried:\n{text}");

    let v = annal(&["verify", "--json"], Some(&dir));
    assert_eq!(v.status.code(), Some(0), "{}", stdout(&v));
    let report = json(&v);
    assert_eq!(report["verdict"], "ok");
    assert_eq!(report["clean_shutdown"], true);

    // Again on the same directory: the old store is left alone, the run goes next to it.
    let files_before = std::fs::read_dir(dir.join("segments")).unwrap().count();
    let second = annal(&DEMO, Some(&dir));
    let text = stdout(&second);
    assert!(second.status.success(), "{text}\n{}", String::from_utf8_lossy(&second.stderr));
    assert!(text.contains("holds a previous demo store (left as it is); this run uses"), "{text}");
    let sub = dir.join("demo-run-2");
    assert!(text.contains(&sub.display().to_string()), "{text}");
    assert_eq!(std::fs::read_dir(dir.join("segments")).unwrap().count(), files_before);
    assert_eq!(annal(&["verify"], Some(&dir)).status.code(), Some(0));
    assert_eq!(annal(&["verify"], Some(&sub)).status.code(), Some(0));
}

#[test]
fn demo_refuses_a_directory_that_is_not_empty_or_a_demo_store() {
    let tmp = tempfile::tempdir().unwrap();
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), b"mine").unwrap();
    let held = tmp.path().join("store");
    store(&held, 3);
    for dir in [&other, &held] {
        let o = annal(&DEMO, Some(dir));
        assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("is not empty and holds no demo store"), "{err}");
    }
    assert_eq!(std::fs::read(other.join("notes.txt")).unwrap(), b"mine");
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 1, "the demo wrote into other");
    let log = open_writer(&held, Options::default());
    assert_eq!(log.recovery_report().next_seq, 3, "the demo appended to someone's store");
}

/// Runs the small demo with `fault` injected in `dir`: exit code, stdout, stderr.
fn demo_with_fault(dir: &Path, fault: &str) -> (Option<i32>, String, String) {
    let mut args = DEMO.to_vec();
    args.extend(["--inject-fault", fault]);
    let o = annal(&args, Some(dir));
    (o.status.code(), stdout(&o), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn demo_exits_1_when_its_checks_fail() {
    let tmp = tempfile::tempdir().unwrap();
    // The live projection counts one deposit twice: conservation must catch it.
    let (code, text, err) = demo_with_fault(&tmp.path().join("projection"), "projection");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("money conservation: FAILED"), "{text}");
    assert!(err.contains("money is not conserved"), "{err}");

    // The rebuilt projection is one unit off: verification must refuse the swap.
    let (code, text, err) = demo_with_fault(&tmp.path().join("rebuild"), "rebuild");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("money conservation: ok"), "{text}");
    assert!(text.contains("NOT swapped: Mismatch"), "{text}");
    assert!(err.contains("the rebuilt projection did not verify"), "{err}");
}

#[test]
fn verify_warns_of_a_torn_tail_and_repair_cuts_it_into_quarantine() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    store(dir, 20);
    // Half-written garbage after the close frame, as a crash during a write leaves it.
    let seg = segment_file(dir);
    let mut bytes = std::fs::read(&seg).unwrap();
    let clean_len = bytes.len();
    bytes.extend_from_slice(&[0xA7; 100]);
    std::fs::write(&seg, &bytes).unwrap();

    // verify: a warning, exit 0, and no byte changed.
    let v = annal(&["verify", "--json"], Some(dir));
    assert_eq!(v.status.code(), Some(0), "{}", stdout(&v));
    let report = json(&v);
    assert_eq!(report["records"], 20, "every acknowledged record is still read");
    let f = &report["findings"][0];
    assert_eq!(f["kind"], "torn_tail", "{report}");
    assert_eq!(f["severity"], "warning");
    assert_eq!(f["offset"], clean_len as u64);
    assert_eq!(std::fs::read(&seg).unwrap(), bytes);

    let r = annal(&["repair"], Some(dir));
    let text = stdout(&r);
    assert_eq!(r.status.code(), Some(0), "{text}");
    assert!(
        text.contains("did cut_tail") && text.contains("100 bytes saved to quarantine/"),
        "{text}"
    );
    let again = annal(&["verify", "--json"], Some(dir));
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(json(&again)["findings"].as_array().unwrap().len(), 0, "{}", stdout(&again));
}

#[test]
fn verify_finds_damage_to_durable_data_without_opening_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    store(dir, 20);
    let seg = segment_file(dir);
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.windows(12).position(|w| w == b"payload-0005").unwrap();
    bytes[at + 3] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();

    let v = annal(&["verify", "--json"], Some(dir));
    assert_eq!(v.status.code(), Some(1), "{}", stdout(&v));
    let report = json(&v);
    assert_eq!(report["records"], 5, "records before the damaged one are read");
    let f = &report["findings"][0];
    assert_eq!(f["kind"], "mid_log", "{report}");
    assert_eq!(f["severity"], "problem");
    assert!(f["offset"].as_u64().unwrap() < at as u64);
    assert!(f["message"].as_str().unwrap().contains("seq 5"), "{report}");
    assert_eq!(std::fs::read(&seg).unwrap(), bytes, "verify modified the store");

    // Without the index (as after a crash) a writer's open refuses the store.
    std::fs::remove_file(dir.join("segments").join(format!("{:020}.idx", 0))).unwrap();
    let s = annal(&["stat"], Some(dir));
    assert_eq!(s.status.code(), Some(1));
    assert!(stdout(&s).contains("error (corrupt)"), "{}", stdout(&s));
}

#[test]
fn locked_store_exits_3_and_missing_store_exits_1_without_creating_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("held");
    store(&dir, 3);
    let held = open_writer(&dir, Options::default());
    for cmd in ["stat", "repair"] {
        let o = annal(&[cmd, "--json"], Some(&dir));
        assert_eq!(o.status.code(), Some(3), "{cmd}: {}", stdout(&o));
        assert_eq!(json(&o)["error"]["kind"], "locked");
    }
    // verify takes no lock.
    assert_eq!(annal(&["verify"], Some(&dir)).status.code(), Some(0));
    drop(held);

    let missing = tmp.path().join("nothing-here");
    for cmd in ["verify", "stat"] {
        let o = annal(&[cmd, "--json"], Some(&missing));
        assert_eq!(o.status.code(), Some(1), "{cmd}: {}", stdout(&o));
        assert_eq!(json(&o)["error"]["kind"], "no_store");
    }
    assert!(!missing.exists(), "an inspection created a store");
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(empty.join("segments")).unwrap();
    assert_eq!(annal(&["verify"], Some(&empty)).status.code(), Some(1));
    assert!(std::fs::read_dir(empty.join("segments")).unwrap().next().is_none());
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(annal(&[], None).status.code(), Some(2));
    assert_eq!(annal(&["verify", "--bogus"], None).status.code(), Some(2));
    assert_eq!(annal(&["demo", "--threads", "0"], None).status.code(), Some(2));
    assert_eq!(annal(&["frobnicate"], None).status.code(), Some(2));
    let help = annal(&["--help"], None);
    assert_eq!(help.status.code(), Some(0));
    assert!(stdout(&help).contains("3 the store is locked"), "{}", stdout(&help));
}

#[test]
fn dir_defaults_to_annal_dir_env() {
    let tmp = tempfile::tempdir().unwrap();
    store(tmp.path(), 5);
    let o = Command::new(env!("CARGO_BIN_EXE_annal"))
        .args(["stat", "--json"])
        .env("ANNAL_DIR", tmp.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert_eq!(json(&o)["store"]["next_seq"], 5);
}

#[test]
fn control_characters_from_disk_are_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store\x1b[2J\x07\u{9b}");
    store(&dir, 3);
    // A foreign file with a hostile name in the segments directory is listed, escaped.
    std::fs::write(dir.join("segments").join("note\x1b]0;pwned\x07\n.txt"), b"").unwrap();
    for args in [&["stat"][..], &["verify"], &["stat", "--json"], &["verify", "--json"]] {
        let o = annal(args, Some(&dir));
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stdout(&o));
        let text = stdout(&o);
        let raw: Vec<char> = text.chars().filter(|c| c.is_control() && *c != '\n').collect();
        assert!(raw.is_empty(), "{args:?} printed raw control characters {raw:?}");
        assert!(text.contains("note"), "{text}");
        if args.contains(&"--json") {
            // The JSON still denotes the real names.
            let v = json(&o);
            let other = if args[0] == "stat" {
                v["store"]["other_files"][0].as_str().unwrap()
            } else {
                v["other_files"][0].as_str().unwrap()
            };
            assert!(other.ends_with("note\x1b]0;pwned\x07\n.txt"), "{other:?}");
        } else {
            assert!(text.contains("\\u{1b}]0;pwned\\u{7}\\u{a}.txt"), "{text}");
        }
    }
}

/// Every file under `dir` with its contents.
fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                out.push((p, bytes));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn read_only_inspection_changes_nothing_and_ignores_the_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    store(dir, 10);
    let seg = segment_file(dir);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[0x5C; 64]);
    std::fs::write(&seg, &bytes).unwrap();
    let before = snapshot(dir);
    let held = Log::open_read_only(dir, Options::default()).unwrap();
    for _ in 0..2 {
        let v = annal(&["verify", "--read-only", "--json"], Some(dir));
        assert_eq!(v.status.code(), Some(0), "{}", stdout(&v));
        let report = json(&v);
        assert_eq!(report["records"], 10);
        assert_eq!(report["findings"][0]["kind"], "torn_tail", "{report}");
        assert_eq!(snapshot(dir), before, "a read-only verify changed the store");
    }
    drop(held);

    // A healthy store being written by another handle: read-only stat and verify still work.
    let tmp = tempfile::tempdir().unwrap();
    store(tmp.path(), 4);
    let writer = open_writer(tmp.path(), Options::default());
    writer.append(&[b"one more"]).unwrap();
    let v = annal(&["verify", "--read-only", "--json"], Some(tmp.path()));
    assert_eq!(v.status.code(), Some(0), "{}", stdout(&v));
    assert_eq!(json(&v)["records"], 5);
    let s = annal(&["stat", "--read-only"], Some(tmp.path()));
    assert_eq!(s.status.code(), Some(0), "{}", stdout(&s));
    assert_eq!(annal(&["stat"], Some(tmp.path())).status.code(), Some(3));
}
