//! Damage is contained, never spread: bytes that no crash can have left behind (in a
//! sealed segment, in a segment closed cleanly, a segment file missing between two
//! others) are found when a log opens and fail the open with `EngineError::Corrupt`
//! before a byte of any file changes; reads that meet bytes changed under a running
//! log fail instead of panicking; `PartitionLog::repair` truncates only when told to;
//! and, through the real engine, a damaged partition stays offline while every other
//! one is served, and a shard that panics is reported and does not hang anyone.
//!
//! The log-level tests run on the simulated disk (`SimStorage`), which lets a test
//! change stored bytes under a log; the engine-level ones on real files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use corelog_engine::batch::{self, BatchHeader, BatchProducer, RecordSpec};
use corelog_engine::config::ManualClock;
use corelog_engine::segment::{parse_segment_file_name, LogSegment, OpenMode};
use corelog_engine::shard::{repair_partition, shard_for, ShardFailure, ShardService};
use corelog_engine::storage::{CrashFault, SimStorage, Storage};
use corelog_engine::*;
use futures_lite::future::block_on;

const DIR: &str = "/data/damage/0";
const T0: i64 = 1_700_000_000_000;

fn dir() -> &'static Path {
    Path::new(DIR)
}

fn partition() -> TopicPartition {
    TopicPartition::new(TopicName::new("damage").expect("valid"), PartitionId(0))
}

/// Small segments (a few batches each) with an index entry every couple of batches.
fn config() -> TopicConfig {
    TopicConfig { segment_bytes: 1500, index_interval_bytes: 300, ..TopicConfig::default() }
}

fn make_batch(seq: i64) -> Vec<u8> {
    let value: Vec<u8> = (0..60).map(|i| (seq + i) as u8).collect();
    let specs: Vec<RecordSpec<'_>> =
        (0..3).map(|i| RecordSpec { key: None, value: Some(&value), timestamp_delta_ms: i }).collect();
    batch::build_batch(TimestampMs(T0 + seq * 10), BatchProducer::default(), &specs)
}

/// How the log that a test damages was left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shutdown {
    /// Closed cleanly: every segment, the active one too, is verified at open.
    Clean,
    /// The process was killed: the active segment is recovered, the sealed ones
    /// verified.
    Killed,
}

/// A log of 40 batches (about six segments), synced, then shut down as `shutdown`
/// says. Returns the disk, the clock, and every batch as the log serves it.
fn written_log(shutdown: Shutdown) -> (SimStorage, Arc<ManualClock>, BTreeMap<i64, Vec<u8>>) {
    let storage = SimStorage::new();
    let clock = ManualClock::new(TimestampMs(T0));
    let (mut log, _) =
        block_on(PartitionLog::open(storage.clone(), dir(), partition(), config(), clock.clone())).expect("open");
    for seq in 0..40 {
        block_on(log.append(make_batch(seq), LeaderEpoch(0))).expect("append");
    }
    block_on(log.sync()).expect("sync");
    log.set_high_watermark(log.log_end_offset());
    assert!(log.stats().segment_count >= 5, "the test needs several sealed segments: {:?}", log.stats());
    let served = served_batches(&log);
    match shutdown {
        Shutdown::Clean => block_on(log.close()).expect("close"),
        Shutdown::Killed => {
            drop(log);
            storage.kill_process();
        }
    }
    (storage, clock, served)
}

/// Every batch the log serves, by base offset, as stored.
fn served_batches(log: &PartitionLog<SimStorage>) -> BTreeMap<i64, Vec<u8>> {
    let mut batches = BTreeMap::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let read = block_on(log.read(offset, 1 << 20, Some(log.log_end_offset()))).expect("read");
        for (position, header) in batch::split_batches(&read.bytes).expect("valid batches") {
            batches.insert(header.base_offset.0, read.bytes[position..position + header.size_bytes()].to_vec());
        }
        offset = read.next_offset;
    }
    batches
}

/// Every file of the partition directory and its bytes.
fn files(storage: &SimStorage) -> BTreeMap<String, Vec<u8>> {
    let names = block_on(storage.list_dir(dir())).expect("list");
    names
        .into_iter()
        .map(|name| {
            let bytes = block_on(storage.read_file(&dir().join(&name))).expect("read").expect("listed");
            (name, bytes)
        })
        .collect()
}

