//! The durable storage of the metadata quorum's Raft log: raft-rs's [`raft::Storage`]
//! over three files in one directory (`<data>/corelog+meta/raft/`).
//!
//! Owned by the thread that runs the node's `RawNode` (plain std thread, blocking IO):
//! it persists what a `Ready` asks through [`RaftLogStore`]'s methods and raft-rs reads
//! the log back through the `Storage` trait. Everything raft-rs reads is in memory
//! (the entries after the snapshot, the hard and conf state, the last snapshot): the
//! metadata log is small (broker registrations, topics, leaders; compacted behind the
//! state machine's snapshots), so each file is read whole at open, and compaction
//! rewrites `entries.log` whole.
//!
//! ## Files
//!
//! Byte layouts are in [`format`].
//!
//! - `entries.log`: a header (magic, version, generation) and one record per entry,
//!   `[length][previous CRC][CRC32C][protobuf Entry]`, in index order, contiguous from
//!   the snapshot's index + 1. [`RaftLogStore::append`] writes its records in place
//!   (after cutting the file at the first replaced entry, a Raft log conflict) and
//!   fdatasyncs before it returns; an index → byte position table says where to cut.
//! - `raftstate`: raft-rs's `RaftState`, the hard state (term, vote, commit) and the
//!   conf state, with the generation it was written in.
//! - `snapshot`: the last snapshot (metadata: index, term, conf state; and the state
//!   machine's data), with its generation. Absent until the first one.
//!
//! `raftstate` and `snapshot` are only ever replaced whole (write a temporary file,
//! fsync it, rename it over, fsync the directory:
//! `corelog_engine::storage::dma::replace_file_durably`), and so is `entries.log` when
//! a compaction or a received snapshot rewrites it. A crash leaves each of them old or
//! new, never half; only `entries.log`'s tail can be torn, by an append.
//!
//! **Generations.** A snapshot received from the leader replaces the whole log,
//! entries after its index included (raft-rs only restores one its log does not
//! already match, so they belong to a diverged history). The new `snapshot` file is
//! written first, with the next generation: that write is the operation's commit
//! point. A log or raft state of an older generation is then known superseded, so
//! open rolls the operation forward after a crash (empties the log, takes the conf
//! state from the snapshot) instead of mixing the diverged entries with the snapshot.
//!
//! ## Crash story
//!
//! - `append`: cut the file at the replaced entry (if any), write, fdatasync, then
//!   acknowledge (return). A crash before the fdatasync returned leaves some prefix of
//!   the call's bytes, in any order of pages. Open walks the records and stops at the
//!   first that is incomplete, fails its CRC or does not follow the previous record
//!   (its previous CRC), and cuts the file there. That is a torn tail only if no
//!   completed append follows: the last record of each call carries a sync-point
//!   flag, and if two or more valid flagged records are found past the bad bytes the
//!   damage is in synced data, so open fails with [`EngineError::Corrupt`] naming the
//!   file and byte instead of cutting. A record whose CRC holds but which does not
//!   hold the next entry (undecodable, index not contiguous, term going down) was
//!   written that way, so it is an error too.
//! - `set_hard_state`, `set_conf_state`, `initialize`: one atomic replace of
//!   `raftstate`.
//! - `set_commit`: memory only (see its doc); the next `raftstate` write carries it.
//! - `compact(index)`: replace `snapshot` (same generation), then rewrite `entries.log`
//!   without the entries up to `index`. A crash between leaves entries the snapshot
//!   covers; open drops them (and rewrites the file).
//! - `apply_snapshot`: replace `snapshot` (next generation; the commit point), rewrite
//!   `entries.log` empty (next generation), replace `raftstate` (next generation, conf
//!   state from the snapshot, commit raised to its index). Open finishes whatever the
//!   crash left undone.
//! - Leftover `*.tmp` files of an interrupted replace are deleted at open.
//!
//! After any crash, open gives raft-rs a consistent state or an error naming the
//! file: entries contiguous from the snapshot's index + 1 with terms never going
//! down, the commit at least the snapshot's index and at most the last index. The commit can exceed the last index only if
//! the caller stored a hard state before the entries it commits (the `Ready` order
//! forbids it; [`RaftLogStore::set_hard_state`] asserts it), or if synced entries
//! were lost: both are reported, never papered over.
//!
//! Any failed write or sync poisons the store: every later write fails until it is
//! reopened, which recovers from what is durable. Reads keep working.
//!
//! ## Limits
//!
//! - Each file is read whole into memory at open; compaction and a received snapshot
//!   rewrite `entries.log` whole. Right for a metadata log kept short by snapshots;
//!   not for a data log.
//! - A damaged record followed by fewer than two completed appends cannot be told
//!   from a torn write: it is cut (and logged). If those entries were committed, the
//!   commit check at open reports it; otherwise the node lost entries it may have
//!   acknowledged, which Raft survives only while a majority has them.
//! - An entry is at most 2 GiB - 1 encoded.

