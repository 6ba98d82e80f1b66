//! RELIABILITY.md row 29: latent corruption of a sealed segment while the store is open.
//!
//! Property: bits flipped in a sealed segment after it was written, while the log is open
//! and has already read (and memory-mapped) the segment, are found on the next read of the
//! damaged record: `Log::read` of that seq fails with `Error::Corrupt` naming the segment,
//! a cursor stops with `Corrupt` exactly at it (having returned every earlier record intact),
//! and every other record still reads back byte-for-byte, by point read and by a cursor
//! started after the damaged batch. No read ever returns bytes other than those written.
//! Restoring the byte makes the record readable again (reads verify every time; nothing
//! caches a verdict). The same holds after a clean close and reopen, which trusts the
//! segment's seal and does not scan it (format-spec.md §9.2 "Latent damage behind a trusted
//! point").
//!
//! Run on the real file system (flips written through a second descriptor, which the kernel's
//! page cache shows to the engine's memory map at once) for chosen spots of chosen records,
//! and on `SimFs` for `ANNAL_LATENT_FLIPS` (default 3000) random bits over the whole sealed
//! segment, classified by what they hit (record payload or header, frame header, padding).
//!
//! `returned_payloads_do_not_change_when_the_file_does`: a payload read from a memory-mapped
//! sealed segment is copied out of the map before its CRC is checked, so a change to the file
//! after the read does not change bytes the caller holds (point reads and cursors).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use annal::format::{FrameKind, decode_frame_header};
use annal::fs::SimFs;
use annal::limits::{FRAME_HEADER_BYTES, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use annal::{Durability, Error, Log, Options};

fn opts() -> Options {
    Options {
        segment_bytes: 16 << 10,
        max_record_bytes: 2048,
        durability: Durability::None,
        ..Options::default()
    }
}

fn payload(seq: u64) -> Vec<u8> {
    let mut p = format!("record {seq}:").into_bytes();
    p.extend((0..(seq * 37 % 300)).map(|k| (seq + k) as u8));
    p
}

/// Appends batches of 1-3 records until the log has rolled `segments - 1` times.
fn fill(log: &Log, segments: u64) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    while log.stats().rolls + 1 < segments {
        let n = all.len() as u64 % 3 + 1;
        let batch: Vec<Vec<u8>> = (0..n).map(|k| payload(all.len() as u64 + k)).collect();
        let a = log.append(&batch).unwrap();
        assert_eq!(a.first, all.len() as u64);
        all.extend(batch);
    }
    log.sync().unwrap();
    all
}

/// Where one record lies in a segment file.
#[derive(Debug, Clone, Copy)]
struct Rec {
    seq: u64,
    /// Offset of its 16-byte header.
    header: u64,
    payload_len: u64,
    /// The batch frame holding it: `[frame, frame_end)`, padding included.
    frame: u64,
    frame_end: u64,
}

/// The records of a sealed segment, from its bytes (format-spec.md §4).
fn layout(seg: &[u8]) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut off = SEGMENT_HEADER_BYTES;
    while let Some(rest) = seg.get(off..) {
        let Ok(f) = decode_frame_header(rest) else { break };
        let end = off + f.total_bytes() as usize;
        if f.kind == FrameKind::Batch {
            let mut at = off + FRAME_HEADER_BYTES;
            for k in 0..u64::from(f.count) {
                let len = u32::from_le_bytes(seg[at + 4..at + 8].try_into().unwrap()) as u64;
                out.push(Rec {
                    seq: f.seq + k,
                    header: at as u64,
                    payload_len: len,
                    frame: off as u64,
                    frame_end: end as u64,
                });
                at += RECORD_HEADER_BYTES + len as usize;
            }
        }
        if f.kind == FrameKind::Seal {
            break;
        }
        off = end;
    }
    out
}

fn assert_corrupt(log: &Log, seq: u64, seg: &Path, ctx: &str) {
    match log.read(seq) {
        Err(Error::Corrupt { file, .. }) => assert_eq!(file, seg, "{ctx}: names another file"),
        other => panic!("{ctx}: read of the damaged seq {seq} gave {other:?}"),
    }
}

