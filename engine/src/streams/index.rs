//! The in-memory stream index: stream id -> the seqs of its events in log order, categories,
//! and the recent event ids that make retries idempotent.
//!
//! A stream version is the position of an event among its stream's events, so the index is
//! entirely derived from the log and can always be rebuilt from it.
//!
//! Loaded from a version 2 checkpoint (format-spec.md §12.2), a stream's seqs stay in the
//! file until the stream is first read: the index knows the stream's event count (enough
//! for appends and version checks) and keeps the seqs appended since. A lookup that needs
//! the unread seqs returns [`Unloaded`]; the store reads the blocks (`CheckpointSource`),
//! or rebuilds them from the log when a block fails its check, and [`StreamIndex::install`]s
//! them. The recent-id window likewise stays in the file until an append needs it.

use std::collections::VecDeque;

use foldhash::HashMap;
use std::sync::Arc;

use crate::format::{
    CheckpointDirectory, CheckpointId, CheckpointStream, SectionRef, SeqBlock, StreamCheckpoint,
    decode_recent, decode_seq_block,
};
use crate::fs::StorageFile;

/// Where an event id was written, remembered for idempotent retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdEntry {
    /// The stream, by its number ([`StreamIndex::stream_number`]): a plain number keeps the
    /// window's 100,000 entries small and free of reference counts (an `Arc` per entry cost
    /// an atomic operation on every insert and a cache miss on every eviction).
    pub stream: usize,
    pub version: u64,
    pub seq: u64,
}

/// The version 2 checkpoint file an index was loaded from, kept open for the parts not read
/// yet. It stays readable when a newer checkpoint replaces its name (the handle keeps it).
#[derive(Debug)]
pub(crate) struct CheckpointSource {
    file: Box<dyn StorageFile>,
    dir: CheckpointDirectory,
}

impl CheckpointSource {
    /// A checkpoint whose directory passed its checks (and the store's) and the open file.
    pub(crate) fn new(file: Box<dyn StorageFile>, dir: CheckpointDirectory) -> Self {
        CheckpointSource { file, dir }
    }

    /// Its covered seq.
    pub(crate) fn covered_seq(&self) -> u64 {
        self.dir.covered_seq
    }

    /// Entries of its id window.
    pub(crate) fn recent_count(&self) -> u64 {
        u64::from(self.dir.recent_count)
    }

    fn read(&self, s: &SectionRef) -> Result<Vec<u8>, String> {
        // The directory checked every section against the file's length, which the store
        // bounded by `CHECKPOINT_BYTES_MAX` before reading anything.
        let mut buf = vec![0u8; usize::try_from(s.bytes).map_err(|e| e.to_string())?];
        self.file.read_exact_at(&mut buf, s.offset).map_err(|e| e.to_string())?;
        Ok(buf)
    }

    /// Reads, checks and decodes the seq block of directory entry `slot`.
    pub(crate) fn read_block(&self, slot: u32) -> Result<Vec<u64>, String> {
        let s = self.dir.streams.get(slot as usize).ok_or("no such checkpoint stream")?;
        let bytes = self.read(&s.block)?;
        decode_seq_block(&bytes, s, self.dir.covered_seq).map_err(|e| e.to_string())
    }

    /// Reads the encoded seq block of `slot` as it is, for a new checkpoint, if its CRC holds.
    fn raw_block(&self, slot: u32) -> Result<SeqBlock<'static>, String> {
        let s = self.dir.streams.get(slot as usize).ok_or("no such checkpoint stream")?;
        let bytes = self.read(&s.block)?;
        if crate::format::crc32(&bytes) != s.block.crc {
            return Err("checksum mismatch".into());
        }
        Ok(SeqBlock::Encoded { seq_count: s.seq_count, bytes, crc: s.block.crc })
    }

    /// Reads, checks and decodes the recent-id section.
    pub(crate) fn read_recent(&self) -> Result<Vec<CheckpointId>, String> {
        let bytes = self.read(&self.dir.recent)?;
        decode_recent(&bytes, &self.dir).map_err(|e| e.to_string())
    }
}

/// What a lookup needs read from the checkpoint before it can answer.
#[derive(Debug, Default)]
pub(crate) struct Unloaded {
    /// Streams whose seqs are still in the checkpoint file.
    pub streams: Vec<Arc<str>>,
    /// The recent-id window is still in the checkpoint file.
    pub recent: bool,
}

/// A stream's seqs. With `lazy`, the first `lazy.count` are still in the checkpoint file and
/// `seqs` holds only those appended since it was loaded.
#[derive(Debug, Default, PartialEq, Eq)]
struct Entry {
    seqs: Vec<u64>,
    lazy: Option<Lazy>,
}

/// A stream's seq block not read yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lazy {
    /// Its directory entry.
    slot: u32,
    /// Its seqs (all below the loaded checkpoint's covered seq).
    count: u64,
}

impl Entry {
    fn len(&self) -> u64 {
        self.lazy.map_or(0, |l| l.count) + self.seqs.len() as u64
    }
}

