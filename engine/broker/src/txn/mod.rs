//! Transactions: the transaction coordinator (Kafka's `TransactionCoordinator`), sans IO.
//!
//! A `transactional.id` maps to one partition of the internal topic
//! [`TRANSACTION_STATE_TOPIC`] ([`partition_for`], Kafka's placement), and the leader
//! of that partition is its coordinator. The coordinator keeps one
//! [`state::TransactionMetadata`] per transactional id, changes it only through
//! Kafka's state machine (Empty → Ongoing → PrepareCommit/PrepareAbort →
//! CompleteCommit/CompleteAbort), and persists every change as a record of
//! `__transaction_state` ([`log`]) before it takes effect.
//!
//! ## Layers
//!
//! - [`state`]: one transactional id's metadata and its legal transitions, each
//!   prepared (a pending state that blocks others) and completed once its record is
//!   in the log.
//! - [`coordinator`]: [`coordinator::TxnCoordinator`], the requests (InitProducerId,
//!   AddPartitionsToTxn and its verify-only form, AddOffsetsToTxn, EndTxn, and the
//!   queries of DescribeTransactions and ListTransactions), the timer
//!   (`transaction.timeout.ms`, `transactional.id.expiration.ms`) and the completions
//!   (an append done or failed, markers written), turned into [`coordinator::Effect`]s:
//!   records to append, markers to write, answers. No IO, no clock: `now_ms` is
//!   passed in; producer ids come from an injected [`coordinator::ProducerIdSource`].
//! - [`log`]: the record layout of `__transaction_state` (Kafka's binary schema) and
//!   replay of a partition into metadata per transactional id.
//! - [`runtime`] and [`router`]: the glommio side (an actor per shard, its appends
//!   and marker writes as tasks) and how handlers reach it.
//!
//! ## Limits
//!
//! - A single broker only: [`router`] and [`runtime`] run an actor per shard over a
//!   broker-created, unreplicated `__transaction_state`, with coordinator epoch 0
//!   and markers written to this broker's partitions. A cluster node starts none.
//! - Appends of one partition are not coalesced: each change is one batch and one
//!   fdatasync (the group commit of the partition actor shares syncs between them).
//! - An append reported failed ([`coordinator::TxnCoordinator::append_failed`]) must
//!   not be in the log; a runtime that cannot tell reloads the partition instead.
//! - Markers are reported written for a transaction as a whole, not per partition
//!   (Kafka drops a partition from the set as its marker lands).
//! - `__transaction_state` is not compacted: replay reads it from its log start, and
//!   the snapshot compaction the offsets topic has is still to be written for it.
//! - `last_producer_epoch` is not in the record (nor in Kafka's), so a KIP-360 retry
//!   of an InitProducerId that spans a coordinator move is fenced, as in Kafka.
//! - With transaction version 2, an EndTxn that exhausts the epoch answers the
//!   producer id the completion moves to, at epoch 0 (KIP-890's intent; the Kafka
//!   code read for this answers the old id and bumped epoch).

pub mod coordinator;
pub mod log;
pub mod router;
pub mod runtime;
pub mod state;

use std::fmt;

use corelog_engine::types::{PartitionId, ProducerEpoch, ProducerId, TopicName};

/// The internal topic holding transactions' metadata.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// Kafka's `RecordBatch.NO_PRODUCER_ID`.
pub const NO_PRODUCER_ID: ProducerId = ProducerId(-1);
/// Kafka's `RecordBatch.NO_PRODUCER_EPOCH`.
pub const NO_PRODUCER_EPOCH: ProducerEpoch = ProducerEpoch(-1);

/// A producer's `transactional.id` (never empty once past request validation).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TransactionalId(pub String);

impl fmt::Display for TransactionalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The epoch of a coordinator of a `__transaction_state` partition: the partition's
/// leader epoch when this broker became its coordinator. Markers carry it, so a
/// partition's leader can refuse the markers of a deposed coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CoordinatorEpoch(pub i32);

impl fmt::Display for CoordinatorEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How a transaction ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransactionResult {
    Commit,
    Abort,
}

/// The transaction protocol version a client uses (Kafka's `transaction.version`
/// feature level, recorded in the log): 2 (KIP-890 part 2, EndTxn v5+) bumps the
/// producer epoch at every transaction's end; 0 and 1 do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TransactionVersion(pub i16);

impl TransactionVersion {
    pub const V0: TransactionVersion = TransactionVersion(0);
    pub const V2: TransactionVersion = TransactionVersion(2);

    pub fn bumps_epoch_at_end(self) -> bool {
        self.0 >= 2
    }
}

impl TxnConfig {
    /// The topic config of `__transaction_state`: synced on every append (a change is
    /// answered only once durable) and never deleted by retention (replay reads the
    /// partition from its log start; nothing compacts it yet).
    pub fn state_topic_config(&self) -> corelog_engine::config::TopicConfig {
        corelog_engine::config::TopicConfig {
            retention_bytes: -1,
            retention_ms: -1,
            durability: corelog_engine::config::Durability::Always,
            ..corelog_engine::config::TopicConfig::default()
        }
    }
}

