//! The child side of `compare`: one workload of one contender in its own process, so that
//! its peak resident memory is its own.
//!
//! `compare --child WORKLOAD KIND DIR [key=value ...]` runs the workload and prints one line
//! `result key=value ...` on stdout; every child ends its line with `rss_kib`, its
//! `VmHWM`. The crash writer prints `ready` instead and waits to be killed.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use crate::contenders::{self, Contender, Kind, Opened};
use crate::dirs;
use crate::payload::{self, BULK_BATCH_EVENTS, EVENT_BYTES};
use crate::report::{R, timed_threads};
use crate::stats::{latency_histogram, quantile_us, record};

/// Seed of the event payloads of every workload.
pub const POOL_SEED: u64 = 0x5EED;

/// Seed of the random read positions.
const READ_SEED: u64 = 0xAB5E_11CE;

/// Seed of the streams loaded in W6.
const LOAD_SEED: u64 = 0x10AD;

/// The payload pool every contender writes from.
pub fn pool() -> Vec<Vec<u8>> {
    payload::pool(BULK_BATCH_EVENTS, EVENT_BYTES, POOL_SEED)
}

/// What a child was asked: `key=value` arguments.
struct Args(BTreeMap<String, String>);

impl Args {
    fn parse(items: &[String]) -> R<Self> {
        let mut m = BTreeMap::new();
        for it in items {
            let (k, v) = it.split_once('=').ok_or_else(|| format!("bad argument {it:?}"))?;
            m.insert(k.to_string(), v.to_string());
        }
        Ok(Args(m))
    }

    fn u64(&self, k: &str) -> R<u64> {
        Ok(self.0.get(k).ok_or_else(|| format!("missing {k}="))?.parse()?)
    }

    fn f64(&self, k: &str) -> R<f64> {
        Ok(self.0.get(k).ok_or_else(|| format!("missing {k}="))?.parse()?)
    }
}

/// Runs `compare --child ...` (the arguments after `--child`).
pub fn run(args: &[String]) -> R<()> {
    let [workload, kind, dir, rest @ ..] = args else {
        return Err("usage: --child WORKLOAD KIND DIR [key=value ...]".into());
    };
    let c = Kind::parse(kind).ok_or_else(|| format!("unknown contender {kind:?}"))?.contender();
    let dir = Path::new(dir);
    let a = Args::parse(rest)?;
    let mut out: Vec<(&str, f64)> = match workload.as_str() {
        "idle" => Vec::new(),
        "bulk" => bulk(c.as_ref(), dir, &a)?,
        "crash-writer" => crash_writer(c.as_ref(), dir, &a)?,
        "durable" => durable(c.as_ref(), dir, &a)?,
        "replay" => replay(c.as_ref(), dir, &a)?,
        "read" => read(c.as_ref(), dir, &a)?,
        "open" => open(c.as_ref(), dir, &a)?,
        "streams-build" => streams_build(c.as_ref(), dir, &a)?,
        "streams-read" => streams_read(c.as_ref(), dir, &a)?,
        "follow" => follow(c.as_ref(), dir, &a)?,
        other => return Err(format!("unknown workload {other:?}").into()),
    };
    out.push(("rss_kib", dirs::peak_rss_kib().map_or(f64::NAN, |k| k as f64)));
    let line: Vec<String> = out.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("result {}", line.join(" "));
    Ok(())
}

/// The sum of the first byte of the payloads `0..events`: what a full replay must add up to.
fn expected_sum(pool: &[Vec<u8>], events: u64) -> u64 {
    let per_round: u64 = pool.iter().map(|p| u64::from(p[0])).sum();
    let n = pool.len() as u64;
    let rest: u64 = pool[..(events % n) as usize].iter().map(|p| u64::from(p[0])).sum();
    events / n * per_round + rest
}

/// Opens the store and checks it holds `events`.
fn open_checked(c: &dyn Contender, dir: &Path, events: u64) -> R<Box<dyn Opened>> {
    let mut s = c.open(dir)?;
    let n = s.events()?;
    if n != events {
        return Err(format!("{} opened with {n} events, not {events}", c.kind().name()).into());
    }
    Ok(s)
}

