//! The worked example of format-spec.md §10, rebuilt byte for byte with the engine's encoders.
//!
//! The two dumps below are copied from format-spec.md §10, and one test reads the spec itself to
//! check that the copies still match it, so the spec, these literals and the code cannot drift
//! apart. Another test runs the real write path (open, append, close on `SimFs`) and checks that
//! it writes the same layout, with only the log id, the clock readings (segment creation time,
//! frame timestamps) and the checksums that cover them differing.
#![cfg(test)]

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{
    FrameKind, IndexEntry, IndexHeader, Placement, SegmentHeader, crc32, decode_frame_header,
    decode_index, decode_record_header, encode_batch, encode_index, encode_marker_frame, log_tag,
};
use crate::fs::SimFs;
use crate::limits::{FRAME_HEADER_BYTES, RECORD_BODY_BYTES_MAX, SEGMENT_HEADER_BYTES};
use crate::{Log, Options};

/// `segments/00000000000000000000.seg` of format-spec.md §10, as `hexdump -C` prints it.
const SEGMENT_HEXDUMP: &str = "\
00000000  41 4e 4e 41 4c 53 45 47  01 00 40 00 00 00 00 00  |ANNALSEG..@.....|
00000010  00 01 02 03 04 05 06 07  08 09 0a 0b 0c 0d 0e 0f  |................|
00000020  00 00 00 00 00 00 00 00  00 68 e5 cf 8b 01 00 00  |.........h......|
00000030  00 00 00 00 00 00 00 00  00 00 00 00 d8 64 46 f6  |.............dF.|
00000040  90 36 2a 15 01 00 00 00  25 00 00 00 02 00 00 00  |.6*.....%.......|
00000050  00 00 00 00 00 00 00 00  40 00 00 00 00 00 00 00  |........@.......|
00000060  40 00 00 00 00 00 00 00  00 01 02 03 04 05 06 07  |@...............|
00000070  00 40 1e 18 24 0a 06 00  c4 33 c1 0f 05 00 00 00  |.@..$....3......|
00000080  00 00 00 00 00 00 00 00  68 65 6c 6c 6f f1 c6 7f  |........hello...|
00000090  b7 00 00 00 00 01 00 00  00 00 00 00 00 00 00 00  |................|
000000a0  f2 c0 3d be 03 00 00 00  00 00 00 00 02 00 00 00  |..=.............|
000000b0  02 00 00 00 00 00 00 00  a0 00 00 00 00 00 00 00  |................|
000000c0  a0 00 00 00 00 00 00 00  00 01 02 03 04 05 06 07  |................|
000000d0  f4 41 1e 18 24 0a 06 00                           |.A..$...|
000000d8
";

/// `segments/00000000000000000000.idx` of format-spec.md §10, as `hexdump -C` prints it.
const INDEX_HEXDUMP: &str = "\
00000000  41 4e 4e 41 4c 49 44 58  01 00 40 00 01 00 00 00  |ANNALIDX..@.....|
00000010  00 01 02 03 04 05 06 07  08 09 0a 0b 0c 0d 0e 0f  |................|
00000020  00 00 00 00 00 00 00 00  a0 00 00 00 00 00 00 00  |................|
00000030  02 00 00 00 00 00 00 00  32 ec 65 d4 16 30 b9 c4  |........2.e..0..|
00000040  00 00 00 00 00 00 00 00  40 00 00 00 00 00 00 00  |........@.......|
00000050  00 40 1e 18 24 0a 06 00                           |.@..$...|
00000058
";

/// The example's log id: the bytes 00 01 02 ... 0f.
const LOG_ID: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
/// The example segment's creation time.
const CREATED_UNIX_MS: u64 = 1_700_000_000_000;
/// The example batch frame's timestamp (microseconds since the Unix epoch).
const BATCH_US: u64 = 1_700_000_000_000_000;
/// The example close frame's timestamp, half a millisecond later.
const CLOSE_US: u64 = 1_700_000_000_000_500;
/// The example batch.
const PAYLOADS: [&[u8]; 2] = [b"hello", b""];
/// Where the batch goes: right after the segment header.
const BATCH_AT: u64 = SEGMENT_HEADER_BYTES as u64;
/// Where the close frame goes: after the 56-byte frame header, 37 bytes of records, 3 of
/// padding.
const CLOSE_AT: u64 = 160;
/// The example segment's length: the close frame ends the file.
const SEGMENT_LEN: usize = 216;
/// The example index's length: the header and one 24-byte entry.
const INDEX_LEN: usize = 88;

/// The clock readings of one write of the example: the segment's creation time and the two
/// frame timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Times {
    created_unix_ms: u64,
    batch_us: u64,
    close_us: u64,
}

/// The times of format-spec.md §10.
const SPEC_TIMES: Times =
    Times { created_unix_ms: CREATED_UNIX_MS, batch_us: BATCH_US, close_us: CLOSE_US };

