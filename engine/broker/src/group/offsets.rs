//! `__consumer_offsets`: committed offsets and group metadata as records in real
//! RecordBatch v2 batches, one partition per group ([`super::offsets_partition_for`]).
//!
//! Every record is an upsert (or, with a null value, a delete) of one key, so
//! replaying a partition from its log start yields the current state
//! ([`OffsetsStore`]) whatever was compacted away before it.
//!
//! ## Record layout
//!
//! Keys and values are big-endian. A string is an `i32` byte length and UTF-8 bytes,
//! length -1 for null; `bytes` are an `i32` length and the bytes.
//!
//! ```text
//! key, offset commit                      key, group metadata
//! offset  size  field                     offset  size  field
//!      0     2  key_type = 1                   0     2  key_type = 2
//!      2   4+G  group_id (string)              2   4+G  group_id (string)
//!    6+G   4+T  topic (string)
//!   10+G+T   4  partition
//!
//! value, offset commit (null: the offset was deleted)
//! offset  size  field
//!      0     2  value_version = 1
//!      2     8  committed_offset
//!     10     4  committed_leader_epoch (-1: none)
//!     14     8  commit_timestamp_ms (wall clock of the commit)
//!     22   4+M  metadata (string, nullable)
//!
//! value, group metadata (null: the group was deleted)
//! field                 type
//! value_version = 1     u16
//! protocol_type         string
//! generation            i32
//! protocol_name         string, nullable
//! leader                string, nullable
//! member_count          i32, then per member:
//!   member_id           string
//!   group_instance_id   string, nullable
//!   client_id           string
//!   client_host         string
//!   session_timeout_ms  i32
//!   rebalance_timeout_ms i32
//!   subscription        bytes (the member's metadata for the chosen protocol)
//!   assignment          bytes
//! ```
//!
//! Batches are uncompressed, written with producer id -1, one or more per append
//! (records are packed into batches of about [`BATCH_FILL_BYTES`]).
//!
//! ## Compaction
//!
//! The engine has no log compaction, so [`OffsetsLog`] compacts by snapshot: once
//! the partition has grown by the snapshot interval since the last snapshot, it
//! appends the whole current state of the partition's groups (one record per live
//! key) and then deletes the records before that snapshot (`delete_records` up to its
//! base offset). Replay from the new log start reads the snapshot and what came
//! after, which is the same state. A crash between the two steps leaves the old
//! records in place, which replay also turns into the same state. Only whole sealed
//! segments are freed, hence the topic's small `segment.bytes`.
//!
//! Records whose key or value does not decode (a client produced into the internal
//! topic, say) are skipped with a warning at replay; they never come from here.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{CommittedOffset, GenerationId, GroupId, MemberId};
use crate::cluster::replica_manager::{AcksAllError, LeaderSlot, ReplicaManager};
use corelog_engine::batch::{
    build_batch, build_transactional_batch, split_batches, txn_marker, BatchProducer, RecordSpec, TxnOutcome,
    BATCH_HEADER_BYTES,
};
use corelog_engine::error::{EngineError, Result};
use corelog_engine::log::AppendInfo;
use corelog_engine::shard::EngineHandle;
use corelog_engine::types::{
    LeaderEpoch, Offset, PartitionId, ProducerEpoch, ProducerId, Sequence, TimestampMs, TopicName, TopicPartition,
};

/// `max.message.bytes` of the offsets topic: one group's metadata record (all its
/// members' subscriptions and assignments) must fit in one batch.
pub const OFFSETS_BATCH_BYTES_MAX: usize = 16 << 20;
/// Records are packed into one batch until it holds about this many bytes.
pub const BATCH_FILL_BYTES: usize = 512 << 10;
/// Bytes asked of the engine per read while replaying.
const REPLAY_READ_BYTES_MAX: usize = 1 << 20;

const KEY_OFFSET_COMMIT: u16 = 1;
const KEY_GROUP_METADATA: u16 = 2;
const VALUE_VERSION: u16 = 1;

/// A member as a group metadata record stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    pub member_id: MemberId,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A group's membership as of its last completed generation (or its last empty one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    pub protocol_type: String,
    pub generation: GenerationId,
    pub protocol_name: Option<String>,
    pub leader: Option<MemberId>,
    pub members: Vec<MemberRecord>,
}

/// One record of the offsets topic; `None` values are deletes (tombstones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Offset { group_id: GroupId, partition: TopicPartition, value: Option<CommittedOffset> },
    Group { group_id: GroupId, value: Option<GroupRecord> },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record ends early: wanted {wanted} bytes at {at}, has {len}")]
    Truncated { at: usize, wanted: usize, len: usize },
    #[error("{0} bytes left after the record")]
    TrailingBytes(usize),
    #[error("unknown key type {0}")]
    UnknownKeyType(u16),
    #[error("unknown value version {0}")]
    UnknownValueVersion(u16),
    #[error("a string is not UTF-8")]
    NotUtf8,
    #[error("negative length {0}")]
    NegativeLength(i32),
    #[error("null where a value is required")]
    UnexpectedNull,
    #[error("invalid topic name {0:?}")]
    InvalidTopic(String),
    #[error("record without a key")]
    MissingKey,
    #[error("batch is compressed (attributes {0:#x}); the coordinator writes uncompressed batches")]
    Compressed(i16),
    #[error("malformed record in a batch")]
    MalformedBatch,
}

// ---- encoding ----

fn put_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_i32(out: &mut Vec<u8>, value: i32) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_i64(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn length_of(len: usize) -> i32 {
    i32::try_from(len).expect("offsets records are far smaller than 2 GiB")
}

fn put_str(out: &mut Vec<u8>, value: &str) {
    put_i32(out, length_of(value.len()));
    out.extend_from_slice(value.as_bytes());
}

fn put_nullable_str(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        None => put_i32(out, -1),
        Some(value) => put_str(out, value),
    }
}

