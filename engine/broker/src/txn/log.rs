//! `__transaction_state`: one record per change of a transactional id, in Kafka's
//! binary schema (`TransactionLogKey` v0, `TransactionLogValue` v1; v0 values are
//! read too), so the records read the same as a Kafka broker's.
//!
//! Every record is an upsert of one transactional id (a null value, a tombstone,
//! removes it), so replaying a partition from its log start yields each id's latest
//! metadata ([`replay_records`]) whatever was compacted away before it.
//!
//! ## Record layout
//!
//! Big-endian. Version 0 fields are Kafka's classic encoding (`string`: i16 length
//! and UTF-8; `array`: i32 count, -1 for null); version 1 is Kafka's flexible
//! encoding (`compact` lengths are unsigned varints of length + 1, 0 for null; every
//! struct ends with its tagged fields: a varint count, then tag, size, data each).
//!
//! ```text
//! key                                value, version 1 (null: a tombstone)
//! field             type             field                              type
//! version = 0       i16              version = 1                        i16
//! transactional_id  string           producer_id                        i64
//!                                    producer_epoch                     i16
//!                                    transaction_timeout_ms             i32
//!                                    transaction_status (a TxnState id) i8
//!                                    transaction_partitions             compact nullable array (null when Empty):
//!                                      topic                              compact string
//!                                      partition_ids                      compact array of i32
//!                                      tagged fields                      (none)
//!                                    last_update_timestamp_ms           i64
//!                                    start_timestamp_ms                 i64
//!                                    tagged fields: 0 previous_producer_id i64, 1 next_producer_id i64,
//!                                      2 client_transaction_version i16; each only when not its default
//!                                      (-1, -1, 0)
//! ```
//!
//! `golden/transaction_state.txt` pins the bytes of each kind of record.
//!
//! Batches are uncompressed RecordBatch v2, producer id -1 (as the offsets topic's).

use std::collections::{BTreeMap, BTreeSet};

use super::state::{TransactionMetadata, TxnState, TxnTransit};
use super::{TransactionVersion, TransactionalId, NO_PRODUCER_EPOCH, NO_PRODUCER_ID};
use corelog_engine::batch::{build_batch, BatchProducer, RecordSpec};
use corelog_engine::error::Result;
use corelog_engine::types::{PartitionId, ProducerEpoch, ProducerId, TimestampMs, TopicName, TopicPartition};

const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 1;
const TAG_PREVIOUS_PRODUCER_ID: u32 = 0;
const TAG_NEXT_PRODUCER_ID: u32 = 1;
const TAG_CLIENT_TRANSACTION_VERSION: u32 = 2;

/// One record of `__transaction_state`: a transactional id's metadata, or `None`
/// when it expired. The value never holds `last_producer_epoch` (read back as -1)
/// nor a pending state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnRecord {
    pub transactional_id: TransactionalId,
    pub value: Option<TxnTransit>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TxnRecordError {
    #[error("record ends early: wanted {wanted} bytes at {at}, has {len}")]
    Truncated { at: usize, wanted: usize, len: usize },
    #[error("{0} bytes left after the record")]
    TrailingBytes(usize),
    #[error("unknown key version {0}")]
    UnknownKeyVersion(i16),
    #[error("unknown value version {0}")]
    UnknownValueVersion(i16),
    #[error("unknown transaction state {0}")]
    UnknownState(i8),
    #[error("a string is not UTF-8")]
    NotUtf8,
    #[error("invalid length {0}")]
    InvalidLength(i64),
    #[error("null where a value is required")]
    UnexpectedNull,
    #[error("invalid topic name {0:?}")]
    InvalidTopic(String),
    #[error("a varint runs past 32 bits")]
    VarintTooLong,
    #[error("record without a key")]
    MissingKey,
}

type RecordResult<T> = std::result::Result<T, TxnRecordError>;

