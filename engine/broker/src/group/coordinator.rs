//! [`GroupCoordinator`]: the classic group protocol for the groups of one shard.
//!
//! The coordinator is a plain state machine. It does no IO and reads no clock:
//! every call gets `now_ms` (a monotonic millisecond count), requests whose answer
//! must wait (JoinGroup until the rebalance completes, SyncGroup until the leader's
//! assignment) keep their [`Reply`] inside the group, and what must be persisted is
//! queued as [`StoreWrite`]s for the runtime to append ([`GroupCoordinator::take_writes`]).
//! Timers are deadlines in a heap: the runtime sleeps until
//! [`GroupCoordinator::next_deadline_ms`] and calls [`GroupCoordinator::tick`].
//!
//! The rules follow Kafka's `GroupCoordinator` (classic protocol), including its
//! error codes: KIP-394 member ids (MEMBER_ID_REQUIRED), KIP-345 static members
//! (FENCED_INSTANCE_ID, rejoin without rebalance), the initial rebalance delay of
//! new groups, "simple" offset commits (generation -1) for empty groups, and
//! DeleteGroups of empty groups only.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use bytes::Bytes;

use super::offsets::{GroupRecord, MemberRecord, StoredGroup};
use super::state::{Group, GroupState, Member, RebalanceTimer, NEW_MEMBER_JOIN_TIMEOUT_MS};
use super::{
    answer, offsets_partition_for, CommitRequest, CommitResponse, CommittedOffset, DescribedGroup, DescribedMember,
    GenerationId, GroupConfig, GroupError, GroupId, HeartbeatRequest, JoinRequest, JoinResponse, LeaveRequest,
    LeaveResponse, ListedGroup, MemberId, Protocol, Reply, SyncRequest, SyncResponse,
};
use corelog_engine::types::{PartitionId, TopicPartition};

/// Something the coordinator wants appended to a partition of the offsets topic.
pub enum StoreWrite {
    /// Offsets to commit; `results` holds the per-partition answer for every entry
    /// of the request (`None` for the ones in `offsets`), sent once the append is
    /// durable (or failed).
    Commit {
        partition: PartitionId,
        group_id: GroupId,
        offsets: Vec<(TopicPartition, CommittedOffset)>,
        results: CommitResponse,
        reply: Reply<CommitResponse>,
    },
    /// A group's membership at the end of a rebalance; nobody waits for it.
    Group { partition: PartitionId, group_id: GroupId, record: GroupRecord },
    /// Tombstones for a deleted group and all its offsets; answered after the append.
    Delete { partition: PartitionId, group_id: GroupId, reply: Reply<Option<GroupError>> },
    /// A TxnOffsetCommit: the offsets appended as the producer's transactional batch,
    /// pending until its transaction's marker; answered after the append.
    TxnCommit { partition: PartitionId, request: super::TxnCommitRequest, reply: Reply<CommitResponse> },
}

impl StoreWrite {
    pub fn partition(&self) -> PartitionId {
        match self {
            StoreWrite::Commit { partition, .. }
            | StoreWrite::Group { partition, .. }
            | StoreWrite::Delete { partition, .. }
            | StoreWrite::TxnCommit { partition, .. } => *partition,
        }
    }
}

pub struct GroupCoordinator {
    config: GroupConfig,
    offsets_partitions: i32,
    groups: BTreeMap<GroupId, Group>,
    /// (deadline, group): each group has at most one live entry, `Group::timer_ms`;
    /// other entries are stale and skipped.
    timers: BinaryHeap<Reverse<(u64, GroupId)>>,
    writes: Vec<StoreWrite>,
    member_id_seed: u64,
    member_id_count: u64,
    /// The broker is shutting down: held requests were answered NOT_COORDINATOR and
    /// membership requests get the same, so clients look for the coordinator again.
    stopping: bool,
}

fn session_deadline(now_ms: u64, member: &Member) -> u64 {
    now_ms.saturating_add(member.session_timeout_ms)
}

impl GroupCoordinator {
    /// `member_id_seed` makes member ids unique across coordinators and restarts
    /// (the runtime passes the wall clock and shard).
    pub fn new(config: GroupConfig, offsets_partitions: i32, member_id_seed: u64) -> GroupCoordinator {
        assert!(offsets_partitions > 0, "the offsets topic has partitions");
        GroupCoordinator {
            config,
            offsets_partitions,
            groups: BTreeMap::new(),
            timers: BinaryHeap::new(),
            writes: Vec::new(),
            member_id_seed,
            member_id_count: 0,
            stopping: false,
        }
    }

    /// The offsets topic's partition count the groups are mapped with.
    pub fn offsets_partitions(&self) -> i32 {
        self.offsets_partitions
    }

    pub fn offsets_partition(&self, group_id: &GroupId) -> PartitionId {
        offsets_partition_for(group_id, self.offsets_partitions)
    }

    /// The records to append since the last call, in the order they were decided.
    pub fn take_writes(&mut self) -> Vec<StoreWrite> {
        std::mem::take(&mut self.writes)
    }

