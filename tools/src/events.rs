//! `annal append`, `annal read` and `annal tail`: JSON lines in, JSON lines out.
//!
//! `append` acknowledges a line only once its event is durable under the chosen policy; `read`
//! and `tail` open the store read-only ([`annal::inspect::EventReader`],
//! [`annal::inspect::DurableTail`]), so they work beside a running writer; `tail` prints only
//! events proven durable.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, BufRead, Write};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use annal::inspect::{DurableTail, EventReader, LogItem, TailOptions};
use annal::{Durability, Error, ExpectedVersion, NewEvent, Options, RecordedEvent, Store};
use annal::{StoreOptions, parse_stream_id};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::escape;
use crate::inspect::Verdict;

/// Longest input line `append` accepts; a longer one is answered with an `invalid_input`
/// error line and skipped to its end without being held in memory.
pub const LINE_BYTES_MAX: usize = 32 << 20;

/// Appender threads: appends to different streams run concurrently and share fsyncs.
const APPENDERS: usize = 16;

/// How often `tail` looks for new records.
pub const TAIL_POLL: Duration = Duration::from_millis(250);

/// The durability policy of `append`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Policy {
    /// Acknowledge after fsync (group commit shares fsyncs between concurrent lines).
    Sync,
    /// Write at once, fsync at least every 10 ms; acknowledge once the fsync covers the line.
    Batched,
    /// Never fsync until the end of input; acknowledge once written to the OS.
    None,
}

/// One parsed input line.
struct Input {
    stream: String,
    expected: ExpectedVersion,
    event: NewEvent,
}

/// The answer to one line.
type Answer = Result<(u64, String, u64), (String, &'static str)>;

fn parse_line(line: &[u8]) -> Result<Input, String> {
    let v: Value = serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut m) = v else { return Err("not a JSON object".into()) };
    let stream = match m.remove("stream") {
        Some(Value::String(s)) => {
            parse_stream_id(s.as_bytes()).map_err(|e| e.to_string())?.to_owned()
        }
        _ => return Err("\"stream\" must be a string".into()),
    };
    let event_type = match m.remove("type") {
        Some(Value::String(s)) => s,
        _ => return Err("\"type\" must be a string".into()),
    };
    let data = m.remove("data").ok_or("\"data\" is missing")?;
    let data = serde_json::to_vec(&data).map_err(|e| e.to_string())?;
    let mut event = NewEvent::new(event_type, data);
    match m.remove("metadata") {
        None | Some(Value::Null) => {}
        Some(meta) => {
            event = event.with_metadata(serde_json::to_vec(&meta).map_err(|e| e.to_string())?)
        }
    }
    match m.remove("id") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            let id = uuid::Uuid::parse_str(&s).map_err(|e| format!("\"id\" is not a UUID: {e}"))?;
            event = event.with_id(id);
        }
        Some(_) => return Err("\"id\" must be a UUID string".into()),
    }
    let expected = match m.remove("expected_version") {
        None | Some(Value::Null) => ExpectedVersion::Any,
        Some(Value::String(s)) if s == "any" => ExpectedVersion::Any,
        Some(Value::String(s)) if s == "no_stream" => ExpectedVersion::NoStream,
        Some(Value::String(s)) if s == "exists" => ExpectedVersion::StreamExists,
        Some(Value::Number(n)) if n.as_u64().is_some() => {
            ExpectedVersion::Exact(n.as_u64().unwrap_or_default())
        }
        Some(other) => {
            return Err(format!(
                "\"expected_version\" must be \"any\", \"no_stream\", \"exists\" or a \
                 non-negative integer, not {other}"
            ));
        }
    };
    if let Some(k) = m.keys().next() {
        return Err(format!("unknown field {k:?}"));
    }
    Ok(Input { stream, expected, event })
}

fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::WrongExpectedVersion { .. } => "wrong_expected_version",
        Error::InvalidStreamId { .. }
        | Error::InvalidEventType { .. }
        | Error::RecordTooLarge { .. }
        | Error::BatchTooLarge { .. }
        | Error::EmptyBatch => "invalid_input",
        Error::StorageFull { .. } => "storage_full",
        Error::Poisoned { .. } => "poisoned",
        Error::Io { .. } => "io",
        Error::Closed => "closed",
        _ => "other",
    }
}

