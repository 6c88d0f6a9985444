//! Fetch (key 1), v4–v12: stored batches from each requested partition, as the
//! bytes on disk (never decoded), up to the high watermark.
//!
//! Long poll: when less than `min_bytes` is available the request waits, up to
//! `max_wait_ms` (`min_bytes` 0 never waits), and re-reads the partitions as data arrives
//! ([`corelog_engine::shard::EngineHandle::wait_for_data`]). Fetch sessions (KIP-227) are
//! declined (session id 0), so clients send full requests.
//!
//! Budgets, applied while reading as Kafka's `ReplicaManager.readFromLog` does: the
//! response carries at most min(`max_bytes`, the broker's `fetch.max.bytes`), and
//! each partition, in request order, at most min(its `partition_max_bytes`, what the
//! partitions before it left), so the engine never reads much more than the response
//! may carry. The first batch of the first non-empty partition is returned whole
//! even when larger than both (KIP-74), so a large batch cannot stall a consumer;
//! after it, a partition whose next batch does not fit answers no records. Reads go
//! in waves of at most [`READS_IN_FLIGHT_MAX`] partitions, each reserving its whole
//! budget from what is left (a partition whose budget would be cut short by the
//! reservations before it waits for the next wave), so a wave answers what reading
//! one partition after the other would. Limit: a partition of a wave may read one
//! batch more than it keeps (the engine returns at least one batch), so a pass holds
//! at most the budget plus one batch per partition of a wave.
//!
//! A partition named more than once is answered once, as Kafka does (its
//! `FetchRequest.fetchData` is a map by topic-partition): at the place it was first
//! named, with the fetch offset and sizes it was named with last. So a request
//! naming one partition many times reads it once.
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
//! read of every partition is done (its waves one after the other), so it sees what
//! the requests sent before it on the connection appended; the re-reads of a long
//! poll are not ordered.

