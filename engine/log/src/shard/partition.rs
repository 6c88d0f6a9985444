//! The partition actor: one task per partition, on its owning shard, that holds the
//! [`PartitionLog`] and serves operations from a bounded queue in arrival order.
//!
//! Group commit under `fsync: always`, pipelined. An append is acknowledged only once
//! an fdatasync that was issued after its bytes were flushed has succeeded, and the
//! high watermark only advances over such durable offsets, so no consumer sees an
//! unacknowledged record. The actor takes everything queued (up to
//! [`OPS_PER_ROUND_MAX`]), performs it, and then starts one sync for all the appends
//! no sync covers yet: [`PartitionLog::start_sync`] flushes the write buffer, captures
//! the log end and hands back the fdatasync as a future that borrows nothing of the
//! log. The actor polls it alongside its queue: appends that arrive while it is in
//! flight are validated and buffered meanwhile (their bytes, written after the sync
//! started, are not covered by it), and when it completes the waiting appends it
//! covers are answered and the next sync starts at once for the rest. Why: with the
//! sync awaited inline, the actor sat idle through every fdatasync, and the appends
//! arriving then paid for a whole extra round of CPU work before their own sync.
//!
//! Commit delay: when a sync answers several appends, their appenders usually send
//! again at once, while the appends that arrived during the sync are ready to go.
//! Starting the next sync with only the latter splits a closed-loop load into two
//! halves that take turns, each sync carrying half of it. So the next sync waits
//! until as many appends arrived as were answered, but no longer than
//! [`COMMIT_DELAY_MAX`] or half the last fdatasync's duration. A single appender
//! never waits: nothing is waiting when its append arrives, and one answered append
//! sets no delay.
//!
//! Limits: at most [`SYNCS_IN_FLIGHT_MAX`] syncs in flight (with two, the syncs
//! overlapped on the device and each carried fewer appends, for no gain). Ops that
//! must not overlap a sync in flight or that promise durability (`Sync`, `Truncate`,
//! `TruncateFullyAndStartAt`, `Housekeeping`, which may roll or delete, and `Close`)
//! first wait for it and commit every waiting append (a barrier). A roll inside an
//! append may seal the segment a sync in flight covers: harmless, the seal syncs it
//! too. A failed fdatasync poisons
//! the log: every waiting append, covered by it or appended after it, fails, and
//! every later one too. A full disk while flushing for a sync: the syncs in flight
//! complete first (answering what they cover), then the unsynced appends are
//! discarded and fail with `NoSpace`. Under `interval`, the actor syncs (inline) once
//! the oldest unsynced append is that old.
//!
//! Under `never` and `interval` an append is acknowledged once its bytes are written
//! into the segment file (out of this process's write buffer: with O_DIRECT, in the
//! device), not once synced: a crash of the process loses nothing acknowledged, a
//! crash of the machine (power, kernel) may lose what no fdatasync covered yet, as
//! with Kafka's page cache. The appends of one round share one write at its end
//! ([`write_out`]; ops queued meanwhile form the next round, so the writes group as
//! the fdatasyncs do under `always`), and the high watermark follows the written
//! offset, so no consumer reads what a crash of the process could take back. Ops that
//! must see the round's appends settled (`Sync`, `Truncate`, `TruncateFullyAndStartAt`,
//! `DeleteRecords`, `SetConfig`, `Housekeeping`) write them out first, and reads
//! (`Read`, `ListOffset`, `Stats`) queued behind unwritten appends are served right
//! after the write-out: a read sees every append queued before it, as a Kafka
//! connection's pipelined requests do (under `always` a read sees the high watermark
//! of the last sync).
//!
//! Replicated mode ([`PartitionOp::SetReplicated`], set by the broker for a partition
//! with replicas): the actor no longer moves the high watermark; the broker does
//! ([`PartitionOp::SetHighWatermark`]: the minimum log end of the in-sync replicas),
//! and the log clamps it to its own written (under `always`, durable) end. Appends
//! are acknowledged exactly as above, each reply carrying that end
//! ([`AppendInfo::log_end_offset`]) for the leader's own place in the in-sync
//! replicas. Consumer reads stop at the high watermark; a replica's reads (a follower
//! fetching) stop at the written end instead, and its long polls wait on that end.
//! Outside replicated mode everything is as described above.
//!
//! A duplicate (a retried idempotent batch, [`AppendInfo::duplicate`]) is answered
//! with its original's offsets under the same rule: under `always`, only once those
//! offsets are durable. Its original is either durable already (then the duplicate
//! is answered at once) or not, and then the duplicate waits like a fresh append for
//! the sync that covers its original (in flight or not started yet) and shares its
//! outcome, so a retry never learns of an offset that a crash could still take away.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::batch::TxnMarker;
use crate::cleaner::{CleanStep, CleanerLimits, CleanerPass};
use crate::config::{Durability, TopicConfig};
use crate::error::{EngineError, Result};
use crate::log::{AppendInfo, OffsetSpec, PartitionLog, PartitionStats, ReadResult, StartedSync};
use crate::producer_state::ActiveProducer;
use crate::storage::Storage;
use crate::types::{LeaderEpoch, Offset, ProducerEpoch, ProducerId, TimestampMs};

/// Operations served per round; bounds the latency one round can add.
pub const OPS_PER_ROUND_MAX: usize = 1024;

/// Syncs in flight at once under `always`; see the module doc.
pub const SYNCS_IN_FLIGHT_MAX: usize = 1;

/// Longest a sync waits for the appenders the previous one answered to send again
/// (the commit delay, see the module doc); it is also at most half the last
/// fdatasync's duration.
pub const COMMIT_DELAY_MAX: Duration = Duration::from_micros(200);

/// Long-poll fetches waiting on one partition. Past this, the oldest is answered
/// early (it re-reads, finds nothing new and waits again): bounded memory, no loss.
pub const DATA_WAITERS_MAX: usize = 4096;

pub type Reply<T> = flume::Sender<Result<T>>;

