//! One execution: the workload under one delivery guarantee, on a [`Target`] that
//! `execute` started, as an object that owns everything it starts.
//!
//! The phases, in order, are [`Execution::run`]'s lines: [`Execution::start`]
//! (fresh topics; the consumers, unless a backlog is built first; the producers;
//! the fault injector, whose t = 0 is the end of the warm-up),
//! [`Execution::measure`] (warm-up and measured phase: a metrics window a second,
//! the rate controller of `producerRate: 0`, the consumers once the backlog is
//! built), [`Execution::stop_load`] (the injector undoes what is still in effect,
//! then the producers stop and flush), [`Execution::drain`] and
//! [`Execution::finish`] (the consumers stop, the last window, the checker).
//!
//! Dropping an `Execution` stops whatever it still runs, in the same order: the
//! fault injector (which undoes every active fault), the producers, the
//! consumers. So an early return on an error anywhere between `start` and
//! `finish` leaves no producer sending and no fault applied, as `faults.rs`
//! promises; on the normal path the phases have stopped everything already and
//! the drop has nothing left to do. The target is not the execution's: it
//! outlives every client, and `execute` stops it once the execution is gone.

use std::num::NonZeroU64;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use corelog_reports::model::{ErrorCount, RawCounts, RunResult};
use corelog_reports::recovery;
use hdrhistogram::Histogram;

use super::progress::{HistogramLogs, Progress, ProgressEvery, ScheduledFault};
use super::target::{has_faults_of, Target};
use super::{environment, report_guarantee, result, sanitize, DRAIN_IDLE_MAX, DRAIN_MAX, HISTORY_MESSAGES_MAX, WINDOW};
use crate::checker::History;
use crate::driver::{CommitMode, ConsumerSettings, DeliverySink, Driver, ProducerSettings};
use crate::run::consumers::{ConsumerSpec, Consumers};
use crate::run::faults::{self, FaultInjector, Injected, Targets};
use crate::run::load::{self, CrashSwitch, KeyChoice, ProducerPlan, Producers, Rate, RateController, SendErrors};
use crate::run::metrics::{self, Counts, Metrics, Window};
use crate::run::pipeline::{self, Processors, StageSpec};
use crate::run::recorder::{ConsumerSink, ReadPositions, Recorder};
use crate::workload::{Cluster, FaultKind, Guarantee, KeyDistributor, Payload, ProducerRate, Workload};

/// What one execution runs: the workload under one guarantee.
pub(super) struct Plan<'a> {
    pub workload: &'a Workload,
    /// `None` for a workload that lists no guarantee: measured, not judged.
    pub guarantee: Option<Guarantee>,
    /// Where this execution's interval logs go.
    pub run_dir: &'a Path,
    /// Seeds the topic names, payloads, keys, producer ids and the nemesis.
    pub seed: u64,
    /// Test only: see `RunArgs::test_forget_reads`.
    pub forget_reads: Option<NonZeroU64>,
    /// Test only: see `RunArgs::test_non_transactional_stage`.
    pub non_transactional_stage: bool,
    /// How often a progress line is printed (`--progress-interval`, `--quiet`).
    pub progress: ProgressEvery,
}

/// What one execution measured and found.
pub(super) struct Outcome {
    pub result: RunResult,
    /// What makes the run a failure although it measured something (faults that
    /// could not be injected, consumers that failed).
    pub problems: Vec<String>,
    /// What decided the checker's verdict, in a few words (empty for a pass, and
    /// without a guarantee).
    pub verdict_brief: String,
}

/// One execution under way: what it started and what it measured so far.
pub(super) struct Execution<'a> {
    plan: Plan<'a>,
    target: &'a Target,
    driver: Arc<dyn Driver>,
    /// The execution's fresh topics, by index: the ones the producers write.
    topics: Vec<String>,
    /// Under exactly-once, the stage's output topics (`outputs[i]` is `topics[i]`'s),
    /// which the subscriptions read; empty otherwise.
    outputs: Vec<String>,
    /// Under exactly-once, the transactional stage, until the drain stops it.
    stage: Option<Arc<Processors>>,
    /// What the stage's processors said when they were stopped.
    stage_errors: Vec<String>,
    /// Under exactly-once, once the stage stopped: per output partition, the offset
    /// after its end mark (see `pipeline.rs`), which the drain reads up to.
    end_marks: Option<Vec<Vec<i64>>>,
    metrics: Arc<Metrics>,
    history: Arc<History>,
    /// How far each subscription has read, for the drain.
    positions: Vec<Arc<ReadPositions>>,
    commit: CommitMode,
    consumers: Arc<Consumers>,
    /// A workload with a backlog starts its consumers once the backlog is built.
    consumers_started: bool,
    producers: Producers,
    /// The producers' rate, and what moves it under `producerRate: 0`.
    rate: Arc<Rate>,
    controller: Option<RateController>,
    /// `None` without faults, and once stopped.
    faults: Option<FaultInjector>,
    /// What the injector did, once it stopped.
    injected: Injected,
    /// The producers' send errors, once they stopped.
    send_errors: SendErrors,
    measurement: Measurement,
}

