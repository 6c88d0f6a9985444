//! The byte layouts of the raft store's files; no IO. Integers are big-endian, as in
//! Kafka's formats; checksums are CRC32C (`corelog_engine::hash::crc32c`).
//!
//! `entries.log`: a 24-byte header, then records back to back.
//!
//! ```text
//! header   0  8  magic "CLRAFTLG"
//!          8  4  format version (1)
//!         12  8  generation (of the snapshot this log continues; see the module doc)
//!         20  4  CRC32C of bytes [0, 20)
//! record   0  4  payload length, top bit set on the last record of an append call
//!          4  4  previous CRC: the `crc` of the record before, or the header's CRC
//!          8  4  crc: CRC32C of bytes [0, 8) and the payload
//!         12  n  payload: one raft-rs `Entry`, protobuf-encoded
//! ```
//!
//! Each record checks alone (its `crc`) and checks its place (its previous CRC must be
//! the `crc` of the record before it), so bytes of two histories (a conflict's old
//! records and its new ones) never pass for one log, and valid records can be found
//! past a damaged one, which is how recovery tells a torn tail from damage.
//!
//! `raftstate` and `snapshot`: one framed payload each, always replaced whole.
//!
//! ```text
//!          0  8  magic "CLRAFTST" (raftstate) or "CLRAFTSN" (snapshot)
//!          8  4  format version (1)
//!         12  4  payload length
//!         16  4  CRC32C of bytes [0, 16) and the payload
//!         20  n  payload
//! raftstate payload: generation u64 | hard state length u32 | HardState | ConfState (protobuf)
//! snapshot payload:  generation u64 | Snapshot (protobuf: metadata with conf state, and data)
//! ```

use corelog_engine::hash::{crc32c, crc32c_append};
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};

pub(super) const FORMAT_VERSION: u32 = 1;
pub(super) const ENTRIES_MAGIC: [u8; 8] = *b"CLRAFTLG";
pub(super) const RAFT_STATE_MAGIC: [u8; 8] = *b"CLRAFTST";
pub(super) const SNAPSHOT_MAGIC: [u8; 8] = *b"CLRAFTSN";
pub(super) const ENTRIES_HEADER_BYTES: usize = 24;
pub(super) const RECORD_HEADER_BYTES: usize = 12;
const SMALL_FILE_HEADER_BYTES: usize = 20;
/// The top bit of a record's length word: this record ends an append call, which was
/// synced before any later record was written.
const SYNC_POINT_FLAG: u32 = 1 << 31;
/// A record's payload is at most 2 GiB - 1 (the length word's other 31 bits).
pub(super) const RECORD_PAYLOAD_BYTES_MAX: usize = (SYNC_POINT_FLAG - 1) as usize;

/// `entries.log`'s header for `generation`, and its CRC (the first record's previous CRC).
pub(super) fn encode_entries_header(generation: u64) -> ([u8; ENTRIES_HEADER_BYTES], u32) {
    let mut header = [0u8; ENTRIES_HEADER_BYTES];
    header[0..8].copy_from_slice(&ENTRIES_MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
    header[12..20].copy_from_slice(&generation.to_be_bytes());
    let crc = crc32c(&header[0..20]);
    header[20..24].copy_from_slice(&crc.to_be_bytes());
    (header, crc)
}

/// The generation and CRC of an `entries.log` header, or why the bytes are not one.
pub(super) fn decode_entries_header(bytes: &[u8]) -> Result<(u64, u32), String> {
    if bytes.len() < ENTRIES_HEADER_BYTES {
        return Err(format!("{} bytes is shorter than the {ENTRIES_HEADER_BYTES}-byte header", bytes.len()));
    }
    if bytes[0..8] != ENTRIES_MAGIC {
        return Err(format!("the magic is {:?}, not {:?}", &bytes[0..8], ENTRIES_MAGIC));
    }
    let version = be_u32(&bytes[8..12]);
    if version != FORMAT_VERSION {
        return Err(format!("format version {version} is not {FORMAT_VERSION}, the one this broker reads"));
    }
    let stored = be_u32(&bytes[20..24]);
    let computed = crc32c(&bytes[0..20]);
    if stored != computed {
        return Err(format!("header CRC32C {stored:#010x} does not match its bytes ({computed:#010x})"));
    }
    Ok((be_u64(&bytes[12..20]), stored))
}

/// Appends one record holding `payload` to `out`; returns its CRC.
pub(super) fn encode_record(out: &mut Vec<u8>, previous_crc: u32, payload: &[u8], sync_point: bool) -> u32 {
    assert!(payload.len() <= RECORD_PAYLOAD_BYTES_MAX, "a {}-byte entry does not fit a record", payload.len());
    let length = payload.len() as u32 | if sync_point { SYNC_POINT_FLAG } else { 0 };
    let start = out.len();
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&previous_crc.to_be_bytes());
    let crc = crc32c_append(crc32c(&out[start..start + 8]), payload);
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(payload);
    crc
}

