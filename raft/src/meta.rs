//! Small sidecars of the raft log and the state machine: a CRC-32 (u32 LE) followed by the
//! JSON of the value, replaced with `annal::fs::write_atomic` (temp file, fsync, rename, fsync
//! of the directory), so a crash leaves the old or the new value, and damage is detected.
//! Also the removal of a directory tree through the `Storage` trait.

use std::path::Path;

use annal::fs::{OpenMode, Storage};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest sidecar read (a vote, a log id, a membership: far below this).
pub(crate) const SIDECAR_BYTES_MAX: u64 = 1 << 20;

/// An I/O or decode failure of a sidecar.
pub(crate) fn err(path: &Path, what: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{}: {what}", path.display()))
}

/// Reads the sidecar at `path`; `None` if there is none.
pub(crate) fn load<T: DeserializeOwned>(
    storage: &dyn Storage,
    path: &Path,
) -> std::io::Result<Option<T>> {
    if !storage.exists(path)? {
        return Ok(None);
    }
    let file = storage.open(path, OpenMode::Read)?;
    let len = file.len()?;
    if !(4..=SIDECAR_BYTES_MAX).contains(&len) {
        return Err(err(path, format!("sidecar of {len} bytes")));
    }
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, 0)?;
    let (crc, body) = buf.split_at(4);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if stored != annal::format::crc32(body) {
        return Err(err(path, "checksum mismatch"));
    }
    serde_json::from_slice(body).map(Some).map_err(|e| err(path, e))
}

/// Replaces the sidecar at `path` with `value`, durably.
pub(crate) fn store<T: Serialize>(
    storage: &dyn Storage,
    path: &Path,
    value: &T,
) -> std::io::Result<()> {
    let body = serde_json::to_vec(value).map_err(|e| err(path, e))?;
    let mut bytes = annal::format::crc32(&body).to_le_bytes().to_vec();
    bytes.extend_from_slice(&body);
    annal::fs::write_atomic(storage, path, &bytes)
}

/// Removes `path` and everything under it, through `storage` (old log or store generations).
pub(crate) fn remove_tree(storage: &dyn Storage, path: &Path) -> std::io::Result<()> {
    for name in storage.read_dir(path)? {
        let child = path.join(name);
        match storage.read_dir(&child) {
            Ok(_) => remove_tree(storage, &child)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                storage.remove_file(&child)?;
            }
            Err(e) => return Err(e),
        }
    }
    storage.remove_dir(path)
}
