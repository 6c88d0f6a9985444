//! The state machine driven directly: requests in, answers read from the reply
//! channels, time moved by hand. No network, no engine, no sleeping.

use bytes::Bytes;

use super::{GroupCoordinator, StoreWrite};
use crate::group::offsets::{GroupRecord, MemberRecord, StoredGroup};
use crate::group::{
    CommitRequest, CommittedOffset, GenerationId, GroupConfig, GroupError, GroupId, GroupState, HeartbeatRequest,
    JoinRequest, JoinResponse, LeaveRequest, LeavingMember, MemberId, Protocol, SyncRequest, SyncResponse,
};
use corelog_engine::types::{LeaderEpoch, Offset, PartitionId, TopicName, TopicPartition};

const SESSION_MS: u64 = 10_000;
const REBALANCE_MS: u64 = 30_000;
const DELAY_MS: u64 = 100;
const GROUP: &str = "orders-consumers";
/// When [`stable_pair`]'s members got their assignments (their sessions restart then).
const SYNCED_AT: u64 = 310;

fn coordinator() -> GroupCoordinator {
    let config = GroupConfig { initial_rebalance_delay_ms: DELAY_MS, ..GroupConfig::default() };
    GroupCoordinator::new(config, 8, 42)
}

fn group() -> GroupId {
    GroupId(GROUP.into())
}

fn protocols(names: &[&str], metadata: &'static [u8]) -> Vec<Protocol> {
    names.iter().map(|name| Protocol { name: name.to_string(), metadata: Bytes::from_static(metadata) }).collect()
}

fn join_request(member_id: &MemberId, protocols: Vec<Protocol>) -> JoinRequest {
    JoinRequest {
        group_id: group(),
        member_id: member_id.clone(),
        group_instance_id: None,
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        protocol_type: "consumer".into(),
        protocols,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        require_known_member_id: false,
    }
}

/// An answer that may not have come yet.
struct Held<T>(flume::Receiver<T>);

impl<T: std::fmt::Debug> Held<T> {
    fn pending(&self) -> bool {
        self.0.is_empty() && !self.0.is_disconnected()
    }

    fn answer(&self) -> T {
        self.0.try_recv().expect("the request has been answered")
    }
}

fn join(c: &mut GroupCoordinator, now: u64, request: JoinRequest) -> Held<JoinResponse> {
    let (reply, answer) = flume::bounded(1);
    c.join(now, request, reply);
    Held(answer)
}