/// A category's seqs. While `unloaded` of its streams from the checkpoint are unread, `seqs`
/// holds only those appended since the load, and the rest is merged from `members` once the
/// last is read.
#[derive(Debug, Default, PartialEq, Eq)]
struct Category {
    seqs: Vec<u64>,
    members: Vec<Arc<str>>,
    unloaded: usize,
}

/// The index proper.
#[derive(Debug, Default)]
pub(crate) struct StreamIndex {
    streams: HashMap<Arc<str>, Entry>,
    categories: HashMap<Arc<str>, Category>,
    recent: IdWindow,
    /// Numbers of the streams the id window refers to, and their ids by number (streams
    /// are never removed, so a number stays valid).
    numbers: HashMap<Arc<str>, usize>,
    names: Vec<Arc<str>>,
    /// The id window as a checkpoint gave it (oldest first, at most `recent_max`), not yet in
    /// `recent`: an open leaves it here, and the first append (the only reader of the window)
    /// moves it into the map, so that opening a store does not hash up to 100,000 ids it may
    /// never need. Empty once moved; never filled again.
    pending: PendingIds,
    /// The id window is still unread in `source` (a version 2 checkpoint): the store reads
    /// it ([`StreamIndex::install_recent`]) before the first append or replay.
    recent_unread: bool,
    recent_max: usize,
    events: u64,
    /// The version 2 checkpoint the index was loaded from, while parts of it are unread
    /// (dropped, and the file closed, once every block and the id window are read).
    source: Option<Arc<CheckpointSource>>,
    /// Streams whose block is unread.
    unread_streams: usize,
    /// The loaded checkpoint's covered seq and event count (0 and `None` without one).
    loaded_covered: u64,
    loaded_events: Option<u64>,
    /// Some part of the loaded checkpoint failed its check and was rebuilt from the log.
    repaired: bool,
}

/// The recent-id window: where each of the last ids indexed was written, and their order.
///
/// The ids the store generates are UUID v7, which begin with their millisecond and, from
/// one process, strictly increase (`streams::ids`). So the window keeps the ids that arrive
/// in increasing order in a ring, oldest first, which is then also sorted by id: a new id
/// is a push at its back, the oldest leaves from its front, and a lookup is a binary search.
/// A hash map of 100,000 entries (several MB) cost a cache miss or two for each insert and
/// each eviction, most of an append's time in the index. An id that is not above the ring's
/// last (a caller's own id, which may be anything, or a clock that stepped back between
/// processes) goes into a hash map with its own order instead; eviction takes the older of
/// the two fronts by insertion number. A caller's id above the generated ones (a random v4
/// id, most of the time) sends the generated ids after it to the map until it leaves the
/// window: as slow as a hash map alone, never slower.
#[derive(Debug, Default)]
struct IdWindow {
    /// Ids in increasing order, which is also their insertion order.
    sorted: VecDeque<(u128, Slot)>,
    /// The other ids ...
    others: HashMap<u128, Slot>,
    /// ... oldest first, with their insertion numbers.
    others_order: VecDeque<(u128, u64)>,
    /// Insertions so far (the next one's number).
    inserted: u64,
}

/// An id's entry and its insertion number.
#[derive(Debug)]
struct Slot {
    at: u64,
    entry: IdEntry,
}

/// An id as the window's key: the id as a big-endian number, so in byte order.
fn id_key(id: &[u8; 16]) -> u128 {
    uuid::Uuid::from_bytes(*id).as_u128()
}

impl IdWindow {
    fn len(&self) -> usize {
        self.sorted.len() + self.others.len()
    }

    fn find_sorted(&self, key: u128) -> Option<usize> {
        if self.sorted.back().is_none_or(|&(last, _)| key > last) {
            return None;
        }
        self.sorted.binary_search_by_key(&key, |&(k, _)| k).ok()
    }

    fn get(&self, id: &[u8; 16]) -> Option<&IdEntry> {
        let key = id_key(id);
        match self.find_sorted(key) {
            Some(i) => self.sorted.get(i).map(|(_, s)| &s.entry),
            None => self.others.get(&key).map(|s| &s.entry),
        }
    }

    /// Remembers `id` at `entry`; an id already there keeps its place in the order and takes
    /// the new entry.
    fn insert(&mut self, id: &[u8; 16], entry: IdEntry) {
        let key = id_key(id);
        if let Some(s) = self.others.get_mut(&key) {
            s.entry = entry;
            return;
        }
        let at = self.inserted;
        if self.sorted.back().is_none_or(|&(last, _)| key > last) {
            self.sorted.push_back((key, Slot { at, entry }));
        } else if let Some(s) = self.find_sorted(key).and_then(|i| self.sorted.get_mut(i)) {
            s.1.entry = entry;
            return;
        } else {
            self.others.insert(key, Slot { at, entry });
            self.others_order.push_back((key, at));
        }
        self.inserted += 1;
    }

    /// Forgets the oldest id.
    fn evict_oldest(&mut self) {
        let sorted_first = self.sorted.front().map(|(_, s)| s.at);
        let others_first = self.others_order.front().map(|&(_, at)| at);
        match (sorted_first, others_first) {
            (Some(a), Some(b)) if b < a => self.evict_other(),
            (None, Some(_)) => self.evict_other(),
            _ => {
                self.sorted.pop_front();
            }
        }
    }

