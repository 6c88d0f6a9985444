//! What is the broker's stays the broker's, against real `corelog broker` processes:
//!
//! - one broker per data directory and per address: a second one exits non-zero
//!   naming the first one's pid (and the address), and the first keeps serving,
//!   while a broker restarted at once after a SIGKILL is not taken for a second one;
//! - `__consumer_offsets` is the broker's: Produce, DeleteRecords, DeleteTopics,
//!   CreatePartitions, AlterConfigs and IncrementalAlterConfigs on it are refused
//!   with the error codes Kafka gives, and a group's committed offset survives them
//!   and a restart;
//! - the broker's own files live apart from the topics: topics named like them are
//!   created, written by idempotent producers (InitProducerId) and read back across
//!   a restart; a data directory of the old layout is moved into the new one.
//!
//! The internal-topic requests are raw Kafka requests (encoded with the
//! `kafka-protocol` crate), so the test sees the exact error code on the wire.

mod common;

use std::time::Duration;

use common::raw::RawConnection as Connection;
use common::*;
use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::incremental_alter_configs_request as incremental;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AlterConfigsRequest, CreatePartitionsRequest, DeleteRecordsRequest, DeleteTopicsRequest,
    IncrementalAlterConfigsRequest, InitProducerIdRequest, MetadataRequest, MetadataResponse, ProduceRequest,
    ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};

/// Every test here ends within this bound (see [`Watchdog`]).
const TEST_BOUND: Duration = Duration::from_secs(240);
/// Longest wait for a refused broker to exit.
const REFUSED_EXIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for produced messages to be acknowledged.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(60);
const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Kafka's `ConfigResource.Type` of a topic.
const TOPIC_RESOURCE: i8 = 2;
/// IncrementalAlterConfigs' SET operation.
const SET: i8 = 0;
/// The meta directory of the data directory (`corelog_engine::data_dir::META_DIR`).
const META_DIR: &str = "corelog+meta";

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn str_bytes(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn metadata_of(connection: &mut Connection, topic: &str) -> MetadataResponse {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(topic_name(topic)))]))
        .with_allow_auto_topic_creation(false);
    connection.request(&request, 12)
}

/// A fresh producer id from InitProducerId (what an idempotent producer asks for).
fn init_producer_id(connection: &mut Connection) -> i64 {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let response = connection.request(&request, 4);
    assert_eq!(response.error_code, 0, "InitProducerId error code");
    response.producer_id.0
}

fn idempotent_producer(broker: &BrokerProcess) -> FutureProducer {
    client_config(broker).set("enable.idempotence", "true").set("acks", "all").create().expect("creating a producer")
}

/// Produces `count` messages `{prefix}-{i}` to partition 0 of `topic` and asserts
/// every one was acknowledged.
fn produce_all(producer: &FutureProducer, topic: &str, prefix: &str, count: usize) {
    let messages: Vec<Outgoing> = (0..count).map(|i| (None, format!("{prefix}-{i}").into_bytes())).collect();
    for (index, outcome) in produce(producer, topic, Some(0), &messages, PRODUCE_TIMEOUT).into_iter().enumerate() {
        if let Err(error) = outcome {
            panic!("message {index} to {topic} was not acknowledged: {error}");
        }
    }
}

/// The values of every record of partition 0 of `topic`, in offset order.
fn values(broker: &BrokerProcess, topic: &str) -> Vec<String> {
    read_partitions(broker, topic, 1, Duration::from_secs(60))[&0].iter().map(Record::value_text).collect()
}

