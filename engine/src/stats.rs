//! Counters of the write path, readable at any time through `Log::stats`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Live counters (atomics, updated with relaxed ordering).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub appends: AtomicU64,
    pub records: AtomicU64,
    pub groups: AtomicU64,
    pub writes: AtomicU64,
    pub bytes_written: AtomicU64,
    pub fsyncs: AtomicU64,
    pub fsync_nanos_total: AtomicU64,
    pub fsync_nanos_max: AtomicU64,
    pub rolls: AtomicU64,
    pub index_rebuilds: AtomicU64,
    pub writeback_hints: AtomicU64,
}

impl Stats {
    /// Counters of a freshly opened log: the rebuilds recovery did are counted.
    pub(crate) fn after_recovery(report: &crate::log::RecoveryReport) -> Self {
        let stats = Stats::default();
        if report.active_index_rebuilt && report.next_seq > 0 {
            stats.index_rebuilds.store(1, Relaxed);
        }
        stats
    }

    pub(crate) fn record_fsync(&self, nanos: u64) {
        self.fsyncs.fetch_add(1, Relaxed);
        self.fsync_nanos_total.fetch_add(nanos, Relaxed);
        self.fsync_nanos_max.fetch_max(nanos, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            appends: self.appends.load(Relaxed),
            records: self.records.load(Relaxed),
            groups: self.groups.load(Relaxed),
            writes: self.writes.load(Relaxed),
            bytes_written: self.bytes_written.load(Relaxed),
            fsyncs: self.fsyncs.load(Relaxed),
            fsync_nanos_total: self.fsync_nanos_total.load(Relaxed),
            fsync_nanos_max: self.fsync_nanos_max.load(Relaxed),
            rolls: self.rolls.load(Relaxed),
            index_rebuilds: self.index_rebuilds.load(Relaxed),
            writeback_hints: self.writeback_hints.load(Relaxed),
            prepared_rolls: 0,
            spare_failures: 0,
            spare_ready: false,
        }
    }
}

/// A copy of the log's counters since open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Successful `append` calls (batches).
    pub appends: u64,
    /// Records in those batches.
    pub records: u64,
    /// Group-commit rounds that wrote something.
    pub groups: u64,
    /// Write system calls to segment files.
    pub writes: u64,
    /// Bytes written to segment files (frames, seals, close frames).
    pub bytes_written: u64,
    /// `fdatasync` calls on segment files.
    pub fsyncs: u64,
    /// Total time spent in those calls, in nanoseconds.
    pub fsync_nanos_total: u64,
    /// Longest single call, in nanoseconds.
    pub fsync_nanos_max: u64,
    /// Segments sealed and replaced by a new one.
    pub rolls: u64,
    /// Indexes rebuilt from their segment because the file was missing, bad or stale (the
    /// active segment's after a crash included; files are rewritten at close).
    pub index_rebuilds: u64,
    /// Ranges of written, unsynced bytes handed to the kernel's write-back ahead of a sync
    /// (`Options::writeback_bytes`; `Durability::Batched` and `None` only).
    pub writeback_hints: u64,
    /// Rolls whose new segment was a spare prepared ahead (`Options::prepare_segments`):
    /// zero-filled and synced before the roll.
    pub prepared_rolls: u64,
    /// Spare preparations that failed (a full disk, an I/O error); the roll after one
    /// creates its segment the ordinary way.
    pub spare_failures: u64,
    /// A prepared spare is waiting for the next roll.
    pub spare_ready: bool,
}

impl StatsSnapshot {
    /// Mean fsync latency in nanoseconds (0 if none).
    pub fn fsync_nanos_mean(&self) -> u64 {
        self.fsync_nanos_total.checked_div(self.fsyncs).unwrap_or(0)
    }
}
