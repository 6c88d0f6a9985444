//! Fetch (key 1), v4–v12: stored batches from each requested partition, as the
//! bytes on disk (never decoded), up to the high watermark.
//!
//! Long poll: when less than `min_bytes` is available the request waits, up to
//! `max_wait_ms`, and re-reads the partitions as data arrives
//! ([`corelog_engine::shard::EngineHandle::wait_for_data`]). Budgets: each partition gets at
//! most `partition_max_bytes`, the response at most `max_bytes`, except that the
//! first batch found is always returned whole so a large batch cannot stall a
//! consumer (KIP-74). Fetch sessions (KIP-227) are declined (session id 0), so
//! clients send full requests. Until transactions arrive, `read_committed` sees the
//! same data as `read_uncommitted` (there are no open transactions, so the last
//! stable offset is the high watermark).
//!
//! Staged (see the handlers' module doc): the request is dispatched once the first
//! read of every partition is queued, so it sees what the requests sent before it
//! on the connection appended; the re-reads of a long poll are not ordered.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;

use super::resolve::{partition_of, Intent, PartitionRef, TopicRef};
use super::{first_of, RequestContext, Versions};
use crate::kafka::errors::response_error;
use corelog_engine::log::ReadResult;
use corelog_engine::shard::{Dispatched, EngineHandle};
use corelog_engine::types::{Offset, TopicPartition};

pub const VERSIONS: Versions = Versions::new(4, 12);

/// Longest wait a client may ask for; Kafka clients use 500 ms by default.
const MAX_WAIT_MS_MAX: i32 = 30_000;

struct Wanted {
    partition: Result<TopicPartition, ResponseError>,
    fetch_offset: Offset,
    partition_max_bytes: usize,
}

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

    let mut shape = Vec::with_capacity(request.topics.len());
    let mut wanted = Vec::new();
    for topic in &request.topics {
        let resolved = resolver.topic(TopicRef::Name(topic.topic.0.as_str()), Intent::Read);
        for fetch in &topic.partitions {
            // The current leader epoch (v9+) is not checked (see `resolve`'s limits).
            let partition = partition_of(&resolved, PartitionRef::new(fetch.partition))
                .map(|resolved| resolved.partition)
                .map_err(|refusal| refusal.error);
            wanted.push(Wanted {
                partition,
                fetch_offset: Offset(fetch.fetch_offset),
                partition_max_bytes: fetch.partition_max_bytes.max(0) as usize,
            });
        }
        shape.push((topic.topic.clone(), topic.partitions.iter().map(|p| p.partition).collect::<Vec<_>>()));
    }

    let first_reads = dispatch_reads(&engine, &wanted, max_bytes).await;
    async move {
        let results = read_replies(first_reads, max_bytes).await;
        respond(&engine, request, started, shape, wanted, results).await
    }
}

/// Waits for data as the request asks, re-reading as it arrives, then answers.
async fn respond(
    engine: &EngineHandle,
    request: FetchRequest,
    started: Instant,
    shape: Vec<(kafka_protocol::messages::TopicName, Vec<i32>)>,
    wanted: Vec<Wanted>,
    mut results: Vec<Result<ReadResult, ResponseError>>,
) -> FetchResponse {
    let max_wait = Duration::from_millis(request.max_wait_ms.clamp(0, MAX_WAIT_MS_MAX) as u64);
    let min_bytes = request.min_bytes.max(0) as usize;
    let max_bytes = if request.max_bytes <= 0 { usize::MAX } else { request.max_bytes as usize };
    loop {
        let total: usize = results.iter().map(|r| r.as_ref().map_or(0, |read| read.bytes.len())).sum();
        let any_error = results.iter().any(|r| r.is_err());
        let elapsed = started.elapsed();
        if total >= min_bytes.max(1) || any_error || elapsed >= max_wait || wanted.is_empty() {
            break;
        }
        // Wait until one of the partitions has data past its fetch offset, or the
        // deadline; then read everything again (another may have grown too).
        let waits: Vec<_> = wanted
            .iter()
            .filter_map(|w| w.partition.as_ref().ok().map(|p| (p.clone(), w.fetch_offset)))
            .map(|(partition, offset)| {
                let engine = engine.clone();
                async move { engine.wait_for_data(&partition, offset).await }
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

    let mut results = results.into_iter();
    let isolation_committed = request.isolation_level == 1;
    let responses = shape
        .into_iter()
        .map(|(topic, indexes)| {
            let partitions = indexes
                .into_iter()
                .map(|index| {
                    let data = PartitionData::default().with_partition_index(index);
                    let data =
                        if isolation_committed { data.with_aborted_transactions(Some(Vec::new())) } else { data };
                    match results.next() {
                        Some(Ok(read)) => data
                            .with_high_watermark(read.high_watermark.0)
                            .with_last_stable_offset(read.high_watermark.0)
                            .with_log_start_offset(read.log_start_offset.0)
                            .with_records(Some(Bytes::from(read.bytes))),
                        Some(Err(error)) => data
                            .with_error_code(error.code())
                            .with_high_watermark(-1)
                            .with_last_stable_offset(-1)
                            .with_log_start_offset(-1),
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
) -> Vec<Result<Dispatched<ReadResult>, ResponseError>> {
    let mut reads = Vec::with_capacity(wanted.len());
    for w in wanted {
        let read = match &w.partition {
            Ok(partition) => {
                let budget = w.partition_max_bytes.min(max_bytes);
                engine.dispatch_read(partition, w.fetch_offset, budget, None).await.map_err(|e| response_error(&e))
            }
            Err(error) => Err(*error),
        };
        reads.push(read);
    }
    reads
}

/// Waits for the reads (all queued, so as long as the slowest), then applies the
/// response budget in request order: once `max_bytes` is spent, later partitions
/// return no records (but the first non-empty one is always kept).
async fn read_replies(
    reads: Vec<Result<Dispatched<ReadResult>, ResponseError>>,
    max_bytes: usize,
) -> Vec<Result<ReadResult, ResponseError>> {
    let mut results = Vec::with_capacity(reads.len());
    for read in reads {
        results.push(match read {
            Ok(pending) => pending.reply().await.map_err(|error| response_error(&error)),
            Err(error) => Err(error),
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
