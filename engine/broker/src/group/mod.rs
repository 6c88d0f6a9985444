//! Consumer groups: Kafka's classic group protocol (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup) and committed offsets (OffsetCommit, OffsetFetch), with ListGroups,
//! DescribeGroups and DeleteGroups.
//!
//! ## Where a group lives
//!
//! A group maps to one partition of the internal topic [`OFFSETS_TOPIC`] by a stable
//! hash of its id ([`offsets_partition_for`]), and is coordinated by the shard that
//! owns that partition in the engine ([`corelog_engine::shard::shard_for`]): the group's
//! membership, its timers and its offsets log all live on one shard, and the
//! coordinator's appends stay on that shard's queue. Each shard runs one coordinator
//! task ([`runtime`]); handlers on any shard reach it through a [`GroupRouter`]
//! (bounded flume queues, as the engine does). There are no locks on the request path.
//!
//! On a cluster node the offsets topic is the cluster's, replicated like any topic,
//! and a group's coordinator is the leader of its offsets partition: a shard's
//! coordinator serves the partitions this broker leads, each loaded from the
//! replicated log when its leadership starts and unloaded when it ends
//! ([`Coordinators::offsets_leadership`]); commits are acknowledged once the
//! partition's in-sync replicas have them.
//!
//! ## Layers
//!
//! - [`state`]: one group's data (members, state, generation, protocol selection).
//! - [`coordinator`]: [`GroupCoordinator`], the state machine of all groups of one
//!   shard. Pure: no IO, no clock; it is given `now_ms` and hands out the records it
//!   wants persisted. Tests drive it directly.
//! - [`offsets`]: the record layout of `__consumer_offsets`, the [`offsets::OffsetsStore`]
//!   that replaying a partition yields, and [`offsets::OffsetsLog`], which appends,
//!   replays and compacts one partition through the engine.
//! - [`runtime`]: the glommio tasks: the coordinator actor (requests, timers) and one
//!   writer per offsets partition (group commit of offset commits, snapshots).
//!
//! ## Limits
//!
//! - Offsets never expire (Kafka's `offsets.retention.minutes` is not implemented):
//!   a group with committed offsets stays until DeleteGroups.
//! - Group metadata records (generation, members, assignments) are written after
//!   the fact, not awaited: a crash can roll a group back to its previous persisted
//!   generation, whose members then rejoin (ILLEGAL_GENERATION / UNKNOWN_MEMBER_ID).
//!   Offset commits are acknowledged only once durable.
//! - The client host of a member is not known to handlers; DescribeGroups reports "".
//! - The KIP-848 consumer protocol is not served. Transactional offset commits are
//!   a single broker's (with transactions); their generation and member are not
//!   checked. OffsetFetch with `require_stable` answers UNSTABLE_OFFSET_COMMIT for a
//!   partition whose transactional offsets are durable and wait for their marker;
//!   not yet while their append is in flight (Kafka counts those too), nor for a
//!   plain OffsetCommit in flight.

pub mod coordinator;
pub mod offsets;
pub mod runtime;
pub mod state;

use std::collections::BTreeSet;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::ResponseError;

use crate::shard_queues::{LazyShardQueues, ShardQueues};
use corelog_engine::config::{Durability, TopicConfig};
use corelog_engine::shard::shard_for;
use corelog_engine::types::{LeaderEpoch, Offset, PartitionId, ShardId, TopicName, TopicPartition};

pub use coordinator::GroupCoordinator;
pub use state::GroupState;

/// The internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// A Kafka error code of the group APIs; `None` in a response field means NONE.
pub type GroupError = ResponseError;

/// A consumer group's id (any string; empty is allowed only where Kafka allows it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GroupId(pub String);

/// A member's id, assigned by the coordinator (empty: "unknown member").
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MemberId(pub String);

/// A group's generation: bumped each time a rebalance completes. -1: no generation
/// (a client outside group management, or an error response).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GenerationId(pub i32);

impl GenerationId {
    pub const NONE: GenerationId = GenerationId(-1);
}