fn put_bytes(out: &mut Vec<u8>, value: &[u8]) {
    put_i32(out, length_of(value.len()));
    out.extend_from_slice(value);
}

fn saturating_i32(ms: u64) -> i32 {
    i32::try_from(ms).unwrap_or(i32::MAX)
}

impl Record {
    pub fn group_id(&self) -> &GroupId {
        match self {
            Record::Offset { group_id, .. } | Record::Group { group_id, .. } => group_id,
        }
    }

    pub fn encode_key(&self) -> Vec<u8> {
        let mut key = Vec::with_capacity(64);
        match self {
            Record::Offset { group_id, partition, .. } => {
                put_u16(&mut key, KEY_OFFSET_COMMIT);
                put_str(&mut key, &group_id.0);
                put_str(&mut key, partition.topic.as_str());
                put_i32(&mut key, partition.partition.0);
            }
            Record::Group { group_id, .. } => {
                put_u16(&mut key, KEY_GROUP_METADATA);
                put_str(&mut key, &group_id.0);
            }
        }
        key
    }

    pub fn encode_value(&self) -> Option<Vec<u8>> {
        match self {
            Record::Offset { value: None, .. } | Record::Group { value: None, .. } => None,
            Record::Offset { value: Some(committed), .. } => {
                let mut value = Vec::with_capacity(32);
                put_u16(&mut value, VALUE_VERSION);
                put_i64(&mut value, committed.offset.0);
                put_i32(&mut value, committed.leader_epoch.0);
                put_i64(&mut value, committed.commit_timestamp_ms);
                put_nullable_str(&mut value, committed.metadata.as_deref());
                Some(value)
            }
            Record::Group { value: Some(group), .. } => {
                let mut value = Vec::with_capacity(128);
                put_u16(&mut value, VALUE_VERSION);
                put_str(&mut value, &group.protocol_type);
                put_i32(&mut value, group.generation.0);
                put_nullable_str(&mut value, group.protocol_name.as_deref());
                put_nullable_str(&mut value, group.leader.as_ref().map(|m| m.0.as_str()));
                put_i32(&mut value, length_of(group.members.len()));
                for member in &group.members {
                    put_str(&mut value, &member.member_id.0);
                    put_nullable_str(&mut value, member.group_instance_id.as_deref());
                    put_str(&mut value, &member.client_id);
                    put_str(&mut value, &member.client_host);
                    put_i32(&mut value, saturating_i32(member.session_timeout_ms));
                    put_i32(&mut value, saturating_i32(member.rebalance_timeout_ms));
                    put_bytes(&mut value, &member.subscription);
                    put_bytes(&mut value, &member.assignment);
                }
                Some(value)
            }
        }
    }

    pub fn decode(key: &[u8], value: Option<&[u8]>) -> std::result::Result<Record, RecordError> {
        let mut reader = Reader { bytes: key, at: 0 };
        let key_type = reader.u16()?;
        let group_id = GroupId(reader.string()?);
        let record = match key_type {
            KEY_OFFSET_COMMIT => {
                let topic = reader.string()?;
                let topic = TopicName::new(topic.clone()).map_err(|_| RecordError::InvalidTopic(topic))?;
                let partition = TopicPartition::new(topic, PartitionId(reader.i32()?));
                reader.finish()?;
                let value = value.map(decode_offset_value).transpose()?;
                Record::Offset { group_id, partition, value }
            }
            KEY_GROUP_METADATA => {
                reader.finish()?;
                let value = value.map(decode_group_value).transpose()?;
                Record::Group { group_id, value }
            }
            other => return Err(RecordError::UnknownKeyType(other)),
        };
        Ok(record)
    }
}

fn decode_offset_value(bytes: &[u8]) -> std::result::Result<CommittedOffset, RecordError> {
    let mut reader = Reader { bytes, at: 0 };
    let version = reader.u16()?;
    if version != VALUE_VERSION {
        return Err(RecordError::UnknownValueVersion(version));
    }
    let committed = CommittedOffset {
        offset: Offset(reader.i64()?),
        leader_epoch: LeaderEpoch(reader.i32()?),
        commit_timestamp_ms: reader.i64()?,
        metadata: reader.nullable_string()?,
    };
    reader.finish()?;
    Ok(committed)
}

fn decode_group_value(bytes: &[u8]) -> std::result::Result<GroupRecord, RecordError> {
    let mut reader = Reader { bytes, at: 0 };
    let version = reader.u16()?;
    if version != VALUE_VERSION {
        return Err(RecordError::UnknownValueVersion(version));
    }
    let protocol_type = reader.string()?;
    let generation = GenerationId(reader.i32()?);
    let protocol_name = reader.nullable_string()?;
    let leader = reader.nullable_string()?.map(MemberId);
    let count = reader.length()?;
    // Each member takes at least 32 bytes: bound the allocation by what is there.
    let mut members = Vec::with_capacity(count.min(bytes.len() / 32));
    for _ in 0..count {
        members.push(MemberRecord {
            member_id: MemberId(reader.string()?),
            group_instance_id: reader.nullable_string()?,
            client_id: reader.string()?,
            client_host: reader.string()?,
            session_timeout_ms: reader.i32()?.max(0) as u64,
            rebalance_timeout_ms: reader.i32()?.max(0) as u64,
            subscription: Bytes::copy_from_slice(reader.bytes()?),
            assignment: Bytes::copy_from_slice(reader.bytes()?),
        });
    }
    reader.finish()?;
    Ok(GroupRecord { protocol_type, generation, protocol_name, leader, members })
}

