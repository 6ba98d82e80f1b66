//! `annal inspect`, `verify`, `repair`, `streams` and `snapshots`: text and JSON renderings of
//! the engine's [`annal::inspect`] survey and [`annal::repair`] report.
//!
//! File names are printed relative to the store directory, every name that came from disk
//! escaped ([`crate::escape`]).

use std::io::{self, Write};
use std::path::Path;

use annal::Error;
use annal::inspect::{
    CheckpointSurvey, Finding, IndexState, SegmentState, Severity, SideFile, Survey, SurveyOptions,
};
use annal::repair::{Outcome, RepairOptions, RepairReport};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use crate::escape;
use crate::inspect::{ErrorInfo, Verdict, grouped, human_bytes, to_json};

/// Largest streams `inspect` lists.
const LARGEST_STREAMS_SHOWN: usize = 10;
/// Snapshot or checkpoint files `inspect` lists by name (the JSON lists all, and so does
/// `annal snapshots`).
const SIDE_FILES_SHOWN: usize = 10;

/// A byte progress bar on stderr, drawn only when stderr is a terminal.
fn progress_bar(what: &'static str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what);
    bar
}

fn rel(dir: &Path, p: &Path) -> String {
    escape::path(p.strip_prefix(dir).unwrap_or(p))
}

fn rel_json(dir: &Path, p: &Path) -> String {
    p.strip_prefix(dir).unwrap_or(p).to_string_lossy().into_owned()
}

fn uuid_text(id: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*id).to_string()
}

/// Runs the survey behind `inspect`, `verify` and `streams`, with a progress bar.
fn run_survey(dir: &Path, decode_events: bool, what: &'static str) -> Result<Survey, Error> {
    let bar = progress_bar(what);
    let mut tick = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let s = annal::inspect::survey(dir, SurveyOptions { decode_events }, &mut tick);
    bar.finish_and_clear();
    s
}

fn error_out(out: &mut dyn Write, json_out: bool, e: &Error) -> io::Result<Verdict> {
    let info = ErrorInfo::from_error(e);
    let verdict = if info.kind == "locked" { Verdict::Locked } else { Verdict::Problems };
    if json_out {
        writeln!(out, "{}", to_json(&json!({"verdict": verdict, "error": info})))?;
    } else {
        writeln!(out, "error ({}): {}", info.kind, escape::text(&info.message))?;
    }
    Ok(verdict)
}

fn finding_json(dir: &Path, f: &Finding) -> Value {
    json!({
        "severity": if f.severity == Severity::Problem { "problem" } else { "warning" },
        "kind": f.kind.as_str(),
        "file": rel_json(dir, &f.file),
        "offset": f.offset,
        "message": f.message,
    })
}

fn write_finding(out: &mut dyn Write, dir: &Path, f: &Finding) -> io::Result<()> {
    let sev = if f.severity == Severity::Problem { "problem" } else { "warning" };
    let at = f.offset.map(|o| format!(" at offset {o}")).unwrap_or_default();
    writeln!(
        out,
        "{sev} {}: {}{at}: {}",
        f.kind.as_str(),
        rel(dir, &f.file),
        escape::text(&f.message)
    )
}

fn state_str(s: SegmentState) -> &'static str {
    match s {
        SegmentState::Sealed => "sealed",
        SegmentState::Closed => "active (closed)",
        SegmentState::Active => "active",
    }
}

fn index_str(i: &IndexState) -> String {
    match i {
        IndexState::Ok { entries, .. } => format!("index ok, {entries} entries"),
        IndexState::Missing => "no index".into(),
        IndexState::Damaged { .. } => "index damaged".into(),
    }
}

fn side_json(dir: &Path, files: &[SideFile]) -> Value {
    files.iter().map(|f| json!({"file": rel_json(dir, &f.path), "bytes": f.bytes})).collect()
}

