//! Sparse indexes of a segment: [`OffsetIndex`] (`.index`) and [`TimeIndex`]
//! (`.timeindex`).
//!
//! Byte layout: a flat array of fixed-size big-endian entries, no header.
//! - `.index`: `relative_offset: u32, position: u32` (8 bytes). An entry says the
//!   batch whose base offset is `segment.base_offset + relative_offset` starts at
//!   byte `position` of the `.log`. One entry per `index.interval.bytes` of log.
//! - `.timeindex`: `timestamp: i64, relative_offset: u32` (12 bytes). An entry says
//!   the batch at `relative_offset` is the first whose max timestamp reaches
//!   `timestamp`; timestamps strictly increase.
//!
//! Crash story: indexes are derived from the `.log` and never trusted over it. They
//! are synced with the segment when it is sealed. After an unclean shutdown the
//! active segment's indexes are rebuilt; a sealed segment's index that fails the
//! sanity check in [`SparseIndex::open`], or names a batch that is not where it
//! says, is rebuilt once the segment's `.log` is found intact. The whole index is kept in
//! memory (entries are tiny and sparse).

use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use crate::error::{EngineError, Result};
use crate::storage::{FileRole, Storage, StorageFile};
use crate::types::TimestampMs;

pub trait IndexEntry: Copy + std::fmt::Debug + PartialEq {
    const BYTES: usize;
    fn encode(&self) -> Vec<u8>;
    fn decode(bytes: &[u8]) -> Self;
    /// The key entries are sorted by; must strictly increase through the file.
    fn key(&self) -> i64;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

impl IndexEntry for OffsetEntry {
    const BYTES: usize = 8;
    fn encode(&self) -> Vec<u8> {
        [self.relative_offset.to_be_bytes(), self.position.to_be_bytes()].concat()
    }
    fn decode(bytes: &[u8]) -> Self {
        OffsetEntry {
            relative_offset: u32::from_be_bytes(bytes[0..4].try_into().expect("4 bytes")),
            position: u32::from_be_bytes(bytes[4..8].try_into().expect("4 bytes")),
        }
    }
    fn key(&self) -> i64 {
        self.relative_offset as i64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: TimestampMs,
    pub relative_offset: u32,
}

impl IndexEntry for TimeEntry {
    const BYTES: usize = 12;
    fn encode(&self) -> Vec<u8> {
        let mut out = self.timestamp.0.to_be_bytes().to_vec();
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
        out
    }
    fn decode(bytes: &[u8]) -> Self {
        TimeEntry {
            timestamp: TimestampMs(i64::from_be_bytes(bytes[0..8].try_into().expect("8 bytes"))),
            relative_offset: u32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes")),
        }
    }
    fn key(&self) -> i64 {
        self.timestamp.0
    }
}

/// A sparse index file and its in-memory copy.
pub struct SparseIndex<S: Storage, E: IndexEntry> {
    file: S::File,
    path: PathBuf,
    entries: Vec<E>,
    _entry: PhantomData<E>,
}

pub type OffsetIndex<S> = SparseIndex<S, OffsetEntry>;
pub type TimeIndex<S> = SparseIndex<S, TimeEntry>;

impl<S: Storage, E: IndexEntry> SparseIndex<S, E> {
    /// Opens (or creates) an index file and loads its entries. Returns the index and
    /// whether it looked sane: whole entries only, keys strictly increasing. An
    /// insane index is returned empty and its file left as it is: the segment
    /// rebuilds it ([`SparseIndex::clear`] first) only once its `.log` has been
    /// found intact, so a damaged segment keeps every byte of its files.
    pub async fn open(storage: &S, path: &Path) -> Result<(Self, bool)> {
        let file = storage.open(path, true, FileRole::Index).await?;
        let bytes = file.read_at(0, file.len() as usize).await?;
        let mut entries: Vec<E> = bytes.chunks_exact(E::BYTES).map(E::decode).collect();
        let sane = bytes.len() % E::BYTES == 0 && entries.windows(2).all(|pair| pair[0].key() < pair[1].key());
        if !sane {
            entries.clear();
        }
        Ok((SparseIndex { file, path: path.to_path_buf(), entries, _entry: PhantomData }, sane))
    }

    pub fn entries(&self) -> &[E] {
        &self.entries
    }

    pub fn last(&self) -> Option<&E> {
        self.entries.last()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds an entry. On a full disk the entry is left out, in memory and in the file
    /// alike, and the append still succeeds: an index is sparse by design (a lookup
    /// takes the nearest entry below and scans the log from there), so a missing entry
    /// costs a longer scan, never a wrong answer, and a full disk does not stop the
    /// log (recovery on a full disk above all).
    pub async fn append(&mut self, entry: E) -> Result<()> {
        if let Some(last) = self.entries.last() {
            assert!(entry.key() > last.key(), "index keys must increase: {last:?} then {entry:?}");
        }
        match self.file.append(&entry.encode()).await {
            Ok(()) => self.entries.push(entry),
            Err(EngineError::NoSpace { .. }) => {
                tracing::debug!("{}: no space for an entry, left out", self.path.display())
            }
            Err(error) => return Err(error),
        }
        Ok(())
    }

    /// [`Self::sync`], except that a full disk leaves the unwritten entries in memory
    /// (where lookups see them) rather than failing: for recovery, which must not
    /// need space to open a log. The file keeps a prefix of the entries.
    pub async fn sync_if_room(&mut self) -> Result<()> {
        match self.file.sync().await {
            Err(EngineError::NoSpace { .. }) => {
                tracing::warn!("{}: no space to write the index out; it is kept in memory", self.path.display());
                Ok(())
            }
            other => other,
        }
    }

    /// Index of the last entry whose key is at most `key`.
    pub fn floor(&self, key: i64) -> Option<usize> {
        self.entries.partition_point(|entry| entry.key() <= key).checked_sub(1)
    }

    /// Keeps the first `count` entries.
    pub async fn truncate_entries(&mut self, count: usize) -> Result<()> {
        if count < self.entries.len() {
            self.entries.truncate(count);
            self.file.truncate((count * E::BYTES) as u64).await?;
        }
        Ok(())
    }

    pub async fn clear(&mut self) -> Result<()> {
        self.entries.clear();
        self.file.truncate(0).await
    }

    pub async fn sync(&mut self) -> Result<()> {
        self.file.sync().await
    }

    pub async fn seal(&mut self) -> Result<()> {
        self.file.seal().await
    }

    pub async fn close(self) -> Result<()> {
        self.file.close().await
    }
}
