//! raft-rs's own `MemStorage` contract tests (raft-0.7.0 `src/storage.rs`), re-done
//! against `RaftLogStore`, each checked again after close and reopen; the on-disk
//! format against golden files; recovery from torn tails and damage.
//!
//! One adaptation runs through them: raft-rs's tests put entries 3, 4, 5 into a
//! `MemStorage` with no snapshot, a state a real store cannot have (entries start
//! after the snapshot). Here the store holds a snapshot at index 2, term 2, then the
//! same entries: so `term(2)` is the snapshot's term (raft-rs keeps it "for matching
//! purpose"), index 1 is the compacted one, and `compact(i)` (drop up to and including
//! `i`) stands for `MemStorageCore::compact(i + 1)` (drop before `i + 1`).

use std::panic::{self, AssertUnwindSafe};

use protobuf::Message as _;
use raft::{Error as RaftError, Storage, StorageError};

use super::*;

pub(super) fn new_entry(index: u64, term: u64) -> Entry {
    let mut entry = Entry::default();
    entry.set_index(index);
    entry.set_term(term);
    entry
}

pub(super) fn new_snapshot(index: u64, term: u64, voters: Vec<u64>) -> Snapshot {
    let mut snapshot = Snapshot::default();
    snapshot.mut_metadata().index = index;
    snapshot.mut_metadata().term = term;
    snapshot.mut_metadata().mut_conf_state().voters = voters;
    snapshot
}

fn context() -> GetEntriesContext {
    GetEntriesContext::empty(false)
}

/// A store in `dir` holding a snapshot at (2, 2) and `entries` after it.
fn store_with(dir: &Path, entries: &[Entry]) -> RaftLogStore {
    let mut store = RaftLogStore::open(dir).expect("open");
    store.apply_snapshot(new_snapshot(2, 2, vec![1, 2, 3])).expect("apply snapshot");
    store.append(entries).expect("append");
    store
}

/// Runs `check` on `store`, then on the store reopened from its directory.
fn check_and_reopen(store: RaftLogStore, check: impl Fn(&RaftLogStore)) -> RaftLogStore {
    check(&store);
    let dir = store.dir.clone();
    drop(store);
    let reopened = RaftLogStore::open(&dir).expect("reopen");
    check(&reopened);
    reopened
}

fn three_four_five() -> Vec<Entry> {
    vec![new_entry(3, 3), new_entry(4, 4), new_entry(5, 5)]
}

#[test]
fn test_storage_term() {
    let tests = [
        (1, Err(RaftError::Store(StorageError::Compacted))),
        (2, Ok(2)),
        (3, Ok(3)),
        (4, Ok(4)),
        (5, Ok(5)),
        (6, Err(RaftError::Store(StorageError::Unavailable))),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_with(dir.path(), &three_four_five());
    check_and_reopen(store, |store| {
        for (i, (index, want)) in tests.iter().enumerate() {
            assert_eq!(&store.term(*index), want, "#{i}: term({index})");
        }
    });
}

#[test]
fn test_storage_entries() {
    let ents = vec![new_entry(3, 3), new_entry(4, 4), new_entry(5, 5), new_entry(6, 6)];
    let size = |i: usize| u64::from(ents[i].compute_size());
    let max = u64::MAX;
    let tests = vec![
        (2, 6, max, Err(RaftError::Store(StorageError::Compacted))),
        (3, 4, max, Ok(vec![new_entry(3, 3)])),
        (4, 5, max, Ok(vec![new_entry(4, 4)])),
        (4, 6, max, Ok(vec![new_entry(4, 4), new_entry(5, 5)])),
        (4, 7, max, Ok(vec![new_entry(4, 4), new_entry(5, 5), new_entry(6, 6)])),
        // Even if max_size is zero, the first entry is returned.
        (4, 7, 0, Ok(vec![new_entry(4, 4)])),
        // Limited to 2.
        (4, 7, size(1) + size(2), Ok(vec![new_entry(4, 4), new_entry(5, 5)])),
        (4, 7, size(1) + size(2) + size(3) / 2, Ok(vec![new_entry(4, 4), new_entry(5, 5)])),
        (4, 7, size(1) + size(2) + size(3) - 1, Ok(vec![new_entry(4, 4), new_entry(5, 5)])),
        // All.
        (4, 7, size(1) + size(2) + size(3), Ok(vec![new_entry(4, 4), new_entry(5, 5), new_entry(6, 6)])),
        // Beyond the last index: raft-rs's MemStorage panics; this store answers Unavailable.
        (4, 8, max, Err(RaftError::Store(StorageError::Unavailable))),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_with(dir.path(), &ents);
    check_and_reopen(store, |store| {
        for (i, (low, high, max_size, want)) in tests.iter().enumerate() {
            assert_eq!(&store.entries(*low, *high, *max_size, context()), want, "#{i}: entries({low}, {high})");
        }
    });
}

#[test]
fn test_storage_last_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_with(dir.path(), &three_four_five());
    let mut store = check_and_reopen(store, |store| assert_eq!(store.last_index(), Ok(5)));
    store.append(&[new_entry(6, 5)]).expect("append");
    check_and_reopen(store, |store| assert_eq!(store.last_index(), Ok(6)));
}

#[test]
fn test_storage_first_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_with(dir.path(), &three_four_five());
    let mut store = check_and_reopen(store, |store| assert_eq!(store.first_index(), Ok(3)));
    store.set_commit(5).expect("commit");
    store.compact(3, ConfState::default(), Vec::new()).expect("compact");
    check_and_reopen(store, |store| assert_eq!(store.first_index(), Ok(4)));
}