    fn evict_other(&mut self) {
        if let Some((key, _)) = self.others_order.pop_front() {
            self.others.remove(&key);
        }
    }

    /// The ids and their entries, oldest first.
    fn iter(&self) -> impl Iterator<Item = ([u8; 16], &IdEntry)> {
        let mut sorted = self.sorted.iter().map(|(k, s)| (*k, s)).peekable();
        let mut others = self
            .others_order
            .iter()
            .filter_map(|(k, _)| self.others.get(k).map(|s| (*k, s)))
            .peekable();
        std::iter::from_fn(move || {
            let take_other = match (sorted.peek(), others.peek()) {
                (Some((_, a)), Some((_, b))) => b.at < a.at,
                (None, _) => true,
                (Some(_), None) => false,
            };
            let next = if take_other { others.next() } else { sorted.next() };
            next.map(|(k, s)| (uuid::Uuid::from_u128(k).into_bytes(), &s.entry))
        })
    }

    fn reserve(&mut self, n: usize) {
        self.sorted.reserve(n);
    }

    /// Approximate heap bytes.
    fn heap_bytes(&self) -> u64 {
        let ring = self.sorted.capacity() * std::mem::size_of::<(u128, Slot)>();
        let map = self.others.capacity() * (std::mem::size_of::<(u128, Slot)>() + 1);
        let order = self.others_order.capacity() * std::mem::size_of::<(u128, u64)>();
        (ring + map + order) as u64
    }
}

/// Equal when they hold the same ids with the same entries in the same order.
impl PartialEq for IdWindow {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for IdWindow {}

/// The id window of a checkpoint, not yet hashed.
#[derive(Debug, Default)]
struct PendingIds {
    /// The checkpoint's stream ids, by their index in the checkpoint.
    keys: Vec<Arc<str>>,
    /// The ids, oldest first; `stream` indexes `keys`.
    ids: Vec<CheckpointId>,
}

/// The category of a stream: the part before its first `-` (`order-42` is in `order`).
/// Streams without a `-` have no category.
pub fn category_of(stream: &str) -> Option<&str> {
    stream.split_once('-').map(|(c, _)| c).filter(|c| !c.is_empty())
}

/// The position of `seq` in the strictly increasing `seqs`, if it is there.
///
/// A few interpolation steps first (a stream's seqs tend to be spread evenly over the log;
/// a stream written alone is dense, found in one step), then a binary search of what is
/// left, so a skewed stream costs at most a few probes more than a binary search. A point
/// read of a large stream would otherwise pay about 20 cache misses here.
fn position(seqs: &[u64], seq: u64) -> Option<usize> {
    let (mut lo, mut hi) = (0usize, seqs.len());
    for _ in 0..4 {
        if hi - lo <= 16 {
            break;
        }
        let (&first, &last) = (seqs.get(lo)?, seqs.get(hi - 1)?);
        if seq < first || seq > last {
            return None;
        }
        // Strictly increasing seqs whose span is their count are consecutive: `seq` is at
        // its distance from `first`, found without reading that entry (in a large stream,
        // the probe below is a cache miss, most of a store point read's own cost).
        if last - first == (hi - 1 - lo) as u64 {
            return Some(lo + (seq - first) as usize);
        }
        // first < last: the seqs are strictly increasing and there are more than 16.
        let span = (hi - 1 - lo) as u128;
        let guess = lo + (u128::from(seq - first) * span / u128::from(last - first)) as usize;
        match seqs.get(guess)?.cmp(&seq) {
            std::cmp::Ordering::Equal => return Some(guess),
            std::cmp::Ordering::Less => lo = guess + 1,
            std::cmp::Ordering::Greater => hi = guess,
        }
    }
    let rest = seqs.get(lo..hi)?;
    rest.binary_search(&seq).ok().map(|i| lo + i)
}

impl StreamIndex {
    pub(crate) fn new(recent_max: usize) -> Self {
        StreamIndex { recent_max, ..StreamIndex::default() }
    }

    fn need(&self, stream: &str) -> Unloaded {
        let key = self.streams.get_key_value(stream).map(|(k, _)| Arc::clone(k));
        Unloaded { streams: key.into_iter().collect(), recent: false }
    }

    /// The seqs of a stream (all written, durable or not), if it exists.
    pub(crate) fn seqs(&self, stream: &str) -> Result<Option<&[u64]>, Unloaded> {
        match self.streams.get(stream) {
            None => Ok(None),
            Some(e) if e.lazy.is_some() => Err(self.need(stream)),
            Some(e) => Ok(Some(&e.seqs)),
        }
    }

    /// The seqs of a category's streams, in log order.
    pub(crate) fn category_seqs(&self, category: &str) -> Result<Option<&[u64]>, Unloaded> {
        match self.categories.get(category) {
            None => Ok(None),
            Some(c) if c.unloaded > 0 => {
                let lazy =
                    |m: &&Arc<str>| self.streams.get(&***m).is_some_and(|e| e.lazy.is_some());
                let streams = c.members.iter().filter(lazy).cloned().collect();
                Err(Unloaded { streams, recent: false })
            }
            Some(c) => Ok(Some(&c.seqs)),
        }
    }