/// What was measured so far: the result's windows and the totals behind them.
struct Measurement {
    result: RunResult,
    totals: result::Totals,
    counts: Counts,
    out_of_range: u64,
    logs: HistogramLogs,
    progress: Progress,
    /// When the producers started: the warm-up began.
    started: Instant,
    /// When the last window was taken.
    last_window: Instant,
}

impl<'a> Execution<'a> {
    /// The phases of one execution, in order. On an early return the execution is
    /// dropped, which stops what it started (see the module's documentation).
    pub(super) fn run(plan: Plan<'a>, target: &'a Target, interrupted: &AtomicBool) -> anyhow::Result<Outcome> {
        let mut execution = Execution::start(plan, target)?;
        execution.measure(interrupted)?;
        execution.stop_load()?;
        let drain_complete = execution.drain(interrupted)?;
        execution.finish(drain_complete)
    }

    /// Creates the topics and starts the consumers (unless a backlog comes first),
    /// the producers and the fault injector. The execution exists before any of
    /// them starts, so a failure to start one stops those already started.
    fn start(plan: Plan<'a>, target: &'a Target) -> anyhow::Result<Execution<'a>> {
        let workload = plan.workload;
        let driver = target.driver();
        let topics = create_topics(&plan, &*driver, topic_names(&plan))?;
        let outputs = create_topics(&plan, &*driver, output_names(&plan))?;
        let metrics = Arc::new(Metrics::new(workload.message_size_bytes as usize));
        let read = if outputs.is_empty() { &topics } else { &outputs };
        let history = Arc::new(History::new(read.clone(), workload.subscriptions_per_topic, HISTORY_MESSAGES_MAX));
        let workers = match target.kafka() {
            Some(kafka) if has_faults_of(workload, |kind| kind == FaultKind::ConsumerCrash) => {
                Some(kafka.bootstrap().to_string())
            }
            _ => None,
        };
        let controller = match workload.producer_rate {
            ProducerRate::MessagesPerSecond(_) => None,
            ProducerRate::DiscoverMaximum => Some(RateController::new(workload.producers_total() as usize)),
        };
        let rate = Arc::new(Rate::new(match (workload.producer_rate, &controller) {
            (_, Some(controller)) => controller.per_producer(),
            (ProducerRate::MessagesPerSecond(rate), None) => rate as f64 / workload.producers_total().max(1) as f64,
            (ProducerRate::DiscoverMaximum, None) => RateController::START_PER_SECOND,
        }));
        let mut execution = Execution {
            commit: match plan.guarantee {
                Some(Guarantee::AtMostOnce) => CommitMode::BeforeProcessing,
                _ => CommitMode::AfterProcessing,
            },
            positions: (0..workload.subscriptions_per_topic).map(|_| Arc::default()).collect(),
            consumers: Arc::new(Consumers::new(driver.clone(), workers)),
            consumers_started: false,
            producers: Producers::default(),
            faults: None,
            injected: Injected::default(),
            send_errors: SendErrors::default(),
            measurement: Measurement::new(new_result(&plan, target, driver.name()), &plan)?,
            plan,
            target,
            driver,
            topics,
            outputs,
            stage: None,
            stage_errors: Vec::new(),
            end_marks: None,
            metrics,
            history,
            rate,
            controller,
        };
        if workload.backlog.is_none() {
            execution.start_consumers()?;
        }
        execution.start_stage()?;
        execution.start_producers()?;
        let t0_us = execution.measurement.begin(workload.warmup_duration);
        execution.metrics.start_ack_timeline(t0_us);
        execution.start_faults()?;
        Ok(execution)
    }

    /// The run's consumers, as the workload asks: per topic, per subscription, per member.
    fn start_consumers(&mut self) -> anyhow::Result<()> {
        let workload = self.plan.workload;
        self.consumers_started = true;
        let pipeline = !self.outputs.is_empty();
        let read = if pipeline { &self.outputs } else { &self.topics };
        for (topic_index, topic) in read.iter().enumerate() {
            for subscription in 0..workload.subscriptions_per_topic {
                for member in 0..workload.consumers_per_subscription as usize {
                    let mut overrides = workload.consumer_config.clone();
                    if self.consumers.runs_workers() {
                        // A crashed member is noticed when its session times out; Kafka's
                        // lowest allowed timeout keeps the rebalance within the run.
                        overrides.entry("session.timeout.ms".to_string()).or_insert_with(|| "6000".to_string());
                        overrides.entry("heartbeat.interval.ms".to_string()).or_insert_with(|| "1000".to_string());
                    }
                    let settings = ConsumerSettings {
                        group_id: format!("{topic}-sub-{subscription}"),
                        member: (member, workload.consumers_per_subscription as usize),
                        commit: self.commit,
                        overrides,
                    };
                    let sink = Arc::new(ConsumerSink {
                        metrics: self.metrics.clone(),
                        history: self.history.clone(),
                        topic_index: topic_index as u32,
                        subscription,
                        positions: self.positions[subscription as usize].clone(),
                        forget_reads: self.plan.forget_reads,
                        pipeline,
                    });
                    self.consumers.start(ConsumerSpec { topic: topic.clone(), settings, sink })?;
                }
            }
        }
        Ok(())
    }

    /// The run's producers: `producersPerTopic` per topic, each a thread with its
    /// own client, ids unique within the run.
    fn start_producers(&mut self) -> anyhow::Result<()> {
        let (workload, seed) = (self.plan.workload, self.plan.seed);
        let keys = load::key_pool(seed);
        let payloads = Arc::new(payloads(workload, seed)?);
        let key_choice = match workload.key_distributor {
            KeyDistributor::NoKey => KeyChoice::None,
            KeyDistributor::KeyRoundRobin => KeyChoice::RoundRobin,
            KeyDistributor::RandomNano => KeyChoice::RandomNano,
        };
        let settings = producer_settings(workload, self.plan.guarantee);
        let recorder: Arc<dyn DeliverySink> = Arc::new(Recorder {
            metrics: self.metrics.clone(),
            history: self.history.clone(),
            pipeline: !self.outputs.is_empty(),
        });
        let factory: load::ProducerFactory = {
            let driver = self.driver.clone();
            Arc::new(move || driver.producer(&settings, recorder.clone()))
        };
        let mut producer_id = (seed & 0xffff_ffff) << 16;
        for (topic_index, topic) in self.topics.iter().enumerate() {
            for _ in 0..workload.producers_per_topic {
                producer_id += 1;
                let producer_plan = ProducerPlan {
                    producer_id,
                    topic_index: topic_index as u32,
                    topic: topic.clone(),
                    partition: (workload.partitions_per_topic == 1).then_some(0),
                    rate: self.rate.clone(),
                    keys: key_choice,
                    payloads: payloads.clone(),
                    factory: factory.clone(),
                    crash: Arc::new(CrashSwitch::default()),
                    history: self.history.clone(),
                };
                self.producers.spawn(factory()?, producer_plan, keys.clone(), self.metrics.clone())?;
            }
        }
        Ok(())
    }

    /// Under exactly-once, starts the transactional stage that copies the input
    /// topics to their outputs (`pipeline.rs`).
    fn start_stage(&mut self) -> anyhow::Result<()> {
        if self.outputs.is_empty() {
            return Ok(());
        }
        let workload = self.plan.workload;
        let kafka = self.target.kafka().context("the exactly-once stage needs a Kafka cluster")?;
        let spec = StageSpec {
            bootstrap: kafka.bootstrap().to_string(),
            group: format!("{}-stage", self.topics[0]),
            inputs: self.topics.clone(),
            outputs: self.outputs.clone(),
            abort_rate: workload.processing.abort_rate,
            max_messages: workload.processing.messages_per_transaction,
            seed: self.plan.seed,
            non_transactional: self.plan.non_transactional_stage,
            producer_config: workload.producer_config.clone(),
            consumer_config: workload.consumer_config.clone(),
        };
        self.stage = Some(Arc::new(Processors::start(spec, workload.processing.processors)?));
        Ok(())
    }

    /// Plans the faults (the workload's and the nemesis') and starts the injector,
    /// if there is anything to inject.
    fn start_faults(&mut self) -> anyhow::Result<()> {
        let workload = self.plan.workload;
        let brokers = self.target.broker_names(workload);
        let (planned, nemesis_seed) = faults::plan(workload, &brokers, self.plan.seed);
        if let Some(nemesis_seed) = nemesis_seed {
            eprintln!("  nemesis seed {nemesis_seed} (set nemesis.seed to repeat this run's faults)");
            self.measurement.result.workload_echo["nemesisSeed"] = nemesis_seed.into();
        }
        if planned.is_empty() {
            return Ok(());
        }
        let targets = Targets {
            local: match self.target {
                Target::Local { cluster, .. } => Some(cluster.clone()),
                _ => None,
            },
            external: match &workload.cluster {
                Cluster::External(external) => Some(external.clone()),
                Cluster::Local(_) => None,
            },
            proxies: match self.target {
                Target::Local { proxies, .. } => proxies.clone(),
                _ => Default::default(),
            },
            links: match self.target {
                Target::Local { links, .. } => links.clone(),
                _ => None,
            },
            kafka: self.target.kafka(),
            topics: self.topics.clone(),
            consumers: self.consumers.clone(),
            producers: self.producers.crash_switches().to_vec(),
            processors: self.stage.clone(),
        };
        let t0 = self.measurement.started + workload.warmup_duration;
        let schedule = planned
            .iter()
            .map(|fault| ScheduledFault {
                from: workload.warmup_duration + fault.at,
                until: workload.warmup_duration + fault.at + fault.duration,
                label: format!("{} {}", fault.kind, fault.target),
            })
            .collect();
        self.measurement.progress.set_faults(schedule);
        self.faults = Some(FaultInjector::spawn(planned, targets, t0)?);
        Ok(())
    }

    /// Warm-up and measured phase: a window every [`WINDOW`], until the end of the
    /// test duration or an interrupt.
    fn measure(&mut self, interrupted: &AtomicBool) -> anyhow::Result<()> {
        let workload = self.plan.workload;
        let warmup = workload.warmup_duration;
        let end = warmup + workload.test_duration;
        let started = self.measurement.started;
        let mut tick: u32 = 0;
        while started.elapsed() < end && !interrupted.load(Ordering::Relaxed) {
            tick += 1;
            std::thread::sleep((started + WINDOW * tick).saturating_duration_since(Instant::now()));
            let phase = if started.elapsed() > warmup { "test" } else { "warm-up" };
            let window = self.take_window(phase)?;
            self.adjust_rate(&window);
            if !self.consumers_started && self.backlog_built() {
                self.start_consumers()?;
            }
        }
        Ok(())
    }

    /// Ends the load: the fault injector undoes what is still in effect (the
    /// schedule has ended its faults by now; an interrupted run ends them here), so
    /// the drain sees a healthy cluster; then the producers stop and flush.
    fn stop_load(&mut self) -> anyhow::Result<()> {
        if let Some(mut injector) = self.faults.take() {
            self.injected = injector.stop()?;
        }
        self.send_errors = self.producers.stop()?;
        Ok(())
    }

    /// Starts the consumers if the backlog was never built, then consumes until
    /// every subscription has read every partition to its end offset (`true`), or
    /// nothing was consumed for [`DRAIN_IDLE_MAX`], or [`DRAIN_MAX`] passed, or
    /// the run was interrupted (`false`: the checker then cannot tell an unseen
    /// message from a lost one).
    fn drain(&mut self, interrupted: &AtomicBool) -> anyhow::Result<bool> {
        if !self.consumers_started {
            self.start_consumers()?;
        }
        if !self.drain_stage(interrupted)? {
            return Ok(false);
        }
        let drain_started = Instant::now();
        let mut last_consumed = self.measurement.counts.consumed;
        let mut idle_since = Instant::now();
        let mut end_offsets: Option<Vec<Vec<i64>>> = None;
        while !interrupted.load(Ordering::Relaxed) && drain_started.elapsed() < DRAIN_MAX {
            std::thread::sleep(Duration::from_millis(200));
            self.take_window("drain")?;
            // Producers are done, so end offsets no longer move: read them once.
            if end_offsets.is_none() {
                end_offsets = self.end_offsets();
            }
            if let Some(ends) = &end_offsets {
                let caught_up = self.positions.iter().all(|position| {
                    ends.iter().enumerate().all(|(topic, ends)| position.caught_up(topic as u32, ends))
                });
                if caught_up {
                    return Ok(true);
                }
            }
            if self.measurement.counts.consumed > last_consumed {
                last_consumed = self.measurement.counts.consumed;
                idle_since = Instant::now();
            } else if idle_since.elapsed() > DRAIN_IDLE_MAX {
                tracing::warn!("drain: nothing consumed for {DRAIN_IDLE_MAX:?}; subscriptions have not read every partition to its end");
                return Ok(false);
            }
        }
        Ok(false)
    }

    /// Under exactly-once, before the subscriptions' drain: waits until the stage
    /// has committed every input partition to its end (`false` if it does not
    /// within [`DRAIN_MAX`], or ends no transaction for [`DRAIN_IDLE_MAX`], or the
    /// run is interrupted), stops it, and appends the end marks the subscriptions
    /// then read up to. `true` at once without a stage.
    fn drain_stage(&mut self, interrupted: &AtomicBool) -> anyhow::Result<bool> {
        let Some(stage) = self.stage.clone() else { return Ok(true) };
        let started = Instant::now();
        let mut input_ends = None;
        let mut last_transactions = stage.transactions();
        let mut idle_since = Instant::now();
        let caught_up = loop {
            if interrupted.load(Ordering::Relaxed) || started.elapsed() > DRAIN_MAX {
                break false;
            }
            std::thread::sleep(Duration::from_millis(200));
            self.take_window("drain")?;
            if input_ends.is_none() {
                input_ends = self.input_end_offsets();
            }
            if input_ends.as_ref().is_some_and(|ends| stage.caught_up(ends)) {
                break true;
            }
            if stage.transactions() > last_transactions {
                last_transactions = stage.transactions();
                idle_since = Instant::now();
            } else if idle_since.elapsed() > DRAIN_IDLE_MAX {
                tracing::warn!("drain: the exactly-once stage ended no transaction for {DRAIN_IDLE_MAX:?}");
                break false;
            }
        };
        self.stage_errors = stage.stop_all();
        if !caught_up {
            return Ok(false);
        }
        let kafka = self.target.kafka().context("the exactly-once stage needs a Kafka cluster")?;
        let partitions = self.plan.workload.partitions_per_topic;
        self.end_marks = Some(pipeline::write_end_marks(kafka.bootstrap(), &self.outputs, partitions)?);
        Ok(true)
    }

    /// The input topics' end offsets, by topic index; `None` if the driver could
    /// not say (the caller asks again).
    fn input_end_offsets(&self) -> Option<Vec<Vec<i64>>> {
        let partitions = self.plan.workload.partitions_per_topic as i32;
        match self
            .topics
            .iter()
            .map(|topic| self.driver.end_offsets(topic, partitions))
            .collect::<anyhow::Result<Vec<_>>>()
        {
            Ok(offsets) => Some(offsets),
            Err(error) => {
                tracing::debug!("drain: {error:#}");
                None
            }
        }
    }

    /// Every topic's end offsets, by topic index; `None` if the driver could not
    /// say (the drain asks again). Under exactly-once, the offsets after the
    /// output's end marks.
    fn end_offsets(&self) -> Option<Vec<Vec<i64>>> {
        match &self.end_marks {
            Some(marks) => Some(marks.clone()),
            None => self.input_end_offsets(),
        }
    }

    /// Stops the consumers, takes the last window, writes the interval logs and
    /// judges the history: what the execution measured and found.
    fn finish(mut self, drain_complete: bool) -> anyhow::Result<Outcome> {
        let consumer_errors = self.consumers.stop_all();
        let last_window = self.metrics.take_window();
        self.measurement.counts += last_window.counts;
        self.measurement.progress.finish();
        let mut result = std::mem::take(&mut self.measurement.result);
        result::set_aggregates(&mut result, &self.measurement.totals);
        let counts = self.measurement.counts;
        result.counts = RawCounts {
            produced: counts.sent,
            acknowledged: counts.acknowledged,
            consumed: counts.consumed,
            errors: counts.failed + counts.ambiguous + self.send_errors.count,
        };
        result.out_of_range_samples.end_to_end_latency = self.measurement.out_of_range;
        let injected = std::mem::take(&mut self.injected);
        result.fault_windows = injected.windows;
        let run_end_ms = result.window_end_ms.last().map_or(0, |&end_ms| end_ms as i64);
        recovery::measure_fault_windows(&mut result, Some(&self.metrics.ack_buckets(run_end_ms)));
        result.errors = result::message_errors(self.metrics.error_counts(), &self.send_errors);
        for error in &injected.errors {
            result.errors.push(ErrorCount {
                operation: "fault".to_string(),
                error: error.clone(),
                count: 1,
                first_ms: None,
                example: None,
            });
        }
        self.measurement.logs.finish()?;
        let mut problems: Vec<String> = injected.errors.iter().map(|e| format!("fault injection: {e}")).collect();
        if !consumer_errors.is_empty() {
            problems.push(format!("consumers failed: {}", consumer_errors.join("; ")));
        }
        if let Some(stage) = self.stage.take() {
            // Stopped by the drain already, unless the drain ended early.
            self.stage_errors.extend(stage.stop_all());
            let summary = stage.summary();
            eprintln!(
                "  stage: {} processor(s), {} transactions committed ({} messages; commit p50 {:.1} ms, p99 {:.1} ms), \
                 {} aborted on purpose, {} aborted on errors",
                summary.processors,
                summary.committed,
                summary.messages_committed,
                summary.commit_latency_p50_ms,
                summary.commit_latency_p99_ms,
                summary.aborted_planned,
                summary.aborted_on_error
            );
            result.stage = Some(summary);
        }
        if !self.stage_errors.is_empty() {
            problems.push(format!("the exactly-once stage failed: {}", self.stage_errors.join("; ")));
        }
        eprintln!(
            "  {}: produced {}, acknowledged {}, consumed {} ({} subscription(s)), errors {}",
            self.plan.guarantee.map_or("run", |g| g.name()),
            counts.sent,
            counts.acknowledged,
            counts.consumed,
            self.subscriptions(),
            result.counts.errors
        );
        print_fault_measures(&result);
        let verdict_brief = self.judge(&mut result, drain_complete);
        Ok(Outcome { result, problems, verdict_brief })
    }

    /// The checker's verdict on the history, into `result`; returns what decided
    /// it in a few words (empty without a guarantee).
    fn judge(&self, result: &mut RunResult, drain_complete: bool) -> String {
        let Some(guarantee) = self.plan.guarantee else { return String::new() };
        let checked = super::progress::phase(self.plan.progress, "checking the history", || {
            self.history.check(report_guarantee(guarantee), drain_complete)
        });
        let verdict_brief = checked.brief;
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
        verdict_brief
    }

    /// Takes a metrics window: into the result in the `test` phase (not in the
    /// `warm-up` or the `drain`), into the progress always.
    fn take_window(&mut self, phase: &'static str) -> anyhow::Result<Window> {
        let measured = phase == "test";
        let window = self.metrics.take_window();
        let t0 = self.measurement.started + self.plan.workload.warmup_duration;
        let subscriptions = self.subscriptions();
        let m = &mut self.measurement;
        let seconds = m.last_window.elapsed().as_secs_f64();
        m.last_window = Instant::now();
        m.counts += window.counts;
        m.out_of_range += window.out_of_range;
        let backlog = (m.counts.acknowledged * subscriptions) as i64 - m.counts.consumed as i64;
        if measured {
            let end_ms = Instant::now().saturating_duration_since(t0).as_millis() as u64;
            result::push_window(&mut m.result, &window, seconds, end_ms, backlog);
            m.totals.publish_service_us.add(&window.publish_service_us).ok();
            m.totals.publish_corrected_us.add(&window.publish_corrected_us).ok();
            m.totals.publish_delay_us.add(&window.publish_delay_us).ok();
            m.totals.end_to_end_us.add(&window.end_to_end_us).ok();
            m.logs.write(&window, m.started.elapsed())?;
        }
        m.progress.update(m.started.elapsed(), phase, &window, seconds, backlog);
        Ok(window)
    }

    /// Under `producerRate: 0`, moves the rate after a window.
    fn adjust_rate(&mut self, window: &Window) {
        // While a backlog is being built on purpose, it says nothing about the rate.
        let counts = self.measurement.counts;
        let backlog = if self.consumers_started {
            (counts.acknowledged * self.subscriptions()) as i64 - counts.consumed as i64
        } else {
            0
        };
        if let Some(controller) = self.controller.as_mut() {
            let delay_p50 = window.publish_delay_us.value_at_quantile(0.5);
            self.rate.set(controller.adjust(window.counts.acknowledged as f64, backlog, delay_p50));
        }
    }

    /// Whether the workload's backlog (if it asks for one) has been acknowledged.
    fn backlog_built(&self) -> bool {
        let workload = self.plan.workload;
        workload.backlog.is_some_and(|backlog| {
            self.measurement.counts.acknowledged * workload.message_size_bytes as u64 >= backlog.size_bytes
        })
    }

    /// Subscriptions per topic, at least 1 (for backlogs).
    fn subscriptions(&self) -> u64 {
        self.plan.workload.subscriptions_per_topic.max(1) as u64
    }
}

