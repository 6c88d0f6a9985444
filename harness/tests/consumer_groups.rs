//! Consumer groups with librdkafka against a `corelog broker` process: a group of
//! two reads 100 000 keyed, idempotently produced messages exactly once and in
//! partition order; committed offsets survive a SIGKILL of the broker; a member
//! leaving hands its partitions to the one that stays.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};

/// The partitions of `topic` in a consumer's assignment, sorted.
fn assigned_partitions(consumer: &BaseConsumer, topic: &str) -> Vec<i32> {
    let assignment = consumer.assignment().expect("assignment");
    let mut partitions: Vec<i32> =
        assignment.elements().iter().filter(|e| e.topic() == topic).map(|e| e.partition()).collect();
    partitions.sort_unstable();
    partitions
}

/// True when the members' assignments are all non-empty, disjoint, and together
/// cover partitions `0..partitions`.
fn split_between_members(assignments: &[Vec<i32>], partitions: i32) -> bool {
    let mut seen = BTreeSet::new();
    for assignment in assignments {
        if assignment.is_empty() {
            return false;
        }
        for partition in assignment {
            if !seen.insert(*partition) {
                return false;
            }
        }
    }
    seen == (0..partitions).collect()
}

fn group_consumer_config(broker: &BrokerProcess, group: &str) -> ClientConfig {
    let mut config = client_config(broker);
    config.set("group.id", group).set("auto.offset.reset", "earliest").set("enable.partition.eof", "false");
    config
}

/// A group member polling on its own thread until told to stop.
struct Member {
    stop: Arc<AtomicBool>,
    /// The member's current assignment, refreshed every 100 ms.
    assignment: Arc<Mutex<Vec<i32>>>,
    /// Errors the consumer reported (kept for the failure message).
    errors: Arc<Mutex<Vec<String>>>,
    thread: JoinHandle<Vec<Record>>,
}

impl Member {
    fn spawn(config: ClientConfig, topic: &'static str, consumed: Arc<AtomicUsize>) -> Member {
        let stop = Arc::new(AtomicBool::new(false));
        let assignment = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, assignment, errors) = (stop.clone(), assignment.clone(), errors.clone());
            std::thread::spawn(move || {
                let consumer: BaseConsumer = config.create().expect("creating a group consumer");
                consumer.subscribe(&[topic]).expect("subscribe");
                let mut records = Vec::new();
                let mut assignment_read_at = Instant::now();
                while !stop.load(Ordering::Acquire) {
                    match consumer.poll(Duration::from_millis(100)) {
                        Some(Ok(message)) => {
                            records.push(Record::from_message(&message));
                            consumed.fetch_add(1, Ordering::AcqRel);
                        }
                        Some(Err(error)) => errors.lock().expect("errors").push(error.to_string()),
                        None => {}
                    }
                    if assignment_read_at.elapsed() >= Duration::from_millis(100) {
                        *assignment.lock().expect("assignment") = assigned_partitions(&consumer, topic);
                        assignment_read_at = Instant::now();
                    }
                }
                records
            })
        };
        Member { stop, assignment, errors, thread }
    }

    fn assignment(&self) -> Vec<i32> {
        self.assignment.lock().expect("assignment").clone()
    }

    fn errors(&self) -> Vec<String> {
        let errors = self.errors.lock().expect("errors");
        errors[errors.len().saturating_sub(5)..].to_vec()
    }

    /// Stops polling, closes the consumer (leaving the group), returns what it read.
    fn finish(self) -> Vec<Record> {
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("member thread panicked")
    }
}

const READ_ONCE_TOPIC: &str = "user-events";
const READ_ONCE_PARTITIONS: i32 = 8;
const READ_ONCE_MESSAGES: usize = 100_000;
const READ_ONCE_KEYS: usize = 1_000;

/// The sequence number a read-once message carries at the start of its value.
fn sequence_of(record: &Record) -> usize {
    let text = record.value_text();
    let digits = text.split(' ').next().unwrap_or_default();
    digits.parse().unwrap_or_else(|_| panic!("unexpected value {text:?} at {}/{}", record.partition, record.offset))
}

