//! The transaction admin APIs and OffsetFetch's `require_stable` against a `corelog
//! broker` process: librdkafka's idempotent and transactional producers make real
//! transactions, and this side asks the broker about them in raw Kafka requests
//! (DescribeTransactions, ListTransactions, DescribeProducers, OffsetFetch), checking
//! each field as Kafka's broker fills it.
//!
//! - `describe_transactions_and_describe_producers_follow_a_transaction_to_its_commit`
//! - `list_transactions_filters_by_state_producer_id_and_duration`
//! - `offset_fetch_require_stable_is_unstable_until_the_transactions_marker`: made
//!   deterministic with the hidden `--test-hold-txn-markers` (the coordinator never
//!   writes markers), then a restart without it writes them.
//! - `describe_producers_in_a_cluster_answers_on_the_partitions_leader`: a cluster
//!   serves no transactions yet, but DescribeProducers reads a partition's producer
//!   state, which its leader keeps.

mod common;

use std::time::Duration;

use common::cluster::{create_replicated_topic, metadata, partitions_of, ClusterProcesses, SETTLE_TIMEOUT};
use common::raw::RawConnection;
use common::*;
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::describe_producers_response::PartitionResponse;
use kafka_protocol::messages::describe_transactions_response::TransactionState;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeTransactionsRequest, GroupId, ListTransactionsRequest, OffsetCommitRequest,
    OffsetFetchRequest, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};

/// Kafka's error codes the tests expect.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const INVALID_REQUEST: i16 = 42;
const UNSTABLE_OFFSET_COMMIT: i16 = 88;
const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;
/// The transaction timeout the transactional producers ask for.
const TRANSACTION_TIMEOUT_MS: i32 = 45_000;
/// Longest a librdkafka transaction call may take.
const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(30);

