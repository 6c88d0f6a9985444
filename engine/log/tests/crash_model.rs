//! Model-based crash tests of [`PartitionLog`] over the simulated disk.
//!
//! A seeded RNG drives sequences of appends, flushes, syncs, forced rolls,
//! housekeeping with retention, delete-records, truncation, clean restarts, failing
//! fsyncs, full disks, crashes of the machine (every [`CrashFault`] kind) and kills
//! of the process ([`SimStorage::kill_process`]). The test remembers every batch it
//! appended, the offset below which a successful `sync()` (or roll) acknowledged
//! everything durable (the `fsync: always` promise), and the offset below which a
//! successful `flush()` acknowledged everything written (the promise of `never` and
//! `interval`: a killed process loses none of it). After every crash and recovery:
//!
//! - (a) reads from the log start to the log end return valid batches with contiguous
//!   offsets;
//! - (b) each served batch is byte for byte what was appended at that offset;
//! - (c) nothing acknowledged at or above the log start is lost, and the recovered end
//!   is exactly what the surviving bytes on the simulated disk allow (the longest
//!   prefix of whole, intact batches of the active segment);
//! - (d) the log end is at least the log start, and the next append lands exactly at
//!   the recovered end;
//! - (e) the leader-epoch history is the model's (Kafka's `LeaderEpochFileCache` rules:
//!   an entry per new epoch, cut at truncation, moved up with the log start, cut to the
//!   recovered log at open), also when the crash took its checkpoint with it (the file
//!   removed, garbled or wrong: rebuilt from the batch headers).
//!
//! - (f) in replicated mode (switched on and off now and then), the high watermark is
//!   the one the test set last, clamped to what the log vouches for, and after a
//!   crash or restart the checkpointed one cut to the recovered end, by the rules of
//!   `high-watermark-checkpoint` (written when the mode is switched on, at
//!   housekeeping every 5 s if it moved, when a truncation lowers it, at a clean close).
//!
//! Appends carry a leader epoch that grows now and then (never back: replication's
//! promise; the engine's rule for an older epoch is a unit test of `log.rs`); some are
//! a follower's, of batches a leader stamped already (`append_replicated`).
//!
//! Every failure names its seed; `CORELOG_CRASH_SEED=<n>` re-runs exactly that seed.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use corelog_engine::batch::{self, BatchHeader, BatchProducer, RecordSpec};
use corelog_engine::config::ManualClock;
use corelog_engine::leader_epoch::LEADER_EPOCH_CHECKPOINT_FILE;
use corelog_engine::log::HIGH_WATERMARK_CHECKPOINT_INTERVAL_MS;
use corelog_engine::segment::{parse_segment_file_name, segment_file_name, RecoveryReport};
use corelog_engine::storage::{CrashFault, SimStorage, Storage};
use corelog_engine::*;
use futures_lite::future::block_on;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DIR: &str = "/data/crash/0";
const T0: i64 = 1_700_000_000_000;

fn dir() -> &'static Path {
    Path::new(DIR)
}

fn partition() -> TopicPartition {
    TopicPartition::new(TopicName::new("crash").expect("valid"), PartitionId(0))
}

/// Seeds to run: `CORELOG_CRASH_SEED` alone if set, else `default`.
fn seeds(default: std::ops::Range<u64>) -> Vec<u64> {
    match std::env::var("CORELOG_CRASH_SEED") {
        Ok(text) => vec![text.trim().parse().expect("CORELOG_CRASH_SEED must be an unsigned integer")],
        Err(_) => default.collect(),
    }
}

/// Runs `body` for each seed; a panic is re-raised naming the seed.
fn for_each_seed(test: &str, seeds: Vec<u64>, body: impl Fn(u64)) {
    for seed in seeds {
        if let Err(panic) = panic::catch_unwind(AssertUnwindSafe(|| body(seed))) {
            eprintln!(
                "{test}: seed {seed} failed; re-run just it with \
                 CORELOG_CRASH_SEED={seed} cargo test -p corelog-engine --test crash_model {test}"
            );
            panic::resume_unwind(panic);
        }
    }
}

// ---------------------------------------------------------------------------------
// Batches and what the disk holds
// ---------------------------------------------------------------------------------

/// A batch as the log must serve it: stamped with its offset and epoch.
#[derive(Debug, Clone)]
struct Appended {
    base: i64,
    last: i64,
    bytes: Vec<u8>,
}

fn make_batch(seq: u64, records: usize, value_bytes: usize, timestamp: i64) -> Vec<u8> {
    let key = seq.to_be_bytes();
    let value: Vec<u8> = (0..value_bytes).map(|i| (seq as usize + i) as u8).collect();
    let specs: Vec<RecordSpec<'_>> = (0..records)
        .map(|i| RecordSpec { key: Some(&key), value: Some(&value), timestamp_delta_ms: i as i64 })
        .collect();
    batch::build_batch(TimestampMs(timestamp), BatchProducer::default(), &specs)
}

/// Whether `stored` is `expected` as far as validation can tell: the leader epoch
/// (bytes 12..16) is the one field the CRC does not cover, so a bit flip there goes
/// unnoticed, by Kafka too.
fn same_batch(stored: &[u8], expected: &[u8]) -> bool {
    stored.len() == expected.len() && stored[..12] == expected[..12] && stored[16..] == expected[16..]
}

fn active_log_path(storage: &SimStorage) -> PathBuf {
    let names = block_on(storage.list_dir(dir())).expect("list");
    let base = names.iter().filter_map(|n| parse_segment_file_name(n)).max().expect("a segment");
    dir().join(segment_file_name(base, "log"))
}

/// What recovery must find in the active segment as it is on the (crashed) disk: the
/// end of its longest prefix of whole, intact batches (in offset order from the
/// segment's base), how many bytes follow that prefix, and the segment's base. Also
/// whether a bit flip changed the leader epoch of a surviving batch (the one field no
/// CRC covers).
fn surviving_end(storage: &SimStorage, batches: &BTreeMap<i64, Appended>) -> (i64, u64, i64, bool) {
    let path = active_log_path(storage);
    let base = parse_segment_file_name(&path.file_name().expect("name").to_string_lossy()).expect("segment").0;
    let content = block_on(storage.read_file(&path)).expect("read").unwrap_or_default();
    let mut position = 0usize;
    let mut end = base;
    let mut epoch_flipped = false;
    for appended in batches.range(base..).map(|(_, a)| a) {
        assert_eq!(appended.base, end, "the model's batches are contiguous");
        let size = appended.bytes.len();
        if position + size > content.len() || !same_batch(&content[position..position + size], &appended.bytes) {
            break;
        }
        epoch_flipped |= content[position + 12..position + 16] != appended.bytes[12..16];
        position += size;
        end = appended.last + 1;
    }
    (end, (content.len() - position) as u64, base, epoch_flipped)
}

