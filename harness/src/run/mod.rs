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
//! Code: [`run`] runs one execution per guarantee and writes the report and the
//! closing line; `execute` starts the target, runs an `Execution` on it
//! (`execution.rs`: one object owning the execution's topics, consumers,
//! producers and fault injector, a method per phase; dropping it stops them all),
//! and stops the target.
//!
//! Output layout: `<out>/result.json` (one execution) or
//! `<out>/<guarantee>/result.json` (several), plus `<out>/report.html` and charts
//! over all of them; `<out>/<run>/…-latency.hlog` are the interval logs. With
//! `--repeat N` (N > 1) every guarantee runs N times, one after the other, and
//! each repeat is a directory of its own: `<out>/[<guarantee>/]repeat-<i>/`, its
//! result labelled `… #i` and carrying `repeat`; `corelog compare` reads such a
//! directory as the repeats of one side and judges noise from them.

pub mod cluster;
pub mod consumers;
pub mod environment;
mod execution;
pub mod faults;
pub mod leaders;
pub mod links;
pub mod load;
pub mod metrics;
pub mod pipeline;
mod progress;
pub mod recorder;
pub mod result;
mod target;

use std::num::{NonZeroU32, NonZeroU64};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use corelog_reports::model::{Guarantee as ReportGuarantee, Repeat, RunResult, VerdictStatus};

use crate::run::execution::{Execution, Outcome, Plan};
use crate::run::progress::ProgressEvery;
use crate::run::target::Target;
use crate::workload::{self, Guarantee, Workload};
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
    /// Output directory [default: results/<workload name>/<UTC timestamp>/].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep the topics the run created on an external cluster (`cluster.bootstrap`);
    /// by default they are deleted once the run ends. Brokers the run starts are
    /// deleted with their topics either way.
    #[arg(long)]
    keep_topics: bool,
    /// Seconds between two progress lines (publish and consume rates, backlog,
    /// publish latency, errors, faults in effect), one line per execution.
    #[arg(long, value_name = "SECS", default_value = "5")]
    progress_interval: NonZeroU64,
    /// No progress lines and no progress bar; the closing lines still print.
    #[arg(long)]
    quiet: bool,
    /// Test only, hidden: the checker forgets every read of each message whose
    /// sequence number is a multiple of N (the consumers still read them and the
    /// drain still sees them), so every guarantee that forbids loss FAILs on purpose
    /// through the real checker. For the tests of `corelog run`'s exit status; the
    /// run says so on stderr and in result.json (`workloadEcho.testForgetReads`).
    #[arg(long, hide = true, value_name = "N")]
    test_forget_reads: Option<NonZeroU64>,
    /// Test only, hidden: the exactly-once stage runs at least once instead (an
    /// idempotent producer, input offsets committed by the consumer after the
    /// copies were acknowledged), so a processor crash writes copies twice and the
    /// exactly-once verdict FAILs on purpose through the real checker. The run says
    /// so on stderr and in result.json (`workloadEcho.testNonTransactionalStage`).
    #[arg(long, hide = true)]
    test_non_transactional_stage: bool,
    /// Run the workload N times (each guarantee N times), each repeat in its own
    /// directory `repeat-<i>`, so that `corelog compare` can tell a change from
    /// run-to-run noise.
    #[arg(long, value_name = "N", default_value_t = NonZeroU32::MIN)]
    repeat: NonZeroU32,
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
    // Each execution places its brokers again, the same way; a CPU that is not
    // online fails the run here, before anything starts or is written.
    target::placements(&workload)?;
    let out_dir = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("results").join(sanitize(&workload.name)).join(environment::utc_timestamp_for_path())
    });
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let log_path = out_dir.join("logs").join("corelog.log");
    crate::logging::to_file(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let outcome = run_in(&args, &workload, &out_dir);
    crate::logging::to_stderr();
    outcome
}