/// One batch as it sits in a segment file.
#[derive(Debug, Clone)]
struct Stored {
    log_path: PathBuf,
    position: usize,
    header: BatchHeader,
}

/// Every batch of every segment file, in offset order.
fn layout(storage: &SimStorage) -> Vec<Stored> {
    let mut stored = Vec::new();
    for (name, bytes) in files(storage) {
        if parse_segment_file_name(&name).is_none() {
            continue;
        }
        let mut position = 0;
        while position < bytes.len() {
            let header = BatchHeader::parse(&bytes[position..]).expect("a header");
            stored.push(Stored { log_path: dir().join(&name), position, header });
            position += header.size_bytes();
        }
    }
    stored
}

/// Overwrites bytes of a stored file (through `SimStorage::corrupt`, which XORs).
fn overwrite(storage: &SimStorage, path: &Path, position: usize, new: &[u8]) {
    let old = block_on(storage.read_file(path)).expect("read").expect("exists");
    for (i, byte) in new.iter().enumerate() {
        storage.corrupt(path, position + i, old[position + i] ^ byte);
    }
}

/// The kinds of damage the tests make in one batch, and what each does to its
/// header or body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Corruption {
    /// batch_length far past the end of the file.
    LengthTooLong,
    /// batch_length shorter than a header.
    LengthTooShort,
    /// batch_length negative.
    LengthNegative,
    /// One bit of a record flipped: only the CRC tells.
    FlippedRecordByte,
    /// The base offset (not covered by the CRC) changed: offsets stop being contiguous.
    WrongBaseOffset,
}

const CORRUPTIONS: [Corruption; 5] = [
    Corruption::LengthTooLong,
    Corruption::LengthTooShort,
    Corruption::LengthNegative,
    Corruption::FlippedRecordByte,
    Corruption::WrongBaseOffset,
];

fn corrupt(storage: &SimStorage, batch: &Stored, corruption: Corruption) {
    let at = batch.position;
    let path = &batch.log_path;
    match corruption {
        Corruption::LengthTooLong => overwrite(storage, path, at + 8, &0x0100_0000i32.to_be_bytes()),
        Corruption::LengthTooShort => overwrite(storage, path, at + 8, &10i32.to_be_bytes()),
        Corruption::LengthNegative => overwrite(storage, path, at + 8, &(-200i32).to_be_bytes()),
        Corruption::FlippedRecordByte => storage.corrupt(path, at + batch.header.size_bytes() - 5, 0x10),
        Corruption::WrongBaseOffset => overwrite(storage, path, at, &(batch.header.base_offset.0 + 7).to_be_bytes()),
    }
}

fn open(storage: &SimStorage, clock: &Arc<ManualClock>) -> Result<(PartitionLog<SimStorage>, segment::RecoveryReport)> {
    block_on(PartitionLog::open(storage.clone(), dir(), partition(), config(), clock.clone()))
}

/// Asserts that `result` is the open failing with damage at `batch`'s position in
/// its file, naming the offset it should have held.
fn expect_damage_at(result: Result<(PartitionLog<SimStorage>, segment::RecoveryReport)>, batch: &Stored, what: &str) {
    match result {
        Err(EngineError::Corrupt { path, position, offset, reason }) => {
            assert_eq!(path, batch.log_path, "{what}: {reason}");
            assert_eq!(position, batch.position as u64, "{what}: {reason}");
            assert_eq!(offset, Some(batch.header.base_offset), "{what}: {reason}");
        }
        Err(other) => panic!("{what}: expected Corrupt, got {other}"),
        Ok((log, report)) => panic!("{what}: the damaged log opened: {:?} {report:?}", log.stats()),
    }
}

