//! The engine's typed errors. IO errors keep the operation and the path; a failed
//! fsync is never swallowed (see [`EngineError::Poisoned`]).

use std::io;
use std::path::PathBuf;

use crate::batch::BatchError;
use crate::types::{Offset, TopicPartition};

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

    #[error("unknown topic or partition {0}")]
    UnknownTopicOrPartition(String),

    #[error("topic {0} already exists")]
    TopicAlreadyExists(String),

    #[error("invalid partition count {0}: must be between 1 and {max}", max = crate::config::PARTITIONS_PER_TOPIC_MAX)]
    InvalidPartitionCount(i32),

    #[error("invalid config {key}={value:?}: {reason}")]
    InvalidConfig { key: String, value: String, reason: String },

    #[error("shard {0} is not running (the engine is shutting down or the shard failed)")]
    ShardUnavailable(usize),

    #[error("{0}")]
    Startup(String),

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

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
