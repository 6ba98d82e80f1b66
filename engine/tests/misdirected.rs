//! Misdirected, foreign, stale, missing and mis-sized segment data is always detected by its
//! identity fields and never read back as a record (RELIABILITY.md rows 9 and 10).
//!
//! On fixtures of five small segments (every batch the same size, so frames of different
//! segments sit at the same offsets): valid batch frames spliced into other positions and
//! segments (their CRCs are valid; their `file_offset` or seq is not), frames re-headered to
//! claim the position they were copied to (the records inside still carry their old seqs),
//! segments copied from another store (another log id; also with a forged header), older
//! segment files renamed into a gap or over a newer one, stale copies of a sealed and of the
//! last segment, deleted middle, first and last segments, truncated and extended sealed
//! segments. Every case must end in a typed error at open, a corruption error from a read,
//! or a recovery report of what was cut or repaired; every record that is returned must be
//! the original one, and records may only go missing with a report.

const FH: usize = annal::limits::FRAME_HEADER_BYTES;
const FH64: u64 = FH as u64;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use annal::format::{FrameKind, SegmentHeader, decode_frame_header};
use annal::fs::SimFs;
use annal::{CorruptionKind, Error, Log, Options};

const DIR: &str = "/store";
const PAYLOAD: usize = 100;
/// Frame bytes of one batch of one record of `PAYLOAD` bytes.
const FRAME: u64 = FH64 + 16 + 104;

fn opts() -> Options {
    Options {
        // 23 batches of one 100-byte record per segment: the fixture's bases are 0, 23, 46...
        segment_bytes: 4256,
        max_record_bytes: 1024,
        index_interval_bytes: 512,
        ..Options::default()
    }
}

fn seg_dir() -> PathBuf {
    Path::new(DIR).join("segments")
}

fn seg_path(base: u64) -> PathBuf {
    seg_dir().join(format!("{base:020}.seg"))
}

fn idx_path(base: u64) -> PathBuf {
    seg_dir().join(format!("{base:020}.idx"))
}

/// A store's files, by path.
#[derive(Clone)]
struct Files(Vec<(PathBuf, Vec<u8>)>);

impl Files {
    fn get(&self, p: &Path) -> &Vec<u8> {
        &self.0.iter().find(|(q, _)| q == p).unwrap_or_else(|| panic!("{p:?}")).1
    }
    fn set(&mut self, p: &Path, bytes: Vec<u8>) {
        match self.0.iter_mut().find(|(q, _)| q == p) {
            Some(e) => e.1 = bytes,
            None => self.0.push((p.to_path_buf(), bytes)),
        }
    }
    fn remove(&mut self, p: &Path) {
        self.0.retain(|(q, _)| q != p);
    }
}

struct Fixture {
    files: Files,
    records: Vec<Vec<u8>>,
    /// Segment bases, in order.
    bases: Vec<u64>,
    /// The last segment as it was while it held only its first few batches (preallocated).
    stale_last: Vec<u8>,
    /// The second segment as it was before it was sealed.
    stale_sealed: Vec<u8>,
}