impl Drop for Execution<'_> {
    fn drop(&mut self) {
        // Faults first, while what they act on still runs: a crashed producer or
        // consumer is restarted, a paused broker resumes. Then the producers, then
        // the consumers. Each is a no-op if a phase already stopped it.
        drop(self.faults.take());
        if let Err(error) = self.producers.stop() {
            tracing::error!("{error:#}");
        }
        if let Some(stage) = self.stage.take() {
            for error in stage.stop_all() {
                tracing::warn!("stopping the exactly-once stage: {error}");
            }
        }
        for error in self.consumers.stop_all() {
            tracing::warn!("stopping the consumers: {error}");
        }
        self.measurement.progress.finish();
    }
}

impl Measurement {
    fn new(result: RunResult, plan: &Plan<'_>) -> anyhow::Result<Measurement> {
        let workload = plan.workload;
        Ok(Measurement {
            result,
            totals: result::Totals {
                publish_service_us: new_histogram(),
                publish_corrected_us: new_histogram(),
                publish_delay_us: new_histogram(),
                end_to_end_us: new_histogram(),
            },
            counts: Counts::default(),
            out_of_range: 0,
            logs: HistogramLogs::create(plan.run_dir)?,
            progress: Progress::new(
                workload.warmup_duration + workload.test_duration,
                plan.guarantee.map_or_else(|| workload.name.clone(), |g| format!("{} ({})", workload.name, g.name())),
                plan.progress,
            ),
            started: Instant::now(),
            last_window: Instant::now(),
        })
    }

