//! Framing and the request/response envelope.
//!
//! A Kafka frame is a big-endian `i32` size followed by that many bytes. A request
//! starts with its header (api key, api version, correlation id, client id, and
//! tagged fields from header v2); a response starts with the correlation id (and
//! tagged fields from header v1). The header version of each depends on the API key
//! and version, which `kafka-protocol` knows.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncReadExt};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

use super::frame::{ChunkedBuf, ResponseFrame};
use super::handlers::{self, Versions};

/// Size of the frame length prefix.
pub const FRAME_SIZE_BYTES: usize = 4;

/// Why a connection must be closed while reading a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {size_bytes} bytes exceeds the maximum request size of {size_bytes_max} bytes")]
    TooLarge { size_bytes: i64, size_bytes_max: usize },
    #[error("frame size {0} is negative")]
    NegativeSize(i32),
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("reading from the connection: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame body. `Ok(None)`: the peer closed the connection between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    size_bytes_max: usize,
) -> Result<Option<Bytes>, FrameError> {
    read_frame_into(reader, &mut BytesMut::new(), size_bytes_max).await
}

/// Room taken for a frame before any of its body arrived: a size prefix alone
/// commits no more than this, whatever it declares.
pub const FRAME_ROOM_FIRST_BYTES: usize = 1 << 20;
/// Bytes zeroed ahead of each read: the body's room is written only as it arrives.
const READ_AHEAD_BYTES: usize = 256 << 10;

/// [`read_frame`] into `buffer`, a connection's own: the body is read into its
/// room, which is reused for the next frame once the previous one is dropped
/// (instead of a fresh allocation per frame, whose pages the kernel must fault in
/// and clear), and which grows only as the body arrives, from at most
/// [`FRAME_ROOM_FIRST_BYTES`].
pub async fn read_frame_into<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut BytesMut,
    size_bytes_max: usize,
) -> Result<Option<Bytes>, FrameError> {
    let mut size = [0u8; FRAME_SIZE_BYTES];
    let mut filled = 0;
    while filled < FRAME_SIZE_BYTES {
        let read = reader.read(&mut size[filled..]).await?;
        if read == 0 {
            return if filled == 0 { Ok(None) } else { Err(FrameError::Truncated) };
        }
        filled += read;
    }
    let size = i32::from_be_bytes(size);
    if size < 0 {
        return Err(FrameError::NegativeSize(size));
    }
    if size as usize > size_bytes_max {
        return Err(FrameError::TooLarge { size_bytes: size as i64, size_bytes_max });
    }
    let size = size as usize;
    buffer.clear();
    buffer.reserve(size.min(FRAME_ROOM_FIRST_BYTES));
    while buffer.len() < size {
        let filled = buffer.len();
        buffer.resize(filled + (size - filled).min(READ_AHEAD_BYTES), 0);
        let read = reader.read(&mut buffer[filled..]).await?;
        buffer.truncate(filled + read);
        if read == 0 {
            return Err(FrameError::Truncated);
        }
    }
    Ok(Some(buffer.split().freeze()))
}

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    pub api_key: ApiKey,
    pub header: RequestHeader,
    pub body: RequestKind,
}

/// A request that cannot be served. Every variant but `ApiVersions` closes the
/// connection, as Kafka does; the variants carry what the log line needs.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {0} bytes is too short for a request header")]
    TooShort(usize),
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("{api_key:?} v{version} is not supported (this broker serves v{}..=v{})", versions.min, versions.max)]
    UnsupportedVersion { api_key: ApiKey, version: i16, versions: Versions, correlation_id: i32 },
    #[error("malformed {api_key:?} v{version} request: {reason}")]
    Malformed { api_key: ApiKey, version: i16, reason: String },
}