/// Every record but those in `skip` reads back exactly, by point read.
fn assert_others_intact(log: &Log, all: &[Vec<u8>], skip: &[u64], ctx: &str) {
    for (seq, p) in all.iter().enumerate() {
        let seq = seq as u64;
        if skip.contains(&seq) {
            continue;
        }
        let r = log.read(seq).unwrap_or_else(|e| panic!("{ctx}: undamaged seq {seq}: {e}"));
        assert_eq!(&r.payload[..], &p[..], "{ctx}: seq {seq} changed");
    }
}

/// A cursor from 0 returns every record before `bad` intact and then `Corrupt` for `bad`; a
/// cursor from `after` (past the damaged batch) reads intact records to the end.
fn assert_cursors(log: &Log, all: &[Vec<u8>], bad: u64, after: u64, ctx: &str) {
    let mut next = 0u64;
    for r in log.cursor(0) {
        match r {
            Ok(r) => {
                assert_eq!(r.seq, next, "{ctx}: cursor skipped");
                assert_eq!(&r.payload[..], &all[next as usize][..], "{ctx}: cursor seq {next}");
                next += 1;
            }
            Err(Error::Corrupt { .. }) => break,
            Err(e) => panic!("{ctx}: cursor failed with {e}, not Corrupt"),
        }
    }
    assert_eq!(next, bad, "{ctx}: the cursor did not stop at the damaged record");
    let rest: Vec<_> = log.cursor(after).map(|r| r.unwrap()).collect();
    assert_eq!(rest.len() as u64, all.len() as u64 - after, "{ctx}");
    for r in rest {
        assert_eq!(&r.payload[..], &all[r.seq as usize][..], "{ctx}");
    }
}

fn first_segment(dir: &Path) -> PathBuf {
    dir.join("segments").join(format!("{:020}.seg", 0))
}

/// Flips bit `bit` of byte `at` of `path` through its own descriptor.
fn flip_on_disk(path: &Path, at: u64, bit: u8) {
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 1 << bit;
    f.write_all_at(&b, at).unwrap();
}

#[test]
fn bit_rot_in_a_mapped_sealed_segment_fails_only_the_damaged_record() {
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = root.path().join("store");
    let log = Log::open(&dir, opts()).unwrap();
    let all = fill(&log, 4);
    // Read everything once: sealed segments are mapped, dense offsets built.
    assert_eq!(log.cursor(0).collect::<Result<Vec<_>, _>>().unwrap().len(), all.len());
    assert_others_intact(&log, &all, &[], "before any flip");

    let seg = first_segment(&dir);
    let recs = layout(&std::fs::read(&seg).unwrap());
    assert!(recs.len() > 20, "{}", recs.len());
    let multi: Vec<Rec> = recs.iter().filter(|r| r.frame_end - r.frame > 200).copied().collect();
    let chosen = [recs[0], recs[recs.len() / 2], *recs.last().unwrap(), multi[multi.len() / 2]];
    let mut first = Some(log);
    for phase in ["open", "reopened"] {
        let log = match first.take() {
            Some(log) => log,
            None => Log::open(&dir, opts()).unwrap(),
        };
        for r in chosen {
            // A payload byte (or, for an empty payload, none), the CRC, the length, the seq.
            let mut spots =
                vec![("crc", r.header), ("length", r.header + 4), ("seq", r.header + 8)];
            if r.payload_len > 0 {
                spots.push(("payload", r.header + 16 + r.payload_len / 2));
            }
            for (what, at) in spots {
                let ctx = format!("{phase}: flip in the {what} of seq {} at {at}", r.seq);
                flip_on_disk(&seg, at, 3);
                assert_corrupt(&log, r.seq, &seg, &ctx);
                assert_others_intact(&log, &all, &[r.seq], &ctx);
                let after = recs
                    .iter()
                    .find(|x| x.frame >= r.frame_end)
                    .map_or(all.len(), |x| x.seq as usize);
                assert_cursors(&log, &all, r.seq, after as u64, &ctx);
                flip_on_disk(&seg, at, 3);
                let back = log.read(r.seq).unwrap_or_else(|e| panic!("{ctx}, restored: {e}"));
                assert_eq!(&back.payload[..], &all[r.seq as usize][..], "{ctx}, restored");
            }
        }
        log.close().unwrap();
    }
}

