//! End-to-end behaviour of the engine through its public API: the real glommio
//! shards over O_DIRECT files, and the log over the simulated disk.

use std::sync::Arc;

use corelog_engine::batch::{build_value_batch, validate};
use corelog_engine::config::{ManualClock, SystemClock};
use corelog_engine::storage::{CrashFault, SimStorage};
use corelog_engine::*;
use futures_lite::future::block_on;

fn partition(topic: &str, index: i32) -> TopicPartition {
    TopicPartition::new(TopicName::new(topic).expect("valid"), PartitionId(index))
}

#[test]
fn engine_appends_reads_and_survives_a_clean_restart() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir on the build disk");
    let mut config = EngineConfig::new(dir.path());
    config.shard_count = 2;
    let engine = Engine::start(config.clone()).expect("start");
    let handle = engine.handle();
    // Made-up timestamps from 1970 below: no age retention.
    let topic_config = TopicConfig {
        durability: Durability::Always,
        segment_bytes: 64 << 10,
        retention_ms: -1,
        ..TopicConfig::default()
    };
    block_on(handle.create_topic(TopicName::new("orders").expect("valid"), 4, topic_config)).expect("create");
    let orders = partition("orders", 3);
    let mut expected = Vec::new();
    for i in 0..200 {
        let batch = build_value_batch(TimestampMs(1_000 + i), 10, 100);
        let info = block_on(handle.append(&orders, batch.clone(), LeaderEpoch(0))).expect("append");
        assert_eq!(info.base_offset, Offset(i * 10));
        expected.push(batch);
    }
    let stats = block_on(handle.stats(&orders)).expect("stats");
    assert_eq!(stats.log_end_offset, Offset(2000));
    assert_eq!(stats.durable_offset, Offset(2000));
    assert!(stats.segment_count > 3, "64 KiB segments should have rolled: {stats:?}");
    engine.shutdown().expect("clean shutdown");

    let engine = Engine::start(config).expect("restart");
    let handle = engine.handle();
    let mut offset = Offset(0);
    let mut seen = 0;
    while offset < Offset(2000) {
        let read = block_on(handle.read(&orders, offset, 50_000, None)).expect("read");
        let mut at = 0;
        while at < read.bytes.len() {
            let header = validate(
                &read.bytes[at..at + 12 + i32::from_be_bytes(read.bytes[at + 8..at + 12].try_into().unwrap()) as usize],
            )
            .expect("valid batch");
            assert_eq!(header.base_offset, Offset(seen as i64 * 10));
            assert_eq!(&read.bytes[at + 16..at + header.size_bytes()], &expected[seen][16..]);
            at += header.size_bytes();
            seen += 1;
        }
        offset = read.next_offset;
    }
    assert_eq!(seen, 200);
    let by_time =
        block_on(handle.list_offset(&orders, OffsetSpec::Timestamp(TimestampMs(1_100), Isolation::ReadUncommitted)))
            .expect("list");
    assert_eq!(by_time, Some((Offset(1000), TimestampMs(1_100))));
    engine.shutdown().expect("shutdown");
}

#[test]
fn sim_log_loses_nothing_synced_across_a_torn_crash() {
    block_on(async {
        let storage = SimStorage::new();
        let clock = ManualClock::new(TimestampMs(0));
        let dir = std::path::Path::new("/data/t/0");
        let config = TopicConfig { segment_bytes: 4096, ..TopicConfig::default() };
        let (mut log, _) = PartitionLog::open(storage.clone(), dir, partition("t", 0), config.clone(), clock.clone())
            .await
            .expect("open");
        for i in 0..50 {
            log.append(build_value_batch(TimestampMs(i), 3, 50), LeaderEpoch(1)).await.expect("append");
        }
        log.sync().await.expect("sync");
        for i in 0..5 {
            log.append(build_value_batch(TimestampMs(i), 3, 50), LeaderEpoch(1)).await.expect("append");
        }
        drop(log);
        storage.crash(CrashFault::BitFlipInTail { seed: 7 });
        let (log, _) = PartitionLog::open(storage.clone(), dir, partition("t", 0), config, Arc::new(SystemClock))
            .await
            .expect("reopen");
        assert!(log.log_end_offset() >= Offset(150), "synced offsets lost: {:?}", log.stats());
        let mut offset = Offset(0);
        while offset < log.log_end_offset() {
            let read = log.read(offset, 1 << 20, None).await.expect("read");
            assert!(!read.bytes.is_empty());
            corelog_engine::batch::split_batches(&read.bytes).expect("only valid batches are served");
            offset = read.next_offset;
        }
    });
}

