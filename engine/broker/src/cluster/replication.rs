//! A partition leader's view of its followers, sans IO (Kafka's `Partition` and
//! `Replica` state on the leader): each follower's log end offset as its fetches
//! show it, the high watermark, and the ISR changes to ask the controller for.
//!
//! - A follower's log end offset is the offset it fetches from: it asks for what it
//!   does not have yet.
//! - The high watermark is the lowest log end offset over the ISR, the leader's
//!   own included, and never goes back while this leader leads. An `acks=all`
//!   append is answered once the high watermark passes it.
//! - A follower is caught up when it fetches from at least the leader's log end as
//!   of its previous fetch (Kafka's `lastCaughtUpTimeMs` rule); one that has not
//!   been caught up for `replica.lag.time.max.ms` leaves the ISR, one outside the
//!   ISR that reaches the high watermark (and this leader's epoch start) joins it,
//!   unless the metadata shows it fenced: the controller would refuse it (KIP-841's
//!   ISR eligibility), and a fenced follower that fetches would be proposed, and
//!   refused, after every fetch.
//!   Both are asked of the controller ([`super::controller::Controller::alter_partition`]);
//!   until the answer is committed, the high watermark counts the ISR as the larger
//!   of the old and the proposed one (KIP-497's "maximal ISR"), so an acknowledged
//!   write never depends on a change that may still be refused.
//! - `min.insync.replicas` is checked before an `acks=all` append
//!   (NOT_ENOUGH_REPLICAS) and again when the ISR shrinks under a waiting append
//!   (NOT_ENOUGH_REPLICAS_AFTER_APPEND: the append is in the log but not acknowledged).

use std::collections::{BTreeMap, BTreeSet};

use super::image::PartitionImage;
use super::records::NodeId;

/// What one follower's fetches have shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerState {
    /// The offset it last fetched from; -1 before its first fetch.
    pub log_end: i64,
    /// When it was last caught up.
    pub caught_up_ms: u64,
    /// The leader's log end when this follower last fetched, and when that was.
    log_end_at_last_fetch: i64,
    last_fetch_ms: u64,
}

/// A partition led by this node.
#[derive(Debug, Clone)]
pub struct LeaderPartition {
    node_id: NodeId,
    replicas: Vec<NodeId>,
    /// The ISR as committed in the metadata.
    isr: Vec<NodeId>,
    /// An ISR asked of the controller and not committed yet.
    proposed_isr: Option<Vec<NodeId>>,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// The first offset appended in this leader epoch: a follower joins the ISR only
    /// once it has everything before it.
    epoch_start_offset: i64,
    log_end: i64,
    high_watermark: i64,
    followers: BTreeMap<NodeId, FollowerState>,
    /// Replicas the metadata shows fenced (or unregistered): never proposed to join.
    ineligible: BTreeSet<NodeId>,
}

/// Why an `acks=all` append cannot be (or could not be) acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsyncError {
    /// Fewer in-sync replicas than `min.insync.replicas`: the append is refused.
    NotEnoughReplicas { isr: usize, min: usize },
    /// The ISR shrank below the minimum after the append: it is in the log but
    /// not acknowledged.
    NotEnoughReplicasAfterAppend { isr: usize, min: usize },
}