/// Java's `String.hashCode`: `s[0]*31^(n-1) + … + s[n-1]` over UTF-16 code units,
/// wrapping, as a Kafka broker computes it.
pub fn java_string_hash(text: &str) -> i32 {
    text.encode_utf16().fold(0i32, |hash, unit| hash.wrapping_mul(31).wrapping_add(i32::from(unit)))
}

/// The partition of [`TRANSACTION_STATE_TOPIC`] that holds `transactional_id`:
/// Kafka's `Utils.abs(transactionalId.hashCode) % transaction.state.log.num.partitions`
/// (`Utils.abs` maps `i32::MIN` to 0), so a transactional id has the same partition as
/// on a Kafka cluster with as many partitions.
pub fn partition_for(transactional_id: &TransactionalId, partitions: i32) -> PartitionId {
    assert!(partitions > 0, "the transaction state topic has partitions");
    let hash = java_string_hash(&transactional_id.0);
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    PartitionId(abs % partitions)
}

/// The topic name [`TRANSACTION_STATE_TOPIC`].
pub fn transaction_state_topic() -> TopicName {
    TopicName::new(TRANSACTION_STATE_TOPIC).expect("a valid topic name")
}

/// How transactions behave; Kafka's broker config names in the field docs.
#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// `transaction.state.log.num.partitions`, used when the broker creates the topic.
    /// The topic keeps its partition count once created: the
    /// transactional-id-to-partition map depends on it. Kafka's default is 50; ours
    /// is 8, as for `__consumer_offsets`: every partition is a directory of
    /// `fsync.policy=always` files and a replay at start-up, and a single broker of a
    /// few shards spreads 8 over its shards as well as 50.
    pub state_log_partitions: i32,
    /// `transaction.max.timeout.ms`: InitProducerId with a longer timeout gets
    /// INVALID_TRANSACTION_TIMEOUT.
    pub transaction_timeout_ms_max: i32,
    /// `transactional.id.expiration.ms`: a transactional id without a transaction
    /// and without requests for this long is forgotten (a tombstone in the log).
    pub transactional_id_expiration_ms: i64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`: how often the
    /// coordinator looks for transactions open past their timeout (and ids to expire).
    pub abort_timed_out_transaction_cleanup_interval_ms: u64,
    /// Requests queued for one shard's transaction coordinator; senders wait when full.
    pub coordinator_queue_depth_max: usize,
    /// Test-only (`corelog broker --test-hold-txn-markers`, hidden): markers are never
    /// written, so a test can kill the broker between EndTxn and the markers.
    pub test_hold_markers: bool,
}

impl Default for TxnConfig {
    fn default() -> Self {
        TxnConfig {
            state_log_partitions: 8,
            transaction_timeout_ms_max: 900_000,
            transactional_id_expiration_ms: 7 * 24 * 3600 * 1000,
            abort_timed_out_transaction_cleanup_interval_ms: 10_000,
            coordinator_queue_depth_max: 1024,
            test_hold_markers: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `String.hashCode` as Java's documentation defines it, in i64 reduced modulo 2^32.
    fn reference_hash(text: &str) -> i32 {
        let mut hash: i64 = 0;
        for unit in text.encode_utf16() {
            hash = (hash * 31 + i64::from(unit)) & 0xffff_ffff;
        }
        hash as u32 as i32
    }

    #[test]
    fn hash_is_java_string_hash_code() {
        // Values Java gives.
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        // Beyond the BMP Java hashes the two UTF-16 surrogates.
        assert_eq!(java_string_hash("😀"), 0xD83D * 31 + 0xDE00);
        for text in ["transactional-id-1", "orders-producer-é", "a much longer transactional id than the others"] {
            assert_eq!(java_string_hash(text), reference_hash(text), "{text}");
        }
    }

    #[test]
    fn partitions_follow_kafka() {
        // Integer.MIN_VALUE maps to partition 0 (Utils.abs), not to a negative index.
        assert_eq!(partition_for(&TransactionalId("polygenelubricants".into()), 50), PartitionId(0));
        assert_eq!(partition_for(&TransactionalId("hello".into()), 50), PartitionId(99_162_322 % 50));
        // A negative hash takes its absolute value.
        let negative = (0..).map(|i| TransactionalId(format!("txn-{i}"))).find(|id| java_string_hash(&id.0) < 0);
        let negative = negative.expect("some id hashes negative");
        let hash = java_string_hash(&negative.0);
        assert_eq!(partition_for(&negative, 7), PartitionId(-hash % 7));
        for i in 0..1000 {
            let p = partition_for(&TransactionalId(format!("txn-{i}")), 50);
            assert!((0..50).contains(&p.0));
        }
    }
}