fn wire_string(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

/// A transactional producer of `transactional_id`, initialized (InitProducerId done).
fn transactional_producer(broker: &BrokerProcess, transactional_id: &str) -> FutureProducer {
    let producer: FutureProducer = client_config(broker)
        .set("transactional.id", transactional_id)
        .set("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS.to_string())
        .set("linger.ms", "0")
        .create()
        .expect("creating the transactional producer");
    producer.init_transactions(TXN_CALL_TIMEOUT).expect("init_transactions");
    producer
}

/// Produces `values` to `topic`'s `partition` and waits until every one is acknowledged.
fn produce_to(producer: &FutureProducer, topic: &str, partition: i32, values: &[&str]) -> Vec<(i32, i64)> {
    let messages: Vec<Outgoing> = values.iter().map(|value| (None, value.as_bytes().to_vec())).collect();
    let outcomes = produce(producer, topic, Some(partition), &messages, Duration::from_secs(30));
    expect_all_acknowledged(topic, &outcomes)
}

fn describe_transactions(broker: &BrokerProcess, ids: &[&str]) -> Vec<TransactionState> {
    let ids = ids.iter().map(|id| TransactionalId(wire_string(id))).collect();
    let request = DescribeTransactionsRequest::default().with_transactional_ids(ids);
    RawConnection::open(broker).request(&request, 0).transaction_states
}

fn described(broker: &BrokerProcess, transactional_id: &str) -> TransactionState {
    let mut states = describe_transactions(broker, &[transactional_id]);
    assert_eq!(states.len(), 1, "one answer per id");
    let state = states.remove(0);
    assert_eq!(state.error_code, 0, "DescribeTransactions {transactional_id}: {state:?}");
    state
}

/// The state name and (topic, partitions) of a described transaction.
fn state_and_topics(state: &TransactionState) -> (String, Vec<(String, Vec<i32>)>) {
    let topics = state.topics.iter().map(|t| (t.topic.0.to_string(), t.partitions.clone())).collect();
    (state.transaction_state.to_string(), topics)
}

/// Waits until `transactional_id` is described in `state` (its markers written).
fn wait_for_state(broker: &BrokerProcess, transactional_id: &str, state: &str) -> TransactionState {
    let mut last = None;
    wait_until(&format!("{transactional_id} in {state}"), Duration::from_secs(20), || {
        let described = described(broker, transactional_id);
        let done = described.transaction_state.as_str() == state;
        last = Some(described);
        done
    });
    last.expect("described")
}

fn describe_producers(broker: &BrokerProcess, topics: &[(&str, &[i32])]) -> Vec<(String, Vec<PartitionResponse>)> {
    let topics = topics
        .iter()
        .map(|(name, partitions)| {
            TopicRequest::default().with_name(TopicName(wire_string(name))).with_partition_indexes(partitions.to_vec())
        })
        .collect();
    let response = RawConnection::open(broker).request(&DescribeProducersRequest::default().with_topics(topics), 0);
    response.topics.into_iter().map(|t| (t.name.0.to_string(), t.partitions)).collect()
}

/// The one partition of a DescribeProducers answer for `topic`'s `partition`.
fn producers_of(broker: &BrokerProcess, topic: &str, partition: i32) -> PartitionResponse {
    let mut answer = describe_producers(broker, &[(topic, &[partition])]);
    let partition = answer.remove(0).1.remove(0);
    assert_eq!(partition.error_code, 0, "DescribeProducers {topic}/{}: {partition:?}", partition.partition_index);
    partition
}

#[test]
fn describe_transactions_and_describe_producers_follow_a_transaction_to_its_commit() {
    let _watchdog = Watchdog::new("describe_transactions_and_producers", Duration::from_secs(180));
    let broker = BrokerProcess::start(BrokerOptions::new("txn-admin-describe"));
    let topic = "orders";
    block_on(create_topic(&broker, topic, 2, &[]));

    let before_ms = now_timestamp().0;
    // An idempotent producer writes three records to partition 0.
    let idempotent: FutureProducer = client_config(&broker)
        .set("enable.idempotence", "true")
        .set("linger.ms", "0")
        .create()
        .expect("creating the idempotent producer");
    produce_to(&idempotent, topic, 0, &["i-0", "i-1", "i-2"]);

    // A transaction is opened and writes two records to partition 1 (offsets 0 and 1).
    let producer = transactional_producer(&broker, "txn-orders");
    let empty = described(&broker, "txn-orders");
    assert_eq!(
        (empty.transaction_state.as_str(), empty.transaction_start_time_ms, empty.topics.len()),
        ("Empty", -1, 0),
        "initialized, no transaction yet: {empty:?}"
    );
    producer.begin_transaction().expect("begin_transaction");
    assert_eq!(produce_to(&producer, topic, 1, &["t-0", "t-1"]), vec![(1, 0), (1, 1)]);

    let states = describe_transactions(&broker, &["txn-orders", "nobody", ""]);
    let codes: Vec<i16> = states.iter().map(|state| state.error_code).collect();
    assert_eq!(codes, vec![0, TRANSACTIONAL_ID_NOT_FOUND, INVALID_REQUEST], "{states:?}");
    let ongoing = &states[0];
    assert_eq!(state_and_topics(ongoing), ("Ongoing".to_string(), vec![(topic.to_string(), vec![1])]));
    assert_eq!(ongoing.transaction_timeout_ms, TRANSACTION_TIMEOUT_MS);
    assert_eq!((ongoing.producer_id, ongoing.producer_epoch), (empty.producer_id, empty.producer_epoch));
    let started = ongoing.transaction_start_time_ms;
    assert!(started >= before_ms && started <= now_timestamp().0, "start {started} not in [{before_ms}, now]");

    // DescribeProducers: each partition's producers, with Kafka's errors for the rest.
    let answer = describe_producers(&broker, &[(topic, &[0, 1, 7]), ("no-such-topic", &[0]), ("bad name!", &[0])]);
    let errors: Vec<(String, Vec<i16>)> = answer
        .iter()
        .map(|(name, partitions)| (name.clone(), partitions.iter().map(|p| p.error_code).collect()))
        .collect();
    assert_eq!(
        errors,
        vec![
            (topic.to_string(), vec![0, 0, UNKNOWN_TOPIC_OR_PARTITION]),
            ("no-such-topic".to_string(), vec![UNKNOWN_TOPIC_OR_PARTITION]),
            ("bad name!".to_string(), vec![INVALID_TOPIC_EXCEPTION]),
        ]
    );
    let [idempotent_state] = answer[0].1[0].active_producers.as_slice() else {
        panic!("one producer in {topic}/0: {:?}", answer[0].1[0]);
    };
    assert_eq!(
        (idempotent_state.producer_epoch, idempotent_state.last_sequence, idempotent_state.current_txn_start_offset),
        (0, 2, -1),
        "the idempotent producer: epoch 0, three records, no transaction"
    );
    assert_eq!(idempotent_state.coordinator_epoch, -1);
    assert!(idempotent_state.last_timestamp >= before_ms, "{idempotent_state:?}");
    let [open] = answer[0].1[1].active_producers.as_slice() else {
        panic!("one producer in {topic}/1: {:?}", answer[0].1[1]);
    };
    assert_eq!(
        (open.producer_id, open.producer_epoch, open.last_sequence, open.current_txn_start_offset),
        (ongoing.producer_id, i32::from(ongoing.producer_epoch), 1, 0),
        "the transactional producer, its transaction open since offset 0"
    );
    assert_ne!(idempotent_state.producer_id, open.producer_id);

    producer.commit_transaction(TXN_CALL_TIMEOUT).expect("commit_transaction");
    let complete = wait_for_state(&broker, "txn-orders", "CompleteCommit");
    assert!(complete.topics.is_empty(), "a complete transaction has no partitions: {complete:?}");
    assert_eq!((complete.producer_id, complete.producer_epoch), (ongoing.producer_id, ongoing.producer_epoch));
    let after_commit = producers_of(&broker, topic, 1);
    let [committed] = after_commit.active_producers.as_slice() else {
        panic!("one producer in {topic}/1 after the commit");
    };
    assert_eq!(
        (committed.producer_id, committed.last_sequence, committed.current_txn_start_offset),
        (open.producer_id, 1, -1),
        "the marker closed the transaction"
    );
}

#[test]
fn list_transactions_filters_by_state_producer_id_and_duration() {
    let _watchdog = Watchdog::new("list_transactions", Duration::from_secs(180));
    let broker = BrokerProcess::start(BrokerOptions::new("txn-admin-list"));
    let topic = "events";
    block_on(create_topic(&broker, topic, 1, &[]));

    let _empty = transactional_producer(&broker, "txn-empty");
    let done = transactional_producer(&broker, "txn-done");
    done.begin_transaction().expect("begin_transaction");
    produce_to(&done, topic, 0, &["done-0"]);
    done.commit_transaction(TXN_CALL_TIMEOUT).expect("commit_transaction");
    wait_for_state(&broker, "txn-done", "CompleteCommit");
    let open = transactional_producer(&broker, "txn-open");
    open.begin_transaction().expect("begin_transaction");
    produce_to(&open, topic, 0, &["open-0"]);
    let done_id = described(&broker, "txn-done").producer_id;

    let list = |request: ListTransactionsRequest, version: i16| {
        let response = RawConnection::open(&broker).request(&request, version);
        assert_eq!(response.error_code, 0, "{response:?}");
        let unknown: Vec<String> = response.unknown_state_filters.iter().map(|name| name.to_string()).collect();
        let listed: Vec<(String, i64, String)> = response
            .transaction_states
            .iter()
            .map(|t| (t.transactional_id.0.to_string(), t.producer_id.0, t.transaction_state.to_string()))
            .collect();
        (listed.into_iter().map(|(id, _, state)| format!("{id}:{state}")).collect::<Vec<_>>(), unknown)
    };
    let states = |names: &[&str]| {
        ListTransactionsRequest::default().with_state_filters(names.iter().map(|n| wire_string(n)).collect())
    };
    let all = vec!["txn-done:CompleteCommit", "txn-empty:Empty", "txn-open:Ongoing"];
    assert_eq!(list(ListTransactionsRequest::default(), 0), (all.iter().map(|s| s.to_string()).collect(), vec![]));
    assert_eq!(list(states(&["Ongoing"]), 0).0, vec!["txn-open:Ongoing"]);
    assert_eq!(
        list(states(&["CompleteCommit", "Finished", "Empty"]), 0),
        (vec!["txn-done:CompleteCommit".to_string(), "txn-empty:Empty".to_string()], vec!["Finished".to_string()]),
        "unknown state names are reported, the known ones filter"
    );
    assert_eq!(list(states(&["ongoing"]), 0), (vec![], vec!["ongoing".to_string()]), "names as Kafka spells them");
    let by_producer = ListTransactionsRequest::default().with_producer_id_filters(vec![done_id]);
    assert_eq!(list(by_producer.clone(), 0).0, vec!["txn-done:CompleteCommit"]);
    assert_eq!(list(by_producer.with_state_filters(vec![wire_string("Ongoing")]), 0).0, Vec::<String>::new());
    // v1's DurationFilter: transactions running longer than it. Kafka's test counts a
    // transactional id that never started a transaction (start time -1) as running
    // since the epoch, so it passes every duration.
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(list(ListTransactionsRequest::default().with_duration_filter(10), 1).0, all);
    let an_hour = ListTransactionsRequest::default().with_duration_filter(3_600_000);
    assert_eq!(list(an_hour, 1).0, vec!["txn-empty:Empty"]);
    open.abort_transaction(TXN_CALL_TIMEOUT).expect("abort_transaction");
}

/// Commits `offset` for `group`'s `topic`/0 outside any transaction (a plain
/// OffsetCommit of a group without members, generation -1).
fn commit_offset(broker: &BrokerProcess, group: &str, topic: &str, offset: i64) {
    let partition = OffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(offset);
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(wire_string(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(wire_string(topic)))
            .with_partitions(vec![partition])]);
    let response = RawConnection::open(broker).request(&request, 2);
    let code = response.topics[0].partitions[0].error_code;
    assert_eq!(code, 0, "OffsetCommit: {response:?}");
}

/// OffsetFetch of `group`'s `topic`/0 at `version` (v7: the group's fields; v8+: one
/// group of the groups list): (error code, committed offset). `all`: no topic list
/// (every committed partition; `None` when `topic`/0 is not among them).
fn offset_fetch(
    broker: &BrokerProcess,
    version: i16,
    group: &str,
    topic: &str,
    require_stable: bool,
    all: bool,
) -> Option<(i16, i64)> {
    let request = OffsetFetchRequest::default().with_require_stable(require_stable);
    let request = if version >= 8 {
        let topics = (!all).then(|| {
            vec![OffsetFetchRequestTopics::default()
                .with_name(TopicName(wire_string(topic)))
                .with_partition_indexes(vec![0])]
        });
        request.with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(wire_string(group)))
            .with_topics(topics)])
    } else {
        let topics = (!all).then(|| {
            vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(wire_string(topic)))
                .with_partition_indexes(vec![0])]
        });
        request.with_group_id(GroupId(wire_string(group))).with_topics(topics)
    };
    let response = RawConnection::open(broker).request(&request, version);
    let partitions: Vec<(String, i32, i16, i64)> = if version >= 8 {
        let group = &response.groups[0];
        assert_eq!(group.error_code, 0, "{response:?}");
        group
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| (t.name.0.to_string(), p.partition_index, p.error_code, p.committed_offset))
            })
            .collect()
    } else {
        assert_eq!(response.error_code, 0, "{response:?}");
        response
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| (t.name.0.to_string(), p.partition_index, p.error_code, p.committed_offset))
            })
            .collect()
    };
    partitions
        .into_iter()
        .find(|(name, index, _, _)| name == topic && *index == 0)
        .map(|(_, _, code, offset)| (code, offset))
}

