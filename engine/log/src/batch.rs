//! Kafka RecordBatch v2 headers: validation and the two fields the broker assigns.
//!
//! The engine stores batches as the bytes the producer sent. It reads the 61-byte
//! header and checks the CRC32C; records are decoded only by a time lookup
//! ([`crate::records`]) and for transaction markers. Byte layout (big-endian):
//!
//! ```text
//! offset  size  field
//!      0     8  base_offset            assigned by the broker
//!      8     4  batch_length           bytes after this field (total = 12 + batch_length)
//!     12     4  partition_leader_epoch assigned by the broker
//!     16     1  magic                  must be 2
//!     17     4  crc                    CRC32C of bytes [21, end)
//!     21     2  attributes
//!     23     4  last_offset_delta
//!     27     8  base_timestamp
//!     35     8  max_timestamp
//!     43     8  producer_id
//!     51     2  producer_epoch
//!     53     4  base_sequence
//!     57     4  record_count
//!     61     …  records
//! ```
//!
//! Because the CRC starts at `attributes`, stamping the base offset and leader epoch
//! does not invalidate it.

use crate::types::{LeaderEpoch, Offset, ProducerEpoch, ProducerId, Sequence, TimestampMs};

pub const BATCH_HEADER_BYTES: usize = 61;
/// `base_offset` + `batch_length`: the prefix that is not counted in `batch_length`.
pub const BATCH_LENGTH_PREFIX_BYTES: usize = 12;
pub const MAGIC_V2: i8 = 2;
const CRC_START: usize = 21;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("{len_bytes} bytes is shorter than a record batch header ({BATCH_HEADER_BYTES} bytes)")]
    TooShort { len_bytes: usize },
    #[error("batch_length field says {declared_bytes} bytes follow, but {actual_bytes} do")]
    LengthMismatch { declared_bytes: i64, actual_bytes: usize },
    #[error("unsupported magic byte {0} (only record batch v2 is accepted)")]
    UnsupportedMagic(i8),
    #[error("CRC32C mismatch: header says {stored:#010x}, bytes give {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("last_offset_delta {last_offset_delta} and record_count {record_count} disagree")]
    BadRecordCount { last_offset_delta: i32, record_count: i32 },
    /// The records of a stored batch, read for a time lookup ([`crate::records`]),
    /// are cut, garbled or compressed with an unknown codec.
    #[error("the records of the batch at offset {base_offset} do not decode: {reason}")]
    UndecodableRecords { base_offset: Offset, reason: String },
}

fn be_i16(bytes: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([bytes[at], bytes[at + 1]])
}
fn be_i32(bytes: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i64(bytes: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// The fixed header of one batch, decoded. Cheap: 61 bytes, no records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: Offset,
    pub batch_length: i32,
    pub leader_epoch: LeaderEpoch,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: TimestampMs,
    pub max_timestamp: TimestampMs,
    pub producer_id: ProducerId,
    pub producer_epoch: ProducerEpoch,
    pub base_sequence: Sequence,
    pub record_count: i32,
}

impl BatchHeader {
    /// Decodes the header from the first 61 bytes. Checks nothing but the length.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        if bytes.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::TooShort { len_bytes: bytes.len() });
        }
        Ok(BatchHeader {
            base_offset: Offset(be_i64(bytes, 0)),
            batch_length: be_i32(bytes, 8),
            leader_epoch: LeaderEpoch(be_i32(bytes, 12)),
            magic: bytes[16] as i8,
            crc: u32::from_be_bytes(bytes[17..21].try_into().expect("4 bytes")),
            attributes: be_i16(bytes, 21),
            last_offset_delta: be_i32(bytes, 23),
            base_timestamp: TimestampMs(be_i64(bytes, 27)),
            max_timestamp: TimestampMs(be_i64(bytes, 35)),
            producer_id: ProducerId(be_i64(bytes, 43)),
            producer_epoch: ProducerEpoch(be_i16(bytes, 51)),
            base_sequence: Sequence(be_i32(bytes, 53)),
            record_count: be_i32(bytes, 57),
        })
    }

    /// Total size of the batch on the wire and on disk.
    pub fn size_bytes(&self) -> usize {
        BATCH_LENGTH_PREFIX_BYTES + self.batch_length.max(0) as usize
    }

    pub fn last_offset(&self) -> Offset {
        Offset(self.base_offset.0 + self.last_offset_delta as i64)
    }

    /// Number of offsets the batch occupies (records may have been compacted away,
    /// so this is `last_offset_delta + 1`, not `record_count`).
    pub fn offset_count(&self) -> i64 {
        self.last_offset_delta as i64 + 1
    }

    /// Bit 4 of the attributes: the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTRIBUTE_TRANSACTIONAL != 0
    }

    /// Bit 5 of the attributes: a control batch (transaction marker).
    pub fn is_control(&self) -> bool {
        self.attributes & ATTRIBUTE_CONTROL != 0
    }
}

