//! Damage is contained, never spread, with a real `corelog broker` process:
//!
//! - A sealed segment damaged while the broker was stopped (a bad batch length in one
//!   partition, a flipped record byte in another) does not stop the next start and
//!   is not truncated: those two partitions answer KAFKA_STORAGE_ERROR in Metadata,
//!   Fetch and Produce, every other partition serves produce and fetch, the broker's
//!   log names the damaged file, byte and offset, and the segment files stay byte for
//!   byte as they were. `corelog repair` changes nothing without consent and, with
//!   `--truncate-at-corruption`, cuts each partition right before its damage, after
//!   which the broker serves it again.
//! - A shard that panics takes the broker down with exit status 1 and a log line
//!   naming the shard and the panic, instead of leaving it half alive.
//!
//! Metadata, Fetch and Produce of the damaged partitions are raw requests (the
//! `kafka-protocol` crate over `std::net`), so the error codes checked are the ones on
//! the wire; everything else goes through librdkafka.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::raw::RawConnection as Connection;
use common::*;
use corelog_engine::batch::{build_value_batch, BatchHeader};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    FetchRequest, FetchResponse, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::producer::FutureProducer;

/// Every test here ends within this bound (see [`Watchdog`]).
const TEST_BOUND: Duration = Duration::from_secs(300);
const KAFKA_STORAGE_ERROR: i16 = 56;
/// Small segments, so each partition has several sealed ones.
const SEGMENT_BYTES: &str = "16384";
const MESSAGES_PER_PARTITION: usize = 200;

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// Partition index → error code, from a Metadata v12 answer about `topic`.
fn metadata_errors(connection: &mut Connection, topic: &str) -> BTreeMap<i32, i16> {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(topic_name(topic)))]));
    let response: MetadataResponse = connection.request(&request, 12);
    assert_eq!(response.topics.len(), 1);
    assert_eq!(response.topics[0].error_code, 0, "topic {topic}");
    response.topics[0].partitions.iter().map(|p| (p.partition_index, p.error_code)).collect()
}

/// The error code and record bytes of a Fetch v12 of one partition from offset 0.
fn fetch(connection: &mut Connection, topic: &str, partition: i32) -> (i16, usize) {
    let request = FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default().with_topic(topic_name(topic)).with_partitions(vec![
            FetchPartition::default().with_partition(partition).with_fetch_offset(0).with_partition_max_bytes(1 << 20),
        ])]);
    let response: FetchResponse = connection.request(&request, 12);
    let data = &response.responses[0].partitions[0];
    (data.error_code, data.records.as_ref().map_or(0, |r| r.len()))
}

/// The error code of a Produce v9 of one batch to one partition.
fn produce_raw(connection: &mut Connection, topic: &str, partition: i32) -> i16 {
    let batch = build_value_batch(now_timestamp(), 1, 10);
    let request = ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![
        TopicProduceData::default().with_name(topic_name(topic)).with_partition_data(vec![
            PartitionProduceData::default().with_index(partition).with_records(Some(batch.into())),
        ]),
    ]);
    let response: ProduceResponse = connection.request(&request, 9);
    response.responses[0].partition_responses[0].error_code
}

fn new_producer(broker: &BrokerProcess) -> FutureProducer {
    client_config(broker)
        .set("linger.ms", "2")
        // Batches of 10 messages (3 KiB): a segment rolls only between batches.
        .set("batch.num.messages", "10")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("creating a producer")
}

fn messages(tag: &str, count: usize) -> Vec<Outgoing> {
    (0..count)
        .map(|i| (Some(format!("{tag}-{i}").into_bytes()), format!("{tag}-{i}-{}", "v".repeat(300)).into_bytes()))
        .collect()
}

/// The segment files (`.log`) of a partition directory, in offset order.
fn segment_logs(dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs
}

/// Every file of a partition directory and its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .map(|path| {
            let bytes = std::fs::read(&path).expect("read");
            (path, bytes)
        })
        .collect()
}

/// Where the damage goes: the second batch of the second segment file (sealed).
struct Victim {
    log: PathBuf,
    position: usize,
    header: BatchHeader,
}

fn second_batch_of_second_segment(dir: &Path) -> Victim {
    let logs = segment_logs(dir);
    assert!(logs.len() >= 3, "{}: the test needs sealed segments, found {logs:?}", dir.display());
    let bytes = std::fs::read(&logs[1]).expect("read");
    let first = BatchHeader::parse(&bytes).expect("a first batch");
    let position = first.size_bytes();
    let header = BatchHeader::parse(&bytes[position..]).expect("a second batch");
    Victim { log: logs[1].clone(), position, header }
}

