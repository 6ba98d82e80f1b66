//! Property: the store commands of the `annal` binary do what their help says on stores built
//! with the engine and then damaged byte by byte — `inspect` and `verify` report exactly what
//! is there (golden output) without changing a byte; `repair` copies what it changes into
//! quarantine, after which `verify` is clean and appends work; `--salvage` names the seq
//! ranges and streams it set aside; `append`/`read`/`tail` round-trip events, answer bad lines
//! with error lines, and a second writer exits 3.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use annal::{ExpectedVersion, NewEvent, Options, Store, StoreOptions};
use serde_json::Value;

fn annal(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_annal"))
        .args(args)
        .arg("--dir")
        .arg(dir)
        .env_remove("ANNAL_DIR")
        .output()
        .unwrap()
}

fn annal_stdin(args: &[&str], dir: &Path, input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_annal"))
        .args(args)
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A process that exits early (locked store) closes its stdin: that is not a failure here.
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    child.wait_with_output().unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", out(o)))
}

fn lines(o: &Output) -> Vec<Value> {
    out(o).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Opens the store in `dir`, retrying for up to a second while it is locked: a child `annal`
/// spawned by a concurrent test while this process held a store lock shares the locked file
/// until its exec closes it, so a close followed at once by a reopen can find it still held.
fn open_store(dir: &Path, opts: StoreOptions) -> Store {
    for _ in 0..100 {
        match Store::open(dir, opts.clone()) {
            Err(annal::Error::Locked { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other.unwrap(),
        }
    }
    panic!("{} stayed locked", dir.display());
}

/// `n` events round-robin over streams `order-0..streams`, one append each, in small segments
/// (4 KiB) so the store has several; cleanly closed.
fn event_store(dir: &Path, n: usize, streams: usize) {
    let log = Options {
        segment_bytes: 4096,
        max_record_bytes: 1024,
        preallocate: false,
        ..Options::default()
    };
    let store = open_store(dir, StoreOptions { log, ..StoreOptions::default() });
    for i in 0..n {
        let stream = format!("order-{}", i % streams);
        let data = format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(60));
        store.append(&stream, ExpectedVersion::Any, &[NewEvent::new("Placed", data)]).unwrap();
    }
    store.close().unwrap();
}

fn seg(dir: &Path, base: u64) -> PathBuf {
    dir.join("segments").join(format!("{base:020}.seg"))
}

fn segment_bases(dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            n.strip_suffix(".seg").and_then(|s| s.parse().ok())
        })
        .collect();
    v.sort();
    v
}

/// Every file under `dir` with its contents (the strongest "hash"), except `LOCK`, whose
/// holder writes its pid there.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut res = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.ends_with("LOCK") {
                res.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    res.sort();
    res
}

/// Output with the variable parts (directory, log id) replaced.
fn normalise(text: &str, dir: &Path) -> String {
    let mut t = text.replace(&dir.display().to_string(), "DIR");
    if let Some(i) = t.find("log id          ") {
        let start = i + "log id          ".len();
        t.replace_range(start..start + 36, "LOGID");
    }
    t
}

#[test]
fn golden_inspect_and_verify_of_a_healthy_store() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    event_store(dir, 60, 3);
    let before = snapshot(dir);
    let i = annal(&["inspect"], dir);
    assert_eq!(i.status.code(), Some(0), "{}", out(&i));
    let got = normalise(&out(&i), dir);
    let want = "\
annal inspect DIR
  log id          LOGID
  last shutdown   clean
  records         60 (next seq 60)
  segments        4
    segments/00000000000000000000.seg  base 0  19 records  3.8 KiB used of 3.8 KiB  \
     sealed  index ok, 1 entries
    segments/00000000000000000019.seg  base 19  19 records  3.8 KiB used of 3.8 KiB  \
     sealed  index ok, 1 entries
    segments/00000000000000000038.seg  base 38  19 records  3.8 KiB used of 3.8 KiB  \
     sealed  index ok, 1 entries
    segments/00000000000000000057.seg  base 57  3 records  720 B used of 720 B  \
     active (closed)  index ok, 1 entries
  streams         3 streams, 60 events
    order-0  20 events
    order-1  20 events
    order-2  20 events
  checkpoint      streams.ckpt ok, covers seqs below 60, 3 streams
  snapshots       none
  projections     none