/// Validates one complete batch: exact length, magic 2, CRC32C, and a sane record
/// count. `bytes` must hold exactly one batch.
pub fn validate(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(bytes)?;
    let declared_bytes = header.batch_length as i64;
    if declared_bytes + BATCH_LENGTH_PREFIX_BYTES as i64 != bytes.len() as i64 {
        return Err(BatchError::LengthMismatch {
            declared_bytes,
            actual_bytes: bytes.len() - BATCH_LENGTH_PREFIX_BYTES,
        });
    }
    check_body(&header, bytes)?;
    Ok(header)
}

/// Checks magic, record count and CRC of a batch whose length is already known to match.
fn check_body(header: &BatchHeader, bytes: &[u8]) -> Result<(), BatchError> {
    if header.magic != MAGIC_V2 {
        return Err(BatchError::UnsupportedMagic(header.magic));
    }
    if header.last_offset_delta < 0
        || header.record_count < 0
        || (header.record_count > 0 && header.record_count - 1 > header.last_offset_delta)
    {
        return Err(BatchError::BadRecordCount {
            last_offset_delta: header.last_offset_delta,
            record_count: header.record_count,
        });
    }
    let computed = crc32c::crc32c(&bytes[CRC_START..]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch { stored: header.crc, computed });
    }
    Ok(())
}

/// Splits a buffer holding several concatenated batches (a produce request's record
/// set) into validated batches. Any malformed batch rejects the whole buffer.
pub fn split_batches(bytes: &[u8]) -> Result<Vec<(usize, BatchHeader)>, BatchError> {
    let mut batches = Vec::new();
    let mut position = 0;
    while position < bytes.len() {
        let rest = &bytes[position..];
        let header = BatchHeader::parse(rest)?;
        let size_bytes = header.size_bytes();
        if header.batch_length < (BATCH_HEADER_BYTES - BATCH_LENGTH_PREFIX_BYTES) as i32 || size_bytes > rest.len() {
            return Err(BatchError::LengthMismatch {
                declared_bytes: header.batch_length as i64,
                actual_bytes: rest.len() - BATCH_LENGTH_PREFIX_BYTES,
            });
        }
        check_body(&header, &rest[..size_bytes])?;
        batches.push((position, header));
        position += size_bytes;
    }
    Ok(batches)
}

/// Outcome of looking for a valid batch at some position of a log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanStep {
    /// A complete, valid batch.
    Batch(BatchHeader),
    /// Not enough bytes left for the declared batch: a torn write (or end of data).
    Incomplete,
    /// Bytes are present but are not a valid batch: corruption or zero padding.
    Invalid,
}

/// Used by recovery: classifies the bytes at the start of `bytes`.
pub fn scan_step(bytes: &[u8]) -> ScanStep {
    let Ok(header) = BatchHeader::parse(bytes) else {
        return ScanStep::Incomplete;
    };
    if header.batch_length < (BATCH_HEADER_BYTES - BATCH_LENGTH_PREFIX_BYTES) as i32 {
        return ScanStep::Invalid;
    }
    if header.size_bytes() > bytes.len() {
        return ScanStep::Incomplete;
    }
    match check_body(&header, &bytes[..header.size_bytes()]) {
        Ok(()) => ScanStep::Batch(header),
        Err(_) => ScanStep::Invalid,
    }
}

