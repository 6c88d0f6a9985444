//! The log cleaner: compaction of `cleanup.policy=compact` partitions (Kafka's
//! `LogCleaner`, `Cleaner` and `LogCleanerManager`, for one partition at a time).
//!
//! A pass ([`PartitionLog::clean`]) works on the log's sealed segments:
//!
//! 1. The dirty section runs from the cleaner checkpoint (`cleaner-offset-checkpoint`
//!    in the partition's directory: where the last pass stopped; the log start if
//!    there is none or it is out of the log) to the first uncleanable offset
//!    ([`PartitionLog::cleanable_range`]): never the active segment, never at or past
//!    the last stable offset (so never past the high watermark, nor into an open
//!    transaction), never a segment holding a record newer than
//!    `min.compaction.lag.ms`; cut down to a segment boundary.
//! 2. The offset map ([`offset_map`]) gets each key's latest offset in the dirty
//!    section, skipping aborted transactions' records; if it fills, the pass covers
//!    only the part mapped.
//! 3. Every sealed segment below the mapped end, clean ones too (a newer record of a
//!    key may supersede theirs), is rewritten in groups whose sizes add up to at most
//!    `segment.bytes` (small segments merge into one, as in Kafka): per key only the
//!    latest record stays ([`filter`]); records keep their offsets (whole batches
//!    that go leave gaps); tombstones and transaction markers go once their delete
//!    horizon passes; records of aborted transactions go ([`transactions`]); the
//!    last batch of each producer still in the producer state stays, emptied if need
//!    be, so its epoch and last sequence survive a rebuild of that state; the last
//!    batch of a group stays, emptied if need be, so the new segment ends where the
//!    next one starts (Kafka keeps only the last batch of the whole pass; keeping one
//!    per group costs a 61-byte header and keeps segments contiguous).
//! 4. Each group's new segment is written under `.cleaned` names, synced, and swapped
//!    in for the group ([`swap`]: Kafka's `.cleaned` → `.swap` → `.deleted` dance,
//!    finished or rolled back by the next open after a crash).
//! 5. The checkpoint moves to the mapped end.
//!
//! A pass runs in steps ([`pass`]: one chunk read, or one group swapped in), on the
//! partition's actor, so the partition's appends wait for one step at most; the
//! shard's cleaner task ([`crate::shard`]) sends one step at a time. Limits: a
//! step that swaps a group in reads the new segment whole to open it (up to
//! `segment.bytes`); one batch's records are inflated whole in memory (a batch
//! inflating past [`CleanerLimits::inflated_batch_bytes_max`] fails the pass); the
//! offset map keeps whole keys, within [`CleanerLimits::offset_map_bytes_max`].

mod filter;
mod offset_map;
mod pass;
pub(crate) mod swap;
mod transactions;

use std::collections::HashMap;

use crate::batch::{self, BatchHeader};
use crate::error::{EngineError, Result};
use crate::log::PartitionLog;
use crate::segment::LogSegment;
use crate::storage::Storage;
use crate::types::{Offset, ProducerEpoch, ProducerId, TimestampMs};
pub use filter::{delete_horizon, ATTRIBUTE_DELETE_HORIZON};
use filter::{BatchRetention, BatchVerdict};
pub use offset_map::OffsetMap;
pub use pass::{CleanStep, CleanerPass};
use transactions::CleanedTransactions;

/// Where the last pass stopped: decimal text, written atomically.
pub const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";

/// Bounds on one pass's memory and IO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanerLimits {
    /// The offset map's budget ([`OffsetMap`]); a dirty section with more distinct
    /// keys is cleaned over several passes.
    pub offset_map_bytes_max: usize,
    /// Bytes of whole batches read from a segment at a time.
    pub read_chunk_bytes: usize,
    /// The most one batch's records may inflate to.
    pub inflated_batch_bytes_max: usize,
    /// Dirty bytes one pass maps at most (whole segments, at least one): bounds how
    /// long a pass holds its partition; the rest waits for the next pass.
    pub dirty_bytes_max: u64,
}

impl Default for CleanerLimits {
    fn default() -> Self {
        CleanerLimits {
            offset_map_bytes_max: 64 << 20,
            read_chunk_bytes: 1 << 20,
            inflated_batch_bytes_max: 128 << 20,
            dirty_bytes_max: 64 << 20,
        }
    }
}

