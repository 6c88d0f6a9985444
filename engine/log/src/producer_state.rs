//! The idempotent producer's state in one partition: Kafka's `ProducerStateManager`
//! and `ProducerAppendInfo`.
//!
//! A batch whose `producer_id` is >= 0 (and that is not a control batch) is
//! idempotent. For each producer id the partition keeps the producer's current epoch
//! and the metadata of its last [`BATCHES_PER_PRODUCER_MAX`] appended batches
//! (sequences, offsets), enough to classify each incoming batch as:
//!
//! - a retry of one of those batches (same epoch, same base and last sequence): a
//!   *duplicate*. Nothing is written; the caller answers with the original batch's
//!   offsets ([`Admission::Duplicate`]), so a producer whose acknowledgement was lost
//!   learns where its batch went instead of writing it twice;
//! - from an older epoch than the producer's current one:
//!   [`EngineError::InvalidProducerEpoch`] (a newer instance fenced it);
//! - the next batch: same epoch and base sequence = last sequence + 1 (wrapping from
//!   `i32::MAX` to 0), or a higher epoch starting at sequence 0. Appended;
//! - anything else (a gap, a stale sequence no longer cached, a new epoch not starting
//!   at 0): [`EngineError::OutOfOrderSequence`].
//!
//! A producer id the partition holds no state for is accepted at any epoch and any
//! sequence. That is Kafka's behaviour since KIP-360 (Kafka 2.5, `ProducerAppendInfo.
//! checkSequence`: "if there is no current producer epoch ... accept writes with any
//! sequence number"): state disappears legitimately (a log emptied by truncation, a
//! damaged snapshot), and refusing the producer with UNKNOWN_PRODUCER_ID made healthy
//! producers fail; the client tracks its own sequences and resets them. The cost: the
//! first batch after such a loss is not checked for a gap. A batch with a producer id
//! but a negative base sequence is refused ([`EngineError::InvalidSequence`], Kafka's
//! INVALID_RECORD). Batches with `producer_id < 0` bypass all of this.
//!
//! Transactions (Kafka's `ProducerAppendInfo` for transactional batches and
//! `appendEndTxnMarker`): a transactional data batch opens its producer's transaction
//! at its base offset if none is open; a transaction marker (a control batch whose
//! record is COMMIT or ABORT, [`crate::batch::txn_marker`]) closes it, giving a
//! [`CompletedTxn`] from that first offset to the marker's offset (a marker with no
//! open transaction completes an empty one at its own offset, as in Kafka). A marker
//! from an older epoch is fenced ([`EngineError::InvalidProducerEpoch`]); one from a
//! newer epoch moves the producer to it with an empty batch cache, so its next batch
//! starts at sequence 0. A non-transactional batch while the producer's transaction is
//! open is [`EngineError::InvalidTxnState`]. The first offsets of the open
//! transactions, and of the completed ones whose marker the high watermark has not
//! passed yet, make the first unstable offset ([`ProducerStateManager::
//! first_unstable_offset`]); an abort yields an [`AbortedTxn`] for the segment's
//! transaction index, whose last stable offset is the first offset of the oldest
//! transaction of another producer still open, or the marker's offset + 1 (Kafka's
//! `ProducerStateManager.lastStableOffset(CompletedTxn)`).
//!
//! Limits:
//! - The coordinator epoch of a marker is stored in the log but not checked against
//!   the previous marker's (Kafka's TRANSACTION_COORDINATOR_FENCED); transactions are
//!   never timed out here (that is the coordinator's job).
//! - Producers are never expired (Kafka forgets them after `producer.id.expiration.ms`),
//!   not even when retention deletes all their batches, so memory and snapshot size
//!   grow with the producer ids a partition has seen since its log was last emptied:
//!   about 170 bytes each.
//! - Within one record set, each batch is checked against the state the set's earlier
//!   batches leave; duplicates are looked up in the state before the set, and the
//!   first duplicate answers for the whole set, which is then not written (Kafka's
//!   `UnifiedLog.analyzeAndValidateProducerState` returns early the same way; Kafka
//!   clients send one batch per partition per request, and Kafka enforces that from
//!   produce v3).
//! - Snapshots are written with blocking file calls on the shard's thread (as the
//!   log-start-offset checkpoint is): each roll stalls the shard for two fsyncs and a
//!   write of about 170 bytes per producer.
//! - A duplicate's reply carries the original's `log_append_time` while the state was
//!   built by appends or loaded from a snapshot; for a batch that was re-read from the
//!   log after a crash, which does not store that clock reading, it carries the batch's
//!   max timestamp instead (as Kafka's `BatchMetadata.timestamp` does).
//!
//! ## Snapshots
//!
//! The state follows from the log's batch headers, so it can be rebuilt by scanning
//! them (all but the producers whose batches retention deleted: only snapshots keep
//! those). To keep that scan short, [`PartitionLog`](crate::log::PartitionLog)
//! writes a snapshot `<offset:020>.snapshot` holding the state of every batch below
//! `offset`: at each segment roll (offset = the new segment's base) and at a clean
//! close (offset = the log end), empty state included, so that a log without producers
//! is not rescanned at every open. Byte layout (big-endian):
//!
//! ```text
//! offset  size  field
//!      0     2  version             2 (1 is still read: no txn_first_offset, batch_count >= 1)
//!      2     4  crc                 CRC32C of bytes [6, end)
//!      6     8  offset              the state covers the batches below it; equals the file name
//!     14     4  producer_count
//!     18     …  producer_count entries, by ascending producer id:
//!                  8  producer_id
//!                  2  producer_epoch
//!                  8  txn_first_offset  first offset of its open transaction, -1: none (version 2)
//!                  1  batch_count     0..=5, then that many batches, oldest first:
//!                       4  base_sequence
//!                       4  last_sequence
//!                       8  base_offset
//!                       8  last_offset
//!                       8  log_append_time
//! ```
//!
//! The completed transactions whose marker is not yet below the high watermark are
//! not in a snapshot (nor in Kafka's): after an open they no longer hold the last
//! stable offset back.
//!
//! Crash story: a snapshot is written whole and durably (temporary file, fsync,
//! rename, directory fsync), and only once every batch below its offset is durable
//! (after the seal at a roll, after the segments' close at a clean close). So a
//! snapshot at or below the recovered log end describes exactly the batches below it.
//! On open, the log deletes (durably) the snapshots above the recovered end or below
//! its first segment, loads the newest remaining one that decodes with a valid CRC,
//! deleting damaged ones on the way, and scans batch headers from its offset to the
//! log end; with none, it scans from the first segment. Truncation reloads the same
//! way once it has cut, so no snapshot outlives the batches it describes, to be loaded
//! once the log grows past its offset again (after a crash mid-truncation, the open
//! deletes it). Retention deletes the snapshots below the first remaining segment;
//! the one at that segment's base still holds the producers whose batches all went,
//! so their retries are still recognised after a restart. If that snapshot is missing
//! (its write failed) or damaged, those producers are forgotten at the next open and
//! then accepted at any sequence, as above. A temporary file left by a crash
//! mid-write (`<offset:020>.tmp`) is deleted on open.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use crate::batch::{BatchHeader, TxnMarker, TxnOutcome};
use crate::error::{EngineError, Result};
use crate::segment::segment_file_name;
use crate::segment::txn_index::AbortedTxn;
use crate::storage::Storage;
use crate::types::{Offset, ProducerEpoch, ProducerId, Sequence, TimestampMs, TopicPartition};

