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
//! Limits:
//! - Transactions are not supported: transactional data batches are sequenced like
//!   any idempotent batch; control batches (transaction markers) are ignored.
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
//!      0     2  version             1
//!      2     4  crc                 CRC32C of bytes [6, end)
//!      6     8  offset              the state covers the batches below it; equals the file name
//!     14     4  producer_count
//!     18     …  producer_count entries, by ascending producer id:
//!                  8  producer_id
//!                  2  producer_epoch
//!                  1  batch_count     1..=5, then that many batches, oldest first:
//!                       4  base_sequence
//!                       4  last_sequence
//!                       8  base_offset
//!                       8  last_offset
//!                       8  log_append_time
//! ```
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

use crate::batch::BatchHeader;
use crate::error::{EngineError, Result};
use crate::segment::segment_file_name;
use crate::storage::Storage;
use crate::types::{Offset, ProducerEpoch, ProducerId, Sequence, TimestampMs, TopicPartition};

/// Batches remembered per producer for duplicate detection: Kafka's
/// `NUM_BATCHES_TO_RETAIN`, which is why a Kafka producer allows at most five
/// in-flight requests per connection when idempotence is on.
pub const BATCHES_PER_PRODUCER_MAX: usize = 5;

pub const SNAPSHOT_EXTENSION: &str = "snapshot";
/// The extension `Storage::write_file_atomic` gives its temporary file.
const TEMPORARY_EXTENSION: &str = "tmp";
const SNAPSHOT_VERSION: u16 = 1;
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

/// One producer's epoch and its last appended batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    epoch: ProducerEpoch,
    /// Oldest first; never empty, at most [`BATCHES_PER_PRODUCER_MAX`].
    batches: VecDeque<BatchMetadata>,
}

impl ProducerEntry {
    fn new(epoch: ProducerEpoch, first: BatchMetadata) -> ProducerEntry {
        ProducerEntry { epoch, batches: VecDeque::from([first]) }
    }

    pub fn epoch(&self) -> ProducerEpoch {
        self.epoch
    }

    /// The remembered batches, oldest first.
    pub fn batches(&self) -> impl ExactSizeIterator<Item = &BatchMetadata> {
        self.batches.iter()
    }

    pub fn last_batch(&self) -> &BatchMetadata {
        self.batches.back().expect("a producer entry always holds a batch")
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
        if epoch != self.epoch {
            self.batches.clear();
            self.epoch = epoch;
        }
        if self.batches.len() == BATCHES_PER_PRODUCER_MAX {
            self.batches.pop_front();
        }
        self.batches.push_back(batch);
    }
}

/// What to do with an incoming record set, per [`ProducerStateManager::check`].
#[derive(Debug)]
pub enum Admission {
    /// Write it; once written, hand the update to [`ProducerStateManager::apply`].
    Append(PendingUpdate),
    /// A retry of this already appended batch: write nothing, answer with it.
    Duplicate(BatchMetadata),
}

/// The producer entries an admitted record set changes, to install once it is written.
#[derive(Debug, Default)]
pub struct PendingUpdate {
    entries: BTreeMap<ProducerId, ProducerEntry>,
}

/// The idempotent producers of one partition. Owned by the partition's log (one
/// shard); it does no IO itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerStateManager {
    partition: TopicPartition,
    producers: BTreeMap<ProducerId, ProducerEntry>,
}

impl ProducerStateManager {
    pub fn new(partition: TopicPartition) -> ProducerStateManager {
        ProducerStateManager { partition, producers: BTreeMap::new() }
    }

    pub fn entry(&self, producer_id: ProducerId) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Every known producer, by ascending id.
    pub fn producers(&self) -> impl Iterator<Item = (ProducerId, &ProducerEntry)> {
        self.producers.iter().map(|(id, entry)| (*id, entry))
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
    }