/// Reads one line (without its newline) into `buf`; `Ok(false)` at end of input. A line
/// longer than [`LINE_BYTES_MAX`] is consumed and returned as `Err(())`.
fn read_line(input: &mut dyn BufRead, buf: &mut Vec<u8>) -> io::Result<Result<bool, ()>> {
    buf.clear();
    let mut too_long = false;
    loop {
        let chunk = input.fill_buf()?;
        if chunk.is_empty() {
            let any = !buf.is_empty() || too_long;
            return Ok(if too_long { Err(()) } else { Ok(any) });
        }
        let (part, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (chunk.get(..i).unwrap_or_default(), Some(i + 1)),
            None => (chunk, None),
        };
        if !too_long && buf.len() + part.len() <= LINE_BYTES_MAX {
            buf.extend_from_slice(part);
        } else {
            too_long = true;
            buf.clear();
        }
        let used = done.unwrap_or(chunk.len());
        input.consume(used);
        if done.is_some() {
            return Ok(if too_long { Err(()) } else { Ok(true) });
        }
    }
}

/// Runs `annal append`: events from `input`, one answer line per input line on `out`.
pub fn append(
    dir: &Path,
    policy: Policy,
    input: &mut dyn BufRead,
    out: &mut (dyn Write + Send),
) -> Verdict {
    let durability = match policy {
        Policy::Sync => Durability::Sync,
        Policy::Batched => {
            Durability::Batched { max_delay: Duration::from_millis(10), max_bytes: 1 << 20 }
        }
        Policy::None => Durability::None,
    };
    let opts = StoreOptions {
        log: Options { durability, ..Options::default() },
        ..StoreOptions::default()
    };
    let store = match Store::open(dir, opts) {
        Ok(s) => s,
        Err(e) => {
            let msg = escape::text(&e.to_string()).into_owned();
            let _ = writeln!(io::stderr(), "annal append: {msg}");
            return if matches!(e, Error::Locked { .. }) {
                Verdict::Locked
            } else {
                Verdict::Problems
            };
        }
    };
    let (answers_tx, answers_rx) = mpsc::channel::<(u64, Answer)>();
    let mut all_ok = true;
    let mut printed_ok = true;
    std::thread::scope(|scope| {
        let mut lanes = Vec::with_capacity(APPENDERS);
        for _ in 0..APPENDERS {
            let (tx, rx) = mpsc::sync_channel::<(u64, Input)>(256);
            lanes.push(tx);
            let store = store.clone();
            let answers = answers_tx.clone();
            scope.spawn(move || appender(&store, &rx, &answers));
        }
        let printer = {
            let store = store.clone();
            scope.spawn(move || print_answers(&store, policy, answers_rx, out))
        };
        let mut buf = Vec::new();
        let mut i = 0u64;
        loop {
            let line = match read_line(input, &mut buf) {
                Ok(Ok(false)) => break,
                Ok(Ok(true)) => parse_line(&buf),
                Ok(Err(())) => Err(format!("line longer than {LINE_BYTES_MAX} bytes")),
                Err(e) => {
                    let _ = writeln!(io::stderr(), "annal append: reading input: {e}");
                    all_ok = false;
                    break;
                }
            };
            match line {
                Ok(input) => {
                    // One lane per stream keeps each stream's lines in input order.
                    let lane = lane_of(&input.stream);
                    if let Some(tx) = lanes.get(lane) {
                        let _ = tx.send((i, input));
                    }
                }
                Err(msg) => {
                    let _ = answers_tx.send((i, Err((msg, "invalid_input"))));
                }
            }
            i += 1;
        }
        drop(lanes);
        drop(answers_tx);
        match printer.join() {
            Ok((ok, printed)) => {
                all_ok &= ok;
                printed_ok = printed;
            }
            Err(_) => all_ok = false,
        }
    });
    if let Err(e) = store.close() {
        let msg = escape::text(&e.to_string()).into_owned();
        let _ = writeln!(io::stderr(), "annal append: closing the store: {msg}");
        all_ok = false;
    }
    if all_ok && printed_ok { Verdict::Ok } else { Verdict::Problems }
}

/// Most lines one append may carry (one atomic batch, one fsync).
const LINES_PER_BATCH_MAX: usize = 1000;