/// Batches remembered per producer for duplicate detection: Kafka's
/// `NUM_BATCHES_TO_RETAIN`, which is why a Kafka producer allows at most five
/// in-flight requests per connection when idempotence is on.
pub const BATCHES_PER_PRODUCER_MAX: usize = 5;

pub const SNAPSHOT_EXTENSION: &str = "snapshot";
/// The extension `Storage::write_file_atomic` gives its temporary file.
const TEMPORARY_EXTENSION: &str = "tmp";
const SNAPSHOT_VERSION: u16 = 2;
/// The format before transactions, still read.
const SNAPSHOT_VERSION_1: u16 = 1;
const SNAPSHOT_HEADER_BYTES: usize = 18;
const SNAPSHOT_CRC_START: usize = 6;
const SNAPSHOT_BATCH_BYTES: usize = 32;

/// What the partition remembers of one appended idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetadata {
    pub base_sequence: Sequence,
    pub last_sequence: Sequence,
    pub base_offset: Offset,
    pub last_offset: Offset,
    /// The broker's clock at the append; for a batch re-read from the log after a
    /// crash, its max timestamp (the clock reading is not stored in the log).
    pub log_append_time: TimestampMs,
}

/// The producer fields of one batch, with where it was (or is about to be) stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: ProducerId,
    pub epoch: ProducerEpoch,
    pub metadata: BatchMetadata,
}

impl ProducerBatch {
    /// The producer fields of a stamped batch header, or `None` if the batch is not
    /// idempotent (no producer id) or is a control batch.
    pub fn from_header(header: &BatchHeader, log_append_time: TimestampMs) -> Option<ProducerBatch> {
        if header.producer_id.0 < 0 || header.is_control() {
            return None;
        }
        let base_sequence = header.base_sequence;
        // A negative base sequence is refused before it is stored; computing a last
        // sequence for one (read back from an old log) must still not overflow.
        let last_sequence = if base_sequence.0 < 0 {
            Sequence(base_sequence.0.saturating_add(header.last_offset_delta.max(0)))
        } else {
            base_sequence.plus(header.last_offset_delta.max(0))
        };
        Some(ProducerBatch {
            producer_id: header.producer_id,
            epoch: header.producer_epoch,
            metadata: BatchMetadata {
                base_sequence,
                last_sequence,
                base_offset: header.base_offset,
                last_offset: header.last_offset(),
                log_append_time,
            },
        })
    }
}

/// One producer's epoch, its last appended batches and its open transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    epoch: ProducerEpoch,
    /// Oldest first; at most [`BATCHES_PER_PRODUCER_MAX`]; empty only after a marker
    /// moved the producer to a new epoch.
    batches: VecDeque<BatchMetadata>,
    /// The first offset of its open transaction.
    txn_first_offset: Option<Offset>,
}

impl ProducerEntry {
    fn new(epoch: ProducerEpoch, first: BatchMetadata) -> ProducerEntry {
        ProducerEntry { epoch, batches: VecDeque::from([first]), txn_first_offset: None }
    }

    fn empty(epoch: ProducerEpoch) -> ProducerEntry {
        ProducerEntry { epoch, batches: VecDeque::new(), txn_first_offset: None }
    }

    pub fn epoch(&self) -> ProducerEpoch {
        self.epoch
    }

    /// The remembered batches, oldest first.
    pub fn batches(&self) -> impl ExactSizeIterator<Item = &BatchMetadata> {
        self.batches.iter()
    }

    /// The last remembered batch; `None` after a marker of a new epoch.
    pub fn last_batch(&self) -> Option<&BatchMetadata> {
        self.batches.back()
    }

    /// The first offset of the producer's open transaction, if one is open.
    pub fn txn_first_offset(&self) -> Option<Offset> {
        self.txn_first_offset
    }

    /// Moves to `epoch`; a new epoch starts an empty batch cache.
    fn set_epoch(&mut self, epoch: ProducerEpoch) {
        if epoch != self.epoch {
            self.batches.clear();
            self.epoch = epoch;
        }
    }

    /// The cached batch `batch` is a retry of, if any (Kafka's `findDuplicateBatch`).
    fn find_duplicate(&self, batch: &ProducerBatch) -> Option<BatchMetadata> {
        if batch.epoch != self.epoch {
            return None;
        }
        let incoming = &batch.metadata;
        self.batches
            .iter()
            .find(|cached| {
                cached.base_sequence == incoming.base_sequence && cached.last_sequence == incoming.last_sequence
            })
            .copied()
    }

    /// Records an appended batch. A new epoch starts an empty cache: sequences of
    /// the old epoch can never be retried under the new one.
    fn add(&mut self, epoch: ProducerEpoch, batch: BatchMetadata) {
        self.set_epoch(epoch);
        if self.batches.len() == BATCHES_PER_PRODUCER_MAX {
            self.batches.pop_front();
        }
        self.batches.push_back(batch);
    }
}

/// One producer of a partition as DescribeProducers reports it (Kafka's
/// `UnifiedLog.activeProducers`), read from the state without changing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveProducer {
    pub producer_id: ProducerId,
    pub epoch: ProducerEpoch,
    /// The last sequence of its last remembered batch; `None` after a marker moved
    /// it to a new epoch (Kafka's `NO_SEQUENCE`).
    pub last_sequence: Option<Sequence>,
    /// The `log_append_time` of that batch: the broker's clock at the append, or the
    /// batch's max timestamp for one re-read from the log (Kafka reports the batch's
    /// max timestamp always).
    pub last_timestamp: Option<TimestampMs>,
    /// The first offset of its open transaction.
    pub current_txn_start_offset: Option<Offset>,
}

/// What to do with an incoming record set, per [`ProducerStateManager::check`].
#[derive(Debug)]
pub enum Admission {
    /// Write it; once written, hand the update to [`ProducerStateManager::apply`].
    Append(PendingUpdate),
    /// A retry of this already appended batch: write nothing, answer with it.
    Duplicate(BatchMetadata),
}

/// The producer entries an admitted record set changes, to install once it is written,
/// and the transactions it starts and completes, in log order.
#[derive(Debug, Default)]
pub struct PendingUpdate {
    entries: BTreeMap<ProducerId, ProducerEntry>,
    started: Vec<(Offset, ProducerId)>,
    completed: Vec<CompletedTxn>,
}

/// A transaction a marker ended (Kafka's `CompletedTxn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedTxn {
    pub producer_id: ProducerId,
    pub first_offset: Offset,
    /// The marker's offset.
    pub last_offset: Offset,
    pub aborted: bool,
}

/// One batch as the producer state sees it: its stamped header and, for a control
/// batch, the transaction marker it holds.
#[derive(Debug, Clone, Copy)]
pub struct StoredBatch<'a> {
    pub header: &'a BatchHeader,
    pub marker: Option<TxnMarker>,
}

/// The idempotent and transactional producers of one partition. Owned by the
/// partition's log (one shard); it does no IO itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerStateManager {
    partition: TopicPartition,
    producers: BTreeMap<ProducerId, ProducerEntry>,
    /// The open transactions by first offset (Kafka's `ongoingTxns`); the same as
    /// the entries' `txn_first_offset`s.
    ongoing: BTreeMap<Offset, ProducerId>,
    /// Completed transactions whose marker may not be below the high watermark yet,
    /// by first offset (Kafka's `unreplicatedTxns`).
    unreplicated: BTreeMap<Offset, CompletedTxn>,
}

impl ProducerStateManager {
    pub fn new(partition: TopicPartition) -> ProducerStateManager {
        ProducerStateManager {
            partition,
            producers: BTreeMap::new(),
            ongoing: BTreeMap::new(),
            unreplicated: BTreeMap::new(),
        }
    }

