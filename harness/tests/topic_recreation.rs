//! DeleteTopics racing an auto-create of the same name, with `acks=all` writes
//! throughout, against a real `corelog broker` that is SIGKILLed and restarted after
//! every round.
//!
//! What Kafka promises across a delete and a re-create of one name: a write
//! acknowledged before DeleteTopics was acknowledged may go with the deleted topic,
//! but a write sent after DeleteTopics was acknowledged can only land in a later
//! incarnation of the name, so once acknowledged it must survive (here under
//! `fsync.policy: always`, a SIGKILL too) at the offset it was acknowledged at; and
//! nothing written to a deleted incarnation may reappear in a later one. Clients
//! trigger auto-creates on their own (a Metadata request for a topic they use), so a
//! delete must be atomic with respect to them.
//!
//! Requests are raw (`kafka-protocol` over `std::net`), one in flight per
//! connection, so the test knows when each write was sent and answered relative to
//! the delete; librdkafka reads the partitions back after the restart.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::raw::RawConnection as Connection;
use common::*;
use corelog_engine::batch::{build_batch, BatchProducer, RecordSpec};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{CreateTopicsRequest, DeleteTopicsRequest, MetadataRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

const TOPIC: &str = "recreated";
/// Partitions of every incarnation, created or auto-created (the broker's
/// `default_partitions` is set to the same): enough that a delete takes a while.
const PARTITIONS: i32 = 100;
/// Connections producing concurrently, each one write in flight.
const WRITERS: usize = 4;
/// Delete-and-recreate rounds, each ended by a SIGKILL and a restart.
const ROUNDS: usize = 5;
/// Acknowledged writes each round waits for before the delete, and again after it.
const WRITES_PER_PHASE: usize = 40;
/// Longest wait for any one read, write or connect, and for a phase of writes.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

fn topic_name() -> TopicName {
    TopicName(StrBytes::from_static_str(TOPIC))
}

/// Appends one record with `value` to `partition`, `acks=all`: its offset, or the
/// Kafka error code.
fn produce_one(connection: &mut Connection, partition: i32, value: &[u8]) -> Result<i64, i16> {
    let batch = build_batch(
        now_timestamp(),
        BatchProducer::default(),
        &[RecordSpec { key: None, value: Some(value), timestamp_delta_ms: 0 }],
    );
    let data = PartitionProduceData::default().with_index(partition).with_records(Some(batch.into()));
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(IO_TIMEOUT.as_millis() as i32)
        .with_topic_data(vec![TopicProduceData::default().with_name(topic_name()).with_partition_data(vec![data])]);
    let response = connection.request(&request, 7);
    let answer = &response.responses[0].partition_responses[0];
    match answer.error_code {
        0 => Ok(answer.base_offset),
        code => Err(code),
    }
}

/// The topic's partition count as Metadata reports it, asking with or without
/// auto-creation; `None` if the broker does not know it.
fn metadata(connection: &mut Connection, auto_create: bool) -> Option<usize> {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(topic_name()))]))
        .with_allow_auto_topic_creation(auto_create);
    let response = connection.request(&request, 9);
    let topic = &response.topics[0];
    match topic.error_code {
        0 => Some(topic.partitions.len()),
        code if code == ResponseError::UnknownTopicOrPartition.code() => None,
        code => panic!("Metadata for {TOPIC}: error code {code}"),
    }
}

/// One write a writer sent: when, where, and what the broker answered.
#[derive(Debug, Clone)]
struct SentWrite {
    value: String,
    partition: i32,
    sent: Instant,
    answered: Instant,
    outcome: Result<i64, i16>,
}

/// Every write of the run, by value (values are unique).
type Writes = Arc<Mutex<BTreeMap<String, SentWrite>>>;

/// Writes one record at a time to partitions `writer`, `writer + WRITERS`, ... of the
/// topic until `stop`, recording each outcome.
fn write_until(broker: &BrokerProcess, round: usize, writer: usize, writes: Writes, stop: Arc<AtomicBool>) {
    let mut connection = Connection::open(broker);
    let mut sequence = 0usize;
    while !stop.load(Ordering::Acquire) {
        let partition = ((writer + WRITERS * sequence) % PARTITIONS as usize) as i32;
        let value = format!("round-{round}/writer-{writer}/{sequence}");
        let sent = Instant::now();
        let outcome = produce_one(&mut connection, partition, value.as_bytes());
        let answered = Instant::now();
        if outcome.is_err() {
            // The topic is gone or not there yet; do not spin.
            std::thread::sleep(Duration::from_millis(2));
        }
        writes.lock().expect("writes").insert(value.clone(), SentWrite { value, partition, sent, answered, outcome });
        sequence += 1;
    }
}

