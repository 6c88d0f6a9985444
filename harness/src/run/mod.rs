//! `corelog run`: replays a workload and writes its results and report.
//!
//! One execution per delivery guarantee the workload lists (or one, without a
//! guarantee): start what the cluster block asks for (brokers as child processes,
//! the embedded engine, or nothing for an external bootstrap list), create fresh
//! topics, start consumers, run the producers through warm-up and the measured
//! phase, stop the producers, drain (until every acknowledged message is consumed
//! by every subscription, or no progress for [`DRAIN_IDLE_MAX`]), stop everything
//! started, and write `result.json`, HdrHistogram interval logs, `report.html` and
//! the PNG charts. Ctrl-C stops the current execution early; what was measured is
//! still written.
//!
//! Output layout: `<out>/result.json` (one execution) or
//! `<out>/<guarantee>/result.json` (several), plus `<out>/report.html` and charts
//! over all of them; `<out>/<run>/…-latency.hlog` are the interval logs.

pub mod cluster;
pub mod environment;
pub mod load;
pub mod metrics;
pub mod result;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use corelog_reports::model::{Guarantee as ReportGuarantee, RawCounts, RunResult};
use hdrhistogram::Histogram;

use crate::driver::embedded::EmbeddedDriver;
use crate::driver::kafka::KafkaDriver;
use crate::driver::{CommitMode, ConsumerSettings, Driver, ProducerSettings};
use crate::run::cluster::{BrokerSpec, LocalCluster};
use crate::run::load::{KeyChoice, ProducerPlan};
use crate::run::metrics::{Counts, Metrics, Window};
use crate::workload::{self, Cluster, DriverKind, Guarantee, KeyDistributor, Payload, ProducerRate, Workload};
use crate::UsageError;

