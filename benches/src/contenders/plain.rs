//! The plain-file contenders: [`crate::plain`] for one writer and reads,
//! [`crate::group_commit`] for durable appends.

use std::path::{Path, PathBuf};

use super::{Closer, Contender, Durable, Kind, Opened, Workload};
use crate::group_commit::{GroupCommitFile, Space};
use crate::payload::EVENT_BYTES;
use crate::plain::{self, PlainReader, PlainWriter};
use crate::report::R;

/// Space chunks of the preallocated group-commit file: annal's segment size.
const CHUNK_BYTES: u64 = 64 << 20;

/// The file's name in the store directory.
const FILE: &str = "plain.log";

/// A plain file; `prealloc` reserves its space ahead.
pub struct PlainFile {
    pub prealloc: bool,
}

impl Contender for PlainFile {
    fn kind(&self) -> Kind {
        if self.prealloc { Kind::PlainPrealloc } else { Kind::Plain }
    }

    fn describe(&self) -> String {
        if self.prealloc {
            "annal's frames (annal::format) in one file; bulk: fallocated to its final size, \
             write_all per batch; durable: leader/follower group commit, space zero-filled and \
             synced 64 MiB ahead (appends overwrite initialized blocks); reads: 4 MiB chunks \
             or a dense in-memory offset index + pread, CRC checked"
                .into()
        } else {
            "annal's frames in one file that grows with each write_all, sync_data; durable: \
             leader/follower group commit, no space reserved; reads as plain-prealloc"
                .into()
        }
    }

    fn supports(&self, w: Workload) -> bool {
        !matches!(w, Workload::Stream | Workload::Follow)
    }

    fn bulk(&self, dir: &Path, events: u64, pool: &[Vec<u8>]) -> R<Box<dyn Closer>> {
        std::fs::create_dir_all(dir)?;
        let reserve =
            if self.prealloc { plain::file_bytes(events, pool.len(), EVENT_BYTES) } else { 0 };
        let mut w = PlainWriter::create(&dir.join(FILE), reserve)?;
        let mut left = events;
        while left > 0 {
            let n = left.min(pool.len() as u64) as usize;
            w.append(&pool[..n])?;
            left -= n as u64;
        }
        w.sync()?;
        Ok(Box::new(w))
    }

    fn durable(&self, dir: &Path, _threads: usize) -> R<Box<dyn Durable>> {
        std::fs::create_dir_all(dir)?;
        let space = if self.prealloc { Space::ZeroFill(CHUNK_BYTES) } else { Space::Grow };
        Ok(Box::new(GroupCommitFile::create(&dir.join(FILE), space)?))
    }

    fn open(&self, dir: &Path) -> R<Box<dyn Opened>> {
        let path = dir.join(FILE);
        // A clean close left a close frame at the end; without one the whole file is
        // scanned for its valid end.
        let events = match plain::open_clean(&path) {
            Ok(next) => next,
            Err(_) => plain::recover(&path)?.events,
        };
        Ok(Box::new(PlainOpened { path, events, reader: None }))
    }
}

impl Closer for PlainWriter {
    fn close(self: Box<Self>) -> R<()> {
        Ok(PlainWriter::close(*self)?)
    }
}

impl Durable for GroupCommitFile {
    fn append(&self, _thread: usize, payload: &[u8]) -> R<()> {
        Ok(GroupCommitFile::append(self, &[payload])?)
    }

    fn finish(self: Box<Self>, ops: u64) -> R<()> {
        let n = self.events();
        if n != ops {
            return Err(format!("the plain file holds {n} events, the threads made {ops}").into());
        }
        Ok(())
    }
}

struct PlainOpened {
    path: PathBuf,
    events: u64,
    reader: Option<PlainReader>,
}

impl Opened for PlainOpened {
    fn events(&mut self) -> R<u64> {
        Ok(self.events)
    }

    fn replay(&mut self, f: &mut dyn FnMut(u64, &[u8])) -> R<u64> {
        Ok(plain::scan(&self.path, |seq, _, p| f(seq, p))?.events)
    }

    fn prepare_reads(&mut self) -> R<()> {
        self.reader = Some(PlainReader::open(&self.path, EVENT_BYTES)?);
        Ok(())
    }

    fn read(&mut self, seq: u64, f: &mut dyn FnMut(&[u8])) -> R<()> {
        let r = self.reader.as_mut().ok_or("prepare_reads was not called")?;
        f(r.read(seq)?);
        Ok(())
    }

    fn close(self: Box<Self>) -> R<()> {
        Ok(())
    }
}
