//! The requests of one connection take effect in the order they were sent, as
//! Kafka guarantees (its network layer reads a connection's next request only once
//! the previous one is answered), although corelog pipelines them.
//!
//! Each test writes many requests on one TCP connection without waiting for any
//! answer (a writer thread sends them all while the test thread reads the answers),
//! against a real `corelog broker` with two shards. The topic's partitions P (0) and
//! Q (1) live on different shards. Requests alternate between {P, Q} and {P} alone:
//! a request for several partitions and a request for one used to start their
//! appends differently (the first spawned a task per partition, the second appended
//! at once), so the later single-partition request could reach P first. Offsets
//! must come back in request order and P and Q must read back in request order;
//! the last of many pipelined OffsetCommits must be the one kept; a ListOffsets, a
//! Fetch, an OffsetForLeaderEpoch and a DeleteRecords pipelined after a Produce
//! must see exactly its record as P's last.
//!
//! Limits: the broker now orders requests by design (each request's ops are all
//! queued before the next request starts, see the handlers' module doc). Before
//! that, these tests passed by accident: glommio 0.9 polls a task as it is spawned,
//! so every handler reached its queues before the next frame was decoded, and a
//! full flume queue admits its waiting senders in order. They fail when a spawned
//! task is only scheduled (a yield first), which is what they guard against.
//!
//! Requests are encoded with the `kafka-protocol` crate and written with `std::net`,
//! so the bytes on the wire are exactly the ones the test means. Every read and
//! write has a timeout.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use corelog_engine::batch::{build_batch, BatchProducer, RecordSpec};
use corelog_engine::shard::shard_for;
use corelog_engine::types::{PartitionId, TopicPartition};
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, DeleteRecordsRequest, FetchRequest, GroupId, ListOffsetsRequest, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, OffsetForLeaderEpochRequest, ProduceRequest,
    ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

/// Longest wait for any one read, write or connect.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Every test here ends within this bound (see [`Watchdog`]).
const TEST_BOUND: Duration = Duration::from_secs(300);
/// Requests pipelined on the connection in each test.
const REQUESTS: usize = 2000;
/// The partition every request names, and the one only every other request names.
const P: i32 = 0;
const Q: i32 = 1;
/// The largest answer the tests read.
const RESPONSE_BYTES_MAX: usize = 16 << 20;

const PRODUCE_VERSION: i16 = 9;
const OFFSET_COMMIT_VERSION: i16 = 8;
const OFFSET_FETCH_VERSION: i16 = 7;
const LIST_OFFSETS_VERSION: i16 = 5;
const FETCH_VERSION: i16 = 11;
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 3;
const DELETE_RECORDS_VERSION: i16 = 1;

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// Starts a two-shard broker and creates `topic` with P and Q, asserting that the
/// two live on different shards (so their appends run on different threads).
fn start_broker_with_topic(name: &str, topic: &str, configs: &[(&str, &str)]) -> BrokerProcess {
    let options = BrokerOptions::new(&format!("request-order-{name}"));
    assert_eq!(options.cores, 2, "the tests want P and Q on two shards");
    let broker = BrokerProcess::start(options);
    block_on(create_topic(&broker, topic, 2, configs));
    let name = corelog_engine::types::TopicName::new(topic).expect("a valid topic name");
    let shard_of = |index| shard_for(&TopicPartition::new(name.clone(), PartitionId(index)), 2);
    assert_ne!(shard_of(P), shard_of(Q), "{topic}: P and Q are on the same shard");
    broker
}

/// One request frame with its size prefix.
fn frame<R: Request + Encodable>(request: &R, version: i16, correlation_id: i32) -> Vec<u8> {
    let api_key = ApiKey::try_from(R::KEY).expect("a known key");
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("corelog-request-order")));
    let mut frame = vec![0u8; 4];
    header.encode(&mut frame, api_key.request_header_version(version)).expect("encoding a request header");
    request.encode(&mut frame, version).expect("encoding a request body");
    let size = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    frame
}