impl TxnRecord {
    /// The record of a transition (a Dead transition is a tombstone).
    pub fn of(transactional_id: TransactionalId, transit: &TxnTransit) -> TxnRecord {
        let value = (transit.state != TxnState::Dead).then(|| transit.clone());
        TxnRecord { transactional_id, value }
    }

    pub fn encode_key(&self) -> Vec<u8> {
        let mut key = Vec::with_capacity(4 + self.transactional_id.0.len());
        key.extend_from_slice(&KEY_VERSION.to_be_bytes());
        let length = i16::try_from(self.transactional_id.0.len()).expect("a transactional id fits a Kafka string");
        key.extend_from_slice(&length.to_be_bytes());
        key.extend_from_slice(self.transactional_id.0.as_bytes());
        key
    }

    pub fn encode_value(&self) -> Option<Vec<u8>> {
        let value = self.value.as_ref()?;
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&VALUE_VERSION.to_be_bytes());
        out.extend_from_slice(&value.producer_id.0.to_be_bytes());
        out.extend_from_slice(&value.producer_epoch.0.to_be_bytes());
        out.extend_from_slice(&value.timeout_ms.to_be_bytes());
        out.push(value.state.id() as u8);
        if value.state == TxnState::Empty {
            put_uvarint(&mut out, 0);
        } else {
            let topics = by_topic(&value.partitions);
            put_uvarint(&mut out, topics.len() as u32 + 1);
            for (topic, partitions) in topics {
                put_uvarint(&mut out, topic.as_str().len() as u32 + 1);
                out.extend_from_slice(topic.as_str().as_bytes());
                put_uvarint(&mut out, partitions.len() as u32 + 1);
                for partition in partitions {
                    out.extend_from_slice(&partition.0.to_be_bytes());
                }
                put_uvarint(&mut out, 0);
            }
        }
        out.extend_from_slice(&value.txn_last_update_timestamp_ms.to_be_bytes());
        out.extend_from_slice(&value.txn_start_timestamp_ms.to_be_bytes());
        put_tagged_fields(&mut out, value);
        Some(out)
    }

    pub fn decode(key: &[u8], value: Option<&[u8]>) -> RecordResult<TxnRecord> {
        let mut reader = Reader { bytes: key, at: 0 };
        let version = reader.i16()?;
        if version != KEY_VERSION {
            return Err(TxnRecordError::UnknownKeyVersion(version));
        }
        let length = reader.i16()?;
        let length = usize::try_from(length).map_err(|_| TxnRecordError::InvalidLength(length.into()))?;
        let transactional_id = TransactionalId(reader.utf8(length)?);
        reader.finish()?;
        let value = value.map(decode_value).transpose()?;
        Ok(TxnRecord { transactional_id, value })
    }
}

/// The partitions grouped by topic, in order.
fn by_topic(partitions: &BTreeSet<TopicPartition>) -> BTreeMap<&TopicName, Vec<PartitionId>> {
    let mut topics: BTreeMap<&TopicName, Vec<PartitionId>> = BTreeMap::new();
    for tp in partitions {
        topics.entry(&tp.topic).or_default().push(tp.partition);
    }
    topics
}