/// Total bytes of the log's files, as the simulated disk counts them.
fn used_bytes(storage: &SimStorage) -> u64 {
    let names = block_on(storage.list_dir(dir())).expect("list");
    names.iter().map(|n| storage.file_len(&dir().join(n)).unwrap_or(0)).sum()
}

// ---------------------------------------------------------------------------------
// One seeded run
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Weights {
    append: u32,
    sync: u32,
    roll: u32,
    housekeeping: u32,
    delete_records: u32,
    truncate: u32,
    crash: u32,
    clean_restart: u32,
    fail_sync: u32,
    replication: u32,
    no_space: u32,
}

const MIXED: Weights = Weights {
    append: 40,
    sync: 14,
    roll: 4,
    housekeeping: 6,
    delete_records: 4,
    truncate: 2,
    crash: 10,
    clean_restart: 3,
    fail_sync: 2,
    replication: 5,
    no_space: 2,
};

const FAULTY_DISK: Weights = Weights {
    append: 36,
    sync: 12,
    roll: 3,
    housekeeping: 4,
    delete_records: 3,
    truncate: 3,
    crash: 10,
    clean_restart: 3,
    fail_sync: 8,
    replication: 3,
    no_space: 8,
};

#[derive(Debug, Default)]
struct Coverage {
    crashes: [u64; 4],
    torn_batches: u64,
    restarts_at_log_start: u64,
    segments_deleted: u64,
    poisonings: u64,
    no_space: u64,
    process_kills: u64,
}

struct Run {
    seed: u64,
    rng: StdRng,
    storage: SimStorage,
    clock: Arc<ManualClock>,
    config: TopicConfig,
    log: Option<PartitionLog<SimStorage>>,
    /// Every batch appended and not since cut away (by a truncation, or lost in a
    /// crash), by base offset; reads check those at or above the log start.
    batches: BTreeMap<i64, Appended>,
    end: i64,
    lso: i64,
    /// Offsets below this were acknowledged durable (a sync or roll returned Ok).
    acked: i64,
    /// Offsets below this were acknowledged written (a flush, sync or roll returned
    /// Ok): a crash of the process, unlike one of the machine, must not lose them.
    written: i64,
    /// Offsets below this are on disk even if the log does not claim them durable:
    /// a truncation syncs what it keeps (and recovery keeps only what is on disk).
    synced_floor: i64,
    /// `true`: the high watermark follows the log end (`fsync: never`); `false`: it
    /// follows acknowledged syncs (`fsync: always`).
    hw_follows_end: bool,
    poisoned: bool,
    /// The appending leader's epoch: it only grows.
    epoch: i32,
    /// The leader-epoch history the log must hold: (epoch, start offset).
    epochs: Vec<(i32, i64)>,
    /// Replicated mode: the high watermark the log must show, the one its checkpoint
    /// file holds, and when that was written (the test's clock, ms).
    replicated: bool,
    hw: i64,
    hw_checkpoint: Option<i64>,
    hw_checkpointed_at: i64,
    seq: u64,
    step: usize,
    history: Vec<String>,
    coverage: Coverage,
}

impl Run {
    /// A run with a random config drawn from `seed`.
    fn new(seed: u64) -> Run {
        let mut rng = StdRng::seed_from_u64(seed);
        let config = TopicConfig {
            segment_bytes: rng.gen_range(300..5000),
            index_interval_bytes: rng.gen_range(0..2000),
            segment_ms: if rng.gen_bool(0.7) { 1 << 50 } else { rng.gen_range(5_000..60_000) },
            retention_bytes: if rng.gen_bool(0.5) { -1 } else { rng.gen_range(500..20_000) },
            retention_ms: if rng.gen_bool(0.5) { -1 } else { rng.gen_range(2_000..60_000) },
            durability: Durability::Always,
            ..TopicConfig::default()
        };
        let hw_follows_end = rng.gen_bool(0.3);
        Run::with_config(seed, rng, config, hw_follows_end)
    }

    fn with_config(seed: u64, rng: StdRng, config: TopicConfig, hw_follows_end: bool) -> Run {
        let storage = SimStorage::new();
        let clock = ManualClock::new(TimestampMs(T0));
        let mut run = Run {
            seed,
            rng,
            storage,
            clock,
            config,
            log: None,
            batches: BTreeMap::new(),
            end: 0,
            lso: 0,
            acked: 0,
            written: 0,
            synced_floor: 0,
            hw_follows_end,
            poisoned: false,
            epoch: 0,
            epochs: Vec::new(),
            replicated: false,
            hw: 0,
            hw_checkpoint: None,
            hw_checkpointed_at: 0,
            seq: 0,
            step: 0,
            history: Vec::new(),
            coverage: Coverage::default(),
        };
        run.note(format!("config {:?}, hw follows end: {hw_follows_end}", run.config));
        let (log, _) = run.open();
        run.log = Some(log);
        run
    }

    fn fail(&self, message: impl Display) -> ! {
        let recent = self.history.iter().rev().take(25).rev().cloned().collect::<Vec<_>>().join("\n  ");
        panic!(
            "crash_model seed {} (re-run with CORELOG_CRASH_SEED={}), step {}: {message}\n\
             model: end {} log start {} acked {} poisoned {}\nlast operations:\n  {recent}",
            self.seed, self.seed, self.step, self.end, self.lso, self.acked, self.poisoned
        )
    }

    fn ensure(&self, condition: bool, message: impl FnOnce() -> String) {
        if !condition {
            self.fail(message());
        }
    }

    fn ok<T>(&self, result: Result<T>, what: &str) -> T {
        result.unwrap_or_else(|error| self.fail(format!("{what} failed: {error}")))
    }

    fn note(&mut self, text: String) {
        self.history.push(format!("#{} {text}", self.step));
    }

    fn log(&self) -> &PartitionLog<SimStorage> {
        self.log.as_ref().expect("open")
    }

    fn log_mut(&mut self) -> &mut PartitionLog<SimStorage> {
        self.log.as_mut().expect("open")
    }

    fn open(&self) -> (PartitionLog<SimStorage>, RecoveryReport) {
        let opened =
            PartitionLog::open(self.storage.clone(), dir(), partition(), self.config.clone(), self.clock.clone());
        self.ok(block_on(opened), "open")
    }

    fn now(&self) -> i64 {
        corelog_engine::config::Clock::now_ms(&*self.clock).0
    }

    fn next_batch(&mut self) -> Vec<u8> {
        let records = self.rng.gen_range(1..=8);
        let value_bytes =
            if self.rng.gen_bool(0.1) { self.rng.gen_range(300..1500) } else { self.rng.gen_range(0..300) };
        self.batch_of(records, value_bytes)
    }