fn survey_json(s: &Survey, verdict: Verdict) -> Value {
    let dir = &s.dir;
    let segments: Vec<Value> = s
        .segments
        .iter()
        .map(|g| {
            let (index, entries) = match &g.index {
                IndexState::Ok { entries, .. } => ("ok", Some(*entries)),
                IndexState::Missing => ("missing", None),
                IndexState::Damaged { .. } => ("damaged", None),
            };
            json!({
                "file": rel_json(dir, &g.path),
                "base_seq": g.base,
                "records": g.records,
                "end_seq": g.end_seq,
                "bytes": g.bytes,
                "data_bytes": g.data_end,
                "state": match g.state {
                    SegmentState::Sealed => "sealed",
                    SegmentState::Closed => "closed",
                    SegmentState::Active => "active",
                },
                "index": index,
                "index_entries": entries,
            })
        })
        .collect();
    let mut largest: Vec<(&String, u64)> = s.streams.iter().map(|(k, v)| (k, v.events)).collect();
    largest.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let largest: Vec<Value> = largest
        .iter()
        .take(LARGEST_STREAMS_SHOWN)
        .map(|(k, n)| json!({"stream": k, "events": n}))
        .collect();
    let checkpoint = match &s.checkpoint {
        CheckpointSurvey::Missing => json!({"status": "missing"}),
        CheckpointSurvey::Ok { bytes, covered_seq, streams } => {
            json!({"status": "ok", "bytes": bytes, "covered_seq": covered_seq, "streams": streams})
        }
        CheckpointSurvey::Damaged { bytes, reason } => {
            json!({"status": "damaged", "bytes": bytes, "reason": reason})
        }
    };
    json!({
        "verdict": verdict,
        "log_id": s.log_id.as_ref().map(uuid_text),
        "clean_shutdown": s.clean_shutdown,
        "next_seq": s.next_seq,
        "records": s.records,
        "payload_bytes": s.payload_bytes,
        "events": s.events,
        "non_events": s.non_events,
        "stream_count": s.streams.len(),
        "largest_streams": largest,
        "segments": segments,
        "other_files": s.other_files.iter().map(|p| rel_json(dir, p)).collect::<Vec<_>>(),
        "checkpoint": checkpoint,
        "snapshots": side_json(dir, &s.snapshots),
        "projections": side_json(dir, &s.projections),
        "projection_positions": s.projection_positions.iter().map(|p| json!({
            "file": rel_json(dir, &p.path),
            "name": p.name,
            "version": p.projection_version,
            "position": p.position,
            "lag": p.lag,
        })).collect::<Vec<Value>>(),
        "findings": s.findings.iter().map(|f| finding_json(dir, f)).collect::<Vec<_>>(),
    })
}

fn verdict_of(s: &Survey) -> Verdict {
    if s.has_problems() { Verdict::Problems } else { Verdict::Ok }
}

fn write_side(out: &mut dyn Write, dir: &Path, label: &str, files: &[SideFile]) -> io::Result<()> {
    if files.is_empty() {
        return writeln!(out, "  {label:<15} none");
    }
    let total: u64 = files.iter().map(|f| f.bytes).sum();
    writeln!(out, "  {label:<15} {} file(s), {}", grouped(files.len() as u64), human_bytes(total))?;
    for f in files.iter().take(SIDE_FILES_SHOWN) {
        writeln!(out, "    {}  {}", rel(dir, &f.path), human_bytes(f.bytes))?;
    }
    if files.len() > SIDE_FILES_SHOWN {
        writeln!(out, "    ... and {} more", grouped((files.len() - SIDE_FILES_SHOWN) as u64))?;
    }
    Ok(())
}