fn sync(
    c: &mut GroupCoordinator,
    now: u64,
    member: &MemberId,
    generation: GenerationId,
    assignments: &[(&MemberId, &'static [u8])],
) -> Held<SyncResponse> {
    let (reply, answer) = flume::bounded(1);
    let request = SyncRequest {
        group_id: group(),
        generation,
        member_id: member.clone(),
        group_instance_id: None,
        protocol_type: Some("consumer".into()),
        protocol_name: None,
        assignments: assignments.iter().map(|(m, a)| ((*m).clone(), Bytes::from_static(a))).collect(),
    };
    c.sync(now, request, reply);
    Held(answer)
}

fn heartbeat(c: &mut GroupCoordinator, now: u64, member: &MemberId, generation: GenerationId) -> Option<GroupError> {
    c.heartbeat(
        now,
        HeartbeatRequest { group_id: group(), generation, member_id: member.clone(), group_instance_id: None },
    )
}

fn leave(c: &mut GroupCoordinator, now: u64, members: &[&MemberId]) -> Vec<Option<GroupError>> {
    let members = members.iter().map(|m| LeavingMember { member_id: (*m).clone(), group_instance_id: None }).collect();
    let response = c.leave(now, LeaveRequest { group_id: group(), members });
    assert_eq!(response.error, None);
    response.members.into_iter().map(|(_, error)| error).collect()
}

fn tp(partition: i32) -> TopicPartition {
    TopicPartition::new(TopicName::new("orders").expect("valid"), PartitionId(partition))
}

fn offset(value: i64) -> CommittedOffset {
    CommittedOffset { offset: Offset(value), leader_epoch: LeaderEpoch(-1), metadata: None, commit_timestamp_ms: 0 }
}

fn commit(
    c: &mut GroupCoordinator,
    now: u64,
    member: &MemberId,
    generation: GenerationId,
    offsets: Vec<(TopicPartition, CommittedOffset)>,
) -> Held<Vec<Option<GroupError>>> {
    let (reply, answer) = flume::bounded(1);
    let request =
        CommitRequest { group_id: group(), generation, member_id: member.clone(), group_instance_id: None, offsets };
    c.commit(now, request, reply);
    Held(answer)
}

fn state(c: &GroupCoordinator) -> Option<GroupState> {
    c.group_state(&group())
}

/// A new member with an id (the second half of KIP-394 done by the caller).
fn join_new(c: &mut GroupCoordinator, now: u64) -> Held<JoinResponse> {
    join(c, now, join_request(&MemberId::default(), protocols(&["range"], b"sub")))
}

/// Two members through their first rebalance into Stable: (leader, follower, generation).
fn stable_pair(c: &mut GroupCoordinator) -> (MemberId, MemberId, GenerationId) {
    let a = join_new(c, 0);
    let b = join_new(c, 10);
    c.tick(DELAY_MS);
    assert!(a.pending() && b.pending(), "a member joined during the delay: it is extended");
    c.tick(2 * DELAY_MS);
    let (a, b) = (a.answer(), b.answer());
    assert_eq!(a.error, None);
    assert_eq!(a.generation, GenerationId(1));
    assert_eq!(b.generation, GenerationId(1));
    let (leader, follower) = if a.leader == a.member_id { (a, b) } else { (b, a) };
    assert_eq!(leader.members.len(), 2, "the leader sees every member");
    assert!(follower.members.is_empty());
    assert_eq!(state(c), Some(GroupState::CompletingRebalance));
    let follower_sync = sync(c, 300, &follower.member_id, GenerationId(1), &[]);
    assert!(follower_sync.pending(), "followers wait for the leader's assignment");
    let leader_sync = sync(
        c,
        310,
        &leader.member_id,
        GenerationId(1),
        &[(&leader.member_id, b"first-half"), (&follower.member_id, b"second-half")],
    );
    assert_eq!(leader_sync.answer().assignment, Bytes::from_static(b"first-half"));
    assert_eq!(follower_sync.answer().assignment, Bytes::from_static(b"second-half"));
    assert_eq!(state(c), Some(GroupState::Stable));
    (leader.member_id, follower.member_id, GenerationId(1))
}

fn group_records(c: &mut GroupCoordinator) -> Vec<GroupRecord> {
    c.take_writes()
        .into_iter()
        .filter_map(|w| match w {
            StoreWrite::Group { record, .. } => Some(record),
            _ => None,
        })
        .collect()
}

#[test]
fn first_join_needs_a_member_id_and_completes_after_the_initial_delay() {
    let mut c = coordinator();
    let mut first = join_request(&MemberId::default(), protocols(&["range", "roundrobin"], b"sub"));
    first.require_known_member_id = true;
    let response = join(&mut c, 0, first).answer();
    assert_eq!(response.error, Some(GroupError::MemberIdRequired));
    assert!(response.member_id.0.starts_with("client-"), "{}", response.member_id);
    let member = response.member_id;

    let mut second = join_request(&member, protocols(&["range", "roundrobin"], b"sub"));
    second.require_known_member_id = true;
    let held = join(&mut c, 5, second);
    assert_eq!(state(&c), Some(GroupState::PreparingRebalance));
    assert_eq!(c.next_deadline_ms(), Some(5 + DELAY_MS));
    c.tick(5 + DELAY_MS - 1);
    assert!(held.pending(), "the initial delay holds even a complete group");
    c.tick(5 + DELAY_MS);
    let response = held.answer();
    assert_eq!(response.error, None);
    assert_eq!(response.generation, GenerationId(1));
    assert_eq!(response.leader, member);
    assert_eq!(response.protocol_name.as_deref(), Some("range"));
    assert_eq!(response.protocol_type.as_deref(), Some("consumer"));
    assert_eq!(response.members.len(), 1);
    assert_eq!(response.members[0].metadata, Bytes::from_static(b"sub"));

    assert_eq!(heartbeat(&mut c, 200, &member, GenerationId(1)), None, "heartbeats between join and sync are fine");
    let synced = sync(&mut c, 210, &member, GenerationId(1), &[(&member, b"all")]).answer();
    assert_eq!(synced.error, None);
    assert_eq!(synced.assignment, Bytes::from_static(b"all"));
    assert_eq!(synced.protocol_name.as_deref(), Some("range"));
    assert_eq!(state(&c), Some(GroupState::Stable));
    let records = group_records(&mut c);
    assert_eq!(records.len(), 1, "the completed generation is persisted");
    assert_eq!(records[0].generation, GenerationId(1));
    assert_eq!(records[0].members[0].assignment, Bytes::from_static(b"all"));
}

#[test]
fn a_leaving_member_makes_the_others_rejoin_into_a_smaller_generation() {
    let mut c = coordinator();
    let (leader, follower, generation) = stable_pair(&mut c);
    assert_eq!(heartbeat(&mut c, 1_000, &leader, generation), None);
    assert_eq!(leave(&mut c, 1_500, &[&follower]), vec![None]);
    assert_eq!(state(&c), Some(GroupState::PreparingRebalance));
    assert_eq!(heartbeat(&mut c, 2_000, &leader, generation), Some(GroupError::RebalanceInProgress));
    assert_eq!(heartbeat(&mut c, 2_000, &follower, generation), Some(GroupError::UnknownMemberId));
    // Every remaining member rejoined: no waiting for the rebalance timeout.
    let rejoined = join(&mut c, 2_100, join_request(&leader, protocols(&["range"], b"sub"))).answer();
    assert_eq!(rejoined.generation, GenerationId(2));
    assert_eq!(rejoined.leader, leader);
    assert_eq!(rejoined.members.len(), 1);
    let synced = sync(&mut c, 2_200, &leader, GenerationId(2), &[(&leader, b"everything")]).answer();
    assert_eq!(synced.assignment, Bytes::from_static(b"everything"));
    assert_eq!(state(&c), Some(GroupState::Stable));

    assert_eq!(leave(&mut c, 3_000, &[&leader]), vec![None]);
    assert_eq!(state(&c), Some(GroupState::Empty), "the last member leaving empties the group at once");
    let records = group_records(&mut c);
    let last = records.last().expect("the empty generation is persisted");
    assert_eq!(last.generation, GenerationId(3));
    assert!(last.members.is_empty());
}

#[test]
fn a_member_whose_session_expires_is_removed_and_the_group_rebalances() {
    let mut c = coordinator();
    let (leader, follower, generation) = stable_pair(&mut c);
    // The leader heartbeats every 3 s; the follower went silent after its sync.
    for now in [3_000, 6_000, 9_000] {
        assert_eq!(heartbeat(&mut c, now, &leader, generation), None);
        c.tick(now);
    }
    c.tick(SYNCED_AT + SESSION_MS - 1);
    assert_eq!(state(&c), Some(GroupState::Stable), "not a millisecond early");
    c.tick(SYNCED_AT + SESSION_MS);
    assert_eq!(state(&c), Some(GroupState::PreparingRebalance));
    let now = SYNCED_AT + SESSION_MS + 1;
    assert_eq!(heartbeat(&mut c, now, &follower, generation), Some(GroupError::UnknownMemberId));
    assert_eq!(heartbeat(&mut c, now, &leader, generation), Some(GroupError::RebalanceInProgress));
    let rejoined = join(&mut c, now, join_request(&leader, protocols(&["range"], b"sub"))).answer();
    assert_eq!(rejoined.generation, GenerationId(2));
    assert_eq!(rejoined.members.iter().map(|m| &m.member_id).collect::<Vec<_>>(), vec![&leader]);
}

#[test]
fn a_rebalance_waits_for_known_members_until_the_rebalance_timeout() {
    let mut c = coordinator();
    let (leader, follower, generation) = stable_pair(&mut c);
    // The leader rejoins (as a consumer does when topic metadata changes).
    let held = join(&mut c, 1_000, join_request(&leader, protocols(&["range"], b"sub")));
    assert!(held.pending());
    // The follower keeps heartbeating but never rejoins.
    let mut now = 1_000;
    while now + 3_000 < 1_000 + REBALANCE_MS {
        now += 3_000;
        assert_eq!(heartbeat(&mut c, now, &follower, generation), Some(GroupError::RebalanceInProgress));
        c.tick(now);
        assert!(held.pending(), "held at {now}");
    }
    c.tick(1_000 + REBALANCE_MS - 1);
    assert!(held.pending());
    c.tick(1_000 + REBALANCE_MS);
    let response = held.answer();
    assert_eq!(response.generation, GenerationId(2));
    assert_eq!(response.members.len(), 1, "the follower that did not rejoin is gone");
    assert_eq!(heartbeat(&mut c, now + 1, &follower, generation), Some(GroupError::UnknownMemberId));
}

#[test]
fn a_held_member_is_kept_alive_but_a_silent_one_is_not() {
    let mut c = coordinator();
    let (leader, follower, _) = stable_pair(&mut c);
    let held = join(&mut c, 1_000, join_request(&leader, protocols(&["range"], b"changed")));
    c.tick(SYNCED_AT + SESSION_MS - 1);
    assert!(held.pending());
    // Both sessions end now. The leader's JoinGroup is held, so it stays; the silent
    // follower is removed, and with it gone everyone left has rejoined: the
    // rebalance completes without waiting for its timeout.
    c.tick(SYNCED_AT + SESSION_MS);
    let response = held.answer();
    assert_eq!(response.generation, GenerationId(2));
    assert_eq!(response.members.len(), 1);
    assert_eq!(response.members[0].member_id, leader);
    assert_eq!(response.members[0].metadata, Bytes::from_static(b"changed"));
    let now = SYNCED_AT + SESSION_MS + 1;
    assert_eq!(heartbeat(&mut c, now, &follower, GenerationId(1)), Some(GroupError::UnknownMemberId));
}

#[test]
fn stale_generations_and_unknown_members_are_refused() {
    let mut c = coordinator();
    let (leader, follower, generation) = stable_pair(&mut c);
    let stranger = MemberId("stranger".into());
    assert_eq!(heartbeat(&mut c, 400, &leader, GenerationId(0)), Some(GroupError::IllegalGeneration));
    assert_eq!(heartbeat(&mut c, 400, &stranger, generation), Some(GroupError::UnknownMemberId));
    assert_eq!(sync(&mut c, 400, &follower, GenerationId(7), &[]).answer().error, Some(GroupError::IllegalGeneration));
    assert_eq!(sync(&mut c, 400, &stranger, generation, &[]).answer().error, Some(GroupError::UnknownMemberId));
    assert_eq!(
        join(&mut c, 400, join_request(&stranger, protocols(&["range"], b"sub"))).answer().error,
        Some(GroupError::UnknownMemberId)
    );
    let results = commit(&mut c, 400, &follower, GenerationId(0), vec![(tp(0), offset(5))]).answer();
    assert_eq!(results, vec![Some(GroupError::IllegalGeneration)]);
    let results = commit(&mut c, 400, &stranger, generation, vec![(tp(0), offset(5))]).answer();
    assert_eq!(results, vec![Some(GroupError::UnknownMemberId)]);
    let results = commit(&mut c, 400, &MemberId::default(), GenerationId::NONE, vec![(tp(0), offset(5))]).answer();
    assert_eq!(results, vec![Some(GroupError::UnknownMemberId)], "no simple commits into a live group");
    let mut wrong_type = join_request(&MemberId::default(), protocols(&["range"], b"sub"));
    wrong_type.protocol_type = "connect".into();
    assert_eq!(join(&mut c, 400, wrong_type).answer().error, Some(GroupError::InconsistentGroupProtocol));
    let no_common = join_request(&MemberId::default(), protocols(&["sticky"], b"sub"));
    assert_eq!(join(&mut c, 400, no_common).answer().error, Some(GroupError::InconsistentGroupProtocol));
    let mut short = join_request(&MemberId::default(), protocols(&["range"], b"sub"));
    short.session_timeout_ms = 100;
    assert_eq!(join(&mut c, 400, short).answer().error, Some(GroupError::InvalidSessionTimeout));
    let mut nameless = join_request(&MemberId::default(), protocols(&["range"], b"sub"));
    nameless.group_id = GroupId::default();
    assert_eq!(join(&mut c, 400, nameless).answer().error, Some(GroupError::InvalidGroupId));
    // During CompletingRebalance a member with the new generation may not commit yet.
    let held = join(&mut c, 500, join_request(&leader, protocols(&["range"], b"sub")));
    let follower_join = join(&mut c, 510, join_request(&follower, protocols(&["range"], b"sub")));
    let (held, follower_join) = (held.answer(), follower_join.answer());
    assert_eq!(held.generation, GenerationId(2));
    let results = commit(&mut c, 520, &follower, follower_join.generation, vec![(tp(0), offset(5))]).answer();
    assert_eq!(results, vec![Some(GroupError::RebalanceInProgress)]);
    assert!(c.take_writes().iter().all(|w| !matches!(w, StoreWrite::Commit { .. })), "nothing refused is written");
}

#[test]
fn members_of_the_current_generation_commit_and_the_answer_waits_for_the_write() {
    let mut c = coordinator();
    let (leader, _, generation) = stable_pair(&mut c);
    c.take_writes();
    let long = "m".repeat(5000);
    let mut too_long = offset(9);
    too_long.metadata = Some(long);
    let held =
        commit(&mut c, 500, &leader, generation, vec![(tp(0), offset(10)), (tp(1), too_long), (tp(2), offset(30))]);
    assert!(held.pending(), "answered by the writer after the append");
    let writes = c.take_writes();
    assert_eq!(writes.len(), 1);
    let StoreWrite::Commit { partition, group_id, offsets, results, reply } =
        writes.into_iter().next().expect("one write")
    else {
        panic!("expected a commit");
    };
    assert_eq!(partition, c.offsets_partition(&group()));
    assert_eq!(group_id, group());
    assert_eq!(offsets.iter().map(|(p, o)| (p.partition.0, o.offset.0)).collect::<Vec<_>>(), vec![(0, 10), (2, 30)]);
    assert_eq!(results, vec![None, Some(GroupError::OffsetMetadataTooLarge), None]);
    reply.send(results).expect("the requester waits");
    assert_eq!(held.answer()[1], Some(GroupError::OffsetMetadataTooLarge));
}

#[test]
fn simple_commits_create_an_empty_group_and_only_empty_groups_take_them() {
    let mut c = coordinator();
    let results = commit(&mut c, 0, &MemberId::default(), GenerationId(3), vec![(tp(0), offset(1))]).answer();
    assert_eq!(results, vec![Some(GroupError::IllegalGeneration)], "a generation for a group that does not exist");
    assert_eq!(state(&c), None);
    let held = commit(&mut c, 0, &MemberId::default(), GenerationId::NONE, vec![(tp(0), offset(1))]);
    assert!(held.pending());
    assert!(matches!(c.take_writes().as_slice(), [StoreWrite::Commit { .. }]));
    assert_eq!(state(&c), Some(GroupState::Empty));
    let listed = c.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].protocol_type, "", "a group used only for offsets has no protocol type");
    // Consumers can still join it.
    let member = join_new(&mut c, 10);
    c.tick(10 + DELAY_MS);
    assert_eq!(member.answer().generation, GenerationId(1));
}