    fn batch_of(&mut self, records: usize, value_bytes: usize) -> Vec<u8> {
        self.seq += 1;
        let timestamp = self.now() + self.rng.gen_range(-5_000..5_000);
        make_batch(self.seq, records, value_bytes, timestamp)
    }

    fn advance_hw(&mut self) {
        if self.replicated {
            // The broker's to move, not the partition's.
            return;
        }
        let hw = if self.hw_follows_end { self.end } else { self.acked };
        self.log_mut().set_high_watermark(Offset(hw));
    }

    fn expect_poisoned<T: std::fmt::Debug>(&self, result: Result<T>, what: &str) {
        match result {
            Err(EngineError::Poisoned { .. }) => {}
            other => self.fail(format!("{what} on a poisoned log: expected Poisoned, got {other:?}")),
        }
    }

    /// Cheap agreement after every operation.
    fn check_offsets(&self, what: &str) {
        let stats = self.log().stats();
        self.ensure(stats.log_end_offset == Offset(self.end), || format!("{what}: log end {stats:?}"));
        self.ensure(stats.log_start_offset == Offset(self.lso), || format!("{what}: log start {stats:?}"));
        self.ensure(stats.poisoned.is_some() == self.poisoned, || format!("{what}: poisoned state {stats:?}"));
        self.ensure(stats.durable_offset.0 >= self.acked.min(self.end), || format!("{what}: durable {stats:?}"));
        self.ensure(stats.high_watermark.0 >= self.lso, || format!("{what}: high watermark below log start {stats:?}"));
        self.ensure(stats.replicated == self.replicated, || format!("{what}: replicated mode {stats:?}"));
        if self.replicated {
            self.ensure(stats.high_watermark == Offset(self.hw), || {
                format!("{what}: high watermark {stats:?}, model {}", self.hw)
            });
        }
        let epochs: Vec<(i32, i64)> =
            stats.leader_epochs.entries().iter().map(|e| (e.epoch.0, e.start_offset.0)).collect();
        self.ensure(epochs == self.epochs, || format!("{what}: leader epochs {epochs:?}, model {:?}", self.epochs));
    }

    // ---- the leader-epoch model: Kafka's LeaderEpochFileCache rules ----

    fn assign_epoch(&mut self, epoch: i32, start: i64) {
        if self.epochs.last().is_some_and(|(latest, _)| *latest == epoch) {
            return;
        }
        self.epochs.retain(|(e, s)| *e < epoch && *s < start);
        self.epochs.push((epoch, start));
    }

    fn epochs_from_end(&mut self, end: i64) {
        self.epochs.retain(|(_, s)| *s < end);
    }

    fn epochs_from_start(&mut self, start: i64) {
        let below = self.epochs.iter().take_while(|(_, s)| *s <= start).count();
        if below > 0 {
            let holding = self.epochs[below - 1].0;
            self.epochs.drain(..below);
            self.epochs.insert(0, (holding, start));
        }
    }

    /// Damages the leader-epoch checkpoint on the (crashed) disk, one way in four;
    /// the open must rebuild the history from the batch headers.
    fn maybe_damage_epoch_checkpoint(&mut self) {
        let path = dir().join(LEADER_EPOCH_CHECKPOINT_FILE);
        let how = self.rng.gen_range(0..12);
        let damage: Option<Vec<u8>> = match how {
            0 => {
                if block_on(self.storage.exists(&path)).expect("exists") {
                    block_on(self.storage.remove_file(&path)).expect("remove");
                }
                self.note("epoch checkpoint removed".to_string());
                return;
            }
            1 => Some(b"0\n3\n1 2\n".to_vec()),
            2 => {
                // Every epoch one higher: parses, but no batch agrees.
                let entries: Vec<String> = self.epochs.iter().map(|(e, s)| format!("{} {s}", e + 1)).collect();
                Some(format!("0\n{}\n{}\n", entries.len(), entries.join("\n")).into_bytes())
            }
            _ => None,
        };
        if let Some(bytes) = damage {
            self.note(format!("epoch checkpoint replaced by {:?}", String::from_utf8_lossy(&bytes)));
            block_on(self.storage.write_file_atomic(&path, &bytes)).expect("write");
        }
    }

    /// (a) and (b): every read from the log start to the end.
    fn check_reads(&self, what: &str) {
        let log = self.log();
        let end = Offset(self.end);
        let mut offset = Offset(self.lso);
        let mut previous_last: Option<i64> = None;
        let max_bytes = [1usize, 1000, 1 << 20][self.step % 3];
        while offset < end {
            let read = block_on(log.read(offset, max_bytes, Some(end)))
                .unwrap_or_else(|e| self.fail(format!("{what}: read at {offset}: {e}")));
            self.ensure(!read.bytes.is_empty(), || format!("{what}: empty read at {offset} below the end {end}"));
            let mut at = 0;
            while at < read.bytes.len() {
                let header = BatchHeader::parse(&read.bytes[at..])
                    .unwrap_or_else(|e| self.fail(format!("{what}: read at {offset}: unparsable batch: {e}")));
                let size = header.size_bytes();
                self.ensure(at + size <= read.bytes.len(), || format!("{what}: read at {offset}: partial batch"));
                let bytes = &read.bytes[at..at + size];
                if let Err(error) = batch::validate(bytes) {
                    self.fail(format!("{what}: read at {offset}: served an invalid batch: {error}"));
                }
                let (base, last) = (header.base_offset.0, header.last_offset().0);
                match previous_last {
                    None => self.ensure(base <= self.lso && self.lso <= last, || {
                        format!("{what}: the first batch [{base}, {last}] does not hold the log start {}", self.lso)
                    }),
                    Some(previous) => self.ensure(base == previous + 1, || {
                        format!("{what}: offsets jump from {previous} to batch [{base}, {last}]")
                    }),
                }
                let expected = self.batches.get(&base);
                self.ensure(expected.is_some_and(|e| e.last == last && same_batch(bytes, &e.bytes)), || {
                    format!(
                        "{what}: batch [{base}, {last}] is not what was appended there ({:?})",
                        expected.map(|e| e.last)
                    )
                });
                previous_last = Some(last);
                at += size;
            }
            let next = previous_last.expect("read something") + 1;
            self.ensure(read.next_offset == Offset(next), || {
                format!("{what}: next offset {} != {next}", read.next_offset)
            });
            offset = read.next_offset;
        }
        self.ensure(offset == end, || format!("{what}: reads ended at {offset}, past the end {end}"));
        let at_end = block_on(log.read(end, max_bytes, Some(end)))
            .unwrap_or_else(|e| self.fail(format!("{what}: read at end: {e}")));
        self.ensure(at_end.bytes.is_empty(), || format!("{what}: read at the end served bytes"));
    }