    /// The producers have started: the warm-up begins now, and the result's t = 0
    /// is the end of the warm-up. Returns t = 0 in the clock of `payload::now_us`.
    fn begin(&mut self, warmup: Duration) -> i64 {
        self.started = Instant::now();
        self.last_window = self.started;
        let t0_us = crate::payload::now_us() + warmup.as_micros() as i64;
        self.result.started_at_ms = Some((t0_us / 1000) as u64);
        t0_us
    }
}

/// A line per fault: how long until leadership moved, the longest stretch without
/// acks, and when the publish rate was back (`corelog_reports::recovery`).
fn print_fault_measures(result: &RunResult) {
    let seconds = |ms: i64| format!("{:.1} s", ms as f64 / 1000.0);
    let steady = recovery::steady_publish_rate(result);
    for fault in &result.fault_windows {
        let mut measures = Vec::new();
        if let Some(change) = &fault.leader_change {
            measures.push(match change.moved_ms {
                Some(moved_ms) => format!("leaders moved in {}", seconds(moved_ms)),
                None => format!("leaders not moved in {}", seconds(change.watched_ms)),
            });
        }
        if let Some(no_ack_ms) = fault.no_ack_ms {
            measures.push(format!("no acks for {}", seconds(no_ack_ms)));
        }
        measures.push(match (fault.publish_recovered_ms, steady) {
            (Some(recovered_ms), _) => format!("publish rate back in {}", seconds(recovered_ms)),
            (None, None) => "no steady publish rate to recover to".to_string(),
            (None, Some(_)) => "publish rate not back by the end".to_string(),
        });
        eprintln!("  fault {} at {}: {}", fault.label(), seconds(fault.start_ms), measures.join(", "));
    }
}