pub enum PartitionOp {
    Append {
        bytes: Vec<u8>,
        leader_epoch: LeaderEpoch,
        reply: Reply<AppendInfo>,
    },
    /// A follower's append of the leader's batches, as they are
    /// ([`PartitionLog::append_replicated`]); acknowledged like `Append`.
    AppendReplicated {
        bytes: Vec<u8>,
        reply: Reply<AppendInfo>,
    },
    /// A new leader's epoch, from the log end on ([`PartitionLog::assign_leader_epoch`]).
    AssignLeaderEpoch {
        leader_epoch: LeaderEpoch,
        reply: Reply<()>,
    },
    /// A transaction marker ([`PartitionLog::append_txn_marker`]), a leader's;
    /// acknowledged like `Append`.
    AppendTxnMarker {
        producer_id: ProducerId,
        producer_epoch: ProducerEpoch,
        marker: TxnMarker,
        leader_epoch: LeaderEpoch,
        reply: Reply<AppendInfo>,
    },
    /// Up to `offset_limit`, by default the `reader`'s bound ([`Reader`]).
    Read {
        offset: Offset,
        max_bytes: usize,
        offset_limit: Option<Offset>,
        reader: Reader,
        reply: Reply<ReadResult>,
    },
    ListOffset {
        spec: OffsetSpec,
        reply: Reply<Option<(Offset, TimestampMs)>>,
    },
    Sync {
        reply: Reply<Offset>,
    },
    Truncate {
        offset: Offset,
        reply: Reply<()>,
    },
    /// Empties the log and starts it at `offset`
    /// ([`PartitionLog::truncate_fully_and_start_at`]).
    TruncateFullyAndStartAt {
        offset: Offset,
        reply: Reply<()>,
    },
    DeleteRecords {
        offset: Offset,
        reply: Reply<Offset>,
    },
    SetConfig {
        config: TopicConfig,
        reply: Reply<()>,
    },
    Stats {
        reply: Reply<PartitionStats>,
    },
    /// The producers of the partition's producer state (DescribeProducers); served
    /// at once, unwritten appends of the round included, as Kafka's state has every
    /// append the leader made.
    Producers {
        reply: Reply<Vec<ActiveProducer>>,
    },
    /// Answered once the `reader`'s bound is past `offset` (a long-poll fetch waits
    /// on it); a waiter whose requester gave up is dropped at the end of a round.
    WaitForData {
        offset: Offset,
        reader: Reader,
        reply: Reply<()>,
    },
    /// Switches replicated mode (see the module doc); answers the high watermark.
    SetReplicated {
        replicated: bool,
        reply: Reply<Offset>,
    },
    /// In replicated mode, the broker's move of the high watermark
    /// ([`PartitionLog::update_high_watermark`]); answers where it is now.
    SetHighWatermark {
        offset: Offset,
        reply: Reply<Offset>,
    },
    /// The shard's cleaner asks how dirty a compacted log is: its dirty ratio if a
    /// pass is due (`cleanup.policy` has `compact`, and the ratio passes
    /// `min.cleanable.dirty.ratio` or `max.compaction.lag.ms` makes it overdue).
    CleanerCheck {
        reply: Reply<Option<f64>>,
    },
    /// The shard's cleaner runs one step of a pass on this log
    /// ([`PartitionLog::clean_step`]; the actor keeps the pass between steps).
    Clean {
        reply: Reply<CleanStep>,
    },
    /// Periodic: roll by age, retention.
    Housekeeping,
    /// Clean close (`delete`: remove the data too). The actor ends after replying.
    Close {
        delete: bool,
        reply: Reply<()>,
    },
}

/// Who reads, which says how far: a consumer up to the high watermark, one reading
/// committed data (`isolation_level=1`) up to the last stable offset, with the
/// aborted transactions of what it reads, and a replica (a follower's fetch) up to
/// the written log end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    Consumer,
    CommittedConsumer,
    Replica,
}

fn answer<T>(reply: Reply<T>, result: Result<T>) {
    // The requester may have given up (dropped its receiver); that is not an error here.
    if reply.send(result).is_err() {
        tracing::debug!("a reply found its requester gone");
    }
}

/// Runs until a `Close` op or until every sender is dropped (then closes cleanly).
pub async fn run<S: Storage>(log: PartitionLog<S>, queue: flume::Receiver<PartitionOp>) {
    run_with_commit_delay(log, queue, COMMIT_DELAY_MAX).await
}