/// The batch at `offset` of `partition`, without the two fields the engine stamps
/// (base offset, leader epoch): what the appender sent from byte 16 on.
fn stored_batch(handle: &EngineHandle, partition: &TopicPartition, offset: Offset) -> Option<Vec<u8>> {
    let read = block_on(handle.read(partition, offset, 1 << 20, None)).ok()?;
    let (position, header) =
        corelog_engine::batch::split_batches(&read.bytes).expect("valid batches").into_iter().next()?;
    (header.base_offset == offset).then(|| read.bytes[position + 16..position + header.size_bytes()].to_vec())
}

#[test]
fn a_delete_racing_a_create_of_the_same_name_leaves_a_whole_new_topic_and_every_write_acknowledged_into_it() {
    const PARTITIONS: i32 = 64;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir on the build disk");
    let mut config = EngineConfig::new(dir.path());
    config.shard_count = 2;
    let engine = Engine::start(config.clone()).expect("start");
    let handle = engine.handle();
    let name = TopicName::new("recreated").expect("valid");
    // The batches carry made-up timestamps from 1970: age retention, which deletes
    // the active segment too, would take them while the test runs.
    let topic_config = TopicConfig { durability: Durability::Always, retention_ms: -1, ..TopicConfig::default() };
    let old = block_on(handle.create_topic(name.clone(), PARTITIONS, topic_config.clone())).expect("create");
    for index in 0..PARTITIONS {
        let batch = build_value_batch(TimestampMs(index as i64), 1, 10);
        block_on(handle.append(&partition("recreated", index), batch, LeaderEpoch(0)))
            .expect("append to the first incarnation");
    }

    // One thread deletes the topic while another keeps creating it (as auto-creating
    // clients do) and a third keeps appending; each append's batch is unique.
    let deleted = std::sync::atomic::AtomicBool::new(false);
    let (new, acknowledged_after_delete) = std::thread::scope(|scope| {
        let creator = scope.spawn(|| loop {
            match block_on(handle.create_topic(name.clone(), PARTITIONS, topic_config.clone())) {
                Ok(metadata) => return metadata,
                Err(EngineError::TopicAlreadyExists(_)) => std::thread::yield_now(),
                Err(error) => panic!("creating the topic again: {error}"),
            }
        });
        let appender = scope.spawn(|| {
            let mut acknowledged = Vec::new();
            for sequence in 0..2_000i64 {
                let target = partition("recreated", (sequence % PARTITIONS as i64) as i32);
                let batch = build_value_batch(TimestampMs(1_000_000 + sequence), 1, 10);
                let after_delete = deleted.load(std::sync::atomic::Ordering::Acquire);
                if let Ok(info) = block_on(handle.append(&target, batch.clone(), LeaderEpoch(0))) {
                    if after_delete {
                        acknowledged.push((target, info.base_offset, batch[16..].to_vec()));
                    }
                }
            }
            acknowledged
        });
        block_on(handle.delete_topic(&name)).expect("delete");
        deleted.store(true, std::sync::atomic::Ordering::Release);
        (creator.join().expect("creator"), appender.join().expect("appender"))
    });

    assert_ne!(new.id, old.id, "the new incarnation has the old one's topic id");
    assert_eq!(handle.topic(&name).map(|m| (m.id, m.partition_count)), Some((new.id, PARTITIONS)));
    for index in 0..PARTITIONS {
        let target = partition("recreated", index);
        let stats = block_on(handle.stats(&target)).unwrap_or_else(|e| panic!("{target} of the new incarnation: {e}"));
        // Nothing of the first incarnation is in the new one.
        let first_batch = stored_batch(&handle, &target, Offset(0));
        let old_batch = build_value_batch(TimestampMs(index as i64), 1, 10);
        assert_ne!(
            first_batch.as_deref(),
            Some(&old_batch[16..]),
            "{target} holds the old incarnation's batch: {stats:?}"
        );
        block_on(handle.append(&target, build_value_batch(TimestampMs(index as i64), 1, 10), LeaderEpoch(0)))
            .unwrap_or_else(|e| panic!("appending to {target} of the new incarnation: {e}"));
    }
    engine.shutdown().expect("clean shutdown");

    let engine = Engine::start(config).expect("restart");
    let handle = engine.handle();
    assert_eq!(handle.topic(&name).map(|m| (m.id, m.partition_count)), Some((new.id, PARTITIONS)), "after a restart");
    for (target, offset, batch) in &acknowledged_after_delete {
        let stored = stored_batch(&handle, target, *offset);
        assert_eq!(stored.as_ref(), Some(batch), "{target} at {offset}, acknowledged after the delete");
    }
    engine.shutdown().expect("shutdown");
}

