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
    let mut topic_config = TopicConfig::default();
    topic_config.durability = Durability::Always;
    topic_config.segment_bytes = 64 << 10;
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
            let header = validate(&read.bytes[at..at + 12 + i32::from_be_bytes(read.bytes[at + 8..at + 12].try_into().unwrap()) as usize]).expect("valid batch");
            assert_eq!(header.base_offset, Offset(seen as i64 * 10));
            assert_eq!(&read.bytes[at + 16..at + header.size_bytes()], &expected[seen][16..]);
            at += header.size_bytes();
            seen += 1;
        }
        offset = read.next_offset;
    }
    assert_eq!(seen, 200);
    let by_time = block_on(handle.list_offset(&orders, OffsetSpec::Timestamp(TimestampMs(1_100)))).expect("list");
    assert_eq!(by_time, Some((Offset(1000), TimestampMs(1_100))));
    engine.shutdown().expect("shutdown");
}

#[test]
fn sim_log_loses_nothing_synced_across_a_torn_crash() {
    block_on(async {
        let storage = SimStorage::new();
        let clock = ManualClock::new(TimestampMs(0));
        let dir = std::path::Path::new("/data/t/0");
        let mut config = TopicConfig::default();
        config.segment_bytes = 4096;
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