fn put_uvarint(out: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_tagged_fields(out: &mut Vec<u8>, value: &TxnTransit) {
    let mut fields: Vec<(u32, Vec<u8>)> = Vec::new();
    if value.previous_producer_id != NO_PRODUCER_ID {
        fields.push((TAG_PREVIOUS_PRODUCER_ID, value.previous_producer_id.0.to_be_bytes().to_vec()));
    }
    if value.next_producer_id != NO_PRODUCER_ID {
        fields.push((TAG_NEXT_PRODUCER_ID, value.next_producer_id.0.to_be_bytes().to_vec()));
    }
    if value.client_transaction_version != TransactionVersion::V0 {
        fields.push((TAG_CLIENT_TRANSACTION_VERSION, value.client_transaction_version.0.to_be_bytes().to_vec()));
    }
    put_uvarint(out, fields.len() as u32);
    for (tag, data) in fields {
        put_uvarint(out, tag);
        put_uvarint(out, data.len() as u32);
        out.extend_from_slice(&data);
    }
}

fn decode_value(bytes: &[u8]) -> RecordResult<TxnTransit> {
    let mut reader = Reader { bytes, at: 0 };
    let version = reader.i16()?;
    if !(0..=VALUE_VERSION).contains(&version) {
        return Err(TxnRecordError::UnknownValueVersion(version));
    }
    let flexible = version >= 1;
    let producer_id = ProducerId(reader.i64()?);
    let producer_epoch = ProducerEpoch(reader.i16()?);
    let timeout_ms = reader.i32()?;
    let status = reader.i8()?;
    let state = TxnState::from_id(status).ok_or(TxnRecordError::UnknownState(status))?;
    let partitions = reader.partitions(flexible)?;
    let txn_last_update_timestamp_ms = reader.i64()?;
    let txn_start_timestamp_ms = reader.i64()?;
    let mut value = TxnTransit {
        producer_id,
        previous_producer_id: NO_PRODUCER_ID,
        next_producer_id: NO_PRODUCER_ID,
        producer_epoch,
        last_producer_epoch: NO_PRODUCER_EPOCH,
        timeout_ms,
        state,
        // Kafka ignores the partitions of an Empty record.
        partitions: if state == TxnState::Empty { BTreeSet::new() } else { partitions },
        txn_start_timestamp_ms,
        txn_last_update_timestamp_ms,
        client_transaction_version: TransactionVersion::V0,
    };
    if flexible {
        reader.tagged_fields(|tag, data| match (tag, data.len()) {
            (TAG_PREVIOUS_PRODUCER_ID, 8) => value.previous_producer_id = ProducerId(i64_of(data)),
            (TAG_NEXT_PRODUCER_ID, 8) => value.next_producer_id = ProducerId(i64_of(data)),
            (TAG_CLIENT_TRANSACTION_VERSION, 2) => {
                value.client_transaction_version = TransactionVersion(i16::from_be_bytes([data[0], data[1]]))
            }
            _ => {} // a tag of a later version, or a size we do not know: skipped, as Kafka does
        })?;
    }
    reader.finish()?;
    Ok(value)
}

fn i64_of(data: &[u8]) -> i64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(data);
    i64::from_be_bytes(bytes)
}