/// What cleaning did, summed over passes (Kafka's `CleanerStats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanerStats {
    pub passes: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_read: u64,
    pub records_removed: u64,
    /// Segments replaced by cleaned ones.
    pub segments_cleaned: u64,
}

impl CleanerStats {
    pub fn add(&mut self, other: &CleanerStats) {
        self.passes += other.passes;
        self.bytes_read += other.bytes_read;
        self.bytes_written += other.bytes_written;
        self.records_read += other.records_read;
        self.records_removed += other.records_removed;
        self.segments_cleaned += other.segments_cleaned;
    }
}

/// The part of a log a pass may clean, and how dirty the log is (Kafka's
/// `LogToClean` and `cleanableOffsets`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanableRange {
    pub first_dirty: Offset,
    /// A segment's base offset: nothing at or past it is cleaned.
    pub first_uncleanable: Offset,
    /// Bytes of the segments below the first dirty offset.
    pub clean_bytes: u64,
    /// Bytes of the segments from the first dirty offset to the first uncleanable.
    pub dirty_bytes: u64,
    /// A dirty sealed segment's first batch is older than `max.compaction.lag.ms`.
    pub compaction_overdue: bool,
}

impl CleanableRange {
    /// Dirty bytes over all cleanable bytes (0 for an empty log).
    pub fn dirty_ratio(&self) -> f64 {
        let total = self.clean_bytes + self.dirty_bytes;
        if total == 0 {
            return 0.0;
        }
        self.dirty_bytes as f64 / total as f64
    }

    /// Whether the log is due a pass: some bytes are dirty, and either its dirty
    /// ratio passes `min_ratio` or compaction is overdue (Kafka's rule).
    pub fn is_due(&self, min_ratio: f64) -> bool {
        self.dirty_bytes > 0 && (self.compaction_overdue || self.dirty_ratio() > min_ratio)
    }
}

/// What the producer state says must survive of a producer (Kafka's `LastRecord`):
/// its last data batch, or, after a marker moved it to a new epoch, a marker of
/// that epoch.
#[derive(Debug, Clone, Copy)]
struct LastRecord {
    last_data_offset: Option<Offset>,
    epoch: ProducerEpoch,
}

/// One batch after another of a segment, in chunks of whole batches.
struct SegmentChunks {
    next: Offset,
    end: Offset,
}

impl SegmentChunks {
    async fn next<S: Storage>(&mut self, segment: &LogSegment<S>, chunk_bytes: usize) -> Result<Option<Vec<u8>>> {
        if self.next >= self.end {
            return Ok(None);
        }
        let Some(read) = segment.read(self.next, chunk_bytes, self.end).await? else { return Ok(None) };
        self.next = read.next_offset;
        Ok(Some(read.bytes))
    }
}

fn corrupt_chunk(segment_path: &std::path::Path, error: batch::BatchError) -> EngineError {
    EngineError::Corrupt {
        path: segment_path.to_path_buf(),
        position: 0,
        offset: None,
        reason: format!("the log cleaner read an invalid batch: {error}"),
    }
}

impl<S: Storage> PartitionLog<S> {
    /// Where the cleaner's next pass starts, as its checkpoint says (kept in memory
    /// from the open on), if a pass ever ran.
    pub fn cleaner_checkpoint(&self) -> Option<Offset> {
        self.cleaner_checkpoint_value()
    }

