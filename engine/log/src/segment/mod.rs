//! One segment of a partition's log: `<base_offset:020>.log` plus its two sparse
//! indexes and its aborted-transaction index (`txn_index.rs`).
//!
//! `.log` byte layout: Kafka RecordBatch v2 batches back to back, exactly as
//! produced except for the broker-assigned base offset and leader epoch (see
//! [`crate::batch`]). Offsets increase: each batch's base offset is the previous
//! batch's last offset + 1 (at least the segment's base offset for the first),
//! except in a segment the log cleaner wrote ([`crate::cleaner`]), where whole
//! batches compacted away leave gaps, as in Kafka. A segment still ends where the
//! next one starts: the cleaner keeps the last batch of what it cleans, emptied if
//! need be.
//!
//! Crash story: a sealed (non-active) segment was fully synced, `.log` and indexes,
//! before the next segment was created, and a clean close syncs the active one, so
//! only the active segment after an unclean shutdown can have a torn tail.
//! [`LogSegment::open`] validates every batch of the `.log` (length, magic, CRC32C,
//! offset contiguity) in every case; what it does at the first invalid or incomplete
//! batch depends on [`OpenMode`]:
//!
//! - [`OpenMode::RecoverTail`] (the active segment after an unclean shutdown): the
//!   file is truncated there, synced, and both indexes rebuilt from what remains.
//! - [`OpenMode::Verify`] (every other segment): no crash can have left invalid bytes,
//!   so they are damage. The open fails with [`EngineError::Corrupt`] naming the file,
//!   the byte and the offset, and no byte of the segment's files has changed. The
//!   caller takes the partition offline; only `corelog repair`, with consent, cuts
//!   it ([`OpenMode::RecoverTail`] on a segment known to be damaged).
//!
//! Invalid bytes are therefore never served. Opening reads every segment once, at
//! the disk's sequential speed: the price of finding damage before a consumer does.
//!
//! Reads after open trust the validation at open for CRCs (a consumer checks them
//! too), but never a length or an offset: every header a read walks is checked for a
//! length that covers a header and ends inside the file, magic 2, and the offset
//! the previous batch leads to. Bytes that changed under a running broker fail the
//! read with [`EngineError::Corrupt`]; they never make it panic, loop, or allocate
//! what a corrupt length asks for.

pub mod index;
pub mod txn_index;

use std::path::{Path, PathBuf};

use crate::batch::{self, BatchHeader, TxnMarker, BATCH_HEADER_BYTES, BATCH_LENGTH_PREFIX_BYTES, MAGIC_V2};
use crate::error::{EngineError, Result};
use crate::records;
use crate::storage::{FileRole, Storage, StorageFile};
use crate::types::{Offset, TimestampMs};
use index::{OffsetEntry, OffsetIndex, TimeEntry, TimeIndex};
use txn_index::{AbortedTxn, Collected, TransactionIndex, TXN_INDEX_EXTENSION};

/// Bytes read per step while scanning a `.log` during recovery.
const RECOVERY_READ_BYTES: usize = 1 << 20;

/// The smallest `batch_length` a batch can have: the header after the length field.
const BATCH_LENGTH_MIN: i32 = (BATCH_HEADER_BYTES - BATCH_LENGTH_PREFIX_BYTES) as i32;

/// How [`LogSegment::open`] treats bytes that fail validation (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// The active segment after an unclean shutdown: its tail may be torn (written,
    /// not synced, when the machine stopped), so `.log` is cut at the first invalid
    /// or incomplete batch, synced, and the indexes are rebuilt.
    RecoverTail,
    /// Any other segment: every byte of it was synced, so an invalid one is damage
    /// and fails the open with [`EngineError::Corrupt`], with no byte of its files
    /// changed. When the `.log` is intact but an index disagrees with it, the indexes
    /// (derived data) are rebuilt.
    Verify,
    /// As [`OpenMode::Verify`], but writes nothing, not even an index that
    /// disagrees: for looking at a partition that will not be served
    /// (`corelog repair` without consent).
    Inspect,
}

/// Where and why a `.log` stops holding valid batches.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Damage {
    position: u64,
    /// The offset the batch at `position` should start with.
    offset: Offset,
    reason: String,
}

impl Damage {
    fn into_error(self, path: &Path) -> EngineError {
        EngineError::Corrupt {
            path: path.to_path_buf(),
            position: self.position,
            offset: Some(self.offset),
            reason: self.reason,
        }
    }
}