    /// Number of events written to `stream` (its next version).
    pub(crate) fn len_of(&self, stream: &str) -> u64 {
        self.streams.get(stream).map_or(0, Entry::len)
    }

    /// Number of events of `stream` below seq `visible` (never needs the checkpoint: its
    /// seqs are all below its covered seq, which is at most the visible end).
    pub(crate) fn visible_len(&self, stream: &str, visible: u64) -> u64 {
        self.streams.get(stream).map_or(0, |e| {
            let below = e.seqs.partition_point(|&s| s < visible) as u64;
            e.lazy.map_or(0, |l| l.count) + below
        })
    }

    /// The version of the event at `seq` in `stream`, if it is one of its events.
    pub(crate) fn version_of(&self, stream: &str, seq: u64) -> Result<Option<u64>, Unloaded> {
        self.version_near(stream, seq, u64::MAX)
    }

    /// [`StreamIndex::version_of`], trying version `hint` first: a scan in log order knows
    /// each stream's next version, which spares it the binary search.
    pub(crate) fn version_near(
        &self,
        stream: &str,
        seq: u64,
        hint: u64,
    ) -> Result<Option<u64>, Unloaded> {
        let Some(e) = self.streams.get(stream) else { return Ok(None) };
        let base = match e.lazy {
            // Appended since the load: in the kept seqs.
            Some(l) if seq >= self.loaded_covered => l.count,
            Some(_) => return Err(self.need(stream)),
            None => 0,
        };
        let seqs = &e.seqs;
        let hinted = hint.checked_sub(base).and_then(|h| usize::try_from(h).ok());
        Ok(match hinted.and_then(|h| seqs.get(h).map(|&s| (h, s))) {
            Some((h, s)) if s == seq => Some(base + h as u64),
            _ => position(seqs, seq).map(|v| base + v as u64),
        })
    }

    /// Whether `stream` has an event below seq `visible`.
    pub(crate) fn has_visible(&self, stream: &str, visible: u64) -> bool {
        self.visible_len(stream, visible) > 0
    }

    /// The directory slot of `stream`'s unread seq block, if it has one.
    pub(crate) fn lazy_slot(&self, stream: &str) -> Option<u32> {
        self.streams.get(stream).and_then(|e| e.lazy).map(|l| l.slot)
    }

    /// The checkpoint the unread parts are in.
    pub(crate) fn source(&self) -> Option<Arc<CheckpointSource>> {
        self.source.clone()
    }

    /// Gives `stream` the seqs of its unread block (read from the checkpoint, or rebuilt
    /// from the log), all below the loaded covered seq. If they are not as many as the
    /// directory said (only a log scan can find that), they replace the directory's count
    /// as long as no event was appended to the stream since the load; once one was, its
    /// version came from the directory's count, and nothing changes (an error).
    pub(crate) fn install(&mut self, stream: &str, base: Vec<u64>) -> Result<(), String> {
        let covered = self.loaded_covered;
        let Some(e) = self.streams.get_mut(stream) else { return Ok(()) };
        let Some(lazy) = e.lazy else { return Ok(()) };
        let found = base.len() as u64;
        if base.last().is_some_and(|&s| s >= covered) || (found != lazy.count && !e.seqs.is_empty())
        {
            return Err(format!(
                "{found} events below seq {covered}, the checkpoint's directory says {}, and \
                 {} were appended since with versions counted from it",
                lazy.count,
                e.seqs.len()
            ));
        }
        if found != lazy.count {
            self.events = self.events - lazy.count + found;
            self.repaired = true;
        }
        let mut seqs = base;
        seqs.extend_from_slice(&e.seqs);
        e.seqs = seqs;
        e.lazy = None;
        self.unread_streams = self.unread_streams.saturating_sub(1);
        self.release_source();
        let Some(cat) = category_of(stream).and_then(|c| self.categories.get_mut(c)) else {
            return Ok(());
        };
        cat.unloaded = cat.unloaded.saturating_sub(1);
        if cat.unloaded == 0 && !cat.members.is_empty() {
            let mut merged = Vec::new();
            for m in std::mem::take(&mut cat.members) {
                if let Some(e) = self.streams.get(&m) {
                    merged.extend(e.seqs.iter().copied().take_while(|&s| s < covered));
                }
            }
            // Concatenated sorted runs: the sort is close to linear.
            merged.sort_unstable();
            merged.extend_from_slice(&cat.seqs);
            cat.seqs = merged;
        }
        Ok(())
    }

    /// Closes the checkpoint file once nothing is left to read from it.
    fn release_source(&mut self) {
        if self.unread_streams == 0 && !self.recent_unread {
            self.source = None;
        }
    }

    /// Notes that a part of the loaded checkpoint was rebuilt from the log (the next
    /// checkpoint is then written even if nothing else changed).
    pub(crate) fn mark_repaired(&mut self) {
        self.repaired = true;
    }

    /// Whether the id window is still unread in the checkpoint file.
    pub(crate) fn recent_unread(&self) -> bool {
        self.recent_unread
    }

    /// Takes the id window read from the checkpoint (oldest first).
    pub(crate) fn install_recent(&mut self, mut ids: Vec<CheckpointId>) {
        if !self.recent_unread {
            return;
        }
        self.recent_unread = false;
        let skip = ids.len().saturating_sub(self.recent_max);
        ids.drain(..skip);
        self.pending.ids = ids;
        self.release_source();
    }

