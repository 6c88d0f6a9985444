//! The partition actor: one task per partition, on its owning shard, that holds the
//! [`PartitionLog`] and serves operations from a bounded queue in arrival order.
//!
//! Group commit: the actor takes everything queued (up to [`OPS_PER_ROUND_MAX`]),
//! performs it, and under `fsync: always` issues one sync for all the appends of the
//! round before acknowledging any of them. Appends that arrive while that sync is in
//! flight queue up and share the next one. The high watermark only advances over
//! synced offsets under `always`, so no consumer sees an unacknowledged record.
//! Under `interval`, the actor syncs once the oldest unsynced append is that old.
//!
//! A duplicate (a retried idempotent batch, [`AppendInfo::duplicate`]) is answered
//! with its original's offsets under the same rule: under `always`, only once those
//! offsets are durable. Its original was either synced in an earlier round (then the
//! duplicate is answered at once) or appended in this round, and then the duplicate
//! waits for this round's sync and shares its outcome, so a retry never learns of an
//! offset that a crash could still take away.

use std::time::{Duration, Instant};

use crate::config::{Durability, TopicConfig};
use crate::error::{EngineError, Result};
use crate::log::{AppendInfo, OffsetSpec, PartitionLog, PartitionStats, ReadResult};
use crate::storage::Storage;
use crate::types::{LeaderEpoch, Offset, TimestampMs};

/// Operations served per round; bounds the latency one round can add.
pub const OPS_PER_ROUND_MAX: usize = 1024;

/// Long-poll fetches waiting on one partition. Past this, the oldest is answered
/// early (it re-reads, finds nothing new and waits again): bounded memory, no loss.
pub const DATA_WAITERS_MAX: usize = 4096;

pub type Reply<T> = flume::Sender<Result<T>>;

pub enum PartitionOp {
    Append { bytes: Vec<u8>, leader_epoch: LeaderEpoch, reply: Reply<AppendInfo> },
    Read { offset: Offset, max_bytes: usize, offset_limit: Option<Offset>, reply: Reply<ReadResult> },
    ListOffset { spec: OffsetSpec, reply: Reply<Option<(Offset, TimestampMs)>> },
    Sync { reply: Reply<Offset> },
    Truncate { offset: Offset, reply: Reply<()> },
    DeleteRecords { offset: Offset, reply: Reply<Offset> },
    SetConfig { config: TopicConfig, reply: Reply<()> },
    Stats { reply: Reply<PartitionStats> },
    /// Answered once the high watermark is past `offset` (a long-poll fetch waits on
    /// it); a waiter whose requester gave up is dropped at the end of a round.
    WaitForData { offset: Offset, reply: Reply<()> },
    /// Periodic: roll by age, retention.
    Housekeeping,
    /// Clean close (`delete`: remove the data too). The actor ends after replying.
    Close { delete: bool, reply: Reply<()> },
}

fn answer<T>(reply: Reply<T>, result: Result<T>) {
    // The requester may have given up (dropped its receiver); that is not an error here.
    if reply.send(result).is_err() {
        tracing::debug!("a reply found its requester gone");
    }
}

