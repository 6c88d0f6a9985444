//! # corelog-engine
//!
//! The storage engine of corelog: a Kafka-format, segmented, crash-safe partition log
//! ([`log::PartitionLog`]) run thread-per-core on glommio ([`shard::Engine`]).
//!
//! ## Execution model
//!
//! One glommio executor (io_uring) per shard, pinned to a core ([`cpus`]: which
//! ones, or none). Each partition is owned by one shard; its log is `!Send` in
//! practice and never leaves that thread.
//! Other threads and shards talk to it through [`shard::EngineHandle`] over bounded
//! queues. Disk IO is O_DIRECT through [`storage::DmaStorage`]; tests swap in
//! [`storage::SimStorage`] to crash the log at any write.
//!
//! ## Limits
//!
//! - Record batches must be Kafka RecordBatch v2 (magic 2); older message formats
//!   are rejected.
//! - A segment is at most 2 GiB (index positions are 32-bit), as in Kafka.
//! - At most [`config::PARTITIONS_PER_TOPIC_MAX`] partitions per topic.
//! - Reads copy stored bytes into a `Vec<u8>` once, to hand them across threads.
//! - ListOffsets by timestamp (and by max timestamp) decodes the records of the one
//!   batch it lands on, inflating them if compressed ([`records`]); nothing else
//!   decodes records.
//!
//! ## It is not
//!
//! - a network server, nor does it know the Kafka wire format: the protocol and the
//!   broker are the `corelog-broker` crate, which uses this one's public API (the
//!   engine and its handle, typed ids, topic configs, the data directory's layout
//!   and lock, and [`storage::dma::replace_file_durably`]);
//! - replicated by itself: replication's state machine (followers, the in-sync
//!   replicas, leader election) is the broker's. The engine gives it the log's side:
//!   the leader-epoch history ([`leader_epoch`]), a follower's append of the leader's
//!   batches, replicated mode where the broker moves the high watermark, and reads
//!   for a follower up to the written end (see [`shard::EngineHandle`]).

// Unsafe code only where the engine calls libc for what std lacks, in the start-up
// checks of `diagnostics`: that module allows it by name, and each unsafe block
// says why it is sound.
#![deny(unsafe_code)]

pub mod batch;
pub mod cleaner;
pub mod config;
pub mod cpus;
pub mod data_dir;
#[allow(unsafe_code)] // getrlimit, setrlimit, io_uring_setup, uname and statvfs through libc
pub mod diagnostics;
pub mod error;
pub mod hash;
pub mod leader_epoch;
pub mod log;
pub mod producer_state;
pub mod records;
pub mod segment;
pub mod shard;
pub mod storage;
pub mod types;

pub use config::{Durability, TopicConfig};
pub use error::{EngineError, Result};
pub use log::{AppendInfo, Isolation, OffsetSpec, PartitionLog, PartitionStats, ReadResult};
pub use shard::{Engine, EngineConfig, EngineHandle};
pub use types::{
    LeaderEpoch, Offset, PartitionId, ProducerEpoch, ProducerId, Sequence, ShardId, TimestampMs, TopicName,
    TopicPartition,
};

/// Golden files of the engine's on-disk formats (`src/golden/`): a test compares
/// the bytes it encodes with the file; `UPDATE_GOLDEN=1` rewrites it, to review.
#[cfg(test)]
pub(crate) fn check_golden(name: &str, actual: &[u8]) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/golden").join(name);
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::write(&path, actual).expect("write golden");
        eprintln!("updated golden file {}", path.display());
        return;
    }
    let expected = std::fs::read(&path).unwrap_or_else(|e| {
        panic!("cannot read {} ({e}); run with UPDATE_GOLDEN=1 to create it, then review it", path.display())
    });
    assert!(
        expected == actual,
        "{name} differs from its golden file (first at byte {:?}); if the format changed on purpose, bump its \
         version, keep reading the old one, and rerun with UPDATE_GOLDEN=1",
        expected.iter().zip(actual).position(|(e, a)| e != a).unwrap_or(expected.len().min(actual.len()))
    );
}