fn expected_values(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

#[test]
fn a_second_broker_on_the_same_data_directory_exits_naming_the_first_ones_pid() {
    let _watchdog = Watchdog::new("second_broker_same_data_dir", TEST_BOUND);
    let broker = BrokerProcess::start(BrokerOptions::new("ownership-same-dir"));
    let data_dir = broker.data_dir().display().to_string();
    let args = ["--data-dir", data_dir.as_str(), "--listen", "127.0.0.1:0", "--cores", "1"];
    let (status, log) = run_broker_expecting_exit(&args, REFUSED_EXIT_TIMEOUT);
    assert!(!status.success(), "the second broker exited with {status}\n{log}");
    assert!(log.contains(&format!("pid {}", broker.pid())), "the error names the first broker's pid:\n{log}");
    assert!(log.contains(&data_dir), "the error names the data directory:\n{log}");

    // The first broker never noticed.
    let producer = idempotent_producer(&broker);
    produce_all(&producer, "after-the-refusal", "kept", 5);
    assert_eq!(values(&broker, "after-the-refusal"), expected_values("kept", 5));
}

#[test]
fn a_second_broker_on_the_same_address_exits_naming_the_address() {
    let _watchdog = Watchdog::new("second_broker_same_address", TEST_BOUND);
    let broker = BrokerProcess::start(BrokerOptions::new("ownership-same-address"));
    let other_dir = broker.data_dir().with_file_name("other-data");
    let address = broker.address().to_string();
    let (status, log) = run_broker_expecting_exit(
        &["--data-dir", &other_dir.display().to_string(), "--listen", &address, "--cores", "2"],
        REFUSED_EXIT_TIMEOUT,
    );
    assert!(!status.success(), "the second broker exited with {status}\n{log}");
    assert!(log.contains(&format!("listening on {address}")), "the error names the address:\n{log}");
    assert!(log.contains(&format!("pid {}", broker.pid())), "the error names the first broker's pid:\n{log}");

    // New connections all reach the first broker: with a second broker in the port's
    // reuseport group, about half of them would land on the other cluster, which
    // does not know this topic.
    let producer = idempotent_producer(&broker);
    produce_all(&producer, "one-cluster", "kept", 5);
    for _ in 0..20 {
        let metadata = metadata_of(&mut Connection::open(&broker), "one-cluster");
        assert_eq!(metadata.topics.len(), 1);
        assert_eq!(metadata.topics[0].error_code, 0, "a fresh connection reached a broker without the topic");
    }
    assert_eq!(values(&broker, "one-cluster"), expected_values("kept", 5));
}

#[test]
fn a_broker_killed_and_restarted_at_once_on_its_port_starts_at_the_first_try() {
    let _watchdog = Watchdog::new("kill_and_restart_on_the_same_port", TEST_BOUND);
    let mut broker = BrokerProcess::start(BrokerOptions::new("ownership-kill-restart").durable());
    let producer = idempotent_producer(&broker);
    produce_all(&producer, "survivors", "before", 3);
    // The killed broker's listeners outlive it for a moment (its io_uring rings are
    // torn down after it is reaped); the new broker waits for them instead of
    // taking them for another broker's.
    broker.kill();
    broker.restart();
    assert!(
        !broker.log_tail().contains("Address already in use"),
        "the restart was refused at least once:\n{}",
        broker.log_tail()
    );
    produce_all(&producer, "survivors", "after", 3);
    let mut expected = expected_values("before", 3);
    expected.extend(expected_values("after", 3));
    assert_eq!(values(&broker, "survivors"), expected);
}

#[test]
fn client_changes_to_the_offsets_topic_are_refused_with_kafkas_error_codes() {
    let _watchdog = Watchdog::new("offsets_topic_refusals", TEST_BOUND);
    let mut broker = BrokerProcess::start(BrokerOptions::new("ownership-offsets-topic").durable());
    block_on(create_topic(&broker, "orders", 1, &[]));
    let producer = idempotent_producer(&broker);
    produce_all(&producer, "orders", "order", 10);
    let commit_and_read = |broker: &BrokerProcess, commit: Option<i64>| -> Option<i64> {
        let consumer: BaseConsumer = client_config(broker)
            .set("group.id", "billing")
            .set("enable.auto.commit", "false")
            .create()
            .expect("creating a consumer");
        let mut list = TopicPartitionList::new();
        list.add_partition_offset("orders", 0, commit.map_or(Offset::Invalid, Offset::Offset)).expect("an offset");
        if commit.is_some() {
            consumer.commit(&list, CommitMode::Sync).expect("OffsetCommit");
        }
        let committed = consumer.committed_offsets(list, Duration::from_secs(30)).expect("OffsetFetch");
        committed.find_partition("orders", 0).and_then(|p| p.offset().to_raw())
    };
    assert_eq!(commit_and_read(&broker, Some(7)), Some(7), "the committed offset before the refusals");

    let mut connection = Connection::open(&broker);
    let metadata = metadata_of(&mut connection, OFFSETS_TOPIC);
    let offsets_topic = &metadata.topics[0];
    assert_eq!(offsets_topic.error_code, 0, "Metadata for {OFFSETS_TOPIC}");
    assert!(offsets_topic.is_internal, "Metadata marks {OFFSETS_TOPIC} internal");
    let partitions: Vec<i32> = offsets_topic.partitions.iter().map(|p| p.partition_index).collect();
    assert!(!partitions.is_empty());
    let invalid_topic = ResponseError::InvalidTopicException.code();
    let not_authorized = ResponseError::TopicAuthorizationFailed.code();

    // Produce: Kafka's ReplicaManager.appendToLocalLog, "Cannot append to internal topic".
    let batch = corelog_engine::batch::build_value_batch(corelog_engine::TimestampMs(0), 3, 16);
    let partition_data = partitions
        .iter()
        .map(|&index| PartitionProduceData::default().with_index(index).with_records(Some(batch.clone().into())))
        .collect();
    let produce = ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![
        TopicProduceData::default().with_name(topic_name(OFFSETS_TOPIC)).with_partition_data(partition_data),
    ]);
    let response = connection.request(&produce, 9);
    for partition in &response.responses[0].partition_responses {
        assert_eq!(partition.error_code, invalid_topic, "Produce to {OFFSETS_TOPIC}/{}", partition.index);
    }

    // DeleteRecords: Kafka's ReplicaManager.deleteRecordsOnLocalLog, "Cannot delete
    // records of internal topic".
    let everything = partitions
        .iter()
        .map(|&index| DeleteRecordsPartition::default().with_partition_index(index).with_offset(-1))
        .collect();
    let delete_records =
        DeleteRecordsRequest::default().with_timeout_ms(30_000).with_topics(vec![DeleteRecordsTopic::default()
            .with_name(topic_name(OFFSETS_TOPIC))
            .with_partitions(everything)]);
    let response = connection.request(&delete_records, 2);
    for partition in &response.topics[0].partitions {
        let index = partition.partition_index;
        assert_eq!(partition.error_code, invalid_topic, "DeleteRecords of {OFFSETS_TOPIC}/{index}");
    }

    // DeleteTopics, CreatePartitions, AlterConfigs, IncrementalAlterConfigs: what
    // Kafka answers a principal without the permission on the topic.
    let delete_topics =
        DeleteTopicsRequest::default().with_timeout_ms(30_000).with_topic_names(vec![topic_name(OFFSETS_TOPIC)]);
    let response = connection.request(&delete_topics, 5);
    assert_eq!(response.responses[0].error_code, not_authorized, "DeleteTopics of {OFFSETS_TOPIC}");
    let message = response.responses[0].error_message.as_ref().map(|m| m.to_string()).unwrap_or_default();
    assert!(message.contains("internal topic"), "DeleteTopics says why: {message:?}");

    let grow =
        CreatePartitionsRequest::default().with_timeout_ms(30_000).with_topics(vec![CreatePartitionsTopic::default()
            .with_name(topic_name(OFFSETS_TOPIC))
            .with_count(partitions.len() as i32 + 1)]);
    let response = connection.request(&grow, 3);
    assert_eq!(response.results[0].error_code, not_authorized, "CreatePartitions of {OFFSETS_TOPIC}");

    for validate_only in [true, false] {
        let retention =
            AlterableConfig::default().with_name(str_bytes("retention.ms")).with_value(Some(str_bytes("1")));
        let alter = AlterConfigsRequest::default().with_validate_only(validate_only).with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(TOPIC_RESOURCE)
                .with_resource_name(str_bytes(OFFSETS_TOPIC))
                .with_configs(vec![retention]),
        ]);
        let response = connection.request(&alter, 2);
        assert_eq!(response.responses[0].error_code, not_authorized, "AlterConfigs (validate_only {validate_only})");

        let set_retention = incremental::AlterableConfig::default()
            .with_name(str_bytes("retention.ms"))
            .with_config_operation(SET)
            .with_value(Some(str_bytes("1")));
        let incremental =
            IncrementalAlterConfigsRequest::default().with_validate_only(validate_only).with_resources(vec![
                incremental::AlterConfigsResource::default()
                    .with_resource_type(TOPIC_RESOURCE)
                    .with_resource_name(str_bytes(OFFSETS_TOPIC))
                    .with_configs(vec![set_retention]),
            ]);
        let response = connection.request(&incremental, 1);
        assert_eq!(
            response.responses[0].error_code, not_authorized,
            "IncrementalAlterConfigs (validate_only {validate_only})"
        );
    }
    drop(connection);

    // Nothing changed: the topic is whole, and the group's offset survives a restart
    // (which replays the offsets partitions).
    let metadata = metadata_of(&mut Connection::open(&broker), OFFSETS_TOPIC);
    assert_eq!(metadata.topics[0].partitions.len(), partitions.len(), "{OFFSETS_TOPIC} partitions after the refusals");
    broker.stop();
    broker.restart();
    assert_eq!(commit_and_read(&broker, None), Some(7), "the committed offset after the refusals and a restart");
    // Other topics are not refused.
    produce_all(&producer, "orders", "order-after", 1);
}