";
    assert_eq!(got, want, "got:\n{got}");

    let v = annal(&["verify"], dir);
    assert_eq!(v.status.code(), Some(0));
    let got = normalise(&out(&v), dir);
    let want = "\
annal verify DIR
  checked 4 segment(s), 4 index file(s), 60 records (7.1 KiB of payload)
  60 events in 3 streams, every body decoded
  checkpoint agrees with the log
result: OK
";
    assert_eq!(got, want, "got:\n{got}");
    assert!(snapshot(dir) == before, "inspect or verify changed a byte");
}

#[test]
fn golden_verify_of_every_kind_of_damage_changes_no_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    event_store(dir, 60, 3);
    // A torn tail on the last segment, a forged index entry in the first, a flipped byte in
    // the checkpoint.
    let last = seg(dir, 57);
    let mut b = std::fs::read(&last).unwrap();
    let tail_at = b.len();
    b.extend_from_slice(&[0x5A; 40]);
    std::fs::write(&last, &b).unwrap();
    let idx = dir.join("segments").join(format!("{:020}.idx", 0));
    let mut ib = std::fs::read(&idx).unwrap();
    ib[64 + 8] ^= 0x08; // entry 0's offset
    // Keep the entry checksum valid so only the cross-check with the segment catches it.
    let n = u32::from_le_bytes(ib[12..16].try_into().unwrap()) as usize;
    let crc = crc32fast::hash(&ib[64..64 + 24 * n]);
    ib[56..60].copy_from_slice(&crc.to_le_bytes());
    let hcrc = crc32fast::hash(&ib[..60]);
    ib[60..64].copy_from_slice(&hcrc.to_le_bytes());
    std::fs::write(&idx, &ib).unwrap();
    let ck = dir.join("streams.ckpt");
    let mut cb = std::fs::read(&ck).unwrap();
    let last_byte = cb.len() - 1;
    cb[last_byte] ^= 0xFF;
    std::fs::write(&ck, &cb).unwrap();

    let before = snapshot(dir);
    let v = annal(&["verify"], dir);
    assert_eq!(v.status.code(), Some(1), "{}", out(&v));
    let got = normalise(&out(&v), dir);
    let want = format!(
        "\
annal verify DIR
  checked 4 segment(s), 4 index file(s), 60 records (7.1 KiB of payload)
  60 events in 3 streams, every body decoded
  checkpoint damaged
problem index_damaged: segments/00000000000000000000.idx at offset 64: index file is damaged: \
         entry 0 (seq 0, offset 72) does not match the batch at that offset
warning torn_tail: segments/00000000000000000057.seg at offset {tail_at}: torn tail: 40 bytes \
         from seq 60 are not durable and a writer's open cuts them (truncated: needed 56 bytes, \
         40 available)
problem checkpoint_damaged: streams.ckpt: stream-index checkpoint is unusable: \
         checksum mismatch: stored {}, computed {}
result: 2 problem(s) found
",
        "STORED", "COMPUTED"
    );
    // The checkpoint CRC values depend on the random ids: compare up to them.
    let (got_head, _) = got.split_once("checksum mismatch").unwrap_or_else(|| panic!("{got}"));
    let (want_head, _) = want.split_once("checksum mismatch").unwrap();
    assert_eq!(got_head, want_head, "got:\n{got}");
    assert!(got.ends_with("result: 2 problem(s) found\n"), "{got}");
    assert!(snapshot(dir) == before, "verify changed a byte");

    // The JSON names the same findings by kind, file and offset.
    let j = json(&annal(&["verify", "--json"], dir));
    let kinds: Vec<&str> =
        j["findings"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["index_damaged", "torn_tail", "checkpoint_damaged"]);
    assert_eq!(j["findings"][1]["offset"], tail_at as u64);
    assert!(snapshot(dir) == before);

    // repair fixes all three, saving the bytes; then verify is clean and appends work.
    let r = annal(&["repair", "--json"], dir);
    assert_eq!(r.status.code(), Some(0), "{}", out(&r));
    let rj = json(&r);
    let actions: Vec<&str> =
        rj["actions"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert!(actions.contains(&"cut_tail"), "{rj}");
    assert!(actions.contains(&"set_aside_index") && actions.contains(&"rebuild_index"), "{rj}");
    assert!(actions.contains(&"set_aside_checkpoint"), "{rj}");
    let q = dir.join(rj["quarantine"].as_str().unwrap());
    assert_eq!(std::fs::read(q.join("streams.ckpt")).unwrap(), cb, "checkpoint kept as it was");
    assert_eq!(std::fs::read(q.join("segments").join(format!("{:020}.idx", 0))).unwrap(), ib);
    let cut = q.join("segments").join(format!("{:020}.seg.from-{tail_at}", 57));
    assert_eq!(std::fs::read(cut).unwrap(), vec![0x5A; 40]);
    assert!(std::fs::read_to_string(q.join("REPORT.txt")).unwrap().contains("cut_tail"));
    let v = annal(&["verify", "--json"], dir);
    assert_eq!(v.status.code(), Some(0), "{}", out(&v));
    assert_eq!(json(&v)["findings"].as_array().unwrap().len(), 0, "{}", out(&v));
    let a = annal_stdin(&["append"], dir, "{\"stream\":\"order-0\",\"type\":\"T\",\"data\":1}\n");
    assert_eq!(a.status.code(), Some(0));
    assert_eq!(lines(&a)[0]["seq"], 60);
    assert_eq!(lines(&a)[0]["version"], 20);
}