#[test]
fn a_group_of_two_reads_every_keyed_idempotent_message_once_in_partition_order() {
    let _watchdog = Watchdog::new("read_once", Duration::from_secs(600));
    let broker = BrokerProcess::start(BrokerOptions::new("group-read-once"));
    block_on(create_topic(&broker, READ_ONCE_TOPIC, READ_ONCE_PARTITIONS, &[]));

    // The members join before anything is produced, so the group is settled (each
    // member owns its partitions) while the messages arrive and no rebalance can
    // move a partition mid-stream: every message has exactly one reader.
    let consumed = Arc::new(AtomicUsize::new(0));
    let members: Vec<Member> = (0..2)
        .map(|_| Member::spawn(group_consumer_config(&broker, "read-once"), READ_ONCE_TOPIC, consumed.clone()))
        .collect();
    let settled = Instant::now() + Duration::from_secs(90);
    while !split_between_members(&members.iter().map(Member::assignment).collect::<Vec<_>>(), READ_ONCE_PARTITIONS) {
        assert!(
            Instant::now() < settled,
            "the two members of group read-once never split the {READ_ONCE_PARTITIONS} partitions between them: \
             assignments {:?}, consumer errors {:?}",
            members.iter().map(Member::assignment).collect::<Vec<_>>(),
            members.iter().map(Member::errors).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let assignments: Vec<Vec<i32>> = members.iter().map(Member::assignment).collect();

    let producer: FutureProducer = client_config(&broker)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "200000")
        .set("message.timeout.ms", "120000")
        .create()
        .expect("creating the idempotent producer");
    let padding = "x".repeat(40);
    let messages: Vec<Outgoing> = (0..READ_ONCE_MESSAGES)
        .map(|i| {
            let key = format!("user-{}", i % READ_ONCE_KEYS);
            (Some(key.into_bytes()), format!("{i:06} {padding}").into_bytes())
        })
        .collect();
    let outcomes = produce(&producer, READ_ONCE_TOPIC, None, &messages, Duration::from_secs(240));
    let acknowledged = expect_all_acknowledged(READ_ONCE_TOPIC, &outcomes);

    // The log holds each message once: the high watermarks add up to the count.
    let stored: i64 = read_high_watermarks(&broker, READ_ONCE_TOPIC, READ_ONCE_PARTITIONS).values().sum();
    assert_eq!(stored, READ_ONCE_MESSAGES as i64, "records stored in {READ_ONCE_TOPIC} (sum of high watermarks)");

    let read_deadline = Instant::now() + Duration::from_secs(240);
    while consumed.load(Ordering::Acquire) < READ_ONCE_MESSAGES {
        assert!(
            Instant::now() < read_deadline,
            "the group read {} of {READ_ONCE_MESSAGES} messages; consumer errors {:?}",
            consumed.load(Ordering::Acquire),
            members.iter().map(Member::errors).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let read: Vec<Vec<Record>> = members.into_iter().map(Member::finish).collect();

    // Each member read only its own partitions, and both read something.
    for (member, (records, assignment)) in read.iter().zip(&assignments).enumerate() {
        assert!(!records.is_empty(), "member {member} (partitions {assignment:?}) read nothing");
        let foreign: BTreeSet<i32> = records.iter().map(|r| r.partition).filter(|p| !assignment.contains(p)).collect();
        assert!(foreign.is_empty(), "member {member} owns {assignment:?} but read partitions {foreign:?}");
    }

    // Exactly once: every sequence number once, none missing, none twice.
    let mut seen = vec![0u32; READ_ONCE_MESSAGES];
    for record in read.iter().flatten() {
        seen[sequence_of(record)] += 1;
    }
    let missing = seen.iter().filter(|&&n| n == 0).count();
    let duplicated = seen.iter().filter(|&&n| n > 1).count();
    assert!(missing == 0 && duplicated == 0, "read {missing} messages never and {duplicated} more than once");

    // Every record sits where its delivery report said, and each partition was
    // read in offset order, which is the order the producer sent its messages in.
    let mut by_partition: BTreeMap<i32, Vec<&Record>> = BTreeMap::new();
    for records in &read {
        for record in records {
            let sequence = sequence_of(record);
            assert_eq!(
                (record.partition, record.offset),
                acknowledged[sequence],
                "message {sequence} was read at a different place than its delivery report said"
            );
            by_partition.entry(record.partition).or_default().push(record);
        }
    }
    for (partition, records) in &by_partition {
        for pair in records.windows(2) {
            assert!(
                pair[0].offset < pair[1].offset && sequence_of(pair[0]) < sequence_of(pair[1]),
                "partition {partition} out of order: message {} at offset {} was read before message {} at offset {}",
                sequence_of(pair[0]),
                pair[0].offset,
                sequence_of(pair[1]),
                pair[1].offset
            );
        }
    }

    // Same key, same partition; the keys spread over every partition.
    let mut partitions_of_key: HashMap<String, BTreeSet<i32>> = HashMap::new();
    for record in read.iter().flatten() {
        partitions_of_key.entry(record.key_text()).or_default().insert(record.partition);
    }
    assert_eq!(partitions_of_key.len(), READ_ONCE_KEYS, "distinct keys read");
    let split: Vec<_> = partitions_of_key.iter().filter(|(_, p)| p.len() > 1).take(5).collect();
    assert!(split.is_empty(), "keys found on more than one partition: {split:?}");
    assert_eq!(by_partition.len(), READ_ONCE_PARTITIONS as usize, "partitions that received keyed messages");
}

/// `partition -> high watermark` of `topic`.
fn read_high_watermarks(broker: &BrokerProcess, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = client_config(broker).create().expect("creating a consumer");
    (0..partitions)
        .map(|partition| {
            let (_, high) = consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("ListOffsets for {topic}/{partition}: {e}"));
            (partition, high)
        })
        .collect()
}

const RESUME_TOPIC: &str = "orders";
const RESUME_PARTITIONS: i32 = 4;
const RESUME_MESSAGES: usize = 4_000;
const RESUME_GROUP: &str = "order-service";

fn offsets_list(offsets: &BTreeMap<i32, i64>) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for (partition, offset) in offsets {
        list.add_partition_offset(RESUME_TOPIC, *partition, Offset::Offset(*offset)).expect("valid offset");
    }
    list
}

fn offsets_of(list: &TopicPartitionList) -> BTreeMap<i32, i64> {
    list.elements()
        .iter()
        .map(|e| {
            let offset = match e.offset() {
                Offset::Offset(offset) => offset,
                other => panic!("partition {} has no committed offset ({other:?})", e.partition()),
            };
            (e.partition(), offset)
        })
        .collect()
}

#[test]
fn consumers_resume_from_committed_offsets_after_the_broker_is_killed() {
    let _watchdog = Watchdog::new("resume_after_kill", Duration::from_secs(480));
    let mut broker = BrokerProcess::start(BrokerOptions::new("group-resume").durable());
    block_on(create_topic(&broker, RESUME_TOPIC, RESUME_PARTITIONS, &[("fsync.policy", "always")]));
    let producer: FutureProducer = client_config(&broker).set("acks", "all").create().expect("creating a producer");
    let messages: Vec<Outgoing> = (0..RESUME_MESSAGES)
        .map(|i| (Some(format!("order-{}", i % 97).into_bytes()), format!("{i}").into_bytes()))
        .collect();
    let acknowledged = expect_all_acknowledged(
        RESUME_TOPIC,
        &produce(&producer, RESUME_TOPIC, None, &messages, Duration::from_secs(120)),
    );
    drop(producer);
    // (partition, offset) -> the value the delivery report placed there.
    let placed: HashMap<(i32, i64), String> =
        acknowledged.iter().enumerate().map(|(index, place)| (*place, index.to_string())).collect();

    // The first consumer reads about half, commits exactly what it read, and goes.
    let committed = {
        let consumer: BaseConsumer = group_consumer_config(&broker, RESUME_GROUP)
            .set("enable.auto.commit", "false")
            .create()
            .expect("creating the first consumer");
        consumer.subscribe(&[RESUME_TOPIC]).expect("subscribe");
        let mut next: BTreeMap<i32, i64> = (0..RESUME_PARTITIONS).map(|p| (p, 0)).collect();
        let mut read = 0usize;
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last_error = None;
        while read < RESUME_MESSAGES / 2 {
            assert!(
                Instant::now() < deadline,
                "the first consumer read {read} messages in 90 s; last error {last_error:?}"
            );
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    let record = Record::from_message(&message);
                    assert_eq!(
                        record.offset, next[&record.partition],
                        "first consumer: gap or re-read in {}",
                        record.partition
                    );
                    next.insert(record.partition, record.offset + 1);
                    read += 1;
                }
                Some(Err(error)) => last_error = Some(error.to_string()),
                None => {}
            }
        }
        consumer.commit(&offsets_list(&next), CommitMode::Sync).expect("OffsetCommit");
        let fetched = consumer
            .committed_offsets(offsets_list(&next), Duration::from_secs(30))
            .expect("OffsetFetch after the commit");
        assert_eq!(offsets_of(&fetched), next, "committed offsets as the broker reports them");
        next
    };
    assert!(
        committed.values().any(|&o| o > 0) && committed.values().sum::<i64>() < RESUME_MESSAGES as i64,
        "the commit point {committed:?} must be inside the log"
    );

    broker.kill();
    broker.restart();

    // A new member of the same group starts exactly at the committed offsets. With
    // `auto.offset.reset=error`, a lost commit is an error, not a silent reset.
    let consumer: BaseConsumer = group_consumer_config(&broker, RESUME_GROUP)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "error")
        .create()
        .expect("creating the second consumer");
    let fetched = consumer
        .committed_offsets(offsets_list(&committed), Duration::from_secs(30))
        .expect("OffsetFetch after the restart");
    assert_eq!(offsets_of(&fetched), committed, "committed offsets after SIGKILL and restart");
    consumer.subscribe(&[RESUME_TOPIC]).expect("subscribe");

    let ends = read_high_watermarks(&broker, RESUME_TOPIC, RESUME_PARTITIONS);
    assert_eq!(ends.values().sum::<i64>(), RESUME_MESSAGES as i64, "acknowledged messages after the restart");
    let mut next = committed.clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    while next != ends {
        assert!(Instant::now() < deadline, "after the restart the group read up to {next:?} of {ends:?}");
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let record = Record::from_message(&message);
                let expected = next[&record.partition];
                assert!(
                    record.offset >= committed[&record.partition],
                    "partition {}: re-read offset {} from before the commit point {}",
                    record.partition,
                    record.offset,
                    committed[&record.partition]
                );
                assert_eq!(
                    record.offset, expected,
                    "partition {}: skipped from {expected} to {}",
                    record.partition, record.offset
                );
                assert_eq!(
                    Some(&record.value_text()),
                    placed.get(&(record.partition, record.offset)),
                    "value at {}/{} after the restart",
                    record.partition,
                    record.offset
                );
                next.insert(record.partition, record.offset + 1);
            }
            Some(Err(error)) => panic!("second consumer: {error} (were the committed offsets lost?)"),
            None => {}
        }
    }
}

