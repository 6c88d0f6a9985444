//! Transactions seen through Fetch and ListOffsets on a real `Broker`: raw
//! transactional batches produced as a client sends them, COMMIT and ABORT markers
//! written through the engine's API (what the transaction coordinator's
//! WriteTxnMarkers will call), then read_committed against read_uncommitted.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use bytes::Bytes;
use futures_lite::future::block_on;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{FetchRequest, ListOffsetsRequest, ProduceRequest, TopicName as WireTopicName};
use kafka_protocol::protocol::StrBytes;

use corelog_broker::cluster::peer::PeerConnection;
use corelog_broker::{Broker, BrokerConfig};
use corelog_engine::batch::{self, BatchProducer, RecordSpec, TxnMarker, TxnOutcome};
use corelog_engine::types::{
    LeaderEpoch, PartitionId, ProducerEpoch, ProducerId, TimestampMs, TopicName, TopicPartition,
};
use corelog_engine::TopicConfig;

const TOPIC: &str = "payments";
const T0: TimestampMs = TimestampMs(1_700_000_000_000);

fn free_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address")
}

fn wire_topic() -> WireTopicName {
    WireTopicName(StrBytes::from_string(TOPIC.to_string()))
}

fn connect(broker: &Broker) -> PeerConnection {
    PeerConnection::connect(&broker.local_addr().to_string(), "transactions-test", Duration::from_secs(20))
        .expect("connect")
}

/// Produces one batch (acks=-1); its base offset.
fn produce(connection: &mut PeerConnection, records: Vec<u8>) -> i64 {
    let data = PartitionProduceData::default().with_index(0).with_records(Some(Bytes::from(records)));
    let topic = TopicProduceData::default().with_name(wire_topic()).with_partition_data(vec![data]);
    let request = ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![topic]);
    let response = connection.request(&request, 8).expect("produce answered");
    let answer = &response.responses[0].partition_responses[0];
    assert_eq!(answer.error_code, 0, "produce refused");
    answer.base_offset
}

fn transactional(producer: i64, sequence: i32, records: usize) -> Vec<u8> {
    let specs = vec![RecordSpec { key: None, value: Some(b"transfer"), timestamp_delta_ms: 0 }; records];
    let producer = BatchProducer { producer_id: ProducerId(producer), producer_epoch: 0, base_sequence: sequence };
    batch::build_transactional_batch(T0, producer, &specs)
}

fn fetch(connection: &mut PeerConnection, offset: i64, isolation_level: i8) -> PartitionData {
    fetch_waiting(connection, offset, isolation_level, 0)
}

fn fetch_waiting(connection: &mut PeerConnection, offset: i64, isolation_level: i8, max_wait_ms: i32) -> PartitionData {
    let partition =
        FetchPartition::default().with_partition(0).with_fetch_offset(offset).with_partition_max_bytes(1 << 20);
    let topic = FetchTopic::default().with_topic(wire_topic()).with_partitions(vec![partition]);
    let request = FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_isolation_level(isolation_level)
        .with_topics(vec![topic]);
    let response = connection.request(&request, 11).expect("fetch answered");
    response.responses[0].partitions[0].clone()
}

fn latest(connection: &mut PeerConnection, isolation_level: i8) -> i64 {
    let partition = ListOffsetsPartition::default().with_partition_index(0).with_timestamp(-1);
    let topic = ListOffsetsTopic::default().with_name(wire_topic()).with_partitions(vec![partition]);
    let request = ListOffsetsRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_isolation_level(isolation_level)
        .with_topics(vec![topic]);
    let response = connection.request(&request, 6).expect("list offsets answered");
    let answer = &response.topics[0].partitions[0];
    assert_eq!(answer.error_code, 0);
    answer.offset
}

/// The base offset of every batch in a fetch's records.
fn batch_offsets(data: &PartitionData) -> Vec<i64> {
    let bytes = data.records.clone().unwrap_or_default();
    batch::split_batches(&bytes).expect("whole batches").iter().map(|(_, h)| h.base_offset.0).collect()
}

fn aborted(data: &PartitionData) -> Option<Vec<(i64, i64)>> {
    let list = data.aborted_transactions.as_ref()?;
    Some(list.iter().map(|a| (a.producer_id.0, a.first_offset)).collect())
}

