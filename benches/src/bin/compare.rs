//! `compare`: annal side by side with a plain file, SQLite, okaywal and redb, every
//! workload in one run, and a Markdown report on stdout.
//!
//! ```text
//! cargo run --release -p annal-benches --bin compare -- [--quick | --tiny] [--dir PATH]
//!     [--allow-ram] [--only W1,...,W8] [--contenders LIST] [--reps N] [--events N]
//! ```
//!
//! The driver is `annal_benches::compare`, the adapters `annal_benches::contenders`; see
//! `benches/README.md` for what each workload measures and how.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(annal_benches::compare::main_with(&args));
}