#[test]
fn only_empty_groups_can_be_deleted() {
    let mut c = coordinator();
    let (reply, answer) = flume::bounded(1);
    c.delete(group(), reply);
    assert_eq!(answer.try_recv(), Ok(Some(GroupError::GroupIdNotFound)));
    let (leader, follower, _) = stable_pair(&mut c);
    let (reply, answer) = flume::bounded(1);
    c.delete(group(), reply);
    assert_eq!(answer.try_recv(), Ok(Some(GroupError::NonEmptyGroup)));
    assert_eq!(state(&c), Some(GroupState::Stable));
    assert_eq!(leave(&mut c, 500, &[&leader, &follower]), vec![None, None]);
    assert_eq!(state(&c), Some(GroupState::Empty));
    c.take_writes();
    let (reply, answer) = flume::bounded(1);
    c.delete(group(), reply);
    assert!(answer.is_empty(), "answered after the tombstones are durable");
    assert!(matches!(c.take_writes().as_slice(), [StoreWrite::Delete { .. }]));
    assert_eq!(state(&c), None);
    assert_eq!(c.describe(&group()), None);
    assert!(c.list().is_empty());
}

#[test]
fn leave_group_answers_each_member_of_a_batch() {
    let mut c = coordinator();
    let (leader, follower, _) = stable_pair(&mut c);
    let stranger = MemberId("stranger".into());
    assert_eq!(
        leave(&mut c, 500, &[&stranger, &follower, &follower]),
        vec![Some(GroupError::UnknownMemberId), None, Some(GroupError::UnknownMemberId)]
    );
    assert_eq!(state(&c), Some(GroupState::PreparingRebalance));
    let response = c.leave(
        600,
        LeaveRequest {
            group_id: GroupId("nobody".into()),
            members: vec![LeavingMember { member_id: leader, group_instance_id: None }],
        },
    );
    assert_eq!(response.members[0].1, Some(GroupError::UnknownMemberId));
}