#[test]
fn salvage_cuts_mid_log_damage_and_reports_what_it_set_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    event_store(dir, 60, 3);
    // Flip a byte in the data of seq 30 (in segment 19, of 0, 19, 38, 57).
    let s = seg(dir, 19);
    let mut b = std::fs::read(&s).unwrap();
    let at = b.windows(8).position(|w| w == b"{\"n\":30,").unwrap();
    b[at + 5] ^= 0x01;
    std::fs::write(&s, &b).unwrap();

    let v = annal(&["verify", "--json"], dir);
    assert_eq!(v.status.code(), Some(1));
    assert_eq!(json(&v)["findings"][0]["kind"], "mid_log", "{}", out(&v));

    // Without --salvage nothing changes.
    let before = snapshot(dir);
    let r = annal(&["repair"], dir);
    assert_eq!(r.status.code(), Some(1), "{}", out(&r));
    assert!(out(&r).contains("Rerun with --salvage"), "{}", out(&r));
    assert!(snapshot(dir) == before);
    let dry = annal(&["repair", "--salvage", "--dry-run"], dir);
    assert!(out(&dry).contains("would cut_mid_log"), "{}", out(&dry));
    assert!(snapshot(dir) == before, "a dry run changed a byte");

    let r = annal(&["repair", "--salvage", "--json"], dir);
    assert_eq!(r.status.code(), Some(0), "{}", out(&r));
    let rj = json(&r);
    let sv = &rj["salvage"];
    assert_eq!(sv["first_lost_seq"], 30, "{rj}");
    // Seq 30 does not verify; 31..60 do (the rest of segment 19, all of 38 and 57).
    assert_eq!(sv["decoded_ranges"], serde_json::json!([[31, 60]]), "{rj}");
    assert_eq!(sv["undecodable_records"], 1);
    assert_eq!(sv["streams"], serde_json::json!({"order-0": 9, "order-1": 10, "order-2": 10}));
    let moved = ["segments/00000000000000000038.seg", "segments/00000000000000000057.seg"];
    assert_eq!(sv["segments_moved"], serde_json::json!(moved));
    let text = out(&annal(&["repair", "--salvage"], dir));
    assert!(text.contains("nothing to repair"), "{text}");

    // Quarantine holds the bytes: the cut part of segment 19 and the later segments whole.
    let q = dir.join(rj["quarantine"].as_str().unwrap());
    let cut_at = sv["cut_offset"].as_u64().unwrap() as usize;
    let cut = std::fs::read(q.join("segments").join(format!("{:020}.seg.from-{cut_at}", 19)));
    assert_eq!(cut.unwrap(), b[cut_at..].to_vec());
    for base in [38, 57] {
        let moved = std::fs::read(q.join("segments").join(format!("{base:020}.seg"))).unwrap();
        assert!(moved.starts_with(b"ANNALSEG"), "segment {base} moved whole");
        assert!(!seg(dir, base).exists());
    }
    // Segment 19 keeps every byte before the cut; the closing open appended a close frame.
    let kept = std::fs::read(seg(dir, 19)).unwrap();
    assert!(kept.starts_with(&b[..cut_at]) && kept.len() < b.len());

    let v = annal(&["verify", "--json"], dir);
    assert_eq!(v.status.code(), Some(0), "{}", out(&v));
    assert_eq!(json(&v)["next_seq"], 30);
    let a = annal_stdin(&["append"], dir, "{\"stream\":\"order-0\",\"type\":\"T\",\"data\":1}\n");
    assert_eq!(a.status.code(), Some(0), "{}", String::from_utf8_lossy(&a.stderr));
    assert_eq!(lines(&a)[0]["seq"], 30);
    assert_eq!(lines(&a)[0]["version"], 10);
}

