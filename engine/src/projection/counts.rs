//! [`EventCounts`]: the example exactly-once view. It counts events by type and by stream
//! category, and persists itself in its checkpoint (format-spec.md §14, "The state of
//! `EventCounts`"), so a restart continues from the checkpoint instead of replaying from 0.

use std::collections::BTreeMap;

use byteorder::{ByteOrder, LittleEndian as LE};

use super::{BoxError, Projection};
use crate::limits::{EVENT_TYPE_BYTES_MAX, STREAM_ID_BYTES_MAX};
use crate::streams::{RecordedEvent, category_of};
use crate::subscribe::Filter;

/// Counts of events by type and by stream category (streams without a category count only
/// in the total). Run it with [`super::Delivery::ExactlyOnce`] to persist it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventCounts {
    name: String,
    version: u32,
    filter: Filter,
    total: u64,
    by_type: BTreeMap<String, u64>,
    by_category: BTreeMap<String, u64>,
}

impl EventCounts {
    /// An empty view named `name`, version 1, counting every event.
    pub fn new(name: impl Into<String>) -> Self {
        EventCounts {
            name: name.into(),
            version: 1,
            filter: Filter::all(),
            total: 0,
            by_type: BTreeMap::new(),
            by_category: BTreeMap::new(),
        }
    }

    /// Counts only events passing `filter`.
    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    /// Sets the version.
    pub fn with_version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// Events counted.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Events of `event_type` counted.
    pub fn of_type(&self, event_type: &str) -> u64 {
        self.by_type.get(event_type).copied().unwrap_or(0)
    }

    /// Events of streams in `category` counted.
    pub fn of_category(&self, category: &str) -> u64 {
        self.by_category.get(category).copied().unwrap_or(0)
    }

    /// Every event type with its count, in byte order.
    pub fn types(&self) -> &BTreeMap<String, u64> {
        &self.by_type
    }
}

impl Projection for EventCounts {
    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> u32 {
        self.version
    }

    fn filter(&self) -> Filter {
        self.filter.clone()
    }

    fn apply(&mut self, event: &RecordedEvent) -> Result<(), BoxError> {
        self.total += 1;
        bump(&mut self.by_type, &event.event_type);
        if let Some(c) = category_of(&event.stream_id) {
            bump(&mut self.by_category, c);
        }
        Ok(())
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.total.to_le_bytes());
        for map in [&self.by_type, &self.by_category] {
            out.extend_from_slice(&(map.len() as u32).to_le_bytes());
            for (k, v) in map {
                out.extend_from_slice(&(k.len() as u16).to_le_bytes());
                out.extend_from_slice(k.as_bytes());
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        Some(out)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), BoxError> {
        let mut r = state;
        let total = take_u64(&mut r)?;
        let by_type = take_map(&mut r, EVENT_TYPE_BYTES_MAX)?;
        let by_category = take_map(&mut r, STREAM_ID_BYTES_MAX)?;
        if !r.is_empty() {
            return Err("trailing bytes in EventCounts state".into());
        }
        self.total = total;
        self.by_type = by_type;
        self.by_category = by_category;
        Ok(())
    }
}

/// Adds one to `key`'s count, allocating the key only the first time it is seen.
fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            map.insert(key.to_owned(), 1);
        }
    }
}

fn take<'a>(r: &mut &'a [u8], n: usize) -> Result<&'a [u8], BoxError> {
    if r.len() < n {
        return Err("EventCounts state is truncated".into());
    }
    let (head, tail) = r.split_at(n);
    *r = tail;
    Ok(head)
}

fn take_u64(r: &mut &[u8]) -> Result<u64, BoxError> {
    take(r, 8).map(LE::read_u64)
}

fn take_map(r: &mut &[u8], key_max: usize) -> Result<BTreeMap<String, u64>, BoxError> {
    let n = take(r, 4).map(LE::read_u32)?;
    let mut map = BTreeMap::new();
    for _ in 0..n {
        let len = usize::from(take(r, 2).map(LE::read_u16)?);
        if len > key_max {
            return Err("EventCounts key is too long".into());
        }
        let key = std::str::from_utf8(take(r, len)?)?.to_owned();
        let count = take_u64(r)?;
        if map.insert(key, count).is_some() {
            return Err("EventCounts key appears twice".into());
        }
    }
    Ok(map)
}
