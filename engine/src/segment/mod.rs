//! One segment of a partition's log: `<base_offset:020>.log` plus its two indexes.
//!
//! `.log` byte layout: Kafka RecordBatch v2 batches back to back, exactly as
//! produced except for the broker-assigned base offset and leader epoch (see
//! [`crate::batch`]). Offsets are contiguous: each batch's base offset is the
//! previous batch's last offset + 1, and the first is the segment's base offset.
//!
//! Crash story: a sealed (non-active) segment was fully synced, `.log` and indexes,
//! before the next segment was created, so only the active segment can have a torn
//! tail. [`LogSegment::open`] with `recover` scans the whole `.log`, validating each
//! batch (length, magic, CRC32C, offset contiguity); at the first invalid or
//! incomplete batch it truncates the file, syncs, and rebuilds both indexes from
//! what remains. Invalid bytes are therefore never served.

pub mod index;

use std::path::{Path, PathBuf};

use crate::batch::{self, BatchHeader, ScanStep, BATCH_HEADER_BYTES};
use crate::error::Result;
use crate::storage::{FileRole, Storage, StorageFile};
use crate::types::{Offset, TimestampMs};
use index::{OffsetEntry, OffsetIndex, TimeEntry, TimeIndex};

/// Bytes read per step while scanning a `.log` during recovery.
const RECOVERY_READ_BYTES: usize = 1 << 20;