#[test]
fn a_follower_rejoining_unchanged_in_a_stable_group_changes_nothing() {
    let mut c = coordinator();
    let (leader, follower, generation) = stable_pair(&mut c);
    let response = join(&mut c, 500, join_request(&follower, protocols(&["range"], b"sub"))).answer();
    assert_eq!(response.generation, generation);
    assert_eq!(response.leader, leader);
    assert!(response.members.is_empty());
    assert_eq!(state(&c), Some(GroupState::Stable));
    // Changed metadata does trigger a rebalance, and the leader learns it.
    let follower_join = join(&mut c, 600, join_request(&follower, protocols(&["range"], b"more-topics")));
    assert_eq!(state(&c), Some(GroupState::PreparingRebalance));
    let leader_join = join(&mut c, 700, join_request(&leader, protocols(&["range"], b"sub"))).answer();
    assert_eq!(follower_join.answer().generation, GenerationId(2));
    let theirs = leader_join.members.iter().find(|m| m.member_id == follower).expect("follower listed");
    assert_eq!(theirs.metadata, Bytes::from_static(b"more-topics"));
}

#[test]
fn a_static_member_rejoining_with_a_new_id_fences_the_old_one_without_a_rebalance() {
    let mut c = coordinator();
    let mut request = join_request(&MemberId::default(), protocols(&["range"], b"sub"));
    request.group_instance_id = Some("instance-1".into());
    request.require_known_member_id = true;
    let held = join(&mut c, 0, request);
    c.tick(DELAY_MS);
    let first = held.answer();
    assert_eq!(first.error, None, "static members skip MEMBER_ID_REQUIRED");
    assert!(first.member_id.0.starts_with("instance-1-"));
    sync(&mut c, 200, &first.member_id, first.generation, &[(&first.member_id, b"mine")]).answer();

    // The instance restarts and joins without its member id.
    let mut again = join_request(&MemberId::default(), protocols(&["range"], b"sub"));
    again.group_instance_id = Some("instance-1".into());
    let second = join(&mut c, 1_000, again).answer();
    assert_eq!(second.error, None);
    assert_ne!(second.member_id, first.member_id);
    assert_eq!(second.generation, first.generation, "no rebalance");
    assert_eq!(second.leader, first.member_id, "the old leader id, so it does not reassign");
    assert_eq!(state(&c), Some(GroupState::Stable));
    let synced = sync(&mut c, 1_100, &second.member_id, second.generation, &[]).answer();
    assert_eq!(synced.assignment, Bytes::from_static(b"mine"));
    let fenced = c.heartbeat(
        1_200,
        HeartbeatRequest {
            group_id: group(),
            generation: first.generation,
            member_id: first.member_id,
            group_instance_id: Some("instance-1".into()),
        },
    );
    assert_eq!(fenced, Some(GroupError::FencedInstanceId));
    let unknown_instance = c.heartbeat(
        1_200,
        HeartbeatRequest {
            group_id: group(),
            generation: second.generation,
            member_id: second.member_id.clone(),
            group_instance_id: Some("instance-9".into()),
        },
    );
    assert_eq!(unknown_instance, Some(GroupError::UnknownMemberId));
    let current = c.heartbeat(
        1_200,
        HeartbeatRequest {
            group_id: group(),
            generation: second.generation,
            member_id: second.member_id,
            group_instance_id: Some("instance-1".into()),
        },
    );
    assert_eq!(current, None);
}

