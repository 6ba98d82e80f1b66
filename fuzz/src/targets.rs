//! The body of every fuzz target, shared by the cargo-fuzz binaries (`fuzz_targets/*.rs`) and
//! the stable-toolchain regression runner (`tools/tests/fuzz_corpus.rs`), which both include
//! this file with `#[path = ...] mod targets;`. It depends on `annal` and `std` only.
//!
//! Every function takes arbitrary bytes and must not panic except through the assertions
//! here, which state properties the decoders promise (RELIABILITY.md rows 19, 20 and 22): a
//! structure that decodes re-encodes to exactly the bytes it came from (so no field escapes
//! its checksum or its checks), and a store that opens can be read, appended to and reopened.

use std::path::Path;
use std::sync::Arc;

use annal::format::{
    FrameKind, Placement, SegmentHeader, SnapshotFile, decode_frame_header, decode_index,
    decode_record_header, encode_batch, encode_index, record_crc,
};
use annal::fs::SimFs;
use annal::limits::{
    FRAME_HEADER_BYTES, RECORD_BODY_BYTES_MAX, RECORD_HEADER_BYTES, SEGMENT_BYTES_MIN,
    SEGMENT_HEADER_BYTES,
};
use annal::{Log, Options};

/// Whether the input was accepted as a valid structure (or, for `open_dir`, a store that
/// opened and read back without error). The regression runner checks seed files named
/// `valid-*` and `invalid-*` against this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Decoded (or opened and read) without error.
    Accepted,
    /// Rejected with an error, as malformed input must be.
    Rejected,
}

/// The store directory inside the simulated file system of `open_dir`.
pub const STORE_DIR: &str = "/store";

/// Options `open_dir` opens stores with: the smallest segments, so a few KiB of input can hold
/// several; no preallocation, so no allocation depends on a configured size.
pub fn open_dir_options() -> Options {
    Options {
        segment_bytes: SEGMENT_BYTES_MIN,
        max_record_bytes: 1024,
        index_interval_bytes: 256,
        preallocate: false,
        ..Options::default()
    }
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    let bytes = b.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// `SegmentHeader::decode` on arbitrary bytes.
pub fn segment_header(data: &[u8]) -> Outcome {
    match SegmentHeader::decode(data) {
        Ok(h) => {
            assert_eq!(
                &h.encode()[..],
                &data[..SEGMENT_HEADER_BYTES],
                "header re-encodes differently"
            );
            Outcome::Accepted
        }
        Err(_) => Outcome::Rejected,
    }
}

/// `decode_record_header` on the input as a lone record, then `decode_frame_header` on it as
/// a frame; a batch frame whose body is present has its records decoded too.
pub fn frame(data: &[u8]) -> Outcome {
    // As a lone record, expecting the seq the record claims, so the seq check passes whenever
    // the checksum does and the fuzzer can reach past it.
    let claimed = le_u64(data, 8).unwrap_or(0);
    if let Ok((h, payload)) = decode_record_header(data, claimed, RECORD_BODY_BYTES_MAX) {
        assert_eq!(payload.len(), h.payload_bytes as usize);
        assert_eq!(h.seq, claimed);
        assert_eq!(record_crc(h.payload_bytes, h.seq, payload), h.crc);
        assert_eq!(payload, &data[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + payload.len()]);
    }

    let Ok(f) = decode_frame_header(data) else { return Outcome::Rejected };
    assert_eq!(&f.encode_header()[..], &data[..FRAME_HEADER_BYTES], "frame re-encodes differently");
    assert!(f.synced_through <= f.file_offset);
    if f.kind != FrameKind::Batch {
        assert_eq!(f.body_bytes, 0);
        return Outcome::Accepted;
    }
    assert!(f.count >= 1);
    let body_end = FRAME_HEADER_BYTES + f.body_bytes as usize;
    let Some(body) = data.get(FRAME_HEADER_BYTES..body_end) else {
        return Outcome::Rejected;
    };
    let mut payloads = Vec::new();
    let mut pos = 0usize;
    for i in 0..u64::from(f.count) {
        let Some(rest) = body.get(pos..) else { return Outcome::Rejected };
        let Ok((h, payload)) = decode_record_header(rest, f.seq + i, RECORD_BODY_BYTES_MAX) else {
            return Outcome::Rejected;
        };
        payloads.push(payload);
        pos += RECORD_HEADER_BYTES + h.payload_bytes as usize;
    }
    if pos != body.len() {
        return Outcome::Rejected;
    }
    // Every record decoded: the batch re-encodes to the same bytes (padding aside, which the
    // decoder does not read).
    let mut out = Vec::new();
    let at = Placement {
        seq: f.seq,
        file_offset: f.file_offset,
        synced_through: f.synced_through,
        log_tag: f.log_tag,
        timestamp_us: f.timestamp_us,
    };
    encode_batch(&mut out, at, &payloads);
    assert_eq!(&out[..body_end], &data[..body_end], "batch re-encodes differently");
    Outcome::Accepted
}

/// `decode_index` on arbitrary bytes.
pub fn index_file(data: &[u8]) -> Outcome {
    match decode_index(data) {
        Ok((h, entries)) => {
            assert_eq!(encode_index(&h, &entries), data, "index re-encodes differently");
            for pair in entries.windows(2) {
                assert!(pair[0].seq < pair[1].seq && pair[0].offset < pair[1].offset);
            }
            for e in &entries {
                assert!(e.seq >= h.segment_base && e.seq < h.end_seq && e.offset < h.end_offset);
            }
            Outcome::Accepted
        }
        Err(_) => Outcome::Rejected,
    }
}

/// `SnapshotFile::decode` (format-spec.md §13): an accepted snapshot re-encodes to exactly
/// its bytes.
pub fn snapshot_file(data: &[u8]) -> Outcome {
    match SnapshotFile::decode(data) {
        Ok(snap) => {
            assert_eq!(snap.encode().as_deref(), Ok(data), "snapshot re-encodes differently");
            Outcome::Accepted
        }
        Err(_) => Outcome::Rejected,
    }
}

/// The files of a store directory that `open_dir` builds from its input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirImage {
    /// Segment files: `(base seq used in the file name, bytes)`.
    pub segments: Vec<(u64, Vec<u8>)>,
    /// The index file of the last segment, if any.
    pub last_index: Option<Vec<u8>>,
}

