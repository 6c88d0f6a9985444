//! Log compaction against a real `corelog broker` and librdkafka:
//!
//! - a topic with `cleanup.policy=compact` and small segments, many values for few
//!   keys, for each codec librdkafka compresses with: the shard's cleaner compacts
//!   it on its own (rewriting batches with their codec), and a consumer from the
//!   beginning reads fewer than a tenth of the records, each at the offset it was
//!   acknowledged at with what was sent there, and each key's last value; a
//!   SIGKILL and restart bring nothing back and lose no key's latest value;
//! - a record without a key is refused (INVALID_RECORD), as Kafka refuses it;
//! - DescribeConfigs shows the cleaner's configs;
//! - with `cleanup.policy=compact,delete`, `retention.ms` still empties the topic.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use rdkafka::admin::{ConfigEntry, ResourceSpecifier};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;

const TEST_BOUND: Duration = Duration::from_secs(240);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
const KEYS: usize = 8;
const MESSAGES: usize = 3000;

/// A producer that sends small batches, so the small segments roll often.
fn small_batch_producer(broker: &BrokerProcess, codec: &str) -> FutureProducer {
    client_config(broker)
        .set("linger.ms", "1")
        .set("batch.num.messages", "20")
        .set("compression.codec", codec)
        .create()
        .expect("creating a producer")
}

fn describe(broker: &BrokerProcess, topic: &str) -> Vec<ConfigEntry> {
    let admin = admin_client(broker);
    let results = block_on(admin.describe_configs([&ResourceSpecifier::Topic(topic)], &admin_options()))
        .expect("DescribeConfigs request");
    results.into_iter().next().expect("one result").expect("described").entries
}

fn value_of(entries: &[ConfigEntry], key: &str) -> Option<String> {
    entries.iter().find(|e| e.name == key).and_then(|e| e.value.clone())
}

/// Checks what a read of a compacted partition shows against what was produced
/// (`produced[offset] = (key, value)`): every record where it was acknowledged, with
/// what was sent there; each key's last value; offsets increasing. Returns how
/// many records were read.
fn check_compacted(records: &[Record], produced: &BTreeMap<i64, (String, String)>) -> usize {
    let mut last_read: BTreeMap<String, String> = BTreeMap::new();
    for record in records {
        let sent =
            produced.get(&record.offset).unwrap_or_else(|| panic!("offset {} was never acknowledged", record.offset));
        assert_eq!((&record.key_text(), &record.value_text()), (&sent.0, &sent.1), "offset {}", record.offset);
        last_read.insert(record.key_text(), record.value_text());
    }
    let mut last_sent: BTreeMap<String, String> = BTreeMap::new();
    for (key, value) in produced.values() {
        last_sent.insert(key.clone(), value.clone());
    }
    assert_eq!(last_read, last_sent, "each key's latest value");
    records.len()
}

/// Produces [`MESSAGES`] values for [`KEYS`] keys to partition 0 of `topic`;
/// returns what was acknowledged at each offset.
fn produce_values(producer: &FutureProducer, topic: &str) -> BTreeMap<i64, (String, String)> {
    let messages: Vec<Outgoing> = (0..MESSAGES)
        .map(|i| (Some(format!("key-{}", i % KEYS).into_bytes()), format!("value-{i}").into_bytes()))
        .collect();
    let acknowledged = expect_all_acknowledged(topic, &produce(producer, topic, Some(0), &messages, CLIENT_TIMEOUT));
    acknowledged
        .iter()
        .zip(&messages)
        .map(|((_, offset), (key, value))| {
            let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
            (*offset, (text(key.as_deref().unwrap_or_default()), text(value)))
        })
        .collect()
}