/// Names a topic may have that the broker's own files have or had.
const BROKER_FILE_NAMES: &[&str] =
    &["producer-id-block", "cluster-id", "lock", "device-probe", ".io-probe-0", ".io-probe-1", "corelog-meta"];

#[test]
fn topics_named_like_the_brokers_files_work_across_a_restart_and_init_producer_id_too() {
    let _watchdog = Watchdog::new("topics_named_like_broker_files", TEST_BOUND);
    let mut broker = BrokerProcess::start(BrokerOptions::new("ownership-file-names").durable());
    for topic in BROKER_FILE_NAMES {
        block_on(create_topic(&broker, topic, 1, &[]));
    }
    let producer = idempotent_producer(&broker);
    for topic in BROKER_FILE_NAMES {
        produce_all(&producer, topic, "before", 3);
    }
    drop(producer);
    let first_id = init_producer_id(&mut Connection::open(&broker));
    for topic in BROKER_FILE_NAMES {
        assert!(broker.data_dir().join(topic).join("0").is_dir(), "{topic} has a partition directory");
    }

    broker.stop();
    broker.restart();
    let next_id = init_producer_id(&mut Connection::open(&broker));
    assert!(next_id > first_id, "InitProducerId after the restart gave {next_id}, not past {first_id}");
    let producer = idempotent_producer(&broker);
    for topic in BROKER_FILE_NAMES {
        produce_all(&producer, topic, "after", 3);
    }
    for topic in BROKER_FILE_NAMES {
        let mut expected = expected_values("before", 3);
        expected.extend(expected_values("after", 3));
        assert_eq!(values(&broker, topic), expected, "records of {topic}");
    }
}

