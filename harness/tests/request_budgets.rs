//! A client that follows the protocol while asking for too much cannot take the
//! broker's memory or its other clients' time: a real `corelog broker` process gets
//! a Fetch naming one large partition fifty times with `max_bytes` i32::MAX, a Fetch
//! under a small `fetch.max.bytes`, and Produce, ListOffsets and Fetch requests with
//! 200 000 partition entries, while the test measures the broker's resident memory
//! (`/proc/<pid>/status`) and how long a bystander's ApiVersions waits.
//!
//! Requests are encoded with the `kafka-protocol` crate and written with `std::net`
//! (see `common::raw`), so the requests are exactly as hostile as written.

mod common;

use std::time::{Duration, Instant};

use common::raw::{request_frame, RawConnection as Connection};
use common::*;
use corelog_engine::batch::{build_value_batch, BatchHeader};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiVersionsRequest, BrokerId, CreateTopicsRequest, DescribeConfigsRequest, FetchRequest, FetchResponse,
    ListOffsetsRequest, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::{Encodable, Request, StrBytes};

/// Every test here ends within this bound (see [`Watchdog`]).
const TEST_BOUND: Duration = Duration::from_secs(300);
/// Kafka's default `fetch.max.bytes`, which the broker uses unless told otherwise.
const FETCH_MAX_BYTES_DEFAULT: usize = 55 << 20;
/// The record bytes of one batch the tests append.
const BATCH_VALUE_BYTES: usize = 512 << 10;
/// How much a hostile request may grow the broker's peak resident memory.
const RSS_GROWTH_MAX_KB: u64 = 200 << 10;

fn name(text: &str) -> TopicName {
    TopicName(StrBytes::from_string(text.to_string()))
}

/// A line of `/proc/<pid>/status`, in kB (`VmRSS`, `VmHWM`: the peak).
fn status_kb(broker: &BrokerProcess, field: &str) -> u64 {
    let path = format!("/proc/{}/status", broker.pid());
    let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let line = status.lines().find(|line| line.starts_with(field)).unwrap_or_else(|| panic!("{path} has no {field}"));
    line.split_whitespace().nth(1).and_then(|kb| kb.parse().ok()).unwrap_or_else(|| panic!("{path}: {line}"))
}

fn start_broker(name: &str, cores: usize, extra_yaml: &str) -> BrokerProcess {
    let mut options = BrokerOptions::new(&format!("request-budgets-{name}"));
    options.cores = cores;
    options.config_yaml = Some(extra_yaml.to_string());
    BrokerProcess::start(options)
}

fn create_topic(connection: &mut Connection, topic: &str, partitions: i32) {
    let creatable =
        CreatableTopic::default().with_name(name(topic)).with_num_partitions(partitions).with_replication_factor(1);
    let request = CreateTopicsRequest::default().with_topics(vec![creatable]).with_timeout_ms(30_000);
    let response = connection.request(&request, 7);
    assert_eq!(response.topics[0].error_code, 0, "creating {topic}: {:?}", response.topics[0]);
}

fn produce_request(topic: &str, entries: Vec<PartitionProduceData>) -> ProduceRequest {
    let data = TopicProduceData::default().with_name(name(topic)).with_partition_data(entries);
    ProduceRequest::default().with_acks(1).with_timeout_ms(30_000).with_topic_data(vec![data])
}

/// Appends `batches` batches of [`BATCH_VALUE_BYTES`] to partition `partition`.
fn append_batches(connection: &mut Connection, topic: &str, partition: i32, batches: usize) {
    for _ in 0..batches {
        let batch = build_value_batch(now_timestamp(), 1, BATCH_VALUE_BYTES);
        let entry = PartitionProduceData::default().with_index(partition).with_records(Some(batch.into()));
        let response: ProduceResponse = connection.request(&produce_request(topic, vec![entry]), 9);
        let answer = &response.responses[0].partition_responses[0];
        assert_eq!(answer.error_code, 0, "appending to {topic}-{partition}: {answer:?}");
    }
}

