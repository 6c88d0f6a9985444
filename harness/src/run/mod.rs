//! `corelog run`: replays a workload and writes its results and report.
//!
//! One execution per delivery guarantee the workload lists, each with the same
//! workload and fault schedule: start what the cluster block asks for (brokers as
//! child processes, behind fault proxies when the workload has network faults;
//! the embedded engine; or nothing for an external bootstrap list), create fresh
//! topics, start consumers, run the producers through warm-up and the measured
//! phase while the fault injector ([`faults`]) applies and undoes the schedule,
//! stop the producers, drain (until every subscription has read every partition
//! to its end offset, or no progress for [`DRAIN_IDLE_MAX`]), stop everything
//! started, judge the history with the checker, and write `result.json`,
//! HdrHistogram interval logs, `report.html` and the PNG charts. Ctrl-C stops the
//! current execution early (active faults are undone first); what was measured
//! is still written. A run fails (exit 1) when nothing was acknowledged, a fault
//! could not be applied or undone, a consumer failed, it was interrupted, or a
//! guarantee's verdict is not PASS: FAIL (the promise was broken) and UNKNOWN (the
//! checker could not confirm it: the drain did not finish, the history
//! overflowed) alike, so CI notices. The closing line names every guarantee with
//! its verdict and, for those that did not pass, what decided it in a few words
//! (`FAIL: at-least-once (lost 6000 acknowledged)`). A workload without
//! subscriptions (OMB's producer-only benchmarks) is a measurement only: nothing
//! reads, so its verdicts are UNKNOWN by construction and decide nothing.
//! Everything is written first, whatever the exit status.
//!
//! Output layout: `<out>/result.json` (one execution) or
//! `<out>/<guarantee>/result.json` (several), plus `<out>/report.html` and charts
//! over all of them; `<out>/<run>/…-latency.hlog` are the interval logs.

pub mod cluster;
pub mod consumers;
pub mod environment;
pub mod faults;
pub mod load;
pub mod metrics;
mod progress;
pub mod recorder;
pub mod result;
mod target;

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use corelog_reports::model::{ErrorCount, Guarantee as ReportGuarantee, RawCounts, RunResult, VerdictStatus};
use hdrhistogram::Histogram;

use crate::checker::History;
use crate::run::progress::{HistogramLogs, Progress};
use crate::run::target::{has_faults_of, Target};
use crate::driver::{CommitMode, ConsumerSettings, DeliverySink, Driver, ProducerSettings};
use crate::run::consumers::{ConsumerSpec, Consumers};
use crate::run::faults::Targets;
use crate::run::load::{CrashSwitch, KeyChoice, ProducerPlan};
use crate::run::metrics::{Counts, Metrics, Window};
use crate::run::recorder::{ConsumerSink, ReadPositions, Recorder};
use crate::workload::{self, Cluster, FaultKind, Guarantee, KeyDistributor, Payload, ProducerRate, Workload};
use crate::UsageError;

/// Drain ends when nothing was consumed for this long.
pub const DRAIN_IDLE_MAX: Duration = Duration::from_secs(10);
/// Drain ends after this long whatever happens.
pub const DRAIN_MAX: Duration = Duration::from_secs(120);
/// How often a window is taken (and the progress line redrawn).
const WINDOW: Duration = Duration::from_secs(1);
/// The checker's history holds at most this many messages (about 40 bytes each
/// for a send and its read); beyond it the verdict is "unknown". Enough for a
/// 10-minute run at 50 000 msg/s.
const HISTORY_MESSAGES_MAX: u64 = 30_000_000;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The workload file (YAML; OMB workload files run unmodified).
    workload: PathBuf,
    /// Output directory (default: results/<workload name>/<UTC timestamp>/).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Test only, hidden: the checker forgets every read of each message whose
    /// sequence number is a multiple of N (the consumers still read them and the
    /// drain still sees them), so every guarantee that forbids loss FAILs on purpose
    /// through the real checker. For the tests of `corelog run`'s exit status; the
    /// run says so on stderr and in result.json (`workloadEcho.testForgetReads`).
    #[arg(long, hide = true, value_name = "N")]
    test_forget_reads: Option<NonZeroU64>,
}

