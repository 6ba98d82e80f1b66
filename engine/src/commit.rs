//! Group commit: the queue of pending appends, one write and one fdatasync per group, the
//! durability policies, segment rolls, clean close, and poisoning after a failed write or
//! fsync (ARCHITECTURE.md layer `commit`).
//!
//! The shape is leader/follower (as raft-engine's write barrier): an appender enqueues its
//! prepared batch; if no leader is active it becomes the leader, takes the whole queue,
//! writes it with one `write` and covers it with one `fdatasync`, hands every member its
//! result, and steps down; appenders that arrived meanwhile form the next group. Each
//! appender waits on its own channel: a group's end wakes exactly its members, and the lead
//! passes straight to the first queued appender (a waiting `sync` first), as RocksDB's
//! write thread links its leaders, instead of waking every waiter to race for it. At most one
//! group is unsynced at any time under `Durability::Sync`, which is what lets recovery tell a
//! torn tail from damage to acknowledged data (format-spec.md §7).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use crate::error::{Error, Result};
use crate::format::{FrameKind, IndexHeader, Placement, PreparedBatch, encode_marker_frame};
use crate::index;
use crate::limits::{FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use crate::log::{Appended, Inner, Sealed, Segment};
use crate::options::Durability;
use crate::segment;

/// The writer's position; only the current leader touches it.
#[derive(Debug)]
pub(crate) struct WriterState {
    pub active: Arc<Segment>,
    /// Offset where the next frame goes in the active segment.
    pub write_pos: u64,
    /// Every byte of the active segment before this offset is durable.
    pub synced_pos: u64,
    /// Every byte of the active segment before this offset has been written at least once
    /// (records or the zeros of `Options::zero_ahead_bytes`).
    pub zeroed_to: u64,
    /// Bytes of the active segment from here to `write_pos` are written but not yet handed
    /// to the kernel's write-back (`Options::writeback_bytes`).
    writeback_from: u64,
    /// The seq the next record gets.
    pub next_seq: u64,
    /// The timestamp of the last frame written: frame times never go back, even when the
    /// clock does.
    pub last_timestamp_us: u64,
    /// The active segment ends with a close frame and nothing was written since (a clean
    /// open with no appends): closing again needs no new close frame.
    pub tail_is_close: bool,
    /// A spare segment was asked for while this segment is active (format-spec.md §6.2).
    spare_requested: bool,
    /// Finalized frames of the group being written, and their total bytes.
    frames: Vec<PreparedBatch>,
    pending: u64,
    /// Where several frames are joined for one write.
    buf: Vec<u8>,
    /// A chunk of zeros for `zero_ahead` (allocated on first use).
    zeros: Vec<u8>,
}

impl WriterState {
    pub(crate) fn new(
        active: Arc<Segment>,
        write_pos: u64,
        next_seq: u64,
        last_timestamp_us: u64,
    ) -> Self {
        WriterState {
            active,
            write_pos,
            synced_pos: write_pos,
            zeroed_to: write_pos,
            writeback_from: write_pos,
            next_seq,
            last_timestamp_us,
            tail_is_close: false,
            spare_requested: false,
            frames: Vec::new(),
            pending: 0,
            buf: Vec::new(),
            zeros: Vec::new(),
        }
    }

    /// The time for the next frame: now, or the last frame's time if the clock went back.
    fn next_timestamp(&mut self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        self.last_timestamp_us = self.last_timestamp_us.max(now);
        self.last_timestamp_us
    }

    /// Where a frame at `file_offset` goes, stamped with the time last taken by
    /// `next_timestamp` (one clock reading per group, so a group's batches share a time).
    fn placement(&self, seq: u64, file_offset: u64, log_tag: u64) -> Placement {
        Placement {
            seq,
            file_offset,
            synced_through: self.synced_pos,
            log_tag,
            timestamp_us: self.last_timestamp_us,
        }
    }
}

/// What the leader knows about a batch when it decides to write it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CommitCtx {
    /// The seq the batch's first record will get.
    pub first_seq: u64,
}