/// A bounds-checked big-endian reader.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, wanted: usize) -> std::result::Result<&'a [u8], RecordError> {
        let end = self.at.checked_add(wanted).filter(|end| *end <= self.bytes.len());
        let Some(end) = end else {
            return Err(RecordError::Truncated { at: self.at, wanted, len: self.bytes.len() });
        };
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> std::result::Result<[u8; N], RecordError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn u16(&mut self) -> std::result::Result<u16, RecordError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> std::result::Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> std::result::Result<i64, RecordError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn length(&mut self) -> std::result::Result<usize, RecordError> {
        let length = self.i32()?;
        usize::try_from(length).map_err(|_| RecordError::NegativeLength(length))
    }

    fn nullable_bytes(&mut self) -> std::result::Result<Option<&'a [u8]>, RecordError> {
        match self.i32()? {
            -1 => Ok(None),
            length if length < 0 => Err(RecordError::NegativeLength(length)),
            length => Ok(Some(self.take(length as usize)?)),
        }
    }

    fn bytes(&mut self) -> std::result::Result<&'a [u8], RecordError> {
        let length = self.length()?;
        self.take(length)
    }

    fn nullable_string(&mut self) -> std::result::Result<Option<String>, RecordError> {
        match self.nullable_bytes()? {
            None => Ok(None),
            Some(bytes) => std::str::from_utf8(bytes).map(|s| Some(s.to_string())).map_err(|_| RecordError::NotUtf8),
        }
    }

    fn string(&mut self) -> std::result::Result<String, RecordError> {
        self.nullable_string()?.ok_or(RecordError::UnexpectedNull)
    }

    fn finish(&self) -> std::result::Result<(), RecordError> {
        match self.bytes.len() - self.at {
            0 => Ok(()),
            left => Err(RecordError::TrailingBytes(left)),
        }
    }
}

// ---- batches ----

/// Encodes records as one or more uncompressed RecordBatch v2 batches (base offset
/// 0; the engine stamps offsets), packed up to about [`BATCH_FILL_BYTES`] each.
pub fn encode_batches(records: &[Record], timestamp: TimestampMs) -> Vec<u8> {
    let encoded: Vec<(Vec<u8>, Option<Vec<u8>>)> = records.iter().map(|r| (r.encode_key(), r.encode_value())).collect();
    let mut out = Vec::new();
    let mut start = 0;
    while start < encoded.len() {
        let mut end = start;
        let mut fill = 0;
        while end < encoded.len() && (end == start || fill < BATCH_FILL_BYTES) {
            fill += encoded[end].0.len() + encoded[end].1.as_ref().map_or(0, Vec::len) + 16;
            end += 1;
        }
        let specs: Vec<RecordSpec<'_>> = encoded[start..end]
            .iter()
            .map(|(key, value)| RecordSpec { key: Some(key), value: value.as_deref(), timestamp_delta_ms: 0 })
            .collect();
        out.extend_from_slice(&build_batch(timestamp, BatchProducer::default(), &specs));
        start = end;
    }
    out
}

/// Decodes every record of a read's batches, in order, into `apply`. A batch that
/// cannot be split (never the case for bytes the engine served) fails the whole
/// read; a record that does not decode is skipped with a warning.
pub fn decode_batches(bytes: &[u8], partition: &TopicPartition, apply: impl FnMut(Record)) -> Result<usize> {
    decode_keyed_batches(bytes, partition, Record::decode, apply)
}

/// Decodes every keyed record of a read's batches with `decode`, in order, into
/// `apply`; control batches are passed over. A batch that cannot be split fails the
/// whole read; a record without a key, or that does not decode, is skipped with a
/// warning. Returns how many were. For the records of an internal topic
/// (`__consumer_offsets`, `__transaction_state`).
pub(crate) fn decode_keyed_batches<T, E: std::fmt::Display>(
    bytes: &[u8],
    partition: &TopicPartition,
    decode: impl Fn(&[u8], Option<&[u8]>) -> std::result::Result<T, E>,
    mut apply: impl FnMut(T),
) -> Result<usize> {
    let mut skipped = 0;
    let batches = split_batches(bytes).map_err(EngineError::InvalidBatch)?;
    for (position, header) in batches {
        let batch = &bytes[position..position + header.size_bytes()];
        if header.is_control() {
            continue;
        }
        let result = for_each_record(batch, header.attributes, header.record_count, |key, value| {
            let decoded = match key {
                Some(key) => decode(key, value).map_err(|error| error.to_string()),
                None => Err("a record without a key".to_string()),
            };
            match decoded {
                Ok(record) => apply(record),
                Err(error) => {
                    skipped += 1;
                    tracing::warn!("{partition}: skipping a record in the batch at {}: {error}", header.base_offset);
                }
            }
        });
        if let Err(error) = result {
            skipped += header.record_count.max(0) as usize;
            tracing::warn!("{partition}: skipping the batch at {}: {error}", header.base_offset);
        }
    }
    Ok(skipped)
}