pub fn segment_file_name(base_offset: Offset, extension: &str) -> String {
    format!("{:020}.{extension}", base_offset.0)
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
    /// One past the last offset stored.
    next_offset: Offset,
    /// Largest batch max timestamp seen, and the base offset of the batch that first
    /// reached it.
    max_timestamp: Option<(TimestampMs, Offset)>,
    /// Clock time at creation (or open): segment age for `segment.ms`.
    created_at: TimestampMs,
    bytes_since_index_entry: u64,
    index_interval_bytes: u32,
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
        let (segment, _) = Self::open_files(storage, dir, base_offset, index_interval_bytes, now).await?;
        storage.sync_dir(dir).await?;
        Ok(segment)
    }

    async fn open_files(
        storage: &S,
        dir: &Path,
        base_offset: Offset,
        index_interval_bytes: u32,
        now: TimestampMs,
    ) -> Result<(LogSegment<S>, bool)> {
        let log_path = dir.join(segment_file_name(base_offset, "log"));
        let log = storage.open(&log_path, true, FileRole::Log).await?;
        let (offset_index, offset_sane) =
            OffsetIndex::open(storage, &dir.join(segment_file_name(base_offset, "index"))).await?;
        let (time_index, time_sane) =
            TimeIndex::open(storage, &dir.join(segment_file_name(base_offset, "timeindex"))).await?;
        let segment = LogSegment {
            base_offset,
            log_path,
            log,
            offset_index,
            time_index,
            next_offset: base_offset,
            max_timestamp: None,
            created_at: now,
            bytes_since_index_entry: 0,
            index_interval_bytes,
        };
        Ok((segment, offset_sane && time_sane))
    }

    /// Opens an existing segment. With `recover`, or when its indexes look wrong,
    /// the whole `.log` is validated and the indexes rebuilt; otherwise only the tail
    /// after the last index entry is scanned to find the end.
    pub async fn open(
        storage: &S,
        dir: &Path,
        base_offset: Offset,
        index_interval_bytes: u32,
        now: TimestampMs,
        recover: bool,
    ) -> Result<(LogSegment<S>, RecoveryReport)> {
        let (mut segment, sane) = Self::open_files(storage, dir, base_offset, index_interval_bytes, now).await?;
        if !recover && sane && segment.load_tail().await? {
            return Ok((segment, RecoveryReport::default()));
        }
        let report = segment.recover().await?;
        Ok((segment, report))
    }

    /// Fast open: trusts the indexes, scans headers from the last index entry to the
    /// end. Returns false if what it finds disagrees (then the caller recovers).
    async fn load_tail(&mut self) -> Result<bool> {
        let (mut position, mut expected) = match self.offset_index.last() {
            Some(entry) => (entry.position as u64, Offset(self.base_offset.0 + entry.relative_offset as i64)),
            None => (0, self.base_offset),
        };
        if position > self.log.len() {
            return Ok(false);
        }
        let mut max_timestamp = self.time_index.last().map(|e| (e.timestamp, self.absolute(e.relative_offset)));
        while position < self.log.len() {
            let Some(header) = self.header_at(position).await? else { return Ok(false) };
            if header.base_offset != expected || position + header.size_bytes() as u64 > self.log.len() {
                return Ok(false);
            }
            if max_timestamp.is_none_or(|(ts, _)| header.max_timestamp > ts) {
                max_timestamp = Some((header.max_timestamp, header.base_offset));
            }
            position += header.size_bytes() as u64;
            expected = header.last_offset().next();
        }
        self.next_offset = expected;
        self.max_timestamp = max_timestamp;
        Ok(true)
    }

    /// Validates every batch, truncates at the first bad one, rebuilds the indexes.
    async fn recover(&mut self) -> Result<RecoveryReport> {
        self.offset_index.clear().await?;
        self.time_index.clear().await?;
        self.next_offset = self.base_offset;
        self.max_timestamp = None;
        self.bytes_since_index_entry = 0;
        let log_len = self.log.len();
        let mut report = RecoveryReport { indexes_rebuilt: true, ..RecoveryReport::default() };
        let mut position = 0u64;
        let mut chunk = Vec::new();
        let mut chunk_start = 0u64;
        'scan: while position < log_len {
            let in_chunk = (position - chunk_start) as usize;
            let step = batch::scan_step(&chunk[in_chunk.min(chunk.len())..]);
            let header = match step {
                ScanStep::Batch(header) => header,
                ScanStep::Incomplete => {
                    // Read on from `position`: either more bytes complete the batch,
                    // or this is the torn end of the file.
                    let already = (chunk_start + chunk.len() as u64).saturating_sub(position);
                    if position + already >= log_len {
                        break 'scan;
                    }
                    let want = RECOVERY_READ_BYTES.max(self.declared_size_at(&chunk, in_chunk) + 1);
                    chunk = self.log.read_at(position, want).await?;
                    chunk_start = position;
                    continue;
                }
                ScanStep::Invalid => break 'scan,
            };
            if header.base_offset != self.next_offset {
                break 'scan;
            }
            self.index_batch(&header, position).await?;
            position += header.size_bytes() as u64;
            report.batches_valid += 1;
        }
        if position < log_len {
            report.bytes_truncated = log_len - position;
            self.log.truncate(position).await?;
        }
        // What survived may have been unsynced when the process died (still in the
        // device cache): it counts as durable from now on, so make it so.
        self.log.sync().await?;
        self.offset_index.sync_if_room().await?;
        self.time_index.sync_if_room().await?;
        Ok(report)
    }

    fn declared_size_at(&self, chunk: &[u8], at: usize) -> usize {
        BatchHeader::parse(chunk.get(at..).unwrap_or(&[])).map_or(0, |h| h.size_bytes())
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
        assert_eq!(header.base_offset, self.next_offset, "offsets must be contiguous");
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

    /// Reads and parses the batch header at `position`, or `None` past the end.
    async fn header_at(&self, position: u64) -> Result<Option<BatchHeader>> {
        let bytes = self.log.read_at(position, BATCH_HEADER_BYTES).await?;
        Ok(BatchHeader::parse(&bytes).ok())
    }

    /// Position and header of the batch holding `offset`, scanning headers from the
    /// nearest offset-index entry at or before it.
    pub async fn find_batch(&self, offset: Offset) -> Result<Option<(u64, BatchHeader)>> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        let relative = (offset.0 - self.base_offset.0).max(0);
        let mut position = match self.offset_index.floor(relative) {
            Some(at) => self.offset_index.entries()[at].position as u64,
            None => 0,
        };
        while let Some(header) = self.header_at(position).await? {
            if header.last_offset() >= offset {
                return Ok(Some((position, header)));
            }
            position += header.size_bytes() as u64;
        }
        Ok(None)
    }

    /// Calls `visit` with the header of every batch from the one holding `from` to
    /// the end of the segment, reading the `.log` in large chunks (the rebuild of
    /// idempotent-producer state needs headers only, possibly of a whole segment).
    pub async fn scan_headers(&self, from: Offset, mut visit: impl FnMut(&BatchHeader)) -> Result<()> {
        let Some((mut position, _)) = self.find_batch(from).await? else { return Ok(()) };
        let end = self.log.len();
        let mut chunk: Vec<u8> = Vec::new();
        let mut chunk_start = position;
        let mut chunk_fresh = false;
        while position < end {
            let in_chunk = (position - chunk_start) as usize;
            if let Some(Ok(header)) = chunk.get(in_chunk..).map(BatchHeader::parse) {
                visit(&header);
                position += header.size_bytes() as u64;
                chunk_fresh = false;
                continue;
            }
            if chunk_fresh {
                // A read from `position` itself holds no header: the file ends in a
                // partial batch, which open() never leaves behind; the disk changed.
                let source = std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("no whole batch header at byte {position} of {end}"),
                );
                return Err(crate::error::EngineError::io("scan batch headers", &self.log_path, source));
            }
            chunk = self.log.read_at(position, RECOVERY_READ_BYTES).await?;
            chunk_start = position;
            chunk_fresh = true;
        }
        Ok(())
    }

    /// Whole batches starting with the one holding `offset`, up to `max_bytes` (the
    /// first batch is returned whole even if larger, so a consumer always makes
    /// progress), and not including batches at or past `offset_limit`.
    pub async fn read(&self, offset: Offset, max_bytes: usize, offset_limit: Offset) -> Result<Option<SegmentRead>> {
        let Some((start, first)) = self.find_batch(offset).await? else { return Ok(None) };
        if first.base_offset >= offset_limit {
            return Ok(None);
        }
        let want = max_bytes.max(first.size_bytes());
        let mut bytes = self.log.read_at(start, want).await?;
        let mut end = 0usize;
        let mut next_offset = first.base_offset;
        while let Ok(header) = BatchHeader::parse(&bytes[end..]) {
            let fits = end + header.size_bytes() <= bytes.len();
            if !fits || header.base_offset >= offset_limit || (end > 0 && end + header.size_bytes() > max_bytes) {
                break;
            }
            end += header.size_bytes();
            next_offset = header.last_offset().next();
        }
        assert!(end > 0, "the first batch of a read must fit: it was sized for it");
        bytes.truncate(end);
        Ok(Some(SegmentRead { bytes, first_offset: first.base_offset, next_offset }))
    }

    /// The first batch holding an offset at or past `from` whose max timestamp is at
    /// least `timestamp`: its base offset and max timestamp. (`from` is the log start
    /// offset: batches wholly below it are deleted, even if their segment is not.)
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
        let Some((mut position, _)) = self.find_batch(start_offset).await? else { return Ok(None) };
        while let Some(header) = self.header_at(position).await? {
            if header.max_timestamp >= timestamp {
                return Ok(Some((header.base_offset, header.max_timestamp)));
            }
            position += header.size_bytes() as u64;
        }
        Ok(None)
    }

    /// Removes every batch holding an offset at or past `offset` (a batch that
    /// straddles it goes whole), then syncs.
    pub async fn truncate_to(&mut self, offset: Offset) -> Result<()> {
        let Some((position, header)) = self.find_batch(offset).await? else { return Ok(()) };
        let relative = (header.base_offset.0 - self.base_offset.0) as i64;
        let keep = self.offset_index.entries().partition_point(|e| (e.relative_offset as i64) < relative);
        self.offset_index.truncate_entries(keep).await?;
        let keep = self.time_index.entries().partition_point(|e| (e.relative_offset as i64) < relative);
        self.time_index.truncate_entries(keep).await?;
        self.log.truncate(position).await?;
        self.log.sync().await?;
        self.next_offset = header.base_offset;
        // Recompute the running maximum and the index spacing from what is left.
        self.max_timestamp = None;
        self.bytes_since_index_entry = 0;
        let mut scan = self.offset_index.last().map_or(0, |e| e.position as u64);
        let mut max_timestamp = self.time_index.last().map(|e| (e.timestamp, self.absolute(e.relative_offset)));
        while scan < position {
            let Some(header) = self.header_at(scan).await? else { break };
            if max_timestamp.is_none_or(|(ts, _)| header.max_timestamp > ts) {
                max_timestamp = Some((header.max_timestamp, header.base_offset));
            }
            self.bytes_since_index_entry += header.size_bytes() as u64;
            scan += header.size_bytes() as u64;
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

    /// Syncs `.log` and both indexes and releases write buffers: this segment will
    /// never be appended to again.
    pub async fn seal(&mut self) -> Result<()> {
        self.log.sync().await?;
        self.offset_index.sync().await?;
        self.time_index.sync().await?;
        self.log.seal().await?;
        self.offset_index.seal().await?;
        self.time_index.seal().await
    }

    /// Clean close: everything synced, padding trimmed.
    pub async fn close(mut self) -> Result<()> {
        self.seal().await?;
        self.log.close().await?;
        self.offset_index.close().await?;
        self.time_index.close().await
    }

    /// Closes and removes the segment's three files.
    pub async fn delete(self, storage: &S) -> Result<()> {
        let paths = [
            self.log_path.clone(),
            self.offset_index.path().to_path_buf(),
            self.time_index.path().to_path_buf(),
        ];
        self.log.close().await?;
        self.offset_index.close().await?;
        self.time_index.close().await?;
        for path in paths {
            storage.remove_file(&path).await?;
        }
        Ok(())
    }
}