mod format;

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod tests;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use corelog_engine::error::EngineError;
use corelog_engine::storage::dma::replace_file_durably;
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};

use format::{RecordRead, ENTRIES_HEADER_BYTES};

/// The entry log's file name in the store's directory.
pub const ENTRIES_FILE: &str = "entries.log";
/// The hard state and conf state's file name.
pub const RAFT_STATE_FILE: &str = "raftstate";
/// The last snapshot's file name.
pub const SNAPSHOT_FILE: &str = "snapshot";

/// Where an entry's record starts in `entries.log`, and the CRC it chains from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RecordLocation {
    position: u64,
    previous_crc: u32,
}

/// The durable Raft log of one node of the metadata quorum; see the module doc.
pub struct RaftLogStore {
    dir: PathBuf,
    entries_path: PathBuf,
    entries_file: File,
    /// Bumped by each received snapshot; every file says which one it belongs to.
    generation: u64,
    /// With the latest commit, which may be newer than the stored one (`set_commit`).
    hard_state: HardState,
    conf_state: ConfState,
    /// The last stored snapshot; index 0 when there is none.
    snapshot: Snapshot,
    /// The entries after the snapshot: `entries[i].index == snapshot index + 1 + i`.
    entries: Vec<Entry>,
    /// One per entry, same order.
    locations: Vec<RecordLocation>,
    /// `entries.log`'s length: the end of its last record.
    entries_end_bytes: u64,
    /// The CRC of the last record (or of the header): the next record chains from it.
    last_crc: u32,
    /// Why writes are refused, after a failed write or sync.
    poisoned: Option<String>,
    /// Test seam: the number of durable steps left before a simulated crash.
    #[cfg(test)]
    crash_after_steps: Option<usize>,
}

