use std::collections::BTreeSet;

use super::*;
use crate::txn::TRANSACTION_STATE_TOPIC;

fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition::new(TopicName::new(topic).expect("valid"), PartitionId(partition))
}

fn transit(state: TxnState, partitions: &[(&str, i32)]) -> TxnTransit {
    TxnTransit {
        producer_id: ProducerId(1000),
        previous_producer_id: NO_PRODUCER_ID,
        next_producer_id: NO_PRODUCER_ID,
        producer_epoch: ProducerEpoch(3),
        last_producer_epoch: NO_PRODUCER_EPOCH,
        timeout_ms: 60_000,
        state,
        partitions: partitions.iter().map(|(topic, partition)| tp(topic, *partition)).collect(),
        txn_start_timestamp_ms: if partitions.is_empty() { -1 } else { 1_700_000_000_000 },
        txn_last_update_timestamp_ms: 1_700_000_000_500,
        client_transaction_version: TransactionVersion::V0,
    }
}

fn record(id: &str, value: Option<TxnTransit>) -> TxnRecord {
    TxnRecord { transactional_id: TransactionalId(id.into()), value }
}

/// One record of each shape: every state a record holds, the tagged fields set and
/// not, a tombstone.
fn sample_records() -> Vec<(&'static str, TxnRecord)> {
    let ongoing = transit(TxnState::Ongoing, &[("orders", 0), ("orders", 2), ("__consumer_offsets", 7)]);
    let rotated = TxnTransit {
        producer_id: ProducerId(2000),
        previous_producer_id: ProducerId(1000),
        producer_epoch: ProducerEpoch(0),
        last_producer_epoch: NO_PRODUCER_EPOCH,
        ..transit(TxnState::Empty, &[])
    };
    let version_2 = TxnTransit {
        next_producer_id: ProducerId(3000),
        producer_epoch: ProducerEpoch(i16::MAX),
        client_transaction_version: TransactionVersion::V2,
        ..transit(TxnState::PrepareCommit, &[("orders", 1)])
    };
    vec![
        ("Empty, a fresh producer", record("t", Some(transit(TxnState::Empty, &[])))),
        ("Ongoing, two topics", record("t", Some(ongoing.clone()))),
        ("PrepareCommit", record("t", Some(TxnTransit { state: TxnState::PrepareCommit, ..ongoing.clone() }))),
        ("PrepareAbort", record("t", Some(TxnTransit { state: TxnState::PrepareAbort, ..ongoing.clone() }))),
        ("CompleteCommit", record("t", Some(transit(TxnState::CompleteCommit, &[])))),
        ("CompleteAbort", record("t", Some(transit(TxnState::CompleteAbort, &[])))),
        ("Empty after a producer id rotation (tag 0)", record("rotated", Some(rotated))),
        ("PrepareCommit, version 2, exhausted epoch (tags 1 and 2)", record("v2", Some(version_2))),
        ("tombstone", record("expired", None)),
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect()
}

fn render(records: &[(&str, TxnRecord)]) -> String {
    let mut out = String::from(
        "# __transaction_state records: per record a comment, the key and the value in hex (\"null\": a tombstone).\n\
         # Kafka's TransactionLogKey v0 and TransactionLogValue v1; see txn/log.rs. UPDATE_GOLDEN=1 rewrites this file.\n",
    );
    for (what, record) in records {
        let value = record.encode_value().map_or_else(|| "null".to_string(), |value| hex(&value));
        out.push_str(&format!("# {what}\nkey {}\nvalue {value}\n", hex(&record.encode_key())));
    }
    out
}

#[test]
fn records_match_the_golden_file() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/txn/golden/transaction_state.txt");
    let rendered = render(&sample_records());
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &rendered).expect("write golden");
        return;
    }
    let golden = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {} ({e}); run with UPDATE_GOLDEN=1, then review", path.display()));
    assert_eq!(rendered, golden, "the record format changed; if intended, run with UPDATE_GOLDEN=1 and review");
    // And the golden bytes decode to the records.
    let lines: Vec<&str> = golden.lines().filter(|line| !line.starts_with('#')).collect();
    for (pair, (what, record)) in lines.chunks(2).zip(sample_records()) {
        let key = unhex(pair[0].strip_prefix("key ").expect("a key line"));
        let value = pair[1].strip_prefix("value ").expect("a value line");
        let value = (value != "null").then(|| unhex(value));
        assert_eq!(TxnRecord::decode(&key, value.as_deref()), Ok(record), "{what}");
    }
}

