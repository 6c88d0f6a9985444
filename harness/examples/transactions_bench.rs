//! One run of the transactional-throughput benchmark (`scripts/bench-transactions.sh`
//! drives it): a librdkafka producer sends fixed-size messages to one topic as fast
//! as it can, `--every` messages at a time, and after each group waits until they
//! are acknowledged and, with `--transactional`, commits them as one transaction;
//! without it, it is the same idempotent producer with the same cadence and no
//! transactions, so the difference is what the transactions cost. Prints one JSON
//! line: messages, seconds, messages per second, and the groups' end latency (from
//! a group's last send to its messages acknowledged, and committed:
//! `commit_transaction`'s return).
//!
//! It stops after `--messages` messages or, at the end of a transaction, once
//! `--seconds` have passed, so that committing every message stays bounded in time.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long)]
    bootstrap: String,
    #[arg(long)]
    topic: String,
    /// Message size, bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Most messages to send.
    #[arg(long, default_value_t = 200_000)]
    messages: u64,
    /// Stop at the end of the transaction that passes this many seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Messages per transaction.
    #[arg(long, default_value_t = 100)]
    every: u64,
    #[arg(long)]
    transactional: bool,
    /// The transactional.id (one per run, so runs do not fence each other).
    #[arg(long, default_value = "corelog-bench")]
    transactional_id: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &args.bootstrap);
    config.set("acks", "all");
    config.set("enable.idempotence", "true");
    config.set("linger.ms", "5");
    config.set("queue.buffering.max.messages", "1000000");
    if args.transactional {
        config.set("transactional.id", &args.transactional_id);
    }
    let producer: BaseProducer = config.create().context("creating the producer")?;
    let timeout = Duration::from_secs(30);
    if args.transactional {
        producer.init_transactions(timeout).context("init_transactions")?;
    }
    let payload = vec![0x5a_u8; args.size];
    let mut ends = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < args.messages && started.elapsed().as_secs_f64() < args.seconds {
        let batch = args.every.min(args.messages - sent);
        if args.transactional {
            producer.begin_transaction().context("begin_transaction")?;
        }
        for _ in 0..batch {
            send(&producer, &args.topic, &payload)?;
        }
        sent += batch;
        let end = Instant::now();
        await_deliveries(&producer, timeout)?;
        if args.transactional {
            producer.commit_transaction(timeout).context("commit_transaction")?;
        }
        ends.record(end.elapsed().as_micros().max(1) as u64)?;
    }
    await_deliveries(&producer, timeout)?;
    let seconds = started.elapsed().as_secs_f64();
    let ms = |quantile: f64| ends.value_at_quantile(quantile) as f64 / 1000.0;
    println!(
        "{{\"transactional\": {}, \"every\": {}, \"messages\": {sent}, \"seconds\": {seconds:.3}, \
         \"rate\": {:.1}, \"commits\": {}, \"commit_p50_ms\": {:.2}, \"commit_p99_ms\": {:.2}}}",
        args.transactional,
        args.every,
        sent as f64 / seconds,
        ends.len(),
        ms(0.5),
        ms(0.99)
    );
    Ok(())
}

/// Serves delivery reports in 1 ms steps until nothing is outstanding: rust-rdkafka's
/// own `flush` (called by its `commit_transaction`) polls in 100 ms steps, which would
/// put a 100 ms floor under every commit measured here (see `driver/processor.rs`).
fn await_deliveries(producer: &BaseProducer, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while producer.in_flight_count() > 0 {
        anyhow::ensure!(Instant::now() < deadline, "messages not acknowledged within {timeout:?}");
        producer.poll(Duration::from_millis(1));
    }
    Ok(())
}

fn send(producer: &BaseProducer, topic: &str, payload: &[u8]) -> anyhow::Result<()> {
    loop {
        match producer.send(BaseRecord::<(), _>::to(topic).payload(payload)) {
            Ok(()) => {
                producer.poll(Duration::ZERO);
                return Ok(());
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(1));
            }
            Err((error, _)) => return Err(error).context("producing"),
        }
    }
}