/// Asserts that `result` is the open failing with damage in `batch`'s file, after
/// `batch` itself.
fn expect_damage_after(
    result: Result<(PartitionLog<SimStorage>, segment::RecoveryReport)>,
    batch: &Stored,
    what: &str,
) {
    match result {
        Err(EngineError::Corrupt { path, position, reason, .. }) => {
            assert_eq!(path, batch.log_path, "{what}: {reason}");
            assert!(position > batch.position as u64, "{what}: at byte {position}: {reason}");
        }
        Err(other) => panic!("{what}: expected Corrupt, got {other}"),
        Ok((log, report)) => panic!("{what}: the damaged log opened: {:?} {report:?}", log.stats()),
    }
}

#[test]
fn a_damaged_sealed_segment_fails_the_open_and_no_byte_of_any_file_changes() {
    for shutdown in [Shutdown::Clean, Shutdown::Killed] {
        for corruption in CORRUPTIONS {
            // In the second segment (sealed, synced): its second batch, which has
            // batches and index entries after it, and its last batch, after its last
            // index entry (where a damaged length used to get the segment cut).
            for last in [false, true] {
                let (storage, clock, _) = written_log(shutdown);
                let stored = layout(&storage);
                let second_segment =
                    stored.iter().find(|b| b.log_path != stored[0].log_path).expect("2nd").log_path.clone();
                let mut in_second = stored.iter().filter(|b| b.log_path == second_segment);
                let victim = if last { in_second.next_back() } else { in_second.nth(1) }.expect("a batch").clone();
                corrupt(&storage, &victim, corruption);
                let before = files(&storage);
                let what = format!(
                    "{shutdown:?}, {corruption:?} at byte {} of {}",
                    victim.position,
                    victim.log_path.display()
                );
                // A base offset moved up is a gap, which a sealed segment may have
                // (the log cleaner leaves them): the damage shows at the next batch,
                // which no longer follows, or at the join with the next segment.
                let check = |result| match corruption {
                    Corruption::WrongBaseOffset => expect_damage_after(result, &victim, &what),
                    _ => expect_damage_at(result, &victim, &what),
                };
                // The segment is whole on its own then, and its index, which no longer
                // matches the moved offset, is rebuilt (derived data) before the join
                // with the next segment fails: every other byte stays.
                let moved_last = corruption == Corruption::WrongBaseOffset && last;
                let unchanged = |now: BTreeMap<String, Vec<u8>>| match moved_last {
                    true => now
                        .iter()
                        .filter(|(n, _)| !n.ends_with("index"))
                        .eq(before.iter().filter(|(n, _)| !n.ends_with("index"))),
                    false => now == before,
                };
                check(open(&storage, &clock));
                assert!(unchanged(files(&storage)), "{what}: opening changed the files");
                // A second try finds the same, and still changes nothing.
                check(open(&storage, &clock));
                assert!(unchanged(files(&storage)), "{what}: the second open changed the files");
            }
        }
    }
}

#[test]
fn a_damaged_active_segment_after_a_clean_close_is_damage_not_a_torn_tail() {
    for corruption in CORRUPTIONS {
        let (storage, clock, _) = written_log(Shutdown::Clean);
        let stored = layout(&storage);
        let active = stored.last().expect("batches").log_path.clone();
        let victim = stored.iter().find(|b| b.log_path == active).expect("a batch in the active segment").clone();
        corrupt(&storage, &victim, corruption);
        let before = files(&storage);
        let what = format!("{corruption:?} in the active segment after a clean close");
        expect_damage_at(open(&storage, &clock), &victim, &what);
        assert!(files(&storage) == before, "{what}: opening changed the files");
    }
}

#[test]
fn a_missing_segment_file_between_two_others_fails_the_open_and_changes_nothing() {
    for shutdown in [Shutdown::Clean, Shutdown::Killed] {
        let (storage, clock, _) = written_log(shutdown);
        let stored = layout(&storage);
        let mut segments: Vec<PathBuf> = stored.iter().map(|b| b.log_path.clone()).collect();
        segments.dedup();
        block_on(storage.remove_file(&segments[2])).expect("remove");
        let before = files(&storage);
        let last_of_second = stored.iter().rfind(|b| b.log_path == segments[1]).expect("batches").clone();
        match open(&storage, &clock) {
            Err(EngineError::Corrupt { path, position, offset, reason }) => {
                assert_eq!(path, segments[1], "{reason}");
                assert_eq!(position, (last_of_second.position + last_of_second.header.size_bytes()) as u64, "{reason}");
                assert_eq!(offset, Some(last_of_second.header.last_offset().next()), "{reason}");
                assert!(reason.contains("missing or left over"), "{reason}");
            }
            Err(other) => panic!("{shutdown:?}: expected Corrupt, got {other}"),
            Ok((log, _)) => panic!("{shutdown:?}: a log with a gap opened: {:?}", log.stats()),
        }
        assert!(files(&storage) == before, "{shutdown:?}: opening changed the files");
    }
}