/// A check run by the leader, in log order, right before a batch is encoded: the streams
/// layer's expected-version and idempotency checks run here, so they are race-free without
/// holding any lock across the fsync. `Ok(true)` writes the batch; `Ok(false)` skips it
/// (the appender gets a zero-count `Appended`); `Err` skips it and fails the appender.
/// Hooks must not call back into the log.
pub(crate) type CommitHook = Box<dyn FnOnce(CommitCtx) -> Result<bool> + Send>;

/// What a waiting appender is woken with: its own result, or the lead of the next group.
/// Each appender waits on its own [`Signal`], so a group's end wakes exactly its members and
/// one next leader, not every waiting thread.
enum Wake {
    Done(Result<Appended>),
    Lead,
    /// The sending side was dropped without a result (the leader panicked).
    Gone,
}

/// One waiting appender's mailbox: at most one message at a time (the lead, then later its
/// result), waited for with a mutex and a condition variable, which sleep in the kernel at
/// once. A channel's receive spins and yields before it sleeps: with dozens of appenders
/// waiting on two cores, that spinning took a third of the CPU away from the leader.
#[derive(Default)]
struct Signal {
    slot: Mutex<Option<Wake>>,
    cond: Condvar,
}

/// The leader's side of a [`Signal`]. Dropping it before a result was sent wakes the
/// appender with [`Wake::Gone`].
struct Notify {
    signal: Arc<Signal>,
    done: bool,
}

impl Notify {
    /// A mailbox: the leader's side and the appender's.
    fn pair() -> (Notify, Arc<Signal>) {
        let signal = Arc::new(Signal::default());
        (Notify { signal: Arc::clone(&signal), done: false }, signal)
    }

    /// Hands the appender the lead of the next group.
    fn lead(&self) {
        self.put(Wake::Lead);
    }

    /// Delivers the appender's result.
    fn done(mut self, result: Result<Appended>) {
        self.done = true;
        self.put(Wake::Done(result));
    }

    fn put(&self, wake: Wake) {
        let mut slot = self.signal.slot.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(wake);
        drop(slot);
        self.signal.cond.notify_one();
    }
}

impl Drop for Notify {
    fn drop(&mut self) {
        if !self.done {
            self.put(Wake::Gone);
        }
    }
}

impl Signal {
    /// Sleeps until a message arrives and takes it.
    fn wait(&self) -> Wake {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(w) = slot.take() {
                return w;
            }
            slot = self.cond.wait(slot).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The message waiting, if any.
    fn take(&self) -> Option<Wake> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

struct Pending {
    batch: PreparedBatch,
    hook: Option<CommitHook>,
    tx: Notify,
}

/// The queue and leadership flag.
#[derive(Default)]
pub(crate) struct CommitState {
    /// Appends waiting for the next group. Never non-empty without a leader: an appender
    /// that finds no leader leads, and a leader that steps down with appends queued hands
    /// the lead to the first of them.
    queue: Vec<Pending>,
    leader: bool,
    closed: bool,
    /// Callers of `sync` waiting on the condition variable for the lead.
    sync_waiting: usize,
    /// The lead was handed to one of the `sync` waiters (leader stays true).
    sync_turn: bool,
}

impl std::fmt::Debug for CommitState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitState")
            .field("queued", &self.queue.len())
            .field("leader", &self.leader)
            .field("closed", &self.closed)
            .finish()
    }
}

/// Group-commit machinery of one log.
#[derive(Debug)]
pub(crate) struct Committer {
    state: Mutex<CommitState>,
    cond: Condvar,
    writer: Mutex<WriterState>,
    /// One past the last seq written (durable or not).
    written: std::sync::atomic::AtomicU64,
}

impl Committer {
    pub(crate) fn new(writer: WriterState) -> Self {
        let written = std::sync::atomic::AtomicU64::new(writer.next_seq);
        Committer {
            state: Mutex::default(),
            cond: Condvar::new(),
            writer: Mutex::new(writer),
            written,
        }
    }

