//! Arbitrary bytes from a client, through the broker's request path up to the handlers:
//! `codec::read_frame` (as from a connection), then `codec::decode_request` for each
//! frame, then the response envelope (`codec::encode_response`) for what decodes.
//!
//! What must hold for every input:
//! - No panic, no abort, and no allocation over `ALLOCATION_BYTES_MAX` (measured by
//!   `MeasuringAllocator`, which lets even a terabyte-sized request return so that
//!   it fails here as an assertion with the input, not as an abort of the broker).
//! - Framing: a frame is exactly the declared number of bytes after a 4-byte prefix,
//!   never more than the limit; a negative or too-large size, or bytes that end inside
//!   a frame, are the matching `FrameError`; and the frames do not depend on how the
//!   bytes arrive (the same input read one byte per `read` gives the same frames).
//! - Decoding: a decoded request is of an API key and version the broker serves
//!   (`handlers::versions`), its header repeats the frame's first 8 bytes and its body
//!   is of its API key; encoding it again as a client would gives a frame that decodes
//!   to the same request, and re-encoding that gives the same bytes.
//! - Errors say what is true of the frame: `TooShort` only under 8 bytes,
//!   `UnknownApiKey` only for keys not served, `UnsupportedVersion` only for versions
//!   outside the served range, `Malformed` only for served keys and versions.
//! - Responses: the response envelope of any decoded request encodes at the request's
//!   version and parses back with its correlation id; ApiVersions at an unsupported
//!   version gets the v0 answer the connection sends (UNSUPPORTED_VERSION and every
//!   served API).

#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use corelog_broker::kafka::codec::{self, DecodeError, FrameError, FRAME_SIZE_BYTES};
use corelog_broker::kafka::handlers::{self, api_versions};
use kafka_protocol::messages::{ApiKey, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use kafka_protocol::ResponseError;
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/support/kafka_requests.rs"]
mod kafka_requests;
#[path = "../../tests/support/measuring_allocator.rs"]
mod measuring_allocator;

#[global_allocator]
static ALLOCATOR: measuring_allocator::MeasuringAllocator = measuring_allocator::MeasuringAllocator;

/// Small enough that a mutated size prefix often exceeds it.
const REQUEST_BYTES_MAX: usize = 64 << 10;

/// The largest single allocation handling one input may ask for. A frame is at most
/// 64 KiB and every array element takes at least a byte on the wire, so even a frame
/// of one-byte elements that each decode into a few hundred bytes stays far below.
const ALLOCATION_BYTES_MAX: usize = 64 << 20;

fuzz_target!(|data: &[u8]| {
    let ((), largest_bytes) = measuring_allocator::largest_allocation_during(|| {
        let frames = read_frames(data);
        assert_eq!(frames, read_frames_byte_by_byte(data), "framing depends on how the bytes arrive");
        for frame in frames.frames {
            check_decode(frame);
        }
    });
    assert!(
        largest_bytes <= ALLOCATION_BYTES_MAX,
        "handling {} bytes of input asked for one allocation of {largest_bytes} bytes (at most {ALLOCATION_BYTES_MAX})",
        data.len()
    );
});

#[derive(Debug, PartialEq)]
struct Frames {
    frames: Vec<Bytes>,
    /// How reading ended: `None` at a clean end between frames, else the error's text.
    end: Option<String>,
}

/// Reads frames from `data` until its end or the first framing error, checking each.
fn read_frames(data: &[u8]) -> Frames {
    let mut stream = data;
    let mut frames = Vec::new();
    loop {
        let rest = stream;
        let result = futures_lite::future::block_on(codec::read_frame(&mut stream, REQUEST_BYTES_MAX));
        let declared =
            (rest.len() >= FRAME_SIZE_BYTES).then(|| i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]));
        match result {
            Ok(None) => {
                assert!(rest.is_empty(), "a clean end with {} bytes left", rest.len());
                return Frames { frames, end: None };
            }
            Ok(Some(frame)) => {
                let declared = declared.expect("a frame has a whole size prefix");
                assert_eq!(frame.len() as i64, declared as i64, "frame length is not the declared size");
                assert!(frame.len() <= REQUEST_BYTES_MAX, "a frame over the limit was read");
                assert_eq!(
                    &frame[..],
                    &rest[FRAME_SIZE_BYTES..FRAME_SIZE_BYTES + frame.len()],
                    "frame bytes differ from the input"
                );
                assert_eq!(stream.len(), rest.len() - FRAME_SIZE_BYTES - frame.len(), "read past the frame");
                frames.push(frame);
            }
            Err(error) => {
                match &error {
                    FrameError::TooLarge { size_bytes, size_bytes_max } => {
                        assert_eq!(*size_bytes_max, REQUEST_BYTES_MAX);
                        assert_eq!(Some(*size_bytes), declared.map(i64::from), "TooLarge names another size");
                        assert!(*size_bytes > REQUEST_BYTES_MAX as i64, "{size_bytes} bytes is within the limit");
                    }
                    FrameError::NegativeSize(size) => assert_eq!(Some(*size), declared.filter(|d| *d < 0)),
                    FrameError::Truncated => {
                        let whole = declared.is_some_and(|d| d >= 0 && rest.len() - FRAME_SIZE_BYTES >= d as usize);
                        assert!(!whole, "Truncated, yet the whole frame was there");
                    }
                    FrameError::Io(error) => panic!("reading from memory failed: {error}"),
                }
                return Frames { frames, end: Some(error.to_string()) };
            }
        }
    }
}

/// A reader that hands out one byte per `read`, like a connection at its slowest.
struct OneByteAtATime<'a>(&'a [u8]);