/// The run once its workload is checked and its directory made: every execution,
/// the report and the closing lines.
fn run_in(args: &RunArgs, workload: &Workload, out_dir: &Path) -> anyhow::Result<()> {
    let out_dir = out_dir.to_path_buf();
    let source = std::fs::read_to_string(&args.workload).ok();
    let interrupted = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, interrupted.clone())
        .context("installing the Ctrl-C handler")?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, interrupted.clone())
        .context("installing the SIGTERM handler")?;
    let guarantees = guarantees_to_run(workload);
    eprintln!("corelog run: {} → {}", workload.summary(), out_dir.display());
    eprintln!(
        "  log lines: {} (the harness and its clients), logs/<broker>.log beside each result.json (started brokers)",
        out_dir.join("logs").join("corelog.log").display()
    );
    if args.test_non_transactional_stage {
        eprintln!(
            "  TEST ONLY (--test-non-transactional-stage): the exactly-once stage runs at least once; this run's \
             exactly-once verdict says nothing about the system under test"
        );
    }
    if let Some(every) = args.test_forget_reads {
        eprintln!(
            "  TEST ONLY (--test-forget-reads {every}): the checker forgets the reads of every message whose sequence \
             is a multiple of {every}; this run's verdicts say nothing about the system under test"
        );
    }
    let mut summary = Summary::default();
    let mut started = 0;
    let executions = executions(&guarantees, args.repeat);
    for (guarantee, repeat) in &executions {
        let repeat = *repeat;
        started += 1;
        let run_dir = execution_dir(&out_dir, guarantees.len(), *guarantee, repeat);
        std::fs::create_dir_all(&run_dir)?;
        let label = guarantee.map_or_else(|| workload.name.clone(), |g| format!("{} ({})", workload.name, g.name()));
        let label = match repeat {
            Some(repeat) => format!("{label} #{}", repeat.index),
            None => label,
        };
        match execute(workload, *guarantee, &run_dir, &interrupted, args) {
            Ok(Outcome { mut result, problems, verdict_brief }) => {
                summary.failures.extend(problems.into_iter().map(|problem| format!("{label}: {problem}")));
                // Without a subscription nothing was read: the verdict is UNKNOWN by
                // construction and decides nothing.
                if let (Some(guarantee), Some(checker)) = (guarantee, &result.checker) {
                    if workload.subscriptions_per_topic > 0 {
                        let status = checker.verdict.status;
                        summary.verdicts.push(VerdictLine { guarantee: *guarantee, status, brief: verdict_brief });
                    }
                }
                result.label = Some(label.clone());
                result.partial = interrupted.load(Ordering::Relaxed);
                result.repeat = repeat;
                result.workload_source = source.clone();
                let path = corelog_reports::output_path(&run_dir, corelog_reports::Output::Result);
                corelog_reports::save_result(&result, &path).with_context(|| format!("writing {}", path.display()))?;
                eprintln!("  wrote {}", path.display());
                if result.counts.acknowledged == 0 {
                    summary.failures.push(format!("{label}: no message was acknowledged"));
                }
                summary.results.push(result);
            }
            Err(error) => summary.failures.push(format!("{label}: {}", crate::error_text(&error))),
        }
        if interrupted.load(Ordering::Relaxed) {
            break;
        }
    }
    if !summary.results.is_empty() {
        let files = corelog_reports::render_report(&summary.results, &out_dir).context("rendering the report")?;
        eprintln!("  report: {} ({} charts)", files.html.display(), files.charts.len());
    }
    let not_run = interrupted.load(Ordering::Relaxed).then(|| {
        let mut names: Vec<&str> = executions.iter().skip(started).filter_map(|(g, _)| g.map(|g| g.name())).collect();
        names.dedup();
        names
    });
    summary.close(workload, &out_dir, not_run)
}

/// The executions of a run, in order: each guarantee `repeat` times in a row,
/// with its repeat's number when there are several.
fn executions(guarantees: &[Option<Guarantee>], repeat: NonZeroU32) -> Vec<(Option<Guarantee>, Option<Repeat>)> {
    let count = repeat.get();
    guarantees
        .iter()
        .flat_map(|&guarantee| {
            (1..=count).map(move |index| (guarantee, (count > 1).then_some(Repeat { index, count })))
        })
        .collect()
}

/// Where one execution writes: `<out>`, `<out>/<guarantee>` when there are several
/// guarantees, and `repeat-<i>` below that when the run is repeated.
fn execution_dir(out_dir: &Path, guarantees: usize, guarantee: Option<Guarantee>, repeat: Option<Repeat>) -> PathBuf {
    let dir = match guarantee {
        Some(g) if guarantees > 1 => out_dir.join(g.name()),
        _ => out_dir.to_path_buf(),
    };
    match repeat {
        Some(repeat) => dir.join(format!("repeat-{}", repeat.index)),
        None => dir,
    }
}

/// One execution per guarantee the workload lists, or one unjudged execution if it
/// lists none.
fn guarantees_to_run(workload: &Workload) -> Vec<Option<Guarantee>> {
    if workload.guarantees.is_empty() {
        vec![None]
    } else {
        workload.guarantees.iter().copied().map(Some).collect()
    }
}

/// What the executions of one run came to: their results (for the report), what
/// made the run fail, and the verdicts that decide its exit status.
#[derive(Default)]
struct Summary {
    results: Vec<RunResult>,
    failures: Vec<String>,
    verdicts: Vec<VerdictLine>,
}