/// Runs until a `Close` op or until every sender is dropped (then closes cleanly).
pub async fn run<S: Storage>(mut log: PartitionLog<S>, queue: flume::Receiver<PartitionOp>) {
    let mut round: Vec<PartitionOp> = Vec::with_capacity(64);
    let mut waiting_for_sync: Vec<(AppendInfo, Reply<AppendInfo>)> = Vec::new();
    let mut waiting_for_data: Vec<(Offset, Reply<()>)> = Vec::new();
    // Under `interval`, when the oldest unsynced append was made.
    let mut unsynced_since: Option<Instant> = None;
    loop {
        let deadline = match (log.config().durability, unsynced_since) {
            (Durability::IntervalMs(ms), Some(since)) => Some(since + Duration::from_millis(ms)),
            _ => None,
        };
        match next_op(&queue, deadline).await {
            Some(Ok(op)) => round.push(op),
            Some(Err(flume::RecvError::Disconnected)) => {
                let partition = log.partition().clone();
                if let Err(error) = log.close().await {
                    tracing::error!("closing {partition} failed: {error}");
                }
                return;
            }
            None => {
                if let Err(error) = log.sync().await {
                    tracing::error!("interval sync of {} failed: {error}", log.partition());
                }
                unsynced_since = None;
                continue;
            }
        }
        while round.len() < OPS_PER_ROUND_MAX {
            match queue.try_recv() {
                Ok(op) => round.push(op),
                Err(_) => break,
            }
        }
        let mut close = None;
        for op in round.drain(..) {
            match op {
                PartitionOp::Append { bytes, leader_epoch, reply } => match log.append(bytes, leader_epoch).await {
                    Ok(info) if info.duplicate && info.last_offset < log.durable_offset() => answer(reply, Ok(info)),
                    Ok(info) if log.config().durability == Durability::Always => waiting_for_sync.push((info, reply)),
                    Ok(info) => {
                        log.set_high_watermark(log.log_end_offset());
                        answer(reply, Ok(info));
                    }
                    Err(error) => answer(reply, Err(error)),
                },
                PartitionOp::Read { offset, max_bytes, offset_limit, reply } => {
                    answer(reply, log.read(offset, max_bytes, offset_limit).await)
                }
                PartitionOp::ListOffset { spec, reply } => answer(reply, log.list_offset(spec).await),
                PartitionOp::Sync { reply } => answer(reply, log.sync().await),
                PartitionOp::Truncate { offset, reply } => answer(reply, log.truncate_to(offset).await),
                PartitionOp::DeleteRecords { offset, reply } => answer(reply, log.delete_records(offset).await),
                PartitionOp::SetConfig { config, reply } => {
                    log.set_config(config);
                    answer(reply, Ok(()));
                }
                PartitionOp::Stats { reply } => answer(reply, Ok(log.stats())),
                PartitionOp::WaitForData { offset, reply } => {
                    if log.high_watermark() > offset {
                        answer(reply, Ok(()));
                    } else {
                        if waiting_for_data.len() >= DATA_WAITERS_MAX {
                            let (_, oldest) = waiting_for_data.remove(0);
                            answer(oldest, Ok(()));
                        }
                        waiting_for_data.push((offset, reply));
                    }
                }
                PartitionOp::Housekeeping => {
                    if let Err(error) = log.housekeeping().await {
                        tracing::error!("housekeeping of {} failed: {error}", log.partition());
                    }
                }
                PartitionOp::Close { delete, reply } => {
                    close = Some((delete, reply));
                    break;
                }
            }
        }
        if !waiting_for_sync.is_empty() {
            commit(&mut log, &mut waiting_for_sync).await;
        }
        if !waiting_for_data.is_empty() {
            let high_watermark = log.high_watermark();
            waiting_for_data.retain(|(offset, reply)| {
                if reply.is_disconnected() {
                    return false;
                }
                if high_watermark > *offset {
                    // A dropped receiver here only means the fetch timed out meanwhile.
                    let _ = reply.send(Ok(()));
                    return false;
                }
                true
            });
        }
        if log.durable_offset() == log.log_end_offset() {
            unsynced_since = None;
        } else if unsynced_since.is_none() {
            unsynced_since = Some(Instant::now());
        }
        if let Some((delete, reply)) = close {
            // Ops queued behind the close are dropped with it; their requesters see
            // a disconnected reply channel.
            let result = if delete { log.delete().await } else { log.close().await };
            answer(reply, result);
            return;
        }
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

/// One fdatasync for every append of the round, then all the acknowledgements.
async fn commit<S: Storage>(log: &mut PartitionLog<S>, waiting: &mut Vec<(AppendInfo, Reply<AppendInfo>)>) {
    match log.sync().await {
        Ok(durable) => {
            log.set_high_watermark(durable);
            for (info, reply) in waiting.drain(..) {
                answer(reply, Ok(info));
            }
        }
        Err(error) => {
            let message = error.to_string();
            let no_space = matches!(error, EngineError::NoSpace { .. });
            if no_space {
                if let Err(discard) = log.discard_unsynced().await {
                    tracing::error!("discarding unsynced appends of {} failed: {discard}", log.partition());
                }
            }
            for (_, reply) in waiting.drain(..) {
                let error = match &error {
                    EngineError::NoSpace { op, path } => EngineError::NoSpace { op, path: path.clone() },
                    _ => EngineError::Poisoned { partition: log.partition().clone(), cause: message.clone() },
                };
                answer(reply, Err(error));
            }
        }
    }
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
        let config = TopicConfig { durability: Durability::Always, ..TopicConfig::default() };
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
            run(log, queue).await;
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
            let log = open_always(&storage).await;
            storage.fail_next_syncs(1);
            let (sender, queue) = flume::bounded(16);
            let (original, original_answer) = append(idempotent_batch(0));
            let (retry, retry_answer) = append(idempotent_batch(0));
            let (close, _) = close();
            for op in [original, retry, close] {
                sender.send_async(op).await.expect("queued");
            }
            run(log, queue).await;
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
            futures_lite::future::zip(run(log, queue), driver).await;
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
                (PartitionOp::WaitForData { offset: Offset(offset), reply }, answer)
            };
            let (wait_at_0, at_0) = wait(0);
            let (wait_at_1, at_1) = wait(1);
            let (first, first_answer) = append(idempotent_batch(0));
            let (close, close_answer) = close();
            for op in [wait_at_0, wait_at_1, first, close] {
                sender.send_async(op).await.expect("queued");
            }
            run(log, queue).await;
            reply(&first_answer).expect("appended");
            reply(&close_answer).expect("closed");
            // One record (offset 0) was appended and synced: data past 0, not past 1.
            assert!(reply(&at_0).is_ok(), "the waiter at offset 0 sees the new record");
            assert!(at_1.try_recv().is_err(), "nothing past offset 1 exists, so that waiter was never answered");
        });
    }
}