    /// What a pass would clean now (see the module doc).
    pub async fn cleanable_range(&self) -> Result<CleanableRange> {
        let now = self.clock_now();
        let config = self.config();
        let (start, end) = (self.log_start_offset(), self.log_end_offset());
        let first_dirty = match self.cleaner_checkpoint() {
            Some(checkpoint) if checkpoint >= start && checkpoint <= end => checkpoint,
            _ => start,
        };
        let segments = self.segments();
        let active_base = *segments.keys().next_back().expect("a log always has a segment");
        let sealed_from = |from: Offset| {
            let floor = segments.range(..=from).next_back().map_or(Offset(i64::MIN), |(base, _)| *base);
            segments.range(floor..active_base).map(|(_, s)| s)
        };
        let mut uncleanable = self.last_stable_offset().min(active_base);
        let min_lag = config.min_compaction_lag_ms.max(0);
        if min_lag > 0 {
            let too_new = sealed_from(first_dirty).find(|s| s.max_timestamp().is_some_and(|ts| ts.0 > now.0 - min_lag));
            if let Some(segment) = too_new {
                uncleanable = uncleanable.min(segment.base_offset());
            }
        }
        let uncleanable = uncleanable.max(first_dirty);
        let first_uncleanable = sealed_from(uncleanable).next().map_or(active_base, |s| s.base_offset());
        let clean_bytes = segments.range(..first_dirty).map(|(_, s)| s.size_bytes()).sum();
        let dirty_bytes = sealed_from(first_dirty.min(first_uncleanable))
            .take_while(|s| s.base_offset() < first_uncleanable)
            .map(|s| s.size_bytes())
            .sum();
        let max_lag = config.max_compaction_lag_ms.max(0);
        let mut compaction_overdue = false;
        // At its default (Long.MAX_VALUE) no record is ever overdue: no header to read.
        let dirty_sealed = match max_lag < now.0 {
            true => sealed_from(first_dirty).collect(),
            false => Vec::new(),
        };
        for segment in dirty_sealed {
            if let Some((_, header)) = segment.find_batch(segment.base_offset()).await? {
                if header.max_timestamp.0 > 0 && header.max_timestamp.0 < now.0.saturating_sub(max_lag) {
                    compaction_overdue = true;
                    break;
                }
            }
        }
        Ok(CleanableRange { first_dirty, first_uncleanable, clean_bytes, dirty_bytes, compaction_overdue })
    }

    /// Puts one batch's keys into the map; false once the map is full.
    fn map_batch(
        &self,
        whole: &[u8],
        header: &BatchHeader,
        start: Offset,
        map: &mut OffsetMap,
        transactions: &mut CleanedTransactions,
        limits: &CleanerLimits,
    ) -> Result<bool> {
        if header.is_control() {
            transactions.on_control_batch(header, batch::txn_marker(whole));
        } else if !transactions.on_batch(header) {
            let records = crate::records::decode_records(whole, limits.inflated_batch_bytes_max)
                .map_err(|e| corrupt_chunk(self.dir(), e))?;
            for record in records.iter().filter(|r| r.offset >= start) {
                if let Some(key) = &record.key {
                    if !map.put(key, record.offset) {
                        return Ok(false);
                    }
                }
            }
        }
        if header.last_offset() >= start {
            map.update_latest_offset(header.last_offset());
        }
        Ok(true)
    }

    /// The sealed segments below `end`, in groups of consecutive segments whose
    /// sizes add up to at most `segment.bytes` and whose offsets fit one segment's
    /// 32-bit relative offsets (Kafka's `groupSegmentsBySize`).
    fn groups_below(&self, end: Offset) -> Vec<Vec<Offset>> {
        let segments = self.segments();
        let active_base = *segments.keys().next_back().expect("a log always has a segment");
        let limit = self.config().segment_bytes;
        let mut groups: Vec<Vec<Offset>> = Vec::new();
        let mut size = 0u64;
        for (base, segment) in segments.range(..end.min(active_base)) {
            let fits = groups.last().is_some_and(|group| {
                let first = group[0];
                size + segment.size_bytes() <= limit && segment.next_offset().0 - 1 - first.0 <= u32::MAX as i64
            });
            if fits {
                size += segment.size_bytes();
                groups.last_mut().expect("checked").push(*base);
            } else {
                size = segment.size_bytes();
                groups.push(vec![*base]);
            }
        }
        groups
    }
}

/// Kafka's `checkBatchRetention` for the cleaner: see [`filter`].
fn batch_verdict(
    header: &BatchHeader,
    discard_txn: bool,
    now: TimestampMs,
    last_records: &HashMap<ProducerId, LastRecord>,
    group_end: Offset,
) -> BatchVerdict {
    let discard_records = match header.is_control() {
        true => discard_txn && delete_horizon(header).is_some_and(|horizon| horizon <= now),
        false => discard_txn,
    };
    let last_of_producer = header.producer_id.0 >= 0
        && last_records.get(&header.producer_id).is_some_and(|last| match last.last_data_offset {
            Some(offset) => header.last_offset() == offset,
            None => header.is_control() && header.producer_epoch == last.epoch,
        });
    let retention = if last_of_producer || header.last_offset().next() == group_end {
        BatchRetention::RetainEmpty
    } else if discard_records {
        BatchRetention::Delete
    } else {
        BatchRetention::DeleteEmpty
    };
    BatchVerdict { retention, discard_records, removable_marker: discard_txn && header.is_control() }
}