#[test]
fn test_storage_compact() {
    // (compact index, first index, its term, entries left); see the module doc for
    // the index shift against raft-rs's table.
    let tests = [(1, 3, 3, 3), (2, 3, 3, 3), (3, 4, 4, 2), (4, 5, 5, 1)];
    for (i, (index, want_index, want_term, want_len)) in tests.into_iter().enumerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = store_with(dir.path(), &three_four_five());
        store.set_hard_state(&hard_state(5, 0, 5)).expect("hard state");
        store.compact(index, ConfState::default(), b"data".to_vec()).expect("compact");
        check_and_reopen(store, |store| {
            let first = store.first_index().expect("first");
            assert_eq!(first, want_index, "#{i}: first index");
            let term = store.entries(first, first + 1, 1, context()).expect("entries")[0].term;
            assert_eq!(term, want_term, "#{i}: term of the first entry");
            let last = store.last_index().expect("last");
            assert_eq!(store.entries(first, last + 1, 100, context()).expect("entries").len(), want_len, "#{i}");
        });
    }
}

#[test]
fn test_storage_create_snapshot() {
    // raft-rs builds its snapshot from the commit index on demand; this store
    // returns the one `compact` stored, and never one older than requested.
    let nodes = vec![1, 2, 3];
    let mut conf_state = ConfState::default();
    conf_state.set_voters(nodes.clone());
    let unavailable = Err(RaftError::Store(StorageError::SnapshotTemporarilyUnavailable));
    let tests =
        [(4, 0, Ok(new_snapshot(4, 4, nodes.clone()))), (5, 5, Ok(new_snapshot(5, 5, nodes))), (4, 5, unavailable)];
    for (i, (index, request_index, want)) in tests.into_iter().enumerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = store_with(dir.path(), &three_four_five());
        store.set_hard_state(&hard_state(5, 0, 5)).expect("hard state");
        store.compact(index, conf_state.clone(), Vec::new()).expect("compact");
        check_and_reopen(store, |store| {
            assert_eq!(store.snapshot(request_index, 0), want, "#{i}");
        });
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = RaftLogStore::open(dir.path()).expect("open");
    store.initialize(&[1]).expect("initialize");
    assert_eq!(store.snapshot(0, 0), Err(RaftError::Store(StorageError::SnapshotTemporarilyUnavailable)));
}

