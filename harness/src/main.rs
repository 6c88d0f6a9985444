//! `corelog`: the one binary. `corelog broker` runs a Kafka-compatible broker;
//! `corelog run` replays a workload against brokers it starts (or any Kafka-compatible
//! cluster, or the embedded engine) and writes results and a report; `corelog report`
//! and `corelog compare` re-render results; `corelog check` validates workloads;
//! `corelog repair` truncates a damaged partition, with consent; `corelog topics`,
//! `groups`, `produce` and `consume` are the Kafka command-line workflows, for any
//! Kafka-compatible cluster.
//!
//! Exit codes: 0 success; 1 the command failed (the message says why), and for
//! `corelog run` also a guarantee whose verdict is not PASS (FAIL, or UNKNOWN: the
//! checker could not confirm it; the closing line names each guarantee with its
//! verdict); 2 bad command line or configuration (clap's usage errors use 2 as
//! well).
//!
//! This file is only the command line: flags, logging, the allocator and the exit
//! code. What each command does is in the `corelog_harness` library (`lib.rs`).

#![forbid(unsafe_code)]

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use corelog_harness::{broker, check, cli, driver, proxy, repair, report, run, UsageError};

#[derive(Parser)]
#[command(name = "corelog", version, about = "A Kafka-compatible thread-per-core log engine and its test harness")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a Kafka-compatible broker on this machine.
    Broker(broker::BrokerArgs),
    /// Validate workload files without running them (exit 2 if one is invalid).
    Check(check::CheckArgs),
    /// Run a workload: start brokers, produce, consume, measure, write result.json and report.html.
    Run(run::RunArgs),
    /// Render report.html and charts from result.json files.
    Report(report::ReportArgs),
    /// Compare runs: a change table (base, new, % change) and overlaid charts.
    Compare(report::CompareArgs),
    /// A TCP fault proxy in front of a broker: latency, bandwidth, resets, blackhole, down.
    Proxy(proxy::ProxyArgs),
    /// Show a damaged (offline) partition's damage; with --truncate-at-corruption, cut it there.
    Repair(repair::RepairArgs),
    /// Create, list, describe, alter and delete topics (as kafka-topics.sh).
    Topics(cli::topics::TopicsArgs),
    /// List, describe (LAG per partition), reset the offsets of and delete consumer groups.
    Groups(cli::groups::GroupsArgs),
    /// Write one record per stdin line to a topic (as kafka-console-producer.sh).
    Produce(cli::produce::ProduceArgs),
    /// Print a topic's records (as kafka-console-consumer.sh, with kcat's --format).
    Consume(cli::consume::ConsumeArgs),
    /// A consumer in its own process, for `corelog run` (faults kill it for real).
    #[command(hide = true)]
    ConsumerWorker(driver::worker::WorkerArgs),
    /// A processor of the exactly-once stage in its own process, for `corelog run`.
    #[command(hide = true)]
    TxnProcessor(driver::processor::ProcessorArgs),
}

/// Log filter unless `CORELOG_LOG` says otherwise. librdkafka's own log is off:
/// under faults it reports every refused connection as an error, burying the run's
/// output; `corelog run` counts and reports failed sends itself, and
/// `CORELOG_LOG=info` brings librdkafka's lines back.
pub const DEFAULT_LOG: &str = "info,rdkafka=off,librdkafka=off";

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CORELOG_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(corelog_harness::logging::LogWriter)
        .with_ansi(corelog_harness::logging::colour())
        .init();
    if let Err(error) = try_main() {
        eprintln!("corelog: error: {}", corelog_harness::error_text(&error));
        let code = if error.downcast_ref::<UsageError>().is_some() { 2 } else { 1 };
        std::process::exit(code);
    }
}

fn try_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Broker(args) => broker::run(args),
        Command::Check(args) => check::run(args),
        Command::Run(args) => run::run(args),
        Command::Report(args) => report::report(args),
        Command::Compare(args) => report::compare(args),
        Command::Proxy(args) => proxy::run(args),
        Command::Repair(args) => repair::run(args),
        Command::Topics(args) => cli::topics::run(args),
        Command::Groups(args) => cli::groups::run(args),
        Command::Produce(args) => cli::produce::run(args),
        Command::Consume(args) => cli::consume::run(args),
        Command::ConsumerWorker(args) => driver::worker::run(args),
        Command::TxnProcessor(args) => driver::processor::run(args),
    }
}