/// One record read alone (its own CRC checked, not its place in the chain).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum RecordRead<'a> {
    Valid(Record<'a>),
    /// Fewer bytes than the header, or than the length it declares.
    Incomplete,
    CrcMismatch {
        stored: u32,
        computed: u32,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub(super) struct Record<'a> {
    pub payload: &'a [u8],
    pub previous_crc: u32,
    pub crc: u32,
    pub sync_point: bool,
    /// Header and payload.
    pub size_bytes: usize,
}

/// Reads the record at the start of `bytes` (which may run on past it).
pub(super) fn read_record(bytes: &[u8]) -> RecordRead<'_> {
    if bytes.len() < RECORD_HEADER_BYTES {
        return RecordRead::Incomplete;
    }
    let length_word = be_u32(&bytes[0..4]);
    let length = (length_word & !SYNC_POINT_FLAG) as usize;
    let Some(payload) = bytes.get(RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + length) else {
        return RecordRead::Incomplete;
    };
    let stored = be_u32(&bytes[8..12]);
    let computed = crc32c_append(crc32c(&bytes[0..8]), payload);
    if stored != computed {
        return RecordRead::CrcMismatch { stored, computed };
    }
    RecordRead::Valid(Record {
        payload,
        previous_crc: be_u32(&bytes[4..8]),
        crc: stored,
        sync_point: length_word & SYNC_POINT_FLAG != 0,
        size_bytes: RECORD_HEADER_BYTES + length,
    })
}

pub(super) fn encode_entry(entry: &Entry) -> Vec<u8> {
    // Writing a message of plain fields into a Vec cannot fail; rust-protobuf only
    // fails on missing required fields, which proto3 messages do not have.
    entry.write_to_bytes().expect("a raft-rs Entry encodes")
}

/// A whole `raftstate` file.
pub(super) fn encode_raft_state(generation: u64, hard_state: &HardState, conf_state: &ConfState) -> Vec<u8> {
    let hard_state_bytes = hard_state.write_to_bytes().expect("a raft-rs HardState encodes");
    let conf_state_bytes = conf_state.write_to_bytes().expect("a raft-rs ConfState encodes");
    let mut payload = Vec::with_capacity(12 + hard_state_bytes.len() + conf_state_bytes.len());
    payload.extend_from_slice(&generation.to_be_bytes());
    payload.extend_from_slice(&(hard_state_bytes.len() as u32).to_be_bytes());
    payload.extend_from_slice(&hard_state_bytes);
    payload.extend_from_slice(&conf_state_bytes);
    encode_small_file(RAFT_STATE_MAGIC, &payload)
}

pub(super) fn decode_raft_state(bytes: &[u8]) -> Result<(u64, HardState, ConfState), String> {
    let payload = decode_small_file(RAFT_STATE_MAGIC, bytes)?;
    if payload.len() < 12 {
        return Err(format!("a {}-byte payload is shorter than its 12 fixed bytes", payload.len()));
    }
    let generation = be_u64(&payload[0..8]);
    let hard_state_bytes = be_u32(&payload[8..12]) as usize;
    let Some(hard_state) = payload.get(12..12 + hard_state_bytes) else {
        return Err(format!("the hard state's length {hard_state_bytes} runs past the payload"));
    };
    let hard_state = HardState::parse_from_bytes(hard_state).map_err(|e| format!("hard state: {e}"))?;
    let conf_state =
        ConfState::parse_from_bytes(&payload[12 + hard_state_bytes..]).map_err(|e| format!("conf state: {e}"))?;
    Ok((generation, hard_state, conf_state))
}