impl futures_lite::AsyncRead for OneByteAtATime<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        if buf.is_empty() || self.0.is_empty() {
            return Poll::Ready(Ok(0));
        }
        buf[0] = self.0[0];
        self.0 = &self.0[1..];
        Poll::Ready(Ok(1))
    }
}

fn read_frames_byte_by_byte(data: &[u8]) -> Frames {
    let mut stream = OneByteAtATime(data);
    let mut frames = Vec::new();
    loop {
        match futures_lite::future::block_on(codec::read_frame(&mut stream, REQUEST_BYTES_MAX)) {
            Ok(None) => return Frames { frames, end: None },
            Ok(Some(frame)) => frames.push(frame),
            Err(error) => return Frames { frames, end: Some(error.to_string()) },
        }
    }
}

fn check_decode(frame: Bytes) {
    let raw_key = i16::from_be_bytes([frame.first().copied().unwrap_or(0), frame.get(1).copied().unwrap_or(0)]);
    let served = ApiKey::try_from(raw_key).ok().and_then(handlers::versions);
    match codec::decode_request(frame.clone()) {
        Ok(request) => {
            let api_key = request.api_key;
            let version = request.header.request_api_version;
            let versions = served.expect("decoded a request of an API key the broker does not serve");
            assert_eq!(api_key as i16, raw_key);
            assert!(
                versions.contains(version),
                "decoded {api_key:?} v{version}, outside v{}..=v{}",
                versions.min,
                versions.max
            );
            assert_eq!(request.header.request_api_key, raw_key);
            assert_eq!(version, i16::from_be_bytes([frame[2], frame[3]]));
            assert_eq!(request.header.correlation_id, i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]));
            assert_eq!(kafka_requests::api_key_of(&request.body), Some(api_key), "the body is of another API");

            check_response(api_key, version, request.header.correlation_id, &kafka_requests::default_response(api_key));

            // Encoded again as a client would, it decodes to the same request, and the
            // encoding is a fixed point. Except with an unknown tagged field whose tag
            // is 2^31 or more: kafka-protocol 0.18 keeps it under a negative i32 key,
            // counts it, but does not write it back. The broker ignores unknown tagged
            // fields and never re-encodes a request, so that is no broker bug.
            if format!("{request:?}").contains("unknown_tagged_fields: {-") {
                return;
            }
            let mut again = BytesMut::new();
            request.header.encode(&mut again, api_key.request_header_version(version)).expect("re-encoding the header");
            request.body.encode(&mut again, version).expect("re-encoding a decoded body");
            let again = again.freeze();
            let decoded_again = codec::decode_request(again.clone()).expect("a re-encoded request decodes");
            assert_eq!(decoded_again.header, request.header);
            assert_eq!(decoded_again.body, request.body);
            let mut third = BytesMut::new();
            decoded_again.header.encode(&mut third, api_key.request_header_version(version)).expect("header");
            decoded_again.body.encode(&mut third, version).expect("body");
            assert_eq!(third.freeze(), again, "encoding is not a fixed point");
        }
        Err(DecodeError::TooShort(length)) => {
            assert_eq!(length, frame.len());
            assert!(length < 8, "TooShort for a {length}-byte frame");
        }
        Err(DecodeError::UnknownApiKey(key)) => {
            assert_eq!(key, raw_key);
            assert!(served.is_none(), "key {key} is served, yet UnknownApiKey");
        }
        Err(DecodeError::UnsupportedVersion { api_key, version, versions, correlation_id }) => {
            assert_eq!(api_key as i16, raw_key);
            assert_eq!(Some(versions), served);
            assert_eq!(version, i16::from_be_bytes([frame[2], frame[3]]));
            assert_eq!(correlation_id, i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]));
            assert!(!versions.contains(version), "v{version} is served, yet UnsupportedVersion");
            if api_key == ApiKey::ApiVersions {
                // What the connection answers (KIP-511): v0, UNSUPPORTED_VERSION, the list.
                let body = ResponseKind::ApiVersions(api_versions::unsupported_version(true));
                let response = check_response(ApiKey::ApiVersions, 0, correlation_id, &body);
                let ResponseKind::ApiVersions(response) = response else { unreachable!("decoded as ApiVersions") };
                assert_eq!(response.error_code, ResponseError::UnsupportedVersion.code());
                let listed: Vec<i16> = response.api_keys.iter().map(|k| k.api_key).collect();
                let expected: Vec<i16> = handlers::API_KEYS.iter().map(|&k| k as i16).collect();
                assert_eq!(listed, expected);
            }
        }
        Err(DecodeError::Malformed { api_key, version, .. }) => {
            assert_eq!(api_key as i16, raw_key);
            let versions = served.expect("Malformed for an API key that is not served");
            assert!(versions.contains(version), "Malformed for v{version}, which is not served");
        }
    }
}

/// Encodes `body` as the response frame of (`api_key`, `version`) and parses it back.
fn check_response(api_key: ApiKey, version: i16, correlation_id: i32, body: &ResponseKind) -> ResponseKind {
    let frame = codec::encode_response(api_key, version, correlation_id, body)
        .unwrap_or_else(|e| panic!("encoding the {api_key:?} v{version} response envelope: {e}"));
    let mut rest = frame.to_bytes();
    let size = rest.get_i32();
    assert_eq!(size as usize, rest.len(), "size prefix of a response");
    let header =
        ResponseHeader::decode(&mut rest, api_key.response_header_version(version)).expect("response header parses");
    assert_eq!(header.correlation_id, correlation_id);
    let parsed = ResponseKind::decode(api_key, &mut rest, version).expect("response body parses");
    assert!(!rest.has_remaining(), "{} bytes after the response body", rest.remaining());
    assert_eq!(&parsed, body, "the response does not parse back to itself");
    parsed
}