impl RaftLogStore {
    /// Opens (creating if missing) the store in `dir`, recovering after a crash: a
    /// torn tail of `entries.log` is cut, an operation interrupted after its commit
    /// point is finished, and anything else invalid is an error naming the file
    /// ([`EngineError::CorruptFile`], or [`EngineError::Corrupt`] with the byte).
    pub fn open(dir: &Path) -> Result<RaftLogStore, EngineError> {
        std::fs::create_dir_all(dir).map_err(|e| EngineError::io("create directory", dir, e))?;
        for name in [ENTRIES_FILE, RAFT_STATE_FILE, SNAPSHOT_FILE] {
            // `replace_file_durably` writes `<name>.tmp` and renames it: one left
            // over is an interrupted replace, whose target is still the old file.
            let leftover = dir.join(name).with_extension("tmp");
            match std::fs::remove_file(&leftover) {
                Ok(()) => {
                    tracing::info!(target: "corelog::raft", "removed {}, left by an interrupted write", leftover.display())
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(EngineError::io("remove", leftover, e)),
            }
        }

        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let (generation, snapshot) = match read_if_exists(&snapshot_path)? {
            Some(bytes) => format::decode_snapshot(&bytes).map_err(|reason| corrupt_file(&snapshot_path, reason))?,
            None => (0, Snapshot::default()),
        };
        let snapshot_index = snapshot.get_metadata().index;
        let snapshot_term = snapshot.get_metadata().term;
        let raft_state_path = dir.join(RAFT_STATE_FILE);
        let stored_raft_state = match read_if_exists(&raft_state_path)? {
            Some(bytes) => {
                Some(format::decode_raft_state(&bytes).map_err(|reason| corrupt_file(&raft_state_path, reason))?)
            }
            None => None,
        };
        let entries_path = dir.join(ENTRIES_FILE);
        let entries_bytes = read_if_exists(&entries_path)?;

        let mut rewrite_entries = false;
        let recovered = match &entries_bytes {
            None if snapshot_index > 0 || stored_raft_state.is_some() => {
                return Err(corrupt_file(
                    &entries_path,
                    format!("it is missing, but {RAFT_STATE_FILE} or {SNAPSHOT_FILE} exists beside it"),
                ));
            }
            None => {
                rewrite_entries = true;
                RecoveredLog::default()
            }
            Some(bytes) => {
                let (log_generation, _) =
                    format::decode_entries_header(bytes).map_err(|reason| corrupt_file(&entries_path, reason))?;
                if log_generation > generation {
                    return Err(corrupt_file(
                        &entries_path,
                        format!("its generation {log_generation} is newer than the snapshot's ({generation})"),
                    ));
                }
                if log_generation < generation {
                    // A received snapshot's commit point passed; the log it replaces
                    // was not emptied yet.
                    tracing::info!(target: "corelog::raft", "{}: superseded by the snapshot at index {snapshot_index}; emptying it", entries_path.display());
                    rewrite_entries = true;
                    RecoveredLog::default()
                } else {
                    recover_entries(&entries_path, bytes)?
                }
            }
        };
        let RecoveredLog { mut entries, mut locations, end_bytes, last_crc, cut } = recovered;

        // Entries the snapshot covers: left by a crash inside `compact`.
        let covered = entries.iter().take_while(|e| e.index <= snapshot_index).count();
        if covered > 0 {
            let last_covered = &entries[covered - 1];
            if last_covered.index == snapshot_index && last_covered.term != snapshot_term {
                return Err(corrupt_file(
                    &entries_path,
                    format!(
                        "entry {snapshot_index} has term {}, but the snapshot at that index has term {snapshot_term}",
                        last_covered.term
                    ),
                ));
            }
            entries.drain(..covered);
            locations.drain(..covered);
            rewrite_entries = true;
        }
        if let Some(first) = entries.first() {
            if first.index != snapshot_index + 1 || first.term < snapshot_term {
                return Err(corrupt_file(
                    &entries_path,
                    format!(
                        "its first entry is {} (term {}), but the snapshot ends at index {snapshot_index} (term \
                         {snapshot_term})",
                        first.index, first.term
                    ),
                ));
            }
        }

        let (mut hard_state, conf_state, rewrite_raft_state) = match stored_raft_state {
            Some((state_generation, _, _)) if state_generation > generation => {
                return Err(corrupt_file(
                    &raft_state_path,
                    format!("its generation {state_generation} is newer than the snapshot's ({generation})"),
                ));
            }
            Some((state_generation, hard_state, conf_state)) if state_generation == generation => {
                (hard_state, conf_state, false)
            }
            // Older than a received snapshot (its last step did not happen), or
            // never written beside a snapshot: the snapshot's conf state holds.
            Some((_, hard_state, _)) => (hard_state, snapshot.get_metadata().get_conf_state().clone(), true),
            None if snapshot_index > 0 => {
                (HardState::default(), snapshot.get_metadata().get_conf_state().clone(), true)
            }
            None => (HardState::default(), ConfState::default(), false),
        };
        if rewrite_raft_state {
            // Finishing a received snapshot's last step, as `apply_snapshot` would have.
            raise_to_snapshot(&mut hard_state, snapshot.get_metadata());
        } else {
            // A commit after the last `raftstate` write was not stored (`set_commit`);
            // the snapshot's index was committed.
            hard_state.commit = hard_state.commit.max(snapshot_index);
        }
        let last_index = entries.last().map_or(snapshot_index, |e| e.index);
        if hard_state.commit > last_index {
            return Err(EngineError::Corrupt {
                path: entries_path,
                position: end_bytes,
                offset: None,
                reason: format!(
                    "the log ends at index {last_index}, but {RAFT_STATE_FILE} says index {} is committed: entries \
                     that were synced are missing",
                    hard_state.commit
                ),
            });
        }

        let (locations, end_bytes, last_crc) = if rewrite_entries {
            let (bytes, locations, last_crc) = encode_entries_log(generation, &entries);
            replace_file_durably(&entries_path, &bytes)?;
            (locations, bytes.len() as u64, last_crc)
        } else {
            (locations, end_bytes, last_crc)
        };
        let entries_file = open_for_writes(&entries_path)?;
        let mut store = RaftLogStore {
            dir: dir.to_path_buf(),
            entries_path,
            entries_file,
            generation,
            hard_state,
            conf_state,
            snapshot,
            entries,
            locations,
            entries_end_bytes: end_bytes,
            last_crc,
            poisoned: None,
            #[cfg(test)]
            crash_after_steps: None,
        };
        if let Some((position, reason)) = cut.filter(|_| !rewrite_entries) {
            tracing::warn!(
                target: "corelog::raft",
                "{}: cutting a torn tail of {} bytes at byte {position} ({reason}); the log ends at index {last_index}",
                store.entries_path.display(),
                store.file_length()? - position
            );
            store.entries_file.set_len(position).map_err(|e| EngineError::io("truncate", &store.entries_path, e))?;
            store.entries_file.sync_all().map_err(|e| EngineError::io("fsync", &store.entries_path, e))?;
        }
        if rewrite_raft_state {
            store.write_raft_state(store.generation, &store.hard_state.clone(), &store.conf_state.clone())?;
        }
        store.check_invariants();
        Ok(store)
    }

    /// Whether the store has ever been initialized: a conf state was set, or a
    /// snapshot or entries exist.
    pub fn is_initialized(&self) -> bool {
        self.conf_state != ConfState::default() || self.snapshot_index() > 0 || !self.entries.is_empty()
    }

    /// First start of a node: the initial voters (raft ids), durably, as raft-rs
    /// expects for a fresh group (`MemStorage::initialize_with_conf_state`: a conf
    /// state with those voters at index 0, term 0). Every voter must be initialized
    /// with the same list.
    ///
    /// # Panics
    ///
    /// If the store is already initialized, or `voters` is empty.
    pub fn initialize(&mut self, voters: &[u64]) -> Result<(), EngineError> {
        assert!(!self.is_initialized(), "initialize on an initialized raft store in {}", self.dir.display());
        assert!(!voters.is_empty(), "a Raft group needs at least one voter");
        let mut conf_state = ConfState::default();
        conf_state.set_voters(voters.to_vec());
        self.set_conf_state(conf_state)
    }

    /// Appends `entries` durably (fdatasync before returning). An entry whose index is
    /// already present replaces it and every later one (a Raft log conflict), as
    /// `MemStorageCore::append` does.
    ///
    /// # Panics
    ///
    /// If `entries` are not contiguous, start at or before the snapshot's index, leave
    /// a gap after the last index, or replace a committed entry.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), EngineError> {
        let Some(first) = entries.first() else { return Ok(()) };
        for pair in entries.windows(2) {
            assert_eq!(pair[1].index, pair[0].index + 1, "entries to append are not contiguous");
        }
        assert!(
            first.index >= self.first_log_index(),
            "append at index {} overwrites compacted entries (the snapshot ends at {})",
            first.index,
            self.snapshot_index()
        );
        assert!(
            first.index <= self.last_log_index() + 1,
            "append at index {} leaves a gap after the last index {}",
            first.index,
            self.last_log_index()
        );
        assert!(
            first.index > self.hard_state.commit,
            "append at index {} replaces committed entries (commit {})",
            first.index,
            self.hard_state.commit
        );
        self.check_writable()?;

        let kept = (first.index - self.first_log_index()) as usize;
        let (write_position, mut previous_crc) = match self.locations.get(kept) {
            Some(location) => (location.position, location.previous_crc),
            None => (self.entries_end_bytes, self.last_crc),
        };
        let mut records = Vec::new();
        let mut new_locations = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            new_locations.push(RecordLocation { position: write_position + records.len() as u64, previous_crc });
            previous_crc =
                format::encode_record(&mut records, previous_crc, &format::encode_entry(entry), i == entries.len() - 1);
        }