impl MemberId {
    pub fn is_unknown(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for GenerationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How groups behave; Kafka's broker config names in the field docs.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty
    /// group waits for more members (extended by the same delay, up to the rebalance
    /// timeout, while new members keep arriving). Kafka's default is 3000; ours is
    /// small so tests and benchmarks do not idle.
    pub initial_rebalance_delay_ms: u64,
    /// `group.min.session.timeout.ms`: JoinGroup with a shorter session timeout gets
    /// INVALID_SESSION_TIMEOUT.
    pub session_timeout_ms_min: u64,
    /// `group.max.session.timeout.ms`.
    pub session_timeout_ms_max: u64,
    /// `group.max.size`: members per group; more get GROUP_MAX_SIZE_REACHED.
    pub group_members_max: usize,
    /// `offsets.topic.num.partitions`, used when the broker creates the topic. An
    /// existing topic keeps its partition count (the group-to-partition map depends
    /// on it).
    pub offsets_partitions: i32,
    /// `offsets.topic.replication.factor`: a cluster's offsets topic gets this many
    /// replicas, or one per voter of the quorum when there are fewer. It is created
    /// once that many brokers are registered (FindCoordinator answers
    /// COORDINATOR_NOT_AVAILABLE until then, as Kafka's does).
    pub offsets_replication_factor: i32,
    /// `offsets.topic.segment.bytes`: small, so that compaction (which can only drop
    /// whole segments) keeps the topic small.
    pub offsets_segment_bytes: u64,
    /// Bytes appended to an offsets partition after which the writer appends a
    /// snapshot of the partition's state and deletes the records before it. The
    /// effective interval is at least twice the last snapshot's size, so snapshots
    /// cost at most about as much as the writes they compact.
    pub offsets_snapshot_interval_bytes: u64,
    /// `offset.metadata.max.bytes`: longer commit metadata gets OFFSET_METADATA_TOO_LARGE.
    pub offset_metadata_bytes_max: usize,
    /// Requests queued for one shard's coordinator; senders wait when it is full.
    pub coordinator_queue_depth_max: usize,
    /// Writes queued for one offsets partition's writer.
    pub offsets_writes_queue_max: usize,
    /// Writes (offset commits, group records) coalesced into one append: one
    /// fdatasync for all of them.
    pub offsets_writes_per_append_max: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            initial_rebalance_delay_ms: 100,
            session_timeout_ms_min: 6_000,
            session_timeout_ms_max: 1_800_000,
            group_members_max: 10_000,
            offsets_partitions: 8,
            offsets_replication_factor: 3,
            offsets_segment_bytes: 4 << 20,
            offsets_snapshot_interval_bytes: 4 << 20,
            offset_metadata_bytes_max: 4096,
            coordinator_queue_depth_max: 1024,
            offsets_writes_queue_max: 1024,
            offsets_writes_per_append_max: 256,
        }
    }
}

impl GroupConfig {
    /// The topic config of `__consumer_offsets`: synced on every append (a commit is
    /// acknowledged only when durable), never deleted by retention (only compaction
    /// moves the log start), and batches large enough for a big group's record.
    pub fn offsets_topic_config(&self) -> TopicConfig {
        TopicConfig {
            segment_bytes: self.offsets_segment_bytes,
            retention_bytes: -1,
            retention_ms: -1,
            max_message_bytes: offsets::OFFSETS_BATCH_BYTES_MAX as u32,
            durability: Durability::Always,
            ..TopicConfig::default()
        }
    }
}

impl GroupConfig {
    /// The topic configs a cluster's offsets topic is created with: the keys that
    /// give [`GroupConfig::offsets_topic_config`] over the broker's defaults.
    pub fn offsets_topic_configs(&self) -> std::collections::BTreeMap<String, String> {
        [
            ("fsync.policy", "always".to_string()),
            ("retention.ms", "-1".to_string()),
            ("retention.bytes", "-1".to_string()),
            ("segment.bytes", self.offsets_segment_bytes.to_string()),
            ("max.message.bytes", offsets::OFFSETS_BATCH_BYTES_MAX.to_string()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_string(), value))
        .collect()
    }
}

/// The partition of [`OFFSETS_TOPIC`] that holds `group`'s records: a stable hash
/// (FNV-1a), so the map survives restarts as long as the partition count does.
pub fn offsets_partition_for(group: &GroupId, partition_count: i32) -> PartitionId {
    assert!(partition_count > 0, "the offsets topic has partitions");
    let hash = corelog_engine::hash::fnv1a(group.0.as_bytes());
    PartitionId((hash % partition_count as u64) as i32)
}

pub fn offsets_topic() -> TopicName {
    TopicName::new(OFFSETS_TOPIC).expect("the offsets topic name is valid")
}