#[test]
fn a_topic_created_again_gets_a_new_topic_id_and_keeps_it_across_a_restart() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir on the build disk");
    let mut config = EngineConfig::new(dir.path());
    config.shard_count = 2;
    let engine = Engine::start(config.clone()).expect("start");
    let handle = engine.handle();
    let name = TopicName::new("ids").expect("valid");
    let first = block_on(handle.create_topic(name.clone(), 2, TopicConfig::default())).expect("create");
    block_on(handle.delete_topic(&name)).expect("delete");
    let second = block_on(handle.create_topic(name.clone(), 2, TopicConfig::default())).expect("create again");
    assert_ne!(first.id, second.id);
    assert_eq!(second.id.version(), 4, "Kafka's topic ids are random UUIDs");
    // A cluster's replicas all take the id their controller gave the topic.
    let given = corelog_engine::types::TopicId(0x0123_4567_89ab_4def_8123_4567_89ab_cdef);
    let replica = TopicName::new("replicated").expect("valid");
    let created =
        block_on(handle.create_topic_with_id(replica.clone(), given, 1, TopicConfig::default())).expect("create");
    assert_eq!(created.id, given);
    engine.shutdown().expect("shutdown");

    let engine = Engine::start(config.clone()).expect("restart");
    assert_eq!(engine.handle().topic(&name).map(|m| m.id), Some(second.id));
    assert_eq!(engine.handle().topic(&replica).map(|m| m.id), Some(given));
    engine.shutdown().expect("shutdown");

    // A properties file from before topic ids were stored: the id comes from the
    // name, the same at every start.
    let properties = dir.path().join("ids").join("topic.properties");
    let text = std::fs::read_to_string(&properties).expect("read topic.properties");
    let without_id: String =
        text.lines().filter(|line| !line.starts_with("topic.id=")).map(|line| format!("{line}\n")).collect();
    assert_ne!(text, without_id, "topic.properties has a topic.id line");
    std::fs::write(&properties, without_id).expect("write topic.properties");
    let engine = Engine::start(config.clone()).expect("start on an old properties file");
    let derived = engine.handle().topic(&name).expect("the topic").id;
    assert_ne!(derived, second.id);
    engine.shutdown().expect("shutdown");
    let engine = Engine::start(config).expect("start again");
    assert_eq!(engine.handle().topic(&name).map(|m| m.id), Some(derived));
    engine.shutdown().expect("shutdown");
}
