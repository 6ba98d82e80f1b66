//! Placeholder replaced by the simulated file system.
/// Crash report.
#[derive(Debug)] pub struct CrashReport;
/// Trace event.
#[derive(Debug)] pub enum TraceEvent {}
/// Sim.
#[derive(Debug)] pub struct SimFs;
