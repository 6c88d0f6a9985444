//! One handler per Kafka API key. Each file declares `VERSIONS`, the request versions
//! it serves (and ApiVersions advertises), and either an async `handle` from the
//! decoded request to its response or, for the requests whose order matters, an
//! async `dispatch` in two stages (below). The table in [`served!`] is the one place
//! that lists them: ApiVersions, the decoder's version check and the dispatch all
//! derive from it.
//!
//! Handlers run on the shard that accepted the connection. They reach partitions of
//! any shard through [`corelog_engine::shard::EngineHandle`], which routes each operation to
//! the owner shard's queue, and groups through their coordinator's queue.
//!
//! Topics and partitions. Every handler resolves the topics and partitions a request
//! names through [`resolve`] ([`RequestContext::resolver`]), which answers Kafka's
//! errors for them (invalid name, unknown topic, topic id or partition, internal
//! topic refused, current leader epoch, and on a cluster node the partition's
//! leader). Errors are [`ResponseError`]s until a response field takes
//! their code ([`wire_code`]); [`crate::kafka::errors`] is the one mapping from engine
//! errors. Not yet the config handlers (`config_resources.rs` and its users) and
//! CreateTopics, which resolve their resources, and carry `(code, message)`
//! failures, their own way.
//!
//! Clusters. On a node of a cluster (`ShardContext::cluster`) the handlers answer
//! from the metadata image (brokers, topics, leaders: Metadata, DescribeCluster,
//! FindCoordinator, DescribeQuorum) and change metadata through the active
//! controller ([`controller`]: CreateTopics, DeleteTopics, CreatePartitions,
//! AlterConfigs, IncrementalAlterConfigs, ElectLeaders); resolution checks
//! leadership. A single broker answers as it always has.
//!
//! Request order. Kafka never reorders the requests of one connection, yet the
//! connection pipelines them (several in flight). So a request is handled in two
//! stages, as Redpanda's `dispatched` and `produced`: `dispatch` returns once every
//! op the request needs is on its queue (a partition's, or a group coordinator's),
//! each queue being served in order, with the future of the response, which waits
//! for the replies (acks, fsync). The connection starts the next request only once
//! the previous one is dispatched ([`dispatch`]'s `on_dispatched`), so a request's
//! ops reach every partition and coordinator after those of the requests sent
//! before it, while the waiting overlaps. Staged: Produce, Fetch (its first read;
//! a long poll's re-reads are not ordered), ListOffsets, DeleteRecords,
//! OffsetForLeaderEpoch and OffsetCommit. Every other handler counts as dispatched
//! when it starts: it either touches no queue whose order a client can see, or
//! (JoinGroup, SyncGroup) may wait long on purpose. Limits: OffsetFetch is not
//! staged behind a pipelined OffsetCommit's durable write, so it may answer the
//! offset before that commit; and a partition op queued by a handler of another
//! connection interleaves freely.

pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod alter_configs;
pub mod alter_partition_reassignments;
pub mod api_versions;
pub mod config_resources;
pub mod controller;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod describe_quorum;
pub mod describe_transactions;
pub mod elect_leaders;
pub mod end_txn;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod list_partition_reassignments;
pub mod list_transactions;
pub mod metadata;
pub mod offset_commit;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod resolve;
pub mod sync_group;
pub mod txn_offset_commit;
pub mod write_txn_markers;

use std::collections::VecDeque;

use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};
use kafka_protocol::ResponseError;

use crate::kafka::errors::response_error;
use crate::ShardContext;
use corelog_engine::shard::Dispatched;
use resolve::{PartitionRef, Refusal, ResolvedPartition, ResolvedTopic, Resolver};

/// An inclusive range of request versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions {
    pub min: i16,
    pub max: i16,
}

impl Versions {
    pub const fn new(min: i16, max: i16) -> Versions {
        Versions { min, max }
    }

