//! What the cleaner keeps of one batch, and the batch it writes for it (Kafka's
//! `MemoryRecords.filterTo` with the cleaner's `RecordFilter`).
//!
//! A batch is dropped whole, kept as it was (every record kept, no delete horizon
//! to set: no byte rewritten), kept empty (no records, same offsets, producer and
//! epoch: the last batch of an active producer, so its sequence survives, and the
//! last batch of what a group of segments held, so the cleaned segment still ends
//! where the next begins), or rewritten with the records kept: same base offset,
//! same last offset delta (the producer's last sequence depends on it), same
//! producer fields and attributes, records with their own offsets and timestamps,
//! compressed with the batch's codec, and a fresh CRC.
//!
//! The delete horizon (Kafka's KIP-534): the first pass that keeps a tombstone, or
//! finds a marker that may go, writes its batch with attribute bit 6 set and
//! `now + delete.retention.ms` as the base timestamp (records' timestamp deltas are
//! relative to it, so their times are unchanged). A later pass past that time
//! drops the tombstones and the marker.

use super::offset_map::OffsetMap;
use crate::batch::{self, BatchError, BatchHeader, BATCH_HEADER_BYTES, BATCH_LENGTH_PREFIX_BYTES, MAGIC_V2};
use crate::records::{self, Record};
use crate::types::TimestampMs;

const ATTRIBUTE_COMPRESSION_MASK: i16 = 0x07;
const ATTRIBUTE_LOG_APPEND_TIME: i16 = 0x08;
/// Bit 6: the base timestamp is the batch's delete horizon (KIP-534).
pub const ATTRIBUTE_DELETE_HORIZON: i16 = 0x40;
const CRC_START: usize = 21;
/// Kafka's `RecordBatch.NO_TIMESTAMP`.
const NO_TIMESTAMP: i64 = -1;

/// The delete horizon of a batch, if an earlier pass set one.
pub fn delete_horizon(header: &BatchHeader) -> Option<TimestampMs> {
    (header.attributes & ATTRIBUTE_DELETE_HORIZON != 0).then_some(header.base_timestamp)
}

/// What happens to a batch whose records all go (Kafka's `BatchRetention`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchRetention {
    /// Dropped whole, records or not.
    Delete,
    /// Dropped if no record is kept.
    DeleteEmpty,
    /// Kept, empty if no record is.
    RetainEmpty,
}

/// The decisions the cleaner made about one batch before its records are looked at.
pub struct BatchVerdict {
    pub retention: BatchRetention,
    /// Every record of the batch goes (an aborted transaction's, or a marker past its
    /// delete horizon), whatever the map says.
    pub discard_records: bool,
    /// A marker that may go once its delete horizon passes: the batch gets one.
    pub removable_marker: bool,
}

/// What the filter did with one batch.
pub struct Filtered {
    /// The bytes to write: `None` drops the batch.
    pub bytes: Option<Vec<u8>>,
    pub records_read: u64,
    pub records_kept: u64,
}

/// Whether the record at `record` of a data batch stays: it is past what the map
/// covers, or it is the latest of its key and not a tombstone past the batch's
/// delete horizon. A record without a key never stays (Kafka refuses them on a
/// compacted topic and its cleaner drops any left).
pub fn keeps_record(map: &OffsetMap, header: &BatchHeader, record: &Record, now: TimestampMs) -> bool {
    if record.offset > map.latest_offset() {
        return true;
    }
    let Some(key) = &record.key else { return false };
    let latest = map.get(key).is_none_or(|latest| record.offset >= latest);
    let tombstone_kept = delete_horizon(header).is_none_or(|horizon| now < horizon);
    latest && (record.value.is_some() || tombstone_kept)
}

