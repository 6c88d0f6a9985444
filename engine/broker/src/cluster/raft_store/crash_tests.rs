//! Seeded crash sequences against a model of what was acknowledged.
//!
//! Each seed runs random store operations (appends with conflicts, hard states,
//! commits, compactions, received snapshots, conf states, clean reopens). Some
//! operations crash part-way through the store's test seam (`crash_after_steps`):
//! the store is dropped where it stopped; an append that stopped between its write
//! and its fdatasync also gets a torn tail (the file cut at a random byte of what the
//! call wrote, and/or a byte of it flipped), and an interrupted replace may leave a
//! garbage `.tmp`. The reopened store must then hold
//!
//! - after an append: every entry acknowledged before it and not replaced by it,
//!   byte for byte, then a prefix of the call's entries (it was never acknowledged);
//! - after any other operation: exactly the state before it or the state after it;
//!
//! and be a state raft-rs accepts (`RawNode::new` on it). Every seed is printed;
//! `CORELOG_RAFT_STORE_SEED=<n>` re-runs that one, `CORELOG_RAFT_STORE_SEEDS=<n>`
//! runs more.

use corelog_engine::hash::SplitMix64;
use protobuf::Message as _;
use raft::Storage;

use super::tests::{hard_state, new_snapshot};
use super::*;

const SEEDS_DEFAULT: u64 = 48;
const OPERATIONS_PER_SEED: usize = 40;

#[derive(Debug, Clone, PartialEq)]
struct Model {
    snapshot_index: u64,
    snapshot_term: u64,
    snapshot_conf_state: ConfState,
    snapshot_data: Vec<u8>,
    entries: Vec<Entry>,
    /// In memory: term and vote are always stored, the commit may be ahead.
    hard_state: HardState,
    stored_commit: u64,
    conf_state: ConfState,
}

impl Model {
    fn empty() -> Model {
        Model {
            snapshot_index: 0,
            snapshot_term: 0,
            snapshot_conf_state: ConfState::default(),
            snapshot_data: Vec::new(),
            entries: Vec::new(),
            hard_state: HardState::default(),
            stored_commit: 0,
            conf_state: ConfState::default(),
        }
    }

    fn last_index(&self) -> u64 {
        self.entries.last().map_or(self.snapshot_index, |e| e.index)
    }

    fn term_of(&self, index: u64) -> u64 {
        if index == self.snapshot_index {
            self.snapshot_term
        } else {
            self.entries[(index - self.snapshot_index - 1) as usize].term
        }
    }

    /// What a reopen gives: the commit is the stored one, raised to the snapshot.
    fn reopened(&self) -> Model {
        let mut model = self.clone();
        model.hard_state.commit = self.stored_commit.max(self.snapshot_index);
        model.stored_commit = model.hard_state.commit;
        model
    }

    fn apply(&mut self, operation: &Operation) {
        match operation {
            Operation::Append(entries) => {
                let kept = (entries[0].index - self.snapshot_index - 1) as usize;
                self.entries.truncate(kept);
                self.entries.extend_from_slice(entries);
            }
            Operation::HardState(hard_state) => {
                self.hard_state = hard_state.clone();
                self.stored_commit = hard_state.commit;
            }
            Operation::Commit(commit) => self.hard_state.commit = self.hard_state.commit.max(*commit),
            Operation::Compact(index, conf_state, data) => {
                self.snapshot_term = self.term_of(*index);
                self.entries.drain(..(index - self.snapshot_index) as usize);
                self.snapshot_index = *index;
                self.snapshot_conf_state = conf_state.clone();
                self.snapshot_data = data.clone();
            }
            Operation::ApplySnapshot(snapshot) => {
                let metadata = snapshot.get_metadata();
                self.snapshot_index = metadata.index;
                self.snapshot_term = metadata.term;
                self.snapshot_conf_state = metadata.get_conf_state().clone();
                self.snapshot_data = snapshot.data.to_vec();
                self.entries.clear();
                raise_to_snapshot(&mut self.hard_state, metadata);
                self.stored_commit = self.hard_state.commit;
                self.conf_state = metadata.get_conf_state().clone();
            }
            Operation::ConfState(conf_state) => {
                self.conf_state = conf_state.clone();
                self.stored_commit = self.hard_state.commit;
            }
            Operation::Reopen => *self = self.reopened(),
        }
    }

    /// The model of what `store` holds.
    fn of(store: &RaftLogStore) -> Model {
        let metadata = store.snapshot.get_metadata();
        Model {
            snapshot_index: metadata.index,
            snapshot_term: metadata.term,
            snapshot_conf_state: metadata.get_conf_state().clone(),
            snapshot_data: store.snapshot.data.to_vec(),
            entries: store.entries.clone(),
            hard_state: store.hard_state(),
            stored_commit: store.hard_state().commit,
            conf_state: store.conf_state(),
        }
    }
}