    pub fn contains(&self, version: i16) -> bool {
        (self.min..=self.max).contains(&version)
    }
}

/// What a handler has for one request.
pub struct RequestContext<'a> {
    pub shard: &'a ShardContext,
    pub header: &'a RequestHeader,
    /// The request's API version (responses are encoded at the same version).
    pub version: i16,
}

impl RequestContext<'_> {
    /// Resolves the request's topics and partitions against the engine's registry
    /// (on a node of a cluster, against the metadata image as this shard has it
    /// now): the one way handlers look them up (see [`resolve`]).
    pub fn resolver(&self) -> Resolver<'_> {
        match &self.shard.cluster {
            Some(view) => Resolver::in_cluster(&self.shard.engine, view.image(), view.node_id),
            None => Resolver::new(&self.shard.engine),
        }
    }
}

/// Runs one handler of the [`served!`] table, staged or not (see the module doc).
macro_rules! run_handler {
    ($module:ident, $context:ident, $request:ident, $on_dispatched:ident, staged) => {{
        let response = $module::dispatch($context, $request).await;
        $on_dispatched();
        response.await.into()
    }};
    ($module:ident, $context:ident, $request:ident, $on_dispatched:ident) => {{
        $on_dispatched();
        $module::handle($context, $request).await.into()
    }};
}

macro_rules! served {
    ($($key:ident => $module:ident $(: $stages:ident)?),* $(,)?) => {
        /// The versions served for `api_key`, or `None` if the broker does not serve it.
        pub fn versions(api_key: ApiKey) -> Option<Versions> {
            match api_key {
                $(ApiKey::$key => Some($module::VERSIONS),)*
                _ => None,
            }
        }

        /// Every API key the broker serves, in the order ApiVersions lists them.
        pub const API_KEYS: &[ApiKey] = &[$(ApiKey::$key),*];

        /// Runs the handler of `request`, calling `on_dispatched` once the request's
        /// ops are all queued (at once for a handler that is not staged; see the
        /// module doc). `None` only for a request kind that [`versions`] does not
        /// list, which the decoder never lets through; `on_dispatched` is then
        /// dropped uncalled.
        pub async fn dispatch(
            context: &RequestContext<'_>,
            request: RequestKind,
            on_dispatched: impl FnOnce(),
        ) -> Option<ResponseKind> {
            match request {
                $(RequestKind::$key(request) => Some(run_handler!($module, context, request, on_dispatched $(, $stages)?)),)*
                _ => None,
            }
        }
    };
}

served! {
    Produce => produce: staged,
    Fetch => fetch: staged,
    ListOffsets => list_offsets: staged,
    Metadata => metadata,
    ApiVersions => api_versions,
    CreateTopics => create_topics,
    DeleteTopics => delete_topics,
    DeleteRecords => delete_records: staged,
    InitProducerId => init_producer_id,
    OffsetForLeaderEpoch => offset_for_leader_epoch: staged,
    DescribeConfigs => describe_configs,
    AlterConfigs => alter_configs,
    CreatePartitions => create_partitions,
    IncrementalAlterConfigs => incremental_alter_configs,
    DescribeCluster => describe_cluster,
    DescribeLogDirs => describe_log_dirs,
    FindCoordinator => find_coordinator,
    JoinGroup => join_group,
    SyncGroup => sync_group,
    Heartbeat => heartbeat,
    LeaveGroup => leave_group,
    OffsetCommit => offset_commit: staged,
    OffsetFetch => offset_fetch,
    ListGroups => list_groups,
    DescribeGroups => describe_groups,
    DeleteGroups => delete_groups,
    ElectLeaders => elect_leaders,
    AlterPartitionReassignments => alter_partition_reassignments,
    ListPartitionReassignments => list_partition_reassignments,
    DescribeQuorum => describe_quorum,
    AddPartitionsToTxn => add_partitions_to_txn,
    AddOffsetsToTxn => add_offsets_to_txn,
    EndTxn => end_txn,
    TxnOffsetCommit => txn_offset_commit,
    WriteTxnMarkers => write_txn_markers,
    DescribeProducers => describe_producers,
    DescribeTransactions => describe_transactions,
    ListTransactions => list_transactions,
}