    fn lock_state(&self) -> MutexGuard<'_, CommitState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The notification channel from the committer to subscribers (ARCHITECTURE.md layer
/// `subscribe`): every time the visible end advances, the new value is offered to every
/// registered receiver with `try_send` on a channel of capacity 1.
///
/// It never blocks a writer: a subscriber whose channel is full already has a wake-up
/// pending and simply misses this value; since a subscriber reads from its own next seq up
/// to the visible end after every wake-up, a missed value loses nothing. What is published
/// is the visible end, which under `Durability::Sync` and `Batched` is the durable end
/// (nothing a crash could take back) and under `Durability::None` is the written end.
#[derive(Debug, Default)]
pub(crate) struct Notifier {
    subscribers: Mutex<Vec<Sender<u64>>>,
    /// Registered subscribers, read without the lock so that a log without subscribers pays
    /// one atomic load per group.
    count: AtomicUsize,
    /// Set when the log closes: later registrations get a disconnected receiver.
    closed: std::sync::atomic::AtomicBool,
}

impl Notifier {
    fn lock(&self) -> MutexGuard<'_, Vec<Sender<u64>>> {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new receiver of visible-end notifications. Disconnected once the log is closed.
    pub(crate) fn register(&self) -> Receiver<u64> {
        let (tx, rx) = bounded(1);
        let mut subs = self.lock();
        if !self.closed.load(Ordering::Acquire) {
            subs.push(tx);
            self.count.store(subs.len(), Ordering::Release);
        }
        rx
    }

    /// Offers `visible_end` to every subscriber without blocking; forgets the ones that are
    /// gone.
    pub(crate) fn publish(&self, visible_end: u64) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut subs = self.lock();
        subs.retain(|tx| !matches!(tx.try_send(visible_end), Err(TrySendError::Disconnected(_))));
        self.count.store(subs.len(), Ordering::Release);
    }

    /// Disconnects every subscriber (the log is closed: nothing more will become visible).
    pub(crate) fn close(&self) {
        let mut subs = self.lock();
        self.closed.store(true, Ordering::Release);
        subs.clear();
        self.count.store(0, Ordering::Release);
    }
}

/// Steps down from leadership when dropped, also if the leader panicked (then the log is
/// poisoned: the leader may have written bytes nobody will ever acknowledge or sync).
struct LeaderGuard<'a>(&'a Inner);

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poison_leader_panic();
        }
        self.0.step_down();
    }
}

/// Poisons the log if the leader panics while it holds a group, and is dropped before the
/// group's members are: a member woken by its dropped `Notify` then finds the log poisoned
/// (and reports `Poisoned`, not `Closed`).
struct PoisonOnPanic<'a>(&'a Inner);

impl Drop for PoisonOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poison_leader_panic();
        }
    }
}

impl Inner {
    /// Records the first failure and returns the error for the batch that hit it.
    pub(crate) fn poison(&self, e: Error) -> Error {
        let _ = self.poison.set(Arc::new(e.clone()));
        e
    }

    fn poison_leader_panic(&self) {
        self.poison(Error::Io {
            op: "group commit",
            path: self.seg_dir.clone(),
            source: Arc::new(std::io::Error::other("the group-commit leader panicked")),
        });
    }

    fn poisoned(&self) -> Option<Error> {
        self.poison.get().map(|first| Error::Poisoned { first_failure: Arc::clone(first) })
    }