#[test]
fn repair_rebuilds_a_missing_index_and_verify_reports_a_seq_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    event_store(dir, 60, 3);
    std::fs::remove_file(dir.join("segments").join(format!("{:020}.idx", 19))).unwrap();
    let v = json(&annal(&["verify", "--json"], dir));
    assert_eq!(v["findings"][0]["kind"], "index_missing");
    assert_eq!(v["verdict"], "ok");
    let r = annal(&["repair"], dir);
    assert_eq!(r.status.code(), Some(0), "{}", out(&r));
    assert!(dir.join("segments").join(format!("{:020}.idx", 19)).exists());
    let v = json(&annal(&["verify", "--json"], dir));
    assert_eq!(v["findings"].as_array().unwrap().len(), 0, "{v}");

    // A segment that vanished in the middle is a gap: a problem, cut only by salvage.
    let gone = tmp.path().join("gone.seg");
    std::fs::rename(seg(dir, 19), &gone).unwrap();
    let v = annal(&["verify", "--json"], dir);
    assert_eq!(v.status.code(), Some(1));
    let kinds: Vec<String> = json(&v)["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(kinds.contains(&"seq_gap".to_string()), "{kinds:?}");
    let r = annal(&["repair", "--salvage", "--json"], dir);
    assert_eq!(r.status.code(), Some(0), "{}", out(&r));
    assert_eq!(json(&r)["salvage"]["first_lost_seq"], 19);
    assert_eq!(segment_bases(dir), [0]);
    assert_eq!(annal(&["verify"], dir).status.code(), Some(0));
}