fn fetch_partition(partition: i32, partition_max_bytes: i32) -> FetchPartition {
    FetchPartition::default()
        .with_partition(partition)
        .with_fetch_offset(0)
        .with_partition_max_bytes(partition_max_bytes)
        .with_current_leader_epoch(-1)
}

fn fetch_request(topic: &str, partitions: Vec<FetchPartition>, max_bytes: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(max_bytes)
        .with_topics(vec![FetchTopic::default().with_topic(name(topic)).with_partitions(partitions)])
}

/// The sizes of the whole batches in a partition's records.
fn batch_sizes(records: &[u8]) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut at = 0;
    while at < records.len() {
        let header = BatchHeader::parse(&records[at..]).expect("a batch header");
        sizes.push(header.size_bytes());
        at += header.size_bytes();
    }
    assert_eq!(at, records.len(), "the records end inside a batch");
    sizes
}

#[test]
fn a_fetch_naming_one_large_partition_fifty_times_reads_it_once_within_fetch_max_bytes() {
    let _watchdog = Watchdog::new("fetch fifty times", TEST_BOUND);
    let broker = start_broker("fifty-times", 2, "");
    let mut connection = Connection::open(&broker);
    create_topic(&mut connection, "large", 1);
    // 40 MiB: below fetch.max.bytes, so only collapsing the duplicates keeps the
    // answer to one copy of it.
    append_batches(&mut connection, "large", 0, 80);
    let stored = 80 * build_value_batch(now_timestamp(), 1, BATCH_VALUE_BYTES).len();
    let peak_before_kb = status_kb(&broker, "VmHWM");

    let fifty = (0..50).map(|_| fetch_partition(0, i32::MAX)).collect();
    let started = Instant::now();
    let id = connection.send(&fetch_request("large", fifty, i32::MAX), 12);
    let response: FetchResponse =
        connection.receive_within::<FetchRequest>(id, 12, FETCH_MAX_BYTES_DEFAULT + (2 << 20));
    let took = started.elapsed();
    let peak_growth_kb = status_kb(&broker, "VmHWM").saturating_sub(peak_before_kb);
    eprintln!("a fetch of one partition fifty times: {took:?}, broker peak RSS +{peak_growth_kb} kB");

    assert_eq!(response.responses.len(), 1, "one topic answered");
    let partitions = &response.responses[0].partitions;
    assert_eq!(partitions.len(), 1, "the partition is answered once: {:?}", partitions.len());
    assert_eq!(partitions[0].error_code, 0);
    let records = partitions[0].records.as_ref().expect("records");
    assert_eq!(records.len(), stored, "the whole partition, once");
    assert!(
        peak_growth_kb < RSS_GROWTH_MAX_KB,
        "the broker's peak RSS grew {peak_growth_kb} kB answering a {stored}-byte partition (bound {RSS_GROWTH_MAX_KB} kB)"
    );
}

#[test]
fn a_fetch_asking_for_more_than_fetch_max_bytes_gets_at_most_fetch_max_bytes_in_whole_batches() {
    let _watchdog = Watchdog::new("fetch.max.bytes", TEST_BOUND);
    let fetch_max_bytes = 3 << 20;
    let broker = start_broker("fetch-max-bytes", 2, &format!("fetch_max_bytes: {fetch_max_bytes}\n"));
    let mut connection = Connection::open(&broker);
    create_topic(&mut connection, "three", 3);
    for partition in 0..3 {
        append_batches(&mut connection, "three", partition, 5);
    }

    let partitions = (0..3).map(|partition| fetch_partition(partition, i32::MAX)).collect();
    let id = connection.send(&fetch_request("three", partitions, i32::MAX), 12);
    let response: FetchResponse = connection.receive_within::<FetchRequest>(id, 12, 64 << 20);
    let answered: Vec<Vec<usize>> = response.responses[0]
        .partitions
        .iter()
        .map(|p| batch_sizes(p.records.as_deref().unwrap_or_default()))
        .collect();
    let batch = build_value_batch(now_timestamp(), 1, BATCH_VALUE_BYTES).len();
    let total: usize = answered.iter().flatten().sum();
    assert!(total <= fetch_max_bytes, "{total} record bytes answered, more than fetch.max.bytes {fetch_max_bytes}");
    // In request order: partition 0's five batches, then what fits of partition 1.
    let fitting = (fetch_max_bytes - 5 * batch) / batch;
    assert_eq!(answered, vec![vec![batch; 5], vec![batch; fitting], vec![]], "batches answered per partition");
}