    /// Takes an id window rebuilt from the log: the events `(event id, stream, seq)` just
    /// below the loaded checkpoint's covered seq, in log order. Their versions follow from
    /// each stream's event count there.
    pub(crate) fn install_recent_from_log(&mut self, window: Vec<([u8; 16], String, u64)>) {
        if !self.recent_unread {
            return;
        }
        self.recent_unread = false;
        self.repaired = true;
        self.release_source();
        let covered = self.loaded_covered;
        let mut left: HashMap<&str, u64> = HashMap::default();
        for (_, s, _) in &window {
            *left.entry(s.as_str()).or_default() += 1;
        }
        let mut entries = Vec::with_capacity(window.len());
        for (id, s, seq) in &window {
            let Some((key, e)) = self.streams.get_key_value(s.as_str()) else { continue };
            let total = match e.lazy {
                Some(l) => l.count,
                None => e.seqs.partition_point(|&q| q < covered) as u64,
            };
            let Some(n) = left.get_mut(s.as_str()) else { continue };
            // The n-th last of the stream's events below the covered seq.
            if let Some(version) = total.checked_sub(*n) {
                entries.push((*id, Arc::clone(key), version, *seq));
            }
            *n -= 1;
        }
        let skip = entries.len().saturating_sub(self.recent_max);
        for (id, key, version, seq) in entries.into_iter().skip(skip) {
            let stream = self.intern(&key);
            self.recent.insert(&id, IdEntry { stream, version, seq });
        }
    }

    /// Where `id` was written, if it is still remembered. Call
    /// [`StreamIndex::materialize_recent`] first.
    pub(crate) fn recent(&self, id: &[u8; 16]) -> Option<&IdEntry> {
        debug_assert!(self.pending.ids.is_empty(), "the id window is not materialized");
        self.recent.get(id)
    }

    /// Moves the id window a checkpoint gave into the map (once; later calls do nothing).
    /// The store reads an unread window before it appends, so none is unread here.
    pub(crate) fn materialize_recent(&mut self) {
        debug_assert!(!self.recent_unread, "the id window is still in the checkpoint");
        if self.pending.ids.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending.ids);
        self.recent.reserve(pending.len());
        for r in pending {
            if let Some(key) = self.pending.keys.get(r.stream as usize).cloned() {
                let stream = self.intern(&key);
                let entry = IdEntry { stream, version: r.version, seq: r.seq };
                self.recent.insert(&r.event_id, entry);
            }
        }
    }

    /// The number of `key` in the id window's entries, given it if it has none yet.
    fn intern(&mut self, key: &Arc<str>) -> usize {
        if let Some(&n) = self.numbers.get(key) {
            return n;
        }
        let n = self.names.len();
        self.names.push(Arc::clone(key));
        self.numbers.insert(Arc::clone(key), n);
        n
    }

    /// The number `stream` has in the id window's entries, if any entry was given one.
    pub(crate) fn stream_number(&self, stream: &str) -> Option<usize> {
        self.numbers.get(stream).copied()
    }

    /// All stream ids.
    pub(crate) fn stream_ids(&self) -> impl Iterator<Item = &Arc<str>> {
        self.streams.keys()
    }

    /// Events indexed.
    pub(crate) fn events(&self) -> u64 {
        self.events
    }

    /// Streams indexed.
    pub(crate) fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Records an event at `seq` (seqs arrive in increasing order) and returns its version.
    pub(crate) fn push(&mut self, stream: &str, seq: u64, event_id: [u8; 16]) -> u64 {
        self.push_run(stream, seq, &[event_id])
    }

    /// Records events of one stream at consecutive seqs from `first_seq` (above every seq
    /// indexed), with ids `ids`, and returns the first one's version. One lookup of the
    /// stream and its category for the run.
    pub(crate) fn push_run(&mut self, stream: &str, first_seq: u64, ids: &[[u8; 16]]) -> u64 {
        let key: Arc<str> = match self.streams.get_key_value(stream) {
            Some((k, _)) => Arc::clone(k),
            None => Arc::from(stream),
        };
        let number = if self.recent_max > 0 { self.intern(&key) } else { 0 };
        let e = self.streams.entry(Arc::clone(&key)).or_default();
        debug_assert!(e.seqs.last().is_none_or(|&last| last < first_seq));
        let first_version = e.len();
        let seqs = first_seq..first_seq + ids.len() as u64;
        e.seqs.extend(seqs.clone());
        if let Some(cat) = category_of(stream) {
            match self.categories.get_mut(cat) {
                Some(c) => c.seqs.extend(seqs.clone()),
                None => {
                    let c = Category { seqs: seqs.clone().collect(), ..Category::default() };
                    self.categories.insert(Arc::from(cat), c);
                }
            }
        }
        self.events += ids.len() as u64;
        if self.recent_max > 0 {
            self.materialize_recent();
            for ((id, seq), version) in ids.iter().zip(seqs).zip(first_version..) {
                if self.recent.len() >= self.recent_max {
                    self.recent.evict_oldest();
                }
                self.recent.insert(id, IdEntry { stream: number, version, seq });
            }
        }
        first_version
    }