/// Checks what can be checked of the batch header at the start of `bytes` without
/// its records: the header is whole, its length covers at least a header and ends
/// inside the file (of `end` bytes; the header sits at byte `position`), the magic is
/// 2, the offset delta is not negative, and the base offset is `expected`, the one
/// the previous batch leads to. `bytes` holds the header, or all that is left of the
/// file if that is less.
///
/// `gaps` allows a base offset past `expected` (a segment the log cleaner wrote,
/// where whole batches were compacted away); the active segment, which the cleaner
/// never touches, is held to contiguous offsets.
fn check_header(bytes: &[u8], position: u64, end: u64, expected: Offset, gaps: bool) -> Result<BatchHeader, Damage> {
    let damage = |reason: String| Damage { position, offset: expected, reason };
    let Ok(header) = BatchHeader::parse(bytes) else {
        return Err(damage(format!(
            "the file ends {} bytes into a batch header, which takes {BATCH_HEADER_BYTES}",
            end.saturating_sub(position)
        )));
    };
    if header.batch_length < BATCH_LENGTH_MIN {
        return Err(damage(format!(
            "batch_length is {}, less than a batch header's {BATCH_LENGTH_MIN}",
            header.batch_length
        )));
    }
    let batch_end = position + header.size_bytes() as u64;
    if batch_end > end {
        return Err(damage(format!(
            "batch_length {} runs {} bytes past the end of the file",
            header.batch_length,
            batch_end - end
        )));
    }
    if header.magic != MAGIC_V2 {
        return Err(damage(format!("magic byte {} where a record batch v2 has {MAGIC_V2}", header.magic)));
    }
    if header.last_offset_delta < 0 {
        return Err(damage(format!("last_offset_delta {} is negative", header.last_offset_delta)));
    }
    if header.base_offset < expected || (!gaps && header.base_offset != expected) {
        let rule = match gaps {
            true => "offsets increase",
            false => "offsets are contiguous in the active segment",
        };
        return Err(damage(format!(
            "the batch says base offset {}, but {rule} and the previous batch leads to {expected}",
            header.base_offset
        )));
    }
    Ok(header)
}

/// One step of [`BatchScan`].
enum Scanned {
    Batch { position: u64, header: BatchHeader },
    End,
    Damaged(Damage),
}

/// Reads a `.log` front to back in large chunks and validates each batch whole
/// (header, CRC32C, offset contiguity): the scan that recovery and verification
/// share. A declared length is checked against the file before anything is read
/// for it, so a corrupt one costs no memory.
struct BatchScan {
    /// Offsets may skip (see [`check_header`]).
    gaps: bool,
    path: PathBuf,
    position: u64,
    end: u64,
    expected: Offset,
    chunk: Vec<u8>,
    chunk_start: u64,
}

impl BatchScan {
    fn new(path: &Path, base_offset: Offset, end: u64, gaps: bool) -> BatchScan {
        BatchScan {
            gaps,
            path: path.to_path_buf(),
            position: 0,
            end,
            expected: base_offset,
            chunk: Vec::new(),
            chunk_start: 0,
        }
    }

    /// Bytes `[position, position + len)`, from the chunk, or read into a new one
    /// starting at `position` when the chunk does not hold them all.
    async fn bytes<F: StorageFile>(&mut self, log: &F, len: usize) -> Result<&[u8]> {
        // The scan only moves forward, and a chunk starts where it was read from.
        let at = (self.position - self.chunk_start) as usize;
        if at + len > self.chunk.len() {
            self.chunk = log.read_at(self.position, RECOVERY_READ_BYTES.max(len)).await?;
            self.chunk_start = self.position;
            if self.chunk.len() < len {
                let short = std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("{} bytes at byte {}, {} expected: the file shrank", self.chunk.len(), self.position, len),
                );
                return Err(EngineError::io("read", &self.path, short));
            }
        }
        let at = (self.position - self.chunk_start) as usize;
        Ok(&self.chunk[at..at + len])
    }

    async fn next<F: StorageFile>(&mut self, log: &F) -> Result<Scanned> {
        let (position, end, expected, gaps) = (self.position, self.end, self.expected, self.gaps);
        if position >= end {
            return Ok(Scanned::End);
        }
        let head = self.bytes(log, BATCH_HEADER_BYTES.min((end - position) as usize)).await?;
        let header = match check_header(head, position, end, expected, gaps) {
            Ok(header) => header,
            Err(damage) => return Ok(Scanned::Damaged(damage)),
        };
        let whole = self.bytes(log, header.size_bytes()).await?;
        if let Err(error) = batch::validate(whole) {
            return Ok(Scanned::Damaged(Damage {
                position,
                offset: expected,
                reason: format!("invalid batch: {error}"),
            }));
        }
        self.position += header.size_bytes() as u64;
        self.expected = header.last_offset().next();
        Ok(Scanned::Batch { position, header })
    }
}

/// What [`LogSegment::verify`] found.
enum Verified {
    /// Every byte is whole, valid batches; `indexes_agree` says whether every index
    /// entry names a batch as it is.
    Intact {
        indexes_agree: bool,
        batches: u64,
    },
    Damaged(Damage),
}