const LEAVE_TOPIC: &str = "notifications";
const LEAVE_PARTITIONS: i32 = 6;

#[test]
fn a_member_leaving_hands_its_partitions_to_the_remaining_member() {
    let _watchdog = Watchdog::new("member_leaves", Duration::from_secs(300));
    let broker = BrokerProcess::start(BrokerOptions::new("group-leave"));
    block_on(create_topic(&broker, LEAVE_TOPIC, LEAVE_PARTITIONS, &[]));

    // A long session timeout: a rebalance within the bound below can only come
    // from the LeaveGroup the departing member sends, not from its session expiring.
    let config = |name: &str| -> BaseConsumer {
        group_consumer_config(&broker, "leave")
            .set("session.timeout.ms", "60000")
            .set("client.id", name)
            .create()
            .expect("creating a group consumer")
    };
    let staying = config("staying");
    let leaving = config("leaving");
    staying.subscribe(&[LEAVE_TOPIC]).expect("subscribe");
    leaving.subscribe(&[LEAVE_TOPIC]).expect("subscribe");
    let consumers = [&staying, &leaving];

    let mut received: [Vec<Record>; 2] = [Vec::new(), Vec::new()];
    let poll_both = |received: &mut [Vec<Record>; 2], consumers: &[&BaseConsumer]| {
        for (index, consumer) in consumers.iter().enumerate() {
            match consumer.poll(Duration::from_millis(50)) {
                Some(Ok(message)) => received[index].push(Record::from_message(&message)),
                Some(Err(error)) => eprintln!("consumer {index}: {error}"),
                None => {}
            }
        }
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while !split_between_members(&consumers.map(|c| assigned_partitions(c, LEAVE_TOPIC)), LEAVE_PARTITIONS) {
        assert!(
            Instant::now() < deadline,
            "the two members never split the {LEAVE_PARTITIONS} partitions: {:?}",
            consumers.map(|c| assigned_partitions(c, LEAVE_TOPIC))
        );
        poll_both(&mut received, &consumers);
    }
    let before: [Vec<i32>; 2] = consumers.map(|c| assigned_partitions(c, LEAVE_TOPIC));

    // One message per partition reaches the member that owns it.
    let producer: FutureProducer = client_config(&broker).create().expect("creating a producer");
    for partition in 0..LEAVE_PARTITIONS {
        let message = vec![(None, format!("before-{partition}").into_bytes())];
        expect_all_acknowledged(
            LEAVE_TOPIC,
            &produce(&producer, LEAVE_TOPIC, Some(partition), &message, Duration::from_secs(30)),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.iter().map(Vec::len).sum::<usize>() < LEAVE_PARTITIONS as usize {
        assert!(Instant::now() < deadline, "the group received {received:?} of one message per partition");
        poll_both(&mut received, &consumers);
    }
    for (index, records) in received.iter().enumerate() {
        for record in records {
            assert!(
                before[index].contains(&record.partition),
                "member {index} owns {:?} but read {record:?}",
                before[index]
            );
            assert_eq!(record.value_text(), format!("before-{}", record.partition));
        }
    }

    // The leaving member closes (LeaveGroup); the other one gets every partition.
    drop(leaving);
    let everything: Vec<i32> = (0..LEAVE_PARTITIONS).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut after = Vec::new();
    while assigned_partitions(&staying, LEAVE_TOPIC) != everything {
        assert!(
            Instant::now() < deadline,
            "30 s after the other member left (session timeout 60 s), the remaining member still owns {:?} \
             (owned {:?} before); a LeaveGroup must start a rebalance at once",
            assigned_partitions(&staying, LEAVE_TOPIC),
            before[0]
        );
        if let Some(Ok(message)) = staying.poll(Duration::from_millis(50)) {
            after.push(Record::from_message(&message));
        }
    }

    // And it reads all of them, from where the group left off.
    for partition in 0..LEAVE_PARTITIONS {
        let message = vec![(None, format!("after-{partition}").into_bytes())];
        expect_all_acknowledged(
            LEAVE_TOPIC,
            &produce(&producer, LEAVE_TOPIC, Some(partition), &message, Duration::from_secs(30)),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let after_values = |after: &[Record]| after.iter().filter(|r| r.value_text().starts_with("after-")).count();
    while after_values(&after) < LEAVE_PARTITIONS as usize {
        assert!(Instant::now() < deadline, "the remaining member read {after:?} after the rebalance");
        match staying.poll(Duration::from_millis(50)) {
            Some(Ok(message)) => after.push(Record::from_message(&message)),
            Some(Err(error)) => eprintln!("remaining member: {error}"),
            None => {}
        }
    }
    let partitions_read: BTreeSet<i32> =
        after.iter().filter(|r| r.value_text().starts_with("after-")).map(|r| r.partition).collect();
    assert_eq!(partitions_read, everything.iter().copied().collect(), "partitions the remaining member read from");
    // The messages from before the leave are not delivered again: librdkafka commits
    // a closing member's offsets (auto commit) before it leaves, and the remaining
    // member starts the partitions it takes over from those commits.
    let again: Vec<&Record> = after.iter().filter(|r| r.value_text().starts_with("before-")).collect();
    assert!(again.is_empty(), "the remaining member read again what the group had already consumed: {again:?}");
}
