//! The records inside one RecordBatch v2, read only as far as ListOffsets needs them:
//! each record's offset and timestamp.
//!
//! Kafka answers ListOffsets by timestamp with the first *record* at or after the
//! time (`FileRecords.searchForTimestamp`) and MAX_TIMESTAMP with the first record
//! holding the largest timestamp (`RecordBatch.offsetOfMaxTimestamp`), so the
//! engine, which otherwise reads batch headers only, decodes the records of the one
//! candidate batch such a lookup lands on. Record layout (varints are zigzag):
//!
//! ```text
//! length: varint  attributes: i8  timestamp_delta: varlong  offset_delta: varint
//! key_length: varint key  value_length: varint value  header_count: varint headers
//! ```
//!
//! Only `length`, `timestamp_delta` and `offset_delta` are read; the rest of each
//! record is skipped. A compressed batch (gzip, snappy, lz4, zstd: attribute bits
//! 0-2) is inflated as a stream, record by record, so memory stays bounded by the
//! codecs' windows whatever the batch inflates to; the one exception is snappy,
//! whose blocks inflate whole, each refused past [`SNAPPY_BLOCK_BYTES_MAX`].
//! The limit: the CPU cost of a lookup grows with the inflated size of the records
//! before the one found.

use std::io::{self, BufReader, Read, Write};

use crate::batch::{BatchError, BatchHeader, BATCH_HEADER_BYTES};
use crate::types::{Offset, TimestampMs};

/// The largest snappy block inflated: librdkafka compresses a whole batch as one
/// raw block and Java clients write 32 KiB xerial blocks, both far below it.
pub const SNAPPY_BLOCK_BYTES_MAX: usize = 64 << 20;

const ATTRIBUTE_COMPRESSION_MASK: i16 = 0x07;
/// Bit 3: the broker's append time is every record's timestamp (`LogAppendTime`).
const ATTRIBUTE_LOG_APPEND_TIME: i16 = 0x08;

/// The framing Java's snappy codec (xerial snappy-java) puts around its blocks:
/// this magic, a version and a compatible version (i32 each), then blocks each
/// prefixed with its compressed length (i32).
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER_BYTES: usize = 16;

/// One record's place and time, as ListOffsets answers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordTime {
    pub offset: Offset,
    pub timestamp: TimestampMs,
}

/// The first record of `batch` (one whole batch, as stored) in offset order for
/// which `wanted` holds, or `None` if no record does. A record that does not decode
/// fails the search with [`BatchError::UndecodableRecords`].
pub fn find_record(batch: &[u8], mut wanted: impl FnMut(RecordTime) -> bool) -> Result<Option<RecordTime>, BatchError> {
    let header = BatchHeader::parse(batch)?;
    let undecodable = |reason: String| BatchError::UndecodableRecords { base_offset: header.base_offset, reason };
    let end = header.size_bytes().min(batch.len());
    let body = batch.get(BATCH_HEADER_BYTES..end).unwrap_or_default();
    let mut records = inflated(header.attributes, body).map_err(|e| undecodable(e.to_string()))?;
    for index in 0..header.record_count.max(0) {
        let record = next_record(&mut records, &header).map_err(|e| undecodable(format!("record {index}: {e}")))?;
        if wanted(record) {
            return Ok(Some(record));
        }
    }
    Ok(None)
}

/// One record of a batch, whole: what the log cleaner ([`crate::cleaner`]) keeps or
/// drops, and writes back into a batch of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's attributes byte (unused by Kafka so far, kept as it was).
    pub attributes: u8,
    pub offset: Offset,
    /// The record's own time: the batch's base timestamp plus its delta, whatever
    /// the batch's timestamp type (a LogAppendTime batch's records report the
    /// batch's max timestamp instead; the cleaner keeps that type).
    pub timestamp: TimestampMs,
    pub key: Option<Vec<u8>>,
    /// `None`: a tombstone.
    pub value: Option<Vec<u8>>,
    /// The headers section as stored: its count and the headers, undecoded.
    pub headers: Vec<u8>,
}

/// Every record of `batch` (one whole batch, as stored), inflated. The inflated
/// records may hold at most `inflated_bytes_max` bytes: a batch that inflates to
/// more fails with [`BatchError::UndecodableRecords`] instead of taking the memory.
pub fn decode_records(batch: &[u8], inflated_bytes_max: usize) -> Result<Vec<Record>, BatchError> {
    let header = BatchHeader::parse(batch)?;
    let undecodable = |reason: String| BatchError::UndecodableRecords { base_offset: header.base_offset, reason };
    let end = header.size_bytes().min(batch.len());
    let body = batch.get(BATCH_HEADER_BYTES..end).unwrap_or_default();
    let mut stream = inflated(header.attributes, body).map_err(|e| undecodable(e.to_string()))?;
    let mut budget = inflated_bytes_max;
    let mut records = Vec::with_capacity(header.record_count.clamp(0, 4096) as usize);
    for index in 0..header.record_count.max(0) {
        let record =
            whole_record(&mut stream, &header, &mut budget).map_err(|e| undecodable(format!("record {index}: {e}")))?;
        records.push(record);
    }
    Ok(records)
}

