//! Fetch (key 1), v4–v12: stored batches from each requested partition, as the
//! bytes on disk (never decoded), up to the high watermark.
//!
//! Long poll: when less than `min_bytes` is available the request waits, up to
//! `max_wait_ms` (`min_bytes` 0 never waits), and re-reads the partitions as data arrives
//! ([`corelog_engine::shard::EngineHandle::wait_for_data`]). Budgets: each partition gets at
//! most `partition_max_bytes`, the response at most `max_bytes`, except that the
//! first batch found is always returned whole so a large batch cannot stall a
//! consumer (KIP-74). Fetch sessions (KIP-227) are declined (session id 0), so
//! clients send full requests.
//!
//! Isolation: a consumer's `read_uncommitted` fetch (`isolation_level` 0) reads up
//! to the high watermark; a `read_committed` one (1) up to the last stable offset
//! (`dispatch_read_committed`, long-polling on it), with the aborted transactions
//! overlapping what it returns (`aborted_transactions`: producer id and first
//! offset, for the client to drop those producers' records up to their ABORT
//! marker); `read_uncommitted` answers them null, as Kafka does. Every partition's
//! answer carries the last stable offset, whatever the isolation.
//!
//! A follower's fetch (in a cluster, `replica_id` >= 0) reads up to the leader's
//! written log end instead (`read_replica`, long-polling on it), whatever its
//! isolation level, only from a
//! partition this node leads in the follower's leader epoch (else
//! NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH or UNKNOWN_LEADER_EPOCH); its fetch
//! offset is the follower's log end, which the partition's [`LeaderSlot`] records
//! (the high watermark may move, the follower may join the ISR), and the high
//! watermark answered is the leader's after that. OFFSET_OUT_OF_RANGE carries the
//! leader's log start offset, for the follower to tell "behind the start" from
//! "past the end".
//!
//! Staged (see the handlers' module doc): the request is dispatched once the first
//! read of every partition is queued, so it sees what the requests sent before it
//! on the connection appended; the re-reads of a long poll are not ordered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{AbortedTransaction, FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;

use super::resolve::{partition_of, Intent, PartitionRef, TopicRef};
use super::{first_of, RequestContext, Versions};
use crate::cluster::records::NodeId;
use crate::cluster::replica_manager::{LeaderSlot, ReplicaManager};
use crate::kafka::errors::response_error;
use corelog_engine::error::EngineError;
use corelog_engine::log::ReadResult;
use corelog_engine::shard::partition::Reader;
use corelog_engine::shard::{Dispatched, EngineHandle};
use corelog_engine::types::{LeaderEpoch, Offset, TopicPartition};

pub const VERSIONS: Versions = Versions::new(4, 12);

/// `isolation_level` of a consumer that reads committed data only.
const READ_COMMITTED: i8 = 1;

/// Longest wait a client may ask for; Kafka clients use 500 ms by default.
const MAX_WAIT_MS_MAX: i32 = 30_000;

struct Wanted {
    partition: Result<TopicPartition, ResponseError>,
    fetch_offset: Offset,
    partition_max_bytes: usize,
    /// A follower's fetch: the partition's leader state.
    slot: Option<Arc<LeaderSlot>>,
    /// How far the read goes: the fetcher and its isolation level.
    reader: Reader,
}

/// A follower fetching (a cluster node's `replica_id`), and this node's led partitions.
#[derive(Clone)]
struct Replica {
    follower: NodeId,
    replicas: Arc<ReplicaManager>,
}

/// A partition's read failed: the error, and the log start offset when it was
/// OFFSET_OUT_OF_RANGE (-1 otherwise).
type ReadFailure = (ResponseError, i64);