/// A connection whose requests are all written at once by another thread.
struct Pipeline {
    stream: TcpStream,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Pipeline {
    /// Connects to `broker` and starts writing `frames` back to back. The answers
    /// must be read meanwhile: the broker stops reading once it has
    /// `inflight_requests_max` requests unanswered.
    fn start(broker: &BrokerProcess, frames: Vec<u8>) -> Pipeline {
        let stream = TcpStream::connect_timeout(&broker.address(), IO_TIMEOUT).expect("connecting to the broker");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("write timeout");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let mut writing = stream.try_clone().expect("cloning the stream");
        let writer = std::thread::spawn(move || {
            writing.write_all(&frames).unwrap_or_else(|e| panic!("writing {} bytes of requests: {e}", frames.len()));
        });
        Pipeline { stream, writer: Some(writer) }
    }

    /// Reads the next answer, which must be to the request with `correlation_id`.
    fn receive<R: Request>(&mut self, correlation_id: i32, version: i16) -> R::Response {
        let mut size = [0u8; 4];
        self.stream
            .read_exact(&mut size)
            .unwrap_or_else(|e| panic!("reading the answer to request {correlation_id}: {e}"));
        let size = i32::from_be_bytes(size);
        assert!(
            (0..=RESPONSE_BYTES_MAX as i32).contains(&size),
            "the answer to request {correlation_id} has size {size}"
        );
        let mut frame = vec![0u8; size as usize];
        self.stream
            .read_exact(&mut frame)
            .unwrap_or_else(|e| panic!("reading the answer to request {correlation_id}: {e}"));
        let mut rest = frame.as_slice();
        let header =
            ResponseHeader::decode(&mut rest, R::Response::header_version(version)).expect("a response header");
        assert_eq!(header.correlation_id, correlation_id, "answers leave in request order");
        let response = R::Response::decode(&mut rest, version).expect("a response body");
        assert!(rest.is_empty(), "{} bytes after the answer to request {correlation_id}", rest.len());
        response
    }

    /// Waits until every request was written.
    fn finish(mut self) {
        if let Some(writer) = self.writer.take() {
            writer.join().expect("the writer thread");
        }
    }
}

/// The value of the one record request `number` writes to each partition it names.
fn value_of(number: usize) -> String {
    format!("request {number}")
}

/// Request `number` of the produce pattern: even ones name P and Q, odd ones P.
fn produce_request(topic: &str, number: usize, acks: i16) -> ProduceRequest {
    let partitions: &[i32] = if number.is_multiple_of(2) { &[P, Q] } else { &[P] };
    let value = value_of(number);
    let partition_data = partitions
        .iter()
        .map(|&index| {
            let batch = build_batch(
                now_timestamp(),
                BatchProducer::default(),
                &[RecordSpec { key: None, value: Some(value.as_bytes()), timestamp_delta_ms: 0 }],
            );
            PartitionProduceData::default().with_index(index).with_records(Some(batch.into()))
        })
        .collect();
    let topic = TopicProduceData::default().with_name(topic_name(topic)).with_partition_data(partition_data);
    ProduceRequest::default().with_acks(acks).with_timeout_ms(30_000).with_topic_data(vec![topic])
}

/// The base offset each partition of a produce answer was given; panics on an error.
fn base_offsets(response: &ProduceResponse, number: usize) -> Vec<(i32, i64)> {
    assert_eq!(response.responses.len(), 1, "request {number}: one topic answered");
    response.responses[0]
        .partition_responses
        .iter()
        .map(|partition| {
            assert_eq!(partition.error_code, 0, "request {number}: partition {} failed", partition.index);
            (partition.index, partition.base_offset)
        })
        .collect()
}

/// Pipelines [`REQUESTS`] produce requests with `acks`, then checks that the
/// offsets were handed out in request order on both partitions, in the answers and
/// in the logs as a consumer reads them back.
fn pipelined_produces_append_in_request_order(name: &str, acks: i16, configs: &[(&str, &str)]) {
    let _watchdog = Watchdog::new("pipelined produces", TEST_BOUND);
    let topic = format!("order-{name}");
    let broker = start_broker_with_topic(name, &topic, configs);
    let frames: Vec<u8> = (0..REQUESTS)
        .flat_map(|number| frame(&produce_request(&topic, number, acks), PRODUCE_VERSION, number as i32))
        .collect();
    let mut pipeline = Pipeline::start(&broker, frames);
    let mut out_of_order = Vec::new();
    for number in 0..REQUESTS {
        let response = pipeline.receive::<ProduceRequest>(number as i32, PRODUCE_VERSION);
        let offsets = base_offsets(&response, number);
        let expected: Vec<(i32, i64)> =
            if number % 2 == 0 { vec![(P, number as i64), (Q, (number / 2) as i64)] } else { vec![(P, number as i64)] };
        if offsets != expected {
            out_of_order.push(format!("request {number}: base offsets {offsets:?}, in request order {expected:?}"));
        }
    }
    pipeline.finish();
    assert!(
        out_of_order.is_empty(),
        "{} of {REQUESTS} pipelined produce requests were appended out of request order; first: {:#?}",
        out_of_order.len(),
        &out_of_order[..out_of_order.len().min(5)]
    );
    let records = read_partitions(&broker, &topic, 2, Duration::from_secs(60));
    let values = |partition: i32| records[&partition].iter().map(Record::value_text).collect::<Vec<_>>();
    assert_eq!(values(P), (0..REQUESTS).map(value_of).collect::<Vec<_>>(), "P holds every request's record in order");
    assert_eq!(
        values(Q),
        (0..REQUESTS).step_by(2).map(value_of).collect::<Vec<_>>(),
        "Q holds the even requests' records in order"
    );
}

#[test]
fn pipelined_produce_requests_with_acks_1_append_in_request_order() {
    pipelined_produces_append_in_request_order("acks-1", 1, &[]);
}

#[test]
fn pipelined_produce_requests_with_acks_all_under_fsync_always_append_in_request_order() {
    pipelined_produces_append_in_request_order("acks-all", -1, &[("fsync.policy", "always")]);
}

#[test]
fn pipelined_offset_commits_land_in_request_order_and_the_last_one_wins() {
    let _watchdog = Watchdog::new("pipelined offset commits", TEST_BOUND);
    let topic = "order-commits";
    let broker = start_broker_with_topic("commits", topic, &[]);
    let group = GroupId(StrBytes::from_static_str("request-order-group"));
    // Request n commits offset n + 1 for P, and for Q too when n is even.
    let commit = |number: usize| {
        let partitions: &[i32] = if number.is_multiple_of(2) { &[P, Q] } else { &[P] };
        let partitions = partitions
            .iter()
            .map(|&index| {
                OffsetCommitRequestPartition::default()
                    .with_partition_index(index)
                    .with_committed_offset(number as i64 + 1)
            })
            .collect();
        OffsetCommitRequest::default()
            .with_group_id(group.clone())
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(StrBytes::from_static_str(""))
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(partitions)])
    };
    let frames: Vec<u8> =
        (0..REQUESTS).flat_map(|number| frame(&commit(number), OFFSET_COMMIT_VERSION, number as i32)).collect();
    let mut pipeline = Pipeline::start(&broker, frames);
    for number in 0..REQUESTS {
        let response: OffsetCommitResponse =
            pipeline.receive::<OffsetCommitRequest>(number as i32, OFFSET_COMMIT_VERSION);
        let errors: Vec<(i32, i16)> = response
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (p.partition_index, p.error_code)))
            .collect();
        let expected: Vec<(i32, i16)> = if number % 2 == 0 { vec![(P, 0), (Q, 0)] } else { vec![(P, 0)] };
        assert_eq!(errors, expected, "request {number}: every partition committed");
    }
    pipeline.finish();

    let fetch = OffsetFetchRequest::default().with_group_id(group.clone()).with_topics(Some(vec![
        OffsetFetchRequestTopic::default().with_name(topic_name(topic)).with_partition_indexes(vec![P, Q]),
    ]));
    let mut pipeline = Pipeline::start(&broker, frame(&fetch, OFFSET_FETCH_VERSION, 0));
    let response: OffsetFetchResponse = pipeline.receive::<OffsetFetchRequest>(0, OFFSET_FETCH_VERSION);
    pipeline.finish();
    assert_eq!(response.error_code, 0, "OffsetFetch error code");
    let committed: Vec<(i32, i64)> = response
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (p.partition_index, p.committed_offset)))
        .collect();
    let last_even = (REQUESTS - 1) / 2 * 2;
    assert_eq!(
        committed,
        vec![(P, REQUESTS as i64), (Q, last_even as i64 + 1)],
        "the last commit of each partition is the one kept"
    );
}