    fn forget_from(&mut self, offset: i64) {
        self.batches.split_off(&offset);
    }

    // ---- operations ----

    fn append(&mut self, count: usize) {
        let set: Vec<Vec<u8>> = (0..count).map(|_| self.next_batch()).collect();
        self.append_set(set);
    }

    /// Appends one record set of batches shaped `(records, value bytes)`.
    fn append_exact(&mut self, shapes: &[(usize, usize)]) {
        let set: Vec<Vec<u8>> =
            shapes.iter().map(|(records, value_bytes)| self.batch_of(*records, *value_bytes)).collect();
        self.append_set(set);
    }

    fn append_set(&mut self, set: Vec<Vec<u8>>) {
        let count = set.len();
        if self.rng.gen_bool(0.1) {
            self.epoch += self.rng.gen_range(1..=2);
        }
        let epoch = LeaderEpoch(self.epoch);
        let bytes = set.iter().map(Vec::len).sum::<usize>();
        let result = if self.rng.gen_bool(0.3) {
            // As a follower: the leader stamped the batches already.
            self.note(format!("replicate {count} batches ({bytes} bytes)"));
            let mut next = self.end;
            let mut stamped = Vec::with_capacity(bytes);
            for unstamped in &set {
                let mut batch = unstamped.clone();
                batch::stamp(&mut batch, Offset(next), epoch);
                next += i64::from(BatchHeader::parse(&batch).expect("built").last_offset_delta) + 1;
                stamped.extend_from_slice(&batch);
            }
            block_on(self.log_mut().append_replicated(stamped))
        } else {
            self.note(format!("append {count} batches ({bytes} bytes)"));
            block_on(self.log_mut().append(set.concat(), epoch))
        };
        if self.poisoned {
            return self.expect_poisoned(result, "append");
        }
        let info = self.ok(result, "append");
        self.record(set, epoch, info);
    }

    /// The model's side of a successful append.
    fn record(&mut self, set: Vec<Vec<u8>>, epoch: LeaderEpoch, info: AppendInfo) {
        self.ensure(info.base_offset == Offset(self.end), || {
            format!("append landed at {:?}, end was {}", info, self.end)
        });
        let mut next = self.end;
        for unstamped in set {
            let header = BatchHeader::parse(&unstamped).expect("built");
            let mut bytes = unstamped;
            batch::stamp(&mut bytes, Offset(next), epoch);
            let last = next + header.last_offset_delta as i64;
            self.batches.insert(next, Appended { base: next, last, bytes });
            next = last + 1;
        }
        self.ensure(info.last_offset == Offset(next - 1), || {
            format!("append {info:?}: last offset, expected {}", next - 1)
        });
        self.assign_epoch(epoch.0, info.base_offset.0);
        self.end = next;
        self.advance_hw();
    }

    fn sync(&mut self) {
        self.note("sync".to_string());
        let result = block_on(self.log_mut().sync());
        if self.poisoned {
            return self.expect_poisoned(result, "sync");
        }
        let synced = self.ok(result, "sync");
        self.ensure(synced == Offset(self.end), || format!("sync returned {synced}, end is {}", self.end));
        self.acked = self.end;
        self.written = self.end;
        self.advance_hw();
    }

    fn roll(&mut self) {
        self.note("roll".to_string());
        let result = block_on(self.log_mut().roll());
        if self.poisoned {
            return self.expect_poisoned(result, "roll");
        }
        self.ok(result, "roll");
        self.acked = self.end;
        self.written = self.end;
        self.advance_hw();
    }

    fn housekeeping(&mut self) {
        let advance = self.rng.gen_range(0..15_000);
        self.clock.advance_ms(advance);
        if self.rng.gen_bool(0.2) {
            self.config.retention_bytes = if self.rng.gen_bool(0.5) { -1 } else { self.rng.gen_range(500..20_000) };
            self.config.retention_ms = if self.rng.gen_bool(0.5) { -1 } else { self.rng.gen_range(2_000..60_000) };
            let config = self.config.clone();
            self.log_mut().set_config(config);
        }
        self.note(format!(
            "housekeeping after {advance} ms (retention {} bytes, {} ms)",
            self.config.retention_bytes, self.config.retention_ms
        ));
        let hw = self.log().high_watermark().0;
        let result = block_on(self.log_mut().housekeeping());
        let deleted = self.ok(result, "housekeeping");
        self.coverage.segments_deleted += deleted as u64;
        let due = self.now() - self.hw_checkpointed_at >= HIGH_WATERMARK_CHECKPOINT_INTERVAL_MS;
        if self.replicated && !self.poisoned && self.hw_checkpoint != Some(self.hw) && due {
            self.hw_checkpoint = Some(self.hw);
            self.hw_checkpointed_at = self.now();
        }
        let lso = self.log().log_start_offset().0;
        self.ensure(lso >= self.lso, || format!("housekeeping moved the log start back to {lso}"));
        self.ensure(lso <= hw, || format!("housekeeping moved the log start to {lso}, past the high watermark {hw}"));
        if lso != self.lso {
            // Only whole segments go, so the new start is a batch boundary.
            self.ensure(deleted > 0 && (self.batches.contains_key(&lso) || lso == self.end), || {
                format!("housekeeping moved the log start to {lso}, not a batch boundary ({deleted} deleted)")
            });
            self.lso = lso;
            self.epochs_from_start(lso);
        }
    }

    fn delete_records(&mut self) {
        let hw = self.log().high_watermark().0;
        let offset = self.rng.gen_range(self.lso..=hw);
        self.note(format!("delete records below {offset}"));
        let result = block_on(self.log_mut().delete_records(Offset(offset)));
        let lso = self.ok(result, "delete records");
        self.ensure(lso == Offset(offset.max(self.lso)), || format!("delete records to {offset} gave log start {lso}"));
        if lso.0 > self.lso {
            self.epochs_from_start(lso.0);
        }
        self.lso = lso.0;
        let beyond = block_on(self.log_mut().delete_records(Offset(hw + 1)));
        self.ensure(matches!(beyond, Err(EngineError::OffsetOutOfRange { .. })), || {
            format!("delete records past the high watermark {hw}: {beyond:?}")
        });
    }