    /// When [`GroupCoordinator::tick`] has something to do (it may find nothing: a
    /// heartbeat can have moved the deadline since).
    pub fn next_deadline_ms(&self) -> Option<u64> {
        if self.stopping {
            return None;
        }
        self.timers.peek().map(|Reverse((deadline, _))| *deadline)
    }

    pub fn group_state(&self, group_id: &GroupId) -> Option<GroupState> {
        self.groups.get(group_id).map(|g| g.state)
    }

    fn next_member_id(&mut self, prefix: &str) -> MemberId {
        self.member_id_count += 1;
        let id = uuid::Uuid::from_u64_pair(self.member_id_seed, self.member_id_count);
        MemberId(format!("{prefix}-{}", id.hyphenated()))
    }

    /// Takes a group out of the map to work on it (`put_group` puts it back).
    fn take_group(&mut self, group_id: &GroupId) -> Option<Group> {
        self.groups.remove(group_id)
    }

    /// Puts a group back and schedules its next deadline. An empty group without
    /// stored records is forgotten instead (a join that failed, a member id never used).
    fn put_group(&mut self, mut group: Group) {
        if group.is(GroupState::Empty) && group.members.is_empty() && group.pending_members.is_empty() && !group.stored
        {
            return;
        }
        if let Some(next) = group.next_deadline_ms() {
            if !matches!(group.timer_ms, Some(scheduled) if scheduled <= next) {
                self.timers.push(Reverse((next, group.group_id.clone())));
                group.timer_ms = Some(next);
            }
        }
        self.groups.insert(group.group_id.clone(), group);
    }

    /// Start-up: a group as its offsets partition left it. A group with members comes
    /// back Stable with them (they keep heartbeating after a restart, no rebalance);
    /// their sessions start now.
    pub fn load_group(&mut self, now_ms: u64, group_id: GroupId, stored: &StoredGroup) {
        let mut group = Group::new(group_id);
        group.stored = true;
        if let Some(metadata) = &stored.metadata {
            group.generation = metadata.generation;
            group.protocol_type = Some(metadata.protocol_type.clone()).filter(|t| !t.is_empty());
            if !metadata.members.is_empty() {
                let protocol = metadata.protocol_name.clone().unwrap_or_default();
                for record in &metadata.members {
                    let member = Member {
                        member_id: record.member_id.clone(),
                        group_instance_id: record.group_instance_id.clone(),
                        client_id: record.client_id.clone(),
                        client_host: record.client_host.clone(),
                        session_timeout_ms: record.session_timeout_ms,
                        rebalance_timeout_ms: record.rebalance_timeout_ms,
                        protocols: vec![Protocol { name: protocol.clone(), metadata: record.subscription.clone() }],
                        assignment: record.assignment.clone(),
                        awaiting_join: None,
                        awaiting_sync: None,
                        heartbeat_deadline_ms: now_ms.saturating_add(record.session_timeout_ms),
                        is_new: false,
                    };
                    if let Some(instance) = &member.group_instance_id {
                        group.static_members.insert(instance.clone(), member.member_id.clone());
                    }
                    group.members.insert(member.member_id.clone(), member);
                }
                group.protocol_name = metadata.protocol_name.clone();
                group.leader = metadata.leader.clone().filter(|l| group.members.contains_key(l));
                if group.leader.is_none() {
                    group.leader = group.members.keys().next().cloned();
                }
                group.state = GroupState::Stable;
            }
        }
        self.put_group(group);
    }