/// Kafka's layout, byte for byte, built by hand from the schema.
#[test]
fn records_have_kafkas_byte_layout() {
    let ongoing = record("t", Some(transit(TxnState::Ongoing, &[("ab", 1), ("ab", 2)])));
    assert_eq!(ongoing.encode_key(), b"\x00\x00\x00\x01t");
    let mut value = vec![0, 1]; // version 1
    value.extend_from_slice(&1000i64.to_be_bytes());
    value.extend_from_slice(&3i16.to_be_bytes());
    value.extend_from_slice(&60_000i32.to_be_bytes());
    value.push(1); // Ongoing
    value.push(2); // one topic, compact
    value.extend_from_slice(b"\x03ab"); // compact string
    value.push(3); // two partition ids, compact
    value.extend_from_slice(&1i32.to_be_bytes());
    value.extend_from_slice(&2i32.to_be_bytes());
    value.push(0); // the topic's tagged fields
    value.extend_from_slice(&1_700_000_000_500i64.to_be_bytes());
    value.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    value.push(0); // no tagged fields
    assert_eq!(ongoing.encode_value(), Some(value));

    // A version 0 value, as a Kafka broker without transaction version 1 writes it.
    let mut v0 = vec![0, 0];
    v0.extend_from_slice(&1000i64.to_be_bytes());
    v0.extend_from_slice(&3i16.to_be_bytes());
    v0.extend_from_slice(&60_000i32.to_be_bytes());
    v0.push(2); // PrepareCommit
    v0.extend_from_slice(&1i32.to_be_bytes()); // one topic
    v0.extend_from_slice(b"\x00\x02ab");
    v0.extend_from_slice(&2i32.to_be_bytes());
    v0.extend_from_slice(&1i32.to_be_bytes());
    v0.extend_from_slice(&2i32.to_be_bytes());
    v0.extend_from_slice(&1_700_000_000_500i64.to_be_bytes());
    v0.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    let decoded = TxnRecord::decode(b"\x00\x00\x00\x01t", Some(&v0)).expect("a version 0 value decodes");
    assert_eq!(decoded.value, Some(transit(TxnState::PrepareCommit, &[("ab", 1), ("ab", 2)])));

    // Kafka writes a null partition array for Empty; a partition list there is ignored.
    let mut empty = record("t", Some(transit(TxnState::Empty, &[]))).encode_value().expect("a value");
    assert_eq!(empty[17], 0, "null compact array");
    empty[17] = 1; // an empty array instead of null
    let decoded = TxnRecord::decode(b"\x00\x00\x00\x01t", Some(&empty)).expect("decodes");
    assert_eq!(decoded.value.expect("a value").partitions, BTreeSet::new());
}

#[test]
fn truncated_or_foreign_records_are_errors_not_panics() {
    for (what, record) in sample_records() {
        let key = record.encode_key();
        let value = record.encode_value();
        for cut in 0..key.len() {
            assert!(TxnRecord::decode(&key[..cut], value.as_deref()).is_err(), "{what}: key cut at {cut}");
        }
        if let Some(value) = value {
            for cut in 0..value.len() {
                assert!(TxnRecord::decode(&key, Some(&value[..cut])).is_err(), "{what}: value cut at {cut}");
            }
            let mut longer = value.clone();
            longer.push(0);
            assert_eq!(TxnRecord::decode(&key, Some(&longer)), Err(TxnRecordError::TrailingBytes(1)));
        }
    }
    assert_eq!(TxnRecord::decode(b"\x00\x01\x00\x00", None), Err(TxnRecordError::UnknownKeyVersion(1)));
    let mut value = record("t", Some(transit(TxnState::Empty, &[]))).encode_value().expect("a value");
    value[1] = 2;
    assert_eq!(TxnRecord::decode(b"\x00\x00\x00\x01t", Some(&value)), Err(TxnRecordError::UnknownValueVersion(2)));
    value[1] = 1;
    value[16] = 9;
    assert_eq!(TxnRecord::decode(b"\x00\x00\x00\x01t", Some(&value)), Err(TxnRecordError::UnknownState(9)));
    // A count far beyond the bytes is refused before anything is allocated.
    let mut huge = vec![0, 0];
    huge.extend_from_slice(&[0; 8 + 2 + 4]);
    huge.push(1);
    huge.extend_from_slice(&i32::MAX.to_be_bytes());
    assert_eq!(
        TxnRecord::decode(b"\x00\x00\x00\x01t", Some(&huge)),
        Err(TxnRecordError::InvalidLength(i32::MAX.into()))
    );
}

#[test]
fn unknown_tagged_fields_are_skipped() {
    let mut value = record("t", Some(transit(TxnState::Empty, &[]))).encode_value().expect("a value");
    assert_eq!(value.pop(), Some(0));
    value.extend_from_slice(&[1, 9, 3, 0xaa, 0xbb, 0xcc]); // tag 9, three bytes
    let decoded = TxnRecord::decode(b"\x00\x00\x00\x01t", Some(&value)).expect("decodes");
    assert_eq!(decoded.value, Some(transit(TxnState::Empty, &[])));
}

#[test]
fn records_round_trip_through_a_batch_and_replay_to_the_latest() {
    let records: Vec<TxnRecord> = sample_records().into_iter().map(|(_, record)| record).collect();
    let bytes = encode_batch(&records, TimestampMs(5));
    let partition = tp(TRANSACTION_STATE_TOPIC, 0);
    let mut decoded = Vec::new();
    assert_eq!(decode_batches(&bytes, &partition, |r| decoded.push(r)).expect("decodes"), 0);
    assert_eq!(decoded, records);

    let mut with_deletion = decoded.clone();
    with_deletion.push(record("rotated", None));
    let transactions = replay_records(with_deletion);
    let ids: Vec<&str> = transactions.keys().map(|id| id.0.as_str()).collect();
    assert_eq!(ids, ["t", "v2"], "the latest record of each id; tombstones remove");
    assert_eq!(transactions[&TransactionalId("t".into())].state, TxnState::CompleteAbort);
    let v2 = &transactions[&TransactionalId("v2".into())];
    assert_eq!((v2.next_producer_id, v2.pending_state), (ProducerId(3000), None));

    // A foreign record in the topic is skipped and counted.
    let foreign = build_batch(
        TimestampMs(0),
        BatchProducer::default(),
        &[RecordSpec { key: Some(b"hello"), value: Some(b"world"), timestamp_delta_ms: 0 }],
    );
    let mut decoded = Vec::new();
    assert_eq!(decode_batches(&foreign, &partition, |r| decoded.push(r)).expect("the batch is valid"), 1);
    assert!(decoded.is_empty());
}