/// Creates `topics` empty, with the workload's partitions and settings.
fn create_topics(plan: &Plan<'_>, driver: &dyn Driver, topics: Vec<String>) -> anyhow::Result<Vec<String>> {
    let workload = plan.workload;
    let settings = workload.cluster.topic_settings();
    for topic in &topics {
        driver.create_topic(topic, workload.partitions_per_topic as i32, &settings)?;
    }
    Ok(topics)
}

/// Under exactly-once, the output topic of each of [`topic_names`]; empty otherwise.
fn output_names(plan: &Plan<'_>) -> Vec<String> {
    if plan.guarantee != Some(Guarantee::ExactlyOnce) {
        return Vec::new();
    }
    topic_names(plan).iter().map(|topic| pipeline::output_topic(topic)).collect()
}

/// Every topic the execution creates: [`topic_names`] and the outputs.
pub(super) fn all_topic_names(plan: &Plan<'_>) -> Vec<String> {
    topic_names(plan).into_iter().chain(output_names(plan)).collect()
}

/// The execution's topic names: after the workload, the guarantee and the seed, so
/// executions never share one, and whoever holds the plan can name them (to delete
/// them from an external cluster afterwards).
pub(super) fn topic_names(plan: &Plan<'_>) -> Vec<String> {
    let workload = plan.workload;
    let nonce = format!("{:06x}", plan.seed & 0xff_ffff);
    let guarantee = plan.guarantee.map_or("run", |g| g.name());
    (0..workload.topics).map(|i| format!("{}-{guarantee}-{i}-{nonce}", sanitize(&workload.name))).collect()
}