#[test]
fn a_compacted_topic_keeps_each_keys_latest_value_at_its_offset_for_every_codec_and_across_a_sigkill() {
    let _watchdog = Watchdog::new("compacted_topic_keeps_latest_values", TEST_BOUND);
    let mut broker = BrokerProcess::start(BrokerOptions::new("compaction-latest"));
    let configs = [
        ("cleanup.policy", "compact"),
        ("segment.bytes", "4096"),
        ("segment.ms", "500"),
        ("min.cleanable.dirty.ratio", "0.01"),
        ("retention.ms", "-1"),
    ];
    let codecs = ["none", "gzip", "snappy", "lz4", "zstd"];
    let mut produced = BTreeMap::new();
    for codec in codecs {
        let topic = format!("compacted-{codec}");
        block_on(create_topic(&broker, &topic, 1, &configs));
        produced.insert(codec, produce_values(&small_batch_producer(&broker, codec), &topic));
    }
    let entries = describe(&broker, "compacted-none");
    assert_eq!(value_of(&entries, "cleanup.policy").as_deref(), Some("compact"));
    assert_eq!(value_of(&entries, "min.cleanable.dirty.ratio").as_deref(), Some("0.01"));
    assert_eq!(value_of(&entries, "delete.retention.ms").as_deref(), Some("86400000"), "Kafka's default");
    assert_eq!(value_of(&entries, "min.compaction.lag.ms").as_deref(), Some("0"));
    assert_eq!(value_of(&entries, "max.compaction.lag.ms").as_deref(), Some("9223372036854775807"));

    // The segments roll by size and, the last one, by segment.ms; the cleaner
    // checks every second. Wait until most records are gone: the batches the
    // cleaner rewrote (recompressed with their codec) are read by librdkafka.
    let read = |broker: &BrokerProcess, codec: &str| {
        let topic = format!("compacted-{codec}");
        read_partitions(broker, &topic, 1, CLIENT_TIMEOUT).remove(&0).expect("partition 0")
    };
    let mut compacted = BTreeMap::new();
    for codec in codecs {
        let what = format!("the cleaner to compact the {codec} topic");
        wait_until(&what, Duration::from_secs(60), || read(&broker, codec).len() < MESSAGES / 10);
        let records = read(&broker, codec);
        let count = check_compacted(&records, &produced[codec]);
        assert!(count >= KEYS, "{codec}: every key keeps a record ({count} read)");
        compacted.insert(codec, records.iter().map(|r| r.offset).collect::<std::collections::BTreeSet<i64>>());
    }

    // A record without a key is refused, and nothing is written.
    let producer = small_batch_producer(&broker, "none");
    let keyless = produce(&producer, "compacted-none", Some(0), &[(None, b"no key".to_vec())], CLIENT_TIMEOUT);
    let error = keyless[0].as_ref().expect_err("a keyless record is refused");
    assert!(error.contains("InvalidRecord") || error.contains("INVALID_RECORD"), "{error}");

    // SIGKILL, whatever the cleaner is doing (it checks every second), then restart.
    broker.kill();
    broker.restart();
    for codec in codecs {
        let after_restart = read(&broker, codec);
        check_compacted(&after_restart, &produced[codec]);
        for record in &after_restart {
            // The cleaner may have removed more since, never brought anything back.
            assert!(compacted[codec].contains(&record.offset), "{codec}: offset {} is back", record.offset);
        }
    }
}

#[test]
fn with_compact_delete_retention_still_empties_the_topic() {
    let _watchdog = Watchdog::new("compact_delete_retention", TEST_BOUND);
    let broker = BrokerProcess::start(BrokerOptions::new("compaction-delete"));
    let topic = "compacted-and-deleted";
    block_on(create_topic(&broker, topic, 1, &[("cleanup.policy", "compact,delete"), ("retention.ms", "1000")]));
    let producer = small_batch_producer(&broker, "none");
    let messages: Vec<Outgoing> =
        (0..50).map(|i| (Some(format!("key-{}", i % 5).into_bytes()), format!("value-{i}").into_bytes())).collect();
    expect_all_acknowledged(topic, &produce(&producer, topic, Some(0), &messages, CLIENT_TIMEOUT));
    let consumer: BaseConsumer = client_config(&broker).create().expect("consumer");
    let watermarks = || consumer.fetch_watermarks(topic, 0, CLIENT_TIMEOUT).expect("ListOffsets");
    wait_until("retention of a compact,delete topic", Duration::from_secs(30), || watermarks() == (50, 50));
}
