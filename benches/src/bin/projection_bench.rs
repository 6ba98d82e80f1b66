//! `projection_bench`: subscriptions and projections, each figure against a baseline measured
//! in the same run, printed as a Markdown table.
//!
//! ```text
//! cargo run --release -p annal-benches --bin projection_bench -- [--quick] [--dir PATH]
//!     [--allow-ram] [--reps N] [--only latency,catch-up,appends]
//! ```
//!
//! Workloads (stores on the real disk under `--dir`, `$ANNAL_BENCH_DIR` or
//! `target/bench-data`; a tmpfs is refused, since fsync is free there):
//! - **visible latency**: under `Durability::Sync`, one thread appends one event at a time
//!   and waits until a running `EventCounts` read model includes it (`wait_for`); the time
//!   from calling `append` to the read model showing the event, p50 and p99, against the
//!   baseline of the same appends' own latency (call to durable return).
//! - **catch-up**: 1M events of ~100 bytes (built with `Durability::None`, then synced); a
//!   counting projection (`EventCounts`, `Delivery::Replay`) started at seq 0, timed until it
//!   has applied the last event; the baseline is `Store::read_all(0)` applying every event to
//!   an `EventCounts` on the calling thread (the same work without the runner).
//! - **durable appends with projections**: 8 threads append (`Durability::Sync`) for a slice
//!   with no projection running, then for a slice with 4 `EventCounts` projections running
//!   (each following the head live), in ABBA order; the ratio of the throughputs, target at
//!   least 0.9. `--only appends-none` runs the same under `Durability::None`, where appends
//!   cost CPU only: it shows the CPU the projections take from the appenders (no target).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use annal::{
    Durability, EventCounts, ExpectedVersion, NewEvent, Options, Projection, ProjectionOptions,
    ProjectionRunner, Store, StoreOptions,
};
use annal_benches::machine;
use annal_benches::report::{R, Table, per_rep, progress, settle, timed_threads, verdict};
use annal_benches::stats::{
    fmt_rate, fmt_ratio, fmt_us, latency_histogram, median, quantile_us, record,
};

/// The command line of `projection_bench`.
#[derive(Debug, clap::Parser)]
#[command(name = "projection_bench", about = "annal subscriptions and projections")]
struct Cli {
    #[command(flatten)]
    common: annal_benches::cli::Common,
    /// Workloads to run, comma-separated, of latency, catch-up, appends, appends-none.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    only: Option<Vec<String>>,
}

const EVENT_TYPES: [&str; 4] = ["OrderPlaced", "ItemAdded", "ItemRemoved", "OrderShipped"];
const DATA: &[u8] =
    b"{\"order\":42,\"customer\":\"cust-000042\",\"sku\":\"SKU-00042\",\"qty\":3,\"price\":1999}";
const WAIT: Duration = Duration::from_secs(120);

struct Config {
    reps: usize,
    latency_events: u64,
    catch_up_events: u64,
    append_threads: usize,
    slice_secs: f64,
    slices: usize,
    projections: usize,
}

impl Config {
    fn new(quick: bool) -> Self {
        if quick {
            Config {
                reps: 1,
                latency_events: 300,
                catch_up_events: 100_000,
                append_threads: 8,
                slice_secs: 0.5,
                slices: 1,
                projections: 4,
            }
        } else {
            Config {
                reps: 3,
                latency_events: 2_000,
                catch_up_events: 1_000_000,
                append_threads: 8,
                slice_secs: 0.5,
                slices: 4,
                projections: 4,
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("projection_bench: {e}");
        std::process::exit(1);
    }
}

fn run(args: &[String]) -> R<()> {
    let cli: Cli = match annal_benches::cli::parse("projection_bench", args) {
        Ok(c) => c,
        Err(0) => return Ok(()),
        Err(_) => return Err("bad arguments (see --help)".into()),
    };
    let (quick, dir, allow_ram, reps, only) =
        (cli.common.quick, cli.common.dir, cli.common.allow_ram, cli.common.reps, cli.only);
    let mut cfg = Config::new(quick);
    if let Some(n) = reps {
        cfg.reps = n;
    }
    let root = dir.unwrap_or_else(machine::bench_root);
    fs::create_dir_all(&root)?;
    let fs_info = machine::fs_info(&root)?;
    if fs_info.ram_backed && !allow_ram {
        return Err(format!(
            "{} is on {} ({}): fsync is free there; pass --dir on a disk",
            root.display(),
            fs_info.fs_type,
            fs_info.device
        )
        .into());
    }
    let run_dir = tempfile::Builder::new().prefix("projection_bench-").tempdir_in(&root)?;
    progress(format!("stores in {} ({})", run_dir.path().display(), fs_info.fs_type));
    let started = Instant::now();
    let mut out = String::new();
    out.push_str(&format!("# projection_bench, {}\n\n", machine::utc_now()));
    for (k, v) in machine::describe() {
        out.push_str(&format!("- {k}: {v}\n"));
    }
    out.push_str(&format!(
        "- file system: {} on {}\n- {}\n- command: projection_bench {}\n\n",
        fs_info.fs_type,
        fs_info.device,
        machine::load(),
        args.join(" ")
    ));
    let wanted = |w: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == w));
    if wanted("latency") {
        latency(&cfg, run_dir.path(), &mut out)?;
    }
    if wanted("catch-up") {
        catch_up(&cfg, run_dir.path(), &mut out)?;
    }
    if wanted("appends") {
        appends(&cfg, run_dir.path(), Durability::Sync, &mut out)?;
    }
    if wanted("appends-none") {
        appends(&cfg, run_dir.path(), Durability::None, &mut out)?;
    }
    out.push_str(&format!("\nTotal run time {:.0} s.\n", started.elapsed().as_secs_f64()));
    progress("done");
    print!("{out}");
    run_dir.close()?;
    Ok(())
}