/// Five segments of one-record batches of `PAYLOAD` bytes; closed cleanly or captured as a
/// crash leaves it. `salt` seeds the `SimFs`; every store gets a random log id, so two
/// fixtures with the same `closed` hold the same records at the same offsets under different
/// log ids.
fn build(closed: bool, salt: u64) -> Fixture {
    let sim = SimFs::new(salt);
    let log = Log::open_with(Arc::new(sim.clone()), DIR, opts()).unwrap();
    let mut records = Vec::new();
    let mut stale_last = Vec::new();
    let mut stale_sealed = Vec::new();
    let mut i = 0u64;
    while log.stats().rolls < 4 || records.len() % 23 < 10 {
        let mut p = vec![0u8; PAYLOAD];
        for (k, b) in p.iter_mut().enumerate() {
            *b = (i.wrapping_mul(31) as u8) ^ (k as u8).wrapping_mul(7);
        }
        p[..8].copy_from_slice(&i.to_le_bytes());
        log.append(&[&p]).unwrap();
        records.push(p);
        i += 1;
        let rolls = log.stats().rolls;
        if rolls == 1 && stale_sealed.is_empty() && records.len() % 23 == 5 {
            // The second segment (base 23) with its first batches.
            stale_sealed = sim.current_bytes(seg_path(23)).unwrap();
        }
        if rolls == 4 && stale_last.is_empty() && records.len() % 23 == 3 {
            stale_last = sim.current_bytes(seg_path(92)).unwrap();
        }
    }
    assert!(!stale_sealed.is_empty() && !stale_last.is_empty());
    let snapshot = |sim: &SimFs| {
        let mut names = annal::fs::Storage::read_dir(sim, &seg_dir()).unwrap();
        names.sort();
        Files(
            names
                .into_iter()
                .map(|n| (seg_dir().join(&n), sim.durable_bytes(seg_dir().join(&n)).unwrap()))
                .collect(),
        )
    };
    let files = if closed {
        log.close().unwrap();
        snapshot(&sim)
    } else {
        let f = snapshot(&sim);
        drop(log);
        f
    };
    let bases = vec![0, 23, 46, 69, 92];
    for &b in &bases {
        let seg = files.get(&seg_path(b));
        let f = decode_frame_header(&seg[64..]).unwrap();
        assert_eq!((f.kind, f.seq, f.count), (FrameKind::Batch, b, 1), "layout of {b}");
        assert_eq!(f.total_bytes(), FRAME);
    }
    Fixture { files, records, bases, stale_last, stale_sealed }
}

/// What opening and reading a damaged store showed.
#[derive(Debug)]
enum Seen {
    /// Open failed with this error.
    OpenFailed(Error),
    /// Open succeeded; these are the report and whether any read failed with a corruption
    /// error.
    Opened { report: annal::RecoveryReport, read_failed: bool, visible: u64 },
}

/// Opens `files`, reads every record through a cursor and by seq, and fails the test on any
/// wrong record or unexpected error.
fn open_and_read(fx: &Fixture, files: &Files, case: &str) -> Seen {
    let sim = SimFs::new(99);
    for (p, b) in &files.0 {
        sim.write_file_raw(p, b).unwrap();
    }
    let log = match Log::open_with(Arc::new(sim.clone()), DIR, opts()) {
        Err(e @ (Error::Corrupt { .. } | Error::MissingSegments { .. })) => {
            return Seen::OpenFailed(e);
        }
        Err(e) => panic!("{case}: open failed with an untyped error: {e:?}"),
        Ok(log) => log,
    };
    let visible = log.visible_end();
    assert!(visible <= fx.records.len() as u64, "{case}: {visible} records visible");
    let mut read_failed = false;
    let mut next = 0u64;
    for r in log.cursor(0) {
        match r {
            Ok(rec) => {
                assert_eq!(rec.seq, next, "{case}: cursor seq");
                assert_eq!(
                    rec.payload[..],
                    fx.records[next as usize][..],
                    "{case}: cursor bytes at {next}"
                );
                next += 1;
            }
            Err(Error::Corrupt { .. } | Error::MissingSegments { .. }) => {
                read_failed = true;
                break;
            }
            Err(e) => panic!("{case}: cursor failed with an untyped error: {e:?}"),
        }
    }
    assert!(read_failed || next == visible, "{case}: cursor stopped at {next} of {visible}");
    for seq in 0..visible {
        match log.read(seq) {
            Ok(rec) => {
                assert_eq!(rec.payload[..], fx.records[seq as usize][..], "{case}: read({seq})")
            }
            Err(Error::Corrupt { .. } | Error::MissingSegments { .. }) => read_failed = true,
            Err(e) => panic!("{case}: read({seq}) failed with an untyped error: {e:?}"),
        }
    }
    let report = log.recovery_report().clone();
    sim.crash_drop_all();
    drop(log);
    Seen::Opened { report, read_failed, visible }
}

