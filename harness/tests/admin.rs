//! The admin APIs with librdkafka's admin client: CreateTopics (with
//! `validate_only`), DescribeConfigs, AlterConfigs, CreatePartitions, DeleteTopics
//! and DeleteRecords, each checked against what the broker then serves and keeps on
//! disk.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use rdkafka::admin::{
    AlterConfig, ConfigEntry, ConfigSource, NewPartitions, NewTopic, OwnedResourceSpecifier, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};

type Admin = rdkafka::admin::AdminClient<DefaultClientContext>;

/// The partition count of `topic`, or `None` if the broker does not know it
/// (Metadata for that one topic, with auto-creation off).
fn partition_count(broker: &BrokerProcess, topic: &str) -> Option<usize> {
    let client: BaseConsumer =
        client_config(broker).set("allow.auto.create.topics", "false").create().expect("creating a metadata client");
    let metadata = client.fetch_metadata(Some(topic), Duration::from_secs(30)).expect("Metadata");
    let entry =
        metadata.topics().iter().find(|t| t.name() == topic).expect("Metadata answers for the topic asked about");
    match entry.error() {
        None => Some(entry.partitions().len()),
        Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => None,
        Some(error) => panic!("Metadata for {topic}: {error:?}"),
    }
}

/// Every topic the broker lists, with its partition count (Metadata for all
/// topics).
fn listed_topics(admin: &Admin) -> BTreeMap<String, usize> {
    let metadata = admin.inner().fetch_metadata(None, Duration::from_secs(30)).expect("Metadata for all topics");
    metadata.topics().iter().map(|t| (t.name().to_string(), t.partitions().len())).collect()
}

#[test]
fn metadata_for_all_topics_lists_every_topic() {
    let _watchdog = Watchdog::new("metadata_all_topics", Duration::from_secs(120));
    let broker = BrokerProcess::start(BrokerOptions::new("admin-metadata"));
    block_on(create_topic(&broker, "inventory", 3, &[]));
    block_on(create_topic(&broker, "shipments", 1, &[]));
    // Internal topics (`__consumer_offsets`, ...) are listed too, as Kafka does.
    let listed: BTreeMap<String, usize> =
        listed_topics(&admin_client(&broker)).into_iter().filter(|(name, _)| !name.starts_with("__")).collect();
    let expected: BTreeMap<String, usize> =
        [("inventory".to_string(), 3), ("shipments".to_string(), 1)].into_iter().collect();
    assert_eq!(listed, expected, "topics listed by Metadata for all topics");
}

fn create(admin: &Admin, topic: &NewTopic<'_>, validate_only: bool) -> Result<(), RDKafkaErrorCode> {
    let options = admin_options().validate_only(validate_only);
    let results = block_on(admin.create_topics([topic], &options)).expect("CreateTopics request");
    assert_eq!(results.len(), 1, "one result per topic");
    results.into_iter().next().expect("one result").map(|_| ()).map_err(|(_, code)| code)
}

#[test]
fn create_topics_validates_without_creating_and_then_creates() {
    let _watchdog = Watchdog::new("create_topics", Duration::from_secs(180));
    let broker = BrokerProcess::start(BrokerOptions::new("admin-create"));
    let admin = admin_client(&broker);
    let topic = NewTopic::new("page-views", 3, TopicReplication::Fixed(1)).set("retention.ms", "3600000");

    assert_eq!(create(&admin, &topic, true), Ok(()), "validate_only of a valid topic");
    assert_eq!(partition_count(&broker, "page-views"), None, "validate_only created the topic");
    assert!(!broker.data_dir().join("page-views").exists(), "validate_only left a directory behind");

    let bad_config = NewTopic::new("page-views", 3, TopicReplication::Fixed(1)).set("retention.ms", "soon");
    assert_eq!(
        create(&admin, &bad_config, true),
        Err(RDKafkaErrorCode::InvalidConfig),
        "validate_only, bad config value"
    );
    let bad_key = NewTopic::new("page-views", 3, TopicReplication::Fixed(1)).set("retention.parsecs", "12");
    assert_eq!(
        create(&admin, &bad_key, true),
        Err(RDKafkaErrorCode::InvalidConfig),
        "validate_only, unknown config key"
    );
    let replicated = NewTopic::new("page-views", 3, TopicReplication::Fixed(3));
    assert_eq!(
        create(&admin, &replicated, true),
        Err(RDKafkaErrorCode::InvalidReplicationFactor),
        "validate_only, replication factor 3 on one broker"
    );
    let bad_name = NewTopic::new("page views!", 1, TopicReplication::Fixed(1));
    assert_eq!(create(&admin, &bad_name, false), Err(RDKafkaErrorCode::InvalidTopic), "invalid topic name");
    assert_eq!(partition_count(&broker, "page-views"), None, "failed validations created the topic");

    assert_eq!(create(&admin, &topic, false), Ok(()), "creating the topic");
    assert_eq!(partition_count(&broker, "page-views"), Some(3), "partitions listed after creation");
    for partition in 0..3 {
        assert!(broker.partition_dir("page-views", partition).is_dir(), "no directory for partition {partition}");
    }
    assert_eq!(create(&admin, &topic, false), Err(RDKafkaErrorCode::TopicAlreadyExists), "creating it again");
    assert_eq!(create(&admin, &topic, true), Err(RDKafkaErrorCode::TopicAlreadyExists), "validating it again");
}