/// One guarantee's verdict, for the closing line.
struct VerdictLine {
    guarantee: Guarantee,
    status: VerdictStatus,
    /// What decided a verdict that is not PASS, in a few words.
    brief: String,
}

/// The closing line's verdicts: `FAIL: at-least-once (lost 6000 acknowledged),
/// idempotent (3 written twice); PASS: at-most-once`, failures first.
fn verdicts_line(verdicts: &[VerdictLine]) -> String {
    let mut groups = Vec::new();
    for status in [VerdictStatus::Fail, VerdictStatus::Unknown, VerdictStatus::Pass] {
        let named: Vec<String> = verdicts
            .iter()
            .filter(|line| line.status == status)
            .map(|line| {
                if line.brief.is_empty() {
                    line.guarantee.name().to_string()
                } else {
                    format!("{} ({})", line.guarantee.name(), line.brief)
                }
            })
            .collect();
        if !named.is_empty() {
            groups.push(format!("{}: {}", status.as_str(), named.join(", ")));
        }
    }
    groups.join("; ")
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let workload = workload::load(&args.workload).map_err(|diagnostics| {
        UsageError(diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
    })?;
    let out_dir = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("results").join(sanitize(&workload.name)).join(environment::utc_timestamp_for_path())
    });
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let source = std::fs::read_to_string(&args.workload).ok();
    let interrupted = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, interrupted.clone()).context("installing the Ctrl-C handler")?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, interrupted.clone()).context("installing the SIGTERM handler")?;

    let guarantees: Vec<Option<Guarantee>> =
        if workload.guarantees.is_empty() { vec![None] } else { workload.guarantees.iter().copied().map(Some).collect() };
    if guarantees.contains(&Some(Guarantee::ExactlyOnce)) {
        bail!(UsageError(format!(
            "{}: exactly-once needs transactions, which corelog does not serve yet; remove it from `guarantees`",
            args.workload.display()
        )));
    }
    eprintln!("corelog run: {} → {}", workload.summary(), out_dir.display());
    if let Some(every) = args.test_forget_reads {
        eprintln!(
            "  TEST ONLY (--test-forget-reads {every}): the checker forgets the reads of every message whose sequence \
             is a multiple of {every}; this run's verdicts say nothing about the system under test"
        );
    }
    let mut results = Vec::new();
    let mut failures = Vec::new();
    let mut verdicts = Vec::new();
    let mut started = 0;
    for guarantee in &guarantees {
        started += 1;
        let run_dir = match guarantee {
            Some(g) if guarantees.len() > 1 => out_dir.join(g.name()),
            _ => out_dir.clone(),
        };
        std::fs::create_dir_all(&run_dir)?;
        let label = guarantee.map_or_else(|| workload.name.clone(), |g| format!("{} ({})", workload.name, g.name()));
        match execute(&workload, *guarantee, &run_dir, &interrupted, args.test_forget_reads) {
            Ok(Execution { mut result, problems, verdict_brief }) => {
                failures.extend(problems.into_iter().map(|problem| format!("{label}: {problem}")));
                // Without a subscription nothing was read: the verdict is UNKNOWN by
                // construction and decides nothing.
                if let (Some(guarantee), Some(checker)) = (guarantee, &result.checker) {
                    if workload.subscriptions_per_topic > 0 {
                        let status = checker.verdict.status;
                        verdicts.push(VerdictLine { guarantee: *guarantee, status, brief: verdict_brief });
                    }
                }
                result.label = Some(label.clone());
                result.workload_source = source.clone();
                let path = corelog_reports::output_path(&run_dir, corelog_reports::Output::Result);
                corelog_reports::save_result(&result, &path).with_context(|| format!("writing {}", path.display()))?;
                eprintln!("  wrote {}", path.display());
                if result.counts.acknowledged == 0 {
                    failures.push(format!("{label}: no message was acknowledged"));
                }
                results.push(result);
            }
            Err(error) => failures.push(format!("{label}: {error:#}")),
        }
        if interrupted.load(Ordering::Relaxed) {
            break;
        }
    }
    if !results.is_empty() {
        let files = corelog_reports::render_report(&results, &out_dir).context("rendering the report")?;
        eprintln!("  report: {} ({} charts)", files.html.display(), files.charts.len());
    }
    // The verdicts come last, so the closing line says which guarantee failed.
    let mut closing = Vec::new();
    if !failures.is_empty() {
        closing.push(format!("the run failed:\n  {}", failures.join("\n  ")));
    }
    if interrupted.load(Ordering::Relaxed) {
        let not_run: Vec<&str> = guarantees.iter().skip(started).flatten().map(|guarantee| guarantee.name()).collect();
        let skipped = if not_run.is_empty() { String::new() } else { format!(" (not run: {})", not_run.join(", ")) };
        closing.push(format!("interrupted; what was measured is in {}{skipped}", out_dir.display()));
    }
    let verdicts_held = verdicts.iter().all(|line| line.status == VerdictStatus::Pass);
    if closing.is_empty() && verdicts_held {
        if workload.subscriptions_per_topic == 0 {
            eprintln!("corelog run: done; no subscription reads the topics, so no delivery guarantee was checked");
        } else if verdicts.is_empty() {
            eprintln!("corelog run: done; the workload lists no delivery guarantee, so none was checked");
        } else {
            eprintln!("corelog run: {}", verdicts_line(&verdicts));
        }
        return Ok(());
    }
    if !verdicts.is_empty() {
        closing.push(verdicts_line(&verdicts));
    }
    bail!("{}", closing.join("\n"))
}

