//! `inspect` and `repair` must hand on only bytes whose checksum they checked, also when the
//! file changes between two reads of it (another process ignoring `LOCK`, a failing disk
//! returning a different page on a re-read). A storage wrapper serves a segment whose big
//! record reads back, from some read on, as a different record: a header claiming fewer
//! payload bytes with a CRC that is valid over those, followed by bytes no CRC covers, which
//! together with the checked ones decode as an event of stream `forged`.
//!
//! Reading the length from one read and checking the CRC in another let those unchecked
//! bytes through: the survey counted a `forged` event, and a salvage listed `forged` among
//! the set-aside streams. Copying a record first and checking the copy, with the copy's own
//! length, reports the change instead.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use annal::format::{EventBody, record_crc};
use annal::fs::{LockGuard, OpenMode, Preallocation, StdFs, Storage, StorageFile};
use annal::inspect::{SurveyOptions, survey_with};
use annal::limits::RECORD_HEADER_BYTES;
use annal::repair::{RepairOptions, repair_with};
use annal::{ExpectedVersion, NewEvent, Options, Store, StoreOptions};

/// Payload bytes of the big event's data: more than a read window (256 KiB), so that a
/// reader needs a read of its own for the whole record.
const BIG_DATA_BYTES: usize = 320 << 10;
const BIG_MARKER: &[u8] = b"BIG-EVENT-DATA";
const STREAM: &str = "victim";

/// The record that changes: where it is, its bytes, and what it reads back as.
#[derive(Debug)]
struct Change {
    segment: PathBuf,
    at: u64,
    original: Vec<u8>,
    altered: Vec<u8>,
    /// Reads covering the whole record from this one on (counting from 1) get `altered`.
    from_read: usize,
    covering_reads: AtomicUsize,
}

#[derive(Debug, Clone)]
struct Changing(Arc<Change>);

#[derive(Debug)]
struct ChangingFile {
    inner: Box<dyn StorageFile>,
    change: Option<Arc<Change>>,
}

impl StorageFile for ChangingFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let n = self.inner.read_at(buf, offset)?;
        if let Some(c) = &self.change {
            let end = c.at + c.original.len() as u64;
            if offset <= c.at && offset + n as u64 >= end {
                let k = c.covering_reads.fetch_add(1, Ordering::SeqCst) + 1;
                if k >= c.from_read {
                    let rel = (c.at - offset) as usize;
                    buf[rel..rel + c.altered.len()].copy_from_slice(&c.altered);
                }
            }
        }
        Ok(n)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn preallocate(&self, len: u64) -> io::Result<Preallocation> {
        self.inner.preallocate(len)
    }
    fn map(&self) -> io::Result<Option<memmap2::Mmap>> {
        // Positioned reads only, so that every read passes through `read_at`.
        Ok(None)
    }
}

impl Storage for Changing {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        let inner = StdFs.open(path, mode)?;
        let change = (path == self.0.segment).then(|| Arc::clone(&self.0));
        Ok(Box::new(ChangingFile { inner, change }))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        StdFs.create_dir_all(path)
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        StdFs.read_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdFs.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        StdFs.remove_file(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        StdFs.sync_dir(path)
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        StdFs.exists(path)
    }
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        StdFs.try_lock(path)
    }
}