/// The configs of `topic`, as DescribeConfigs reports them.
fn describe(admin: &Admin, topic: &str) -> Result<Vec<ConfigEntry>, RDKafkaErrorCode> {
    let results = block_on(admin.describe_configs([&ResourceSpecifier::Topic(topic)], &admin_options()))
        .expect("DescribeConfigs request");
    assert_eq!(results.len(), 1, "one result per resource");
    let resource = results.into_iter().next().expect("one result")?;
    assert_eq!(resource.specifier, OwnedResourceSpecifier::Topic(topic.to_string()), "described resource");
    Ok(resource.entries)
}

fn entry<'a>(entries: &'a [ConfigEntry], key: &str) -> &'a ConfigEntry {
    entries.iter().find(|e| e.name == key).unwrap_or_else(|| {
        panic!("DescribeConfigs has no {key}; it has {:?}", entries.iter().map(|e| &e.name).collect::<Vec<_>>())
    })
}

/// A config set on the topic: its value, reported as a dynamic topic config.
fn assert_set(entries: &[ConfigEntry], key: &str, value: &str) {
    let entry = entry(entries, key);
    assert_eq!(entry.value.as_deref(), Some(value), "value of {key}");
    assert_eq!(entry.source, ConfigSource::DynamicTopic, "source of {key}, which is set on the topic");
    assert!(!entry.is_default, "{key} is set on the topic but reported as default");
}

/// A config not set on the topic: the default value, reported as such.
fn assert_default(entries: &[ConfigEntry], key: &str, value: &str) {
    let entry = entry(entries, key);
    assert_eq!(entry.value.as_deref(), Some(value), "value of {key} (not set on the topic)");
    assert!(
        matches!(entry.source, ConfigSource::Default | ConfigSource::StaticBroker),
        "source of {key}, which is not set on the topic: {:?}",
        entry.source
    );
}

/// Sends AlterConfigs for `topic`. rust-rdkafka 0.39 reports every resource of an
/// AlterConfigs (and DescribeConfigs) answer as a success, whatever its error code,
/// so callers check the outcome by describing the topic again.
fn alter(admin: &Admin, topic: &str, configs: &[(&str, &str)], validate_only: bool) {
    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
    for (key, value) in configs {
        alter = alter.set(key, value);
    }
    let options = admin_options().validate_only(validate_only);
    let results = block_on(admin.alter_configs([&alter], &options)).expect("AlterConfigs request");
    assert_eq!(results.len(), 1, "one result per resource");
}