#[test]
fn a_data_directory_of_the_old_layout_keeps_its_cluster_id_and_producer_ids() {
    let _watchdog = Watchdog::new("old_layout", TEST_BOUND);
    let mut broker = BrokerProcess::start(BrokerOptions::new("ownership-old-layout"));
    block_on(create_topic(&broker, "ledger", 1, &[]));
    broker.stop();
    // Put the directory back into the old layout: the broker's files at the root,
    // no meta directory, with a cluster id and a reserved block this test chose.
    let root = broker.data_dir().to_path_buf();
    std::fs::remove_dir_all(root.join(META_DIR)).expect("removing the meta directory");
    std::fs::write(root.join("cluster-id"), "old-layout-cluster\n").expect("writing cluster-id");
    std::fs::write(root.join("producer-id-block"), "7000").expect("writing producer-id-block");
    std::fs::write(root.join(".io-probe-0"), [0u8; 4096]).expect("writing a leftover probe file");

    broker.restart();
    let mut connection = Connection::open(&broker);
    let metadata = metadata_of(&mut connection, "ledger");
    assert_eq!(metadata.cluster_id.as_ref().map(|id| id.to_string()).as_deref(), Some("old-layout-cluster"));
    assert_eq!(metadata.topics[0].error_code, 0, "the topic survived the move");
    let id = init_producer_id(&mut connection);
    assert!(id >= 7000, "InitProducerId gave {id}, below the block reserved in the old layout");
    for name in ["cluster-id", "producer-id-block", ".io-probe-0"] {
        assert!(!root.join(name).exists(), "{name} is still at the data directory's root");
    }
    assert!(root.join(META_DIR).join("producer-id-block").is_file(), "producer-id-block moved into {META_DIR}");
}
