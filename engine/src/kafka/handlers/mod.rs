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