    fn truncate(&mut self) {
        let offset = self.rng.gen_range(self.lso..=self.end);
        self.note(format!("truncate to {offset}"));
        let result = block_on(self.log_mut().truncate_to(Offset(offset)));
        if self.poisoned {
            return self.expect_poisoned(result, "truncate");
        }
        self.ok(result, "truncate");
        if offset < self.end {
            let (cut, last) = self.batches.range(..=offset).next_back().map(|(b, a)| (*b, a.last)).expect("stored");
            self.ensure(last >= offset, || format!("the model lost the batch holding {offset}"));
            self.forget_from(cut);
            self.end = cut.max(self.lso);
            if cut < self.lso {
                self.batches.clear();
                self.epochs.clear();
            } else {
                self.epochs_from_end(cut);
            }
            self.acked = self.acked.min(self.end);
            self.written = self.written.min(self.end);
            self.synced_floor = self.end;
            if self.replicated {
                self.hw = self.hw.min(self.end);
                if self.hw_checkpoint.is_none_or(|checkpoint| checkpoint > self.hw) {
                    self.hw_checkpoint = Some(self.hw);
                    self.hw_checkpointed_at = self.now();
                }
            }
        }
    }

    /// Replicated mode switched on or off, or, in it, the broker's move of the high
    /// watermark.
    fn replication(&mut self) {
        if self.rng.gen_bool(0.25) {
            let on = !self.replicated;
            self.note(format!("replicated mode {on}"));
            let hw = self.log().high_watermark().0;
            let result = block_on(self.log_mut().set_replicated(on));
            self.ok(result, "set replicated");
            self.replicated = on;
            if on {
                self.hw = hw;
                self.hw_checkpoint = Some(hw);
                self.hw_checkpointed_at = self.now();
            } else {
                self.hw_checkpoint = None;
                self.advance_hw();
            }
            return;
        }
        let offset = self.rng.gen_range(self.lso - 1..=self.end + 1);
        self.note(format!("set the high watermark to {offset}"));
        let local_end = self.log().local_end_offset().0;
        let result = self.log_mut().update_high_watermark(Offset(offset));
        if !self.replicated {
            return self.ensure(matches!(result, Err(EngineError::NotReplicated { .. })), || {
                format!("a high watermark set outside replicated mode: {result:?}")
            });
        }
        let hw = self.ok(result, "set the high watermark");
        let expected = offset.min(local_end).max(self.lso);
        self.ensure(hw == Offset(expected), || format!("high watermark {hw} set to {offset}, expected {expected}"));
        self.ensure(local_end >= self.acked.min(self.end), || format!("local end {local_end} below the acked"));
        self.hw = expected;
    }

    /// Writes the appends out of the process's buffers (`fsync: never`'s
    /// acknowledgement), without a sync.
    fn flush(&mut self) {
        self.note("flush".to_string());
        let result = block_on(self.log_mut().flush());
        if self.poisoned {
            return self.expect_poisoned(result, "flush");
        }
        let written = self.ok(result, "flush");
        self.ensure(written == Offset(self.end), || format!("flush returned {written}, end is {}", self.end));
        self.written = self.end;
    }

    /// Kills the process (not the machine): everything written out survives, synced
    /// or not, and recovery ends exactly there; only what was still in the write
    /// buffers may be lost.
    fn kill_process(&mut self) -> i64 {
        self.note("kill the process".to_string());
        let written_claimed = self.log().written_offset().0;
        self.ensure(written_claimed >= self.written.min(self.end), || {
            format!("the log claims written {written_claimed} below the acknowledged {}", self.written)
        });
        drop(self.log.take());
        self.storage.kill_process();
        let (data_end, bytes_after, active_base, _) = surviving_end(&self.storage, &self.batches);
        self.coverage.process_kills += 1;
        let floor = written_claimed.max(self.synced_floor).max(active_base);
        self.ensure(data_end >= floor, || {
            format!("kill: the disk holds intact batches to {data_end}, but {floor} was written (claimed {written_claimed})")
        });
        let expected_end = data_end.max(self.lso);
        self.ensure(expected_end >= self.written.max(self.acked), || {
            format!("kill: acknowledged offsets below {} but only {data_end} survived", self.written.max(self.acked))
        });
        let (log, report) = self.open();
        self.log = Some(log);
        self.recovered(expected_end, data_end, "recovery after a process kill");
        self.ensure(report.bytes_truncated == bytes_after, || {
            format!(
                "kill: recovery truncated {} bytes, {bytes_after} follow the intact batches",
                report.bytes_truncated
            )
        });
        self.after_recovery("recovery after a process kill");
        expected_end
    }

    /// Drop the log, crash the disk with `fault`, recover, check everything.
    /// Returns the recovered log end.
    fn crash(&mut self, fault: CrashFault) -> i64 {
        self.note(format!("crash {fault:?}"));
        let durable_claimed = self.log().durable_offset().0;
        self.ensure(durable_claimed >= self.acked.min(self.end), || {
            format!("the log claims durable {durable_claimed} below the acknowledged {}", self.acked)
        });
        drop(self.log.take());
        self.storage.crash(fault);
        self.maybe_damage_epoch_checkpoint();
        let (data_end, bytes_after, active_base, epoch_flipped) = surviving_end(&self.storage, &self.batches);
        let kind = match fault {
            CrashFault::LoseUnsynced => 0,
            CrashFault::TornTail { .. } => 1,
            CrashFault::BitFlipInTail { .. } => 2,
            CrashFault::KeepAll => 3,
        };
        self.coverage.crashes[kind] += 1;
        match fault {
            CrashFault::KeepAll => self.ensure(data_end == self.end, || {
                format!("KeepAll: the disk holds intact batches to {data_end}, the log had {}", self.end)
            }),
            // Exactly what was synced survives: what the log claimed durable, or more
            // where a truncation synced what it kept but the claim stayed lower (or a
            // truncation restarted the log at its start, above the claim).
            CrashFault::LoseUnsynced => {
                let synced = durable_claimed.max(self.synced_floor).max(active_base);
                self.ensure(data_end == synced, || {
                    format!(
                        "LoseUnsynced: the disk holds intact batches to {data_end}, but {synced} was synced \
                         (the log claimed {durable_claimed})"
                    )
                })
            }
            _ => {}
        }
        if data_end < self.end && bytes_after > 0 {
            self.coverage.torn_batches += 1;
        }
        let expected_end = data_end.max(self.lso);
        // (c) nothing acknowledged at or above the log start is lost.
        self.ensure(expected_end >= self.acked, || {
            format!("{fault:?}: acknowledged offsets below {} but only {data_end} survived", self.acked)
        });
        let end_before = self.end;
        let (log, report) = self.open();
        self.log = Some(log);
        let what = format!("recovery after {fault:?}");
        self.recovered(expected_end, data_end, &what);
        if epoch_flipped {
            // No CRC covers a batch's leader epoch (Kafka's neither): the history the
            // log reports now follows the flipped field, and the model takes it.
            self.note("a bit flip changed a surviving batch's leader epoch".to_string());
            self.epochs = self.log().leader_epochs().entries().iter().map(|e| (e.epoch.0, e.start_offset.0)).collect();
            self.epoch = self.epoch.max(self.epochs.last().map_or(0, |(e, _)| *e));
        }
        if end_before > expected_end {
            // A consumer whose position was past the new end is told so (Kafka's
            // OFFSET_OUT_OF_RANGE, and it resets by its policy), not served nothing.
            let read = block_on(self.log().read(Offset(end_before), 1 << 16, None));
            self.ensure(
                matches!(read, Err(EngineError::OffsetOutOfRange { log_end_offset, .. }) if log_end_offset == Offset(expected_end)),
                || format!("{what}: a read at the lost offset {end_before} gave {read:?}"),
            );
        }
        self.ensure(report.bytes_truncated == bytes_after, || {
            format!(
                "{what}: recovery truncated {} bytes, {bytes_after} follow the intact batches",
                report.bytes_truncated
            )
        });
        self.after_recovery(&what);
        expected_end
    }