/// The damage must be noticed: open failed, a read failed, or recovery reported a cut or a
/// repair. Records may only go missing with a report.
fn assert_detected(fx: &Fixture, files: &Files, case: &str) -> Seen {
    let seen = open_and_read(fx, files, case);
    if let Seen::Opened { report, read_failed, visible } = &seen {
        let reported = report.truncated.is_some()
            || !report.seals_completed.is_empty()
            || !report.moved_aside.is_empty();
        assert!(*read_failed || reported, "{case}: undetected: {report:?}");
        assert!(
            *visible == fx.records.len() as u64 || report.truncated.is_some(),
            "{case}: {visible} of {} records, no truncation reported: {report:?}",
            fx.records.len()
        );
    }
    seen
}

fn corrupt_kind(seen: &Seen) -> Option<&CorruptionKind> {
    match seen {
        Seen::OpenFailed(Error::Corrupt { kind, .. }) => Some(kind),
        _ => None,
    }
}

/// The batch frame at batch index `i` of a segment image.
fn frame_bytes(seg: &[u8], i: u64) -> Vec<u8> {
    let off = (64 + i * FRAME) as usize;
    seg[off..off + FRAME as usize].to_vec()
}

fn put_frame(seg: &mut [u8], i: u64, frame: &[u8]) {
    let off = (64 + i * FRAME) as usize;
    seg[off..off + frame.len()].copy_from_slice(frame);
}

// ---------------------------------------------------------------------------------------------
// Row 9: misdirected and stale data.
// ---------------------------------------------------------------------------------------------

/// A valid frame written to the wrong place: another batch slot of the same segment (wrong
/// `file_offset`), the same slot of another segment (right offset, wrong seq), into sealed
/// segments and the last one, closed or crashed.
#[test]
fn spliced_frames_are_detected() {
    for closed in [true, false] {
        let fx = build(closed, 1);
        // The last segment holds ten batches.
        let last_batches = 10;
        let mut cases = 0;
        for (src_seg, src_i) in [(0u64, 3u64), (23, 0), (46, 7), (92, 2), (69, 22)] {
            for (dst_seg, dst_i) in
                [(0u64, 3u64), (23, 4), (46, 0), (46, 7), (69, 22), (92, 2), (92, 0), (92, 6)]
            {
                if (src_seg, src_i) == (dst_seg, dst_i) {
                    continue;
                }
                if dst_seg == 92 && dst_i >= last_batches {
                    continue;
                }
                let frame = frame_bytes(fx.files.get(&seg_path(src_seg)), src_i);
                let mut seg = fx.files.get(&seg_path(dst_seg)).clone();
                put_frame(&mut seg, dst_i, &frame);
                let mut files = fx.files.clone();
                files.set(&seg_path(dst_seg), seg);
                let case = format!(
                    "closed={closed}: batch {src_seg}/{src_i} over batch {dst_seg}/{dst_i}"
                );
                assert_detected(&fx, &files, &case);
                cases += 1;
            }
        }
        assert!(cases > 30);
    }
}

