//! The Kafka wire protocol, served over the engine.
//!
//! Only this module knows the wire format, and it writes no codec by hand: request
//! and response bodies go through the `kafka-protocol` crate. [`codec`] frames
//! requests (4-byte size prefix), decodes headers and bodies and encodes responses;
//! [`handlers`] holds one file per API key, each declaring the version range it
//! serves; [`errors`] maps engine errors to Kafka error codes; [`frame`] builds a
//! response as slices, so a Fetch's record batches are written from where they were
//! read.
//!
//! Records are never decoded: Produce hands the producer's RecordBatch bytes to the
//! engine (which checks the batch header and CRC), and Fetch returns stored bytes.

pub mod codec;
pub mod errors;
#[allow(unsafe_code)] // `unsafe impl BufMut`, forwarding to a BytesMut
pub mod frame;
pub mod handlers;