/// Writes a store whose last batch holds a small and a big event of `STREAM`, after
/// `before` single-event batches, and returns its only segment.
fn write_store(dir: &Path, before: &[&str]) -> PathBuf {
    let log = Options { segment_bytes: 2 << 20, max_record_bytes: 1 << 20, ..Options::default() };
    let store = Store::open(dir, StoreOptions { log, ..StoreOptions::default() }).unwrap();
    for data in before {
        store
            .append(STREAM, ExpectedVersion::Any, &[NewEvent::new("Small", data.to_string())])
            .unwrap();
    }
    let mut big = BIG_MARKER.to_vec();
    big.resize(BIG_DATA_BYTES, b'x');
    let events = [NewEvent::new("Small", "first of the batch"), NewEvent::new("Big", big)];
    store.append(STREAM, ExpectedVersion::Any, &events).unwrap();
    store.close().unwrap();
    let seg_dir = dir.join("segments");
    let mut segs: Vec<PathBuf> = std::fs::read_dir(&seg_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    assert_eq!(segs.len(), 1, "{segs:?}");
    segs.pop().unwrap()
}

/// The big record of `segment` and what it changes into.
fn change(segment: &Path, from_read: usize) -> Change {
    let bytes = std::fs::read(segment).unwrap();
    let marker = bytes.windows(BIG_MARKER.len()).position(|w| w == BIG_MARKER).unwrap();
    let body_at = marker - (32 + STREAM.len() + "Big".len());
    let at = body_at - RECORD_HEADER_BYTES;
    let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap());
    let seq = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap());
    let end = body_at + len as usize;
    let crc = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    assert_eq!(crc, record_crc(len, seq, &bytes[body_at..end]), "not the record's header");
    // A body of the same total length, of another stream; the header covers only a prefix.
    let data = vec![b'F'; len as usize - (32 + "forged".len() + 1)];
    let forged = EventBody {
        stream_id: "forged",
        event_type: "E",
        event_id: [7; 16],
        metadata: &[],
        data: &data,
    };
    let mut body = Vec::new();
    forged.encode_into(&mut body);
    assert_eq!(body.len(), len as usize);
    let checked = len - 4096;
    let mut altered = Vec::with_capacity(RECORD_HEADER_BYTES + body.len());
    altered.extend_from_slice(&record_crc(checked, seq, &body[..checked as usize]).to_le_bytes());
    altered.extend_from_slice(&checked.to_le_bytes());
    altered.extend_from_slice(&seq.to_le_bytes());
    altered.extend_from_slice(&body);
    Change {
        segment: segment.to_path_buf(),
        at: at as u64,
        original: bytes[at..end].to_vec(),
        altered,
        from_read,
        covering_reads: AtomicUsize::new(0),
    }
}

#[test]
fn survey_decodes_only_checked_bytes_when_a_record_changes_between_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let segment = write_store(&dir, &[]);
    // Unchanged, the survey sees the two events of `victim`.
    let steady = Changing(Arc::new(change(&segment, usize::MAX)));
    let s = survey_with(&steady, &dir, SurveyOptions::default(), &mut |_, _| {}).unwrap();
    assert_eq!(s.streams.keys().collect::<Vec<_>>(), [STREAM], "{:?}", s.findings);
    assert!(!s.has_problems(), "{:?}", s.findings);
    let whole_reads = steady.0.covering_reads.load(Ordering::SeqCst);
    assert!(whole_reads >= 2, "the survey read the big record whole {whole_reads} times");

    // The record reads back changed from the second whole read on: the batch check passed
    // on the first; the events are decoded from the second.
    let changing = Changing(Arc::new(change(&segment, 2)));
    let result = survey_with(&changing, &dir, SurveyOptions::default(), &mut |_, _| {});
    assert!(changing.0.covering_reads.load(Ordering::SeqCst) >= 2);
    match result {
        Ok(s) => {
            assert!(!s.streams.contains_key("forged"), "unchecked bytes decoded: {s:#?}");
            assert!(s.has_problems(), "the change went unreported: {:?}", s.findings);
        }
        Err(e) => println!("survey reports the change: {e}"),
    }
}

#[test]
fn salvage_decodes_only_checked_bytes_when_a_record_changes_between_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let segment = write_store(&dir, &["kept", "DAMAGE-ME"]);
    // Damage the second batch: its frame header still decodes, its record does not, and the
    // batch after it (synced after it) proves it was durable: mid-log damage.
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = bytes.windows(9).position(|w| w == b"DAMAGE-ME").unwrap();
    bytes[at] ^= 0x20;
    std::fs::write(&segment, &bytes).unwrap();
    let opts = RepairOptions { dry_run: true, salvage: true };

    let steady = Changing(Arc::new(change(&segment, usize::MAX)));
    let report = repair_with(Arc::new(steady.clone()), &dir, opts, &mut |_, _| {}).unwrap();
    let salvage = report.salvage.expect("a salvage plan");
    assert_eq!(salvage.streams.keys().collect::<Vec<_>>(), [STREAM], "{salvage:?}");
    assert!(steady.0.covering_reads.load(Ordering::SeqCst) >= 1);

    // Changed from the first whole read on: the salvage probe read the record's length
    // before, in a read that did not hold the whole record.
    let changing = Changing(Arc::new(change(&segment, 1)));
    let report = repair_with(Arc::new(changing.clone()), &dir, opts, &mut |_, _| {}).unwrap();
    assert!(changing.0.covering_reads.load(Ordering::SeqCst) >= 1);
    let salvage = report.salvage.expect("a salvage plan");
    assert!(!salvage.streams.contains_key("forged"), "unchecked bytes decoded: {salvage:#?}");
    assert!(salvage.undecodable_records >= 1, "{salvage:?}");
}