/// Parses `hexdump -C` output: each line is an offset, up to 16 hex bytes, and an optional
/// `|ascii|` column; a last line holding only an offset gives the total length. Every offset
/// is checked against the bytes before it, so a line dropped or duplicated in a copy is caught.
fn parse_hexdump(dump: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ended = false;
    for line in dump.lines().filter(|l| !l.trim().is_empty()) {
        assert!(!ended, "bytes after the final offset line: {line:?}");
        let hex = line.split('|').next().unwrap();
        let mut tokens = hex.split_whitespace();
        let offset = usize::from_str_radix(tokens.next().unwrap(), 16).unwrap();
        assert_eq!(offset, out.len(), "offset column of {line:?}");
        let before = out.len();
        for t in tokens {
            assert_eq!(t.len(), 2, "byte token {t:?} in {line:?}");
            out.push(u8::from_str_radix(t, 16).unwrap());
        }
        let n = out.len() - before;
        assert!(n <= 16, "more than 16 bytes in {line:?}");
        ended = n == 0;
    }
    assert!(ended, "the dump must end with a line holding only the total length");
    out
}

/// The example segment, built with the engine's encoders.
fn example_segment(log_id: [u8; 16], t: Times) -> Vec<u8> {
    let tag = log_tag(&log_id);
    let header = SegmentHeader { log_id, base_seq: 0, created_unix_ms: t.created_unix_ms };
    let mut seg = header.encode().to_vec();
    let batch = Placement {
        seq: 0,
        file_offset: BATCH_AT,
        synced_through: BATCH_AT,
        log_tag: tag,
        timestamp_us: t.batch_us,
    };
    encode_batch(&mut seg, batch, &PAYLOADS);
    assert_eq!(seg.len() as u64, CLOSE_AT);
    let close = Placement {
        seq: 2,
        file_offset: CLOSE_AT,
        synced_through: CLOSE_AT,
        log_tag: tag,
        timestamp_us: t.close_us,
    };
    seg.extend_from_slice(&encode_marker_frame(FrameKind::Close, 2, close));
    seg
}

/// The example index after the clean close, built with the engine's encoder.
fn example_index(log_id: [u8; 16], batch_us: u64) -> Vec<u8> {
    let header = IndexHeader { log_id, segment_base: 0, end_offset: CLOSE_AT, end_seq: 2 };
    encode_index(&header, &[IndexEntry { seq: 0, offset: BATCH_AT, timestamp_us: batch_us }])
}

/// The text of the fenced block that follows `marker` in `doc`.
fn fenced_block_after<'a>(doc: &'a str, marker: &str) -> &'a str {
    let at = doc.find(marker).unwrap_or_else(|| panic!("format-spec.md lacks {marker:?}"));
    let rest = &doc[at..];
    let open = rest.find("```text\n").expect("a ```text block after the marker") + 8;
    let len = rest[open..].find("```").expect("the block's closing fence");
    &rest[open..open + len]
}

/// Microseconds since the Unix epoch, as the writer reads its clock.
fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

#[test]
fn crc_is_the_documented_crc32() {
    // format-spec.md §1: the standard check value of CRC-32/ISO-HDLC, and the empty string.
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(b""), 0);
}

#[test]
fn segment_bytes_match_the_spec() {
    let expected = parse_hexdump(SEGMENT_HEXDUMP);
    assert_eq!(expected.len(), SEGMENT_LEN);
    assert_eq!(example_segment(LOG_ID, SPEC_TIMES), expected);
}

#[test]
fn index_bytes_match_the_spec() {
    let expected = parse_hexdump(INDEX_HEXDUMP);
    assert_eq!(expected.len(), INDEX_LEN);
    assert_eq!(example_index(LOG_ID, BATCH_US), expected);
}

#[test]
fn the_dumps_here_are_the_dumps_in_the_spec() {
    let doc = include_str!("../../../format-spec.md");
    for (marker, dump) in [
        ("<!-- spec_example.rs: SEGMENT_HEXDUMP -->", SEGMENT_HEXDUMP),
        ("<!-- spec_example.rs: INDEX_HEXDUMP -->", INDEX_HEXDUMP),
    ] {
        assert_eq!(fenced_block_after(doc, marker), dump, "{marker}");
    }
}

