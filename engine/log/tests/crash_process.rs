//! Real-process crash test: a child process appends and reports every acknowledged
//! batch; the parent SIGKILLs it at a random moment, reopens the data directory with
//! a real engine, and checks that every acknowledged batch is present, at its
//! offset, byte for byte, that offsets are contiguous and that no offset was
//! acknowledged twice. Cycles run on the same directory, so each recovery starts from
//! the previous one's result.
//!
//! It runs once per fsync policy: the rule is the same under all three (a crash of
//! the process never loses an acknowledged batch; only a crash of the machine may,
//! and only under `never` and `interval`).
//!
//! The child is this test binary itself, re-executed with `CORELOG_CRASH_CHILD_DIR`
//! (and the policy in `CORELOG_CRASH_CHILD_FSYNC`) set; without it, `child_appender`
//! returns at once.
//! `CORELOG_CRASH_SEED=<n>` repeats a run.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use corelog_engine::batch::{build_batch, split_batches, BatchProducer, RecordSpec};
use corelog_engine::*;
use futures_lite::future::block_on;
use rand::{Rng, SeedableRng};

const CHILD_ENV: &str = "CORELOG_CRASH_CHILD_DIR";
const CHILD_FSYNC_ENV: &str = "CORELOG_CRASH_CHILD_FSYNC";
const TOPIC: &str = "crash";
const PARTITIONS: i32 = 2;
const APPENDERS: usize = 4;
const CYCLES: usize = 20;

fn topic_partition(index: i32) -> TopicPartition {
    TopicPartition::new(TopicName::new(TOPIC).expect("valid"), PartitionId(index))
}

fn engine_config(dir: &Path) -> EngineConfig {
    let mut config = EngineConfig::new(dir);
    config.shard_count = 2;
    config
}