/// W1: `events=N`. Timed from creating the store to the end of its one sync; then closed
/// (untimed) and measured on disk.
fn bulk(c: &dyn Contender, dir: &Path, a: &Args) -> R<Vec<(&'static str, f64)>> {
    let events = a.u64("events")?;
    let pool = pool();
    let t = Instant::now();
    let store = c.bulk(dir, events, &pool)?;
    let secs = t.elapsed().as_secs_f64();
    store.close()?;
    let disk = dirs::allocated_bytes(dir)?;
    Ok(vec![("rate", events as f64 / secs), ("secs", secs), ("disk_bytes", disk as f64)])
}

/// W7 set-up: `events=N`. Bulk, then `ready` on stdout, then wait to be killed.
fn crash_writer(c: &dyn Contender, dir: &Path, a: &Args) -> R<Vec<(&'static str, f64)>> {
    let store = c.bulk(dir, a.u64("events")?, &pool())?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    drop(out);
    loop {
        // Never closed: the parent kills this process.
        std::thread::park();
        black_box(&store);
    }
}

/// W2, W3: `threads=T secs=S`. Every thread appends one event at a time for S seconds.
fn durable(c: &dyn Contender, dir: &Path, a: &Args) -> R<Vec<(&'static str, f64)>> {
    let threads = a.u64("threads")? as usize;
    let secs = a.f64("secs")?;
    let pool = pool();
    let store = c.durable(dir, threads)?;
    let s = store.as_ref();
    let (ops, elapsed, hist) = timed_threads(threads, secs, |t, n| {
        s.append(t, &pool[(t * 31 + n as usize) % pool.len()])
    })?;
    store.finish(ops)?;
    Ok(vec![
        ("rate", ops as f64 / elapsed),
        ("ops", ops as f64),
        ("p50_us", quantile_us(&hist, 0.5)),
        ("p99_us", quantile_us(&hist, 0.99)),
    ])
}

/// W4: `events=N warm=0|1`. The open is not timed; a warm run replays once untimed first.
fn replay(c: &dyn Contender, dir: &Path, a: &Args) -> R<Vec<(&'static str, f64)>> {
    let events = a.u64("events")?;
    let pool = pool();
    let want = expected_sum(&pool, events);
    let mut s = open_checked(c, dir, events)?;
    let pass = |s: &mut Box<dyn Opened>| -> R<f64> {
        let mut sum = 0u64;
        let mut bad = 0u64;
        let t = Instant::now();
        let n = s.replay(&mut |seq, p| {
            sum += u64::from(p[0]);
            bad += u64::from(p != payload::expected(&pool, seq));
        })?;
        let secs = t.elapsed().as_secs_f64();
        if n != events || sum != want || bad != 0 {
            return Err(format!("replay saw {n} of {events} events, {bad} wrong").into());
        }
        Ok(secs)
    };
    if a.u64("warm")? == 1 {
        pass(&mut s)?;
    }
    let secs = pass(&mut s)?;
    s.close()?;
    Ok(vec![("rate", events as f64 / secs), ("secs", secs)])
}

/// W5: `events=N count=C`. C uniformly random seqs, the same for every contender; one
/// untimed pass warms the store, the second is timed per read.
fn read(c: &dyn Contender, dir: &Path, a: &Args) -> R<Vec<(&'static str, f64)>> {
    let events = a.u64("events")?;
    let pool = pool();
    let seqs = payload::random_seqs(a.u64("count")? as usize, events, READ_SEED);
    let mut s = open_checked(c, dir, events)?;
    s.prepare_reads()?;
    let mut bad = 0u64;
    for &seq in &seqs {
        s.read(seq, &mut |p| bad += u64::from(p != payload::expected(&pool, seq)))?;
    }
    if bad != 0 {
        return Err(format!("{bad} point reads returned the wrong payload").into());
    }
    let mut hist = latency_histogram();
    let mut acc = 0u64;
    let t = Instant::now();
    for &seq in &seqs {
        let t0 = Instant::now();
        s.read(seq, &mut |p| acc = acc.wrapping_add(u64::from(p[0])))?;
        record(&mut hist, t0.elapsed());
    }
    let secs = t.elapsed().as_secs_f64();
    black_box(acc);
    s.close()?;
    Ok(vec![
        ("rate", seqs.len() as f64 / secs),
        ("p50_us", quantile_us(&hist, 0.5)),
        ("p99_us", quantile_us(&hist, 0.99)),
    ])
}

