//! A Kafka connection from this broker to another one, as a client: what a
//! follower's fetcher uses to ask the leader for records (Fetch with its replica
//! id) and for epoch ends (OffsetForLeaderEpoch). Blocking, with timeouts: a
//! fetcher runs on its own thread, one per leader it follows. Another thread
//! interrupts a request in flight through the connection's [`PeerInterrupt`].

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

/// The largest response accepted (a fetch answers at most `max_bytes`, plus framing).
const RESPONSE_BYTES_MAX: usize = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{address}: {source}")]
    Io { address: String, source: std::io::Error },
    #[error("{address}: {message}")]
    Protocol { address: String, message: String },
}

pub struct PeerConnection {
    stream: TcpStream,
    address: String,
    client_id: StrBytes,
    next_correlation_id: i32,
}

impl PeerConnection {
    /// Connects to `address` (`host:port`), every read and write bounded by `timeout`.
    pub fn connect(address: &str, client_id: &str, timeout: Duration) -> Result<PeerConnection, PeerError> {
        let io = |source| PeerError::Io { address: address.to_string(), source };
        let resolved = address
            .to_socket_addrs()
            .map_err(io)?
            .next()
            .ok_or_else(|| PeerError::Protocol { address: address.to_string(), message: "no address".to_string() })?;
        let stream = TcpStream::connect_timeout(&resolved, timeout).map_err(io)?;
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        Ok(PeerConnection {
            stream,
            address: address.to_string(),
            client_id: StrBytes::from_string(client_id.to_string()),
            next_correlation_id: 1,
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// A handle another thread uses to break this connection (a second descriptor
    /// of its socket).
    pub fn interrupter(&self) -> Result<PeerInterrupt, PeerError> {
        self.stream.try_clone().map(PeerInterrupt).map_err(|source| self.io(source))
    }

    /// Sends `request` at `version` and waits for its response.
    pub fn request<R: Request>(&mut self, request: &R, version: i16) -> Result<R::Response, PeerError> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let frame = self.frame(request, version, correlation_id)?;
        self.stream.write_all(&frame).map_err(|source| self.io(source))?;
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).map_err(|source| self.io(source))?;
        let size = i32::from_be_bytes(size);
        if !(0..=RESPONSE_BYTES_MAX as i32).contains(&size) {
            return Err(self.protocol(format!("response of {size} bytes")));
        }
        let mut body = vec![0u8; size as usize];
        self.stream.read_exact(&mut body).map_err(|source| self.io(source))?;
        let mut rest = Bytes::from(body);
        let header = ResponseHeader::decode(&mut rest, R::Response::header_version(version))
            .map_err(|e| self.protocol(format!("response header: {e}")))?;
        if header.correlation_id != correlation_id {
            return Err(self.protocol(format!("correlation id {} for {correlation_id}", header.correlation_id)));
        }
        R::Response::decode(&mut rest, version).map_err(|e| self.protocol(format!("response: {e}")))
    }

    fn frame<R: Request>(&self, request: &R, version: i16, correlation_id: i32) -> Result<Vec<u8>, PeerError> {
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let header_version = ApiKey::try_from(R::KEY).map_or(1, |key| key.request_header_version(version));
        let mut frame = vec![0u8; 4];
        header.encode(&mut frame, header_version).map_err(|e| self.protocol(format!("request header: {e}")))?;
        request.encode(&mut frame, version).map_err(|e| self.protocol(format!("request: {e}")))?;
        let size = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&size.to_be_bytes());
        Ok(frame)
    }

    fn io(&self, source: std::io::Error) -> PeerError {
        PeerError::Io { address: self.address.clone(), source }
    }

    fn protocol(&self, message: String) -> PeerError {
        PeerError::Protocol { address: self.address.clone(), message }
    }
}

/// Breaks a [`PeerConnection`] from another thread: `shutdown(SHUT_RDWR)` on its
/// socket makes a read or write blocked in it return at once (a read sees the end
/// of the stream, a write an error), and every later one fail, so the connection's
/// thread sees a broken connection instead of waiting out its timeout on a peer
/// that is stopped or cut off.
#[derive(Debug)]
pub struct PeerInterrupt(TcpStream);

impl PeerInterrupt {
    pub fn interrupt(&self) {
        // Fails only when the socket is already shut down or reset: broken either way.
        if let Err(error) = self.0.shutdown(Shutdown::Both) {
            tracing::debug!("interrupting a peer connection: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader};
    use kafka_protocol::protocol::Decodable;
    use std::net::TcpListener;

    /// A peer that answers one ApiVersions request, with `correlation_shift` added
    /// to the correlation id it echoes.
    fn one_answer(correlation_shift: i32) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut size = [0u8; 4];
            stream.read_exact(&mut size).expect("size");
            let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
            stream.read_exact(&mut body).expect("body");
            let mut rest = Bytes::from(body);
            let header = RequestHeader::decode(&mut rest, 2).expect("header");
            assert_eq!(header.client_id.as_deref(), Some("corelog-broker-1"));
            let mut frame = vec![0u8; 4];
            ResponseHeader::default()
                .with_correlation_id(header.correlation_id + correlation_shift)
                .encode(&mut frame, 0)
                .expect("encode");
            ApiVersionsResponse::default().with_throttle_time_ms(7).encode(&mut frame, 3).expect("encode");
            let size = (frame.len() - 4) as i32;
            frame[..4].copy_from_slice(&size.to_be_bytes());
            stream.write_all(&frame).expect("write");
        });
        address
    }

    #[test]
    fn a_request_gets_its_own_response_and_a_wrong_correlation_id_is_an_error() {
        let timeout = Duration::from_secs(5);
        let mut peer = PeerConnection::connect(&one_answer(0), "corelog-broker-1", timeout).expect("connect");
        let response = peer.request(&ApiVersionsRequest::default(), 3).expect("answered");
        assert_eq!(response.throttle_time_ms, 7);
        let mut peer = PeerConnection::connect(&one_answer(1), "corelog-broker-1", timeout).expect("connect");
        let error = peer.request(&ApiVersionsRequest::default(), 3).expect_err("mismatched").to_string();
        assert!(error.contains("correlation id"), "{error}");
        let error = PeerConnection::connect("127.0.0.1:1", "corelog-broker-1", timeout).err().expect("refused");
        assert!(error.to_string().contains("127.0.0.1:1"), "{error}");
    }
}