    /// Enqueues a prepared batch and returns once it is as durable as the policy promises.
    pub(crate) fn append_prepared(
        &self,
        batch: PreparedBatch,
        hook: Option<CommitHook>,
    ) -> Result<Appended> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        if let Some(e) = self.poisoned() {
            return Err(e);
        }
        let (tx, rx) = Notify::pair();
        let mut st = self.committer.lock_state();
        if st.closed {
            return Err(Error::Closed);
        }
        st.queue.push(Pending { batch, hook, tx });
        if st.leader {
            drop(st);
            match rx.wait() {
                Wake::Done(result) => return result,
                // Handed the lead: this batch is first in the queue the next group takes.
                Wake::Lead => st = self.committer.lock_state(),
                // The leader panicked with this batch in its group.
                Wake::Gone => return Err(self.poisoned().unwrap_or(Error::Closed)),
            }
        } else {
            st.leader = true;
        }
        let group = std::mem::take(&mut st.queue);
        drop(st);
        let guard = LeaderGuard(self);
        self.lead(group, false);
        drop(guard);
        // This batch was in the group just led: its result is waiting.
        match rx.take() {
            Some(Wake::Done(result)) => result,
            _ => Err(self.poisoned().unwrap_or(Error::Closed)),
        }
    }

    /// Ends a leader's turn: hands the lead to a waiting `sync` caller first (so that
    /// `sync` is not starved by a steady stream of appends), else to the first queued
    /// appender, else gives it up and wakes whoever waits for it (`sync`, `close`).
    fn step_down(&self) {
        let c = &self.committer;
        let mut st = c.lock_state();
        if st.sync_waiting > 0 {
            st.sync_turn = true;
            drop(st);
            c.cond.notify_all();
            return;
        }
        if let Some(first) = st.queue.first() {
            // It takes the whole queue, its own batch first, when it runs.
            first.tx.lead();
            return;
        }
        st.leader = false;
        drop(st);
        c.cond.notify_all();
    }

    /// Forces an fsync of everything written so far.
    pub(crate) fn sync(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let mut st = self.committer.lock_state();
        st.sync_waiting += 1;
        loop {
            if st.sync_turn {
                // Handed the lead by the last leader (`leader` stays true).
                st.sync_turn = false;
                break;
            }
            if !st.leader {
                st.leader = true;
                break;
            }
            st = self.committer.cond.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.sync_waiting -= 1;
        let group = std::mem::take(&mut st.queue);
        drop(st);
        let guard = LeaderGuard(self);
        self.lead(group, true);
        drop(guard);
        match self.poisoned() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Whether bytes were written that are not yet durable.
    pub(crate) fn has_unsynced(&self) -> bool {
        self.committer.written.load(Ordering::Acquire) > self.durable.load(Ordering::Acquire)
    }

    /// Writes one group (the leader's job). Every member's sender gets exactly one result.
    fn lead(&self, group: Vec<Pending>, force_sync: bool) {
        let mut ws = self.committer.writer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = self.poisoned() {
            for p in group {
                p.tx.done(Err(e.clone()));
            }
            return;
        }
        let mut done: Vec<(Notify, Appended)> = Vec::with_capacity(group.len());
        // Batches end early enough that a close frame and then a seal still fit: a segment
        // file never grows past `segment_bytes`.
        let limit = self.opts.segment_bytes - 2 * FRAME_HEADER_BYTES as u64;
        ws.next_timestamp();
        let mut items = group.into_iter();
        // Declared after the group's holders, so dropped before them if a hook panics.
        let _poison_on_panic = PoisonOnPanic(self);
        while let Some(mut p) = items.next() {
            let end = ws.write_pos + ws.pending + p.batch.frame_bytes();
            if end > limit {
                let rolled = self.flush(&mut ws, true).and_then(|()| self.roll(&mut ws));
                if let Err(e) = rolled {
                    // Batches written before the roll are intact when the error did not
                    // poison (a full disk at segment creation); otherwise nobody is acked.
                    let ok = self.poison.get().is_none();
                    for (tx, a) in done.drain(..) {
                        if ok {
                            self.count_append(&a);
                        }
                        tx.done(if ok { Ok(a) } else { Err(e.clone()) });
                    }
                    p.tx.done(Err(e.clone()));
                    for rest in items {
                        rest.tx.done(Err(e.clone()));
                    }
                    self.publish(&ws);
                    return;
                }
            }
            let first = ws.next_seq;
            if let Some(hook) = p.hook.take() {
                match hook(CommitCtx { first_seq: first }) {
                    Ok(true) => {}
                    Ok(false) => {
                        p.tx.done(Ok(Appended { first, count: 0 }));
                        continue;
                    }
                    Err(e) => {
                        p.tx.done(Err(e));
                        continue;
                    }
                }
            }
            let off = ws.write_pos + ws.pending;
            let count = p.batch.count();
            let at = ws.placement(first, off, self.log_tag);
            p.batch.finalize(at);
            ws.pending += p.batch.frame_bytes();
            ws.active.index.write().unwrap_or_else(|e| e.into_inner()).note_batch(
                first,
                off,
                at.timestamp_us,
                self.opts.index_interval_bytes,
            );
            ws.next_seq += u64::from(count);
            ws.frames.push(p.batch);
            done.push((p.tx, Appended { first, count }));
        }
        let sync = force_sync
            || match self.opts.durability {
                Durability::Sync => true,
                Durability::Batched { max_bytes, .. } => {
                    ws.write_pos + ws.pending - ws.synced_pos >= max_bytes
                }
                Durability::None => false,
            };
        let result = self.flush(&mut ws, sync);
        self.publish(&ws);
        for (tx, a) in done {
            tx.done(match &result {
                Ok(()) => {
                    self.count_append(&a);
                    Ok(a)
                }
                Err(e) => Err(e.clone()),
            });
        }
    }

    fn count_append(&self, a: &Appended) {
        if a.count > 0 {
            self.stats.appends.fetch_add(1, Ordering::Relaxed);
            self.stats.records.fetch_add(u64::from(a.count), Ordering::Relaxed);
        }
    }

    /// Writes the buffered frames with one write, then fsyncs if `sync`. Any failure
    /// poisons the log: after a failed write or fsync the page cache cannot be trusted, and
    /// an fsync is never retried.
    fn flush(&self, ws: &mut WriterState, sync: bool) -> Result<()> {
        if !ws.frames.is_empty() {
            let path = &ws.active.path;
            // One frame (a lone appender, a bulk batch) is written from its own buffer; a
            // group is joined first so that it still takes a single write.
            let written = match ws.frames.as_slice() {
                [one] => ws.active.file.write_all_at(one.bytes(), ws.write_pos),
                many => {
                    ws.buf.clear();
                    for f in many {
                        ws.buf.extend_from_slice(f.bytes());
                    }
                    ws.active.file.write_all_at(&ws.buf, ws.write_pos)
                }
            };
            let len = ws.pending;
            ws.frames.clear();
            ws.pending = 0;
            if let Err(e) = written {
                let e = self.poison(Error::io("write", path, e));
                self.discard_unsynced(ws, ws.write_pos + len);
                return Err(e);
            }
            self.stats.groups.fetch_add(1, Ordering::Relaxed);
            self.stats.writes.fetch_add(1, Ordering::Relaxed);
            self.stats.bytes_written.fetch_add(len, Ordering::Relaxed);
            ws.write_pos += len;
            ws.tail_is_close = false;
            if let Err(e) = self.zero_ahead(ws) {
                let e = self.poison(Error::io("write", &ws.active.path, e));
                self.discard_unsynced(ws, ws.write_pos);
                return Err(e);
            }
            if !sync {
                self.start_writeback(ws);
            }
            ws.active.readable_end.store(ws.write_pos, Ordering::Release);
            self.committer.written.store(ws.next_seq, Ordering::Release);
            if !ws.spare_requested && ws.write_pos >= self.opts.segment_bytes / 2 {
                ws.spare_requested = true;
                if let Some(p) = &self.preparer {
                    p.request();
                }
            }
        }
        if sync && ws.synced_pos < ws.write_pos {
            self.sync_active(ws)?;
        }
        Ok(())
    }

    /// Hands the written, unsynced bytes of the active segment to the kernel's write-back
    /// once there are `writeback_bytes` of them (`StorageFile::start_writeback`), so that the
    /// device works while appends go on and the next sync (a roll's, the flusher's or an
    /// explicit one) finds little left to wait for. A hint: it makes nothing durable and its
    /// failure changes nothing (the sync that follows reports any write-back error).
    fn start_writeback(&self, ws: &mut WriterState) {
        let from = ws.writeback_from.max(ws.synced_pos);
        let every = self.opts.writeback_bytes;
        if every == 0 || ws.write_pos < from.saturating_add(every) {
            return;
        }
        let _ = ws.active.file.start_writeback(from, ws.write_pos - from);
        self.stats.writeback_hints.fetch_add(1, Ordering::Relaxed);
        ws.writeback_from = ws.write_pos;
    }

    /// Once the writer has passed the zeroed range, zeros the next `zero_ahead_bytes` of the
    /// segment after `write_pos` (never a byte before it: records are never overwritten).
    /// The zeros become durable with the group's own fsync.
    fn zero_ahead(&self, ws: &mut WriterState) -> std::io::Result<()> {
        let chunk = self.opts.zero_ahead_bytes;
        if chunk == 0
            || !self.opts.preallocate
            || !self.opts.zeroing_pays()
            || ws.write_pos <= ws.zeroed_to
        {
            return Ok(());
        }
        let from = ws.write_pos;
        let to = (from + chunk).min(self.opts.segment_bytes);
        if to <= from {
            return Ok(());
        }
        let n = (to - from) as usize;
        if ws.zeros.len() < n {
            ws.zeros = vec![0; n];
        }
        ws.active.file.write_all_at(&ws.zeros[..n], from)?;
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        ws.zeroed_to = to;
        Ok(())
    }

    fn sync_active(&self, ws: &mut WriterState) -> Result<()> {
        let started = Instant::now();
        if let Err(e) = ws.active.file.sync_data() {
            let e = self.poison(Error::io("fdatasync", &ws.active.path, e));
            self.discard_unsynced(ws, ws.write_pos);
            return Err(e);
        }
        self.stats.record_fsync(started.elapsed().as_nanos() as u64);
        ws.synced_pos = ws.write_pos;
        self.durable.store(ws.next_seq, Ordering::Release);
        Ok(())
    }

    /// After a failed write or fsync: the bytes after the last successful fsync may be in the
    /// page cache only, and Linux has marked them clean, so no later fsync will write them.
    /// A reopen in this process would read them back as if they were durable and build on
    /// them. Best effort, they are copied aside and cut from the segment, so a reopen sees
    /// exactly the durable log. None of them was acknowledged as durable.
    fn discard_unsynced(&self, ws: &WriterState, end: u64) {
        let from = ws.synced_pos;
        if end <= from {
            return;
        }
        let seg = &ws.active;
        // Readers must not see the discarded records (under `Durability::None` they could).
        self.visible.fetch_min(self.durable.load(Ordering::Acquire), Ordering::AcqRel);
        seg.readable_end.fetch_min(from, Ordering::AcqRel);
        let moved = segment::move_aside(
            self.storage.as_ref(),
            &seg.path,
            seg.base,
            seg.file.as_ref(),
            from,
            end,
        );
        // Bytes that could not be copied aside are left in place rather than dropped; a
        // reopen then verifies them like any tail.
        if moved.is_ok() && seg.file.set_len(from).is_ok() {
            let _ = seg.file.sync_data();
        }
    }

    /// Makes what was written visible to readers according to the policy, and tells the
    /// subscribers when the visible end moved (never blocking: see [`Notifier`]).
    fn publish(&self, ws: &WriterState) {
        let visible = match self.opts.durability {
            Durability::None => self.committer.written.load(Ordering::Acquire),
            _ => self.durable.load(Ordering::Acquire),
        };
        let before = self.visible.fetch_max(visible, Ordering::AcqRel);
        debug_assert!(self.visible.load(Ordering::Acquire) <= ws.next_seq);
        if visible > before {
            self.heads.publish(visible);
        }
    }

    /// Seals the active segment and starts a new one (format-spec.md §6.3): the old segment
    /// is fully synced, the new one is created durably, then the old one gets its seal frame,
    /// is cut to size and synced, and its index file is written.
    fn roll(&self, ws: &mut WriterState) -> Result<()> {
        if ws.synced_pos < ws.write_pos {
            self.sync_active(ws)?;
        }
        let base = ws.next_seq;
        // A spare prepared ahead (zero-filled and synced) if one is ready; never waited for.
        let spare = self.preparer.as_ref().and_then(|p| p.take());
        let prepared = match spare.map(|s| {
            segment::activate_spare(self.storage.as_ref(), &self.seg_dir, self.log_id, base, s)
        }) {
            Some(Ok(created)) => Some(created),
            Some(Err(segment::SpareError::Changed(e))) => return Err(self.poison(e)),
            // The header did not take: the spare is gone, the directory unchanged.
            Some(Err(segment::SpareError::Untouched)) => {
                if let Some(p) = &self.preparer {
                    p.note_failure();
                }
                None
            }
            None => None,
        };
        let zeroed = prepared.is_some();
        let created = match prepared {
            Some(created) => Ok(created),
            None => segment::create(
                self.storage.as_ref(),
                &self.seg_dir,
                self.log_id,
                base,
                self.opts.segment_bytes,
                self.opts.preallocate,
            ),
        };
        let (path, file) = match created {
            Ok(created) => created,
            // Nothing changed: the old segment is intact and still active.
            Err(e @ Error::StorageFull { .. }) => return Err(e),
            Err(e) => return Err(self.poison(e)),
        };
        let old = Arc::clone(&ws.active);
        let seal_at = ws.write_pos;
        let count = (ws.next_seq - old.base) as u32;
        ws.next_timestamp();
        let at = ws.placement(ws.next_seq, seal_at, self.log_tag);
        let seal = encode_marker_frame(FrameKind::Seal, count, at);
        let sealed = old
            .file
            .write_all_at(&seal, seal_at)
            .and_then(|()| old.file.set_len(seal_at + FRAME_HEADER_BYTES as u64))
            .and_then(|()| old.file.sync_data());
        if let Err(e) = sealed {
            return Err(self.poison(Error::io("seal", &old.path, e)));
        }
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes_written.fetch_add(FRAME_HEADER_BYTES as u64, Ordering::Relaxed);
        old.readable_end.store(seal_at + FRAME_HEADER_BYTES as u64, Ordering::Release);
        let data_end = seal_at + FRAME_HEADER_BYTES as u64;
        let _ = old.sealed.set(Sealed {
            next_seq: ws.next_seq,
            seal_at,
            data_end,
            map: OnceLock::new(),
        });
        if let Err(e) = self.store_index(&old)
            && self.poison.get().is_some()
        {
            return Err(e);
        }
        let seg = Arc::new(Segment::new(base, path, file));
        let _ = seg.index_loaded.set(());
        self.segments.write().unwrap_or_else(|e| e.into_inner()).push(Arc::clone(&seg));
        ws.active = seg;
        ws.write_pos = SEGMENT_HEADER_BYTES as u64;
        ws.synced_pos = ws.write_pos;
        // A prepared segment was written whole with zeros: nothing left to zero ahead.
        ws.zeroed_to = if zeroed { self.opts.segment_bytes } else { ws.write_pos };
        ws.writeback_from = ws.write_pos;
        ws.spare_requested = false;
        self.stats.rolls.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Clean close: drains the queue, syncs, writes a close frame and the active segment's
    /// index so that the next open scans nothing.
    pub(crate) fn close(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        let mut st = self.committer.lock_state();
        if st.closed {
            return Ok(());
        }
        st.closed = true;
        // Wake the flusher so it ends now rather than after its next delay.
        drop(self.flusher_stop.lock().unwrap_or_else(|e| e.into_inner()).take());
        // No roll comes after a close: stop preparing and remove an unused spare, while the
        // directory's lock is still held.
        if let Some(p) = &self.preparer {
            p.stop();
        }
        while st.leader || !st.queue.is_empty() {
            if !st.leader {
                // Appenders are queued but none has taken the lead yet: let them.
                self.committer.cond.notify_all();
            }
            st = self.committer.cond.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.leader = true;
        drop(st);
        let _guard = LeaderGuard(self);
        if let Some(e) = self.poisoned() {
            return Err(e);
        }
        let mut ws = self.committer.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.flush(&mut ws, true)?;
        let file = &ws.active.file;
        let at = if ws.tail_is_close {
            // Opened clean and nothing appended: the close frame is still true; only the
            // space preallocated at open is given back.
            if let Err(e) = file.set_len(ws.write_pos).and_then(|()| file.sync_data()) {
                return Err(self.poison(Error::io("close", &ws.active.path, e)));
            }
            ws.write_pos - FRAME_HEADER_BYTES as u64
        } else {
            let at = ws.write_pos;
            let count = (ws.next_seq - ws.active.base) as u32;
            ws.next_timestamp();
            let placement = ws.placement(ws.next_seq, at, self.log_tag);
            let frame = encode_marker_frame(FrameKind::Close, count, placement);
            let file = &ws.active.file;
            let closed = file
                .write_all_at(&frame, at)
                .and_then(|()| file.set_len(at + FRAME_HEADER_BYTES as u64))
                .and_then(|()| file.sync_data());
            if let Err(e) = closed {
                return Err(self.poison(Error::io("close", &ws.active.path, e)));
            }
            at
        };
        // The index covers everything before the close frame. Unchanged since a clean open it
        // need not be written again, unless a reader had to rebuild it.
        if !ws.tail_is_close || ws.active.index_dirty.load(Ordering::Acquire) {
            let header = IndexHeader {
                log_id: self.log_id,
                segment_base: ws.active.base,
                end_offset: at,
                end_seq: ws.next_seq,
            };
            let ix = ws.active.index.read().unwrap_or_else(|e| e.into_inner()).clone();
            let path = ws.active.index_path();
            // The close frame is durable now; without the index the next open scans the
            // active segment instead of trusting the close frame: slower, just as correct.
            index::store(self.storage.as_ref(), &path, &header, &ix).map_err(
                |e| match Error::io("write index", &path, e) {
                    full @ Error::StorageFull { .. } => full,
                    other => self.poison(other),
                },
            )?;
        }
        self.store_dirty_indexes()
    }

    /// Writes the indexes that readers rebuilt in memory because their file was missing or
    /// bad.
    fn store_dirty_indexes(&self) -> Result<()> {
        let sealed: Vec<_> = self.segments.read().unwrap_or_else(|e| e.into_inner()).clone();
        for seg in sealed.iter().filter(|s| s.index_dirty.load(Ordering::Acquire)) {
            self.store_index(seg)?;
        }
        Ok(())
    }
}

/// Background fsync for `Durability::Batched`: every `max_delay`, sync what is unsynced.
/// The thread holds only a weak reference and ends when the log is dropped or closed.
/// It wakes early and ends as soon as its stop channel closes (at close, or when the last
/// handle is dropped), so no thread outlives its log by a `max_delay`.
pub(crate) fn spawn_flusher(
    log: Weak<Inner>,
    max_delay: Duration,
    stop: crossbeam_channel::Receiver<()>,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("annal-flusher".into()).spawn(move || {
        while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stop.recv_timeout(max_delay) {
            let Some(inner) = log.upgrade() else { return };
            if inner.committer.lock_state().closed || inner.poison.get().is_some() {
                return;
            }
            if inner.has_unsynced() {
                // A failure poisons the log; appenders and `sync` report it.
                let _ = inner.sync();
            }
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    use crate::fs::{SimFs, Storage};
    use crate::{Error, Log, Options};

    /// A leader that panics inside its group (in a commit hook) must not leave the other
    /// members of that group waiting: each is woken with an error, and the log is poisoned.
    #[test]
    fn members_of_a_panicking_leaders_group_are_woken_with_an_error() {
        let storage: Arc<dyn Storage> = Arc::new(SimFs::new(1));
        let log = Arc::new(Log::open_with(storage, "/s", Options::default()).unwrap());
        // The first leader holds its group in a hook until the next group has queued.
        let hold = Arc::new(Barrier::new(2));
        let first = {
            let (log, hold) = (Arc::clone(&log), Arc::clone(&hold));
            std::thread::spawn(move || {
                let hook = Box::new(move |_| {
                    hold.wait();
                    std::thread::sleep(Duration::from_millis(200));
                    Ok(true)
                });
                log.append_hooked(&[b"first"], hook)
            })
        };
        hold.wait();
        // Queued behind it, in this order: an append whose hook panics (it gets the lead
        // next and takes the whole queue), then a plain one in the same group.
        let panicker = {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let hook = Box::new(|_| -> crate::Result<bool> { panic!("hook panics") });
                log.append_hooked(&[b"panics"], hook)
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        let (tx, rx) = mpsc::channel();
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || tx.send(log.append(&[b"member"])));
        }
        assert!(first.join().unwrap().is_ok());
        assert!(panicker.join().is_err(), "the hook's panic reaches its own appender");
        let member = rx.recv_timeout(Duration::from_secs(10)).expect("the member was never woken");
        assert!(matches!(member, Err(Error::Poisoned { .. })), "{member:?}");
        assert!(matches!(log.append(&[b"later"]), Err(Error::Poisoned { .. })));
    }
}
