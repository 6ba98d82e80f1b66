//! Subscriptions: catch up through the replay cursor, then follow the log live
//! (ARCHITECTURE.md layer `subscribe`).
//!
//! A [`Subscription`] keeps one number of its own, the next seq it will look at. It registers
//! for the log's notification channel ([`crate::Log::subscribe_heads`]) *before* it reads
//! anything, and after every wake-up it reads from its next seq up to the visible end with a
//! cursor. There is no separate "catch-up" and "live" code path, so the handover between the
//! two cannot lose or repeat an event: an event that became visible before a read is found by
//! that read; one that becomes visible after it sends a notification (or finds one already
//! pending) and is found by the next read; and an event is delivered only when the
//! subscription's own next seq reaches it, exactly once.
//!
//! **What a subscriber sees.** Up to the log's visible end. Under [`crate::Durability::Sync`]
//! and [`crate::Durability::Batched`] that is the durable head: a subscriber never sees an
//! event that a crash could take back. Under [`crate::Durability::None`] there is no durable
//! head to wait for (fsyncs happen only at rolls and close), so subscribers see every written
//! event, as readers do, and a crash may take back events a subscriber has already seen.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::error::{Error, Result};
use crate::streams::{AllEvents, RecordedEvent, Store, category_of};

/// Which events a subscription delivers.
///
/// Stream and category filters together select streams: an event passes if its stream is
/// one of the streams named *or* in one of the categories named (if neither is set, every
/// stream passes). An event-type filter is applied on top: the event's type must be one of
/// those named. `Filter::default()` passes everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    streams: Vec<String>,
    categories: Vec<String>,
    event_types: Vec<String>,
}

impl Filter {
    /// A filter that passes every event.
    pub fn all() -> Self {
        Filter::default()
    }

    /// Also passes events of `stream`.
    pub fn stream(mut self, stream: impl Into<String>) -> Self {
        self.streams.push(stream.into());
        self
    }

    /// Also passes events of the streams in `category` (see [`category_of`]).
    pub fn category(mut self, category: impl Into<String>) -> Self {
        self.categories.push(category.into());
        self
    }

    /// Passes only events of the types named this way.
    pub fn event_type(mut self, event_type: impl Into<String>) -> Self {
        self.event_types.push(event_type.into());
        self
    }

    /// Whether `event` passes.
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        let stream_ok = (self.streams.is_empty() && self.categories.is_empty())
            || self.streams.iter().any(|s| *s == *event.stream_id)
            || category_of(&event.stream_id)
                .is_some_and(|cat| self.categories.iter().any(|c| c == cat));
        stream_ok
            && (self.event_types.is_empty()
                || self.event_types.iter().any(|t| *t == *event.event_type))
    }
}

/// A live, ordered feed of a store's events from a given seq on (see [`Store::subscribe`]).
///
/// Within one subscription every event at or after its start seq that passes its filter is
/// delivered exactly once, in seq order, with no gaps; events become deliverable when they
/// become visible (durable under the durable policies; see the module documentation).
/// A subscription is one reader: use it from one thread (it is `Send`).
#[derive(Debug)]
pub struct Subscription {
    store: Store,
    events: AllEvents,
    wake: Receiver<u64>,
    filter: Filter,
    next: u64,
    /// The log was closed: no wake-up will come again.
    closed: bool,
    /// The last read failed: the next read starts a new cursor at `next`.
    broken: bool,
}

impl Store {
    /// A subscription to every event with seq `from_seq` or later: it replays what is in the
    /// log, then follows new events as they become visible. Add a filter with
    /// [`Subscription::with_filter`]. The subscription holds a handle of the store.
    pub fn subscribe(&self, from_seq: u64) -> Subscription {
        // Registration comes first: nothing that becomes visible after the first read can go
        // unnoticed.
        let wake = self.log().subscribe_heads();
        Subscription {
            store: self.clone(),
            events: self.read_all(from_seq),
            wake,
            filter: Filter::all(),
            next: from_seq,
            closed: false,
            broken: false,
        }
    }
}

impl Subscription {
    /// Delivers only events that pass `filter`; the others are skipped (the position still
    /// moves past them).
    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    /// The filter in use.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// The next seq this subscription will look at: every event below it was delivered or
    /// filtered out.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The end of what subscribers may see now: one past the last visible seq (see the
    /// module documentation for what "visible" means under each durability policy).
    pub fn head(&self) -> u64 {
        self.store.log().visible_end()
    }

    /// The next matching event that is visible now, or `None` if there is none yet. Never
    /// blocks. A read error (a corrupt record) is returned, and the next call tries the
    /// same seq again.
    pub fn try_next(&mut self) -> Result<Option<RecordedEvent>> {
        if self.broken {
            self.events = self.store.read_all(self.next);
            self.broken = false;
        }
        loop {
            match self.events.next() {
                None => return Ok(None),
                Some(Err(e)) => {
                    self.broken = true;
                    return Err(e);
                }
                Some(Ok(event)) => {
                    debug_assert_eq!(event.seq, self.next, "the cursor skipped or repeated");
                    self.next = event.seq + 1;
                    if self.filter.matches(&event) {
                        return Ok(Some(event));
                    }
                }
            }
        }
    }

    /// The next matching event, waiting up to `timeout` for one to become visible.
    /// `Ok(None)` after the timeout; [`Error::Closed`] once the log is closed and every
    /// event it holds was delivered.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<RecordedEvent>> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if let Some(event) = self.try_next()? {
                return Ok(Some(event));
            }
            if self.closed {
                return Err(Error::Closed);
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if left.is_zero() {
                return Ok(None);
            }
            match self.wake.recv_timeout(left) {
                // The value does not matter: the read goes up to the visible end anyway.
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {}
                // Closed: one last read drains whatever became visible before the close.
                Err(RecvTimeoutError::Disconnected) => self.closed = true,
            }
        }
    }

    /// The next matching event, waiting as long as it takes; [`Error::Closed`] once the log
    /// is closed and every event it holds was delivered.
    pub fn recv(&mut self) -> Result<RecordedEvent> {
        loop {
            if let Some(event) = self.next_timeout(Duration::from_secs(3600))? {
                return Ok(event);
            }
        }
    }

    /// The receiver this subscription wakes on, for callers that wait on several channels
    /// (the projection runner).
    pub(crate) fn wake(&self) -> &Receiver<u64> {
        &self.wake
    }

    /// Marks the log closed after the caller saw the wake channel disconnect.
    pub(crate) fn note_closed(&mut self) {
        self.closed = true;
    }

    /// Whether the log was seen closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }
}

impl Iterator for Subscription {
    type Item = Result<RecordedEvent>;

    /// Blocks for the next matching event; ends when the log is closed and drained.
    fn next(&mut self) -> Option<Self::Item> {
        match self.recv() {
            Ok(event) => Some(Ok(event)),
            Err(Error::Closed) => None,
            Err(e) => Some(Err(e)),
        }
    }
}