fn open(dir: &Path, durability: Durability) -> R<Store> {
    let opts = StoreOptions {
        log: Options { durability, ..Options::default() },
        ..StoreOptions::default()
    };
    Ok(Store::open(dir, opts)?)
}

fn event(i: u64) -> NewEvent {
    NewEvent::new(EVENT_TYPES[(i % 4) as usize], DATA)
}

fn latency(cfg: &Config, root: &Path, out: &mut String) -> R<()> {
    let mut visible = latency_histogram();
    let mut acked = latency_histogram();
    let mut ratios = Vec::new();
    for rep in 0..cfg.reps {
        progress(format!("visible latency, repetition {}", rep + 1));
        let dir = root.join(format!("latency-{rep}"));
        let store = open(&dir, Durability::Sync)?;
        let runner = ProjectionRunner::new(store.clone());
        let counts = runner.spawn(EventCounts::new("counts"), ProjectionOptions::default())?;
        let model = counts.read_model();
        settle(root)?;
        let mut v = latency_histogram();
        let mut a = latency_histogram();
        for i in 0..cfg.latency_events {
            let t0 = Instant::now();
            let r =
                store.append(&format!("order-{}", i % 100), ExpectedVersion::Any, &[event(i)])?;
            record(&mut a, t0.elapsed());
            model.wait_for(r.last_seq(), WAIT)?;
            record(&mut v, t0.elapsed());
        }
        ratios.push(quantile_us(&v, 0.5) / quantile_us(&a, 0.5));
        visible.add(&v).map_err(|e| e.to_string())?;
        acked.add(&a).map_err(|e| e.to_string())?;
        counts.stop()?;
        drop(runner);
        store.close()?;
    }
    let mut t = Table::new(
        "Append to visible in a read model (Durability::Sync, one writer)",
        &["measure", "p50 (µs)", "p99 (µs)", "ratio p50 to baseline"],
    );
    t.row(vec![
        "append call -> read model shows it".into(),
        fmt_us(quantile_us(&visible, 0.5)),
        fmt_us(quantile_us(&visible, 0.99)),
        fmt_ratio(median(&ratios)),
    ]);
    t.row(vec![
        "baseline: append call -> durable return".into(),
        fmt_us(quantile_us(&acked, 0.5)),
        fmt_us(quantile_us(&acked, 0.99)),
        "1.00x".into(),
    ]);
    t.note(format!(
        "{} appends per repetition; ratio = visible p50 / append p50 (lower is better, 1.00x \
         would mean the projection adds nothing). {}",
        cfg.latency_events,
        per_rep("ratios", &ratios)
    ));
    t.render(out);
    Ok(())
}

