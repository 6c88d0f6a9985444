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

pub const PAYLOAD_HEADER_BYTES: usize = 28;
const MAGIC: &[u8; 4] = b"CLG1";

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

    /// The header of a payload, or `None` if it was not sent by the harness.
    pub fn parse(payload: &[u8]) -> Option<PayloadHeader> {
        if payload.len() < PAYLOAD_HEADER_BYTES || &payload[..4] != MAGIC {
            return None;
        }
        let field = |at: usize| u64::from_be_bytes(payload[at..at + 8].try_into().expect("8 bytes"));
        Some(PayloadHeader { producer_id: field(4), sequence: field(12), send_time_us: field(20) as i64 })
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
}
