//! `annal`: the command-line tool. A thin layer over `annal_tools`: parse arguments, run,
//! print text or JSON, exit with the documented code.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use annal::repair::RepairOptions;
use annal_tools::check;
use annal_tools::demo::{self, DemoConfig, DemoError};
use annal_tools::escape;
use annal_tools::events::{self, Policy, ReadQuery};
use annal_tools::inspect::{self, Access, Verdict};
use clap::{Args, Parser, Subcommand};

/// annal: an embedded event store built on a segmented, CRC-checked write-ahead log with
/// group commit.
#[derive(Debug, Parser)]
#[command(
    name = "annal",
    version,
    after_help = "Exit codes: 0 ok, 1 problems found (or some input failed, or the store could \
                  not be read), 2 usage error, 3 the store is locked by another process.\n\
                  Every command takes --dir DIR (default $ANNAL_DIR, else ./annal-data)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an event-sourced bank on a fresh store, printing what happens and what was measured.
    ///
    /// Accounts are aggregates (commands validated: a duplicate open and an overdraft are
    /// rejected); threads run deposits, withdrawals and transfers with optimistic concurrency,
    /// some on the same accounts (conflicts are retried and counted); a projection thread keeps
    /// balances and the total for queries (money conservation is checked against the
    /// aggregates); the busiest account is loaded from its snapshot and by full replay; the
    /// projection is rebuilt from seq 0, verified against the live one by digest and swapped in;
    /// the store is shown as inspect shows it. Prints throughput and execute latency p50/p99.
    /// Exit 1 if a check fails. DIR must be missing or empty; if it holds a previous demo's
    /// store, that store is left alone and the run uses DIR/demo-run-N (the first free N >= 2);
    /// any other non-empty DIR is refused (exit 2).
    Demo(DemoArgs),
    /// Append events given as JSON lines on stdin; answer each line with one JSON line.
    ///
    /// Input, one event per line: {"stream": "...", "type": "...", "data": <JSON>,
    /// "metadata": <JSON, optional>, "id": <UUID, optional>, "expected_version": <"any" |
    /// "no_stream" | "exists" | integer, optional>}. Output, in input order: {"seq", "stream",
    /// "version"} once the event is durable under --durability, or {"error", "kind"} (kinds:
    /// wrong_expected_version, invalid_input, storage_full, io, poisoned, other) when it was
    /// not appended. Lines of different streams are appended concurrently; lines of one stream
    /// in input order, queued ones as one batch (one fsync). Exit 0 if every line was appended,
    /// 1 otherwise, 3 if the store is locked.
    Append(AppendArgs),
    /// Print events as JSON lines (read-only, no lock).
    ///
    /// Each line: {"seq", "stream", "version", "type", "id", "timestamp" (microseconds since
    /// the Unix epoch), "data", "metadata"}. data and metadata are JSON when they hold JSON,
    /// else "data_b64"/"metadata_b64" (base64); records that are not events print as {"seq",
    /// "timestamp", "payload" or "payload_b64"}. Opens the store read-only (no lock: works
    /// beside a writer). On a damaged record, prints everything before it, names the damage on
    /// stderr and exits 1.
    Read(ReadArgs),
    /// Print durable events, then follow what other processes append (read-only, no lock).
    ///
    /// Prints as read does, then re-opens the store read-only every 250 ms and prints each
    /// new record once it is provably durable, never before: once a later frame the writer
    /// wrote after an fsync covers it (its synced_through; a seal or close frame covers all
    /// before it), or once it has waited 1 s without that and tail's own fdatasync of the
    /// segment succeeded and a fresh read still finds it intact (the wait ends an idle
    /// writer's last group; --no-sync turns it off). Records a writer set aside after its
    /// fsync failed are never printed. If tail's own fdatasync fails, it says from which seq
    /// on records are not durable and exits 1; if a writer whose fsync failed later sets
    /// aside records only tail's fdatasync had made durable (it had not synced them itself:
    /// batched or none durability), tail says so and exits 1. Runs until interrupted or its
    /// output is closed; exit 1 if the store cannot be read.
    Tail(TailArgs),
    /// Describe a store: segments, streams, checkpoints, snapshots, projections, last shutdown.
    ///
    /// Read-only and without the lock. Exit 1 if the survey finds problems (see verify).
    Inspect(JsonArgs),
    /// Check every byte of a store without changing any (read-only, no lock).
    ///
    /// Checks segment headers, frame and record CRCs, seals, every index entry against its
    /// batch, seq density across segments, event bodies, the stream checkpoint. No lock: works
    /// on a read-only directory and beside a writer. Exit 0 when clean; a torn tail that a
    /// writer's open would cut is a warning (still 0). Exit 1 on any problem, each listed with
    /// its file, offset and kind.
    Verify(VerifyArgs),
    /// Repair a damaged store, copying every byte it changes into DIR/quarantine/ first.
    ///
    /// Takes the writer lock (exit 3 if held). Cuts a torn tail, rebuilds missing or damaged
    /// index files, sets aside a broken streams.ckpt. Mid-log damage is cut only with
    /// --salvage: the log is truncated at the first damaged record and everything after it
    /// (the rest of that segment, all later segments) moves into quarantine; the seq ranges
    /// and streams set aside are printed. Exit 0 when verify is clean afterwards.
    Repair(RepairArgs),
    /// List streams with their event counts and last seq (read-only).
    Streams(JsonArgs),
    /// List snapshot files (DIR/snapshots/) with their sizes.
    Snapshots(JsonArgs),
    /// Summarise a store: segments, next seq, durable head, recovery report.
    ///
    /// By default opens the store as its writer (taking its lock and running recovery, which
    /// may cut a torn tail), reading no records. Exit 0 if the store opened, 1 if it could not
    /// be opened, 3 if locked. With --read-only it takes no lock and writes nothing.
    Stat(InspectArgs),
}