#[test]
fn a_torn_tail_of_the_active_segment_is_still_cut_after_a_crash() {
    // The one place where invalid bytes are expected: what a power loss left at the
    // end of the active segment. Recovery cuts it, as before.
    let (storage, clock, served) = written_log(Shutdown::Killed);
    let (mut log, _) = open(&storage, &clock).expect("open");
    let end = log.log_end_offset();
    for seq in 40..43 {
        block_on(log.append(make_batch(seq), LeaderEpoch(0))).expect("append");
    }
    block_on(log.flush()).expect("flush");
    drop(log);
    storage.crash(CrashFault::TornTail { seed: 5 });
    let (log, report) = open(&storage, &clock).expect("a torn tail is recovered, not refused");
    assert!(log.log_end_offset() >= end, "synced offsets lost: {report:?}");
    assert_eq!(served_batches(&log).range(..end.0).collect::<Vec<_>>(), served.iter().collect::<Vec<_>>());
}

/// Runs `read` and asserts it failed with `Corrupt` at `batch` (without panicking).
fn expect_read_damage<T: std::fmt::Debug>(result: Result<T>, batch: &Stored, what: &str) {
    match result {
        Err(EngineError::Corrupt { path, position, reason, .. }) => {
            assert_eq!(path, batch.log_path, "{what}: {reason}");
            assert_eq!(position, batch.position as u64, "{what}: {reason}");
        }
        other => panic!("{what}: expected Corrupt at byte {}, got {other:?}", batch.position),
    }
}

#[test]
fn reads_that_meet_a_corrupt_length_fail_with_an_error_and_never_panic() {
    for corruption in [Corruption::LengthTooLong, Corruption::LengthTooShort, Corruption::LengthNegative] {
        let (storage, clock, served) = written_log(Shutdown::Clean);
        let (log, _) = open(&storage, &clock).expect("open");
        let stored = layout(&storage);
        let first_segment = stored[0].log_path.clone();
        let (segment, _) = block_on(LogSegment::open(
            &storage,
            dir(),
            stored[0].header.base_offset,
            config().index_interval_bytes,
            TimestampMs(T0),
            OpenMode::Inspect,
        ))
        .expect("open the first segment");
        // The third batch of the first segment: reached by walking headers from the
        // one before it (by time) and by an index entry (by offset).
        let victim = stored.iter().filter(|b| b.log_path == first_segment).nth(2).expect("third batch").clone();
        let offset = victim.header.base_offset;
        let timestamp = victim.header.max_timestamp;
        // The bytes change under the open log, as a failing disk would change them.
        corrupt(&storage, &victim, corruption);
        let what = |path: &str| format!("{corruption:?}: {path}");

        expect_read_damage(block_on(log.read(offset, 1 << 20, None)), &victim, &what("PartitionLog::read"));
        expect_read_damage(block_on(log.batch_header(offset)), &victim, &what("PartitionLog::batch_header"));
        let by_time = block_on(log.list_offset(OffsetSpec::Timestamp(timestamp, Isolation::ReadUncommitted)));
        expect_read_damage(by_time, &victim, &what("PartitionLog::list_offset by timestamp"));
        expect_read_damage(
            block_on(segment.read(offset, 1 << 20, Offset(i64::MAX))),
            &victim,
            &what("LogSegment::read"),
        );
        expect_read_damage(block_on(segment.find_batch(offset)), &victim, &what("LogSegment::find_batch"));
        expect_read_damage(
            block_on(segment.scan_headers(Offset(0), |_, _| {})),
            &victim,
            &what("LogSegment::scan_headers"),
        );
        let by_time = block_on(segment.offset_for_timestamp(timestamp, Offset(0)));
        expect_read_damage(by_time, &victim, &what("LogSegment::offset_for_timestamp"));

        // A read that starts before the damage serves the valid batches before it.
        let before = block_on(log.read(Offset(0), 1 << 20, None)).expect("a read before the damage");
        assert_eq!(before.next_offset, offset, "{}", what("read before the damage"));
        let expected: Vec<u8> = served.range(..offset.0).flat_map(|(_, b)| b.clone()).collect();
        assert!(before.bytes == expected, "{}", what("read before the damage: bytes"));
        // Batches after the damaged segment are still served.
        let later = stored.iter().find(|b| b.log_path != first_segment).expect("a later segment");
        let read = block_on(log.read(later.header.base_offset, 1 << 20, None)).expect("a read past the damage");
        assert_eq!(read.bytes[..later.header.size_bytes()], served[&later.header.base_offset.0][..]);
    }
}

