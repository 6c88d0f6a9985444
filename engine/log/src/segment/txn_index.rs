//! A segment's aborted-transaction index, `.txnindex` (Kafka's `TransactionIndex`):
//! one entry per ABORT marker in the segment's `.log`, in log order, so that a
//! consumer reading committed data learns which producers' records to drop.
//!
//! Byte layout: a flat array of 34-byte big-endian entries, no header (Kafka's
//! `AbortedTxn`, so the file reads the same as Kafka's):
//!
//! ```text
//! offset  size  field
//!      0     2  version             0
//!      2     8  producer_id
//!     10     8  first_offset        of the aborted transaction (may be in an earlier segment)
//!     18     8  last_offset         the ABORT marker's offset, in this segment
//!     26     8  last_stable_offset  the partition's last stable offset once it aborted
//! ```
//!
//! Crash story: unlike the sparse indexes, an entry left out would make a consumer
//! keep aborted records, so the in-memory entries are the truth and the file is
//! derived from the `.log`: it is synced with its segment when the segment is sealed
//! or closed, and the log's open rebuilds every entry after the producer-state
//! snapshot it loads by replaying those batches (the active segment after a crash
//! included), and any segment's whose file is missing or fails the sanity check of
//! [`TransactionIndex::open`], by loading an older snapshot. A truncation cuts the
//! entries whose marker it removed.

use std::path::{Path, PathBuf};

use crate::error::{EngineError, Result};
use crate::storage::{FileRole, Storage, StorageFile};
use crate::types::{Offset, ProducerId};

pub const TXN_INDEX_EXTENSION: &str = "txnindex";
pub const ABORTED_TXN_BYTES: usize = 34;
const ABORTED_TXN_VERSION: i16 = 0;

/// One aborted transaction (Kafka's `AbortedTxn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: ProducerId,
    pub first_offset: Offset,
    /// The ABORT marker's offset.
    pub last_offset: Offset,
    /// The partition's last stable offset right after the abort: a fetch whose range
    /// ends at or below it needs no entry of a later segment.
    pub last_stable_offset: Offset,
}

impl AbortedTxn {
    pub fn encode(&self) -> [u8; ABORTED_TXN_BYTES] {
        let mut out = [0u8; ABORTED_TXN_BYTES];
        out[0..2].copy_from_slice(&ABORTED_TXN_VERSION.to_be_bytes());
        out[2..10].copy_from_slice(&self.producer_id.0.to_be_bytes());
        out[10..18].copy_from_slice(&self.first_offset.0.to_be_bytes());
        out[18..26].copy_from_slice(&self.last_offset.0.to_be_bytes());
        out[26..34].copy_from_slice(&self.last_stable_offset.0.to_be_bytes());
        out
    }

    /// An entry from its 34 bytes; `None` if its version is unknown or its offsets
    /// are impossible (negative, or the first past the last).
    pub fn decode(bytes: &[u8]) -> Option<AbortedTxn> {
        let bytes: &[u8; ABORTED_TXN_BYTES] = bytes.try_into().ok()?;
        let i64_at = |at: usize| i64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        if i16::from_be_bytes([bytes[0], bytes[1]]) != ABORTED_TXN_VERSION {
            return None;
        }
        let entry = AbortedTxn {
            producer_id: ProducerId(i64_at(2)),
            first_offset: Offset(i64_at(10)),
            last_offset: Offset(i64_at(18)),
            last_stable_offset: Offset(i64_at(26)),
        };
        let plausible = entry.producer_id.0 >= 0
            && (0..=entry.last_offset.0).contains(&entry.first_offset.0)
            && entry.last_stable_offset > entry.first_offset;
        plausible.then_some(entry)
    }
}

/// What [`TransactionIndex::collect`] found in one segment.
#[derive(Debug, Default)]
pub struct Collected {
    pub aborted: Vec<AbortedTxn>,
    /// An entry's last stable offset reached the upper bound: no later segment can
    /// hold an abort of a transaction that overlaps the range.
    pub complete: bool,
}

/// A `.txnindex` file and its entries, all in memory (one per aborted transaction).
pub struct TransactionIndex<S: Storage> {
    file: S::File,
    path: PathBuf,
    entries: Vec<AbortedTxn>,
    /// Entries written to the file; the rest a full disk refused, written at the next
    /// sync.
    written: usize,
}