#[test]
fn offset_fetch_require_stable_is_unstable_until_the_transactions_marker() {
    let _watchdog = Watchdog::new("offset_fetch_require_stable", Duration::from_secs(240));
    let mut options = BrokerOptions::new("txn-admin-require-stable");
    options.extra_args = vec!["--test-hold-txn-markers".to_string()];
    let mut broker = BrokerProcess::start(options);
    let (input, output, group) = ("input", "output", "processors");
    block_on(create_topic(&broker, input, 1, &[]));
    block_on(create_topic(&broker, output, 1, &[]));
    commit_offset(&broker, group, input, 3);
    let stable_3 = Some((0, 3));
    assert_eq!(offset_fetch(&broker, 7, group, input, true, false), stable_3, "nothing pending: stable");

    // A consume-transform-produce step: its output and its input offset 7 in one transaction.
    let producer = transactional_producer(&broker, "txn-processor");
    producer.begin_transaction().expect("begin_transaction");
    produce_to(&producer, output, 0, &["out-0"]);
    let consumer: BaseConsumer = client_config(&broker).set("group.id", group).create().expect("consumer");
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset(input, 0, Offset::Offset(7)).expect("offset");
    let metadata = consumer.group_metadata().expect("the consumer's group metadata");
    producer.send_offsets_to_transaction(&offsets, &metadata, TXN_CALL_TIMEOUT).expect("send_offsets_to_transaction");

    let unstable = Some((UNSTABLE_OFFSET_COMMIT, -1));
    for version in [7, 8, 9] {
        assert_eq!(offset_fetch(&broker, version, group, input, true, false), unstable, "v{version}, require_stable");
        assert_eq!(offset_fetch(&broker, version, group, input, true, true), unstable, "v{version}, all partitions");
        assert_eq!(offset_fetch(&broker, version, group, input, false, false), stable_3, "v{version}, not required");
    }

    // EndTxn is answered once PrepareCommit is durable; the markers are held.
    producer.commit_transaction(TXN_CALL_TIMEOUT).expect("commit_transaction");
    drop(producer);
    let prepared = described(&broker, "txn-processor");
    let (state, topics) = state_and_topics(&prepared);
    assert_eq!(state, "PrepareCommit");
    let topic_names: Vec<&str> = topics.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(topic_names, vec!["__consumer_offsets", output], "the offsets partition and the output");
    assert_eq!(offset_fetch(&broker, 7, group, input, true, false), unstable, "committed, marker not written");

    // Restarted without the hold, the coordinator writes the markers it owes.
    broker.kill();
    broker.set_extra_args(Vec::new());
    broker.restart();
    wait_for_state(&broker, "txn-processor", "CompleteCommit");
    wait_until("the committed offset to be stable", Duration::from_secs(20), || {
        offset_fetch(&broker, 7, group, input, true, false) == Some((0, 7))
    });
    assert_eq!(offset_fetch(&broker, 8, group, input, true, true), Some((0, 7)));
}

