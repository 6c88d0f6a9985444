//! A partition's log: its segments, offsets, durability state and retention.
//!
//! Directory layout (`<data_dir>/<topic>/<partition>/`):
//!
//! ```text
//! 00000000000000000000.log        segments, see crate::segment
//! 00000000000000000000.index
//! 00000000000000000000.timeindex
//! 00000000000000000000.txnindex   aborted transactions whose marker is in that segment,
//!                                 see crate::segment::txn_index
//! 00000000000000000000.snapshot   idempotent-producer state as of that offset, see
//!                                 crate::producer_state (at each roll and clean close)
//! log-start-offset                decimal text, written atomically (delete-records, retention)
//! leader-epoch-checkpoint         each leader epoch and its start offset, see crate::leader_epoch
//! high-watermark-checkpoint       decimal text, written atomically; present only in replicated mode
//! clean-shutdown                  present only between a clean close and the next open
//! cleaner-offset-checkpoint       decimal text: where the log cleaner's last pass stopped
//! *.cleaned, *.swap, *.deleted    a log-cleaner swap in progress, see crate::cleaner::swap
//! ```
//!
//! Crash story: first, a log-cleaner swap a crash interrupted is finished or rolled
//! back ([`crate::cleaner::swap`]). On open without `clean-shutdown`, the active (last) segment is
//! recovered (validated, torn tail truncated, indexes rebuilt); sealed segments were
//! synced before the next one was created. The marker is removed, and its removal
//! synced, before the log accepts an append. If `log-start-offset` is past the
//! recovered end (records deleted, then lost in a crash), the log restarts empty at
//! the log start offset, so an offset is never handed out twice. The idempotent
//! producers' state is then rebuilt from the newest usable snapshot at or below the
//! recovered end and the batch headers after it (its own crash story is in
//! [`crate::producer_state`]); a log that restarts empty forgets every producer. That
//! replay also rebuilds the aborted-transaction index of every segment it covers
//! (the active one after a crash among them), and it starts early enough to cover a
//! segment whose `.txnindex` is missing or fails its sanity check (see
//! [`crate::segment::txn_index`]). Last,
//! the leader-epoch history is loaded from its checkpoint, cut to the recovered log,
//! checked against the batch headers, and rebuilt from them if it does not match (its
//! own crash story is in [`crate::leader_epoch`]).
//!
//! Damage story: every other segment (all of them after a clean shutdown) is verified
//! at open without being changed, and so are the joins between segments (each one
//! starts where the previous one ends) and `log-start-offset`. Anything wrong there
//! cannot be a torn write, so it is damage: [`PartitionLog::open`] fails with
//! [`EngineError::Corrupt`] (file, byte, offset, what is wrong) before it has
//! changed a byte of any `.log`, of the damaged segment's indexes, or of the marker
//! and snapshots (an intact earlier segment whose index disagreed with its `.log` may
//! have had it rebuilt: indexes are derived data), and the caller takes this
//! partition alone offline. Truncating fsynced, acknowledged records is left to
//! [`PartitionLog::repair`], which runs only when asked (`corelog repair
//! --truncate-at-corruption`). Reads that meet bytes which changed under a running
//! log fail with [`EngineError::Corrupt`] (logged once).
//!
//! Replicated mode ([`PartitionLog::set_replicated`]) is kept by the presence of
//! `high-watermark-checkpoint` (Kafka's `replication-offset-checkpoint`, one file per
//! partition here so that no shard waits on another), which holds the high watermark
//! the broker last set: written when the mode is switched on, every
//! [`HIGH_WATERMARK_CHECKPOINT_INTERVAL_MS`] at housekeeping if it moved, at once when
//! a truncation lowers it below the file's value, and at a clean close; removed when
//! the mode is switched off. An open that finds it comes up in replicated mode with
//! the high watermark at the file's value, cut to the recovered log end (never past
//! what is on disk), so a restarted replica shows consumers nothing it had not
//! shown before. Limits: a high watermark the broker lowered (without a truncation)
//! since the last write comes back at the older, higher value after a crash, as in
//! Kafka; an unreadable file brings the high watermark back at the log start.
//!
//! A failed sync poisons the log: every later append or sync fails with
//! [`EngineError::Poisoned`]; reads keep working. Only a restart, which recovers
//! from what is on disk, clears it.
//!
//! Syncs come in two forms: [`PartitionLog::sync`] holds the log until the fdatasync
//! completes; [`PartitionLog::start_sync`] flushes, then hands back the fdatasync as
//! a future that does not borrow the log, so appends can go on while it is in flight
//! (the partition actor's pipelined group commit), and [`PartitionLog::finish_sync`]
//! takes its outcome. The durable offset only ever moves to the end a sync captured
//! before its fdatasync was issued.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use crate::batch::{self, BatchHeader, TxnMarker};
use crate::config::{Clock, TopicConfig};
use crate::error::{EngineError, Result};
use crate::leader_epoch::{EpochEndOffset, LeaderEpochCache, LEADER_EPOCH_CHECKPOINT_FILE};
use crate::producer_state::{Admission, ProducerStateManager, SnapshotFiles, StoredBatch};
use crate::segment::txn_index::AbortedTxn;
use crate::segment::{parse_segment_file_name, segment_file_name, LogSegment, OpenMode, RecoveryReport, SegmentRead};
use crate::storage::{FileRole, Storage, StorageFile};
use crate::types::{LeaderEpoch, Offset, ProducerEpoch, ProducerId, TimestampMs, TopicPartition};

const LOG_START_OFFSET_FILE: &str = "log-start-offset";
const HIGH_WATERMARK_FILE: &str = "high-watermark-checkpoint";

/// How often, at most, housekeeping rewrites a moved high watermark in replicated mode
/// (Kafka's `replica.high.watermark.checkpoint.interval.ms` default).
pub const HIGH_WATERMARK_CHECKPOINT_INTERVAL_MS: i64 = 5_000;
const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub batch_count: usize,
    /// The broker's clock at append (Kafka's `log_append_time_ms`).
    pub log_append_time: TimestampMs,
    /// The record set was a retry of an idempotent batch already in the log: nothing
    /// was written, and the offsets (and time) are the original batch's, with
    /// `batch_count` 1. The broker answers it like a fresh append (Kafka answers
    /// NONE with the original offsets). See [`crate::producer_state`].
    pub duplicate: bool,
    /// The log end this replica vouched for when the append was answered: every
    /// offset below it was written out of the process (under `fsync: always`,
    /// synced), so a leader can count itself in the in-sync replicas up to here
    /// ([`PartitionLog::local_end_offset`] at that moment).
    pub log_end_offset: Offset,
}

/// Result of a read: whole batches, and the log's offsets at the time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadResult {
    pub bytes: Vec<u8>,
    /// Offset to fetch next (equal to the requested offset if nothing was read).
    pub next_offset: Offset,
    pub log_start_offset: Offset,
    pub log_end_offset: Offset,
    pub high_watermark: Offset,
    /// [`PartitionLog::last_stable_offset`] at the time.
    pub last_stable_offset: Offset,
    /// For a committed read ([`PartitionLog::read_committed`]): the aborted
    /// transactions overlapping the offsets read, for the consumer to drop; else empty.
    pub aborted_transactions: Vec<AbortedTxn>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionStats {
    pub log_start_offset: Offset,
    pub log_end_offset: Offset,
    pub high_watermark: Offset,
    /// Consumers reading committed data stop here ([`PartitionLog::last_stable_offset`]).
    pub last_stable_offset: Offset,
    /// Offsets below this are synced to disk.
    pub durable_offset: Offset,
    /// Offsets below this are written to the segment files (they survive a crash of
    /// the process, not of the machine).
    pub written_offset: Offset,
    pub size_bytes: u64,
    pub segment_count: usize,
    pub poisoned: Option<String>,
    /// Whether the broker moves the high watermark (replicated mode).
    pub replicated: bool,
    /// Each leader epoch of the log and its start offset (OffsetForLeaderEpoch:
    /// [`LeaderEpochCache::end_offset_for`] with `log_end_offset`).
    pub leader_epochs: LeaderEpochCache,
    /// What the log cleaner did to this log since it was opened.
    pub cleaner: crate::cleaner::CleanerStats,
}

/// A sync started by [`PartitionLog::start_sync`] and not yet finished.
pub struct StartedSync {
    /// Offsets below this are durable once `fdatasync` completes with `Ok`.
    end: Offset,
    /// [`PartitionLog`]'s truncation count at the start: no truncation may happen
    /// while a sync is in flight (it would change the bytes the sync covers).
    truncations: u64,
    /// The fdatasync of the active segment; it borrows nothing of the log.
    pub fdatasync: Pin<Box<dyn Future<Output = Result<()>>>>,
}

impl StartedSync {
    pub fn end(&self) -> Offset {
        self.end
    }
}

/// Which end of the log, or which timestamp, [`PartitionLog::list_offset`] looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    Earliest,
    Latest,
    /// The last stable offset: latest for a consumer reading committed data.
    LastStable,
    /// The first record (in offset order, at or past the log start offset) whose
    /// timestamp is at least this, and its timestamp: Kafka's lookup by timestamp.
    Timestamp(TimestampMs, Isolation),
    /// The first record holding the largest timestamp of the log, and that timestamp:
    /// Kafka's MAX_TIMESTAMP (ListOffsets v7+).
    MaxTimestamp(Isolation),
}

/// Which records a lookup by time may answer, as Kafka bounds it by the
/// `isolation_level` of the request (`Partition.fetchOffsetForTimestamp`'s last
/// fetchable offset): a record found at or past the bound gives no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Below the high watermark.
    ReadUncommitted,
    /// Below the last stable offset.
    ReadCommitted,
}

pub struct PartitionLog<S: Storage> {
    partition: TopicPartition,
    storage: S,
    dir: PathBuf,
    config: TopicConfig,
    clock: Arc<dyn Clock>,
    /// Keyed by base offset; never empty; the last one is active.
    segments: BTreeMap<Offset, LogSegment<S>>,
    log_start_offset: Offset,
    high_watermark: Offset,
    durable_offset: Offset,
    /// Offsets below this are written to the segment files (handed to the kernel or
    /// the device, out of this process's memory): a crash of the process cannot take
    /// them away, only one of the machine. `durable_offset <= written_offset <= end`.
    written_offset: Offset,
    poisoned: Option<String>,
    /// Truncations so far (truncate_to, restart_at); see [`StartedSync`].
    truncations: u64,
    /// Idempotent producers' epochs and last batches, as of the log end.
    producer_state: ProducerStateManager,
    /// The producer-state snapshot files in `dir`.
    snapshots: SnapshotFiles,
    /// Each leader epoch and where it starts, as of the log end; on disk in
    /// `leader-epoch-checkpoint` (see [`crate::leader_epoch`]).
    leader_epochs: LeaderEpochCache,
    /// Whether a read has met damaged bytes and said so in the log (once per open).
    damage_logged: Cell<bool>,
    /// Replicated mode: the high watermark is the broker's to move
    /// ([`PartitionLog::update_high_watermark`]), not the log's own.
    replicated: bool,
    /// In replicated mode, the high watermark `high-watermark-checkpoint` holds (if it
    /// could be read) and when it was written (or the log opened, which counts as
    /// written for the periodic rewrite).
    checkpointed_high_watermark: Option<Offset>,
    high_watermark_checkpointed_at: TimestampMs,
    /// Where the log cleaner's next pass starts (`cleaner-offset-checkpoint`, read
    /// at open, written after each pass, cut by truncation).
    cleaner_checkpoint: Option<Offset>,
    /// What the log cleaner did to this log since it was opened.
    cleaner_stats: crate::cleaner::CleanerStats,
}

/// What [`PartitionLog::repair`] found, and removed or would remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// The damage found, as [`EngineError::Corrupt`] words it; empty: none.
    pub damage: Vec<String>,
    /// Where the log ends once repaired: every record from this offset on goes.
    pub truncated_at: Option<Offset>,
    /// Bytes of `.log` files cut or removed.
    pub log_bytes_removed: u64,
    /// Files removed whole: later segments' `.log` and indexes, a damaged
    /// `log-start-offset`.
    pub files_removed: Vec<PathBuf>,
    /// Whether the repair was carried out (consent given) or only described.
    pub applied: bool,
}

/// Opens the segments starting at `base_offsets`, in order, each checked to join
/// the previous one. Every check that can find damage runs before any `.log` is
/// written: the active segment's recovery (after an unclean shutdown), the only
/// writer of one here, comes last.
async fn open_segments<S: Storage>(
    storage: &S,
    dir: &Path,
    base_offsets: &[Offset],
    config: &TopicConfig,
    now: TimestampMs,
    clean: bool,
) -> Result<(BTreeMap<Offset, LogSegment<S>>, RecoveryReport)> {
    let mut segments: BTreeMap<Offset, LogSegment<S>> = BTreeMap::new();
    let mut report = RecoveryReport::default();
    for (i, base_offset) in base_offsets.iter().enumerate() {
        if let Some(previous) = segments.values().next_back() {
            check_join(previous, *base_offset)?;
        }
        let active = i + 1 == base_offsets.len();
        let mode = if active && !clean { OpenMode::RecoverTail } else { OpenMode::Verify };
        let interval = config.index_interval_bytes;
        let (segment, segment_report) = match active {
            true => LogSegment::open_active(storage, dir, *base_offset, interval, now, mode).await?,
            false => LogSegment::open(storage, dir, *base_offset, interval, now, mode).await?,
        };
        if segment_report.indexes_rebuilt {
            report.indexes_rebuilt = true;
        }
        if mode == OpenMode::RecoverTail {
            report.batches_valid += segment_report.batches_valid;
            report.bytes_truncated += segment_report.bytes_truncated;
        }
        segments.insert(*base_offset, segment);
    }
    Ok((segments, report))
}