#[test]
fn handed_out_member_ids_expire_and_an_unused_group_is_forgotten() {
    let mut c = coordinator();
    let mut request = join_request(&MemberId::default(), protocols(&["range"], b"sub"));
    request.require_known_member_id = true;
    assert_eq!(join(&mut c, 0, request).answer().error, Some(GroupError::MemberIdRequired));
    assert_eq!(state(&c), Some(GroupState::Empty));
    assert_eq!(c.next_deadline_ms(), Some(SESSION_MS));
    c.tick(SESSION_MS);
    assert_eq!(state(&c), None);
    assert_eq!(c.next_deadline_ms(), None);
}

#[test]
fn a_rebalance_waits_for_a_handed_out_member_id() {
    let mut c = coordinator();
    let (leader, follower, _) = stable_pair(&mut c);
    let mut newcomer = join_request(&MemberId::default(), protocols(&["range"], b"sub"));
    newcomer.require_known_member_id = true;
    let newcomer_id = join(&mut c, 500, newcomer).answer().member_id;
    let leader_join = join(&mut c, 600, join_request(&leader, protocols(&["range"], b"sub")));
    let follower_join = join(&mut c, 600, join_request(&follower, protocols(&["range"], b"sub")));
    assert!(leader_join.pending() && follower_join.pending(), "the handed-out id is expected");
    let newcomer_join = join(&mut c, 700, join_request(&newcomer_id, protocols(&["range"], b"sub")));
    let response = leader_join.answer();
    assert_eq!(response.members.len(), 3);
    assert_eq!(newcomer_join.answer().generation, response.generation);
    assert_eq!(follower_join.answer().generation, response.generation);
}

