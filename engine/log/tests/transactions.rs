//! Transactions in the log, on the simulated disk: the last stable offset, the
//! aborted-transaction index (`.txnindex`) through reads, crashes, damage,
//! truncation, retention and replication.

use std::path::{Path, PathBuf};

use futures_lite::future::block_on;

use corelog_engine::batch::{self, BatchProducer, RecordSpec, TxnMarker, TxnOutcome};
use corelog_engine::config::ManualClock;
use corelog_engine::log::{Isolation, OffsetSpec, PartitionLog};
use corelog_engine::segment::txn_index::AbortedTxn;
use corelog_engine::storage::{CrashFault, SimStorage, Storage};
use corelog_engine::types::{LeaderEpoch, Offset, PartitionId, ProducerEpoch, ProducerId, TimestampMs, TopicName};
use corelog_engine::{TopicConfig, TopicPartition};

const DIR: &str = "/data/transactions/0";
const T0: TimestampMs = TimestampMs(1_700_000_000_000);
const EPOCH: LeaderEpoch = LeaderEpoch(0);

fn open(storage: &SimStorage, dir: &str) -> PartitionLog<SimStorage> {
    let partition = TopicPartition::new(TopicName::new("transactions").expect("valid"), PartitionId(0));
    let config = TopicConfig { segment_bytes: 400, ..TopicConfig::default() };
    let opened = PartitionLog::open(storage.clone(), Path::new(dir), partition, config, ManualClock::new(T0));
    block_on(opened).expect("open").0
}

fn txn_batch(producer: i64, sequence: i32, records: usize) -> Vec<u8> {
    txn_batch_at(producer, sequence, records, T0)
}

fn txn_batch_at(producer: i64, sequence: i32, records: usize, timestamp: TimestampMs) -> Vec<u8> {
    let specs = vec![RecordSpec { key: None, value: Some(b"in a transaction"), timestamp_delta_ms: 0 }; records];
    let producer = BatchProducer { producer_id: ProducerId(producer), producer_epoch: 0, base_sequence: sequence };
    batch::build_transactional_batch(timestamp, producer, &specs)
}

fn plain_batch() -> Vec<u8> {
    batch::build_value_batch(T0, 1, 16)
}

fn end_txn(log: &mut PartitionLog<SimStorage>, producer: i64, outcome: TxnOutcome) -> Offset {
    let marker = TxnMarker { outcome, coordinator_epoch: 0 };
    let appended = block_on(log.append_txn_marker(ProducerId(producer), ProducerEpoch(0), marker, EPOCH));
    appended.expect("marker").base_offset
}

fn append(log: &mut PartitionLog<SimStorage>, bytes: Vec<u8>) -> Offset {
    block_on(log.append(bytes, EPOCH)).expect("append").base_offset
}

fn visible(log: &mut PartitionLog<SimStorage>) {
    let end = log.log_end_offset();
    log.set_high_watermark(end);
}

fn all_aborted(log: &PartitionLog<SimStorage>) -> Vec<AbortedTxn> {
    log.aborted_transactions(log.log_start_offset(), log.log_end_offset())
}

/// Reads committed data from `offset` until the reads stop (one segment per read):
/// where they stopped, and every aborted transaction they were given, once.
fn read_all_committed(log: &PartitionLog<SimStorage>, mut offset: Offset) -> (Offset, Vec<AbortedTxn>) {
    let mut aborted: Vec<AbortedTxn> = Vec::new();
    loop {
        let read = block_on(log.read_committed(offset, 1 << 20, None)).expect("read committed");
        for entry in read.aborted_transactions {
            if !aborted.contains(&entry) {
                aborted.push(entry);
            }
        }
        if read.next_offset == offset {
            return (offset, aborted);
        }
        offset = read.next_offset;
    }
}

fn files(storage: &SimStorage, extension: &str) -> Vec<String> {
    let names = block_on(storage.list_dir(Path::new(DIR))).expect("list");
    names.into_iter().filter(|n| n.ends_with(extension)).collect()
}

/// Producers 7 and 8 interleave transactions over several segments: 7 aborts, 8
/// commits, 7 aborts again, and 9's transaction stays open. Returns the offset of
/// 9's first batch.
fn interleaved(log: &mut PartitionLog<SimStorage>) -> Offset {
    append(log, plain_batch());
    append(log, txn_batch(7, 0, 2));
    append(log, txn_batch(8, 0, 1));
    append(log, txn_batch(7, 2, 3));
    end_txn(log, 7, TxnOutcome::Abort);
    append(log, plain_batch());
    append(log, txn_batch(8, 1, 2));
    end_txn(log, 8, TxnOutcome::Commit);
    append(log, txn_batch(7, 5, 1));
    end_txn(log, 7, TxnOutcome::Abort);
    let open = append(log, txn_batch(9, 0, 1));
    append(log, plain_batch());
    open
}