/// Control byte bit: the input holds an index file for the last segment after the segments.
const WITH_INDEX: u8 = 1 << 2;
/// Control byte bit: name segments 0, 1, 2 instead of after the base seq in their header.
const NAME_BY_POSITION: u8 = 1 << 3;

/// Splits fuzz input into a store directory:
///
/// ```text
/// control u8   bits 0-1: segment files - 1 (1..=3; 3 counts as 2), bit 2: WITH_INDEX,
///              bit 3: NAME_BY_POSITION
/// len u32 LE   for every chunk but the last (clamped to the bytes left)
/// chunks       segment files in order, then the index file if WITH_INDEX
/// ```
///
/// A segment is named after the base seq its header claims (bytes 32..40), so real segments
/// keep their names, unless NAME_BY_POSITION is set or the chunk is too short to say.
pub fn split_dir(data: &[u8]) -> DirImage {
    let Some((&control, mut rest)) = data.split_first() else { return DirImage::default() };
    let segments = 1 + usize::from(control & 0b11).min(2);
    let with_index = control & WITH_INDEX != 0;
    let chunks = segments + usize::from(with_index);
    let mut lens = Vec::with_capacity(chunks);
    for _ in 1..chunks {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else { break };
        lens.push(u32::from_le_bytes(*len) as usize);
        rest = tail;
    }
    let mut parts = Vec::with_capacity(chunks);
    for len in lens {
        let (part, tail) = rest.split_at(len.min(rest.len()));
        parts.push(part.to_vec());
        rest = tail;
    }
    parts.push(rest.to_vec());
    parts.resize(chunks, Vec::new());
    let last_index = if with_index { parts.pop() } else { None };
    let by_position = control & NAME_BY_POSITION != 0;
    let segments = parts
        .into_iter()
        .enumerate()
        .map(|(i, bytes)| {
            let named = if by_position { None } else { le_u64(&bytes, 32) };
            (named.unwrap_or(i as u64), bytes)
        })
        .collect();
    DirImage { segments, last_index }
}

/// The inverse of [`split_dir`] for images it can express (used to write seed inputs).
pub fn join_dir(image: &DirImage) -> Vec<u8> {
    let mut chunks: Vec<&[u8]> = image.segments.iter().map(|(_, b)| b.as_slice()).collect();
    assert!((1..=3).contains(&chunks.len()));
    let mut control = (chunks.len() - 1) as u8;
    if let Some(ix) = &image.last_index {
        control |= WITH_INDEX;
        chunks.push(ix);
    }
    let mut out = vec![control];
    for c in &chunks[..chunks.len() - 1] {
        out.extend_from_slice(&u32::try_from(c.len()).unwrap().to_le_bytes());
    }
    for c in chunks {
        out.extend_from_slice(c);
    }
    out
}

