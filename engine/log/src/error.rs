//! The engine's typed errors. IO errors keep the operation and the path; a failed
//! fsync is never swallowed (see [`EngineError::Poisoned`]).

use std::io;
use std::path::PathBuf;

use crate::batch::BatchError;
use crate::types::{LeaderEpoch, Offset, ProducerEpoch, ProducerId, Sequence, TopicPartition};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid topic name {name:?}: it {reason}")]
    InvalidTopicName { name: String, reason: &'static str },

    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),

    #[error("record batch of {size_bytes} bytes exceeds the maximum of {size_bytes_max} bytes")]
    BatchTooLarge { size_bytes: usize, size_bytes_max: usize },

    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{op} {path}: no space left on device; the append was not written and the log is unchanged")]
    NoSpace { op: &'static str, path: PathBuf },

    #[error("partition {partition} is poisoned and refuses writes: an earlier fsync failed ({cause}); reads still work, restart the broker to recover from the last durable point")]
    Poisoned { partition: TopicPartition, cause: String },

    #[error("offset {requested} is out of range: the log holds [{log_start_offset}, {log_end_offset})")]
    OffsetOutOfRange { requested: Offset, log_start_offset: Offset, log_end_offset: Offset },

    /// An idempotent batch from an older epoch than the producer's current one: a
    /// newer instance of the producer has fenced this one. Kafka's
    /// `INVALID_PRODUCER_EPOCH`. Nothing of the record set was written.
    #[error(
        "partition {partition}: producer {producer_id} sent epoch {epoch}, older than its current epoch \
         {current_epoch}; a newer instance of the producer has fenced this one (INVALID_PRODUCER_EPOCH), \
         nothing was written"
    )]
    InvalidProducerEpoch {
        partition: TopicPartition,
        producer_id: ProducerId,
        epoch: ProducerEpoch,
        current_epoch: ProducerEpoch,
    },

    /// An idempotent batch whose base sequence is neither the next one after the
    /// producer's last appended batch nor (for a new epoch) 0, and is not a retry of
    /// one of its last five batches. Kafka's `OUT_OF_ORDER_SEQUENCE_NUMBER`. Nothing
    /// of the record set was written.
    #[error(
        "partition {partition}: producer {producer_id} (epoch {epoch}) sent base sequence {base_sequence}, \
         but the next expected sequence is {expected_sequence} (current epoch {current_epoch}, last appended \
         sequence {last_sequence}) (OUT_OF_ORDER_SEQUENCE_NUMBER); nothing was written"
    )]
    OutOfOrderSequence {
        partition: TopicPartition,
        producer_id: ProducerId,
        epoch: ProducerEpoch,
        base_sequence: Sequence,
        expected_sequence: Sequence,
        current_epoch: ProducerEpoch,
        last_sequence: Sequence,
    },

    /// A batch with a producer id but a negative base sequence. Kafka rejects it as
    /// `INVALID_RECORD`. Nothing of the record set was written.
    #[error(
        "partition {partition}: producer {producer_id} sent base sequence {base_sequence}; a batch with a \
         producer id needs a sequence >= 0 (INVALID_RECORD), nothing was written"
    )]
    InvalidSequence { partition: TopicPartition, producer_id: ProducerId, base_sequence: Sequence },

    /// A non-transactional batch from a producer whose transaction is open (Kafka's
    /// INVALID_TXN_STATE). Nothing of the record set was written.
    #[error("partition {partition}: producer {producer_id} sent a non-transactional batch at offset {offset} while its transaction is open; nothing was written")]
    InvalidTxnState { partition: TopicPartition, producer_id: ProducerId, offset: Offset },

    /// A client's record set held a control batch: only the engine writes transaction
    /// markers ([`crate::log::PartitionLog::append_txn_marker`]), as Kafka's
    /// `LogValidator` refuses them from clients (INVALID_RECORD).
    #[error("partition {partition}: clients may not write control batches; nothing was written")]
    ControlBatchFromClient { partition: TopicPartition },

    /// A record without a key for a compacted topic, which could never be compacted
    /// (Kafka's `LogValidator` refuses it: INVALID_RECORD). Nothing was written.
    #[error("partition {partition}: compacted topic cannot accept a record without a key (offset delta {offset_delta}); nothing was written")]
    RecordWithoutKey { partition: TopicPartition, offset_delta: i64 },

    /// A leader epoch below 0 given for a leader append, or carried by a replicated
    /// batch: a leader's epoch is never negative. Nothing of the record set was written.
    #[error("partition {partition}: leader epoch {epoch} is negative; nothing was written")]
    InvalidLeaderEpoch { partition: TopicPartition, epoch: LeaderEpoch },

    /// Replicated batches that do not continue the log: the first must start at the
    /// log end and each next one where the previous ended (Kafka's
    /// `UnexpectedAppendOffsetException`). Nothing of the record set was written.
    #[error(
        "partition {partition}: a replicated batch starts at offset {base_offset}, but the log continues at \
         {expected}; replicated batches must continue the log without a gap or an overlap, nothing was written"
    )]
    UnexpectedAppendOffset { partition: TopicPartition, base_offset: Offset, expected: Offset },

    /// An op of replication (setting the high watermark) on a partition whose high
    /// watermark the engine moves itself: the broker has not put it in replicated
    /// mode.
    #[error("partition {partition} is not in replicated mode: its high watermark follows its own log")]
    NotReplicated { partition: TopicPartition },

    #[error("unknown topic or partition {0}")]
    UnknownTopicOrPartition(String),

    #[error("topic {0} already exists")]
    TopicAlreadyExists(String),

    #[error("invalid partition count {0}: must be between 1 and {max}", max = crate::config::PARTITIONS_PER_TOPIC_MAX)]
    InvalidPartitionCount(i32),

    #[error("invalid config {key}={value:?}: {reason}")]
    InvalidConfig { key: String, value: String, reason: String },

    /// Stored bytes that fail validation where no crash can have left them: a sealed
    /// segment, a segment closed cleanly, a gap between segments, an offset file that
    /// holds no offset. Nothing is truncated or rewritten because of it: at start-up
    /// the partition goes offline instead ([`EngineError::PartitionOffline`]), and a
    /// read that meets it fails. Kafka's `KAFKA_STORAGE_ERROR`.
    #[error("{path} is damaged at byte {position}{at_offset}: {reason}", at_offset = .offset.map_or(String::new(), |o| format!(" (where offset {o} should be)")))]
    Corrupt { path: PathBuf, position: u64, offset: Option<Offset>, reason: String },

    /// A partition that start-up found damaged: it is not opened, its files are kept
    /// byte for byte, and every request to it fails with this (Kafka's
    /// `KAFKA_STORAGE_ERROR`) until `corelog repair` truncates it with consent.
    #[error(
        "partition {partition} is offline: {cause}. Its files are kept as they are and every other partition is \
         served. To repair, stop the broker and run `corelog repair --data-dir {data_dir} --topic {topic} \
         --partition {index} --truncate-at-corruption`: it deletes this partition's records from the damage to \
         its end",
        data_dir = .data_dir.display(),
        topic = .partition.topic,
        index = .partition.partition.0
    )]
    PartitionOffline { partition: TopicPartition, data_dir: PathBuf, cause: String },

    #[error("shard {0} is not running (the engine is shutting down or the shard failed)")]
    ShardUnavailable(usize),

    /// A thread or executor could not be started, or the machine's CPUs listed.
    #[error("{0}")]
    Startup(String),

    /// A small file the engine or broker keeps (a topic's properties, the producer-id
    /// block) does not say what it must; nothing was changed.
    #[error("{path}: {reason}; the file was left as it is")]
    CorruptFile { path: PathBuf, reason: String },

    /// Every producer id (0..i64::MAX) has been handed out by this data directory.
    #[error("producer ids exhausted: this data directory has handed out every id")]
    ProducerIdsExhausted,

    /// A shard's, or the controller's, thread panicked: the engine is going down.
    #[error("the {thread} thread panicked")]
    ThreadPanicked { thread: String },

    /// The engine was stopping, so an admin operation was not made.
    #[error("{operation}: the engine is stopping; the operation was not made")]
    Stopping { operation: String },

    /// Another process holds what this one needs to itself: the data directory's
    /// lock or the listening address. Says who, and why one is the rule.
    #[error("{0}")]
    InUse(String),

    /// The data directory's layout is not one this engine can start on.
    #[error("{0}")]
    DataDirectory(String),

    #[error("io_uring is not usable: {0}")]
    IoUring(#[from] crate::diagnostics::StartupError),
}

impl EngineError {
    /// Wraps an IO error with what was being done and to which file. ENOSPC becomes
    /// [`EngineError::NoSpace`] so callers can tell a full disk from other failures.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> EngineError {
        let path = path.into();
        if source.raw_os_error() == Some(libc::ENOSPC) {
            EngineError::NoSpace { op, path }
        } else {
            EngineError::Io { op, path, source }
        }
    }
}

impl EngineError {
    /// Whether the error says stored data is damaged (bad bytes, or a device that
    /// reports an IO error, EIO, or a file system that found its own structures
    /// corrupt, EUCLEAN/EBADMSG), as opposed to a resource or usage problem. A
    /// partition whose open fails with damage goes offline alone; any other failure
    /// to open stops the start-up as before.
    pub fn is_damage(&self) -> bool {
        match self {
            EngineError::Corrupt { .. } => true,
            EngineError::Io { source, .. } => {
                matches!(source.raw_os_error(), Some(libc::EIO | libc::EUCLEAN | libc::EBADMSG))
                    || source.kind() == io::ErrorKind::InvalidData
            }
            _ => false,
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