/// [`run`] with another bound on the commit delay (`Duration::ZERO`: none; tests that
/// run without a glommio executor, which timers need).
async fn run_with_commit_delay<S: Storage>(
    log: PartitionLog<S>,
    queue: flume::Receiver<PartitionOp>,
    commit_delay_max: Duration,
) {
    let mut actor = Actor::new(log, commit_delay_max);
    let mut round: Vec<PartitionOp> = Vec::with_capacity(64);
    loop {
        let interval_deadline = actor.interval_deadline();
        let deadline = match (interval_deadline, actor.commit.delayed_until()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let in_flight = actor.commit.in_flight.front_mut().map(|(started, _)| started);
        match next_event(&queue, deadline, in_flight).await {
            Event::Op(Ok(op)) => round.push(op),
            Event::Op(Err(flume::RecvError::Disconnected)) => return actor.shut_down().await,
            Event::Synced(outcome) => {
                actor.synced(outcome).await;
                continue;
            }
            Event::Deadline => {
                actor.deadline_passed(interval_deadline).await;
                continue;
            }
        }
        while round.len() < OPS_PER_ROUND_MAX {
            match queue.try_recv() {
                Ok(op) => round.push(op),
                Err(_) => break,
            }
        }
        if let Some((delete, reply)) = actor.serve_round(&mut round).await {
            return actor.close(delete, reply).await;
        }
    }
}

/// The actor's state between events: the log and what waits on it.
struct Actor<S: Storage> {
    log: PartitionLog<S>,
    commit: GroupCommit,
    waiting_for_data: Vec<DataWaiter>,
    /// Under `never` and `interval`: this round's appends, answered once written out.
    unwritten: Vec<(AppendInfo, Reply<AppendInfo>)>,
    /// Reads (`Read`, `ListOffset`, `Stats`) that came behind unwritten appends of
    /// this round, each with the log end when it came: served once those appends are
    /// written out, as of that end, so a read sees every append queued before it and
    /// none queued after it (a Kafka connection's requests take effect in order).
    deferred_reads: Vec<(PartitionOp, Offset)>,
    /// Under `interval`, when the oldest unsynced append was made.
    unsynced_since: Option<Instant>,
    /// The log cleaner's pass in progress, between its steps.
    cleaner_pass: Option<CleanerPass<S>>,
}

impl<S: Storage> Actor<S> {
    fn new(log: PartitionLog<S>, commit_delay_max: Duration) -> Actor<S> {
        Actor {
            log,
            commit: GroupCommit { commit_delay_max, ..GroupCommit::default() },
            waiting_for_data: Vec::new(),
            unwritten: Vec::new(),
            deferred_reads: Vec::new(),
            unsynced_since: None,
            cleaner_pass: None,
        }
    }

    /// Under `interval`: when the oldest unsynced append must be synced.
    fn interval_deadline(&self) -> Option<Instant> {
        match (self.log.config().durability, self.unsynced_since) {
            (Durability::IntervalMs(ms), Some(since)) => Some(since + Duration::from_millis(ms)),
            _ => None,
        }
    }

    /// Every sender is gone: commit what waits and close cleanly.
    async fn shut_down(mut self) {
        self.commit.barrier(&mut self.log).await;
        let partition = self.log.partition().clone();
        if let Err(error) = self.log.close().await {
            tracing::error!("closing {partition} failed: {error}");
        }
    }

    /// The oldest sync in flight completed.
    async fn synced(&mut self, outcome: Result<()>) {
        self.commit.finish_oldest(&mut self.log, outcome);
        self.commit.start_if_due(&mut self.log).await;
        answer_data_waiters(&self.log, &mut self.waiting_for_data);
    }

    /// The `interval` deadline or the commit delay ran out.
    async fn deadline_passed(&mut self, interval_deadline: Option<Instant>) {
        if interval_deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            self.commit.barrier(&mut self.log).await;
            if let Err(error) = self.log.sync().await {
                tracing::error!("interval sync of {} failed: {error}", self.log.partition());
            }
            self.commit.settle(&mut self.log);
            self.unsynced_since = None;
        }
        self.commit.start_if_due(&mut self.log).await;
        answer_data_waiters(&self.log, &mut self.waiting_for_data);
    }

    /// Performs a round of ops in order, then settles what they made durable or
    /// written. Returns the `Close` op if one came (ops queued behind it are dropped
    /// with it; their requesters see a disconnected reply channel).
    async fn serve_round(&mut self, round: &mut Vec<PartitionOp>) -> Option<(bool, Reply<()>)> {
        let mut close = None;
        for op in round.drain(..) {
            if let PartitionOp::Close { delete, reply } = op {
                close = Some((delete, reply));
                break;
            }
            self.serve(op).await;
        }
        self.write_out_and_serve_reads().await;
        // A roll during the round (which syncs the sealed segment) or an explicit sync
        // may have made waiting appends durable.
        self.commit.settle(&mut self.log);
        self.commit.start_if_due(&mut self.log).await;
        answer_data_waiters(&self.log, &mut self.waiting_for_data);
        if self.log.durable_offset() == self.log.log_end_offset() {
            self.unsynced_since = None;
        } else if self.unsynced_since.is_none() {
            self.unsynced_since = Some(Instant::now());
        }
        close
    }

    /// One step of a log-cleaner pass. Before a pass starts, the round's appends are
    /// written out, so the last stable offset it stops at is current.
    async fn clean(&mut self) -> Result<CleanStep> {
        if self.cleaner_pass.is_none() {
            self.settle_all().await;
        }
        let step = self.log.clean_step(&mut self.cleaner_pass, &CleanerLimits::default()).await;
        if let Err(error) = &step {
            tracing::error!("cleaning {} failed: {error}", self.log.partition());
        }
        step
    }

    /// One op other than `Close`.
    async fn serve(&mut self, op: PartitionOp) {
        let is_read =
            matches!(op, PartitionOp::Read { .. } | PartitionOp::ListOffset { .. } | PartitionOp::Stats { .. });
        if is_read && !self.unwritten.is_empty() {
            self.deferred_reads.push((op, self.log.log_end_offset()));
            return;
        }
        let log = &mut self.log;
        match op {
            PartitionOp::Append { bytes, leader_epoch, reply } => {
                let appended = log.append(bytes, leader_epoch).await;
                self.acknowledge_when_due(appended, reply);
            }
            PartitionOp::AppendReplicated { bytes, reply } => {
                let appended = log.append_replicated(bytes).await;
                self.acknowledge_when_due(appended, reply);
            }
            PartitionOp::AssignLeaderEpoch { leader_epoch, reply } => {
                answer(reply, log.assign_leader_epoch(leader_epoch).await)
            }
            PartitionOp::AppendTxnMarker { producer_id, producer_epoch, marker, leader_epoch, reply } => {
                let appended = log.append_txn_marker(producer_id, producer_epoch, marker, leader_epoch).await;
                self.acknowledge_when_due(appended, reply);
            }
            PartitionOp::Read { offset, max_bytes, offset_limit, reader, reply } => {
                let limit = read_limit(log, offset_limit, reader);
                answer(reply, read(log, offset, max_bytes, limit, reader).await)
            }
            PartitionOp::ListOffset { spec, reply } => answer(reply, log.list_offset(spec).await),
            PartitionOp::Sync { reply } => {
                self.settle_all().await;
                answer(reply, self.log.sync().await);
            }
            PartitionOp::Truncate { offset, reply } => {
                self.settle_all().await;
                answer(reply, self.log.truncate_to(offset).await);
            }
            PartitionOp::TruncateFullyAndStartAt { offset, reply } => {
                self.settle_all().await;
                answer(reply, self.log.truncate_fully_and_start_at(offset).await);
            }
            PartitionOp::DeleteRecords { offset, reply } => {
                self.write_out_and_serve_reads().await;
                answer(reply, self.log.delete_records(offset).await)
            }
            PartitionOp::SetConfig { config, reply } => {
                // Appends made under the old policy are answered under it.
                self.write_out_and_serve_reads().await;
                self.log.set_config(config);
                answer(reply, Ok(()));
            }
            PartitionOp::Stats { reply } => answer(reply, Ok(log.stats())),
            PartitionOp::Producers { reply } => answer(reply, Ok(log.producer_state().active_producers())),
            PartitionOp::WaitForData { offset, reader, reply } => self.wait_for_data(offset, reader, reply),
            PartitionOp::SetReplicated { replicated, reply } => {
                // Appends made in the old mode are answered in it.
                self.write_out_and_serve_reads().await;
                let switched = self.log.set_replicated(replicated).await;
                let local_end = self.log.local_end_offset();
                self.log.advance_high_watermark(local_end);
                answer(reply, switched.map(|()| self.log.high_watermark()));
            }
            PartitionOp::SetHighWatermark { offset, reply } => answer(reply, log.update_high_watermark(offset)),
            PartitionOp::CleanerCheck { reply } => answer(reply, cleaning_due(log).await),
            PartitionOp::Clean { reply } => answer(reply, self.clean().await),
            PartitionOp::Housekeeping => {
                self.settle_all().await;
                if let Err(error) = self.log.housekeeping().await {
                    tracing::error!("housekeeping of {} failed: {error}", self.log.partition());
                }
            }
            PartitionOp::Close { .. } => unreachable!("serve_round takes Close"),
        }
    }

    /// Answers an append once the durability policy allows: a duplicate of a durable
    /// batch at once, under `always` after the sync covering it, otherwise once the
    /// round's appends are written out.
    fn acknowledge_when_due(&mut self, appended: Result<AppendInfo>, reply: Reply<AppendInfo>) {
        match appended {
            Ok(info) if info.duplicate && info.last_offset < self.log.durable_offset() => {
                answer(reply, Ok(AppendInfo { log_end_offset: self.log.local_end_offset(), ..info }))
            }
            Ok(info) if self.log.config().durability == Durability::Always => self.commit.wait(info, reply),
            Ok(info) => self.unwritten.push((info, reply)),
            Err(error) => answer(reply, Err(error)),
        }
    }

    /// Writes out and commits every append so far, with no sync left in flight: for
    /// ops that must not overlap a sync (truncation, roll) or promise durability.
    async fn settle_all(&mut self) {
        self.write_out_and_serve_reads().await;
        self.commit.barrier(&mut self.log).await;
    }

    /// Writes out the round's appends so far and serves the reads that waited for
    /// them, before an op that must come after both.
    async fn write_out_and_serve_reads(&mut self) {
        write_out(&mut self.log, &mut self.unwritten).await;
        for (read, end) in std::mem::take(&mut self.deferred_reads) {
            self.serve_read_as_of(read, end).await;
        }
    }

    /// A deferred read, answered as the log was when it came: nothing at or past
    /// `end` (later appends of the round, written out with it) is shown.
    async fn serve_read_as_of(&self, op: PartitionOp, end: Offset) {
        let log = &self.log;
        match op {
            PartitionOp::Read { offset, max_bytes, offset_limit, reader, reply } => {
                let limit = read_limit(log, offset_limit, reader).unwrap_or(log.high_watermark()).min(end);
                let read = read(log, offset, max_bytes, Some(limit), reader).await.map(|mut read| {
                    read.high_watermark = read.high_watermark.min(end);
                    read.last_stable_offset = read.last_stable_offset.min(end);
                    read.log_end_offset = read.log_end_offset.min(end);
                    read
                });
                answer(reply, read)
            }
            PartitionOp::ListOffset { spec, reply } => {
                let found = log.list_offset(spec).await.map(|found| match spec {
                    OffsetSpec::Latest | OffsetSpec::LastStable => {
                        found.map(|(offset, timestamp)| (offset.min(end), timestamp))
                    }
                    OffsetSpec::Earliest => found,
                    OffsetSpec::Timestamp(..) | OffsetSpec::MaxTimestamp(_) => {
                        found.filter(|(offset, _)| *offset < end)
                    }
                });
                answer(reply, found)
            }
            PartitionOp::Stats { reply } => {
                let mut stats = log.stats();
                stats.high_watermark = stats.high_watermark.min(end);
                stats.last_stable_offset = stats.last_stable_offset.min(end);
                stats.log_end_offset = stats.log_end_offset.min(end);
                answer(reply, Ok(stats))
            }
            _ => unreachable!("only reads are deferred"),
        }
    }

    fn wait_for_data(&mut self, offset: Offset, reader: Reader, reply: Reply<()>) {
        let waiter = DataWaiter { offset, reader, reply };
        if waiter.bound(&self.log) > offset {
            answer(waiter.reply, Ok(()));
            return;
        }
        if self.waiting_for_data.len() >= DATA_WAITERS_MAX {
            let oldest = self.waiting_for_data.remove(0);
            answer(oldest.reply, Ok(()));
        }
        self.waiting_for_data.push(waiter);
    }

    /// The `Close` op: commit what waits, then close (or delete) the log and answer.
    async fn close(mut self, delete: bool, reply: Reply<()>) {
        self.commit.barrier(&mut self.log).await;
        if let Err(error) = self.log.abandon_clean(&mut self.cleaner_pass).await {
            // Its `.cleaned` files stay; the next open removes them.
            tracing::warn!("closing {}: abandoning a cleaner pass: {error}", self.log.partition());
        }
        answer_data_waiters(&self.log, &mut self.waiting_for_data);
        let result = if delete { self.log.delete().await } else { self.log.close().await };
        answer(reply, result);
    }
}