/// Writes `image` into a fresh simulated file system, as a store left on disk.
pub fn build_dir(image: &DirImage) -> SimFs {
    let sim = SimFs::new(0);
    let dir = Path::new(STORE_DIR);
    sim.write_file_raw(dir.join("LOCK"), b"").unwrap();
    let mut last = None;
    for (base, bytes) in &image.segments {
        sim.write_file_raw(dir.join(format!("segments/{base:020}.seg")), bytes).unwrap();
        last = Some(*base);
    }
    if let (Some(base), Some(ix)) = (last, &image.last_index) {
        sim.write_file_raw(dir.join(format!("segments/{base:020}.idx")), ix).unwrap();
    }
    sim
}

/// Builds a store directory from the input (see [`split_dir`]) in a `SimFs`, opens it with
/// `Log::open_with` and, if it opens, reads every record with a cursor. A store that opened
/// must also take an append, close cleanly, and reopen clean with that append readable.
pub fn open_dir(data: &[u8]) -> Outcome {
    let image = split_dir(data);
    let sim = build_dir(&image);
    let storage: Arc<dyn annal::fs::Storage> = Arc::new(sim.clone());
    let Ok(log) = Log::open_with(Arc::clone(&storage), STORE_DIR, open_dir_options()) else {
        return Outcome::Rejected;
    };
    let next = log.recovery_report().next_seq;
    assert_eq!(log.visible_end(), next);
    let mut read = 0u64;
    let mut outcome = Outcome::Accepted;
    for item in log.cursor(0) {
        match item {
            Ok(rec) => {
                assert_eq!(rec.seq, read, "cursor skipped or repeated a seq");
                assert!(rec.payload.len() <= 1024, "record above max_record_bytes returned");
                read += 1;
            }
            Err(_) => {
                // Damage inside a sealed segment is found on read, not at open: its seal
                // frame vouches for it without a scan.
                outcome = Outcome::Rejected;
                break;
            }
        }
    }
    if outcome == Outcome::Accepted {
        assert_eq!(read, next, "cursor ended before the recovered head");
    }

    // The recovered store is writable and its state survives a clean close.
    let appended = log.append(&[b"after recovery"]);
    let Ok(a) = appended else { return Outcome::Rejected };
    assert_eq!(a.first, next, "append after recovery got the wrong seq");
    if log.close().is_err() {
        return Outcome::Rejected;
    }
    let log = match Log::open_with(storage, STORE_DIR, open_dir_options()) {
        Ok(log) => log,
        Err(e) => panic!("a store that opened and closed cleanly fails to reopen: {e}"),
    };
    let r = log.recovery_report();
    assert!(r.clean, "clean close did not give a clean open: {r:?}");
    assert_eq!(r.next_seq, next + 1);
    match log.read(next) {
        Ok(rec) => assert_eq!(&rec.payload[..], b"after recovery"),
        Err(e) => panic!("the append after recovery is not readable after reopen: {e}"),
    }
    outcome
}

/// `EventBody::decode` on arbitrary bytes (format-spec.md §11). An accepted body re-encodes
/// to exactly the input, its ids are within their limits, and its parts add up to the input.
pub fn event_body(data: &[u8]) -> Outcome {
    use annal::format::EventBody;
    use annal::limits::{EVENT_HEADER_BYTES, EVENT_TYPE_BYTES_MAX, STREAM_ID_BYTES_MAX};
    let Ok(body) = EventBody::decode(data) else {
        // The cheaper stream-id-only decode agrees with the full one.
        assert!(EventBody::decode_stream_id(data).is_err(), "stream id decoded alone");
        return Outcome::Rejected;
    };
    assert!((1..=STREAM_ID_BYTES_MAX).contains(&body.stream_id.len()));
    assert!((1..=EVENT_TYPE_BYTES_MAX).contains(&body.event_type.len()));
    assert_eq!(body.encoded_len(), data.len());
    assert!(data.len() >= EVENT_HEADER_BYTES);
    assert_eq!(EventBody::decode_stream_id(data), Ok(body.stream_id));
    let mut out = Vec::new();
    body.encode_into(&mut out);
    assert_eq!(out, data, "event body re-encodes differently");
    Outcome::Accepted
}