/// Applies a read's (or an append's) batches to `store` as replay does: plain
/// records at once, a transactional producer's records (TxnOffsetCommit) held
/// pending until that producer's COMMIT marker (applied) or ABORT marker (dropped),
/// as Kafka's `GroupMetadataManager` loads them. Returns the records skipped.
pub fn apply_batches(bytes: &[u8], partition: &TopicPartition, store: &mut OffsetsStore) -> Result<usize> {
    let mut skipped = 0;
    let batches = split_batches(bytes).map_err(EngineError::InvalidBatch)?;
    for (position, header) in batches {
        let batch = &bytes[position..position + header.size_bytes()];
        if header.is_control() {
            if let Some(marker) = txn_marker(batch) {
                store.complete_txn(header.producer_id, marker.outcome == TxnOutcome::Commit);
            }
            continue;
        }
        let producer = header.is_transactional().then_some(header.producer_id);
        if producer.is_some() {
            let last = Sequence(header.base_sequence.0.wrapping_add(header.record_count.max(1) - 1));
            store.sequences.insert(header.producer_id, (header.producer_epoch, last));
        }
        let result = for_each_record(batch, header.attributes, header.record_count, |key, value| {
            match key.ok_or(RecordError::MissingKey).and_then(|key| Record::decode(key, value)) {
                Ok(record) => match producer {
                    Some(producer_id) => store.pending.entry(producer_id).or_default().push(record),
                    None => store.apply(record),
                },
                Err(error) => {
                    skipped += 1;
                    tracing::warn!("{partition}: skipping a record in the batch at {}: {error}", header.base_offset);
                }
            }
        });
        if let Err(error) = result {
            skipped += header.record_count.max(0) as usize;
            tracing::warn!("{partition}: skipping the batch at {}: {error}", header.base_offset);
        }
    }
    Ok(skipped)
}

fn get_varint(bytes: &[u8], at: &mut usize) -> std::result::Result<i64, RecordError> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at).ok_or(RecordError::MalformedBatch)?;
        *at += 1;
        value |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    Err(RecordError::MalformedBatch)
}

fn get_varbytes<'a>(bytes: &'a [u8], at: &mut usize) -> std::result::Result<Option<&'a [u8]>, RecordError> {
    let length = get_varint(bytes, at)?;
    if length < 0 {
        return Ok(None);
    }
    let end = at.checked_add(length as usize).filter(|end| *end <= bytes.len()).ok_or(RecordError::MalformedBatch)?;
    let slice = &bytes[*at..end];
    *at = end;
    Ok(Some(slice))
}

/// Walks the records of one uncompressed v2 batch: (key, value) of each.
pub(crate) fn for_each_record(
    batch: &[u8],
    attributes: i16,
    record_count: i32,
    mut visit: impl FnMut(Option<&[u8]>, Option<&[u8]>),
) -> std::result::Result<(), RecordError> {
    if attributes & 0x07 != 0 {
        return Err(RecordError::Compressed(attributes));
    }
    let mut at = BATCH_HEADER_BYTES;
    for _ in 0..record_count {
        let length = get_varint(batch, &mut at)?;
        let end = usize::try_from(length)
            .ok()
            .and_then(|length| at.checked_add(length))
            .filter(|end| *end <= batch.len())
            .ok_or(RecordError::MalformedBatch)?;
        let record = &batch[..end];
        let mut inner = at + 1; // record attributes
        get_varint(record, &mut inner)?; // timestamp delta
        get_varint(record, &mut inner)?; // offset delta
        let key = get_varbytes(record, &mut inner)?;
        let value = get_varbytes(record, &mut inner)?;
        let headers = get_varint(record, &mut inner)?;
        for _ in 0..headers.max(0) {
            get_varbytes(record, &mut inner)?;
            get_varbytes(record, &mut inner)?;
        }
        if inner != end {
            return Err(RecordError::MalformedBatch);
        }
        visit(key, value);
        at = end;
    }
    if at != batch.len() {
        return Err(RecordError::MalformedBatch);
    }
    Ok(())
}

// ---- the materialized state ----

/// What the offsets topic says about one group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredGroup {
    pub metadata: Option<GroupRecord>,
    pub offsets: BTreeMap<TopicPartition, CommittedOffset>,
}

/// The state of one offsets partition: the result of replaying its records in order.
/// Owned by the partition's writer, shared with its shard's coordinator (same
/// thread) for OffsetFetch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetsStore {
    groups: BTreeMap<GroupId, StoredGroup>,
    /// Transactional offset commits whose producer's marker is not written yet.
    pending: BTreeMap<ProducerId, Vec<Record>>,
    /// Each transactional producer's epoch and last sequence in this partition: the
    /// next TxnOffsetCommit batch continues it.
    sequences: BTreeMap<ProducerId, (ProducerEpoch, Sequence)>,
}

impl OffsetsStore {
    /// The marker of `producer_id`'s transaction is written to this partition: its
    /// pending offsets are applied (`commit`) or dropped. Returns how many.
    pub fn complete_txn(&mut self, producer_id: ProducerId, commit: bool) -> usize {
        let records = self.pending.remove(&producer_id).unwrap_or_default();
        let count = records.len();
        if commit {
            records.into_iter().for_each(|record| self.apply(record));
        }
        count
    }

    /// Whether some transaction's offsets wait for its marker (no snapshot may then
    /// delete their records).
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The partitions for which `group_id` has transactional offsets waiting for
    /// their producer's marker (OffsetFetch's `require_stable`).
    pub fn pending_partitions(&self, group_id: &GroupId) -> BTreeSet<TopicPartition> {
        let records = self.pending.values().flatten();
        records
            .filter_map(|record| match record {
                Record::Offset { group_id: id, partition, .. } if id == group_id => Some(partition.clone()),
                _ => None,
            })
            .collect()
    }

    /// The base sequence of `producer_id`'s next transactional batch here.
    pub fn next_sequence(&self, producer_id: ProducerId, epoch: ProducerEpoch) -> Sequence {
        match self.sequences.get(&producer_id) {
            Some((last_epoch, last)) if *last_epoch == epoch => last.next(),
            _ => Sequence(0),
        }
    }