/// Under `never` and `interval`: writes the round's appends out of the write buffer
/// into the segment file (one write for all of them), then moves the high watermark
/// up to what is written and acknowledges them, so an acknowledged append survives a
/// crash of the process (only a crash of the machine may take it). A full disk fails
/// them all and forgets them (their offsets are handed out again; none was
/// acknowledged); any other write error poisons the log and fails them.
async fn write_out<S: Storage>(log: &mut PartitionLog<S>, unwritten: &mut Vec<(AppendInfo, Reply<AppendInfo>)>) {
    if unwritten.is_empty() {
        return;
    }
    match log.flush().await {
        Ok(written) => {
            log.advance_high_watermark(written);
            for (info, reply) in unwritten.drain(..) {
                debug_assert!(info.last_offset < written, "acknowledged before it was written");
                answer(reply, Ok(AppendInfo { log_end_offset: written, ..info }));
            }
        }
        Err(EngineError::NoSpace { op, path }) => {
            if let Err(discard) = log.discard_unwritten().await {
                tracing::error!("discarding unwritten appends of {} failed: {discard}", log.partition());
            }
            for (_, reply) in unwritten.drain(..) {
                answer(reply, Err(EngineError::NoSpace { op, path: path.clone() }));
            }
        }
        Err(error) => {
            tracing::error!("writing the appends of {} out failed: {error}", log.partition());
            for (_, reply) in unwritten.drain(..) {
                let Err(error) = log.check_writable() else { unreachable!("a failed write poisons the log") };
                answer(reply, Err(error));
            }
        }
    }
}

/// How far a read may go: a consumer's up to `offset_limit` or (`None`) its bound
/// (the high watermark, or the last stable offset, applied by the read); a replica's
/// never past the written log end, by default up to it.
fn read_limit<S: Storage>(log: &PartitionLog<S>, offset_limit: Option<Offset>, reader: Reader) -> Option<Offset> {
    if reader != Reader::Replica {
        return offset_limit;
    }
    let written = log.written_offset();
    Some(offset_limit.map_or(written, |limit| limit.min(written)))
}

async fn read<S: Storage>(
    log: &PartitionLog<S>,
    offset: Offset,
    max_bytes: usize,
    limit: Option<Offset>,
    reader: Reader,
) -> Result<ReadResult> {
    match reader {
        Reader::CommittedConsumer => log.read_committed(offset, max_bytes, limit).await,
        Reader::Consumer | Reader::Replica => log.read(offset, max_bytes, limit).await,
    }
}

/// A long-poll fetch waiting for data past `offset`.
struct DataWaiter {
    offset: Offset,
    reader: Reader,
    reply: Reply<()>,
}

impl DataWaiter {
    /// Where readable data ends for this waiter.
    fn bound<S: Storage>(&self, log: &PartitionLog<S>) -> Offset {
        match self.reader {
            Reader::Consumer => log.high_watermark(),
            Reader::CommittedConsumer => log.last_stable_offset(),
            Reader::Replica => log.written_offset(),
        }
    }
}

/// Answers the long-poll fetches whose bound (high watermark, or written end for a
/// replica) has passed their offset; drops those whose requester gave up.
fn answer_data_waiters<S: Storage>(log: &PartitionLog<S>, waiting_for_data: &mut Vec<DataWaiter>) {
    if waiting_for_data.is_empty() {
        return;
    }
    waiting_for_data.retain(|waiter| {
        if waiter.reply.is_disconnected() {
            return false;
        }
        if waiter.bound(log) > waiter.offset {
            // A dropped receiver here only means the fetch timed out meanwhile.
            let _ = waiter.reply.send(Ok(()));
            return false;
        }
        true
    });
}

enum Event {
    Op(Result<PartitionOp, flume::RecvError>),
    /// The `interval` deadline passed.
    Deadline,
    /// The oldest sync in flight completed.
    Synced(Result<()>),
}

/// The next thing to act on: the oldest sync in flight completing (checked first),
/// a queued op, or the `interval` deadline.
async fn next_event(
    queue: &flume::Receiver<PartitionOp>,
    deadline: Option<Instant>,
    in_flight: Option<&mut StartedSync>,
) -> Event {
    let receive = async {
        match next_op(queue, deadline).await {
            Some(op) => Event::Op(op),
            None => Event::Deadline,
        }
    };
    match in_flight {
        Some(started) => {
            futures_lite::future::or(async { Event::Synced(started.fdatasync.as_mut().await) }, receive).await
        }
        None => receive.await,
    }
}

/// The next queued op, or `None` once `deadline` passes first.
async fn next_op(
    queue: &flume::Receiver<PartitionOp>,
    deadline: Option<Instant>,
) -> Option<Result<PartitionOp, flume::RecvError>> {
    let Some(deadline) = deadline else { return Some(queue.recv_async().await) };
    let now = Instant::now();
    if now >= deadline {
        return None;
    }
    let receive = async { Some(queue.recv_async().await) };
    let expire = async {
        glommio::timer::sleep(deadline - now).await;
        None
    };
    futures_lite::future::or(receive, expire).await
}

/// The pipelined group commit under `always` (see the module doc).
#[derive(Default)]
struct GroupCommit {
    /// Appends (fresh or duplicates) not yet answered, in arrival order. Each is
    /// answered once the durable offset passes its last offset, or failed.
    waiting: Vec<(AppendInfo, Reply<AppendInfo>)>,
    /// Syncs started (and when), oldest first; at most [`SYNCS_IN_FLIGHT_MAX`].
    in_flight: VecDeque<(StartedSync, Instant)>,
    /// After a sync answered several appends: how many more appends the next sync
    /// waits for (as many as were answered), and until when at most.
    delay: Option<(usize, Instant)>,
    /// How long the last fdatasync took; the commit delay is at most half of it.
    last_sync: Duration,
    commit_delay_max: Duration,
}

impl GroupCommit {
    /// An append waiting for a sync.
    fn wait(&mut self, info: AppendInfo, reply: Reply<AppendInfo>) {
        self.waiting.push((info, reply));
        if let Some((expected, _)) = &mut self.delay {
            *expected = expected.saturating_sub(1);
            if *expected == 0 {
                self.delay = None;
            }
        }
    }

    /// When the commit delay runs out, if a sync is waiting for it.
    fn delayed_until(&self) -> Option<Instant> {
        let (_, until) = self.delay?;
        (self.in_flight.is_empty() && !self.waiting.is_empty()).then_some(until)
    }

    /// Whether some waiting append is covered neither by the durable offset nor by a
    /// sync in flight.
    fn has_uncovered<S: Storage>(&self, log: &PartitionLog<S>) -> bool {
        let covered = self.in_flight.back().map_or(log.durable_offset(), |(s, _)| s.end().max(log.durable_offset()));
        self.waiting.iter().any(|(info, _)| info.last_offset >= covered)
    }