/// The log's batches below `end`, as served.
fn batches_below(log: &PartitionLog<SimStorage>, end: Offset) -> Vec<(i64, Vec<u8>)> {
    served_batches(log).into_iter().filter(|(offset, _)| *offset < end.0).collect()
}

#[test]
fn repair_changes_nothing_without_consent_and_with_it_cuts_right_before_the_damage() {
    for corruption in [Corruption::LengthTooLong, Corruption::FlippedRecordByte] {
        let (storage, clock, served) = written_log(Shutdown::Clean);
        let stored = layout(&storage);
        let mut segments: Vec<PathBuf> = stored.iter().map(|b| b.log_path.clone()).collect();
        segments.dedup();
        let victim = stored.iter().filter(|b| b.log_path == segments[1]).nth(1).expect("a batch").clone();
        corrupt(&storage, &victim, corruption);
        let before = files(&storage);
        let interval = config().index_interval_bytes;

        let looked =
            block_on(PartitionLog::repair(storage.clone(), dir(), interval, TimestampMs(T0), false)).expect("look");
        assert!(files(&storage) == before, "{corruption:?}: repair without consent changed the files");
        assert!(!looked.applied);
        assert_eq!(looked.truncated_at, Some(victim.header.base_offset), "{looked:?}");
        assert_eq!(looked.damage.len(), 1, "{looked:?}");
        assert!(looked.damage[0].contains(&victim.log_path.display().to_string()), "{looked:?}");
        let later_segments = &segments[2..];
        let later_bytes: usize = later_segments.iter().map(|p| before[&file_name(p)].len()).sum();
        let cut_bytes = before[&file_name(&victim.log_path)].len() - victim.position;
        assert_eq!(looked.log_bytes_removed, (later_bytes + cut_bytes) as u64, "{looked:?}");
        for path in later_segments {
            assert!(looked.files_removed.contains(path), "{looked:?} does not remove {}", path.display());
        }

        let repaired =
            block_on(PartitionLog::repair(storage.clone(), dir(), interval, TimestampMs(T0), true)).expect("repair");
        assert!(repaired.applied);
        assert_eq!(
            (repaired.truncated_at, repaired.log_bytes_removed),
            (looked.truncated_at, looked.log_bytes_removed)
        );
        let (mut log, _) = open(&storage, &clock).expect("a repaired log opens");
        assert_eq!(log.log_end_offset(), victim.header.base_offset);
        let kept: Vec<(i64, Vec<u8>)> =
            served.range(..victim.header.base_offset.0).map(|(o, b)| (*o, b.clone())).collect();
        assert!(batches_below(&log, victim.header.base_offset) == kept, "{corruption:?}: the kept records changed");
        let appended = block_on(log.append(make_batch(99), LeaderEpoch(0))).expect("append after repair");
        assert_eq!(appended.base_offset, victim.header.base_offset);
        // Files before the damage are untouched, byte for byte.
        let after = files(&storage);
        assert_eq!(after[&file_name(&segments[0])], before[&file_name(&segments[0])]);
    }
}

