//! Compressed batches from librdkafka (gzip, snappy, lz4, zstd) round-trip through
//! the broker: consumed payloads equal the produced ones, in order, and the log on
//! disk holds the producer's compressed batches as they were sent (the broker never
//! decodes records).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use rdkafka::producer::FutureProducer;

/// librdkafka's `compression.type` and the codec id it sets in a RecordBatch's
/// attributes (the low three bits). librdkafka falls back to no compression, with
/// only a log line, when it thinks the broker lacks the codec: it infers zstd from
/// Produce v7+ and lz4 from the broker advertising FindCoordinator; hence the check
/// of the stored batches below.
const CODECS: [(&str, u16); 4] = [("gzip", 1), ("snappy", 2), ("lz4", 3), ("zstd", 4)];
const MESSAGES: usize = 3_000;

/// Payloads of several sizes that compress well but differ from one another.
fn messages(codec: &str) -> Vec<Outgoing> {
    let mut generator = corelog_engine::hash::SplitMix64::new(1);
    (0..MESSAGES)
        .map(|i| {
            let state = generator.next_u64();
            let words = 1 + (state >> 33) as usize % 120;
            let body: String = (0..words)
                .map(|w| ["order", "shipped", "user", "warehouse", "payment"][(w + i) % 5])
                .collect::<Vec<_>>()
                .join(" ");
            let value = format!("{codec} {i} {state:016x} {body}");
            (Some(format!("customer-{}", i % 37).into_bytes()), value.into_bytes())
        })
        .collect()
}

/// What one RecordBatch header on disk says.
#[derive(Debug)]
struct StoredBatch {
    codec: u16,
    record_count: i32,
}

/// The batches of one partition's segment files, read as the Kafka log format
/// (RecordBatch v2): base offset i64, length i32, leader epoch i32, magic i8,
/// crc u32, attributes i16, ..., record count i32 at byte 57.
fn stored_batches(dir: PathBuf) -> (Vec<StoredBatch>, u64) {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    let mut batches = Vec::new();
    let mut bytes_total = 0u64;
    for segment in segments {
        let bytes = std::fs::read(&segment).unwrap_or_else(|e| panic!("reading {}: {e}", segment.display()));
        let mut position = 0usize;
        while position + 61 <= bytes.len() {
            let length = i32::from_be_bytes(bytes[position + 8..position + 12].try_into().expect("4 bytes"));
            if length <= 0 {
                break; // Zero padding after the last batch.
            }
            let size = 12 + length as usize;
            assert!(position + size <= bytes.len(), "{}: batch at {position} runs past the end", segment.display());
            assert_eq!(bytes[position + 16], 2, "{}: magic of the batch at {position}", segment.display());
            let attributes = u16::from_be_bytes([bytes[position + 21], bytes[position + 22]]);
            let record_count = i32::from_be_bytes(bytes[position + 57..position + 61].try_into().expect("4 bytes"));
            batches.push(StoredBatch { codec: attributes & 0x7, record_count });
            bytes_total += size as u64;
            position += size;
        }
    }
    (batches, bytes_total)
}

#[test]
fn compressed_batches_round_trip_with_every_codec() {
    let _watchdog = Watchdog::new("compression", Duration::from_secs(300));
    let mut broker = BrokerProcess::start(BrokerOptions::new("compression"));
    // librdkafka says why it sends a batch uncompressed only in its log.
    let client_logs: BTreeMap<&str, KeptLogs> = CODECS.iter().map(|(codec, _)| (*codec, KeptLogs::default())).collect();
    for (codec, _) in CODECS {
        let topic = format!("compressed-{codec}");
        block_on(create_topic(&broker, &topic, 1, &[]));
        let producer: FutureProducer<KeptLogs> = client_config(&broker)
            .set("compression.type", codec)
            .set("linger.ms", "20")
            .set("batch.num.messages", "250")
            .create_with_context(client_logs[codec].clone())
            .expect("creating a producer");
        let sent = messages(codec);
        let placed =
            expect_all_acknowledged(&topic, &produce(&producer, &topic, Some(0), &sent, Duration::from_secs(60)));
        let expected_offsets: Vec<(i32, i64)> = (0..MESSAGES as i64).map(|offset| (0, offset)).collect();
        assert_eq!(placed, expected_offsets, "{codec}: offsets of the acknowledged messages");

        let stored = read_partitions(&broker, &topic, 1, Duration::from_secs(60));
        let received: Vec<Outgoing> =
            stored[&0].iter().map(|r| (r.key.clone(), r.value.clone().unwrap_or_default())).collect();
        assert_eq!(received.len(), sent.len(), "{codec}: records read back");
        for (index, (got, want)) in received.iter().zip(&sent).enumerate() {
            assert_eq!(got, want, "{codec}: message {index} differs after the round trip");
        }
    }

    // The batches on disk are the producer's: compressed with the codec asked for.
    // Every codec is checked before failing, so one run reports all of them.
    broker.stop();
    let mut problems = Vec::new();
    for (codec, codec_id) in CODECS {
        let topic = format!("compressed-{codec}");
        let (batches, stored_bytes) = stored_batches(broker.partition_dir(&topic, 0));
        let other_codecs: BTreeSet<u16> = batches.iter().map(|b| b.codec).filter(|&c| c != codec_id).collect();
        if batches.is_empty() {
            problems.push(format!("{codec}: no batches on disk"));
        } else if !other_codecs.is_empty() {
            problems.push(format!(
                "{codec}: batches stored with codec ids {other_codecs:?} instead of {codec_id} \
                 (0 = none: the producer did not compress); librdkafka's log:\n  {}",
                client_logs[codec].lines().join("\n  ")
            ));
        }
        let records: i32 = batches.iter().map(|b| b.record_count).sum();
        if records != MESSAGES as i32 {
            problems.push(format!("{codec}: {records} records in the stored batches, expected {MESSAGES}"));
        }
        if batches.len() >= MESSAGES / 10 {
            problems.push(format!("{codec}: {} batches for {MESSAGES} messages: hardly batched", batches.len()));
        }
        let raw_bytes: usize = messages(codec).iter().map(|(k, v)| k.as_ref().map_or(0, Vec::len) + v.len()).sum();
        if stored_bytes as usize >= raw_bytes / 2 {
            problems.push(format!("{codec}: {stored_bytes} bytes on disk for {raw_bytes} bytes of keys and values"));
        }
    }
    assert!(problems.is_empty(), "stored batches:\n{}\n{}", problems.join("\n"), broker.log_tail());
}