pub fn segment_file_name(base_offset: Offset, extension: &str) -> String {
    format!("{:020}.{extension}", base_offset.0)
}

/// The four files of the segment at `base_offset`, `.log` first, then `.index`,
/// `.timeindex` and `.txnindex`, each name followed by `suffix` (empty for a
/// segment of the log; the log cleaner's `.cleaned`, `.swap` and `.deleted`).
pub fn segment_file_paths(dir: &Path, base_offset: Offset, suffix: &str) -> [PathBuf; 4] {
    ["log", "index", "timeindex", TXN_INDEX_EXTENSION]
        .map(|extension| dir.join(format!("{}{suffix}", segment_file_name(base_offset, extension))))
}

/// Parses `<020 digits>.log` back into a base offset.
pub fn parse_segment_file_name(name: &str) -> Option<Offset> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Offset)
}

/// What recovery found in a segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub batches_valid: u64,
    /// Bytes cut from the end of `.log` (torn or corrupt tail).
    pub bytes_truncated: u64,
    pub indexes_rebuilt: bool,
}

/// Whole batches read from a segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentRead {
    /// Concatenated batches, byte for byte as stored.
    pub bytes: Vec<u8>,
    /// Base offset of the first batch returned.
    pub first_offset: Offset,
    /// One past the last offset returned: where the next read starts.
    pub next_offset: Offset,
}

pub struct LogSegment<S: Storage> {
    base_offset: Offset,
    log_path: PathBuf,
    log: S::File,
    offset_index: OffsetIndex<S>,
    time_index: TimeIndex<S>,
    txn_index: TransactionIndex<S>,
    /// The `.txnindex` was missing or failed its sanity check at open: the log
    /// rebuilds it from a replay of the producer state.
    txn_index_untrusted: bool,
    /// One past the last offset stored.
    next_offset: Offset,
    /// Largest batch max timestamp seen, and the base offset of the batch that first
    /// reached it.
    max_timestamp: Option<(TimestampMs, Offset)>,
    /// Clock time at creation (or open): segment age for `segment.ms`.
    created_at: TimestampMs,
    bytes_since_index_entry: u64,
    index_interval_bytes: u32,
    /// Batches may skip offsets (a segment the cleaner may have written); false for
    /// a segment opened or created as the active one, which has none.
    gaps: bool,
}

impl<S: Storage> LogSegment<S> {
    /// Creates an empty segment and makes its files' existence durable.
    pub async fn create(
        storage: &S,
        dir: &Path,
        base_offset: Offset,
        index_interval_bytes: u32,
        now: TimestampMs,
    ) -> Result<LogSegment<S>> {
        let (segment, _) = Self::open_files(storage, dir, base_offset, index_interval_bytes, now, "", true).await?;
        storage.sync_dir(dir).await?;
        Ok(segment)
    }

    /// Creates an empty segment whose four files' names end in `suffix` (the log
    /// cleaner's `.cleaned`): no open of the log sees it as a segment.
    pub async fn create_with_suffix(
        storage: &S,
        dir: &Path,
        base_offset: Offset,
        index_interval_bytes: u32,
        now: TimestampMs,
        suffix: &str,
    ) -> Result<LogSegment<S>> {
        assert!(!suffix.is_empty(), "a suffixed segment needs a suffix");
        let (segment, _) = Self::open_files(storage, dir, base_offset, index_interval_bytes, now, suffix, true).await?;
        storage.sync_dir(dir).await?;
        Ok(segment)
    }

    async fn open_files(
        storage: &S,
        dir: &Path,
        base_offset: Offset,
        index_interval_bytes: u32,
        now: TimestampMs,
        suffix: &str,
        create: bool,
    ) -> Result<(LogSegment<S>, bool)> {
        let [log_path, offset_path, time_path, txn_path] = segment_file_paths(dir, base_offset, suffix);
        let log = storage.open(&log_path, create, FileRole::Log).await?;
        let (offset_index, offset_sane) = OffsetIndex::open(storage, &offset_path).await?;
        let (time_index, time_sane) = TimeIndex::open(storage, &time_path).await?;
        let (txn_index, txn_sane) = TransactionIndex::open(storage, &txn_path).await?;
        let segment = LogSegment {
            base_offset,
            log_path,
            log,
            offset_index,
            time_index,
            txn_index,
            txn_index_untrusted: !txn_sane && !create,
            next_offset: base_offset,
            max_timestamp: None,
            created_at: now,
            bytes_since_index_entry: 0,
            index_interval_bytes,
            gaps: !create || !suffix.is_empty(),
        };
        Ok((segment, offset_sane && time_sane))
    }

