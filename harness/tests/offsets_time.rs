//! Offsets and time against a real `corelog broker`, as Kafka answers them:
//!
//! - `offsets_for_times` inside one batch of 100 records answers the exact record at
//!   or after each time, and its timestamp, for every codec librdkafka compresses
//!   with (the broker reads the records of that one batch, inflating them);
//! - ListOffsets v7 MAX_TIMESTAMP answers the first record holding the largest
//!   timestamp, and below v7 that timestamp is UNSUPPORTED_VERSION for its
//!   partition; EARLIEST_LOCAL (v8) answers the log start, LATEST_TIERED (v9)
//!   offset -1;
//! - a topic with `retention.ms=1000` and a single segment empties soon after (log
//!   start = log end), and the next append takes the next offset;
//! - a Fetch with `min_bytes` 0 at the log end answers at once, not after
//!   `max_wait_ms`.
//!
//! The ListOffsets and Fetch requests are raw (the `kafka-protocol` crate), so the
//! test sees the exact fields on the wire.

mod common;

use std::time::{Duration, Instant};

use common::raw::RawConnection as Connection;
use common::*;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::list_offsets_response::ListOffsetsPartitionResponse;
use kafka_protocol::messages::{BrokerId, FetchRequest, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

/// Every test here ends within this bound (see [`Watchdog`]).
const TEST_BOUND: Duration = Duration::from_secs(240);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// The first record's timestamp; record `i` of a batch is `T0 + 10 * i` unless said.
/// It is in 2023, older than the default `retention.ms` (7 days), so the topics of
/// the lookups keep their records with `retention.ms=-1` ([`KEEP_FOREVER`]): retention
/// deletes the active segment too, within a housekeeping tick.
const T0: i64 = 1_700_000_000_000;
const KEEP_FOREVER: (&str, &str) = ("retention.ms", "-1");
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// A producer that puts everything sent before a flush into one batch.
fn batching_producer(broker: &BrokerProcess, codec: &str) -> FutureProducer {
    client_config(broker)
        .set("compression.codec", codec)
        .set("linger.ms", "5000")
        .set("batch.num.messages", "10000")
        .create()
        .expect("creating a producer")
}

/// Sends one record per timestamp to partition 0 of `topic`, flushes (one batch),
/// and checks every record was acknowledged at offsets 0, 1, ...
fn produce_one_batch(producer: &FutureProducer, topic: &str, timestamps: &[i64]) {
    let deliveries: Vec<_> = timestamps
        .iter()
        .enumerate()
        .map(|(i, timestamp)| {
            let value = format!("record-{i}");
            let record = FutureRecord::<(), str>::to(topic).payload(&value).partition(0).timestamp(*timestamp);
            producer.send_result(record).unwrap_or_else(|(e, _)| panic!("queueing record {i}: {e}"))
        })
        .collect();
    producer.flush(CLIENT_TIMEOUT).expect("flush");
    block_on(async {
        for (i, delivery) in deliveries.into_iter().enumerate() {
            let (partition, offset) = match delivery.await {
                Ok(Ok(delivery)) => (delivery.partition, delivery.offset),
                other => panic!("record {i} to {topic} was not acknowledged: {other:?}"),
            };
            assert_eq!((partition, offset), (0, i as i64), "record {i} to {topic}");
        }
    });
}

fn offset_for_time(consumer: &BaseConsumer, topic: &str, timestamp: i64) -> Offset {
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition_offset(topic, 0, Offset::Offset(timestamp)).expect("partition");
    let found = consumer.offsets_for_times(wanted, CLIENT_TIMEOUT).expect("ListOffsets by timestamp");
    let element = found.find_partition(topic, 0).expect("partition 0 answered");
    assert!(element.error().is_ok(), "{topic} at {timestamp}: {:?}", element.error());
    element.offset()
}

/// ListOffsets for partition 0 of `topic` at `version`.
fn list_offset(connection: &mut Connection, topic: &str, timestamp: i64, version: i16) -> ListOffsetsPartitionResponse {
    let partition =
        ListOffsetsPartition::default().with_partition_index(0).with_timestamp(timestamp).with_current_leader_epoch(-1);
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default().with_name(topic_name(topic)).with_partitions(vec![partition])]);
    let response = connection.request(&request, version);
    response.topics[0].partitions[0].clone()
}

#[test]
fn offsets_for_times_inside_one_batch_of_100_records_answers_the_exact_record_for_every_codec() {
    let _watchdog = Watchdog::new("offsets_for_times_inside_one_batch", TEST_BOUND);
    let broker = BrokerProcess::start(BrokerOptions::new("offsets-time-by-record"));
    let timestamps: Vec<i64> = (0..100).map(|i| T0 + 10 * i).collect();
    let consumer: BaseConsumer = client_config(&broker).create().expect("consumer");
    let mut connection = Connection::open(&broker);
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("by-time-{codec}");
        block_on(create_topic(&broker, &topic, 1, &[KEEP_FOREVER]));
        produce_one_batch(&batching_producer(&broker, codec), &topic, &timestamps);
        for (time, expected) in [(T0, 0), (T0 + 1, 1), (T0 + 505, 51), (T0 + 990, 99), (T0 - 5_000, 0)] {
            assert_eq!(offset_for_time(&consumer, &topic, time), Offset::Offset(expected), "{codec}: time {time}");
        }
        assert_eq!(offset_for_time(&consumer, &topic, T0 + 991), Offset::End, "{codec}: past every record");
        // The timestamp answered is the record's, not the batch's max.
        let answer = list_offset(&mut connection, &topic, T0 + 505, 6);
        assert_eq!((answer.error_code, answer.offset, answer.timestamp), (0, 51, T0 + 510), "{codec}: v6 raw answer");
    }
}