#[test]
fn describe_producers_in_a_cluster_answers_on_the_partitions_leader() {
    let _watchdog = Watchdog::new("describe_producers_in_a_cluster", Duration::from_secs(240));
    let cluster = ClusterProcesses::start_live("txn-admin-cluster", 3, "");
    let topic = "replicated";
    create_replicated_topic(&cluster.nodes[0], topic, 1, 3, &[]);
    let mut leader = -1;
    wait_until("a leader with three in-sync replicas", SETTLE_TIMEOUT, || {
        let partitions = partitions_of(&metadata(&cluster.nodes[0], Some(&[topic])), topic);
        leader = partitions.first().map_or(-1, |p| if p.isr_nodes.len() == 3 { p.leader_id.0 } else { -1 });
        leader >= 0
    });
    let producer: FutureProducer = client_config(&cluster.nodes[0])
        .set("bootstrap.servers", cluster.bootstrap())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .expect("creating the idempotent producer");
    produce_to(&producer, topic, 0, &["r-0", "r-1", "r-2", "r-3"]);

    for (id, node) in cluster.nodes.iter().enumerate() {
        let answer = describe_producers(node, &[(topic, &[0])]);
        let partition = &answer[0].1[0];
        if id as i32 == leader {
            assert_eq!(partition.error_code, 0, "the leader, node {id}: {partition:?}");
            let [state] = partition.active_producers.as_slice() else {
                panic!("one producer on the leader: {partition:?}");
            };
            assert_eq!((state.producer_epoch, state.last_sequence, state.current_txn_start_offset), (0, 3, -1));
        } else {
            assert_eq!(partition.error_code, NOT_LEADER_OR_FOLLOWER, "a follower, node {id}: {partition:?}");
        }
    }
}
