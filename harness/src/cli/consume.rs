//! `corelog consume TOPIC`: records to stdout, as `kafka-console-consumer.sh` and
//! `kcat -C` do.
//!
//! With `--group G` the consumer joins the group, reads the partitions the group
//! assigns it from the group's committed offsets (or, where it has none, from the
//! start with `--from-beginning`, else from the end) and commits what it printed
//! (only that: a record fetched but not printed is not committed), every 5 s and
//! once more when it stops. Without a group it reads every partition
//! (or `--partition P`) itself, from the end, the start, `--offset N` or the first
//! record at or after `--from-time`, and commits nothing.
//!
//! It stops after `--max-messages N` records, with `--exit-at-end` once every
//! partition it reads is at its end, on SIGINT/SIGTERM, or when stdout is closed
//! (`| head`), always with exit 0. Each record is printed through `--format`, kcat's
//! format string: one value a line unless told otherwise.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::datetime::parse_timestamp_ms;
use super::{reason, ClusterArgs};
use crate::UsageError;

/// How long one poll waits for a record before the loop checks for a stop.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

#[derive(clap::Args, Debug)]
pub struct ConsumeArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The topic to read.
    topic: String,
    /// Join this consumer group and commit the offsets printed.
    #[arg(long, value_name = "G", conflicts_with_all = ["partition", "offset", "from_time"])]
    group: Option<String>,
    /// Start at the earliest offset (with --group: where the group has no committed offset).
    #[arg(long, conflicts_with_all = ["offset", "from_time"])]
    from_beginning: bool,
    /// Start at this offset of --partition.
    #[arg(long, value_name = "N", requires = "partition", conflicts_with = "from_time")]
    offset: Option<i64>,
    /// Read only this partition [default: every partition].
    #[arg(long, value_name = "P")]
    partition: Option<i32>,
    /// Start at the first record at or after this time: YYYY-MM-DDTHH:MM:SS[.sss][Z|+HH:MM] (UTC without a zone) or epoch ms.
    #[arg(long, value_name = "DATETIME", value_parser = parse_timestamp_ms)]
    from_time: Option<i64>,
    /// How to print a record, as kcat's -f: %k key, %v value, %p partition, %o offset,
    /// %t topic, %T timestamp (ms), %h headers (k=v,...), %% a percent sign; \n, \t, \\ escapes.
    #[arg(long, value_name = "FORMAT", default_value = "%v\\n")]
    format: String,
    /// Stop once every partition read is at its end.
    #[arg(long)]
    exit_at_end: bool,
    /// Stop after this many records.
    #[arg(long, value_name = "N")]
    max_messages: Option<u64>,
}

/// One piece of a `--format` string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Key,
    Value,
    Partition,
    Offset,
    Topic,
    Timestamp,
    Headers,
}

/// A `--format` string as pieces, or what is wrong with it.
fn parse_format(format: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        let piece = match (c, chars.clone().next()) {
            ('%', Some(field)) => {
                chars.next();
                match field {
                    'k' => Piece::Key,
                    'v' => Piece::Value,
                    'p' => Piece::Partition,
                    'o' => Piece::Offset,
                    't' => Piece::Topic,
                    'T' => Piece::Timestamp,
                    'h' => Piece::Headers,
                    '%' => Piece::Text("%".to_string()),
                    other => return Err(format!("--format {format:?}: unknown field %{other}")),
                }
            }
            ('\\', Some(escaped @ ('n' | 't' | 'r' | '\\'))) => {
                chars.next();
                Piece::Text(
                    match escaped {
                        'n' => "\n",
                        't' => "\t",
                        'r' => "\r",
                        _ => "\\",
                    }
                    .to_string(),
                )
            }
            (c, _) => Piece::Text(c.to_string()),
        };
        match piece {
            Piece::Text(more) => text.push_str(&more),
            field => {
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(field);
            }
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

/// One record through the format's pieces; a null key or value prints nothing.
fn render(pieces: &[Piece], message: &BorrowedMessage<'_>, out: &mut Vec<u8>) {
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.extend_from_slice(text.as_bytes()),
            Piece::Key => out.extend_from_slice(message.key().unwrap_or_default()),
            Piece::Value => out.extend_from_slice(message.payload().unwrap_or_default()),
            Piece::Partition => out.extend_from_slice(message.partition().to_string().as_bytes()),
            Piece::Offset => out.extend_from_slice(message.offset().to_string().as_bytes()),
            Piece::Topic => out.extend_from_slice(message.topic().as_bytes()),
            Piece::Timestamp => {
                let timestamp = message.timestamp().to_millis().unwrap_or(-1);
                out.extend_from_slice(timestamp.to_string().as_bytes());
            }
            Piece::Headers => {
                for (index, header) in message.headers().iter().flat_map(|headers| headers.iter()).enumerate() {
                    if index > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(header.key.as_bytes());
                    out.push(b'=');
                    out.extend_from_slice(header.value.unwrap_or_default());
                }
            }
        }
    }
}

pub fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let pieces = parse_format(&args.format).map_err(UsageError)?;
    let consumer = match &args.group {
        Some(group) => subscribe(&args, group)?,
        None => assign(&args)?,
    };
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone()).context("handling SIGINT")?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone()).context("handling SIGTERM")?;
    let printed = print_records(&args, &consumer, &pieces, &stop);
    if args.group.is_some() {
        match consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing printed since the last commit: nothing to commit.
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => {
                bail!(
                    "committing the offsets of group {}: {}",
                    args.group.as_deref().unwrap_or_default(),
                    reason(&error)
                )
            }
        }
    }
    printed.map(|_| ())
}