/// Every this many produces in [`requests_pipelined_after_a_produce_see_its_record`],
/// a DeleteRecords follows (each one writes the log start offset durably).
const DELETE_RECORDS_EVERY: usize = 50;

#[test]
fn requests_pipelined_after_a_produce_see_its_record() {
    let _watchdog = Watchdog::new("requests after produces", TEST_BOUND);
    let topic = "order-reads";
    // Under the default `fsync.policy=never` the high watermark moves at the append,
    // so a request that reaches P after the append sees the record.
    let broker = start_broker_with_topic("reads", topic, &[]);
    let produces = REQUESTS / 2;
    let list_offsets =
        ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(P).with_timestamp(-1)])]);
    let fetch_at = |offset: i64| {
        let partition = FetchPartition::default()
            .with_partition(P)
            .with_fetch_offset(offset)
            .with_partition_max_bytes(1 << 20)
            .with_current_leader_epoch(-1)
            .with_log_start_offset(-1);
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_max_bytes(1 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default().with_topic(topic_name(topic)).with_partitions(vec![partition])])
    };
    let end_of_epoch = OffsetForLeaderEpochRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
        OffsetForLeaderTopic::default().with_topic(topic_name(topic)).with_partitions(vec![
            OffsetForLeaderPartition::default().with_partition(P).with_current_leader_epoch(-1).with_leader_epoch(0),
        ]),
    ]);
    let delete_all =
        DeleteRecordsRequest::default().with_timeout_ms(30_000).with_topics(vec![DeleteRecordsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(vec![DeleteRecordsPartition::default().with_partition_index(P).with_offset(-1)])]);
    let deletes_after = |number: usize| number % DELETE_RECORDS_EVERY == DELETE_RECORDS_EVERY - 1;

    // Produce n names P and Q (every one does, so every one is a multi-partition
    // request); then ListOffsets, Fetch at offset n and OffsetForLeaderEpoch ask
    // about P alone, and now and then a DeleteRecords deletes all of P.
    let mut frames = Vec::new();
    let mut correlation_id = 0;
    let mut next_id = || {
        correlation_id += 1;
        correlation_id
    };
    for number in 0..produces {
        frames.extend(frame(&produce_request(topic, 2 * number, 1), PRODUCE_VERSION, next_id()));
        frames.extend(frame(&list_offsets, LIST_OFFSETS_VERSION, next_id()));
        frames.extend(frame(&fetch_at(number as i64), FETCH_VERSION, next_id()));
        frames.extend(frame(&end_of_epoch, OFFSET_FOR_LEADER_EPOCH_VERSION, next_id()));
        if deletes_after(number) {
            frames.extend(frame(&delete_all, DELETE_RECORDS_VERSION, next_id()));
        }
    }
    let mut pipeline = Pipeline::start(&broker, frames);
    let mut correlation_id = 0;
    let mut next_id = || {
        correlation_id += 1;
        correlation_id
    };
    let mut unseen = Vec::new();
    for number in 0..produces {
        let produced = pipeline.receive::<ProduceRequest>(next_id(), PRODUCE_VERSION);
        let offsets = base_offsets(&produced, 2 * number);
        let end = number as i64 + 1;
        let latest =
            pipeline.receive::<ListOffsetsRequest>(next_id(), LIST_OFFSETS_VERSION).topics[0].partitions[0].clone();
        assert_eq!(latest.error_code, 0, "ListOffsets after produce {number}");
        let read = pipeline.receive::<FetchRequest>(next_id(), FETCH_VERSION).responses[0].partitions[0].clone();
        // OFFSET_OUT_OF_RANGE when the Fetch overtook the produce.
        let records = read.records.as_ref().map_or(0, |records| records.len());
        let epoch_end =
            pipeline.receive::<OffsetForLeaderEpochRequest>(next_id(), OFFSET_FOR_LEADER_EPOCH_VERSION).topics[0]
                .partitions[0]
                .clone();
        assert_eq!(epoch_end.error_code, 0, "OffsetForLeaderEpoch after produce {number}");
        let mut seen = format!(
            "produce {number}: P base offset {:?}; then ListOffsets latest {}, Fetch at {number} error {} {records} \
             bytes with high watermark {}, epoch 0 ends at {}",
            offsets[0], latest.offset, read.error_code, read.high_watermark, epoch_end.end_offset
        );
        let mut wrong = offsets[0] != (P, number as i64)
            || latest.offset != end
            || read.error_code != 0
            || records == 0
            || read.high_watermark != end
            || epoch_end.end_offset != end;
        if deletes_after(number) {
            let deleted = pipeline.receive::<DeleteRecordsRequest>(next_id(), DELETE_RECORDS_VERSION).topics[0]
                .partitions[0]
                .clone();
            assert_eq!(deleted.error_code, 0, "DeleteRecords after produce {number}");
            seen.push_str(&format!(
                ", DeleteRecords to the high watermark leaves the log starting at {}",
                deleted.low_watermark
            ));
            wrong |= deleted.low_watermark != end;
        }
        if wrong {
            unseen.push(seen);
        }
    }
    pipeline.finish();
    assert!(
        unseen.is_empty(),
        "{} of {produces} produces were not seen as they should by the requests pipelined after them, which should \
         all see exactly offset n + 1 as the end; first: {:#?}",
        unseen.len(),
        &unseen[..unseen.len().min(5)]
    );
}