#[test]
fn append_read_round_trip_with_bad_lines_between_good_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let input = concat!(
        "{\"stream\":\"cart-1\",\"type\":\"Added\",\"data\":{\"sku\":\"a\"},",
        "\"metadata\":{\"by\":\"u\"}}\n",
        "not json\n",
        "{\"stream\":\"cart-1\",\"type\":\"Added\",\"data\":[1,2],",
        "\"expected_version\":0}\n",
        "{\"stream\":\"cart-1\",\"type\":\"Added\",\"data\":3,\"expected_version\":7}\n",
        "{\"stream\":\"\",\"type\":\"Added\",\"data\":3}\n",
        "{\"stream\":\"cart-2\",\"type\":\"Made\",\"data\":\"x\",",
        "\"expected_version\":\"no_stream\",",
        "\"id\":\"0191f0a0-0000-7000-8000-000000000001\"}\n",
        "{\"stream\":\"cart-2\",\"type\":\"Made\",\"data\":\"y\",",
        "\"expected_version\":\"exists\"}\n",
    );
    let a = annal_stdin(&["append"], &dir, input);
    assert_eq!(a.status.code(), Some(1), "some lines failed");
    let acks = lines(&a);
    assert_eq!(acks.len(), 7, "{}", out(&a));
    assert_eq!(acks[0]["version"], 0);
    assert_eq!(acks[1]["kind"], "invalid_input");
    assert_eq!(acks[2]["version"], 1);
    assert_eq!(acks[3]["kind"], "wrong_expected_version");
    assert_eq!(acks[4]["kind"], "invalid_input");
    assert_eq!(acks[5]["stream"], "cart-2");
    assert_eq!(acks[6]["version"], 1);
    let mut seqs: Vec<u64> =
        [0, 2, 5, 6].iter().map(|&i| acks[i]["seq"].as_u64().unwrap()).collect();
    seqs.sort();
    assert_eq!(seqs, [0, 1, 2, 3]);

    let r = annal(&["read"], &dir);
    assert_eq!(r.status.code(), Some(0));
    let evs = lines(&r);
    assert_eq!(evs.len(), 4);
    let first = evs.iter().find(|e| e["data"] == serde_json::json!({"sku": "a"})).unwrap();
    assert_eq!(first["metadata"], serde_json::json!({"by": "u"}));
    assert_eq!(first["type"], "Added");
    let made = evs.iter().find(|e| e["data"] == "x").unwrap();
    assert_eq!(made["id"], "0191f0a0-0000-7000-8000-000000000001");

    let r = lines(&annal(&["read", "--stream", "cart-1", "--backward", "--limit", "1"], &dir));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["version"], 1);
    assert_eq!(r[0]["data"], serde_json::json!([1, 2]));
    let r = lines(&annal(&["read", "--stream", "cart-2", "--from-version", "1"], &dir));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["data"], "y");
    let r = lines(&annal(&["read", "--from", "2", "--limit", "1"], &dir));
    assert_eq!(r[0]["seq"], 2);

    // The same event id again is idempotent: the original seq is answered.
    let again = "{\"stream\":\"cart-2\",\"type\":\"Made\",\"data\":\"x\",\
                 \"expected_version\":\"no_stream\",\
                 \"id\":\"0191f0a0-0000-7000-8000-000000000001\"}\n";
    let a = annal_stdin(&["append", "--durability", "batched"], &dir, again);
    assert_eq!(a.status.code(), Some(0), "{}", out(&a));
    assert_eq!(lines(&a)[0]["seq"], acks[5]["seq"]);
}

#[test]
fn read_stops_at_a_damaged_record_and_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    event_store(dir, 60, 3);
    let s = seg(dir, 19);
    let mut b = std::fs::read(&s).unwrap();
    let at = b.windows(8).position(|w| w == b"{\"n\":30,").unwrap();
    b[at + 5] ^= 0x01;
    std::fs::write(&s, &b).unwrap();
    let r = annal(&["read"], dir);
    assert_eq!(r.status.code(), Some(1));
    assert_eq!(lines(&r).len(), 30, "everything before the damage is printed");
    assert!(String::from_utf8_lossy(&r.stderr).contains("corruption"), "{:?}", r.stderr);
}

#[test]
fn a_second_writer_exits_3() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    event_store(dir, 3, 1);
    let held = open_store(dir, StoreOptions::default());
    let a = annal_stdin(&["append"], dir, "{\"stream\":\"s\",\"type\":\"T\",\"data\":1}\n");
    assert_eq!(a.status.code(), Some(3));
    assert_eq!(annal(&["repair"], dir).status.code(), Some(3));
    // Readers need no lock.
    assert_eq!(lines(&annal(&["read"], dir)).len(), 3);
    drop(held);
}