fn whole_record(stream: &mut dyn Read, header: &BatchHeader, budget: &mut usize) -> io::Result<Record> {
    let length = read_varint(stream)?;
    let length = usize::try_from(length).map_err(|_| invalid(format!("negative record length {length}")))?;
    if length > *budget {
        return Err(invalid(format!("the records inflate to more than the {} bytes allowed", *budget)));
    }
    *budget -= length;
    let mut bytes = vec![0u8; length];
    stream.read_exact(&mut bytes)?;
    let mut input: &[u8] = &bytes;
    let mut attributes = [0u8; 1];
    input.read_exact(&mut attributes)?;
    let timestamp_delta = read_varint(&mut input)?;
    let offset_delta = read_varint(&mut input)?;
    let key = read_nullable_bytes(&mut input)?;
    let value = read_nullable_bytes(&mut input)?;
    Ok(Record {
        attributes: attributes[0],
        offset: Offset(header.base_offset.0.wrapping_add(offset_delta)),
        timestamp: TimestampMs(header.base_timestamp.0.wrapping_add(timestamp_delta)),
        key,
        value,
        headers: input.to_vec(),
    })
}

/// A varint length and that many bytes; length -1 is null.
fn read_nullable_bytes(input: &mut &[u8]) -> io::Result<Option<Vec<u8>>> {
    let length = read_varint(input)?;
    if length < 0 {
        return Ok(None);
    }
    let length = length as usize;
    let Some(bytes) = input.get(..length) else {
        return Err(invalid(format!("a field of {length} bytes runs past its record")));
    };
    *input = &input[length..];
    Ok(Some(bytes.to_vec()))
}

/// The records of a batch as a stream of their uncompressed bytes.
fn inflated<'a>(attributes: i16, body: &'a [u8]) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match attributes & ATTRIBUTE_COMPRESSION_MASK {
        0 => Box::new(body),
        1 => Box::new(BufReader::new(flate2::read::GzDecoder::new(body))),
        2 => Box::new(SnappyBlocks::new(body)),
        3 => Box::new(BufReader::new(lz4_flex::frame::FrameDecoder::new(body))),
        4 => Box::new(BufReader::new(zstd::stream::read::Decoder::with_buffer(body)?)),
        codec => return Err(invalid(format!("unknown compression codec {codec}"))),
    })
}

fn next_record(records: &mut dyn Read, header: &BatchHeader) -> io::Result<RecordTime> {
    let length = read_varint(records)?;
    let length = u64::try_from(length).map_err(|_| invalid(format!("negative record length {length}")))?;
    let mut record = records.take(length);
    let mut attributes = [0u8; 1];
    record.read_exact(&mut attributes)?;
    let timestamp_delta = read_varint(&mut record)?;
    let offset_delta = read_varint(&mut record)?;
    // The key, value and headers are not needed: skipped without being kept.
    let skipped = io::copy(&mut record, &mut io::sink())?;
    if record.limit() > 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the records end {} bytes into a record of {length}", length - record.limit() + skipped),
        ));
    }
    let timestamp = match header.attributes & ATTRIBUTE_LOG_APPEND_TIME != 0 {
        true => header.max_timestamp,
        false => TimestampMs(header.base_timestamp.0.wrapping_add(timestamp_delta)),
    };
    Ok(RecordTime { offset: Offset(header.base_offset.0.wrapping_add(offset_delta)), timestamp })
}

/// A zigzag varint (at most 10 bytes) read from a stream.
fn read_varint(input: &mut dyn Read) -> io::Result<i64> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let mut byte = [0u8; 1];
        input.read_exact(&mut byte)?;
        value |= u64::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
        }
    }
    Err(invalid("a varint longer than 10 bytes".to_string()))
}

fn invalid(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}

/// Snappy-compressed records: one raw block (librdkafka's) or xerial-framed
/// blocks (Java's), inflated one block at a time.
struct SnappyBlocks<'a> {
    /// Compressed bytes not yet inflated.
    input: &'a [u8],
    framed: bool,
    block: Vec<u8>,
    at: usize,
}

