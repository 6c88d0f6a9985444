//! A partition's leader-epoch history: Kafka's `LeaderEpochFileCache` and its
//! `leader-epoch-checkpoint` file.
//!
//! Every batch carries the epoch of the leader that appended it (`partition_leader_epoch`
//! in the header, see [`crate::batch`]). The cache holds, in increasing order of both,
//! each epoch with the offset where it starts: an entry is added when an appended batch
//! carries an epoch above the latest one, and when a new leader assigns its epoch at the
//! log end before it appends anything ([`LeaderEpochCache::assign`], Kafka's
//! `assignEpochStartOffset`). From it, [`LeaderEpochCache::end_offset_for`] answers
//! OffsetForLeaderEpoch, which a follower (or a restarted leader) uses to find where its
//! log diverged from the leader's and a consumer uses to check that its position was not
//! truncated away.
//!
//! An epoch below the latest, appended later (a bit flip in a batch's leader epoch, a
//! field no CRC covers, can make a huge epoch the latest), replaces the entries it
//! contradicts, as in Kafka: the log keeps taking appends, and replication, which knows
//! the current epoch, is what stops a stale leader.
//!
//! It follows the log's two ends: truncation from the end
//! ([`LeaderEpochCache::truncate_from_end`]) removes the epochs that start at or past the
//! new end; moving the log start (retention, DeleteRecords,
//! [`LeaderEpochCache::truncate_from_start`]) removes the epochs that ended before it and
//! moves the start of the one holding it up to it.
//!
//! ## The checkpoint file
//!
//! Kafka's text format, `leader-epoch-checkpoint` in the partition directory:
//!
//! ```text
//! 0               version
//! 2               entry count
//! 0 0             epoch, start offset; both increasing
//! 3 1200
//! ```
//!
//! Crash story: the file is replaced whole and durably (temporary file, fsync, rename,
//! directory fsync: `Storage::write_file_atomic`), and the log keeps one rule: an epoch's
//! entry is in the file before any batch of that epoch is written to a segment (an append
//! that starts a new epoch writes the checkpoint first, and fails, writing nothing, if it
//! cannot), and a truncation cuts the segments before it rewrites the file. So after a
//! crash the file describes every batch on disk, and may hold more: entries at or past
//! the recovered end (their batches were lost) or below the log start (its move was not
//! checkpointed). [`crate::log::PartitionLog::open`] cuts those, then checks the rest
//! against the batch headers (each entry below the end starts a batch of its epoch, the
//! last batch is of the latest epoch below it); a file that is missing (a log from
//! before this file existed), unreadable or inconsistent is rebuilt from the batch
//! headers and rewritten. A rebuilt history knows only the epochs of batches still in
//! the log: an epoch assigned at the log end without a batch, or one whose batches
//! retention deleted entirely, is not in it.
//!
//! Limits: after an append in an older epoch (see above) the history can name an
//! epoch for offsets whose batches carry another, as Kafka's can; the next open finds
//! that and rebuilds it from the headers. The check at open does not notice an entry
//! missing between two others that agree with their batches (no crash leaves one: the
//! file is replaced whole). The whole file is rewritten at each change (two fsyncs), which happens once
//! per new epoch, truncation or log start move, not per append; the history is never
//! shortened other than by the log's two ends, so it grows by one entry per leader
//! change of the partition.

use crate::types::{LeaderEpoch, Offset};

/// The checkpoint file in each partition directory (Kafka's name).
pub const LEADER_EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
const CHECKPOINT_VERSION: u32 = 0;

/// Kafka's `UNDEFINED_EPOCH`: no epoch known (OffsetForLeaderEpoch's answer for an epoch
/// the log has not seen).
pub const UNDEFINED_EPOCH: LeaderEpoch = LeaderEpoch(-1);
/// Kafka's `UNDEFINED_EPOCH_OFFSET`.
pub const UNDEFINED_EPOCH_OFFSET: Offset = Offset(-1);

/// One leader epoch and the first offset appended in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: LeaderEpoch,
    pub start_offset: Offset,
}

