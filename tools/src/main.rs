//! `annal`: the command-line tool. A thin layer over `annal_tools`: parse arguments, run,
//! print text or JSON, exit with the documented code.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use annal_tools::demo::{self, DemoConfig, DemoError};
use annal_tools::escape;
use annal_tools::inspect::{self, Access, Verdict};
use clap::{Args, Parser, Subcommand};

/// annal: an embedded event store built on a segmented, CRC-checked write-ahead log with
/// group commit.
#[derive(Debug, Parser)]
#[command(
    name = "annal",
    version,
    after_help = "Exit codes: 0 ok, 1 problems found (or the store could not be read), \
                  2 usage error, 3 the store is locked by another handle."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a group-commit workload, replay the whole log and reopen it, printing what was measured.
    ///
    /// Several threads append small JSON events, one per append, each durable (it returns after
    /// fdatasync; concurrent appends share one fsync). Prints appends/s, per-append latency
    /// percentiles, fsyncs and appends per fsync, then replays every record (verifying every CRC
    /// and comparing this run's events byte for byte) and reopens the store to show what recovery
    /// reports. Works on a fresh directory and on one holding a store (it appends more).
    Demo(DemoArgs),
    /// Read every record of a store, verifying every checksum; exit 1 if anything is wrong.
    ///
    /// By default this opens the store as its writer: it takes the store's lock (exit 3 if
    /// another process holds it) and runs recovery, which cuts a torn tail (after copying the
    /// cut bytes aside; reported, and exit 1) or finishes an interrupted segment roll; closing
    /// writes a close frame (unless the store was already closed cleanly and nothing was appended). With --read-only it takes no lock and writes nothing.
    Verify(InspectArgs),
    /// Summarise a store: segments, next seq, durable head, recovery report.
    ///
    /// Opens the store as `verify` does (by default taking its lock and running recovery) but
    /// reads no records. Exit 0 if the store opened, 1 if it could not be opened, 3 if locked.
    Stat(InspectArgs),
}

#[derive(Debug, Args)]
struct DirArg {
    /// The store directory.
    #[arg(long, env = "ANNAL_DIR", default_value = "annal-data")]
    dir: PathBuf,
}

#[derive(Debug, Args)]
struct DemoArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Writer threads.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
    /// Appends (one event each) per writer thread.
    #[arg(long, default_value_t = 20_000, value_parser = events_range())]
    events: u64,
}

/// Appends per thread: at least one, and few enough that latencies fit in memory.
fn events_range() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(1..=10_000_000)
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
    let mut out = stdout.lock();
    let (printed, code) = match cli.command {
        Command::Demo(args) => run_demo(&args, &mut out),
        Command::Verify(args) => {
            let report = inspect::verify(&args.dir.dir, args.access());
            let printed = if args.json {
                writeln!(out, "{}", inspect::to_json(&report))
            } else {
                report.write_text(&mut out, &args.dir.dir)
            };
            (printed, report.verdict)
        }
        Command::Stat(args) => {
            let report = inspect::stat(&args.dir.dir, args.access());
            let printed = if args.json {
                writeln!(out, "{}", inspect::to_json(&report))
            } else {
                report.write_text(&mut out, &args.dir.dir)
            };
            (printed, report.verdict)
        }
    };
    let flushed = printed.and_then(|()| out.flush());
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

fn run_demo(args: &DemoArgs, out: &mut dyn Write) -> (io::Result<()>, Verdict) {
    let cfg = DemoConfig {
        dir: args.dir.dir.clone(),
        threads: usize::from(args.threads),
        events_per_thread: args.events,
    };
    match demo::run(&cfg, out) {
        Ok(_) => (Ok(()), Verdict::Ok),
        Err(DemoError::Output(e)) => (Err(e), Verdict::Problems),
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
