//! A follower's side of one partition, sans IO (Kafka's `AbstractFetcherThread`
//! partition state with KIP-101/KIP-279 truncation): before it fetches from a new
//! leader it truncates whatever its log has that the leader's does not, found
//! through OffsetForLeaderEpoch; then it fetches from its log end, appends what it
//! gets as the leader wrote it, and takes the leader's high watermark (capped at
//! its own log end).
//!
//! The fetcher task does the IO: it asks [`FollowerPartition::next`] what to do,
//! does it, and reports the outcome back. Nothing here reads a clock or a socket,
//! so every path, including a leader that answers with an older epoch, a log that
//! diverged over several epochs, and offsets out of the leader's range, is tested
//! against a model.

use super::records::NodeId;

/// Kafka's `UNDEFINED_EPOCH` / `UNDEFINED_EPOCH_OFFSET`.
pub const UNDEFINED: i64 = -1;

/// What the local log can say about its epochs (the engine's leader-epoch cache).
pub trait LocalEpochs {
    /// The latest epoch in the local log, or -1 when it has none.
    fn latest_epoch(&self) -> i32;
    /// Kafka's `endOffsetFor(epoch)`: the largest local epoch at or below `epoch`
    /// and where it ends (the start of the next epoch, or the log end for the
    /// latest); `(-1, -1)` when the log has no epoch at or below it.
    fn end_offset_for(&self, epoch: i32) -> (i32, i64);
    fn log_end(&self) -> i64;
    /// Where the local log's first epoch starts (its log start offset when every
    /// batch carries an epoch).
    fn earliest_epoch_start(&self) -> i64;
}

/// What the fetcher should do next for this partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Ask the leader (OffsetForLeaderEpoch, current epoch `leader_epoch`) where
    /// `epoch` ends in its log.
    AskEpochEnd { epoch: i32, leader_epoch: i32 },
    /// Cut the local log to end at `offset`, then report [`FollowerPartition::truncated`].
    Truncate { offset: i64 },
    /// Fetch from `offset` (the local log end) with `leader_epoch` as the current epoch.
    Fetch { offset: i64, leader_epoch: i32 },
    /// Empty the local log and start it at `offset` (the leader's log start moved
    /// past everything this follower has).
    StartAt { offset: i64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the answer to an epoch question about `epoch`.
    Truncating {
        epoch: i32,
    },
    Fetching,
}

/// One partition this node follows.
#[derive(Debug, Clone)]
pub struct FollowerPartition {
    pub leader: NodeId,
    pub leader_epoch: i32,
    phase: Phase,
    high_watermark: i64,
}

/// The leader's answer to an OffsetForLeaderEpoch question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEnd {
    pub epoch: i32,
    pub end_offset: i64,
}

impl FollowerPartition {
    /// This node follows `leader` in `leader_epoch` from now on, its own high
    /// watermark at `high_watermark`; its log may hold records the leader's does
    /// not, so it starts by truncating.
    pub fn new(leader: NodeId, leader_epoch: i32, high_watermark: i64, local: &impl LocalEpochs) -> FollowerPartition {
        let phase = Phase::Truncating { epoch: local.latest_epoch() };
        FollowerPartition { leader, leader_epoch, phase, high_watermark: high_watermark.min(local.log_end()) }
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    pub fn is_fetching(&self) -> bool {
        self.phase == Phase::Fetching
    }

    /// What to do now.
    pub fn next(&self, local: &impl LocalEpochs) -> Action {
        match self.phase {
            // An empty log (or one written before epochs) has nothing to compare.
            Phase::Truncating { epoch } if epoch < 0 => {
                Action::Fetch { offset: local.log_end(), leader_epoch: self.leader_epoch }
            }
            Phase::Truncating { epoch } => Action::AskEpochEnd { epoch, leader_epoch: self.leader_epoch },
            Phase::Fetching => Action::Fetch { offset: local.log_end(), leader_epoch: self.leader_epoch },
        }
    }

    /// The leader answered where the epoch asked about ends in its log (Kafka's
    /// `getOffsetTruncationState`). Returns where to cut the local log; report the
    /// cut with [`Self::truncated`]. When the leader's epoch is one this log does
    /// not have, the cut is to the end of this log's epoch below it and the next
    /// action asks about that epoch (KIP-279's loop), until both sides name one
    /// epoch.
    pub fn epoch_end(&mut self, answer: EpochEnd, local: &impl LocalEpochs) -> Option<i64> {
        let Phase::Truncating { .. } = self.phase else { return None };
        let log_end = local.log_end();
        if answer.end_offset < 0 {
            // The leader has no epoch at or below ours: keep only what is
            // certainly committed.
            self.phase = Phase::Fetching;
            return Some(self.high_watermark.min(log_end));
        }
        if answer.epoch < 0 {
            // A leader without epochs for those records: its end is all there is.
            self.phase = Phase::Fetching;
            return Some(answer.end_offset.min(log_end));
        }
        let (local_epoch, local_end) = local.end_offset_for(answer.epoch);
        if local_epoch < 0 {
            // Every local epoch is above the leader's: none of it is in the leader's log.
            self.phase = Phase::Fetching;
            return Some(answer.end_offset.min(local.earliest_epoch_start()).min(log_end));
        }
        if local_epoch == answer.epoch {
            self.phase = Phase::Fetching;
            return Some(answer.end_offset.min(local_end).min(log_end));
        }
        self.phase = Phase::Truncating { epoch: local_epoch };
        Some(local_end.min(log_end))
    }

    /// The local log was cut (after [`Self::epoch_end`]) or restarted (after
    /// [`Action::StartAt`]).
    pub fn truncated(&mut self, local: &impl LocalEpochs) {
        self.high_watermark = self.high_watermark.min(local.log_end());
    }

    /// A fetch answered with records appended (or none) and the leader's high
    /// watermark: the follower's mark is the leader's, capped at its own log end.
    pub fn fetched(&mut self, leader_high_watermark: i64, local: &impl LocalEpochs) -> i64 {
        self.high_watermark = self.high_watermark.max(leader_high_watermark.min(local.log_end()));
        self.high_watermark
    }

    /// The leader answered OFFSET_OUT_OF_RANGE for a fetch from `offset`, its log
    /// spanning `[leader_start, leader_end)`.
    pub fn out_of_range(
        &mut self,
        offset: i64,
        leader_start: i64,
        leader_end: i64,
        local: &impl LocalEpochs,
    ) -> Action {
        if offset < leader_start {
            // Retention or DeleteRecords on the leader removed what comes next here.
            return Action::StartAt { offset: leader_start };
        }
        debug_assert!(offset > leader_end, "fetch offset {offset} in range [{leader_start}, {leader_end})");
        // This log runs past the leader's: find where they diverge.
        self.phase = Phase::Truncating { epoch: local.latest_epoch() };
        self.next(local)
    }
}

#[cfg(test)]
mod tests;
