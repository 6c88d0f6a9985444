//! The request codec against corrupted input: frames of every served API and version,
//! as a client encodes them, then cut short, bit-flipped, or given a wrong size prefix.
//! Whatever the bytes, `read_frame` and `decode_request` never panic, never ask for a
//! huge allocation (a failed allocation aborts the whole broker), and either decode a
//! request the broker serves or return the typed error that says what is wrong.
//!
//! Also here: the fuzz target's seed corpus (`engine/broker/fuzz/corpus/request_frame/`)
//! stays a set of well-formed frames; `CORELOG_WRITE_FUZZ_SEEDS=1` rewrites it from the
//! served APIs.

#[path = "support/kafka_requests.rs"]
mod kafka_requests;
#[path = "support/measuring_allocator.rs"]
mod measuring_allocator;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use corelog_broker::kafka::codec::{self, DecodeError, FrameError, FRAME_SIZE_BYTES};
use corelog_broker::kafka::handlers;
use kafka_protocol::messages::ApiKey;
use proptest::prelude::*;
use proptest::sample::Index;

use kafka_requests::{request_frame, sample_request, served, with_size_prefix};

#[global_allocator]
static ALLOCATOR: measuring_allocator::MeasuringAllocator = measuring_allocator::MeasuringAllocator;

/// The frame limit the tests read with (the broker's default is 100 MiB).
const REQUEST_BYTES_MAX: usize = 1 << 20;

/// The largest single allocation reading and decoding one frame may ask for. Sample
/// frames are under a kilobyte and the read buffer is at most `REQUEST_BYTES_MAX`, so
/// this leaves a wide margin for decoded structures.
const ALLOCATION_BYTES_MAX: usize = 64 << 20;

/// A well-formed request on the wire: the size prefix and the frame.
#[derive(Debug, Clone)]
struct Sample {
    api_key: ApiKey,
    version: i16,
    wire: Vec<u8>,
}

fn samples() -> Vec<Sample> {
    served()
        .into_iter()
        .enumerate()
        .map(|(index, (api_key, version))| {
            let frame = request_frame(api_key, version, index as i32 + 1, &sample_request(api_key, version));
            Sample { api_key, version, wire: with_size_prefix(&frame) }
        })
        .collect()
}