    fn persist_group(&mut self, group: &mut Group) {
        group.stored = true;
        let protocol = group.protocol_name.clone().unwrap_or_default();
        let record = GroupRecord {
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            generation: group.generation,
            protocol_name: group.protocol_name.clone(),
            leader: group.leader.clone(),
            members: group
                .members
                .values()
                .map(|m| MemberRecord {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    subscription: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        };
        let partition = self.offsets_partition(&group.group_id);
        self.writes.push(StoreWrite::Group { partition, group_id: group.group_id.clone(), record });
    }

    // ---- JoinGroup ----

    pub fn join(&mut self, now_ms: u64, request: JoinRequest, reply: Reply<JoinResponse>) {
        let member_id = request.member_id.clone();
        if self.stopping {
            return answer(reply, JoinResponse::error(member_id, GroupError::NotCoordinator));
        }
        if request.group_id.0.is_empty() {
            return answer(reply, JoinResponse::error(member_id, GroupError::InvalidGroupId));
        }
        let session_range = self.config.session_timeout_ms_min..=self.config.session_timeout_ms_max;
        if !session_range.contains(&request.session_timeout_ms) {
            return answer(reply, JoinResponse::error(member_id, GroupError::InvalidSessionTimeout));
        }
        let unknown = member_id.is_unknown();
        let mut group = match self.take_group(&request.group_id) {
            Some(group) => group,
            None if unknown => Group::new(request.group_id.clone()),
            // A member id the coordinator does not know (it restarted, or the group was
            // deleted): the client resets its id and joins again.
            None => return answer(reply, JoinResponse::error(member_id, GroupError::UnknownMemberId)),
        };
        if unknown && group.members.len() >= self.config.group_members_max {
            answer(reply, JoinResponse::error(MemberId::default(), GroupError::GroupMaxSizeReached));
        } else if unknown {
            self.join_unknown_member(now_ms, &mut group, request, reply);
        } else {
            self.join_known_member(now_ms, &mut group, request, reply);
        }
        self.try_complete_join(now_ms, &mut group);
        self.put_group(group);
    }

    fn join_unknown_member(
        &mut self,
        now_ms: u64,
        group: &mut Group,
        request: JoinRequest,
        reply: Reply<JoinResponse>,
    ) {
        if !group.supports_protocols(&request.protocol_type, &request.protocols) {
            return answer(reply, JoinResponse::error(MemberId::default(), GroupError::InconsistentGroupProtocol));
        }
        let prefix = request.group_instance_id.clone().unwrap_or_else(|| request.client_id.clone());
        let new_member_id = self.next_member_id(&prefix);
        if let Some(instance) = &request.group_instance_id {
            if let Some(old_member_id) = group.static_members.get(instance).cloned() {
                return self.replace_static_member(now_ms, group, old_member_id, new_member_id, request, reply);
            }
        }
        if request.require_known_member_id && request.group_instance_id.is_none() {
            let deadline = now_ms.saturating_add(request.session_timeout_ms);
            group.pending_members.insert(new_member_id.clone(), deadline);
            return answer(reply, JoinResponse::error(new_member_id, GroupError::MemberIdRequired));
        }
        self.add_member_and_rebalance(now_ms, group, new_member_id, request, reply);
    }

    /// A static member (known group.instance.id) rejoined without its member id: it
    /// gets a new id, the old one is fenced. With unchanged protocols a Stable group
    /// does not rebalance: the member gets the current generation and fetches its
    /// assignment with SyncGroup. The response names the leader as it was, so a
    /// restarted static leader does not think it must assign (Kafka does the same).
    fn replace_static_member(
        &mut self,
        now_ms: u64,
        group: &mut Group,
        old_member_id: MemberId,
        new_member_id: MemberId,
        request: JoinRequest,
        reply: Reply<JoinResponse>,
    ) {
        let instance = request.group_instance_id.clone().unwrap_or_default();
        let Some(mut member) = group.members.remove(&old_member_id) else {
            // The instance map pointed at a member that is gone: treat as a new member.
            group.static_members.remove(&instance);
            return self.add_member_and_rebalance(now_ms, group, new_member_id, request, reply);
        };
        if let Some(held) = member.awaiting_join.take() {
            answer(held, JoinResponse::error(old_member_id.clone(), GroupError::FencedInstanceId));
        }
        if let Some(held) = member.awaiting_sync.take() {
            answer(held, SyncResponse::error(GroupError::FencedInstanceId));
        }
        let previous_leader = group.leader.clone().unwrap_or_default();
        if group.is_leader(&old_member_id) {
            group.leader = Some(new_member_id.clone());
        }
        let protocols_changed = !member.matches(&request.protocols);
        member.member_id = new_member_id.clone();
        member.client_id = request.client_id;
        member.client_host = request.client_host;
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.heartbeat_deadline_ms = session_deadline(now_ms, &member);
        group.static_members.insert(instance, new_member_id.clone());
        match group.state {
            GroupState::Stable | GroupState::CompletingRebalance if !protocols_changed => {
                group.members.insert(new_member_id.clone(), member);
                let mut response = group.join_response(&new_member_id);
                response.leader = previous_leader;
                response.members = Vec::new();
                self.persist_group(group);
                answer(reply, response);
            }
            GroupState::Stable | GroupState::CompletingRebalance | GroupState::PreparingRebalance => {
                member.protocols = request.protocols;
                member.awaiting_join = Some(reply);
                group.members.insert(new_member_id, member);
                self.maybe_prepare_rebalance(now_ms, group);
            }
            GroupState::Empty | GroupState::Dead => {
                // Static members exist only in groups with members; never reached.
                group.static_members.remove(member.group_instance_id.as_deref().unwrap_or_default());
                answer(reply, JoinResponse::error(new_member_id, GroupError::UnknownMemberId));
            }
        }
    }

    fn join_known_member(&mut self, now_ms: u64, group: &mut Group, request: JoinRequest, reply: Reply<JoinResponse>) {
        let member_id = request.member_id.clone();
        if !group.supports_protocols(&request.protocol_type, &request.protocols) {
            return answer(reply, JoinResponse::error(member_id, GroupError::InconsistentGroupProtocol));
        }
        if group.pending_members.contains_key(&member_id) {
            // The second join of KIP-394, with the id handed out by the first.
            return self.add_member_and_rebalance(now_ms, group, member_id, request, reply);
        }
        let instance = request.group_instance_id.as_deref();
        if group.is_static_member_fenced(&member_id, instance) {
            return answer(reply, JoinResponse::error(member_id, GroupError::FencedInstanceId));
        }
        if !group.members.contains_key(&member_id) || instance.is_some_and(|i| !group.static_members.contains_key(i)) {
            return answer(reply, JoinResponse::error(member_id, GroupError::UnknownMemberId));
        }
        let matches = group.members.get(&member_id).is_some_and(|m| m.matches(&request.protocols));
        match group.state {
            GroupState::PreparingRebalance => self.update_member_and_rebalance(now_ms, group, request, reply),
            // Same metadata: the member missed its JoinGroup response; send it again.
            GroupState::CompletingRebalance if matches => answer(reply, group.join_response(&member_id)),
            GroupState::CompletingRebalance => self.update_member_and_rebalance(now_ms, group, request, reply),
            // A follower with unchanged metadata just gets the current generation; the
            // leader rejoining (e.g. topic metadata changed) forces a rebalance.
            GroupState::Stable if matches && !group.is_leader(&member_id) => {
                answer(reply, group.join_response(&member_id))
            }
            GroupState::Stable => self.update_member_and_rebalance(now_ms, group, request, reply),
            GroupState::Empty | GroupState::Dead => {
                answer(reply, JoinResponse::error(member_id, GroupError::UnknownMemberId))
            }
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        now_ms: u64,
        group: &mut Group,
        member_id: MemberId,
        request: JoinRequest,
        reply: Reply<JoinResponse>,
    ) {
        if group.members.is_empty() {
            group.protocol_type = Some(request.protocol_type.clone());
        }
        if group.is(GroupState::PreparingRebalance) && group.generation == GenerationId(0) {
            group.new_member_added = true;
        }
        let member = Member {
            member_id: member_id.clone(),
            group_instance_id: request.group_instance_id,
            client_id: request.client_id,
            client_host: request.client_host,
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms: request.rebalance_timeout_ms,
            protocols: request.protocols,
            assignment: Bytes::new(),
            awaiting_join: Some(reply),
            awaiting_sync: None,
            // A new member cannot heartbeat before its JoinGroup response, so the
            // session starts then; until then a longer bound catches abandoned joins.
            heartbeat_deadline_ms: now_ms.saturating_add(NEW_MEMBER_JOIN_TIMEOUT_MS),
            is_new: true,
        };
        if let Some(instance) = &member.group_instance_id {
            group.static_members.insert(instance.clone(), member_id.clone());
        }
        if group.leader.is_none() {
            group.leader = Some(member_id.clone());
        }
        group.pending_members.remove(&member_id);
        tracing::debug!("group {}: member {member_id} joins ({})", group.group_id, group.state.name());
        group.members.insert(member_id, member);
        self.maybe_prepare_rebalance(now_ms, group);
    }

    fn update_member_and_rebalance(
        &mut self,
        now_ms: u64,
        group: &mut Group,
        request: JoinRequest,
        reply: Reply<JoinResponse>,
    ) {
        let Some(member) = group.members.get_mut(&request.member_id) else {
            return answer(reply, JoinResponse::error(request.member_id, GroupError::UnknownMemberId));
        };
        if let Some(previous) = member.awaiting_join.replace(reply) {
            // The client gave up on its previous JoinGroup and sent another.
            answer(previous, JoinResponse::error(request.member_id.clone(), GroupError::RebalanceInProgress));
        }
        member.protocols = request.protocols;
        member.client_id = request.client_id;
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        self.maybe_prepare_rebalance(now_ms, group);
    }

    fn maybe_prepare_rebalance(&mut self, now_ms: u64, group: &mut Group) {
        if matches!(group.state, GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty) {
            self.prepare_rebalance(now_ms, group);
        }
    }

    fn prepare_rebalance(&mut self, now_ms: u64, group: &mut Group) {
        if group.is(GroupState::CompletingRebalance) {
            self.reset_and_propagate_assignment_error(now_ms, group, GroupError::RebalanceInProgress);
        }
        group.rebalance = if group.is(GroupState::Empty) {
            let delay_ms = self.config.initial_rebalance_delay_ms;
            RebalanceTimer::Initial {
                deadline_ms: now_ms.saturating_add(delay_ms),
                remaining_ms: group.rebalance_timeout_ms().saturating_sub(delay_ms),
            }
        } else {
            RebalanceTimer::Join { deadline_ms: now_ms.saturating_add(group.rebalance_timeout_ms()) }
        };
        tracing::debug!(
            "group {}: preparing to rebalance from {} (generation {})",
            group.group_id,
            group.state.name(),
            group.generation
        );
        group.state = GroupState::PreparingRebalance;
        self.try_complete_join(now_ms, group);
    }

    /// A rebalance (not in its initial delay) completes as soon as everyone rejoined.
    fn try_complete_join(&mut self, now_ms: u64, group: &mut Group) {
        if group.is(GroupState::PreparingRebalance)
            && matches!(group.rebalance, RebalanceTimer::Join { .. })
            && group.all_members_joined()
        {
            self.complete_join(now_ms, group);
        }
    }

    /// Ends PreparingRebalance: dynamic members that did not rejoin are dropped, the
    /// generation is bumped, a protocol chosen, and every held JoinGroup answered
    /// (the leader's with all members' metadata).
    fn complete_join(&mut self, now_ms: u64, group: &mut Group) {
        assert!(group.is(GroupState::PreparingRebalance), "only a rebalance completes");
        let missing: Vec<MemberId> = group
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.group_instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in missing {
            tracing::info!("group {}: member {member_id} did not rejoin in time; removing it", group.group_id);
            if let Some(member) = group.remove_member(&member_id) {
                if let Some(held) = member.awaiting_sync {
                    answer(held, SyncResponse::error(GroupError::UnknownMemberId));
                }
            }
        }
        if !group.elect_joined_leader() && !group.members.is_empty() {
            // Only static members are left and none rejoined: give them another
            // rebalance timeout (their sessions expire them otherwise).
            group.rebalance = RebalanceTimer::Join { deadline_ms: now_ms.saturating_add(group.rebalance_timeout_ms()) };
            return;
        }
        group.generation = GenerationId(group.generation.0 + 1);
        group.rebalance = RebalanceTimer::None;
        group.new_member_added = false;
        if group.members.is_empty() {
            group.protocol_name = None;
            group.leader = None;
            group.state = GroupState::Empty;
            tracing::info!("group {}: empty at generation {}", group.group_id, group.generation);
            self.persist_group(group);
            return;
        }
        group.protocol_name = group.select_protocol();
        group.state = GroupState::CompletingRebalance;
        tracing::info!(
            "group {}: generation {} with {} members, protocol {}",
            group.group_id,
            group.generation,
            group.members.len(),
            group.protocol_name.as_deref().unwrap_or("-")
        );
        let member_ids: Vec<MemberId> = group.members.keys().cloned().collect();
        for member_id in member_ids {
            let response = group.join_response(&member_id);
            if let Some(member) = group.members.get_mut(&member_id) {
                member.is_new = false;
                member.heartbeat_deadline_ms = session_deadline(now_ms, member);
                if let Some(held) = member.awaiting_join.take() {
                    answer(held, response);
                }
            }
        }
    }

    fn reset_and_propagate_assignment_error(&mut self, now_ms: u64, group: &mut Group, error: GroupError) {
        for member in group.members.values_mut() {
            member.assignment = Bytes::new();
            if let Some(held) = member.awaiting_sync.take() {
                answer(held, SyncResponse::error(error));
                member.heartbeat_deadline_ms = session_deadline(now_ms, member);
            }
        }
    }

    // ---- SyncGroup ----

    pub fn sync(&mut self, now_ms: u64, request: SyncRequest, reply: Reply<SyncResponse>) {
        if self.stopping {
            return answer(reply, SyncResponse::error(GroupError::NotCoordinator));
        }
        if request.group_id.0.is_empty() {
            return answer(reply, SyncResponse::error(GroupError::InvalidGroupId));
        }
        let Some(mut group) = self.take_group(&request.group_id) else {
            return answer(reply, SyncResponse::error(GroupError::UnknownMemberId));
        };
        self.sync_group(now_ms, &mut group, request, reply);
        self.put_group(group);
    }

    fn sync_group(&mut self, now_ms: u64, group: &mut Group, request: SyncRequest, reply: Reply<SyncResponse>) {
        let member_id = &request.member_id;
        if let Err(error) = group.validate_member(member_id, request.group_instance_id.as_deref()) {
            return answer(reply, SyncResponse::error(error));
        }
        if request.generation != group.generation {
            return answer(reply, SyncResponse::error(GroupError::IllegalGeneration));
        }
        let type_differs = request.protocol_type.as_ref().is_some_and(|t| group.protocol_type.as_ref() != Some(t));
        let name_differs = request.protocol_name.as_ref().is_some_and(|n| group.protocol_name.as_ref() != Some(n));
        if type_differs || name_differs {
            return answer(reply, SyncResponse::error(GroupError::InconsistentGroupProtocol));
        }
        match group.state {
            GroupState::Empty => answer(reply, SyncResponse::error(GroupError::UnknownMemberId)),
            GroupState::PreparingRebalance => answer(reply, SyncResponse::error(GroupError::RebalanceInProgress)),
            GroupState::Dead => answer(reply, SyncResponse::error(GroupError::CoordinatorNotAvailable)),
            GroupState::Stable => {
                let protocol_type = group.protocol_type.clone();
                let protocol_name = group.protocol_name.clone();
                let Some(member) = group.members.get_mut(member_id) else {
                    return answer(reply, SyncResponse::error(GroupError::UnknownMemberId));
                };
                member.heartbeat_deadline_ms = session_deadline(now_ms, member);
                let response =
                    SyncResponse { error: None, protocol_type, protocol_name, assignment: member.assignment.clone() };
                answer(reply, response);
            }
            GroupState::CompletingRebalance => {
                let Some(member) = group.members.get_mut(member_id) else {
                    return answer(reply, SyncResponse::error(GroupError::UnknownMemberId));
                };
                if let Some(previous) = member.awaiting_sync.replace(reply) {
                    answer(previous, SyncResponse::error(GroupError::RebalanceInProgress));
                }
                if group.is_leader(member_id) {
                    let mut assignments: HashMap<MemberId, Bytes> = request.assignments.into_iter().collect();
                    let mut missing = 0;
                    for member in group.members.values_mut() {
                        member.assignment = assignments.remove(&member.member_id).unwrap_or_else(|| {
                            missing += 1;
                            Bytes::new()
                        });
                    }
                    if missing > 0 {
                        tracing::warn!(
                            "group {}: the leader's assignment leaves out {missing} members (they get none)",
                            group.group_id
                        );
                    }
                    group.state = GroupState::Stable;
                    self.persist_group(group);
                    self.propagate_assignment(now_ms, group);
                }
            }
        }
    }

    fn propagate_assignment(&mut self, now_ms: u64, group: &mut Group) {
        let protocol_type = group.protocol_type.clone();
        let protocol_name = group.protocol_name.clone();
        for member in group.members.values_mut() {
            if let Some(held) = member.awaiting_sync.take() {
                let response = SyncResponse {
                    error: None,
                    protocol_type: protocol_type.clone(),
                    protocol_name: protocol_name.clone(),
                    assignment: member.assignment.clone(),
                };
                answer(held, response);
                member.heartbeat_deadline_ms = session_deadline(now_ms, member);
            }
        }
    }

    // ---- Heartbeat ----

    pub fn heartbeat(&mut self, now_ms: u64, request: HeartbeatRequest) -> Option<GroupError> {
        if self.stopping {
            return Some(GroupError::NotCoordinator);
        }
        if request.group_id.0.is_empty() {
            return Some(GroupError::InvalidGroupId);
        }
        let Some(mut group) = self.take_group(&request.group_id) else {
            return Some(GroupError::UnknownMemberId);
        };
        let result = Self::heartbeat_group(now_ms, &mut group, &request);
        self.put_group(group);
        result
    }

    fn heartbeat_group(now_ms: u64, group: &mut Group, request: &HeartbeatRequest) -> Option<GroupError> {
        if group.is(GroupState::Dead) {
            return Some(GroupError::CoordinatorNotAvailable);
        }
        if let Err(error) = group.validate_member(&request.member_id, request.group_instance_id.as_deref()) {
            return Some(error);
        }
        let generation = group.generation;
        let state = group.state;
        let Some(member) = group.members.get_mut(&request.member_id) else {
            return Some(GroupError::UnknownMemberId);
        };
        if request.generation != generation {
            return Some(GroupError::IllegalGeneration);
        }
        match state {
            GroupState::Empty | GroupState::Dead => Some(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => {
                member.heartbeat_deadline_ms = session_deadline(now_ms, member);
                Some(GroupError::RebalanceInProgress)
            }
            // Members may heartbeat between their JoinGroup response and SyncGroup.
            GroupState::CompletingRebalance | GroupState::Stable => {
                member.heartbeat_deadline_ms = session_deadline(now_ms, member);
                None
            }
        }
    }

    // ---- LeaveGroup ----

    pub fn leave(&mut self, now_ms: u64, request: LeaveRequest) -> LeaveResponse {
        if self.stopping {
            return LeaveResponse { error: Some(GroupError::NotCoordinator), members: Vec::new() };
        }
        if request.group_id.0.is_empty() {
            return LeaveResponse { error: Some(GroupError::InvalidGroupId), members: Vec::new() };
        }
        let Some(mut group) = self.take_group(&request.group_id) else {
            let members = request.members.into_iter().map(|m| (m, Some(GroupError::UnknownMemberId))).collect();
            return LeaveResponse { error: None, members };
        };
        let mut members = Vec::with_capacity(request.members.len());
        for leaving in request.members {
            let error = self.leave_member(now_ms, &mut group, &leaving.member_id, leaving.group_instance_id.as_deref());
            members.push((leaving, error));
        }
        self.put_group(group);
        LeaveResponse { error: None, members }
    }

    fn leave_member(
        &mut self,
        now_ms: u64,
        group: &mut Group,
        member_id: &MemberId,
        instance: Option<&str>,
    ) -> Option<GroupError> {
        if !member_id.is_unknown() && group.is_static_member_fenced(member_id, instance) {
            return Some(GroupError::FencedInstanceId);
        }
        if group.pending_members.remove(member_id).is_some() {
            self.try_complete_join(now_ms, group);
            return None;
        }
        // A static member may leave by instance id alone (admin "remove members").
        let target = match instance.and_then(|i| group.static_members.get(i)) {
            Some(static_member) => static_member.clone(),
            None if group.members.contains_key(member_id) => member_id.clone(),
            None => return Some(GroupError::UnknownMemberId),
        };
        tracing::info!("group {}: member {target} leaves", group.group_id);
        self.remove_member_and_update_group(now_ms, group, &target);
        None
    }

    fn remove_member_and_update_group(&mut self, now_ms: u64, group: &mut Group, member_id: &MemberId) {
        let Some(member) = group.remove_member(member_id) else { return };
        if let Some(held) = member.awaiting_join {
            answer(held, JoinResponse::error(MemberId::default(), GroupError::UnknownMemberId));
        }
        if let Some(held) = member.awaiting_sync {
            answer(held, SyncResponse::error(GroupError::UnknownMemberId));
        }
        match group.state {
            GroupState::Stable | GroupState::CompletingRebalance => self.prepare_rebalance(now_ms, group),
            GroupState::PreparingRebalance => self.try_complete_join(now_ms, group),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    // ---- timers ----

    /// Runs every deadline that is due: pending member ids expire, members whose
    /// session timed out are removed (a rebalance follows), rebalances complete.
    pub fn tick(&mut self, now_ms: u64) {
        if self.stopping {
            return;
        }
        while let Some(Reverse((deadline_ms, _))) = self.timers.peek() {
            if *deadline_ms > now_ms {
                break;
            }
            let Some(Reverse((deadline_ms, group_id))) = self.timers.pop() else { break };
            let Some(mut group) = self.take_group(&group_id) else { continue };
            if group.timer_ms == Some(deadline_ms) {
                group.timer_ms = None;
                self.expire(now_ms, &mut group);
            }
            self.put_group(group);
        }
    }

    fn expire(&mut self, now_ms: u64, group: &mut Group) {
        group.pending_members.retain(|member_id, deadline_ms| {
            let keep = *deadline_ms > now_ms;
            if !keep {
                tracing::debug!("group {}: handed-out member id {member_id} was never used", group.group_id);
            }
            keep
        });
        let expired: Vec<MemberId> = group
            .members
            .values()
            .filter(|m| !m.kept_alive() && m.heartbeat_deadline_ms <= now_ms)
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in expired {
            tracing::info!("group {}: member {member_id} session expired; removing it", group.group_id);
            self.remove_member_and_update_group(now_ms, group, &member_id);
        }
        if group.is(GroupState::PreparingRebalance) {
            match group.rebalance {
                RebalanceTimer::Initial { deadline_ms, remaining_ms } if deadline_ms <= now_ms => {
                    if group.new_member_added && remaining_ms > 0 {
                        // Members are still arriving: wait one more delay.
                        group.new_member_added = false;
                        let delay_ms = self.config.initial_rebalance_delay_ms.min(remaining_ms);
                        group.rebalance = RebalanceTimer::Initial {
                            deadline_ms: now_ms.saturating_add(delay_ms),
                            remaining_ms: remaining_ms - delay_ms,
                        };
                    } else {
                        self.complete_join(now_ms, group);
                    }
                }
                RebalanceTimer::Join { deadline_ms } if deadline_ms <= now_ms => self.complete_join(now_ms, group),
                _ => self.try_complete_join(now_ms, group),
            }
        }
    }

    // ---- offsets ----

    /// OffsetCommit: checks the committer against the group, then queues the commit
    /// for the offsets writer, which answers once it is durable. Errors are answered
    /// at once.
    pub fn commit(&mut self, now_ms: u64, request: CommitRequest, reply: Reply<CommitResponse>) {
        let metadata_bytes_max = self.config.offset_metadata_bytes_max;
        let mut results: CommitResponse = request
            .offsets
            .iter()
            .map(|(_, c)| {
                (c.metadata.as_ref().map_or(0, String::len) > metadata_bytes_max)
                    .then_some(GroupError::OffsetMetadataTooLarge)
            })
            .collect();
        let (mut group, verdict) = match self.take_group(&request.group_id) {
            // A client outside group management (assign(), generation -1) commits to a
            // group that does not exist yet: the group comes into being, empty.
            None if request.generation.0 < 0 => (Some(Group::new(request.group_id.clone())), Ok(())),
            None => (None, Err(GroupError::IllegalGeneration)),
            Some(mut group) => {
                let verdict = Self::validate_commit(now_ms, &mut group, &request);
                (Some(group), verdict)
            }
        };
        match verdict {
            Err(error) => {
                results.iter_mut().for_each(|r| *r = Some(error));
                answer(reply, results);
            }
            Ok(()) => {
                let offsets: Vec<(TopicPartition, CommittedOffset)> = request
                    .offsets
                    .into_iter()
                    .zip(&results)
                    .filter(|(_, result)| result.is_none())
                    .map(|(entry, _)| entry)
                    .collect();
                if offsets.is_empty() {
                    answer(reply, results);
                } else {
                    if let Some(group) = group.as_mut() {
                        group.stored = true;
                    }
                    let partition = self.offsets_partition(&request.group_id);
                    self.writes.push(StoreWrite::Commit {
                        partition,
                        group_id: request.group_id,
                        offsets,
                        results,
                        reply,
                    });
                }
            }
        }
        if let Some(group) = group {
            self.put_group(group);
        }
    }

    /// TxnOffsetCommit's check of the committer, Kafka's `validateOffsetCommit` for a
    /// transactional commit: a commit that names a member, a generation or an
    /// instance must come from the group's current member in its current
    /// generation; one that names none (below v3) is taken whatever the group's
    /// state, as is any commit to a group that does not exist.
    pub fn validate_txn_commit(&self, request: &super::TxnCommitRequest) -> Result<(), GroupError> {
        let Some(group) = self.groups.get(&request.group_id) else { return Ok(()) };
        if group.is(GroupState::Dead) {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        let instance = request.group_instance_id.as_deref();
        if request.generation.0 >= 0 || !request.member_id.is_unknown() || instance.is_some() {
            group.validate_member(&request.member_id, instance)?;
            if request.generation != group.generation {
                return Err(GroupError::IllegalGeneration);
            }
        }
        Ok(())
    }

    fn validate_commit(now_ms: u64, group: &mut Group, request: &CommitRequest) -> Result<(), GroupError> {
        if group.is(GroupState::Dead) {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if request.generation.0 < 0 && group.is(GroupState::Empty) {
            return Ok(());
        }
        let instance = request.group_instance_id.as_deref();
        if request.generation.0 >= 0 || !request.member_id.is_unknown() || instance.is_some() {
            group.validate_member(&request.member_id, instance)?;
            if request.generation != group.generation {
                return Err(GroupError::IllegalGeneration);
            }
        } else {
            // No member id and no generation: only an empty group takes it.
            return Err(GroupError::UnknownMemberId);
        }
        match group.state {
            // The member has its JoinGroup response but not its assignment yet.
            GroupState::CompletingRebalance => Err(GroupError::RebalanceInProgress),
            _ => {
                if let Some(member) = group.members.get_mut(&request.member_id) {
                    member.heartbeat_deadline_ms = session_deadline(now_ms, member);
                }
                Ok(())
            }
        }
    }

    // ---- admin ----

    pub fn list(&self) -> Vec<ListedGroup> {
        self.groups
            .values()
            .map(|g| ListedGroup {
                group_id: g.group_id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state,
            })
            .collect()
    }

    /// `None`: no such group (DescribeGroups says Dead, or GROUP_ID_NOT_FOUND from v6).
    pub fn describe(&self, group_id: &GroupId) -> Option<DescribedGroup> {
        let group = self.groups.get(group_id)?;
        let stable = group.is(GroupState::Stable);
        let protocol = group.protocol_name.clone().unwrap_or_default();
        let members = group
            .members
            .values()
            .map(|m| DescribedMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: if stable { m.metadata_for(&protocol) } else { Bytes::new() },
                assignment: if stable { m.assignment.clone() } else { Bytes::new() },
            })
            .collect();
        Some(DescribedGroup {
            group_id: group.group_id.clone(),
            state: group.state,
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            protocol_data: if stable { protocol } else { String::new() },
            members,
        })
    }

    /// DeleteGroups: only an Empty group goes (its tombstones are queued and the
    /// answer follows their append); others get NON_EMPTY_GROUP.
    pub fn delete(&mut self, group_id: GroupId, reply: Reply<Option<GroupError>>) {
        let Some(group) = self.take_group(&group_id) else {
            return answer(reply, Some(GroupError::GroupIdNotFound));
        };
        match group.state {
            GroupState::Empty => {
                tracing::info!("group {group_id}: deleted");
                let partition = self.offsets_partition(&group_id);
                self.writes.push(StoreWrite::Delete { partition, group_id, reply });
            }
            GroupState::Dead => answer(reply, Some(GroupError::GroupIdNotFound)),
            _ => {
                answer(reply, Some(GroupError::NonEmptyGroup));
                self.put_group(group);
            }
        }
    }

    /// The broker is stopping: held JoinGroup and SyncGroup requests are answered
    /// NOT_COORDINATOR now (a rebalance could otherwise hold shutdown for minutes),
    /// and timers stop, so no member is expired by the shutdown itself.
    pub fn shutdown(&mut self) {
        self.stopping = true;
        for group in self.groups.values_mut() {
            release_held(group);
        }
    }

    /// Whether any group is loaded (in a cluster: any offsets partition led here).
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// This broker stopped leading offsets partition `partition`: its groups are
    /// forgotten here (their held JoinGroup and SyncGroup requests answered
    /// NOT_COORDINATOR, so clients look the new coordinator up), to be loaded by the
    /// partition's next leader from the replicated log. Their timer entries go stale.
    pub fn unload_partition(&mut self, partition: PartitionId) -> usize {
        let leaving: Vec<GroupId> =
            self.groups.keys().filter(|g| self.offsets_partition(g) == partition).cloned().collect();
        for group_id in &leaving {
            if let Some(mut group) = self.groups.remove(group_id) {
                release_held(&mut group);
            }
        }
        leaving.len()
    }
}

/// Answers the group's held JoinGroup and SyncGroup requests NOT_COORDINATOR.
fn release_held(group: &mut Group) {
    for member in group.members.values_mut() {
        if let Some(held) = member.awaiting_join.take() {
            answer(held, JoinResponse::error(member.member_id.clone(), GroupError::NotCoordinator));
        }
        if let Some(held) = member.awaiting_sync.take() {
            answer(held, SyncResponse::error(GroupError::NotCoordinator));
        }
    }
}

#[cfg(test)]
mod tests;