#[test]
fn test_storage_append() {
    let tests = vec![
        (three_four_five(), Some(three_four_five())),
        (
            vec![new_entry(3, 3), new_entry(4, 6), new_entry(5, 6)],
            Some(vec![new_entry(3, 3), new_entry(4, 6), new_entry(5, 6)]),
        ),
        (
            vec![new_entry(3, 3), new_entry(4, 4), new_entry(5, 5), new_entry(6, 5)],
            Some(vec![new_entry(3, 3), new_entry(4, 4), new_entry(5, 5), new_entry(6, 5)]),
        ),
        // Overwriting compacted raft logs is not allowed.
        (vec![new_entry(2, 3), new_entry(3, 3), new_entry(4, 5)], None),
        // Truncate the existing entries and append.
        (vec![new_entry(4, 5)], Some(vec![new_entry(3, 3), new_entry(4, 5)])),
        // Direct append.
        (vec![new_entry(6, 6)], Some(vec![new_entry(3, 3), new_entry(4, 4), new_entry(5, 5), new_entry(6, 6)])),
    ];
    for (i, (entries, want)) in tests.into_iter().enumerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = store_with(dir.path(), &three_four_five());
        let result = panic::catch_unwind(AssertUnwindSafe(|| store.append(&entries)));
        match want {
            Some(want) => {
                result.expect("no panic").expect("append");
                check_and_reopen(store, |store| assert_eq!(store.entries, want, "#{i}"));
            }
            None => assert!(result.is_err(), "#{i}: appending compacted entries must panic"),
        }
    }
}

#[test]
fn test_storage_apply_snapshot() {
    let nodes = vec![1, 2, 3];
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = RaftLogStore::open(dir.path()).expect("open");
    store.append(&[new_entry(1, 1), new_entry(2, 1)]).expect("append");

    // Applied successfully: every entry goes, commit and conf state come from it.
    let mut snapshot = new_snapshot(4, 4, nodes.clone());
    snapshot.data = b"state".to_vec().into();
    store.apply_snapshot(snapshot).expect("apply snapshot");
    let mut store = check_and_reopen(store, |store| {
        assert_eq!((store.first_index(), store.last_index()), (Ok(5), Ok(4)));
        assert_eq!(store.hard_state(), hard_state(4, 0, 4));
        assert_eq!(store.initial_state().expect("state").conf_state.voters, nodes);
        let (metadata, data) = store.snapshot_data().expect("snapshot");
        assert_eq!((metadata.index, metadata.term, data.as_slice()), (4, 4, &b"state"[..]));
    });

    // Out of date (raft-rs: StorageError::SnapshotOutOfDate): a caller's bug here.
    let result = panic::catch_unwind(AssertUnwindSafe(|| store.apply_snapshot(new_snapshot(3, 3, nodes))));
    assert!(result.is_err(), "an out-of-date snapshot must panic");
}

pub(super) fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    let mut hard_state = HardState::default();
    hard_state.set_term(term);
    hard_state.set_vote(vote);
    hard_state.set_commit(commit);
    hard_state
}

#[test]
fn a_fresh_store_is_uninitialized_until_initialize_and_stays_initialized() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = RaftLogStore::open(dir.path()).expect("open");
    assert!(!store.is_initialized());
    assert_eq!(store.initial_state().expect("state").conf_state, ConfState::default());
    assert_eq!((store.first_index(), store.last_index(), store.term(0)), (Ok(1), Ok(0), Ok(0)));
    store.initialize(&[1, 2, 3]).expect("initialize");
    check_and_reopen(store, |store| {
        assert!(store.is_initialized());
        assert_eq!(store.initial_state().expect("state").conf_state.voters, vec![1, 2, 3]);
        assert_eq!((store.first_index(), store.last_index(), store.term(0)), (Ok(1), Ok(0), Ok(0)));
    });
}