    /// Opens an existing segment, validating every batch of its `.log`; `mode` says
    /// what happens to bytes that fail (see [`OpenMode`] and the module doc).
    pub async fn open(
        storage: &S,
        dir: &Path,
        base_offset: Offset,
        index_interval_bytes: u32,
        now: TimestampMs,
        mode: OpenMode,
    ) -> Result<(LogSegment<S>, RecoveryReport)> {
        Self::open_with_suffix(storage, dir, base_offset, index_interval_bytes, now, "", mode).await
    }

    /// [`LogSegment::open`] of the log's last segment, the active one: its offsets
    /// must be contiguous (the cleaner never writes it), so a base offset moved up
    /// is damage even in its last batch.
    pub async fn open_active(
        storage: &S,
        dir: &Path,
        base_offset: Offset,
        index_interval_bytes: u32,
        now: TimestampMs,
        mode: OpenMode,
    ) -> Result<(LogSegment<S>, RecoveryReport)> {
        Self::open_inner(storage, dir, base_offset, index_interval_bytes, now, "", mode, false).await
    }

    /// [`LogSegment::open`] of a segment whose files' names end in `suffix` (the log
    /// cleaner's recovery reads a `.swap` segment this way, with [`OpenMode::Inspect`]).
    pub async fn open_with_suffix(
        storage: &S,
        dir: &Path,
        base_offset: Offset,
        index_interval_bytes: u32,
        now: TimestampMs,
        suffix: &str,
        mode: OpenMode,
    ) -> Result<(LogSegment<S>, RecoveryReport)> {
        Self::open_inner(storage, dir, base_offset, index_interval_bytes, now, suffix, mode, true).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn open_inner(
        storage: &S,
        dir: &Path,
        base_offset: Offset,
        index_interval_bytes: u32,
        now: TimestampMs,
        suffix: &str,
        mode: OpenMode,
        gaps: bool,
    ) -> Result<(LogSegment<S>, RecoveryReport)> {
        let (mut segment, sane) =
            Self::open_files(storage, dir, base_offset, index_interval_bytes, now, suffix, false).await?;
        segment.gaps = gaps;
        if mode == OpenMode::RecoverTail {
            let report = segment.recover(true).await?;
            return Ok((segment, report));
        }
        match segment.verify(sane).await? {
            Verified::Damaged(damage) => Err(damage.into_error(&segment.log_path)),
            Verified::Intact { indexes_agree, batches } if indexes_agree || mode == OpenMode::Inspect => {
                Ok((segment, RecoveryReport { batches_valid: batches, ..RecoveryReport::default() }))
            }
            Verified::Intact { .. } => {
                let report = segment.recover(false).await?;
                Ok((segment, report))
            }
        }
    }

    /// Validates every batch of `.log` without writing anything, and checks that
    /// every index entry names a batch as it is: an offset-index entry the position
    /// of the batch at its offset, a time-index entry the first batch whose max
    /// timestamp reached its timestamp. When the log is intact, sets the in-memory
    /// state (end, max timestamp, bytes since the last index entry) from it.
    async fn verify(&mut self, indexes_sane: bool) -> Result<Verified> {
        let mut scan = BatchScan::new(&self.log_path, self.base_offset, self.log.len(), self.gaps);
        let offset_entries = self.offset_index.entries();
        let time_entries = self.time_index.entries();
        let (mut next_offset_entry, mut next_time_entry) = (0, 0);
        let mut indexes_agree = indexes_sane;
        let mut max_timestamp: Option<(TimestampMs, Offset)> = None;
        let mut next_offset = self.base_offset;
        let mut batches = 0u64;
        loop {
            let (position, header) = match scan.next(&self.log).await? {
                Scanned::Batch { position, header } => (position, header),
                Scanned::End => break,
                Scanned::Damaged(damage) => return Ok(Verified::Damaged(damage)),
            };
            let relative = header.base_offset.0 - self.base_offset.0;
            while offset_entries.get(next_offset_entry).is_some_and(|e| (e.relative_offset as i64) < relative) {
                indexes_agree = false;
                next_offset_entry += 1;
            }
            if let Some(entry) = offset_entries.get(next_offset_entry).filter(|e| e.relative_offset as i64 == relative)
            {
                indexes_agree &= entry.position as u64 == position;
                next_offset_entry += 1;
            }
            while time_entries.get(next_time_entry).is_some_and(|e| (e.relative_offset as i64) < relative) {
                indexes_agree = false;
                next_time_entry += 1;
            }
            if let Some(entry) = time_entries.get(next_time_entry).filter(|e| e.relative_offset as i64 == relative) {
                let first_to_reach = max_timestamp.is_none_or(|(timestamp, _)| timestamp < entry.timestamp);
                indexes_agree &= header.max_timestamp == entry.timestamp && first_to_reach;
                next_time_entry += 1;
            }
            if max_timestamp.is_none_or(|(timestamp, _)| header.max_timestamp > timestamp) {
                max_timestamp = Some((header.max_timestamp, header.base_offset));
            }
            next_offset = header.last_offset().next();
            batches += 1;
        }
        // Entries past the last batch, or none at all for a log with batches (every
        // segment's first batch gets one), disagree too.
        indexes_agree &= next_offset_entry == offset_entries.len() && next_time_entry == time_entries.len();
        indexes_agree &= batches == 0 || !offset_entries.is_empty();
        let end = self.log.len();
        self.bytes_since_index_entry = end - offset_entries.last().map_or(0, |e| e.position as u64).min(end);
        self.next_offset = next_offset;
        self.max_timestamp = max_timestamp;
        Ok(Verified::Intact { indexes_agree, batches })
    }

    /// Validates every batch and rebuilds the indexes. At the first bad batch it
    /// truncates the `.log` when `may_truncate` (a torn tail of the active segment);
    /// otherwise the bad batch is damage and fails with [`EngineError::Corrupt`] (the
    /// indexes are cleared by then, the `.log` untouched).
    async fn recover(&mut self, may_truncate: bool) -> Result<RecoveryReport> {
        self.offset_index.clear().await?;
        self.time_index.clear().await?;
        self.next_offset = self.base_offset;
        self.max_timestamp = None;
        self.bytes_since_index_entry = 0;
        let mut report = RecoveryReport { indexes_rebuilt: true, ..RecoveryReport::default() };
        let mut scan = BatchScan::new(&self.log_path, self.base_offset, self.log.len(), self.gaps);
        let damage = loop {
            match scan.next(&self.log).await? {
                Scanned::Batch { position, header } => {
                    self.index_batch(&header, position).await?;
                    report.batches_valid += 1;
                }
                Scanned::End => break None,
                Scanned::Damaged(damage) => break Some(damage),
            }
        };
        if let Some(damage) = damage {
            if !may_truncate {
                return Err(damage.into_error(&self.log_path));
            }
            report.bytes_truncated = self.log.len() - damage.position;
            self.log.truncate(damage.position).await?;
        }
        // What survived may have been unsynced when the process died (still in the
        // device cache): it counts as durable from now on, so make it so.
        self.log.sync().await?;
        self.offset_index.sync_if_room().await?;
        self.time_index.sync_if_room().await?;
        Ok(report)
    }

    fn absolute(&self, relative_offset: u32) -> Offset {
        Offset(self.base_offset.0 + relative_offset as i64)
    }

    fn relative(&self, offset: Offset) -> u32 {
        let relative = offset.0 - self.base_offset.0;
        assert!((0..=u32::MAX as i64).contains(&relative), "offset {offset} outside segment {}", self.base_offset);
        relative as u32
    }

    /// Updates in-memory state and indexes for a batch stored at `position`.
    async fn index_batch(&mut self, header: &BatchHeader, position: u64) -> Result<()> {
        assert!(header.base_offset >= self.next_offset, "offsets must increase");
        if self.offset_index.last().is_none() || self.bytes_since_index_entry >= self.index_interval_bytes as u64 {
            let relative_offset = self.relative(header.base_offset);
            self.offset_index.append(OffsetEntry { relative_offset, position: position as u32 }).await?;
            self.bytes_since_index_entry = 0;
            if let Some((timestamp, offset)) = self.max_timestamp {
                if self.time_index.last().is_none_or(|last| timestamp > last.timestamp) {
                    let relative_offset = self.relative(offset);
                    self.time_index.append(TimeEntry { timestamp, relative_offset }).await?;
                }
            }
        }
        if self.max_timestamp.is_none_or(|(ts, _)| header.max_timestamp > ts) {
            self.max_timestamp = Some((header.max_timestamp, header.base_offset));
        }
        self.bytes_since_index_entry += header.size_bytes() as u64;
        self.next_offset = header.last_offset().next();
        Ok(())
    }

    /// Appends validated, stamped batches (`bytes` holds them back to back; `batches`
    /// gives each one's position within `bytes` and header). On error nothing of this
    /// append remains.
    pub async fn append(&mut self, bytes: &[u8], batches: &[(usize, BatchHeader)]) -> Result<()> {
        let log_len_before = self.log.len();
        let state_before = (self.next_offset, self.max_timestamp, self.bytes_since_index_entry);
        let index_entries_before = (self.offset_index.entries().len(), self.time_index.entries().len());
        self.log.append(bytes).await?;
        for (position_in_bytes, header) in batches {
            if let Err(error) = self.index_batch(header, log_len_before + *position_in_bytes as u64).await {
                (self.next_offset, self.max_timestamp, self.bytes_since_index_entry) = state_before;
                self.offset_index.truncate_entries(index_entries_before.0).await?;
                self.time_index.truncate_entries(index_entries_before.1).await?;
                self.log.truncate(log_len_before).await?;
                return Err(error);
            }
        }
        Ok(())
    }

    /// The header of the batch at `position`, which the previous batch (or an index
    /// entry) says starts with offset `expected`; `None` exactly at the end of the
    /// `.log`. A header that fails [`check_header`] is damage: an error naming the
    /// file, the byte and the offset.
    async fn batch_at(&self, position: u64, expected: Offset) -> Result<Option<BatchHeader>> {
        let end = self.log.len();
        if position == end {
            return Ok(None);
        }
        if position > end {
            let reason = format!("a batch should start here, past the end of the file at byte {end}");
            return Err(Damage { position, offset: expected, reason }.into_error(&self.log_path));
        }
        let bytes = self.log.read_at(position, BATCH_HEADER_BYTES).await?;
        check_header(&bytes, position, end, expected, self.gaps)
            .map(Some)
            .map_err(|damage| damage.into_error(&self.log_path))
    }

    /// Position and header of the batch holding `offset`, walking headers from the
    /// nearest offset-index entry at or before it.
    pub async fn find_batch(&self, offset: Offset) -> Result<Option<(u64, BatchHeader)>> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        let relative = (offset.0 - self.base_offset.0).max(0);
        let (mut position, mut expected) = match self.offset_index.floor(relative) {
            Some(at) => {
                let entry = self.offset_index.entries()[at];
                (entry.position as u64, self.absolute(entry.relative_offset))
            }
            None => (0, self.base_offset),
        };
        loop {
            let Some(header) = self.batch_at(position, expected).await? else {
                let reason = format!(
                    "the file ends before offset {offset}, though the segment holds offsets up to {}",
                    self.next_offset
                );
                return Err(Damage { position, offset: expected, reason }.into_error(&self.log_path));
            };
            if header.last_offset() >= offset {
                return Ok(Some((position, header)));
            }
            position += header.size_bytes() as u64;
            expected = header.last_offset().next();
        }
    }