/// A whole `snapshot` file.
pub(super) fn encode_snapshot(generation: u64, snapshot: &Snapshot) -> Vec<u8> {
    let snapshot_bytes = snapshot.write_to_bytes().expect("a raft-rs Snapshot encodes");
    let mut payload = Vec::with_capacity(8 + snapshot_bytes.len());
    payload.extend_from_slice(&generation.to_be_bytes());
    payload.extend_from_slice(&snapshot_bytes);
    encode_small_file(SNAPSHOT_MAGIC, &payload)
}

pub(super) fn decode_snapshot(bytes: &[u8]) -> Result<(u64, Snapshot), String> {
    let payload = decode_small_file(SNAPSHOT_MAGIC, bytes)?;
    if payload.len() < 8 {
        return Err(format!("a {}-byte payload is shorter than its generation", payload.len()));
    }
    let snapshot = Snapshot::parse_from_bytes(&payload[8..]).map_err(|e| format!("snapshot: {e}"))?;
    Ok((be_u64(&payload[0..8]), snapshot))
}

fn encode_small_file(magic: [u8; 8], payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() <= u32::MAX as usize, "a {}-byte payload does not fit a file", payload.len());
    let mut out = Vec::with_capacity(SMALL_FILE_HEADER_BYTES + payload.len());
    out.extend_from_slice(&magic);
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    let crc = crc32c_append(crc32c(&out[0..16]), payload);
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn decode_small_file(magic: [u8; 8], bytes: &[u8]) -> Result<&[u8], String> {
    if bytes.len() < SMALL_FILE_HEADER_BYTES {
        return Err(format!("{} bytes is shorter than the {SMALL_FILE_HEADER_BYTES}-byte header", bytes.len()));
    }
    if bytes[0..8] != magic {
        return Err(format!("the magic is {:?}, not {:?}", &bytes[0..8], magic));
    }
    let version = be_u32(&bytes[8..12]);
    if version != FORMAT_VERSION {
        return Err(format!("format version {version} is not {FORMAT_VERSION}, the one this broker reads"));
    }
    let length = be_u32(&bytes[12..16]) as usize;
    if bytes.len() != SMALL_FILE_HEADER_BYTES + length {
        return Err(format!(
            "the header declares a {length}-byte payload but the file holds {} bytes after it",
            bytes.len() - SMALL_FILE_HEADER_BYTES
        ));
    }
    let payload = &bytes[SMALL_FILE_HEADER_BYTES..];
    let stored = be_u32(&bytes[16..20]);
    let computed = crc32c_append(crc32c(&bytes[0..16]), payload);
    if stored != computed {
        return Err(format!("CRC32C {stored:#010x} does not match the bytes ({computed:#010x})"));
    }
    Ok(payload)
}

fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes.try_into().expect("4 bytes"))
}

fn be_u64(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes.try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_and_any_flipped_bit_fails_its_crc() {
        let mut out = Vec::new();
        let crc = encode_record(&mut out, 0xdead_beef, b"payload", true);
        let RecordRead::Valid(record) = read_record(&out) else { panic!("valid record expected") };
        assert_eq!(
            record,
            Record { payload: b"payload", previous_crc: 0xdead_beef, crc, sync_point: true, size_bytes: 19 }
        );
        for bit in 0..out.len() * 8 {
            let mut damaged = out.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(!matches!(read_record(&damaged), RecordRead::Valid(_)), "bit {bit} flipped still reads");
        }
        for cut in 0..out.len() {
            assert_eq!(read_record(&out[..cut]), RecordRead::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn small_files_reject_a_wrong_magic_a_cut_and_a_flip() {
        let mut hard_state = HardState::default();
        hard_state.set_term(3);
        hard_state.set_vote(2);
        hard_state.set_commit(9);
        let mut conf_state = ConfState::default();
        conf_state.set_voters(vec![1, 2, 3]);
        let bytes = encode_raft_state(4, &hard_state, &conf_state);
        assert_eq!(decode_raft_state(&bytes), Ok((4, hard_state, conf_state)));
        assert!(decode_snapshot(&bytes).is_err(), "a raftstate file is not a snapshot");
        assert!(decode_raft_state(&bytes[..bytes.len() - 1]).is_err());
        let mut flipped = bytes.clone();
        flipped[25] ^= 0x10;
        assert!(decode_raft_state(&flipped).is_err());
    }
}
