//! What both comparison binaries share to run and report: progress lines, settling the file
//! system between timed steps, and the Markdown tables of the results.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

/// Prints a progress line to stderr, prefixed with the seconds since the first call.
pub fn progress(msg: impl AsRef<str>) {
    static START: OnceLock<Instant> = OnceLock::new();
    let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("[{t:7.1}s] {}", msg.as_ref());
}

/// Flushes the file system holding `dir` (`syncfs`), so that the writeback of a previous
/// step is not billed to the next one.
pub fn settle(dir: &Path) -> io::Result<()> {
    rustix::fs::syncfs(File::open(dir)?)?;
    Ok(())
}

/// Milliseconds since `t`.
pub fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// `>= 0.8x: met` or `>= 0.8x: MISSED`.
pub fn verdict(ratio: f64, target: f64) -> String {
    let word = if ratio >= target { "met" } else { "MISSED" };
    format!(">= {target:.1}x: {word}")
}

/// A note listing per-repetition values.
pub fn per_rep(what: &str, xs: &[f64]) -> String {
    let list: Vec<String> = xs.iter().map(|x| format!("{x:.2}")).collect();
    format!("Per-repetition {what}: {}.", list.join(", "))
}

/// A Markdown table with a title and notes.
#[derive(Debug, Clone)]
pub struct Table {
    title: String,
    head: Vec<String>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

impl Table {
    /// An empty table with these column heads.
    pub fn new(title: &str, head: &[&str]) -> Self {
        Table {
            title: title.into(),
            head: head.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Adds a note printed under the table.
    pub fn note(&mut self, n: String) {
        self.notes.push(n);
    }

    /// Appends the table as Markdown to `out`.
    pub fn render(&self, out: &mut String) {
        out.push_str(&format!("### {}\n\n", self.title));
        out.push_str(&format!("| {} |\n", self.head.join(" | ")));
        out.push_str(&format!("|{}\n", "---|".repeat(self.head.len())));
        for r in &self.rows {
            out.push_str(&format!("| {} |\n", r.join(" | ")));
        }
        out.push('\n');
        for n in &self.notes {
            out.push_str(&format!("{n}\n\n"));
        }
    }
}