    pub fn apply(&mut self, record: Record) {
        match record {
            Record::Offset { group_id, partition, value: Some(committed) } => {
                self.groups.entry(group_id).or_default().offsets.insert(partition, committed);
            }
            Record::Offset { group_id, partition, value: None } => {
                if let Some(group) = self.groups.get_mut(&group_id) {
                    group.offsets.remove(&partition);
                    self.forget_if_empty(&group_id);
                }
            }
            Record::Group { group_id, value: Some(metadata) } => {
                self.groups.entry(group_id).or_default().metadata = Some(metadata);
            }
            Record::Group { group_id, value: None } => {
                if let Some(group) = self.groups.get_mut(&group_id) {
                    group.metadata = None;
                    self.forget_if_empty(&group_id);
                }
            }
        }
    }

    fn forget_if_empty(&mut self, group_id: &GroupId) {
        if self.groups.get(group_id).is_some_and(|g| g.metadata.is_none() && g.offsets.is_empty()) {
            self.groups.remove(group_id);
        }
    }

    pub fn groups(&self) -> &BTreeMap<GroupId, StoredGroup> {
        &self.groups
    }

    pub fn group(&self, group_id: &GroupId) -> Option<&StoredGroup> {
        self.groups.get(group_id)
    }

    /// One upsert per live key: what replay of this partition must reproduce.
    pub fn snapshot(&self) -> Vec<Record> {
        let mut records = Vec::new();
        for (group_id, group) in &self.groups {
            if let Some(metadata) = &group.metadata {
                records.push(Record::Group { group_id: group_id.clone(), value: Some(metadata.clone()) });
            }
            for (partition, committed) in &group.offsets {
                records.push(Record::Offset {
                    group_id: group_id.clone(),
                    partition: partition.clone(),
                    value: Some(committed.clone()),
                });
            }
        }
        records
    }

    /// The records that delete `group_id`: a tombstone for its metadata and for each
    /// committed offset.
    pub fn tombstones(&self, group_id: &GroupId) -> Vec<Record> {
        let mut records = vec![Record::Group { group_id: group_id.clone(), value: None }];
        if let Some(group) = self.groups.get(group_id) {
            records.extend(group.offsets.keys().map(|partition| Record::Offset {
                group_id: group_id.clone(),
                partition: partition.clone(),
                value: None,
            }));
        }
        records
    }

    /// OffsetFetch: the asked partitions (all committed ones for `None`), `None`
    /// where nothing is committed.
    pub fn committed(
        &self,
        group_id: &GroupId,
        partitions: Option<&[TopicPartition]>,
    ) -> Vec<(TopicPartition, Option<CommittedOffset>)> {
        let group = self.groups.get(group_id);
        match partitions {
            Some(partitions) => {
                partitions.iter().map(|p| (p.clone(), group.and_then(|g| g.offsets.get(p)).cloned())).collect()
            }
            None => {
                group.map_or_else(Vec::new, |g| g.offsets.iter().map(|(p, c)| (p.clone(), Some(c.clone()))).collect())
            }
        }
    }
}

// ---- one partition through the engine ----

/// How a cluster node's offsets partition is written: as the partition's leader
/// in `slot`'s epoch, each append acknowledged once the in-sync replicas have it
/// (Kafka's coordinator appends with `acks=all` and waits up to
/// `offsets.commit.timeout.ms`).
pub struct Replicated {
    pub replicas: Arc<ReplicaManager>,
    pub slot: Arc<LeaderSlot>,
    /// How long an append waits for the in-sync replicas.
    pub timeout: Duration,
}

/// Why an append to an offsets partition was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The partition's leadership moved away before the replicas had the records.
    #[error("this broker stopped leading the partition")]
    NotLeader,
    /// Fewer in-sync replicas than the topic's `min.insync.replicas`.
    #[error("not enough in-sync replicas")]
    NotEnoughReplicas,
    /// The in-sync replicas did not all have the records within the timeout; the
    /// records may still be committed later.
    #[error("the in-sync replicas did not confirm the records in time")]
    TimedOut,
}

/// Appends to, replays and compacts one partition of the offsets topic. Owned by
/// that partition's writer task; nothing else appends to the partition, which is
/// what keeps [`OffsetsLog::store`] equal to a replay of the log.
pub struct OffsetsLog {
    partition: TopicPartition,
    engine: EngineHandle,
    /// `None` on a single broker: appends are acknowledged once durable.
    replicated: Option<Replicated>,
    store: Rc<RefCell<OffsetsStore>>,
    snapshot_interval_bytes: u64,
    /// Bytes appended since the last snapshot (or replayed at load).
    bytes_since_snapshot: u64,
    /// Size of the last snapshot: the next one waits for at least twice as much.
    snapshot_bytes: u64,
}

/// What an append did besides appending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Compaction {
    /// The log start after the snapshot, if one was taken.
    pub log_start_offset: Option<Offset>,
}

impl OffsetsLog {
    /// Replays the partition from its log start: to the high watermark on a single
    /// broker, to the log end on a cluster's new leader (as Kafka's coordinator
    /// loads: what this leader holds is what the followers will hold).
    pub async fn load(
        engine: EngineHandle,
        partition: TopicPartition,
        snapshot_interval_bytes: u64,
        replicated: Option<Replicated>,
    ) -> Result<OffsetsLog> {
        let (store, bytes_replayed) = replay(&engine, &partition, replicated.is_some()).await?;
        Ok(OffsetsLog {
            partition,
            engine,
            replicated,
            store: Rc::new(RefCell::new(store)),
            snapshot_interval_bytes: snapshot_interval_bytes.max(1),
            bytes_since_snapshot: bytes_replayed,
            snapshot_bytes: 0,
        })
    }

    pub fn partition(&self) -> &TopicPartition {
        &self.partition
    }