fn corelog_repair(broker: &BrokerProcess, topic: &str, partition: i32, consent: bool) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_corelog"));
    command.arg("repair").arg("--data-dir").arg(broker.data_dir()).arg("--topic").arg(topic);
    command.arg("--partition").arg(partition.to_string());
    if consent {
        command.arg("--truncate-at-corruption");
    }
    let output = command.output().expect("running corelog repair");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[test]
fn a_damaged_sealed_segment_takes_only_its_partition_offline_keeps_its_bytes_and_repair_brings_it_back() {
    let _watchdog = Watchdog::new("damaged_sealed_segment", TEST_BOUND);
    let mut broker = BrokerProcess::start(BrokerOptions::new("damage-sealed-segment"));
    block_on(create_topic(&broker, "kept", 2, &[("segment.bytes", SEGMENT_BYTES)]));
    block_on(create_topic(&broker, "damaged", 2, &[("segment.bytes", SEGMENT_BYTES)]));
    let producer = new_producer(&broker);
    let mut sent: BTreeMap<(String, i32), Vec<Outgoing>> = BTreeMap::new();
    for topic in ["kept", "damaged"] {
        for partition in 0..2 {
            let batch = messages(&format!("{topic}{partition}"), MESSAGES_PER_PARTITION);
            let outcomes = produce(&producer, topic, Some(partition), &batch, Duration::from_secs(60));
            expect_all_acknowledged(topic, &outcomes);
            sent.insert((topic.to_string(), partition), batch);
        }
    }
    drop(producer);
    broker.stop();

    // damaged-0: a bad batch length; damaged-1: one flipped bit in a record.
    let bad_length = second_batch_of_second_segment(&broker.partition_dir("damaged", 0));
    let mut bytes = std::fs::read(&bad_length.log).expect("read");
    bytes[bad_length.position + 8..bad_length.position + 12].copy_from_slice(&0x00ff_0000i32.to_be_bytes());
    std::fs::write(&bad_length.log, &bytes).expect("write");
    let flipped = second_batch_of_second_segment(&broker.partition_dir("damaged", 1));
    let mut bytes = std::fs::read(&flipped.log).expect("read");
    bytes[flipped.position + flipped.header.size_bytes() - 3] ^= 0x04;
    std::fs::write(&flipped.log, &bytes).expect("write");
    let before: Vec<_> = (0..2).map(|p| files(&broker.partition_dir("damaged", p))).collect();

    broker.restart();
    let log = broker.log();
    for (partition, victim) in [(0, &bad_length), (1, &flipped)] {
        let line = log
            .lines()
            .find(|line| line.contains(&format!("partition damaged-{partition} is offline")))
            .unwrap_or_else(|| panic!("no log line about damaged-{partition}\n{}", broker.log_tail()));
        for needle in [
            victim.log.display().to_string(),
            format!("damaged at byte {} (where offset {} should be)", victim.position, victim.header.base_offset),
            format!(
                "corelog repair --data-dir {} --topic damaged --partition {partition}",
                broker.data_dir().display()
            ),
        ] {
            assert!(line.contains(&needle), "the log line does not say {needle:?}: {line}");
        }
    }
    let mut connection = Connection::open(&broker);
    let storage_error = BTreeMap::from([(0, KAFKA_STORAGE_ERROR), (1, KAFKA_STORAGE_ERROR)]);
    assert_eq!(metadata_errors(&mut connection, "damaged"), storage_error);
    assert_eq!(metadata_errors(&mut connection, "kept"), BTreeMap::from([(0, 0), (1, 0)]));
    for partition in 0..2 {
        assert_eq!(fetch(&mut connection, "damaged", partition).0, KAFKA_STORAGE_ERROR, "Fetch damaged-{partition}");
        assert_eq!(
            produce_raw(&mut connection, "damaged", partition),
            KAFKA_STORAGE_ERROR,
            "Produce damaged-{partition}"
        );
        let (code, bytes) = fetch(&mut connection, "kept", partition);
        assert_eq!((code, bytes > 0), (0, true), "Fetch kept-{partition}");
    }
    // Every other partition serves produce and fetch, through a real client.
    let producer = new_producer(&broker);
    for partition in 0..2 {
        let more = messages(&format!("kept{partition}-after"), 20);
        let outcomes = produce(&producer, "kept", Some(partition), &more, Duration::from_secs(60));
        expect_all_acknowledged("kept", &outcomes);
        sent.get_mut(&("kept".to_string(), partition)).expect("sent").extend(more);
    }
    drop(producer);
    let kept = read_partitions(&broker, "kept", 2, Duration::from_secs(60));
    for partition in 0..2 {
        let values: Vec<Vec<u8>> = kept[&partition].iter().map(|r| r.value.clone().expect("a value")).collect();
        let expected: Vec<Vec<u8>> = sent[&("kept".to_string(), partition)].iter().map(|(_, v)| v.clone()).collect();
        assert!(values == expected, "kept-{partition}: {} records read, {} sent", values.len(), expected.len());
    }
    // corelog repair refuses to run beside the broker, which holds the data
    // directory's lock (the files are compared below).
    let (ok, text) = corelog_repair(&broker, "damaged", 0, true);
    assert!(!ok, "corelog repair ran beside a running broker: {text}");
    assert!(text.contains(&format!("in use by pid {}", broker.pid())), "the refusal names the broker: {text}");
    broker.stop();
    for partition in 0..2 {
        assert!(
            files(&broker.partition_dir("damaged", partition)) == before[partition as usize],
            "damaged-{partition}'s files changed"
        );
    }

    // Repair: nothing without consent; with it, each partition is cut right before
    // its damage and served again.
    for (partition, victim) in [(0, &bad_length), (1, &flipped)] {
        let (ok, text) = corelog_repair(&broker, "damaged", partition, false);
        assert!(!ok, "corelog repair without consent must exit non-zero on damage: {text}");
        assert!(
            text.contains(&victim.log.display().to_string()) && text.contains("--truncate-at-corruption"),
            "{text}"
        );
        assert!(
            files(&broker.partition_dir("damaged", partition)) == before[partition as usize],
            "a look changed files"
        );
        let (ok, text) = corelog_repair(&broker, "damaged", partition, true);
        assert!(ok, "corelog repair --truncate-at-corruption failed: {text}");
        assert!(text.contains(&format!("every record from offset {} on", victim.header.base_offset)), "{text}");
    }
    broker.restart();
    let mut connection = Connection::open(&broker);
    assert_eq!(metadata_errors(&mut connection, "damaged"), BTreeMap::from([(0, 0), (1, 0)]));
    let producer = new_producer(&broker);
    for (partition, victim) in [(0, &bad_length), (1, &flipped)] {
        let outcomes =
            produce(&producer, "damaged", Some(partition), &messages("after-repair", 1), Duration::from_secs(60));
        let placed = expect_all_acknowledged("damaged", &outcomes);
        assert_eq!(placed, vec![(partition, victim.header.base_offset.0)], "the log resumes right at the damage");
    }
    drop(producer);
    let repaired = read_partitions(&broker, "damaged", 2, Duration::from_secs(60));
    for (partition, victim) in [(0, &bad_length), (1, &flipped)] {
        let kept = victim.header.base_offset.0 as usize;
        let values: Vec<Vec<u8>> = repaired[&partition].iter().map(|r| r.value.clone().expect("a value")).collect();
        let expected: Vec<Vec<u8>> =
            sent[&("damaged".to_string(), partition)][..kept].iter().map(|(_, v)| v.clone()).collect();
        assert!(values[..kept] == expected[..], "damaged-{partition}: the records before the damage changed");
        assert_eq!(values.len(), kept + 1);
    }
    broker.stop();
}

#[test]
fn a_shard_that_panics_takes_the_broker_down_with_exit_status_1() {
    let _watchdog = Watchdog::new("shard_panic", TEST_BOUND);
    let mut options = BrokerOptions::new("damage-shard-panic");
    options.extra_args = vec!["--test-panic-on-produce-to".to_string(), "boom".to_string()];
    let mut broker = BrokerProcess::start(options);
    let mut connection = Connection::open(&broker);
    connection.send(
        &ProduceRequest::default().with_acks(-1).with_timeout_ms(1000).with_topic_data(vec![
            TopicProduceData::default().with_name(topic_name("boom")).with_partition_data(vec![
                PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(build_value_batch(corelog_engine::TimestampMs(0), 1, 1).into())),
            ]),
        ]),
        9,
    );
    let status = broker.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "exit status after a shard panicked\n{}", broker.log_tail());
    let log = broker.log();
    let line = log
        .lines()
        .find(|line| line.contains("panicked: test-only panic: a Produce to boom"))
        .unwrap_or_else(|| panic!("no log line names the panic\n{}", broker.log_tail()));
    assert!(line.contains("shard "), "{line}");
    assert!(log.contains("corelog broker stopping with exit status 1: shard"), "{}", broker.log_tail());
}