/// The child: appends forever from several threads, printing `ACK` lines.
#[test]
fn child_appender() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let durability: Durability =
        std::env::var(CHILD_FSYNC_ENV).expect("child: the policy").parse().expect("child: a valid policy");
    let engine = Engine::start(engine_config(Path::new(&dir))).expect("child: start engine");
    let handle = engine.handle();
    let name = TopicName::new(TOPIC).expect("valid");
    if handle.topic(&name).is_none() {
        let config = TopicConfig {
            durability,
            segment_bytes: 256 << 10,
            // The batches carry small timestamps (their sequence numbers), decades old
            // for `retention.ms`: without this, age retention deletes acknowledged
            // segments and the check below would blame recovery for it.
            retention_ms: -1,
            ..TopicConfig::default()
        };
        block_on(handle.create_topic(name, PARTITIONS, config)).expect("child: create topic");
    }
    let threads: Vec<_> = (0..APPENDERS)
        .map(|appender| {
            let handle = handle.clone();
            std::thread::spawn(move || {
                let partition = topic_partition((appender % PARTITIONS as usize) as i32);
                let mut rng = rand::rngs::StdRng::seed_from_u64(appender as u64 ^ std::process::id() as u64);
                for sequence in 0u64.. {
                    let records: Vec<Vec<u8>> = (0..rng.gen_range(1..20))
                        .map(|i| {
                            let mut value = format!("{}:{appender}:{sequence}:{i}:", std::process::id()).into_bytes();
                            value.resize(value.len() + rng.gen_range(0..3000), b'a' + (i % 26) as u8);
                            value
                        })
                        .collect();
                    let specs: Vec<RecordSpec<'_>> = records
                        .iter()
                        .map(|v| RecordSpec { key: None, value: Some(v), timestamp_delta_ms: 0 })
                        .collect();
                    let batch = build_batch(TimestampMs(sequence as i64), BatchProducer::default(), &specs);
                    let checksum = crc32c::crc32c(&batch[16..]);
                    let info = block_on(handle.append(&partition, batch, LeaderEpoch(0))).expect("child: append");
                    // One write per line: a kill can cut the last line, never mix two.
                    let line = format!(
                        "ACK {} {} {} {checksum}\n",
                        partition.partition.0, info.base_offset.0, info.last_offset.0
                    );
                    use std::io::Write;
                    let mut stdout = std::io::stdout().lock();
                    stdout.write_all(line.as_bytes()).expect("child: stdout");
                    stdout.flush().expect("child: flush");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("child: appender thread");
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ack {
    partition: i32,
    base_offset: i64,
    last_offset: i64,
    checksum: u32,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut fields = line.strip_prefix("ACK ")?.split(' ');
    Some(Ack {
        partition: fields.next()?.parse().ok()?,
        base_offset: fields.next()?.parse().ok()?,
        last_offset: fields.next()?.parse().ok()?,
        checksum: fields.next()?.trim_end().parse().ok()?,
    })
}

/// Runs the child until it has acknowledged something and `kill_after` has passed,
/// SIGKILLs it, and returns the complete ACK lines it printed.
fn run_and_kill_child(dir: &Path, durability: Durability, kill_after: Duration, seed: u64) -> Vec<Ack> {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "child_appender", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .env(CHILD_FSYNC_ENV, durability.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("piped stdout");
    let (first_ack, first_ack_seen) = flume::bounded::<()>(1);
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut acks = Vec::new();
        let mut line = Vec::new();
        // A line is complete only with its newline: the kill may cut the last one.
        while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            if line.ends_with(b"\n") {
                if let Some(ack) = parse_ack(&String::from_utf8_lossy(&line)) {
                    acks.push(ack);
                    let _ = first_ack.try_send(());
                }
            }
            line.clear();
        }
        acks
    });
    if first_ack_seen.recv_timeout(Duration::from_secs(30)).is_err() {
        let _ = child.kill();
        panic!("seed {seed}: the child acknowledged nothing within 30 s");
    }
    std::thread::sleep(kill_after);
    // SAFETY: plain kill(2) on our own child's pid.
    let killed = unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    assert_eq!(killed, 0, "kill failed");
    child.wait().expect("reap child");
    reader.join().expect("reader thread")
}

/// Reopens the directory and checks every acknowledged batch and offset contiguity.
fn verify(dir: &Path, acks: &BTreeMap<(i32, i64), Ack>, seed: u64, cycle: usize) -> (u64, u64) {
    let engine = Engine::start(engine_config(dir)).unwrap_or_else(|e| panic!("seed {seed} cycle {cycle}: reopen: {e}"));
    let handle = engine.handle();
    let mut batches_walked = 0;
    for index in 0..PARTITIONS {
        let partition = topic_partition(index);
        let stats = block_on(handle.stats(&partition)).expect("stats");
        // Nothing here deletes records, so the log must still start at offset 0.
        assert_eq!(stats.log_start_offset, Offset(0), "seed {seed} cycle {cycle}: log start moved: {stats:?}");
        // Walk the whole partition: contiguous offsets, only valid batches.
        let mut by_base = BTreeMap::new();
        let mut offset = stats.log_start_offset;
        while offset < stats.log_end_offset {
            let read = block_on(handle.read(&partition, offset, 1 << 20, Some(stats.log_end_offset))).expect("read");
            assert!(!read.bytes.is_empty(), "seed {seed} cycle {cycle}: empty read at {offset} below end {stats:?}");
            let batches = split_batches(&read.bytes)
                .unwrap_or_else(|e| panic!("seed {seed} cycle {cycle}: corrupt batch served at {offset}: {e}"));
            for (position, header) in batches {
                assert_eq!(header.base_offset, offset, "seed {seed} cycle {cycle}: offsets not contiguous");
                let bytes = &read.bytes[position..position + header.size_bytes()];
                by_base.insert(header.base_offset.0, (header.last_offset().0, crc32c::crc32c(&bytes[16..])));
                offset = header.last_offset().next();
                batches_walked += 1;
            }
        }
        for ack in acks.values().filter(|a| a.partition == index) {
            let found = by_base.get(&ack.base_offset);
            assert_eq!(
                found,
                Some(&(ack.last_offset, ack.checksum)),
                "seed {seed} cycle {cycle}: acknowledged batch {ack:?} lost or changed (log {stats:?})"
            );
        }
    }
    engine.shutdown().expect("clean shutdown");
    (acks.len() as u64, batches_walked)
}

#[test]
fn sigkill_never_loses_an_acknowledged_batch_under_fsync_always() {
    sigkill_cycles(Durability::Always);
}

#[test]
fn sigkill_never_loses_an_acknowledged_batch_under_fsync_never() {
    sigkill_cycles(Durability::Never);
}

#[test]
fn sigkill_never_loses_an_acknowledged_batch_under_fsync_interval() {
    sigkill_cycles(Durability::IntervalMs(50));
}

fn sigkill_cycles(durability: Durability) {
    let seed = std::env::var("CORELOG_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64
    });
    println!("crash_process ({durability}): seed {seed} (CORELOG_CRASH_SEED={seed} repeats it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let policy = durability.to_string().replace(':', "-");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("crash-process-{policy}-{seed}"));
    let _ = std::fs::remove_dir_all(&dir);
    let started = Instant::now();
    let mut acks: BTreeMap<(i32, i64), Ack> = BTreeMap::new();
    for cycle in 0..CYCLES {
        let kill_after = Duration::from_millis(rng.gen_range(20..300));
        let new_acks = run_and_kill_child(&dir, durability, kill_after, seed);
        for ack in &new_acks {
            let previous = acks.insert((ack.partition, ack.base_offset), *ack);
            assert!(previous.is_none(), "seed {seed} cycle {cycle}: offset {ack:?} acknowledged twice");
        }
        let (checked, walked) = verify(&dir, &acks, seed, cycle);
        println!(
            "cycle {cycle:2}: killed after {kill_after:?}, {} new acks, {checked} acks checked, {walked} batches walked",
            new_acks.len()
        );
    }
    println!(
        "crash_process ({durability}): {CYCLES} SIGKILL cycles, {} acknowledged batches intact, {:?}",
        acks.len(),
        started.elapsed()
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
}