#[test]
fn repair_of_a_damaged_first_batch_keeps_the_segment_so_no_offset_is_handed_out_twice() {
    let (storage, clock, _) = written_log(Shutdown::Clean);
    let stored = layout(&storage);
    let mut segments: Vec<PathBuf> = stored.iter().map(|b| b.log_path.clone()).collect();
    segments.dedup();
    let victim = stored.iter().find(|b| b.log_path == segments[1]).expect("first batch of the second segment").clone();
    corrupt(&storage, &victim, Corruption::LengthNegative);
    let interval = config().index_interval_bytes;
    block_on(PartitionLog::repair(storage.clone(), dir(), interval, TimestampMs(T0), true)).expect("repair");
    let (mut log, _) = open(&storage, &clock).expect("a repaired log opens");
    assert_eq!(log.log_end_offset(), victim.header.base_offset);
    let appended = block_on(log.append(make_batch(99), LeaderEpoch(0))).expect("append after repair");
    assert_eq!(appended.base_offset, victim.header.base_offset);
}

#[test]
fn repair_of_a_missing_segment_removes_the_segments_after_the_gap() {
    let (storage, clock, served) = written_log(Shutdown::Killed);
    let stored = layout(&storage);
    let mut segments: Vec<PathBuf> = stored.iter().map(|b| b.log_path.clone()).collect();
    segments.dedup();
    block_on(storage.remove_file(&segments[2])).expect("remove");
    let end = stored.iter().rfind(|b| b.log_path == segments[1]).expect("batches").header.last_offset().next();
    let interval = config().index_interval_bytes;
    let repaired =
        block_on(PartitionLog::repair(storage.clone(), dir(), interval, TimestampMs(T0), true)).expect("repair");
    assert_eq!(repaired.truncated_at, Some(end), "{repaired:?}");
    let (log, _) = open(&storage, &clock).expect("a repaired log opens");
    assert_eq!(log.log_end_offset(), end);
    let kept: Vec<(i64, Vec<u8>)> = served.range(..end.0).map(|(o, b)| (*o, b.clone())).collect();
    assert!(batches_below(&log, end) == kept);
}

fn file_name(path: &Path) -> String {
    path.file_name().expect("a file").to_string_lossy().into_owned()
}

// ---------------------------------------------------------------------------------
// Through the real engine (glommio shards, O_DIRECT files)
// ---------------------------------------------------------------------------------

fn engine_config(data_dir: &Path) -> EngineConfig {
    let mut config = EngineConfig::new(data_dir);
    config.shard_count = 2;
    config
}

fn events(index: i32) -> TopicPartition {
    TopicPartition::new(TopicName::new("events").expect("valid"), PartitionId(index))
}

/// Every file under `dir` and its bytes.
fn files_under(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("list") {
        let path = entry.expect("entry").path();
        files.insert(path.clone(), std::fs::read(&path).expect("read"));
    }
    files
}

/// A damaged partition 1 of topic `events` (3 partitions, 30 batches each, small
/// segments) in a stopped engine's data directory: a bad length in the second
/// batch of its second segment. Returns that segment's path, its damaged bytes and
/// the damaged batch's position.
fn events_with_partition_1_damaged(config: &EngineConfig) -> (PathBuf, Vec<u8>, usize) {
    let topic_config = TopicConfig { segment_bytes: 2048, ..TopicConfig::default() };
    let engine = Engine::start(config.clone()).expect("start");
    let handle = engine.handle();
    block_on(handle.create_topic(TopicName::new("events").expect("valid"), 3, topic_config)).expect("create");
    for seq in 0..30 {
        for index in 0..3 {
            block_on(handle.append(&events(index), make_batch(seq), LeaderEpoch(0))).expect("append");
        }
    }
    engine.shutdown().expect("shutdown");

    let damaged_dir = config.data_dir.join("events").join("1");
    let mut logs: Vec<PathBuf> =
        files_under(&damaged_dir).into_keys().filter(|p| p.extension().is_some_and(|e| e == "log")).collect();
    logs.sort();
    let mut bytes = std::fs::read(&logs[1]).expect("read");
    let second = BatchHeader::parse(&bytes).expect("a batch").size_bytes();
    bytes[second + 8..second + 12].copy_from_slice(&(-1i32).to_be_bytes());
    std::fs::write(&logs[1], &bytes).expect("write");
    (logs[1].clone(), bytes, second)
}