/// Writes the broker-assigned fields into a batch in place. The CRC stays valid.
pub fn stamp(bytes: &mut [u8], base_offset: Offset, leader_epoch: LeaderEpoch) {
    assert!(bytes.len() >= BATCH_HEADER_BYTES, "stamp: not a batch");
    bytes[0..8].copy_from_slice(&base_offset.0.to_be_bytes());
    bytes[12..16].copy_from_slice(&leader_epoch.0.to_be_bytes());
}

/// One record for [`build_batch`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordSpec<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub timestamp_delta_ms: i64,
}

/// Producer fields of a batch built by [`build_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchProducer {
    pub producer_id: ProducerId,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl Default for BatchProducer {
    fn default() -> Self {
        BatchProducer { producer_id: ProducerId(-1), producer_epoch: -1, base_sequence: -1 }
    }
}

pub(crate) fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    loop {
        if zigzag < 0x80 {
            out.push(zigzag as u8);
            return;
        }
        out.push((zigzag as u8 & 0x7f) | 0x80);
        zigzag >>= 7;
    }
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(out, -1),
        Some(bytes) => {
            put_varint(out, bytes.len() as i64);
            out.extend_from_slice(bytes);
        }
    }
}

/// Encodes an uncompressed RecordBatch v2 (base offset 0). The broker and the
/// harness get batches from real Kafka clients; this exists for tests, benchmarks and
/// the embedded driver, which need valid batches without a client.
pub fn build_batch(base_timestamp: TimestampMs, producer: BatchProducer, records: &[RecordSpec<'_>]) -> Vec<u8> {
    build_batch_with_attributes(base_timestamp, producer, 0, records)
}

/// [`build_batch`] with the transactional attribute set: a transactional producer's
/// data batch (tests; clients send their own).
pub fn build_transactional_batch(
    base_timestamp: TimestampMs,
    producer: BatchProducer,
    records: &[RecordSpec<'_>],
) -> Vec<u8> {
    build_batch_with_attributes(base_timestamp, producer, ATTRIBUTE_TRANSACTIONAL, records)
}

/// How a transaction ended: the control record type of its marker (Kafka's
/// `ControlRecordType`: ABORT = 0, COMMIT = 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnOutcome {
    Abort,
    Commit,
}

impl TxnOutcome {
    fn control_type(self) -> i16 {
        match self {
            TxnOutcome::Abort => 0,
            TxnOutcome::Commit => 1,
        }
    }
}

/// A transaction marker: the one record of a control batch (Kafka's
/// `EndTransactionMarker`). Key: `version: i16 = 0, type: i16`; value:
/// `version: i16 = 0, coordinator_epoch: i32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnMarker {
    pub outcome: TxnOutcome,
    pub coordinator_epoch: i32,
}

const ATTRIBUTE_COMPRESSION_MASK: i16 = 0x07;
const ATTRIBUTE_TRANSACTIONAL: i16 = 0x10;
const ATTRIBUTE_CONTROL: i16 = 0x20;
const CONTROL_KEY_BYTES: usize = 4;
const MARKER_VALUE_BYTES: usize = 6;

/// Reads a zigzag varint at `*at`, moving past it; `None` if cut or too long.
fn get_varint(bytes: &[u8], at: &mut usize) -> Option<i64> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some((value >> 1) as i64 ^ -((value & 1) as i64));
        }
    }
    None
}

