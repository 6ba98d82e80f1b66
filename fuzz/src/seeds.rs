//! Seed inputs for the fuzz targets, cut from stores the engine itself writes on a `SimFs`:
//! real segment headers, frames, records, index files and whole store directories (clean,
//! crashed with a torn tail, and damaged). Only the regression runner includes this file; its
//! ignored test `write_seed_corpora` writes them to `fuzz/corpus/<target>/`.
//!
//! A seed named `valid-*` must be accepted by its target and one named `invalid-*` rejected;
//! other names carry no expectation.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use annal::format::decode_frame_header;
use annal::fs::{CrashMode, SimFs, Storage};
use annal::limits::{FRAME_HEADER_BYTES, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use annal::{Durability, Log, Options};

use crate::targets::{DirImage, STORE_DIR, join_dir, open_dir_options};

/// One seed input.
#[derive(Debug, Clone)]
pub struct Seed {
    /// The fuzz target it is for.
    pub target: &'static str,
    /// Its file name in the corpus.
    pub name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

fn seg_dir() -> PathBuf {
    Path::new(STORE_DIR).join("segments")
}

/// The store's segment and index files, sorted by name.
fn files(sim: &SimFs, ext: &str) -> Vec<(u64, Vec<u8>)> {
    let mut names = sim.read_dir(&seg_dir()).unwrap();
    names.sort();
    names
        .into_iter()
        .filter_map(|n| {
            let base = n.strip_suffix(ext)?.parse().ok()?;
            Some((base, sim.current_bytes(seg_dir().join(&n))?))
        })
        .collect()
}

fn open(sim: &SimFs, opts: Options) -> Log {
    Log::open_with(Arc::new(sim.clone()), STORE_DIR, opts).unwrap()
}

/// Appends batches of assorted shapes (one record, several, an empty payload, one near the
/// record limit) until the store has rolled into `segments` segments.
fn fill(log: &Log, segments: u64) {
    let mut i = 0u32;
    while log.stats().rolls + 1 < segments {
        let n = i % 4 + 1;
        let batch: Vec<Vec<u8>> = (0..n)
            .map(|j| match (i + j) % 7 {
                0 => Vec::new(),
                6 => vec![b'x'; 900],
                k => format!("{{\"event\":{i},\"part\":{j}}}").repeat(k as usize).into_bytes(),
            })
            .collect();
        log.append(&batch).unwrap();
        i += 1;
    }
}

/// Frames of a segment file, in order, as `(kind byte, count, bytes)`.
fn frames(segment: &[u8]) -> Vec<(u8, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut off = SEGMENT_HEADER_BYTES;
    while let Some(rest) = segment.get(off..) {
        let Ok(f) = decode_frame_header(rest) else { break };
        let end = off + f.total_bytes() as usize;
        let Some(bytes) = segment.get(off..end) else { break };
        out.push((rest[4], f.count, bytes.to_vec()));
        off = end;
    }
    out
}

/// Every seed of every target.
pub fn seeds() -> Vec<Seed> {
    let mut out = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| {
        out.push(Seed { target, name: name.to_string(), bytes });
    };

    // A clean store of three segments: sealed, sealed, active with a close frame and index.
    let sim = SimFs::new(1);
    let log = open(&sim, open_dir_options());
    fill(&log, 3);
    log.close().unwrap();
    let segs = files(&sim, ".seg");
    let idxs = files(&sim, ".idx");
    assert_eq!(segs.len(), 3, "{segs:?}");
    assert_eq!(idxs.len(), 3, "every segment has an index after a clean close");

    for (i, (_, seg)) in segs.iter().enumerate() {
        add("segment_header", &format!("valid-segment-{i}"), seg[..SEGMENT_HEADER_BYTES].to_vec());
    }
    add("segment_header", "invalid-zeros", vec![0; SEGMENT_HEADER_BYTES]);
    add("segment_header", "invalid-short", segs[0].1[..SEGMENT_HEADER_BYTES - 1].to_vec());

    let all: Vec<_> = segs.iter().flat_map(|(_, s)| frames(s)).collect();
    let pick = |kind: u8, want: fn(u32) -> bool| {
        all.iter().find(|(k, c, _)| *k == kind && want(*c)).map(|(_, _, b)| b.clone()).unwrap()
    };
    let single = pick(1, |c| c == 1);
    add("frame", "valid-batch-1-record", single.clone());
    add("frame", "valid-batch-4-records", pick(1, |c| c == 4));
    add("frame", "valid-seal", pick(2, |_| true));
    add("frame", "valid-close", pick(3, |_| true));
    let rec_len = RECORD_HEADER_BYTES
        + u32::from_le_bytes(
            single[FRAME_HEADER_BYTES + 4..FRAME_HEADER_BYTES + 8].try_into().unwrap(),
        ) as usize;
    add("frame", "record-alone", single[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + rec_len].to_vec());
    add("frame", "invalid-zeros", vec![0; 128]);

    for (i, (_, ix)) in idxs.iter().enumerate() {
        add("index_file", &format!("valid-index-{i}"), ix.clone());
    }
    add("index_file", "invalid-zeros", vec![0; 64]);

    let last_ix = idxs.last().map(|(_, b)| b.clone());
    let image = DirImage { segments: segs.clone(), last_index: last_ix.clone() };
    add("open_dir", "valid-3-segments-closed", join_dir(&image));
    let image = DirImage { segments: segs[..1].to_vec(), last_index: None };
    add("open_dir", "invalid-sealed-tail", join_dir(&image));
    let image = DirImage { segments: segs[1..].to_vec(), last_index: None };
    add("open_dir", "invalid-missing-first-segment", join_dir(&image));
    let mut damaged = segs.clone();
    let mid = damaged[2].1.len() / 2;
    damaged[2].1[mid] ^= 0x10;
    let image = DirImage { segments: damaged, last_index: last_ix };
    add("open_dir", "damaged-active-segment", join_dir(&image));

    let snap = annal::format::SnapshotFile {
        log_id: [7; 16],
        stream_id: "account-42".into(),
        stream_version: 9,
        seq: 1234,
        event_id: [3; 16],
        schema: "bank.account/1".into(),
        payload: br#"{"balance":100}"#.to_vec(),
    };
    let bytes = snap.encode().unwrap();
    add("snapshot_file", "valid-account", bytes.clone());
    add("snapshot_file", "invalid-torn", bytes[..bytes.len() - 5].to_vec());
    add("snapshot_file", "invalid-zeros", vec![0; bytes.len()]);
    let long = annal::format::SnapshotFile { stream_id: "x/".repeat(2048), ..snap };
    add("snapshot_file", "valid-4k-id-empty-payload", {
        let mut l = long;
        l.payload.clear();
        l.encode().unwrap()
    });

    // An empty store, closed.
    let sim = SimFs::new(2);
    open(&sim, open_dir_options()).close().unwrap();
    let image = DirImage {
        segments: files(&sim, ".seg"),
        last_index: files(&sim, ".idx").pop().map(|x| x.1),
    };
    add("open_dir", "valid-empty-closed", join_dir(&image));

    // Two segments, then a crash that tears the unsynced tail (no close, no index).
    let sim = SimFs::new(3);
    let batched = Durability::Batched { max_delay: Duration::from_secs(3600), max_bytes: u64::MAX };
    let log = open(&sim, Options { durability: batched, ..open_dir_options() });
    fill(&log, 2);
    for i in 0..6u8 {
        log.append(&[vec![i; 40 + usize::from(i) * 30]]).unwrap();
    }
    sim.crash_with(CrashMode::Random);
    drop(log);
    let image = DirImage { segments: files(&sim, ".seg"), last_index: None };
    add("open_dir", "crashed-torn-tail", join_dir(&image));

    out
}

/// Seeds of the targets added with the fault-injection work: event bodies and stream
/// checkpoints cut from a real store, and operation sequences for `ops`.
pub fn more_seeds() -> Vec<Seed> {
    use annal::format::EventBody;
    use annal::{ExpectedVersion, NewEvent, Store, StoreOptions};
    let mut out = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| {
        out.push(Seed { target, name: name.to_string(), bytes });
    };

    let sim = SimFs::new(11);
    let opts = StoreOptions { log: open_dir_options(), ..StoreOptions::default() };
    let store = Store::open_with(Arc::new(sim.clone()), STORE_DIR, opts).unwrap();
    store
        .append("order-1", ExpectedVersion::NoStream, &[NewEvent::new("Created", "{\"n\":1}")])
        .unwrap();
    let ev = NewEvent::new("Paid", vec![0xAB; 40]).with_metadata("{\"$correlationId\":\"c\"}");
    store.append("order-1", ExpectedVersion::Exact(0), &[ev]).unwrap();
    store.append("user-λ", ExpectedVersion::Any, &[NewEvent::new("E", Vec::new())]).unwrap();
    let payloads: Vec<Vec<u8>> =
        store.log().cursor(0).map(|r| r.unwrap().payload.to_vec()).collect();
    store.close().unwrap();
    assert_eq!(payloads.len(), 3);
    add("event_body", "valid-created", payloads[0].clone());
    add("event_body", "valid-with-metadata", payloads[1].clone());
    add("event_body", "valid-unicode-stream-empty-data", payloads[2].clone());
    let mut short = payloads[1].clone();
    short.pop();
    add("event_body", "invalid-short-by-one", short);
    add("event_body", "invalid-zeros", vec![0; 32]);
    let body = EventBody::decode(&payloads[0]).unwrap();
    assert_eq!(body.stream_id, "order-1");

    let ckpt = sim.current_bytes(Path::new(STORE_DIR).join("streams.ckpt")).unwrap();
    add("stream_checkpoint", "valid-3-streams", ckpt.clone());
    let mut flipped = ckpt.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    add("stream_checkpoint", "invalid-body-bit-flip", flipped);
    add("stream_checkpoint", "invalid-zeros", vec![0; 64]);
    // The same checkpoint in version 1, which stores still read.
    let whole = annal::format::StreamCheckpoint::decode(&ckpt).unwrap();
    add("stream_checkpoint", "valid-v1-3-streams", whole.encode_v1());
    let mut v1_flipped = whole.encode_v1();
    let last = v1_flipped.len() - 1;
    v1_flipped[last] ^= 1;
    add("stream_checkpoint", "invalid-v1-body-bit-flip", v1_flipped);
    // A flip in the first stream's seq block (the byte after the directory).
    let dir_end = 64 + u64::from_le_bytes(ckpt[40..48].try_into().unwrap()) as usize;
    let mut block_flipped = ckpt.clone();
    block_flipped[dir_end] ^= 1;
    add("stream_checkpoint", "invalid-v2-block-bit-flip", block_flipped);
    // One stream written alone: a single run.
    let sim = SimFs::new(13);
    let opts = StoreOptions { log: open_dir_options(), ..StoreOptions::default() };
    let store = Store::open_with(Arc::new(sim.clone()), STORE_DIR, opts).unwrap();
    for i in 0..30u32 {
        let ev = NewEvent::new("T", vec![i as u8; 9]);
        store.append("solo", ExpectedVersion::Any, &[ev]).unwrap();
    }
    store.close().unwrap();
    let solo = sim.current_bytes(Path::new(STORE_DIR).join("streams.ckpt")).unwrap();
    add("stream_checkpoint", "valid-v2-one-run", solo);
    // A checkpoint with many streams and recent ids, from a store that rolled.
    let sim = SimFs::new(12);
    let opts = StoreOptions { log: open_dir_options(), ..StoreOptions::default() };
    let store = Store::open_with(Arc::new(sim.clone()), STORE_DIR, opts).unwrap();
    for i in 0..60u32 {
        let s = format!("cat{}-{}", i % 3, i % 7);
        store.append(&s, ExpectedVersion::Any, &[NewEvent::new("T", vec![i as u8; 30])]).unwrap();
    }
    store.close().unwrap();
    let ckpt = sim.current_bytes(Path::new(STORE_DIR).join("streams.ckpt")).unwrap();
    add("stream_checkpoint", "valid-21-streams", ckpt);

    // ops: control byte, extra byte, then opcodes with arguments (see targets::ops).
    let append = |n: u8, len: u8| vec![0u8, n, len, len / 2, len / 3, len / 4];
    let mut clean = vec![0b100, 1];
    for i in 0..12u8 {
        clean.extend(append(i % 4, 20 + i * 9));
    }
    clean.extend([10, 3, 11, 6, 10, 9]);
    add("ops", "valid-sync-appends-close-reopen", clean.clone());
    let mut crash = vec![0b001, 3];
    for i in 0..10u8 {
        crash.extend(append(i % 4, 50 + i));
        if i % 3 == 2 {
            crash.extend([4]);
        }
    }
    crash.extend([5, 0, 10, 5]);
    add("ops", "valid-batched-crash", crash);
    let mut faults = vec![0b110, 0];
    faults.extend([7, 1]);
    for i in 0..6u8 {
        faults.extend(append(i % 4, 90));
    }
    faults.extend([5, 2, 8, 0x81]);
    faults.extend(append(2, 200));
    faults.extend([6, 9, 3]);
    for _ in 0..20 {
        faults.extend(append(3, 255));
    }
    faults.extend([5, 1]);
    add("ops", "valid-none-faults-full-disk", faults);
    out
}
