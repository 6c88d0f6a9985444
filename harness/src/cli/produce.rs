//! `corelog produce TOPIC`: one record per line of stdin, as
//! `kafka-console-producer.sh` and `kcat -P` do.
//!
//! With `--key-separator S` a line is `key S value` (split at the first S; a line
//! without S is an error, as in Kafka's console producer); without it the whole
//! line is the value and the key is null. Every `--header k=v` goes on every record.
//! Records are sent as they are read (librdkafka batches them) and the command
//! waits for every acknowledgement before exiting: exit 0 means the cluster
//! acknowledged every line under `--acks`; otherwise exit 1, naming how many were
//! not and the first reason. Records read before a bad line are still sent.

use std::io::BufRead;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use super::{key_value, reason, ClusterArgs};

/// How much longer than `--timeout-ms` the end waits for the last delivery reports.
const FLUSH_SLACK: Duration = Duration::from_secs(5);

#[derive(clap::Args, Debug)]
pub struct ProduceArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The topic to write to.
    topic: String,
    /// Split each line into key and value at the first occurrence of this text.
    #[arg(long = "key-separator", value_name = "TEXT")]
    key_separator: Option<String>,
    /// A header on every record, e.g. source=cli (repeatable).
    #[arg(long = "header", value_name = "KEY=VALUE", value_parser = key_value)]
    headers: Vec<(String, String)>,
    /// Acknowledgements each record needs: 0 (none), 1 (the leader) or all (every in-sync replica).
    #[arg(long, value_name = "0|1|all", default_value = "all", value_parser = ["0", "1", "all", "-1"])]
    acks: String,
    /// An idempotent producer: retries never write a record twice (needs --acks all).
    #[arg(long)]
    idempotence: bool,
    /// Write every record to this partition [default: by the key's hash, or spread when there is none].
    #[arg(long, value_name = "N")]
    partition: Option<i32>,
}

/// Counts failed deliveries and keeps the first reason.
#[derive(Default, Clone)]
struct Failures(Arc<Mutex<(usize, Option<String>)>>);

impl ClientContext for Failures {}

impl ProducerContext for Failures {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            let mut failures = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            failures.0 += 1;
            failures.1.get_or_insert_with(|| reason(error));
        }
    }
}

pub fn run(args: ProduceArgs) -> anyhow::Result<()> {
    if args.idempotence && args.acks != "all" && args.acks != "-1" {
        return Err(crate::UsageError(format!("--idempotence needs --acks all, not --acks {}", args.acks)).into());
    }
    let failures = Failures::default();
    let producer: BaseProducer<Failures> = args
        .cluster
        .client_config()
        .set("acks", &args.acks)
        .set("enable.idempotence", args.idempotence.to_string())
        .create_with_context(failures.clone())
        .map_err(|error| anyhow!("creating the producer: {error}"))?;
    let read = send_lines(&args, &producer, std::io::stdin().lock());
    // Whatever was read is delivered (or fails) before the command ends: every
    // record has its delivery report within message.timeout.ms (the timeout), so
    // the flush waits a little longer than that.
    let flushed = producer.flush(args.cluster.timeout() + FLUSH_SLACK);
    let sent = read?;
    flushed.map_err(|error| {
        anyhow!(
            "{sent} records sent to {} were not all acknowledged within {} ms: {}",
            args.topic,
            args.cluster.timeout_ms,
            reason(&error)
        )
    })?;
    let (failed, first) = failures.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
    if failed > 0 {
        bail!(
            "{failed} of {sent} records were not acknowledged by {}; the first: {}",
            args.topic,
            first.unwrap_or_default()
        );
    }
    Ok(())
}

/// Sends a record per line of `input`; the number sent, or the first line that could not be.
fn send_lines(args: &ProduceArgs, producer: &BaseProducer<Failures>, input: impl BufRead) -> anyhow::Result<usize> {
    let headers = args.headers.iter().fold(OwnedHeaders::new(), |headers, (key, value)| {
        headers.insert(Header { key, value: Some(value.as_bytes()) })
    });
    let mut sent = 0;
    for (index, line) in input.lines().enumerate() {
        let line = line.context("reading stdin")?;
        let (key, value) = match &args.key_separator {
            Some(separator) => match line.split_once(separator.as_str()) {
                Some((key, value)) => (Some(key), value),
                None => bail!("line {}: no key separator {separator:?} in {line:?}", index + 1),
            },
            None => (None, line.as_str()),
        };
        let mut record = BaseRecord::to(&args.topic).payload(value).headers(headers.clone());
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(partition) = args.partition {
            record = record.partition(partition);
        }
        send(producer, record, args.cluster.timeout())?;
        sent += 1;
    }
    Ok(sent)
}

/// Queues one record, waiting while librdkafka's queue is full.
fn send(
    producer: &BaseProducer<Failures>,
    mut record: BaseRecord<'_, str, str>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match producer.send(record) {
            Ok(()) => {
                producer.poll(Duration::ZERO);
                return Ok(());
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned))
                if std::time::Instant::now() < deadline =>
            {
                record = returned;
                producer.poll(Duration::from_millis(10));
            }
            Err((error, returned)) => bail!("sending a record to {}: {}", returned.topic, reason(&error)),
        }
    }
}