/// Drain ends when nothing was consumed for this long.
pub const DRAIN_IDLE_MAX: Duration = Duration::from_secs(10);
/// Drain ends after this long whatever happens.
pub const DRAIN_MAX: Duration = Duration::from_secs(120);
/// How often a window is taken (and the progress line redrawn).
const WINDOW: Duration = Duration::from_secs(1);

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The workload file (YAML; OMB workload files run unmodified).
    workload: PathBuf,
    /// Output directory (default: results/<workload name>/<UTC timestamp>/).
    #[arg(long)]
    out: Option<PathBuf>,
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
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for guarantee in &guarantees {
        let run_dir = match guarantee {
            Some(g) if guarantees.len() > 1 => out_dir.join(g.name()),
            _ => out_dir.clone(),
        };
        std::fs::create_dir_all(&run_dir)?;
        let label = guarantee.map_or_else(|| workload.name.clone(), |g| format!("{} ({})", workload.name, g.name()));
        match execute(&workload, *guarantee, &run_dir, &interrupted) {
            Ok(mut result) => {
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
    if interrupted.load(Ordering::Relaxed) {
        bail!("interrupted; what was measured is in {}", out_dir.display());
    }
    if !failures.is_empty() {
        bail!("the run failed:\n  {}", failures.join("\n  "));
    }
    Ok(())
}

/// What the system under test is, for one execution.
enum Target {
    Local(LocalCluster, KafkaDriver),
    External(KafkaDriver),
    Embedded(EmbeddedDriver, tempfile::TempDir),
}

impl Target {
    fn driver(&self) -> &dyn Driver {
        match self {
            Target::Local(_, driver) | Target::External(driver) => driver,
            Target::Embedded(driver, _) => driver,
        }
    }

    fn stop(self) -> anyhow::Result<()> {
        match self {
            Target::Local(cluster, _) => cluster.stop(),
            Target::External(_) => Ok(()),
            Target::Embedded(driver, _dir) => driver.shutdown(),
        }
    }
}

fn start_target(workload: &Workload, run_dir: &Path) -> anyhow::Result<Target> {
    let scratch = run_dir.join(".scratch");
    match (&workload.driver, &workload.cluster) {
        (DriverKind::Embedded, Cluster::Local(local)) => {
            std::fs::create_dir_all(&scratch)?;
            let dir = tempfile::Builder::new().prefix("embedded-").tempdir_in(&scratch)?;
            Ok(Target::Embedded(EmbeddedDriver::start(dir.path(), local.cores as usize)?, dir))
        }
        (DriverKind::Embedded, Cluster::External(_)) => bail!("the embedded driver runs the engine in-process; it cannot use `bootstrap`"),
        (DriverKind::Kafka, Cluster::Local(local)) => {
            if local.brokers != 1 {
                bail!("{} brokers: clusters of several corelog brokers need replication, which is not served yet", local.brokers);
            }
            let mut config_yaml = String::from("topic_defaults:\n");
            config_yaml.push_str(&format!("  fsync.policy: \"{}\"\n", local.fsync));
            for (key, value) in &local.topic_config {
                config_yaml.push_str(&format!("  {key}: {value:?}\n"));
            }
            let specs: Vec<BrokerSpec> = (0..local.brokers)
                .map(|id| BrokerSpec { name: workload::local_broker_name(id), cores: local.cores as usize, config_yaml: config_yaml.clone() })
                .collect();
            let cluster = LocalCluster::start(&scratch, &specs)?;
            let driver = KafkaDriver::new(cluster.bootstrap());
            Ok(Target::Local(cluster, driver))
        }
        (DriverKind::Kafka, Cluster::External(external)) => Ok(Target::External(KafkaDriver::new(external.bootstrap.join(",")))),
    }
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

/// One execution of the workload under one guarantee.
fn execute(workload: &Workload, guarantee: Option<Guarantee>, run_dir: &Path, interrupted: &Arc<AtomicBool>) -> anyhow::Result<RunResult> {
    let seed = workload.seed.unwrap_or_else(|| crate::payload::now_us() as u64);
    let nonce = format!("{:06x}", seed & 0xff_ffff);
    let target = start_target(workload, run_dir)?;
    let outcome = execute_on(workload, guarantee, run_dir, interrupted, &target, seed, &nonce);
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

#[allow(clippy::too_many_arguments)]
fn execute_on(
    workload: &Workload,
    guarantee: Option<Guarantee>,
    run_dir: &Path,
    interrupted: &Arc<AtomicBool>,
    target: &Target,
    seed: u64,
    nonce: &str,
) -> anyhow::Result<RunResult> {
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
    let commit = match guarantee {
        Some(Guarantee::AtMostOnce) => CommitMode::BeforeProcessing,
        _ => CommitMode::AfterProcessing,
    };
    let consumers_stop = Arc::new(AtomicBool::new(false));
    let start_consumers = || -> anyhow::Result<Vec<std::thread::JoinHandle<anyhow::Result<()>>>> {
        let mut threads = Vec::new();
        for topic in &topics {
            for subscription in 0..workload.subscriptions_per_topic {
                for member in 0..workload.consumers_per_subscription as usize {
                    let settings = ConsumerSettings {
                        group_id: format!("{topic}-sub-{subscription}"),
                        member: (member, workload.consumers_per_subscription as usize),
                        commit,
                        overrides: workload.consumer_config.clone(),
                    };
                    threads.push(driver.consumer(std::slice::from_ref(topic), &settings, metrics.clone(), consumers_stop.clone())?);
                }
            }
        }
        Ok(threads)
    };
    let mut consumers = if workload.backlog.is_none() { start_consumers()? } else { Vec::new() };

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
    let mut producers = Vec::new();
    let mut producer_id = (seed & 0xffff_ffff) << 16;
    for topic in &topics {
        for _ in 0..workload.producers_per_topic {
            producer_id += 1;
            let handle = driver.producer(&settings, metrics.clone())?;
            let plan = ProducerPlan { producer_id, topic: topic.clone(), rate: rate.clone(), keys: key_choice, payloads: payloads.clone() };
            producers.push(load::spawn_producer(handle, plan, keys.clone(), metrics.clone(), producers_stop.clone(), sent_total.clone())?);
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
    result.workload_echo = serde_json::json!({ "summary": workload.summary(), "file": workload.path.display().to_string() });
    result.delivery_guarantee = guarantee.map(report_guarantee);

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
    result.started_at_ms = Some((crate::payload::now_us() / 1000) as u64);
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
            result::push_window(result, &window, seconds, started.elapsed().as_millis() as u64, backlog);
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
                    consumers = start_consumers()?;
                }
            }
        }
    }
    producers_stop.store(true, Ordering::Relaxed);
    let mut send_errors = 0;
    for producer in producers {
        match producer.join() {
            Ok(report) => send_errors += report.send_errors,
            Err(_) => bail!("a producer thread panicked"),
        }
    }
    if !backlog_reached {
        consumers = start_consumers()?;
    }
    // Drain: until every acknowledged message reached every subscription.
    let drain_started = Instant::now();
    let mut last_consumed = counts.consumed;
    let mut idle_since = Instant::now();
    while !interrupted.load(Ordering::Relaxed) && drain_started.elapsed() < DRAIN_MAX {
        std::thread::sleep(Duration::from_millis(200));
        let window = take(&mut counts, &mut result, &mut totals, false, &mut logs)?;
        drop(window);
        if counts.consumed >= counts.acknowledged * subscriptions {
            break;
        }
        if counts.consumed > last_consumed {
            last_consumed = counts.consumed;
            idle_since = Instant::now();
        } else if idle_since.elapsed() > DRAIN_IDLE_MAX {
            tracing::warn!("drain: nothing consumed for {DRAIN_IDLE_MAX:?}; {} of {} expected", counts.consumed, counts.acknowledged * subscriptions);
            break;
        }
    }
    consumers_stop.store(true, Ordering::Relaxed);
    let mut consumer_errors = Vec::new();
    for consumer in consumers {
        match consumer.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => consumer_errors.push(format!("{error:#}")),
            Err(_) => consumer_errors.push("a consumer thread panicked".to_string()),
        }
    }
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
    logs.finish()?;
    if !consumer_errors.is_empty() {
        bail!("consumers failed: {}", consumer_errors.join("; "));
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
    Ok(result)
}

fn report_guarantee(guarantee: Guarantee) -> ReportGuarantee {
    match guarantee {
        Guarantee::AtMostOnce => ReportGuarantee::AtMostOnce,
        Guarantee::AtLeastOnce => ReportGuarantee::AtLeastOnce,
        Guarantee::Idempotent => ReportGuarantee::Idempotent,
        Guarantee::ExactlyOnce => ReportGuarantee::ExactlyOnce,
    }
}

/// HdrHistogram interval logs (one file per latency, HdrHistogram's log format),
/// kept in memory during the run and written at the end.
struct HistogramLogs {
    dir: PathBuf,
    windows: Vec<(Duration, [Histogram<u64>; 4])>,
}

impl HistogramLogs {
    const NAMES: [&'static str; 4] = ["publish-latency", "publish-corrected-latency", "publish-delay-latency", "end-to-end-latency"];

    fn create(dir: &Path) -> anyhow::Result<HistogramLogs> {
        Ok(HistogramLogs { dir: dir.to_path_buf(), windows: Vec::new() })
    }

    fn write(&mut self, window: &Window, elapsed: Duration) -> anyhow::Result<()> {
        let histograms = [
            window.publish_service_us.clone(),
            window.publish_corrected_us.clone(),
            window.publish_delay_us.clone(),
            window.end_to_end_us.clone(),
        ];
        self.windows.push((elapsed.saturating_sub(WINDOW), histograms));
        Ok(())
    }

    fn finish(self) -> anyhow::Result<()> {
        use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
        use std::io::Write;
        let mut serializer = hdrhistogram::serialization::V2Serializer::new();
        for (index, name) in Self::NAMES.iter().enumerate() {
            let path = self.dir.join(format!("{name}.hlog"));
            let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
            let mut file = std::io::BufWriter::new(file);
            {
                let mut writer = IntervalLogWriterBuilder::new()
                    .add_comment(&format!("corelog {name}, microseconds"))
                    .begin_log_with(&mut file, &mut serializer)
                    .with_context(|| format!("writing {}", path.display()))?;
                let tag = Tag::new(name);
                for (start, histograms) in &self.windows {
                    writer
                        .write_histogram(&histograms[index], *start, WINDOW, tag)
                        .map_err(|e| anyhow::anyhow!("writing {}: {e:?}", path.display()))?;
                }
            }
            file.flush().with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

/// The live progress line (stderr; hidden when stderr is not a terminal).
struct Progress {
    bar: indicatif::ProgressBar,
}

impl Progress {
    fn new(total: Duration) -> Progress {
        let bar = indicatif::ProgressBar::with_draw_target(Some(total.as_secs()), indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            indicatif::ProgressStyle::with_template("  [{elapsed_precise}/{duration_precise}] {bar:30} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Progress { bar }
    }

    fn update(&self, elapsed: Duration, window: &Window, seconds: f64, backlog: i64) {
        self.bar.set_position(elapsed.as_secs());
        self.bar.set_message(format!(
            "publish {:.0}/s, consume {:.0}/s, backlog {backlog}",
            window.counts.acknowledged as f64 / seconds.max(1e-6),
            window.counts.consumed as f64 / seconds.max(1e-6)
        ));
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