#[derive(Debug, Clone)]
enum Operation {
    Append(Vec<Entry>),
    HardState(HardState),
    Commit(u64),
    Compact(u64, ConfState, Vec<u8>),
    ApplySnapshot(Snapshot),
    ConfState(ConfState),
    Reopen,
}

fn random_bytes(rng: &mut SplitMix64, bytes_max: u64) -> Vec<u8> {
    (0..rng.below(bytes_max + 1)).map(|_| rng.next_u64() as u8).collect()
}

fn random_conf_state(rng: &mut SplitMix64) -> ConfState {
    let mut conf_state = ConfState::default();
    conf_state.set_voters((1..=1 + rng.below(5)).collect());
    conf_state
}

/// A random operation that is valid for `model` (as raft-rs would make them).
fn generate(rng: &mut SplitMix64, model: &Model) -> Operation {
    let last = model.last_index();
    let last_term = model.term_of(last);
    let commit = model.hard_state.commit;
    match rng.below(20) {
        0..=8 => {
            let start = commit.max(model.snapshot_index) + 1 + rng.below(last + 1 - commit.max(model.snapshot_index));
            let term = last_term.max(model.hard_state.term) + rng.below(2);
            let count = 1 + rng.below(4);
            let entries = (start..start + count)
                .map(|index| {
                    let mut entry = super::tests::new_entry(index, term);
                    entry.data = random_bytes(rng, 200).into();
                    entry
                })
                .collect();
            Operation::Append(entries)
        }
        9..=10 => Operation::HardState(hard_state(
            model.hard_state.term.max(last_term) + rng.below(2),
            rng.below(4),
            commit + rng.below(last - commit + 1),
        )),
        11..=13 => Operation::Commit(commit + rng.below(last - commit + 1)),
        14..=15 if commit > model.snapshot_index => Operation::Compact(
            model.snapshot_index + 1 + rng.below(commit - model.snapshot_index),
            random_conf_state(rng),
            random_bytes(rng, 100),
        ),
        16 => {
            let index = commit.max(model.snapshot_index) + 1 + rng.below(last + 3 - commit.max(model.snapshot_index));
            let term = last_term.max(model.hard_state.term) + rng.below(2);
            let mut snapshot = new_snapshot(index, term, random_conf_state(rng).voters);
            snapshot.data = random_bytes(rng, 300).into();
            Operation::ApplySnapshot(snapshot)
        }
        17 => Operation::ConfState(random_conf_state(rng)),
        _ => Operation::Reopen,
    }
}

fn execute(store: &mut RaftLogStore, operation: &Operation) -> Result<(), EngineError> {
    match operation {
        Operation::Append(entries) => store.append(entries),
        Operation::HardState(hard_state) => store.set_hard_state(hard_state),
        Operation::Commit(commit) => store.set_commit(*commit),
        Operation::Compact(index, conf_state, data) => store.compact(*index, conf_state.clone(), data.clone()),
        Operation::ApplySnapshot(snapshot) => store.apply_snapshot(snapshot.clone()),
        Operation::ConfState(conf_state) => store.set_conf_state(conf_state.clone()),
        Operation::Reopen => unreachable!("reopen is done by the runner"),
    }
}

fn encoded(entries: &[Entry]) -> Vec<Vec<u8>> {
    entries.iter().map(|e| e.write_to_bytes().expect("encode")).collect()
}

/// Raft-rs itself must accept the recovered state.
fn check_raft_accepts(dir: &Path) {
    let store = RaftLogStore::open(dir).expect("reopen for raft-rs");
    let config = raft::Config { id: 1, election_tick: 10, heartbeat_tick: 3, ..Default::default() };
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    if let Err(error) = raft::RawNode::new(&config, store, &logger) {
        panic!("raft-rs refuses the recovered store: {error}");
    }
}