impl<S: Storage> TransactionIndex<S> {
    /// Opens (or creates) the index file and loads its entries. Returns the index and
    /// whether it can be trusted: the file existed, holds whole entries that decode,
    /// and their last offsets strictly increase. An untrusted index is returned empty
    /// and its file left as it is until [`TransactionIndex::rebuild_from`].
    pub async fn open(storage: &S, path: &Path) -> Result<(Self, bool)> {
        let existed = storage.exists(path).await?;
        let file = storage.open(path, true, FileRole::Index).await?;
        let bytes = file.read_at(0, file.len() as usize).await?;
        let decoded: Option<Vec<AbortedTxn>> = bytes.chunks_exact(ABORTED_TXN_BYTES).map(AbortedTxn::decode).collect();
        let mut entries = decoded.unwrap_or_default();
        let sane = existed
            && bytes.len() % ABORTED_TXN_BYTES == 0
            && entries.len() * ABORTED_TXN_BYTES == bytes.len()
            && entries.windows(2).all(|pair| pair[0].last_offset < pair[1].last_offset);
        if !sane {
            entries.clear();
        }
        let written = entries.len();
        Ok((TransactionIndex { file, path: path.to_path_buf(), entries, written }, sane))
    }

    pub fn entries(&self) -> &[AbortedTxn] {
        &self.entries
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds the entry of an abort whose marker was just appended. A full disk leaves
    /// it in memory only (where reads see it); the next sync writes it.
    pub async fn append(&mut self, entry: AbortedTxn) -> Result<()> {
        if let Some(last) = self.entries.last() {
            assert!(entry.last_offset > last.last_offset, "aborts out of order: {last:?} then {entry:?}");
        }
        self.entries.push(entry);
        self.write_missing().await
    }

    async fn write_missing(&mut self) -> Result<()> {
        while self.written < self.entries.len() {
            match self.file.append(&self.entries[self.written].encode()).await {
                Ok(()) => self.written += 1,
                Err(EngineError::NoSpace { .. }) => {
                    tracing::warn!(
                        "{}: no space for an aborted-transaction entry; kept in memory",
                        self.path.display()
                    );
                    return Ok(());
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// The aborted transactions overlapping `[fetch_offset, upper_bound)` (Kafka's
    /// `TransactionIndex.collectAbortedTxns`).
    pub fn collect(&self, fetch_offset: Offset, upper_bound: Offset) -> Collected {
        let mut collected = Collected::default();
        for entry in &self.entries {
            if entry.last_offset >= fetch_offset && entry.first_offset < upper_bound {
                collected.aborted.push(*entry);
            }
            if entry.last_stable_offset >= upper_bound {
                collected.complete = true;
                break;
            }
        }
        collected
    }

    /// Removes the entries whose marker is at or past `offset`.
    pub async fn truncate_to(&mut self, offset: Offset) -> Result<()> {
        let keep = self.entries.partition_point(|e| e.last_offset < offset);
        if keep < self.entries.len() {
            self.entries.truncate(keep);
            if self.written > keep {
                self.file.truncate((keep * ABORTED_TXN_BYTES) as u64).await?;
                self.written = keep;
            }
        }
        Ok(())
    }

    /// Keeps the entries whose marker is below `from` and puts `replayed` (the aborts
    /// a replay of the batches from `from` on found, in order) after them; rewrites
    /// the file only if that changes it. Returns whether it did.
    pub async fn rebuild_from(&mut self, from: Offset, replayed: Vec<AbortedTxn>) -> Result<bool> {
        let keep = self.entries.partition_point(|e| e.last_offset < from);
        let mut entries = self.entries[..keep].to_vec();
        entries.extend(replayed);
        let on_file = self.file.len() == (self.entries.len() * ABORTED_TXN_BYTES) as u64;
        if entries == self.entries && on_file && self.written == self.entries.len() {
            return Ok(false);
        }
        self.file.truncate(0).await?;
        self.entries = entries;
        self.written = 0;
        self.write_missing().await?;
        self.sync_if_room().await?;
        Ok(true)
    }

    /// Writes what a full disk refused, then fdatasyncs.
    pub async fn sync(&mut self) -> Result<()> {
        self.write_missing().await?;
        if self.written < self.entries.len() {
            return Err(EngineError::NoSpace { op: "write aborted-transaction index", path: self.path.clone() });
        }
        self.file.sync().await
    }

    /// [`TransactionIndex::sync`], except that a full disk leaves the entries in
    /// memory only: for recovery, which must not need space to open a log.
    pub async fn sync_if_room(&mut self) -> Result<()> {
        match self.sync().await {
            Err(EngineError::NoSpace { .. }) => {
                tracing::warn!("{}: no space to write the index out; it is kept in memory", self.path.display());
                Ok(())
            }
            other => other,
        }
    }

    pub async fn seal(&mut self) -> Result<()> {
        self.file.seal().await
    }

    pub async fn close(self) -> Result<()> {
        self.file.close().await
    }
}

#[cfg(test)]
mod tests {
    use futures_lite::future::block_on;

    use super::*;
    use crate::storage::{CrashFault, SimStorage};

    const PATH: &str = "/data/t/0/00000000000000000000.txnindex";

    fn entries() -> Vec<AbortedTxn> {
        vec![
            AbortedTxn {
                producer_id: ProducerId(7),
                first_offset: Offset(2),
                last_offset: Offset(6),
                last_stable_offset: Offset(4),
            },
            AbortedTxn {
                producer_id: ProducerId(1 << 40),
                first_offset: Offset(3),
                last_offset: Offset(9),
                last_stable_offset: Offset(10),
            },
        ]
    }

    fn open(storage: &SimStorage) -> (TransactionIndex<SimStorage>, bool) {
        block_on(TransactionIndex::open(storage, Path::new(PATH))).expect("open")
    }

    #[test]
    fn entries_match_kafkas_34_byte_layout() {
        let bytes: Vec<u8> = entries().iter().flat_map(|e| e.encode()).collect();
        assert_eq!(bytes.len(), 2 * ABORTED_TXN_BYTES);
        crate::check_golden("aborted.txnindex", &bytes);
        let decoded: Vec<AbortedTxn> = bytes.chunks(ABORTED_TXN_BYTES).filter_map(AbortedTxn::decode).collect();
        assert_eq!(decoded, entries());
        let mut unknown_version = entries()[0].encode();
        unknown_version[1] = 1;
        assert_eq!(AbortedTxn::decode(&unknown_version), None);
    }

    #[test]
    fn the_file_round_trips_and_a_torn_or_missing_one_is_untrusted() {
        let storage = SimStorage::new();
        let (mut index, trusted) = open(&storage);
        assert!(!trusted, "a file that did not exist is rebuilt");
        block_on(index.rebuild_from(Offset(0), Vec::new())).expect("rebuild empty");
        for entry in entries() {
            block_on(index.append(entry)).expect("append");
        }
        block_on(index.sync()).expect("sync");
        let (reopened, trusted) = open(&storage);
        assert!(trusted);
        assert_eq!(reopened.entries(), entries().as_slice());
        // A torn unsynced third entry: the file is no longer whole entries.
        let mut torn = 0;
        for seed in 0..20 {
            let storage = SimStorage::new();
            let (mut index, _) = open(&storage);
            block_on(index.rebuild_from(Offset(0), entries())).expect("two synced entries");
            let third = AbortedTxn { last_offset: Offset(12), ..entries()[1] };
            block_on(index.append(third)).expect("append");
            storage.crash(CrashFault::TornTail { seed });
            let (index, trusted) = open(&storage);
            let len = storage.file_len(Path::new(PATH)).expect("file");
            assert_eq!(trusted, len.is_multiple_of(ABORTED_TXN_BYTES as u64), "seed {seed}: {len} bytes");
            match trusted {
                true => assert!(index.entries().len() >= 2, "seed {seed}"),
                false => {
                    torn += 1;
                    assert!(index.entries().is_empty(), "seed {seed}: an untrusted index is rebuilt from the log");
                }
            }
        }
        assert!(torn > 0, "no seed tore the entry");
    }

    #[test]
    fn collect_and_truncate_follow_kafka() {
        let storage = SimStorage::new();
        let (mut index, _) = open(&storage);
        block_on(index.rebuild_from(Offset(0), entries())).expect("rebuild");
        // [0, 3): the first overlaps; its last stable offset 4 passes the bound: complete.
        let collected = index.collect(Offset(0), Offset(3));
        assert_eq!((collected.aborted, collected.complete), (entries()[..1].to_vec(), true));
        // [7, 20): only the second (the first ended at 6); not complete.
        let collected = index.collect(Offset(7), Offset(20));
        assert_eq!((collected.aborted, collected.complete), (entries()[1..].to_vec(), false));
        block_on(index.truncate_to(Offset(9))).expect("truncate");
        assert_eq!(index.entries(), &entries()[..1]);
        assert_eq!(storage.file_len(Path::new(PATH)), Some(ABORTED_TXN_BYTES as u64));
    }
}
