//! What every message the harness sends carries at the start of its payload, so a
//! consumer can tell who sent it, which one it is, and when it left.
//!
//! Layout (big-endian), [`PAYLOAD_HEADER_BYTES`] bytes, then filler up to the
//! workload's message size:
//!
//! ```text
//! offset  size  field
//!      0     4  magic "CLG1"
//!      4     8  producer id (unique within the run)
//!     12     8  sequence number (per producer, from 0)
//!     20     8  send time, µs since the Unix epoch (the sender's clock)
//! ```
//!
//! Every client of a run is on this machine, so send and receive clocks agree and
//! the end-to-end latency is receive time minus send time. A message smaller than
//! the header is sent with the header anyway (it is the measurement's floor).
//!
//! The exactly-once stage copies each input message to its output unchanged,
//! except in a transaction it means to abort (`abortRate`): there the magic
//! becomes "CLGA", so a reader that is shown such a record has read an aborted
//! transaction, whatever else happened to the message.

pub const PAYLOAD_HEADER_BYTES: usize = 28;
const MAGIC: &[u8; 4] = b"CLG1";
const MAGIC_ABORTED: &[u8; 4] = b"CLGA";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadHeader {
    pub producer_id: u64,
    pub sequence: u64,
    pub send_time_us: i64,
}

impl PayloadHeader {
    /// Writes the header over the start of `payload` (which must hold it).
    pub fn stamp(&self, payload: &mut [u8]) {
        assert!(payload.len() >= PAYLOAD_HEADER_BYTES, "payload shorter than its header");
        payload[..4].copy_from_slice(MAGIC);
        payload[4..12].copy_from_slice(&self.producer_id.to_be_bytes());
        payload[12..20].copy_from_slice(&self.sequence.to_be_bytes());
        payload[20..28].copy_from_slice(&self.send_time_us.to_be_bytes());
    }

    /// The header of a payload, or `None` if it was not sent by the harness (or is
    /// a copy written by a transaction meant to abort: see [`PayloadHeader::parse_aborted`]).
    pub fn parse(payload: &[u8]) -> Option<PayloadHeader> {
        if payload.len() < PAYLOAD_HEADER_BYTES || &payload[..4] != MAGIC {
            return None;
        }
        Some(Self::fields(payload))
    }

    /// The header of a copy the exactly-once stage wrote in a transaction it meant
    /// to abort, or `None` for any other payload.
    pub fn parse_aborted(payload: &[u8]) -> Option<PayloadHeader> {
        if payload.len() < PAYLOAD_HEADER_BYTES || &payload[..4] != MAGIC_ABORTED {
            return None;
        }
        Some(Self::fields(payload))
    }

    /// Marks a harness payload as written by a transaction meant to abort; other
    /// payloads are left as they are.
    pub fn mark_aborted(payload: &mut [u8]) {
        if payload.len() >= PAYLOAD_HEADER_BYTES && &payload[..4] == MAGIC {
            payload[..4].copy_from_slice(MAGIC_ABORTED);
        }
    }

    fn fields(payload: &[u8]) -> PayloadHeader {
        let field = |at: usize| u64::from_be_bytes(payload[at..at + 8].try_into().expect("8 bytes"));
        PayloadHeader { producer_id: field(4), sequence: field(12), send_time_us: field(20) as i64 }
    }
}

/// Microseconds since the Unix epoch on this machine's clock.
pub fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamped_header_parses_back_and_foreign_payloads_do_not() {
        let header = PayloadHeader { producer_id: 7, sequence: u64::MAX - 1, send_time_us: 1_700_000_000_000_000 };
        let mut payload = vec![0xab; 100];
        header.stamp(&mut payload);
        assert_eq!(PayloadHeader::parse(&payload), Some(header));
        assert_eq!(payload[PAYLOAD_HEADER_BYTES], 0xab, "filler after the header is untouched");
        assert_eq!(PayloadHeader::parse(&payload[..PAYLOAD_HEADER_BYTES - 1]), None);
        assert_eq!(PayloadHeader::parse(b"not a harness message, but long enough"), None);
    }

    #[test]
    fn a_payload_marked_aborted_parses_only_as_aborted() {
        let header = PayloadHeader { producer_id: 3, sequence: 9, send_time_us: 5 };
        let mut payload = vec![0; 40];
        header.stamp(&mut payload);
        assert_eq!(PayloadHeader::parse_aborted(&payload), None, "an ordinary copy is not an aborted one");
        PayloadHeader::mark_aborted(&mut payload);
        assert_eq!(PayloadHeader::parse(&payload), None);
        assert_eq!(PayloadHeader::parse_aborted(&payload), Some(header));
        let mut foreign = b"not a harness message, but long enough".to_vec();
        PayloadHeader::mark_aborted(&mut foreign);
        assert_eq!(&foreign[..], b"not a harness message, but long enough", "foreign payloads are left alone");
    }
}