        self.poison_on_error(|store| {
            if write_position < store.entries_end_bytes {
                store
                    .entries_file
                    .set_len(write_position)
                    .map_err(|e| EngineError::io("truncate", &store.entries_path, e))?;
            }
            store
                .entries_file
                .write_all_at(&records, write_position)
                .map_err(|e| EngineError::io("write", &store.entries_path, e))?;
            store.crash_point("entries.log written, not synced")?;
            store.entries_file.sync_data().map_err(|e| EngineError::io("fdatasync", &store.entries_path, e))
        })?;
        self.entries.truncate(kept);
        self.locations.truncate(kept);
        self.entries.extend_from_slice(entries);
        self.locations.extend(new_locations);
        self.entries_end_bytes = write_position + records.len() as u64;
        self.last_crc = previous_crc;
        self.check_invariants();
        Ok(())
    }

    /// Stores the hard state (term, vote, commit) durably.
    ///
    /// # Panics
    ///
    /// If its commit is beyond the last index or before the snapshot's: a `Ready`'s
    /// entries (and snapshot) must be stored before its hard state.
    pub fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), EngineError> {
        assert!(
            hard_state.commit <= self.last_log_index() && hard_state.commit >= self.snapshot_index(),
            "hard state commit {} outside [snapshot index {}, last index {}]: store a Ready's snapshot and entries \
             before its hard state",
            hard_state.commit,
            self.snapshot_index(),
            self.last_log_index()
        );
        self.check_writable()?;
        self.write_raft_state(self.generation, hard_state, &self.conf_state.clone())?;
        self.hard_state = hard_state.clone();
        Ok(())
    }

    /// Only the commit index changed (`LightReady::commit_index`): kept in memory and
    /// written with the next `raftstate` write (a hard state, a conf state, a received
    /// snapshot), not synced on its own. raft-rs does not need it stored ("It is not
    /// required to save it to stable storage"): a node that restarts with an older
    /// commit learns the newer one from the leader, and open raises it to at least the
    /// snapshot's index. The caller must not take `hard_state().commit` as durable.
    ///
    /// # Panics
    ///
    /// If `commit` is beyond the last index.
    pub fn set_commit(&mut self, commit: u64) -> Result<(), EngineError> {
        assert!(commit <= self.last_log_index(), "commit {commit} beyond the last index {}", self.last_log_index());
        self.check_writable()?;
        self.hard_state.commit = self.hard_state.commit.max(commit);
        Ok(())
    }

    /// A snapshot received from the leader (`Ready::snapshot`), stored durably: every
    /// entry is dropped (those after its index belong to a diverged history: raft-rs
    /// only restores a snapshot its log does not match), the commit is raised to at
    /// least its index, the term to at least its term (clearing the vote if it rises),
    /// and the conf state is taken from it.
    ///
    /// # Panics
    ///
    /// If the snapshot is not newer than the stored one (raft-rs never restores one
    /// at or below its commit, which is at least the stored snapshot's index).
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), EngineError> {
        let metadata = snapshot.get_metadata();
        assert!(
            metadata.index > self.snapshot_index(),
            "snapshot at index {} is out of date: the stored one is at {}",
            metadata.index,
            self.snapshot_index()
        );
        self.check_writable()?;
        let generation = self.generation + 1;
        let mut hard_state = self.hard_state.clone();
        raise_to_snapshot(&mut hard_state, metadata);
        let conf_state = metadata.get_conf_state().clone();
        self.write_snapshot(generation, &snapshot)?;
        self.rewrite_entries_log(generation, Vec::new())?;
        self.write_raft_state(generation, &hard_state, &conf_state)?;
        self.generation = generation;
        self.snapshot = snapshot;
        self.hard_state = hard_state;
        self.conf_state = conf_state;
        self.check_invariants();
        Ok(())
    }

    /// Log compaction after the state machine took a snapshot locally: `data` is the
    /// applied state as of `index`. Stores the snapshot (with the term of `index` and
    /// `conf_state`, the conf state as of `index`) durably, then drops the entries up
    /// to `index` from memory and disk.
    ///
    /// An `index` at or before the stored snapshot's is a no-op (as in
    /// `MemStorageCore::compact`).
    ///
    /// # Panics
    ///
    /// If `index` is beyond the last index or the commit.
    pub fn compact(&mut self, index: u64, conf_state: ConfState, data: Vec<u8>) -> Result<(), EngineError> {
        if index <= self.snapshot_index() {
            return Ok(());
        }
        assert!(
            index >= self.first_log_index() && index <= self.last_log_index(),
            "compact at index {index}, which is not in the log [{}, {}]",
            self.first_log_index(),
            self.last_log_index()
        );
        assert!(
            index <= self.hard_state.commit,
            "compact at index {index}, beyond the commit {}",
            self.hard_state.commit
        );
        self.check_writable()?;
        let kept_from = (index + 1 - self.first_log_index()) as usize;
        let mut snapshot = Snapshot::default();
        snapshot.set_data(data.into());
        let metadata = snapshot.mut_metadata();
        metadata.index = index;
        metadata.term = self.entries[kept_from - 1].term;
        metadata.set_conf_state(conf_state);
        self.write_snapshot(self.generation, &snapshot)?;
        let kept = self.entries[kept_from..].to_vec();
        self.rewrite_entries_log(self.generation, kept)?;
        self.snapshot = snapshot;
        self.check_invariants();
        Ok(())
    }

    /// The conf state after `RawNode::apply_conf_change`, durably.
    pub fn set_conf_state(&mut self, conf_state: ConfState) -> Result<(), EngineError> {
        self.check_writable()?;
        self.write_raft_state(self.generation, &self.hard_state.clone(), &conf_state)?;
        self.conf_state = conf_state;
        Ok(())
    }

    /// The hard state, with the latest commit (which may not be stored yet:
    /// [`RaftLogStore::set_commit`]).
    pub fn hard_state(&self) -> HardState {
        self.hard_state.clone()
    }

    /// The conf state last set (or taken from a received snapshot).
    pub fn conf_state(&self) -> ConfState {
        self.conf_state.clone()
    }

    /// The last stored snapshot's metadata and data, for a restarting node to rebuild
    /// its state machine (then apply the committed entries after its index).
    pub fn snapshot_data(&self) -> Option<(SnapshotMetadata, Vec<u8>)> {
        (self.snapshot_index() > 0).then(|| (self.snapshot.get_metadata().clone(), self.snapshot.data.to_vec()))
    }

    fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    fn first_log_index(&self) -> u64 {
        self.snapshot_index() + 1
    }

    fn last_log_index(&self) -> u64 {
        self.entries.last().map_or(self.snapshot_index(), |e| e.index)
    }

    fn check_writable(&self) -> Result<(), EngineError> {
        match &self.poisoned {
            None => Ok(()),
            Some(cause) => Err(EngineError::io(
                "write to the raft store",
                &self.dir,
                io::Error::other(format!(
                    "an earlier write failed ({cause}); the store refuses writes until it is reopened"
                )),
            )),
        }
    }

    /// Runs a write; if it fails, the files may be ahead of memory, so the store is
    /// poisoned until reopened.
    fn poison_on_error<T>(
        &mut self,
        write: impl FnOnce(&mut Self) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let result = write(self);
        if let Err(error) = &result {
            self.poisoned = Some(error.to_string());
        }
        result
    }

    /// Replaces `path` with `bytes` through a durable rename; poisons on failure.
    fn replace(&mut self, path: &Path, bytes: &[u8], step: &'static str) -> Result<(), EngineError> {
        self.poison_on_error(|store| {
            store.crash_point(step)?;
            replace_file_durably(path, bytes)
        })
    }

    fn write_raft_state(
        &mut self,
        generation: u64,
        hard_state: &HardState,
        conf_state: &ConfState,
    ) -> Result<(), EngineError> {
        let bytes = format::encode_raft_state(generation, hard_state, conf_state);
        self.replace(&self.dir.join(RAFT_STATE_FILE), &bytes, "replace raftstate")
    }

    fn write_snapshot(&mut self, generation: u64, snapshot: &Snapshot) -> Result<(), EngineError> {
        let bytes = format::encode_snapshot(generation, snapshot);
        self.replace(&self.dir.join(SNAPSHOT_FILE), &bytes, "replace snapshot")
    }

    /// Replaces `entries.log` with a log of `generation` holding `entries`, and makes
    /// them the store's entries.
    fn rewrite_entries_log(&mut self, generation: u64, entries: Vec<Entry>) -> Result<(), EngineError> {
        let (bytes, locations, previous_crc) = encode_entries_log(generation, &entries);
        let path = self.entries_path.clone();
        self.replace(&path, &bytes, "replace entries.log")?;
        // The handle still points at the file the rename replaced.
        self.entries_file = self.poison_on_error(|_| open_for_writes(&path))?;
        self.entries = entries;
        self.locations = locations;
        self.entries_end_bytes = bytes.len() as u64;
        self.last_crc = previous_crc;
        Ok(())
    }

    fn file_length(&self) -> Result<u64, EngineError> {
        Ok(self.entries_file.metadata().map_err(|e| EngineError::io("stat", &self.entries_path, e))?.len())
    }

    #[cfg(not(test))]
    #[inline]
    fn crash_point(&mut self, _step: &'static str) -> Result<(), EngineError> {
        Ok(())
    }

    /// Test seam: fails (as a crash would stop) the step once the budget is spent.
    #[cfg(test)]
    fn crash_point(&mut self, step: &'static str) -> Result<(), EngineError> {
        match &mut self.crash_after_steps {
            Some(0) => Err(EngineError::io(step, &self.dir, io::Error::other("simulated crash"))),
            Some(steps) => {
                *steps -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// What must hold between calls; a failure is a bug in this module. The ends are
    /// checked always, every entry in debug builds (a walk of the whole log).
    fn check_invariants(&self) {
        assert_eq!(self.entries.len(), self.locations.len());
        let snapshot = self.snapshot.get_metadata();
        assert!(self.entries.first().is_none_or(|e| e.index == snapshot.index + 1 && e.term >= snapshot.term));
        assert!(self.locations.first().is_none_or(|l| l.position == ENTRIES_HEADER_BYTES as u64));
        assert!(self.locations.last().is_none_or(|l| l.position < self.entries_end_bytes));
        assert!(self.hard_state.commit >= snapshot.index && self.hard_state.commit <= self.last_log_index());
        if cfg!(debug_assertions) {
            for (pair, locations) in self.entries.windows(2).zip(self.locations.windows(2)) {
                assert_eq!(pair[1].index, pair[0].index + 1, "entries not contiguous");
                assert!(pair[1].term >= pair[0].term, "entry {} term {} goes down", pair[1].index, pair[1].term);
                assert!(locations[0].position < locations[1].position);
            }
        }
    }
}

impl raft::Storage for RaftLogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state.clone(), self.conf_state.clone()))
    }

    /// Entries `[low, high)`, at most `max_size` bytes of them but at least one.
    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first_log_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_log_index() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let first = self.first_log_index();
        let mut entries = self.entries[(low - first) as usize..(high - first) as usize].to_vec();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        if index == self.snapshot_index() {
            return Ok(self.snapshot.get_metadata().term);
        }
        if index < self.first_log_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match self.entries.get((index - self.first_log_index()) as usize) {
            Some(entry) => Ok(entry.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first_log_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_log_index())
    }

    /// The last stored snapshot, if it reaches `request_index`; else
    /// `SnapshotTemporarilyUnavailable` (raft-rs retries later: the state machine
    /// compacts on its own schedule).
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot_index() == 0 || self.snapshot_index() < request_index {
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(self.snapshot.clone())
    }
}

