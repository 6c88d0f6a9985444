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

pub mod alter_configs;
pub mod api_versions;
pub mod config_resources;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sync_group;

use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};

use crate::ShardContext;
use corelog_engine::shard::Dispatched;

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
}

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

/// The partitions one topic of a request names, each resolved against the engine
/// (or answered with the Kafka error code: invalid topic name, unknown topic or
/// partition), in request order, with the request's per-partition item.
pub fn resolve_partitions<T>(
    engine: &corelog_engine::shard::EngineHandle,
    topic: &str,
    items: Vec<T>,
    index_of: impl Fn(&T) -> i32,
) -> Vec<(i32, Result<corelog_engine::types::TopicPartition, i16>, T)> {
    use corelog_engine::types::{PartitionId, TopicName, TopicPartition};
    let name = TopicName::new(topic).map_err(|e| crate::kafka::errors::error_code(&e));
    let partition_count = name.as_ref().ok().and_then(|n| engine.topic(n)).map_or(0, |m| m.partition_count);
    items
        .into_iter()
        .map(|item| {
            let index = index_of(&item);
            let partition = match &name {
                Ok(_) if !(0..partition_count).contains(&index) => {
                    Err(kafka_protocol::ResponseError::UnknownTopicOrPartition.code())
                }
                Ok(name) => Ok(TopicPartition::new(name.clone(), PartitionId(index))),
                Err(code) => Err(*code),
            };
            (index, partition, item)
        })
        .collect()
}

/// Per-partition ops of a staged request: queued one after the other in request
/// order by [`PerPartition::topic`] (the dispatch stage), their replies then awaited
/// together by [`PerPartition::replies`] and handed back grouped by topic in request
/// order: `(topic, [(partition index, reply or error code)])`.
pub struct PerPartition<N, T> {
    shape: Vec<(N, Vec<i32>)>,
    /// One per partition index of `shape`, in the same order.
    dispatched: Vec<Result<Dispatched<T>, i16>>,
}

impl<N, T> Default for PerPartition<N, T> {
    fn default() -> Self {
        PerPartition { shape: Vec::new(), dispatched: Vec::new() }
    }
}

impl<N: std::fmt::Debug, T> PerPartition<N, T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one topic: `dispatch` queues the op of every partition that exists, in
    /// request order, each before the next starts (or answers an error code).
    /// Partitions that do not resolve are answered with their error code.
    pub async fn topic<I, F>(
        &mut self,
        engine: &corelog_engine::shard::EngineHandle,
        name: N,
        raw_name: &str,
        items: Vec<I>,
        index_of: impl Fn(&I) -> i32,
        mut dispatch: impl FnMut(corelog_engine::types::TopicPartition, I) -> F,
    ) where
        F: std::future::Future<Output = Result<Dispatched<T>, i16>>,
    {
        let mut indexes = Vec::with_capacity(items.len());
        for (index, partition, item) in resolve_partitions(engine, raw_name, items, index_of) {
            indexes.push(index);
            let dispatched = match partition {
                Ok(partition) => dispatch(partition, item).await,
                Err(code) => Err(code),
            };
            self.dispatched.push(dispatched);
        }
        self.shape.push((name, indexes));
    }

    /// Waits for every reply. They are all queued already, so waiting for them one
    /// after the other takes as long as the slowest.
    pub async fn replies(self) -> Vec<(N, Vec<(i32, Result<T, i16>)>)> {
        let mut dispatched = self.dispatched.into_iter();
        let mut replies = Vec::with_capacity(self.shape.len());
        for (name, indexes) in self.shape {
            let mut answered = Vec::with_capacity(indexes.len());
            for index in indexes {
                let Some(next) = dispatched.next() else { break };
                let reply = match next {
                    Ok(pending) => pending.reply().await.map_err(|error| {
                        tracing::debug!("topic {name:?} partition {index}: {error}");
                        crate::kafka::errors::error_code(&error)
                    }),
                    Err(code) => Err(code),
                };
                answered.push((index, reply));
            }
            replies.push((name, answered));
        }
        replies
    }
}

/// The answer to an admin request that would change one of the broker's internal
/// topics ([`crate::is_internal`]): TOPIC_AUTHORIZATION_FAILED, what a Kafka
/// broker answers a principal without the ALTER, DELETE or ALTER_CONFIGS permission
/// on the topic (`KafkaApis.handleDeleteTopicsRequest`,
/// `handleCreatePartitionsRequest`, `configsAuthorizationApiError`). Kafka itself
/// leaves these to its ACLs; corelog has none, and no client holds the permission.
/// `action` completes "clients may not ...".
pub fn internal_topic_refused(topic: &corelog_engine::types::TopicName, action: &str) -> (i16, String) {
    (
        kafka_protocol::ResponseError::TopicAuthorizationFailed.code(),
        format!(
            "{topic} is the broker's internal topic: the group coordinator writes it and replays it at start-up, \
             so clients may read it but not {action}"
        ),
    )
}
