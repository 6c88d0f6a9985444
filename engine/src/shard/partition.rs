//! The partition actor: one task per partition, on its owning shard, that holds the
//! [`PartitionLog`] and serves operations from a bounded queue in arrival order.
//!
//! Group commit: the actor takes everything queued (up to [`OPS_PER_ROUND_MAX`]),
//! performs it, and under `fsync: always` issues one sync for all the appends of the
//! round before acknowledging any of them. Appends that arrive while that sync is in
//! flight queue up and share the next one. The high watermark only advances over
//! synced offsets under `always`, so no consumer sees an unacknowledged record.
//! Under `interval`, the actor syncs once the oldest unsynced append is that old.

use std::time::{Duration, Instant};

use crate::config::{Durability, TopicConfig};
use crate::error::{EngineError, Result};
use crate::log::{AppendInfo, OffsetSpec, PartitionLog, PartitionStats, ReadResult};
use crate::storage::Storage;
use crate::types::{LeaderEpoch, Offset, TimestampMs};

/// Operations served per round; bounds the latency one round can add.
pub const OPS_PER_ROUND_MAX: usize = 1024;

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