#[test]
fn tail_follows_a_concurrent_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    event_store(&dir, 5, 1);
    let mut child = Command::new(env!("CARGO_BIN_EXE_annal"))
        .args(["tail", "--from", "3", "--dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let writer = {
        let dir = dir.clone();
        std::thread::spawn(move || {
            let store = open_store(&dir, StoreOptions::default());
            for i in 0..20 {
                let e = NewEvent::new("Later", format!("{i}"));
                store.append("live-1", ExpectedVersion::Any, &[e]).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            store.close().unwrap();
        })
    };
    let mut got = Vec::new();
    let mut line = String::new();
    while got.len() < 22 {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "tail ended early");
        got.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    writer.join().unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    let seqs: Vec<u64> = got.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (3..25).collect::<Vec<_>>());
    assert_eq!(got[2]["stream"], "live-1");
    assert_eq!(got[21]["version"], 19);
    assert_eq!(got[21]["data"], 19);
}

/// Lines of a spawned `annal tail`, read on a thread so a test can wait with a deadline.
struct Tail {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<Value>,
}

impl Tail {
    fn spawn(dir: &Path, extra: &[&str]) -> Tail {
        let mut child = Command::new(env!("CARGO_BIN_EXE_annal"))
            .arg("tail")
            .args(extra)
            .arg("--dir")
            .arg(dir)
            .env_remove("ANNAL_DIR")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { return };
                if tx.send(serde_json::from_str::<Value>(&line).unwrap()).is_err() {
                    return;
                }
            }
        });
        Tail { child, lines }
    }

    /// The seqs printed within `wait`.
    fn seqs_within(&self, wait: std::time::Duration) -> Vec<u64> {
        let until = std::time::Instant::now() + wait;
        let mut seqs = Vec::new();
        while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(v) => seqs.push(v["seq"].as_u64().unwrap()),
                Err(_) => break,
            }
        }
        seqs
    }

    /// The next `n` seqs printed, failing after `wait`.
    fn next_seqs(&self, n: usize, wait: std::time::Duration) -> Vec<u64> {
        let until = std::time::Instant::now() + wait;
        let mut seqs = Vec::new();
        while seqs.len() < n {
            let left = until.saturating_duration_since(std::time::Instant::now());
            let v = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!("tail printed only {seqs:?} of {n} lines within {wait:?}")
            });
            seqs.push(v["seq"].as_u64().unwrap());
        }
        seqs
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A writer under `Durability::None` that never syncs: its events are complete on disk (in
/// the page cache) but not durable, and no later frame vouches for them.
fn unsynced_writer(dir: &Path) -> Store {
    let log = Options { durability: annal::Durability::None, ..Options::default() };
    let store = open_store(dir, StoreOptions { log, ..StoreOptions::default() });
    for i in 0..2 {
        let e = NewEvent::new("Unsynced", format!("{i}"));
        store.append("late", ExpectedVersion::Any, &[e]).unwrap();
    }
    store
}

#[test]
fn tail_prints_unsynced_events_only_after_its_own_fdatasync() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    event_store(dir, 3, 1);
    let writer = unsynced_writer(dir);
    let tail = Tail::spawn(dir, &[]);
    // Seqs 3 and 4 are written, not durable: tail waits (TAIL_SYNC_AFTER) before it makes
    // them durable itself, so within the first 600 ms only the durable prefix shows.
    let early = tail.seqs_within(std::time::Duration::from_millis(600));
    assert_eq!(early, [0, 1, 2], "tail printed events that were not durable yet");
    // Then its own fdatasync of the segment covers them, and it prints them.
    assert_eq!(tail.next_seqs(2, std::time::Duration::from_secs(10)), [3, 4]);
    drop(writer);
}

