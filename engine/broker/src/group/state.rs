//! One group's data: its members, state, generation and chosen protocol, with the
//! small rules that need nothing but the group (protocol selection, leader
//! election, "has everyone rejoined"). The state machine that moves a group between
//! states is [`super::coordinator`].
//!
//! ```text
//!            join (first member)                 all known members rejoined,
//!   Empty ───────────────────────► Preparing ──── or rebalance timeout ──────► Completing
//!     ▲                            Rebalance ◄──── join / leave / expiry ────── Rebalance
//!     │  last member gone            ▲   ▲                                         │
//!     └──────────────────────────────┘   │ join (leader or changed metadata),      │ leader's
//!                                        │ leave, session expiry                   │ SyncGroup
//!                                        └──────────────────── Stable ◄────────────┘
//! ```
//!
//! Dead is where a deleted group goes: the coordinator drops it from its map at once,
//! so Dead is what DescribeGroups reports for a group it does not know.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use super::{GenerationId, GroupError, GroupId, JoinResponse, JoinedMember, MemberId, Protocol, Reply, SyncResponse};

/// Kafka's group states, named as ListGroups and DescribeGroups report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupState {
    /// No members; the group may still have committed offsets.
    Empty,
    /// Waiting for members to (re)join: JoinGroup responses are held back.
    PreparingRebalance,
    /// Members have their JoinGroup responses; waiting for the leader's assignment.
    CompletingRebalance,
    /// Every member has its assignment; heartbeats keep members alive.
    Stable,
    /// Deleted.
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// How long a member that joined for the first time may wait in a rebalance before
/// it is dropped (it has no member id to heartbeat with yet): Kafka's
/// `NewMemberJoinTimeoutMs`.
pub const NEW_MEMBER_JOIN_TIMEOUT_MS: u64 = 5 * 60 * 1000;

pub struct Member {
    pub member_id: MemberId,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    /// In the member's order of preference.
    pub protocols: Vec<Protocol>,
    pub assignment: Bytes,
    /// A JoinGroup held until the rebalance completes.
    pub awaiting_join: Option<Reply<JoinResponse>>,
    /// A SyncGroup held until the leader's assignment arrives.
    pub awaiting_sync: Option<Reply<SyncResponse>>,
    /// The member is removed when this passes without a heartbeat, unless it is kept
    /// alive by a held request ([`Member::kept_alive`]).
    pub heartbeat_deadline_ms: u64,
    /// Joined during the current rebalance and has not had a JoinGroup response yet.
    pub is_new: bool,
}

impl Member {
    /// A member whose JoinGroup or SyncGroup is being held cannot heartbeat on that
    /// connection, so its session does not expire meanwhile (except a brand-new
    /// member, see [`NEW_MEMBER_JOIN_TIMEOUT_MS`]); the held request's own timeout
    /// bounds the wait.
    pub fn kept_alive(&self) -> bool {
        (self.awaiting_join.is_some() && !self.is_new) || self.awaiting_sync.is_some()
    }

    /// Same protocols, same metadata, same order.
    pub fn matches(&self, protocols: &[Protocol]) -> bool {
        self.protocols == protocols
    }

    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols.iter().find(|p| p.name == protocol).map(|p| p.metadata.clone()).unwrap_or_default()
    }

    /// The member's first choice among `candidates`.
    fn vote<'a>(&'a self, candidates: &[&str]) -> Option<&'a str> {
        self.protocols.iter().map(|p| p.name.as_str()).find(|name| candidates.contains(name))
    }
}

/// The pending completion of a PreparingRebalance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebalanceTimer {
    None,
    /// The first rebalance of an empty group: complete at `deadline_ms` (no earlier,
    /// even if everyone joined), or wait another delay if members kept arriving and
    /// `remaining_ms` of the rebalance timeout is left. Kafka's `InitialDelayedJoin`.
    Initial {
        deadline_ms: u64,
        remaining_ms: u64,
    },
    /// Complete as soon as every known member rejoined, or at `deadline_ms` (the
    /// rebalance timeout) without the missing ones. Kafka's `DelayedJoin`.
    Join {
        deadline_ms: u64,
    },
}