#[derive(Debug, Args)]
struct DirArg {
    /// The store directory [default: $ANNAL_DIR, else ./annal-data].
    #[arg(long, env = "ANNAL_DIR", default_value = "annal-data", hide_default_value = true)]
    dir: PathBuf,
}

#[derive(Debug, Args)]
struct DemoArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Writer threads.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
    /// Accounts.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(2..=100_000))]
    accounts: u32,
    /// Commands (deposit, withdraw or transfer) per writer thread.
    #[arg(long, default_value_t = 1000, value_parser = commands_range())]
    commands: u64,
    /// Testing only: inject a fault the demo's checks must catch.
    #[arg(long, value_enum, hide = true)]
    inject_fault: Option<demo::Fault>,
}

/// Commands per thread: at least one, and few enough that latencies fit in memory.
fn commands_range() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(1..=1_000_000)
}

#[derive(Debug, Args)]
struct JsonArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Print a JSON report instead of text.
    #[arg(long)]
    json: bool,
    /// Accepted for compatibility: verify is always read-only.
    #[arg(long, hide = true)]
    read_only: bool,
}

#[derive(Debug, Args)]
struct RepairArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also cut mid-log damage, quarantining everything after the first damaged record.
    #[arg(long)]
    salvage: bool,
    /// Print a JSON report instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct AppendArgs {
    #[command(flatten)]
    dir: DirArg,
    /// When a line is acknowledged: sync (after fsync), batched (after the next fsync, at most
    /// ~10 ms later), none (once written to the OS; fsynced only at the end).
    #[arg(long, value_enum, default_value = "sync")]
    durability: Policy,
}

#[derive(Debug, Args)]
struct ReadArgs {
    #[command(flatten)]
    dir: DirArg,
    /// First seq to print (with --backward: the last).
    #[arg(long)]
    from: Option<u64>,
    /// Only this stream.
    #[arg(long)]
    stream: Option<String>,
    /// With --stream: first version to print (with --backward: the last).
    #[arg(long, requires = "stream")]
    from_version: Option<u64>,
    /// Print at most this many events.
    #[arg(long)]
    limit: Option<u64>,
    /// Newest first.
    #[arg(long)]
    backward: bool,
}

#[derive(Debug, Args)]
struct TailArgs {
    #[command(flatten)]
    dir: DirArg,
    /// First seq to print.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Never fdatasync the store: print only what the writer's frames prove durable (an
    /// idle writer's last group then waits for its next append or its close).
    #[arg(long)]
    no_sync: bool,
}