#[test]
fn tail_no_sync_waits_for_a_frame_that_proves_the_events_durable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    event_store(dir, 3, 1);
    let writer = unsynced_writer(dir);
    let tail = Tail::spawn(dir, &["--no-sync"]);
    assert_eq!(tail.seqs_within(std::time::Duration::from_millis(1500)), [0, 1, 2]);
    // An fsync alone writes no frame: nothing on disk proves it to a reader yet.
    writer.log().sync().unwrap();
    assert_eq!(tail.seqs_within(std::time::Duration::from_millis(600)), Vec::<u64>::new());
    // The next batch's frame carries synced_through past seqs 3 and 4, not past itself.
    writer.append("late", ExpectedVersion::Any, &[NewEvent::new("Unsynced", "2")]).unwrap();
    assert_eq!(tail.next_seqs(2, std::time::Duration::from_secs(10)), [3, 4]);
    assert_eq!(tail.seqs_within(std::time::Duration::from_millis(600)), Vec::<u64>::new());
    // The close frame proves the rest.
    writer.close().unwrap();
    assert_eq!(tail.next_seqs(1, std::time::Duration::from_secs(10)), [5]);
}

#[test]
fn streams_and_snapshots_list_what_is_there() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    event_store(dir, 7, 2);
    let s = json(&annal(&["streams", "--json"], dir));
    assert_eq!(s["streams"][0]["stream"], "order-0");
    assert_eq!(s["streams"][0]["events"], 4);
    assert_eq!(s["streams"][1]["version"], 2);
    std::fs::create_dir_all(dir.join("snapshots")).unwrap();
    std::fs::write(dir.join("snapshots").join("order-0.snap"), [1u8; 10]).unwrap();
    let s = json(&annal(&["snapshots", "--json"], dir));
    assert_eq!(s["snapshots"][0]["file"], "snapshots/order-0.snap");
    assert_eq!(s["snapshots"][0]["bytes"], 10);
    let i = out(&annal(&["inspect"], dir));
    assert!(
        i.contains("snapshots       1 file(s), 10 B") && i.contains("snapshots/order-0.snap"),
        "{i}"
    );
}

#[test]
fn read_and_verify_work_beside_a_writer_that_opens_and_closes() {
    // Each `annal append` opens the store (preallocating the active segment) and closes it
    // (giving the preallocated space back): a read-only reader that saw the longer file must
    // neither fail nor report damage.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    event_store(&dir, 3, 1);
    let writer = {
        let dir = dir.clone();
        std::thread::spawn(move || {
            for i in 0..40 {
                let line = format!("{{\"stream\":\"w\",\"type\":\"T\",\"data\":{i}}}\n");
                let a = annal_stdin(&["append"], &dir, &line);
                assert_eq!(a.status.code(), Some(0), "{}", String::from_utf8_lossy(&a.stderr));
            }
        })
    };
    let mut rounds = 0;
    while !writer.is_finished() || rounds == 0 {
        let r = annal(&["read"], &dir);
        assert_eq!(r.status.code(), Some(0), "read: {}", String::from_utf8_lossy(&r.stderr));
        let v = annal(&["verify"], &dir);
        assert_eq!(v.status.code(), Some(0), "verify: {}", out(&v));
        rounds += 1;
    }
    writer.join().unwrap();
    assert_eq!(lines(&annal(&["read"], &dir)).len(), 43);
}