#[test]
fn describe_shows_metadata_and_assignments_only_when_stable() {
    let mut c = coordinator();
    let (leader, _, _) = stable_pair(&mut c);
    let described = c.describe(&group()).expect("exists");
    assert_eq!(described.state, GroupState::Stable);
    assert_eq!(described.protocol_type, "consumer");
    assert_eq!(described.protocol_data, "range");
    assert_eq!(described.members.len(), 2);
    let mine = described.members.iter().find(|m| m.member_id == leader).expect("leader");
    assert_eq!(mine.assignment, Bytes::from_static(b"first-half"));
    assert_eq!(mine.metadata, Bytes::from_static(b"sub"));
    join(&mut c, 500, join_request(&leader, protocols(&["range"], b"sub")));
    let described = c.describe(&group()).expect("exists");
    assert_eq!(described.state, GroupState::PreparingRebalance);
    assert_eq!(described.protocol_data, "");
    assert!(described.members.iter().all(|m| m.metadata.is_empty() && m.assignment.is_empty()));
}

#[test]
fn shutdown_answers_held_requests_and_stops_the_clock() {
    let mut c = coordinator();
    let (leader, follower, generation) = stable_pair(&mut c);
    let held = join(&mut c, 500, join_request(&leader, protocols(&["range"], b"sub")));
    c.shutdown();
    assert_eq!(held.answer().error, Some(GroupError::NotCoordinator));
    assert_eq!(c.next_deadline_ms(), None);
    c.tick(u64::MAX / 2);
    assert_eq!(heartbeat(&mut c, 600, &follower, generation), Some(GroupError::NotCoordinator));
    assert_eq!(state(&c), Some(GroupState::PreparingRebalance), "nobody was expired by the shutdown");
}

