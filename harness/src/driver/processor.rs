//! One processor of the exactly-once stage, in its own process: consume, transform,
//! produce, with the input offsets committed in the output's transaction (the loop
//! Kafka Streams runs under `processing.guarantee=exactly_once_v2`).
//!
//! `corelog run` starts `processors` of these as hidden `corelog txn-processor`
//! children for the exactly-once guarantee (see `run::pipeline`), so a
//! `processor-crash` fault is a real SIGKILL in the middle of a transaction: the
//! transaction coordinator, not the harness, must clean up after it.
//!
//! The loop, one transaction per batch (what one poll has ready, up to
//! `--max-messages`):
//! 1. poll a batch from the input topics (`read_committed`, no auto commit); a
//!    rebalance while the batch is gathered drops it, since the partitions it came
//!    from now restart from their committed offsets, here or elsewhere;
//! 2. begin a transaction, and copy every input message to the output topic of
//!    the same index, same partition, same key and payload (the harness header
//!    rides along, so the checker knows each copy); in a transaction drawn to abort
//!    (`--abort-rate`), the copies are marked aborted (`payload.rs`);
//! 3. send the batch's next offsets to the transaction with the consumer's group
//!    metadata, then commit (or abort the drawn ones, and rewind the consumer to
//!    the batch's first offsets so it is processed again).
//!
//! The crash point: on SIGUSR1 the processor dies (SIGKILL to itself) after step
//! 2's copies reached the broker and before the offsets were sent: an open
//! transaction with data in the output and nothing committed, the moment the
//! coordinator's abort (when a new instance with the same `transactional.id`
//! starts, or at the transaction timeout) and the group's committed offsets must
//! agree on. SIGTERM ends the loop after the current transaction. A transactional
//! call that fails for good (a fatal librdkafka error) does not end the processor:
//! it starts its clients again, as an application would, and reports the batch
//! aborted.
//!
//! `--non-transactional` (a test-only switch of `corelog run`) runs the same loop
//! at-least-once: an idempotent producer, offsets committed by the consumer after
//! the copies were acknowledged. A crash then re-processes a batch whose copies
//! were already written, which the checker must see as messages written twice.
//!
//! Stdout, one line per transaction (what the parent's `run::pipeline` reads):
//!
//! ```text
//! ready
//! commit <messages> <latency µs> <input index>:<partition>:<next offset> …
//! abort <messages> <latency µs> planned|error
//! ```
//!
//! The latency is from `begin_transaction` to the commit's (or abort's) answer.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use corelog_engine::hash::SplitMix64;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode as RdCommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::worker::{crash_now, parse_setting};
use crate::payload::PayloadHeader;

/// How long one transactional call (init, send offsets, commit, abort) may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a retriable commit is tried again before the transaction is aborted.
const COMMIT_TRIES: u32 = 5;

#[derive(clap::Args, Debug)]
pub struct ProcessorArgs {
    #[arg(long)]
    bootstrap: String,
    /// The stage's consumer group (all processors share it).
    #[arg(long)]
    group: String,
    /// This processor's `transactional.id`, kept across its restarts so a new
    /// instance fences the old one and aborts what it left open.
    #[arg(long)]
    transactional_id: String,
    /// An input topic (repeatable); its copies go to the `--output` of the same index.
    #[arg(long = "input", required = true)]
    inputs: Vec<String>,
    #[arg(long = "output", required = true)]
    outputs: Vec<String>,
    /// The fraction of transactions aborted on purpose.
    #[arg(long, default_value_t = 0.0)]
    abort_rate: f64,
    /// Most messages in one transaction.
    #[arg(long, default_value_t = 500)]
    max_messages: usize,
    /// Seeds the draw of the transactions to abort.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Test only: an at-least-once stage instead (see the module docs).
    #[arg(long)]
    non_transactional: bool,
    /// A librdkafka producer setting, `key=value` (repeatable).
    #[arg(long = "producer-set", value_parser = parse_setting)]
    producer_settings: Vec<(String, String)>,
    /// A librdkafka consumer setting, `key=value` (repeatable).
    #[arg(long = "consumer-set", value_parser = parse_setting)]
    consumer_settings: Vec<(String, String)>,
}