/// A frame copied elsewhere and given a header that claims its new position (offset, seq,
/// count, log tag, CRC all valid): the records inside still carry the seqs they were written
/// with, and their CRCs cover those seqs.
#[test]
fn reheadered_frames_are_detected_by_record_seqs() {
    for closed in [true, false] {
        let fx = build(closed, 2);
        for (src_seg, src_i, dst_seg, dst_i) in [
            (0u64, 3u64, 46u64, 3u64),
            (23, 5, 23, 9),
            (69, 0, 92, 1),
            (46, 2, 0, 20),
            (92, 4, 92, 5),
        ] {
            let src = frame_bytes(fx.files.get(&seg_path(src_seg)), src_i);
            let dst_seg_bytes = fx.files.get(&seg_path(dst_seg)).clone();
            let dst = decode_frame_header(&frame_bytes(&dst_seg_bytes, dst_i)).unwrap();
            let mut forged = src.clone();
            // A valid header for the destination slot (the one that was there).
            let header = dst.encode_header();
            forged[..FH].copy_from_slice(&header);
            // The forged header describes the source body exactly.
            assert_eq!(decode_frame_header(&forged).unwrap().body_bytes, dst.body_bytes);
            let mut seg = dst_seg_bytes;
            put_frame(&mut seg, dst_i, &forged);
            let mut files = fx.files.clone();
            files.set(&seg_path(dst_seg), seg);
            let case = format!(
                "closed={closed}: records of {src_seg}/{src_i} under header {dst_seg}/{dst_i}"
            );
            assert_detected(&fx, &files, &case);
        }
    }
}

/// A segment file of another store at the same name: its header's log id differs.
#[test]
fn segments_of_another_store_are_foreign() {
    for closed in [true, false] {
        let fx = build(closed, 3);
        let other = build(closed, 4);
        for &b in &fx.bases {
            for with_index in [false, true] {
                let mut files = fx.files.clone();
                files.set(&seg_path(b), other.files.get(&seg_path(b)).clone());
                if with_index && other.files.0.iter().any(|(p, _)| *p == idx_path(b)) {
                    files.set(&idx_path(b), other.files.get(&idx_path(b)).clone());
                }
                let case =
                    format!("closed={closed}: segment {b} of another store (index {with_index})");
                let seen = assert_detected(&fx, &files, &case);
                assert_eq!(
                    corrupt_kind(&seen),
                    Some(&CorruptionKind::ForeignSegment),
                    "{case}: {seen:?}"
                );
            }
        }
    }
}

/// A segment of another store whose header was rewritten to this store's log id (header CRC
/// valid): every frame inside still carries the other store's log tag.
#[test]
fn foreign_frames_under_a_forged_header_are_detected() {
    for closed in [true, false] {
        let fx = build(closed, 5);
        let other = build(closed, 6);
        let own = SegmentHeader::decode(fx.files.get(&seg_path(0))).unwrap();
        for &b in &fx.bases {
            let mut seg = other.files.get(&seg_path(b)).clone();
            let h = SegmentHeader::decode(&seg).unwrap();
            seg[..64].copy_from_slice(&SegmentHeader { log_id: own.log_id, ..h }.encode());
            let mut files = fx.files.clone();
            files.set(&seg_path(b), seg);
            assert_detected(
                &fx,
                &files,
                &format!("closed={closed}: forged header on foreign segment {b}"),
            );
        }
    }
}