/// A bounds-checked big-endian reader.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, wanted: usize) -> RecordResult<&'a [u8]> {
        let end = self.at.checked_add(wanted).filter(|end| *end <= self.bytes.len());
        let Some(end) = end else {
            return Err(TxnRecordError::Truncated { at: self.at, wanted, len: self.bytes.len() });
        };
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> RecordResult<[u8; N]> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn i8(&mut self) -> RecordResult<i8> {
        Ok(i8::from_be_bytes(self.array()?))
    }

    fn i16(&mut self) -> RecordResult<i16> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> RecordResult<i32> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> RecordResult<i64> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn uvarint(&mut self) -> RecordResult<u32> {
        let mut value: u32 = 0;
        for shift in [0, 7, 14, 21, 28] {
            let byte = self.array::<1>()?[0];
            // The fifth byte holds the top 4 bits and ends the varint.
            if shift == 28 && byte > 0x0f {
                return Err(TxnRecordError::VarintTooLong);
            }
            value |= u32::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(TxnRecordError::VarintTooLong)
    }

    fn utf8(&mut self, length: usize) -> RecordResult<String> {
        let bytes = self.take(length)?;
        std::str::from_utf8(bytes).map(str::to_string).map_err(|_| TxnRecordError::NotUtf8)
    }

    /// An array's element count (None: null), in the version's encoding.
    fn count(&mut self, flexible: bool) -> RecordResult<Option<usize>> {
        let count = if flexible { i64::from(self.uvarint()?) - 1 } else { i64::from(self.i32()?) };
        match count {
            -1 => Ok(None),
            // Each element takes at least one byte: bound the count by what is left.
            count if count >= 0 && (count as usize) <= self.bytes.len() - self.at => Ok(Some(count as usize)),
            count => Err(TxnRecordError::InvalidLength(count)),
        }
    }

    fn string(&mut self, flexible: bool) -> RecordResult<String> {
        let length = if flexible { i64::from(self.uvarint()?) - 1 } else { i64::from(self.i16()?) };
        match length {
            -1 => Err(TxnRecordError::UnexpectedNull),
            length if length >= 0 => self.utf8(length as usize),
            length => Err(TxnRecordError::InvalidLength(length)),
        }
    }

    fn partitions(&mut self, flexible: bool) -> RecordResult<BTreeSet<TopicPartition>> {
        let mut partitions = BTreeSet::new();
        for _ in 0..self.count(flexible)?.unwrap_or(0) {
            let topic = self.string(flexible)?;
            let topic = TopicName::new(topic.clone()).map_err(|_| TxnRecordError::InvalidTopic(topic))?;
            let ids = self.count(flexible)?.ok_or(TxnRecordError::UnexpectedNull)?;
            for _ in 0..ids {
                partitions.insert(TopicPartition::new(topic.clone(), PartitionId(self.i32()?)));
            }
            if flexible {
                self.tagged_fields(|_, _| {})?;
            }
        }
        Ok(partitions)
    }

    fn tagged_fields(&mut self, mut field: impl FnMut(u32, &[u8])) -> RecordResult<()> {
        for _ in 0..self.uvarint()? {
            let tag = self.uvarint()?;
            let size = self.uvarint()? as usize;
            field(tag, self.take(size)?);
        }
        Ok(())
    }

    fn finish(&self) -> RecordResult<()> {
        match self.bytes.len() - self.at {
            0 => Ok(()),
            left => Err(TxnRecordError::TrailingBytes(left)),
        }
    }
}

// ---- batches and replay ----

/// Encodes records as one uncompressed RecordBatch v2 (base offset 0; the engine
/// stamps offsets). The coordinator appends one record at a time.
pub fn encode_batch(records: &[TxnRecord], timestamp: TimestampMs) -> Vec<u8> {
    let encoded: Vec<(Vec<u8>, Option<Vec<u8>>)> = records.iter().map(|r| (r.encode_key(), r.encode_value())).collect();
    let specs: Vec<RecordSpec<'_>> = encoded
        .iter()
        .map(|(key, value)| RecordSpec { key: Some(key), value: value.as_deref(), timestamp_delta_ms: 0 })
        .collect();
    build_batch(timestamp, BatchProducer::default(), &specs)
}

/// Decodes every record of a read's batches, in order, into `apply`; control
/// batches are passed over. A batch that cannot be split fails the whole read; a
/// record that does not decode is skipped with a warning. Returns how many were.
pub fn decode_batches(bytes: &[u8], partition: &TopicPartition, apply: impl FnMut(TxnRecord)) -> Result<usize> {
    crate::group::offsets::decode_keyed_batches(bytes, partition, TxnRecord::decode, apply)
}

/// The metadata per transactional id that records, in log order, leave: each record
/// replaces the id's metadata, a tombstone removes it. What
/// [`super::coordinator::TxnCoordinator::load_partition`] takes.
pub fn replay_records(records: impl IntoIterator<Item = TxnRecord>) -> BTreeMap<TransactionalId, TransactionMetadata> {
    let mut transactions = BTreeMap::new();
    for record in records {
        match record.value {
            Some(value) => {
                let metadata = TransactionMetadata::from_transit(record.transactional_id.clone(), value);
                transactions.insert(record.transactional_id, metadata);
            }
            None => {
                transactions.remove(&record.transactional_id);
            }
        }
    }
    transactions
}

#[cfg(test)]
mod tests;
