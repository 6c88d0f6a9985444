//! `__consumer_offsets` on the real engine: appends, snapshot compaction and replay.
//! The invariant under test: replaying a partition from its log start gives exactly
//! the state the writer holds, before and after compaction, after a restart, and
//! when a snapshot was appended but its `delete_records` never happened.

use bytes::Bytes;
use corelog_broker::group::offsets::{
    encode_batches, replay, GroupRecord, MemberRecord, OffsetsLog, OffsetsStore, Record,
};
use corelog_broker::group::{CommittedOffset, GenerationId, GroupConfig, GroupId, MemberId, OFFSETS_TOPIC};
use corelog_engine::*;
use futures_lite::future::block_on;

const SNAPSHOT_INTERVAL_BYTES: u64 = 16 << 10;

fn offsets_partition() -> TopicPartition {
    TopicPartition::new(TopicName::new(OFFSETS_TOPIC).expect("valid"), PartitionId(0))
}

fn start(dir: &std::path::Path) -> Engine {
    let mut config = EngineConfig::new(dir);
    config.shard_count = 1;
    config.cpus = corelog_engine::cpus::ShardCpus::Unpinned;
    Engine::start(config).expect("engine starts")
}

fn commit(group: &str, topic: &str, partition: i32, offset: i64) -> Record {
    Record::Offset {
        group_id: GroupId(group.into()),
        partition: TopicPartition::new(TopicName::new(topic).expect("valid"), PartitionId(partition)),
        value: Some(CommittedOffset {
            offset: Offset(offset),
            leader_epoch: LeaderEpoch(0),
            metadata: Some(format!("commit {offset}")),
            commit_timestamp_ms: 1_700_000_000_000 + offset,
        }),
    }
}

fn group_record(group: &str, generation: i32) -> Record {
    Record::Group {
        group_id: GroupId(group.into()),
        value: Some(GroupRecord {
            protocol_type: "consumer".into(),
            generation: GenerationId(generation),
            protocol_name: Some("range".into()),
            leader: Some(MemberId("member-1".into())),
            members: vec![MemberRecord {
                member_id: MemberId("member-1".into()),
                group_instance_id: None,
                client_id: "test".into(),
                client_host: String::new(),
                session_timeout_ms: 10_000,
                rebalance_timeout_ms: 30_000,
                subscription: Bytes::from_static(b"subscription"),
                assignment: Bytes::from(vec![7u8; 200]),
            }],
        }),
    }
}

#[test]
fn replay_after_snapshots_and_delete_records_yields_the_same_state() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir on the build disk");
    let engine = start(dir.path());
    let handle = engine.handle();
    let mut topic_config = GroupConfig::default().offsets_topic_config();
    topic_config.segment_bytes = 8 << 10;
    block_on(handle.create_topic(TopicName::new(OFFSETS_TOPIC).expect("valid"), 1, topic_config)).expect("create");
    let partition = offsets_partition();

    let mut log =
        block_on(OffsetsLog::load(handle.clone(), partition.clone(), SNAPSHOT_INTERVAL_BYTES, None)).expect("load");
    assert_eq!(*log.store().borrow(), OffsetsStore::default());
    let mut model = OffsetsStore::default();
    let mut snapshots = 0;
    for round in 0..400i64 {
        let mut records =
            vec![commit("orders", "orders", (round % 12) as i32, round), commit("billing", "invoices", 0, round)];
        if round % 25 == 0 {
            records.push(group_record("orders", round as i32));
        }
        if round == 200 {
            // A deleted group: its tombstones, then nothing more for it.
            records = log.store().borrow().tombstones(&GroupId("billing".into()));
        }
        if round > 200 {
            records.retain(|r| r.group_id().0 != "billing");
        }
        for record in &records {
            model.apply(record.clone());
        }
        let (_, compaction) = block_on(log.append(&records, TimestampMs(round))).expect("append");
        snapshots += compaction.log_start_offset.is_some() as usize;
        assert_eq!(*log.store().borrow(), model, "the writer's store follows its appends (round {round})");
    }
    assert!(snapshots >= 3, "{snapshots} snapshots");
    assert!(model.group(&GroupId("billing".into())).is_none());
    assert_eq!(model.group(&GroupId("orders".into())).expect("orders").offsets.len(), 12);

    let stats = block_on(handle.stats(&partition)).expect("stats");
    assert!(stats.log_start_offset > Offset(0), "compaction moved the log start: {stats:?}");
    assert!(stats.size_bytes < 6 * SNAPSHOT_INTERVAL_BYTES, "the log stays bounded: {stats:?}");
    let (replayed, _) = block_on(replay(&handle, &partition, false)).expect("replay");
    assert_eq!(replayed, model, "replay from the compacted log start");

    // A snapshot appended without its delete_records (a crash between the two).
    let snapshot = model.snapshot();
    block_on(handle.append(&partition, encode_batches(&snapshot, TimestampMs(1)), LeaderEpoch(0))).expect("append");
    let (replayed, _) = block_on(replay(&handle, &partition, false)).expect("replay");
    assert_eq!(replayed, model, "old records before a snapshot replay to the same state");

    drop(log);
    engine.shutdown().expect("clean shutdown");
    let engine = start(dir.path());
    let handle = engine.handle();
    let (replayed, _) = block_on(replay(&handle, &partition, false)).expect("replay after restart");
    assert_eq!(replayed, model, "replay after a restart");
    let log =
        block_on(OffsetsLog::load(handle.clone(), partition.clone(), SNAPSHOT_INTERVAL_BYTES, None)).expect("load");
    assert_eq!(*log.store().borrow(), model);
    engine.shutdown().expect("shutdown");
}

#[test]
fn an_empty_partition_compacts_to_nothing() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir on the build disk");
    let engine = start(dir.path());
    let handle = engine.handle();
    let mut topic_config = GroupConfig::default().offsets_topic_config();
    topic_config.segment_bytes = 4 << 10;
    block_on(handle.create_topic(TopicName::new(OFFSETS_TOPIC).expect("valid"), 1, topic_config)).expect("create");
    let partition = offsets_partition();
    let mut log = block_on(OffsetsLog::load(handle.clone(), partition.clone(), 4 << 10, None)).expect("load");
    // Commit and delete the same group over and over: nothing stays live.
    for round in 0..200 {
        block_on(log.append(&[commit("flapping", "orders", 0, round)], TimestampMs(round))).expect("commit");
        let tombstones = log.store().borrow().tombstones(&GroupId("flapping".into()));
        block_on(log.append(&tombstones, TimestampMs(round))).expect("delete");
    }
    assert_eq!(*log.store().borrow(), OffsetsStore::default());
    let stats = block_on(handle.stats(&partition)).expect("stats");
    assert!(stats.log_start_offset > Offset(300), "{stats:?}");
    assert!(stats.size_bytes < 16 << 10, "{stats:?}");
    let (replayed, _) = block_on(replay(&handle, &partition, false)).expect("replay");
    assert_eq!(replayed, OffsetsStore::default());
    drop(log);
    engine.shutdown().expect("shutdown");
}