/// Checks that the topic (and `--partition`) exist; the topic's partitions.
fn partitions(args: &ConsumeArgs, consumer: &BaseConsumer) -> anyhow::Result<Vec<i32>> {
    let metadata = args.cluster.metadata(consumer)?;
    let Some(topic) = metadata.topics().iter().find(|topic| topic.name() == args.topic) else {
        bail!("topic {} does not exist", args.topic);
    };
    let partitions: Vec<i32> = topic.partitions().iter().map(|partition| partition.id()).collect();
    match args.partition {
        Some(partition) if !partitions.contains(&partition) => {
            bail!("topic {} has no partition {partition}", args.topic)
        }
        Some(partition) => Ok(vec![partition]),
        None => Ok(partitions),
    }
}

fn subscribe(args: &ConsumeArgs, group: &str) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = args
        .cluster
        .client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        // Offsets are stored once a record is printed (`print_records`), not when
        // librdkafka hands it over, so a commit never covers a record not printed.
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", if args.from_beginning { "earliest" } else { "latest" })
        .set("enable.partition.eof", args.exit_at_end.to_string())
        .create()
        .map_err(|error| anyhow!("creating the consumer: {error}"))?;
    partitions(args, &consumer)?;
    consumer.subscribe(&[&args.topic]).map_err(|error| anyhow!("subscribing to {}: {}", args.topic, reason(&error)))?;
    Ok(consumer)
}

fn assign(args: &ConsumeArgs) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = args
        .cluster
        .client_config()
        // librdkafka wants a group id to assign; nothing joins it or commits to it.
        .set("group.id", "corelog-cli")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", args.exit_at_end.to_string())
        .create()
        .map_err(|error| anyhow!("creating the consumer: {error}"))?;
    let partitions = partitions(args, &consumer)?;
    let start = match (args.from_beginning, args.offset) {
        (true, _) => Offset::Beginning,
        (false, Some(offset)) => Offset::Offset(offset),
        (false, None) => Offset::End,
    };
    let mut assignment = TopicPartitionList::new();
    for partition in &partitions {
        assignment.add_partition_offset(&args.topic, *partition, start)?;
    }
    if let Some(timestamp_ms) = args.from_time {
        let mut query = TopicPartitionList::new();
        for partition in &partitions {
            query.add_partition_offset(&args.topic, *partition, Offset::Offset(timestamp_ms))?;
        }
        // A partition with no record at or after the time starts at its end.
        assignment = consumer
            .offsets_for_times(query, args.cluster.timeout())
            .map_err(|error| anyhow!("the offsets of {} at {timestamp_ms} ms: {}", args.topic, reason(&error)))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|error| anyhow!("assigning the partitions of {}: {}", args.topic, reason(&error)))?;
    Ok(consumer)
}

/// The poll loop: prints records until a stop condition; the records printed.
fn print_records(
    args: &ConsumeArgs,
    consumer: &BaseConsumer,
    pieces: &[Piece],
    stop: &AtomicBool,
) -> anyhow::Result<u64> {
    let mut stdout = std::io::stdout().lock();
    let mut buffer = Vec::new();
    let mut printed = 0_u64;
    let mut at_end = BTreeSet::new();
    while !stop.load(Ordering::Relaxed) && args.max_messages.is_none_or(|max| printed < max) {
        match consumer.poll(POLL_INTERVAL) {
            Some(Ok(message)) => {
                at_end.remove(&message.partition());
                buffer.clear();
                render(pieces, &message, &mut buffer);
                match stdout.write_all(&buffer) {
                    Ok(()) => {
                        printed += 1;
                        if args.group.is_some() {
                            consumer.store_offset_from_message(&message).map_err(|error| {
                                anyhow!("storing the offset of a printed record: {}", reason(&error))
                            })?;
                        }
                    }
                    // The reader went away (`| head`): a normal end.
                    Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => break,
                    Err(error) => return Err(error).context("writing to stdout"),
                }
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            Some(Err(error)) => match error.rdkafka_error_code() {
                Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::TopicAuthorizationFailed) => {
                    bail!("reading {}: {}", args.topic, reason(&error))
                }
                // Passing trouble (a broker restarting, a rebalance): librdkafka retries.
                _ => tracing::warn!("reading {}: {error}", args.topic),
            },
            None => {}
        }
        if args.exit_at_end && all_at_end(consumer, &at_end) {
            break;
        }
        match stdout.flush() {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => break,
            Err(error) => return Err(error).context("writing to stdout"),
        }
    }
    Ok(printed)
}

/// Whether the consumer has partitions and every one of them is at its end.
fn all_at_end(consumer: &BaseConsumer, at_end: &BTreeSet<i32>) -> bool {
    let Ok(assignment) = consumer.assignment() else { return false };
    let elements = assignment.elements();
    !elements.is_empty() && elements.iter().all(|element| at_end.contains(&element.partition()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_format_string_splits_into_fields_and_text_with_escapes() {
        let pieces = parse_format("%k:%v@%p/%o %t %T [%h] 100%%\\n").expect("valid");
        let text = |s: &str| Piece::Text(s.to_string());
        assert_eq!(
            pieces,
            vec![
                Piece::Key,
                text(":"),
                Piece::Value,
                text("@"),
                Piece::Partition,
                text("/"),
                Piece::Offset,
                text(" "),
                Piece::Topic,
                text(" "),
                Piece::Timestamp,
                text(" ["),
                Piece::Headers,
                text("] 100%\n"),
            ]
        );
        assert_eq!(parse_format("%v\\n").expect("valid"), vec![Piece::Value, text("\n")]);
    }

    #[test]
    fn an_unknown_format_field_is_refused() {
        let error = parse_format("%v %x").expect_err("no %x");
        assert!(error.contains("%x"), "{error}");
    }
}