    /// Starts a sync for the waiting appends no sync in flight covers, if there is
    /// room in the pipeline.
    async fn start_if_due<S: Storage>(&mut self, log: &mut PartitionLog<S>) {
        if self.in_flight.len() >= SYNCS_IN_FLIGHT_MAX || log.is_poisoned() || !self.has_uncovered(log) {
            return;
        }
        if let Some((_, until)) = self.delay {
            if Instant::now() < until {
                return;
            }
            self.delay = None;
        }
        match log.start_sync().await {
            Ok(Some(started)) => self.in_flight.push_back((started, Instant::now())),
            Ok(None) => panic!("appends wait for a sync, but every offset of {} is durable", log.partition()),
            Err(error @ EngineError::NoSpace { .. }) => {
                // The disk is full: the unsynced appends are still only in memory.
                // Those covered by syncs in flight are answered as those end; the
                // rest are forgotten and failed (their offsets are handed out again).
                self.drain(log).await;
                if log.is_poisoned() {
                    return;
                }
                if let Err(discard) = log.discard_unsynced().await {
                    tracing::error!("discarding unsynced appends of {} failed: {discard}", log.partition());
                }
                let EngineError::NoSpace { op, path } = &error else { unreachable!("matched above") };
                for (_, reply) in self.waiting.drain(..) {
                    answer(reply, Err(EngineError::NoSpace { op, path: path.clone() }));
                }
            }
            Err(error) => {
                tracing::error!("flushing {} for a sync failed: {error}", log.partition());
                self.settle(log);
            }
        }
    }

    /// Takes the outcome of the oldest sync in flight and answers what it decides.
    fn finish_oldest<S: Storage>(&mut self, log: &mut PartitionLog<S>, outcome: Result<()>) {
        let (started, at) = self.in_flight.pop_front().expect("a sync completed, so one was in flight");
        let now = Instant::now();
        self.last_sync = now - at;
        if let Err(error) = log.finish_sync(&started, outcome) {
            tracing::error!("group commit of {} failed: {error}", log.partition());
        }
        let answered = self.settle(log);
        let delay = self.commit_delay_max.min(self.last_sync / 2);
        if answered >= 2 && !delay.is_zero() {
            // Their appenders are likely to send again at once: rather than start the
            // next sync with whoever arrived meanwhile and leave them for the one
            // after, wait a little for them to come back.
            self.delay = Some((answered, now + delay));
        }
    }

    /// Waits for every sync in flight, oldest first.
    async fn drain<S: Storage>(&mut self, log: &mut PartitionLog<S>) {
        while let Some((started, _)) = self.in_flight.front_mut() {
            let outcome = started.fdatasync.as_mut().await;
            self.finish_oldest(log, outcome);
        }
    }

    /// Waits until no sync is in flight and every waiting append is answered: for ops
    /// that must not overlap a sync (truncation, roll, close) or that promise
    /// durability (`Sync`).
    async fn barrier<S: Storage>(&mut self, log: &mut PartitionLog<S>) {
        loop {
            self.delay = None;
            self.drain(log).await;
            if !self.has_uncovered(log) || log.is_poisoned() {
                break;
            }
            self.start_if_due(log).await;
        }
        self.settle(log);
        assert!(self.waiting.is_empty() && self.in_flight.is_empty(), "a barrier leaves nothing pending");
    }

    /// Answers every waiting append the durable offset has passed and moves the high
    /// watermark up to it; once the log is poisoned, fails every waiting append
    /// instead (each was covered by the failed sync or came after it).
    /// Returns how many were answered.
    fn settle<S: Storage>(&mut self, log: &mut PartitionLog<S>) -> usize {
        if log.is_poisoned() {
            for (_, reply) in self.waiting.drain(..) {
                let Err(error) = log.check_writable() else { unreachable!("the log is poisoned") };
                answer(reply, Err(error));
            }
            return 0;
        }
        let durable = log.durable_offset();
        log.advance_high_watermark(durable);
        let mut answered = 0;
        for (info, reply) in self.waiting.extract_if(.., |(info, _)| info.last_offset < durable) {
            answer(reply, Ok(AppendInfo { log_end_offset: durable, ..info }));
            answered += 1;
        }
        answered
    }
}