/// The result's fixed fields: what ran, where, how.
fn new_result(plan: &Plan<'_>, target: &Target, driver: &str) -> RunResult {
    let workload = plan.workload;
    let mut result = RunResult::new();
    result.workload = workload.name.clone();
    result.driver = driver.to_string();
    result.message_size = workload.message_size_bytes as u64;
    result.topics = workload.topics;
    result.partitions = workload.partitions_per_topic;
    result.producers_per_topic = workload.producers_per_topic;
    result.consumers_per_topic = workload.subscriptions_per_topic * workload.consumers_per_subscription;
    result.environment = environment::collect(workload, target.broker_cpus());
    result.workload_echo = serde_json::json!({ "summary": workload.summary(), "file": workload.path.display().to_string(), "seed": plan.seed });
    result.delivery_guarantee = plan.guarantee.map(report_guarantee);
    if let Some(every) = plan.forget_reads {
        result.workload_echo["testForgetReads"] = every.get().into();
    }
    if plan.non_transactional_stage && plan.guarantee == Some(Guarantee::ExactlyOnce) {
        result.workload_echo["testNonTransactionalStage"] = true.into();
    }
    result
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
        Payload::File(path) => {
            vec![std::fs::read(path).with_context(|| format!("reading payload file {}", path.display()))?]
        }
        Payload::Randomized { random_bytes_ratio, pool_size } => (0..(*pool_size).max(1))
            .map(|_| {
                let random = (size as f64 * random_bytes_ratio).round() as usize;
                (0..size).map(|i| if i < random { random_byte() } else { 0 }).collect()
            })
            .collect(),
        Payload::Generated => vec![(0..size).map(|_| random_byte()).collect()],
    })
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, metrics::LATENCY_US_MAX, 3).expect("valid histogram bounds")
}