#[test]
fn a_loaded_group_is_stable_with_its_members_and_their_sessions_restart() {
    let mut c = coordinator();
    let member = |id: &str| MemberRecord {
        member_id: MemberId(id.into()),
        group_instance_id: None,
        client_id: "client".into(),
        client_host: String::new(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        subscription: Bytes::from_static(b"sub"),
        assignment: Bytes::from_static(b"assigned"),
    };
    let stored = StoredGroup {
        metadata: Some(GroupRecord {
            protocol_type: "consumer".into(),
            generation: GenerationId(7),
            protocol_name: Some("range".into()),
            leader: Some(MemberId("a".into())),
            members: vec![member("a"), member("b")],
        }),
        offsets: Default::default(),
    };
    c.load_group(1_000, group(), &stored);
    assert_eq!(state(&c), Some(GroupState::Stable));
    let a = MemberId("a".into());
    assert_eq!(heartbeat(&mut c, 2_000, &a, GenerationId(7)), None);
    let synced = sync(&mut c, 2_000, &a, GenerationId(7), &[]).answer();
    assert_eq!(synced.assignment, Bytes::from_static(b"assigned"));
    // b never comes back after the restart: it expires a session after the load.
    c.tick(1_000 + SESSION_MS);
    assert_eq!(state(&c), Some(GroupState::PreparingRebalance));
    let rejoined = join(&mut c, 1_000 + SESSION_MS + 1, join_request(&a, protocols(&["range"], b"sub"))).answer();
    assert_eq!(rejoined.generation, GenerationId(8));

    let mut empty = coordinator();
    let offsets_only = StoredGroup { metadata: None, offsets: [(tp(0), offset(3))].into_iter().collect() };
    empty.load_group(0, group(), &offsets_only);
    assert_eq!(empty.group_state(&group()), Some(GroupState::Empty));
}

#[test]
fn an_abandoned_first_join_times_out_after_the_new_member_bound() {
    let mut c = coordinator();
    let a = join_new(&mut c, 0);
    c.tick(DELAY_MS);
    let a = a.answer();
    // a never syncs nor heartbeats: its session expires and the group empties.
    c.tick(DELAY_MS + SESSION_MS);
    assert_eq!(state(&c), Some(GroupState::Empty));
    assert_eq!(
        heartbeat(&mut c, DELAY_MS + SESSION_MS + 1, &a.member_id, a.generation),
        Some(GroupError::UnknownMemberId)
    );
}

#[test]
fn a_partition_that_moves_away_takes_its_groups_and_answers_their_held_requests() {
    let mut c = coordinator();
    let (leader, _follower, generation) = stable_pair(&mut c);
    // The leader rejoins: a rebalance starts and its JoinGroup is held for the follower.
    let held = join(&mut c, 400, join_request(&leader, protocols(&["range"], b"sub")));
    assert!(held.pending());
    let partition = c.offsets_partition(&group());
    let other = PartitionId((partition.0 + 1) % c.offsets_partitions());
    assert_eq!(c.unload_partition(other), 0, "another partition holds no group");
    assert!(held.pending() && state(&c).is_some());
    assert_eq!(c.unload_partition(partition), 1);
    let answer = held.answer();
    assert_eq!(answer.error, Some(GroupError::NotCoordinator), "the member looks the coordinator up again");
    assert_eq!(state(&c), None, "the group is forgotten here");
    assert!(c.is_empty());
    // Its stale timers fire into nothing.
    c.tick(REBALANCE_MS * 10);
    assert_eq!(state(&c), None);
    assert_eq!(heartbeat(&mut c, 500, &leader, generation), Some(GroupError::UnknownMemberId));
}

fn txn_commit(member: &MemberId, generation: GenerationId, group_id: GroupId) -> crate::group::TxnCommitRequest {
    crate::group::TxnCommitRequest {
        group_id,
        generation,
        member_id: member.clone(),
        group_instance_id: None,
        producer_id: corelog_engine::types::ProducerId(7),
        producer_epoch: corelog_engine::types::ProducerEpoch(0),
        offsets: vec![(tp(0), offset(5))],
    }
}

/// KIP-447: a transactional processor's offsets carry its consumer's generation and
/// member, and a processor the group has moved on from (a zombie after a rebalance)
/// is refused, while commits that name no member (below v3) or no existing group
/// are taken as Kafka takes them.
#[test]
fn transactional_commits_from_a_stale_generation_or_a_departed_member_are_fenced() {
    let mut c = coordinator();
    let (leader, follower, generation) = stable_pair(&mut c);
    assert_eq!(c.validate_txn_commit(&txn_commit(&follower, generation, group())), Ok(()));
    assert_eq!(
        c.validate_txn_commit(&txn_commit(&follower, GenerationId(generation.0 - 1), group())),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(
        c.validate_txn_commit(&txn_commit(&MemberId("zombie".into()), generation, group())),
        Err(GroupError::UnknownMemberId)
    );
    assert_eq!(
        c.validate_txn_commit(&txn_commit(&MemberId::default(), GenerationId::NONE, group())),
        Ok(()),
        "a commit without group metadata (TxnOffsetCommit v0-v2) is taken even by a live group"
    );
    assert_eq!(
        c.validate_txn_commit(&txn_commit(&leader, generation, GroupId("no-such-group".into()))),
        Ok(()),
        "no group, nothing to fence against"
    );
    // The follower leaves: its generation's commits are now a zombie's.
    assert_eq!(leave(&mut c, 1_000, &[&follower]), vec![None]);
    assert_eq!(c.validate_txn_commit(&txn_commit(&follower, generation, group())), Err(GroupError::UnknownMemberId));
}