impl<'a> SnappyBlocks<'a> {
    fn new(body: &'a [u8]) -> SnappyBlocks<'a> {
        let framed = body.len() >= XERIAL_HEADER_BYTES && body[..XERIAL_MAGIC.len()] == XERIAL_MAGIC;
        let input = if framed { &body[XERIAL_HEADER_BYTES..] } else { body };
        SnappyBlocks { input, framed, block: Vec::new(), at: 0 }
    }

    /// Inflates the next block into `block`; false at the end of the input.
    fn next_block(&mut self) -> io::Result<bool> {
        if self.input.is_empty() {
            return Ok(false);
        }
        let compressed = if self.framed {
            let (length, rest) = self.input.split_first_chunk::<4>().ok_or_else(|| cut("a block length"))?;
            let length =
                usize::try_from(i32::from_be_bytes(*length)).map_err(|_| invalid("a negative block length".into()))?;
            let block = rest.get(..length).ok_or_else(|| cut("a block"))?;
            self.input = &rest[length..];
            block
        } else {
            std::mem::take(&mut self.input)
        };
        let inflated_bytes = snap::raw::decompress_len(compressed).map_err(|e| invalid(e.to_string()))?;
        if inflated_bytes > SNAPPY_BLOCK_BYTES_MAX {
            return Err(invalid(format!(
                "a snappy block inflating to {inflated_bytes} bytes, more than {SNAPPY_BLOCK_BYTES_MAX}"
            )));
        }
        self.block = snap::raw::Decoder::new().decompress_vec(compressed).map_err(|e| invalid(e.to_string()))?;
        self.at = 0;
        Ok(true)
    }
}

fn cut(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, format!("the snappy frame is cut inside {what}"))
}