fn pick(index: &Index) -> Sample {
    static SAMPLES: std::sync::OnceLock<Vec<Sample>> = std::sync::OnceLock::new();
    let samples = SAMPLES.get_or_init(samples);
    samples[index.index(samples.len())].clone()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What reading one frame and decoding it gave.
#[derive(Debug)]
enum Outcome {
    Closed,
    Frame(FrameError),
    Decoded(Box<codec::Request>),
    Rejected(DecodeError),
}

/// Reads one frame from `wire` and decodes it, checking what must hold whatever the
/// bytes: the allocation bound, and that a decoded request is one the broker serves.
fn read_and_decode(wire: &[u8]) -> Outcome {
    let (outcome, largest_bytes) = measuring_allocator::largest_allocation_during(|| {
        let mut reader = wire;
        match futures_lite::future::block_on(codec::read_frame(&mut reader, REQUEST_BYTES_MAX)) {
            Ok(None) => Outcome::Closed,
            Err(error) => Outcome::Frame(error),
            Ok(Some(frame)) => match codec::decode_request(frame) {
                Ok(request) => Outcome::Decoded(Box::new(request)),
                Err(error) => Outcome::Rejected(error),
            },
        }
    });
    assert!(
        largest_bytes <= ALLOCATION_BYTES_MAX,
        "reading and decoding {} bytes asked for one allocation of {largest_bytes} bytes \
         (at most {ALLOCATION_BYTES_MAX}); outcome: {outcome:?}; input: {}",
        wire.len(),
        hex(wire),
    );
    if let Outcome::Decoded(request) = &outcome {
        let versions = handlers::versions(request.api_key).expect("decoded an API key that is not served");
        let version = request.header.request_api_version;
        assert!(versions.contains(version), "decoded {:?} v{version}, which is not served", request.api_key);
        assert_eq!(request.header.request_api_key, request.api_key as i16);
        assert_eq!(kafka_requests::api_key_of(&request.body), Some(request.api_key), "the body is of another API");
    }
    outcome
}

#[test]
fn every_served_request_decodes_to_what_was_encoded() {
    for sample in samples() {
        let frame = &sample.wire[FRAME_SIZE_BYTES..];
        match read_and_decode(&sample.wire) {
            Outcome::Decoded(request) => {
                assert_eq!(request.api_key, sample.api_key);
                assert_eq!(request.header.request_api_version, sample.version);
                assert_eq!(
                    request.body,
                    sample_request(sample.api_key, sample.version),
                    "{:?} v{}",
                    sample.api_key,
                    sample.version
                );
            }
            other => {
                panic!("{:?} v{} ({} bytes) did not decode: {other:?}", sample.api_key, sample.version, frame.len())
            }
        }
    }
}

/// The size a wire frame's prefix declares.
fn declared_size(wire: &[u8]) -> i32 {
    i32::from_be_bytes(wire[..FRAME_SIZE_BYTES].try_into().expect("a size prefix"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The connection ends `cut` bytes into a request: nothing at all is a clean close,
    /// anything else is `Truncated` (never a short frame passed on to the decoder).
    #[test]
    fn a_frame_cut_short_on_the_wire_is_truncated(sample in any::<Index>(), cut in any::<Index>()) {
        let sample = pick(&sample);
        let cut = cut.index(sample.wire.len());
        match read_and_decode(&sample.wire[..cut]) {
            Outcome::Closed => prop_assert_eq!(cut, 0),
            Outcome::Frame(FrameError::Truncated) => prop_assert!(cut > 0),
            other => prop_assert!(false, "{:?} v{} cut at {cut}: {other:?}", sample.api_key, sample.version),
        }
    }

    /// A frame whose size prefix agrees with its shortened body: the decoder sees a
    /// request that ends early. Under 8 bytes it is `TooShort`; otherwise it decodes
    /// (only if what is left is itself a whole request) or is `Malformed`.
    #[test]
    fn a_request_cut_short_inside_its_frame_is_too_short_or_malformed(sample in any::<Index>(), cut in any::<Index>()) {
        let sample = pick(&sample);
        let frame = &sample.wire[FRAME_SIZE_BYTES..];
        let cut = cut.index(frame.len());
        match read_and_decode(&with_size_prefix(&frame[..cut])) {
            Outcome::Rejected(DecodeError::TooShort(length)) => prop_assert!(length == cut && cut < 8),
            Outcome::Rejected(DecodeError::Malformed { api_key, version, .. }) => {
                prop_assert!(cut >= 8);
                prop_assert_eq!((api_key, version), (sample.api_key, sample.version));
            }
            Outcome::Decoded(request) => prop_assert_eq!(request.api_key, sample.api_key),
            other => prop_assert!(false, "{:?} v{} cut to {cut} bytes: {other:?}", sample.api_key, sample.version),
        }
    }

    /// Bits flipped anywhere, the size prefix included: whatever comes out is a typed
    /// error or a served request (checked by `read_and_decode`), never a panic or a
    /// runaway allocation. A flipped api key or version is reported as such.
    #[test]
    fn bit_flips_decode_or_give_a_typed_error(
        sample in any::<Index>(),
        flips in proptest::collection::vec((any::<Index>(), 0u8..8), 1..8),
    ) {
        let sample = pick(&sample);
        let mut wire = sample.wire.clone();
        for (position, bit) in &flips {
            let position = position.index(wire.len());
            wire[position] ^= 1 << bit;
        }
        let declared = declared_size(&wire);
        let body_bytes = wire.len() - FRAME_SIZE_BYTES;
        match read_and_decode(&wire) {
            Outcome::Frame(FrameError::NegativeSize(size)) => prop_assert!(size < 0 && size == declared),
            Outcome::Frame(FrameError::TooLarge { size_bytes, .. }) => prop_assert!(size_bytes > REQUEST_BYTES_MAX as i64),
            Outcome::Frame(FrameError::Truncated) => prop_assert!(declared as usize > body_bytes),
            Outcome::Frame(FrameError::Io(error)) => prop_assert!(false, "reading from memory failed: {error}"),
            Outcome::Closed => prop_assert!(false, "a non-empty input read as a clean close"),
            Outcome::Rejected(DecodeError::UnknownApiKey(key)) => {
                prop_assert!(ApiKey::try_from(key).ok().and_then(handlers::versions).is_none(), "key {key} is served");
            }
            Outcome::Rejected(DecodeError::UnsupportedVersion { versions, version, api_key, .. }) => {
                prop_assert!(!versions.contains(version));
                prop_assert_eq!(Some(versions), handlers::versions(api_key));
            }
            Outcome::Rejected(DecodeError::TooShort(length)) => prop_assert!(length < 8),
            Outcome::Rejected(DecodeError::Malformed { api_key, version, .. }) => {
                prop_assert!(handlers::versions(api_key).is_some_and(|v| v.contains(version)));
            }
            Outcome::Decoded(_) => {}
        }
    }

    /// The size prefix replaced by any value: negative and over-the-limit sizes are
    /// refused before anything is allocated for them, a size past the end of the bytes
    /// is `Truncated`, a smaller one hands the decoder a prefix of the request, and
    /// the right one decodes the request.
    #[test]
    fn a_wrong_size_prefix_is_a_typed_frame_error_or_a_shorter_request(
        sample in any::<Index>(),
        size in prop_oneof![
            any::<i32>(),
            Just(-1),
            Just(i32::MIN),
            Just(i32::MAX),
            Just(REQUEST_BYTES_MAX as i32 + 1),
            0i32..1024,
        ],
    ) {
        let sample = pick(&sample);
        let mut wire = sample.wire.clone();
        wire[..FRAME_SIZE_BYTES].copy_from_slice(&size.to_be_bytes());
        let body_bytes = wire.len() - FRAME_SIZE_BYTES;
        let outcome = read_and_decode(&wire);
        match (&outcome, size) {
            (Outcome::Frame(FrameError::NegativeSize(negative)), _) => prop_assert!(size < 0 && *negative == size),
            (Outcome::Frame(FrameError::TooLarge { size_bytes, .. }), _) => {
                prop_assert!(size as usize > REQUEST_BYTES_MAX && *size_bytes == size as i64);
            }
            (Outcome::Frame(FrameError::Truncated), _) => {
                prop_assert!(size as usize > body_bytes && size as usize <= REQUEST_BYTES_MAX)
            }
            (Outcome::Decoded(request), _) if size as usize == body_bytes => {
                prop_assert_eq!(&request.body, &sample_request(sample.api_key, sample.version));
            }
            (Outcome::Decoded(request), _) => {
                prop_assert!((size as usize) < body_bytes);
                prop_assert_eq!(request.api_key, sample.api_key);
            }
            (Outcome::Rejected(DecodeError::TooShort(length)), _) => prop_assert!(*length == size as usize && size < 8),
            (Outcome::Rejected(DecodeError::Malformed { .. }), _) => prop_assert!(size >= 8 && (size as usize) < body_bytes),
            _ => prop_assert!(false, "{:?} v{} with size prefix {size}: {outcome:?}", sample.api_key, sample.version),
        }
    }
}

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/request_frame")
}

/// The fuzz target starts from one well-formed request of every served API and
/// version; its seeds must stay frames the broker decodes, of the API and version
/// their file names say. `CORELOG_WRITE_FUZZ_SEEDS=1` rewrites them (after adding an
/// API or changing a version range).
#[test]
fn fuzz_seeds_are_well_formed_requests_of_served_apis() {
    let dir = seeds_dir();
    if std::env::var_os("CORELOG_WRITE_FUZZ_SEEDS").is_some_and(|v| v == "1") {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).expect("removing the old seeds");
        }
        std::fs::create_dir_all(&dir).expect("creating the seed directory");
        for sample in samples() {
            let path = dir.join(format!("{:?}-v{}", sample.api_key, sample.version));
            std::fs::write(&path, &sample.wire).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        }
    }
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).expect("a UTF-8 file name").to_string();
        let wire = Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())));
        let stale = format!(
            "{} is stale: rewrite the seeds with \
             CORELOG_WRITE_FUZZ_SEEDS=1 cargo test -p corelog-engine --test kafka_codec fuzz_seeds",
            path.display()
        );
        match read_and_decode(&wire) {
            Outcome::Decoded(request) => {
                let expected = format!("{:?}-v{}", request.api_key, request.header.request_api_version);
                assert_eq!(name, expected, "{stale}");
            }
            other => panic!("{stale}: {other:?}"),
        }
        seeds += 1;
    }
    assert!(seeds > 0, "no seeds in {}", dir.display());
}