#[test]
fn describe_and_alter_topic_configs() {
    let _watchdog = Watchdog::new("configs", Duration::from_secs(180));
    let mut broker = BrokerProcess::start(BrokerOptions::new("admin-configs"));
    let admin = admin_client(&broker);
    let topic = NewTopic::new("audit-log", 2, TopicReplication::Fixed(1))
        .set("retention.ms", "3600000")
        .set("segment.bytes", "1048576");
    assert_eq!(create(&admin, &topic, false), Ok(()), "creating the topic");

    let entries = describe(&admin, "audit-log").expect("DescribeConfigs of audit-log");
    assert_set(&entries, "retention.ms", "3600000");
    assert_set(&entries, "segment.bytes", "1048576");
    assert_default(&entries, "max.message.bytes", "1048588");
    assert_default(&entries, "retention.bytes", "-1");
    // rust-rdkafka 0.39 drops a resource's error code from DescribeConfigs results
    // (each resource comes back Ok), so what can be checked here is that a missing
    // topic has no configs; the broker's UNKNOWN_TOPIC_OR_PARTITION is not visible.
    let missing = describe(&admin, "no-such-topic").unwrap_or_default();
    assert!(missing.is_empty(), "DescribeConfigs of a missing topic returned configs: {missing:?}");

    // validate_only changes nothing; a bad value or an unknown key is refused and
    // changes nothing either (the whole request is validated before any change).
    alter(&admin, "audit-log", &[("retention.ms", "1000")], true);
    alter(&admin, "audit-log", &[("retention.ms", "-7")], false);
    alter(&admin, "audit-log", &[("retention.ms", "60000"), ("no.such.key", "1")], false);
    let entries = describe(&admin, "audit-log").expect("DescribeConfigs after refused changes");
    assert_set(&entries, "retention.ms", "3600000");
    assert_set(&entries, "segment.bytes", "1048576");
    assert!(entries.iter().all(|e| e.name != "no.such.key"), "an unknown key was stored");

    // AlterConfigs replaces the topic's whole set of configs: what it leaves out
    // goes back to the default.
    alter(&admin, "audit-log", &[("retention.ms", "7200000")], false);
    let entries = describe(&admin, "audit-log").expect("DescribeConfigs after AlterConfigs");
    assert_set(&entries, "retention.ms", "7200000");
    assert_default(&entries, "segment.bytes", "1073741824");
    alter(&admin, "no-such-topic", &[("retention.ms", "1")], false);
    assert_eq!(partition_count(&broker, "no-such-topic"), None, "AlterConfigs created a missing topic");

    // The change is kept across a restart.
    drop(admin);
    broker.stop();
    broker.restart();
    let admin = admin_client(&broker);
    let entries = describe(&admin, "audit-log").expect("DescribeConfigs after a restart");
    assert_set(&entries, "retention.ms", "7200000");
    assert_default(&entries, "segment.bytes", "1073741824");
}

fn create_partitions(admin: &Admin, topic: &str, count: usize, validate_only: bool) -> Result<(), RDKafkaErrorCode> {
    let options = admin_options().validate_only(validate_only);
    let results = block_on(admin.create_partitions([&NewPartitions::new(topic, count)], &options))
        .expect("CreatePartitions request");
    assert_eq!(results.len(), 1, "one result per topic");
    results.into_iter().next().expect("one result").map(|_| ()).map_err(|(_, code)| code)
}

#[test]
fn create_partitions_grows_a_topic_and_never_shrinks_it() {
    let _watchdog = Watchdog::new("create_partitions", Duration::from_secs(180));
    let broker = BrokerProcess::start(BrokerOptions::new("admin-partitions"));
    let admin = admin_client(&broker);
    block_on(create_topic(&broker, "clicks", 2, &[]));

    assert_eq!(create_partitions(&admin, "clicks", 7, true), Ok(()), "validate_only CreatePartitions");
    assert_eq!(partition_count(&broker, "clicks"), Some(2), "validate_only added partitions");
    assert_eq!(create_partitions(&admin, "clicks", 5, false), Ok(()), "growing to 5 partitions");
    assert_eq!(partition_count(&broker, "clicks"), Some(5), "partitions after growing");
    assert_eq!(
        create_partitions(&admin, "clicks", 3, false),
        Err(RDKafkaErrorCode::InvalidPartitions),
        "shrinking to 3"
    );
    assert_eq!(
        create_partitions(&admin, "clicks", 5, false),
        Err(RDKafkaErrorCode::InvalidPartitions),
        "growing to the same count"
    );
    assert_eq!(
        create_partitions(&admin, "no-such-topic", 4, false),
        Err(RDKafkaErrorCode::UnknownTopicOrPartition),
        "growing a missing topic"
    );
    assert_eq!(partition_count(&broker, "clicks"), Some(5), "partitions after refused changes");

    // The new partitions take writes and serve them.
    let producer: FutureProducer = client_config(&broker).create().expect("creating a producer");
    for partition in 2..5 {
        let message = vec![(None, format!("click on {partition}").into_bytes())];
        let placed = expect_all_acknowledged(
            "clicks",
            &produce(&producer, "clicks", Some(partition), &message, Duration::from_secs(30)),
        );
        assert_eq!(placed, vec![(partition, 0)], "first message of new partition {partition}");
    }
    let stored = read_partitions(&broker, "clicks", 5, Duration::from_secs(60));
    for partition in 2..5 {
        let values: Vec<String> = stored[&partition].iter().map(Record::value_text).collect();
        assert_eq!(values, vec![format!("click on {partition}")], "records of new partition {partition}");
    }
}