#[cfg(test)]
mod tests {
    use super::*;
    use corelog_broker::{Broker, BrokerConfig};

    /// The state an execution's clients hold while they run, kept past its drop.
    struct Held {
        metrics: Arc<Metrics>,
        history: Arc<History>,
        producer_0: Arc<CrashSwitch>,
    }

    /// A workload against an external cluster (a broker in this process) whose
    /// `pause` and `resume` commands leave marker files in `dir`: node-0 paused and
    /// producer-0 crashed from t = 0 for longer than the test will take.
    fn workload(dir: &Path, bootstrap: &str) -> Workload {
        let marks = dir.display();
        let yaml = format!(
            "name: early return\ntopics: 1\npartitionsPerTopic: 2\nmessageSize: 100\nproducersPerTopic: 2\n\
             subscriptionsPerTopic: 1\nconsumerPerSubscription: 1\nproducerRate: 200\n\
             warmupDurationSeconds: 0\ntestDurationSeconds: 600\nguarantees: [at-least-once]\n\
             cluster:\n  bootstrap: \"{bootstrap}\"\n  nodes:\n    - {{name: node-0, node_id: 0}}\n  commands:\n    \
             pause: touch {marks}/paused-{{node}}\n    resume: touch {marks}/resumed-{{node}}\n\
             faults:\n  - {{at: 0, duration: 500, kind: pause, target: node-0}}\n  \
             - {{at: 0, duration: 500, kind: producer-crash, target: producer-0}}\n"
        );
        let path = dir.join("workload.yaml");
        std::fs::write(&path, yaml).unwrap();
        crate::workload::load(&path).unwrap_or_else(|diagnostics| panic!("{diagnostics:?}"))
    }

