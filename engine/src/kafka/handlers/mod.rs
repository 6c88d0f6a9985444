//! One handler per Kafka API key. Each file declares `VERSIONS`, the request versions
//! it serves (and ApiVersions advertises), and an async `handle` from the decoded
//! request to its response. The table in [`served!`] is the one place that lists
//! them: ApiVersions, the decoder's version check and the dispatch all derive from it.
//!
//! Handlers run on the shard that accepted the connection. They reach partitions of
//! any shard through [`crate::shard::EngineHandle`], which routes each operation to
//! the owner shard's queue; a request touching several partitions issues those
//! operations concurrently and merges the answers in request order.

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

use crate::broker::ShardContext;

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

macro_rules! served {
    ($($key:ident => $module:ident),* $(,)?) => {
        /// The versions served for `api_key`, or `None` if the broker does not serve it.
        pub fn versions(api_key: ApiKey) -> Option<Versions> {
            match api_key {
                $(ApiKey::$key => Some($module::VERSIONS),)*
                _ => None,
            }
        }

        /// Every API key the broker serves, in the order ApiVersions lists them.
        pub const API_KEYS: &[ApiKey] = &[$(ApiKey::$key),*];

        /// Runs the handler of `request`. `None` only for a request kind that
        /// [`versions`] does not list, which the decoder never lets through.
        pub async fn dispatch(context: &RequestContext<'_>, request: RequestKind) -> Option<ResponseKind> {
            match request {
                $(RequestKind::$key(request) => Some($module::handle(context, request).await.into()),)*
                _ => None,
            }
        }
    };
}

served! {
    Produce => produce,
    Fetch => fetch,
    ListOffsets => list_offsets,
    Metadata => metadata,
    ApiVersions => api_versions,
    CreateTopics => create_topics,
    DeleteTopics => delete_topics,
    DeleteRecords => delete_records,
    InitProducerId => init_producer_id,
    OffsetForLeaderEpoch => offset_for_leader_epoch,
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
    OffsetCommit => offset_commit,
    OffsetFetch => offset_fetch,
    ListGroups => list_groups,
    DescribeGroups => describe_groups,
    DeleteGroups => delete_groups,
}

/// Runs `futures` concurrently on this shard and returns their outputs in order.
/// Each one usually waits on another shard's partition, so they overlap.
pub async fn concurrently<F, T>(futures: Vec<F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + 'static,
    T: 'static,
{
    if futures.len() == 1 {
        let mut outputs = Vec::with_capacity(1);
        for future in futures {
            outputs.push(future.await);
        }
        return outputs;
    }
    let tasks: Vec<_> = futures.into_iter().map(glommio::spawn_local).collect();
    let mut outputs = Vec::with_capacity(tasks.len());
    for task in tasks {
        outputs.push(task.await);
    }
    outputs
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
    engine: &crate::shard::EngineHandle,
    topic: &str,
    items: Vec<T>,
    index_of: impl Fn(&T) -> i32,
) -> Vec<(i32, Result<crate::types::TopicPartition, i16>, T)> {
    use crate::types::{PartitionId, TopicName, TopicPartition};
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

/// Per-partition work of a request, run concurrently and handed back grouped by
/// topic in request order: `(topic, [(partition index, output)])`.
pub struct PerPartition<N, F> {
    shape: Vec<(N, Vec<i32>)>,
    work: Vec<F>,
}

impl<N, F, T> PerPartition<N, F>
where
    F: std::future::Future<Output = T> + 'static,
    T: 'static,
{
    pub fn new() -> Self {
        PerPartition { shape: Vec::new(), work: Vec::new() }
    }

    /// Adds one topic: `each` turns every resolved partition into its future.
    pub fn topic<I>(
        &mut self,
        engine: &crate::shard::EngineHandle,
        name: N,
        raw_name: &str,
        items: Vec<I>,
        index_of: impl Fn(&I) -> i32,
        mut each: impl FnMut(Result<crate::types::TopicPartition, i16>, I) -> F,
    ) {
        let mut indexes = Vec::with_capacity(items.len());
        for (index, partition, item) in resolve_partitions(engine, raw_name, items, index_of) {
            indexes.push(index);
            self.work.push(each(partition, item));
        }
        self.shape.push((name, indexes));
    }

    pub async fn run(self) -> Vec<(N, Vec<(i32, T)>)> {
        let mut outputs = concurrently(self.work).await.into_iter();
        self.shape
            .into_iter()
            .map(|(name, indexes)| {
                let answered = indexes.into_iter().filter_map(|index| outputs.next().map(|output| (index, output))).collect();
                (name, answered)
            })
            .collect()
    }
}
