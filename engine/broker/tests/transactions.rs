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
/// The batches' timestamp: now, so that the topic's age retention (7 days), which
/// deletes the active segment too, leaves them alone while the test runs.
fn t0() -> TimestampMs {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970");
    TimestampMs(now.as_millis() as i64)
}

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
    batch::build_transactional_batch(t0(), producer, &specs)
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

    let plain = produce(&mut connection, batch::build_value_batch(t0(), 1, 10));
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
    let after = produce(&mut connection, batch::build_value_batch(t0(), 1, 10));
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

/// Produces `records` as a transactional producer's request; the partition's error code.
fn produce_as(connection: &mut PeerConnection, transactional_id: &str, records: Vec<u8>) -> i16 {
    let data = PartitionProduceData::default().with_index(0).with_records(Some(Bytes::from(records)));
    let topic = TopicProduceData::default().with_name(wire_topic()).with_partition_data(vec![data]);
    let request = ProduceRequest::default()
        .with_transactional_id(Some(kafka_protocol::messages::TransactionalId(StrBytes::from_string(
            transactional_id.to_string(),
        ))))
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![topic]);
    connection.request(&request, 8).expect("produce answered").responses[0].partition_responses[0].error_code
}

/// The coordinator through the wire, as a client without a library drives it:
/// InitProducerId, a transactional Produce refused with INVALID_TXN_STATE until
/// AddPartitionsToTxn adds the partition (KIP-890's check on the same broker), an
/// unknown partition refused with the others not attempted, EndTxn from a stale
/// epoch fenced, then a commit whose marker lets read_committed read the batch.
#[test]
fn the_coordinator_adds_partitions_checks_produce_and_commits_through_the_wire() {
    use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
    use kafka_protocol::messages::{
        AddPartitionsToTxnRequest, EndTxnRequest, InitProducerIdRequest, ProducerId as WireProducerId, TransactionalId,
    };
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir on the build disk");
    let (broker, _) = start(dir.path());
    let mut connection = connect(&broker);
    let id = || TransactionalId(StrBytes::from_static_str("wire-txn"));
    let init = InitProducerIdRequest::default().with_transactional_id(Some(id())).with_transaction_timeout_ms(60_000);
    let init = connection.request(&init, 1).expect("InitProducerId");
    assert_eq!((init.error_code, init.producer_epoch), (0, 0));
    let producer = init.producer_id;

    assert_eq!(produce_as(&mut connection, "wire-txn", transactional(producer.0, 0, 1)), 48, "INVALID_TXN_STATE");
    let add = |topics: Vec<AddPartitionsToTxnTopic>| {
        AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(id())
            .with_v3_and_below_producer_id(producer)
            .with_v3_and_below_producer_epoch(0)
            .with_v3_and_below_topics(topics)
    };
    let topic =
        |partitions: Vec<i32>| AddPartitionsToTxnTopic::default().with_name(wire_topic()).with_partitions(partitions);
    let response = connection.request(&add(vec![topic(vec![0, 7])]), 3).expect("AddPartitionsToTxn");
    let codes: Vec<i16> =
        response.results_by_topic_v3_and_below[0].results_by_partition.iter().map(|p| p.partition_error_code).collect();
    assert_eq!(codes, vec![55, 3], "OPERATION_NOT_ATTEMPTED beside UNKNOWN_TOPIC_OR_PARTITION");
    let response = connection.request(&add(vec![topic(vec![0])]), 3).expect("AddPartitionsToTxn");
    assert_eq!(response.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code, 0);
    assert_eq!(produce_as(&mut connection, "wire-txn", transactional(producer.0, 0, 1)), 0);
    assert_eq!(fetch(&mut connection, 0, 1).high_watermark, 1);
    assert_eq!(latest(&mut connection, 1), 0, "the open transaction holds the last stable offset");

    let end = |epoch: i16| {
        EndTxnRequest::default()
            .with_transactional_id(id())
            .with_producer_id(WireProducerId(producer.0))
            .with_producer_epoch(epoch)
            .with_committed(true)
    };
    assert_eq!(connection.request(&end(1), 3).expect("EndTxn").error_code, 90, "PRODUCER_FENCED");
    assert_eq!(connection.request(&end(0), 3).expect("EndTxn").error_code, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while latest(&mut connection, 1) != 2 {
        assert!(std::time::Instant::now() < deadline, "the commit marker was never written");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(batch_offsets(&fetch(&mut connection, 0, 1)), vec![0, 1], "the batch and its marker");
    broker.shutdown().expect("shutdown");
}

/// WriteTxnMarkers, as another coordinator would send it: the COMMIT marker of a
/// raw transactional batch moves the last stable offset; an unknown partition is
/// UNKNOWN_TOPIC_OR_PARTITION.
#[test]
fn write_txn_markers_commits_a_transaction() {
    use kafka_protocol::messages::write_txn_markers_request::{WritableTxnMarker, WritableTxnMarkerTopic};
    use kafka_protocol::messages::{ProducerId as WireProducerId, WriteTxnMarkersRequest};
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir on the build disk");
    let (broker, _) = start(dir.path());
    let mut connection = connect(&broker);
    produce(&mut connection, transactional(9, 0, 2));
    assert_eq!(latest(&mut connection, 1), 0, "the open transaction holds the last stable offset");
    let marker = WritableTxnMarker::default()
        .with_producer_id(WireProducerId(9))
        .with_producer_epoch(0)
        .with_transaction_result(true)
        .with_coordinator_epoch(0)
        .with_topics(vec![WritableTxnMarkerTopic::default()
            .with_name(wire_topic())
            .with_partition_indexes(vec![0, 3])]);
    let response =
        connection.request(&WriteTxnMarkersRequest::default().with_markers(vec![marker]), 1).expect("answered");
    let codes: Vec<i16> = response.markers[0].topics[0].partitions.iter().map(|p| p.error_code).collect();
    assert_eq!(codes, vec![0, 3]);
    assert_eq!(latest(&mut connection, 1), 3, "the batch and its marker are stable");
    broker.shutdown().expect("shutdown");
}

/// TxnOffsetCommit through the wire: refused INVALID_TXN_STATE until AddOffsetsToTxn
/// adds the group's offsets partition to the transaction; then pending, invisible
/// to OffsetFetch, until the transaction commits.
#[test]
fn txn_offset_commit_needs_add_offsets_and_shows_at_commit() {
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    use kafka_protocol::messages::txn_offset_commit_request::{
        TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{
        AddOffsetsToTxnRequest, EndTxnRequest, GroupId, InitProducerIdRequest, OffsetFetchRequest, TransactionalId,
        TxnOffsetCommitRequest,
    };
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir on the build disk");
    let (broker, _) = start(dir.path());
    let mut connection = connect(&broker);
    let id = || TransactionalId(StrBytes::from_static_str("wire-offsets"));
    let group = || GroupId(StrBytes::from_static_str("wire-group"));
    let init = InitProducerIdRequest::default().with_transactional_id(Some(id())).with_transaction_timeout_ms(60_000);
    let producer = connection.request(&init, 1).expect("InitProducerId").producer_id;
    let commit = TxnOffsetCommitRequest::default()
        .with_transactional_id(id())
        .with_group_id(group())
        .with_producer_id(producer)
        .with_producer_epoch(0)
        .with_topics(vec![TxnOffsetCommitRequestTopic::default().with_name(wire_topic()).with_partitions(vec![
            TxnOffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(42),
        ])]);
    let code =
        |response: kafka_protocol::messages::TxnOffsetCommitResponse| response.topics[0].partitions[0].error_code;
    assert_eq!(code(connection.request(&commit, 0).expect("TxnOffsetCommit")), 48, "INVALID_TXN_STATE");
    let add = AddOffsetsToTxnRequest::default()
        .with_transactional_id(id())
        .with_producer_id(producer)
        .with_producer_epoch(0)
        .with_group_id(group());
    assert_eq!(connection.request(&add, 0).expect("AddOffsetsToTxn").error_code, 0);
    assert_eq!(code(connection.request(&commit, 0).expect("TxnOffsetCommit")), 0);
    let fetch =
        OffsetFetchRequest::default()
            .with_group_id(group())
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(wire_topic())
                .with_partition_indexes(vec![0])]));
    let mut fetched = || connection.request(&fetch, 1).expect("OffsetFetch").topics[0].partitions[0].committed_offset;
    assert_eq!(fetched(), -1, "pending until the transaction commits");
    let end = EndTxnRequest::default()
        .with_transactional_id(id())
        .with_producer_id(kafka_protocol::messages::ProducerId(producer.0))
        .with_producer_epoch(0)
        .with_committed(true);
    let mut connection_end = connect(&broker);
    assert_eq!(connection_end.request(&end, 1).expect("EndTxn").error_code, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fetched() != 42 {
        assert!(std::time::Instant::now() < deadline, "the committed offset never showed");
        std::thread::sleep(Duration::from_millis(20));
    }
    broker.shutdown().expect("shutdown");
}