    /// Starts an execution, takes windows until both faults are in effect and
    /// acknowledgements come in, then fails the way a failed write between start
    /// and stop does: an early return with `?`.
    fn fail_while_faults_are_applied(
        plan: Plan<'_>,
        target: &Target,
        held: &mut Option<Held>,
    ) -> anyhow::Result<Outcome> {
        let paused = plan.run_dir.join("paused-node-0");
        let mut execution = Execution::start(plan, target)?;
        let producer_0 = execution.producers.crash_switches()[0].clone();
        *held = Some(Held {
            metrics: execution.metrics.clone(),
            history: execution.history.clone(),
            producer_0: producer_0.clone(),
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        while !(paused.exists() && producer_0.is_crashed() && execution.measurement.counts.acknowledged > 0) {
            assert!(Instant::now() < deadline, "the faults were not applied or nothing was acknowledged within 60 s");
            std::thread::sleep(Duration::from_millis(100));
            execution.take_window("test")?;
        }
        assert!(
            Arc::strong_count(&execution.metrics) > 2,
            "the producers and the consumer hold the metrics while they run"
        );
        anyhow::bail!("a write failed")
    }

    #[test]
    fn an_early_return_between_start_and_finish_stops_every_client_and_undoes_every_fault() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = BrokerConfig::new(dir.path().join("broker"));
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.engine.shard_count = 1;
        let broker = Broker::start(config).unwrap();
        let workload = workload(dir.path(), &broker.local_addr().to_string());
        let target = Target::start(&workload, dir.path()).unwrap();
        let plan = Plan {
            workload: &workload,
            guarantee: Some(Guarantee::AtLeastOnce),
            run_dir: dir.path(),
            seed: 7,
            forget_reads: None,
            non_transactional_stage: false,
            progress: ProgressEvery(None),
        };

        let mut held = None;
        let error =
            fail_while_faults_are_applied(plan, &target, &mut held).err().expect("the execution fails on purpose");
        assert_eq!(error.to_string(), "a write failed");
        let held = held.expect("the execution started");
        // A thread that still runs holds its clones of these: none is left.
        assert_eq!(Arc::strong_count(&held.metrics), 1, "a producer, consumer or fault thread outlived the execution");
        assert_eq!(Arc::strong_count(&held.history), 1, "a producer, consumer or fault thread outlived the execution");
        assert!(dir.path().join("resumed-node-0").exists(), "the pause of node-0 was not undone");
        assert!(!held.producer_0.is_crashed(), "producer-0 was left crashed");
        held.metrics.take_window();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(held.metrics.take_window().counts.sent, 0, "a producer sent after the execution was gone");

        target.stop(&dir.path().join("logs")).unwrap();
        broker.shutdown().unwrap();
    }
}