pub struct Group {
    pub group_id: GroupId,
    pub state: GroupState,
    pub generation: GenerationId,
    pub protocol_type: Option<String>,
    /// The protocol chosen for the current generation.
    pub protocol_name: Option<String>,
    pub leader: Option<MemberId>,
    pub members: BTreeMap<MemberId, Member>,
    /// group.instance.id → member id, for static members (KIP-345).
    pub static_members: HashMap<String, MemberId>,
    /// Member ids handed out with MEMBER_ID_REQUIRED (KIP-394), with the deadline by
    /// which they must join. A rebalance waits for them.
    pub pending_members: BTreeMap<MemberId, u64>,
    pub rebalance: RebalanceTimer,
    /// A member joined the group's first rebalance during the initial delay.
    pub new_member_added: bool,
    /// The group has records in its offsets partition (offsets or metadata), so it
    /// outlives its last member. A group without is forgotten when it is empty.
    pub stored: bool,
    /// The earliest deadline this group has in the coordinator's timer heap.
    pub timer_ms: Option<u64>,
}

impl Group {
    pub fn new(group_id: GroupId) -> Group {
        Group {
            group_id,
            state: GroupState::Empty,
            generation: GenerationId(0),
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_members: BTreeMap::new(),
            rebalance: RebalanceTimer::None,
            new_member_added: false,
            stored: false,
            timer_ms: None,
        }
    }

    pub fn is(&self, state: GroupState) -> bool {
        self.state == state
    }

    pub fn is_leader(&self, member_id: &MemberId) -> bool {
        self.leader.as_ref() == Some(member_id)
    }

    /// Protocols every member supports, in the first member's order of preference.
    fn candidate_protocols(&self) -> Vec<&str> {
        let mut members = self.members.values();
        let Some(first) = members.next() else { return Vec::new() };
        let mut candidates: Vec<&str> = first.protocols.iter().map(|p| p.name.as_str()).collect();
        for member in members {
            candidates.retain(|name| member.protocols.iter().any(|p| p.name == *name));
        }
        candidates
    }

