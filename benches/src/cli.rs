//! The command line the bench drivers share (`compare`, `log_compare`, `store_compare`,
//! `projection_bench`): each flattens [`Common`] into its own `clap` parser and adds what
//! only it takes.

use std::path::PathBuf;

use clap::Args;

/// Options every driver takes.
#[derive(Debug, Clone, Default, Args)]
pub struct Common {
    /// A shorter run with smaller sizes (each driver says how much shorter).
    #[arg(long)]
    pub quick: bool,
    /// Directory for the stores (default: $ANNAL_BENCH_DIR, else target/bench-data); it
    /// must be on a disk, since fsync is free on a RAM-backed file system.
    #[arg(long, value_name = "PATH")]
    pub dir: Option<PathBuf>,
    /// Measure on a RAM-backed file system anyway (durability figures then mean little).
    #[arg(long)]
    pub allow_ram: bool,
    /// Repetitions of every workload (default: the mode's).
    #[arg(long, value_name = "N")]
    pub reps: Option<usize>,
}

/// Parses `args` (without the program name) as `P`. On `--help` or a bad argument, prints
/// what clap says and returns the exit code to end with.
pub fn parse<P: clap::Parser>(program: &str, args: &[String]) -> Result<P, i32> {
    P::try_parse_from(std::iter::once(program.to_string()).chain(args.iter().cloned())).map_err(
        |e| {
            let _ = e.print();
            e.exit_code()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    }

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn common_options_parse_and_unknown_ones_fail() {
        let c: Cli = parse("t", &args("--quick --dir /x --reps 5 --only W1,W4")).unwrap();
        assert!(c.common.quick && !c.common.allow_ram);
        assert_eq!(c.common.dir, Some(PathBuf::from("/x")));
        assert_eq!(c.common.reps, Some(5));
        assert_eq!(c.only, ["W1", "W4"]);
        assert!(parse::<Cli>("t", &args("--reps many")).is_err());
        assert!(parse::<Cli>("t", &args("--nope")).is_err());
        assert_eq!(parse::<Cli>("t", &args("--help")).unwrap_err(), 0);
    }
}