/// One lane: appends its lines in order. Lines already queued for the same stream, after the
/// first with any expected version and then only `any`, go as one batch (one fsync); if the
/// batch fails, nothing of it was written and each line is appended alone, so every line
/// gets its own answer.
fn appender(
    store: &Store,
    rx: &mpsc::Receiver<(u64, Input)>,
    answers: &mpsc::Sender<(u64, Answer)>,
) {
    let mut carry: Option<(u64, Input)> = None;
    loop {
        let Some(first) = carry.take().or_else(|| rx.recv().ok()) else { return };
        let mut batch = vec![first];
        while batch.len() < LINES_PER_BATCH_MAX {
            match rx.try_recv() {
                Ok(next) => {
                    let same = batch.first().is_some_and(|(_, f)| f.stream == next.1.stream);
                    if same && next.1.expected == ExpectedVersion::Any {
                        batch.push(next);
                    } else {
                        carry = Some(next);
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        let mut results = Vec::with_capacity(batch.len());
        let together = match batch.as_slice() {
            [(_, one)] => Err(one),
            [(_, head), ..] => {
                let events: Vec<NewEvent> = batch.iter().map(|(_, i)| i.event.clone()).collect();
                match store.append(&head.stream, head.expected, &events) {
                    Ok(a) => Ok(a),
                    Err(_) => Err(head),
                }
            }
            [] => continue,
        };
        match together {
            Ok(a) => {
                for (k, (i, input)) in batch.into_iter().enumerate() {
                    let k = k as u64;
                    results.push((i, Ok((a.first_seq + k, input.stream, a.first_version + k))));
                }
            }
            Err(_) => {
                for (i, input) in batch {
                    let r = store.append(&input.stream, input.expected, &[input.event]);
                    let answer = match r {
                        Ok(a) => Ok((a.first_seq, input.stream, a.first_version)),
                        Err(e) => Err((e.to_string(), error_kind(&e))),
                    };
                    results.push((i, answer));
                }
            }
        }
        for r in results {
            if answers.send(r).is_err() {
                return;
            }
        }
    }
}

fn lane_of(stream: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    stream.hash(&mut h);
    (h.finish() % APPENDERS as u64) as usize
}

/// Prints answers in input order as they become ready; returns (every line appended,
/// output written).
fn print_answers(
    store: &Store,
    policy: Policy,
    answers: mpsc::Receiver<(u64, Answer)>,
    out: &mut (dyn Write + Send),
) -> (bool, bool) {
    let mut pending: BTreeMap<u64, Answer> = BTreeMap::new();
    let mut next = 0u64;
    let mut all_ok = true;
    let mut out_ok = true;
    while let Ok((i, a)) = answers.recv() {
        pending.insert(i, a);
        while let Ok((i, a)) = answers.try_recv() {
            pending.insert(i, a);
        }
        let mut ready = Vec::new();
        while let Some(a) = pending.remove(&next) {
            ready.push(a);
            next += 1;
        }
        if ready.is_empty() {
            continue;
        }
        if policy == Policy::Batched {
            let max = ready.iter().filter_map(|a| a.as_ref().ok().map(|(s, _, _)| *s)).max();
            // Batched appends return before their fsync: make sure one covers them.
            if let Some(max) = max
                && store.log().durable_head().is_none_or(|h| h < max)
                && let Err(e) = store.log().sync()
            {
                let msg = format!("not acknowledged, the fsync failed: {e}");
                for a in ready.iter_mut().filter(|a| a.is_ok()) {
                    *a = Err((msg.clone(), error_kind(&e)));
                }
            }
        }
        for a in ready {
            let line = match a {
                Ok((seq, stream, version)) => {
                    json!({"seq": seq, "stream": stream, "version": version})
                }
                Err((msg, kind)) => {
                    all_ok = false;
                    json!({"error": msg, "kind": kind})
                }
            };
            if out_ok {
                out_ok = writeln!(out, "{}", escape::json(line.to_string())).is_ok();
            }
        }
        if out_ok {
            out_ok = out.flush().is_ok();
        }
    }
    (all_ok, out_ok)
}

/// What `annal read` selects.
#[derive(Debug, Clone, Default)]
pub struct ReadQuery {
    /// First seq (forward) or last seq (backward) to consider.
    pub from: Option<u64>,
    /// Only this stream.
    pub stream: Option<String>,
    /// First (forward) or last (backward) version of the stream.
    pub from_version: Option<u64>,
    /// Most events printed.
    pub limit: Option<u64>,
    /// Newest first.
    pub backward: bool,
}

impl ReadQuery {
    fn wants(&self, item: &LogItem) -> bool {
        let (seq, ev) = match item {
            LogItem::Event(e) => (e.seq, Some(e)),
            LogItem::Raw(r) => (r.seq, None),
        };
        if let Some(from) = self.from
            && ((!self.backward && seq < from) || (self.backward && seq > from))
        {
            return false;
        }
        match (&self.stream, ev) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(s), Some(e)) => {
                e.stream_id == *s
                    && self
                        .from_version
                        .is_none_or(|v| if self.backward { e.version <= v } else { e.version >= v })
            }
        }
    }
}

fn bytes_field(m: &mut serde_json::Map<String, Value>, name: &str, b: &[u8], empty_is_null: bool) {
    if b.is_empty() && empty_is_null {
        m.insert(name.into(), Value::Null);
    } else if let Ok(v) = serde_json::from_slice::<Value>(b) {
        m.insert(name.into(), v);
    } else {
        let enc = base64::engine::general_purpose::STANDARD.encode(b);
        m.insert(format!("{name}_b64"), Value::String(enc));
    }
}

fn event_json(e: &RecordedEvent) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("seq".into(), json!(e.seq));
    m.insert("stream".into(), json!(e.stream_id));
    m.insert("version".into(), json!(e.version));
    m.insert("type".into(), json!(e.event_type));
    m.insert("id".into(), json!(e.event_id.to_string()));
    m.insert("timestamp".into(), json!(e.timestamp_us));
    bytes_field(&mut m, "data", &e.data, false);
    bytes_field(&mut m, "metadata", &e.metadata, true);
    Value::Object(m)
}

/// The output line for one item: events as events, other records as `seq`, `timestamp`
/// and `payload` (JSON) or `payload_b64`.
pub fn item_json(item: &LogItem) -> String {
    let v = match item {
        LogItem::Event(e) => event_json(e),
        LogItem::Raw(r) => {
            let mut m = serde_json::Map::new();
            m.insert("seq".into(), json!(r.seq));
            m.insert("timestamp".into(), json!(r.timestamp_us));
            bytes_field(&mut m, "payload", &r.payload, false);
            Value::Object(m)
        }
    };
    escape::json(v.to_string())
}

fn report_read_error(cmd: &str, e: &Error) {
    let msg = escape::text(&e.to_string()).into_owned();
    let _ = writeln!(io::stderr(), "annal {cmd}: {msg}");
}

/// Runs `annal read`.
pub fn read(dir: &Path, q: &ReadQuery, out: &mut dyn Write) -> io::Result<Verdict> {
    let start = if q.backward { 0 } else { q.from.unwrap_or(0) };
    let reader = match EventReader::open(dir, start) {
        Ok(r) => r,
        Err(e) => {
            report_read_error("read", &e);
            return Ok(Verdict::Problems);
        }
    };
    let limit = q.limit.unwrap_or(u64::MAX);
    let mut printed = 0u64;
    let mut newest: VecDeque<String> = VecDeque::new();
    let mut verdict = Verdict::Ok;
    for item in reader {
        let item = match item {
            Ok(i) => i,
            Err(e) => {
                report_read_error("read", &e);
                verdict = Verdict::Problems;
                break;
            }
        };
        if !q.wants(&item) {
            continue;
        }
        if q.backward {
            newest.push_back(item_json(&item));
            if newest.len() as u64 > limit {
                newest.pop_front();
            }
        } else {
            if printed >= limit {
                break;
            }
            writeln!(out, "{}", item_json(&item))?;
            printed += 1;
        }
    }
    for line in newest.iter().rev() {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(verdict)
}

/// Read errors in a row at the same seq after which `tail` gives up: a reader that opened
/// while the writer was changing a file can meet bytes that moved under it, which a re-open
/// sees correctly; damage persists.
const TAIL_RETRIES_MAX: u32 = 5;

/// How long `tail` waits for a writer's frame to prove records durable before it fdatasyncs
/// the segment itself ([`TailOptions::sync_after`]).
pub const TAIL_SYNC_AFTER: Duration = Duration::from_secs(1);

/// Runs `annal tail`: prints from `from` every record proven durable, then polls every
/// [`TAIL_POLL`] for records another process appended and prints them once they are proven
/// durable ([`DurableTail`]), until output fails or the store cannot be read. With `sync`,
/// records no frame proves durable after [`TAIL_SYNC_AFTER`] are proven by tail's own
/// fdatasync of the segment.
pub fn tail(dir: &Path, from: u64, sync: bool, out: &mut dyn Write) -> io::Result<Verdict> {
    let opts = TailOptions { sync_after: sync.then_some(TAIL_SYNC_AFTER) };
    let mut reader = match DurableTail::open(dir, from, opts) {
        Ok(r) => r,
        Err(e) => {
            report_read_error("tail", &e);
            return Ok(Verdict::Problems);
        }
    };
    let mut failures = 0;
    loop {
        let mut failed = None;
        for item in reader.by_ref() {
            match item {
                Ok(i) => {
                    writeln!(out, "{}", item_json(&i))?;
                    failures = 0;
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        out.flush()?;
        if let Some(e) = failed {
            failures += 1;
            if failures >= TAIL_RETRIES_MAX {
                report_read_error("tail", &e);
                return Ok(Verdict::Problems);
            }
        }
        std::thread::sleep(TAIL_POLL);
        while let Err(e) = reader.poll() {
            if matches!(e, Error::Retracted { .. }) {
                report_read_error("tail", &e);
                return Ok(Verdict::Problems);
            }
            if reader.sync_failed() {
                // The storage failed: what lies past the proven end may never be durable,
                // and a retried fdatasync could succeed without it.
                let msg = escape::text(&e.to_string()).into_owned();
                let _ = writeln!(
                    io::stderr(),
                    "annal tail: {msg}; records from seq {} on are not durable",
                    reader.proven_end()
                );
                return Ok(Verdict::Problems);
            }
            failures += 1;
            if failures >= TAIL_RETRIES_MAX {
                report_read_error("tail", &e);
                return Ok(Verdict::Problems);
            }
            std::thread::sleep(TAIL_POLL);
        }
    }
}