/// Queues the first read of every partition; the returned future waits for them,
/// long-polls if asked to, and answers.
pub async fn dispatch(
    context: &RequestContext<'_>,
    request: FetchRequest,
) -> impl std::future::Future<Output = FetchResponse> {
    let engine = context.shard.engine.clone();
    let resolver = context.resolver();
    let started = Instant::now();
    let max_bytes = if request.max_bytes <= 0 { usize::MAX } else { request.max_bytes as usize };
    let replica = match &context.shard.replicas {
        Some(replicas) if request.replica_id.0 >= 0 => {
            Some(Replica { follower: request.replica_id.0, replicas: replicas.clone() })
        }
        _ => None,
    };

    let mut shape = Vec::with_capacity(request.topics.len());
    let mut wanted = Vec::new();
    for topic in &request.topics {
        let resolved = resolver.topic(TopicRef::Name(topic.topic.0.as_str()), Intent::Read);
        for fetch in &topic.partitions {
            // The current leader epoch (v9+; -1 before): FENCED_LEADER_EPOCH when the
            // fetcher's is older, UNKNOWN_LEADER_EPOCH when newer than this leader's.
            let wanted_ref =
                PartitionRef::new(fetch.partition).with_current_leader_epoch(LeaderEpoch(fetch.current_leader_epoch));
            let partition =
                partition_of(&resolved, wanted_ref).map(|resolved| resolved.partition).map_err(|refusal| refusal.error);
            let (partition, slot) = match (&replica, partition) {
                (Some(replica), Ok(partition)) => match leader_for(replica, &partition, fetch.current_leader_epoch) {
                    Ok(slot) => (Ok(partition), Some(slot)),
                    Err(error) => (Err(error), None),
                },
                (_, partition) => (partition, None),
            };
            let reader = match (&slot, request.isolation_level) {
                (Some(_), _) => Reader::Replica,
                (None, READ_COMMITTED) => Reader::CommittedConsumer,
                (None, _) => Reader::Consumer,
            };
            wanted.push(Wanted {
                partition,
                fetch_offset: Offset(fetch.fetch_offset),
                partition_max_bytes: fetch.partition_max_bytes.max(0) as usize,
                slot,
                reader,
            });
        }
        shape.push((topic.topic.clone(), topic.partitions.iter().map(|p| p.partition).collect::<Vec<_>>()));
    }

    let first_reads = dispatch_reads(&engine, &wanted, max_bytes).await;
    async move {
        let results = read_replies(first_reads, max_bytes).await;
        let high_watermarks = match &replica {
            Some(replica) => followed(replica, &engine, &wanted, &results).await,
            None => Vec::new(),
        };
        respond(&engine, request, started, shape, wanted, results, high_watermarks).await
    }
}

/// The leader state of a partition a follower fetches in `current_leader_epoch`.
fn leader_for(
    replica: &Replica,
    partition: &TopicPartition,
    current_leader_epoch: i32,
) -> Result<Arc<LeaderSlot>, ResponseError> {
    let slot = replica.replicas.leader(partition).ok_or(ResponseError::NotLeaderOrFollower)?;
    match current_leader_epoch {
        -1 => Ok(slot),
        epoch if epoch < slot.leader_epoch.0 => Err(ResponseError::FencedLeaderEpoch),
        epoch if epoch > slot.leader_epoch.0 => Err(ResponseError::UnknownLeaderEpoch),
        _ => Ok(slot),
    }
}

/// Records each follower's fetch offset that the first read found in the log; the
/// high watermark to answer each partition with.
async fn followed(
    replica: &Replica,
    engine: &EngineHandle,
    wanted: &[Wanted],
    results: &[Result<ReadResult, ReadFailure>],
) -> Vec<Option<Offset>> {
    let mut high_watermarks = Vec::with_capacity(wanted.len());
    for (w, result) in wanted.iter().zip(results) {
        let high_watermark = match (&w.partition, &w.slot, result) {
            (Ok(partition), Some(slot), Ok(_)) => {
                Some(replica.replicas.fetched(engine, partition, slot, replica.follower, w.fetch_offset).await)
            }
            _ => None,
        };
        high_watermarks.push(high_watermark);
    }
    high_watermarks
}

/// Waits for data as the request asks, re-reading as it arrives, then answers.
async fn respond(
    engine: &EngineHandle,
    request: FetchRequest,
    started: Instant,
    shape: Vec<(kafka_protocol::messages::TopicName, Vec<i32>)>,
    wanted: Vec<Wanted>,
    mut results: Vec<Result<ReadResult, ReadFailure>>,
    high_watermarks: Vec<Option<Offset>>,
) -> FetchResponse {
    let max_wait = Duration::from_millis(request.max_wait_ms.clamp(0, MAX_WAIT_MS_MAX) as u64);
    let min_bytes = request.min_bytes.max(0) as usize;
    let max_bytes = if request.max_bytes <= 0 { usize::MAX } else { request.max_bytes as usize };
    loop {
        let total: usize = results.iter().map(|r| r.as_ref().map_or(0, |read| read.bytes.len())).sum();
        let any_error = results.iter().any(|r| r.is_err());
        let elapsed = started.elapsed();
        // `min_bytes` 0 answers at once, with or without data, as Kafka's
        // `ReplicaManager.fetchMessages` does (`bytesReadable >= minBytes`).
        if total >= min_bytes || any_error || elapsed >= max_wait || wanted.is_empty() {
            break;
        }
        // Wait until one of the partitions has data past its fetch offset, or the
        // deadline; then read everything again (another may have grown too).
        let waits: Vec<_> = wanted
            .iter()
            .filter_map(|w| w.partition.as_ref().ok().map(|p| (p.clone(), w.fetch_offset, w.reader)))
            .map(|(partition, offset, reader)| {
                let engine = engine.clone();
                async move {
                    match reader {
                        Reader::Replica => engine.wait_for_replica_data(&partition, offset).await,
                        Reader::CommittedConsumer => engine.wait_for_committed_data(&partition, offset).await,
                        Reader::Consumer => engine.wait_for_data(&partition, offset).await,
                    }
                }
            })
            .collect();
        let remaining = max_wait - elapsed;
        let any_data = async {
            first_of(waits).await;
        };
        let timeout = glommio::timer::sleep(remaining);
        futures_lite::future::or(any_data, timeout).await;
        results = read_replies(dispatch_reads(engine, &wanted, max_bytes).await, max_bytes).await;
    }

    let isolation_committed = request.isolation_level == READ_COMMITTED;
    answer(shape, results, high_watermarks, isolation_committed)
}