    /// Whether a checkpoint at `covered_seq` would say what the loaded one says: nothing
    /// was appended below it and nothing was rebuilt since the load.
    pub(crate) fn unchanged_since_load(&self, covered_seq: u64) -> bool {
        !self.repaired
            && covered_seq == self.loaded_covered
            && self.loaded_events == Some(self.events)
    }

    /// The index restricted to events below `covered_seq`, as a version 2 checkpoint file.
    /// A stream still unread whose seqs below `covered_seq` are exactly its block gets that
    /// block copied as it is (if its CRC holds); any other unread stream, and an unread id
    /// window, is returned as [`Unloaded`] for the store to read first.
    pub(crate) fn encode_checkpoint(
        &self,
        log_id: [u8; 16],
        covered_seq: u64,
    ) -> Result<Vec<u8>, Unloaded> {
        let mut need = Unloaded { streams: Vec::new(), recent: self.recent_unread };
        let mut slots: HashMap<&str, u32> =
            HashMap::with_capacity_and_hasher(self.streams.len(), Default::default());
        let mut streams: Vec<(&str, SeqBlock<'_>)> = Vec::with_capacity(self.streams.len());
        for (id, e) in &self.streams {
            let block = match (e.lazy, &self.source) {
                (None, _) => {
                    let n = e.seqs.partition_point(|&s| s < covered_seq);
                    if n == 0 {
                        continue;
                    }
                    SeqBlock::Seqs(&e.seqs[..n])
                }
                (Some(l), Some(src))
                    if covered_seq >= self.loaded_covered
                        && e.seqs.first().is_none_or(|&s| s >= covered_seq) =>
                {
                    match src.raw_block(l.slot) {
                        Ok(b) => b,
                        Err(_) => {
                            need.streams.push(Arc::clone(id));
                            continue;
                        }
                    }
                }
                (Some(_), _) => {
                    need.streams.push(Arc::clone(id));
                    continue;
                }
            };
            slots.insert(id, streams.len() as u32);
            streams.push((id, block));
        }
        if need.recent || !need.streams.is_empty() {
            return Err(need);
        }
        let slot_of = |stream: &str, seq: u64| slots.get(stream).filter(|_| seq < covered_seq);
        // Not yet materialized: nothing was pushed since the checkpoint that gave it.
        let pending = self.pending.ids.iter().filter_map(|r| {
            let key = self.pending.keys.get(r.stream as usize)?;
            let slot = *slot_of(key, r.seq)?;
            Some(CheckpointId { stream: slot, ..*r })
        });
        let mut recent: Vec<CheckpointId> = pending.collect();
        recent.reserve(self.recent.len());
        // Runs of ids of one stream are the rule: its slot is looked up once per run (this
        // runs under the index lock, which appends wait for).
        let mut last: Option<(usize, Option<u32>)> = None;
        for (id, e) in self.recent.iter() {
            let slot = match last {
                Some((stream, slot)) if stream == e.stream => slot,
                _ => {
                    let name = self.names.get(e.stream);
                    let slot = name.and_then(|n| slots.get(&**n).copied());
                    last = Some((e.stream, slot));
                    slot
                }
            };
            if let Some(slot) = slot.filter(|_| e.seq < covered_seq) {
                let (version, seq) = (e.version, e.seq);
                recent.push(CheckpointId { event_id: id, stream: slot, version, seq });
            }
        }
        Ok(crate::format::encode_v2(log_id, covered_seq, &streams, &recent))
    }

    /// Rebuilds the index from a whole checkpoint (version 1) that has passed its own
    /// validation.
    pub(crate) fn from_checkpoint(ckpt: StreamCheckpoint, recent_max: usize) -> Self {
        let mut ix = StreamIndex::new(recent_max);
        let mut keys = Vec::with_capacity(ckpt.streams.len());
        let mut cats: HashMap<Arc<str>, Category> = HashMap::default();
        ix.streams.reserve(ckpt.streams.len());
        for CheckpointStream { id, seqs } in ckpt.streams {
            let key: Arc<str> = Arc::from(id.as_str());
            if let Some(cat) = category_of(&id) {
                cats.entry(Arc::from(cat)).or_default().seqs.extend_from_slice(&seqs);
            }
            ix.events += seqs.len() as u64;
            keys.push(Arc::clone(&key));
            ix.streams.insert(key, Entry { seqs, lazy: None });
        }
        for c in cats.values_mut() {
            // Concatenated sorted runs: the sort is close to linear.
            c.seqs.sort_unstable();
        }
        ix.categories = cats;
        let mut recent = ckpt.recent;
        if recent_max == 0 {
            recent.clear();
        }
        let skip = recent.len().saturating_sub(recent_max);
        recent.drain(..skip);
        ix.pending = PendingIds { keys, ids: recent };
        ix.loaded_covered = ckpt.covered_seq;
        // `loaded_events` stays `None`: the next checkpoint is written (as version 2) even
        // if nothing changed.
        ix
    }

    /// The index of a version 2 checkpoint from its directory alone: every stream's count
    /// and block slot, its category membership, no seq read (work per stream, not per
    /// event). The blocks and the id window are read when first needed.
    pub(crate) fn from_directory(source: Arc<CheckpointSource>, recent_max: usize) -> Self {
        let mut ix = StreamIndex::new(recent_max);
        let dir = &source.dir;
        let mut keys = Vec::with_capacity(dir.streams.len());
        ix.streams.reserve(dir.streams.len());
        for (slot, s) in dir.streams.iter().enumerate() {
            let key: Arc<str> = Arc::from(s.id.as_str());
            if let Some(cat) = category_of(&s.id) {
                let c = match ix.categories.get_mut(cat) {
                    Some(c) => c,
                    None => ix.categories.entry(Arc::from(cat)).or_default(),
                };
                c.members.push(Arc::clone(&key));
                c.unloaded += 1;
            }
            let lazy = Lazy { slot: slot as u32, count: s.seq_count };
            ix.streams.insert(Arc::clone(&key), Entry { seqs: Vec::new(), lazy: Some(lazy) });
            keys.push(key);
        }
        ix.events = dir.events;
        ix.pending = PendingIds { keys, ids: Vec::new() };
        ix.recent_unread = recent_max > 0 && dir.recent_count > 0;
        ix.loaded_covered = dir.covered_seq;
        ix.loaded_events = Some(dir.events);
        ix.unread_streams = dir.streams.len();
        ix.source = Some(source);
        ix.release_source();
        ix
    }

    /// Approximate heap bytes held: seq vectors, keys, and the id window.
    pub(crate) fn heap_bytes(&self) -> u64 {
        let per_map_entry = std::mem::size_of::<(Arc<str>, Entry)>() as u64 + 8;
        let streams: u64 = self
            .streams
            .iter()
            .map(|(k, v)| per_map_entry + k.len() as u64 + 16 + v.seqs.capacity() as u64 * 8)
            .sum();
        let cats: u64 = self
            .categories
            .iter()
            .map(|(k, v)| {
                per_map_entry
                    + k.len() as u64
                    + 16
                    + v.seqs.capacity() as u64 * 8
                    + v.members.capacity() as u64 * 16
            })
            .sum();
        let pending = self.pending.ids.capacity() * std::mem::size_of::<CheckpointId>()
            + self.pending.keys.capacity() * std::mem::size_of::<Arc<str>>();
        let numbers = self.names.capacity() * 16 + self.numbers.capacity() * 25;
        streams + cats + self.recent.heap_bytes() + pending as u64 + numbers as u64
    }

    /// The id window with stream ids, oldest first (numbers differ between indexes).
    #[cfg(test)]
    fn recent_view(&self) -> Vec<([u8; 16], Arc<str>, u64, u64)> {
        let name = |n: usize| Arc::clone(&self.names[n]);
        self.recent.iter().map(|(id, e)| (id, name(e.stream), e.version, e.seq)).collect()
    }

    /// The index restricted to events below `covered_seq`, decoded (every stream read).
    #[cfg(test)]
    pub(crate) fn to_checkpoint(&self, log_id: [u8; 16], covered_seq: u64) -> StreamCheckpoint {
        let bytes = self.encode_checkpoint(log_id, covered_seq).expect("every part is read");
        StreamCheckpoint::decode(&bytes).expect("a checkpoint the index wrote decodes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_positions_and_the_id_window_is_bounded() {
        let mut ix = StreamIndex::new(3);
        assert_eq!(ix.push("order-1", 0, [1; 16]), 0);
        assert_eq!(ix.push("user", 1, [2; 16]), 0);
        assert_eq!(ix.push("order-1", 2, [3; 16]), 1);
        assert_eq!(ix.push("order-2", 5, [4; 16]), 0);
        assert_eq!(ix.version_of("order-1", 2).unwrap(), Some(1));
        assert_eq!(ix.version_of("order-1", 1).unwrap(), None);
        assert_eq!(ix.version_near("order-1", 2, 1).unwrap(), Some(1));
        assert_eq!(
            ix.version_near("order-1", 2, 0).unwrap(),
            Some(1),
            "a wrong hint still finds it"
        );
        assert_eq!(ix.version_near("order-1", 2, u64::MAX).unwrap(), Some(1));
        assert_eq!(ix.version_near("order-1", 1, 0).unwrap(), None);
        assert_eq!(ix.version_near("nope", 1, 0).unwrap(), None);
        assert_eq!(ix.category_seqs("order").unwrap(), Some(&[0, 2, 5][..]));
        assert_eq!(ix.category_seqs("user").unwrap(), None);
        assert!(ix.recent(&[1; 16]).is_none(), "oldest id must be evicted");
        assert_eq!(ix.recent(&[4; 16]).map(|e| e.seq), Some(5));
        assert_eq!(ix.events(), 4);
    }

    #[test]
    fn checkpoint_round_trip_equals_the_index() {
        let mut ix = StreamIndex::new(10);
        for seq in 0..50u64 {
            let stream = format!("s{}-{}", seq % 3, seq % 7);
            ix.push(&stream, seq, [seq as u8; 16]);
        }
        let ck = ix.to_checkpoint([1; 16], 40);
        let mut back =
            StreamIndex::from_checkpoint(StreamCheckpoint::decode(&ck.encode()).unwrap(), 10);
        // Replaying the log after the covered seq gives exactly the full index, id window
        // included (the checkpoint keeps the part of the window below its covered seq).
        let mut expected = StreamIndex::new(10);
        for seq in 0..50u64 {
            let stream = format!("s{}-{}", seq % 3, seq % 7);
            expected.push(&stream, seq, [seq as u8; 16]);
            if seq >= 40 {
                back.push(&stream, seq, [seq as u8; 16]);
            }
        }
        assert_eq!(back.streams, expected.streams);
        assert_eq!(back.categories, expected.categories);
        assert_eq!(back.recent_view(), expected.recent_view());
        assert_eq!(back.events, expected.events);
    }

    #[test]
    fn an_unmaterialized_window_survives_a_checkpoint_and_evicts_in_order() {
        let mut ix = StreamIndex::new(5);
        for seq in 0..20u64 {
            ix.push(&format!("s-{}", seq % 3), seq, [seq as u8; 16]);
        }
        let ck = ix.to_checkpoint([1; 16], 20);
        // Loaded and written again before any append: the window is carried as it was.
        let loaded = StreamIndex::from_checkpoint(ck.clone(), 5);
        assert!(!loaded.pending.ids.is_empty());
        let mut again = StreamIndex::from_checkpoint(loaded.to_checkpoint([1; 16], 20), 5);
        again.materialize_recent();
        ix.materialize_recent();
        assert_eq!(again.recent_view(), ix.recent_view());
        // A smaller window keeps the newest ids; the first push evicts the oldest of them.
        let mut small = StreamIndex::from_checkpoint(ck, 2);
        small.push("s-0", 20, [20; 16]);
        assert!(small.recent(&[18; 16]).is_none());
        assert_eq!(small.recent(&[19; 16]).map(|e| e.version), Some(6));
        assert_eq!(small.recent(&[20; 16]).map(|e| e.version), Some(7));
        let order: Vec<[u8; 16]> = small.recent.iter().map(|(id, _)| id).collect();
        assert_eq!(order, [[19; 16], [20; 16]]);
    }

    #[test]
    fn the_id_window_agrees_with_a_model_for_random_and_repeated_ids() {
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut ix = StreamIndex::new(50);
        // The model: a plain list of (id, seq), oldest first; a repeated id keeps its place
        // and takes the new seq.
        let mut model: VecDeque<([u8; 16], u64)> = VecDeque::new();
        let mut given: Vec<[u8; 16]> = Vec::new();
        for seq in 0..2_000u64 {
            // Increasing ids (as the store makes; the window orders ids by their bytes, so
            // as a UUID's number), random ones, and repeats of earlier ones.
            let id = match next() % 3 {
                0 => uuid::Uuid::from_u128(u128::from(seq) << 64).into_bytes(),
                1 => u128::from(next()).to_le_bytes(),
                _ => given
                    .get((next() % (given.len() as u64 + 1)) as usize)
                    .copied()
                    .unwrap_or([7; 16]),
            };
            given.push(id);
            ix.push("s", seq, id);
            if model.len() >= 50 {
                model.pop_front();
            }
            match model.iter_mut().find(|(m, _)| *m == id) {
                Some(slot) => slot.1 = seq,
                None => model.push_back((id, seq)),
            }
            for probe in given.iter().rev().take(60) {
                let want = model.iter().find(|(m, _)| m == probe).map(|&(_, s)| s);
                assert_eq!(ix.recent(probe).map(|e| e.seq), want, "seq {seq}");
            }
            let order: Vec<[u8; 16]> = ix.recent.iter().map(|(id, _)| id).collect();
            let want: Vec<[u8; 16]> = model.iter().map(|&(id, _)| id).collect();
            assert_eq!(order, want, "seq {seq}");
        }
    }

    #[test]
    fn position_agrees_with_a_binary_search() {
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for case in 0..300u64 {
            let len = (next() % 2_000) as usize;
            // Dense, evenly spread, and skewed (gaps growing fast) streams.
            let mut seqs = Vec::with_capacity(len);
            let mut s = next() % 100;
            for i in 0..len as u64 {
                seqs.push(s);
                s += match case % 3 {
                    0 => 1,
                    1 => 1 + next() % 50,
                    _ => 1 + (i * i) % 10_007 + (next() % 3) * 1_000_000,
                };
            }
            let top = seqs.last().map_or(10, |&l| l + 10);
            for _ in 0..200 {
                let q = next() % top;
                assert_eq!(position(&seqs, q), seqs.binary_search(&q).ok(), "case {case} q {q}");
            }
            for (i, &q) in seqs.iter().enumerate() {
                assert_eq!(position(&seqs, q), Some(i), "case {case}");
            }
        }
        assert_eq!(position(&[], 3), None);
        assert_eq!(position(&[0, u64::MAX], u64::MAX), Some(1));
    }

    #[test]
    fn categories_need_a_non_empty_prefix() {
        assert_eq!(category_of("order-1"), Some("order"));
        assert_eq!(category_of("a-b-c"), Some("a"));
        assert_eq!(category_of("-x"), None);
        assert_eq!(category_of("plain"), None);
    }
}