#[test]
fn the_last_stable_offset_and_aborted_transactions_follow_the_markers() {
    let storage = SimStorage::new();
    let mut log = open(&storage, DIR);
    append(&mut log, plain_batch());
    let first = append(&mut log, txn_batch(7, 0, 2));
    append(&mut log, txn_batch(8, 0, 1));
    visible(&mut log);
    assert_eq!(log.last_stable_offset(), first, "7's open transaction holds it");
    assert_eq!(block_on(log.list_offset(OffsetSpec::LastStable)).expect("list"), Some((first, TimestampMs(-1))));
    assert_eq!(log.stats().last_stable_offset, first);
    let committed = block_on(log.read_committed(Offset(0), 1 << 20, None)).expect("read");
    assert_eq!(committed.next_offset, first, "whole batches up to the last stable offset");
    assert_eq!(committed.last_stable_offset, first);
    assert!(committed.aborted_transactions.is_empty());
    let uncommitted = block_on(log.read(Offset(0), 1 << 20, None)).expect("read");
    assert_eq!(uncommitted.next_offset, log.high_watermark(), "a read_uncommitted consumer sees it all");

    let abort = end_txn(&mut log, 7, TxnOutcome::Abort);
    // The marker is not below the high watermark yet: the transaction still holds it.
    assert_eq!(log.last_stable_offset(), first);
    visible(&mut log);
    assert_eq!(log.last_stable_offset(), Offset(3), "8's transaction, open since 3");
    let expected = AbortedTxn {
        producer_id: ProducerId(7),
        first_offset: first,
        last_offset: abort,
        last_stable_offset: Offset(3),
    };
    assert_eq!(all_aborted(&log), vec![expected]);
    end_txn(&mut log, 8, TxnOutcome::Commit);
    visible(&mut log);
    assert_eq!(log.last_stable_offset(), log.high_watermark());
    let (next_offset, aborted) = read_all_committed(&log, Offset(0));
    assert_eq!(next_offset, log.log_end_offset());
    assert_eq!(aborted, vec![expected]);
    // A read after the abort's marker needs no entry.
    let after = block_on(log.read_committed(abort.next(), 1 << 20, None)).expect("read");
    assert!(after.aborted_transactions.is_empty());
    // Clients may not write markers.
    let marker = TxnMarker { outcome: TxnOutcome::Commit, coordinator_epoch: 0 };
    let forged = batch::build_marker_batch(T0, ProducerId(8), ProducerEpoch(0), marker);
    assert!(block_on(log.append(forged, EPOCH)).is_err());
    // A marker from a fenced epoch is refused.
    let fenced = block_on(log.append_txn_marker(ProducerId(7), ProducerEpoch(-1), marker, EPOCH));
    assert!(fenced.is_err());
}

#[test]
fn the_index_spans_segments_and_survives_a_clean_restart() {
    let storage = SimStorage::new();
    let mut log = open(&storage, DIR);
    let open_txn = interleaved(&mut log);
    visible(&mut log);
    assert!(log.stats().segment_count > 2, "segments: {}", log.stats().segment_count);
    let aborted = all_aborted(&log);
    assert_eq!(aborted.len(), 2);
    assert_eq!(log.last_stable_offset(), open_txn);
    // A fetch from 7's first batch, in an earlier segment than its abort, still gets it.
    assert_eq!(log.aborted_transactions(Offset(1), Offset(3)), aborted[..1].to_vec());
    // Committed reads, segment by segment, stop at the open transaction with both aborts.
    assert_eq!(read_all_committed(&log, Offset(0)), (open_txn, aborted.clone()));
    block_on(log.close()).expect("close");
    let log = open(&storage, DIR);
    assert_eq!(all_aborted(&log), aborted);
    assert_eq!(log.last_stable_offset(), open_txn, "the open transaction is in the snapshot");
}

