//! Engine vs raw-disk benchmark: `cargo bench -p corelog-engine`.
//!
//! Measures, through the real [`Engine`] (glommio shards over O_DIRECT files):
//!
//! 1. append throughput for 100 B / 1 KiB / 16 KiB messages in 16 KiB / 64 KiB
//!    batches, under `never`, `interval:5` and `always`, with 1 shard and all shards;
//! 2. sequential read throughput after a clean restart (so from disk);
//! 3. group-commit latency (p50/p99) and throughput under `always` with 1, 8 and 64
//!    concurrent appenders of one 1 KiB message each;
//!
//! and, in the same run, on the same disk and io path (glommio `DmaFile` on an
//! executor pinned like shard 0, or like shards 0..n-1) with no engine logic:
//! sequential 1 MiB O_DIRECT writes and reads, and a small-write + fdatasync loop.
//!
//! Every case runs 3 times and the table shows medians. Each engine run is paired
//! with a raw run made right before or after it (alternating), because this kind of
//! machine's disk swings 2-3x within seconds; `paired` is the median of those
//! per-pair ratios. Every measured run starts after a syncfs of the data dir, so no
//! run pays for the write-back of the one before. Data lives in `<target>/bench-data`
//! and is removed between runs. Figures go to stdout and to
//! `<target>/bench/engine.json`; a diagnostics section gives, per run, device
//! requests and flushes (/proc/diskstats) and the process's CPU use.
//!
//! Knobs (environment): `CORELOG_BENCH_REPEATS` (default 3), `CORELOG_BENCH_SCALE`
//! (multiplies bytes and time per run, default 1.0), `CORELOG_BENCH_CLIENTS`
//! (client threads per partition, default 1), `CORELOG_BENCH_INFLIGHT` (appends in
//! flight per client thread; default: 2 MiB of batches per partition, at least 8),
//! `CORELOG_BENCH_ONLY` (substring filter on
//! case names; raw baselines always run). Without `--bench` on the command line (as
//! `cargo test --benches` runs it) it does a quick smoke pass: 1 repeat, small data.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::task::Poll;
use std::time::{Duration, Instant};

use corelog_engine::batch::build_value_batch;
use corelog_engine::shard::shard_for;
use corelog_engine::storage::dma::WRITE_BUFFER_BYTES_DEFAULT;
use corelog_engine::storage::DmaStorage;
use corelog_engine::{
    Durability, Engine, EngineConfig, EngineHandle, LeaderEpoch, Offset, PartitionId, TimestampMs, TopicConfig,
    TopicName, TopicPartition,
};
use futures_lite::future::block_on;
use glommio::io::{DmaFile, OpenOptions};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;

const MB: f64 = 1e6;
const TOPIC: &str = "bench";
/// What the engine registers per shard (`EngineConfig::new`'s default); the raw
/// executors use the same.
const IO_MEMORY_BYTES: usize = 10 << 20;
const MESSAGE_SIZES: [usize; 3] = [100, 1024, 16 << 10];
const BATCH_SIZES: [usize; 2] = [16 << 10, 64 << 10];
const POLICIES: [Durability; 3] = [Durability::Never, Durability::IntervalMs(5), Durability::Always];
/// The append case whose data is also read back after a restart.
const READ_CASE: (usize, usize, Durability) = (1024, 64 << 10, Durability::Never);
const GROUP_COMMIT_APPENDERS: [usize; 3] = [1, 8, 64];
const GROUP_COMMIT_MESSAGE_BYTES: usize = 1024;
/// Bytes of appends kept in flight per partition by default: two engine write
/// buffers, so the partition queue still holds a full buffer's worth of appends
/// while the actor waits on a 1 MiB write (queue depth 1024 ops is not the limit).
const INFLIGHT_BYTES: usize = 2 * WRITE_BUFFER_BYTES_DEFAULT;

// ---------------------------------------------------------------------------------
// Settings

#[derive(Clone, Debug)]
struct Settings {
    repeats: usize,
    /// Bytes per append run under `never` and `interval` (split evenly over partitions).
    bytes_fast: u64,
    /// Bytes per append run under `always`.
    bytes_always: u64,
    /// Upper bound on one append run.
    append_time_cap: Duration,
    /// Length of one group-commit or fdatasync latency run, and its unrecorded warm-up.
    latency_run: Duration,
    latency_warmup: Duration,
    clients_per_partition: usize,
    /// Appends in flight per client thread; `None`: enough for `INFLIGHT_BYTES` per partition.
    inflight_per_client: Option<usize>,
    only: Option<String>,
    cpu_ids: Vec<usize>,
    data_root: PathBuf,
    out_dir: PathBuf,
}

fn env_parse<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

impl Settings {
    fn from_env() -> Settings {
        let bench_mode = std::env::args().any(|a| a == "--bench");
        let scale: f64 = env_parse("CORELOG_BENCH_SCALE").unwrap_or(if bench_mode { 1.0 } else { 0.02 });
        let repeats = env_parse("CORELOG_BENCH_REPEATS").unwrap_or(if bench_mode { 3 } else { 1 });
        let mib = |n: f64| ((n * scale * (1 << 20) as f64) as u64).max(4 << 20);
        let secs = |s: f64| Duration::from_secs_f64((s * scale).max(0.2));
        // Sorted, as the engine does, so raw executor i is on shard i's core.
        let mut cpu_ids: Vec<usize> =
            glommio::CpuSet::online().map(|set| set.iter().map(|location| location.cpu).collect()).unwrap_or_default();
        cpu_ids.sort_unstable();
        let target = target_dir();
        Settings {
            repeats: repeats.max(1),
            bytes_fast: mib(256.0),
            bytes_always: mib(64.0),
            append_time_cap: secs(4.0),
            latency_run: secs(2.0),
            latency_warmup: Duration::from_millis(200).min(secs(2.0) / 4),
            clients_per_partition: env_parse("CORELOG_BENCH_CLIENTS").unwrap_or(1usize).max(1),
            inflight_per_client: env_parse::<usize>("CORELOG_BENCH_INFLIGHT").map(|n| n.max(1)),
            only: std::env::var("CORELOG_BENCH_ONLY").ok().filter(|s| !s.is_empty()),
            cpu_ids: if cpu_ids.is_empty() { vec![0] } else { cpu_ids },
            data_root: target.join("bench-data"),
            out_dir: target.join("bench"),
        }
    }