impl Summary {
    /// The closing line: `Ok` when nothing failed and every verdict is PASS, else
    /// the error that names what failed, then the verdicts. `not_run`: the
    /// guarantees an interrupt left out (`None` without an interrupt).
    fn close(self, workload: &Workload, out_dir: &Path, not_run: Option<Vec<&str>>) -> anyhow::Result<()> {
        if !self.results.is_empty() {
            eprintln!("summary:");
            for result in &self.results {
                eprintln!(
                    "{}",
                    progress::closing_line(result.label.as_deref().unwrap_or(&workload.name), &closing_figures(result))
                );
            }
        }
        // The verdicts come last, so the closing line says which guarantee failed.
        let mut closing = Vec::new();
        if !self.failures.is_empty() {
            closing.push(format!("the run failed:\n  {}", self.failures.join("\n  ")));
        }
        if let Some(not_run) = not_run {
            let skipped =
                if not_run.is_empty() { String::new() } else { format!(" (not run: {})", not_run.join(", ")) };
            closing.push(format!("interrupted; what was measured is in {}{skipped}", out_dir.display()));
        }
        let verdicts_held = self.verdicts.iter().all(|line| line.status == VerdictStatus::Pass);
        if closing.is_empty() && verdicts_held {
            if workload.subscriptions_per_topic == 0 {
                eprintln!("corelog run: done; no subscription reads the topics, so no delivery guarantee was checked");
            } else if self.verdicts.is_empty() {
                eprintln!("corelog run: done; the workload lists no delivery guarantee, so none was checked");
            } else {
                eprintln!("corelog run: {}", verdicts_line(&self.verdicts));
            }
            return Ok(());
        }
        if !self.verdicts.is_empty() {
            closing.push(verdicts_line(&self.verdicts));
        }
        bail!("{}", closing.join("\n"))
    }
}

/// An execution's closing figures, from its result.
fn closing_figures(result: &RunResult) -> progress::ClosingFigures {
    let rates = &result.publish_rate;
    let publish_rate = if rates.is_empty() { 0.0 } else { rates.iter().sum::<f64>() / rates.len() as f64 };
    progress::ClosingFigures {
        publish_rate,
        message_size_bytes: result.message_size,
        publish_p99_ms: result.aggregated_publish_latency_99pct,
        end_to_end_p99_ms: result.aggregated_end_to_end_latency_99pct,
        verdict: result.checker.as_ref().map(|checker| checker.verdict.status.as_str()),
    }
}

/// One execution of the workload under one guarantee: starts the target, runs the
/// [`Execution`] on it, then stops the target whatever the execution's outcome.
fn execute(
    workload: &Workload,
    guarantee: Option<Guarantee>,
    run_dir: &Path,
    interrupted: &AtomicBool,
    args: &RunArgs,
) -> anyhow::Result<Outcome> {
    let seed = workload.seed.unwrap_or_else(|| crate::payload::now_us() as u64);
    let progress = ProgressEvery((!args.quiet).then(|| Duration::from_secs(args.progress_interval.get())));
    let starting = match (&workload.driver, &workload.cluster) {
        (crate::workload::DriverKind::Embedded, _) => "starting the embedded engine".to_string(),
        (_, crate::workload::Cluster::Local(local)) => format!("starting {} broker(s)", local.brokers),
        (_, crate::workload::Cluster::External(_)) => "connecting to the cluster".to_string(),
    };
    let target = crate::run::progress::phase(progress, &starting, || Target::start(workload, run_dir))?;
    let plan = Plan {
        workload,
        guarantee,
        run_dir,
        seed,
        forget_reads: args.test_forget_reads,
        non_transactional_stage: args.test_non_transactional_stage,
        progress,
    };
    let topics = execution::all_topic_names(&plan);
    // The execution is gone when `run` returns, early or not: its drop stopped
    // every producer, consumer and fault, so nothing holds the target any more.
    let outcome = Execution::run(plan, &target, interrupted);
    // Topics on a cluster the harness started go with its data directories; on an
    // external cluster they would stay and pile up, run after run.
    if let (Target::External(kafka), false) = (&target, args.keep_topics) {
        match kafka.delete_topics(&topics) {
            Ok(()) => eprintln!("  deleted the run's topics ({}); --keep-topics keeps them", topics.join(", ")),
            Err(error) => eprintln!("  warning: {error:#}"),
        }
    }
    let stopped = target.stop(&run_dir.join("logs"));
    // CORELOG_KEEP_BROKER_DIRS keeps the brokers' data and logs for a post-mortem.
    if run_dir.join(".scratch").exists() && std::env::var_os("CORELOG_KEEP_BROKER_DIRS").is_none() {
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

fn report_guarantee(guarantee: Guarantee) -> ReportGuarantee {
    match guarantee {
        Guarantee::AtMostOnce => ReportGuarantee::AtMostOnce,
        Guarantee::AtLeastOnce => ReportGuarantee::AtLeastOnce,
        Guarantee::Idempotent => ReportGuarantee::Idempotent,
        Guarantee::ExactlyOnce => ReportGuarantee::ExactlyOnce,
    }
}

fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '-' }).collect()
}