/// The log's dirty ratio if the shard's cleaner should run a pass on it now: its
/// `cleanup.policy` has `compact`, and the ratio passes `min.cleanable.dirty.ratio`
/// or `max.compaction.lag.ms` makes a pass overdue.
async fn cleaning_due<S: Storage>(log: &PartitionLog<S>) -> Result<Option<f64>> {
    let config = log.config();
    if !config.cleanup_policy.compact || log.is_poisoned() {
        return Ok(None);
    }
    let range = log.cleanable_range().await?;
    Ok(range.is_due(config.min_cleanable_dirty_ratio.0).then(|| range.dirty_ratio()))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use futures_lite::future::block_on;

    use super::*;
    use crate::batch::{self, BatchProducer, RecordSpec};
    use crate::config::ManualClock;
    use crate::storage::SimStorage;
    use crate::types::{PartitionId, ProducerId, TopicName, TopicPartition};

    /// One record from producer 42, epoch 0, at `sequence`.
    fn idempotent_batch(sequence: i32) -> Vec<u8> {
        let producer = BatchProducer { producer_id: ProducerId(42), producer_epoch: 0, base_sequence: sequence };
        batch::build_batch(
            TimestampMs(1_700_000_000_000),
            producer,
            &[RecordSpec { key: None, value: Some(b"once"), timestamp_delta_ms: 0 }],
        )
    }

    async fn open_always(storage: &SimStorage) -> PartitionLog<SimStorage> {
        open_with(storage, Durability::Always).await
    }

    async fn open_with(storage: &SimStorage, durability: Durability) -> PartitionLog<SimStorage> {
        let config = TopicConfig { durability, ..TopicConfig::default() };
        let partition = TopicPartition::new(TopicName::new("actor").expect("valid"), PartitionId(0));
        let clock = ManualClock::new(TimestampMs(1_700_000_000_000));
        let (log, _) = PartitionLog::open(storage.clone(), Path::new("/data/actor/0"), partition, config, clock)
            .await
            .expect("open");
        log
    }

    fn append(bytes: Vec<u8>) -> (PartitionOp, flume::Receiver<Result<AppendInfo>>) {
        let (reply, answer) = flume::bounded(1);
        (PartitionOp::Append { bytes, leader_epoch: LeaderEpoch(0), reply }, answer)
    }

    fn close() -> (PartitionOp, flume::Receiver<Result<()>>) {
        let (reply, answer) = flume::bounded(1);
        (PartitionOp::Close { delete: false, reply }, answer)
    }

    fn reply<T>(answer: &flume::Receiver<Result<T>>) -> Result<T> {
        answer.try_recv().expect("the actor answered")
    }

    #[test]
    fn a_duplicate_in_the_same_round_is_answered_with_its_original_after_the_sync() {
        block_on(async {
            let storage = SimStorage::new();
            let log = open_always(&storage).await;
            let (sender, queue) = flume::bounded(16);
            let (original, original_answer) = append(idempotent_batch(0));
            let (retry, retry_answer) = append(idempotent_batch(0));
            let (close, close_answer) = close();
            for op in [original, retry, close] {
                sender.send_async(op).await.expect("queued");
            }
            let syncs_before = storage.sync_count();
            run_with_commit_delay(log, queue, Duration::ZERO).await;
            let original = reply(&original_answer).expect("appended");
            let retry = reply(&retry_answer).expect("answered");
            assert!(!original.duplicate && retry.duplicate, "{original:?} {retry:?}");
            assert_eq!((retry.base_offset, retry.last_offset), (original.base_offset, original.last_offset));
            assert!(storage.sync_count() > syncs_before);
            reply(&close_answer).expect("closed");
        });
    }

    #[test]
    fn a_duplicate_of_an_unsynced_batch_shares_the_fate_of_its_sync() {
        block_on(async {
            let storage = SimStorage::new();
            let mut log = open_always(&storage).await;
            // The log's first epoch is checkpointed (synced) before its first batch:
            // the failing sync must be the group commit's.
            log.append(batch::build_value_batch(TimestampMs(0), 1, 1), LeaderEpoch(0)).await.expect("append");
            storage.fail_next_syncs(1);
            let (sender, queue) = flume::bounded(16);
            let (original, original_answer) = append(idempotent_batch(0));
            let (retry, retry_answer) = append(idempotent_batch(0));
            let (close, _) = close();
            for op in [original, retry, close] {
                sender.send_async(op).await.expect("queued");
            }
            run_with_commit_delay(log, queue, Duration::ZERO).await;
            // Answering the retry before the sync would have told the producer its
            // batch was at offset 0, which the failed sync never made durable.
            assert!(matches!(reply(&original_answer), Err(EngineError::Poisoned { .. })));
            match reply(&retry_answer) {
                Err(EngineError::Poisoned { .. }) => {}
                other => panic!("the retry of an unsynced batch must wait for its sync, got {other:?}"),
            }
        });
    }

    #[test]
    fn a_duplicate_of_a_durable_batch_is_answered_at_once() {
        block_on(async {
            let storage = SimStorage::new();
            let log = open_always(&storage).await;
            let (sender, queue) = flume::bounded(16);
            let driver = async {
                let (original, original_answer) = append(idempotent_batch(0));
                sender.send_async(original).await.expect("queued");
                let original = original_answer.recv_async().await.expect("answered").expect("appended");
                // The next round's sync fails; the retry of the durable batch does not
                // depend on it.
                storage.fail_next_syncs(1);
                let (next, next_answer) = append(idempotent_batch(1));
                let (retry, retry_answer) = append(idempotent_batch(0));
                sender.send_async(next).await.expect("queued");
                sender.send_async(retry).await.expect("queued");
                let next = next_answer.recv_async().await.expect("answered");
                let retry = retry_answer.recv_async().await.expect("answered").expect("a duplicate");
                assert!(matches!(next, Err(EngineError::Poisoned { .. })), "{next:?}");
                assert!(retry.duplicate);
                assert_eq!(retry.base_offset, original.base_offset);
                let (close, close_answer) = close();
                sender.send_async(close).await.expect("queued");
                close_answer.recv_async().await.expect("answered").expect("closed");
            };
            futures_lite::future::zip(run_with_commit_delay(log, queue, Duration::ZERO), driver).await;
        });
    }

    const LOG_PATH: &str = "/data/actor/0/00000000000000000000.log";

    /// Waits (yielding to the actor) until `done` holds.
    async fn until(mut done: impl FnMut() -> bool) {
        for _ in 0..10_000 {
            if done() {
                return;
            }
            futures_lite::future::yield_now().await;
        }
        panic!("the actor never got there");
    }

    /// Asks for the partition's stats: every op queued before has been performed.
    async fn stats_of(sender: &flume::Sender<PartitionOp>) -> PartitionStats {
        let (reply, answer) = flume::bounded(1);
        sender.send_async(PartitionOp::Stats { reply }).await.expect("queued");
        answer.recv_async().await.expect("answered").expect("stats")
    }

    /// The acknowledgement of an append, checked against the simulated disk: an
    /// acknowledged batch must already be durable (all test batches have one size).
    async fn acknowledged(storage: &SimStorage, answer: &flume::Receiver<Result<AppendInfo>>) -> Result<AppendInfo> {
        let result = answer.recv_async().await.expect("answered");
        if let Ok(info) = &result {
            let batch_bytes = idempotent_batch(0).len() as u64;
            let durable = storage.durable_file_len(Path::new(LOG_PATH)).expect("the segment exists");
            assert!(
                durable >= (info.last_offset.0 as u64 + 1) * batch_bytes,
                "offset {} acknowledged with only {durable} bytes durable",
                info.last_offset
            );
        }
        result
    }

    #[test]
    fn appends_made_while_a_sync_is_in_flight_wait_for_a_later_sync() {
        block_on(async {
            let storage = SimStorage::new();
            let log = open_always(&storage).await;
            let (sender, queue) = flume::bounded(16);
            let driver = async {
                storage.hold_syncs(true);
                let syncs_before = storage.sync_count();
                let (first, first_answer) = append(idempotent_batch(0));
                sender.send_async(first).await.expect("queued");
                until(|| storage.syncs_in_flight() == 1).await;
                let (second, second_answer) = append(idempotent_batch(1));
                let (third, third_answer) = append(idempotent_batch(2));
                sender.send_async(second).await.expect("queued");
                sender.send_async(third).await.expect("queued");
                // Appended behind the sync in flight, which does not cover them; with
                // one sync in flight at most, none is started for them yet.
                let stats = stats_of(&sender).await;
                assert_eq!(
                    (stats.log_end_offset, stats.durable_offset, stats.high_watermark),
                    (Offset(3), Offset(0), Offset(0))
                );
                assert_eq!(storage.syncs_in_flight(), SYNCS_IN_FLIGHT_MAX);
                assert!(first_answer.is_empty() && second_answer.is_empty() && third_answer.is_empty());
                storage.hold_syncs(false);
                let first = acknowledged(&storage, &first_answer).await.expect("appended");
                let second = acknowledged(&storage, &second_answer).await.expect("appended");
                let third = acknowledged(&storage, &third_answer).await.expect("appended");
                assert_eq!(
                    (first.base_offset, second.base_offset, third.base_offset),
                    (Offset(0), Offset(1), Offset(2))
                );
                assert_eq!(storage.sync_count() - syncs_before, 2, "one sync for the first append, one for the rest");
                let stats = stats_of(&sender).await;
                assert_eq!((stats.durable_offset, stats.high_watermark), (Offset(3), Offset(3)));
                let (close, close_answer) = close();
                sender.send_async(close).await.expect("queued");
                close_answer.recv_async().await.expect("answered").expect("closed");
            };
            futures_lite::future::zip(run_with_commit_delay(log, queue, Duration::ZERO), driver).await;
        });
    }

    #[test]
    fn a_failed_sync_in_flight_fails_what_it_covers_and_everything_appended_meanwhile() {
        block_on(async {
            let storage = SimStorage::new();
            let log = open_always(&storage).await;
            let (sender, queue) = flume::bounded(16);
            let driver = async {
                let (durable, durable_answer) = append(idempotent_batch(0));
                sender.send_async(durable).await.expect("queued");
                acknowledged(&storage, &durable_answer).await.expect("appended");
                storage.hold_syncs(true);
                let (covered, covered_answer) = append(idempotent_batch(1));
                sender.send_async(covered).await.expect("queued");
                until(|| storage.syncs_in_flight() == 1).await;
                let (later, later_answer) = append(idempotent_batch(2));
                // A retry of the batch the failing sync covers shares its fate.
                let (retry, retry_answer) = append(idempotent_batch(1));
                // A retry of the durable batch is answered at once.
                let (old_retry, old_retry_answer) = append(idempotent_batch(0));
                for op in [later, retry, old_retry] {
                    sender.send_async(op).await.expect("queued");
                }
                let old_retry = acknowledged(&storage, &old_retry_answer).await.expect("a duplicate");
                assert!(old_retry.duplicate && old_retry.base_offset == Offset(0));
                assert!(covered_answer.is_empty() && later_answer.is_empty() && retry_answer.is_empty());
                storage.fail_next_syncs(1);
                storage.hold_syncs(false);
                for (what, answer) in [("covered", &covered_answer), ("later", &later_answer), ("retry", &retry_answer)]
                {
                    match acknowledged(&storage, answer).await {
                        Err(EngineError::Poisoned { .. }) => {}
                        other => panic!("the {what} append must fail with the sync, got {other:?}"),
                    }
                }
                let (after, after_answer) = append(idempotent_batch(3));
                sender.send_async(after).await.expect("queued");
                assert!(matches!(
                    after_answer.recv_async().await.expect("answered"),
                    Err(EngineError::Poisoned { .. })
                ));
                let stats = stats_of(&sender).await;
                assert_eq!((stats.durable_offset, stats.high_watermark), (Offset(1), Offset(1)));
                let (close, close_answer) = close();
                sender.send_async(close).await.expect("queued");
                close_answer.recv_async().await.expect("answered").expect("closed");
            };
            futures_lite::future::zip(run_with_commit_delay(log, queue, Duration::ZERO), driver).await;
        });
    }

    #[test]
    fn a_truncation_waits_for_the_sync_in_flight_and_commits_the_appends_before_it() {
        block_on(async {
            let storage = SimStorage::new();
            let log = open_always(&storage).await;
            let (sender, queue) = flume::bounded(16);
            let driver = async {
                storage.hold_syncs(true);
                let (first, first_answer) = append(idempotent_batch(0));
                sender.send_async(first).await.expect("queued");
                until(|| storage.syncs_in_flight() == 1).await;
                let (second, second_answer) = append(idempotent_batch(1));
                let (truncate_reply, truncate_answer) = flume::bounded(1);
                sender.send_async(second).await.expect("queued");
                sender
                    .send_async(PartitionOp::Truncate { offset: Offset(1), reply: truncate_reply })
                    .await
                    .expect("queued");
                // The truncation must not cut under the sync in flight: it waits.
                for _ in 0..100 {
                    futures_lite::future::yield_now().await;
                }
                assert!(truncate_answer.is_empty() && first_answer.is_empty());
                storage.hold_syncs(false);
                // Ops run in order: both appends are committed before the truncation
                // (which then cuts the second away: the disk cannot vouch for it here).
                first_answer.recv_async().await.expect("answered").expect("appended");
                second_answer.recv_async().await.expect("answered").expect("appended");
                truncate_answer.recv_async().await.expect("answered").expect("truncated");
                let stats = stats_of(&sender).await;
                assert_eq!(
                    (stats.log_end_offset, stats.durable_offset, stats.high_watermark),
                    (Offset(1), Offset(1), Offset(1))
                );
                let (close, close_answer) = close();
                sender.send_async(close).await.expect("queued");
                close_answer.recv_async().await.expect("answered").expect("closed");
            };
            futures_lite::future::zip(run_with_commit_delay(log, queue, Duration::ZERO), driver).await;
        });
    }

    /// Sends two appends at once (one round, one sync) and holds that sync for
    /// `held`, so the next commit delay is half of it; returns once both are answered.
    async fn two_answered_by_a_held_sync(
        storage: &SimStorage,
        sender: &flume::Sender<PartitionOp>,
        first_sequence: i32,
        held: Duration,
    ) {
        storage.hold_syncs(true);
        let (first, first_answer) = append(idempotent_batch(first_sequence));
        let (second, second_answer) = append(idempotent_batch(first_sequence + 1));
        sender.send_async(first).await.expect("queued");
        sender.send_async(second).await.expect("queued");
        until(|| storage.syncs_in_flight() == 1).await;
        glommio::timer::sleep(held).await;
        storage.hold_syncs(false);
        acknowledged(storage, &first_answer).await.expect("appended");
        acknowledged(storage, &second_answer).await.expect("appended");
    }

    #[test]
    fn the_next_sync_waits_for_as_many_appends_as_the_last_answered_but_not_past_the_delay() {
        let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound).make().expect("executor");
        executor.run(async {
            let storage = SimStorage::new();
            let log = open_always(&storage).await;
            let (sender, queue) = flume::bounded(16);
            let held = Duration::from_millis(400);
            let driver = async {
                // Two answered: the next sync waits for two appends.
                two_answered_by_a_held_sync(&storage, &sender, 0, held).await;
                let (third, third_answer) = append(idempotent_batch(2));
                sender.send_async(third).await.expect("queued");
                assert_eq!(stats_of(&sender).await.log_end_offset, Offset(3));
                assert!(third_answer.is_empty() && storage.syncs_in_flight() == 0, "one of two came back: no sync yet");
                let (fourth, fourth_answer) = append(idempotent_batch(3));
                sender.send_async(fourth).await.expect("queued");
                acknowledged(&storage, &third_answer).await.expect("appended");
                acknowledged(&storage, &fourth_answer).await.expect("appended");

                // Two answered again, but only one comes back: it is synced once the
                // delay (half the held sync) runs out.
                two_answered_by_a_held_sync(&storage, &sender, 4, held).await;
                let answered_at = Instant::now();
                let (alone, alone_answer) = append(idempotent_batch(6));
                sender.send_async(alone).await.expect("queued");
                acknowledged(&storage, &alone_answer).await.expect("appended");
                let waited = answered_at.elapsed();
                assert!(
                    waited >= held / 2 - Duration::from_millis(50),
                    "synced after {waited:?}, before the delay ran out"
                );

                let (close, close_answer) = close();
                sender.send_async(close).await.expect("queued");
                close_answer.recv_async().await.expect("answered").expect("closed");
            };
            futures_lite::future::zip(run_with_commit_delay(log, queue, Duration::from_secs(10)), driver).await;
        });
    }

    #[test]
    fn under_never_and_interval_an_acknowledged_append_survives_a_crash_of_the_process() {
        let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound).make().expect("executor");
        executor.run(async {
            for durability in [Durability::Never, Durability::IntervalMs(60_000)] {
                let storage = SimStorage::new();
                let log = open_with(&storage, durability).await;
                let (sender, queue) = flume::bounded(16);
                let actor = glommio::spawn_local(run_with_commit_delay(log, queue, Duration::ZERO));
                let (first, first_answer) = append(idempotent_batch(0));
                let (second, second_answer) = append(idempotent_batch(1));
                sender.send_async(first).await.expect("queued");
                sender.send_async(second).await.expect("queued");
                let batch_bytes = idempotent_batch(0).len() as u64;
                for answer in [&first_answer, &second_answer] {
                    let info = answer.recv_async().await.expect("answered").expect("appended");
                    let written = storage.written_file_len(Path::new(LOG_PATH)).expect("the segment exists");
                    assert!(
                        written >= (info.last_offset.0 as u64 + 1) * batch_bytes,
                        "{durability:?}: offset {} acknowledged while only {written} bytes left the process",
                        info.last_offset
                    );
                }
                let stats = stats_of(&sender).await;
                assert_eq!((stats.written_offset, stats.high_watermark), (Offset(2), Offset(2)), "{durability:?}");
                assert_eq!(stats.durable_offset, Offset(0), "{durability:?}: nothing asked for a sync yet");

                // SIGKILL: the process's memory is gone, what it wrote is not.
                storage.kill_process();
                drop(sender);
                actor.await;
                let log = open_with(&storage, durability).await;
                assert_eq!(log.log_end_offset(), Offset(2), "{durability:?}: acknowledged appends lost");
                let read = log.read(Offset(0), 1 << 20, None).await.expect("read");
                assert_eq!(read.bytes.len() as u64, 2 * batch_bytes, "{durability:?}");
            }
        });
    }

    #[test]
    fn under_never_a_read_queued_behind_an_append_sees_it_and_not_the_appends_queued_after_it() {
        block_on(async {
            let storage = SimStorage::new();
            let log = open_with(&storage, Durability::Never).await;
            let (sender, queue) = flume::bounded(16);
            let (first, first_answer) = append(idempotent_batch(0));
            let (latest_reply, latest) = flume::bounded(1);
            let (stats_reply, stats) = flume::bounded(1);
            let (second, second_answer) = append(idempotent_batch(1));
            let (close, _) = close();
            let ops = [
                first,
                PartitionOp::ListOffset { spec: OffsetSpec::Latest, reply: latest_reply },
                PartitionOp::Stats { reply: stats_reply },
                second,
                close,
            ];
            for op in ops {
                sender.send_async(op).await.expect("queued");
            }
            run_with_commit_delay(log, queue, Duration::ZERO).await;
            reply(&first_answer).expect("appended");
            reply(&second_answer).expect("appended");
            // Offset 0 was queued before the reads, offset 1 after them.
            let latest = reply(&latest).expect("listed").expect("an offset");
            assert_eq!(latest.0, Offset(1), "ListOffsets behind the append in the same round missed it");
            let stats = reply(&stats).expect("stats");
            assert_eq!((stats.high_watermark, stats.log_end_offset), (Offset(1), Offset(1)));
        });
    }

    #[test]
    fn a_data_waiter_is_answered_only_once_the_synced_high_watermark_passes_its_offset() {
        block_on(async {
            let storage = SimStorage::new();
            let log = open_always(&storage).await;
            let (sender, queue) = flume::bounded(16);
            let wait = |offset| {
                let (reply, answer) = flume::bounded(1);
                (PartitionOp::WaitForData { offset: Offset(offset), reader: Reader::Consumer, reply }, answer)
            };
            let (wait_at_0, at_0) = wait(0);
            let (wait_at_1, at_1) = wait(1);
            let (first, first_answer) = append(idempotent_batch(0));
            let (close, close_answer) = close();
            for op in [wait_at_0, wait_at_1, first, close] {
                sender.send_async(op).await.expect("queued");
            }
            run_with_commit_delay(log, queue, Duration::ZERO).await;
            reply(&first_answer).expect("appended");
            reply(&close_answer).expect("closed");
            // One record (offset 0) was appended and synced: data past 0, not past 1.
            assert!(reply(&at_0).is_ok(), "the waiter at offset 0 sees the new record");
            assert!(at_1.try_recv().is_err(), "nothing past offset 1 exists, so that waiter was never answered");
        });
    }

    /// Sends `op` (made with a fresh reply channel) and waits for its answer.
    async fn ask<T>(sender: &flume::Sender<PartitionOp>, op: impl FnOnce(Reply<T>) -> PartitionOp) -> Result<T> {
        let (reply, answer) = flume::bounded(1);
        sender.send_async(op(reply)).await.expect("queued");
        answer.recv_async().await.expect("answered")
    }

    async fn read_of(sender: &flume::Sender<PartitionOp>, replica: bool) -> ReadResult {
        let reader = if replica { Reader::Replica } else { Reader::Consumer };
        let read =
            |reply| PartitionOp::Read { offset: Offset(0), max_bytes: 1 << 20, offset_limit: None, reader, reply };
        ask(sender, read).await.expect("read")
    }

    #[test]
    fn in_replicated_mode_the_broker_moves_the_high_watermark_up_to_what_is_written() {
        block_on(async {
            let storage = SimStorage::new();
            let log = open_with(&storage, Durability::Never).await;
            let (sender, queue) = flume::bounded(16);
            let driver = async {
                let outside = ask(&sender, |reply| PartitionOp::SetHighWatermark { offset: Offset(0), reply }).await;
                assert!(matches!(outside, Err(EngineError::NotReplicated { .. })), "{outside:?}");
                let hw = ask(&sender, |reply| PartitionOp::SetReplicated { replicated: true, reply }).await;
                assert_eq!(hw.expect("replicated"), Offset(0));
                let (first, first_answer) = append(idempotent_batch(0));
                let (second, second_answer) = append(idempotent_batch(1));
                sender.send_async(first).await.expect("queued");
                sender.send_async(second).await.expect("queued");
                for (answer, end) in [(&first_answer, 2), (&second_answer, 2)] {
                    let info = answer.recv_async().await.expect("answered").expect("appended");
                    assert_eq!(info.log_end_offset, Offset(end), "the written end this replica vouches for");
                }
                let stats = stats_of(&sender).await;
                assert_eq!(
                    (stats.high_watermark, stats.written_offset, stats.replicated),
                    (Offset(0), Offset(2), true)
                );
                assert!(read_of(&sender, false).await.bytes.is_empty(), "a consumer read past the high watermark");
                let replica = read_of(&sender, true).await;
                assert_eq!((replica.next_offset, replica.high_watermark), (Offset(2), Offset(0)));
                // A follower's long poll waits on the written end, a consumer's on the HW.
                ask(&sender, |reply| PartitionOp::WaitForData { offset: Offset(1), reader: Reader::Replica, reply })
                    .await
                    .expect("data for the follower");
                let hw = ask(&sender, |reply| PartitionOp::SetHighWatermark { offset: Offset(1), reply }).await;
                assert_eq!(hw.expect("set"), Offset(1));
                assert_eq!(read_of(&sender, false).await.next_offset, Offset(1));
                let hw = ask(&sender, |reply| PartitionOp::SetHighWatermark { offset: Offset(9), reply }).await;
                assert_eq!(hw.expect("set"), Offset(2), "clamped to the written end");
                let hw = ask(&sender, |reply| PartitionOp::SetHighWatermark { offset: Offset(1), reply }).await;
                assert_eq!(hw.expect("set"), Offset(1), "a new leader may hold a lower one");
                // Out of replicated mode, the log moves it again.
                let hw = ask(&sender, |reply| PartitionOp::SetReplicated { replicated: false, reply }).await;
                assert_eq!(hw.expect("not replicated"), Offset(2));
                let (close, close_answer) = close();
                sender.send_async(close).await.expect("queued");
                close_answer.recv_async().await.expect("answered").expect("closed");
            };
            futures_lite::future::zip(run_with_commit_delay(log, queue, Duration::ZERO), driver).await;
        });
    }

    #[test]
    fn under_always_a_replicated_high_watermark_stops_at_the_durable_offset() {
        block_on(async {
            let storage = SimStorage::new();
            let log = open_always(&storage).await;
            let (sender, queue) = flume::bounded(16);
            let driver = async {
                ask(&sender, |reply| PartitionOp::SetReplicated { replicated: true, reply }).await.expect("set");
                let (first, first_answer) = append(idempotent_batch(0));
                sender.send_async(first).await.expect("queued");
                let info = acknowledged(&storage, &first_answer).await.expect("appended");
                assert_eq!(info.log_end_offset, Offset(1));
                storage.hold_syncs(true);
                let (second, second_answer) = append(idempotent_batch(1));
                sender.send_async(second).await.expect("queued");
                until(|| storage.syncs_in_flight() == 1).await;
                let hw = ask(&sender, |reply| PartitionOp::SetHighWatermark { offset: Offset(2), reply }).await;
                assert_eq!(hw.expect("set"), Offset(1), "offset 1 is written but not yet durable");
                storage.hold_syncs(false);
                let info = acknowledged(&storage, &second_answer).await.expect("appended");
                assert_eq!(info.log_end_offset, Offset(2));
                let stats = stats_of(&sender).await;
                assert_eq!(
                    (stats.high_watermark, stats.durable_offset),
                    (Offset(1), Offset(2)),
                    "only the broker moves it"
                );
                let (close, close_answer) = close();
                sender.send_async(close).await.expect("queued");
                close_answer.recv_async().await.expect("answered").expect("closed");
            };
            futures_lite::future::zip(run_with_commit_delay(log, queue, Duration::ZERO), driver).await;
        });
    }
}