/// One protocol a member supports (for consumers, an assignor name and the member's
/// subscription). The broker never decodes `metadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Bytes,
}

/// A committed offset as stored and fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: Offset,
    /// -1 when the client did not send one (OffsetCommit before v6).
    pub leader_epoch: LeaderEpoch,
    pub metadata: Option<String>,
    /// Wall-clock time of the commit, stamped by the writer (milliseconds since the
    /// Unix epoch); informational.
    pub commit_timestamp_ms: i64,
}

pub struct JoinRequest {
    pub group_id: GroupId,
    pub member_id: MemberId,
    pub group_instance_id: Option<String>,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    pub protocol_type: String,
    pub protocols: Vec<Protocol>,
    pub client_id: String,
    pub client_host: String,
    /// KIP-394 (JoinGroup v4+, dynamic members): a first join without a member id
    /// gets MEMBER_ID_REQUIRED and a fresh id to join with.
    pub require_known_member_id: bool,
}

/// A member as the leader sees it in its JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: MemberId,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    pub error: Option<GroupError>,
    pub generation: GenerationId,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: MemberId,
    pub member_id: MemberId,
    /// Every member with its metadata for the chosen protocol; the leader's only.
    pub members: Vec<JoinedMember>,
}

impl JoinResponse {
    pub fn error(member_id: MemberId, error: GroupError) -> JoinResponse {
        JoinResponse {
            error: Some(error),
            generation: GenerationId::NONE,
            protocol_type: None,
            protocol_name: None,
            leader: MemberId::default(),
            member_id,
            members: Vec::new(),
        }
    }
}