#[test]
fn delete_topic_removes_its_data() {
    let _watchdog = Watchdog::new("delete_topic", Duration::from_secs(180));
    let mut broker = BrokerProcess::start(BrokerOptions::new("admin-delete"));
    let admin = admin_client(&broker);
    block_on(create_topic(&broker, "doomed", 3, &[("fsync.policy", "always")]));
    block_on(create_topic(&broker, "kept", 1, &[]));
    {
        // Dropped before the delete: a live producer refreshes metadata of the topics
        // it knows, and Metadata auto-creates.
        let producer: FutureProducer = client_config(&broker).create().expect("creating a producer");
        let messages: Vec<Outgoing> = (0..300).map(|i| (Some(format!("k{i}").into_bytes()), vec![b'd'; 500])).collect();
        expect_all_acknowledged("doomed", &produce(&producer, "doomed", None, &messages, Duration::from_secs(60)));
    }
    let topic_dir = broker.data_dir().join("doomed");
    let log_files = |dir: &std::path::Path| -> usize {
        walk(dir).iter().filter(|p| p.extension().is_some_and(|e| e == "log")).count()
    };
    assert!(log_files(&topic_dir) >= 3, "segment files of doomed before the delete: {:?}", walk(&topic_dir));

    let results = block_on(admin.delete_topics(&["doomed"], &admin_options())).expect("DeleteTopics request");
    assert_eq!(results.len(), 1);
    assert!(results[0].is_ok(), "DeleteTopics doomed: {:?}", results[0]);
    wait_until("the data directory of doomed to be removed", Duration::from_secs(30), || !topic_dir.exists());
    assert_eq!(partition_count(&broker, "doomed"), None, "Metadata for doomed after the delete");
    assert_eq!(partition_count(&broker, "kept"), Some(1), "Metadata for kept after the delete");
    let again = block_on(admin.delete_topics(&["doomed"], &admin_options())).expect("DeleteTopics request");
    assert_eq!(
        again[0].as_ref().err().map(|(_, code)| *code),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition),
        "deleting it again"
    );

    // Nothing comes back: not after a restart, not in a new topic of the same name.
    drop(admin);
    broker.stop();
    broker.restart();
    assert_eq!(partition_count(&broker, "doomed"), None, "Metadata for doomed after a restart");
    assert!(!topic_dir.exists(), "the data of doomed is back after a restart");
    block_on(create_topic(&broker, "doomed", 1, &[]));
    let stored = read_partitions(&broker, "doomed", 1, Duration::from_secs(30));
    assert!(stored[&0].is_empty(), "a new topic named doomed holds old records: {} of them", stored[&0].len());
}