    /// Model and log after an open that should end at `expected_end`.
    fn recovered(&mut self, expected_end: i64, data_end: i64, what: &str) {
        let stats = self.log().stats();
        self.ensure(stats.log_end_offset == Offset(expected_end), || {
            format!(
                "{what}: recovered end {} but expected {expected_end} (intact data to {data_end})",
                stats.log_end_offset
            )
        });
        self.ensure(stats.log_start_offset == Offset(self.lso), || format!("{what}: log start {stats:?}"));
        self.ensure(stats.log_end_offset >= stats.log_start_offset, || format!("{what}: end below start {stats:?}"));
        let expected_hw = if self.replicated {
            // The checkpoint's, never past what survived.
            self.hw_checkpoint.unwrap_or(self.lso).min(expected_end).max(self.lso)
        } else {
            expected_end
        };
        self.ensure(stats.high_watermark == Offset(expected_hw), || {
            format!("{what}: high watermark {stats:?}, expected {expected_hw} (checkpoint {:?})", self.hw_checkpoint)
        });
        self.hw = expected_hw;
        // The log counts its first periodic checkpoint from the open.
        self.hw_checkpointed_at = self.now();
        self.ensure(stats.durable_offset == stats.log_end_offset, || format!("{what}: durable {stats:?}"));
        self.ensure(stats.poisoned.is_none(), || format!("{what}: still poisoned {stats:?}"));
        if data_end < self.lso {
            self.coverage.restarts_at_log_start += 1;
            self.batches.clear();
            self.epochs.clear();
        } else {
            self.forget_from(expected_end);
            self.epochs_from_start(self.lso);
            self.epochs_from_end(expected_end);
        }
        self.end = expected_end;
        // The simulated disk keeps what survived; the log rightly calls it durable.
        self.acked = expected_end;
        self.written = expected_end;
        self.synced_floor = expected_end;
        self.poisoned = false;
    }

    /// (a), (b), (d) and that the log is writable again.
    fn after_recovery(&mut self, what: &str) {
        self.check_reads(what);
        self.check_offsets(what);
        let end = self.end;
        self.append(1);
        let base = self.batches.range(..).next_back().map(|(b, _)| *b);
        self.ensure(base == Some(end), || {
            format!("{what}: the first append after recovery landed at {base:?}, not {end}")
        });
        self.sync();
    }

    fn clean_restart(&mut self) {
        self.note("close and reopen".to_string());
        let log = self.log.take().expect("open");
        self.ok(block_on(log.close()), "close");
        if self.replicated && !self.poisoned {
            self.hw_checkpoint = Some(self.hw);
        }
        let expected_end = self.end;
        let (log, report) = self.open();
        self.log = Some(log);
        // A poisoned log closes without the clean-shutdown marker and is recovered,
        // but its close synced everything, so nothing is cut.
        self.ensure(report.bytes_truncated == 0, || format!("clean restart truncated: {report:?}"));
        self.recovered(expected_end, expected_end, "clean restart");
        self.after_recovery("clean restart");
    }

    fn fail_sync(&mut self) {
        if self.poisoned {
            return;
        }
        if self.log().durable_offset().0 == self.end {
            // A sync with nothing to do never reaches the disk.
            self.append(1);
        }
        let via_roll = self.rng.gen_bool(0.3);
        self.note(format!("failing fsync ({})", if via_roll { "roll" } else { "sync" }));
        self.storage.fail_next_syncs(1);
        let result =
            if via_roll { block_on(self.log_mut().roll()) } else { block_on(self.log_mut().sync()).map(|_| ()) };
        self.expect_poisoned(result, "a sync that hits EIO");
        self.poisoned = true;
        self.coverage.poisonings += 1;
        // Reads keep working: everything appended is still served.
        self.check_reads("after a failed fsync");
        let result = block_on(self.log_mut().sync());
        self.expect_poisoned(result, "sync");
        let batch = self.next_batch();
        let epoch = LeaderEpoch(self.epoch);
        let result = block_on(self.log_mut().append(batch, epoch));
        self.expect_poisoned(result, "append");
    }

    fn no_space(&mut self) {
        if self.poisoned {
            return;
        }
        let batch = self.next_batch();
        let used = used_bytes(&self.storage);
        let slack = self.rng.gen_range(0..batch.len() as u64);
        self.note(format!("disk full: {slack} bytes free for a {}-byte batch", batch.len()));
        self.storage.set_space_bytes_max(Some(used + slack));
        let epoch = LeaderEpoch(self.epoch);
        let result = block_on(self.log_mut().append(batch, epoch));
        self.ensure(matches!(result, Err(EngineError::NoSpace { .. })), || {
            format!("append on a full disk: {result:?}")
        });
        self.coverage.no_space += 1;
        self.check_offsets("after ENOSPC");
        self.check_reads("after ENOSPC");
        if self.rng.gen_bool(0.5) {
            // Room for the batch but perhaps not for its index entries.
            let batch = self.next_batch();
            let used = used_bytes(&self.storage);
            let slack = batch.len() as u64 + self.rng.gen_range(0..24);
            self.storage.set_space_bytes_max(Some(used + slack));
            let epoch = LeaderEpoch(self.epoch);
            match block_on(self.log_mut().append(batch.clone(), epoch)) {
                Err(EngineError::NoSpace { .. }) => self.note("tight append: ENOSPC".to_string()),
                Ok(info) => {
                    self.note(format!("tight append: fit at {}", info.base_offset));
                    self.record(vec![batch], epoch, info);
                }
                Err(other) => self.fail(format!("append on a nearly full disk: {other}")),
            }
            self.check_offsets("after a tight append");
        }
        self.storage.set_space_bytes_max(None);
        self.append(1);
    }