/// Rewrites a would-be checkpoint's checksums and lengths (and, if `log_id` is given, its log
/// id) so that they are consistent: the fuzzer then reaches the structure instead of stopping
/// at a checksum. Version 1 (byte 8 = 1): `body_bytes`, `body_crc`. Otherwise (version 2,
/// format-spec.md §12.2): `body_bytes` clamped to the file, each seq block's `block_crc` and
/// the `recent_crc` as far as the directory parses, then `body_crc`. Then the header `crc`.
/// Shorter inputs are returned as they are.
pub fn fix_checkpoint(data: &[u8], log_id: Option<[u8; 16]>) -> Vec<u8> {
    use annal::format::crc32;
    use annal::limits::CHECKPOINT_HEADER_BYTES as H;
    let mut out = data.to_vec();
    if out.len() < H {
        return out;
    }
    if let Some(id) = log_id {
        out[16..32].copy_from_slice(&id);
    }
    let u64_at = |b: &[u8], at: usize| -> Option<u64> {
        b.get(at..at + 8).map(|s| u64::from_le_bytes(s.try_into().unwrap()))
    };
    if out[8] == 1 {
        let body_len = (out.len() - H) as u64;
        out[40..48].copy_from_slice(&body_len.to_le_bytes());
    } else {
        let dir_len = u64_at(&out, 40).unwrap().min((out.len() - H) as u64);
        out[40..48].copy_from_slice(&dir_len.to_le_bytes());
        let dir_end = H + dir_len as usize;
        let streams = u32::from_le_bytes(out[52..56].try_into().unwrap());
        // Walk the directory; fix each block's CRC where the block lies in the file.
        let (mut at, mut block_at) = (H, dir_end);
        for _ in 0..streams.min(1 << 16) {
            let Some(id_len) = out.get(at..at + 2) else { break };
            let id_len = u16::from_le_bytes(id_len.try_into().unwrap()) as usize;
            let fields = at + 2 + id_len;
            let (Some(bytes), true) = (u64_at(&out, fields + 8), fields + 20 <= dir_end) else {
                break;
            };
            let end = (block_at as u64).saturating_add(bytes).min(out.len() as u64) as usize;
            let crc = crc32(&out[block_at..end]);
            out[fields + 16..fields + 20].copy_from_slice(&crc.to_le_bytes());
            block_at = end;
            at = fields + 20;
        }
        if at + 4 <= dir_end {
            let crc = crc32(&out[block_at..]);
            out[at..at + 4].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let body_len = u64_at(&out, 40).unwrap() as usize;
    let body_crc = crc32(&out[H..H + body_len]);
    out[48..52].copy_from_slice(&body_crc.to_le_bytes());
    let crc = crc32(&out[..60]);
    out[60..64].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a checkpoint whole and checks what an accepted one promises (format-spec.md §12):
/// it re-encodes exactly in its own version, and a version 2 file read part by part (the
/// directory, then each block and the recent ids, as a store reads it) gives the same.
fn check_checkpoint(data: &[u8]) -> Outcome {
    use annal::format::{
        CheckpointDirectory, CheckpointHeader, StreamCheckpoint, decode_recent, decode_seq_block,
    };
    // The bound a store of 2^16 events would give: no input allocates more.
    const MAX_SEQS: u64 = 1 << 16;
    let Ok(ck) = StreamCheckpoint::decode_bounded(data, MAX_SEQS) else {
        return Outcome::Rejected;
    };
    let h = CheckpointHeader::decode(data).unwrap();
    if h.version == 1 {
        assert_eq!(ck.encode_v1(), data, "version 1 checkpoint re-encodes differently");
    } else {
        assert_eq!(ck.encode(), data, "version 2 checkpoint re-encodes differently");
        let dir = &data[64..64 + h.body_bytes as usize];
        let dir = CheckpointDirectory::decode(&h, dir, data.len() as u64, MAX_SEQS).unwrap();
        let part =
            |s: &annal::format::SectionRef| &data[s.offset as usize..(s.offset + s.bytes) as usize];
        for (d, s) in dir.streams.iter().zip(&ck.streams) {
            assert_eq!(d.id, s.id);
            assert_eq!(decode_seq_block(part(&d.block), d, ck.covered_seq).unwrap(), s.seqs);
        }
        assert_eq!(decode_recent(part(&dir.recent), &dir).unwrap(), ck.recent);
    }
    for s in &ck.streams {
        assert!(!s.id.is_empty());
        assert!(s.seqs.windows(2).all(|w| w[0] < w[1]), "seqs not increasing");
        assert!(s.seqs.iter().all(|&q| q < ck.covered_seq), "seq at or past covered_seq");
    }
    for r in &ck.recent {
        let s = &ck.streams[r.stream as usize];
        assert_eq!(s.seqs[r.version as usize], r.seq, "recent id names no indexed event");
    }
    Outcome::Accepted
}

/// The files of a small closed store (three streams, one roll) and its log id: the store the
/// `stream_checkpoint` target opens with a fuzzed checkpoint. Built once per process.
/// A store's files (name relative to the store directory, bytes) and its log id.
type StoreFiles = (Vec<(String, Vec<u8>)>, [u8; 16]);

fn checkpoint_store() -> &'static StoreFiles {
    use annal::fs::Storage;
    use annal::{ExpectedVersion, NewEvent, Store, StoreOptions};
    static STORE: std::sync::OnceLock<StoreFiles> = std::sync::OnceLock::new();
    STORE.get_or_init(|| {
        let sim = SimFs::new(7);
        let opts = StoreOptions { log: open_dir_options(), ..StoreOptions::default() };
        let store = Store::open_with(Arc::new(sim.clone()), STORE_DIR, opts).unwrap();
        for i in 0..40u32 {
            let stream = ["order-1", "order-2", "user-7"][i as usize % 3];
            let ev = NewEvent::new("Happened", format!("event {i} ").repeat(i as usize % 9 + 1));
            store.append(stream, ExpectedVersion::Any, &[ev]).unwrap();
        }
        let log_id = store.log().log_id();
        store.close().unwrap();
        let seg_dir = Path::new(STORE_DIR).join("segments");
        let mut files = Vec::new();
        let mut names = sim.read_dir(&seg_dir).unwrap();
        names.sort();
        for n in names {
            let bytes = sim.current_bytes(seg_dir.join(&n)).unwrap();
            files.push((format!("segments/{n}"), bytes));
        }
        files.push(("LOCK".into(), Vec::new()));
        (files, log_id)
    })
}

/// The stream checkpoint `streams.ckpt` (format-spec.md §12, both versions):
/// `StreamCheckpoint::decode` on the input as it is, then on the input with its lengths and checksums made consistent (see
/// [`fix_checkpoint`]). An accepted checkpoint re-encodes exactly. Then the fixed input, with
/// the log id of a small real store, is planted as that store's checkpoint and the store is
/// opened and read: a checkpoint is a cache whose content is not cross-checked against the
/// log (§12 "Not checked"), so a lying one may give wrong stream reads, but never a panic,
/// a hang or an unbounded allocation, and the log itself (`read_all`) stays intact. A version
/// 2 file is read by parts there: a block that fails its check is rebuilt from the log or
/// refused with an error.
pub fn stream_checkpoint(data: &[u8]) -> Outcome {
    use annal::{CheckpointState, Direction, ExpectedVersion, NewEvent, Store, StoreOptions};
    let outcome = check_checkpoint(data);
    check_checkpoint(&fix_checkpoint(data, None));
    let (files, log_id) = checkpoint_store();
    let planted = fix_checkpoint(data, Some(*log_id));
    let sim = SimFs::new(0);
    let dir = Path::new(STORE_DIR);
    for (name, bytes) in files {
        sim.write_file_raw(dir.join(name), bytes).unwrap();
    }
    sim.write_file_raw(dir.join("streams.ckpt"), &planted).unwrap();
    let opts = StoreOptions { log: open_dir_options(), ..StoreOptions::default() };
    let store = match Store::open_with(Arc::new(sim.clone()), STORE_DIR, opts) {
        Ok(s) => s,
        // Replay after a checkpoint that lies about covered events may meet a record it
        // cannot place; an error is an acceptable answer to a lying cache.
        Err(_) => return outcome,
    };
    let loaded = matches!(store.recovery().checkpoint, CheckpointState::Loaded { .. });
    let mut n = 0u64;
    for rec in store.log().cursor(0) {
        let rec = rec.unwrap_or_else(|e| panic!("the log went bad under a checkpoint: {e}"));
        assert_eq!(rec.seq, n);
        n += 1;
    }
    assert_eq!(n, 40, "the log lost records");
    // With a lying index an event may be reported as "not in the index": an error, not a
    // panic.
    for ev in store.read_all(0) {
        if !loaded {
            ev.unwrap_or_else(|e| panic!("read_all after a full replay: {e}"));
        }
    }
    for s in store.streams() {
        for dir in [Direction::Forward, Direction::Backward] {
            let _ = store.read_stream(&s, 0, dir, 64);
        }
        let _ = store.read_stream_as_of(&s, 20);
        let _ = store.stream_version(&s);
    }
    for cat in ["order", "user", "x"] {
        let _ = store.read_category(cat, 0, 64);
    }
    let _ = store.append("order-1", ExpectedVersion::Any, &[NewEvent::new("Again", "x")]);
    if !loaded {
        // A rejected checkpoint means a full replay: the index is exactly the log's.
        assert_eq!(store.streams(), ["order-1", "order-2", "user-7"]);
    }
    let _ = store.close();
    outcome
}

/// Reads bytes of an `ops` input; past its end every read is 0.
struct OpReader<'a>(&'a [u8]);

impl OpReader<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

/// Most operations one `ops` input runs, so that one execution stays short.
pub const OPS_MAX: usize = 64;

/// Payload `j` of the `n` of append number `idx`: its own name, then `len` filler bytes.
fn ops_payload(idx: usize, j: usize, n: usize, len: usize) -> Vec<u8> {
    let mut p = format!("{idx}.{j}.{n}:").into_bytes();
    p.extend((0..len).map(|k| (idx * 31 + j * 7 + k) as u8));
    p
}

fn parse_ops_payload(p: &[u8]) -> Option<(usize, usize, usize)> {
    let colon = p.iter().position(|&b| b == b':')?;
    let name = std::str::from_utf8(&p[..colon]).ok()?;
    let mut it = name.split('.').map(|x| x.parse::<usize>().ok());
    let (idx, j, n) = (it.next()??, it.next()??, it.next()??);
    let len = p.len() - colon - 1;
    (it.next().is_none() && ops_payload(idx, j, n, len) == p).then_some((idx, j, n))
}

/// What the `ops` oracle knows about the log.
#[derive(Default)]
struct OpsModel {
    /// Records certainly in the log, seqs `0..len`: what the last open recovered (a writer's
    /// open makes all of it durable) plus acknowledged records once `durable_head` covered them.
    durable: Vec<Vec<u8>>,
    /// Records acknowledged in this session and not yet covered by `durable_head`, by seq.
    acked: std::collections::BTreeMap<u64, Vec<u8>>,
    /// Payloads of every append attempted, by append number.
    attempted: Vec<Vec<Vec<u8>>>,
    /// A fault was armed since the last open: errors are allowed from here on.
    tainted: bool,
}

impl OpsModel {
    /// Moves acknowledged records that `durable_head` now covers into `durable`.
    fn advance(&mut self, log: &Log) {
        let head = log.durable_head().map_or(0, |h| h + 1);
        while (self.durable.len() as u64) < head {
            let seq = self.durable.len() as u64;
            let Some(p) = self.acked.remove(&seq) else {
                // Only acknowledged records become durable in a session, in order.
                panic!("durable_head {head} covers seq {seq}, which was never acknowledged");
            };
            self.durable.push(p);
        }
    }

    /// What the model says is at `seq`, if it knows.
    fn known(&self, seq: u64) -> Option<&Vec<u8>> {
        self.durable.get(seq as usize).or_else(|| self.acked.get(&seq))
    }

    /// Checks the records of a freshly opened log against the model and makes them the new
    /// durable prefix. `exact`: a clean close preceded the open, so nothing may be missing.
    fn recovered(&mut self, log: &Log, exact: bool, ctx: &str) {
        let mut recs: Vec<Vec<u8>> = Vec::new();
        for r in log.cursor(0) {
            let r = r.unwrap_or_else(|e| panic!("{ctx}: read after reopen: {e}"));
            assert_eq!(r.seq, recs.len() as u64, "{ctx}: cursor seqs not dense");
            recs.push(r.payload.to_vec());
        }
        assert_eq!(log.visible_end(), recs.len() as u64, "{ctx}: cursor ended early");
        for (seq, p) in self.durable.iter().enumerate() {
            assert_eq!(recs.get(seq), Some(p), "{ctx}: durable seq {seq} lost or changed");
        }
        if exact {
            for (&seq, p) in &self.acked {
                assert_eq!(recs.get(seq as usize), Some(p), "{ctx}: acked seq {seq} after close");
            }
            let want = self.durable.len() + self.acked.len();
            assert_eq!(recs.len(), want, "{ctx}: a clean close kept more or fewer records");
        }
        // Everything recovered was attempted, once, intact, with its batch whole and in order.
        let mut seen = std::collections::HashSet::new();
        let mut at = 0usize;
        while at < recs.len() {
            let Some((idx, j, n)) = parse_ops_payload(&recs[at]) else {
                panic!("{ctx}: seq {at} holds bytes never written");
            };
            assert_eq!(j, 0, "{ctx}: seq {at} starts in the middle of batch {idx}");
            let batch = self.attempted.get(idx).unwrap_or_else(|| panic!("{ctx}: batch {idx}"));
            assert_eq!(batch.len(), n, "{ctx}");
            assert!(seen.insert(idx), "{ctx}: batch {idx} recovered twice");
            for (k, p) in batch.iter().enumerate() {
                assert_eq!(recs.get(at + k), Some(p), "{ctx}: batch {idx} torn at seq {at}");
            }
            at += n;
        }
        self.durable = recs;
        self.acked.clear();
        self.tainted = false;
    }
}

/// Options of the `ops` target from its control byte.
fn ops_options(control: u8, extra: u8) -> Options {
    let durability = match control & 0b11 {
        1 => annal::Durability::Batched {
            max_delay: std::time::Duration::from_secs(3600),
            max_bytes: 64 * (1 + u64::from(extra)),
        },
        2 => annal::Durability::None,
        _ => annal::Durability::Sync,
    };
    Options {
        segment_bytes: SEGMENT_BYTES_MIN,
        max_record_bytes: 512,
        index_interval_bytes: 256,
        durability,
        preallocate: control & 0b100 != 0,
        ..Options::default()
    }
}

/// End to end: a `Log` on a `SimFs` driven by a fuzzed sequence of operations (appends of
/// assorted batches, syncs, clean close and reopen, power loss in every crash mode, injected
/// fsync and write failures, a full disk, point reads, a read-only open beside the writer),
/// checked against a model after every step (RELIABILITY.md's crash oracle):
///
/// - without an injected fault since the last open, every operation succeeds;
/// - a point read returns what the model says is at that seq;
/// - `durable_head` only ever covers acknowledged records (and, under `Sync`, covers every
///   acknowledged one at once);
/// - after any reopen: every durable record is there, unchanged; everything recovered was
///   attempted, exactly once, with its batch whole; seqs are dense; after a clean close
///   nothing acknowledged is missing. A reopen may fail only while an injected fault is
///   still armed; after clearing faults and another power loss it must succeed.
///
/// Input: a control byte (bits 0-1 durability: Sync, Batched, None, Sync; bit 2 preallocate),
/// a byte for the SimFs seed and the Batched byte threshold, then operations, one opcode byte
/// each followed by its argument bytes (see the match below).
pub fn ops(data: &[u8]) -> Outcome {
    use annal::fs::{CrashMode, Storage};
    let mut input = OpReader(data);
    let control = input.u8();
    let extra = input.u8();
    let opts = ops_options(control, extra);
    let is_sync = opts.durability == annal::Durability::Sync;
    let sim = SimFs::new(u64::from(extra) | u64::from(control) << 8);
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let open =
        |storage: &Arc<dyn Storage>| Log::open_with(Arc::clone(storage), STORE_DIR, opts.clone());
    let mut log = open(&storage).expect("a fresh store opens");
    let mut m = OpsModel::default();
    let mut step = 0usize;
    // `ANNAL_OPS_DEBUG=1` prints each operation (for replaying a finding).
    let debug = std::env::var_os("ANNAL_OPS_DEBUG").is_some();
    while !input.done() && step < OPS_MAX {
        step += 1;
        let ctx = format!("op {step}");
        let op = input.u8() % 12;
        if debug {
            eprintln!("{ctx}: opcode {op}, rest {:?}", &input.0[..input.0.len().min(8)]);
        }
        match op {
            // Append a batch of 1-4 records of 0-255 filler bytes each.
            0..=3 => {
                let n = 1 + usize::from(input.u8() % 4);
                let idx = m.attempted.len();
                let batch: Vec<Vec<u8>> =
                    (0..n).map(|j| ops_payload(idx, j, n, usize::from(input.u8()))).collect();
                m.attempted.push(batch.clone());
                match log.append(&batch) {
                    Ok(a) => {
                        assert_eq!(a.count as usize, n, "{ctx}");
                        let expect = (m.durable.len() + m.acked.len()) as u64;
                        assert_eq!(
                            a.first, expect,
                            "{ctx}: append got seq {} not {expect}",
                            a.first
                        );
                        for (k, p) in batch.into_iter().enumerate() {
                            m.acked.insert(a.first + k as u64, p);
                        }
                        if is_sync {
                            let head = log.durable_head().map_or(0, |h| h + 1);
                            assert!(head >= a.first + n as u64, "{ctx}: Sync ack not durable");
                        }
                    }
                    Err(e) => assert!(m.tainted, "{ctx}: append failed without a fault: {e}"),
                }
            }
            4 => {
                if let Err(e) = log.sync() {
                    assert!(m.tainted, "{ctx}: sync failed without a fault: {e}");
                }
            }
            // Power loss, in one of the three crash modes.
            5 => {
                let mode = match input.u8() % 3 {
                    0 => CrashMode::Random,
                    1 => CrashMode::KeepAll,
                    _ => CrashMode::DropAll,
                };
                sim.crash_with(mode);
                drop(log);
                log = match open(&storage) {
                    Ok(l) => l,
                    Err(e) => {
                        assert!(m.tainted, "{ctx}: reopen after power loss failed: {e}");
                        // A fault still armed hit the recovery itself: clear it, lose power
                        // again, and recovery must succeed now.
                        sim.clear_faults();
                        sim.crash();
                        open(&storage).unwrap_or_else(|e| panic!("{ctx}: second reopen: {e}"))
                    }
                };
                // Faults armed but not hit by the recovery are dropped: the model starts
                // again from a store without faults.
                sim.clear_faults();
                m.recovered(&log, false, &ctx);
            }
            // Clean close and reopen (in-process: the page cache survives).
            6 => {
                let closed = log.close();
                if debug {
                    eprintln!("{ctx}: close: {closed:?}");
                }
                if let Err(e) = &closed {
                    assert!(m.tainted, "{ctx}: close failed without a fault: {e}");
                } else {
                    // A clean close makes everything acknowledged durable.
                    let acked = std::mem::take(&mut m.acked);
                    m.durable.extend(acked.into_values());
                }
                sim.clear_faults();
                if m.tainted {
                    // A failed directory fsync shut the simulated file system down until the
                    // next crash; a crash that keeps everything is the in-process reopen's
                    // equivalent.
                    sim.crash_with(CrashMode::KeepAll);
                }
                log = open(&storage).unwrap_or_else(|e| panic!("{ctx}: reopen after close: {e}"));
                m.recovered(&log, closed.is_ok(), &ctx);
            }
            7 => {
                m.tainted = true;
                sim.fail_sync_at(u64::from(input.u8() % 8));
            }
            8 => {
                m.tainted = true;
                let arg = input.u8();
                sim.fail_write_at(u64::from(arg % 8), arg & 0x80 != 0);
            }
            9 => {
                m.tainted = true;
                sim.set_capacity(Some(sim.used_bytes() + 64 * u64::from(input.u8())));
            }
            // Point read of a visible seq.
            10 => {
                let end = log.visible_end();
                if end > 0 {
                    let seq = u64::from(input.u8()) * 7 % end;
                    match log.read(seq) {
                        Ok(r) => {
                            let want = m.known(seq).unwrap_or_else(|| {
                                panic!("{ctx}: seq {seq} is visible but was never acknowledged")
                            });
                            assert_eq!(&r.payload[..], &want[..], "{ctx}: read of seq {seq}");
                        }
                        Err(e) => assert!(m.tainted, "{ctx}: read of seq {seq}: {e}"),
                    }
                }
            }
            // A read-only open beside the writer sees a prefix of what the writer wrote.
            _ => match Log::open_read_only_with(Arc::clone(&storage), STORE_DIR, opts.clone()) {
                Ok(ro) => {
                    for r in ro.cursor(0) {
                        let Ok(r) = r else { break };
                        if let Some(want) = m.known(r.seq) {
                            assert_eq!(&r.payload[..], &want[..], "{ctx}: read-only seq {}", r.seq);
                        }
                    }
                }
                Err(e) => assert!(m.tainted, "{ctx}: read-only open failed: {e}"),
            },
        }
        m.advance(&log);
    }
    // Finally: lose power and check once more.
    sim.clear_faults();
    sim.crash();
    drop(log);
    let log = open(&storage).unwrap_or_else(|e| panic!("final reopen failed: {e}"));
    m.recovered(&log, false, "final");
    Outcome::Accepted
}