fn producer_settings(workload: &Workload, guarantee: Option<Guarantee>) -> ProducerSettings {
    let (acks, retries, idempotent) = match guarantee {
        Some(Guarantee::AtMostOnce) => ("1", false, false),
        Some(Guarantee::AtLeastOnce) => ("all", true, false),
        Some(Guarantee::Idempotent) | Some(Guarantee::ExactlyOnce) => ("all", true, true),
        None => ("all", true, false),
    };
    ProducerSettings { acks: acks.to_string(), retries, idempotent, overrides: workload.producer_config.clone() }
}

fn payloads(workload: &Workload, seed: u64) -> anyhow::Result<Vec<Vec<u8>>> {
    let size = workload.message_size_bytes as usize;
    let mut state = seed | 1;
    let mut random_byte = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 24) as u8
    };
    Ok(match &workload.payload {
        Payload::File(path) => vec![std::fs::read(path).with_context(|| format!("reading payload file {}", path.display()))?],
        Payload::Randomized { random_bytes_ratio, pool_size } => (0..(*pool_size).max(1))
            .map(|_| {
                let random = (size as f64 * random_bytes_ratio).round() as usize;
                (0..size).map(|i| if i < random { random_byte() } else { 0 }).collect()
            })
            .collect(),
        Payload::Generated => vec![(0..size).map(|_| random_byte()).collect()],
    })
}

fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '-' }).collect()
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, metrics::LATENCY_US_MAX, 3).expect("valid histogram bounds")
}

/// What one execution of the workload under one guarantee measured and found.
struct Execution {
    result: RunResult,
    /// What makes the run a failure although it measured something (faults that
    /// could not be injected, consumers that failed).
    problems: Vec<String>,
    /// What decided the checker's verdict, in a few words (empty for a pass, and
    /// without a guarantee).
    verdict_brief: String,
}

/// One execution of the workload under one guarantee. `forget_reads`: see
/// `RunArgs::test_forget_reads` (tests only).
fn execute(
    workload: &Workload,
    guarantee: Option<Guarantee>,
    run_dir: &Path,
    interrupted: &Arc<AtomicBool>,
    forget_reads: Option<NonZeroU64>,
) -> anyhow::Result<Execution> {
    let seed = workload.seed.unwrap_or_else(|| crate::payload::now_us() as u64);
    let nonce = format!("{:06x}", seed & 0xff_ffff);
    let target = Target::start(workload, run_dir)?;
    let outcome = execute_on(workload, guarantee, run_dir, interrupted, &target, seed, &nonce, forget_reads);
    let stopped = target.stop();
    if run_dir.join(".scratch").exists() {
        if let Err(error) = std::fs::remove_dir_all(run_dir.join(".scratch")) {
            tracing::warn!("removing {}: {error}", run_dir.join(".scratch").display());
        }
    }
    let result = outcome?;
    if let Err(error) = stopped {
        // The measurement stands; the failure to stop is reported with it.
        eprintln!("  warning: stopping what the run started: {error:#}");
    }
    Ok(result)
}