    /// Calls `visit` with the header of every batch from the one holding `from` to
    /// the end of the segment, reading the `.log` in large chunks (the rebuild of
    /// idempotent-producer state needs headers only, possibly of a whole segment).
    ///
    /// A control batch is read whole, and `visit` gets the transaction marker it
    /// holds ([`batch::txn_marker`]); every other batch gets `None`.
    pub async fn scan_headers(
        &self,
        from: Offset,
        mut visit: impl FnMut(&BatchHeader, Option<TxnMarker>),
    ) -> Result<()> {
        let Some((mut position, first)) = self.find_batch(from).await? else { return Ok(()) };
        let end = self.log.len();
        let mut expected = first.base_offset;
        let mut chunk: Vec<u8> = Vec::new();
        let mut chunk_start = position;
        while position < end {
            let needed = BATCH_HEADER_BYTES.min((end - position) as usize);
            if (position - chunk_start) as usize + needed > chunk.len() {
                chunk = self.log.read_at(position, RECOVERY_READ_BYTES).await?;
                chunk_start = position;
                if chunk.len() < needed {
                    let short = std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("{} bytes at byte {position}, {needed} expected: the file shrank", chunk.len()),
                    );
                    return Err(EngineError::io("scan batch headers", &self.log_path, short));
                }
            }
            let at = (position - chunk_start) as usize;
            let header = check_header(&chunk[at..], position, end, expected, self.gaps)
                .map_err(|damage| damage.into_error(&self.log_path))?;
            let marker = match header.is_control() {
                true if at + header.size_bytes() <= chunk.len() => {
                    batch::txn_marker(&chunk[at..at + header.size_bytes()])
                }
                // Ends inside the file (`check_header`), so the read is bounded.
                true => batch::txn_marker(&self.log.read_at(position, header.size_bytes()).await?),
                false => None,
            };
            visit(&header, marker);
            position += header.size_bytes() as u64;
            expected = header.last_offset().next();
        }
        Ok(())
    }

    /// Whole batches starting with the one holding `offset`, up to `max_bytes` (the
    /// first batch is returned whole even if larger, so a consumer always makes
    /// progress), and not including batches at or past `offset_limit`. A damaged
    /// header after the first ends the read before it; the next read, which starts
    /// there, fails with [`EngineError::Corrupt`].
    pub async fn read(&self, offset: Offset, max_bytes: usize, offset_limit: Offset) -> Result<Option<SegmentRead>> {
        let Some((start, first)) = self.find_batch(offset).await? else { return Ok(None) };
        if first.base_offset >= offset_limit {
            return Ok(None);
        }
        // `first` ends inside the file (checked by `find_batch`), so this is bounded
        // by the file whatever its length field says.
        let want = max_bytes.max(first.size_bytes());
        let mut bytes = self.log.read_at(start, want).await?;
        let file_end = self.log.len();
        let mut end = 0usize;
        let mut next_offset = first.base_offset;
        while bytes.len() - end >= BATCH_HEADER_BYTES {
            let Ok(header) = check_header(&bytes[end..], start + end as u64, file_end, next_offset, self.gaps) else {
                break;
            };
            let fits = end + header.size_bytes() <= bytes.len();
            if !fits || header.base_offset >= offset_limit || (end > 0 && end + header.size_bytes() > max_bytes) {
                break;
            }
            end += header.size_bytes();
            next_offset = header.last_offset().next();
        }
        if end == 0 {
            let reason = format!("a read of {want} bytes returned {}, less than the first batch", bytes.len());
            return Err(Damage { position: start, offset: first.base_offset, reason }.into_error(&self.log_path));
        }
        bytes.truncate(end);
        Ok(Some(SegmentRead { bytes, first_offset: first.base_offset, next_offset }))
    }

    /// The first record at or past offset `from` whose timestamp is at least
    /// `timestamp`: its offset and timestamp. (`from` is the log start offset: records
    /// below it are deleted, even if their segment is not.) The time index and the
    /// batches' max timestamps lead to the first candidate batch; its records are
    /// read ([`records::find_record`]), and if none qualifies (all below `from`, or a
    /// max timestamp its records do not hold) the next batches are, as Kafka's
    /// `FileRecords.searchForTimestamp` does.
    pub async fn offset_for_timestamp(
        &self,
        timestamp: TimestampMs,
        from: Offset,
    ) -> Result<Option<(Offset, TimestampMs)>> {
        if self.max_timestamp.is_none_or(|(max, _)| max < timestamp) {
            return Ok(None);
        }
        let entries = self.time_index.entries();
        let start_offset = match entries.partition_point(|e| e.timestamp < timestamp).checked_sub(1) {
            Some(at) => self.absolute(entries[at].relative_offset),
            None => self.base_offset,
        };
        let start_offset = start_offset.max(from);
        let Some((mut position, mut header)) = self.find_batch(start_offset).await? else { return Ok(None) };
        loop {
            if header.max_timestamp >= timestamp && header.last_offset() >= from {
                let bytes = self.batch_bytes(position, &header).await?;
                let found = records::find_record(&bytes, |r| r.timestamp >= timestamp && r.offset >= from)?;
                if let Some(record) = found {
                    return Ok(Some((record.offset, record.timestamp)));
                }
            }
            position += header.size_bytes() as u64;
            match self.batch_at(position, header.last_offset().next()).await? {
                Some(next) => header = next,
                None => return Ok(None),
            }
        }
    }

    /// The first record holding this segment's largest timestamp, in the first batch
    /// whose max timestamp is it: its offset and timestamp (Kafka's
    /// `RecordBatch.offsetOfMaxTimestamp`). `None` for an empty segment, or if that
    /// batch's records do not hold the max timestamp its header claims.
    pub async fn offset_of_max_timestamp(&self) -> Result<Option<(Offset, TimestampMs)>> {
        let Some((max, base_offset)) = self.max_timestamp else { return Ok(None) };
        let Some((position, header)) = self.find_batch(base_offset).await? else { return Ok(None) };
        let bytes = self.batch_bytes(position, &header).await?;
        let found = records::find_record(&bytes, |r| r.timestamp == max)?;
        Ok(found.map(|record| (record.offset, record.timestamp)))
    }

    /// The whole batch at `position` whose header is `header`; the header was
    /// checked to end inside the file, so the read is bounded by it.
    async fn batch_bytes(&self, position: u64, header: &BatchHeader) -> Result<Vec<u8>> {
        let bytes = self.log.read_at(position, header.size_bytes()).await?;
        if bytes.len() < header.size_bytes() {
            let reason = format!("a read of the {}-byte batch returned {} bytes", header.size_bytes(), bytes.len());
            return Err(Damage { position, offset: header.base_offset, reason }.into_error(&self.log_path));
        }
        Ok(bytes)
    }

    /// Removes every batch holding an offset at or past `offset` (a batch that
    /// straddles it goes whole), then syncs.
    pub async fn truncate_to(&mut self, offset: Offset) -> Result<()> {
        let Some((position, header)) = self.find_batch(offset).await? else { return Ok(()) };
        let relative = header.base_offset.0 - self.base_offset.0;
        let keep = self.offset_index.entries().partition_point(|e| (e.relative_offset as i64) < relative);
        self.offset_index.truncate_entries(keep).await?;
        let keep = self.time_index.entries().partition_point(|e| (e.relative_offset as i64) < relative);
        self.time_index.truncate_entries(keep).await?;
        self.txn_index.truncate_to(header.base_offset).await?;
        self.log.truncate(position).await?;
        self.log.sync().await?;
        self.next_offset = header.base_offset;
        // Recompute the running maximum and the index spacing from what is left.
        self.max_timestamp = None;
        self.bytes_since_index_entry = 0;
        let (mut scan, mut expected) = match self.offset_index.last() {
            Some(entry) => (entry.position as u64, self.absolute(entry.relative_offset)),
            None => (0, self.base_offset),
        };
        let mut max_timestamp = self.time_index.last().map(|e| (e.timestamp, self.absolute(e.relative_offset)));
        while scan < position {
            let Some(header) = self.batch_at(scan, expected).await? else { break };
            if max_timestamp.is_none_or(|(ts, _)| header.max_timestamp > ts) {
                max_timestamp = Some((header.max_timestamp, header.base_offset));
            }
            self.bytes_since_index_entry += header.size_bytes() as u64;
            scan += header.size_bytes() as u64;
            expected = header.last_offset().next();
        }
        self.max_timestamp = max_timestamp;
        Ok(())
    }

    pub fn base_offset(&self) -> Offset {
        self.base_offset
    }

    pub fn next_offset(&self) -> Offset {
        self.next_offset
    }

    pub fn size_bytes(&self) -> u64 {
        self.log.len()
    }

    pub fn is_empty(&self) -> bool {
        self.next_offset == self.base_offset
    }

    pub fn created_at(&self) -> TimestampMs {
        self.created_at
    }

    pub fn max_timestamp(&self) -> Option<TimestampMs> {
        self.max_timestamp.map(|(ts, _)| ts)
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Whether `count` more offsets still fit the 32-bit relative offsets of the index.
    pub fn can_hold_offsets(&self, last_offset: Offset) -> bool {
        last_offset.0 - self.base_offset.0 <= u32::MAX as i64
    }

    /// Makes every appended byte of `.log` durable.
    pub async fn sync(&mut self) -> Result<()> {
        self.log.sync().await
    }

    pub async fn flush(&mut self) -> Result<()> {
        self.log.flush().await
    }

    /// An fdatasync of `.log` that does not borrow the segment: it covers every byte
    /// flushed before this call (see [`StorageFile::sync_detached`]).
    pub fn sync_detached(&self) -> impl std::future::Future<Output = Result<()>> + 'static + use<S> {
        self.log.sync_detached()
    }

    /// The aborted transactions whose marker is in this segment, in log order.
    pub fn aborted_transactions(&self) -> &[AbortedTxn] {
        self.txn_index.entries()
    }

    /// Records the abort whose marker was just appended to this segment.
    pub async fn append_aborted(&mut self, entry: AbortedTxn) -> Result<()> {
        assert!(
            entry.last_offset >= self.base_offset && entry.last_offset < self.next_offset,
            "abort marker {entry:?} outside segment {}",
            self.base_offset
        );
        self.txn_index.append(entry).await
    }

    /// The aborts overlapping `[fetch_offset, upper_bound)` (Kafka's
    /// `LogSegment.collectAbortedTxns`).
    pub fn collect_aborted(&self, fetch_offset: Offset, upper_bound: Offset) -> Collected {
        self.txn_index.collect(fetch_offset, upper_bound)
    }

    /// Whether the `.txnindex` was missing or insane at open and is not rebuilt yet.
    pub fn txn_index_untrusted(&self) -> bool {
        self.txn_index_untrusted
    }

    /// Replaces the entries from `from` on with `replayed` (see
    /// [`TransactionIndex::rebuild_from`]); the index is trusted from then on.
    /// Returns whether the file changed.
    pub async fn rebuild_txn_index_from(&mut self, from: Offset, replayed: Vec<AbortedTxn>) -> Result<bool> {
        let from = if self.txn_index_untrusted { self.base_offset } else { from };
        let changed = self.txn_index.rebuild_from(from, replayed).await?;
        self.txn_index_untrusted = false;
        Ok(changed)
    }

    /// Syncs `.log` and the indexes and releases write buffers: this segment will
    /// never be appended to again.
    pub async fn seal(&mut self) -> Result<()> {
        self.log.sync().await?;
        self.offset_index.sync().await?;
        self.time_index.sync().await?;
        self.txn_index.sync().await?;
        self.log.seal().await?;
        self.offset_index.seal().await?;
        self.time_index.seal().await?;
        self.txn_index.seal().await
    }

    /// Clean close: everything synced, padding trimmed.
    pub async fn close(mut self) -> Result<()> {
        self.seal().await?;
        self.log.close().await?;
        self.offset_index.close().await?;
        self.time_index.close().await?;
        self.txn_index.close().await
    }

    /// Closes and removes the segment's four files.
    pub async fn delete(self, storage: &S) -> Result<()> {
        let paths = [
            self.log_path.clone(),
            self.offset_index.path().to_path_buf(),
            self.time_index.path().to_path_buf(),
            self.txn_index.path().to_path_buf(),
        ];
        self.log.close().await?;
        self.offset_index.close().await?;
        self.time_index.close().await?;
        self.txn_index.close().await?;
        for path in paths {
            storage.remove_file(&path).await?;
        }
        Ok(())
    }
}