    fn step(&mut self, weights: &Weights) {
        let table = [
            weights.append,
            weights.sync,
            weights.roll,
            weights.housekeeping,
            weights.delete_records,
            weights.truncate,
            weights.crash,
            weights.clean_restart,
            weights.fail_sync,
            weights.replication,
            weights.no_space,
        ];
        let mut pick = self.rng.gen_range(0..table.iter().sum::<u32>());
        let mut choice = 0;
        while pick >= table[choice] {
            pick -= table[choice];
            choice += 1;
        }
        match choice {
            0 => {
                let count = if self.rng.gen_bool(0.8) { 1 } else { self.rng.gen_range(2..=4) };
                self.append(count);
                if self.rng.gen_bool(0.3) {
                    self.flush();
                }
            }
            1 => self.sync(),
            2 => self.roll(),
            3 => self.housekeeping(),
            4 => self.delete_records(),
            5 => self.truncate(),
            6 => {
                let seed = self.rng.gen();
                let fault = match self.rng.gen_range(0..5) {
                    0 => CrashFault::LoseUnsynced,
                    1 => CrashFault::TornTail { seed },
                    2 => CrashFault::BitFlipInTail { seed },
                    3 => CrashFault::KeepAll,
                    _ => {
                        self.kill_process();
                        return self.check_offsets("after the step");
                    }
                };
                self.crash(fault);
            }
            7 => self.clean_restart(),
            8 => self.fail_sync(),
            9 => self.replication(),
            _ => self.no_space(),
        }
        self.check_offsets("after the step");
        if self.step.is_multiple_of(8) {
            self.check_reads("periodic check");
        }
    }
}

fn run_sequence(seed: u64, steps: usize, weights: &Weights) -> Coverage {
    let mut run = Run::new(seed);
    for step in 0..steps {
        run.step = step;
        run.step(weights);
    }
    run.step = steps;
    // Every run ends with a crash that loses all it can.
    run.crash(CrashFault::LoseUnsynced);
    run.coverage
}

fn run_seeds(test: &str, default: std::ops::Range<u64>, steps: usize, weights: Weights) {
    let total = std::cell::RefCell::new(Coverage::default());
    for_each_seed(test, seeds(default), |seed| {
        let coverage = run_sequence(seed, steps, &weights);
        let mut total = total.borrow_mut();
        for (sum, count) in total.crashes.iter_mut().zip(coverage.crashes) {
            *sum += count;
        }
        total.torn_batches += coverage.torn_batches;
        total.restarts_at_log_start += coverage.restarts_at_log_start;
        total.segments_deleted += coverage.segments_deleted;
        total.poisonings += coverage.poisonings;
        total.no_space += coverage.no_space;
        total.process_kills += coverage.process_kills;
    });
    let total = total.borrow();
    eprintln!("{test}: {total:?}");
    assert!(total.process_kills > 0, "{test}: no process was killed; the sequences no longer cover it");
}

#[test]
fn random_crash_sequences() {
    run_seeds("random_crash_sequences", 0..300, 60, MIXED);
}

#[test]
fn random_crash_sequences_on_a_faulty_disk() {
    run_seeds("random_crash_sequences_on_a_faulty_disk", 10_000..10_150, 60, FAULTY_DISK);
}

// ---------------------------------------------------------------------------------
// Deterministic cases
// ---------------------------------------------------------------------------------

/// A run with a fixed config: big segments, retention off, no random ops.
fn fixed_run(segment_bytes: u64) -> Run {
    let config = TopicConfig {
        segment_bytes,
        index_interval_bytes: 150,
        retention_bytes: -1,
        retention_ms: -1,
        durability: Durability::Always,
        ..TopicConfig::default()
    };
    Run::with_config(0, StdRng::seed_from_u64(0), config, false)
}

#[derive(Debug, Clone, Copy)]
enum Pattern {
    /// 10 synced batches of 3 records, then 4 unsynced batches of 2, one segment.
    OneSegment,
    /// The same, with a forced roll after the sync: the unsynced tail is a new segment.
    RolledTail,
    /// The 4 unsynced batches as one record set (one produce request).
    OneRecordSet,
}

/// Offsets [0, 30) acknowledged durable, [30, 38) appended and not synced.
fn known_pattern(pattern: Pattern) -> Run {
    let mut run = fixed_run(1 << 20);
    for _ in 0..10 {
        run.append_exact(&[(3, 40)]);
    }
    run.sync();
    assert_eq!(run.acked, 30);
    if let Pattern::RolledTail = pattern {
        run.roll();
    }
    match pattern {
        Pattern::OneRecordSet => run.append_exact(&[(2, 40); 4]),
        _ => {
            for _ in 0..4 {
                run.append_exact(&[(2, 40)]);
            }
        }
    }
    assert_eq!((run.end, run.acked), (38, 30));
    assert_eq!(run.log().durable_offset(), Offset(30));
    run
}

#[test]
fn each_crash_fault_recovers_to_the_exact_end() {
    for pattern in [Pattern::OneSegment, Pattern::RolledTail, Pattern::OneRecordSet] {
        assert_eq!(known_pattern(pattern).crash(CrashFault::LoseUnsynced), 30, "{pattern:?}: LoseUnsynced");
        assert_eq!(known_pattern(pattern).crash(CrashFault::KeepAll), 38, "{pattern:?}: KeepAll");
        // Torn and flipped tails: `crash` checks the recovered end against the bytes
        // that survived on the simulated disk (the longest run of whole, intact
        // batches); here also that it is a batch boundary between the two.
        let mut torn_ends = std::collections::BTreeSet::new();
        let mut flip_ends = std::collections::BTreeSet::new();
        for seed in 0..48u64 {
            let end = known_pattern(pattern).crash(CrashFault::TornTail { seed });
            assert!([30, 32, 34, 36, 38].contains(&end), "{pattern:?} TornTail {seed}: end {end}");
            torn_ends.insert(end);
            let mut run = known_pattern(pattern);
            let end = run.crash(CrashFault::BitFlipInTail { seed });
            assert!([30, 32, 34, 36, 38].contains(&end), "{pattern:?} BitFlipInTail {seed}: end {end}");
            flip_ends.insert(end);
        }
        // The faults really cut at different places.
        assert!(torn_ends.len() >= 4, "{pattern:?}: torn tails all recovered to {torn_ends:?}");
        assert!(flip_ends.len() >= 3, "{pattern:?}: flipped tails all recovered to {flip_ends:?}");
    }
}