impl LeaderPartition {
    /// This node became leader of `state` at `now_ms` with its log ending at
    /// `log_end` and its high watermark at `high_watermark`. Followers in the ISR
    /// start caught up (they were, as far as anyone knows).
    pub fn new(node_id: NodeId, state: &PartitionImage, log_end: i64, high_watermark: i64, now_ms: u64) -> Self {
        let followers = state
            .replicas
            .iter()
            .filter(|r| **r != node_id)
            .map(|r| {
                let caught_up_ms = if state.isr.contains(r) { now_ms } else { 0 };
                (*r, FollowerState { log_end: -1, caught_up_ms, log_end_at_last_fetch: -1, last_fetch_ms: 0 })
            })
            .collect();
        LeaderPartition {
            node_id,
            replicas: state.replicas.clone(),
            isr: state.isr.clone(),
            proposed_isr: None,
            leader_epoch: state.leader_epoch,
            partition_epoch: state.partition_epoch,
            epoch_start_offset: log_end,
            log_end,
            high_watermark: high_watermark.min(log_end),
            followers,
            ineligible: BTreeSet::new(),
        }
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    pub fn log_end(&self) -> i64 {
        self.log_end
    }

    pub fn isr(&self) -> &[NodeId] {
        &self.isr
    }

    pub fn follower(&self, node_id: NodeId) -> Option<&FollowerState> {
        self.followers.get(&node_id)
    }

    /// The committed metadata of the partition changed while this node still leads
    /// it in the same epoch (an ISR change committed, its own or not).
    pub fn update(&mut self, state: &PartitionImage) {
        // A reassignment adds replicas (they start out of sync and join once caught
        // up) and removes others (their fetches are no longer followed).
        if state.replicas != self.replicas {
            self.followers.retain(|id, _| state.replicas.contains(id));
            for replica in state.replicas.iter().filter(|r| **r != self.node_id) {
                self.followers.entry(*replica).or_insert(FollowerState {
                    log_end: -1,
                    caught_up_ms: 0,
                    log_end_at_last_fetch: -1,
                    last_fetch_ms: 0,
                });
            }
            self.replicas = state.replicas.clone();
        }
        self.isr = state.isr.clone();
        self.partition_epoch = state.partition_epoch;
        if self.proposed_isr.as_ref().is_some_and(|p| *p == state.isr) {
            self.proposed_isr = None;
        }
        self.advance_high_watermark();
    }

    /// The replicas the metadata now shows fenced or unregistered (the controller
    /// refuses them in an ISR): none of them is proposed to join until it is live.
    pub fn set_ineligible(&mut self, ineligible: impl IntoIterator<Item = NodeId>) {
        self.ineligible = ineligible.into_iter().collect();
    }

    /// The controller refused or lost the proposed ISR change: forget it, so the
    /// next fetch or tick may propose again against the committed state.
    pub fn proposal_failed(&mut self) {
        self.proposed_isr = None;
        self.advance_high_watermark();
    }

    /// Whether an `acks=all` append may be taken now.
    pub fn check_insync(&self, min_insync: usize) -> Result<(), InsyncError> {
        let isr = self.isr.len();
        if isr < min_insync {
            return Err(InsyncError::NotEnoughReplicas { isr, min: min_insync });
        }
        Ok(())
    }

    /// Whether an `acks=all` append ending at `last_offset` is acknowledged
    /// (`Some(Ok)`), failed (`Some(Err)`: it reached the high watermark with fewer
    /// in-sync replicas than the minimum, as Kafka's
    /// `checkEnoughReplicasReachOffset` answers), or waits (`None`).
    pub fn acks_all_outcome(&self, last_offset: i64, min_insync: usize) -> Option<Result<(), InsyncError>> {
        if self.high_watermark <= last_offset {
            return None;
        }
        let isr = self.isr.len();
        match isr >= min_insync {
            true => Some(Ok(())),
            false => Some(Err(InsyncError::NotEnoughReplicasAfterAppend { isr, min: min_insync })),
        }
    }

    /// The local log now ends at `log_end` (an append was written, and synced if
    /// the topic's policy says so). Returns the high watermark.
    pub fn appended(&mut self, log_end: i64) -> i64 {
        self.log_end = self.log_end.max(log_end);
        self.advance_high_watermark();
        self.high_watermark
    }

    /// Follower `follower` fetches from `fetch_offset` at `now_ms`. Returns the ISR
    /// to propose when the follower just caught up enough to join it.
    pub fn fetched(&mut self, follower: NodeId, fetch_offset: i64, now_ms: u64) -> Option<Vec<NodeId>> {
        let log_end = self.log_end;
        let state = self.followers.get_mut(&follower)?;
        state.log_end = fetch_offset;
        if fetch_offset >= log_end {
            state.caught_up_ms = state.caught_up_ms.max(now_ms);
        } else if state.log_end_at_last_fetch >= 0 && fetch_offset >= state.log_end_at_last_fetch {
            // It has everything the leader had at its previous fetch: it was caught
            // up as of then.
            state.caught_up_ms = state.caught_up_ms.max(state.last_fetch_ms);
        }
        state.log_end_at_last_fetch = log_end;
        state.last_fetch_ms = now_ms;
        self.advance_high_watermark();
        // One change in flight at a time (as Kafka's one pending AlterPartition): a
        // second proposal would replace the first, and the high watermark would
        // stop counting members the first may still add.
        let joins = self.proposed_isr.is_none()
            && !self.ineligible.contains(&follower)
            && !self.effective_isr().contains(&follower)
            && fetch_offset >= self.high_watermark
            && fetch_offset >= self.epoch_start_offset;
        joins.then(|| self.propose(|isr| isr.insert(follower)))
    }

    /// Followers in the ISR not caught up for longer than `lag_max_ms` by `now_ms`:
    /// the ISR without them, to propose.
    pub fn lagging(&mut self, now_ms: u64, lag_max_ms: u64) -> Option<Vec<NodeId>> {
        if self.proposed_isr.is_some() {
            return None;
        }
        let lagging: Vec<NodeId> = self
            .isr
            .iter()
            .filter(|r| **r != self.node_id)
            .filter(|r| self.followers.get(r).is_some_and(|f| now_ms.saturating_sub(f.caught_up_ms) > lag_max_ms))
            .copied()
            .collect();
        if lagging.is_empty() {
            return None;
        }
        Some(self.propose(|isr| {
            for r in &lagging {
                isr.remove(r);
            }
            true
        }))
    }

    /// Records `change` applied to the ISR as proposed and returns it in replica order.
    fn propose(&mut self, change: impl FnOnce(&mut BTreeSet<NodeId>) -> bool) -> Vec<NodeId> {
        let mut members: BTreeSet<NodeId> = self.isr.iter().copied().collect();
        change(&mut members);
        let proposed: Vec<NodeId> = self.replicas.iter().copied().filter(|r| members.contains(r)).collect();
        self.proposed_isr = Some(proposed.clone());
        proposed
    }

    /// The committed ISR together with the members a pending change adds.
    fn effective_isr(&self) -> BTreeSet<NodeId> {
        let mut members: BTreeSet<NodeId> = self.isr.iter().copied().collect();
        members.extend(self.proposed_isr.iter().flatten().copied());
        members
    }

    fn advance_high_watermark(&mut self) {
        let lowest = self
            .effective_isr()
            .into_iter()
            .map(|r| if r == self.node_id { self.log_end } else { self.followers.get(&r).map_or(-1, |f| f.log_end) })
            .min()
            .unwrap_or(self.log_end);
        // A follower that has not fetched yet (-1) holds the mark where it is.
        if lowest > self.high_watermark {
            self.high_watermark = lowest.min(self.log_end);
        }
    }
}

#[cfg(test)]
mod tests;