impl Read for SnappyBlocks<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.block.len() {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.block.len() - self.at);
        out[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// `records` (a batch's records section) compressed with `codec` (attribute bits
/// 0-2; 0 leaves them as they are), as Kafka's codecs write them: gzip; snappy as one raw block
/// (as librdkafka writes it; Java's reader takes raw blocks as well as its own
/// xerial framing); lz4 as an LZ4 frame of independent blocks; zstd as a frame.
pub fn compress(codec: i16, records: &[u8]) -> std::io::Result<Vec<u8>> {
    Ok(match codec {
        0 => records.to_vec(),
        1 => {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(records)?;
            encoder.finish()?
        }
        2 => snap::raw::Encoder::new().compress_vec(records).map_err(std::io::Error::other)?,
        3 => {
            let info = lz4_flex::frame::FrameInfo::new().block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
            encoder.write_all(records)?;
            encoder.finish().map_err(std::io::Error::other)?
        }
        4 => zstd::stream::encode_all(records, 3)?,
        other => return Err(std::io::Error::other(format!("unknown compression codec {other}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{build_batch, stamp, BatchProducer, RecordSpec};
    use crate::types::LeaderEpoch;

    const BASE_TIMESTAMP: i64 = 1_700_000_000_000;

    /// An uncompressed batch at base offset 100 whose records have these timestamp
    /// deltas.
    fn batch_with_deltas(deltas: &[i64]) -> Vec<u8> {
        let values: Vec<Vec<u8>> = (0..deltas.len()).map(|i| vec![i as u8; 50 + i]).collect();
        let records: Vec<RecordSpec<'_>> = deltas
            .iter()
            .zip(&values)
            .map(|(delta, value)| RecordSpec { key: Some(b"key"), value: Some(value), timestamp_delta_ms: *delta })
            .collect();
        let mut batch = build_batch(TimestampMs(BASE_TIMESTAMP), BatchProducer::default(), &records);
        stamp(&mut batch, Offset(100), LeaderEpoch(0));
        batch
    }

    /// `batch` with its records compressed by `codec` (attribute bits 0-2); the CRC
    /// is not recomputed: the search does not check it.
    fn compressed(batch: &[u8], codec: i16) -> Vec<u8> {
        let records = &batch[BATCH_HEADER_BYTES..];
        let body = compress(codec, records).expect("compressed");
        let mut out = batch[..BATCH_HEADER_BYTES].to_vec();
        out.extend_from_slice(&body);
        let batch_length = (out.len() - crate::batch::BATCH_LENGTH_PREFIX_BYTES) as i32;
        out[8..12].copy_from_slice(&batch_length.to_be_bytes());
        let attributes = i16::from_be_bytes([out[21], out[22]]) | codec;
        out[21..23].copy_from_slice(&attributes.to_be_bytes());
        out
    }

    fn at_or_after(batch: &[u8], timestamp: i64) -> Option<(i64, i64)> {
        let found = find_record(batch, |r| r.timestamp.0 >= timestamp).expect("decodes");
        found.map(|r| (r.offset.0, r.timestamp.0))
    }

    #[test]
    fn the_first_record_at_or_after_a_time_is_found_inside_a_batch() {
        let batch = batch_with_deltas(&[0, 10, 5, 20, 30]);
        assert_eq!(at_or_after(&batch, BASE_TIMESTAMP), Some((100, BASE_TIMESTAMP)));
        assert_eq!(at_or_after(&batch, BASE_TIMESTAMP + 6), Some((101, BASE_TIMESTAMP + 10)), "offset order");
        assert_eq!(at_or_after(&batch, BASE_TIMESTAMP + 11), Some((103, BASE_TIMESTAMP + 20)));
        assert_eq!(at_or_after(&batch, BASE_TIMESTAMP + 30), Some((104, BASE_TIMESTAMP + 30)));
        assert_eq!(at_or_after(&batch, BASE_TIMESTAMP + 31), None);
    }

    #[test]
    fn every_codec_gives_the_records_of_the_uncompressed_batch() {
        let deltas: Vec<i64> = (0..100).map(|i| i * 3).collect();
        let plain = batch_with_deltas(&deltas);
        for codec in 1..=4 {
            let batch = compressed(&plain, codec);
            for wanted in [BASE_TIMESTAMP, BASE_TIMESTAMP + 1, BASE_TIMESTAMP + 150, BASE_TIMESTAMP + 297] {
                assert_eq!(at_or_after(&batch, wanted), at_or_after(&plain, wanted), "codec {codec}, time {wanted}");
            }
            assert_eq!(at_or_after(&batch, BASE_TIMESTAMP + 298), None, "codec {codec}");
        }
    }

    #[test]
    fn xerial_framed_snappy_blocks_are_read_in_turn() {
        let deltas: Vec<i64> = (0..40).collect();
        let plain = batch_with_deltas(&deltas);
        let records = &plain[BATCH_HEADER_BYTES..];
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&1i32.to_be_bytes());
        framed.extend_from_slice(&1i32.to_be_bytes());
        // Blocks of 100 bytes: records straddle them.
        for chunk in records.chunks(100) {
            let block = snap::raw::Encoder::new().compress_vec(chunk).expect("snappy");
            framed.extend_from_slice(&(block.len() as i32).to_be_bytes());
            framed.extend_from_slice(&block);
        }
        let mut batch = plain[..BATCH_HEADER_BYTES].to_vec();
        batch.extend_from_slice(&framed);
        batch[21..23].copy_from_slice(&2i16.to_be_bytes());
        let length = (batch.len() - crate::batch::BATCH_LENGTH_PREFIX_BYTES) as i32;
        batch[8..12].copy_from_slice(&length.to_be_bytes());
        assert_eq!(at_or_after(&batch, BASE_TIMESTAMP + 39), Some((139, BASE_TIMESTAMP + 39)));
    }

    #[test]
    fn log_append_time_makes_the_batch_max_timestamp_every_records() {
        let mut batch = batch_with_deltas(&[0, 10, 20]);
        batch[21..23].copy_from_slice(&ATTRIBUTE_LOG_APPEND_TIME.to_be_bytes());
        assert_eq!(at_or_after(&batch, BASE_TIMESTAMP + 1), Some((100, BASE_TIMESTAMP + 20)));
    }

    #[test]
    fn cut_or_garbled_records_fail_the_search_without_panicking() {
        let batch = batch_with_deltas(&[0, 10, 20]);
        let cut = &batch[..batch.len() - 10];
        let error = find_record(cut, |r| r.timestamp.0 > BASE_TIMESTAMP + 15).expect_err("cut");
        assert!(matches!(error, BatchError::UndecodableRecords { base_offset: Offset(100), .. }), "{error}");
        let mut bad_codec = batch.clone();
        bad_codec[21..23].copy_from_slice(&7i16.to_be_bytes());
        assert!(find_record(&bad_codec, |_| true).is_err());
        let garbled_gzip = compressed(&batch, 1);
        let mut garbled_gzip = garbled_gzip.clone();
        let last = garbled_gzip.len() - 20;
        garbled_gzip[last..].fill(0xff);
        assert!(find_record(&garbled_gzip, |_| false).is_err());
    }

    #[test]
    fn a_snappy_block_claiming_a_huge_size_is_refused_before_inflating() {
        let batch = batch_with_deltas(&[0]);
        let mut huge = batch[..BATCH_HEADER_BYTES].to_vec();
        // A snappy block starts with its inflated length as a varint: 1 GiB here.
        let mut length = Vec::new();
        let mut n = 1u64 << 30;
        while n >= 0x80 {
            length.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        length.push(n as u8);
        huge.extend_from_slice(&length);
        huge.extend_from_slice(&[0; 16]);
        huge[21..23].copy_from_slice(&2i16.to_be_bytes());
        let error = find_record(&huge, |_| true).expect_err("refused");
        assert!(error.to_string().contains("inflating to 1073741824 bytes"), "{error}");
    }
}