/// The transaction marker a whole, valid batch holds, if it is one: a control
/// batch, uncompressed (Kafka never compresses them), whose first record's key is
/// version 0 and type ABORT or COMMIT. Other control batches (Kafka's KRaft
/// records, unknown types) and anything cut or malformed give `None`: this is the
/// one place the engine decodes a record, and only these few bytes of it.
pub fn txn_marker(bytes: &[u8]) -> Option<TxnMarker> {
    let header = BatchHeader::parse(bytes).ok()?;
    if !header.is_control() || header.attributes & ATTRIBUTE_COMPRESSION_MASK != 0 || header.record_count < 1 {
        return None;
    }
    let mut at = BATCH_HEADER_BYTES;
    let _record_length = get_varint(bytes, &mut at)?;
    at += 1; // record attributes
    let _timestamp_delta = get_varint(bytes, &mut at)?;
    let _offset_delta = get_varint(bytes, &mut at)?;
    if get_varint(bytes, &mut at)? != CONTROL_KEY_BYTES as i64 {
        return None;
    }
    let key = bytes.get(at..at + CONTROL_KEY_BYTES)?;
    at += CONTROL_KEY_BYTES;
    let (key_version, control_type) = (be_i16(key, 0), be_i16(key, 2));
    let outcome = match (key_version, control_type) {
        (0, 0) => TxnOutcome::Abort,
        (0, 1) => TxnOutcome::Commit,
        _ => return None,
    };
    if get_varint(bytes, &mut at)? < MARKER_VALUE_BYTES as i64 {
        return None;
    }
    let value = bytes.get(at..at + MARKER_VALUE_BYTES)?;
    Some(TxnMarker { outcome, coordinator_epoch: be_i32(value, 2) })
}

/// Encodes the control batch of a transaction marker (base offset 0, one record,
/// sequence -1), as Kafka's `MemoryRecords.withEndTransactionMarker` does.
pub fn build_marker_batch(
    timestamp: TimestampMs,
    producer_id: ProducerId,
    producer_epoch: ProducerEpoch,
    marker: TxnMarker,
) -> Vec<u8> {
    let mut key = Vec::with_capacity(CONTROL_KEY_BYTES);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&marker.outcome.control_type().to_be_bytes());
    let mut value = Vec::with_capacity(MARKER_VALUE_BYTES);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&marker.coordinator_epoch.to_be_bytes());
    let producer = BatchProducer { producer_id, producer_epoch: producer_epoch.0, base_sequence: -1 };
    let record = RecordSpec { key: Some(&key), value: Some(&value), timestamp_delta_ms: 0 };
    build_batch_with_attributes(timestamp, producer, ATTRIBUTE_TRANSACTIONAL | ATTRIBUTE_CONTROL, &[record])
}