fn catch_up(cfg: &Config, root: &Path, out: &mut String) -> R<()> {
    progress(format!("catch-up: building {} events", cfg.catch_up_events));
    let dir = root.join("catch-up");
    let store = open(&dir, Durability::None)?;
    let mut i = 0;
    while i < cfg.catch_up_events {
        let n = (cfg.catch_up_events - i).min(1_000);
        let events: Vec<NewEvent> = (i..i + n).map(event).collect();
        store.append(&format!("order-{}", i / 1_000), ExpectedVersion::Any, &events)?;
        i += n;
    }
    store.log().sync()?;
    let mut proj = Vec::new();
    let mut base = Vec::new();
    let mut ratios = Vec::new();
    for rep in 0..cfg.reps {
        progress(format!("catch-up, repetition {}", rep + 1));
        let t0 = Instant::now();
        let mut inline = EventCounts::new("inline");
        for e in store.read_all(0) {
            inline.apply(&e?)?;
        }
        let b = cfg.catch_up_events as f64 / t0.elapsed().as_secs_f64();
        if inline.total() != cfg.catch_up_events {
            return Err("baseline miscounted".into());
        }
        let runner = ProjectionRunner::new(store.clone());
        let t0 = Instant::now();
        let counts = runner.spawn(EventCounts::new("counts"), ProjectionOptions::default())?;
        counts.wait_for(cfg.catch_up_events - 1, WAIT)?;
        let p = cfg.catch_up_events as f64 / t0.elapsed().as_secs_f64();
        if counts.read_model().read(|v| v.total()) != cfg.catch_up_events {
            return Err("projection miscounted".into());
        }
        counts.stop()?;
        proj.push(p);
        base.push(b);
        ratios.push(p / b);
    }
    store.close()?;
    let mut t = Table::new(
        &format!("Catch-up of a counting projection over {} events", cfg.catch_up_events),
        &["system", "events/s", "ratio"],
    );
    t.row(vec![
        "EventCounts projection from seq 0".into(),
        fmt_rate(median(&proj)),
        fmt_ratio(median(&ratios)),
    ]);
    t.row(vec![
        "baseline: read_all(0) into EventCounts on the caller's thread".into(),
        fmt_rate(median(&base)),
        "1.00x".into(),
    ]);
    t.note(per_rep("ratios", &ratios));
    t.render(out);
    Ok(())
}

fn appends(cfg: &Config, root: &Path, durability: Durability, out: &mut String) -> R<()> {
    let mut ratios = Vec::new();
    let mut with = Vec::new();
    let mut without = Vec::new();
    for rep in 0..cfg.reps {
        progress(format!("appends ({durability:?}) with and without projections, rep {}", rep + 1));
        let dir = root.join(format!("appends-{durability:?}-{rep}"));
        let store = open(&dir, durability)?;
        let runner = ProjectionRunner::new(store.clone());
        // Per ABBA block of four slices: (appends/s without, appends/s with projections).
        let mut blocks: Vec<(f64, f64)> = Vec::new();
        let (mut ops0, mut secs0, mut ops4, mut secs4) = (0u64, 0f64, 0u64, 0f64);
        for slice in 0..cfg.slices * 4 {
            // ABBA order (0, 4, 4, 0, ...), so a drift in the disk's speed hits both alike.
            let projected = matches!(slice % 4, 1 | 2);
            let handles = if projected {
                (0..cfg.projections)
                    .map(|k| {
                        runner
                            .spawn(EventCounts::new(format!("p{k}")), ProjectionOptions::default())
                    })
                    .collect::<Result<Vec<_>, _>>()?
            } else {
                Vec::new()
            };
            // The projections start caught up, so they follow the head during the slice.
            let head = store.log().visible_end();
            for h in &handles {
                if head > 0 {
                    h.wait_for(head - 1, WAIT)?;
                }
            }
            settle(root)?;
            let (ops, secs, _) = timed_threads(cfg.append_threads, cfg.slice_secs, |t, n| {
                store.append(&format!("order-{t}"), ExpectedVersion::Any, &[event(n)])?;
                Ok(())
            })?;
            if projected {
                ops4 += ops;
                secs4 += secs;
                let head = store.log().visible_end();
                for h in &handles {
                    h.wait_for(head - 1, WAIT)?;
                    if h.read_model().read(|v| v.total()) != head {
                        return Err("a projection miscounted".into());
                    }
                }
            } else {
                ops0 += ops;
                secs0 += secs;
            }
            for h in handles {
                h.stop()?;
            }
            if slice % 4 == 3 {
                blocks.push((ops0 as f64 / secs0, ops4 as f64 / secs4));
                (ops0, secs0, ops4, secs4) = (0, 0.0, 0, 0.0);
            }
        }
        without.extend(blocks.iter().map(|b| b.0));
        with.extend(blocks.iter().map(|b| b.1));
        ratios.extend(blocks.iter().map(|b| b.1 / b.0));
        drop(runner);
        store.close()?;
    }
    let ratio = median(&ratios);
    let mut t = Table::new(
        &format!(
            "Appends ({} threads, Durability::{durability:?}) with projections running",
            cfg.append_threads
        ),
        &["projections", "appends/s", "ratio", "target"],
    );
    t.row(vec!["0 (baseline)".into(), fmt_rate(median(&without)), "1.00x".into(), String::new()]);
    t.row(vec![
        format!("{} EventCounts, live", cfg.projections),
        fmt_rate(median(&with)),
        fmt_ratio(ratio),
        if durability == Durability::Sync { verdict(ratio, 0.9) } else { "none".into() },
    ]);
    t.note(format!(
        "{} slices of {} s each per repetition in ABBA blocks (0, 4, 4, 0 projections); \
         figures are medians over the blocks, the ratio taken within each block. {}",
        cfg.slices * 4,
        cfg.slice_secs,
        per_rep("block ratios", &ratios)
    ));
    t.render(out);
    Ok(())
}