#[test]
fn lines_of_one_stream_batched_together_still_get_one_answer_each() {
    // Queued lines of one stream are appended as one batch; a line the store refuses (a type
    // over the 256-byte limit) fails the batch, and every line is then answered on its own.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let mut input = String::new();
    for i in 0..200 {
        let ty = if i == 120 { "T".repeat(300) } else { "T".to_string() };
        input.push_str(&format!("{{\"stream\":\"bulk\",\"type\":\"{ty}\",\"data\":{i}}}\n"));
    }
    let a = annal_stdin(&["append"], &dir, &input);
    assert_eq!(a.status.code(), Some(1));
    let acks = lines(&a);
    assert_eq!(acks.len(), 200);
    assert_eq!(acks[120]["kind"], "invalid_input", "{}", acks[120]);
    let versions: Vec<u64> = acks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 120)
        .map(|(_, a)| a["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, (0..199).collect::<Vec<_>>(), "input order kept, no gap");
    let data: Vec<u64> =
        lines(&annal(&["read"], &dir)).iter().map(|e| e["data"].as_u64().unwrap()).collect();
    let want: Vec<u64> = (0..200).filter(|&i| i != 120).collect();
    assert_eq!(data, want);
}

#[test]
fn a_bad_segment_header_and_bytes_after_a_seal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    event_store(dir, 60, 3);
    // Garbage after the seal frame of segment 0: a warning, cut by repair.
    let first = seg(dir, 0);
    let mut b0 = std::fs::read(&first).unwrap();
    let sealed_len = b0.len();
    b0.extend_from_slice(&[0x33; 16]);
    std::fs::write(&first, &b0).unwrap();
    let v = json(&annal(&["verify", "--json"], dir));
    assert_eq!(v["verdict"], "ok", "{v}");
    assert_eq!(v["findings"][0]["kind"], "after_seal");
    assert_eq!(v["findings"][0]["offset"], sealed_len as u64);
    let r = json(&annal(&["repair", "--json"], dir));
    assert_eq!(r["actions"][0]["action"], "cut_after_seal", "{r}");
    assert_eq!(std::fs::read(&first).unwrap().len(), sealed_len);

    // A flipped bit in the header of segment 38: a problem; salvage moves it and 57 whole.
    let third = seg(dir, 38);
    let mut b = std::fs::read(&third).unwrap();
    b[20] ^= 0x10; // inside the log id
    std::fs::write(&third, &b).unwrap();
    let v = annal(&["verify", "--json"], dir);
    assert_eq!(v.status.code(), Some(1));
    let f = &json(&v)["findings"][0];
    assert_eq!(f["kind"], "segment_header", "{f}");
    assert_eq!(f["offset"], 0);
    let r = annal(&["repair", "--salvage", "--json"], dir);
    assert_eq!(r.status.code(), Some(0), "{}", out(&r));
    let sv = &json(&r)["salvage"];
    assert_eq!(sv["first_lost_seq"], 38, "{sv}");
    // The frames of the moved segments still verify: their seqs are reported.
    assert_eq!(sv["decoded_ranges"], serde_json::json!([[38, 60]]), "{sv}");
    assert_eq!(segment_bases(dir), [0, 19]);
    let v = annal(&["verify", "--json"], dir);
    assert_eq!(v.status.code(), Some(0), "{}", out(&v));
    assert_eq!(json(&v)["next_seq"], 38);
    let a = annal_stdin(&["append"], dir, "{\"stream\":\"order-2\",\"type\":\"T\",\"data\":1}\n");
    assert_eq!(lines(&a)[0]["seq"], 38);
}

#[test]
fn every_ack_read_before_a_kill_9_is_in_the_store() {
    // Acks are flushed as they are given: whatever a reader of the pipe saw acknowledged before
    // the process was killed is in the store afterwards, with its data.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let mut child = Command::new(env!("CARGO_BIN_EXE_annal"))
        .args(["append", "--dir"])
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        for i in 0..100_000u64 {
            let line = format!("{{\"stream\":\"k-{}\",\"type\":\"T\",\"data\":{i}}}\n", i % 7);
            if stdin.write_all(line.as_bytes()).is_err() {
                return;
            }
        }
    });
    let mut acks = BufReader::new(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    let mut line = String::new();
    while seen.len() < 300 {
        line.clear();
        assert!(acks.read_line(&mut line).unwrap() > 0, "append ended early");
        let v: Value = serde_json::from_str(&line).unwrap();
        seen.push((seen.len() as u64, v));
    }
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    feeder.join().unwrap();

    let events = lines(&annal(&["read"], &dir));
    let by_seq: std::collections::HashMap<u64, &Value> =
        events.iter().map(|e| (e["seq"].as_u64().unwrap(), e)).collect();
    for (input_line, ack) in &seen {
        let seq = ack["seq"].as_u64().unwrap_or_else(|| panic!("not an ack: {ack}"));
        let e = by_seq.get(&seq).unwrap_or_else(|| panic!("acked seq {seq} is not in the store"));
        assert_eq!(e["data"], *input_line, "seq {seq}");
        assert_eq!(e["version"], ack["version"]);
        assert_eq!(e["stream"], ack["stream"]);
    }
}