impl<S: Storage> PartitionLog<S> {
    /// Opens (creating if needed) the log in `dir`, recovering after a crash.
    pub async fn open(
        storage: S,
        dir: &Path,
        partition: TopicPartition,
        config: TopicConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<(PartitionLog<S>, RecoveryReport)> {
        storage.create_dir_all(dir).await?;
        let mut names = storage.list_dir(dir).await?;
        if crate::cleaner::swap::recover_swaps(&storage, dir, &names, config.index_interval_bytes).await? {
            names = storage.list_dir(dir).await?;
        }
        let clean = names.iter().any(|n| n == CLEAN_SHUTDOWN_FILE);
        let base_offsets: Vec<Offset> = names.iter().filter_map(|n| parse_segment_file_name(n)).collect();
        let checkpoint = read_offset_file(&storage, &dir.join(LOG_START_OFFSET_FILE)).await?;
        let now = clock.now_ms();

        let (segments, report) = open_segments(&storage, dir, &base_offsets, &config, now, clean).await?;
        let mut log = PartitionLog {
            producer_state: ProducerStateManager::new(partition.clone()),
            snapshots: SnapshotFiles::from_names(dir, &names),
            leader_epochs: LeaderEpochCache::new(),
            partition,
            storage,
            dir: dir.to_path_buf(),
            config,
            clock,
            segments,
            log_start_offset: Offset(0),
            high_watermark: Offset(0),
            durable_offset: Offset(0),
            written_offset: Offset(0),
            poisoned: None,
            truncations: 0,
            damage_logged: Cell::new(false),
            replicated: false,
            checkpointed_high_watermark: None,
            high_watermark_checkpointed_at: now,
            cleaner_checkpoint: None,
            cleaner_stats: crate::cleaner::CleanerStats::default(),
        };
        let cleaner_checkpoint = dir.join(crate::cleaner::CLEANER_CHECKPOINT_FILE);
        log.cleaner_checkpoint = match read_offset_file(&log.storage, &cleaner_checkpoint).await {
            Ok(checkpoint) => checkpoint,
            Err(error) => {
                // Only where the next pass starts: the log start, a full pass, will do.
                tracing::warn!("{}: {error}; the cleaner starts over from the log start", log.partition);
                None
            }
        };
        let first_base = log.segments.keys().next().copied();
        log.log_start_offset = match (checkpoint, first_base) {
            (Some(checkpoint), Some(first)) => checkpoint.max(first),
            (Some(checkpoint), None) => checkpoint,
            (None, first) => first.unwrap_or(Offset(0)),
        };
        // Records deleted (delete-records, retention, a full truncation), then brought
        // back by a crash that undid their segments' deletion but not the checkpoint
        // written before it: the log restarts empty at the log start, so no offset
        // below it is handed out again (`truncate_fully_and_start_at` relies on it).
        if log.segments.is_empty() || log.log_start_offset > log.log_end_offset() {
            log.restart_at(log.log_start_offset).await?;
        }
        log.load_producer_state().await?;
        log.load_leader_epochs().await?;
        log.durable_offset = log.log_end_offset();
        log.written_offset = log.log_end_offset();
        log.high_watermark = log.log_end_offset();
        if names.iter().any(|n| n == HIGH_WATERMARK_FILE) {
            log.restore_replicated_high_watermark().await;
        }
        if clean {
            log.storage.remove_file(&log.dir.join(CLEAN_SHUTDOWN_FILE)).await?;
            log.storage.sync_dir(&log.dir).await?;
        }
        Ok((log, report))
    }

    /// A replicated partition (its high-watermark checkpoint exists) restarts at the
    /// checkpointed high watermark, cut to the recovered log.
    async fn restore_replicated_high_watermark(&mut self) {
        self.replicated = true;
        self.checkpointed_high_watermark =
            match read_offset_file(&self.storage, &self.dir.join(HIGH_WATERMARK_FILE)).await {
                Ok(checkpoint) => checkpoint,
                Err(error) => {
                    tracing::warn!("{}: {error}; the high watermark restarts at the log start", self.partition);
                    None
                }
            };
        let restored = self.checkpointed_high_watermark.unwrap_or(self.log_start_offset);
        self.set_high_watermark(restored);
    }

    /// Finds the first damage of the log in `dir` (what makes [`PartitionLog::open`]
    /// fail with [`EngineError::Corrupt`]) and, when `truncate`, cuts the log right
    /// before it: the damaged segment is truncated at the first bad byte (its
    /// indexes rebuilt, synced), every later segment is removed, and a damaged
    /// `log-start-offset` is removed (the log start falls back to the first
    /// segment). Every record from the damage on is lost, acknowledged or not: that
    /// is why it runs only with consent. Without `truncate` it writes nothing and
    /// reports what it would remove. The log must not be open anywhere (the broker
    /// stopped). Producer-state snapshots past the new end are removed by the next
    /// open, as after any truncation.
    pub async fn repair(
        storage: S,
        dir: &Path,
        index_interval_bytes: u32,
        now: TimestampMs,
        truncate: bool,
    ) -> Result<RepairReport> {
        let names = storage.list_dir(dir).await?;
        let base_offsets: Vec<Offset> = names.iter().filter_map(|n| parse_segment_file_name(n)).collect();
        let mut report = RepairReport { applied: truncate, ..RepairReport::default() };
        let offset_file = dir.join(LOG_START_OFFSET_FILE);
        if let Err(error @ EngineError::Corrupt { .. }) = read_offset_file(&storage, &offset_file).await {
            report.damage.push(error.to_string());
            report.files_removed.push(offset_file.clone());
            if truncate {
                storage.remove_file(&offset_file).await?;
            }
        }
        // The first segment (index into `base_offsets`) that loses anything, and the
        // byte it is cut at, if it keeps its file: a damaged segment keeps its
        // valid prefix, even an empty one, so its base offset, and with it every
        // offset below, is never handed out again. Every later segment goes whole.
        let mut cut: Option<(usize, Option<u64>)> = None;
        let mut previous_end: Option<Offset> = None;
        for (i, base_offset) in base_offsets.iter().enumerate() {
            if let Some(end) = previous_end.filter(|end| end != base_offset) {
                let path = dir.join(segment_file_name(base_offsets[i - 1], "log"));
                report.damage.push(join_damage(&path, end, *base_offset).to_string());
                report.truncated_at = Some(end);
                cut = Some((i, None));
                break;
            }
            match LogSegment::open(&storage, dir, *base_offset, index_interval_bytes, now, OpenMode::Inspect).await {
                Ok((segment, _)) => previous_end = Some(segment.next_offset()),
                Err(EngineError::Corrupt { path, position, offset, reason }) => {
                    report.truncated_at = offset;
                    cut = Some((i, Some(position)));
                    report.damage.push(EngineError::Corrupt { path, position, offset, reason }.to_string());
                    break;
                }
                Err(error) => return Err(error),
            }
        }
        let Some((first_cut, cut_at)) = cut else {
            if truncate && !report.files_removed.is_empty() {
                storage.sync_dir(dir).await?;
            }
            return Ok(report);
        };
        for (i, base_offset) in base_offsets.iter().enumerate().skip(first_cut) {
            let log_path = dir.join(segment_file_name(*base_offset, "log"));
            let log_len = storage.open(&log_path, false, FileRole::Log).await?.len();
            if let Some(position) = cut_at.filter(|_| i == first_cut) {
                // Recovery cuts exactly at the first damage, as it cuts a torn tail.
                report.log_bytes_removed += log_len - position;
                if truncate {
                    let (segment, _) =
                        LogSegment::open(&storage, dir, *base_offset, index_interval_bytes, now, OpenMode::RecoverTail)
                            .await?;
                    segment.close().await?;
                }
                continue;
            }
            report.log_bytes_removed += log_len;
            for extension in ["log", "index", "timeindex"] {
                let name = segment_file_name(*base_offset, extension);
                if names.contains(&name) {
                    let path = dir.join(&name);
                    if truncate {
                        storage.remove_file(&path).await?;
                    }
                    report.files_removed.push(path);
                }
            }
        }
        if truncate {
            storage.sync_dir(dir).await?;
        }
        Ok(report)
    }

    /// Drops every segment and starts an empty one at `offset`. The producer state
    /// and its snapshots go with the batches (Kafka's `truncateFullyAndStartAt`).
    async fn restart_at(&mut self, offset: Offset) -> Result<()> {
        self.truncations += 1;
        self.producer_state.clear();
        self.snapshots.remove_where(&self.storage, |_| true).await?;
        // The epochs go too, checkpoint first: no batch is left for them to describe.
        let cleared = self.leader_epochs.clear();
        if cleared || self.storage.exists(&self.dir.join(LEADER_EPOCH_CHECKPOINT_FILE)).await? {
            self.write_leader_epochs(&LeaderEpochCache::new()).await?;
        }
        for (_, segment) in std::mem::take(&mut self.segments) {
            segment.delete(&self.storage).await?;
        }
        let segment =
            LogSegment::create(&self.storage, &self.dir, offset, self.config.index_interval_bytes, self.clock.now_ms())
                .await?;
        self.segments.insert(offset, segment);
        Ok(())
    }

    /// Rebuilds the producer state: the newest usable snapshot at or below the log
    /// end, then the batch headers from its offset (or from the first segment) to the
    /// end. Deletes, durably, the snapshots that cannot serve: above the end, below
    /// the first segment, damaged, or strays that are neither a segment's base nor
    /// the one loaded (an older clean close's). See [`crate::producer_state`].
    ///
    /// The scan also rebuilds the aborted-transaction indexes of the segments it
    /// covers from its offset on; a segment whose index was missing or damaged makes
    /// it start at a snapshot at or below that segment's base (see
    /// [`crate::segment::txn_index`]).
    async fn load_producer_state(&mut self) -> Result<()> {
        let end = self.log_end_offset();
        let first_base = self.segments.keys().next().copied().expect("a log always has a segment");
        let count_before = self.snapshots.offsets().count();
        self.snapshots.remove_where(&self.storage, |offset| offset > end || offset < first_base).await?;
        let untrusted = self.segments.values().find(|s| s.txn_index_untrusted()).map(|s| s.base_offset());
        let at_most = untrusted.map_or(end, |base| base.min(end));
        let loaded = self.snapshots.load_newest(&self.storage, &self.partition, at_most).await?;
        let (loaded_offset, mut state) = match loaded {
            Some((offset, state)) => (Some(offset), state),
            None => (None, ProducerStateManager::new(self.partition.clone())),
        };
        let scan_from = loaded_offset.unwrap_or(first_base);
        for segment in self.segments.values_mut().filter(|s| s.next_offset() > scan_from || s.txn_index_untrusted()) {
            let from = scan_from.max(segment.base_offset());
            let mut aborted = Vec::new();
            segment
                .scan_headers(from, |header, marker| aborted.extend(state.replay(StoredBatch { header, marker })))
                .await?;
            if segment.rebuild_txn_index_from(from, aborted).await? {
                tracing::info!(
                    "{}: rebuilt the aborted-transaction index of segment {}",
                    self.partition,
                    segment.base_offset()
                );
            }
        }
        state.forget_replicated(self.high_watermark);
        let segments = &self.segments;
        self.snapshots
            .remove_where(&self.storage, |offset| !segments.contains_key(&offset) && Some(offset) != loaded_offset)
            .await?;
        if self.snapshots.offsets().count() != count_before {
            self.storage.sync_dir(&self.dir).await?;
        }
        self.producer_state = state;
        Ok(())
    }

    /// Loads the leader-epoch history from its checkpoint, cut to the log's two ends,
    /// and checks it against the batch headers; rebuilds it from them if the file is
    /// missing, unreadable or does not match (see [`crate::leader_epoch`]). Rewrites
    /// the file if what was loaded differs from it.
    async fn load_leader_epochs(&mut self) -> Result<()> {
        let path = self.dir.join(LEADER_EPOCH_CHECKPOINT_FILE);
        let stored = self.storage.read_file(&path).await?.map(|bytes| LeaderEpochCache::decode_checkpoint(&bytes));
        let mut checked = match &stored {
            Some(Ok(stored)) => {
                let mut epochs = stored.clone();
                self.cut_to_log(&mut epochs);
                match self.mismatch(&epochs).await? {
                    None => Ok(epochs),
                    Some(reason) => Err(reason),
                }
            }
            Some(Err(reason)) => Err(format!("it cannot be read: {reason}")),
            None => Err("it is missing".to_string()),
        };
        if stored.is_none() && self.log_end_offset() == self.log_start_offset {
            checked = Ok(LeaderEpochCache::new());
        }
        let epochs = match checked {
            Ok(epochs) => epochs,
            Err(reason) => {
                tracing::warn!(
                    "{}: {}: {reason}; rebuilding the leader epochs from the batch headers",
                    self.partition,
                    path.display()
                );
                self.rebuild_leader_epochs().await?
            }
        };
        let unchanged = match &stored {
            Some(Ok(stored)) => *stored == epochs,
            _ => epochs.is_empty() && stored.is_none(),
        };
        if !unchanged {
            self.write_leader_epochs(&epochs).await?;
        }
        self.leader_epochs = epochs;
        Ok(())
    }

    /// What is wrong with `epochs` (already cut to the log's two ends) as a history of
    /// this log, if anything: each epoch starting below the log end must start a batch
    /// of that epoch (or hold the log start), the log start must have an epoch if the
    /// log holds records, and the last batch must be of the latest epoch below it.
    async fn mismatch(&self, epochs: &LeaderEpochCache) -> Result<Option<String>> {
        let (start, end) = (self.log_start_offset, self.log_end_offset());
        if start == end {
            return Ok(None);
        }
        if epochs.entries().first().is_none_or(|first| first.start_offset > start) {
            return Ok(Some(format!("no epoch holds the log start offset {start}")));
        }
        for entry in epochs.entries().iter().filter(|e| e.start_offset < end) {
            let Some(header) = self.batch_header(entry.start_offset).await? else {
                return Ok(Some(format!("no batch holds offset {}", entry.start_offset)));
            };
            let starts_there = header.base_offset == entry.start_offset || entry.start_offset == start;
            // The log cleaner may have removed the batches an epoch starts with: the
            // first one left after the gap is of that epoch or a later one.
            let compacted_away = header.base_offset > entry.start_offset && header.leader_epoch >= entry.epoch;
            if !compacted_away && (!starts_there || header.leader_epoch != entry.epoch) {
                return Ok(Some(format!(
                    "epoch {} starts at {}, where the batch at {} is of epoch {}",
                    entry.epoch, entry.start_offset, header.base_offset, header.leader_epoch
                )));
            }
        }
        let Some(last) = self.batch_header(Offset(end.0 - 1)).await? else {
            return Ok(Some(format!("no batch holds offset {}", end.0 - 1)));
        };
        let expected = epochs.epoch_at(last.base_offset.max(start));
        if expected != Some(last.leader_epoch) {
            return Ok(Some(format!(
                "the last batch, at {}, is of epoch {}, not {expected:?}",
                last.base_offset, last.leader_epoch
            )));
        }
        Ok(None)
    }

    /// The leader-epoch history the batch headers give (every segment scanned).
    async fn rebuild_leader_epochs(&self) -> Result<LeaderEpochCache> {
        let mut epochs = LeaderEpochCache::new();
        for segment in self.segments.values() {
            segment
                .scan_headers(segment.base_offset(), |header, _| {
                    if header.leader_epoch.0 >= 0 {
                        epochs.assign(header.leader_epoch, header.base_offset);
                    }
                })
                .await?;
        }
        self.cut_to_log(&mut epochs);
        Ok(epochs)
    }

    /// Cuts a loaded leader-epoch history to the log's two ends, start first: an epoch
    /// that starts at or past the log end (even one the log start was moved up to)
    /// describes no batch, and goes, as Kafka's load cuts it.
    fn cut_to_log(&self, epochs: &mut LeaderEpochCache) {
        epochs.truncate_from_start(self.log_start_offset);
        epochs.truncate_from_end(self.log_end_offset());
    }

    /// Replaces the leader-epoch checkpoint with `epochs`, durably.
    async fn write_leader_epochs(&self, epochs: &LeaderEpochCache) -> Result<()> {
        let path = self.dir.join(LEADER_EPOCH_CHECKPOINT_FILE);
        self.storage.write_file_atomic(&path, &epochs.encode_checkpoint()).await
    }

    /// Makes `epoch` the latest leader epoch from `start_offset` on, checkpoint first
    /// (see [`crate::leader_epoch`]'s crash story); on failure nothing changes.
    /// Returns the history as it was, for an append whose write fails to put back.
    async fn assign_leader_epoch_at(&mut self, epoch: LeaderEpoch, start_offset: Offset) -> Result<LeaderEpochCache> {
        let previous = self.leader_epochs.clone();
        let mut epochs = previous.clone();
        if epochs.assign(epoch, start_offset) {
            self.write_leader_epochs(&epochs).await?;
            self.leader_epochs = epochs;
        }
        Ok(previous)
    }

    /// The leader epochs of the log and where each starts.
    pub fn leader_epochs(&self) -> &LeaderEpochCache {
        &self.leader_epochs
    }

    /// Where leader epoch `requested` ends in this log (OffsetForLeaderEpoch; Kafka's
    /// semantics, see [`LeaderEpochCache::end_offset_for`]).
    pub fn end_offset_for_leader_epoch(&self, requested: LeaderEpoch) -> EpochEndOffset {
        self.leader_epochs.end_offset_for(requested, self.log_end_offset())
    }

    /// `Err(InvalidLeaderEpoch)` if `epoch` is negative.
    fn check_leader_epoch(&self, epoch: LeaderEpoch) -> Result<()> {
        if epoch.0 < 0 {
            return Err(EngineError::InvalidLeaderEpoch { partition: self.partition.clone(), epoch });
        }
        Ok(())
    }

    fn active(&self) -> &LogSegment<S> {
        self.segments.values().next_back().expect("a log always has a segment")
    }

    fn active_mut(&mut self) -> &mut LogSegment<S> {
        self.segments.values_mut().next_back().expect("a log always has a segment")
    }

    /// Logs, once per open, that a read met damaged bytes: they changed under the
    /// running log (open verified them). The reads that reach them fail; the next
    /// start takes the partition offline.
    fn note_damage(&self, error: &EngineError) {
        if matches!(error, EngineError::Corrupt { .. }) && !self.damage_logged.replace(true) {
            tracing::error!(
                "{}: a read met damaged bytes: {error}; reads that reach them fail with KAFKA_STORAGE_ERROR, and the \
                 next start takes the partition offline",
                self.partition
            );
        }
    }

    /// The segments, by base offset; the last is active (the log cleaner reads them).
    pub(crate) fn segments(&self) -> &BTreeMap<Offset, LogSegment<S>> {
        &self.segments
    }

    /// The log cleaner's way to swap segments ([`crate::cleaner`]).
    pub(crate) fn segments_mut(&mut self) -> &mut BTreeMap<Offset, LogSegment<S>> {
        &mut self.segments
    }

    pub(crate) fn storage(&self) -> &S {
        &self.storage
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Truncations so far: a cleaner pass that saw another count is abandoned.
    pub(crate) fn truncation_count(&self) -> u64 {
        self.truncations
    }

    pub(crate) fn cleaner_checkpoint_value(&self) -> Option<Offset> {
        self.cleaner_checkpoint
    }

    pub(crate) fn cleaner_checkpoint_mut(&mut self) -> &mut Option<Offset> {
        &mut self.cleaner_checkpoint
    }

    pub(crate) fn cleaner_stats_mut(&mut self) -> &mut crate::cleaner::CleanerStats {
        &mut self.cleaner_stats
    }

    pub(crate) fn clock_now(&self) -> TimestampMs {
        self.clock.now_ms()
    }

    pub fn partition(&self) -> &TopicPartition {
        &self.partition
    }

    pub fn config(&self) -> &TopicConfig {
        &self.config
    }

    /// Changes the topic config; takes effect at the next append or housekeeping.
    pub fn set_config(&mut self, config: TopicConfig) {
        self.config = config;
    }

    pub fn log_start_offset(&self) -> Offset {
        self.log_start_offset
    }

    pub fn log_end_offset(&self) -> Offset {
        self.segments.values().next_back().map_or(self.log_start_offset, |s| s.next_offset())
    }

    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }

    /// Offsets below this have been synced.
    pub fn durable_offset(&self) -> Offset {
        self.durable_offset
    }

    /// Offsets below this survive a crash of the process (not of the machine): their
    /// bytes are out of the write buffer and in the file.
    pub fn written_offset(&self) -> Offset {
        self.written_offset
    }

    /// Sets the high watermark, clamped to the log's two ends, whatever the mode (the
    /// partition actor and tests; the broker's way is
    /// [`PartitionLog::update_high_watermark`]).
    pub fn set_high_watermark(&mut self, offset: Offset) {
        self.high_watermark = offset.min(self.log_end_offset()).max(self.log_start_offset);
    }

    /// Outside replicated mode, raises the high watermark to `offset` (the partition
    /// actor's move as appends become written or durable); in replicated mode it does
    /// nothing: the broker moves it.
    pub fn advance_high_watermark(&mut self, offset: Offset) {
        if !self.replicated && offset > self.high_watermark {
            self.set_high_watermark(offset);
        }
    }

    /// The log end this replica vouches for: written out of the process, and under
    /// `fsync: always` synced. What a leader counts for itself among the in-sync
    /// replicas, and what the high watermark never passes.
    pub fn local_end_offset(&self) -> Offset {
        match self.config.durability {
            crate::config::Durability::Always => self.durable_offset,
            _ => self.written_offset,
        }
    }

    pub fn is_replicated(&self) -> bool {
        self.replicated
    }

    /// Switches replicated mode, durably (see the module doc: the mode lives in the
    /// high-watermark checkpoint, written here with the current high watermark, or
    /// removed). In it, the high watermark stays where the broker puts it
    /// ([`PartitionLog::update_high_watermark`]); out of it, it follows the log again
    /// (the caller raises it: [`PartitionLog::advance_high_watermark`]).
    pub async fn set_replicated(&mut self, replicated: bool) -> Result<()> {
        if replicated == self.replicated {
            return Ok(());
        }
        if replicated {
            self.replicated = true;
            if let Err(error) = self.checkpoint_high_watermark().await {
                self.replicated = false;
                return Err(error);
            }
        } else {
            let path = self.dir.join(HIGH_WATERMARK_FILE);
            if self.storage.exists(&path).await? {
                self.storage.remove_file(&path).await?;
                self.storage.sync_dir(&self.dir).await?;
            }
            self.replicated = false;
            self.checkpointed_high_watermark = None;
        }
        Ok(())
    }

    /// Writes the high watermark to its checkpoint, durably (replicated mode).
    async fn checkpoint_high_watermark(&mut self) -> Result<()> {
        assert!(self.replicated, "a high-watermark checkpoint outside replicated mode");
        let text = format!("{}\n", self.high_watermark.0);
        self.storage.write_file_atomic(&self.dir.join(HIGH_WATERMARK_FILE), text.as_bytes()).await?;
        self.checkpointed_high_watermark = Some(self.high_watermark);
        self.high_watermark_checkpointed_at = self.clock.now_ms();
        Ok(())
    }

    /// The high watermark the checkpoint holds, in replicated mode.
    pub fn checkpointed_high_watermark(&self) -> Option<Offset> {
        self.checkpointed_high_watermark
    }

    /// In replicated mode, the broker's move of the high watermark (the minimum log
    /// end of the in-sync replicas, on a leader; the leader's, on a follower): set to
    /// `offset`, but never past [`PartitionLog::local_end_offset`] nor below the log
    /// start. It may go down (a follower told so by a new leader). Returns the high
    /// watermark; [`EngineError::NotReplicated`] outside replicated mode.
    pub fn update_high_watermark(&mut self, offset: Offset) -> Result<Offset> {
        if !self.replicated {
            return Err(EngineError::NotReplicated { partition: self.partition.clone() });
        }
        self.high_watermark = offset.min(self.local_end_offset()).max(self.log_start_offset);
        Ok(self.high_watermark)
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// `Err(Poisoned)` once a sync has failed.
    pub fn check_writable(&self) -> Result<()> {
        match &self.poisoned {
            Some(cause) => Err(EngineError::Poisoned { partition: self.partition.clone(), cause: cause.clone() }),
            None => Ok(()),
        }
    }

    /// Validates and appends a record set (one or more batches back to back),
    /// stamping base offsets and the leader epoch. A malformed batch rejects the whole
    /// set and nothing is written. Not durable until [`PartitionLog::sync`].
    ///
    /// `leader_epoch` is the appending leader's (negative: it fails with
    /// [`EngineError::InvalidLeaderEpoch`]). Another than the log's latest starts a new
    /// entry of the history, checkpointed before the batch is written; one below the
    /// latest replaces the entries it contradicts, as Kafka's `assign` does (a stale
    /// leader is stopped by replication, which knows the current epoch, not here; a
    /// log whose latest epoch came from a bit flip in a batch's unprotected epoch
    /// field must keep taking appends).
    ///
    /// Idempotent batches (producer id >= 0) are checked against the producer state
    /// ([`crate::producer_state`]): a retry of one of a producer's last five batches
    /// writes nothing and returns the original's offsets with
    /// [`AppendInfo::duplicate`] set (not necessarily durable yet: the caller waits
    /// for the sync covering `last_offset` as for a fresh append); a fenced epoch or
    /// a sequence out of order fails with [`EngineError::InvalidProducerEpoch`] or
    /// [`EngineError::OutOfOrderSequence`] and writes nothing.
    ///
    /// A control batch is refused ([`EngineError::ControlBatchFromClient`]): markers
    /// are written by [`PartitionLog::append_txn_marker`] only.
    pub async fn append(&mut self, bytes: Vec<u8>, leader_epoch: LeaderEpoch) -> Result<AppendInfo> {
        let batches = batch::split_batches(&bytes)?;
        if batches.iter().any(|(_, header)| header.is_control()) {
            return Err(EngineError::ControlBatchFromClient { partition: self.partition.clone() });
        }
        if self.config.cleanup_policy.compact {
            self.check_keys(&bytes, &batches)?;
        }
        self.append_batches(bytes, batches, leader_epoch).await
    }

    /// Refuses a record without a key on a compacted topic, as Kafka's
    /// `LogValidator` does: the records are decoded (inflated if compressed, bounded
    /// by [`crate::cleaner::CleanerLimits`]'s default), the price compacted topics pay.
    fn check_keys(&self, bytes: &[u8], batches: &[(usize, BatchHeader)]) -> Result<()> {
        let inflated_bytes_max = crate::cleaner::CleanerLimits::default().inflated_batch_bytes_max;
        for (position, header) in batches {
            let whole = &bytes[*position..*position + header.size_bytes()];
            let records = crate::records::decode_records(whole, inflated_bytes_max)?;
            if let Some(keyless) = records.iter().find(|record| record.key.is_none()) {
                let offset_delta = keyless.offset.0 - header.base_offset.0;
                return Err(EngineError::RecordWithoutKey { partition: self.partition.clone(), offset_delta });
            }
        }
        Ok(())
    }

    /// Appends the marker that ends producer `producer_id`'s transaction in this
    /// partition (Kafka's WriteTxnMarkers on a leader: a control batch with one
    /// COMMIT or ABORT record), stamped with `leader_epoch` like a leader's append.
    /// The producer state completes the transaction; an abort gets its entry in the
    /// active segment's aborted-transaction index. A marker from an epoch older than
    /// the producer's is refused with [`EngineError::InvalidProducerEpoch`], nothing
    /// written. Not durable until [`PartitionLog::sync`].
    pub async fn append_txn_marker(
        &mut self,
        producer_id: ProducerId,
        producer_epoch: ProducerEpoch,
        marker: TxnMarker,
        leader_epoch: LeaderEpoch,
    ) -> Result<AppendInfo> {
        let bytes = batch::build_marker_batch(self.clock.now_ms(), producer_id, producer_epoch, marker);
        let batches = batch::split_batches(&bytes)?;
        self.append_batches(bytes, batches, leader_epoch).await
    }

    /// A leader's append of validated batches, control batches included.
    async fn append_batches(
        &mut self,
        mut bytes: Vec<u8>,
        mut batches: Vec<(usize, BatchHeader)>,
        leader_epoch: LeaderEpoch,
    ) -> Result<AppendInfo> {
        self.check_writable()?;
        if batches.is_empty() {
            return Err(batch::BatchError::TooShort { len_bytes: 0 }.into());
        }
        for (_, header) in &batches {
            let size_bytes = header.size_bytes();
            if size_bytes > self.config.max_message_bytes as usize {
                return Err(EngineError::BatchTooLarge {
                    size_bytes,
                    size_bytes_max: self.config.max_message_bytes as usize,
                });
            }
        }
        self.check_leader_epoch(leader_epoch)?;
        let base_offset = self.log_end_offset();
        let mut next = base_offset;
        for (position, header) in batches.iter_mut() {
            batch::stamp(&mut bytes[*position..], next, leader_epoch);
            header.base_offset = next;
            header.leader_epoch = leader_epoch;
            next = header.last_offset().next();
        }
        let last_offset = Offset(next.0 - 1);
        let now = self.clock.now_ms();
        let markers = txn_markers(&bytes, &batches);
        let stored = batches.iter().zip(&markers).map(|((_, header), marker)| StoredBatch { header, marker: *marker });
        let update = match self.producer_state.check(stored, now)? {
            Admission::Append(update) => update,
            Admission::Duplicate(original) => {
                return Ok(AppendInfo {
                    base_offset: original.base_offset,
                    last_offset: original.last_offset,
                    batch_count: 1,
                    log_append_time: original.log_append_time,
                    duplicate: true,
                    log_end_offset: self.local_end_offset(),
                });
            }
        };
        if self.should_roll(bytes.len() as u64, last_offset, now) {
            self.roll().await?;
        }
        let epochs_before = self.assign_leader_epoch_at(leader_epoch, base_offset).await?;
        if let Err(error) = self.active_mut().append(&bytes, &batches).await {
            // The checkpoint may name the new epoch already: harmless, the next open
            // cuts or rebuilds what no batch confirms.
            self.leader_epochs = epochs_before;
            return Err(error);
        }
        // Only now: a failed write (a full disk) leaves the producer state as it was.
        let aborted = self.producer_state.apply(update);
        self.index_aborted(aborted).await?;
        Ok(AppendInfo {
            base_offset,
            last_offset,
            batch_count: batches.len(),
            log_append_time: now,
            duplicate: false,
            log_end_offset: self.local_end_offset(),
        })
    }

    /// Appends batches replicated from the leader as they are: each carries its base
    /// offset and leader epoch already, and nothing is restamped. The first must start
    /// at the log end and each next one where the previous ended, else
    /// [`EngineError::UnexpectedAppendOffset`]; each is validated (length, magic,
    /// CRC32C), and one bad batch rejects the set with nothing written. The
    /// leader-epoch history takes each batch's epoch (checkpointed before the write, as
    /// for a leader append). The idempotent producers' state is updated from the
    /// headers without checks, as Kafka's `AppendOrigin.REPLICATION` does: the leader
    /// checked them, so there is no duplicate or sequence refusal here, but the state is
    /// kept, so that this replica, once leader, still answers a retry with the
    /// original's offsets. `max.message.bytes` is not applied: the leader accepted the
    /// batch, and a follower refusing it would stop replicating for good.
    /// Not durable until [`PartitionLog::sync`].
    pub async fn append_replicated(&mut self, bytes: Vec<u8>) -> Result<AppendInfo> {
        self.check_writable()?;
        let batches = batch::split_batches(&bytes)?;
        let Some((_, first)) = batches.first() else {
            return Err(batch::BatchError::TooShort { len_bytes: 0 }.into());
        };
        let base_offset = first.base_offset;
        let mut expected = self.log_end_offset();
        let mut epochs = self.leader_epochs.clone();
        for (_, header) in &batches {
            if header.base_offset != expected {
                return Err(EngineError::UnexpectedAppendOffset {
                    partition: self.partition.clone(),
                    base_offset: header.base_offset,
                    expected,
                });
            }
            self.check_leader_epoch(header.leader_epoch)?;
            epochs.assign(header.leader_epoch, header.base_offset);
            expected = header.last_offset().next();
        }
        let last_offset = Offset(expected.0 - 1);
        let now = self.clock.now_ms();
        if self.should_roll(bytes.len() as u64, last_offset, now) {
            self.roll().await?;
        }
        let epochs_before = self.leader_epochs.clone();
        if epochs != self.leader_epochs {
            self.write_leader_epochs(&epochs).await?;
            self.leader_epochs = epochs;
        }
        if let Err(error) = self.active_mut().append(&bytes, &batches).await {
            // As in `append`: the checkpoint may be ahead, which the next open mends.
            self.leader_epochs = epochs_before;
            return Err(error);
        }
        let markers = txn_markers(&bytes, &batches);
        let mut aborted = Vec::new();
        for ((_, header), marker) in batches.iter().zip(markers) {
            aborted.extend(self.producer_state.replay(StoredBatch { header, marker }));
        }
        self.index_aborted(aborted).await?;
        Ok(AppendInfo {
            base_offset,
            last_offset,
            batch_count: batches.len(),
            log_append_time: now,
            duplicate: false,
            log_end_offset: self.local_end_offset(),
        })
    }

    /// Puts the aborts of a written record set into the active segment's index (their
    /// markers are in it: a roll comes before the write), and lets the producer state
    /// forget the completed transactions the high watermark passed. An index that
    /// cannot be written poisons the log: the batches are written, and a consumer
    /// must not be shown aborted records as committed.
    async fn index_aborted(&mut self, aborted: Vec<AbortedTxn>) -> Result<()> {
        for entry in aborted {
            if let Err(error) = self.active_mut().append_aborted(entry).await {
                return Err(self.poison(error));
            }
        }
        self.producer_state.forget_replicated(self.high_watermark);
        Ok(())
    }

    /// Where consumers reading committed data stop (Kafka's `lastStableOffset`): the
    /// first unstable offset ([`ProducerStateManager::first_unstable_offset`]) if
    /// below the high watermark, else the high watermark; never below the log start.
    pub fn last_stable_offset(&self) -> Offset {
        let high_watermark = self.high_watermark;
        let first_unstable = self.producer_state.first_unstable_offset(high_watermark);
        first_unstable.map_or(high_watermark, |first| first.min(high_watermark)).max(self.log_start_offset)
    }

    /// The aborted transactions overlapping `[fetch_offset, upper_bound)` (Kafka's
    /// `collectAbortedTransactions`): the index entries from the segment holding
    /// `fetch_offset` on, until one's last stable offset reaches `upper_bound`.
    pub fn aborted_transactions(&self, fetch_offset: Offset, upper_bound: Offset) -> Vec<AbortedTxn> {
        let floor = self.segments.range(..=fetch_offset).next_back().map_or(Offset(i64::MIN), |(base, _)| *base);
        let mut aborted = Vec::new();
        for segment in self.segments.range(floor..).map(|(_, s)| s) {
            let collected = segment.collect_aborted(fetch_offset, upper_bound);
            aborted.extend(collected.aborted);
            if collected.complete {
                break;
            }
        }
        aborted
    }

    /// Makes `epoch` the latest leader epoch, starting at the log end, before anything
    /// is appended in it (Kafka's `assignEpochStartOffset`, when a replica becomes
    /// leader): OffsetForLeaderEpoch then tells a follower of an older epoch that it
    /// ends here. Durable when it returns. An epoch below the latest replaces the
    /// entries it contradicts, as [`LeaderEpochCache::assign`] says; a negative one
    /// fails with [`EngineError::InvalidLeaderEpoch`]. As in Kafka, an open forgets an
    /// epoch that no batch has started yet (it starts at the log end): a leader assigns
    /// its epoch again when it leads again.
    pub async fn assign_leader_epoch(&mut self, epoch: LeaderEpoch) -> Result<()> {
        self.check_writable()?;
        self.check_leader_epoch(epoch)?;
        self.assign_leader_epoch_at(epoch, self.log_end_offset()).await.map(|_| ())
    }

    fn should_roll(&self, incoming_bytes: u64, last_offset: Offset, now: TimestampMs) -> bool {
        let active = self.active();
        !active.is_empty()
            && (active.size_bytes() + incoming_bytes > self.config.segment_bytes
                || now.0 - active.created_at().0 >= self.config.segment_ms
                || !active.can_hold_offsets(last_offset))
    }

    /// Seals the active segment (syncing it) and starts a new one at the log end,
    /// then writes the producer-state snapshot at that offset, so that recovery only
    /// scans the new segment's headers. If the snapshot cannot be written the error is
    /// returned but the roll stands (the log is consistent; the next open scans more).
    pub async fn roll(&mut self) -> Result<()> {
        self.check_writable()?;
        let next = self.log_end_offset();
        if let Err(error) = self.active_mut().seal().await {
            // A full disk while writing the segment's buffers out leaves the bytes in
            // memory and the files as they were: the roll is retried by a later
            // append. Anything else, a failed fdatasync above all, poisons.
            return Err(if is_full_disk_write(&error) { error } else { self.poison(error) });
        }
        self.durable_offset = next;
        self.written_offset = next;
        let segment =
            LogSegment::create(&self.storage, &self.dir, next, self.config.index_interval_bytes, self.clock.now_ms())
                .await?;
        self.segments.insert(next, segment);
        // Everything below `next` is durable (sealed above): the snapshot's premise.
        self.snapshots.write(&self.storage, &self.producer_state, next).await
    }

    pub(crate) fn poison(&mut self, error: EngineError) -> EngineError {
        let cause = error.to_string();
        self.poisoned = Some(cause.clone());
        EngineError::Poisoned { partition: self.partition.clone(), cause }
    }

    /// Makes every append so far durable: writes the buffered appends out
    /// ([`PartitionLog::flush`], whose full disk fails without poisoning), then
    /// fdatasyncs the active segment; a failure there poisons the log.
    pub async fn sync(&mut self) -> Result<Offset> {
        self.check_writable()?;
        let end = self.log_end_offset();
        if self.durable_offset == end {
            return Ok(end);
        }
        self.flush().await?;
        match self.active_mut().sync().await {
            Ok(()) => {
                self.durable_offset = end;
                self.written_offset = end;
                Ok(end)
            }
            Err(error) => Err(self.poison(error)),
        }
    }

    /// Starts making every append so far durable without holding the log while the
    /// fdatasync is in flight: flushes the active segment's write buffer (awaited
    /// here), captures the log end, and returns the fdatasync as a future covering
    /// every byte flushed so far; appends made meanwhile are not covered. Drive it to
    /// completion and pass its outcome to [`PartitionLog::finish_sync`]; no truncation
    /// may happen in between (asserted there). `Ok(None)`: everything is durable
    /// already. Errors as [`PartitionLog::sync`]: a full disk while flushing does not
    /// poison, any other failure does.
    ///
    /// Only the active segment's `.log` needs the sync: sealed segments were synced
    /// when sealed, and a roll while this sync is in flight seals (syncs) the segment
    /// it covers.
    pub async fn start_sync(&mut self) -> Result<Option<StartedSync>> {
        self.check_writable()?;
        let end = self.log_end_offset();
        if self.durable_offset == end {
            return Ok(None);
        }
        self.flush().await?;
        let fdatasync = Box::pin(self.active().sync_detached());
        Ok(Some(StartedSync { end, truncations: self.truncations, fdatasync }))
    }

    /// Takes the outcome of a started sync's fdatasync: on success the durable offset
    /// advances to the sync's end (it never moves back: a later sync or a roll may
    /// have passed it) and is returned; a failure poisons the log. A success after the
    /// log was poisoned (by another sync in flight at the same time) counts for
    /// nothing: it returns the poisoning error.
    pub fn finish_sync(&mut self, started: &StartedSync, outcome: Result<()>) -> Result<Offset> {
        assert_eq!(started.truncations, self.truncations, "the log was truncated while a sync was in flight");
        assert!(started.end <= self.log_end_offset(), "a sync's end is past the log end");
        if let Err(error) = outcome {
            if self.poisoned.is_none() {
                return Err(self.poison(error));
            }
        }
        self.check_writable()?;
        self.durable_offset = self.durable_offset.max(started.end);
        Ok(self.durable_offset)
    }

    /// Forgets appends that were never synced (after a group commit failed with a full
    /// disk: none of them was acknowledged, and the high watermark never reached them).
    pub async fn discard_unsynced(&mut self) -> Result<()> {
        assert!(self.high_watermark <= self.durable_offset, "acknowledged appends may not be discarded");
        self.truncate_to(self.durable_offset).await
    }

    /// Writes buffered appends to the active segment's file without waiting for
    /// durability: when it returns `Ok`, [`PartitionLog::written_offset`] is the log
    /// end, and a crash of the process loses none of it. Errors as
    /// [`PartitionLog::sync`]: a full disk does not poison (the bytes are still in
    /// memory, see [`PartitionLog::discard_unwritten`]), any other failure does.
    pub async fn flush(&mut self) -> Result<Offset> {
        self.check_writable()?;
        let end = self.log_end_offset();
        if self.written_offset == end {
            return Ok(end);
        }
        // A full disk while writing the buffered bytes out is not a sync failure: the
        // bytes are still in memory and the log is consistent. Only fdatasync errors
        // poison (after one, the kernel may have dropped dirty pages).
        match self.active_mut().flush().await {
            Ok(()) => {
                self.written_offset = end;
                Ok(end)
            }
            Err(error @ EngineError::NoSpace { .. }) => Err(error),
            Err(error) => Err(self.poison(error)),
        }
    }

    /// Forgets appends that were never written out of the write buffer (after a
    /// flush failed with a full disk: none of them was acknowledged, and the high
    /// watermark never reached them), so their offsets are handed out again.
    pub async fn discard_unwritten(&mut self) -> Result<()> {
        assert!(self.high_watermark <= self.written_offset, "acknowledged appends may not be discarded");
        self.truncate_to(self.written_offset).await
    }

    /// Whole batches from `offset`, at most `max_bytes` (but at least one batch), none
    /// past `offset_limit` (by default the high watermark).
    pub async fn read(&self, offset: Offset, max_bytes: usize, offset_limit: Option<Offset>) -> Result<ReadResult> {
        let log_end_offset = self.log_end_offset();
        if offset < self.log_start_offset || offset > log_end_offset {
            return Err(EngineError::OffsetOutOfRange {
                requested: offset,
                log_start_offset: self.log_start_offset,
                log_end_offset,
            });
        }
        let offset_limit = offset_limit.unwrap_or(self.high_watermark).min(log_end_offset);
        let mut result = ReadResult {
            bytes: Vec::new(),
            next_offset: offset,
            log_start_offset: self.log_start_offset,
            log_end_offset,
            high_watermark: self.high_watermark,
            last_stable_offset: self.last_stable_offset(),
            aborted_transactions: Vec::new(),
        };
        let floor = self.segments.range(..=offset).next_back().map_or(self.log_start_offset, |(base, _)| *base);
        for segment in self.segments.range(floor..).map(|(_, s)| s) {
            if segment.next_offset() <= offset {
                continue;
            }
            let read = segment.read(offset, max_bytes, offset_limit).await.inspect_err(|e| self.note_damage(e))?;
            if let Some(SegmentRead { bytes, next_offset, .. }) = read {
                result.bytes = bytes;
                result.next_offset = next_offset;
            }
            break;
        }
        Ok(result)
    }

    /// A read of a consumer reading committed data (`isolation_level=1`): as
    /// [`PartitionLog::read`], but none past the last stable offset (nor past
    /// `offset_limit`), with the aborted transactions overlapping what it returns.
    pub async fn read_committed(
        &self,
        offset: Offset,
        max_bytes: usize,
        offset_limit: Option<Offset>,
    ) -> Result<ReadResult> {
        let limit = offset_limit.map_or(self.last_stable_offset(), |limit| limit.min(self.last_stable_offset()));
        let mut read = self.read(offset, max_bytes, Some(limit)).await?;
        if !read.bytes.is_empty() {
            read.aborted_transactions = self.aborted_transactions(offset, read.next_offset);
        }
        Ok(read)
    }

    /// An offset for ListOffsets.
    pub async fn list_offset(&self, spec: OffsetSpec) -> Result<Option<(Offset, TimestampMs)>> {
        match spec {
            OffsetSpec::Earliest => Ok(Some((self.log_start_offset, TimestampMs(-1)))),
            OffsetSpec::Latest => Ok(Some((self.high_watermark, TimestampMs(-1)))),
            OffsetSpec::LastStable => Ok(Some((self.last_stable_offset(), TimestampMs(-1)))),
            OffsetSpec::Timestamp(timestamp, isolation) => {
                let bound = self.fetchable_end(isolation);
                for segment in self.segments.values() {
                    let found = segment
                        .offset_for_timestamp(timestamp, self.log_start_offset)
                        .await
                        .inspect_err(|e| self.note_damage(e))?;
                    if let Some((offset, ts)) = found {
                        return Ok((offset < bound).then_some((offset, ts)));
                    }
                }
                Ok(None)
            }
            OffsetSpec::MaxTimestamp(isolation) => {
                // As Kafka: the segment that first reached the largest max timestamp,
                // in it the batch that first did, in it the first record holding it.
                // (Like Kafka's, the search does not skip records below the log start
                // offset in the first segment; the bound below still applies.)
                let mut newest: Option<&LogSegment<S>> = None;
                for segment in self.segments.values() {
                    if segment.max_timestamp() > newest.and_then(|n| n.max_timestamp()) {
                        newest = Some(segment);
                    }
                }
                let Some(segment) = newest else { return Ok(None) };
                let found = segment.offset_of_max_timestamp().await.inspect_err(|e| self.note_damage(e))?;
                Ok(found.filter(|(offset, _)| *offset < self.fetchable_end(isolation)))
            }
        }
    }

    /// Where the records a time lookup may answer end (see [`Isolation`]).
    fn fetchable_end(&self, isolation: Isolation) -> Offset {
        match isolation {
            Isolation::ReadUncommitted => self.high_watermark,
            Isolation::ReadCommitted => self.last_stable_offset(),
        }
    }

    /// Removes every record at or past `offset` (for a replica diverging from its
    /// leader). Durable when it returns. If that leaves nothing at or above the log
    /// start offset, the log restarts empty there.
    pub async fn truncate_to(&mut self, offset: Offset) -> Result<()> {
        self.check_writable()?;
        let offset = offset.max(self.log_start_offset);
        if offset >= self.log_end_offset() {
            return Ok(());
        }
        self.truncations += 1;
        let doomed: Vec<Offset> =
            self.segments.range(offset..).map(|(base, _)| *base).filter(|b| *b > offset).collect();
        // Keep at least one segment: the one holding `offset` (or the first). Newest
        // first, so that a crash in between leaves contiguous segments, a prefix of
        // the log: oldest first, it left a gap that the next open took for damage.
        for base in doomed.into_iter().rev() {
            if self.segments.len() > 1 {
                let segment = self.segments.remove(&base).expect("listed");
                segment.delete(&self.storage).await?;
            }
        }
        self.storage.sync_dir(&self.dir).await?;
        if let Err(error) = self.active_mut().truncate_to(offset).await {
            return Err(self.poison(error));
        }
        if self.log_end_offset() < self.log_start_offset {
            // The batch holding the log start offset straddled it and went whole: as
            // in `open`, restart empty at the log start so no offset below it is
            // handed out again.
            self.restart_at(self.log_start_offset).await?;
        }
        // Truncation synced the active segment, so all that is left is durable.
        let end = self.log_end_offset();
        // Records appended past the new end are dirty whatever the last pass covered
        // (the file follows at the next pass; after a crash first, the next pass
        // starts at the old checkpoint, clamped to the log, and only compacts less).
        self.cleaner_checkpoint = self.cleaner_checkpoint.map(|checkpoint| checkpoint.min(end));
        self.high_watermark = self.high_watermark.min(end);
        self.durable_offset = end;
        self.written_offset = end;
        if self.replicated && self.checkpointed_high_watermark.is_none_or(|c| c > self.high_watermark) {
            // A crash must not bring back a high watermark above what is left.
            self.checkpoint_high_watermark().await?;
        }
        // Rebuilt from what is left; the snapshots above the new end are deleted
        // (durably) before this returns and anything can be appended past them.
        self.load_producer_state().await?;
        // After the segments were cut, so the checkpoint never lacks an epoch of a
        // batch on disk.
        let mut epochs = self.leader_epochs.clone();
        if epochs.truncate_from_end(end) {
            self.write_leader_epochs(&epochs).await?;
            self.leader_epochs = epochs;
        }
        Ok(())
    }

    /// Advances the log start offset (DeleteRecords): offsets below become
    /// unreadable; segments wholly below it are deleted.
    pub async fn delete_records(&mut self, offset: Offset) -> Result<Offset> {
        if offset > self.high_watermark || offset < Offset(0) {
            return Err(EngineError::OffsetOutOfRange {
                requested: offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: self.high_watermark,
            });
        }
        if offset > self.log_start_offset {
            self.set_log_start_offset(offset).await?;
        }
        Ok(self.log_start_offset)
    }

    /// Removes every record and starts the log empty at `offset` (Kafka's
    /// `truncateFullyAndStartAt`: a follower whose log end the leader's log start
    /// has passed). The log start and end, the high watermark and the durable and
    /// written offsets all become `offset`; the producer state and the leader-epoch
    /// history go with the batches. Durable when it returns. A negative offset is
    /// [`EngineError::OffsetOutOfRange`].
    ///
    /// `offset` may be below the log start: the leader's log start may be inside a
    /// batch (DeleteRecords takes any offset), and a follower restarted there gets
    /// that whole batch, so it restarts again at the batch's base, as Kafka's
    /// `Partition.appendRecordsToFollowerOrFutureReplica` does; the offsets handed
    /// out again are the leader's, for the leader's records.
    ///
    /// Crash story: the records at and past `offset` (or the log start, if higher),
    /// if any, are cut first (a durable [`PartitionLog::truncate_to`]), so the log
    /// ends at or below it. Below the log start, the log is then emptied at its log
    /// start (by the steps that follow, with the log start for `offset`) before the
    /// log start moves down, so that no crash brings back a record below it. Then
    /// `log-start-offset` is written, durably, before any segment goes. A crash after that leaves a suffix of the old segments (deleted
    /// oldest first), or the new empty one, and the checkpointed log start:
    /// [`PartitionLog::open`] finds the log start past the old segments' end and
    /// restarts the log empty there, as after a delete-records a crash undid, and
    /// cuts a replicated high watermark up to it. One limit: when the log ended
    /// exactly at `offset`, such an open finds the log start at the log end and keeps
    /// the old segments below it, unreadable (as after a delete-records to the log
    /// end), with their producers and epochs, until a later log start move deletes
    /// them. A failure once the checkpoint is written poisons the log: what is in
    /// memory may no longer be what is on disk, and a restart recovers from the disk.
    pub async fn truncate_fully_and_start_at(&mut self, offset: Offset) -> Result<()> {
        self.check_writable()?;
        if offset < Offset(0) {
            return Err(EngineError::OffsetOutOfRange {
                requested: offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: self.log_end_offset(),
            });
        }
        let log_start = self.log_start_offset;
        if offset.max(log_start) < self.log_end_offset() {
            self.truncate_to(offset).await?;
        }
        debug_assert!(self.log_end_offset() <= offset.max(log_start), "the truncation left records past {offset}");
        if offset < log_start {
            self.restart_empty_at(log_start).await?;
        }
        self.restart_empty_at(offset).await
    }

    /// The log start checkpointed at `offset`, then the log restarted empty there
    /// (the steps of [`PartitionLog::truncate_fully_and_start_at`] once nothing is
    /// left at or past `offset`).
    async fn restart_empty_at(&mut self, offset: Offset) -> Result<()> {
        let text = format!("{}\n", offset.0);
        self.storage.write_file_atomic(&self.dir.join(LOG_START_OFFSET_FILE), text.as_bytes()).await?;
        self.log_start_offset = offset;
        let restarted = async {
            self.restart_at(offset).await?;
            self.storage.sync_dir(&self.dir).await?;
            self.high_watermark = offset;
            self.durable_offset = offset;
            self.written_offset = offset;
            if self.replicated {
                // Where the open would put it anyway (the checkpoint cut up to the log
                // start), but written down.
                self.checkpoint_high_watermark().await?;
            }
            Ok(())
        }
        .await;
        if let Err(error) = restarted {
            return Err(self.poison(error));
        }
        assert_eq!((self.log_start_offset, self.log_end_offset()), (offset, offset));
        Ok(())
    }

    /// Moves the log start offset: the checkpoint file first, then the segments
    /// wholly below it go. On a full disk, where the checkpoint cannot be written
    /// until something is freed, the segments go first and the checkpoint is written
    /// after (as Kafka checkpoints its log start offsets: later, not before): a crash
    /// in between brings back at most the records from the first remaining segment's
    /// base to `offset`, never hands an offset out twice.
    async fn set_log_start_offset(&mut self, offset: Offset) -> Result<()> {
        let checkpoint = self.dir.join(LOG_START_OFFSET_FILE);
        let text = format!("{}\n", offset.0);
        let written = self.storage.write_file_atomic(&checkpoint, text.as_bytes()).await;
        if let Err(error) = &written {
            if !is_full_disk_write(error) {
                return written;
            }
        }
        self.log_start_offset = offset;
        self.delete_segments_while(false, |segment, _| segment.next_offset() <= offset).await?;
        if written.is_err() {
            if let Err(error) = self.storage.write_file_atomic(&checkpoint, text.as_bytes()).await {
                tracing::warn!("{}: log start offset {offset} not checkpointed yet: {error}", self.partition);
            }
        }
        if self.leader_epochs.truncate_from_start(offset) {
            // Only tidies the file: an open cuts its epochs at the log start anyway.
            if let Err(error) = self.write_leader_epochs(&self.leader_epochs).await {
                tracing::warn!("{}: leader epochs not checkpointed at log start {offset}: {error}", self.partition);
            }
        }
        Ok(())
    }

    /// Deletes segments from the oldest while `doomed(segment, log size without it)`
    /// holds. The active segment goes only if `active_too`, it holds records and the
    /// log is not poisoned: rolled first, so the log keeps an empty one at its end.
    async fn delete_segments_while(
        &mut self,
        active_too: bool,
        mut doomed: impl FnMut(&LogSegment<S>, u64) -> bool,
    ) -> Result<usize> {
        let mut deleted = 0;
        let mut size_bytes: u64 = self.segments.values().map(|s| s.size_bytes()).sum();
        loop {
            let active = self.segments.len() == 1;
            let (base, segment) = self.segments.iter().next().expect("not empty");
            if active && (!active_too || segment.is_empty() || self.is_poisoned()) {
                break;
            }
            let remaining = size_bytes - segment.size_bytes();
            if !doomed(segment, remaining) {
                break;
            }
            let base = *base;
            if active {
                // As Kafka's `deleteSegments`: a log always has a segment, so a new,
                // empty one starts at the log end before the last one goes, and
                // appends go on at the same offset.
                self.roll().await?;
            }
            let successor = self.segments.keys().nth(1).copied().expect("more than one segment");
            if let Err(error) = self.ensure_snapshot_at(successor).await {
                // Without it, the producers of the doomed segment would be forgotten
                // by the next rebuild; the segment stays until a later attempt.
                tracing::warn!("{}: keeping segment {base}: snapshot at {successor}: {error}", self.partition);
                break;
            }
            let segment = self.segments.remove(&base).expect("present");
            size_bytes = remaining;
            segment.delete(&self.storage).await?;
            deleted += 1;
        }
        if deleted > 0 {
            // Snapshots below the first segment can never be loaded again; the one at
            // its base stays and keeps the producers whose batches just went.
            let first_base = self.segments.keys().next().copied().expect("a log always has a segment");
            self.snapshots.remove_where(&self.storage, |snapshot| snapshot < first_base).await?;
            self.storage.sync_dir(&self.dir).await?;
        }
        Ok(deleted)
    }

    /// Makes sure a producer-state snapshot exists at segment base `base` before the
    /// segments below it go: a roll whose snapshot write failed (full disk) leaves a
    /// segment without one. The state as of `base` is rebuilt from the newest older
    /// snapshot and the headers of the segments below `base`, which still exist.
    async fn ensure_snapshot_at(&mut self, base: Offset) -> Result<()> {
        if self.snapshots.contains(base) {
            return Ok(());
        }
        let first_base = self.segments.keys().next().copied().expect("a log always has a segment");
        let below = Offset(base.0 - 1);
        let (scan_from, mut state) = match self.snapshots.load_newest(&self.storage, &self.partition, below).await? {
            Some((offset, state)) => (offset, state),
            None => (first_base, ProducerStateManager::new(self.partition.clone())),
        };
        for segment in self.segments.range(..base).map(|(_, s)| s).filter(|s| s.next_offset() > scan_from) {
            segment
                .scan_headers(scan_from.max(segment.base_offset()), |header, marker| {
                    state.replay(StoredBatch { header, marker });
                })
                .await?;
        }
        self.snapshots.write(&self.storage, &state, base).await
    }

    /// Applies `retention.bytes` and `retention.ms`, deleting whole segments wholly
    /// below the high watermark, the active one too (rolled first, as Kafka does, so
    /// a quiet partition's records do not outlive `retention.ms` by up to
    /// `segment.ms`), and rolls the active segment once it is older than
    /// `segment.ms`. Returns the number of segments deleted.
    pub async fn housekeeping(&mut self) -> Result<usize> {
        let now = self.clock.now_ms();
        if !self.is_poisoned() && self.should_roll(0, self.log_end_offset(), now) {
            self.roll().await?;
        }
        // A compact-only topic keeps its segments: the cleaner, not retention, bounds it.
        let (retention_bytes, retention_ms) = match self.config.cleanup_policy.delete {
            true => (self.config.retention_bytes, self.config.retention_ms),
            false => (-1, -1),
        };
        let high_watermark = self.high_watermark;
        let deleted = self
            .delete_segments_while(true, |segment, remaining| {
                // As in Kafka, only segments wholly below the high watermark: the log
                // start never passes it, and no record is deleted before it was visible.
                if segment.next_offset() > high_watermark {
                    return false;
                }
                let too_big = retention_bytes >= 0 && remaining >= retention_bytes as u64;
                let newest = segment.max_timestamp().unwrap_or(segment.created_at());
                let too_old = retention_ms >= 0 && now.0 - newest.0 > retention_ms;
                too_big || too_old
            })
            .await?;
        let first_base = self.segments.keys().next().copied().expect("a log always has a segment");
        if first_base > self.log_start_offset {
            self.set_log_start_offset(first_base).await?;
        }
        let moved = self.checkpointed_high_watermark != Some(self.high_watermark);
        let due = now.0 - self.high_watermark_checkpointed_at.0 >= HIGH_WATERMARK_CHECKPOINT_INTERVAL_MS;
        if self.replicated && !self.is_poisoned() && moved && due {
            match self.checkpoint_high_watermark().await {
                Err(error) if is_full_disk_write(&error) => {
                    tracing::warn!("{}: high watermark not checkpointed: {error}", self.partition);
                }
                other => other?,
            }
        }
        Ok(deleted)
    }

    /// The idempotent producers' epochs and last batches, as of the log end.
    pub fn producer_state(&self) -> &ProducerStateManager {
        &self.producer_state
    }

    pub fn stats(&self) -> PartitionStats {
        PartitionStats {
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset(),
            high_watermark: self.high_watermark,
            last_stable_offset: self.last_stable_offset(),
            durable_offset: self.durable_offset,
            written_offset: self.written_offset,
            size_bytes: self.segments.values().map(|s| s.size_bytes()).sum(),
            segment_count: self.segments.len(),
            poisoned: self.poisoned.clone(),
            replicated: self.replicated,
            leader_epochs: self.leader_epochs.clone(),
            cleaner: self.cleaner_stats,
        }
    }

    /// Clean shutdown: syncs and closes every segment, writes the producer-state
    /// snapshot at the log end (so the next open loads it without a scan), then the
    /// marker that lets the next open skip recovery. A poisoned log skips both, so the
    /// next open recovers from what actually reached the disk.
    pub async fn close(self) -> Result<()> {
        let poisoned = self.poisoned.is_some();
        let end = self.log_end_offset();
        let high_watermark = self.high_watermark;
        let checkpoint_high_watermark =
            self.replicated && self.checkpointed_high_watermark != Some(self.high_watermark);
        let PartitionLog { storage, dir, segments, producer_state, mut snapshots, .. } = self;
        // On a full disk (a write, not a sync, refused) the close goes on without the
        // snapshot and the marker: what was written out is in the files, and the next
        // open recovers by scanning, as after a crash, needing no space to do so.
        let mut no_space = None;
        for (_, segment) in segments {
            match segment.close().await {
                Err(error) if is_full_disk_write(&error) => no_space = no_space.or(Some(error)),
                other => other?,
            }
        }
        if !poisoned && no_space.is_none() {
            // A snapshot already at the end (a roll just before) holds the same state.
            let marked = async {
                if checkpoint_high_watermark {
                    let text = format!("{}\n", high_watermark.0);
                    storage.write_file_atomic(&dir.join(HIGH_WATERMARK_FILE), text.as_bytes()).await?;
                }
                if !snapshots.contains(end) {
                    snapshots.write(&storage, &producer_state, end).await?;
                }
                storage.write_file_atomic(&dir.join(CLEAN_SHUTDOWN_FILE), b"clean\n").await
            };
            match marked.await {
                Err(error) if is_full_disk_write(&error) => no_space = Some(error),
                other => other?,
            }
        }
        if let Some(error) = no_space {
            tracing::warn!("closing {}: {error}; the next start recovers the log by scanning it", dir.display());
        }
        Ok(())
    }

    /// Closes and removes the log's directory (topic deletion).
    pub async fn delete(self) -> Result<()> {
        for (_, segment) in self.segments {
            segment.delete(&self.storage).await?;
        }
        self.storage.remove_dir_all(&self.dir).await?;
        if let Some(parent) = self.dir.parent() {
            self.storage.sync_dir(parent).await?;
        }
        Ok(())
    }

    /// Header of the batch holding `offset`, if present (idempotent-producer state
    /// rebuild, tests).
    pub async fn batch_header(&self, offset: Offset) -> Result<Option<BatchHeader>> {
        let segment = self.segments.range(..=offset).next_back().map(|(_, s)| s);
        match segment {
            Some(segment) => {
                let found = segment.find_batch(offset).await.inspect_err(|e| self.note_damage(e))?;
                Ok(found.map(|(_, header)| header))
            }
            None => Ok(None),
        }
    }
}

/// Damage where one segment does not start at the offset the previous one ends at
/// (a segment file lost or left over).
/// The transaction marker of each batch (`None` for all but control batches).
fn txn_markers(bytes: &[u8], batches: &[(usize, BatchHeader)]) -> Vec<Option<TxnMarker>> {
    batches
        .iter()
        .map(|(position, header)| match header.is_control() {
            true => batch::txn_marker(&bytes[*position..*position + header.size_bytes()]),
            false => None,
        })
        .collect()
}

fn join_damage(previous_log: &Path, previous_end: Offset, next_base: Offset) -> EngineError {
    EngineError::Corrupt {
        path: previous_log.to_path_buf(),
        position: 0,
        offset: Some(previous_end),
        reason: format!(
            "this segment ends at offset {previous_end}, but the next segment file starts at offset {next_base}; \
             segments must be contiguous, so a segment file is missing or left over"
        ),
    }
}

fn check_join<S: Storage>(previous: &LogSegment<S>, next_base: Offset) -> Result<()> {
    if previous.next_offset() == next_base {
        return Ok(());
    }
    let mut error = join_damage(previous.log_path(), previous.next_offset(), next_base);
    if let EngineError::Corrupt { position, .. } = &mut error {
        *position = previous.size_bytes();
    }
    Err(error)
}

/// ENOSPC from a write (not from an fsync, which poisons like any failed fsync): the
/// bytes being written are still in memory and the file is as it was.
fn is_full_disk_write(error: &EngineError) -> bool {
    matches!(error, EngineError::NoSpace { op, .. } if !op.contains("sync"))
}

pub(crate) async fn read_offset_file<S: Storage>(storage: &S, path: &Path) -> Result<Option<Offset>> {
    let Some(bytes) = storage.read_file(path).await? else { return Ok(None) };
    let text = String::from_utf8_lossy(&bytes);
    match text.trim().parse::<i64>() {
        Ok(offset) if offset >= 0 => Ok(Some(Offset(offset))),
        _ => Err(EngineError::Corrupt {
            path: path.to_path_buf(),
            position: 0,
            offset: None,
            reason: format!("it holds {:?}, not an offset", text.trim()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use futures_lite::future::block_on;

    use super::*;
    use crate::batch::{build_value_batch, BatchProducer, RecordSpec};
    use crate::config::ManualClock;
    use crate::storage::{CrashFault, SimStorage};
    use crate::types::{PartitionId, TopicName};

    const DIR: &str = "/data/epochs/0";
    const T0: TimestampMs = TimestampMs(1_700_000_000_000);

    fn dir() -> &'static Path {
        Path::new(DIR)
    }

    fn open(storage: &SimStorage, config: TopicConfig) -> PartitionLog<SimStorage> {
        let partition = TopicPartition::new(TopicName::new("epochs").expect("valid"), PartitionId(0));
        let opened = PartitionLog::open(storage.clone(), dir(), partition, config, ManualClock::new(T0));
        block_on(opened).expect("open").0
    }

    fn small_segments() -> TopicConfig {
        TopicConfig { segment_bytes: 300, ..TopicConfig::default() }
    }

    fn append(log: &mut PartitionLog<SimStorage>, epoch: i32) -> Result<AppendInfo> {
        block_on(log.append(build_value_batch(T0, 2, 10), LeaderEpoch(epoch)))
    }

    fn epochs(log: &PartitionLog<SimStorage>) -> Vec<(i32, i64)> {
        log.leader_epochs().entries().iter().map(|e| (e.epoch.0, e.start_offset.0)).collect()
    }

    fn end_offset_for(log: &PartitionLog<SimStorage>, epoch: i32) -> (i32, i64) {
        let answer = log.end_offset_for_leader_epoch(LeaderEpoch(epoch));
        (answer.leader_epoch.0, answer.end_offset.0)
    }

    /// Appends two-record batches in epochs 0, 0, 2, 2, 5 (offsets 0 to 9).
    fn five_batches_in_three_epochs(log: &mut PartitionLog<SimStorage>) {
        for epoch in [0, 0, 2, 2, 5] {
            append(log, epoch).expect("append");
        }
        assert_eq!(epochs(log), [(0, 0), (2, 4), (5, 8)]);
    }

    #[test]
    fn each_new_epoch_starts_an_entry_and_an_older_one_replaces_what_it_contradicts() {
        let storage = SimStorage::new();
        let mut log = open(&storage, small_segments());
        assert!(epochs(&log).is_empty());
        five_batches_in_three_epochs(&mut log);
        assert_eq!(end_offset_for(&log, 5), (5, 10), "the latest epoch ends at the log end");
        assert_eq!(end_offset_for(&log, 2), (2, 8));
        assert_eq!(end_offset_for(&log, 4), (2, 8));
        assert_eq!(end_offset_for(&log, 0), (0, 4));
        assert_eq!(end_offset_for(&log, 6), (-1, -1));
        assert!(matches!(append(&mut log, -1), Err(EngineError::InvalidLeaderEpoch { .. })));
        assert_eq!(log.log_end_offset(), Offset(10), "a refused append wrote something");
        let header = block_on(log.batch_header(Offset(9))).expect("read").expect("a batch");
        assert_eq!(header.leader_epoch, LeaderEpoch(5), "the batch carries the epoch it was appended in");
        append(&mut log, 4).expect("an older epoch");
        assert_eq!(epochs(&log), [(0, 0), (2, 4), (4, 10)], "Kafka's assign: epoch 4 at 10 contradicts 5");
        assert_eq!(log.stats().leader_epochs.entries(), log.leader_epochs().entries());
        block_on(log.close()).expect("close");
        let log = open(&storage, small_segments());
        assert_eq!(epochs(&log), [(0, 0), (2, 4), (4, 10)], "a history that matches its batches is kept");
    }

    #[test]
    fn epochs_follow_truncation_and_the_log_start_and_survive_restarts_and_crashes() {
        let storage = SimStorage::new();
        let mut log = open(&storage, small_segments());
        five_batches_in_three_epochs(&mut log);
        block_on(log.truncate_to(Offset(8))).expect("truncate");
        assert_eq!(epochs(&log), [(0, 0), (2, 4)], "epoch 5 had only the batch cut away");
        append(&mut log, 3).expect("a new leader's append");
        log.set_high_watermark(log.log_end_offset());
        block_on(log.delete_records(Offset(5))).expect("delete records");
        assert_eq!(epochs(&log), [(2, 5), (3, 8)], "epoch 2 holds the new log start");
        let before = epochs(&log);
        block_on(log.close()).expect("close");
        let mut log = open(&storage, small_segments());
        assert_eq!(epochs(&log), before, "after a clean restart");
        append(&mut log, 7).expect("append");
        drop(log);
        storage.crash(CrashFault::LoseUnsynced);
        let log = open(&storage, small_segments());
        assert_eq!(log.log_end_offset(), Offset(10), "the unsynced append was lost");
        assert_eq!(epochs(&log), before, "the lost batch's epoch went with it");
        let checkpoint = block_on(storage.read_file(&dir().join(LEADER_EPOCH_CHECKPOINT_FILE))).expect("read");
        assert_eq!(checkpoint, Some(log.leader_epochs().encode_checkpoint()), "recovery rewrote the checkpoint");
    }

    #[test]
    fn a_missing_or_wrong_checkpoint_is_rebuilt_from_the_batch_headers() {
        let storage = SimStorage::new();
        let mut log = open(&storage, small_segments());
        five_batches_in_three_epochs(&mut log);
        let expected = epochs(&log);
        block_on(log.close()).expect("close");
        let path = dir().join(LEADER_EPOCH_CHECKPOINT_FILE);
        let wrong: [&[u8]; 5] = [b"", b"not a checkpoint", b"0\n1\n9 0\n", b"0\n2\n0 0\n2 5\n", b"0\n1\n0 0\n"];
        for content in wrong {
            block_on(storage.write_file_atomic(&path, content)).expect("write");
            let log = open(&storage, small_segments());
            assert_eq!(epochs(&log), expected, "from {:?}", String::from_utf8_lossy(content));
            block_on(log.close()).expect("close");
        }
        block_on(storage.remove_file(&path)).expect("remove");
        let log = open(&storage, small_segments());
        assert_eq!(epochs(&log), expected, "from no checkpoint");
        let rewritten = block_on(storage.read_file(&path)).expect("read");
        assert_eq!(rewritten, Some(log.leader_epochs().encode_checkpoint()));
    }

    #[test]
    fn a_new_epoch_whose_checkpoint_cannot_be_written_appends_nothing() {
        let storage = SimStorage::new();
        let mut log = open(&storage, TopicConfig::default());
        append(&mut log, 0).expect("append");
        block_on(log.sync()).expect("sync");
        storage.set_space_bytes_max(Some(storage_used(&storage)));
        assert!(matches!(append(&mut log, 1), Err(EngineError::NoSpace { .. })));
        assert_eq!((log.log_end_offset(), epochs(&log)), (Offset(2), vec![(0, 0)]));
        storage.set_space_bytes_max(None);
        append(&mut log, 1).expect("append once there is space");
        assert_eq!(epochs(&log), [(0, 0), (1, 2)]);
    }

    fn storage_used(storage: &SimStorage) -> u64 {
        let names = block_on(storage.list_dir(dir())).expect("list");
        names.iter().map(|name| storage.file_len(&dir().join(name)).unwrap_or(0)).sum()
    }

    #[test]
    fn a_log_emptied_by_truncation_forgets_its_epochs() {
        let storage = SimStorage::new();
        let mut log = open(&storage, small_segments());
        let producer = BatchProducer::default();
        let record = [RecordSpec { key: None, value: Some(b"v"), timestamp_delta_ms: 0 }];
        block_on(log.append(batch::build_batch(T0, producer, &record), LeaderEpoch(4))).expect("append");
        log.set_high_watermark(log.log_end_offset());
        block_on(log.truncate_to(Offset(0))).expect("truncate");
        assert!(epochs(&log).is_empty());
        append(&mut log, 1).expect("a lower epoch is fine once nothing is left");
        assert_eq!(epochs(&log), [(1, 0)]);
    }

    /// One record from producer 42, epoch 0, at `sequence`.
    fn idempotent_batch(sequence: i32) -> Vec<u8> {
        let producer =
            BatchProducer { producer_id: crate::types::ProducerId(42), producer_epoch: 0, base_sequence: sequence };
        batch::build_batch(T0, producer, &[RecordSpec { key: None, value: Some(b"once"), timestamp_delta_ms: 0 }])
    }

    /// Every batch of `log`, as stored (a read ends at a segment's end).
    fn all_bytes(log: &PartitionLog<SimStorage>) -> Vec<u8> {
        let (mut bytes, mut offset) = (Vec::new(), log.log_start_offset());
        while offset < log.log_end_offset() {
            let read = block_on(log.read(offset, 1 << 20, Some(log.log_end_offset()))).expect("read");
            bytes.extend_from_slice(&read.bytes);
            offset = read.next_offset;
        }
        bytes
    }

    #[test]
    fn a_follower_stores_the_leaders_batches_as_they_are_and_keeps_their_producers_and_epochs() {
        let leader_storage = SimStorage::new();
        let mut leader = open(&leader_storage, small_segments());
        for (sequence, epoch) in [(0, 0), (1, 0), (2, 3), (3, 3), (4, 6)] {
            block_on(leader.append(idempotent_batch(sequence), LeaderEpoch(epoch))).expect("leader append");
        }
        let replicated = all_bytes(&leader);
        let follower_storage = SimStorage::new();
        let mut follower = open(&follower_storage, small_segments());
        // In two fetches, the second of three batches.
        let second_fetch = batch::split_batches(&replicated).expect("valid")[2].0;
        let first = block_on(follower.append_replicated(replicated[..second_fetch].to_vec())).expect("first fetch");
        assert_eq!((first.base_offset, first.last_offset, first.batch_count), (Offset(0), Offset(1), 2));
        let rest = block_on(follower.append_replicated(replicated[second_fetch..].to_vec())).expect("second fetch");
        assert_eq!((rest.base_offset, rest.last_offset, rest.duplicate), (Offset(2), Offset(4), false));
        assert_eq!(all_bytes(&follower), replicated, "the follower restamped something");
        assert_eq!(epochs(&follower), epochs(&leader));
        assert_eq!(follower.producer_state().entry(crate::types::ProducerId(42)).map(|e| e.batches().len()), Some(5));
        // Promoted: a retry of a batch it only replicated is still a duplicate.
        let retry = block_on(follower.append(idempotent_batch(3), LeaderEpoch(7))).expect("retry");
        assert!(retry.duplicate && retry.base_offset == Offset(3), "{retry:?}");
        block_on(follower.assign_leader_epoch(LeaderEpoch(7))).expect("assign");
        assert_eq!(follower.end_offset_for_leader_epoch(LeaderEpoch(6)).end_offset, Offset(5));
        // And the history survives a crash of the follower.
        block_on(follower.sync()).expect("sync");
        let expected = epochs(&follower);
        drop(follower);
        follower_storage.crash(CrashFault::LoseUnsynced);
        let follower = open(&follower_storage, small_segments());
        assert_eq!(all_bytes(&follower), replicated);
        assert_eq!(epochs(&follower), expected[..expected.len() - 1], "the epoch no batch started is forgotten");
    }

    #[test]
    fn replicated_batches_that_do_not_continue_the_log_or_are_damaged_write_nothing() {
        let leader_storage = SimStorage::new();
        let mut leader = open(&leader_storage, TopicConfig::default());
        for epoch in [0, 1, 1] {
            append(&mut leader, epoch).expect("leader append");
        }
        let replicated = all_bytes(&leader);
        let positions: Vec<usize> = batch::split_batches(&replicated).expect("valid").iter().map(|(p, _)| *p).collect();
        let storage = SimStorage::new();
        let mut follower = open(&storage, TopicConfig::default());
        let skipping_the_first = replicated[positions[1]..].to_vec();
        let mut damaged = replicated.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        let mut gap = replicated[..positions[1]].to_vec();
        gap.extend_from_slice(&replicated[positions[2]..]);
        for (what, bytes) in [("skip", skipping_the_first), ("gap", gap), ("damaged", damaged), ("empty", Vec::new())] {
            let result = block_on(follower.append_replicated(bytes));
            match (what, &result) {
                ("skip" | "gap", Err(EngineError::UnexpectedAppendOffset { .. })) => {}
                ("damaged" | "empty", Err(EngineError::InvalidBatch(_))) => {}
                _ => panic!("{what}: {result:?}"),
            }
            assert_eq!((follower.log_end_offset(), epochs(&follower)), (Offset(0), vec![]), "{what}");
        }
        block_on(follower.append_replicated(replicated.clone())).expect("the whole of it");
        let again = block_on(follower.append_replicated(replicated));
        assert!(matches!(again, Err(EngineError::UnexpectedAppendOffset { .. })), "an overlap: {again:?}");
        assert_eq!(follower.log_end_offset(), Offset(6));
    }

    #[test]
    fn a_replicated_high_watermark_is_checkpointed_and_comes_back_cut_to_the_recovered_log() {
        let storage = SimStorage::new();
        let clock = ManualClock::new(T0);
        let reopen = |storage: &SimStorage| {
            let partition = TopicPartition::new(TopicName::new("epochs").expect("valid"), PartitionId(0));
            let opened = PartitionLog::open(storage.clone(), dir(), partition, TopicConfig::default(), clock.clone());
            block_on(opened).expect("open").0
        };
        let mut log = reopen(&storage);
        block_on(log.set_replicated(true)).expect("replicated");
        for _ in 0..3 {
            append(&mut log, 0).expect("append");
        }
        block_on(log.sync()).expect("sync");
        assert_eq!(log.high_watermark(), Offset(0), "appends do not move it in replicated mode");
        assert_eq!(log.update_high_watermark(Offset(4)).expect("set"), Offset(4));
        assert_eq!(log.update_high_watermark(Offset(9)).expect("set"), Offset(6), "clamped to the synced end");
        log.update_high_watermark(Offset(4)).expect("set");
        block_on(log.housekeeping()).expect("housekeeping");
        assert_eq!(log.checkpointed_high_watermark(), Some(Offset(0)), "not due yet");
        clock.advance_ms(HIGH_WATERMARK_CHECKPOINT_INTERVAL_MS);
        block_on(log.housekeeping()).expect("housekeeping");
        assert_eq!(log.checkpointed_high_watermark(), Some(Offset(4)));
        log.update_high_watermark(Offset(6)).expect("set");
        drop(log);
        storage.crash(CrashFault::LoseUnsynced);
        let mut log = reopen(&storage);
        assert!(log.is_replicated(), "the mode survives a crash");
        assert_eq!(log.high_watermark(), Offset(4), "the checkpointed one, not the last set");
        block_on(log.truncate_to(Offset(2))).expect("truncate");
        assert_eq!((log.high_watermark(), log.checkpointed_high_watermark()), (Offset(2), Some(Offset(2))));
        drop(log);
        storage.crash(CrashFault::LoseUnsynced);
        let mut log = reopen(&storage);
        assert_eq!(log.high_watermark(), Offset(2), "never above what a truncation left");
        log.update_high_watermark(Offset(2)).expect("set");
        block_on(log.set_replicated(false)).expect("not replicated");
        block_on(log.close()).expect("close");
        let log = reopen(&storage);
        assert!(!log.is_replicated());
        assert_eq!(log.high_watermark(), log.log_end_offset());
    }

    /// A replicated log of twelve batches (offsets 0 to 11) over three segments, two
    /// epochs and one idempotent producer, synced, its high watermark at 6.
    fn replicated_log_with_producers(storage: &SimStorage) -> PartitionLog<SimStorage> {
        let mut log = open(storage, small_segments());
        block_on(log.set_replicated(true)).expect("replicated");
        for sequence in 0..12 {
            let epoch = LeaderEpoch(if sequence < 6 { 1 } else { 2 });
            block_on(log.append(idempotent_batch(sequence), epoch)).expect("append");
        }
        block_on(log.sync()).expect("sync");
        log.update_high_watermark(Offset(6)).expect("set");
        assert_eq!(log.stats().segment_count, 3, "{:?}", log.stats());
        assert_eq!((epochs(&log), log.producer_state().len()), (vec![(1, 0), (2, 6)], 1));
        log
    }

    /// A crash at every change a truncation makes to the disk, in turn (the process
    /// dies after `changes` of them): the open finds a prefix of the log, never a
    /// gap between segments, which it would take for damage.
    #[test]
    fn a_crash_at_any_step_of_a_truncation_reopens_with_a_prefix_of_the_log() {
        let old = all_bytes(&replicated_log_with_producers(&SimStorage::new()));
        for changes in 0.. {
            let storage = SimStorage::new();
            let mut log = replicated_log_with_producers(&storage);
            storage.die_after_changes(changes);
            let done = block_on(log.truncate_to(Offset(1))).is_ok();
            drop(log);
            storage.crash(CrashFault::LoseUnsynced);
            let partition = TopicPartition::new(TopicName::new("epochs").expect("valid"), PartitionId(0));
            let opened = PartitionLog::open(storage, dir(), partition, small_segments(), ManualClock::new(T0));
            let what = format!("the process dead after {changes} changes of a truncation");
            let (log, _) = block_on(opened).unwrap_or_else(|error| panic!("{what}: {error}"));
            assert!(old.starts_with(&all_bytes(&log)), "{what}: not a prefix of the log: {:?}", log.stats());
            if done {
                assert_eq!(log.log_end_offset(), Offset(1), "{what}");
                break;
            }
        }
    }

    fn out_of_range(log: &PartitionLog<SimStorage>, offset: i64) -> bool {
        let read = block_on(log.read(Offset(offset), 1 << 20, Some(log.log_end_offset())));
        matches!(read, Err(EngineError::OffsetOutOfRange { .. }))
    }

    /// The log is empty at `offset`: every offset, the history and the producers.
    fn assert_empty_at(log: &PartitionLog<SimStorage>, offset: i64, what: &str) {
        let stats = log.stats();
        let offsets = [stats.log_start_offset, stats.log_end_offset, stats.high_watermark, stats.durable_offset];
        assert_eq!(offsets, [Offset(offset); 4], "{what}: {stats:?}");
        assert_eq!(log.written_offset(), Offset(offset), "{what}");
        assert_eq!((stats.segment_count, stats.size_bytes), (1, 0), "{what}: {stats:?}");
        assert!(epochs(log).is_empty() && log.producer_state().is_empty(), "{what}: {stats:?}");
        assert!((0..offset).all(|below| out_of_range(log, below)), "{what}: a record below {offset} is readable");
        let at = block_on(log.read(Offset(offset), 1 << 20, Some(log.log_end_offset()))).expect("read at the start");
        assert!(at.bytes.is_empty(), "{what}");
    }

    #[test]
    fn a_full_truncation_empties_the_log_at_the_offset_and_the_next_append_lands_there() {
        let storage = SimStorage::new();
        let mut log = replicated_log_with_producers(&storage);
        block_on(log.truncate_fully_and_start_at(Offset(20))).expect("truncate fully");
        assert_empty_at(&log, 20, "after the op");
        assert_eq!(log.checkpointed_high_watermark(), Some(Offset(20)));
        let negative = block_on(log.truncate_fully_and_start_at(Offset(-1)));
        assert!(matches!(negative, Err(EngineError::OffsetOutOfRange { .. })), "{negative:?}");

        let appended = append(&mut log, 3).expect("append");
        assert_eq!((appended.base_offset, appended.last_offset), (Offset(20), Offset(21)));
        assert_eq!(epochs(&log), [(3, 20)]);
        let kept = all_bytes(&log);
        block_on(log.close()).expect("close");
        let mut log = open(&storage, small_segments());
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (Offset(20), Offset(22)), "after a restart");
        assert_eq!((all_bytes(&log), epochs(&log)), (kept, vec![(3, 20)]));
        assert!(out_of_range(&log, 0) && out_of_range(&log, 19));

        // An offset inside the log: what is at and past it goes too.
        log.update_high_watermark(Offset(22)).expect("set");
        block_on(log.truncate_fully_and_start_at(Offset(21))).expect("truncate fully inside the log");
        assert_empty_at(&log, 21, "inside the log");
        log.poisoned = Some("a failed sync".to_string());
        let poisoned = block_on(log.truncate_fully_and_start_at(Offset(30)));
        assert!(matches!(poisoned, Err(EngineError::Poisoned { .. })), "{poisoned:?}");
    }

    /// The leader's log start inside a batch: a follower restarted there fetches the
    /// whole batch, restarts again at its base, below its log start, and takes it.
    #[test]
    fn a_full_truncation_below_the_log_start_takes_a_batch_that_straddles_it() {
        let leader_storage = SimStorage::new();
        let mut leader = open(&leader_storage, TopicConfig::default());
        for epoch in [0, 0, 0] {
            append(&mut leader, epoch).expect("leader append");
        }
        leader.set_high_watermark(Offset(6));
        block_on(leader.delete_records(Offset(3))).expect("delete records inside the batch 2..=3");
        let fetched = block_on(leader.read(Offset(3), 1 << 20, None)).expect("read from the log start");
        let storage = SimStorage::new();
        let mut follower = open(&storage, TopicConfig::default());
        block_on(follower.truncate_fully_and_start_at(Offset(3))).expect("start at the leader's log start");
        let straddling = block_on(follower.append_replicated(fetched.bytes.clone()));
        assert!(matches!(straddling, Err(EngineError::UnexpectedAppendOffset { .. })), "{straddling:?}");
        block_on(follower.truncate_fully_and_start_at(Offset(2))).expect("start at the batch's base");
        assert_empty_at(&follower, 2, "below the log start");
        block_on(follower.append_replicated(fetched.bytes.clone())).expect("the batch from its base");
        follower.set_high_watermark(Offset(6));
        block_on(follower.delete_records(Offset(3))).expect("the leader's log start");
        let read = block_on(follower.read(Offset(3), 1 << 20, None)).expect("read from the log start");
        assert_eq!((read.bytes, follower.log_start_offset()), (fetched.bytes, Offset(3)));
    }

    #[test]
    fn a_crash_right_after_a_full_truncation_reopens_empty_at_the_offset() {
        for fault in [CrashFault::LoseUnsynced, CrashFault::KeepAll] {
            let storage = SimStorage::new();
            let mut log = replicated_log_with_producers(&storage);
            append(&mut log, 2).expect("an unsynced append");
            block_on(log.truncate_fully_and_start_at(Offset(20))).expect("truncate fully");
            drop(log);
            storage.crash(fault);
            let log = open(&storage, small_segments());
            assert_empty_at(&log, 20, &format!("{fault:?}"));
            assert!(log.is_replicated());
        }
    }

    /// A crash at every change the op makes to the disk, in turn (the process dies
    /// after `changes` of them), on the log of [`replicated_log_with_producers`]
    /// with its records below `log_start` deleted: the open finds the log as it was,
    /// or cut (from `offset` on), or empty at `offset`, never anything else (no
    /// record below the log start comes back), and once empty it stays so at every
    /// later point.
    fn crash_at_every_step_of_a_full_truncation(log_start: i64, offset: i64) {
        let with_log_start = |storage: &SimStorage| {
            let mut log = replicated_log_with_producers(storage);
            block_on(log.delete_records(Offset(log_start))).expect("delete records");
            log
        };
        let old = all_bytes(&with_log_start(&SimStorage::new()));
        let mut emptied_at = None;
        for changes in 0.. {
            let storage = SimStorage::new();
            let mut log = with_log_start(&storage);
            storage.die_after_changes(changes);
            let done = block_on(log.truncate_fully_and_start_at(Offset(offset))).is_ok();
            drop(log);
            storage.crash(CrashFault::LoseUnsynced);
            let log = open(&storage, small_segments());
            let what =
                format!("from {log_start}, truncated fully at {offset}, the process dead after {changes} changes");
            let (start, end) = (log.log_start_offset().0, log.log_end_offset().0);
            if (start, end) == (offset, offset) && log.stats().size_bytes == 0 {
                assert_empty_at(&log, offset, &what);
                emptied_at = emptied_at.or(Some(changes));
            } else if start == log_start {
                assert!(emptied_at.is_none(), "{what}: back to the old log after {emptied_at:?}");
                let bytes = all_bytes(&log);
                assert!(old.starts_with(&bytes), "{what}: not the old log nor a cut of it: {start}..{end}");
                assert!((0..log_start).all(|below| out_of_range(&log, below)), "{what}: a deleted record is back");
            } else {
                // The one limit: the log ended at `offset` when the checkpoint was
                // written, and the segments below stay, unreadable.
                assert_eq!((start, end), (offset, offset), "{what}");
                assert!((0..offset).all(|below| out_of_range(&log, below)), "{what}");
            }
            if done {
                assert_empty_at(&log, offset, &what);
                break;
            }
        }
        assert!(emptied_at.is_some_and(|changes| changes > 0), "never empty after a crash inside the op");
    }

    #[test]
    fn a_crash_at_any_step_of_a_full_truncation_reopens_with_the_old_log_or_empty_at_the_offset() {
        crash_at_every_step_of_a_full_truncation(0, 20);
        crash_at_every_step_of_a_full_truncation(0, 12);
        crash_at_every_step_of_a_full_truncation(0, 1);
        crash_at_every_step_of_a_full_truncation(5, 2);
    }
}