/// The answer to OffsetForLeaderEpoch: the epoch found and where it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEndOffset {
    pub leader_epoch: LeaderEpoch,
    pub end_offset: Offset,
}

impl EpochEndOffset {
    pub const UNDEFINED: EpochEndOffset =
        EpochEndOffset { leader_epoch: UNDEFINED_EPOCH, end_offset: UNDEFINED_EPOCH_OFFSET };
}

/// The leader epochs of one partition, oldest first; both epochs and start offsets
/// strictly increase. Owned by the partition's log (one shard); does no IO itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    pub fn new() -> LeaderEpochCache {
        LeaderEpochCache::default()
    }

    /// A cache of `entries`, if they increase strictly in epoch and in start offset and
    /// none is negative.
    pub fn from_entries(entries: Vec<EpochEntry>) -> Result<LeaderEpochCache, String> {
        if let Some(entry) = entries.iter().find(|e| e.epoch.0 < 0 || e.start_offset.0 < 0) {
            return Err(format!("negative entry {} {}", entry.epoch, entry.start_offset));
        }
        if let Some(pair) =
            entries.windows(2).find(|p| p[0].epoch >= p[1].epoch || p[0].start_offset >= p[1].start_offset)
        {
            return Err(format!(
                "entries {} {} and {} {} do not increase",
                pair[0].epoch, pair[0].start_offset, pair[1].epoch, pair[1].start_offset
            ));
        }
        Ok(LeaderEpochCache { entries })
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.latest().map(|entry| entry.epoch)
    }

    /// The epoch `offset` was appended in: the entry with the largest start at or below it.
    pub fn epoch_at(&self, offset: Offset) -> Option<LeaderEpoch> {
        self.entries.iter().rev().find(|e| e.start_offset <= offset).map(|e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset` (Kafka's `assign`): nothing changes
    /// if it is the latest epoch already and starts at or before it; otherwise every
    /// entry of an epoch at or above it, or starting at or past `start_offset`, goes
    /// (Kafka's removal of non-monotonic entries), and the new one is the latest.
    /// Returns whether the cache changed.
    pub fn assign(&mut self, epoch: LeaderEpoch, start_offset: Offset) -> bool {
        assert!(epoch.0 >= 0 && start_offset.0 >= 0, "leader epoch entry {epoch} {start_offset} is negative");
        if self.latest().is_some_and(|latest| latest.epoch == epoch && latest.start_offset <= start_offset) {
            return false;
        }
        self.entries.retain(|e| e.epoch < epoch && e.start_offset < start_offset);
        self.entries.push(EpochEntry { epoch, start_offset });
        true
    }

    /// Kafka's `LeaderEpochFileCache.endOffsetFor`: where epoch `requested` ends.
    /// The latest epoch ends at the log end; an older one at the start of the first
    /// epoch after it, answered with the largest epoch at or below it, or with itself if
    /// it is older than every epoch kept (inexact: epochs between may be gone with the
    /// log start); an epoch above every known one, or [`UNDEFINED_EPOCH`], is
    /// [`EpochEndOffset::UNDEFINED`].
    pub fn end_offset_for(&self, requested: LeaderEpoch, log_end_offset: Offset) -> EpochEndOffset {
        if requested == UNDEFINED_EPOCH {
            return EpochEndOffset::UNDEFINED;
        }
        if self.latest_epoch() == Some(requested) {
            return EpochEndOffset { leader_epoch: requested, end_offset: log_end_offset };
        }
        let Some(next) = self.entries.iter().find(|e| e.epoch > requested) else {
            return EpochEndOffset::UNDEFINED;
        };
        let leader_epoch = self.entries.iter().rev().find(|e| e.epoch <= requested).map_or(requested, |e| e.epoch);
        EpochEndOffset { leader_epoch, end_offset: next.start_offset }
    }

    /// The log now ends at `end_offset`: epochs starting at or past it go (Kafka's
    /// `truncateFromEnd`). Returns whether the cache changed.
    pub fn truncate_from_end(&mut self, end_offset: Offset) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end_offset);
        self.entries.len() != before
    }

    /// The log now starts at `start_offset`: epochs that start at or below it go,
    /// except the last of them, which now starts at `start_offset` (Kafka's
    /// `truncateFromStart`). Returns whether the cache changed.
    pub fn truncate_from_start(&mut self, start_offset: Offset) -> bool {
        let below = self.entries.iter().take_while(|e| e.start_offset <= start_offset).count();
        if below == 0 || (below == 1 && self.entries[0].start_offset == start_offset) {
            return false;
        }
        let holding = self.entries[below - 1].epoch;
        self.entries.drain(..below);
        self.entries.insert(0, EpochEntry { epoch: holding, start_offset });
        true
    }

    /// Forgets every epoch (the log restarted empty). Returns whether it held any.
    pub fn clear(&mut self) -> bool {
        let had = !self.entries.is_empty();
        self.entries.clear();
        had
    }

    /// The checkpoint file's bytes (see the module doc).
    pub fn encode_checkpoint(&self) -> Vec<u8> {
        let mut text = format!("{CHECKPOINT_VERSION}\n{}\n", self.entries.len());
        for entry in &self.entries {
            text.push_str(&format!("{} {}\n", entry.epoch, entry.start_offset));
        }
        text.into_bytes()
    }

    /// Parses a checkpoint file; the error says what is wrong with it.
    pub fn decode_checkpoint(bytes: &[u8]) -> Result<LeaderEpochCache, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "it is not text".to_string())?;
        let mut lines = text.lines();
        let version = lines.next().map(str::trim);
        if version != Some(&CHECKPOINT_VERSION.to_string()) {
            return Err(format!("version {version:?}, expected {CHECKPOINT_VERSION}"));
        }
        let count_line = lines.next().unwrap_or("");
        let count: usize = count_line.trim().parse().map_err(|_| format!("entry count {count_line:?}"))?;
        let mut entries = Vec::new();
        for line in lines.by_ref().take(count) {
            let mut fields = line.split_whitespace();
            let (Some(epoch), Some(offset), None) = (fields.next(), fields.next(), fields.next()) else {
                return Err(format!("entry {line:?}"));
            };
            let epoch = epoch.parse().map_err(|_| format!("epoch in {line:?}"))?;
            let offset = offset.parse().map_err(|_| format!("offset in {line:?}"))?;
            entries.push(EpochEntry { epoch: LeaderEpoch(epoch), start_offset: Offset(offset) });
        }
        if entries.len() != count {
            return Err(format!("{} entries, the header says {count}", entries.len()));
        }
        if let Some(extra) = lines.find(|line| !line.trim().is_empty()) {
            return Err(format!("{extra:?} after the last entry"));
        }
        LeaderEpochCache::from_entries(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let entries = entries.iter().map(|&(e, o)| EpochEntry { epoch: LeaderEpoch(e), start_offset: Offset(o) });
        LeaderEpochCache::from_entries(entries.collect()).expect("increasing")
    }

    fn pairs(cache: &LeaderEpochCache) -> Vec<(i32, i64)> {
        cache.entries().iter().map(|e| (e.epoch.0, e.start_offset.0)).collect()
    }

    fn lookup(entries: &[(i32, i64)], requested: i32, log_end_offset: i64) -> (i32, i64) {
        let answer = cache(entries).end_offset_for(LeaderEpoch(requested), Offset(log_end_offset));
        (answer.leader_epoch.0, answer.end_offset.0)
    }

    #[test]
    fn the_latest_epoch_ends_at_the_log_end_and_older_ones_where_the_next_starts() {
        assert_eq!(lookup(&[(0, 0)], 0, 42), (0, 42));
        assert_eq!(lookup(&[(0, 7)], 0, 7), (0, 7), "all records deleted: the end is the start");
        assert_eq!(lookup(&[(0, 0)], 1, 42), (-1, -1), "an epoch the log has not seen is undefined");
        assert_eq!(lookup(&[(0, 0)], -1, 42), (-1, -1), "an undefined epoch is undefined");
        let history = [(0, 0), (2, 5), (5, 9)];
        assert_eq!(lookup(&history, 5, 12), (5, 12));
        assert_eq!(lookup(&history, 4, 12), (2, 9), "epochs 3 and 4 never led: the floor epoch 2 ends at 9");
        assert_eq!(lookup(&history, 2, 12), (2, 9));
        assert_eq!(lookup(&history, 1, 12), (0, 5));
        assert_eq!(lookup(&history, 0, 12), (0, 5));
        assert_eq!(lookup(&history, 6, 12), (-1, -1));
        assert_eq!(lookup(&[(3, 4), (5, 9)], 1, 12), (1, 4), "below every epoch: the first later epoch's start");
        assert_eq!(lookup(&[], 0, 12), (-1, -1));
    }

    #[test]
    fn assign_adds_only_newer_epochs_and_replaces_what_a_lower_one_contradicts() {
        let mut history = LeaderEpochCache::new();
        assert!(history.assign(LeaderEpoch(0), Offset(0)));
        assert!(!history.assign(LeaderEpoch(0), Offset(10)), "the same epoch continues");
        assert!(history.assign(LeaderEpoch(3), Offset(10)));
        assert_eq!(pairs(&history), [(0, 0), (3, 10)]);
        // A leader elected at epoch 5 at the log end, then a new leader of epoch 4's
        // data replicated there: the empty epoch 5 is replaced.
        assert!(history.assign(LeaderEpoch(5), Offset(20)));
        assert!(history.assign(LeaderEpoch(4), Offset(20)));
        assert_eq!(pairs(&history), [(0, 0), (3, 10), (4, 20)]);
        assert!(history.assign(LeaderEpoch(2), Offset(30)), "a lower epoch later: what it contradicts goes");
        assert_eq!(pairs(&history), [(0, 0), (2, 30)]);
        assert_eq!(history.epoch_at(Offset(29)), Some(LeaderEpoch(0)));
        assert_eq!(history.epoch_at(Offset(30)), Some(LeaderEpoch(2)));
    }

    #[test]
    fn truncation_from_either_end_keeps_the_epochs_of_what_is_left() {
        let mut history = cache(&[(0, 0), (2, 5), (5, 9)]);
        assert!(!history.truncate_from_end(Offset(10)));
        assert!(history.truncate_from_end(Offset(9)), "epoch 5 started at the new end: gone");
        assert_eq!(pairs(&history), [(0, 0), (2, 5)]);
        assert!(!history.truncate_from_start(Offset(0)));
        assert!(history.truncate_from_start(Offset(3)));
        assert_eq!(pairs(&history), [(0, 3), (2, 5)]);
        assert!(history.truncate_from_start(Offset(5)));
        assert_eq!(pairs(&history), [(2, 5)]);
        assert!(history.truncate_from_start(Offset(40)), "past every start: the last epoch holds it");
        assert_eq!(pairs(&history), [(2, 40)]);
        assert!(history.clear() && history.is_empty());
    }

    #[test]
    fn the_checkpoint_round_trips_and_damage_is_refused() {
        let history = cache(&[(0, 0), (2, 5), (5, 9)]);
        let bytes = history.encode_checkpoint();
        assert_eq!(String::from_utf8(bytes.clone()).expect("text"), "0\n3\n0 0\n2 5\n5 9\n");
        assert_eq!(LeaderEpochCache::decode_checkpoint(&bytes), Ok(history));
        let empty = LeaderEpochCache::new().encode_checkpoint();
        assert_eq!(LeaderEpochCache::decode_checkpoint(&empty), Ok(LeaderEpochCache::new()));
        for bad in ["", "1\n0\n", "0\n2\n0 0\n", "0\n1\n0 0 0\n", "0\n2\n3 0\n2 5\n", "0\n2\n0 5\n1 5\n", "0\nx\n"] {
            assert!(LeaderEpochCache::decode_checkpoint(bad.as_bytes()).is_err(), "{bad:?} accepted");
        }
        for cut in 0..bytes.len() - 1 {
            let decoded = LeaderEpochCache::decode_checkpoint(&bytes[..cut]);
            assert!(decoded.is_err(), "a checkpoint cut at {cut} decoded as {decoded:?}");
        }
    }
}
