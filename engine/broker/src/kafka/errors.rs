//! Engine errors as Kafka error codes. The message that goes with a code (where the
//! API has an error-message field) is the engine error's own text.

use kafka_protocol::ResponseError;

use corelog_engine::batch::BatchError;
use corelog_engine::error::EngineError;

/// The Kafka error code that tells a client what went wrong and whether to retry.
pub fn error_code(error: &EngineError) -> i16 {
    response_error(error).code()
}

pub fn response_error(error: &EngineError) -> ResponseError {
    match error {
        EngineError::InvalidTopicName { .. } => ResponseError::InvalidTopicException,
        EngineError::InvalidBatch(BatchError::TooShort { .. }) => ResponseError::CorruptMessage,
        EngineError::InvalidBatch(_) => ResponseError::CorruptMessage,
        EngineError::BatchTooLarge { .. } => ResponseError::MessageTooLarge,
        EngineError::Io { .. } => ResponseError::KafkaStorageError,
        EngineError::NoSpace { .. } => ResponseError::KafkaStorageError,
        EngineError::Poisoned { .. } => ResponseError::KafkaStorageError,
        EngineError::Corrupt { .. } | EngineError::PartitionOffline { .. } => ResponseError::KafkaStorageError,
        EngineError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        EngineError::UnknownTopicOrPartition(_) => ResponseError::UnknownTopicOrPartition,
        EngineError::TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
        EngineError::InvalidPartitionCount(_) => ResponseError::InvalidPartitions,
        EngineError::InvalidConfig { .. } => ResponseError::InvalidConfig,
        EngineError::ShardUnavailable(_) => ResponseError::NotLeaderOrFollower,
        EngineError::Startup(_)
        | EngineError::IoUring(_)
        | EngineError::CorruptFile { .. }
        | EngineError::ProducerIdsExhausted
        | EngineError::ThreadPanicked { .. }
        | EngineError::InUse(_)
        | EngineError::DataDirectory(_) => ResponseError::UnknownServerError,
        // Retriable for clients: the operation was not made and may be made again
        // once the broker is back.
        EngineError::Stopping { .. } => ResponseError::RequestTimedOut,
        EngineError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        EngineError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        EngineError::InvalidSequence { .. } => ResponseError::InvalidRecord,
        EngineError::InvalidTxnState { .. } => ResponseError::InvalidTxnState,
        EngineError::ControlBatchFromClient { .. } => ResponseError::InvalidRecord,
        EngineError::RecordWithoutKey { .. } => ResponseError::InvalidRecord,
        // The broker's own mistakes (replication's), never a client's.
        EngineError::InvalidLeaderEpoch { .. }
        | EngineError::UnexpectedAppendOffset { .. }
        | EngineError::NotReplicated { .. } => ResponseError::UnknownServerError,
    }
}