pub struct SyncRequest {
    pub group_id: GroupId,
    pub generation: GenerationId,
    pub member_id: MemberId,
    pub group_instance_id: Option<String>,
    /// SyncGroup v5+: checked against the group's when present.
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// The leader's assignment (empty from followers).
    pub assignments: Vec<(MemberId, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResponse {
    pub error: Option<GroupError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    pub fn error(error: GroupError) -> SyncResponse {
        SyncResponse { error: Some(error), protocol_type: None, protocol_name: None, assignment: Bytes::new() }
    }
}

pub struct HeartbeatRequest {
    pub group_id: GroupId,
    pub generation: GenerationId,
    pub member_id: MemberId,
    pub group_instance_id: Option<String>,
}

/// One member of a LeaveGroup request (v3+ carry several; older ones exactly one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeavingMember {
    pub member_id: MemberId,
    pub group_instance_id: Option<String>,
}

pub struct LeaveRequest {
    pub group_id: GroupId,
    pub members: Vec<LeavingMember>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveResponse {
    pub error: Option<GroupError>,
    /// One entry per request member, in request order.
    pub members: Vec<(LeavingMember, Option<GroupError>)>,
}

pub struct CommitRequest {
    pub group_id: GroupId,
    pub generation: GenerationId,
    pub member_id: MemberId,
    pub group_instance_id: Option<String>,
    /// Partitions of existing topics only (the handler answers the others).
    pub offsets: Vec<(TopicPartition, CommittedOffset)>,
}

/// A TxnOffsetCommit: offsets a transactional producer commits with its
/// transaction, visible once the transaction commits (Kafka's pending transactional
/// offsets). From v3 it carries the consumer's generation and member (KIP-447), which
/// the coordinator checks as Kafka does, so a zombie processor whose partitions
/// moved to another member cannot commit them.
pub struct TxnCommitRequest {
    pub group_id: GroupId,
    /// -1 (and an empty member id) below v3, or from a producer without group metadata.
    pub generation: GenerationId,
    pub member_id: MemberId,
    pub group_instance_id: Option<String>,
    pub producer_id: corelog_engine::types::ProducerId,
    pub producer_epoch: corelog_engine::types::ProducerEpoch,
    /// Partitions of existing topics only (the handler answers the others).
    pub offsets: Vec<(TopicPartition, CommittedOffset)>,
}

/// One error per [`CommitRequest::offsets`] entry, in order.
pub type CommitResponse = Vec<Option<GroupError>>;

pub struct FetchRequest {
    pub group_id: GroupId,
    /// `None`: every partition the group has committed offsets for.
    pub partitions: Option<Vec<TopicPartition>>,
    /// OffsetFetch v7+'s `require_stable`: the partitions with transactional offsets
    /// pending for the group are reported in [`FetchResponse::unstable`].
    pub require_stable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResponse {
    pub error: Option<GroupError>,
    /// `None` offset: nothing committed (the wire says -1).
    pub offsets: Vec<(TopicPartition, Option<CommittedOffset>)>,
    /// With `require_stable`, the asked partitions (of `offsets`) for which a
    /// TxnOffsetCommit of the group is durable but its transaction's marker not yet
    /// written: answered UNSTABLE_OFFSET_COMMIT, as Kafka's coordinator does, so a
    /// read_committed consumer retries instead of starting from a stale offset.
    pub unstable: BTreeSet<TopicPartition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    pub group_id: GroupId,
    pub protocol_type: String,
    pub state: GroupState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedMember {
    pub member_id: MemberId,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Only while Stable, as in Kafka: the member's metadata for the chosen protocol.
    pub metadata: Bytes,
    /// Only while Stable.
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedGroup {
    pub group_id: GroupId,
    pub state: GroupState,
    pub protocol_type: String,
    /// The chosen protocol while Stable, else "".
    pub protocol_data: String,
    pub members: Vec<DescribedMember>,
}

/// A reply slot: a bounded(1) flume channel that the coordinator answers once.
pub type Reply<T> = flume::Sender<T>;

/// Sends `value` if the requester still waits; a requester that went away (its
/// connection closed) is no error.
pub(crate) fn answer<T>(reply: Reply<T>, value: T) {
    if reply.send(value).is_err() {
        tracing::debug!("a group request's requester went away before its answer");
    }
}

/// What handlers send to a shard's coordinator.
pub enum CoordinatorRequest {
    Join(JoinRequest, Reply<JoinResponse>),
    Sync(SyncRequest, Reply<SyncResponse>),
    Heartbeat(HeartbeatRequest, Reply<Option<GroupError>>),
    Leave(LeaveRequest, Reply<LeaveResponse>),
    Commit(CommitRequest, Reply<CommitResponse>),
    Fetch(FetchRequest, Reply<FetchResponse>),
    List(Reply<Vec<ListedGroup>>),
    Describe(GroupId, Reply<Result<Option<DescribedGroup>, GroupError>>),
    Delete(GroupId, Reply<Option<GroupError>>),
    TxnCommit(TxnCommitRequest, Reply<CommitResponse>),
    /// The marker of producer `producer_id`'s transaction is written to offsets
    /// partition `partition`: its pending offsets there are applied or dropped.
    CompleteTxn {
        partition: PartitionId,
        producer_id: corelog_engine::types::ProducerId,
        commit: bool,
        reply: Reply<()>,
    },
    /// On a cluster node, from the reconciler: this broker leads offsets partition
    /// `partition` (of the topic's `partitions`) in `leader_epoch`; its coordinator
    /// loads the partition's groups from the replicated log and serves them.
    Lead {
        partition: PartitionId,
        partitions: i32,
        leader_epoch: LeaderEpoch,
    },
    /// This broker no longer leads `partition`: its groups are unloaded here.
    Resign {
        partition: PartitionId,
    },
}

/// How handlers reach the coordinator of a group. Cheap to clone; owned by one
/// shard (the partition count of [`GroupRouter::in_cluster`] is the shard's view).
///
/// On a node of a cluster a group is coordinated by the leader of its offsets
/// partition (see the FindCoordinator handler). The shard's coordinator knows which
/// partitions it has loaded and answers every group request (join, sync,
/// heartbeat, leave, offset commit and fetch, describe, delete) of any other
/// partition NOT_COORDINATOR. ListGroups lists this broker's groups, as Kafka's does
/// on every broker.
#[derive(Clone)]
pub struct GroupRouter {
    coordinators: Arc<[flume::Sender<CoordinatorRequest>]>,
    offsets_partitions: i32,
    /// On a cluster node: the offsets topic's partition count in the cluster's
    /// metadata (`None` while the cluster has no offsets topic yet).
    cluster_partitions: Option<Rc<dyn Fn() -> Option<i32>>>,
}

impl GroupRouter {
    pub fn new(coordinators: Arc<[flume::Sender<CoordinatorRequest>]>, offsets_partitions: i32) -> GroupRouter {
        assert!(!coordinators.is_empty(), "one coordinator per shard");
        assert!(offsets_partitions > 0, "the offsets topic has partitions");
        GroupRouter { coordinators, offsets_partitions, cluster_partitions: None }
    }

    /// A cluster node's router: groups map to the partitions of the cluster's
    /// offsets topic, whose count `partitions` reads from the shard's metadata image.
    pub fn in_cluster(self, partitions: Rc<dyn Fn() -> Option<i32>>) -> GroupRouter {
        GroupRouter { cluster_partitions: Some(partitions), ..self }
    }

    /// The offsets topic's partition count; NOT_COORDINATOR while a cluster has no
    /// offsets topic (FindCoordinator creates it; clients look again).
    fn partitions(&self) -> Result<i32, GroupError> {
        match &self.cluster_partitions {
            None => Ok(self.offsets_partitions),
            Some(partitions) => partitions().filter(|count| *count > 0).ok_or(GroupError::NotCoordinator),
        }
    }

    /// The shard whose coordinator owns `group`: the engine owner of its offsets partition.
    pub fn shard_for_group(&self, group: &GroupId) -> Result<ShardId, GroupError> {
        let partition = offsets_partition_for(group, self.partitions()?);
        Ok(shard_for(&TopicPartition::new(offsets_topic(), partition), self.coordinators.len()))
    }

    async fn ask<T>(&self, shard: ShardId, make: impl FnOnce(Reply<T>) -> CoordinatorRequest) -> Result<T, GroupError> {
        self.queue(shard, make).await?.recv_async().await.map_err(|_| GroupError::CoordinatorNotAvailable)
    }

    /// Puts a request on the coordinator's queue and returns without waiting for
    /// the answer. COORDINATOR_NOT_AVAILABLE when the coordinator is gone (shutting
    /// down), which clients retry.
    async fn queue<T>(
        &self,
        shard: ShardId,
        make: impl FnOnce(Reply<T>) -> CoordinatorRequest,
    ) -> Result<flume::Receiver<T>, GroupError> {
        let (reply, answer) = flume::bounded(1);
        self.coordinators[shard.0].send_async(make(reply)).await.map_err(|_| GroupError::CoordinatorNotAvailable)?;
        Ok(answer)
    }

    async fn ask_group<T>(
        &self,
        group: &GroupId,
        make: impl FnOnce(Reply<T>) -> CoordinatorRequest,
    ) -> Result<T, GroupError> {
        self.ask(self.shard_for_group(group)?, make).await
    }

    pub async fn join(&self, request: JoinRequest) -> JoinResponse {
        let member_id = request.member_id.clone();
        let group = request.group_id.clone();
        self.ask_group(&group, |reply| CoordinatorRequest::Join(request, reply))
            .await
            .unwrap_or_else(|error| JoinResponse::error(member_id, error))
    }

    pub async fn sync(&self, request: SyncRequest) -> SyncResponse {
        let group = request.group_id.clone();
        self.ask_group(&group, |reply| CoordinatorRequest::Sync(request, reply))
            .await
            .unwrap_or_else(SyncResponse::error)
    }

    pub async fn heartbeat(&self, request: HeartbeatRequest) -> Option<GroupError> {
        let group = request.group_id.clone();
        self.ask_group(&group, |reply| CoordinatorRequest::Heartbeat(request, reply)).await.unwrap_or_else(Some)
    }

    pub async fn leave(&self, request: LeaveRequest) -> LeaveResponse {
        let group = request.group_id.clone();
        self.ask_group(&group, |reply| CoordinatorRequest::Leave(request, reply))
            .await
            .unwrap_or_else(|error| LeaveResponse { error: Some(error), members: Vec::new() })
    }

    /// Queues an offset commit on the group's coordinator and returns the future of
    /// its answer. The coordinator serves its queue in order and hands each offsets
    /// partition's writes to its writer in that order, so of two commits queued one
    /// after the other, the later is appended (and applied) later and wins.
    pub async fn dispatch_commit(&self, request: CommitRequest) -> impl std::future::Future<Output = CommitResponse> {
        let count = request.offsets.len();
        let answer = match self.shard_for_group(&request.group_id) {
            Ok(shard) => self.queue(shard, |reply| CoordinatorRequest::Commit(request, reply)).await,
            Err(error) => Err(error),
        };
        async move {
            let answered = match answer {
                Ok(answer) => answer.recv_async().await.map_err(|_| GroupError::CoordinatorNotAvailable),
                Err(error) => Err(error),
            };
            answered.unwrap_or_else(|error| vec![Some(error); count])
        }
    }

    /// The offsets partition of `group` (what AddOffsetsToTxn adds to a transaction).
    pub fn offsets_partition(&self, group: &GroupId) -> Result<PartitionId, GroupError> {
        Ok(offsets_partition_for(group, self.partitions()?))
    }

    /// A TxnOffsetCommit, answered once its records are durable (pending).
    pub async fn txn_commit(&self, request: TxnCommitRequest) -> CommitResponse {
        let count = request.offsets.len();
        let group = request.group_id.clone();
        self.ask_group(&group, |reply| CoordinatorRequest::TxnCommit(request, reply))
            .await
            .unwrap_or_else(|error| vec![Some(error); count])
    }

    /// Tells the coordinator of offsets partition `partition` that producer
    /// `producer_id`'s marker is written there; returns once the store has it.
    pub async fn complete_txn(
        &self,
        partition: PartitionId,
        producer_id: corelog_engine::types::ProducerId,
        commit: bool,
    ) {
        let shard = shard_for(&TopicPartition::new(offsets_topic(), partition), self.coordinators.len());
        let asked = self.ask(shard, |reply| CoordinatorRequest::CompleteTxn { partition, producer_id, commit, reply });
        if asked.await.is_err() {
            tracing::warn!(
                "{}/{partition}: the group coordinator is gone before a transaction's completion",
                offsets_topic()
            );
        }
    }

    pub async fn fetch(&self, request: FetchRequest) -> FetchResponse {
        let group = request.group_id.clone();
        self.ask_group(&group, |reply| CoordinatorRequest::Fetch(request, reply)).await.unwrap_or_else(|error| {
            FetchResponse { error: Some(error), offsets: Vec::new(), unstable: BTreeSet::new() }
        })
    }

    /// Every shard's groups (asked concurrently). `Err` if some coordinator is gone.
    pub async fn list(&self) -> Result<Vec<ListedGroup>, GroupError> {
        let mut answers = Vec::with_capacity(self.coordinators.len());
        for shard in 0..self.coordinators.len() {
            let (reply, answer) = flume::bounded(1);
            self.coordinators[shard]
                .send_async(CoordinatorRequest::List(reply))
                .await
                .map_err(|_| GroupError::CoordinatorNotAvailable)?;
            answers.push(answer);
        }
        let mut groups = Vec::new();
        for answer in answers {
            groups.extend(answer.recv_async().await.map_err(|_| GroupError::CoordinatorNotAvailable)?);
        }
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(groups)
    }

    /// `Ok(None)`: no such group.
    pub async fn describe(&self, group: GroupId) -> Result<Option<DescribedGroup>, GroupError> {
        let shard = self.shard_for_group(&group)?;
        self.ask(shard, |reply| CoordinatorRequest::Describe(group, reply)).await?
    }

    pub async fn delete(&self, group: GroupId) -> Option<GroupError> {
        let shard = match self.shard_for_group(&group) {
            Ok(shard) => shard,
            Err(error) => return Some(error),
        };
        self.ask(shard, |reply| CoordinatorRequest::Delete(group, reply)).await.unwrap_or_else(Some)
    }
}

/// The broker's start-up plumbing: the coordinator queues of every shard, made by
/// the first shard to start (the engine decides the shard count) so that every
/// shard's handlers are given every queue. Cheap to clone (`Send + Sync`), as the
/// per-shard service closure needs; the lock is touched only at start-up.
#[derive(Clone)]
pub struct Coordinators {
    config: GroupConfig,
    /// A cluster node: the offsets topic is the cluster's, and each partition is
    /// loaded by its leader ([`Coordinators::offsets_leadership`]).
    clustered: bool,
    channels: LazyShardQueues<CoordinatorRequest, runtime::Start>,
}

impl Coordinators {
    pub fn new(config: GroupConfig, clustered: bool) -> Coordinators {
        Coordinators { config, clustered, channels: LazyShardQueues::default() }
    }

    fn channels(&self, shard_count: usize) -> &ShardQueues<CoordinatorRequest, runtime::Start> {
        self.channels.get_or_make(shard_count, self.config.coordinator_queue_depth_max, "group coordinator")
    }

    /// Runs on `shard`'s thread (from the broker's shard service): spawns the shard's
    /// coordinator task, which waits for [`Coordinators::load`] before it serves, and
    /// returns the router for this shard's handlers. `stop` disconnecting tells the
    /// coordinator the broker is shutting down.
    pub fn start_on_shard(
        &self,
        shard: ShardId,
        engine: corelog_engine::shard::EngineHandle,
        replicas: Option<Arc<crate::cluster::replica_manager::ReplicaManager>>,
        stop: flume::Receiver<()>,
    ) -> GroupRouter {
        let channels = self.channels(engine.shard_count());
        // The partition count of an existing offsets topic wins; the broker creates a
        // missing one with the configured count, so every shard computes the same.
        // (A cluster node's router reads the count from the metadata instead.)
        let partitions = engine.topic(&offsets_topic()).map_or(self.config.offsets_partitions, |m| m.partition_count);
        let actor = runtime::Shard { shard, engine, config: self.config.clone(), replicas };
        let task = runtime::run(actor, channels.receivers[shard.0].clone(), channels.starts[shard.0].1.clone(), stop);
        glommio::spawn_local(task).detach();
        GroupRouter::new(channels.senders.clone(), partitions)
    }

    /// Creates `__consumer_offsets` if missing, then has every shard's coordinator
    /// replay its partitions. Returns once all are loaded and serving. Works from any
    /// thread (the broker calls it with `block_on`). A cluster node's coordinators
    /// start serving with nothing loaded: the cluster's offsets topic is created by
    /// the controller (FindCoordinator asks for it) and its partitions are loaded by
    /// their leaders.
    pub async fn load(&self, engine: &corelog_engine::shard::EngineHandle) -> corelog_engine::error::Result<()> {
        use corelog_engine::error::EngineError;
        let Some(channels) = self.channels.get() else {
            return Err(EngineError::Startup("no shard started a group coordinator".to_string()));
        };
        let partitions = match self.clustered {
            true => self.config.offsets_partitions,
            false => self.local_offsets_topic(engine).await?,
        };
        let load_all = !self.clustered;
        channels.start_all(|reply| runtime::Start { offsets_partitions: partitions, load_all, reply }).await
    }

    /// From a cluster node's reconciler (any thread): this broker leads offsets
    /// partition `partition` of `partitions` in `leader_epoch` (`Some`), or no longer
    /// does (`None`). The partition's owner shard loads or unloads its groups.
    pub fn offsets_leadership(&self, partition: PartitionId, partitions: i32, leader_epoch: Option<LeaderEpoch>) {
        let Some(channels) = self.channels.get() else { return };
        let shard = shard_for(&TopicPartition::new(offsets_topic(), partition), channels.senders.len());
        let request = match leader_epoch {
            Some(leader_epoch) => CoordinatorRequest::Lead { partition, partitions, leader_epoch },
            None => CoordinatorRequest::Resign { partition },
        };
        if channels.senders[shard.0].send(request).is_err() {
            tracing::debug!(
                "{}/{partition}: the group coordinator stopped before a leadership change",
                offsets_topic()
            );
        }
    }

    /// A single broker's own `__consumer_offsets`: created if missing, its
    /// durability and retention restored if changed. Returns its partition count.
    async fn local_offsets_topic(
        &self,
        engine: &corelog_engine::shard::EngineHandle,
    ) -> corelog_engine::error::Result<i32> {
        let topic = offsets_topic();
        let partitions = match engine.topic(&topic) {
            Some(metadata) => {
                let config = &metadata.config;
                if config.durability != Durability::Always || config.retention_ms != -1 || config.retention_bytes != -1
                {
                    tracing::warn!("{topic}: restoring fsync.policy=always and unlimited retention");
                    let mut fixed = config.clone();
                    fixed.durability = Durability::Always;
                    fixed.retention_ms = -1;
                    fixed.retention_bytes = -1;
                    engine.set_topic_config(&topic, fixed).await?;
                }
                metadata.partition_count
            }
            None => {
                let metadata = engine
                    .create_topic(topic.clone(), self.config.offsets_partitions, self.config.offsets_topic_config())
                    .await?;
                tracing::info!("created {topic} with {} partitions", metadata.partition_count);
                metadata.partition_count
            }
        };
        Ok(partitions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_map_to_partitions_stably_and_spread() {
        let first = offsets_partition_for(&GroupId("orders-service".into()), 8);
        assert_eq!(first, offsets_partition_for(&GroupId("orders-service".into()), 8));
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..200 {
            let partition = offsets_partition_for(&GroupId(format!("group-{i}")), 8);
            assert!((0..8).contains(&partition.0));
            seen.insert(partition);
        }
        assert_eq!(seen.len(), 8, "200 groups should touch every partition");
    }
}