#[derive(Debug, Args)]
struct InspectArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Print a JSON report instead of text.
    #[arg(long)]
    json: bool,
    /// Open without the lock and write nothing (works beside a running writer); a torn tail
    /// is reported but not cut.
    #[arg(long)]
    read_only: bool,
}

impl InspectArgs {
    fn access(&self) -> Access {
        if self.read_only { Access::ReadOnly } else { Access::Writer }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = io::stdout();
    let (printed, code) = match cli.command {
        Command::Demo(args) => run_demo(&args, &mut stdout.lock()),
        Command::Append(args) => {
            let stdin = io::stdin();
            let mut input = stdin.lock();
            let mut out = io::stdout();
            (Ok(()), events::append(&args.dir.dir, args.durability, &mut input, &mut out))
        }
        Command::Read(args) => {
            let q = ReadQuery {
                from: args.from,
                stream: args.stream,
                from_version: args.from_version,
                limit: args.limit,
                backward: args.backward,
            };
            split(events::read(&args.dir.dir, &q, &mut stdout.lock()))
        }
        Command::Tail(args) => {
            let sync = !args.no_sync;
            split(events::tail(&args.dir.dir, args.from, sync, &mut stdout.lock()))
        }
        Command::Inspect(args) => {
            split(check::inspect(&args.dir.dir, args.json, &mut stdout.lock()))
        }
        Command::Verify(args) => split(check::verify(&args.dir.dir, args.json, &mut stdout.lock())),
        Command::Repair(args) => {
            let opts = RepairOptions { dry_run: args.dry_run, salvage: args.salvage };
            split(check::repair(&args.dir.dir, opts, args.json, &mut stdout.lock()))
        }
        Command::Streams(args) => {
            split(check::streams(&args.dir.dir, args.json, &mut stdout.lock()))
        }
        Command::Snapshots(args) => {
            split(check::snapshots(&args.dir.dir, args.json, &mut stdout.lock()))
        }
        Command::Stat(args) => {
            let mut out = stdout.lock();
            let report = inspect::stat(&args.dir.dir, args.access());
            let printed = if args.json {
                writeln!(out, "{}", inspect::to_json(&report))
            } else {
                report.write_text(&mut out, &args.dir.dir)
            };
            (printed, report.verdict)
        }
    };
    let flushed = printed.and_then(|()| io::stdout().flush());
    if let Err(e) = flushed {
        // A closed pipe (`annal stat | head -1`) is not worth a message; anything else is.
        if e.kind() != io::ErrorKind::BrokenPipe {
            let _ = writeln!(io::stderr(), "annal: writing output: {e}");
        }
        if code == Verdict::Ok {
            return ExitCode::from(Verdict::Problems.exit_code());
        }
    }
    ExitCode::from(code.exit_code())
}

/// An output result and verdict as `main` wants them: a failed write is a problem.
fn split(r: io::Result<Verdict>) -> (io::Result<()>, Verdict) {
    match r {
        Ok(v) => (Ok(()), v),
        Err(e) => (Err(e), Verdict::Problems),
    }
}

fn run_demo(args: &DemoArgs, out: &mut dyn Write) -> (io::Result<()>, Verdict) {
    let cfg = DemoConfig {
        dir: args.dir.dir.clone(),
        threads: usize::from(args.threads),
        accounts: args.accounts as usize,
        commands: args.commands,
        fault: args.inject_fault,
    };
    match demo::run(&cfg, out) {
        Ok(_) => (Ok(()), Verdict::Ok),
        Err(DemoError::Output(e)) => (Err(e), Verdict::Problems),
        Err(DemoError::Usage(msg)) => {
            let _ = out.flush();
            let _ = writeln!(io::stderr(), "annal demo: error: {}", escape::text(&msg));
            std::process::exit(2);
        }
        Err(e) => {
            let verdict = match &e {
                DemoError::Store(annal::Error::Locked { .. }) => Verdict::Locked,
                _ => Verdict::Problems,
            };
            let _ = out.flush();
            let msg = escape::text(&e.to_string()).into_owned();
            (writeln!(io::stderr(), "annal demo: error: {msg}"), verdict)
        }
    }
}
