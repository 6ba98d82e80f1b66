//! Options of a log, with their defaults.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::limits::{
    FRAME_HEADER_BYTES, RECORD_BODY_BYTES_MAX, RECORD_HEADER_BYTES, SEGMENT_BYTES_MAX,
    SEGMENT_BYTES_MIN, SEGMENT_HEADER_BYTES,
};

/// When an `append` call returns, and what `durable_head()` covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// The default: `append` returns only after its bytes are fsynced (`fdatasync`).
    /// Concurrent appends share one fsync (group commit).
    #[default]
    Sync,
    /// `append` returns once its bytes are written to the OS; they become durable at the
    /// next fsync, which happens when `max_bytes` are unsynced, after `max_delay` at the
    /// latest (a background flusher), or when [`crate::Log::sync`] is called. Readers see
    /// only durable records.
    Batched {
        /// Longest time a write stays unsynced.
        max_delay: Duration,
        /// Unsynced bytes that trigger an fsync from the appending path.
        max_bytes: u64,
    },
    /// Never fsync except at segment rolls and close: for data that can be rebuilt. Readers
    /// see records as soon as they are written; after a crash any suffix may be gone.
    None,
}

/// Options of a [`crate::Log`]. `Options::default()` is what most users want.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Size at which a segment is sealed and a new one started. Default 64 MiB.
    pub segment_bytes: u64,
    /// Largest record payload accepted by `append`. Default 16 MiB. Reads believe any length
    /// up to `RECORD_BODY_BYTES_MAX`, so lowering this never hides what was written.
    /// Must leave room for one record and its frame in a segment.
    pub max_record_bytes: u32,
    /// Bytes between sparse index entries. Default 4 KiB: a read scans at most about this
    /// much beyond the entry it starts from.
    pub index_interval_bytes: u64,
    /// When appends return and become visible. Default [`Durability::Sync`].
    pub durability: Durability,
    /// Memory for the record offsets that make `Log::read(seq)` a direct lookup (8 bytes per
    /// record, 24 per batch, kept for segments once read). Default 64 MiB, about 8 million
    /// records in batches of several, 2 million in batches of one; beyond it, point reads
    /// walk from the sparse index, which is slower but needs no memory. 0 turns the offsets
    /// off.
    pub point_read_index_bytes: u64,
    /// Reserve each new segment's space up front (`fallocate`) so running out of space shows
    /// up when a segment is created rather than in the middle of appends. Default true.
    pub preallocate: bool,
    /// Zeros written ahead of the active segment's end, in chunks of this many bytes, by the
    /// writer that crosses the zeroed range (the space is written once before records land
    /// in it). Preallocated space is "unwritten" to the file system until first written:
    /// every `fdatasync` after an append into it must also commit the conversion of those
    /// blocks to the journal, which costs about as much as the data itself for small
    /// groups. Over zeroed blocks an `fdatasync` flushes data only. Default 1 MiB; 0 turns
    /// it off. Only used with `preallocate`, and not under `Durability::None`
    /// ([`Options::zeroing_pays`]). It changes no byte of the format: zeros after
    /// the last frame are what a preallocated segment holds anyway (format-spec.md §6.2).
    pub zero_ahead_bytes: u64,
    /// Prepare the next segment ahead of the roll: once the active segment is half full, a
    /// background thread creates a spare file, writes zeros over all of its space and syncs
    /// it, so the segment that follows a roll starts fully written and every `fdatasync`
    /// into it flushes data only (format-spec.md §6.2). The zeros cost device bandwidth off
    /// the appenders' path; a roll that finds no spare ready creates its segment the
    /// ordinary way and does not wait. Only with `preallocate`, not under `Durability::None`
    /// ([`Options::zeroing_pays`]), and only on storage where zeroing pays
    /// ([`crate::fs::Storage::zero_fill_pays`]: the real file system). Default true.
    pub prepare_segments: bool,
    /// Under `Durability::Batched` and `None`, once this many bytes of the active segment
    /// are written and not yet synced, the writer asks the kernel to start writing them back
    /// (`sync_file_range` on Linux) without waiting, in the manner of RocksDB's
    /// `bytes_per_sync`: the device works while appends go on, and the next sync (a roll's,
    /// the flusher's, an explicit one) has little left to wait for. It makes nothing
    /// durable; durability still comes only from fdatasync. Default 1 MiB; 0 turns it off.
    pub writeback_bytes: u64,
}

impl Options {
    /// Whether writing zeros ahead of the records (`zero_ahead_bytes`, `prepare_segments`)
    /// pays under this policy: it makes each `fdatasync` cheaper, at the price of writing
    /// the space twice. Under `Durability::None` syncs are rare (explicit `sync` calls and
    /// rolls) and most of the zeros would reach the device for nothing: a bulk load of 1M
    /// 256-byte events ran at 0.56x the plain file with a zero-filled spare per segment and
    /// at 0.76x without (`log_compare --only bulk`, 5 repetitions, one run each).
    pub fn zeroing_pays(&self) -> bool {
        !matches!(self.durability, Durability::None)
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_bytes: 64 << 20,
            max_record_bytes: 16 << 20,
            index_interval_bytes: 4096,
            durability: Durability::Sync,
            point_read_index_bytes: 64 << 20,
            preallocate: true,
            zero_ahead_bytes: 1 << 20,
            prepare_segments: true,
            writeback_bytes: 1 << 20,
        }
    }
}

impl Options {
    /// Bytes of records one segment can hold: what is left after its header and the room
    /// reserved for its seal frame. A batch larger than this cannot be appended.
    pub fn segment_capacity(&self) -> u64 {
        // Room is kept for a close frame and a seal after the last batch.
        self.segment_bytes - SEGMENT_HEADER_BYTES as u64 - 2 * FRAME_HEADER_BYTES as u64
    }

    /// Checks that the options can work together.
    pub fn validate(&self) -> Result<()> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return Err(Error::InvalidOptions(format!(
                "segment_bytes {} is outside {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}",
                self.segment_bytes
            )));
        }
        if !self.segment_bytes.is_multiple_of(8) {
            return Err(Error::InvalidOptions("segment_bytes must be a multiple of 8".into()));
        }
        if self.max_record_bytes > RECORD_BODY_BYTES_MAX {
            return Err(Error::InvalidOptions(format!(
                "max_record_bytes {} exceeds the hard limit {RECORD_BODY_BYTES_MAX}",
                self.max_record_bytes
            )));
        }
        let one_record = (FRAME_HEADER_BYTES + RECORD_HEADER_BYTES) as u64
            + crate::format::align_up(u64::from(self.max_record_bytes));
        if one_record > self.segment_capacity() {
            return Err(Error::InvalidOptions(format!(
                "a record of max_record_bytes {} does not fit in a segment of {} bytes",
                self.max_record_bytes, self.segment_bytes
            )));
        }
        if self.index_interval_bytes == 0 {
            return Err(Error::InvalidOptions("index_interval_bytes must be positive".into()));
        }
        if let Durability::Batched { max_delay, .. } = self.durability
            && max_delay.is_zero()
        {
            return Err(Error::InvalidOptions("Batched max_delay must be positive".into()));
        }
        Ok(())
    }
}