/// A broker with topic `payments` of one partition.
fn start(dir: &std::path::Path) -> (Broker, TopicPartition) {
    let mut config = BrokerConfig::new(dir.join("broker"));
    config.listen = free_address();
    config.engine.shard_count = 1;
    config.engine.cpus = corelog_engine::cpus::ShardCpus::Unpinned;
    let broker = Broker::start(config).expect("broker starts");
    let engine = broker.handle().expect("engine");
    let name = TopicName::new(TOPIC).expect("valid");
    block_on(engine.create_topic(name.clone(), 1, TopicConfig::default())).expect("create");
    (broker, TopicPartition::new(name, PartitionId(0)))
}

#[test]
fn read_committed_stops_at_the_last_stable_offset_and_lists_the_aborted_transactions() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir on the build disk");
    let (broker, partition) = start(dir.path());
    let engine = broker.handle().expect("engine");
    let end_txn = |producer: i64, outcome| {
        let marker = TxnMarker { outcome, coordinator_epoch: 0 };
        let appended =
            engine.append_txn_marker(&partition, ProducerId(producer), ProducerEpoch(0), marker, LeaderEpoch(0));
        block_on(appended).expect("marker").base_offset.0
    };
    let mut connection = connect(&broker);

    let plain = produce(&mut connection, batch::build_value_batch(T0, 1, 10));
    let aborted_first = produce(&mut connection, transactional(7, 0, 2));
    let committed_first = produce(&mut connection, transactional(8, 0, 1));
    produce(&mut connection, transactional(7, 2, 1));
    // Both transactions open: read_committed sees only the plain batch.
    let committed = fetch(&mut connection, 0, 1);
    assert_eq!((batch_offsets(&committed), committed.last_stable_offset), (vec![plain], aborted_first));
    assert_eq!(aborted(&committed), Some(Vec::new()));
    let uncommitted = fetch(&mut connection, 0, 0);
    assert_eq!(batch_offsets(&uncommitted), vec![plain, aborted_first, committed_first, 4]);
    assert_eq!(uncommitted.last_stable_offset, aborted_first, "the last stable offset whatever the isolation");
    assert_eq!(aborted(&uncommitted), None, "null for read_uncommitted, as Kafka answers");
    assert_eq!((latest(&mut connection, 1), latest(&mut connection, 0)), (aborted_first, 5));
    // A committed fetch at the last stable offset waits (here: max_wait 0) and gets nothing.
    assert!(batch_offsets(&fetch(&mut connection, aborted_first, 1)).is_empty());

    let abort = end_txn(7, TxnOutcome::Abort);
    let commit = end_txn(8, TxnOutcome::Commit);
    let after = produce(&mut connection, batch::build_value_batch(T0, 1, 10));
    let committed = fetch(&mut connection, 0, 1);
    assert_eq!(batch_offsets(&committed), vec![plain, aborted_first, committed_first, 4, abort, commit, after]);
    assert_eq!(committed.last_stable_offset, committed.high_watermark);
    assert_eq!(aborted(&committed), Some(vec![(7, aborted_first)]), "the client drops 7's records up to its marker");
    assert_eq!(latest(&mut connection, 1), latest(&mut connection, 0));
    // From past the abort's marker, nothing to drop.
    assert_eq!(aborted(&fetch(&mut connection, commit, 1)), Some(Vec::new()));
    broker.shutdown().expect("shutdown");
}

#[test]
fn a_read_committed_long_poll_is_answered_when_the_transaction_commits() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir on the build disk");
    let (broker, partition) = start(dir.path());
    let engine = broker.handle().expect("engine");
    let mut connection = connect(&broker);
    let first = produce(&mut connection, transactional(7, 0, 3));
    // The marker comes while the fetch waits (up to 20 s, far more than needed).
    let committer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let marker = TxnMarker { outcome: TxnOutcome::Commit, coordinator_epoch: 0 };
        let appended = engine.append_txn_marker(&partition, ProducerId(7), ProducerEpoch(0), marker, LeaderEpoch(0));
        block_on(appended).expect("marker").base_offset.0
    });
    let committed = fetch_waiting(&mut connection, first, 1, 20_000);
    let commit = committer.join().expect("committer");
    assert_eq!(batch_offsets(&committed)[0], first, "the committed batch, once its marker is written");
    assert_eq!(committed.last_stable_offset, commit + 1);
    assert_eq!(aborted(&committed), Some(Vec::new()));
    broker.shutdown().expect("shutdown");
}
