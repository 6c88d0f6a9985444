//! One raw Kafka connection for the tests that speak the protocol themselves, with
//! no client library in between: requests encoded exactly as written (and raw bytes
//! where a test needs them), responses decoded and checked against their
//! correlation ids.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

use super::BrokerProcess;

/// How long a read or write may block before the test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer a test expects (a sanity bound on the size prefix).
const RESPONSE_BYTES_MAX: usize = 1 << 20;

pub struct RawConnection {
    pub stream: TcpStream,
    /// The address the broker sees for this connection, as it appears in its log.
    pub peer: String,
    next_correlation_id: i32,
}

impl RawConnection {
    pub fn open(broker: &BrokerProcess) -> RawConnection {
        let stream = TcpStream::connect_timeout(&broker.address(), IO_TIMEOUT).unwrap_or_else(|e| {
            panic!(
                "connecting to the broker at {}: {e}: is it still running? Its last log lines:\n{}",
                broker.address(),
                broker.log_tail()
            )
        });
        RawConnection::from_stream(stream)
    }

    /// A connection over a stream the test connected itself.
    pub fn from_stream(stream: TcpStream) -> RawConnection {
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("write timeout");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let peer = stream.local_addr().expect("local address").to_string();
        RawConnection { stream, peer, next_correlation_id: 1 }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap_or_else(|e| panic!("{}: writing {} bytes: {e}", self.peer, bytes.len()));
    }

    /// Sends `request` at `version` as a client does; returns its correlation id.
    pub fn send<R: Request>(&mut self, request: &R, version: i16) -> i32 {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let frame = request_frame(R::KEY, version, correlation_id, |frame| request.encode(frame, version));
        self.send_raw(&frame);
        correlation_id
    }

    /// Reads one response frame: the bytes after its size prefix (header and body).
    pub fn receive_frame(&mut self, what: &str) -> Vec<u8> {
        self.receive_frame_within(what, RESPONSE_BYTES_MAX)
    }

    /// [`RawConnection::receive_frame`] of an answer that may be up to `bytes_max` long.
    pub fn receive_frame_within(&mut self, what: &str, bytes_max: usize) -> Vec<u8> {
        let mut size = [0u8; 4];
        self.stream
            .read_exact(&mut size)
            .unwrap_or_else(|e| panic!("{}: reading the size of the answer to {what}: {e}", self.peer));
        let size = i32::from_be_bytes(size);
        assert!((0..=bytes_max as i64).contains(&(size as i64)), "{}: answer to {what} has size {size}", self.peer);
        let mut frame = vec![0u8; size as usize];
        self.stream
            .read_exact(&mut frame)
            .unwrap_or_else(|e| panic!("{}: reading the answer to {what}: {e}", self.peer));
        frame
    }

    /// Reads the response to the request with `correlation_id`, sent at `version`.
    pub fn receive<R: Request>(&mut self, correlation_id: i32, version: i16) -> R::Response {
        self.receive_within::<R>(correlation_id, version, RESPONSE_BYTES_MAX)
    }

    /// [`RawConnection::receive`] of an answer that may be up to `bytes_max` long.
    pub fn receive_within<R: Request>(&mut self, correlation_id: i32, version: i16, bytes_max: usize) -> R::Response {
        let what = format!("{:?} v{version}", ApiKey::try_from(R::KEY).expect("a known key"));
        let frame = self.receive_frame_within(&what, bytes_max);
        let mut rest = frame.as_slice();
        let header =
            ResponseHeader::decode(&mut rest, R::Response::header_version(version)).expect("a response header");
        assert_eq!(header.correlation_id, correlation_id, "{}: correlation id of the answer to {what}", self.peer);
        let response = R::Response::decode(&mut rest, version)
            .unwrap_or_else(|e| panic!("{}: decoding the answer to {what}: {e}", self.peer));
        assert!(rest.is_empty(), "{}: {} bytes after the answer to {what}", self.peer, rest.len());
        response
    }

    pub fn request<R: Request>(&mut self, request: &R, version: i16) -> R::Response {
        let correlation_id = self.send(request, version);
        self.receive::<R>(correlation_id, version)
    }

    /// Reads until the broker closes the connection; fails if it sends anything or
    /// keeps the connection open past `IO_TIMEOUT`.
    pub fn expect_closed(&mut self, after: &str) {
        let mut buffer = [0u8; 256];
        match self.stream.read(&mut buffer) {
            Ok(0) => {}
            Ok(read) => {
                panic!(
                    "{}: after {after}, the broker sent {read} bytes instead of closing: {:?}",
                    self.peer,
                    &buffer[..read]
                )
            }
            // The broker closed with bytes of ours still unread: a reset.
            Err(error) if matches!(error.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => {}
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("{}: the broker kept the connection open {IO_TIMEOUT:?} after {after}", self.peer)
            }
            Err(error) => panic!("{}: after {after}, reading failed with {error} instead of a close", self.peer),
        }
    }
}

/// A request frame with its size prefix; `encode_body` writes the body.
pub fn request_frame(
    api_key: i16,
    version: i16,
    correlation_id: i32,
    encode_body: impl FnOnce(&mut Vec<u8>) -> anyhow::Result<()>,
) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(api_key)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("corelog-tests")));
    // Unknown keys and versions get the oldest header that still has a client id.
    let header_version = ApiKey::try_from(api_key).map_or(1, |key| key.request_header_version(version.clamp(0, 20)));
    let mut frame = vec![0u8; 4];
    header.encode(&mut frame, header_version).expect("encoding a request header");
    encode_body(&mut frame).expect("encoding a request body");
    let size = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    frame
}