/// Every file under `dir`, recursively (empty if it does not exist).
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return files };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn delete_records_moves_the_log_start_offset() {
    let _watchdog = Watchdog::new("delete_records", Duration::from_secs(180));
    let broker = BrokerProcess::start(BrokerOptions::new("admin-delete-records"));
    let admin = admin_client(&broker);
    block_on(create_topic(&broker, "sensor-readings", 1, &[]));
    let producer: FutureProducer = client_config(&broker).set("linger.ms", "0").create().expect("creating a producer");
    // One message per request, so offset 40 is a batch boundary as well as a record.
    for i in 0..100 {
        let message = vec![(None, format!("reading {i}").into_bytes())];
        expect_all_acknowledged(
            "sensor-readings",
            &produce(&producer, "sensor-readings", Some(0), &message, Duration::from_secs(30)),
        );
    }

    let mut before = TopicPartitionList::new();
    before.add_partition_offset("sensor-readings", 0, Offset::Offset(40)).expect("valid offset");
    let result = block_on(admin.delete_records(&before, &admin_options())).expect("DeleteRecords request");
    let element = result.elements_for_topic("sensor-readings").into_iter().next().expect("a result for partition 0");
    assert!(element.error().is_ok(), "DeleteRecords before offset 40: {:?}", element.error());
    assert_eq!(element.offset(), Offset::Offset(40), "low watermark reported by DeleteRecords");

    let consumer: BaseConsumer = client_config(&broker).create().expect("creating a consumer");
    let (low, high) = consumer.fetch_watermarks("sensor-readings", 0, Duration::from_secs(30)).expect("ListOffsets");
    assert_eq!((low, high), (40, 100), "log start offset and high watermark after DeleteRecords");
    let stored = read_partitions(&broker, "sensor-readings", 1, Duration::from_secs(30));
    let first = stored[&0].first().expect("records after the log start");
    assert_eq!((first.offset, first.value_text()), (40, "reading 40".to_string()), "first record served");
    assert_eq!(stored[&0].len(), 60, "records served after DeleteRecords");

    // Past the high watermark is refused.
    let mut beyond = TopicPartitionList::new();
    beyond.add_partition_offset("sensor-readings", 0, Offset::Offset(500)).expect("valid offset");
    let result = block_on(admin.delete_records(&beyond, &admin_options()));
    let refused = match result {
        Ok(list) => list.elements_for_topic("sensor-readings").into_iter().next().is_some_and(|e| e.error().is_err()),
        Err(_) => true,
    };
    assert!(refused, "DeleteRecords past the high watermark was accepted");
}

#[test]
fn describe_log_dirs_lists_every_replica_with_its_size_and_the_disk_space() {
    use common::raw::RawConnection;
    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    use kafka_protocol::messages::{DescribeLogDirsRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;

    let _watchdog = Watchdog::new("describe_log_dirs", Duration::from_secs(120));
    let broker = BrokerProcess::start(BrokerOptions::new("describe-log-dirs"));
    block_on(create_topic(&broker, "sized", 2, &[]));
    let producer: FutureProducer = client_config(&broker).create().expect("producer");
    let messages: Vec<Outgoing> = (0..50).map(|i| (None, vec![b'x'; 1000 + i])).collect();
    expect_all_acknowledged("sized", &produce(&producer, "sized", Some(1), &messages, Duration::from_secs(30)));

    // Every replica (v4: with the file system's size).
    let response = RawConnection::open(&broker).request(&DescribeLogDirsRequest::default().with_topics(None), 4);
    assert_eq!(response.error_code, 0);
    assert_eq!(response.results.len(), 1, "one log directory: the data directory");
    let result = &response.results[0];
    assert_eq!(result.error_code, 0);
    assert_eq!(result.log_dir.as_str(), broker.data_dir().display().to_string());
    assert!(result.total_bytes > 0 && (0..=result.total_bytes).contains(&result.usable_bytes), "{result:?}");
    let sized = result.topics.iter().find(|t| t.name.0.as_str() == "sized").expect("the topic is listed");
    let sizes: BTreeMap<i32, i64> = sized.partitions.iter().map(|p| (p.partition_index, p.partition_size)).collect();
    assert_eq!(sizes.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
    assert!(sizes[&1] >= 50 * 1000, "50 records of 1000+ bytes on disk: {sizes:?}");
    assert!(sizes[&0] < sizes[&1], "{sizes:?}");
    assert!(sized.partitions.iter().all(|p| p.offset_lag == 0 && !p.is_future_key));

    // Asked by topic: only the listed partitions that exist.
    let asked = DescribableLogDirTopic::default()
        .with_topic(TopicName(StrBytes::from_static_str("sized")))
        .with_partitions(vec![1, 7]);
    let request = DescribeLogDirsRequest::default().with_topics(Some(vec![asked]));
    let response = RawConnection::open(&broker).request(&request, 1);
    let topics = &response.results[0].topics;
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0].partitions.iter().map(|p| p.partition_index).collect::<Vec<_>>(), vec![1]);
}