/// Runs one seed; returns how many of its operations crashed.
fn run_seed(seed: u64) -> usize {
    let mut rng = SplitMix64::new(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = RaftLogStore::open(dir.path()).expect("open");
    store.initialize(&[1, 2, 3]).expect("initialize");
    let mut model = Model::empty();
    model.apply(&Operation::ConfState(store.conf_state()));
    let mut crashes = 0;
    for step in 0..OPERATIONS_PER_SEED {
        let operation = generate(&mut rng, &model);
        if let Operation::Reopen = operation {
            drop(store);
            store = RaftLogStore::open(dir.path()).expect("clean reopen");
            model.apply(&operation);
            assert_eq!(Model::of(&store), model, "step {step}: after a clean reopen");
            continue;
        }
        let write_start = match &operation {
            Operation::Append(entries) => store
                .locations
                .get((entries[0].index - model.snapshot_index - 1) as usize)
                .map_or(store.entries_end_bytes, |l| l.position),
            _ => 0,
        };
        let crash = rng.below(3) == 0;
        if crash {
            store.crash_after_steps = Some(rng.below(3) as usize);
        }
        let before = model.clone();
        let mut after = model.clone();
        after.apply(&operation);
        match execute(&mut store, &operation) {
            Ok(()) => {
                store.crash_after_steps = None;
                model = after;
                let observed = Model { stored_commit: model.stored_commit, ..Model::of(&store) };
                assert_eq!(observed, model, "step {step}: after {operation:?}");
            }
            Err(error) => {
                assert!(crash, "step {step}: {operation:?} failed without a crash: {error}");
                crashes += 1;
                drop(store);
                let entries_path = dir.path().join(ENTRIES_FILE);
                if let Operation::Append(new_entries) = &operation {
                    // Stopped between the write and the fdatasync: tear what it wrote.
                    let length = std::fs::metadata(&entries_path).expect("stat").len();
                    let cut = write_start + rng.below(length - write_start + 1);
                    let mut bytes = std::fs::read(&entries_path).expect("read");
                    bytes.truncate(cut as usize);
                    if cut > write_start && rng.below(2) == 0 {
                        let position = write_start + rng.below(cut - write_start);
                        bytes[position as usize] ^= 1 << rng.below(8);
                    }
                    std::fs::write(&entries_path, &bytes).expect("write");
                    store = RaftLogStore::open(dir.path())
                        .unwrap_or_else(|e| panic!("step {step}: reopen after a torn append: {e}"));
                    let recovered = Model::of(&store);
                    let kept = (new_entries[0].index - before.snapshot_index - 1) as usize;
                    assert_eq!(
                        encoded(&recovered.entries[..kept.min(recovered.entries.len())]),
                        encoded(&before.entries[..kept]),
                        "step {step}: acknowledged entries before the torn append"
                    );
                    let torn = &recovered.entries[kept..];
                    assert_eq!(encoded(torn), encoded(&new_entries[..torn.len()]), "step {step}: torn append's prefix");
                    let mut expected = before.reopened();
                    expected.entries = recovered.entries.clone();
                    assert_eq!(recovered, expected, "step {step}: the rest of the state after a torn append");
                    model = expected;
                } else {
                    if rng.below(2) == 0 {
                        // An interrupted replace may leave its temporary file.
                        let name = [ENTRIES_FILE, RAFT_STATE_FILE, SNAPSHOT_FILE][rng.below(3) as usize];
                        std::fs::write(dir.path().join(name).with_extension("tmp"), random_bytes(&mut rng, 64))
                            .expect("write tmp");
                    }
                    store = RaftLogStore::open(dir.path())
                        .unwrap_or_else(|e| panic!("step {step}: reopen after a crash in {operation:?}: {e}"));
                    let recovered = Model::of(&store);
                    let (before, after) = (before.reopened(), after.reopened());
                    assert!(
                        recovered == before || recovered == after,
                        "step {step}: after a crash in {operation:?} the store is neither before nor after it:\n\
                         recovered {recovered:?}\nbefore {before:?}\nafter {after:?}"
                    );
                    model = recovered;
                }
                assert_eq!(store.first_index(), Ok(model.snapshot_index + 1));
                assert_eq!(store.term(model.snapshot_index), Ok(model.snapshot_term));
                drop(store);
                check_raft_accepts(dir.path());
                store = RaftLogStore::open(dir.path()).expect("reopen");
            }
        }
    }
    crashes
}

#[test]
fn crashes_at_any_step_keep_what_was_acknowledged() {
    let seeds: Vec<u64> = match std::env::var("CORELOG_RAFT_STORE_SEED") {
        Ok(text) => vec![text.trim().parse().expect("CORELOG_RAFT_STORE_SEED must be an unsigned integer")],
        Err(_) => {
            let count = std::env::var("CORELOG_RAFT_STORE_SEEDS")
                .map_or(SEEDS_DEFAULT, |text| text.trim().parse().expect("CORELOG_RAFT_STORE_SEEDS must be a count"));
            (0..count).collect()
        }
    };
    let mut crashes = 0;
    for seed in &seeds {
        let seed = *seed;
        eprintln!("raft store crash seed {seed}");
        match std::panic::catch_unwind(|| run_seed(seed)) {
            Ok(count) => crashes += count,
            Err(panic) => {
                eprintln!(
                    "raft store crash seed {seed} failed; replay it with \
                     CORELOG_RAFT_STORE_SEED={seed} cargo test -p corelog-broker --lib cluster::raft_store::crash_tests"
                );
                std::panic::resume_unwind(panic);
            }
        }
    }
    eprintln!("raft store crash test: {} seeds, {crashes} crashes", seeds.len());
    assert!(
        crashes >= seeds.len(),
        "too few crashes ({crashes}) for {} seeds: the test exercises nothing",
        seeds.len()
    );
}