    fn selected(&self, case: &str) -> bool {
        self.only.as_ref().is_none_or(|only| case.contains(only.as_str()))
    }
}

/// The workspace target dir: `CARGO_TARGET_DIR` if absolute, else the ancestor of
/// this executable that holds `CACHEDIR.TAG` (`target/release/deps/engine-…`), else
/// `<manifest>/../../target` (the workspace root is two levels up).
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        if dir.is_absolute() {
            return dir;
        }
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.ancestors().skip(1).find(|dir| dir.join("CACHEDIR.TAG").is_file()) {
            return dir.to_path_buf();
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target")
}

fn wipe(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => panic!("removing {}: {error}", dir.display()),
    }
}

/// Lets the device drain what earlier runs left behind: syncfs flushes the file
/// system and the device's write cache. On this kind of virtual disk, writes land in
/// the host's cache and a flush makes the host write them back; without this, a run
/// pays for the backlog of the run before it, and figures swing 2-3x from run to run.
fn settle(dir: &Path) {
    use std::os::unix::io::AsRawFd;
    let handle = std::fs::File::open(dir).unwrap_or_else(|e| panic!("opening {}: {e}", dir.display()));
    // SAFETY: syncfs only reads the descriptor, which stays open for the call.
    if unsafe { libc::syncfs(handle.as_raw_fd()) } != 0 {
        panic!("syncfs {}: {}", dir.display(), std::io::Error::last_os_error());
    }
    std::thread::sleep(Duration::from_millis(50));
}

fn policy_name(policy: Durability) -> String {
    policy.to_string()
}

fn size_name(bytes: usize) -> String {
    if bytes >= 1024 && bytes & 1023 == 0 {
        format!("{}KiB", bytes / 1024)
    } else {
        format!("{bytes}B")
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

// ---------------------------------------------------------------------------------
// Device counters (/proc/diskstats) for the diagnostics section.

#[derive(Clone, Copy, Debug, Default)]
struct DiskCounters {
    writes: u64,
    sectors_written: u64,
    flushes: u64,
    reads: u64,
    sectors_read: u64,
}

impl DiskCounters {
    fn since(self, before: DiskCounters) -> DiskCounters {
        DiskCounters {
            writes: self.writes.saturating_sub(before.writes),
            sectors_written: self.sectors_written.saturating_sub(before.sectors_written),
            flushes: self.flushes.saturating_sub(before.flushes),
            reads: self.reads.saturating_sub(before.reads),
            sectors_read: self.sectors_read.saturating_sub(before.sectors_read),
        }
    }
}

/// The block device holding `dir` as (major, minor), and its name in /proc/diskstats.
fn device_of(dir: &Path) -> Option<(u32, u32, String)> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(dir).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let stats = std::fs::read_to_string("/proc/diskstats").ok()?;
    stats.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.len() > 3 && fields[0] == major.to_string() && fields[1] == minor.to_string())
            .then(|| (major, minor, fields[2].to_string()))
    })
}

fn disk_counters(device: &Option<(u32, u32, String)>) -> DiskCounters {
    let Some((major, minor, _)) = device else { return DiskCounters::default() };
    let Ok(stats) = std::fs::read_to_string("/proc/diskstats") else { return DiskCounters::default() };
    for line in stats.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 3 && f[0] == major.to_string() && f[1] == minor.to_string() {
            let n = |i: usize| f.get(i).and_then(|v| v.parse().ok()).unwrap_or(0u64);
            // After major, minor, name: reads(3) .. sectors read(5), writes(7),
            // sectors written(9), ..., flushes completed(18).
            return DiskCounters {
                reads: n(3),
                sectors_read: n(5),
                writes: n(7),
                sectors_written: n(9),
                flushes: n(18),
            };
        }
    }
    DiskCounters::default()
}

// ---------------------------------------------------------------------------------
// A minimal join-all for `block_on` (futures_lite has no FuturesUnordered).

fn join_all<F: Future>(futures: Vec<F>) -> impl Future<Output = Vec<F::Output>> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    futures_lite::future::poll_fn(move |cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(outputs.iter_mut().map(|o| o.take().expect("every future finished")).collect())
        }
    })
}

// ---------------------------------------------------------------------------------
// Engine runs

struct Workload {
    /// One prebuilt batch; each append sends a copy (as a broker would hand over the
    /// bytes it received).
    batch: Arc<Vec<u8>>,
    messages_per_batch: u64,
    /// Stop issuing once this many bytes were issued to a partition.
    bytes_per_partition: u64,
    time_cap: Duration,
    clients_per_partition: usize,
    inflight_per_client: usize,
    /// Latencies of appends that start before this are not recorded.
    warmup: Duration,
}