#[test]
fn a_bit_flip_in_a_whole_batch_is_caught_by_recovery() {
    // Find seeds where the flipped tail kept every unsynced byte's batch whole but
    // one batch now fails its CRC: recovery must stop right before that batch.
    let mut caught = 0;
    for seed in 0..200u64 {
        let run = known_pattern(Pattern::OneSegment);
        drop(run.log);
        run.storage.crash(CrashFault::BitFlipInTail { seed });
        let content = block_on(run.storage.read_file(&active_log_path(&run.storage))).expect("read").expect("exists");
        let mut position = 0;
        let mut corrupt_at = None;
        for appended in run.batches.values() {
            let size = appended.bytes.len();
            if position + size > content.len() {
                break;
            }
            if !same_batch(&content[position..position + size], &appended.bytes) {
                corrupt_at = Some(appended.base);
                break;
            }
            position += size;
        }
        let Some(corrupt_at) = corrupt_at else { continue };
        caught += 1;
        let (log, report) = block_on(PartitionLog::open(
            run.storage.clone(),
            dir(),
            partition(),
            run.config.clone(),
            run.clock.clone(),
        ))
        .expect("open");
        assert_eq!(log.log_end_offset(), Offset(corrupt_at), "seed {seed}: {report:?}");
        assert!(report.bytes_truncated > 0, "seed {seed}");
        assert!(corrupt_at >= 30, "seed {seed}: a synced batch was corrupted");
    }
    assert!(caught >= 5, "only {caught} seeds flipped a bit inside a whole batch");
}

#[test]
fn a_failed_fsync_poisons_the_log_until_a_restart() {
    for fault in [CrashFault::LoseUnsynced, CrashFault::KeepAll, CrashFault::TornTail { seed: 3 }] {
        let mut run = known_pattern(Pattern::OneSegment);
        run.storage.fail_next_syncs(1);
        match block_on(run.log_mut().sync()) {
            Err(EngineError::Poisoned { cause, .. }) => assert!(cause.contains("fdatasync"), "{cause}"),
            other => panic!("a failed fdatasync must poison the log, got {other:?}"),
        }
        run.poisoned = true;
        assert!(run.log().is_poisoned());
        assert_eq!(run.log().durable_offset(), Offset(30), "a failed sync made nothing durable");
        // Writes fail, each with Poisoned, even though the disk works again.
        run.append(1);
        run.sync();
        run.roll();
        let result = block_on(run.log_mut().truncate_to(Offset(31)));
        run.expect_poisoned(result, "truncate");
        assert_eq!(run.log().log_end_offset(), Offset(38));
        // Reads keep working, unsynced batches included.
        run.check_reads("poisoned");
        let read = block_on(run.log().read(Offset(0), 1 << 20, Some(Offset(38)))).expect("read");
        assert_eq!(read.next_offset, Offset(38), "one read serves synced and unsynced batches");
        // A restart recovers from what the disk holds and accepts writes again.
        let end = run.crash(fault);
        let expected = match fault {
            CrashFault::LoseUnsynced => Some(30),
            CrashFault::KeepAll => Some(38),
            _ => None,
        };
        if let Some(expected) = expected {
            assert_eq!(end, expected, "{fault:?}");
        }
        assert!(!run.poisoned && !run.log().is_poisoned());
        let last_base = run.batches.range(..).next_back().map(|(base, _)| *base);
        assert_eq!(last_base, Some(end), "the append after recovery landed at the recovered end");
        assert_eq!(run.acked, run.end, "and its sync worked");
    }
}

#[test]
fn a_failed_roll_poisons_and_a_clean_close_keeps_everything() {
    let mut run = known_pattern(Pattern::OneSegment);
    run.storage.fail_next_syncs(1);
    let result = block_on(run.log_mut().roll());
    run.expect_poisoned(result, "roll with a failing fsync");
    run.poisoned = true;
    run.append(1);
    // A poisoned log closes without the clean-shutdown marker; the next open recovers
    // and, since close synced what was there, keeps all of it.
    run.clean_restart();
    let last_base = run.batches.range(..).next_back().map(|(base, _)| *base);
    assert_eq!(last_base, Some(38), "all 38 offsets kept, the next append right after them");
}

#[test]
fn enospc_fails_the_append_and_leaves_the_log_as_it_was() {
    for segment_bytes in [1 << 20, 700] {
        let mut run = fixed_run(segment_bytes);
        for _ in 0..8 {
            run.append_exact(&[(3, 50)]);
        }
        run.sync();
        run.append_exact(&[(1, 10)]);
        let end = run.end;
        let before: Vec<_> = (0..end)
            .step_by(3)
            .map(|o| block_on(run.log().read(Offset(o), 500, Some(Offset(end)))))
            .map(|r| r.expect("read").bytes)
            .collect();
        let segments = run.log().stats().segment_count;

        for slack in [0, 1, 60, 100] {
            let used = used_bytes(&run.storage);
            run.storage.set_space_bytes_max(Some(used + slack));
            let batch = run.batch_of(2, 80);
            assert!(batch.len() as u64 > slack);
            let epoch = LeaderEpoch(run.epoch);
            match block_on(run.log_mut().append(batch, epoch)) {
                Err(EngineError::NoSpace { .. }) => {}
                other => panic!("segment.bytes {segment_bytes}, {slack} bytes free: expected NoSpace, got {other:?}"),
            }
            assert_eq!(used_bytes(&run.storage), used, "ENOSPC left bytes behind");
            assert_eq!(run.log().log_end_offset(), Offset(end));
            assert!(!run.log().is_poisoned(), "a full disk is not a failed fsync");
            let after: Vec<_> = (0..end)
                .step_by(3)
                .map(|o| block_on(run.log().read(Offset(o), 500, Some(Offset(end)))))
                .map(|r| r.expect("read").bytes)
                .collect();
            assert!(after == before, "ENOSPC changed what reads return");
            run.check_reads("after ENOSPC");
        }
        // A sync on a full disk still works: syncing needs no space.
        run.sync();
        if segment_bytes == 700 {
            assert!(run.log().stats().segment_count > segments, "the failed append rolled first");
        }
        // Room again: appends land right at the old end.
        run.storage.set_space_bytes_max(None);
        run.append_exact(&[(2, 80)]);
        assert_eq!(run.batches.range(..).next_back().map(|(b, _)| *b), Some(end));
        // Full again, then a crash: recovery is clean and keeps everything synced.
        run.append_exact(&[(1, 10)]);
        let used = used_bytes(&run.storage);
        run.storage.set_space_bytes_max(Some(used + 5));
        let batch = run.batch_of(1, 10);
        let epoch = LeaderEpoch(run.epoch);
        assert!(matches!(block_on(run.log_mut().append(batch, epoch)), Err(EngineError::NoSpace { .. })));
        run.storage.set_space_bytes_max(None);
        let acked = run.acked;
        let recovered = run.crash(CrashFault::TornTail { seed: 11 });
        assert!(recovered >= acked);
    }
}