#[test]
fn a_first_batch_larger_than_every_limit_is_still_returned_whole_and_nothing_after_it() {
    let _watchdog = Watchdog::new("first batch", TEST_BOUND);
    let broker = start_broker("first-batch", 2, "fetch_max_bytes: 1024\n");
    let mut connection = Connection::open(&broker);
    create_topic(&mut connection, "big-batches", 2);
    append_batches(&mut connection, "big-batches", 0, 3);
    append_batches(&mut connection, "big-batches", 1, 1);

    let partitions = vec![fetch_partition(0, 1024), fetch_partition(1, i32::MAX)];
    let id = connection.send(&fetch_request("big-batches", partitions, i32::MAX), 12);
    let response: FetchResponse = connection.receive_within::<FetchRequest>(id, 12, 64 << 20);
    let answered: Vec<Vec<usize>> = response.responses[0]
        .partitions
        .iter()
        .map(|p| batch_sizes(p.records.as_deref().unwrap_or_default()))
        .collect();
    let batch = build_value_batch(now_timestamp(), 1, BATCH_VALUE_BYTES).len();
    assert_eq!(answered, vec![vec![batch], vec![]], "partition 0's first batch alone, so the consumer progresses");
}

#[test]
fn fetch_max_bytes_is_reported_by_describe_configs() {
    let _watchdog = Watchdog::new("describe fetch.max.bytes", TEST_BOUND);
    let broker = start_broker("describe", 1, "fetch_max_bytes: 2097152\n");
    let mut connection = Connection::open(&broker);
    let resource = DescribeConfigsResource::default()
        .with_resource_type(4)
        .with_resource_name(StrBytes::from_static_str("0"))
        .with_configuration_keys(Some(vec![StrBytes::from_static_str("fetch.max.bytes")]));
    let response = connection.request(&DescribeConfigsRequest::default().with_resources(vec![resource]), 4);
    let result = &response.results[0];
    assert_eq!(result.error_code, 0, "{result:?}");
    let values: Vec<(String, Option<String>)> =
        result.configs.iter().map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string()))).collect();
    assert_eq!(values, vec![("fetch.max.bytes".to_string(), Some("2097152".to_string()))]);
}