/// CPU seconds (user + system) this process has used so far, all threads.
fn cpu_seconds() -> f64 {
    // SAFETY: rusage is plain C data (integers and timevals), so all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we pass by valid pointer and nothing else.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

#[derive(Default)]
struct AppendOutcome {
    bytes: u64,
    messages: u64,
    appends: u64,
    secs: f64,
    latency_us: Option<Histogram<u64>>,
    disk: DiskCounters,
    /// CPU seconds used by the whole process (shards and clients) during the run.
    cpu_secs: f64,
}

struct WorkerTotals {
    bytes: u64,
    appends: u64,
    latency_us: Histogram<u64>,
}

#[allow(clippy::too_many_arguments)]
async fn append_worker(
    handle: EngineHandle,
    partition: TopicPartition,
    batch: Arc<Vec<u8>>,
    issued: Arc<AtomicU64>,
    budget: u64,
    started: Instant,
    deadline: Instant,
    warmup: Duration,
) -> WorkerTotals {
    let mut totals = WorkerTotals { bytes: 0, appends: 0, latency_us: new_histogram() };
    let len = batch.len() as u64;
    loop {
        if issued.fetch_add(len, Ordering::Relaxed) >= budget {
            break;
        }
        let begin = Instant::now();
        if begin >= deadline {
            break;
        }
        let bytes = batch.as_ref().clone();
        if let Err(error) = handle.append(&partition, bytes, LeaderEpoch(0)).await {
            panic!("append to {partition}: {error}");
        }
        if begin.duration_since(started) >= warmup {
            let micros = begin.elapsed().as_micros().max(1) as u64;
            totals.latency_us.saturating_record(micros);
        }
        totals.bytes += len;
        totals.appends += 1;
    }
    totals
}

fn bench_partitions(handle: &EngineHandle) -> Vec<TopicPartition> {
    let topic = TopicName::new(TOPIC).expect("valid topic name");
    let partitions: Vec<TopicPartition> =
        (0..handle.shard_count() as i32).map(|i| TopicPartition::new(topic.clone(), PartitionId(i))).collect();
    let mut owners: Vec<usize> = partitions.iter().map(|p| shard_for(p, handle.shard_count()).0).collect();
    owners.sort_unstable();
    owners.dedup();
    assert_eq!(owners.len(), handle.shard_count(), "one partition per shard");
    partitions
}

fn engine_config(dir: &Path, shards: usize) -> EngineConfig {
    let mut config = EngineConfig::new(dir);
    config.shard_count = shards;
    config
}

/// Starts an engine on an empty `dir`, creates one partition per shard and appends
/// `workload` to each. Returns the engine (still running) and the outcome.
fn engine_append(
    dir: &Path,
    shards: usize,
    policy: Durability,
    workload: &Workload,
    device: &Option<(u32, u32, String)>,
) -> (Engine, AppendOutcome) {
    wipe(dir);
    let engine = Engine::start(engine_config(dir, shards)).expect("engine start");
    let handle = engine.handle();
    // The batches carry a fixed, old timestamp: no age retention, which would
    // delete the active segment too while the run writes or reads it.
    let topic_config = TopicConfig { durability: policy, retention_ms: -1, ..TopicConfig::default() };
    block_on(handle.create_topic(TopicName::new(TOPIC).expect("valid"), handle.shard_count() as i32, topic_config))
        .expect("create topic");
    let partitions = bench_partitions(&handle);
    settle(dir);
    let threads = partitions.len() * workload.clients_per_partition;
    let barrier = Arc::new(Barrier::new(threads + 1));
    let mut joins = Vec::new();
    for partition in &partitions {
        let issued = Arc::new(AtomicU64::new(0));
        for _ in 0..workload.clients_per_partition {
            let (handle, partition, issued, barrier) =
                (handle.clone(), partition.clone(), issued.clone(), barrier.clone());
            let batch = workload.batch.clone();
            let (budget, cap, warmup, inflight) =
                (workload.bytes_per_partition, workload.time_cap, workload.warmup, workload.inflight_per_client);
            joins.push(std::thread::spawn(move || {
                barrier.wait();
                let started = Instant::now();
                let deadline = started + cap;
                let workers = (0..inflight)
                    .map(|_| {
                        append_worker(
                            handle.clone(),
                            partition.clone(),
                            batch.clone(),
                            issued.clone(),
                            budget,
                            started,
                            deadline,
                            warmup,
                        )
                    })
                    .collect();
                let totals = block_on(join_all(workers));
                (totals, Instant::now())
            }));
        }
    }
    let disk_before = disk_counters(device);
    let cpu_before = cpu_seconds();
    barrier.wait();
    let started = Instant::now();
    let mut outcome = AppendOutcome::default();
    let mut latency = new_histogram();
    let mut finished = started;
    for join in joins {
        let (totals, end) = join.join().expect("client thread");
        finished = finished.max(end);
        for worker in totals {
            outcome.bytes += worker.bytes;
            outcome.appends += worker.appends;
            latency.add(&worker.latency_us).expect("same histogram bounds");
        }
    }
    outcome.secs = finished.duration_since(started).as_secs_f64();
    outcome.cpu_secs = cpu_seconds() - cpu_before;
    outcome.disk = disk_counters(device).since(disk_before);
    outcome.messages = outcome.appends * workload.messages_per_batch;
    outcome.latency_us = Some(latency);
    (engine, outcome)
}

/// Latency of an op that does no IO (`stats`) from a client thread to a 1-shard
/// engine and back: the cost of the queues and cross-thread wake-ups alone.
fn engine_round_trip(dir: &Path, settings: &Settings) -> Histogram<u64> {
    wipe(dir);
    let engine = Engine::start(engine_config(dir, 1)).expect("engine start");
    let handle = engine.handle();
    block_on(handle.create_topic(TopicName::new(TOPIC).expect("valid"), 1, TopicConfig::default()))
        .expect("create topic");
    let partition = bench_partitions(&handle).remove(0);
    let mut histogram = new_histogram();
    let started = Instant::now();
    block_on(async {
        while started.elapsed() < settings.latency_warmup + settings.latency_run / 2 {
            let begin = Instant::now();
            handle.stats(&partition).await.expect("stats");
            if begin.duration_since(started) >= settings.latency_warmup {
                histogram.saturating_record(begin.elapsed().as_micros().max(1) as u64);
            }
        }
    });
    engine.shutdown().expect("shutdown");
    wipe(dir);
    histogram
}

struct ReadOutcome {
    bytes: u64,
    secs: f64,
    reads: u64,
}

/// Restarts the engine cleanly, then reads every partition from offset 0 to its end
/// with 1 MiB reads, one reader thread per partition, all at once.
fn engine_read_after_restart(engine: Engine, dir: &Path, shards: usize, expected_bytes: u64) -> ReadOutcome {
    engine.shutdown().expect("clean shutdown");
    let engine = Engine::start(engine_config(dir, shards)).expect("engine restart");
    let handle = engine.handle();
    let partitions = bench_partitions(&handle);
    settle(dir);
    let barrier = Arc::new(Barrier::new(partitions.len() + 1));
    let joins: Vec<_> = partitions
        .iter()
        .map(|partition| {
            let (handle, partition, barrier) = (handle.clone(), partition.clone(), barrier.clone());
            std::thread::spawn(move || {
                let end = block_on(handle.stats(&partition)).expect("stats").log_end_offset;
                barrier.wait();
                let (mut offset, mut bytes, mut reads) = (Offset(0), 0u64, 0u64);
                block_on(async {
                    while offset < end {
                        let read =
                            handle.read(&partition, offset, WRITE_BUFFER_BYTES_DEFAULT, None).await.expect("read");
                        assert!(read.next_offset > offset, "a read below the end must make progress");
                        bytes += read.bytes.len() as u64;
                        reads += 1;
                        offset = read.next_offset;
                    }
                });
                (bytes, reads, Instant::now())
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    let mut outcome = ReadOutcome { bytes: 0, secs: 0.0, reads: 0 };
    let mut finished = started;
    for join in joins {
        let (bytes, reads, end) = join.join().expect("reader thread");
        outcome.bytes += bytes;
        outcome.reads += reads;
        finished = finished.max(end);
    }
    outcome.secs = finished.duration_since(started).as_secs_f64();
    assert_eq!(outcome.bytes, expected_bytes, "read back exactly what was appended");
    engine.shutdown().expect("shutdown after read");
    outcome
}

/// Messages per batch for `message_bytes` values in a batch of at most `batch_bytes`
/// (at least one): batch_bytes / (message + per-record overhead), trimmed for the
/// batch header.
fn messages_per_batch(message_bytes: usize, batch_bytes: usize) -> usize {
    let one = build_value_batch(TimestampMs(0), 1, message_bytes).len();
    let two = build_value_batch(TimestampMs(0), 2, message_bytes).len();
    let per_record = two - one;
    let mut count = (batch_bytes / per_record).max(1);
    while count > 1 && build_value_batch(TimestampMs(0), count, message_bytes).len() > batch_bytes {
        count -= 1;
    }
    count
}

// ---------------------------------------------------------------------------------
// Raw baselines: glommio DmaFile on executors pinned like the shards, no engine.

fn spawn_pinned<T: Send + 'static, F: Future<Output = T> + 'static>(
    cpu: usize,
    name: &str,
    body: impl FnOnce() -> F + Send + 'static,
) -> glommio::ExecutorJoinHandle<T> {
    LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .name(name)
        .io_memory(IO_MEMORY_BYTES)
        .spawn(body)
        .expect("spawn raw executor")
}

async fn raw_open(dir: &Path, name: &str, probe: &str) -> DmaFile {
    DmaStorage::default().prime_device_probe(dir, probe).await.expect("prime device probe");
    let path = dir.join(name);
    OpenOptions::new().read(true).write(true).create(true).dma_open(&path).await.expect("open raw file")
}

/// Sequential O_DIRECT writes of `WRITE_BUFFER_BYTES_DEFAULT`, one in flight per
/// executor (like a partition's active segment), `bytes_per_executor` each, on
/// `executors` executors pinned like shards 0..n-1, each into its own new file.
/// With `durable`, one fdatasync at the end, inside the timing: the device's
/// sustained durable bandwidth, the ceiling for `interval` and `always`.
fn raw_write(
    dir: &Path,
    settings: &Settings,
    executors: usize,
    bytes_per_executor: u64,
    durable: bool,
    device: &Option<(u32, u32, String)>,
) -> (f64, u64, DiskCounters) {
    std::fs::create_dir_all(dir).expect("raw dir");
    let barrier = Arc::new(Barrier::new(executors + 1));
    let joins: Vec<_> = (0..executors)
        .map(|i| {
            let (dir, barrier) = (dir.to_path_buf(), barrier.clone());
            spawn_pinned(settings.cpu_ids[i % settings.cpu_ids.len()], &format!("raw-write-{i}"), move || async move {
                let file = raw_open(&dir, &format!("raw-{i}.data"), &format!(".io-probe-bench-{i}")).await;
                let mut buffer = file.alloc_dma_buffer(WRITE_BUFFER_BYTES_DEFAULT);
                buffer.as_bytes_mut().fill(0x5a);
                let buffer = Rc::new(buffer);
                barrier.wait();
                let mut position = 0u64;
                while position < bytes_per_executor {
                    let written = file.write_rc_at(buffer.clone(), position).await.expect("raw write");
                    assert_eq!(written, WRITE_BUFFER_BYTES_DEFAULT, "short raw write");
                    position += written as u64;
                }
                if durable {
                    file.fdatasync().await.expect("raw fdatasync");
                }
                let end = Instant::now();
                file.close().await.expect("close raw file");
                (position, end)
            })
        })
        .collect();
    let before = disk_counters(device);
    barrier.wait();
    let started = Instant::now();
    let mut bytes = 0;
    let mut finished = started;
    for join in joins {
        let (written, end) = join.join().expect("raw writer");
        bytes += written;
        finished = finished.max(end);
    }
    (finished.duration_since(started).as_secs_f64(), bytes, disk_counters(device).since(before))
}

/// Sequential O_DIRECT reads of the files `raw_write` left, 1 MiB each, one in flight
/// per executor.
fn raw_read(dir: &Path, settings: &Settings, executors: usize) -> (f64, u64) {
    let barrier = Arc::new(Barrier::new(executors + 1));
    let joins: Vec<_> = (0..executors)
        .map(|i| {
            let (dir, barrier) = (dir.to_path_buf(), barrier.clone());
            spawn_pinned(settings.cpu_ids[i % settings.cpu_ids.len()], &format!("raw-read-{i}"), move || async move {
                let file = raw_open(&dir, &format!("raw-{i}.data"), &format!(".io-probe-bench-{i}")).await;
                let size = file.file_size().await.expect("raw size");
                barrier.wait();
                let mut position = 0u64;
                while position < size {
                    let read = file.read_at(position, WRITE_BUFFER_BYTES_DEFAULT).await.expect("raw read");
                    assert!(!read.is_empty(), "raw read made no progress");
                    position += read.len() as u64;
                }
                let end = Instant::now();
                file.close().await.expect("close raw file");
                (position, end)
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    let mut bytes = 0;
    let mut finished = started;
    for join in joins {
        let (read, end) = join.join().expect("raw reader");
        bytes += read;
        finished = finished.max(end);
    }
    (finished.duration_since(started).as_secs_f64(), bytes)
}

/// What the group commit does with one appender, without the engine: append 1 KiB
/// of logical data, write the block(s) holding the new tail (zero padded, rewriting
/// the partial block) at the block-aligned start, then fdatasync. Latency per loop
/// in µs, and loops per second.
fn raw_fdatasync(
    dir: &Path,
    settings: &Settings,
    device: &Option<(u32, u32, String)>,
) -> (Histogram<u64>, f64, DiskCounters) {
    std::fs::create_dir_all(dir).expect("raw dir");
    settle(dir);
    let (run, warmup) = (settings.latency_run, settings.latency_warmup);
    let before = disk_counters(device);
    let owned_dir = dir.to_path_buf();
    let (histogram, loops, secs) = spawn_pinned(settings.cpu_ids[0], "raw-fsync", move || {
        let dir = owned_dir;
        async move {
            let file = raw_open(&dir, "raw-sync.data", ".io-probe-bench-sync").await;
            let alignment = file.alignment().max(512);
            let mut histogram = new_histogram();
            let mut logical_len = 0u64;
            let started = Instant::now();
            let mut loops = 0u64;
            let mut measured_from = None;
            while started.elapsed() < run + warmup {
                let begin = Instant::now();
                let block_start = logical_len - logical_len % alignment;
                logical_len += GROUP_COMMIT_MESSAGE_BYTES as u64;
                let write_len = (logical_len - block_start).next_multiple_of(alignment) as usize;
                let mut buffer = file.alloc_dma_buffer(write_len);
                buffer.as_bytes_mut().fill(0x5a);
                let written = file.write_at(buffer, block_start).await.expect("raw small write");
                assert_eq!(written, write_len, "short raw write");
                file.fdatasync().await.expect("raw fdatasync");
                if begin.duration_since(started) >= warmup {
                    measured_from.get_or_insert(begin);
                    histogram.saturating_record(begin.elapsed().as_micros().max(1) as u64);
                    loops += 1;
                }
            }
            let secs = measured_from.map_or(0.0, |from| from.elapsed().as_secs_f64());
            file.close().await.expect("close raw file");
            (histogram, loops, secs)
        }
    })
    .join()
    .expect("raw fdatasync executor");
    let counters = disk_counters(device).since(before);
    wipe(dir);
    (histogram, loops as f64 / secs.max(1e-9), counters)
}

// ---------------------------------------------------------------------------------
// Results

/// Per figure, the value of each repeat.
#[derive(Default)]
struct Samples(BTreeMap<String, Vec<f64>>);

impl Samples {
    fn add(&mut self, key: impl Into<String>, value: f64) {
        self.0.entry(key.into()).or_default().push(value);
    }

    fn median(&self, key: &str) -> Option<f64> {
        let values = self.0.get(key)?;
        let mut sorted = values.clone();
        sorted.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        (!sorted.is_empty()).then(|| sorted[sorted.len() / 2])
    }

    fn all(&self, key: &str) -> String {
        self.0.get(key).map_or(String::new(), |v| v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join("/"))
    }
}

struct Row {
    case: String,
    engine: f64,
    raw: f64,
    unit: &'static str,
    shards: Option<usize>,
    policy: Option<String>,
    /// (verdict, target text) for the three target rows.
    target: Option<(bool, String)>,
    /// The repeats behind the engine figure.
    repeats: String,
    /// Median over repeats of engine/raw from runs made next to each other.
    paired: Option<f64>,
}

impl Row {
    fn ratio(&self) -> f64 {
        if self.raw == 0.0 {
            f64::NAN
        } else {
            self.engine / self.raw
        }
    }
}

fn fmt_value(value: f64) -> String {
    if !value.is_finite() {
        "-".to_string()
    } else if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

// ---------------------------------------------------------------------------------

fn main() {
    let settings = Settings::from_env();
    std::fs::create_dir_all(&settings.data_root).expect("bench data dir");
    std::fs::create_dir_all(&settings.out_dir).expect("bench output dir");
    let device = device_of(&settings.data_root);
    let all_shards = settings.cpu_ids.len();
    let mut shard_counts = vec![1usize, all_shards];
    shard_counts.dedup();
    let bench_started = Instant::now();

    print_environment(&settings, &device, all_shards);

    let mut samples = Samples::default();
    let mut diagnostics: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut log = |key: &str, line: String| diagnostics.entry(key.to_string()).or_default().push(line);
    let raw_dir = settings.data_root.join("raw");
    let engine_dir = settings.data_root.join("engine");

    for round in 0..settings.repeats {
        eprintln!("round {}/{} (elapsed {:.0} s)", round + 1, settings.repeats, bench_started.elapsed().as_secs_f64());

        // Group commit, right after its raw baseline: one partition on one shard, one
        // 1 KiB message per append.
        let (histogram, ops, disk) = raw_fdatasync(&raw_dir, &settings, &device);
        let raw_p99 = histogram.value_at_quantile(0.99) as f64;
        samples.add("raw/fdatasync/p50", histogram.value_at_quantile(0.50) as f64);
        samples.add("raw/fdatasync/p99", raw_p99);
        samples.add("raw/fdatasync/ops", ops);
        log(
            "raw/fdatasync",
            format!(
                "{} loops, p50/p99/max {}/{}/{} µs, device writes {}, flushes {}",
                histogram.len(),
                histogram.value_at_quantile(0.5),
                histogram.value_at_quantile(0.99),
                histogram.max(),
                disk.writes,
                disk.flushes
            ),
        );
        let group_commit_runs = GROUP_COMMIT_APPENDERS
            .iter()
            .map(|&a| (Durability::Always, a))
            .chain([(Durability::Never, 64), (Durability::Never, 1)]);
        for (policy, appenders) in group_commit_runs {
            let key = format!("group-commit/{}/a{appenders}", policy_name(policy));
            if !settings.selected(&key) && !settings.selected("always-64-vs-never") {
                continue;
            }
            let workload = Workload {
                batch: Arc::new(build_value_batch(TimestampMs(1_700_000_000_000), 1, GROUP_COMMIT_MESSAGE_BYTES)),
                messages_per_batch: 1,
                bytes_per_partition: u64::MAX,
                time_cap: settings.latency_run + settings.latency_warmup,
                clients_per_partition: 1,
                inflight_per_client: appenders,
                warmup: settings.latency_warmup,
            };
            let (engine, outcome) = engine_append(&engine_dir, 1, policy, &workload, &device);
            engine.shutdown().expect("shutdown");
            wipe(&engine_dir);
            let latency = outcome.latency_us.expect("latency");
            samples.add(format!("{key}/p50"), latency.value_at_quantile(0.50) as f64);
            samples.add(format!("{key}/p99"), latency.value_at_quantile(0.99) as f64);
            samples.add(format!("{key}/paired-p99"), latency.value_at_quantile(0.99) as f64 / raw_p99);
            samples.add(format!("{key}/msgps"), outcome.messages as f64 / outcome.secs);
            log(
                &key,
                format!(
                    "{} appends in {:.2} s, p50/p99/max {}/{}/{} µs, device writes {}, flushes {} ({:.1} appends per flush), cpu {:.0}% of {} cores",
                    outcome.appends,
                    outcome.secs,
                    latency.value_at_quantile(0.5),
                    latency.value_at_quantile(0.99),
                    latency.max(),
                    outcome.disk.writes,
                    outcome.disk.flushes,
                    outcome.appends as f64 / outcome.disk.flushes.max(1) as f64,
                    outcome.cpu_secs / outcome.secs * 100.0 / settings.cpu_ids.len() as f64,
                    settings.cpu_ids.len(),
                ),
            );
        }

        if settings.selected("round-trip") || settings.selected("group-commit") {
            let latency = engine_round_trip(&engine_dir, &settings);
            samples.add("round-trip/stats/p50", latency.value_at_quantile(0.50) as f64);
            samples.add("round-trip/stats/p99", latency.value_at_quantile(0.99) as f64);
        }

        // Appends, each next to a raw write of the same bytes on as many executors as
        // shards (raw first in every other run, so drift hits both sides alike). The
        // READ_CASE data is also read back after a clean restart, and the raw file too.
        let mut case_index = round;
        for &shards in &shard_counts {
            for &policy in &POLICIES {
                for &message_bytes in &MESSAGE_SIZES {
                    for &batch_bytes in &BATCH_SIZES {
                        let key = append_key(message_bytes, batch_bytes, policy, shards);
                        let read_too = (message_bytes, batch_bytes, policy) == READ_CASE && settings.selected("read/");
                        if !settings.selected(&key) && !read_too {
                            continue;
                        }
                        case_index += 1;
                        let count = messages_per_batch(message_bytes, batch_bytes);
                        let batch = build_value_batch(TimestampMs(1_700_000_000_000), count, message_bytes);
                        let batch_len = batch.len();
                        let bytes_total =
                            if policy == Durability::Always { settings.bytes_always } else { settings.bytes_fast };
                        let workload = Workload {
                            batch: Arc::new(batch),
                            messages_per_batch: count as u64,
                            bytes_per_partition: bytes_total / shards as u64,
                            time_cap: settings.append_time_cap,
                            clients_per_partition: settings.clients_per_partition,
                            inflight_per_client: settings.inflight_per_client.unwrap_or_else(|| {
                                INFLIGHT_BYTES.div_ceil(batch_len * settings.clients_per_partition).max(8)
                            }),
                            warmup: Duration::ZERO,
                        };
                        let raw_first = case_index % 2 == 0;
                        let mut raw = None;
                        let mut run_raw = |raw: &mut Option<(f64, Option<f64>)>| {
                            wipe(&raw_dir);
                            settle(&settings.data_root);
                            let durable = policy != Durability::Never;
                            let (secs, bytes, disk) =
                                raw_write(&raw_dir, &settings, shards, bytes_total / shards as u64, durable, &device);
                            let write = bytes as f64 / secs / MB;
                            let read = read_too.then(|| {
                                settle(&settings.data_root);
                                let (secs, bytes) = raw_read(&raw_dir, &settings, shards);
                                bytes as f64 / secs / MB
                            });
                            wipe(&raw_dir);
                            let raw_key = if durable { "raw/write+fdatasync" } else { "raw/write" };
                            samples.add(format!("{raw_key}/x{shards}"), write);
                            if let Some(read) = read {
                                samples.add(format!("raw/read/x{shards}"), read);
                            }
                            log(
                                &format!("{key} raw"),
                                format!(
                                    "{:.0} MiB in {:.2} s, device writes {} (avg {:.0} KiB){}",
                                    bytes as f64 / (1 << 20) as f64,
                                    secs,
                                    disk.writes,
                                    disk.sectors_written as f64 * 512.0 / disk.writes.max(1) as f64 / 1024.0,
                                    read.map_or(String::new(), |r| format!(", read back at {r:.0} MB/s")),
                                ),
                            );
                            *raw = Some((write, read));
                        };
                        if raw_first {
                            run_raw(&mut raw);
                        }
                        let (engine, outcome) = engine_append(&engine_dir, shards, policy, &workload, &device);
                        let read = if read_too {
                            Some(engine_read_after_restart(engine, &engine_dir, shards, outcome.bytes))
                        } else {
                            engine.shutdown().expect("shutdown");
                            None
                        };
                        wipe(&engine_dir);
                        if !raw_first {
                            run_raw(&mut raw);
                        }
                        let (raw_write_mbps, raw_read_mbps) = raw.expect("raw ran");
                        let engine_mbps = outcome.bytes as f64 / outcome.secs / MB;
                        samples.add(format!("{key}/MBps"), engine_mbps);
                        samples.add(format!("{key}/raw-MBps"), raw_write_mbps);
                        samples.add(format!("{key}/paired"), engine_mbps / raw_write_mbps);
                        samples.add(format!("{key}/msgps"), outcome.messages as f64 / outcome.secs);
                        samples.add(format!("{key}/bytes-per-message"), workload.batch.len() as f64 / count as f64);
                        let latency = outcome.latency_us.as_ref().expect("latency");
                        log(
                            &key,
                            format!(
                                "{:.0} MiB in {:.2} s, {} appends of {} B ({} msgs), append p50/p99 {}/{} µs, device writes {} (avg {:.0} KiB), flushes {}, cpu {:.2} s ({:.0}% of {} cores)",
                                outcome.bytes as f64 / (1 << 20) as f64,
                                outcome.secs,
                                outcome.appends,
                                workload.batch.len(),
                                count,
                                latency.value_at_quantile(0.5),
                                latency.value_at_quantile(0.99),
                                outcome.disk.writes,
                                outcome.disk.sectors_written as f64 * 512.0 / outcome.disk.writes.max(1) as f64 / 1024.0,
                                outcome.disk.flushes,
                                outcome.cpu_secs,
                                outcome.cpu_secs / outcome.secs * 100.0 / settings.cpu_ids.len() as f64,
                                settings.cpu_ids.len(),
                            ),
                        );
                        if let (Some(read), Some(raw_read_mbps)) = (read, raw_read_mbps) {
                            let read_key = format!("read/s{shards}");
                            let engine_read_mbps = read.bytes as f64 / read.secs / MB;
                            samples.add(format!("{read_key}/MBps"), engine_read_mbps);
                            samples.add(format!("{read_key}/raw-MBps"), raw_read_mbps);
                            samples.add(format!("{read_key}/paired"), engine_read_mbps / raw_read_mbps);
                            log(
                                &read_key,
                                format!(
                                    "{:.0} MiB in {:.2} s, {} reads ({:.0} KiB per read)",
                                    read.bytes as f64 / (1 << 20) as f64,
                                    read.secs,
                                    read.reads,
                                    read.bytes as f64 / read.reads.max(1) as f64 / 1024.0
                                ),
                            );
                        }
                    }
                }
            }
        }
    }

    let rows = build_rows(&samples, &shard_counts);
    print_table(&rows);
    print_raw(&samples);
    print_breakdown(&samples);
    print_diagnostics(&diagnostics);
    write_json(&rows, &settings.out_dir.join("engine.json"));
    wipe(&settings.data_root);
    println!("total bench time {:.0} s", bench_started.elapsed().as_secs_f64());
}

fn append_key(message_bytes: usize, batch_bytes: usize, policy: Durability, shards: usize) -> String {
    format!("append/{}/{}/{}/s{shards}", size_name(message_bytes), size_name(batch_bytes), policy_name(policy))
}

fn build_rows(samples: &Samples, shard_counts: &[usize]) -> Vec<Row> {
    let mut rows = Vec::new();
    let median = |key: &str| samples.median(key);
    #[allow(clippy::too_many_arguments)]
    let mut push = |case: String,
                    engine: Option<f64>,
                    raw: Option<f64>,
                    unit,
                    shards,
                    policy: &str,
                    target,
                    key: &str,
                    paired: Option<f64>| {
        if let (Some(engine), Some(raw)) = (engine, raw) {
            let policy = Some(policy.to_string());
            rows.push(Row {
                case,
                engine,
                raw,
                unit,
                shards: Some(shards),
                policy,
                target,
                repeats: samples.all(key),
                paired,
            });
        }
    };
    for &shards in shard_counts {
        for &policy in &POLICIES {
            let name = policy_name(policy);
            for &message_bytes in &MESSAGE_SIZES {
                for &batch_bytes in &BATCH_SIZES {
                    let key = append_key(message_bytes, batch_bytes, policy, shards);
                    let raw_write = median(&format!("{key}/raw-MBps"));
                    let per_message = median(&format!("{key}/bytes-per-message"));
                    let raw_msgps = raw_write.zip(per_message).map(|(mbps, per)| mbps * MB / per);
                    let paired = median(&format!("{key}/paired"));
                    push(
                        format!("{key} MB/s"),
                        median(&format!("{key}/MBps")),
                        raw_write,
                        "MB/s",
                        shards,
                        &name,
                        None,
                        &format!("{key}/MBps"),
                        paired,
                    );
                    push(
                        format!("{key} msgs/s"),
                        median(&format!("{key}/msgps")),
                        raw_msgps,
                        "msgs/s",
                        shards,
                        &name,
                        None,
                        &format!("{key}/msgps"),
                        paired,
                    );
                }
            }
        }
        let key = format!("read/s{shards}");
        push(
            format!("{key} 1KiB/64KiB after restart"),
            median(&format!("{key}/MBps")),
            median(&format!("{key}/raw-MBps")),
            "MB/s",
            shards,
            "never",
            None,
            &format!("{key}/MBps"),
            median(&format!("{key}/paired")),
        );
    }
    let raw_p50 = median("raw/fdatasync/p50");
    let raw_p99 = median("raw/fdatasync/p99");
    let raw_ops = median("raw/fdatasync/ops");
    for appenders in GROUP_COMMIT_APPENDERS {
        let key = format!("group-commit/always/a{appenders}");
        push(
            format!("{key} p50"),
            median(&format!("{key}/p50")),
            raw_p50,
            "µs",
            1,
            "always",
            None,
            &format!("{key}/p50"),
            None,
        );
        push(
            format!("{key} p99"),
            median(&format!("{key}/p99")),
            raw_p99,
            "µs",
            1,
            "always",
            None,
            &format!("{key}/p99"),
            median(&format!("{key}/paired-p99")),
        );
        push(
            format!("{key} throughput"),
            median(&format!("{key}/msgps")),
            raw_ops,
            "msgs/s",
            1,
            "always",
            None,
            &format!("{key}/msgps"),
            None,
        );
    }

    // The three targets.
    for &shards in shard_counts {
        let key = append_key(1024, 64 << 10, Durability::Never, shards);
        let (engine, raw) = (median(&format!("{key}/MBps")), median(&format!("{key}/raw-MBps")));
        let verdict = engine.zip(raw).map(|(e, r)| (e / r >= 0.8, "engine/raw ≥ 0.8".to_string()));
        let case = format!("target: append 1KiB/64KiB never s{shards} vs raw write");
        push(
            case,
            engine,
            raw,
            "MB/s",
            shards,
            "never",
            verdict,
            &format!("{key}/MBps"),
            median(&format!("{key}/paired")),
        );
    }
    let (always, never) = (median("group-commit/always/a64/msgps"), median("group-commit/never/a64/msgps"));
    let verdict = always.zip(never).map(|(a, n)| (a / n >= 0.5, "always/never ≥ 0.5".to_string()));
    push(
        "always-64-vs-never".to_string(),
        always,
        never,
        "msgs/s",
        1,
        "always",
        verdict,
        "group-commit/always/a64/msgps",
        None,
    );
    let p99 = median("group-commit/always/a1/p99");
    let verdict = p99.zip(raw_p99).map(|(e, r)| (e / r <= 2.0, "engine/raw ≤ 2".to_string()));
    let paired = median("group-commit/always/a1/paired-p99");
    push(
        "target: group-commit p99 a1 vs fdatasync p99".to_string(),
        p99,
        raw_p99,
        "µs",
        1,
        "always",
        verdict,
        "group-commit/always/a1/p99",
        paired,
    );
    rows
}

fn print_environment(settings: &Settings, device: &Option<(u32, u32, String)>, all_shards: usize) {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let scheduler = device
        .as_ref()
        .and_then(|(_, _, name)| std::fs::read_to_string(format!("/sys/block/{name}/queue/scheduler")).ok())
        .unwrap_or_default();
    println!("== corelog engine benchmark ==");
    println!("cores online: {} ({model}); kernel {}", settings.cpu_ids.len(), kernel.trim());
    println!(
        "shards: 1 (pinned to core {}) and all = {all_shards} (pinned to cores {:?}); raw baselines on glommio executors pinned the same way",
        settings.cpu_ids[0], settings.cpu_ids
    );
    println!(
        "client threads: unpinned (not pinned to any core), {} per partition with {} appends in flight each, sharing the same {} cores with the shards",
        settings.clients_per_partition,
        settings.inflight_per_client.map_or(format!("{} KiB (rounded up to whole batches, at least 8)", INFLIGHT_BYTES >> 10), |n| n.to_string()),
        settings.cpu_ids.len()
    );
    println!(
        "data dir: {} on {} (scheduler: {}); write size {} KiB (engine write buffer and raw writes); io_memory {} MiB per executor",
        settings.data_root.display(),
        device.as_ref().map_or("?".to_string(), |(_, _, name)| format!("/dev/{name}")),
        scheduler.trim(),
        WRITE_BUFFER_BYTES_DEFAULT >> 10,
        IO_MEMORY_BYTES >> 20
    );
    println!(
        "per run: {} MiB under never/interval, {} MiB under always (split over partitions), capped at {:.1} s; latency runs {:.1} s after {:.1} s warm-up; median of {} repeats; MB = 10^6 bytes",
        settings.bytes_fast >> 20,
        settings.bytes_always >> 20,
        settings.append_time_cap.as_secs_f64(),
        settings.latency_run.as_secs_f64(),
        settings.latency_warmup.as_secs_f64(),
        settings.repeats
    );
    println!(
        "raw figures, each run next to its engine run: `never` appends vs raw sequential writes of the same bytes (as many executors as shards); `interval`/`always` appends vs the same writes plus one fdatasync at the end (durable bandwidth); msgs/s vs that bandwidth / bytes per message; read vs raw sequential 1 MiB reads; group commit vs a loop of 1 KiB O_DIRECT write + fdatasync.\nevery measured run (engine or raw) starts after a syncfs of the data dir, so none pays for the previous run's write-back"
    );
    println!();
}

fn print_table(rows: &[Row]) {
    let width = rows.iter().map(|r| r.case.len()).max().unwrap_or(10).max(4);
    println!(
        "ratio = engine median / raw median; paired = median over repeats of engine/raw for runs made back to back"
    );
    println!(
        "{:width$}  {:>10}  {:>10}  {:>6}  {:6}  {:>6}  {:24}  repeats (engine)",
        "case", "engine", "raw", "ratio", "unit", "paired", "target"
    );
    for row in rows {
        let target = row
            .target
            .as_ref()
            .map_or(String::new(), |(pass, text)| format!("{} ({text})", if *pass { "PASS" } else { "MISS" }));
        let paired = row.paired.map_or("-".to_string(), |p| format!("{p:.2}"));
        println!(
            "{:width$}  {:>10}  {:>10}  {:>6.2}  {:6}  {:>6}  {:24}  {}",
            row.case,
            fmt_value(row.engine),
            fmt_value(row.raw),
            row.ratio(),
            row.unit,
            paired,
            target,
            row.repeats
        );
    }
    println!();
}

fn print_raw(samples: &Samples) {
    println!("raw baselines (median; every repeat):");
    for key in samples.0.keys().filter(|k| k.starts_with("raw/")) {
        let unit = if key.ends_with("/ops") {
            "ops/s"
        } else if key.starts_with("raw/fdatasync/") {
            "µs"
        } else {
            "MB/s"
        };
        println!(
            "  {key:22} {:>9} {unit:6} [{}]",
            fmt_value(samples.median(key).unwrap_or(f64::NAN)),
            samples.all(key)
        );
    }
    println!();
}

/// Where the time of one `always` append with a single appender goes.
fn print_breakdown(samples: &Samples) {
    let figure = |key: &str| samples.median(key).map_or("-".to_string(), fmt_value);
    println!("latency breakdown, 1 appender, 1 KiB (medians, µs; p50 / p99):");
    println!(
        "  client->shard->client round trip, no IO (stats)      {:>6} / {:>6}",
        figure("round-trip/stats/p50"),
        figure("round-trip/stats/p99")
    );
    println!(
        "  append under never (round trip + append, no IO)      {:>6} / {:>6}",
        figure("group-commit/never/a1/p50"),
        figure("group-commit/never/a1/p99")
    );
    println!(
        "  raw 1 KiB O_DIRECT write + fdatasync                 {:>6} / {:>6}",
        figure("raw/fdatasync/p50"),
        figure("raw/fdatasync/p99")
    );
    println!(
        "  append under always (all of the above)               {:>6} / {:>6}",
        figure("group-commit/always/a1/p50"),
        figure("group-commit/always/a1/p99")
    );
    println!();
}

fn print_diagnostics(diagnostics: &BTreeMap<String, Vec<String>>) {
    println!("diagnostics per run (device counters from /proc/diskstats):");
    for (key, runs) in diagnostics {
        for (i, run) in runs.iter().enumerate() {
            println!("  {key} #{}: {run}", i + 1);
        }
    }
    println!();
}

fn write_json(rows: &[Row], path: &Path) {
    let list: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            let ratio = row.ratio();
            let mut object = serde_json::json!({
                "case": row.case,
                "engine": row.engine,
                "raw": row.raw,
                "ratio": if ratio.is_finite() { serde_json::json!(ratio) } else { serde_json::Value::Null },
                "unit": row.unit,
            });
            if let Some(shards) = row.shards {
                object["shards"] = serde_json::json!(shards);
            }
            if let Some(policy) = &row.policy {
                object["policy"] = serde_json::json!(policy);
            }
            object
        })
        .collect();
    let text = serde_json::to_string_pretty(&list).expect("json");
    std::fs::write(path, text + "\n").unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    println!("wrote {}", path.display());
}