/// An older segment file renamed or copied into a gap, or over another segment: its header
/// names its own base.
#[test]
fn segments_under_the_wrong_name_are_detected() {
    let fx = build(true, 7);
    // Segment 23 moved to 46's name (46 gone): the header still says 23.
    let mut files = fx.files.clone();
    let s23 = files.get(&seg_path(23)).clone();
    files.remove(&seg_path(46));
    files.remove(&seg_path(23));
    files.set(&seg_path(46), s23.clone());
    let seen = assert_detected(&fx, &files, "23 renamed into the gap at 46");
    assert_eq!(
        corrupt_kind(&seen),
        Some(&CorruptionKind::SegmentNameMismatch { header: 23, name: 46 }),
        "{seen:?}"
    );
    // Segment 23 copied to 46's name, 23 still there.
    let mut files = fx.files.clone();
    files.set(&seg_path(46), s23.clone());
    let seen = assert_detected(&fx, &files, "23 copied over 46");
    assert!(
        matches!(corrupt_kind(&seen), Some(CorruptionKind::SegmentNameMismatch { .. })),
        "{seen:?}"
    );
    // A copy under a name inside 23's range.
    let mut files = fx.files.clone();
    files.set(&seg_path(30), s23.clone());
    let seen = assert_detected(&fx, &files, "23 copied to the name 30");
    assert!(
        matches!(corrupt_kind(&seen), Some(CorruptionKind::SegmentNameMismatch { .. })),
        "{seen:?}"
    );
    // Two segments swapped.
    let mut files = fx.files.clone();
    files.set(&seg_path(46), s23.clone());
    files.set(&seg_path(23), fx.files.get(&seg_path(46)).clone());
    let seen = assert_detected(&fx, &files, "23 and 46 swapped");
    assert!(
        matches!(corrupt_kind(&seen), Some(CorruptionKind::SegmentNameMismatch { .. })),
        "{seen:?}"
    );
    // Segment 23 under 46's name with a header forged to say 46: its seal and frames still
    // say 23..46, and 23's seal no longer reaches the next base.
    for keep_23 in [false, true] {
        let mut files = fx.files.clone();
        let mut forged = s23.clone();
        let h = SegmentHeader::decode(&forged).unwrap();
        forged[..64].copy_from_slice(&SegmentHeader { base_seq: 46, ..h }.encode());
        files.set(&seg_path(46), forged);
        if !keep_23 {
            files.remove(&seg_path(23));
        }
        assert_detected(
            &fx,
            &files,
            &format!("23 under 46 with a forged header (23 kept: {keep_23})"),
        );
    }
}

/// An older copy of a sealed segment (from before it was sealed) replacing it.
#[test]
fn a_stale_sealed_segment_is_detected() {
    for closed in [true, false] {
        let fx = build(closed, 8);
        let mut files = fx.files.clone();
        files.set(&seg_path(23), fx.stale_sealed.clone());
        let seen =
            assert_detected(&fx, &files, &format!("closed={closed}: stale copy of segment 23"));
        assert!(matches!(seen, Seen::OpenFailed(_)), "{seen:?}");
    }
}

/// An older copy of the last segment of a cleanly closed store: its index file (written
/// after the close frame was durable) says how far the segment reached, so the lost records
/// must not vanish silently.
#[test]
fn a_stale_last_segment_of_a_closed_store_is_detected() {
    let fx = build(true, 9);
    let mut files = fx.files.clone();
    files.set(&seg_path(92), fx.stale_last.clone());
    assert_detected(&fx, &files, "stale copy of the last segment, closed store");
}

// ---------------------------------------------------------------------------------------------
// Row 10: missing segments and wrong sizes.
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_segments_are_named() {
    for closed in [true, false] {
        let fx = build(closed, 10);
        for (gone, from, to) in
            [(&[46u64][..], 46u64, 69u64), (&[23, 46], 23, 69), (&[0], 0, 23), (&[0, 23], 0, 46)]
        {
            let mut files = fx.files.clone();
            for &b in gone {
                files.remove(&seg_path(b));
            }
            let seen = open_and_read(&fx, &files, &format!("segments {gone:?} deleted"));
            match seen {
                Seen::OpenFailed(Error::MissingSegments { from: f, to: t }) => {
                    assert_eq!((f, t), (from, to), "segments {gone:?} deleted")
                }
                other => panic!("segments {gone:?} deleted: {other:?}"),
            }
        }
    }
}

#[test]
fn a_missing_last_segment_is_a_sealed_tail() {
    for closed in [true, false] {
        let fx = build(closed, 11);
        for (gone, last) in [(&[92u64][..], 69u64), (&[69, 92], 46)] {
            let mut files = fx.files.clone();
            for &b in gone {
                files.remove(&seg_path(b));
                files.remove(&idx_path(b));
            }
            let case = format!("closed={closed}: segments {gone:?} deleted");
            match open_and_read(&fx, &files, &case) {
                Seen::OpenFailed(Error::Corrupt { file, kind, .. }) => {
                    assert_eq!(kind, CorruptionKind::SealedTail { next_seq: last + 23 }, "{case}");
                    assert_eq!(file, seg_path(last), "{case}");
                }
                other => panic!("{case}: {other:?}"),
            }
        }
    }
}

