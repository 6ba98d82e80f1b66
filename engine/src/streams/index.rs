//! The in-memory stream index: stream id -> the seqs of its events in log order, categories,
//! and the recent event ids that make retries idempotent.
//!
//! A stream version is the position of an event among its stream's events, so the index is
//! entirely derived from the log and can always be rebuilt from it.

use std::collections::VecDeque;

use foldhash::HashMap;
use std::sync::Arc;

use crate::format::{CheckpointId, CheckpointStream, StreamCheckpoint};

/// Where an event id was written, remembered for idempotent retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdEntry {
    pub stream: Arc<str>,
    pub version: u64,
    pub seq: u64,
}

/// The index proper.
#[derive(Debug, Default)]
pub(crate) struct StreamIndex {
    streams: HashMap<Arc<str>, Vec<u64>>,
    categories: HashMap<Arc<str>, Vec<u64>>,
    recent: HashMap<[u8; 16], IdEntry>,
    recent_order: VecDeque<[u8; 16]>,
    /// The id window as a checkpoint gave it (oldest first, at most `recent_max`), not yet in
    /// `recent`: an open leaves it here, and the first append (the only reader of the window)
    /// moves it into the map, so that opening a store does not hash up to 100,000 ids it may
    /// never need. Empty once moved; never filled again.
    pending: PendingIds,
    recent_max: usize,
    events: u64,
}

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

    /// The seqs of a stream (all written, durable or not), if it exists.
    pub(crate) fn seqs(&self, stream: &str) -> Option<&[u64]> {
        self.streams.get(stream).map(Vec::as_slice)
    }

    /// The seqs of a category's streams, in log order.
    pub(crate) fn category_seqs(&self, category: &str) -> Option<&[u64]> {
        self.categories.get(category).map(Vec::as_slice)
    }

    /// Number of events written to `stream` (its next version).
    pub(crate) fn len_of(&self, stream: &str) -> u64 {
        self.streams.get(stream).map_or(0, |s| s.len() as u64)
    }

    /// The version of the event at `seq` in `stream`, if it is one of its events.
    pub(crate) fn version_of(&self, stream: &str, seq: u64) -> Option<u64> {
        let seqs = self.streams.get(stream)?;
        position(seqs, seq).map(|v| v as u64)
    }

    /// Where `id` was written, if it is still remembered. Call
    /// [`StreamIndex::materialize_recent`] first.
    pub(crate) fn recent(&self, id: &[u8; 16]) -> Option<&IdEntry> {
        debug_assert!(self.pending.ids.is_empty(), "the id window is not materialized");
        self.recent.get(id)
    }

    /// Moves the id window a checkpoint gave into the map (once; later calls do nothing).
    pub(crate) fn materialize_recent(&mut self) {
        if self.pending.ids.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        self.recent.reserve(pending.ids.len());
        self.recent_order.reserve(pending.ids.len());
        for r in pending.ids {
            if let Some(key) = pending.keys.get(r.stream as usize) {
                let entry = IdEntry { stream: Arc::clone(key), version: r.version, seq: r.seq };
                if self.recent.insert(r.event_id, entry).is_none() {
                    self.recent_order.push_back(r.event_id);
                }
            }
        }
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
        let key: Arc<str> = match self.streams.get_key_value(stream) {
            Some((k, _)) => Arc::clone(k),
            None => Arc::from(stream),
        };
        let seqs = self.streams.entry(Arc::clone(&key)).or_default();
        debug_assert!(seqs.last().is_none_or(|&last| last < seq));
        let version = seqs.len() as u64;
        seqs.push(seq);
        if let Some(cat) = category_of(stream) {
            match self.categories.get_mut(cat) {
                Some(v) => v.push(seq),
                None => {
                    self.categories.insert(Arc::from(cat), vec![seq]);
                }
            }
        }
        self.events += 1;
        if self.recent_max > 0 {
            self.materialize_recent();
            if self.recent.len() >= self.recent_max
                && let Some(old) = self.recent_order.pop_front()
            {
                self.recent.remove(&old);
            }
            if self.recent.insert(event_id, IdEntry { stream: key, version, seq }).is_none() {
                self.recent_order.push_back(event_id);
            }
        }
        version
    }

    /// The index restricted to events below `covered_seq`, as a checkpoint.
    pub(crate) fn to_checkpoint(&self, log_id: [u8; 16], covered_seq: u64) -> StreamCheckpoint {
        let mut slots: HashMap<&str, u32> =
            HashMap::with_capacity_and_hasher(self.streams.len(), Default::default());
        let mut streams = Vec::with_capacity(self.streams.len());
        for (id, seqs) in &self.streams {
            let n = seqs.partition_point(|&s| s < covered_seq);
            if n == 0 {
                continue;
            }
            slots.insert(id, streams.len() as u32);
            streams.push(CheckpointStream { id: id.to_string(), seqs: seqs[..n].to_vec() });
        }
        let slot_of = |stream: &str, seq: u64| slots.get(stream).filter(|_| seq < covered_seq);
        // Not yet materialized: nothing was pushed since the checkpoint that gave it.
        let pending = self.pending.ids.iter().filter_map(|r| {
            let key = self.pending.keys.get(r.stream as usize)?;
            let slot = *slot_of(key, r.seq)?;
            Some(CheckpointId { stream: slot, ..*r })
        });
        let recent = pending
            .chain(self.recent_order.iter().filter_map(|id| {
                let e = self.recent.get(id)?;
                let slot = *slot_of(&e.stream, e.seq)?;
                Some(CheckpointId { event_id: *id, stream: slot, version: e.version, seq: e.seq })
            }))
            .collect();
        StreamCheckpoint { log_id, covered_seq, streams, recent }
    }

    /// Rebuilds the index from a checkpoint that has passed its own validation.
    pub(crate) fn from_checkpoint(ckpt: StreamCheckpoint, recent_max: usize) -> Self {
        let mut ix = StreamIndex::new(recent_max);
        let mut keys = Vec::with_capacity(ckpt.streams.len());
        let mut cats: HashMap<Arc<str>, Vec<u64>> = HashMap::default();
        ix.streams.reserve(ckpt.streams.len());
        for s in ckpt.streams {
            let key: Arc<str> = Arc::from(s.id.as_str());
            if let Some(cat) = category_of(&s.id) {
                cats.entry(Arc::from(cat)).or_default().extend_from_slice(&s.seqs);
            }
            ix.events += s.seqs.len() as u64;
            keys.push(Arc::clone(&key));
            ix.streams.insert(key, s.seqs);
        }
        for seqs in cats.values_mut() {
            // Concatenated sorted runs: the sort is close to linear.
            seqs.sort_unstable();
        }
        ix.categories = cats;
        let mut recent = ckpt.recent;
        if recent_max == 0 {
            recent.clear();
        }
        let skip = recent.len().saturating_sub(recent_max);
        recent.drain(..skip);
        ix.pending = PendingIds { keys, ids: recent };
        ix
    }

    /// Approximate heap bytes held: seq vectors, keys, and the id window.
    pub(crate) fn heap_bytes(&self) -> u64 {
        let per_map_entry = std::mem::size_of::<(Arc<str>, Vec<u64>)>() as u64 + 8;
        let streams: u64 = self
            .streams
            .iter()
            .map(|(k, v)| per_map_entry + k.len() as u64 + 16 + v.capacity() as u64 * 8)
            .sum();
        let cats: u64 = self
            .categories
            .iter()
            .map(|(k, v)| per_map_entry + k.len() as u64 + 16 + v.capacity() as u64 * 8)
            .sum();
        let per_id = std::mem::size_of::<([u8; 16], IdEntry)>() as u64 + 8 + 16;
        let pending = self.pending.ids.capacity() * std::mem::size_of::<CheckpointId>()
            + self.pending.keys.capacity() * std::mem::size_of::<Arc<str>>();
        streams + cats + self.recent.capacity() as u64 * per_id + pending as u64
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
        assert_eq!(ix.version_of("order-1", 2), Some(1));
        assert_eq!(ix.version_of("order-1", 1), None);
        assert_eq!(ix.version_of("nope", 1), None);
        assert_eq!(ix.category_seqs("order"), Some(&[0, 2, 5][..]));
        assert_eq!(ix.category_seqs("user"), None);
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
        assert_eq!(back.recent, expected.recent);
        assert_eq!(back.recent_order, expected.recent_order);
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
        assert_eq!(again.recent, ix.recent);
        assert_eq!(again.recent_order, ix.recent_order);
        // A smaller window keeps the newest ids; the first push evicts the oldest of them.
        let mut small = StreamIndex::from_checkpoint(ck, 2);
        small.push("s-0", 20, [20; 16]);
        assert!(small.recent(&[18; 16]).is_none());
        assert_eq!(small.recent(&[19; 16]).map(|e| e.version), Some(6));
        assert_eq!(small.recent(&[20; 16]).map(|e| e.version), Some(7));
        assert_eq!(small.recent_order, [[19; 16], [20; 16]]);
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