/// W7: `events=N times=K`. K opens, each checked and closed (the close untimed).
fn open(c: &dyn Contender, dir: &Path, a: &Args) -> R<Vec<(&'static str, f64)>> {
    let events = a.u64("events")?;
    let mut ms = Vec::new();
    for _ in 0..a.u64("times")? {
        let t = Instant::now();
        let s = open_checked(c, dir, events)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        s.close()?;
    }
    let median = crate::stats::median(&ms);
    let best = ms.iter().copied().fold(f64::INFINITY, f64::min);
    Ok(vec![("rate", 1e3 / median), ("ms", median), ("best_ms", best)])
}

/// W6 set-up: `events=N streams=S`.
fn streams_build(c: &dyn Contender, dir: &Path, a: &Args) -> R<Vec<(&'static str, f64)>> {
    let events = a.u64("events")?;
    let mut it = contenders::stream_events(events, a.u64("streams")?, EVENT_BYTES);
    let t = Instant::now();
    c.build_streams(dir, &mut it)?;
    let secs = t.elapsed().as_secs_f64();
    Ok(vec![("secs", secs), ("disk_bytes", dirs::allocated_bytes(dir)? as f64)])
}

/// W6: `events=N streams=S loads=L`. L streams drawn at random (the same for every
/// contender), each loaded whole and checked; one untimed pass warms the store.
fn streams_read(c: &dyn Contender, dir: &Path, a: &Args) -> R<Vec<(&'static str, f64)>> {
    let (events, streams) = (a.u64("events")?, a.u64("streams")?);
    let lengths = contenders::stream_lengths(events, streams);
    let picks = payload::random_seqs(a.u64("loads")? as usize, streams, LOAD_SEED);
    let mut s = c.open_streams(dir)?;
    let load = |s: &mut Box<dyn contenders::StreamReader>, k: u64| -> R<u64> {
        let mut next = 0u64;
        let mut bytes = 0usize;
        let n = s.load(&format!("s-{k}"), &mut |v, data| {
            next += u64::from(v == next);
            bytes += data.len();
        })?;
        if n != lengths[k as usize] || next != n || bytes != n as usize * EVENT_BYTES {
            return Err(
                format!("stream s-{k}: {n} events, {} expected", lengths[k as usize]).into()
            );
        }
        Ok(n)
    };
    for &k in &picks {
        load(&mut s, k)?;
    }
    let mut hist = latency_histogram();
    let mut loaded = 0;
    let t = Instant::now();
    for &k in &picks {
        let t0 = Instant::now();
        loaded += load(&mut s, k)?;
        record(&mut hist, t0.elapsed());
    }
    let secs = t.elapsed().as_secs_f64();
    s.close()?;
    Ok(vec![
        ("rate", picks.len() as f64 / secs),
        ("events_per_load", loaded as f64 / picks.len() as f64),
        ("p50_us", quantile_us(&hist, 0.5)),
        ("p99_us", quantile_us(&hist, 0.99)),
    ])
}

/// W8: `count=C`. C appends, one at a time, each timed from the append call to its durable
/// return (`ack`) and to the follower having seen it (`visible`); the lag is the difference,
/// per append. 20 untimed appends first start the follower up.
fn follow(c: &dyn Contender, dir: &Path, a: &Args) -> R<Vec<(&'static str, f64)>> {
    const WARM_UP: u64 = 20;
    let count = a.u64("count")?;
    let pool = pool();
    let mut s = c.follow(dir)?;
    let (mut visible, mut ack, mut lag) =
        (latency_histogram(), latency_histogram(), latency_histogram());
    let t = Instant::now();
    let mut timed = std::time::Duration::ZERO;
    for i in 0..WARM_UP + count {
        let payload = &pool[(i % pool.len() as u64) as usize];
        let t0 = Instant::now();
        let seq = s.append(payload)?;
        let acked = t0.elapsed();
        s.wait_seen(seq)?;
        let seen = t0.elapsed();
        if i >= WARM_UP {
            record(&mut ack, acked);
            record(&mut visible, seen);
            record(&mut lag, seen.saturating_sub(acked));
            timed += seen;
        }
    }
    black_box(t.elapsed());
    s.finish(WARM_UP + count)?;
    let p50 = quantile_us(&visible, 0.5);
    Ok(vec![
        ("rate", count as f64 / timed.as_secs_f64()),
        ("p50_us", p50),
        ("p99_us", quantile_us(&visible, 0.99)),
        ("ack_p50_us", quantile_us(&ack, 0.5)),
        ("lag_p50_us", quantile_us(&lag, 0.5)),
        ("lag_p99_us", quantile_us(&lag, 0.99)),
    ])
}