/// The transaction APIs that need the transaction coordinator: served by a single
/// broker only, so a cluster node's ApiVersions leaves them out (and their handlers
/// answer an error). DescribeProducers is not one: it reads a partition's producer
/// state, which a cluster node's leaders keep too.
pub const TRANSACTION_API_KEYS: &[ApiKey] = &[
    ApiKey::AddPartitionsToTxn,
    ApiKey::AddOffsetsToTxn,
    ApiKey::EndTxn,
    ApiKey::TxnOffsetCommit,
    ApiKey::WriteTxnMarkers,
    ApiKey::DescribeTransactions,
    ApiKey::ListTransactions,
];

/// Waits until the first of `futures` completes.
pub async fn first_of<F: std::future::Future<Output = ()>>(futures: Vec<F>) {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    if futures.is_empty() {
        return std::future::pending().await;
    }
    std::future::poll_fn(|cx| {
        for future in futures.iter_mut() {
            if future.as_mut().poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// The wire's error code of an optional error: 0 (Kafka's NONE) for none. Handlers
/// carry [`ResponseError`]s and turn them into codes only when they fill a response.
pub fn wire_code(error: Option<ResponseError>) -> i16 {
    error.map_or(0, |error| error.code())
}

/// Partition entries a handler goes through between two yields to the shard's
/// other tasks ([`Pacer`]).
pub const ENTRIES_PER_YIELD: usize = 128;

/// Yields to the shard's other tasks once every [`ENTRIES_PER_YIELD`] entries of a
/// request, so a request naming a million partitions does not hold the shard (and
/// every other connection on it) until it is through. glommio preempts a task only
/// at its awaits, and its own `yield_if_needed` only after a 100 ms time slice.
#[derive(Debug, Default)]
pub struct Pacer {
    entries: usize,
}

impl Pacer {
    /// Counts one entry; every [`ENTRIES_PER_YIELD`]th yields.
    pub async fn entry(&mut self) {
        self.entries += 1;
        if self.entries.is_multiple_of(ENTRIES_PER_YIELD) {
            futures_lite::future::yield_now().await;
        }
    }
}

/// Ops of one request [`PerPartition`] keeps queued and unanswered at once; past
/// it, the oldest reply is awaited before the next op is queued. Kafka has no cap
/// on a request's partition entries (a Produce, Fetch or ListOffsets may name a
/// million, within `socket.request.max.bytes`), and neither has corelog: this
/// bounds the replies and record bytes held in flight, not what a request may ask.
pub const OPS_IN_FLIGHT_MAX: usize = 1024;

/// Per-partition ops of a staged request: queued one after the other in request
/// order by [`PerPartition::topic`] (the dispatch stage), their replies then awaited
/// by [`PerPartition::replies`] and handed back grouped by topic in request order:
/// `(topic, [(partition index, reply or error)])`. At most [`OPS_IN_FLIGHT_MAX`]
/// are queued and unanswered at once, and both stages yield to the shard's other
/// tasks every [`ENTRIES_PER_YIELD`] entries ([`Pacer`]), so a request naming a
/// million partitions neither holds a million replies in flight nor starves other
/// connections.
pub struct PerPartition<N, T> {
    shape: Vec<(N, Vec<i32>)>,
    /// One per partition index of `shape`, in the same order.
    slots: Vec<Slot<T>>,
    /// The ops still queued, oldest first, with their place in `slots` and their
    /// partition index.
    queued: VecDeque<(usize, i32, Dispatched<T>)>,
    pacer: Pacer,
}

/// One partition's op of a [`PerPartition`]: kept small (an engine error becomes
/// its response error as the reply is taken), one per entry of the request.
enum Slot<T> {
    /// Queued: its reply is in `queued`.
    Queued,
    /// Its reply, taken early (to keep the ops in flight bounded) or at the end;
    /// or, for an op never queued, the refusal of its partition or of the handler.
    Answered(Result<T, ResponseError>),
}

impl<N, T> Default for PerPartition<N, T> {
    fn default() -> Self {
        PerPartition { shape: Vec::new(), slots: Vec::new(), queued: VecDeque::new(), pacer: Pacer::default() }
    }
}

impl<N: std::fmt::Debug, T> PerPartition<N, T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one topic, resolved by the handler (see [`resolve`]): each of `items`
    /// names a partition (`partition_ref`); `dispatch` queues the op of every partition that
    /// resolves, in request order, each before the next starts (or answers an
    /// error). Partitions that do not resolve are answered with their refusal.
    pub async fn topic<I, F>(
        &mut self,
        name: N,
        topic: &Result<ResolvedTopic, Refusal>,
        items: Vec<I>,
        partition_ref: impl Fn(&I) -> PartitionRef,
        mut dispatch: impl FnMut(ResolvedPartition, I) -> F,
    ) where
        F: std::future::Future<Output = Result<Dispatched<T>, ResponseError>>,
    {
        let mut indexes = Vec::with_capacity(items.len());
        for item in items {
            let wanted = partition_ref(&item);
            indexes.push(wanted.index);
            let dispatched = match resolve::partition_of(topic, wanted) {
                Ok(partition) => dispatch(partition, item).await,
                Err(refusal) => {
                    tracing::debug!("topic {name:?} partition {}: {}", wanted.index, refusal.message);
                    Err(refusal.error)
                }
            };
            match dispatched {
                Ok(pending) => {
                    self.queued.push_back((self.slots.len(), wanted.index, pending));
                    self.slots.push(Slot::Queued);
                }
                Err(error) => self.slots.push(Slot::Answered(Err(error))),
            }
            if self.queued.len() > OPS_IN_FLIGHT_MAX {
                self.take_oldest_reply().await;
            }
            self.pacer.entry().await;
        }
        self.shape.push((name, indexes));
    }

    /// Waits for the reply of the oldest op still queued, and keeps it.
    async fn take_oldest_reply(&mut self) {
        if let Some((at, index, pending)) = self.queued.pop_front() {
            let reply = pending.reply().await.map_err(|error| {
                tracing::debug!("partition {index}: {error}");
                response_error(&error)
            });
            self.slots[at] = Slot::Answered(reply);
        }
    }

    /// Waits for every reply. They are all queued already, so waiting for them one
    /// after the other takes as long as the slowest.
    pub async fn replies(mut self) -> Vec<(N, Vec<(i32, Result<T, ResponseError>)>)> {
        while !self.queued.is_empty() {
            self.take_oldest_reply().await;
            self.pacer.entry().await;
        }
        let mut slots = self.slots.into_iter();
        let mut replies = Vec::with_capacity(self.shape.len());
        for (name, indexes) in self.shape {
            let mut answered = Vec::with_capacity(indexes.len());
            for index in indexes {
                let Some(next) = slots.next() else { break };
                let reply = match next {
                    Slot::Answered(reply) => reply,
                    // Every queued op was taken above.
                    Slot::Queued => Err(ResponseError::UnknownServerError),
                };
                answered.push((index, reply));
            }
            replies.push((name, answered));
        }
        replies
    }
}

/// [`Refusal::internal_topic`] as the config handlers carry their failures, a
/// Kafka error code with its message.
pub fn internal_topic_refused(topic: &corelog_engine::types::TopicName, action: &str) -> (i16, String) {
    let refusal = Refusal::internal_topic(topic, action);
    (refusal.error.code(), refusal.message)
}