/// Runs `annal inspect`.
pub fn inspect(dir: &Path, json_out: bool, out: &mut dyn Write) -> io::Result<Verdict> {
    let s = match run_survey(dir, true, "inspecting") {
        Ok(s) => s,
        Err(e) => return error_out(out, json_out, &e),
    };
    let verdict = verdict_of(&s);
    if json_out {
        writeln!(out, "{}", to_json(&survey_json(&s, verdict)))?;
        return Ok(verdict);
    }
    writeln!(out, "annal inspect {}", escape::path(dir))?;
    let id = s.log_id.as_ref().map_or_else(|| "unknown".to_string(), uuid_text);
    writeln!(out, "  log id          {id}")?;
    let shutdown = if s.clean_shutdown { "clean" } else { "not clean (no close frame at the end)" };
    writeln!(out, "  last shutdown   {shutdown}")?;
    writeln!(out, "  records         {} (next seq {})", grouped(s.records), s.next_seq)?;
    writeln!(out, "  segments        {}", s.segments.len())?;
    for g in &s.segments {
        writeln!(
            out,
            "    {}  base {}  {} records  {} used of {}  {}  {}",
            rel(dir, &g.path),
            g.base,
            g.records,
            human_bytes(g.data_end),
            human_bytes(g.bytes),
            state_str(g.state),
            index_str(&g.index)
        )?;
    }
    for p in &s.other_files {
        writeln!(out, "    other file: {}", rel(dir, p))?;
    }
    if s.events > 0 {
        writeln!(
            out,
            "  streams         {} streams, {} events",
            grouped(s.streams.len() as u64),
            grouped(s.events)
        )?;
        let mut largest: Vec<(&String, u64)> =
            s.streams.iter().map(|(k, v)| (k, v.events)).collect();
        largest.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        for (k, n) in largest.iter().take(LARGEST_STREAMS_SHOWN) {
            writeln!(out, "    {}  {n} events", escape::text(k))?;
        }
    } else {
        writeln!(out, "  streams         none (records are not events)")?;
    }
    if s.non_events > 0 && s.events > 0 {
        writeln!(out, "  non-events      {}", s.non_events)?;
    }
    let ck = match &s.checkpoint {
        CheckpointSurvey::Missing => "none".to_string(),
        CheckpointSurvey::Ok { covered_seq, streams, .. } => {
            format!("streams.ckpt ok, covers seqs below {covered_seq}, {streams} streams")
        }
        CheckpointSurvey::Damaged { reason, .. } => {
            format!("streams.ckpt damaged: {}", escape::text(reason))
        }
    };
    writeln!(out, "  checkpoint      {ck}")?;
    write_side(out, dir, "snapshots", &s.snapshots)?;
    write_side(out, dir, "projections", &s.projections)?;
    for p in &s.projection_positions {
        writeln!(
            out,
            "    projection {} (version {}): position {}, lag {} events",
            escape::text(&p.name),
            p.projection_version,
            grouped(p.position),
            grouped(p.lag)
        )?;
    }
    for f in &s.findings {
        write_finding(out, dir, f)?;
    }
    Ok(verdict)
}

/// Runs `annal verify`: read-only, no lock.
pub fn verify(dir: &Path, json_out: bool, out: &mut dyn Write) -> io::Result<Verdict> {
    let s = match run_survey(dir, true, "verifying") {
        Ok(s) => s,
        Err(e) => return error_out(out, json_out, &e),
    };
    let verdict = verdict_of(&s);
    if json_out {
        writeln!(out, "{}", to_json(&survey_json(&s, verdict)))?;
        return Ok(verdict);
    }
    writeln!(out, "annal verify {}", escape::path(dir))?;
    let indexes = s.segments.iter().filter(|g| g.index != IndexState::Missing).count();
    writeln!(
        out,
        "  checked {} segment(s), {} index file(s), {} records ({} of payload)",
        s.segments.len(),
        indexes,
        grouped(s.records),
        human_bytes(s.payload_bytes)
    )?;
    if s.events > 0 {
        writeln!(
            out,
            "  {} events in {} streams, every body decoded",
            grouped(s.events),
            s.streams.len()
        )?;
    }
    let ck = match &s.checkpoint {
        CheckpointSurvey::Missing => "no checkpoint",
        CheckpointSurvey::Ok { .. } => "checkpoint agrees with the log",
        CheckpointSurvey::Damaged { .. } => "checkpoint damaged",
    };
    writeln!(out, "  {ck}")?;
    for p in &s.other_files {
        writeln!(out, "  other file: {}", rel(dir, p))?;
    }
    for f in &s.findings {
        write_finding(out, dir, f)?;
    }
    let problems = s.findings.iter().filter(|f| f.severity == Severity::Problem).count();
    let warnings = s.findings.len() - problems;
    match (problems, warnings) {
        (0, 0) => writeln!(out, "result: OK")?,
        (0, w) => writeln!(out, "result: OK with {w} warning(s)")?,
        (p, _) => writeln!(out, "result: {p} problem(s) found")?,
    }
    Ok(verdict)
}