    pub fn store(&self) -> Rc<RefCell<OffsetsStore>> {
        self.store.clone()
    }

    /// Appends `records`, applies them to the store by decoding what was appended
    /// (the same path replay takes), then waits for the acknowledgement: durable
    /// under `fsync.policy=always`, and on a cluster node in every in-sync replica.
    /// The store follows the local log even when the acknowledgement fails, since a
    /// replay would too. Takes a snapshot afterwards when due; a failed snapshot is
    /// logged and retried after the next append.
    pub async fn append(
        &mut self,
        records: &[Record],
        now: TimestampMs,
    ) -> std::result::Result<(AppendInfo, Compaction), AppendError> {
        assert!(!records.is_empty(), "an append holds at least one record");
        let bytes = encode_batches(records, now);
        let info = self.append_local(bytes.clone()).await?;
        let skipped = {
            let mut store = self.store.borrow_mut();
            apply_batches(&bytes, &self.partition, &mut store)?
        };
        assert_eq!(skipped, 0, "records the coordinator encodes always decode");
        self.bytes_since_snapshot += bytes.len() as u64;
        self.replicate(&info).await?;
        let mut compaction = Compaction::default();
        let due = self.bytes_since_snapshot >= self.snapshot_interval_bytes.max(2 * self.snapshot_bytes);
        if due && !self.store.borrow().has_pending() {
            match self.snapshot(now).await {
                Ok(log_start) => compaction.log_start_offset = Some(log_start),
                Err(error) => tracing::error!("{}: snapshot failed (will retry): {error}", self.partition),
            }
        }
        Ok((info, compaction))
    }

    /// A TxnOffsetCommit: `records` as one transactional batch of `producer`, held
    /// pending in the store until the transaction's marker (a single broker's only:
    /// transactions are not served on a cluster yet).
    pub async fn append_transactional(
        &mut self,
        records: &[Record],
        producer: (ProducerId, ProducerEpoch),
        now: TimestampMs,
    ) -> std::result::Result<AppendInfo, AppendError> {
        assert!(!records.is_empty(), "an append holds at least one record");
        let (producer_id, epoch) = producer;
        let encoded: Vec<(Vec<u8>, Option<Vec<u8>>)> =
            records.iter().map(|r| (r.encode_key(), r.encode_value())).collect();
        let specs: Vec<RecordSpec<'_>> = encoded
            .iter()
            .map(|(key, value)| RecordSpec { key: Some(key), value: value.as_deref(), timestamp_delta_ms: 0 })
            .collect();
        let batch = |sequence: Sequence| {
            let producer = BatchProducer { producer_id, producer_epoch: epoch.0, base_sequence: sequence.0 };
            build_transactional_batch(now, producer, &specs)
        };
        let mut bytes = batch(self.store.borrow().next_sequence(producer_id, epoch));
        let info = match self.append_local(bytes.clone()).await {
            // The producer's sequence in this partition predates what replay saw
            // (its records compacted away): the log says where it is.
            Err(AppendError::Engine(EngineError::OutOfOrderSequence { expected_sequence, .. })) => {
                bytes = batch(expected_sequence);
                self.append_local(bytes.clone()).await?
            }
            other => other?,
        };
        let skipped = apply_batches(&bytes, &self.partition, &mut self.store.borrow_mut())?;
        assert_eq!(skipped, 0, "records the coordinator encodes always decode");
        self.bytes_since_snapshot += bytes.len() as u64;
        self.replicate(&info).await?;
        Ok(info)
    }

    /// The local append, as the partition's leader on a cluster node.
    async fn append_local(&self, bytes: Vec<u8>) -> std::result::Result<AppendInfo, AppendError> {
        let Some(replicated) = &self.replicated else {
            return Ok(self.engine.append(&self.partition, bytes, LeaderEpoch(0)).await?);
        };
        replicated.slot.check_insync().map_err(|_| AppendError::NotEnoughReplicas)?;
        let info = self.engine.append(&self.partition, bytes, replicated.slot.leader_epoch).await?;
        replicated.replicas.appended(&self.engine, &self.partition, &replicated.slot, info.log_end_offset).await;
        Ok(info)
    }

    /// On a cluster node, waits until the in-sync replicas hold `info`'s records.
    async fn replicate(&self, info: &AppendInfo) -> std::result::Result<(), AppendError> {
        let Some(replicated) = &self.replicated else { return Ok(()) };
        let acknowledged = async {
            replicated.replicas.wait_acks_all(&replicated.slot, info.last_offset).await.map_err(|error| match error {
                AcksAllError::NotLeader => AppendError::NotLeader,
                AcksAllError::Insync(_) => AppendError::NotEnoughReplicas,
            })
        };
        let expired = async {
            glommio::timer::sleep(replicated.timeout).await;
            Err(AppendError::TimedOut)
        };
        futures_lite::future::or(acknowledged, expired).await
    }

    /// Appends the store's state and deletes everything before it. Returns the new
    /// log start offset.
    pub async fn snapshot(&mut self, now: TimestampMs) -> std::result::Result<Offset, AppendError> {
        let records = self.store.borrow().snapshot();
        let log_start = if records.is_empty() {
            // Nothing is live: every record so far is obsolete.
            self.snapshot_bytes = 0;
            self.engine.stats(&self.partition).await?.high_watermark
        } else {
            let bytes = encode_batches(&records, now);
            self.snapshot_bytes = bytes.len() as u64;
            let info = self.append_local(bytes).await?;
            // Deleting what the snapshot replaces needs the snapshot committed.
            self.replicate(&info).await?;
            info.base_offset
        };
        let log_start = self.engine.delete_records(&self.partition, log_start).await?;
        self.bytes_since_snapshot = 0;
        tracing::debug!("{}: snapshot of {} records, log starts at {log_start}", self.partition, records.len());
        Ok(log_start)
    }
}