#[test]
fn a_crash_torn_or_missing_index_is_rebuilt_from_the_log() {
    let mut lost_an_abort = 0;
    for seed in 0..24 {
        let storage = SimStorage::new();
        let mut log = open(&storage, DIR);
        interleaved(&mut log);
        // An abort in the active segment, whose `.log` and index are not synced.
        append(&mut log, txn_batch(10, 0, 1));
        end_txn(&mut log, 10, TxnOutcome::Abort);
        let before = all_aborted(&log);
        drop(log);
        storage.crash(CrashFault::TornTail { seed });
        let log = open(&storage, DIR);
        let end = log.log_end_offset();
        let survivors: Vec<AbortedTxn> = before.iter().filter(|a| a.last_offset < end).copied().collect();
        assert_eq!(all_aborted(&log), survivors, "seed {seed}: recovered to {end}");
        lost_an_abort += usize::from(survivors.len() < before.len());
    }
    assert!(lost_an_abort > 0, "no seed tore the last abort's marker off the active segment");
    // Damage: one sealed segment's index removed, another's flipped.
    let storage = SimStorage::new();
    let mut log = open(&storage, DIR);
    interleaved(&mut log);
    let before = all_aborted(&log);
    block_on(log.close()).expect("close");
    let indexes = files(&storage, ".txnindex");
    let with_entries: Vec<&String> =
        indexes.iter().filter(|n| storage.file_len(&Path::new(DIR).join(n)).is_some_and(|l| l > 0)).collect();
    assert_eq!(with_entries.len(), 2, "{indexes:?}");
    block_on(storage.remove_file(&Path::new(DIR).join(with_entries[0]))).expect("remove");
    storage.corrupt(&Path::new(DIR).join(with_entries[1]), 1, 0x40);
    let log = open(&storage, DIR);
    assert_eq!(all_aborted(&log), before);
    let rebuilt: PathBuf = Path::new(DIR).join(with_entries[0]);
    assert_eq!(storage.file_len(&rebuilt), Some(34), "rebuilt on disk");
}

#[test]
fn truncation_retention_and_delete_records_keep_the_index_right() {
    let storage = SimStorage::new();
    let mut log = open(&storage, DIR);
    interleaved(&mut log);
    visible(&mut log);
    let aborted = all_aborted(&log);
    // Truncating at the second abort's marker cuts its entry; the open transaction is gone too.
    block_on(log.truncate_to(aborted[1].last_offset)).expect("truncate");
    assert_eq!(all_aborted(&log), aborted[..1].to_vec());
    visible(&mut log);
    assert_eq!(log.last_stable_offset(), aborted[1].first_offset, "7's second transaction is open again");
    block_on(log.close()).expect("close");
    let mut log = open(&storage, DIR);
    assert_eq!(all_aborted(&log), aborted[..1].to_vec());
    end_txn(&mut log, 7, TxnOutcome::Commit);
    visible(&mut log);
    // Delete-records past the first abort: its segment goes, with its index.
    let segments_before = files(&storage, ".log").len();
    block_on(log.delete_records(aborted[0].last_offset.next())).expect("delete records");
    assert!(files(&storage, ".log").len() < segments_before);
    assert_eq!(files(&storage, ".txnindex").len(), files(&storage, ".log").len());
    assert!(all_aborted(&log).iter().all(|a| a.last_offset >= log.log_start_offset()));
}

#[test]
fn a_follower_builds_the_same_index_and_last_stable_offset_from_the_leaders_batches() {
    let storage = SimStorage::new();
    let mut leader = open(&storage, DIR);
    let open_txn = interleaved(&mut leader);
    visible(&mut leader);
    let mut follower = open(&storage, "/data/transactions-follower/0");
    let end = leader.log_end_offset();
    let mut offset = Offset(0);
    while offset < end {
        let read = block_on(leader.read(offset, 256, Some(end))).expect("read");
        block_on(follower.append_replicated(read.bytes)).expect("replicate");
        offset = read.next_offset;
    }
    visible(&mut follower);
    assert_eq!(all_aborted(&follower), all_aborted(&leader));
    assert_eq!(follower.last_stable_offset(), open_txn);
}

#[test]
fn a_read_committed_time_lookup_answers_nothing_past_the_last_stable_offset() {
    let storage = SimStorage::new();
    let mut log = open(&storage, DIR);
    append(&mut log, plain_batch());
    let later = TimestampMs(T0.0 + 1_000);
    let open_txn = append(&mut log, txn_batch_at(7, 0, 2, later));
    visible(&mut log);
    let by_time = |log: &PartitionLog<SimStorage>, spec| block_on(log.list_offset(spec)).expect("list");
    for spec in
        [OffsetSpec::Timestamp(later, Isolation::ReadUncommitted), OffsetSpec::MaxTimestamp(Isolation::ReadUncommitted)]
    {
        assert_eq!(by_time(&log, spec), Some((open_txn, later)), "{spec:?}: below the high watermark");
    }
    for spec in
        [OffsetSpec::Timestamp(later, Isolation::ReadCommitted), OffsetSpec::MaxTimestamp(Isolation::ReadCommitted)]
    {
        assert_eq!(by_time(&log, spec), None, "{spec:?}: 7's open transaction holds the last stable offset");
    }
    end_txn(&mut log, 7, TxnOutcome::Commit);
    visible(&mut log);
    assert_eq!(by_time(&log, OffsetSpec::Timestamp(later, Isolation::ReadCommitted)), Some((open_txn, later)));
}
