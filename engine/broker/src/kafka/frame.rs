//! A response frame as the slices it is written from ([`ResponseFrame`]), so that a
//! Fetch's record batches go to the socket from the buffers the engine read them
//! into, never copied into the response: the size prefix, header and every field
//! are encoded into small parts, and each partition's `records` stays the `Bytes`
//! the handler put there.
//!
//! How, without an encoder of our own: `kafka-protocol` encodes into any
//! [`ByteBufMut`], and writes a `records` field with one `put_slice` of the
//! field's bytes. [`ChunkedBuf`] is told the `Bytes` of every `records` field
//! before the encoding starts; a `put_slice` of exactly one of them (the same
//! address and length) ends the current part and keeps a clone of that `Bytes`
//! (a reference count) as the next part. Everything else is copied into the
//! current part, as a `BytesMut` would.
//!
//! Limits: `seek` and `range` (the gaps `kafka-protocol` uses for record batches
//! and snappy blocks, never for a message's fields) work only within the current
//! part.

use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

/// `put_slice`s shorter than this are copied even when they are a shared `Bytes`:
/// a part of its own costs a write of its own (glommio's socket has no vectored
/// write: each part is one `send`), more than copying a small batch. Measured on a
/// three-broker RF=3 produce, where followers fetch small batches all the time:
/// sharing everything above 1 KiB took 6.5% more CPU than copying it.
const SHARED_MIN_BYTES: usize = 64 << 10;

/// A response, size prefix included, as the slices to write in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseFrame {
    parts: Vec<Bytes>,
    len: usize,
}

impl ResponseFrame {
    /// Every byte of the frame, in order, as slices.
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// The frame's length, size prefix included.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The frame in one buffer (a copy when it has several parts).
    pub fn to_bytes(&self) -> Bytes {
        match self.parts.as_slice() {
            [one] => one.clone(),
            parts => {
                let mut all = BytesMut::with_capacity(self.len);
                parts.iter().for_each(|part| all.extend_from_slice(part));
                all.freeze()
            }
        }
    }
}

impl From<Bytes> for ResponseFrame {
    fn from(bytes: Bytes) -> Self {
        ResponseFrame { len: bytes.len(), parts: vec![bytes] }
    }
}

/// The buffer a response is encoded into: parts copied, and parts shared (see the
/// module doc).
pub struct ChunkedBuf {
    parts: Vec<Bytes>,
    /// Bytes in `parts`.
    parted: usize,
    current: BytesMut,
    /// The `Bytes` a `put_slice` may be of, kept rather than copied.
    shared: Vec<Bytes>,
}

impl ChunkedBuf {
    /// An empty buffer whose first part has room for `capacity` bytes, sharing
    /// `shared` where the encoding writes exactly one of them.
    pub fn new(capacity: usize, shared: Vec<Bytes>) -> ChunkedBuf {
        ChunkedBuf { parts: Vec::new(), parted: 0, current: BytesMut::with_capacity(capacity), shared }
    }

    /// The frame encoded so far.
    pub fn finish(mut self) -> ResponseFrame {
        self.end_part();
        ResponseFrame { len: self.parted, parts: self.parts }
    }

    /// The current part's bytes, mutable (for a size prefix written last).
    pub fn first_part_mut(&mut self) -> Option<&mut [u8]> {
        self.parts.is_empty().then_some(&mut self.current[..])
    }

    fn end_part(&mut self) {
        if !self.current.is_empty() {
            let part = self.current.split().freeze();
            self.parted += part.len();
            self.parts.push(part);
        }
    }

    fn shared_as(&self, src: &[u8]) -> Option<Bytes> {
        if src.len() < SHARED_MIN_BYTES {
            return None;
        }
        self.shared.iter().find(|bytes| bytes.as_ptr() == src.as_ptr() && bytes.len() == src.len()).cloned()
    }
}

// SAFETY: every method but `put_slice` forwards to `current`, a `BytesMut`, which
// upholds `BufMut`'s contract (`chunk_mut` is its uninitialised spare room and
// `advance_mut` its length past bytes the caller initialised there); `put_slice`
// either keeps a `Bytes` as a part of its own or forwards to `current.put_slice`.
#[allow(unsafe_code)]
unsafe impl BufMut for ChunkedBuf {
    fn remaining_mut(&self) -> usize {
        self.current.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialised `cnt` bytes of `chunk_mut`, which is
        // `current`'s spare room: the contract `current.advance_mut` asks.
        unsafe { self.current.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.current.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        match self.shared_as(src) {
            Some(bytes) => {
                self.end_part();
                self.parted += bytes.len();
                self.parts.push(bytes);
            }
            None => self.current.put_slice(src),
        }
    }
}

impl ByteBufMut for ChunkedBuf {
    fn offset(&self) -> usize {
        self.parted + self.current.len()
    }

    fn seek(&mut self, offset: usize) {
        self.current.resize(offset.saturating_sub(self.parted), 0);
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        &mut self.current[r.start - self.parted..r.end - self.parted]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_slice_becomes_a_part_of_its_own_and_the_rest_is_copied() {
        let records = Bytes::from(vec![7u8; SHARED_MIN_BYTES]);
        let other = vec![7u8; SHARED_MIN_BYTES];
        let mut buf = ChunkedBuf::new(64, vec![records.clone()]);
        buf.put_i32(0);
        buf.put_slice(&records);
        buf.put_u8(1);
        buf.put_slice(&other); // the same bytes elsewhere: copied
        buf.put_slice(&records[..100]); // part of a shared one: copied
        let n = SHARED_MIN_BYTES;
        assert_eq!(buf.offset(), 4 + n + 1 + n + 100);
        let frame = buf.finish();
        let lengths: Vec<usize> = frame.parts().iter().map(Bytes::len).collect();
        assert_eq!(lengths, [4, n, 1 + n + 100]);
        assert_eq!(frame.parts()[1].as_ptr(), records.as_ptr(), "sent from the records' own buffer");
        assert_eq!(frame.len(), 4 + n + 1 + n + 100);
        let mut expected = vec![0u8; 4];
        expected.extend_from_slice(&records);
        expected.push(1);
        expected.extend_from_slice(&other);
        expected.extend_from_slice(&records[..100]);
        assert_eq!(frame.to_bytes(), expected);
    }
}