/// Decodes a frame body into a request the broker serves.
pub fn decode_request(mut frame: Bytes) -> Result<Request, DecodeError> {
    if frame.len() < 8 {
        return Err(DecodeError::TooShort(frame.len()));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key = ApiKey::try_from(raw_key).map_err(|_| DecodeError::UnknownApiKey(raw_key))?;
    let versions = handlers::versions(api_key).ok_or(DecodeError::UnknownApiKey(raw_key))?;
    if !versions.contains(version) {
        return Err(DecodeError::UnsupportedVersion { api_key, version, versions, correlation_id });
    }
    let malformed = |reason: String| DecodeError::Malformed { api_key, version, reason };
    let header = RequestHeader::decode(&mut frame, api_key.request_header_version(version))
        .map_err(|e| malformed(format!("header: {e}")))?;
    let body = RequestKind::decode(api_key, &mut frame, version).map_err(|e| malformed(e.to_string()))?;
    // Bytes after the body are ignored, as Kafka ignores them: librdkafka 2.12 sends
    // Metadata v12 with three more bytes than the schema has.
    if frame.has_remaining() {
        tracing::trace!("{api_key:?} v{version}: ignoring {} bytes after the body", frame.remaining());
    }
    Ok(Request { api_key, header, body })
}

/// Encodes a response frame: size prefix, response header, body. A Fetch's record
/// batches are not copied: the frame refers to them (see [`super::frame`]).
pub fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<ResponseFrame, String> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = api_key.response_header_version(version);
    let mut head = BytesMut::with_capacity(FRAME_SIZE_BYTES + RESPONSE_HEADER_BYTES_MAX + SMALL_BODY_BYTES);
    head.put_i32(0);
    header.encode(&mut head, header_version).map_err(|e| format!("encoding {api_key:?} response header: {e}"))?;
    let body_error = |e| format!("encoding {api_key:?} v{version} response: {e}");
    let ResponseKind::Fetch(fetch) = body else {
        body.encode(&mut head, version).map_err(body_error)?;
        let size = (head.len() - FRAME_SIZE_BYTES) as i32;
        head[..FRAME_SIZE_BYTES].copy_from_slice(&size.to_be_bytes());
        return Ok(ResponseFrame::from(head.freeze()));
    };
    // The size is known before the body is encoded, so the prefix is written first
    // and the record batches can follow as parts of their own.
    let body_size = fetch.compute_size(version).map_err(body_error)?;
    let size = head.len() - FRAME_SIZE_BYTES + body_size;
    head[..FRAME_SIZE_BYTES].copy_from_slice(&(size as i32).to_be_bytes());
    let records: Vec<Bytes> =
        fetch.responses.iter().flat_map(|t| &t.partitions).filter_map(|p| p.records.clone()).collect();
    let shared_bytes: usize = records.iter().map(Bytes::len).sum();
    let mut frame = ChunkedBuf::new(head.len() + body_size.saturating_sub(shared_bytes), records);
    frame.put_slice(&head);
    fetch.encode(&mut frame, version).map_err(body_error)?;
    let frame = frame.finish();
    if frame.len() != FRAME_SIZE_BYTES + size {
        return Err(format!(
            "{api_key:?} v{version}: encoded {} bytes, computed {size}",
            frame.len() - FRAME_SIZE_BYTES
        ));
    }
    Ok(frame)
}