#[test]
fn a_damaged_partition_stays_offline_with_its_bytes_kept_while_the_others_are_served() {
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir on the build disk");
    let config = engine_config(root.path());
    let (damaged_log, bytes, second) = events_with_partition_1_damaged(&config);
    let damaged_dir = root.path().join("events").join("1");
    let before = files_under(&damaged_dir);

    let engine = Engine::start(config.clone()).expect("a damaged partition does not stop the start");
    let handle = engine.handle();
    let topic = TopicName::new("events").expect("valid");
    assert_eq!(handle.offline_partitions(&topic).into_iter().collect::<Vec<_>>(), vec![PartitionId(1)]);
    for result in [
        block_on(handle.read(&events(1), Offset(0), 1 << 20, None)).map(|_| ()),
        block_on(handle.append(&events(1), make_batch(100), LeaderEpoch(0))).map(|_| ()),
        block_on(handle.list_offset(&events(1), OffsetSpec::Latest)).map(|_| ()),
    ] {
        match result {
            Err(error @ EngineError::PartitionOffline { .. }) => {
                let text = error.to_string();
                assert!(text.contains(&damaged_log.display().to_string()), "{text}");
                assert!(text.contains(&format!("damaged at byte {second}")), "{text}");
                assert!(
                    text.contains(&format!(
                        "corelog repair --data-dir {} --topic events --partition 1 --truncate-at-corruption",
                        root.path().display()
                    )),
                    "{text}"
                );
            }
            other => panic!("the damaged partition answered {other:?}"),
        }
    }
    for index in [0, 2] {
        let read = block_on(handle.read(&events(index), Offset(0), 1 << 20, None)).expect("the others are served");
        assert!(!read.bytes.is_empty());
        let appended = block_on(handle.append(&events(index), make_batch(100), LeaderEpoch(0))).expect("append");
        assert_eq!(appended.base_offset, Offset(90));
    }
    // A config change reaches the partitions that are open and the properties file,
    // which the offline one reads when it opens again.
    let retention = TopicConfig { segment_bytes: 2048, retention_ms: 3_600_000, ..TopicConfig::default() };
    block_on(handle.set_topic_config(&topic, retention.clone())).expect("a config change beside an offline partition");
    assert_eq!(handle.topic(&topic).expect("the topic").config, retention);
    // corelog repair refuses to run beside the engine, which holds the data
    // directory's lock.
    let refused = repair_partition(root.path(), &events(1), true).expect_err("a repair beside a running engine");
    assert!(refused.to_string().contains(&format!("in use by pid {}", std::process::id())), "{refused}");
    engine.shutdown().expect("shutdown");
    assert!(files_under(&damaged_dir) == before, "the damaged partition's files changed");

    // Consent: repair cuts it at the damage, and it is served again.
    let report = repair_partition(root.path(), &events(1), true).expect("repair");
    let first_lost = Offset(BatchHeader::parse(&bytes[second..]).expect("header").base_offset.0);
    assert_eq!(report.truncated_at, Some(first_lost), "{report:?}");
    let engine = Engine::start(config).expect("start after the repair");
    let handle = engine.handle();
    assert!(handle.offline_partitions(&topic).is_empty());
    assert_eq!(handle.topic(&topic).expect("the topic").config, retention, "the config change was lost");
    let stats = block_on(handle.stats(&events(1))).expect("stats");
    assert_eq!(stats.log_end_offset, first_lost);
    let appended = block_on(handle.append(&events(1), make_batch(100), LeaderEpoch(0))).expect("append");
    assert_eq!(appended.base_offset, first_lost);
    engine.shutdown().expect("shutdown");
}