/// The response: each partition's read, in request order.
fn answer(
    shape: Vec<(kafka_protocol::messages::TopicName, Vec<i32>)>,
    results: Vec<Result<ReadResult, ReadFailure>>,
    high_watermarks: Vec<Option<Offset>>,
    isolation_committed: bool,
) -> FetchResponse {
    let mut results = results.into_iter();
    let mut high_watermarks = high_watermarks.into_iter();
    let responses = shape
        .into_iter()
        .map(|(topic, indexes)| {
            let partitions = indexes
                .into_iter()
                .map(|index| {
                    let data = PartitionData::default().with_partition_index(index);
                    // Null for read_uncommitted, as Kafka answers; a list for read_committed.
                    let data = data.with_aborted_transactions(isolation_committed.then(Vec::new));
                    let leader_high_watermark = high_watermarks.next().flatten();
                    match results.next() {
                        Some(Ok(read)) => {
                            let high_watermark = leader_high_watermark.unwrap_or(read.high_watermark);
                            let last_stable_offset = read.last_stable_offset.min(high_watermark);
                            let data = match isolation_committed {
                                true => data.with_aborted_transactions(Some(aborted(&read))),
                                false => data,
                            };
                            data.with_high_watermark(high_watermark.0)
                                .with_last_stable_offset(last_stable_offset.0)
                                .with_log_start_offset(read.log_start_offset.0)
                                .with_records(Some(Bytes::from(read.bytes)))
                        }
                        Some(Err((error, log_start_offset))) => data
                            .with_error_code(error.code())
                            .with_high_watermark(-1)
                            .with_last_stable_offset(-1)
                            .with_log_start_offset(log_start_offset),
                        None => data.with_error_code(ResponseError::UnknownServerError.code()),
                    }
                })
                .collect();
            FetchableTopicResponse::default().with_topic(topic).with_partitions(partitions)
        })
        .collect();
    FetchResponse::default().with_responses(responses)
}

/// Queues a read of every wanted partition, one after the other in request order.
async fn dispatch_reads(
    engine: &EngineHandle,
    wanted: &[Wanted],
    max_bytes: usize,
) -> Vec<Result<Dispatched<ReadResult>, ReadFailure>> {
    let mut reads = Vec::with_capacity(wanted.len());
    for w in wanted {
        let read = match &w.partition {
            Ok(partition) => {
                let budget = w.partition_max_bytes.min(max_bytes);
                let read = match w.reader {
                    Reader::Replica => engine.dispatch_read_replica(partition, w.fetch_offset, budget).await,
                    Reader::CommittedConsumer => {
                        engine.dispatch_read_committed(partition, w.fetch_offset, budget).await
                    }
                    Reader::Consumer => engine.dispatch_read(partition, w.fetch_offset, budget, None).await,
                };
                read.map_err(|e| failure(&e))
            }
            Err(error) => Err((*error, -1)),
        };
        reads.push(read);
    }
    reads
}

/// Waits for the reads (all queued, so as long as the slowest), then applies the
/// response budget in request order: once `max_bytes` is spent, later partitions
/// return no records (but the first non-empty one is always kept).
async fn read_replies(
    reads: Vec<Result<Dispatched<ReadResult>, ReadFailure>>,
    max_bytes: usize,
) -> Vec<Result<ReadResult, ReadFailure>> {
    let mut results = Vec::with_capacity(reads.len());
    for read in reads {
        results.push(match read {
            Ok(pending) => pending.reply().await.map_err(|error| failure(&error)),
            Err(failure) => Err(failure),
        });
    }
    let mut spent = 0usize;
    for read in results.iter_mut().flatten() {
        if spent > 0 && spent + read.bytes.len() > max_bytes {
            read.bytes.clear();
        }
        spent += read.bytes.len();
    }
    results
}

/// A committed read's aborted transactions, as the response lists them.
fn aborted(read: &ReadResult) -> Vec<AbortedTransaction> {
    let to_wire = |txn: &corelog_engine::segment::txn_index::AbortedTxn| {
        AbortedTransaction::default()
            .with_producer_id(kafka_protocol::messages::ProducerId(txn.producer_id.0))
            .with_first_offset(txn.first_offset.0)
    };
    read.aborted_transactions.iter().map(to_wire).collect()
}

fn failure(error: &EngineError) -> ReadFailure {
    let log_start_offset = match error {
        EngineError::OffsetOutOfRange { log_start_offset, .. } => log_start_offset.0,
        _ => -1,
    };
    (response_error(error), log_start_offset)
}