#[test]
fn set_commit_is_kept_in_memory_until_the_next_raft_state_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = RaftLogStore::open(dir.path()).expect("open");
    store.initialize(&[1]).expect("initialize");
    store.append(&[new_entry(1, 1), new_entry(2, 1), new_entry(3, 1)]).expect("append");
    store.set_hard_state(&hard_state(1, 1, 1)).expect("hard state");
    store.set_commit(3).expect("commit");
    assert_eq!(store.hard_state().commit, 3);
    let mut store = check_and_reopen(store, |_| {});
    assert_eq!(store.hard_state().commit, 1, "set_commit alone is not stored");
    store.set_commit(2).expect("commit");
    let mut conf_state = ConfState::default();
    conf_state.set_voters(vec![1, 2]);
    store.set_conf_state(conf_state).expect("conf state");
    check_and_reopen(store, |store| {
        assert_eq!(store.hard_state(), hard_state(1, 1, 2), "the conf state's write carries the commit");
        assert_eq!(store.conf_state().voters, vec![1, 2]);
    });
}

fn entry_with_data(index: u64, term: u64, data: &[u8]) -> Entry {
    let mut entry = new_entry(index, term);
    entry.data = data.to_vec().into();
    entry
}

/// Five appends of two entries each; returns the store's directory and the byte
/// position where each append began.
fn five_appends() -> (tempfile::TempDir, Vec<u64>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = RaftLogStore::open(dir.path()).expect("open");
    let mut starts = Vec::new();
    for call in 0..5u64 {
        starts.push(store.entries_end_bytes);
        let index = call * 2 + 1;
        store
            .append(&[entry_with_data(index, 1, b"first of the call"), entry_with_data(index + 1, 1, b"second")])
            .expect("append");
    }
    (dir, starts)
}

fn indexes(store: &RaftLogStore) -> Vec<u64> {
    store.entries.iter().map(|e| e.index).collect()
}

#[test]
fn a_torn_last_append_is_cut_at_its_first_bad_record() {
    let (dir, starts) = five_appends();
    let path = dir.path().join(ENTRIES_FILE);
    let full = std::fs::read(&path).expect("read");
    let last_start = starts[4] as usize;
    for cut in last_start..full.len() {
        std::fs::write(&path, &full[..cut]).expect("write");
        let store = RaftLogStore::open(dir.path()).expect("open");
        let second_record = last_start
            + format::RECORD_HEADER_BYTES
            + entry_with_data(9, 1, b"first of the call").compute_size() as usize;
        let want: Vec<u64> = if cut >= second_record { (1..=9).collect() } else { (1..=8).collect() };
        assert_eq!(indexes(&store), want, "cut at {cut}");
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), store.entries_end_bytes, "the tail is cut off");
    }
    // A flipped byte anywhere in the last append is a torn write too.
    for position in last_start..full.len() {
        let mut damaged = full.clone();
        damaged[position] ^= 0x40;
        std::fs::write(&path, &damaged).expect("write");
        let store = RaftLogStore::open(dir.path()).expect("open");
        assert!(indexes(&store).len() >= 8, "flip at {position}: {:?}", indexes(&store));
    }
}

#[test]
fn damage_followed_by_two_completed_appends_is_an_error_and_nothing_is_cut() {
    let (dir, starts) = five_appends();
    let path = dir.path().join(ENTRIES_FILE);
    let full = std::fs::read(&path).expect("read");
    for position in starts[0] as usize..starts[3] as usize {
        let mut damaged = full.clone();
        damaged[position] ^= 0x01;
        std::fs::write(&path, &damaged).expect("write");
        match RaftLogStore::open(dir.path()) {
            Err(EngineError::Corrupt { path: error_path, .. }) => assert_eq!(error_path, path),
            Err(other) => panic!("flip at {position}: wrong error {other}"),
            Ok(store) => panic!("flip at {position} opened with entries {:?}", indexes(&store)),
        }
        assert_eq!(std::fs::read(&path).expect("read"), damaged, "flip at {position}: the file was changed");
    }
}