/// Keeps asking for the topic in Metadata with auto-creation on, as a client that
/// uses the topic does, until `stop`.
fn auto_create_until(broker: &BrokerProcess, stop: Arc<AtomicBool>) {
    let mut connection = Connection::open(broker);
    while !stop.load(Ordering::Acquire) {
        metadata(&mut connection, true);
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Sets its flag when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Waits until `count` writes that pass `counts` were acknowledged.
fn wait_for_acknowledged(writes: &Writes, what: &str, count: usize, counts: impl Fn(&SentWrite) -> bool) {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let (acknowledged, failures) = {
            let writes = writes.lock().expect("writes");
            let acknowledged = writes.values().filter(|w| counts(w) && w.outcome.is_ok()).count();
            let mut failures: BTreeMap<i16, usize> = BTreeMap::new();
            for write in writes.values().filter(|w| counts(w)) {
                if let Err(code) = write.outcome {
                    *failures.entry(code).or_default() += 1;
                }
            }
            (acknowledged, failures)
        };
        if acknowledged >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: only {acknowledged} of {count} writes acknowledged within {IO_TIMEOUT:?}; \
             failed writes by error code: {failures:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn writes_acknowledged_after_delete_topics_survive_a_restart_while_clients_auto_create_the_topic() {
    let _watchdog = Watchdog::new("topic_recreation", Duration::from_secs(600));
    let mut options = BrokerOptions::new("topic-recreation");
    options.config_yaml = Some(format!(
        "default_partitions: {PARTITIONS}\nauto_create_topics: true\ntopic_defaults:\n  fsync.policy: always\n"
    ));
    let mut broker = BrokerProcess::start(options);
    let writes: Writes = Arc::default();

    let mut admin = Connection::open(&broker);
    let create = CreateTopicsRequest::default().with_timeout_ms(30_000).with_topics(vec![CreatableTopic::default()
        .with_name(topic_name())
        .with_num_partitions(PARTITIONS)
        .with_replication_factor(1)]);
    let created = admin.request(&create, 5);
    assert_eq!(created.topics[0].error_code, 0, "creating {TOPIC}: {:?}", created.topics[0].error_message);

    for round in 0..ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let (delete_sent, delete_answered) = std::thread::scope(|scope| {
            // Stops the writers when the round ends, failed assertions included (the
            // scope waits for them).
            let _stop_writers = StopOnDrop(stop.clone());
            for writer in 0..WRITERS {
                let (writes, stop, broker) = (writes.clone(), stop.clone(), &broker);
                scope.spawn(move || write_until(broker, round, writer, writes, stop));
            }
            let round_started = Instant::now();
            wait_for_acknowledged(&writes, &format!("round {round}, before the delete"), WRITES_PER_PHASE, |w| {
                w.sent >= round_started
            });
            // From now on a client keeps asking for the topic with auto-creation on.
            let (auto_create_stop, broker) = (stop.clone(), &broker);
            scope.spawn(move || auto_create_until(broker, auto_create_stop));
            let delete_sent = Instant::now();
            let delete = DeleteTopicsRequest::default().with_timeout_ms(30_000).with_topic_names(vec![topic_name()]);
            let deleted = admin.request(&delete, 4);
            let delete_answered = Instant::now();
            let result = &deleted.responses[0];
            assert_eq!(result.error_code, 0, "round {round}: deleting {TOPIC}: {:?}", result.error_message);
            // The auto-create brings the topic back; the writers must find all of it.
            wait_for_acknowledged(&writes, &format!("round {round}, after the delete"), WRITES_PER_PHASE, |w| {
                w.sent > delete_answered
            });
            (delete_sent, delete_answered)
        });
        check_round(&mut broker, &writes, round, delete_sent, delete_answered);
        admin = Connection::open(&broker);
    }
}

/// After a round's writers stopped: the re-created topic serves every partition it
/// lists, and after a SIGKILL and a restart it still exists, every write sent after
/// the delete was acknowledged is at its offset, and no record of the deleted
/// incarnation is in it.
fn check_round(
    broker: &mut BrokerProcess,
    writes: &Writes,
    round: usize,
    delete_sent: Instant,
    delete_answered: Instant,
) {
    let mut connection = Connection::open(broker);
    assert_eq!(metadata(&mut connection, false), Some(PARTITIONS as usize), "round {round}: the re-created topic");
    for partition in 0..PARTITIONS {
        let value = format!("round-{round}/check/{partition}");
        let sent = Instant::now();
        let outcome = produce_one(&mut connection, partition, value.as_bytes());
        assert!(
            outcome.is_ok(),
            "round {round}: a write to partition {partition} of the new topic failed: {outcome:?}"
        );
        let write = SentWrite { value: value.clone(), partition, sent, answered: Instant::now(), outcome };
        writes.lock().expect("writes").insert(value, write);
    }
    drop(connection);

    broker.kill();
    broker.restart();
    let mut connection = Connection::open(broker);
    assert_eq!(metadata(&mut connection, false), Some(PARTITIONS as usize), "round {round}: the topic after a restart");
    drop(connection);

    let stored = read_partitions(broker, TOPIC, PARTITIONS, Duration::from_secs(120));
    let writes = writes.lock().expect("writes");
    let mut stored_at: BTreeMap<(i32, i64), String> = BTreeMap::new();
    for (partition, records) in &stored {
        for record in records {
            let value = record.value_text();
            stored_at.insert((*partition, record.offset), value.clone());
            let write = writes
                .get(&value)
                .unwrap_or_else(|| panic!("round {round}: {TOPIC}/{partition} holds {value:?}, never written"));
            assert!(
                write.answered >= delete_sent,
                "round {round}: {value:?}, answered before the delete was sent, is in the re-created topic at \
                 {partition}/{} (acknowledged: {:?}): a deleted incarnation came back",
                record.offset,
                write.outcome
            );
        }
    }
    let mut lost = Vec::new();
    let mut surviving = 0;
    for write in writes.values().filter(|w| w.sent > delete_answered) {
        let Ok(offset) = write.outcome else { continue };
        surviving += 1;
        if stored_at.get(&(write.partition, offset)) != Some(&write.value) {
            lost.push(format!(
                "{:?} acknowledged at {}/{offset}, stored there: {:?}",
                write.value,
                write.partition,
                stored_at.get(&(write.partition, offset))
            ));
        }
    }
    let records: usize = stored.values().map(Vec::len).sum();
    eprintln!(
        "round {round}: {surviving} writes acknowledged after the delete, {records} records in the re-created topic"
    );
    assert!(
        lost.is_empty(),
        "round {round}: {} of {surviving} writes acknowledged after the delete are not where they were \
         acknowledged after a restart; first: {:#?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}