#[test]
fn deleting_a_topic_with_an_offline_partition_removes_its_files_and_the_name_can_be_created_again() {
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir on the build disk");
    let config = engine_config(root.path());
    events_with_partition_1_damaged(&config);
    let engine = Engine::start(config).expect("start");
    let handle = engine.handle();
    let topic = TopicName::new("events").expect("valid");
    assert_eq!(handle.offline_partitions(&topic).into_iter().collect::<Vec<_>>(), vec![PartitionId(1)]);

    block_on(handle.delete_topic(&topic)).expect("delete a topic with an offline partition");
    assert!(!root.path().join("events").exists(), "the deleted topic's files stayed");
    assert!(handle.offline_partitions(&topic).is_empty(), "the deleted partition is still listed offline");
    let created =
        block_on(handle.create_topic(topic.clone(), 3, TopicConfig::default())).expect("create the name again");
    assert_eq!(created.partition_count, 3);
    for index in 0..3 {
        let appended = block_on(handle.append(&events(index), make_batch(0), LeaderEpoch(0))).expect("append");
        assert_eq!(appended.base_offset, Offset(0), "partition {index} of the new topic");
    }
    assert!(handle.offline_partitions(&topic).is_empty());
    engine.shutdown().expect("shutdown");
}

/// Runs `work` on its own thread and fails the test if it takes longer than `bound`
/// (a wait on a dead shard would otherwise hang the test).
fn within<T: Send + 'static>(what: &str, bound: Duration, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(work());
    });
    finished.recv_timeout(bound).unwrap_or_else(|_| panic!("{what} did not finish within {bound:?}"))
}

#[test]
fn a_shard_that_panics_is_reported_and_neither_requests_nor_shutdown_wait_for_it() {
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir on the build disk");
    let mut config = engine_config(root.path());
    let engine = Engine::start(config.clone()).expect("start");
    block_on(engine.handle().create_topic(TopicName::new("events").expect("valid"), 4, TopicConfig::default()))
        .expect("create");
    engine.shutdown().expect("shutdown");

    // A panic while the engine starts fails the start (it does not hang).
    let (failures, failed) = flume::bounded::<ShardFailure>(1);
    config.shard_failures = Some(failures);
    let service: ShardService = Arc::new(|shard, _engine| {
        if shard == ShardId(1) {
            Box::pin(async { panic!("deliberate test panic at start on shard 1") })
        } else {
            Box::pin(async {})
        }
    });
    let starting = config.clone();
    let started = within("a start with a panicking shard", Duration::from_secs(30), move || {
        Engine::start_with_service(starting, Some(service)).map(|_| ())
    });
    assert!(matches!(started, Err(EngineError::ShardUnavailable(1))), "{started:?}");
    let failure = failed.recv_timeout(Duration::from_secs(30)).expect("the panic is reported");
    assert!(failure.panic.contains("deliberate test panic at start"), "{failure:?}");

    // A panic once the engine runs.
    let (failures, failed) = flume::bounded::<ShardFailure>(1);
    config.shard_failures = Some(failures);
    let service: ShardService = Arc::new(|shard, _engine| {
        if shard == ShardId(1) {
            Box::pin(async {
                glommio::timer::sleep(Duration::from_millis(200)).await;
                panic!("deliberate test panic on shard 1")
            })
        } else {
            Box::pin(async {})
        }
    });
    let engine = Engine::start_with_service(config, Some(service)).expect("start");
    let handle = engine.handle();
    let failure = failed.recv_timeout(Duration::from_secs(30)).expect("the panic is reported");
    assert_eq!(failure.shard, ShardId(1));
    assert!(failure.panic.contains("deliberate test panic on shard 1"), "{failure:?}");
    assert!(failure.panic.contains("damage.rs"), "the report names where it panicked: {failure:?}");
    assert_eq!(handle.failed_shards(), vec![ShardId(1)]);

    for index in 0..4 {
        let partition = events(index);
        let owner = shard_for(&partition, 2);
        let appender = handle.clone();
        let result = within("an append", Duration::from_secs(30), move || {
            block_on(appender.append(&partition, make_batch(1), LeaderEpoch(0)))
        });
        match (owner, result) {
            (ShardId(1), Err(EngineError::ShardUnavailable(1))) | (ShardId(0), Ok(_)) => {}
            (owner, other) => panic!("partition {index} on shard {owner}: {other:?}"),
        }
    }
    let stopped = within("the shutdown", Duration::from_secs(30), move || engine.shutdown());
    assert!(stopped.is_err(), "a shutdown with a dead shard reports it");
}