/// Runs `annal streams`.
pub fn streams(dir: &Path, json_out: bool, out: &mut dyn Write) -> io::Result<Verdict> {
    let s = match run_survey(dir, true, "reading") {
        Ok(s) => s,
        Err(e) => return error_out(out, json_out, &e),
    };
    let verdict = verdict_of(&s);
    if json_out {
        let list: Vec<Value> = s
            .streams
            .iter()
            .map(|(k, v)| {
                json!({
                    "stream": k,
                    "events": v.events,
                    "version": v.events - 1,
                    "first_seq": v.first_seq,
                    "last_seq": v.last_seq,
                })
            })
            .collect();
        writeln!(out, "{}", to_json(&json!({"verdict": verdict, "streams": list})))?;
        return Ok(verdict);
    }
    for (k, v) in &s.streams {
        writeln!(out, "{}  {} events  last seq {}", escape::text(k), v.events, v.last_seq)?;
    }
    if verdict != Verdict::Ok {
        writeln!(io::stderr(), "annal streams: the store has problems; run annal verify")?;
    }
    Ok(verdict)
}

/// Runs `annal snapshots`.
pub fn snapshots(dir: &Path, json_out: bool, out: &mut dyn Write) -> io::Result<Verdict> {
    if !dir.join("segments").exists() {
        let e = Error::NoStore { dir: dir.to_path_buf() };
        return error_out(out, json_out, &e);
    }
    let files = annal::inspect::snapshot_files(dir);
    if json_out {
        let v = json!({"verdict": Verdict::Ok, "snapshots": side_json(dir, &files)});
        writeln!(out, "{}", to_json(&v))?;
    } else {
        for f in &files {
            writeln!(out, "{}  {}", rel(dir, &f.path), f.bytes)?;
        }
    }
    Ok(Verdict::Ok)
}

fn repair_json(dir: &Path, r: &RepairReport) -> Value {
    let outcome = match &r.outcome {
        Outcome::NothingToDo => json!({"status": "nothing_to_do"}),
        Outcome::Repaired => json!({"status": "repaired"}),
        Outcome::Planned => json!({"status": "planned"}),
        Outcome::NeedsSalvage { file, offset, seq } => json!({
            "status": "needs_salvage", "file": rel_json(dir, file), "offset": offset, "seq": seq,
        }),
    };
    let actions: Vec<Value> = r
        .actions
        .iter()
        .map(|a| {
            json!({
                "action": a.kind.as_str(),
                "file": rel_json(dir, &a.file),
                "offset": a.offset,
                "bytes": a.bytes,
                "saved_to": a.saved_to.as_ref().map(|p| rel_json(dir, p)),
                "detail": a.detail,
            })
        })
        .collect();
    let salvage = r.salvage.as_ref().map(|s| {
        let ranges: Vec<Value> = s.decoded_ranges.iter().map(|r| json!([r.0, r.1])).collect();
        json!({
            "cut_file": rel_json(dir, &s.cut_file),
            "cut_offset": s.cut_offset,
            "first_lost_seq": s.first_lost_seq,
            "decoded_ranges": ranges,
            "undecodable_records": s.undecodable_records,
            "streams": s.streams,
            "non_events": s.non_events,
            "segments_moved": s.segments_moved.iter().map(|p| rel_json(dir, p)).collect::<Vec<_>>(),
        })
    });
    json!({
        "verdict": if r.succeeded() { Verdict::Ok } else { Verdict::Problems },
        "outcome": outcome,
        "actions": actions,
        "quarantine": r.quarantine.as_ref().map(|p| rel_json(dir, p)),
        "salvage": salvage,
        "found": r.before.iter().map(|f| finding_json(dir, f)).collect::<Vec<_>>(),
        "remaining": r.remaining.iter().map(|f| finding_json(dir, f)).collect::<Vec<_>>(),
    })
}

