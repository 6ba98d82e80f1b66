//! Property: every committed fuzz input — the seed corpora in `fuzz/corpus/<target>/` and the
//! minimised crash inputs in `fuzz/regressions/<target>/` — runs through its fuzz target on
//! the stable toolchain without a panic, and seeds named `valid-*` / `invalid-*` are accepted
//! / rejected. The targets are the very functions the cargo-fuzz binaries call
//! (`fuzz/src/targets.rs`, included here by path because `fuzz/` is its own workspace).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

#[path = "../../fuzz/src/targets.rs"]
mod targets;

#[path = "../../fuzz/src/seeds.rs"]
mod seeds;

use targets::Outcome;

type Target = fn(&[u8]) -> Outcome;

const TARGETS: [(&str, Target); 8] = [
    ("segment_header", targets::segment_header),
    ("frame", targets::frame),
    ("index_file", targets::index_file),
    ("open_dir", targets::open_dir),
    ("snapshot_file", targets::snapshot_file),
    ("event_body", targets::event_body),
    ("stream_checkpoint", targets::stream_checkpoint),
    ("ops", targets::ops),
];

/// Every seed: the decoder and directory seeds, and those of the later targets.
fn all_seeds() -> Vec<seeds::Seed> {
    let mut all = seeds::seeds();
    all.extend(seeds::more_seeds());
    all
}

fn target(name: &str) -> Target {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f).unwrap()
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `dir`, sorted; empty if it does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> =
        entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

/// Runs one input, turning a panic into a failure that names the input.
fn run(name: &str, f: Target, label: &str, data: &[u8]) -> Outcome {
    match catch_unwind(AssertUnwindSafe(|| f(data))) {
        Ok(outcome) => outcome,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("fuzz target {name} panicked on {label}: {msg}");
        }
    }
}

fn check_expectation(label: &str, file_name: &str, outcome: Outcome) {
    if file_name.starts_with("valid-") {
        assert_eq!(outcome, Outcome::Accepted, "{label} should be accepted");
    } else if file_name.starts_with("invalid-") {
        assert_eq!(outcome, Outcome::Rejected, "{label} should be rejected");
    }
}

#[test]
fn committed_corpora_and_regressions_run_clean() {
    for (name, f) in TARGETS {
        let corpus = inputs(&fuzz_dir().join("corpus").join(name));
        assert!(!corpus.is_empty(), "no seed corpus for fuzz target {name}");
        let regressions = inputs(&fuzz_dir().join("regressions").join(name));
        let mut accepted = 0;
        for path in corpus.iter().chain(&regressions) {
            let data = std::fs::read(path).unwrap();
            let label = path.display().to_string();
            let outcome = run(name, f, &label, &data);
            let file_name = path.file_name().unwrap().to_string_lossy();
            check_expectation(&label, &file_name, outcome);
            accepted += usize::from(outcome == Outcome::Accepted);
        }
        assert!(accepted > 0, "no input of the {name} corpus is accepted: the seeds are stale");
    }
}

#[test]
fn fresh_seeds_match_their_names_and_the_committed_ones() {
    let seeds = all_seeds();
    for (name, _) in TARGETS {
        assert!(seeds.iter().any(|s| s.target == name), "no seed made for {name}");
    }
    for s in &seeds {
        let label = format!("fresh seed {}/{}", s.target, s.name);
        let outcome = run(s.target, target(s.target), &label, &s.bytes);
        check_expectation(&label, &s.name, outcome);
        // Every seed made today has a committed counterpart of the same name.
        let committed = fuzz_dir().join("corpus").join(s.target).join(&s.name);
        assert!(committed.is_file(), "{label} is not committed; run write_seed_corpora");
    }
    for s in seeds.iter().filter(|s| s.target == "open_dir") {
        let image = targets::split_dir(&s.bytes);
        assert_eq!(targets::join_dir(&image), s.bytes, "{} does not round-trip", s.name);
    }
}

/// Rewrites the seed files (not the fuzzer's own finds) of every corpus. Run by hand after a
/// format change: `cargo test --release -p annal-tools --test fuzz_corpus -- --ignored`.
#[test]
#[ignore = "writes fuzz/corpus; run by hand after a format change"]
fn write_seed_corpora() {
    for s in all_seeds() {
        let dir = fuzz_dir().join("corpus").join(s.target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(&s.name), &s.bytes).unwrap();
    }
}