/// Filters one whole, valid batch (see the module doc).
pub fn filter_batch(
    bytes: &[u8],
    header: &BatchHeader,
    verdict: &BatchVerdict,
    map: &OffsetMap,
    now: TimestampMs,
    delete_retention_ms: i64,
    inflated_bytes_max: usize,
) -> Result<Filtered, BatchError> {
    let records_declared = header.record_count.max(0) as u64;
    if verdict.retention == BatchRetention::Delete {
        return Ok(Filtered { bytes: None, records_read: records_declared, records_kept: 0 });
    }
    let all = records::decode_records(bytes, inflated_bytes_max)?;
    let records_read = all.len() as u64;
    let mut kept = Vec::with_capacity(all.len());
    for record in all {
        let keep = !verdict.discard_records && (header.is_control() || keeps_record(map, header, &record, now));
        if keep {
            kept.push(record);
        }
    }
    let records_kept = kept.len() as u64;
    let tombstones = !header.is_control() && kept.iter().any(|r| r.value.is_none());
    let set_horizon = (tombstones || verdict.removable_marker) && delete_horizon(header).is_none();
    let out = if kept.is_empty() {
        match verdict.retention {
            BatchRetention::RetainEmpty => Some(empty_batch(header)),
            _ => None,
        }
    } else if records_kept == records_read && !set_horizon {
        Some(bytes.to_vec())
    } else {
        let horizon = match set_horizon {
            true => Some(TimestampMs(now.0.saturating_add(delete_retention_ms))),
            false => delete_horizon(header),
        };
        Some(rebuild_batch(header, &kept, horizon)?)
    };
    Ok(Filtered { bytes: out, records_read, records_kept })
}

/// The header fields every rewritten batch shares with the original, then the
/// CRC over the result.
fn write_batch(header: &BatchHeader, attributes: i16, timestamps: (i64, i64), count: i32, body: &[u8]) -> Vec<u8> {
    let (base_timestamp, max_timestamp) = timestamps;
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + body.len());
    out.extend_from_slice(&header.base_offset.0.to_be_bytes());
    out.extend_from_slice(&((BATCH_HEADER_BYTES - BATCH_LENGTH_PREFIX_BYTES + body.len()) as i32).to_be_bytes());
    out.extend_from_slice(&header.leader_epoch.0.to_be_bytes());
    out.push(MAGIC_V2 as u8);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&attributes.to_be_bytes());
    out.extend_from_slice(&header.last_offset_delta.to_be_bytes());
    out.extend_from_slice(&base_timestamp.to_be_bytes());
    out.extend_from_slice(&max_timestamp.to_be_bytes());
    out.extend_from_slice(&header.producer_id.0.to_be_bytes());
    out.extend_from_slice(&header.producer_epoch.0.to_be_bytes());
    out.extend_from_slice(&header.base_sequence.0.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(body);
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

/// A batch with no records and the original's offsets, producer fields and max
/// timestamp (Kafka's `DefaultRecordBatch.writeEmptyHeader`): uncompressed, no
/// base timestamp.
pub fn empty_batch(header: &BatchHeader) -> Vec<u8> {
    let attributes = header.attributes & !(ATTRIBUTE_COMPRESSION_MASK | ATTRIBUTE_DELETE_HORIZON);
    write_batch(header, attributes, (NO_TIMESTAMP, header.max_timestamp.0), 0, &[])
}

/// The batch holding `kept` (not empty), compressed with the original's codec.
fn rebuild_batch(header: &BatchHeader, kept: &[Record], horizon: Option<TimestampMs>) -> Result<Vec<u8>, BatchError> {
    let failed = |reason: String| BatchError::UndecodableRecords { base_offset: header.base_offset, reason };
    let base_timestamp = horizon.map_or(kept[0].timestamp.0, |h| h.0);
    let mut records = Vec::new();
    let mut one = Vec::new();
    for record in kept {
        one.clear();
        one.push(record.attributes);
        batch::put_varint(&mut one, record.timestamp.0.wrapping_sub(base_timestamp));
        batch::put_varint(&mut one, record.offset.0 - header.base_offset.0);
        batch::put_bytes(&mut one, record.key.as_deref());
        batch::put_bytes(&mut one, record.value.as_deref());
        one.extend_from_slice(&record.headers);
        batch::put_varint(&mut records, one.len() as i64);
        records.extend_from_slice(&one);
    }
    let codec = header.attributes & ATTRIBUTE_COMPRESSION_MASK;
    let body =
        records::compress(codec, &records).map_err(|e| failed(format!("recompressing with codec {codec}: {e}")))?;
    let max_timestamp = match header.attributes & ATTRIBUTE_LOG_APPEND_TIME != 0 {
        true => header.max_timestamp.0,
        false => kept.iter().map(|r| r.timestamp.0).max().unwrap_or(header.max_timestamp.0),
    };
    let mut attributes = header.attributes & !ATTRIBUTE_DELETE_HORIZON;
    if horizon.is_some() {
        attributes |= ATTRIBUTE_DELETE_HORIZON;
    }
    Ok(write_batch(header, attributes, (base_timestamp, max_timestamp), kept.len() as i32, &body))
}