fn build_batch_with_attributes(
    base_timestamp: TimestampMs,
    producer: BatchProducer,
    attributes: i16,
    records: &[RecordSpec<'_>],
) -> Vec<u8> {
    assert!(!records.is_empty(), "a record batch holds at least one record");
    let mut body = Vec::new();
    let mut record = Vec::new();
    let mut max_timestamp = base_timestamp.0;
    for (offset_delta, spec) in records.iter().enumerate() {
        record.clear();
        record.push(0); // record attributes
        put_varint(&mut record, spec.timestamp_delta_ms);
        put_varint(&mut record, offset_delta as i64);
        put_bytes(&mut record, spec.key);
        put_bytes(&mut record, spec.value);
        put_varint(&mut record, 0); // header count
        put_varint(&mut body, record.len() as i64);
        body.extend_from_slice(&record);
        max_timestamp = max_timestamp.max(base_timestamp.0 + spec.timestamp_delta_ms);
    }
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + body.len());
    out.extend_from_slice(&0i64.to_be_bytes());
    out.extend_from_slice(&((BATCH_HEADER_BYTES - BATCH_LENGTH_PREFIX_BYTES + body.len()) as i32).to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes()); // leader epoch
    out.push(MAGIC_V2 as u8);
    out.extend_from_slice(&0u32.to_be_bytes()); // crc, filled below
    out.extend_from_slice(&attributes.to_be_bytes()); // no compression
    out.extend_from_slice(&(records.len() as i32 - 1).to_be_bytes());
    out.extend_from_slice(&base_timestamp.0.to_be_bytes());
    out.extend_from_slice(&max_timestamp.to_be_bytes());
    out.extend_from_slice(&producer.producer_id.0.to_be_bytes());
    out.extend_from_slice(&producer.producer_epoch.to_be_bytes());
    out.extend_from_slice(&producer.base_sequence.to_be_bytes());
    out.extend_from_slice(&(records.len() as i32).to_be_bytes());
    out.extend_from_slice(&body);
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

/// A batch of `count` records whose values are `value_bytes` long, for tests and
/// benchmarks.
pub fn build_value_batch(base_timestamp: TimestampMs, count: usize, value_bytes: usize) -> Vec<u8> {
    let value = vec![0x5a; value_bytes];
    let records: Vec<RecordSpec<'_>> =
        (0..count).map(|_| RecordSpec { key: None, value: Some(&value), timestamp_delta_ms: 0 }).collect();
    build_batch(base_timestamp, BatchProducer::default(), &records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        build_batch(
            TimestampMs(1_700_000_000_000),
            BatchProducer::default(),
            &[
                RecordSpec { key: Some(b"k1"), value: Some(b"hello"), timestamp_delta_ms: 0 },
                RecordSpec { key: None, value: Some(b"world"), timestamp_delta_ms: 7 },
            ],
        )
    }

    #[test]
    fn built_batches_validate_and_stamping_keeps_the_crc() {
        let mut bytes = sample();
        let header = validate(&bytes).expect("valid");
        assert_eq!(header.record_count, 2);
        assert_eq!(header.last_offset_delta, 1);
        assert_eq!(header.max_timestamp, TimestampMs(1_700_000_000_007));
        stamp(&mut bytes, Offset(41), LeaderEpoch(3));
        let header = validate(&bytes).expect("still valid after stamping");
        assert_eq!(header.base_offset, Offset(41));
        assert_eq!(header.last_offset(), Offset(42));
        assert_eq!(header.leader_epoch, LeaderEpoch(3));
    }

    #[test]
    fn every_single_bit_flip_after_the_epoch_is_caught() {
        let bytes = sample();
        for byte in 16..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.clone();
                flipped[byte] ^= 1 << bit;
                assert!(validate(&flipped).is_err(), "flip at byte {byte} bit {bit} not detected");
            }
        }
    }

    #[test]
    fn truncation_and_wrong_magic_are_typed_errors() {
        let bytes = sample();
        assert!(matches!(validate(&bytes[..30]), Err(BatchError::TooShort { .. })));
        assert!(matches!(validate(&bytes[..bytes.len() - 1]), Err(BatchError::LengthMismatch { .. })));
        let mut magic = bytes.clone();
        magic[16] = 1;
        assert_eq!(validate(&magic), Err(BatchError::UnsupportedMagic(1)));
        assert_eq!(scan_step(&bytes[..bytes.len() - 1]), ScanStep::Incomplete);
        assert_eq!(scan_step(&[0u8; 4096]), ScanStep::Invalid);
    }

    #[test]
    fn a_marker_batch_round_trips_and_other_batches_are_no_markers() {
        let marker = TxnMarker { outcome: TxnOutcome::Abort, coordinator_epoch: 7 };
        let bytes = build_marker_batch(TimestampMs(5), ProducerId(42), ProducerEpoch(3), marker);
        let header = validate(&bytes).expect("valid");
        assert!(header.is_control() && header.is_transactional());
        assert_eq!(
            (header.producer_id, header.producer_epoch, header.base_sequence),
            (ProducerId(42), ProducerEpoch(3), Sequence(-1))
        );
        assert_eq!(txn_marker(&bytes), Some(marker));
        let commit = TxnMarker { outcome: TxnOutcome::Commit, coordinator_epoch: 0 };
        assert_eq!(
            txn_marker(&build_marker_batch(TimestampMs(5), ProducerId(1), ProducerEpoch(0), commit)),
            Some(commit)
        );
        assert_eq!(txn_marker(&sample()), None, "a data batch");
        for cut in 0..bytes.len() {
            assert_eq!(txn_marker(&bytes[..cut]).is_some(), cut >= bytes.len() - 1, "cut at {cut}");
        }
    }

    #[test]
    fn split_batches_finds_each_batch_and_rejects_trailing_garbage() {
        let one = sample();
        let mut two = one.clone();
        two.extend_from_slice(&one);
        let found = split_batches(&two).expect("two batches");
        assert_eq!(found.iter().map(|(pos, _)| *pos).collect::<Vec<_>>(), vec![0, one.len()]);
        two.push(0);
        assert!(split_batches(&two).is_err());
    }
}