    /// Classifies a record set whose batches are stamped with the offsets they would
    /// get. Changes nothing: an error or a duplicate leaves the state as it was, and
    /// so does a failed write of an admitted set, as long as the caller drops the
    /// [`PendingUpdate`] instead of applying it.
    pub fn check<'a>(
        &self,
        headers: impl IntoIterator<Item = &'a BatchHeader>,
        log_append_time: TimestampMs,
    ) -> Result<Admission> {
        let mut update = PendingUpdate::default();
        for header in headers {
            let Some(batch) = ProducerBatch::from_header(header, log_append_time) else { continue };
            if batch.metadata.base_sequence.0 < 0 {
                return Err(EngineError::InvalidSequence {
                    partition: self.partition.clone(),
                    producer_id: batch.producer_id,
                    base_sequence: batch.metadata.base_sequence,
                });
            }
            let committed = self.producers.get(&batch.producer_id);
            if let Some(original) = committed.and_then(|entry| entry.find_duplicate(&batch)) {
                return Ok(Admission::Duplicate(original));
            }
            let current = update.entries.get(&batch.producer_id).or(committed);
            self.check_next(current, &batch)?;
            let entry = match current {
                Some(current) => {
                    let mut entry = current.clone();
                    entry.add(batch.epoch, batch.metadata);
                    entry
                }
                None => ProducerEntry::new(batch.epoch, batch.metadata),
            };
            update.entries.insert(batch.producer_id, entry);
        }
        Ok(Admission::Append(update))
    }

    /// Whether `batch` may follow `current` (Kafka's `checkProducerEpoch` and
    /// `checkSequence` for a client's append).
    fn check_next(&self, current: Option<&ProducerEntry>, batch: &ProducerBatch) -> Result<()> {
        // Unknown producer: any epoch, any sequence (KIP-360; see the module doc).
        let Some(current) = current else { return Ok(()) };
        let last_sequence = current.last_batch().last_sequence;
        if batch.epoch < current.epoch {
            return Err(EngineError::InvalidProducerEpoch {
                partition: self.partition.clone(),
                producer_id: batch.producer_id,
                epoch: batch.epoch,
                current_epoch: current.epoch,
            });
        }
        let expected_sequence = if batch.epoch == current.epoch { last_sequence.next() } else { Sequence(0) };
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

    /// Installs the entries of a record set that is now written.
    pub fn apply(&mut self, update: PendingUpdate) {
        self.producers.extend(update.entries);
    }

    /// Replays a batch read back from the log (rebuild after open or truncation):
    /// no checks, as every stored batch passed them when it was appended (Kafka
    /// loads the log with `AppendOrigin.REPLICATION` the same way).
    pub fn replay(&mut self, header: &BatchHeader) {
        let Some(batch) = ProducerBatch::from_header(header, header.max_timestamp) else { return };
        match self.producers.get_mut(&batch.producer_id) {
            Some(entry) => entry.add(batch.epoch, batch.metadata),
            None => {
                self.producers.insert(batch.producer_id, ProducerEntry::new(batch.epoch, batch.metadata));
            }
        }
    }

    /// The snapshot file bytes of this state as of `offset` (see the module doc).
    pub fn encode_snapshot(&self, offset: Offset) -> Vec<u8> {
        let batches: usize = self.producers.values().map(|e| e.batches.len()).sum();
        let mut out =
            Vec::with_capacity(SNAPSHOT_HEADER_BYTES + self.producers.len() * 11 + batches * SNAPSHOT_BATCH_BYTES);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes()); // crc, filled below
        out.extend_from_slice(&offset.0.to_be_bytes());
        let count = u32::try_from(self.producers.len()).expect("fewer than 2^32 producers");
        out.extend_from_slice(&count.to_be_bytes());
        for (producer_id, entry) in &self.producers {
            out.extend_from_slice(&producer_id.0.to_be_bytes());
            out.extend_from_slice(&entry.epoch.0.to_be_bytes());
            assert!((1..=BATCHES_PER_PRODUCER_MAX).contains(&entry.batches.len()), "entry of producer {producer_id}");
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
        if version != SNAPSHOT_VERSION {
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
            let [batch_count] = reader.take::<1>()?;
            if producer_id.0 < 0 || producers.keys().next_back().is_some_and(|last| *last >= producer_id) {
                return Err(corrupt(format!("producer id {producer_id} out of order")));
            }
            if !(1..=BATCHES_PER_PRODUCER_MAX).contains(&(batch_count as usize)) {
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
            producers.insert(producer_id, ProducerEntry { epoch, batches });
        }
        if reader.at != bytes.len() {
            return Err(corrupt(format!("{} bytes follow the last producer", bytes.len() - reader.at)));
        }
        Ok(ProducerStateManager { partition, producers })
    }
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
            match self.state.check([&header], T0)? {
                Admission::Append(update) => {
                    self.state.apply(update);
                    self.end = header.last_offset().0 + 1;
                    Ok(Sent::Appended(header.base_offset))
                }
                Admission::Duplicate(original) => Ok(Sent::Duplicate(original.base_offset)),
            }
        }

        fn last_sequence(&self, id: i64) -> Sequence {
            self.state.entry(ProducerId(id)).expect("known").last_batch().last_sequence
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
        assert!(matches!(p.state.check([&plain], T0), Ok(Admission::Append(_))));
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
        let Admission::Append(update) = p.state.check([&first, &second], T0).expect("in sequence") else {
            panic!("expected an append")
        };
        assert!(p.state.is_empty(), "check changes nothing");
        let gap = header(7, 0, 4, 1, 3);
        assert!(matches!(p.state.check([&first, &gap], T0), Err(EngineError::OutOfOrderSequence { .. })));
        let mut state = p.state.clone();
        state.apply(update);
        assert_eq!(state.entry(ProducerId(7)).expect("known").batches().len(), 2);
        // A set with a retry anywhere is answered by the first duplicate and not written.
        let third = header(7, 0, 3, 1, 3);
        match state.check([&third, &second], T0).expect("duplicate") {
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
            rebuilt.replay(header);
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