    /// The first offset of the oldest open transaction, or of the oldest completed
    /// one whose marker is at or past `high_watermark` (Kafka's
    /// `firstUnstableOffset`): consumers reading committed data stop there.
    pub fn first_unstable_offset(&self, high_watermark: Offset) -> Option<Offset> {
        let ongoing = self.ongoing.keys().next().copied();
        let unreplicated =
            self.unreplicated.values().filter(|t| t.last_offset >= high_watermark).map(|t| t.first_offset).min();
        match (ongoing, unreplicated) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Forgets the completed transactions whose marker is below `high_watermark`.
    pub fn forget_replicated(&mut self, high_watermark: Offset) {
        self.unreplicated.retain(|_, t| t.last_offset >= high_watermark);
    }

    /// The open transactions, by first offset.
    pub fn ongoing_transactions(&self) -> impl Iterator<Item = (Offset, ProducerId)> + '_ {
        self.ongoing.iter().map(|(offset, id)| (*offset, *id))
    }

    pub fn entry(&self, producer_id: ProducerId) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Every known producer, by ascending id.
    pub fn producers(&self) -> impl Iterator<Item = (ProducerId, &ProducerEntry)> {
        self.producers.iter().map(|(id, entry)| (*id, entry))
    }

    /// Every known producer as DescribeProducers reports it, by ascending id.
    pub fn active_producers(&self) -> Vec<ActiveProducer> {
        self.producers
            .iter()
            .map(|(id, entry)| ActiveProducer {
                producer_id: *id,
                epoch: entry.epoch,
                last_sequence: entry.last_batch().map(|batch| batch.last_sequence),
                last_timestamp: entry.last_batch().map(|batch| batch.log_append_time),
                current_txn_start_offset: entry.txn_first_offset,
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Forgets every producer (the log was emptied).
    pub fn clear(&mut self) {
        self.producers.clear();
        self.ongoing.clear();
        self.unreplicated.clear();
    }

    /// Classifies a record set whose batches are stamped with the offsets they would
    /// get. Changes nothing: an error or a duplicate leaves the state as it was, and
    /// so does a failed write of an admitted set, as long as the caller drops the
    /// [`PendingUpdate`] instead of applying it.
    pub fn check<'a>(
        &self,
        batches: impl IntoIterator<Item = StoredBatch<'a>>,
        log_append_time: TimestampMs,
    ) -> Result<Admission> {
        let mut update = PendingUpdate::default();
        for stored in batches {
            let header = stored.header;
            if header.producer_id.0 < 0 {
                continue;
            }
            let committed = self.producers.get(&header.producer_id);
            let current = update.entries.get(&header.producer_id).or(committed).cloned();
            let current = current.as_ref();
            if let Some(marker) = stored.marker {
                self.check_epoch(current, header.producer_id, header.producer_epoch)?;
                let entry = transition_marker(current, header, marker, &mut update);
                update.entries.insert(header.producer_id, entry);
                continue;
            }
            let Some(batch) = ProducerBatch::from_header(header, log_append_time) else { continue };
            if batch.metadata.base_sequence.0 < 0 {
                return Err(EngineError::InvalidSequence {
                    partition: self.partition.clone(),
                    producer_id: batch.producer_id,
                    base_sequence: batch.metadata.base_sequence,
                });
            }
            if let Some(original) = committed.and_then(|entry| entry.find_duplicate(&batch)) {
                return Ok(Admission::Duplicate(original));
            }
            self.check_next(current, &batch)?;
            if !header.is_transactional() && current.and_then(|e| e.txn_first_offset).is_some() {
                return Err(EngineError::InvalidTxnState {
                    partition: self.partition.clone(),
                    producer_id: batch.producer_id,
                    offset: header.base_offset,
                });
            }
            let entry = transition_data(current, header, batch, &mut update);
            update.entries.insert(batch.producer_id, entry);
        }
        Ok(Admission::Append(update))
    }

    /// A batch (a marker too) from an epoch older than the producer's is fenced.
    fn check_epoch(
        &self,
        current: Option<&ProducerEntry>,
        producer_id: ProducerId,
        epoch: ProducerEpoch,
    ) -> Result<()> {
        match current {
            Some(current) if epoch < current.epoch => Err(EngineError::InvalidProducerEpoch {
                partition: self.partition.clone(),
                producer_id,
                epoch,
                current_epoch: current.epoch,
            }),
            _ => Ok(()),
        }
    }

    /// Whether `batch` may follow `current` (Kafka's `checkProducerEpoch` and
    /// `checkSequence` for a client's append).
    fn check_next(&self, current: Option<&ProducerEntry>, batch: &ProducerBatch) -> Result<()> {
        // Unknown producer: any epoch, any sequence (KIP-360; see the module doc).
        let Some(current) = current else { return Ok(()) };
        self.check_epoch(Some(current), batch.producer_id, batch.epoch)?;
        // After a marker moved the producer to a new epoch it has no batch: it
        // starts at 0, and the last sequence reported is -1.
        let last_sequence = current.last_batch().map_or(Sequence(-1), |b| b.last_sequence);
        let expected_sequence = match current.last_batch() {
            Some(last) if batch.epoch == current.epoch => last.last_sequence.next(),
            _ => Sequence(0),
        };
        if batch.metadata.base_sequence != expected_sequence {
            return Err(EngineError::OutOfOrderSequence {
                partition: self.partition.clone(),
                producer_id: batch.producer_id,
                epoch: batch.epoch,
                base_sequence: batch.metadata.base_sequence,
                expected_sequence,
                current_epoch: current.epoch,
                last_sequence,
            });
        }
        Ok(())
    }

    /// Installs the entries of a record set that is now written, and its
    /// transactions: started ones become open, completed ones go to the
    /// not-yet-replicated ones. Returns the aborted ones, each with the last stable
    /// offset at its abort, for the transaction index (see the module doc).
    pub fn apply(&mut self, update: PendingUpdate) -> Vec<AbortedTxn> {
        self.producers.extend(update.entries);
        for (first_offset, producer_id) in update.started {
            self.ongoing.insert(first_offset, producer_id);
        }
        let mut aborted = Vec::new();
        for txn in update.completed {
            if txn.aborted {
                let last_stable_offset = self
                    .ongoing
                    .iter()
                    .find(|(_, producer_id)| **producer_id != txn.producer_id)
                    .map_or(txn.last_offset.next(), |(first_offset, _)| *first_offset);
                aborted.push(AbortedTxn {
                    producer_id: txn.producer_id,
                    first_offset: txn.first_offset,
                    last_offset: txn.last_offset,
                    last_stable_offset,
                });
            }
            if self.ongoing.get(&txn.first_offset) == Some(&txn.producer_id) {
                self.ongoing.remove(&txn.first_offset);
            }
            self.unreplicated.insert(txn.first_offset, txn);
        }
        aborted
    }

    /// Replays a batch read back from the log (rebuild after open or truncation):
    /// no checks, as every stored batch passed them when it was appended (Kafka
    /// loads the log with `AppendOrigin.REPLICATION` the same way). Returns the
    /// transactions it aborted, as [`ProducerStateManager::apply`].
    pub fn replay(&mut self, stored: StoredBatch<'_>) -> Vec<AbortedTxn> {
        let header = stored.header;
        if header.producer_id.0 < 0 {
            return Vec::new();
        }
        let mut update = PendingUpdate::default();
        let current = self.producers.get(&header.producer_id).cloned();
        let current = current.as_ref();
        let entry = match stored.marker {
            Some(marker) => transition_marker(current, header, marker, &mut update),
            None => {
                let Some(batch) = ProducerBatch::from_header(header, header.max_timestamp) else { return Vec::new() };
                transition_data(current, header, batch, &mut update)
            }
        };
        update.entries.insert(header.producer_id, entry);
        self.apply(update)
    }

    /// The snapshot file bytes of this state as of `offset` (see the module doc).
    pub fn encode_snapshot(&self, offset: Offset) -> Vec<u8> {
        let batches: usize = self.producers.values().map(|e| e.batches.len()).sum();
        let mut out =
            Vec::with_capacity(SNAPSHOT_HEADER_BYTES + self.producers.len() * 19 + batches * SNAPSHOT_BATCH_BYTES);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes()); // crc, filled below
        out.extend_from_slice(&offset.0.to_be_bytes());
        let count = u32::try_from(self.producers.len()).expect("fewer than 2^32 producers");
        out.extend_from_slice(&count.to_be_bytes());
        for (producer_id, entry) in &self.producers {
            out.extend_from_slice(&producer_id.0.to_be_bytes());
            out.extend_from_slice(&entry.epoch.0.to_be_bytes());
            let txn_first_offset = entry.txn_first_offset.map_or(-1, |o| o.0);
            assert!(txn_first_offset < offset.0, "a snapshot at {offset} holds a transaction at {txn_first_offset}");
            out.extend_from_slice(&txn_first_offset.to_be_bytes());
            assert!(entry.batches.len() <= BATCHES_PER_PRODUCER_MAX, "entry of producer {producer_id}");
            out.push(entry.batches.len() as u8);
            for batch in &entry.batches {
                assert!(batch.last_offset < offset, "a snapshot at {offset} holds batch {batch:?}");
                out.extend_from_slice(&batch.base_sequence.0.to_be_bytes());
                out.extend_from_slice(&batch.last_sequence.0.to_be_bytes());
                out.extend_from_slice(&batch.base_offset.0.to_be_bytes());
                out.extend_from_slice(&batch.last_offset.0.to_be_bytes());
                out.extend_from_slice(&batch.log_append_time.0.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out[SNAPSHOT_CRC_START..]);
        out[2..6].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// Decodes a snapshot file expected to hold the state as of `offset`, checking
    /// its CRC and that every field is plausible.
    pub fn decode_snapshot(
        partition: TopicPartition,
        offset: Offset,
        bytes: &[u8],
    ) -> Result<ProducerStateManager, CorruptSnapshot> {
        let corrupt = |reason: String| CorruptSnapshot { offset, reason };
        let mut reader = Reader { bytes, at: 0, offset };
        let version = u16::from_be_bytes(reader.take()?);
        if version != SNAPSHOT_VERSION && version != SNAPSHOT_VERSION_1 {
            return Err(corrupt(format!("unknown version {version}")));
        }
        let stored = u32::from_be_bytes(reader.take()?);
        let computed = crc32c::crc32c(&bytes[SNAPSHOT_CRC_START..]);
        if stored != computed {
            return Err(corrupt(format!("CRC32C mismatch: stored {stored:#010x}, computed {computed:#010x}")));
        }
        let stored_offset = Offset(i64::from_be_bytes(reader.take()?));
        if stored_offset != offset {
            return Err(corrupt(format!("it says it holds the state as of offset {stored_offset}")));
        }
        let count = u32::from_be_bytes(reader.take()?);
        let mut producers = BTreeMap::new();
        for _ in 0..count {
            let producer_id = ProducerId(i64::from_be_bytes(reader.take()?));
            let epoch = ProducerEpoch(i16::from_be_bytes(reader.take()?));
            let txn_first_offset = match version {
                SNAPSHOT_VERSION_1 => None,
                _ => match i64::from_be_bytes(reader.take()?) {
                    -1 => None,
                    first if (0..offset.0).contains(&first) => Some(Offset(first)),
                    first => return Err(corrupt(format!("producer {producer_id} has a transaction at {first}"))),
                },
            };
            let [batch_count] = reader.take::<1>()?;
            if producer_id.0 < 0 || producers.keys().next_back().is_some_and(|last| *last >= producer_id) {
                return Err(corrupt(format!("producer id {producer_id} out of order")));
            }
            let batches_min = if version == SNAPSHOT_VERSION_1 { 1 } else { 0 };
            if !(batches_min..=BATCHES_PER_PRODUCER_MAX).contains(&(batch_count as usize)) {
                return Err(corrupt(format!("producer {producer_id} has {batch_count} batches")));
            }
            let mut batches = VecDeque::with_capacity(batch_count as usize);
            for _ in 0..batch_count {
                let batch = BatchMetadata {
                    base_sequence: Sequence(i32::from_be_bytes(reader.take()?)),
                    last_sequence: Sequence(i32::from_be_bytes(reader.take()?)),
                    base_offset: Offset(i64::from_be_bytes(reader.take()?)),
                    last_offset: Offset(i64::from_be_bytes(reader.take()?)),
                    log_append_time: TimestampMs(i64::from_be_bytes(reader.take()?)),
                };
                let after_previous = batches.back().is_none_or(|p: &BatchMetadata| p.last_offset < batch.base_offset);
                if batch.base_offset.0 < 0
                    || batch.last_offset < batch.base_offset
                    || batch.last_offset >= offset
                    || !after_previous
                {
                    return Err(corrupt(format!("producer {producer_id} has a batch at impossible offsets {batch:?}")));
                }
                batches.push_back(batch);
            }
            producers.insert(producer_id, ProducerEntry { epoch, batches, txn_first_offset });
        }
        if reader.at != bytes.len() {
            return Err(corrupt(format!("{} bytes follow the last producer", bytes.len() - reader.at)));
        }
        let mut ongoing = BTreeMap::new();
        for (producer_id, entry) in &producers {
            if let Some(first) = entry.txn_first_offset {
                if ongoing.insert(first, *producer_id).is_some() {
                    return Err(corrupt(format!("two transactions start at offset {first}")));
                }
            }
        }
        Ok(ProducerStateManager { partition, producers, ongoing, unreplicated: BTreeMap::new() })
    }
}

/// The entry after a data batch of `current`'s producer; a transactional batch opens
/// a transaction if none is open.
fn transition_data(
    current: Option<&ProducerEntry>,
    header: &BatchHeader,
    batch: ProducerBatch,
    update: &mut PendingUpdate,
) -> ProducerEntry {
    let mut entry = match current {
        Some(current) => {
            let mut entry = current.clone();
            entry.add(batch.epoch, batch.metadata);
            entry
        }
        None => ProducerEntry::new(batch.epoch, batch.metadata),
    };
    if header.is_transactional() && entry.txn_first_offset.is_none() {
        entry.txn_first_offset = Some(header.base_offset);
        update.started.push((header.base_offset, batch.producer_id));
    }
    entry
}

/// The entry after a transaction marker of `current`'s producer: its transaction (an
/// empty one at the marker if none is open) completes.
fn transition_marker(
    current: Option<&ProducerEntry>,
    header: &BatchHeader,
    marker: TxnMarker,
    update: &mut PendingUpdate,
) -> ProducerEntry {
    let mut entry = current.cloned().unwrap_or_else(|| ProducerEntry::empty(header.producer_epoch));
    entry.set_epoch(header.producer_epoch);
    let first_offset = entry.txn_first_offset.take().unwrap_or(header.base_offset);
    update.completed.push(CompletedTxn {
        producer_id: header.producer_id,
        first_offset,
        last_offset: header.base_offset,
        aborted: marker.outcome == TxnOutcome::Abort,
    });
    entry
}

/// A snapshot file that cannot be used; the log falls back to an older one or a scan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("producer-state snapshot at offset {offset} is unusable: {reason}")]
pub struct CorruptSnapshot {
    pub offset: Offset,
    pub reason: String,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    /// The snapshot's offset, for errors.
    offset: Offset,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], CorruptSnapshot> {
        let end = self.at + N;
        let Some(slice) = self.bytes.get(self.at..end) else {
            return Err(CorruptSnapshot {
                offset: self.offset,
                reason: format!("truncated: {} bytes, needed {end}", self.bytes.len()),
            });
        };
        self.at = end;
        Ok(slice.try_into().expect("N bytes"))
    }
}

pub fn snapshot_file_name(offset: Offset) -> String {
    segment_file_name(offset, SNAPSHOT_EXTENSION)
}

/// Parses `<20 digits>.<extension>` back into an offset.
fn parse_offset_file_name(name: &str, extension: &str) -> Option<Offset> {
    let digits = name.strip_suffix(extension)?.strip_suffix('.')?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Offset)
}

pub fn parse_snapshot_file_name(name: &str) -> Option<Offset> {
    parse_offset_file_name(name, SNAPSHOT_EXTENSION)
}

/// The producer-state snapshot files of one partition directory, by offset.
#[derive(Debug)]
pub struct SnapshotFiles {
    dir: PathBuf,
    offsets: BTreeSet<Offset>,
    /// Temporary files a crash left mid-write, deleted by the first cleanup.
    temporaries: Vec<String>,
}

impl SnapshotFiles {
    /// The snapshots among the entry `names` of `dir`.
    pub fn from_names(dir: &Path, names: &[String]) -> SnapshotFiles {
        SnapshotFiles {
            dir: dir.to_path_buf(),
            offsets: names.iter().filter_map(|n| parse_snapshot_file_name(n)).collect(),
            temporaries: names
                .iter()
                .filter(|n| parse_offset_file_name(n, TEMPORARY_EXTENSION).is_some())
                .cloned()
                .collect(),
        }
    }

    pub fn offsets(&self) -> impl DoubleEndedIterator<Item = Offset> + '_ {
        self.offsets.iter().copied()
    }

    pub fn contains(&self, offset: Offset) -> bool {
        self.offsets.contains(&offset)
    }

    fn path(&self, offset: Offset) -> PathBuf {
        self.dir.join(snapshot_file_name(offset))
    }

    /// Writes `state` as the snapshot at `offset`, durably. Every batch below
    /// `offset` must be durable already (see the crash story in the module doc).
    pub async fn write<S: Storage>(&mut self, storage: &S, state: &ProducerStateManager, offset: Offset) -> Result<()> {
        storage.write_file_atomic(&self.path(offset), &state.encode_snapshot(offset)).await?;
        self.offsets.insert(offset);
        Ok(())
    }

    /// Deletes the snapshots for which `doomed` holds, and leftover temporary files.
    /// Returns whether anything was deleted; the caller syncs the directory.
    pub async fn remove_where<S: Storage>(
        &mut self,
        storage: &S,
        mut doomed: impl FnMut(Offset) -> bool,
    ) -> Result<bool> {
        let mut removed = false;
        for name in std::mem::take(&mut self.temporaries) {
            storage.remove_file(&self.dir.join(name)).await?;
            removed = true;
        }
        let victims: Vec<Offset> = self.offsets.iter().copied().filter(|o| doomed(*o)).collect();
        for offset in victims {
            storage.remove_file(&self.path(offset)).await?;
            self.offsets.remove(&offset);
            removed = true;
        }
        Ok(removed)
    }

    /// The newest usable snapshot at or below `at_most`, and its offset. Damaged ones
    /// met on the way are deleted (the caller syncs the directory), so the next open
    /// does not read them again.
    pub async fn load_newest<S: Storage>(
        &mut self,
        storage: &S,
        partition: &TopicPartition,
        at_most: Offset,
    ) -> Result<Option<(Offset, ProducerStateManager)>> {
        let candidates: Vec<Offset> = self.offsets.range(..=at_most).rev().copied().collect();
        for offset in candidates {
            let path = self.path(offset);
            let decoded = match storage.read_file(&path).await? {
                Some(bytes) => ProducerStateManager::decode_snapshot(partition.clone(), offset, &bytes),
                None => Err(CorruptSnapshot { offset, reason: "the file vanished".to_string() }),
            };
            match decoded {
                Ok(state) => return Ok(Some((offset, state))),
                Err(corrupt) => {
                    tracing::warn!("partition {partition}: {corrupt}; deleting it and falling back to an older one");
                    if storage.exists(&path).await? {
                        storage.remove_file(&path).await?;
                    }
                    self.offsets.remove(&offset);
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{self, BatchProducer, RecordSpec};
    use crate::types::{PartitionId, TopicName};

    const T0: TimestampMs = TimestampMs(1_700_000_000_000);

    fn data(header: &BatchHeader) -> StoredBatch<'_> {
        StoredBatch { header, marker: None }
    }

    fn partition() -> TopicPartition {
        TopicPartition::new(TopicName::new("idempotent").expect("valid"), PartitionId(3))
    }

    /// The stamped header of a batch of `records` records from producer `id`.
    fn header(id: i64, epoch: i16, base_sequence: i32, records: usize, base_offset: i64) -> BatchHeader {
        let specs = vec![RecordSpec { key: None, value: Some(b"v"), timestamp_delta_ms: 0 }; records];
        let producer = BatchProducer { producer_id: ProducerId(id), producer_epoch: epoch, base_sequence };
        let mut bytes = batch::build_batch(T0, producer, &specs);
        batch::stamp(&mut bytes, Offset(base_offset), crate::types::LeaderEpoch(0));
        batch::validate(&bytes).expect("valid")
    }

    /// A tiny partition: the state plus the log end, appending like the log does.
    struct Partition {
        state: ProducerStateManager,
        end: i64,
    }

    impl Partition {
        fn new() -> Partition {
            Partition { state: ProducerStateManager::new(partition()), end: 0 }
        }

        /// Sends one batch; on `Append`, stores it at the end.
        fn send(&mut self, id: i64, epoch: i16, base_sequence: i32, records: usize) -> Result<Sent> {
            let header = header(id, epoch, base_sequence, records, self.end);
            match self.state.check([data(&header)], T0)? {
                Admission::Append(update) => {
                    self.state.apply(update);
                    self.end = header.last_offset().0 + 1;
                    Ok(Sent::Appended(header.base_offset))
                }
                Admission::Duplicate(original) => Ok(Sent::Duplicate(original.base_offset)),
            }
        }

        fn last_sequence(&self, id: i64) -> Sequence {
            self.state.entry(ProducerId(id)).expect("known").last_batch().expect("a batch").last_sequence
        }
    }

    #[derive(Debug, PartialEq, Eq)]
    enum Sent {
        Appended(Offset),
        Duplicate(Offset),
    }

    #[test]
    fn in_sequence_batches_append_and_a_retry_is_a_duplicate_with_the_original_offsets() {
        let mut p = Partition::new();
        assert_eq!(p.send(7, 0, 0, 3).expect("first"), Sent::Appended(Offset(0)));
        assert_eq!(p.send(7, 0, 3, 2).expect("next"), Sent::Appended(Offset(3)));
        assert_eq!(p.last_sequence(7), Sequence(4));
        // Each of the two batches, retried, is found where it went.
        assert_eq!(p.send(7, 0, 0, 3).expect("retry"), Sent::Duplicate(Offset(0)));
        assert_eq!(p.send(7, 0, 3, 2).expect("retry"), Sent::Duplicate(Offset(3)));
        assert_eq!(p.end, 5, "a duplicate writes nothing");
        // A different producer has its own sequences.
        assert_eq!(p.send(8, 0, 0, 1).expect("other producer"), Sent::Appended(Offset(5)));
        // Non-idempotent batches bypass everything.
        let plain = header(-1, -1, -1, 2, p.end);
        assert!(matches!(p.state.check([data(&plain)], T0), Ok(Admission::Append(_))));
    }

    #[test]
    fn a_gap_or_a_stale_sequence_is_out_of_order() {
        let mut p = Partition::new();
        p.send(7, 0, 0, 2).expect("first");
        match p.send(7, 0, 5, 1) {
            Err(EngineError::OutOfOrderSequence { expected_sequence, last_sequence, base_sequence, .. }) => {
                assert_eq!((expected_sequence, last_sequence, base_sequence), (Sequence(2), Sequence(1), Sequence(5)));
            }
            other => panic!("a gap must be out of order, got {other:?}"),
        }
        // Same base sequence as a cached batch but another length: not a retry.
        assert!(matches!(p.send(7, 0, 0, 1), Err(EngineError::OutOfOrderSequence { .. })));
        assert_eq!(p.end, 2, "nothing written");
        let error = p.send(7, 0, 9, 1).expect_err("gap");
        let message = error.to_string();
        for needle in ["idempotent-3", "producer 7", "epoch 0", "base sequence 9", "expected sequence is 2"] {
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        }
    }

    #[test]
    fn an_older_epoch_is_fenced_and_a_newer_one_starts_at_zero() {
        let mut p = Partition::new();
        p.send(7, 2, 0, 1).expect("epoch 2");
        match p.send(7, 1, 1, 1) {
            Err(EngineError::InvalidProducerEpoch { epoch, current_epoch, producer_id, .. }) => {
                assert_eq!((epoch, current_epoch, producer_id), (ProducerEpoch(1), ProducerEpoch(2), ProducerId(7)));
            }
            other => panic!("an older epoch must be fenced, got {other:?}"),
        }
        // Even a batch that matches a cached one's sequences is fenced when its epoch is old.
        assert!(matches!(p.send(7, 1, 0, 1), Err(EngineError::InvalidProducerEpoch { .. })));
        // A new epoch must start at sequence 0.
        match p.send(7, 3, 1, 1) {
            Err(EngineError::OutOfOrderSequence { expected_sequence, current_epoch, .. }) => {
                assert_eq!((expected_sequence, current_epoch), (Sequence(0), ProducerEpoch(2)));
            }
            other => panic!("a new epoch must start at 0, got {other:?}"),
        }
        assert_eq!(p.send(7, 3, 0, 2).expect("new epoch"), Sent::Appended(Offset(1)));
        // The old epoch's batches are no longer duplicates: old epoch is fenced now.
        assert!(matches!(p.send(7, 2, 0, 1), Err(EngineError::InvalidProducerEpoch { .. })));
        assert_eq!(p.send(7, 3, 0, 2).expect("retry"), Sent::Duplicate(Offset(1)));
        assert_eq!(p.state.entry(ProducerId(7)).expect("known").batches().len(), 1, "the new epoch starts a new cache");
    }

    #[test]
    fn an_unknown_producer_is_accepted_at_any_sequence_and_epoch() {
        let mut p = Partition::new();
        assert_eq!(p.send(9, 4, 1234, 2).expect("unknown producer"), Sent::Appended(Offset(0)));
        assert_eq!(p.send(9, 4, 1236, 1).expect("then in sequence"), Sent::Appended(Offset(2)));
        assert!(matches!(p.send(9, 4, 1240, 1), Err(EngineError::OutOfOrderSequence { .. })));
    }

    #[test]
    fn a_negative_sequence_with_a_producer_id_is_invalid() {
        let mut p = Partition::new();
        assert!(matches!(p.send(9, 0, -1, 1), Err(EngineError::InvalidSequence { .. })));
        assert!(p.state.is_empty());
    }

    #[test]
    fn sequences_wrap_around_after_i32_max() {
        let mut p = Partition::new();
        p.send(7, 0, i32::MAX - 2, 2).expect("near the top");
        assert_eq!(p.last_sequence(7), Sequence(i32::MAX - 1));
        // A batch that crosses the top: last sequence wraps.
        p.send(7, 0, i32::MAX, 3).expect("across the top");
        assert_eq!(p.last_sequence(7), Sequence(1));
        assert_eq!(p.send(7, 0, 2, 1).expect("after the wrap"), Sent::Appended(Offset(5)));
        assert_eq!(p.send(7, 0, i32::MAX, 3).expect("retry across the top"), Sent::Duplicate(Offset(2)));
        // Exactly at the top, the next is 0.
        let mut q = Partition::new();
        q.send(8, 0, i32::MAX, 1).expect("the top");
        assert_eq!(q.send(8, 0, 0, 1).expect("wraps to 0"), Sent::Appended(Offset(1)));
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut p = Partition::new();
        for i in 0..6 {
            p.send(7, 0, i, 1).expect("in sequence");
        }
        let cached: Vec<Sequence> =
            p.state.entry(ProducerId(7)).expect("known").batches().map(|b| b.base_sequence).collect();
        assert_eq!(cached, (1..6).map(Sequence).collect::<Vec<_>>());
        for i in 1..6 {
            assert_eq!(p.send(7, 0, i, 1).expect("cached"), Sent::Duplicate(Offset(i as i64)));
        }
        // The sixth oldest was evicted: its retry is now out of order, not a duplicate.
        assert!(matches!(p.send(7, 0, 0, 1), Err(EngineError::OutOfOrderSequence { .. })));
    }

    #[test]
    fn a_record_set_is_checked_batch_by_batch_and_applies_only_when_told() {
        let p = Partition::new();
        let first = header(7, 0, 0, 2, 0);
        let second = header(7, 0, 2, 1, 2);
        let Admission::Append(update) = p.state.check([data(&first), data(&second)], T0).expect("in sequence") else {
            panic!("expected an append")
        };
        assert!(p.state.is_empty(), "check changes nothing");
        let gap = header(7, 0, 4, 1, 3);
        assert!(matches!(p.state.check([data(&first), data(&gap)], T0), Err(EngineError::OutOfOrderSequence { .. })));
        let mut state = p.state.clone();
        state.apply(update);
        assert_eq!(state.entry(ProducerId(7)).expect("known").batches().len(), 2);
        // A set with a retry anywhere is answered by the first duplicate and not written.
        let third = header(7, 0, 3, 1, 3);
        match state.check([data(&third), data(&second)], T0).expect("duplicate") {
            Admission::Duplicate(original) => assert_eq!(original.base_offset, Offset(2)),
            other => panic!("expected the duplicate, got {other:?}"),
        }
    }

    #[test]
    fn replay_from_headers_rebuilds_the_state_of_appends() {
        let mut p = Partition::new();
        let mut headers = Vec::new();
        let sends = [(7, 0, 0, 2), (8, 1, 10, 1), (7, 0, 2, 3), (7, 1, 0, 1), (8, 1, 11, 2)];
        for (id, epoch, sequence, records) in sends {
            headers.push(header(id, epoch, sequence, records, p.end));
            p.send(id, epoch, sequence, records).expect("append");
        }
        headers.push(header(-1, -1, -1, 1, p.end));
        let mut rebuilt = ProducerStateManager::new(partition());
        for header in &headers {
            rebuilt.replay(data(header));
        }
        // The batch's max timestamp stands in for the clock, which here was T0 as well.
        assert_eq!(rebuilt, p.state);
    }

    #[test]
    fn snapshots_round_trip_and_every_damage_is_detected() {
        let mut p = Partition::new();
        for i in 0..7 {
            p.send(7, 0, i * 2, 2).expect("producer 7");
            p.send(100 + i as i64, i as i16, 0, 1).expect("another producer");
        }
        let offset = Offset(p.end);
        let bytes = p.state.encode_snapshot(offset);
        assert_eq!(ProducerStateManager::decode_snapshot(partition(), offset, &bytes), Ok(p.state.clone()));
        let empty = ProducerStateManager::new(partition());
        let empty_bytes = empty.encode_snapshot(Offset(0));
        assert_eq!(empty_bytes.len(), SNAPSHOT_HEADER_BYTES);
        assert_eq!(ProducerStateManager::decode_snapshot(partition(), Offset(0), &empty_bytes), Ok(empty));
        assert!(ProducerStateManager::decode_snapshot(partition(), Offset(1), &bytes).is_err(), "wrong name");
        for cut in 0..bytes.len() {
            assert!(ProducerStateManager::decode_snapshot(partition(), offset, &bytes[..cut]).is_err(), "cut at {cut}");
        }
        for byte in 0..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.clone();
                flipped[byte] ^= 1 << bit;
                assert!(
                    ProducerStateManager::decode_snapshot(partition(), offset, &flipped).is_err(),
                    "flip at byte {byte} bit {bit} not detected"
                );
            }
        }
    }
}

#[cfg(test)]
mod txn_tests {
    use super::*;
    use crate::batch::{self, BatchProducer, RecordSpec};
    use crate::types::{PartitionId, TopicName};
    use proptest::prelude::*;

    const T0: TimestampMs = TimestampMs(1_700_000_000_000);

    fn partition() -> TopicPartition {
        TopicPartition::new(TopicName::new("transactions").expect("valid"), PartitionId(0))
    }

    /// A partition's producer state with its log end, appending as the log does.
    struct Partition {
        state: ProducerStateManager,
        end: i64,
        /// Every stored batch, header and marker, for replays.
        stored: Vec<(BatchHeader, Option<TxnMarker>)>,
        aborted: Vec<AbortedTxn>,
    }

    impl Partition {
        fn new() -> Partition {
            Partition { state: ProducerStateManager::new(partition()), end: 0, stored: Vec::new(), aborted: Vec::new() }
        }

        fn append(&mut self, mut bytes: Vec<u8>) -> Result<Offset> {
            batch::stamp(&mut bytes, Offset(self.end), crate::types::LeaderEpoch(0));
            let header = batch::validate(&bytes).expect("valid");
            let marker = batch::txn_marker(&bytes);
            match self.state.check([StoredBatch { header: &header, marker }], T0)? {
                Admission::Append(update) => {
                    self.aborted.extend(self.state.apply(update));
                    self.end = header.last_offset().0 + 1;
                    self.stored.push((header, marker));
                    Ok(header.base_offset)
                }
                Admission::Duplicate(original) => Ok(original.base_offset),
            }
        }

        fn data(&mut self, id: i64, epoch: i16, sequence: i32, records: usize, transactional: bool) -> Result<Offset> {
            let specs = vec![RecordSpec { key: None, value: Some(b"v"), timestamp_delta_ms: 0 }; records];
            let producer =
                BatchProducer { producer_id: ProducerId(id), producer_epoch: epoch, base_sequence: sequence };
            let bytes = match transactional {
                true => batch::build_transactional_batch(T0, producer, &specs),
                false => batch::build_batch(T0, producer, &specs),
            };
            self.append(bytes)
        }

        fn end_txn(&mut self, id: i64, epoch: i16, outcome: TxnOutcome) -> Result<Offset> {
            let marker = TxnMarker { outcome, coordinator_epoch: 3 };
            self.append(batch::build_marker_batch(T0, ProducerId(id), ProducerEpoch(epoch), marker))
        }

        fn replayed(&self) -> (ProducerStateManager, Vec<AbortedTxn>) {
            let mut state = ProducerStateManager::new(partition());
            let mut aborted = Vec::new();
            for (header, marker) in &self.stored {
                aborted.extend(state.replay(StoredBatch { header, marker: *marker }));
            }
            (state, aborted)
        }
    }

    #[test]
    fn a_transaction_holds_the_first_unstable_offset_until_its_marker_is_below_the_high_watermark() {
        let mut p = Partition::new();
        p.data(1, 0, 0, 2, false).expect("idempotent, not transactional");
        assert_eq!(p.state.first_unstable_offset(Offset(2)), None);
        assert_eq!(p.data(7, 0, 0, 2, true).expect("txn 7"), Offset(2));
        p.data(8, 0, 0, 1, true).expect("txn 8 at 4");
        p.data(7, 0, 2, 1, true).expect("txn 7 goes on at 5");
        assert_eq!(p.state.entry(ProducerId(7)).and_then(|e| e.txn_first_offset()), Some(Offset(2)));
        assert_eq!(p.state.first_unstable_offset(Offset(6)), Some(Offset(2)));
        // Producer 7 aborts at 6: 8's transaction, open since 4, is the last stable offset.
        assert_eq!(p.end_txn(7, 0, TxnOutcome::Abort).expect("abort"), Offset(6));
        let abort = AbortedTxn {
            producer_id: ProducerId(7),
            first_offset: Offset(2),
            last_offset: Offset(6),
            last_stable_offset: Offset(4),
        };
        assert_eq!(p.aborted, vec![abort]);
        // Completed, but its marker is not below the high watermark yet.
        assert_eq!(p.state.first_unstable_offset(Offset(6)), Some(Offset(2)));
        assert_eq!(p.state.first_unstable_offset(Offset(7)), Some(Offset(4)));
        p.state.forget_replicated(Offset(7));
        // 8 commits at 7: no abort; everything is stable once the high watermark passes 7.
        p.end_txn(8, 0, TxnOutcome::Commit).expect("commit");
        assert_eq!(p.aborted.len(), 1);
        assert_eq!(p.state.first_unstable_offset(Offset(7)), Some(Offset(4)));
        assert_eq!(p.state.first_unstable_offset(Offset(8)), None);
        // A replay of the same batches ends in the same state, with the same aborts.
        let (replayed, aborted) = p.replayed();
        assert_eq!(aborted, p.aborted);
        assert_eq!(replayed.first_unstable_offset(Offset(8)), None);
        assert_eq!(replayed.producers, p.state.producers);
    }

    #[test]
    fn an_abort_with_no_other_transaction_open_is_stable_past_its_marker() {
        let mut p = Partition::new();
        p.data(7, 0, 0, 3, true).expect("txn");
        p.end_txn(7, 0, TxnOutcome::Abort).expect("abort at 3");
        let abort = p.aborted[0];
        assert_eq!(
            (abort.first_offset, abort.last_offset, abort.last_stable_offset),
            (Offset(0), Offset(3), Offset(4))
        );
        // A marker with no transaction open completes an empty one at itself, as in Kafka.
        p.end_txn(7, 0, TxnOutcome::Abort).expect("second abort at 4");
        assert_eq!((p.aborted[1].first_offset, p.aborted[1].last_offset), (Offset(4), Offset(4)));
    }

    #[test]
    fn markers_and_batches_of_a_fenced_epoch_are_refused_and_a_new_epochs_marker_resets_sequences() {
        let mut p = Partition::new();
        p.data(7, 1, 0, 2, true).expect("txn at epoch 1");
        assert!(matches!(p.end_txn(7, 0, TxnOutcome::Commit), Err(EngineError::InvalidProducerEpoch { .. })));
        assert!(matches!(p.data(7, 0, 2, 1, true), Err(EngineError::InvalidProducerEpoch { .. })));
        assert_eq!(p.end, 2, "nothing written");
        // Not transactional while the transaction is open.
        assert!(matches!(p.data(7, 1, 2, 1, false), Err(EngineError::InvalidTxnState { .. })));
        // The coordinator aborts with a bumped epoch: the producer is at epoch 2, no batches.
        p.end_txn(7, 2, TxnOutcome::Abort).expect("abort at epoch 2");
        let entry = p.state.entry(ProducerId(7)).expect("known");
        assert_eq!((entry.epoch(), entry.batches().len(), entry.txn_first_offset()), (ProducerEpoch(2), 0, None));
        assert!(matches!(p.data(7, 2, 5, 1, true), Err(EngineError::OutOfOrderSequence { .. })));
        assert_eq!(p.data(7, 2, 0, 1, true).expect("sequence 0 of epoch 2"), Offset(3));
        // A marker for a producer never seen here completes an empty transaction.
        p.end_txn(9, 0, TxnOutcome::Commit).expect("unknown producer's marker");
        assert_eq!(p.state.entry(ProducerId(9)).map(|e| e.batches().len()), Some(0));
    }

    #[test]
    fn active_producers_report_epoch_last_sequence_and_open_transaction() {
        let mut p = Partition::new();
        p.data(1, 0, 0, 3, false).expect("idempotent: sequences 0-2");
        p.data(7, 0, 0, 2, true).expect("open txn at 3");
        p.data(8, 3, 0, 1, true).expect("txn at 5");
        p.end_txn(8, 4, TxnOutcome::Abort).expect("abort with a bump: no batches left");
        let active = |id: i64, epoch: i16, last_sequence: Option<i32>, txn_start: Option<i64>| ActiveProducer {
            producer_id: ProducerId(id),
            epoch: ProducerEpoch(epoch),
            last_sequence: last_sequence.map(Sequence),
            last_timestamp: last_sequence.map(|_| T0),
            current_txn_start_offset: txn_start.map(Offset),
        };
        assert_eq!(
            p.state.active_producers(),
            vec![active(1, 0, Some(2), None), active(7, 0, Some(1), Some(3)), active(8, 4, None, None)]
        );
    }

    #[test]
    fn snapshots_keep_open_transactions_and_version_1_is_still_read() {
        let mut p = Partition::new();
        p.data(1, 0, 0, 2, false).expect("idempotent");
        p.data(7, 0, 0, 2, true).expect("open txn at 2");
        p.data(8, 3, 0, 1, true).expect("txn");
        p.end_txn(8, 4, TxnOutcome::Abort).expect("abort with a bump: no batches left");
        let offset = Offset(p.end);
        let bytes = p.state.encode_snapshot(offset);
        crate::check_golden("producer-state-v2.snapshot", &bytes);
        let decoded = ProducerStateManager::decode_snapshot(partition(), offset, &bytes).expect("decodes");
        assert_eq!(decoded.producers, p.state.producers);
        assert_eq!(decoded.ongoing_transactions().collect::<Vec<_>>(), vec![(Offset(2), ProducerId(7))]);
        assert_eq!(decoded.first_unstable_offset(offset), Some(Offset(2)));
        for cut in 0..bytes.len() {
            assert!(ProducerStateManager::decode_snapshot(partition(), offset, &bytes[..cut]).is_err(), "cut at {cut}");
        }
        // A version 1 file, as the engine wrote before transactions: producer 1 at
        // epoch 0, one batch of sequences 0..=1 at offsets 0..=1, as of offset 2.
        let v1 =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/src/golden/producer-state-v1.snapshot")).expect("v1");
        let state = ProducerStateManager::decode_snapshot(partition(), Offset(2), &v1).expect("version 1 decodes");
        let entry = state.entry(ProducerId(1)).expect("producer 1");
        assert_eq!((entry.epoch(), entry.txn_first_offset()), (ProducerEpoch(0), None));
        let batch = *entry.last_batch().expect("its batch");
        assert_eq!(
            (batch.base_sequence, batch.last_sequence, batch.base_offset, batch.last_offset),
            (Sequence(0), Sequence(1), Offset(0), Offset(1))
        );
    }

    /// One step of the model test.
    #[derive(Debug, Clone)]
    enum Step {
        /// A transactional batch of `records` from producer `producer`.
        Data {
            producer: usize,
            records: usize,
        },
        End {
            producer: usize,
            commit: bool,
        },
        /// The high watermark moves to the log end.
        Replicate,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0..3usize, 1..4usize).prop_map(|(producer, records)| Step::Data { producer, records }),
            2 => (0..3usize, any::<bool>()).prop_map(|(producer, commit)| Step::End { producer, commit }),
            1 => Just(Step::Replicate),
        ]
    }