#[test]
fn random_flips_in_a_sealed_segment_never_return_wrong_bytes() {
    let flips: usize =
        std::env::var("ANNAL_LATENT_FLIPS").ok().and_then(|s| s.parse().ok()).unwrap_or(3000);
    let seed: u64 = std::env::var("ANNAL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(29);
    let sim = SimFs::new(seed);
    let mut rng = fastrand::Rng::with_seed(seed);
    let log = Log::open_with(Arc::new(sim.clone()), "/store", opts()).unwrap();
    let all = fill(&log, 3);
    assert_eq!(log.cursor(0).collect::<Result<Vec<_>, _>>().unwrap().len(), all.len());
    let seg = first_segment(Path::new("/store"));
    let bytes = sim.current_bytes(&seg).unwrap();
    let recs = layout(&bytes);
    let data_end = recs.last().unwrap().frame_end;
    let (mut direct, mut framing) = (0, 0);
    for i in 0..flips {
        let at = rng.u64(SEGMENT_HEADER_BYTES as u64..data_end);
        let bit = rng.u8(0..8);
        let ctx = format!("flip {i}: bit {bit} of byte {at} (seed {seed})");
        sim.flip_bit(&seg, at, bit).unwrap();
        let hit = recs.iter().find(|r| at >= r.header && at < r.header + 16 + r.payload_len);
        let frame = recs.iter().find(|r| at >= r.frame && at < r.frame_end).unwrap();
        let same_frame: Vec<u64> =
            recs.iter().filter(|r| r.frame == frame.frame).map(|r| r.seq).collect();
        if let Some(r) = hit {
            direct += 1;
            assert_corrupt(&log, r.seq, &seg, &ctx);
        } else {
            framing += 1;
        }
        // Records of the damaged frame may fail (their frame no longer checks), but never
        // return other bytes; every other record reads back exactly.
        for &s in &same_frame {
            if let Ok(r) = log.read(s) {
                assert_eq!(&r.payload[..], &all[s as usize][..], "{ctx}: seq {s} wrong bytes");
            }
        }
        if i % 50 == 0 {
            assert_others_intact(&log, &all, &same_frame, &ctx);
        }
        sim.flip_bit(&seg, at, bit).unwrap();
    }
    println!("{flips} flips: {direct} in records, {framing} in frame headers or padding");
    assert!(direct > flips / 2);
}

/// A payload read from a mapped sealed segment is a copy of the bytes whose CRC was
/// checked: it does not change when the file does afterwards.
#[test]
fn returned_payloads_do_not_change_when_the_file_does() {
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = root.path().join("store");
    let log = Log::open(&dir, opts()).unwrap();
    let all = fill(&log, 3);
    let seg = first_segment(&dir);
    let recs = layout(&std::fs::read(&seg).unwrap());
    let r = recs.iter().find(|r| r.payload_len > 10).unwrap();
    let held = log.read(r.seq).unwrap().payload;
    assert_eq!(&held[..], &all[r.seq as usize][..]);
    // Every payload of the segment, from a cursor.
    let scanned: Vec<_> = log.cursor(0).take(recs.len()).map(|x| x.unwrap().payload).collect();
    for (rec, p) in recs.iter().zip(&scanned) {
        assert_eq!(&p[..], &all[rec.seq as usize][..]);
    }
    flip_on_disk(&seg, r.header + 16 + 5, 0);
    assert_eq!(&held[..], &all[r.seq as usize][..], "a verified payload changed after return");
    for (rec, p) in recs.iter().zip(&scanned) {
        assert_eq!(
            &p[..],
            &all[rec.seq as usize][..],
            "a scanned payload changed (seq {})",
            rec.seq
        );
    }
    // The flipped record itself is now refused, never returned.
    assert!(log.read(r.seq).is_err());
}