/// The run's consumers, as the workload asks: per topic, per subscription, per member.
fn start_consumers(
    workload: &Workload,
    topics: &[String],
    commit: CommitMode,
    consumers: &Consumers,
    sinks: &dyn Fn(u32, u32) -> Arc<ConsumerSink>,
) -> anyhow::Result<()> {
    for (topic_index, topic) in topics.iter().enumerate() {
        for subscription in 0..workload.subscriptions_per_topic {
            for member in 0..workload.consumers_per_subscription as usize {
                let mut overrides = workload.consumer_config.clone();
                if consumers.runs_workers() {
                    // A crashed member is noticed when its session times out; Kafka's
                    // lowest allowed timeout keeps the rebalance within the run.
                    overrides.entry("session.timeout.ms".to_string()).or_insert_with(|| "6000".to_string());
                    overrides.entry("heartbeat.interval.ms".to_string()).or_insert_with(|| "1000".to_string());
                }
                let settings = ConsumerSettings {
                    group_id: format!("{topic}-sub-{subscription}"),
                    member: (member, workload.consumers_per_subscription as usize),
                    commit,
                    overrides,
                };
                consumers.start(ConsumerSpec { topic: topic.clone(), settings, sink: sinks(topic_index as u32, subscription) })?;
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn execute_on(
    workload: &Workload,
    guarantee: Option<Guarantee>,
    run_dir: &Path,
    interrupted: &Arc<AtomicBool>,
    target: &Target,
    seed: u64,
    nonce: &str,
    forget_reads: Option<NonZeroU64>,
) -> anyhow::Result<Execution> {
    let driver = target.driver();
    let topic_config = match &workload.cluster {
        Cluster::Local(local) => local.topic_config.clone(),
        Cluster::External(external) => external.topic_config.clone(),
    };
    let topics: Vec<String> =
        (0..workload.topics).map(|i| format!("{}-{}-{i}-{nonce}", sanitize(&workload.name), guarantee.map_or("run", |g| g.name()))).collect();
    for topic in &topics {
        driver.create_topic(topic, workload.partitions_per_topic as i32, &topic_config)?;
    }
    let metrics = Arc::new(Metrics::new(workload.message_size_bytes as usize));
    let history = Arc::new(History::new(topics.clone(), workload.subscriptions_per_topic, HISTORY_MESSAGES_MAX));
    let recorder: Arc<Recorder> = Arc::new(Recorder { metrics: metrics.clone(), history: history.clone() });
    let commit = match guarantee {
        Some(Guarantee::AtMostOnce) => CommitMode::BeforeProcessing,
        _ => CommitMode::AfterProcessing,
    };
    let positions: Vec<Arc<ReadPositions>> = (0..workload.subscriptions_per_topic).map(|_| Arc::default()).collect();
    let sinks = |topic_index: u32, subscription: u32| {
        Arc::new(ConsumerSink {
            metrics: metrics.clone(),
            history: history.clone(),
            topic_index,
            subscription,
            positions: positions[subscription as usize].clone(),
            forget_reads,
        })
    };
    let workers = match target.kafka() {
        Some(kafka) if has_faults_of(workload, |kind| kind == FaultKind::ConsumerCrash) => Some(kafka.bootstrap().to_string()),
        _ => None,
    };
    let consumers = Arc::new(Consumers::new(driver.clone(), workers));
    if workload.backlog.is_none() {
        start_consumers(workload, &topics, commit, &consumers, &sinks)?;
    }

    let producers_stop = Arc::new(AtomicBool::new(false));
    let sent_total = Arc::new(AtomicU64::new(0));
    let keys = load::key_pool(seed);
    let payloads = Arc::new(payloads(workload, seed)?);
    let mut controller = match workload.producer_rate {
        ProducerRate::MessagesPerSecond(_) => None,
        ProducerRate::DiscoverMaximum => Some(load::RateController::new(workload.producers_total() as usize)),
    };
    let rate = Arc::new(load::Rate::new(match (workload.producer_rate, &controller) {
        (_, Some(controller)) => controller.per_producer(),
        (ProducerRate::MessagesPerSecond(rate), None) => rate as f64 / workload.producers_total().max(1) as f64,
        (ProducerRate::DiscoverMaximum, None) => load::RateController::START_PER_SECOND,
    }));
    let key_choice = match workload.key_distributor {
        KeyDistributor::NoKey => KeyChoice::None,
        KeyDistributor::KeyRoundRobin => KeyChoice::RoundRobin,
        KeyDistributor::RandomNano => KeyChoice::RandomNano,
    };
    let settings = producer_settings(workload, guarantee);
    let factory: load::ProducerFactory = {
        let (driver, settings, sink) = (driver.clone(), settings.clone(), recorder.clone() as Arc<dyn DeliverySink>);
        Arc::new(move || driver.producer(&settings, sink.clone()))
    };
    let mut producers = Vec::new();
    let mut crash_switches = Vec::new();
    let mut producer_id = (seed & 0xffff_ffff) << 16;
    for (topic_index, topic) in topics.iter().enumerate() {
        for _ in 0..workload.producers_per_topic {
            producer_id += 1;
            let crash = Arc::new(CrashSwitch::default());
            crash_switches.push(crash.clone());
            let plan = ProducerPlan {
                producer_id,
                topic_index: topic_index as u32,
                topic: topic.clone(),
                partition: (workload.partitions_per_topic == 1).then_some(0),
                rate: rate.clone(),
                keys: key_choice,
                payloads: payloads.clone(),
                factory: factory.clone(),
                crash,
                history: history.clone(),
            };
            producers.push(load::spawn_producer(factory()?, plan, keys.clone(), metrics.clone(), producers_stop.clone(), sent_total.clone())?);
        }
    }

    let mut result = RunResult::new();
    result.workload = workload.name.clone();
    result.driver = driver.name().to_string();
    result.message_size = workload.message_size_bytes as u64;
    result.topics = workload.topics;
    result.partitions = workload.partitions_per_topic;
    result.producers_per_topic = workload.producers_per_topic;
    result.consumers_per_topic = workload.subscriptions_per_topic * workload.consumers_per_subscription;
    result.environment = environment::collect(workload);
    result.workload_echo = serde_json::json!({ "summary": workload.summary(), "file": workload.path.display().to_string(), "seed": seed });
    result.delivery_guarantee = guarantee.map(report_guarantee);
    if let Some(every) = forget_reads {
        result.workload_echo["testForgetReads"] = every.get().into();
    }

    let mut totals = result::Totals {
        publish_service_us: new_histogram(),
        publish_corrected_us: new_histogram(),
        publish_delay_us: new_histogram(),
        end_to_end_us: new_histogram(),
    };
    let mut counts = Counts::default();
    let mut out_of_range = 0u64;
    let mut logs = HistogramLogs::create(run_dir)?;
    let subscriptions = workload.subscriptions_per_topic.max(1) as u64;
    let started = Instant::now();
    let warmup = workload.warmup_duration;
    let end = warmup + workload.test_duration;
    // t = 0 of the result is the end of the warm-up.
    let t0 = started + warmup;
    result.started_at_ms = Some((crate::payload::now_us() / 1000) as u64 + warmup.as_millis() as u64);

    let brokers: Vec<String> = match (target, &workload.cluster) {
        (Target::Local { cluster, .. }, _) => cluster.lock().expect("cluster lock").brokers.iter().map(|b| b.name.clone()).collect(),
        (_, Cluster::External(external)) => external.nodes.iter().map(|n| n.name.clone()).collect(),
        _ => Vec::new(),
    };
    let (planned, nemesis_seed) = faults::plan(workload, &brokers, seed);
    if let Some(nemesis_seed) = nemesis_seed {
        eprintln!("  nemesis seed {nemesis_seed} (set nemesis.seed to repeat this run's faults)");
        result.workload_echo["nemesisSeed"] = nemesis_seed.into();
    }
    let faults_stop = Arc::new(AtomicBool::new(false));
    let injector = if planned.is_empty() {
        None
    } else {
        let targets = Targets {
            local: match target {
                Target::Local { cluster, .. } => Some(cluster.clone()),
                _ => None,
            },
            external: match &workload.cluster {
                Cluster::External(external) => Some(external.clone()),
                Cluster::Local(_) => None,
            },
            proxies: match target {
                Target::Local { proxies, .. } => proxies.clone(),
                _ => BTreeMap::new(),
            },
            kafka: target.kafka(),
            topics: topics.clone(),
            consumers: consumers.clone(),
            producers: crash_switches,
        };
        Some(faults::spawn(planned, targets, t0, faults_stop.clone())?)
    };

    let mut last = Instant::now();
    let mut backlog_reached = workload.backlog.is_none();
    let progress = Progress::new(end);
    let mut take = |counts: &mut Counts, result: &mut RunResult, totals: &mut result::Totals, measured: bool, logs: &mut HistogramLogs| -> anyhow::Result<Window> {
        let window = metrics.take_window();
        let seconds = last.elapsed().as_secs_f64();
        last = Instant::now();
        *counts += window.counts;
        out_of_range += window.out_of_range;
        let backlog = (counts.acknowledged * subscriptions) as i64 - counts.consumed as i64;
        if measured {
            let end_ms = Instant::now().saturating_duration_since(t0).as_millis() as u64;
            result::push_window(result, &window, seconds, end_ms, backlog);
            totals.publish_service_us.add(&window.publish_service_us).ok();
            totals.publish_corrected_us.add(&window.publish_corrected_us).ok();
            totals.publish_delay_us.add(&window.publish_delay_us).ok();
            totals.end_to_end_us.add(&window.end_to_end_us).ok();
            logs.write(&window, started.elapsed())?;
        }
        progress.update(started.elapsed(), &window, seconds, backlog);
        Ok(window)
    };

    // Warm-up and measured phase.
    let mut tick: u32 = 0;
    while started.elapsed() < end && !interrupted.load(Ordering::Relaxed) {
        tick += 1;
        std::thread::sleep((started + WINDOW * tick).saturating_duration_since(Instant::now()));
        let window = take(&mut counts, &mut result, &mut totals, started.elapsed() > warmup, &mut logs)?;
        if let Some(controller) = controller.as_mut() {
            // While a backlog is being built on purpose, it says nothing about the rate.
            let backlog = if backlog_reached { (counts.acknowledged * subscriptions) as i64 - counts.consumed as i64 } else { 0 };
            let delay_p50 = window.publish_delay_us.value_at_quantile(0.5);
            rate.set(controller.adjust(window.counts.acknowledged as f64, backlog, delay_p50));
        }
        if !backlog_reached {
            if let Some(backlog) = workload.backlog {
                if counts.acknowledged * workload.message_size_bytes as u64 >= backlog.size_bytes {
                    backlog_reached = true;
                    start_consumers(workload, &topics, commit, &consumers, &sinks)?;
                }
            }
        }
    }
    // Faults end with the measured phase (the schedule ends them by then; an
    // interrupted run ends them now), so the drain sees a healthy cluster.
    faults_stop.store(true, Ordering::Relaxed);
    let injected = match injector.map(std::thread::JoinHandle::join) {
        Some(Ok(injected)) => injected,
        Some(Err(_)) => bail!("the fault injector panicked"),
        None => faults::Injected { windows: Vec::new(), errors: Vec::new() },
    };
    producers_stop.store(true, Ordering::Relaxed);
    let mut send_errors = 0;
    for producer in producers {
        match producer.join() {
            Ok(report) => send_errors += report.send_errors,
            Err(_) => bail!("a producer thread panicked"),
        }
    }
    if !backlog_reached {
        start_consumers(workload, &topics, commit, &consumers, &sinks)?;
    }
    let drain_complete = drain(&*driver, workload, &topics, &positions, interrupted, &mut |counts_now: &mut Counts| {
        take(counts_now, &mut result, &mut totals, false, &mut logs).map(drop)
    }, &mut counts)?;
    let consumer_errors = consumers.stop_all();
    let last_window = metrics.take_window();
    counts += last_window.counts;
    progress.finish();

    result::set_aggregates(&mut result, &totals);
    result.counts = RawCounts {
        produced: counts.sent,
        acknowledged: counts.acknowledged,
        consumed: counts.consumed,
        errors: counts.failed + counts.ambiguous + send_errors,
    };
    result.out_of_range_samples.end_to_end_latency = out_of_range;
    result.fault_windows = injected.windows;
    for error in &injected.errors {
        result.errors.push(ErrorCount { operation: "fault".to_string(), error: error.clone(), count: 1, first_ms: None });
    }
    logs.finish()?;
    let mut problems: Vec<String> = injected.errors.iter().map(|e| format!("fault injection: {e}")).collect();
    if !consumer_errors.is_empty() {
        problems.push(format!("consumers failed: {}", consumer_errors.join("; ")));
    }
    eprintln!(
        "  {}: produced {}, acknowledged {}, consumed {} ({} subscription(s)), errors {}",
        guarantee.map_or("run", |g| g.name()),
        counts.sent,
        counts.acknowledged,
        counts.consumed,
        subscriptions,
        result.counts.errors
    );
    let mut verdict_brief = String::new();
    if let Some(guarantee) = guarantee {
        let checked = history.check(report_guarantee(guarantee), drain_complete);
        verdict_brief = checked.brief;
        let checked = checked.result;
        let c = &checked.counts;
        eprintln!(
            "  checker: {} ({}): lost {}, unseen {}, duplicate {}, written twice {}, reordered {}, ambiguous {}",
            checked.verdict.status.as_str(),
            checked.verdict.promise,
            c.lost,
            c.unseen,
            c.duplicate,
            c.written_twice,
            c.reordered,
            c.ambiguous
        );
        for reason in &checked.verdict.reasons {
            eprintln!("    {reason}");
        }
        result.checker = Some(checked);
    }
    Ok(Execution { result, problems, verdict_brief })
}

/// Consumes until every subscription has read every partition to its end offset
/// (`true`), or nothing was consumed for [`DRAIN_IDLE_MAX`], or [`DRAIN_MAX`]
/// passed, or the run was interrupted (`false`: the checker then cannot tell an
/// unseen message from a lost one). `take` takes a metrics window.
fn drain(
    driver: &dyn Driver,
    workload: &Workload,
    topics: &[String],
    positions: &[Arc<ReadPositions>],
    interrupted: &AtomicBool,
    take: &mut dyn FnMut(&mut Counts) -> anyhow::Result<()>,
    counts: &mut Counts,
) -> anyhow::Result<bool> {
    let drain_started = Instant::now();
    let mut last_consumed = counts.consumed;
    let mut idle_since = Instant::now();
    let partitions = workload.partitions_per_topic as i32;
    let mut end_offsets: Option<Vec<Vec<i64>>> = None;
    while !interrupted.load(Ordering::Relaxed) && drain_started.elapsed() < DRAIN_MAX {
        std::thread::sleep(Duration::from_millis(200));
        take(counts)?;
        // Producers are done, so end offsets no longer move: read them once.
        if end_offsets.is_none() {
            match topics.iter().map(|topic| driver.end_offsets(topic, partitions)).collect::<anyhow::Result<Vec<_>>>() {
                Ok(offsets) => end_offsets = Some(offsets),
                Err(error) => tracing::debug!("drain: {error:#}"),
            }
        }
        if let Some(ends) = &end_offsets {
            let caught_up = positions.iter().all(|position| {
                ends.iter().enumerate().all(|(topic, ends)| position.caught_up(topic as u32, ends))
            });
            if caught_up {
                return Ok(true);
            }
        }
        if counts.consumed > last_consumed {
            last_consumed = counts.consumed;
            idle_since = Instant::now();
        } else if idle_since.elapsed() > DRAIN_IDLE_MAX {
            tracing::warn!("drain: nothing consumed for {DRAIN_IDLE_MAX:?}; subscriptions have not read every partition to its end");
            return Ok(false);
        }
    }
    Ok(false)
}

fn report_guarantee(guarantee: Guarantee) -> ReportGuarantee {
    match guarantee {
        Guarantee::AtMostOnce => ReportGuarantee::AtMostOnce,
        Guarantee::AtLeastOnce => ReportGuarantee::AtLeastOnce,
        Guarantee::Idempotent => ReportGuarantee::Idempotent,
        Guarantee::ExactlyOnce => ReportGuarantee::ExactlyOnce,
    }
}