/// Room for a response header: a correlation id and, flexible, its tagged fields.
const RESPONSE_HEADER_BYTES_MAX: usize = 16;
/// First room for a response body other than a Fetch's (grown if it needs more).
const SMALL_BODY_BYTES: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};
    use kafka_protocol::protocol::StrBytes;

    fn frame_of(api_key: ApiKey, version: i16, body: &RequestKind) -> Bytes {
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str("test")));
        let mut frame = BytesMut::new();
        header.encode(&mut frame, api_key.request_header_version(version)).expect("header");
        body.encode(&mut frame, version).expect("body");
        frame.freeze()
    }

    #[test]
    fn decodes_what_a_client_encodes() {
        let body = RequestKind::Metadata(MetadataRequest::default().with_topics(None));
        let request = decode_request(frame_of(ApiKey::Metadata, 9, &body)).expect("decodes");
        assert_eq!(request.api_key, ApiKey::Metadata);
        assert_eq!(request.header.correlation_id, 7);
        assert_eq!(request.header.client_id.as_deref(), Some("test"));
    }

    #[test]
    fn rejects_unknown_keys_short_frames_and_unsupported_versions_but_not_trailing_bytes() {
        assert!(matches!(decode_request(Bytes::from_static(&[0, 1, 2])), Err(DecodeError::TooShort(3))));
        assert!(matches!(
            decode_request(Bytes::from_static(&[0x7f, 0x7f, 0, 0, 0, 0, 0, 1])),
            Err(DecodeError::UnknownApiKey(0x7f7f))
        ));
        let body = RequestKind::ApiVersions(ApiVersionsRequest::default());
        let mut future_version = BytesMut::from(&frame_of(ApiKey::ApiVersions, 3, &body)[..]);
        future_version[2..4].copy_from_slice(&99i16.to_be_bytes());
        assert!(matches!(
            decode_request(future_version.freeze()),
            Err(DecodeError::UnsupportedVersion { correlation_id: 7, .. })
        ));
        let mut trailing = BytesMut::from(&frame_of(ApiKey::ApiVersions, 2, &body)[..]);
        trailing.put_slice(&[0, 0, 0]);
        assert!(decode_request(trailing.freeze()).is_ok(), "trailing bytes are ignored, as Kafka does");
        let truncated = frame_of(ApiKey::Metadata, 9, &RequestKind::Metadata(MetadataRequest::default()));
        assert!(matches!(decode_request(truncated.slice(..truncated.len() - 1)), Err(DecodeError::Malformed { .. })));
    }

    #[test]
    fn frames_over_the_limit_and_cut_frames_are_errors() {
        let mut oversized: &[u8] = &[0, 0, 1, 0, 1, 2];
        let result = futures_lite::future::block_on(read_frame(&mut oversized, 255));
        assert!(matches!(result, Err(FrameError::TooLarge { size_bytes: 256, .. })));
        let mut cut: &[u8] = &[0, 0, 0, 4, 1, 2];
        assert!(matches!(futures_lite::future::block_on(read_frame(&mut cut, 255)), Err(FrameError::Truncated)));
        let mut negative: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            futures_lite::future::block_on(read_frame(&mut negative, 255)),
            Err(FrameError::NegativeSize(-1))
        ));
        let mut empty: &[u8] = &[];
        assert!(matches!(futures_lite::future::block_on(read_frame(&mut empty, 255)), Ok(None)));
        let mut whole: &[u8] = &[0, 0, 0, 2, 9, 8, 0];
        assert_eq!(
            futures_lite::future::block_on(read_frame(&mut whole, 255)).expect("ok"),
            Some(Bytes::from_static(&[9, 8]))
        );
    }

    #[test]
    fn a_frame_takes_room_as_its_body_arrives_and_reuses_it_once_dropped() {
        let mut buffer = BytesMut::new();
        // A 100 MiB size prefix and 10 bytes: the room taken stays bounded.
        let mut declared: Vec<u8> = (100i32 << 20).to_be_bytes().to_vec();
        declared.extend_from_slice(&[1; 10]);
        let result = futures_lite::future::block_on(read_frame_into(&mut declared.as_slice(), &mut buffer, 200 << 20));
        assert!(matches!(result, Err(FrameError::Truncated)), "{result:?}");
        assert!(buffer.capacity() <= FRAME_ROOM_FIRST_BYTES, "took {} bytes", buffer.capacity());
        // Two frames of 3 MiB in a row: bodies intact, the room of the first (dropped) reused.
        let body: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
        let mut stream = Vec::new();
        for _ in 0..2 {
            stream.extend_from_slice(&(body.len() as i32).to_be_bytes());
            stream.extend_from_slice(&body);
        }
        let mut reader = stream.as_slice();
        let first = futures_lite::future::block_on(read_frame_into(&mut reader, &mut buffer, 200 << 20));
        let first = first.expect("read").expect("a frame");
        assert_eq!(first, body);
        let first_at = first.as_ptr();
        drop(first);
        let second = futures_lite::future::block_on(read_frame_into(&mut reader, &mut buffer, 200 << 20));
        let second = second.expect("read").expect("a frame");
        assert_eq!(second, body);
        assert_eq!(second.as_ptr(), first_at, "the second frame is read into the first one's room");
    }

    #[test]
    fn a_fetch_response_frame_sends_the_record_batches_from_their_own_buffers() {
        use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
        use kafka_protocol::messages::FetchResponse;
        let records: Vec<Bytes> = (0..3u8).map(|i| Bytes::from(vec![i; (1 << 20) + i as usize])).collect();
        let partitions = records
            .iter()
            .enumerate()
            .map(|(i, r)| PartitionData::default().with_partition_index(i as i32).with_records(Some(r.clone())));
        let mut partitions: Vec<PartitionData> = partitions.collect();
        partitions
            .push(PartitionData::default().with_partition_index(3).with_records(Some(Bytes::from_static(b"small"))));
        let topic = FetchableTopicResponse::default().with_partitions(partitions);
        let body = ResponseKind::Fetch(FetchResponse::default().with_responses(vec![topic]));
        for version in [4, 12, 16] {
            let frame = encode_response(ApiKey::Fetch, version, 9, &body).expect("encodes");
            let whole = frame.to_bytes();
            assert_eq!(&whole[..4], &((whole.len() - 4) as i32).to_be_bytes(), "v{version}: the size prefix");
            // The same bytes as one buffer encoded by kafka-protocol.
            let mut expected = BytesMut::new();
            expected.put_i32(0);
            let header = ResponseHeader::default().with_correlation_id(9);
            header.encode(&mut expected, ApiKey::Fetch.response_header_version(version)).expect("header");
            body.encode(&mut expected, version).expect("body");
            assert_eq!(&whole[4..], &expected[4..], "v{version}");
            for batch in &records {
                let sent =
                    frame.parts().iter().any(|part| part.as_ptr() == batch.as_ptr() && part.len() == batch.len());
                assert!(sent, "v{version}: a record batch was copied");
            }
        }
    }
}