use std::collections::hash_map::{Entry, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::messages::fetch_response::{AbortedTransaction, FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;

use super::resolve::{partition_of, Intent, PartitionRef, Refusal, ResolvedTopic, TopicRef};
use super::{first_of, Pacer, RequestContext, Versions};
use crate::cluster::records::NodeId;
use crate::cluster::replica_manager::{LeaderSlot, ReplicaManager};
use crate::kafka::errors::response_error;
use corelog_engine::batch::BatchHeader;
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

/// Partition reads of one Fetch queued at once (a wave, see the module doc): bounds
/// the reads in flight and the bytes they hold, whatever the request names.
pub const READS_IN_FLIGHT_MAX: usize = 32;

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

/// The response's topics in order, each with its partitions' indexes.
type Shape = Vec<(kafka_protocol::messages::TopicName, Vec<i32>)>;

/// A partition's read failed: the error, and the log start offset when it was
/// OFFSET_OUT_OF_RANGE (-1 otherwise).
type ReadFailure = (ResponseError, i64);

/// Reads every partition once, under the budgets (the dispatch stage); the returned
/// future long-polls if asked to, and answers.
pub async fn dispatch(
    context: &RequestContext<'_>,
    request: FetchRequest,
) -> impl std::future::Future<Output = FetchResponse> {
    let engine = context.shard.engine.clone();
    let resolver = context.resolver();
    let started = Instant::now();
    let budget = Budget::new(&request, context.shard.broker.config.fetch_bytes_max);
    let replica = match &context.shard.replicas {
        Some(replicas) if request.replica_id.0 >= 0 => {
            Some(Replica { follower: request.replica_id.0, replicas: replicas.clone() })
        }
        _ => None,
    };

    // Each partition once, where it was first named, as it was named last.
    let mut named: Vec<(kafka_protocol::messages::TopicName, i32)> = Vec::new();
    let mut wanted: Vec<Wanted> = Vec::new();
    let mut place: HashMap<(&str, i32), usize> = HashMap::new();
    let mut pacer = Pacer::default();
    for topic in &request.topics {
        let resolved = resolver.topic(TopicRef::Name(topic.topic.0.as_str()), Intent::Read);
        for fetch in &topic.partitions {
            let one = wanted_partition(&resolved, fetch, replica.as_ref(), request.isolation_level);
            match place.entry((topic.topic.0.as_str(), fetch.partition)) {
                Entry::Occupied(at) => wanted[*at.get()] = one,
                Entry::Vacant(at) => {
                    at.insert(wanted.len());
                    wanted.push(one);
                    named.push((topic.topic.clone(), fetch.partition));
                }
            }
            pacer.entry().await;
        }
    }
    drop(place);
    let shape = shape_of(named);

    // The first pass reads in the dispatch stage: its reads reach each partition
    // after the ops of the requests sent before it (see the handlers' module doc).
    let first_results = read_all(&engine, &wanted, budget.response_bytes_max).await;
    async move {
        let high_watermarks = match &replica {
            Some(replica) => followed(replica, &engine, &wanted, &first_results).await,
            None => Vec::new(),
        };
        respond(&engine, request, budget, started, shape, wanted, first_results, high_watermarks).await
    }
}

/// The byte limits of one Fetch.
#[derive(Debug, Clone, Copy)]
struct Budget {
    /// min(`max_bytes`, `fetch.max.bytes`), as Kafka's `KafkaApis.handleFetchRequest`.
    response_bytes_max: usize,
    /// `min_bytes`, at most `response_bytes_max` (as Kafka caps it).
    min_bytes: usize,
}

impl Budget {
    fn new(request: &FetchRequest, fetch_bytes_max: usize) -> Budget {
        let max_bytes = if request.max_bytes <= 0 { usize::MAX } else { request.max_bytes as usize };
        let response_bytes_max = max_bytes.min(fetch_bytes_max);
        Budget { response_bytes_max, min_bytes: (request.min_bytes.max(0) as usize).min(response_bytes_max) }
    }
}

/// One named partition, resolved: what to read and how far.
fn wanted_partition(
    resolved: &Result<ResolvedTopic, Refusal>,
    fetch: &FetchPartition,
    replica: Option<&Replica>,
    isolation_level: i8,
) -> Wanted {
    // The current leader epoch (v9+; -1 before): FENCED_LEADER_EPOCH when the
    // fetcher's is older, UNKNOWN_LEADER_EPOCH when newer than this leader's.
    let wanted_ref =
        PartitionRef::new(fetch.partition).with_current_leader_epoch(LeaderEpoch(fetch.current_leader_epoch));
    let partition =
        partition_of(resolved, wanted_ref).map(|resolved| resolved.partition).map_err(|refusal| refusal.error);
    let (partition, slot) = match (replica, partition) {
        (Some(replica), Ok(partition)) => match leader_for(replica, &partition, fetch.current_leader_epoch) {
            Ok(slot) => (Ok(partition), Some(slot)),
            Err(error) => (Err(error), None),
        },
        (_, partition) => (partition, None),
    };
    let reader = match (&slot, isolation_level) {
        (Some(_), _) => Reader::Replica,
        (None, READ_COMMITTED) => Reader::CommittedConsumer,
        (None, _) => Reader::Consumer,
    };
    Wanted {
        partition,
        fetch_offset: Offset(fetch.fetch_offset),
        partition_max_bytes: fetch.partition_max_bytes.max(0) as usize,
        slot,
        reader,
    }
}

/// The response's topics, each with its partitions' indexes: consecutive partitions
/// of one topic share an entry, as Kafka's `FetchResponse` groups them.
fn shape_of(named: Vec<(kafka_protocol::messages::TopicName, i32)>) -> Shape {
    let mut shape: Shape = Vec::new();
    for (topic, index) in named {
        match shape.last_mut() {
            Some((last, indexes)) if *last == topic => indexes.push(index),
            _ => shape.push((topic, vec![index])),
        }
    }
    shape
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
#[allow(clippy::too_many_arguments)]
async fn respond(
    engine: &EngineHandle,
    request: FetchRequest,
    budget: Budget,
    started: Instant,
    shape: Shape,
    wanted: Vec<Wanted>,
    mut results: Vec<Result<ReadResult, ReadFailure>>,
    high_watermarks: Vec<Option<Offset>>,
) -> FetchResponse {
    let max_wait = Duration::from_millis(request.max_wait_ms.clamp(0, MAX_WAIT_MS_MAX) as u64);
    loop {
        let total: usize = results.iter().map(|r| r.as_ref().map_or(0, |read| read.bytes.len())).sum();
        let any_error = results.iter().any(|r| r.is_err());
        let elapsed = started.elapsed();
        // `min_bytes` 0 answers at once, with or without data, as Kafka's
        // `ReplicaManager.fetchMessages` does (`bytesReadable >= minBytes`).
        if total >= budget.min_bytes || any_error || elapsed >= max_wait || wanted.is_empty() {
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
        // Free the read bytes before the next pass reads as much again.
        drop(results);
        results = read_all(engine, &wanted, budget.response_bytes_max).await;
    }

    let isolation_committed = request.isolation_level == READ_COMMITTED;
    answer(shape, results, high_watermarks, isolation_committed).await
}

/// The response: each partition's read, in request order (paced, see [`Pacer`]).
async fn answer(
    shape: Shape,
    results: Vec<Result<ReadResult, ReadFailure>>,
    high_watermarks: Vec<Option<Offset>>,
    isolation_committed: bool,
) -> FetchResponse {
    let mut results = results.into_iter();
    let mut high_watermarks = high_watermarks.into_iter();
    let mut pacer = Pacer::default();
    let mut responses = Vec::with_capacity(shape.len());
    for (topic, indexes) in shape {
        let mut partitions = Vec::with_capacity(indexes.len());
        for index in indexes {
            let data = PartitionData::default().with_partition_index(index);
            // Null for read_uncommitted, as Kafka answers; a list for read_committed.
            let data = data.with_aborted_transactions(isolation_committed.then(Vec::new));
            let leader_high_watermark = high_watermarks.next().flatten();
            partitions.push(match results.next() {
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
            });
            pacer.entry().await;
        }
        responses.push(FetchableTopicResponse::default().with_topic(topic).with_partitions(partitions));
    }
    FetchResponse::default().with_responses(responses)
}

/// Reads every wanted partition under the response budget, in request order, in
/// waves of at most [`READS_IN_FLIGHT_MAX`] (see the module doc): the answer is
/// what reading them one after the other would give, as Kafka's
/// `ReplicaManager.readFromLog`, each partition bounded by min(its
/// `partition_max_bytes`, what is left of `response_bytes_max`).
async fn read_all(
    engine: &EngineHandle,
    wanted: &[Wanted],
    response_bytes_max: usize,
) -> Vec<Result<ReadResult, ReadFailure>> {
    let mut results = Vec::with_capacity(wanted.len());
    // What the reads so far left of the response budget.
    let mut remaining = response_bytes_max;
    // Until a partition returned records, one whole batch is returned above the limits.
    let mut first_batch_whole = true;
    let mut next = 0;
    while next < wanted.len() {
        let mut unreserved = remaining;
        let mut wave = Vec::new();
        while let Some(w) = wanted.get(next).filter(|_| wave.len() < READS_IN_FLIGHT_MAX) {
            let budget = w.partition_max_bytes.min(unreserved);
            // Cut short by the reservations before it: read once they are settled.
            if budget < w.partition_max_bytes && !wave.is_empty() && remaining > 0 {
                break;
            }
            if w.partition.is_ok() {
                unreserved -= budget;
            }
            wave.push(dispatch_read(engine, w, budget).await);
            next += 1;
        }
        let first = results.len();
        for (pending, w) in wave.into_iter().zip(&wanted[first..]) {
            let read = match pending {
                Ok(pending) => pending.reply().await.map_err(|error| failure(&error)),
                Err(failure) => Err(failure),
            };
            let read = read.map(|mut read| {
                keep_within(&mut read, w.fetch_offset, w.partition_max_bytes.min(remaining), first_batch_whole);
                read
            });
            if let Ok(read) = &read {
                first_batch_whole &= read.bytes.is_empty();
                remaining = remaining.saturating_sub(read.bytes.len());
            }
            results.push(read);
        }
        futures_lite::future::yield_now().await;
    }
    results
}

/// Queues the read of one partition, at most `budget` bytes (at least one batch).
async fn dispatch_read(
    engine: &EngineHandle,
    w: &Wanted,
    budget: usize,
) -> Result<Dispatched<ReadResult>, ReadFailure> {
    let partition = w.partition.as_ref().map_err(|error| (*error, -1))?;
    let read = match w.reader {
        Reader::Replica => engine.dispatch_read_replica(partition, w.fetch_offset, budget).await,
        Reader::CommittedConsumer => engine.dispatch_read_committed(partition, w.fetch_offset, budget).await,
        Reader::Consumer => engine.dispatch_read(partition, w.fetch_offset, budget, None).await,
    };
    read.map_err(|e| failure(&e))
}

/// Cuts a read from `fetch_offset` to the whole batches that fit in `limit`, as a
/// read with that limit would have returned: the first batch stays whatever its
/// size when `first_batch_whole` (KIP-74), else a first batch that does not fit
/// leaves no records. The aborted transactions kept are those that start before
/// the cut.
fn keep_within(read: &mut ReadResult, fetch_offset: Offset, limit: usize, first_batch_whole: bool) {
    if read.bytes.len() <= limit {
        return;
    }
    let mut end = 0usize;
    let mut next_offset = None;
    while let Ok(header) = BatchHeader::parse(&read.bytes[end..]) {
        let size = header.size_bytes();
        let fits = end + size <= limit || (end == 0 && first_batch_whole);
        if !fits || end + size > read.bytes.len() {
            break;
        }
        end += size;
        next_offset = Some(header.last_offset().next());
    }
    read.bytes.truncate(end);
    read.next_offset = next_offset.unwrap_or(fetch_offset);
    read.aborted_transactions.retain(|txn| txn.first_offset < read.next_offset);
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

#[cfg(test)]
mod tests {
    use super::*;
    use corelog_engine::batch::{build_value_batch, stamp};
    use corelog_engine::segment::txn_index::AbortedTxn;
    use corelog_engine::types::{ProducerId, TimestampMs};

    /// Three one-record batches at offsets 0, 1 and 2, and one batch's size.
    fn three_batches() -> (ReadResult, usize) {
        let mut bytes = Vec::new();
        for offset in 0..3 {
            let mut batch = build_value_batch(TimestampMs(0), 1, 100);
            stamp(&mut batch, Offset(offset), LeaderEpoch(0));
            bytes.extend_from_slice(&batch);
        }
        let size = bytes.len() / 3;
        let aborted = |first: i64| AbortedTxn {
            producer_id: ProducerId(first),
            first_offset: Offset(first),
            last_offset: Offset(first + 5),
            last_stable_offset: Offset(first + 6),
        };
        let read = ReadResult {
            bytes,
            next_offset: Offset(3),
            log_start_offset: Offset(0),
            log_end_offset: Offset(3),
            high_watermark: Offset(3),
            last_stable_offset: Offset(3),
            aborted_transactions: vec![aborted(0), aborted(1), aborted(2)],
        };
        (read, size)
    }

    fn first_offsets(read: &ReadResult) -> Vec<i64> {
        read.aborted_transactions.iter().map(|txn| txn.first_offset.0).collect()
    }

    #[test]
    fn a_read_within_its_limit_is_kept_whole() {
        let (mut read, size) = three_batches();
        keep_within(&mut read, Offset(0), 3 * size, false);
        assert_eq!((read.bytes.len(), read.next_offset, first_offsets(&read)), (3 * size, Offset(3), vec![0, 1, 2]));
    }

    #[test]
    fn a_read_past_its_limit_keeps_the_whole_batches_that_fit_and_their_aborted_transactions() {
        let (mut read, size) = three_batches();
        keep_within(&mut read, Offset(0), 2 * size + size / 2, false);
        assert_eq!((read.bytes.len(), read.next_offset, first_offsets(&read)), (2 * size, Offset(2), vec![0, 1]));
    }

    #[test]
    fn a_first_batch_larger_than_the_limit_is_kept_only_while_no_partition_returned_records() {
        let (mut first, size) = three_batches();
        keep_within(&mut first, Offset(0), 10, true);
        assert_eq!((first.bytes.len(), first.next_offset, first_offsets(&first)), (size, Offset(1), vec![0]));

        let (mut later, _) = three_batches();
        keep_within(&mut later, Offset(0), 10, false);
        assert_eq!((later.bytes.len(), later.next_offset, first_offsets(&later)), (0, Offset(0), vec![]));
    }
}
