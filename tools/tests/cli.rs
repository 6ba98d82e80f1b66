//! Property: the `annal` binary does what its help says on real stores — `demo` works on a
//! fresh directory and again on the store it left; `verify` and `stat` report a store's state
//! and exit 0 (ok), 1 (problems, or no store), 2 (usage) or 3 (locked) for healthy, torn,
//! corrupted, missing and locked stores; nothing read from disk reaches the terminal
//! unescaped.

use std::path::Path;
use std::process::{Command, Output};

use annal::{Log, Options};
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

#[test]
fn demo_runs_on_a_fresh_dir_and_again_on_its_own_store() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let args = ["demo", "--threads", "2", "--events", "150"];
    let first = annal(&args, Some(&dir));
    let text = stdout(&first);
    assert!(first.status.success(), "{text}\n{}", String::from_utf8_lossy(&first.stderr));
    assert!(text.contains("new store"), "{text}");
    assert!(text.contains("appends       300 in"), "{text}");
    assert!(text.contains("replay        300 records"), "{text}");
    assert!(text.contains("reopen        clean"), "{text}");

    let second = annal(&args, Some(&dir));
    let text = stdout(&second);
    assert!(second.status.success(), "{text}");
    assert!(text.contains("existing store with 300 records"), "{text}");
    assert!(text.contains("replay        600 records"), "{text}");
    assert!(text.contains("next seq 600"), "{text}");

    // Independently of the tool: the library reads back every record, distinct per run.
    let log = open_writer(&dir, Options::default());
    let all: Vec<_> = log.cursor(0).map(|r| r.unwrap().payload).collect();
    assert_eq!(all.len(), 600);
    let runs = all.iter().filter(|p| p.ends_with(b"\"run\":300}")).count();
    assert_eq!(runs, 300, "the second run's events carry its first seq");
    drop(log);

    let v = annal(&["verify", "--json"], Some(&dir));
    assert_eq!(v.status.code(), Some(0), "{}", stdout(&v));
    let report = json(&v);
    assert_eq!(report["verdict"], "ok");
    assert_eq!(report["records"], 600);
    assert_eq!(report["next_seq"], 600);
    assert_eq!(report["clean_shutdown"], true);
    assert_eq!(report["findings"].as_array().unwrap().len(), 0);

    let s = annal(&["stat"], Some(&dir));
    assert_eq!(s.status.code(), Some(0));
    let text = stdout(&s);
    assert!(text.contains("next seq       600") && text.contains("durable head   599"), "{text}");
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
    assert!(annal(&["demo", "--events", "1"], Some(&dir)).status.code() == Some(3));
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