/// Notes that a rebalance happened, so a batch gathered across it is dropped.
struct RebalanceFlag(Arc<AtomicBool>);

impl ClientContext for RebalanceFlag {}

impl ConsumerContext for RebalanceFlag {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, _rebalance: &Rebalance<'_>) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The child's side: process until SIGTERM (exit 0 after the current transaction)
/// or SIGUSR1 (crash, see the module docs).
pub fn run(args: ProcessorArgs) -> anyhow::Result<()> {
    if args.inputs.len() != args.outputs.len() {
        bail!("{} input topics but {} output topics", args.inputs.len(), args.outputs.len());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let crash = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, crash.clone())?;
    let mut processor = Processor::new(&args)?;
    processor.report("ready")?;
    while !stop.load(Ordering::Relaxed) {
        let batch = processor.gather(args.max_messages);
        if batch.is_empty() {
            continue;
        }
        let planned_abort = !args.non_transactional && processor.draw() < args.abort_rate;
        if let Err(error) = processor.process(&batch, planned_abort, &crash) {
            // A transactional call failed for good (librdkafka's fatal errors, such
            // as INVALID_TXN_STATE for an abort the coordinator, restarted, no longer
            // knows): what an application does, start the clients again. The new
            // producer's InitProducerId (same transactional.id) aborts whatever was
            // left open, and the batch goes back to the group at its committed offsets.
            tracing::warn!("processor: {error:#}; starting its clients again");
            processor.report(&format!("abort {} 0 error", batch.len()))?;
            let draws = processor.draws.clone();
            drop(processor);
            processor = Processor::new(&args)?;
            processor.draws = draws;
        }
    }
    // A clean end: the last transaction is finished; dropping the consumer leaves
    // the group.
    Ok(())
}

struct Processor {
    consumer: BaseConsumer<RebalanceFlag>,
    rebalanced: Arc<AtomicBool>,
    producer: BaseProducer,
    inputs: Vec<String>,
    outputs: Vec<String>,
    transactional: bool,
    draws: SplitMix64,
    out: std::io::Stdout,
}

impl Processor {
    fn new(args: &ProcessorArgs) -> anyhow::Result<Processor> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &args.bootstrap);
        config.set("group.id", &args.group);
        config.set("auto.offset.reset", "earliest");
        config.set("enable.auto.commit", "false");
        config.set("isolation.level", "read_committed");
        config.set("fetch.wait.max.ms", "100");
        // A killed processor's partitions move on once its session times out:
        // Kafka's lowest allowed timeout keeps that within the run.
        config.set("session.timeout.ms", "6000");
        config.set("heartbeat.interval.ms", "1000");
        for (key, value) in &args.consumer_settings {
            config.set(key, value);
        }
        let rebalanced = Arc::new(AtomicBool::new(false));
        let consumer: BaseConsumer<RebalanceFlag> = config
            .create_with_context(RebalanceFlag(rebalanced.clone()))
            .context("creating the processor's consumer")?;
        let names: Vec<&str> = args.inputs.iter().map(String::as_str).collect();
        consumer.subscribe(&names).context("subscribing to the input topics")?;

        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &args.bootstrap);
        config.set("acks", "all");
        config.set("enable.idempotence", "true");
        config.set("linger.ms", "1");
        if !args.non_transactional {
            config.set("transactional.id", &args.transactional_id);
            // What a killed processor left open blocks readers of the output until
            // it is aborted: by the next instance's InitProducerId, or by this.
            config.set("transaction.timeout.ms", "10000");
        }
        for (key, value) in &args.producer_settings {
            config.set(key, value);
        }
        let producer: BaseProducer = config.create().context("creating the processor's producer")?;
        if !args.non_transactional {
            producer.init_transactions(CALL_TIMEOUT).context("initialising transactions")?;
        }
        Ok(Processor {
            consumer,
            rebalanced,
            producer,
            inputs: args.inputs.clone(),
            outputs: args.outputs.clone(),
            transactional: !args.non_transactional,
            draws: SplitMix64::new(args.seed),
            out: std::io::stdout(),
        })
    }

    /// A draw in [0, 1).
    fn draw(&mut self) -> f64 {
        (self.draws.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn report(&mut self, line: &str) -> anyhow::Result<()> {
        writeln!(self.out, "{line}").and_then(|()| self.out.flush()).context("writing to the parent")
    }

    /// What one poll has ready, up to `max` messages; empty after a rebalance (see
    /// the module docs).
    fn gather(&mut self, max: usize) -> Vec<OwnedMessage> {
        let mut batch = Vec::new();
        let mut timeout = Duration::from_millis(100);
        while batch.len() < max {
            let polled = self.consumer.poll(timeout);
            if self.rebalanced.swap(false, Ordering::Relaxed) {
                batch.clear();
            }
            match polled {
                Some(Ok(message)) => batch.push(message.detach()),
                Some(Err(error)) => tracing::debug!("processor: {error}"),
                None => break,
            }
            timeout = Duration::ZERO;
        }
        batch
    }

    /// One batch in one transaction (or, non-transactional, at least once).
    fn process(&mut self, batch: &[OwnedMessage], planned_abort: bool, crash: &AtomicBool) -> anyhow::Result<()> {
        let started = Instant::now();
        if self.transactional {
            self.producer.begin_transaction().context("beginning a transaction")?;
        }
        for message in batch {
            self.copy(message, planned_abort)?;
        }
        if crash.load(Ordering::Relaxed) {
            // Make the open transaction's copies reach the broker first.
            let _ = self.await_deliveries();
            crash_now();
        }
        let offsets = next_offsets(batch)?;
        if !self.transactional {
            self.await_deliveries()?;
            self.consumer.commit(&offsets, RdCommitMode::Sync).context("committing the input offsets")?;
            return self.report(&commit_line(batch.len(), started, &offsets, &self.inputs));
        }
        // The copies acknowledged first: their AddPartitionsToTxn has then made the
        // transaction Ongoing, so AddOffsetsToTxn does not meet the previous
        // transaction still completing (CONCURRENT_TRANSACTIONS, which librdkafka
        // retries only after retry.backoff.ms, 100 ms).
        if let Err(error) = self.await_deliveries() {
            tracing::debug!("processor: {error:#}");
        }
        let metadata = self.consumer.group_metadata().context("the consumer has no group metadata")?;
        let ending = match self.producer.send_offsets_to_transaction(&offsets, &metadata, CALL_TIMEOUT) {
            Ok(()) if planned_abort => Ending::Abort("planned"),
            Ok(()) => self.commit()?,
            Err(error) => abandon(&error, "sending the offsets to the transaction")?,
        };
        match ending {
            Ending::Committed => self.report(&commit_line(batch.len(), started, &offsets, &self.inputs)),
            Ending::Abort(why) => {
                // Whatever is in flight must be answered before an abort can end.
                let _ = self.await_deliveries();
                self.producer.abort_transaction(CALL_TIMEOUT).context("aborting a transaction")?;
                self.rewind(batch)?;
                let line = format!("abort {} {} {why}", batch.len(), started.elapsed().as_micros());
                self.report(&line)
            }
        }
    }

    /// Serves the producer's delivery reports until every copy sent is answered.
    ///
    /// rust-rdkafka's `flush` (which its `commit_transaction` calls first) polls in
    /// 100 ms steps once anything is outstanding, which put a floor of about 100 ms
    /// under every commit (measured: 101 ms p50 for one-message transactions, where
    /// librdkafka through Python commits in 3 ms). Polling here in 1 ms steps leaves
    /// nothing for it to wait for.
    fn await_deliveries(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + CALL_TIMEOUT;
        while self.producer.in_flight_count() > 0 {
            if Instant::now() > deadline {
                bail!("{} copies not acknowledged within {CALL_TIMEOUT:?}", self.producer.in_flight_count());
            }
            self.producer.poll(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Commits the open transaction, trying a retriable failure again.
    fn commit(&mut self) -> anyhow::Result<Ending> {
        if let Err(error) = self.await_deliveries() {
            tracing::debug!("processor: {error:#}; the commit waits for them");
        }
        for _ in 0..COMMIT_TRIES {
            match self.producer.commit_transaction(CALL_TIMEOUT) {
                Ok(()) => return Ok(Ending::Committed),
                Err(KafkaError::Transaction(error)) if error.is_retriable() => {
                    tracing::debug!("processor: commit failed ({error}); trying again");
                }
                Err(error) => return abandon(&error, "committing a transaction"),
            }
        }
        Ok(Ending::Abort("error"))
    }

    /// Copies one input message to its output (same partition, key and payload).
    fn copy(&mut self, message: &OwnedMessage, planned_abort: bool) -> anyhow::Result<()> {
        let index =
            self.inputs.iter().position(|topic| topic == message.topic()).context("a message of no input topic")?;
        let mut payload = message.payload().unwrap_or(&[]).to_vec();
        if planned_abort {
            PayloadHeader::mark_aborted(&mut payload);
        }
        let output = &self.outputs[index];
        loop {
            let mut record = BaseRecord::to(output).partition(message.partition()).payload(&payload);
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((error, _)) => return Err(error).context("producing a copy"),
            }
        }
    }

    /// Points the consumer back at the batch's first offsets, so an aborted batch
    /// is processed again.
    fn rewind(&mut self, batch: &[OwnedMessage]) -> anyhow::Result<()> {
        let mut first: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for message in batch {
            first.entry((message.topic(), message.partition())).or_insert(message.offset());
        }
        for ((topic, partition), offset) in first {
            self.consumer
                .seek(topic, partition, Offset::Offset(offset), Duration::from_secs(5))
                .with_context(|| format!("rewinding {topic}/{partition} to {offset}"))?;
        }
        Ok(())
    }
}

/// How a transaction ends.
enum Ending {
    Committed,
    /// Aborted: `planned`, or `error` (a failure that requires it).
    Abort(&'static str),
}

/// What to do after a transactional call failed: abort when librdkafka says the
/// transaction can be aborted, give up (an error) when it is fatal (fenced).
fn abandon(error: &KafkaError, doing: &str) -> anyhow::Result<Ending> {
    match error {
        KafkaError::Transaction(rd) if rd.txn_requires_abort() || rd.is_retriable() => {
            tracing::debug!("processor: {doing} failed ({rd}); aborting");
            Ok(Ending::Abort("error"))
        }
        other => bail!("{doing}: {other}"),
    }
}

/// The next offset of every partition in the batch, to commit.
fn next_offsets(batch: &[OwnedMessage]) -> anyhow::Result<TopicPartitionList> {
    let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for message in batch {
        let entry = next.entry((message.topic(), message.partition())).or_insert(0);
        *entry = (*entry).max(message.offset() + 1);
    }
    let mut list = TopicPartitionList::new();
    for ((topic, partition), offset) in next {
        list.add_partition_offset(topic, partition, Offset::Offset(offset)).context("an offset to commit")?;
    }
    Ok(list)
}

/// `commit <messages> <latency µs> <input index>:<partition>:<next offset> …`
fn commit_line(messages: usize, started: Instant, offsets: &TopicPartitionList, inputs: &[String]) -> String {
    let mut line = format!("commit {messages} {}", started.elapsed().as_micros());
    for element in offsets.elements() {
        let index = inputs.iter().position(|topic| topic == element.topic()).unwrap_or(0);
        if let Offset::Offset(offset) = element.offset() {
            line.push_str(&format!(" {index}:{}:{offset}", element.partition()));
        }
    }
    line
}