/// Commit at least the snapshot's index, term at least its term (a vote was for an
/// older term, so it goes).
fn raise_to_snapshot(hard_state: &mut HardState, metadata: &SnapshotMetadata) {
    hard_state.commit = hard_state.commit.max(metadata.index);
    if hard_state.term < metadata.term {
        hard_state.term = metadata.term;
        hard_state.vote = 0;
    }
}

/// A whole `entries.log` of `generation` holding `entries`: its bytes, where each
/// record starts, and the last CRC.
fn encode_entries_log(generation: u64, entries: &[Entry]) -> (Vec<u8>, Vec<RecordLocation>, u32) {
    let (header, header_crc) = format::encode_entries_header(generation);
    let mut bytes = header.to_vec();
    let mut previous_crc = header_crc;
    let mut locations = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        locations.push(RecordLocation { position: bytes.len() as u64, previous_crc });
        let sync_point = i == entries.len() - 1;
        previous_crc = format::encode_record(&mut bytes, previous_crc, &format::encode_entry(entry), sync_point);
    }
    (bytes, locations, previous_crc)
}

#[derive(Default)]
struct RecoveredLog {
    entries: Vec<Entry>,
    locations: Vec<RecordLocation>,
    end_bytes: u64,
    last_crc: u32,
    /// Where the valid records end before the file does, and why.
    cut: Option<(u64, String)>,
}