    /// The model: per producer its open transaction's first offset; the completed
    /// transactions (first, last, aborted); the high watermark.
    #[derive(Default)]
    struct Model {
        open: [Option<i64>; 3],
        completed: Vec<(i64, i64, i64, bool)>,
        high_watermark: i64,
    }

    impl Model {
        fn first_unstable(&self) -> Option<i64> {
            let open = self.open.iter().flatten().copied();
            let pending = self.completed.iter().filter(|c| c.2 >= self.high_watermark).map(|c| c.1);
            open.chain(pending).min()
        }
    }

    proptest! {
        #[test]
        fn transactions_of_several_producers_against_a_model(steps in proptest::collection::vec(step(), 1..60)) {
            let mut p = Partition::new();
            let mut model = Model::default();
            let mut sequences = [0i32; 3];
            let mut expected_aborts = Vec::new();
            for step in steps {
                match step {
                    Step::Data { producer, records } => {
                        let at = p.data(100 + producer as i64, 0, sequences[producer], records, true).expect("in sequence");
                        sequences[producer] += records as i32;
                        model.open[producer].get_or_insert(at.0);
                    }
                    Step::End { producer, commit } => {
                        let outcome = if commit { TxnOutcome::Commit } else { TxnOutcome::Abort };
                        let at = p.end_txn(100 + producer as i64, 0, outcome).expect("marker").0;
                        let first = model.open[producer].take().unwrap_or(at);
                        if !commit {
                            // The oldest transaction of another producer still open, else past the marker.
                            let others = model.open.iter().enumerate().filter(|(i, _)| *i != producer);
                            let last_stable = others.filter_map(|(_, o)| *o).min().unwrap_or(at + 1);
                            expected_aborts.push(AbortedTxn {
                                producer_id: ProducerId(100 + producer as i64),
                                first_offset: Offset(first),
                                last_offset: Offset(at),
                                last_stable_offset: Offset(last_stable),
                            });
                        }
                        model.completed.push((producer as i64, first, at, !commit));
                    }
                    Step::Replicate => {
                        model.high_watermark = p.end;
                        p.state.forget_replicated(Offset(p.end));
                    }
                }
                let high_watermark = Offset(model.high_watermark);
                prop_assert_eq!(p.state.first_unstable_offset(high_watermark).map(|o| o.0), model.first_unstable());
                prop_assert_eq!(&p.aborted, &expected_aborts);
            }
            let (replayed, aborted) = p.replayed();
            prop_assert_eq!(&aborted, &expected_aborts);
            prop_assert_eq!(&replayed.producers, &p.state.producers);
            let end = Offset(p.end);
            let snapshot = ProducerStateManager::decode_snapshot(partition(), end, &p.state.encode_snapshot(end)).expect("decodes");
            let open: Vec<i64> = model.open.iter().flatten().copied().collect();
            prop_assert_eq!(snapshot.first_unstable_offset(end).map(|o| o.0), open.iter().copied().min());
        }
    }
}