/// Asks ApiVersions on a connection of its own every few milliseconds until `busy`
/// answers its request; the longest wait, and how many were asked.
fn bystander_worst_wait(broker: &BrokerProcess, busy: &mut Connection) -> (Duration, u64) {
    let (done, answered) = std::sync::mpsc::channel();
    let mut bystander = Connection::open(broker);
    let asking = std::thread::spawn(move || {
        let mut worst = Duration::ZERO;
        let mut asked = 0u64;
        while answered.try_recv().is_err() {
            let started = Instant::now();
            let response = bystander.request(&ApiVersionsRequest::default(), 3);
            assert_eq!(response.error_code, 0);
            worst = worst.max(started.elapsed());
            asked += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
        (worst, asked)
    });
    let frame = busy.receive_frame_within("the request with many entries", 64 << 20);
    let correlation_id = i32::from_be_bytes(frame[..4].try_into().expect("a response header"));
    assert_eq!(correlation_id, BUSY_ID, "the answer to the request with many entries");
    done.send(()).expect("the bystander is running");
    asking.join().expect("the bystander")
}

/// `entries` entries naming a partition the topic does not have, without records
/// (8 bytes each on the wire): the cheapest request for a client and no engine op
/// for the broker, each entry answered UNKNOWN_TOPIC_OR_PARTITION.
fn many_produce_entries(entries: usize) -> Vec<PartitionProduceData> {
    (0..entries).map(|_| PartitionProduceData::default().with_index(1).with_records(None)).collect()
}

const ENTRIES: usize = 200_000;
/// The correlation id of the request with [`ENTRIES`] entries (sent as raw bytes,
/// encoded before the clock starts).
const BUSY_ID: i32 = 1000;

/// Checks that a bystander was not held for most of the time a request with
/// [`ENTRIES`] entries took. Decoding the request and encoding its answer are each
/// one step that no other task interrupts (about 100 ms apiece in a debug build),
/// so the bound is relative: a handler that went through its entries without
/// yielding holds the shard, and the bystander, for nearly the whole request.
fn assert_bystander_served(what: &str, busy_took: Duration, worst: Duration, asked: u64) {
    eprintln!("{what}: {busy_took:?}; bystander's worst ApiVersions wait {worst:?} over {asked}");
    assert!(worst < busy_took / 2, "{what} took {busy_took:?}, and a bystander's ApiVersions waited {worst:?} of it");
}

#[test]
fn a_produce_with_200_000_partition_entries_leaves_a_bystander_answered_promptly() {
    assert_fan_out_leaves_a_bystander_answered("produce", || {
        let request = produce_request("fan-out", many_produce_entries(ENTRIES));
        request_frame(ProduceRequest::KEY, 9, BUSY_ID, |frame| request.encode(frame, 9))
    });
}

#[test]
fn a_list_offsets_with_200_000_partition_entries_leaves_a_bystander_answered_promptly() {
    assert_fan_out_leaves_a_bystander_answered("list offsets", || {
        let partitions =
            (0..ENTRIES).map(|_| ListOffsetsPartition::default().with_partition_index(1).with_timestamp(-1)).collect();
        let topic = ListOffsetsTopic::default().with_name(name("fan-out")).with_partitions(partitions);
        let request = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![topic]);
        request_frame(ListOffsetsRequest::KEY, 7, BUSY_ID, |frame| request.encode(frame, 7))
    });
}

#[test]
fn a_fetch_with_200_000_partition_entries_leaves_a_bystander_answered_promptly() {
    assert_fan_out_leaves_a_bystander_answered("fetch", || {
        // Partitions 1, 2, ...: none exists, each is answered UNKNOWN_TOPIC_OR_PARTITION.
        let partitions = (1..=ENTRIES as i32).map(|partition| fetch_partition(partition, 1 << 20)).collect();
        let request = fetch_request("fan-out", partitions, i32::MAX);
        request_frame(FetchRequest::KEY, 12, BUSY_ID, |frame| request.encode(frame, 12))
    });
}

/// A one-shard broker with a one-partition topic `fan-out` gets the request frame
/// `frame` builds (a `what` of [`ENTRIES`] partition entries) on one connection
/// while a bystander on another asks ApiVersions: the bystander is answered
/// promptly and the broker's peak RSS stays bounded.
fn assert_fan_out_leaves_a_bystander_answered<F: FnOnce() -> Vec<u8>>(what: &'static str, frame: F) {
    let _watchdog = Watchdog::new(what, TEST_BOUND);
    // One shard: the bystander shares it with the hostile request.
    let broker = start_broker(&format!("{}-fan-out", what.replace(' ', "-")), 1, "");
    let mut connection = Connection::open(&broker);
    create_topic(&mut connection, "fan-out", 1);
    let rss_before_kb = status_kb(&broker, "VmHWM");
    let frame = frame();
    let started = Instant::now();
    connection.send_raw(&frame);
    let (worst, asked) = bystander_worst_wait(&broker, &mut connection);
    let peak_growth_kb = status_kb(&broker, "VmHWM").saturating_sub(rss_before_kb);
    eprintln!("a {what} of {ENTRIES} entries: broker peak RSS +{peak_growth_kb} kB");
    assert_bystander_served(&format!("a {what} of {ENTRIES} entries"), started.elapsed(), worst, asked);
    assert!(peak_growth_kb < RSS_GROWTH_MAX_KB, "the broker's peak RSS grew {peak_growth_kb} kB");
}