/// Walks `entries.log`'s records; see the crash story in the module doc.
fn recover_entries(path: &Path, bytes: &[u8]) -> Result<RecoveredLog, EngineError> {
    let (_, header_crc) = format::decode_entries_header(bytes).map_err(|reason| corrupt_file(path, reason))?;
    let mut log = RecoveredLog { last_crc: header_crc, ..RecoveredLog::default() };
    let mut position = ENTRIES_HEADER_BYTES;
    while position < bytes.len() {
        let corrupt = |reason: String| EngineError::Corrupt {
            path: path.to_path_buf(),
            position: position as u64,
            offset: None,
            reason,
        };
        let invalid = match format::read_record(&bytes[position..]) {
            RecordRead::Valid(record) if record.previous_crc == log.last_crc => {
                let entry = Entry::parse_from_bytes(record.payload)
                    .map_err(|e| corrupt(format!("a record with a valid CRC does not hold a raft entry: {e}")))?;
                let expected = log.entries.last().map(|last| (last.index + 1, last.term));
                if entry.index == 0 || expected.is_some_and(|(index, term)| entry.index != index || entry.term < term) {
                    return Err(corrupt(format!(
                        "a record with a valid CRC holds entry {} (term {}), which cannot follow {:?} (index, term)",
                        entry.index,
                        entry.term,
                        log.entries.last().map(|last| (last.index, last.term))
                    )));
                }
                log.entries.push(entry);
                log.locations.push(RecordLocation { position: position as u64, previous_crc: log.last_crc });
                log.last_crc = record.crc;
                position += record.size_bytes;
                continue;
            }
            RecordRead::Valid(record) => format!(
                "the record's previous CRC {:#010x} is not the CRC of the record before it ({:#010x})",
                record.previous_crc, log.last_crc
            ),
            RecordRead::Incomplete => format!("an incomplete record of {} bytes", bytes.len() - position),
            RecordRead::CrcMismatch { stored, computed } => {
                format!("CRC32C {stored:#010x} does not match the record's bytes ({computed:#010x})")
            }
        };
        let sync_points = sync_points_in(&bytes[position..]);
        if sync_points >= 2 {
            return Err(corrupt(format!(
                "{invalid}; {sync_points} completed appends follow, so this is damage to synced entries, not a torn \
                 tail (the entry here would be index {})",
                log.entries.last().map_or_else(|| "after the snapshot".to_string(), |e| (e.index + 1).to_string())
            )));
        }
        log.cut = Some((position as u64, invalid));
        break;
    }
    log.end_bytes = position.min(bytes.len()) as u64;
    Ok(log)
}

/// How many valid records flagged as the end of an append call `bytes` holds, found by
/// trying every byte position (the bytes may start with damage of any length).
fn sync_points_in(bytes: &[u8]) -> usize {
    let mut count = 0;
    let mut position = 0;
    while position < bytes.len() {
        match format::read_record(&bytes[position..]) {
            RecordRead::Valid(record) => {
                count += usize::from(record.sync_point);
                position += record.size_bytes;
            }
            RecordRead::Incomplete | RecordRead::CrcMismatch { .. } => position += 1,
        }
    }
    count
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, EngineError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(EngineError::io("read", path, e)),
    }
}

fn open_for_writes(path: &Path) -> Result<File, EngineError> {
    OpenOptions::new().read(true).write(true).open(path).map_err(|e| EngineError::io("open", path, e))
}

fn corrupt_file(path: &Path, reason: String) -> EngineError {
    EngineError::CorruptFile { path: path.to_path_buf(), reason }
}