/// Reads a partition from its log start into a store: to the high watermark, or
/// with `to_log_end` to the end of the local log. Returns the store and the bytes read.
pub async fn replay(
    engine: &EngineHandle,
    partition: &TopicPartition,
    to_log_end: bool,
) -> Result<(OffsetsStore, u64)> {
    let stats = engine.stats(partition).await?;
    let mut store = OffsetsStore::default();
    let mut offset = stats.log_start_offset;
    let mut bytes_read: u64 = 0;
    let mut skipped = 0;
    let end = if to_log_end { stats.log_end_offset } else { stats.high_watermark };
    while offset < end {
        let read = if to_log_end {
            engine.read_replica(partition, offset, REPLAY_READ_BYTES_MAX).await?
        } else {
            engine.read(partition, offset, REPLAY_READ_BYTES_MAX, Some(end)).await?
        };
        if read.bytes.is_empty() || read.next_offset <= offset {
            break;
        }
        bytes_read += read.bytes.len() as u64;
        skipped += apply_batches(&read.bytes, partition, &mut store)?;
        offset = read.next_offset;
    }
    if skipped > 0 {
        tracing::warn!("{partition}: replay skipped {skipped} records that do not decode");
    }
    Ok((store, bytes_read))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition::new(TopicName::new(topic).expect("valid"), PartitionId(partition))
    }

    fn committed(offset: i64, metadata: Option<&str>) -> CommittedOffset {
        CommittedOffset {
            offset: Offset(offset),
            leader_epoch: LeaderEpoch(3),
            metadata: metadata.map(str::to_string),
            commit_timestamp_ms: 1_700_000_000_000,
        }
    }

    fn group_record(generation: i32) -> GroupRecord {
        GroupRecord {
            protocol_type: "consumer".into(),
            generation: GenerationId(generation),
            protocol_name: Some("range".into()),
            leader: Some(MemberId("m-1".into())),
            members: vec![
                MemberRecord {
                    member_id: MemberId("m-1".into()),
                    group_instance_id: None,
                    client_id: "rdkafka".into(),
                    client_host: "/10.0.0.1".into(),
                    session_timeout_ms: 45_000,
                    rebalance_timeout_ms: 300_000,
                    subscription: Bytes::from_static(b"\x00\x01sub"),
                    assignment: Bytes::from_static(b"\x00\x01assign"),
                },
                MemberRecord {
                    member_id: MemberId("m-2".into()),
                    group_instance_id: Some("instance-2".into()),
                    client_id: "java".into(),
                    client_host: String::new(),
                    session_timeout_ms: 10_000,
                    rebalance_timeout_ms: 60_000,
                    subscription: Bytes::new(),
                    assignment: Bytes::new(),
                },
            ],
        }
    }

    fn sample_records() -> Vec<Record> {
        let g = |s: &str| GroupId(s.into());
        vec![
            Record::Offset { group_id: g("a"), partition: tp("orders", 0), value: Some(committed(42, Some("m"))) },
            Record::Offset { group_id: g("a"), partition: tp("orders", 1), value: Some(committed(7, None)) },
            Record::Group { group_id: g("a"), value: Some(group_record(3)) },
            Record::Offset { group_id: g(""), partition: tp("orders", 0), value: Some(committed(1, Some(""))) },
            Record::Offset { group_id: g("a"), partition: tp("orders", 1), value: None },
            Record::Group { group_id: g("b"), value: None },
        ]
    }

    /// The documented layout, byte for byte, for one key and value of each kind.
    #[test]
    fn records_have_the_documented_byte_layout() {
        let offset =
            Record::Offset { group_id: GroupId("g".into()), partition: tp("t", 5), value: Some(committed(9, None)) };
        assert_eq!(offset.encode_key(), b"\x00\x01\x00\x00\x00\x01g\x00\x00\x00\x01t\x00\x00\x00\x05");
        let mut value = vec![0, 1];
        value.extend_from_slice(&9i64.to_be_bytes());
        value.extend_from_slice(&3i32.to_be_bytes());
        value.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
        value.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(offset.encode_value(), Some(value));
        let group = Record::Group { group_id: GroupId("g".into()), value: None };
        assert_eq!(group.encode_key(), b"\x00\x02\x00\x00\x00\x01g");
        assert_eq!(group.encode_value(), None);
    }

    #[test]
    fn records_round_trip_through_batches() {
        let records = sample_records();
        let bytes = encode_batches(&records, TimestampMs(5));
        let mut decoded = Vec::new();
        let skipped =
            decode_batches(&bytes, &tp(crate::group::OFFSETS_TOPIC, 0), |r| decoded.push(r)).expect("decodes");
        assert_eq!(skipped, 0);
        assert_eq!(decoded, records);
    }

    #[test]
    fn big_record_sets_split_into_several_batches() {
        let metadata = "x".repeat(4000);
        let records: Vec<Record> = (0..400)
            .map(|i| Record::Offset {
                group_id: GroupId("big".into()),
                partition: tp("orders", i),
                value: Some(committed(i as i64, Some(&metadata))),
            })
            .collect();
        let bytes = encode_batches(&records, TimestampMs(0));
        let batches = split_batches(&bytes).expect("valid batches");
        assert!(batches.len() >= 3, "1.6 MB of records in {} batches", batches.len());
        assert!(batches.iter().all(|(_, h)| h.size_bytes() < BATCH_FILL_BYTES + 8192));
        let mut decoded = Vec::new();
        decode_batches(&bytes, &tp("x", 0), |r| decoded.push(r)).expect("decodes");
        assert_eq!(decoded, records);
    }

    #[test]
    fn truncated_or_foreign_records_are_errors_not_panics() {
        for record in sample_records() {
            let key = record.encode_key();
            let value = record.encode_value();
            for cut in 0..key.len() {
                assert!(Record::decode(&key[..cut], value.as_deref()).is_err(), "key cut at {cut}");
            }
            if let Some(value) = value {
                for cut in 0..value.len() {
                    assert!(Record::decode(&key, Some(&value[..cut])).is_err(), "value cut at {cut}");
                }
            }
        }
        assert_eq!(Record::decode(b"\x00\x09\x00\x00\x00\x00", None), Err(RecordError::UnknownKeyType(9)));
        // A batch produced by a client with a key that is not ours: skipped, counted.
        let foreign = build_batch(
            TimestampMs(0),
            BatchProducer::default(),
            &[RecordSpec { key: Some(b"hello"), value: Some(b"world"), timestamp_delta_ms: 0 }],
        );
        let mut decoded = Vec::new();
        assert_eq!(decode_batches(&foreign, &tp("x", 0), |r| decoded.push(r)).expect("batch is valid"), 1);
        assert!(decoded.is_empty());
    }

    #[test]
    fn the_store_applies_upserts_and_tombstones_and_snapshots_itself() {
        let mut store = OffsetsStore::default();
        for record in sample_records() {
            store.apply(record);
        }
        let a = store.group(&GroupId("a".into())).expect("group a");
        assert_eq!(a.offsets.len(), 1, "orders-1 was deleted");
        assert_eq!(a.metadata, Some(group_record(3)));
        assert!(store.group(&GroupId("b".into())).is_none(), "a tombstone alone leaves nothing");
        assert_eq!(
            store.committed(&GroupId("a".into()), Some(&[tp("orders", 0), tp("orders", 9)])),
            vec![(tp("orders", 0), Some(committed(42, Some("m")))), (tp("orders", 9), None)]
        );
        assert_eq!(store.committed(&GroupId("nobody".into()), None), vec![]);

        let mut replayed = OffsetsStore::default();
        for record in store.snapshot() {
            replayed.apply(record);
        }
        assert_eq!(replayed, store, "a snapshot replays to the same state");

        for record in store.tombstones(&GroupId("a".into())) {
            store.apply(record);
        }
        assert!(store.group(&GroupId("a".into())).is_none());
        assert_eq!(store.groups().len(), 1, "the group with the empty id remains");
    }

    /// Transactional offset commits replay as Kafka loads them: held per producer
    /// until its marker, applied on COMMIT, dropped on ABORT, interleaved with plain
    /// commits; the next sequence continues each producer's batches.
    #[test]
    fn transactional_offsets_wait_for_their_marker() {
        use corelog_engine::batch::{build_marker_batch, TxnMarker};
        let partition = tp(crate::group::OFFSETS_TOPIC, 0);
        let offset = |group: &str, at: i64| Record::Offset {
            group_id: GroupId(group.into()),
            partition: tp("orders", 0),
            value: Some(committed(at, None)),
        };
        let transactional = |producer: i64, sequence: i32, record: Record| {
            let (key, value) = (record.encode_key(), record.encode_value());
            let spec = RecordSpec { key: Some(&key), value: value.as_deref(), timestamp_delta_ms: 0 };
            let producer =
                BatchProducer { producer_id: ProducerId(producer), producer_epoch: 0, base_sequence: sequence };
            build_transactional_batch(TimestampMs(0), producer, &[spec])
        };
        let marker = |producer: i64, outcome| {
            build_marker_batch(
                TimestampMs(0),
                ProducerId(producer),
                ProducerEpoch(0),
                TxnMarker { outcome, coordinator_epoch: 0 },
            )
        };
        let mut log = Vec::new();
        log.extend(transactional(7, 0, offset("aborted", 1)));
        log.extend(transactional(8, 0, offset("committed", 2)));
        log.extend(encode_batches(&[offset("plain", 3)], TimestampMs(0)));
        let mut store = OffsetsStore::default();
        apply_batches(&log, &partition, &mut store).expect("applies");
        let at = |store: &OffsetsStore, group: &str| {
            store.group(&GroupId(group.into())).and_then(|g| g.offsets.get(&tp("orders", 0))).map(|c| c.offset.0)
        };
        assert_eq!((at(&store, "aborted"), at(&store, "committed"), at(&store, "plain")), (None, None, Some(3)));
        assert!(store.has_pending());
        let pending = |store: &OffsetsStore, group: &str| store.pending_partitions(&GroupId(group.into()));
        assert_eq!(pending(&store, "committed"), [tp("orders", 0)].into(), "unstable until its marker");
        assert!(pending(&store, "plain").is_empty(), "a plain commit is never pending");
        assert_eq!(store.next_sequence(ProducerId(8), ProducerEpoch(0)), Sequence(1));
        assert_eq!(store.next_sequence(ProducerId(8), ProducerEpoch(1)), Sequence(0), "a new epoch starts at 0");
        let mut ends = marker(7, TxnOutcome::Abort);
        ends.extend(marker(8, TxnOutcome::Commit));
        apply_batches(&ends, &partition, &mut store).expect("applies");
        assert_eq!((at(&store, "aborted"), at(&store, "committed")), (None, Some(2)));
        assert!(!store.has_pending());
        assert!(pending(&store, "committed").is_empty() && pending(&store, "aborted").is_empty());
        // The same log replayed whole gives the same store.
        log.extend(ends);
        let mut replayed = OffsetsStore::default();
        apply_batches(&log, &partition, &mut replayed).expect("applies");
        assert_eq!(replayed, store);
    }
}