    /// Whether a member with these protocols may join: an empty group takes any
    /// non-empty protocol type and list; otherwise the type must match and at least
    /// one protocol must be one every current member supports.
    pub fn supports_protocols(&self, protocol_type: &str, protocols: &[Protocol]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        let candidates = self.candidate_protocols();
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|p| candidates.contains(&p.name.as_str()))
    }

    /// The protocol for the next generation: each member votes for its favourite
    /// among those all support; most votes wins, ties go to the first member's
    /// preference. `None` only for a group without members or a common protocol
    /// (which joins prevent).
    pub fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes: Vec<(&str, usize)> = candidates.iter().map(|name| (*name, 0)).collect();
        for member in self.members.values() {
            if let Some(choice) = member.vote(&candidates) {
                if let Some(entry) = votes.iter_mut().find(|(name, _)| *name == choice) {
                    entry.1 += 1;
                }
            }
        }
        let most = votes.iter().map(|(_, count)| *count).max()?;
        votes.into_iter().find(|(_, count)| *count == most).map(|(name, _)| name.to_string())
    }

    /// Everyone known has a JoinGroup held and no handed-out member id is still due.
    pub fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some())
    }

    /// The longest rebalance timeout of the members: how long a rebalance waits.
    pub fn rebalance_timeout_ms(&self) -> u64 {
        self.members.values().map(|m| m.rebalance_timeout_ms).max().unwrap_or(0)
    }

    /// Makes sure the leader is a member that rejoined, if any did.
    pub fn elect_joined_leader(&mut self) -> bool {
        if let Some(leader) = &self.leader {
            if self.members.get(leader).is_some_and(|m| m.awaiting_join.is_some()) {
                return true;
            }
        }
        match self.members.values().find(|m| m.awaiting_join.is_some()) {
            Some(member) => {
                self.leader = Some(member.member_id.clone());
                true
            }
            None => false,
        }
    }

    /// Removes a member; a new leader (any member) if it led. Returns the member so
    /// the caller can answer its held requests.
    pub fn remove_member(&mut self, member_id: &MemberId) -> Option<Member> {
        let member = self.members.remove(member_id)?;
        if let Some(instance) = &member.group_instance_id {
            if self.static_members.get(instance) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        if self.is_leader(member_id) {
            self.leader = self.members.keys().next().cloned();
        }
        Some(member)
    }

    /// `member_id` is not the member currently registered under `instance` (a newer
    /// instance took over the group.instance.id): FENCED_INSTANCE_ID.
    pub fn is_static_member_fenced(&self, member_id: &MemberId, group_instance_id: Option<&str>) -> bool {
        match group_instance_id {
            Some(instance) => self.static_members.get(instance).is_some_and(|current| current != member_id),
            None => false,
        }
    }

    /// Kafka's `validateMember`: a named group.instance.id must be registered, to
    /// this member id (else FENCED_INSTANCE_ID), and the member must exist.
    pub fn validate_member(&self, member_id: &MemberId, group_instance_id: Option<&str>) -> Result<(), GroupError> {
        if let Some(instance) = group_instance_id {
            match self.static_members.get(instance) {
                None => return Err(GroupError::UnknownMemberId),
                Some(current) if current != member_id => return Err(GroupError::FencedInstanceId),
                Some(_) => {}
            }
        }
        if self.members.contains_key(member_id) {
            Ok(())
        } else {
            Err(GroupError::UnknownMemberId)
        }
    }

    /// The members as the leader's JoinGroup response lists them.
    pub fn joined_members(&self) -> Vec<JoinedMember> {
        let protocol = self.protocol_name.as_deref().unwrap_or("");
        self.members
            .values()
            .map(|m| JoinedMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                metadata: m.metadata_for(protocol),
            })
            .collect()
    }

    /// The JoinGroup response of `member_id` for the current generation.
    pub fn join_response(&self, member_id: &MemberId) -> JoinResponse {
        JoinResponse {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.clone(),
            members: if self.is_leader(member_id) { self.joined_members() } else { Vec::new() },
        }
    }

    /// The earliest deadline of the group: a rebalance to complete, a pending member
    /// to drop, a session to expire.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let rebalance = match self.rebalance {
            RebalanceTimer::None => None,
            RebalanceTimer::Initial { deadline_ms, .. } | RebalanceTimer::Join { deadline_ms } => Some(deadline_ms),
        };
        let pending = self.pending_members.values().copied().min();
        let sessions = self.members.values().filter(|m| !m.kept_alive()).map(|m| m.heartbeat_deadline_ms).min();
        [rebalance, pending, sessions].into_iter().flatten().min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, protocols: &[&str]) -> Member {
        Member {
            member_id: MemberId(id.into()),
            group_instance_id: None,
            client_id: "client".into(),
            client_host: String::new(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            protocols: protocols
                .iter()
                .map(|name| Protocol { name: name.to_string(), metadata: Bytes::new() })
                .collect(),
            assignment: Bytes::new(),
            awaiting_join: None,
            awaiting_sync: None,
            heartbeat_deadline_ms: 0,
            is_new: false,
        }
    }

    fn group_of(members: Vec<Member>) -> Group {
        let mut group = Group::new(GroupId("g".into()));
        group.protocol_type = Some("consumer".into());
        for m in members {
            group.members.insert(m.member_id.clone(), m);
        }
        group
    }

    #[test]
    fn protocol_selection_takes_the_most_voted_common_protocol() {
        let group = group_of(vec![
            member("a", &["range", "roundrobin"]),
            member("b", &["roundrobin", "range", "sticky"]),
            member("c", &["roundrobin", "range"]),
        ]);
        assert_eq!(group.select_protocol().as_deref(), Some("roundrobin"));
        let tie = group_of(vec![member("a", &["range", "roundrobin"]), member("b", &["roundrobin", "range"])]);
        assert_eq!(tie.select_protocol().as_deref(), Some("range"), "ties go to the first member's preference");
        let none = group_of(vec![member("a", &["range"]), member("b", &["sticky"])]);
        assert_eq!(none.select_protocol(), None);
    }

    #[test]
    fn a_member_must_share_the_protocol_type_and_a_common_protocol() {
        let empty = Group::new(GroupId("g".into()));
        let range = [Protocol { name: "range".into(), metadata: Bytes::new() }];
        assert!(empty.supports_protocols("consumer", &range));
        assert!(!empty.supports_protocols("", &range));
        assert!(!empty.supports_protocols("consumer", &[]));
        let group = group_of(vec![member("a", &["range", "roundrobin"]), member("b", &["range"])]);
        assert!(group.supports_protocols("consumer", &range));
        assert!(!group.supports_protocols("connect", &range));
        let roundrobin = [Protocol { name: "roundrobin".into(), metadata: Bytes::new() }];
        assert!(!group.supports_protocols("consumer", &roundrobin), "b does not support roundrobin");
    }

    #[test]
    fn removing_the_leader_elects_another_member() {
        let mut group = group_of(vec![member("a", &["range"]), member("b", &["range"])]);
        group.leader = Some(MemberId("a".into()));
        group.remove_member(&MemberId("a".into()));
        assert_eq!(group.leader, Some(MemberId("b".into())));
        group.remove_member(&MemberId("b".into()));
        assert_eq!(group.leader, None);
    }
}
