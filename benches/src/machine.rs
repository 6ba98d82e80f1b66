//! Where the figures come from: the machine, the file system under the benchmark
//! directory, and the refusal to measure durability on memory.
//!
//! fsync on tmpfs or ramfs returns at once, so durable-append figures measured there say
//! nothing about a disk. [`fs_info`] reads the file system's magic number with `statfs` and
//! [`FsInfo::ram_backed`] tells the driver to refuse such a directory.

use std::io;
use std::path::{Path, PathBuf};

/// The file system holding a directory.
#[derive(Debug, Clone)]
pub struct FsInfo {
    /// Its type name (`ext4`, `xfs`, `tmpfs`, ...) from the `statfs` magic number.
    pub fs_type: String,
    /// The device or source it is mounted from, per `/proc/self/mounts`.
    pub device: String,
    /// Its mount point.
    pub mount_point: String,
    /// Whether it lives in memory (tmpfs, ramfs), where fsync costs nothing.
    pub ram_backed: bool,
}

/// File system magic numbers of `statfs(2)` (linux/magic.h).
const MAGICS: &[(i128, &str)] = &[
    (0xEF53, "ext2/3/4"),
    (0x5846_5342, "xfs"),
    (0x9123_683E, "btrfs"),
    (0x0102_1994, "tmpfs"),
    (0x8584_58f6, "ramfs"),
    (0x794c_7630, "overlayfs"),
    (0x2FC1_2FC1, "zfs"),
    (0xF2F5_2010, "f2fs"),
    (0x6969, "nfs"),
    (0x6573_5546, "fuse"),
    (0x0102_1997, "9p"),
];

/// Finds the file system holding `path` (which must exist).
pub fn fs_info(path: &Path) -> io::Result<FsInfo> {
    let st = rustix::fs::statfs(path)?;
    let magic = i128::from(st.f_type);
    let name = MAGICS.iter().find(|(m, _)| *m == magic).map(|(_, n)| *n);
    let ram_backed = matches!(name, Some("tmpfs") | Some("ramfs"));
    let canonical = path.canonicalize()?;
    let mut best: Option<(String, String, String)> = None;
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for line in mounts.lines() {
        let mut it = line.split_whitespace();
        let (Some(dev), Some(mnt), Some(ty)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if canonical.starts_with(mnt) && best.as_ref().is_none_or(|b| mnt.len() >= b.1.len()) {
            best = Some((dev.to_string(), mnt.to_string(), ty.to_string()));
        }
    }
    let (device, mount_point, mount_type) =
        best.unwrap_or_else(|| ("?".into(), "?".into(), "?".into()));
    // The mount table names ext4 exactly where the magic number cannot tell ext2/3/4 apart.
    let fs_type = match name {
        Some("ext2/3/4") if mount_type.starts_with("ext") => mount_type,
        Some(n) => n.to_string(),
        None => format!("{mount_type} (statfs magic {magic:#x})"),
    };
    Ok(FsInfo { fs_type, device, mount_point, ram_backed })
}

/// One line per fact about this machine: CPU model, cores, memory, kernel.
pub fn describe() -> Vec<(&'static str, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "?".into());
    let cores = std::thread::available_parallelism().map(|n| n.get().to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| format!("{:.1} GiB", kb as f64 / (1 << 20) as f64))
        .unwrap_or_else(|| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    vec![
        ("CPU", cpu),
        ("cores", cores.unwrap_or_else(|_| "?".into())),
        ("memory", mem),
        ("kernel", kernel),
    ]
}

/// How busy the machine is right now: the 1-minute load average and the share of the last
/// 10 s in which some task waited for I/O (`/proc/pressure/io`). Other work on the machine
/// (builds, tests) shows up here and in the spread of the repetitions.
pub fn load() -> String {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    let io = std::fs::read_to_string("/proc/pressure/io")
        .ok()
        .and_then(|s| {
            let some = s.lines().find(|l| l.starts_with("some"))?;
            let avg10 = some.split_whitespace().find_map(|f| f.strip_prefix("avg10="))?;
            Some(format!("{avg10}%"))
        })
        .unwrap_or_else(|| "?".into());
    format!("load average (1 min) {load}, I/O pressure (some, 10 s) {io}")
}

/// Where benchmark stores go: `$ANNAL_BENCH_DIR`, else `bench-data` in the cargo target
/// directory (`$CARGO_TARGET_DIR` or the workspace's `target/`), which is on the same disk
/// as the checkout rather than on a tmpfs `/tmp`.
pub fn bench_root() -> PathBuf {
    if let Some(d) = std::env::var_os("ANNAL_BENCH_DIR") {
        return PathBuf::from(d);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target"));
    target.join("bench-data")
}

/// Creates the benchmark root `root` (default [`bench_root`]) and a fresh run directory
/// `<prefix>-XXXXXX` in it, refusing a RAM-backed file system unless `allow_ram`: fsync is
/// free there, so durability figures would be meaningless. The run directory is removed
/// when the returned guard is dropped or closed.
pub fn run_dir(
    root: Option<PathBuf>,
    prefix: &str,
    allow_ram: bool,
) -> Result<(tempfile::TempDir, FsInfo), String> {
    let root = root.unwrap_or_else(bench_root);
    let fail = |e: io::Error| format!("{}: {e}", root.display());
    std::fs::create_dir_all(&root).map_err(fail)?;
    let info = fs_info(&root).map_err(fail)?;
    if info.ram_backed && !allow_ram {
        return Err(format!(
            "{} is on {} ({}): fsync is free there, durability figures would be meaningless; \
             pass --dir on a disk (or --allow-ram to try the driver out)",
            root.display(),
            info.fs_type,
            info.device
        ));
    }
    let dir =
        tempfile::Builder::new().prefix(&format!("{prefix}-")).tempdir_in(&root).map_err(fail)?;
    Ok((dir, info))
}

/// The current time in UTC as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_working_directory_has_a_file_system() {
        let info = fs_info(Path::new(".")).unwrap();
        assert!(!info.fs_type.is_empty());
        assert!(info.mount_point.starts_with('/'), "{info:?}");
    }

    #[test]
    fn load_names_both_figures() {
        let l = load();
        assert!(l.starts_with("load average"), "{l}");
        assert!(l.contains("I/O pressure"), "{l}");
    }

    #[test]
    fn utc_now_has_the_expected_shape() {
        let s = utc_now();
        assert_eq!(s.len(), "2025-01-01 00:00:00 UTC".len(), "{s}");
        assert!(s.starts_with("20"), "{s}");
    }
}