/// A sealed segment cut short at (nearly) every length: open fails, or (cut exactly at or
/// inside the seal frame, all records intact) the seal is completed and reported.
#[test]
fn truncated_sealed_segments_are_detected() {
    let fx = build(true, 12);
    let orig = fx.files.get(&seg_path(23)).clone();
    let len = orig.len();
    let seal_at = len - FH;
    for cut in (0..len).filter(|&c| c % 8 == 0 || c + 200 > len || c < 70 || c % 168 < 3) {
        let mut files = fx.files.clone();
        files.set(&seg_path(23), orig[..cut].to_vec());
        let case = format!("segment 23 cut to {cut} of {len}");
        match assert_detected(&fx, &files, &case) {
            Seen::OpenFailed(Error::Corrupt { .. }) => {
                assert!(cut < seal_at, "{case}: open failed although every record is there")
            }
            Seen::OpenFailed(e) => panic!("{case}: {e:?}"),
            Seen::Opened { report, visible, .. } => {
                assert!(cut >= seal_at, "{case}: opened with records missing: {report:?}");
                assert_eq!(report.seals_completed, vec![23], "{case}");
                assert_eq!(visible, fx.records.len() as u64, "{case}");
            }
        }
    }
}

/// A sealed segment with bytes after its seal: zeros (an interrupted roll that did not cut
/// the preallocation) may be cut; anything else is not the engine's to drop silently.
#[test]
fn extended_sealed_segments_keep_or_report_the_extra_bytes() {
    let fx = build(true, 13);
    let orig = fx.files.get(&seg_path(23)).clone();
    // Zeros: the state after an interrupted roll; the records are all there.
    let mut files = fx.files.clone();
    let mut zeros = orig.clone();
    zeros.resize(orig.len() + 1000, 0);
    files.set(&seg_path(23), zeros);
    match open_and_read(&fx, &files, "segment 23 + 1000 zero bytes") {
        Seen::Opened { visible, read_failed: false, .. } => {
            assert_eq!(visible, fx.records.len() as u64)
        }
        other => panic!("segment 23 + 1000 zero bytes: {other:?}"),
    }
    // Non-zero bytes after the seal: a misdirected write, or data of unknown origin.
    for extra in [8usize, 100, 1000] {
        let mut files = fx.files.clone();
        let mut seg = orig.clone();
        seg.extend((0..extra).map(|i| (i as u8) | 1));
        files.set(&seg_path(23), seg);
        let case = format!("segment 23 + {extra} non-zero bytes after its seal");
        let sim = SimFs::new(5);
        for (p, b) in &files.0 {
            sim.write_file_raw(p, b).unwrap();
        }
        match Log::open_with(Arc::new(sim.clone()), DIR, opts()) {
            Err(Error::Corrupt { .. }) => {}
            Err(e) => panic!("{case}: {e:?}"),
            Ok(log) => {
                let r = log.recovery_report().clone();
                drop(log);
                // If open went on, the bytes must still exist somewhere, and be reported.
                let names = annal::fs::Storage::read_dir(&sim, &seg_dir()).unwrap();
                let kept = names.iter().any(|n| {
                    let b = sim.current_bytes(seg_dir().join(n)).unwrap_or_default();
                    b.windows(extra.min(64)).any(|w| {
                        w == &(0..extra.min(64)).map(|i| (i as u8) | 1).collect::<Vec<_>>()[..]
                    })
                });
                assert!(kept, "{case}: the bytes were dropped; report {r:?}");
                let reported = r.truncated.is_some()
                    || !r.seals_completed.is_empty()
                    || !r.moved_aside.is_empty();
                assert!(reported, "{case}: unreported: {r:?}");
                assert_eq!(r.next_seq, fx.records.len() as u64, "{case}: records lost");
            }
        }
    }
}