#[test]
fn the_spec_bytes_decode_to_the_documented_fields() {
    let seg = parse_hexdump(SEGMENT_HEXDUMP);
    let h = SegmentHeader::decode(&seg).unwrap();
    assert_eq!(h, SegmentHeader { log_id: LOG_ID, base_seq: 0, created_unix_ms: CREATED_UNIX_MS });
    assert_eq!(CREATED_UNIX_MS, 0x0000_018B_CFE5_6800);
    let tag = log_tag(&LOG_ID);
    assert_eq!(tag, 0x0706_0504_0302_0100);
    assert_eq!((BATCH_US, CLOSE_US), (0x0006_0A24_181E_4000, 0x0006_0A24_181E_41F4));

    let batch = decode_frame_header(&seg[64..]).unwrap();
    assert_eq!(batch.kind, FrameKind::Batch);
    assert_eq!((batch.body_bytes, batch.count, batch.seq), (37, 2, 0));
    assert_eq!((batch.file_offset, batch.synced_through, batch.log_tag), (64, 64, tag));
    assert_eq!(batch.timestamp_us, BATCH_US);
    assert_eq!(64 + batch.total_bytes(), CLOSE_AT);

    let (r0, p0) = decode_record_header(&seg[120..], 0, RECORD_BODY_BYTES_MAX).unwrap();
    assert_eq!((r0.crc, r0.payload_bytes, r0.seq, p0), (0x0FC1_33C4, 5, 0, &b"hello"[..]));
    let (r1, p1) = decode_record_header(&seg[141..], 1, RECORD_BODY_BYTES_MAX).unwrap();
    assert_eq!((r1.crc, r1.payload_bytes, r1.seq, p1), (0xB77F_C6F1, 0, 1, &b""[..]));
    assert_eq!(&seg[157..160], &[0, 0, 0], "padding");

    let close = decode_frame_header(&seg[CLOSE_AT as usize..]).unwrap();
    assert_eq!(close.kind, FrameKind::Close);
    assert_eq!((close.body_bytes, close.count, close.seq), (0, 2, 2));
    assert_eq!((close.file_offset, close.synced_through, close.log_tag), (160, 160, tag));
    assert_eq!(close.timestamp_us, CLOSE_US);
    assert_eq!(CLOSE_AT + close.total_bytes(), seg.len() as u64);

    // The checksums the spec quotes, and the bytes each covers (format-spec.md §3, §4, §5).
    let stored = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    assert_eq!(stored(&seg, 60), 0xF646_64D8);
    assert_eq!(crc32(&seg[0..60]), 0xF646_64D8);
    assert_eq!(stored(&seg, 64), 0x152A_3690);
    assert_eq!(crc32(&seg[68..120]), 0x152A_3690);
    // A record's CRC runs over its payload, then its header bytes 4..16.
    let record_crc = |payload: &[u8], fields: &[u8]| crc32(&[payload, fields].concat());
    assert_eq!(stored(&seg, 120), 0x0FC1_33C4);
    assert_eq!(record_crc(&seg[136..141], &seg[124..136]), 0x0FC1_33C4);
    assert_eq!(stored(&seg, 141), 0xB77F_C6F1);
    assert_eq!(record_crc(&seg[157..157], &seg[145..157]), 0xB77F_C6F1);
    assert_eq!(stored(&seg, 160), 0xBE3D_C0F2);
    assert_eq!(crc32(&seg[164..216]), 0xBE3D_C0F2);

    let idx = parse_hexdump(INDEX_HEXDUMP);
    let (ih, entries) = decode_index(&idx).unwrap();
    let want = IndexHeader { log_id: LOG_ID, segment_base: 0, end_offset: CLOSE_AT, end_seq: 2 };
    assert_eq!(ih, want);
    assert_eq!(entries, vec![IndexEntry { seq: 0, offset: 64, timestamp_us: BATCH_US }]);
    assert_eq!(stored(&idx, 56), 0xD465_EC32);
    assert_eq!(crc32(&idx[64..88]), 0xD465_EC32);
    assert_eq!(stored(&idx, 60), 0xC4B9_3016);
    assert_eq!(crc32(&idx[0..60]), 0xC4B9_3016);
}

#[test]
fn the_engine_writes_the_example_layout() {
    // The real write path: a fresh store, one append of the example batch, a clean close. The
    // log id is random and the clock is real, so the expected bytes are built with the store's
    // own id, creation time and frame timestamps; everything else must be exactly §10.
    let sim = SimFs::new(0x5bec);
    let storage = Arc::new(sim.clone());
    let opts = Options { segment_bytes: 4096, max_record_bytes: 1024, ..Options::default() };
    let before_us = now_us();
    let log = Log::open_with(storage, "/store", opts).unwrap();
    let log_id = log.log_id();
    let appended = log.append(&PAYLOADS).unwrap();
    assert_eq!((appended.first, appended.count), (0, 2));
    log.close().unwrap();
    let after_us = now_us();

    let dir = Path::new("/store/segments");
    let seg = sim.durable_bytes(dir.join("00000000000000000000.seg")).unwrap();
    assert_eq!(seg.len(), SEGMENT_LEN, "cut after the close frame");
    assert_eq!(seg.len() as u64, CLOSE_AT + FRAME_HEADER_BYTES as u64);
    let times = Times {
        created_unix_ms: SegmentHeader::decode(&seg).unwrap().created_unix_ms,
        batch_us: decode_frame_header(&seg[BATCH_AT as usize..]).unwrap().timestamp_us,
        close_us: decode_frame_header(&seg[CLOSE_AT as usize..]).unwrap().timestamp_us,
    };
    // The clock readings are the writer's: within the test's run, and never going back.
    assert!((before_us / 1000..=after_us / 1000).contains(&times.created_unix_ms), "{times:?}");
    assert!(before_us <= times.batch_us, "{times:?}");
    assert!(times.batch_us <= times.close_us && times.close_us <= after_us, "{times:?}");
    assert_eq!(seg, example_segment(log_id, times));
    let idx = sim.durable_bytes(dir.join("00000000000000000000.idx")).unwrap();
    assert_eq!(idx.len(), INDEX_LEN);
    assert_eq!(idx, example_index(log_id, times.batch_us));
}
