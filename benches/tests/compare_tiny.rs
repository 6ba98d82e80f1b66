//! The `compare` binary still runs every workload against every contender: a tiny
//! configuration (thousands of events, fractions of a second per measurement) must finish
//! and print a report with every section and a verdict for every target. The figures of
//! such a run mean nothing and are not checked.

use std::process::Command;

#[test]
fn a_tiny_comparison_runs_every_workload_for_every_contender() {
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_compare"))
        .args(["--tiny", "--allow-ram", "--dir"])
        .arg(root.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "compare --tiny failed:\n{stderr}");
    let report = String::from_utf8(out.stdout).unwrap();
    for section in [
        "### W1 bulk append",
        "### W2 durable appends: 1 writer",
        "### W3 durable appends: 4 writers",
        "### W4 replay scan of 3,000 events, checksums verified, cold",
        "### W4 replay scan of 3,000 events, checksums verified, warm",
        "### W5 random point reads",
        "### W6 stream read",
        "### W7 open",
        "### W8 append-to-projection latency: one writer",
    ] {
        assert!(report.contains(section), "no {section:?} in:\n{report}");
    }
    for kind in ["plain", "plain-prealloc", "sqlite", "okaywal", "redb", "annal-log", "annal-store"]
    {
        assert!(report.contains(&format!("| {kind} |")), "no row of {kind}:\n{report}");
    }
    // Every target has a verdict: W1, W2, W3 (one writer count), W4 cold and warm, W5 and
    // W7 for both annal contenders, W6 for the store.
    let verdicts = report.lines().filter(|l| l.ends_with("| met |") || l.ends_with("| MISSED |"));
    assert_eq!(verdicts.count(), 15, "{report}");
    // No figure of a measured contender is missing.
    let table_rows = report.lines().filter(|l| l.starts_with("| ") && !l.contains("---"));
    for row in table_rows {
        assert!(!row.contains("NaN"), "a NaN in {row:?}");
    }
    // The run directory was removed.
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
}
