//! What `compare` does to store directories from outside the stores: their size on disk,
//! dropping them from the page cache, and keeping a crashed store to restore it before
//! every repetition.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::num::NonZeroU64;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

/// Bytes allocated on disk to the files under `path` (`st_blocks × 512`, so preallocated
/// space counts and holes do not).
pub fn allocated_bytes(path: &Path) -> io::Result<u64> {
    let md = fs::symlink_metadata(path)?;
    if !md.is_dir() {
        return Ok(md.blocks() * 512);
    }
    let mut n = 0;
    for e in fs::read_dir(path)? {
        n += allocated_bytes(&e?.path())?;
    }
    Ok(n)
}

/// Drops the files under `path` from the page cache: `posix_fadvise(POSIX_FADV_DONTNEED)`
/// on each. Only clean pages go, so sync first (`report::settle`); pages mapped by a live
/// process stay.
pub fn drop_cached(path: &Path) -> io::Result<()> {
    let md = fs::symlink_metadata(path)?;
    if md.is_dir() {
        for e in fs::read_dir(path)? {
            drop_cached(&e?.path())?;
        }
        return Ok(());
    }
    let f = File::open(path)?;
    rustix::fs::fadvise(&f, 0, NonZeroU64::new(md.len()), rustix::fs::Advice::DontNeed)?;
    Ok(())
}

/// Copies the directory tree `src` to `dst` (which must not exist), keeping every file's
/// length but writing only its non-zero 64 KiB blocks (zeros become holes, as the
/// preallocated tails of crashed files read back the same), and syncs every file and
/// directory so that no later fsync pays for the copy.
pub fn copy_sparse(src: &Path, dst: &Path) -> io::Result<()> {
    fs::create_dir(dst)?;
    let mut buf = vec![0u8; 64 << 10];
    for e in fs::read_dir(src)? {
        let e = e?;
        let to = dst.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_sparse(&e.path(), &to)?;
            continue;
        }
        let mut from = File::open(e.path())?;
        let out = OpenOptions::new().write(true).create_new(true).open(&to)?;
        let mut off = 0u64;
        loop {
            let n = read_full(&mut from, &mut buf)?;
            if n == 0 {
                break;
            }
            if buf[..n].iter().any(|&b| b != 0) {
                out.write_all_at(&buf[..n], off)?;
            }
            off += n as u64;
        }
        out.set_len(off)?;
        out.sync_all()?;
    }
    File::open(dst)?.sync_all()?;
    Ok(())
}

/// Reads until `buf` is full or the file ends.
fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let got = f.read(&mut buf[n..])?;
        if got == 0 {
            break;
        }
        n += got;
    }
    Ok(n)
}

/// This process's peak resident set (`VmHWM` of `/proc/self/status`) in KiB: anonymous
/// memory and the pages of mapped files it touched; the page cache behind `read` is not
/// in it.
pub fn peak_rss_kib() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparse_copy_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        let mut data = vec![0u8; 300 << 10];
        data[5] = 1;
        data[200 << 10] = 7;
        fs::write(src.join("sub").join("f"), &data).unwrap();
        fs::write(src.join("g"), b"abc").unwrap();
        let dst = dir.path().join("dst");
        copy_sparse(&src, &dst).unwrap();
        assert_eq!(fs::read(dst.join("sub").join("f")).unwrap(), data);
        assert_eq!(fs::read(dst.join("g")).unwrap(), b"abc");
        drop_cached(&dst).unwrap();
        assert!(allocated_bytes(&dst).unwrap() > 0);
        assert!(peak_rss_kib().unwrap() > 0);
    }
}