/// Runs `annal repair`.
pub fn repair(
    dir: &Path,
    opts: RepairOptions,
    json_out: bool,
    out: &mut dyn Write,
) -> io::Result<Verdict> {
    let bar = progress_bar("surveying");
    let mut tick = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let r = annal::repair::repair(dir, opts, &mut tick);
    bar.finish_and_clear();
    let r = match r {
        Ok(r) => r,
        Err(e) => return error_out(out, json_out, &e),
    };
    let verdict = if r.succeeded() { Verdict::Ok } else { Verdict::Problems };
    if json_out {
        writeln!(out, "{}", to_json(&repair_json(dir, &r)))?;
        return Ok(verdict);
    }
    writeln!(out, "annal repair {}", escape::path(dir))?;
    for f in &r.before {
        write_finding(out, dir, f)?;
    }
    let verb = if opts.dry_run { "would" } else { "did" };
    for a in &r.actions {
        let at = a.offset.map(|o| format!(" at offset {o}")).unwrap_or_default();
        write!(
            out,
            "{verb} {}: {}{at}: {}",
            a.kind.as_str(),
            rel(dir, &a.file),
            escape::text(&a.detail)
        )?;
        if let Some(p) = &a.saved_to {
            write!(out, " ({} bytes saved to {})", a.bytes, rel(dir, p))?;
        }
        writeln!(out)?;
    }
    if let Some(s) = &r.salvage {
        writeln!(
            out,
            "salvage: the log now ends at seq {} (cut in {} at offset {})",
            s.first_lost_seq,
            rel(dir, &s.cut_file),
            s.cut_offset
        )?;
        for (a, b) in &s.decoded_ranges {
            writeln!(out, "  set aside seqs {a}..{b}")?;
        }
        if s.undecodable_records > 0 {
            writeln!(out, "  set aside {} records that do not verify", s.undecodable_records)?;
        }
        for (k, n) in &s.streams {
            writeln!(out, "  stream {}: {n} event(s) set aside", escape::text(k))?;
        }
        if s.non_events > 0 {
            writeln!(out, "  {} set-aside records are not events", s.non_events)?;
        }
    }
    if let Some(q) = &r.quarantine {
        writeln!(out, "quarantine: {}", rel(dir, q))?;
    }
    match &r.outcome {
        Outcome::NeedsSalvage { file, offset, seq } => writeln!(
            out,
            "result: mid-log damage in {} at offset {offset} (seq {seq}); nothing changed. \
             Rerun with --salvage to cut the log there and quarantine everything after it.",
            rel(dir, file)
        )?,
        Outcome::NothingToDo => writeln!(out, "result: nothing to repair")?,
        Outcome::Planned => writeln!(out, "result: dry run, nothing changed")?,
        _ if r.remaining.is_empty() => writeln!(out, "result: repaired; verify is clean")?,
        _ => {
            for f in &r.remaining {
                write_finding(out, dir, f)?;
            }
            writeln!(out, "result: {} problem(s) remain", r.remaining.len())?;
        }
    }
    Ok(verdict)
}
