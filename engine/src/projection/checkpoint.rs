//! Loading and writing projection checkpoints (format-spec.md §14) through the storage seam.

use std::path::{Path, PathBuf};

use super::CheckpointLoad;
use crate::error::{Error, Result};
use crate::format::ProjectionCheckpoint;
use crate::fs::{OpenMode, Storage};
use crate::limits::{
    PROJECTION_CHECKPOINT_HEADER_BYTES, PROJECTION_NAME_BYTES_MAX, PROJECTION_STATE_BYTES_MAX,
};
use crate::log::Log;
use crate::names;

/// `<dir>/projections/<encoded name>.ckpt`.
pub(crate) fn path(log: &Log, name: &str) -> PathBuf {
    names::projections_dir(log.dir()).join(names::projection_checkpoint_file_name(name))
}

/// Checks a projection name: 1..=`PROJECTION_NAME_BYTES_MAX` bytes.
pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > PROJECTION_NAME_BYTES_MAX {
        return Err(Error::InvalidProjectionName {
            reason: format!("{} bytes, allowed 1..={PROJECTION_NAME_BYTES_MAX}", name.len()),
        });
    }
    Ok(())
}

/// What a start resumes from.
pub(crate) struct Resume {
    pub position: u64,
    pub state: Option<Vec<u8>>,
    pub load: CheckpointLoad,
}

/// Loads the checkpoint of `name` and validates it against the log and the projection.
/// Anything unusable means "start from 0", never an error: the checkpoint is derived data.
pub(crate) fn load(log: &Log, name: &str, version: u32, need_state: bool) -> Resume {
    let fresh = |load| Resume { position: 0, state: None, load };
    let rejected = |reason: String| fresh(CheckpointLoad::Rejected { reason });
    let storage = log.storage();
    let path = path(log, name);
    let file = match storage.open(&path, OpenMode::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return fresh(CheckpointLoad::Missing);
        }
        Err(e) => return rejected(e.to_string()),
    };
    let len = match file.len() {
        Ok(l) => l,
        Err(e) => return rejected(e.to_string()),
    };
    let max = (PROJECTION_CHECKPOINT_HEADER_BYTES + PROJECTION_NAME_BYTES_MAX) as u64
        + PROJECTION_STATE_BYTES_MAX;
    if len > max {
        return rejected(format!("{len} bytes is over the limit"));
    }
    let mut buf = vec![0u8; len as usize];
    if let Err(e) = file.read_exact_at(&mut buf, 0) {
        return rejected(e.to_string());
    }
    let ck = match ProjectionCheckpoint::decode(&buf) {
        Ok(c) => c,
        Err(e) => return rejected(e.to_string()),
    };
    if ck.log_id != log.log_id() {
        return rejected("it belongs to another store".into());
    }
    if ck.name != name {
        return rejected(format!("it belongs to projection {:?}", ck.name));
    }
    if ck.position > log.visible_end() {
        return rejected(format!(
            "its position {} is beyond the log's end {}",
            ck.position,
            log.visible_end()
        ));
    }
    if ck.projection_version != version {
        return fresh(CheckpointLoad::VersionChanged { found: ck.projection_version });
    }
    if need_state && ck.state.is_none() {
        return rejected("it holds no state (written by an at-least-once run)".into());
    }
    Resume {
        position: ck.position,
        state: if need_state { ck.state } else { None },
        load: CheckpointLoad::Loaded { position: ck.position },
    }
}

/// Writes a checkpoint atomically (format-spec.md §6.5), creating `projections/` durably
/// first if needed.
pub(crate) fn store(log: &Log, ck: &ProjectionCheckpoint) -> Result<()> {
    if ck.state.as_ref().is_some_and(|s| s.len() as u64 > PROJECTION_STATE_BYTES_MAX) {
        return Err(Error::ProjectionFailed {
            name: ck.name.clone(),
            seq: ck.position,
            reason: format!("its state is over {PROJECTION_STATE_BYTES_MAX} bytes"),
        });
    }
    let storage = log.storage().as_ref();
    let dir = names::projections_dir(log.dir());
    ensure_dir(storage, &dir, log.dir())?;
    let path = path(log, &ck.name);
    crate::fs::write_atomic(storage, &path, &ck.encode())
        .map_err(|e| Error::io("write projection checkpoint", &path, e))
}

fn ensure_dir(storage: &dyn Storage, dir: &Path, parent: &Path) -> Result<()> {
    if storage.exists(dir).map_err(|e| Error::io("stat", dir, e))? {
        return Ok(());
    }
    storage.create_dir_all(dir).map_err(|e| Error::io("create dir", dir, e))?;
    storage.sync_dir(parent).map_err(|e| Error::io("sync dir", parent, e))
}