#[test]
fn max_timestamp_answers_the_first_record_holding_the_largest_timestamp_from_v7() {
    let _watchdog = Watchdog::new("max_timestamp_from_v7", TEST_BOUND);
    let broker = BrokerProcess::start(BrokerOptions::new("offsets-time-max"));
    let topic = "max-timestamp";
    block_on(create_topic(&broker, topic, 1, &[KEEP_FOREVER]));
    // Out of order: the largest timestamp is held by records 3 and 7; 3 is first.
    let timestamps = [T0, T0 + 50, T0 + 20, T0 + 900, T0 + 10, T0 + 300, T0 + 5, T0 + 900, T0 + 1];
    produce_one_batch(&batching_producer(&broker, "lz4"), topic, &timestamps);
    let mut connection = Connection::open(&broker);
    for version in [7, 8, 9, 10] {
        let answer = list_offset(&mut connection, topic, MAX_TIMESTAMP, version);
        assert_eq!((answer.error_code, answer.offset, answer.timestamp), (0, 3, T0 + 900), "v{version}");
    }
    let too_old = list_offset(&mut connection, topic, MAX_TIMESTAMP, 6);
    assert_eq!(too_old.error_code, ResponseError::UnsupportedVersion.code(), "MAX_TIMESTAMP at v6");
    let earliest_local = list_offset(&mut connection, topic, EARLIEST_LOCAL, 8);
    assert_eq!((earliest_local.error_code, earliest_local.offset), (0, 0), "EARLIEST_LOCAL at v8");
    let too_old = list_offset(&mut connection, topic, EARLIEST_LOCAL, 7);
    assert_eq!(too_old.error_code, ResponseError::UnsupportedVersion.code(), "EARLIEST_LOCAL at v7");
    // Nothing is tiered: Kafka answers offset -1 and leader epoch -1.
    let tiered = list_offset(&mut connection, topic, LATEST_TIERED, 9);
    assert_eq!((tiered.error_code, tiered.offset, tiered.leader_epoch), (0, -1, -1), "LATEST_TIERED at v9");
}

#[test]
fn a_topic_with_retention_ms_1000_empties_soon_after_and_appends_go_on_at_the_same_offset() {
    let _watchdog = Watchdog::new("retention_ms_1000_empties", TEST_BOUND);
    let broker = BrokerProcess::start(BrokerOptions::new("offsets-time-retention"));
    let topic = "short-lived";
    block_on(create_topic(&broker, topic, 1, &[("retention.ms", "1000")]));
    let now = rdkafka::util::millis_to_epoch(std::time::SystemTime::now());
    let producer = batching_producer(&broker, "none");
    produce_one_batch(&producer, topic, &(0..10).map(|i| now + i).collect::<Vec<_>>());
    let consumer: BaseConsumer = client_config(&broker).create().expect("consumer");
    // The one segment is the active one: only deleting it (rolled first) empties
    // the topic. Housekeeping runs every second; allow many.
    let watermarks = || consumer.fetch_watermarks(topic, 0, CLIENT_TIMEOUT).expect("ListOffsets");
    wait_until("the retention of the only segment", Duration::from_secs(30), || watermarks() == (10, 10));
    let later = rdkafka::util::millis_to_epoch(std::time::SystemTime::now());
    let record = FutureRecord::<(), str>::to(topic).payload("after").partition(0).timestamp(later);
    let delivery = block_on(producer.send(record, CLIENT_TIMEOUT)).expect("acknowledged");
    assert_eq!((delivery.partition, delivery.offset), (0, 10), "the first append after the retention");
}

#[test]
fn a_fetch_with_min_bytes_0_at_the_log_end_answers_at_once() {
    let _watchdog = Watchdog::new("fetch_min_bytes_0", TEST_BOUND);
    let broker = BrokerProcess::start(BrokerOptions::new("offsets-time-fetch"));
    let topic = "quiet";
    block_on(create_topic(&broker, topic, 1, &[]));
    let mut connection = Connection::open(&broker);
    let partition = FetchPartition::default()
        .with_partition(0)
        .with_fetch_offset(0)
        .with_partition_max_bytes(1 << 20)
        .with_current_leader_epoch(-1)
        .with_log_start_offset(-1);
    let fetch = |min_bytes: i32| {
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(10_000)
            .with_min_bytes(min_bytes)
            .with_max_bytes(1 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(vec![partition.clone()])])
    };
    let started = Instant::now();
    let response = connection.request(&fetch(0), 12);
    let waited = started.elapsed();
    assert_eq!(response.error_code, 0, "Fetch error code");
    assert_eq!(response.responses[0].partitions[0].error_code, 0, "Fetch partition error code");
    assert!(waited < Duration::from_secs(2), "a Fetch with min_bytes 0 waited {waited:?}, max_wait_ms is 10 s");
    // min_bytes 1 still waits for data, up to max_wait_ms.
    let started = Instant::now();
    let response = connection.request(&fetch(1).with_max_wait_ms(1_000), 12);
    assert_eq!(response.responses[0].partitions[0].error_code, 0, "Fetch partition error code");
    assert!(started.elapsed() >= Duration::from_millis(900), "a Fetch with min_bytes 1 answered before max_wait_ms");
}