#[test]
fn records_of_a_replaced_history_never_continue_the_new_one() {
    // Entries 1..=4, then a conflict replacing 3 and 4 with records of the same sizes:
    // a crash that kept the old record 3 but the new record 4 (pages written out of
    // order, the truncation lost) must not yield a log mixing both.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(ENTRIES_FILE);
    let mut store = RaftLogStore::open(dir.path()).expect("open");
    let old: Vec<Entry> = (1..=4).map(|i| entry_with_data(i, 1, b"old")).collect();
    store.append(&old).expect("append");
    let old_bytes = std::fs::read(&path).expect("read");
    let position_of_4 = store.locations[3].position as usize;
    store.append(&[entry_with_data(3, 2, b"new"), entry_with_data(4, 2, b"new")]).expect("append");
    assert_eq!(store.locations[3].position as usize, position_of_4, "same sizes, same positions");
    let new_bytes = std::fs::read(&path).expect("read");
    drop(store);
    let mut mixed = old_bytes[..position_of_4].to_vec();
    mixed.extend_from_slice(&new_bytes[position_of_4..]);
    std::fs::write(&path, &mixed).expect("write");
    let store = RaftLogStore::open(dir.path()).expect("open");
    assert_eq!(store.entries, old[..3].to_vec(), "the new record 4 does not follow the old record 3");
}

#[test]
fn a_damaged_header_or_state_file_is_an_error_naming_the_file() {
    for name in [ENTRIES_FILE, RAFT_STATE_FILE, SNAPSHOT_FILE] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = store_with(dir.path(), &three_four_five());
        store.set_hard_state(&hard_state(5, 1, 4)).expect("hard state");
        drop(store);
        let path = dir.path().join(name);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[13] ^= 0x02;
        std::fs::write(&path, &bytes).expect("write");
        match RaftLogStore::open(dir.path()) {
            Err(EngineError::CorruptFile { path: error_path, reason }) => {
                assert_eq!(error_path, path, "{reason}");
            }
            Err(other) => panic!("{name}: wrong error {other}"),
            Ok(_) => panic!("{name}: opened despite the damage"),
        }
        assert_eq!(std::fs::read(&path).expect("read"), bytes, "{name} was changed");
    }
}

#[test]
fn a_commit_beyond_the_surviving_log_is_reported() {
    let (dir, starts) = five_appends();
    let mut store = RaftLogStore::open(dir.path()).expect("open");
    store.set_hard_state(&hard_state(1, 1, 10)).expect("hard state");
    drop(store);
    // Losing the synced last append (a disk that lied about its fsync) loses
    // committed entries: reported, not cut.
    let path = dir.path().join(ENTRIES_FILE);
    let file = OpenOptions::new().write(true).open(&path).expect("open");
    file.set_len(starts[4]).expect("truncate");
    match RaftLogStore::open(dir.path()) {
        Err(EngineError::Corrupt { path: error_path, reason, .. }) => {
            assert_eq!(error_path, path);
            assert!(reason.contains("index 10 is committed"), "{reason}");
        }
        Err(other) => panic!("wrong error {other}"),
        Ok(_) => panic!("opened with a commit beyond its log"),
    }
}

#[test]
fn a_failed_write_poisons_the_store_until_reopened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = RaftLogStore::open(dir.path()).expect("open");
    store.append(&[new_entry(1, 1)]).expect("append");
    store.crash_after_steps = Some(0);
    store.append(&[new_entry(2, 1)]).expect_err("the simulated crash fails the append");
    store.crash_after_steps = None;
    let error = store.set_hard_state(&hard_state(1, 0, 1)).expect_err("poisoned");
    assert!(error.to_string().contains("refuses writes until it is reopened"), "{error}");
    assert_eq!(store.last_index(), Ok(1), "reads work, and memory never got the failed entry");
    drop(store);
    // The entry was written but not synced: kept by this (un)crash, which is allowed.
    let store = RaftLogStore::open(dir.path()).expect("reopen");
    assert_eq!(store.last_index(), Ok(2));
}

// --- Golden files -------------------------------------------------------------------

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/cluster/raft_store/golden")
}

/// A small fixed store: initialized, three entries, a hard state, compacted at 1.
fn build_golden_store(dir: &Path) {
    let mut store = RaftLogStore::open(dir).expect("open");
    store.initialize(&[1, 2, 3]).expect("initialize");
    store.append(&[entry_with_data(1, 1, b"")]).expect("append");
    store
        .append(&[entry_with_data(2, 1, b"register broker 1"), entry_with_data(3, 2, b"create topic t")])
        .expect("append");
    store.set_hard_state(&hard_state(2, 1, 2)).expect("hard state");
    let mut conf_state = ConfState::default();
    conf_state.set_voters(vec![1, 2, 3]);
    store.compact(1, conf_state, b"image as of 1".to_vec()).expect("compact");
    store.append(&[entry_with_data(4, 2, b"fence broker 3")]).expect("append");
}

#[test]
fn the_files_match_their_golden_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    build_golden_store(dir.path());
    for name in [ENTRIES_FILE, RAFT_STATE_FILE, SNAPSHOT_FILE] {
        let actual = std::fs::read(dir.path().join(name)).expect("read");
        let golden = golden_dir().join(name);
        if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
            std::fs::create_dir_all(golden_dir()).expect("create golden directory");
            std::fs::write(&golden, &actual).expect("write golden");
            eprintln!("updated golden file {}", golden.display());
            continue;
        }
        let expected = std::fs::read(&golden).unwrap_or_else(|e| {
            panic!("cannot read {} ({e}); run with UPDATE_GOLDEN=1 to create it, then review it", golden.display())
        });
        if let Some(position) = expected.iter().zip(&actual).position(|(e, a)| e != a) {
            panic!(
                "{name} differs from {} first at byte {position} (golden {:#04x}, actual {:#04x}); if the format \
                 change is intended, bump FORMAT_VERSION, run with UPDATE_GOLDEN=1 and review",
                golden.display(),
                expected[position],
                actual[position]
            );
        }
        assert_eq!(expected.len(), actual.len(), "{name}: same bytes, different lengths");
    }
    // And the golden store opens to what was built.
    let golden_copy = tempfile::tempdir().expect("tempdir");
    for name in [ENTRIES_FILE, RAFT_STATE_FILE, SNAPSHOT_FILE] {
        std::fs::copy(golden_dir().join(name), golden_copy.path().join(name)).expect("copy");
    }
    let store = RaftLogStore::open(golden_copy.path()).expect("open the golden store");
    assert_eq!(indexes(&store), vec![2, 3, 4]);
    assert_eq!(store.hard_state(), hard_state(2, 1, 2));
    assert_eq!(store.snapshot_data().expect("snapshot").1, b"image as of 1".to_vec());
}

#[test]
fn the_golden_entry_log_reads_as_the_module_doc_says() {
    // Decoded by hand from the documented offsets, not through `format`.
    let bytes = std::fs::read(golden_dir().join(ENTRIES_FILE)).expect("read golden");
    let be32 = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    assert_eq!(&bytes[0..8], b"CLRAFTLG");
    assert_eq!(be32(8), 1, "format version");
    assert_eq!(u64::from_be_bytes(bytes[12..20].try_into().expect("8 bytes")), 0, "generation");
    assert_eq!(be32(20), corelog_engine::hash::crc32c(&bytes[0..20]), "header CRC");
    let mut position = 24;
    let mut previous_crc = be32(20);
    let mut seen = Vec::new();
    while position < bytes.len() {
        let length_word = be32(position);
        let length = (length_word & 0x7fff_ffff) as usize;
        assert_eq!(be32(position + 4), previous_crc, "record at {position} chains from the one before");
        let crc = corelog_engine::hash::crc32c(
            &[&bytes[position..position + 8], &bytes[position + 12..position + 12 + length]].concat(),
        );
        assert_eq!(be32(position + 8), crc, "record at {position}: CRC of length, previous CRC and payload");
        let entry = Entry::parse_from_bytes(&bytes[position + 12..position + 12 + length]).expect("an Entry");
        seen.push((entry.index, entry.term, length_word >> 31 == 1));
        previous_crc = crc;
        position += 12 + length;
    }
    // Compaction rewrote 2 and 3 as one write (the last a sync point); 4 was its own append.
    assert_eq!(seen, vec![(2, 1, false), (3, 2, true), (4, 2, true)]);
}
