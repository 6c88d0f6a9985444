//! `corelog groups`: list, describe, reset the offsets of and delete consumer
//! groups, as `kafka-consumer-groups.sh` does.
//!
//! The group's members come from librdkafka's group list (ListGroups and
//! DescribeGroups), their assignments decoded from the consumer protocol's bytes.
//! Its committed offsets come from one OffsetFetch for every partition of every
//! topic the cluster has (librdkafka's client, as the `rdkafka` crate offers it, has
//! no "all of the group's offsets" call): a group's offsets on a topic that was
//! deleted are not shown. LAG is the log-end offset (the high watermark) minus the
//! committed offset. `reset-offsets` only prints its plan unless given `--execute`,
//! and refuses a group with members, as Kafka does: a live consumer would overwrite
//! the reset with its next commit.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{anyhow, bail};
use futures_lite::future::block_on;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::datetime::parse_timestamp_ms;
use super::{code_reason, print_table, reason, ClusterArgs};

#[derive(clap::Args, Debug)]
pub struct GroupsArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(subcommand)]
    command: GroupsCommand,
}

#[derive(clap::Subcommand, Debug)]
enum GroupsCommand {
    /// List the cluster's consumer groups, one name a line.
    List,
    /// Show a group: its committed offsets, log-end offsets and LAG per partition, and its members.
    Describe {
        /// The group's id.
        group: String,
    },
    /// Move a group's committed offsets; prints the plan only, unless --execute.
    ResetOffsets(ResetArgs),
    /// Delete a group (it must have no members) and its committed offsets.
    Delete {
        /// The group's id.
        group: String,
    },
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true)
    .args(["to_earliest", "to_latest", "to_datetime", "to_offset"])))]
struct ResetArgs {
    /// The group's id.
    group: String,
    /// A topic, or TOPIC:P1,P2 for some of its partitions (repeatable).
    #[arg(long = "topic", value_name = "TOPIC[:PARTITIONS]", required = true)]
    topics: Vec<String>,
    /// To each partition's earliest offset.
    #[arg(long)]
    to_earliest: bool,
    /// To each partition's latest offset (its end).
    #[arg(long)]
    to_latest: bool,
    /// To the first offset at or after a time: YYYY-MM-DDTHH:MM:SS[.sss][Z|+HH:MM] (UTC without a zone) or epoch ms.
    #[arg(long, value_name = "DATETIME", value_parser = parse_timestamp_ms)]
    to_datetime: Option<i64>,
    /// To this offset, moved into the partition's range if outside it.
    #[arg(long, value_name = "N")]
    to_offset: Option<i64>,
    /// Print the plan and change nothing (the default).
    #[arg(long, conflicts_with = "execute")]
    dry_run: bool,
    /// Commit the new offsets.
    #[arg(long)]
    execute: bool,
}

pub fn run(args: GroupsArgs) -> anyhow::Result<()> {
    let cluster = &args.cluster;
    match args.command {
        GroupsCommand::List => list(cluster),
        GroupsCommand::Describe { group } => describe(cluster, &group),
        GroupsCommand::ResetOffsets(reset) => reset_offsets(cluster, &reset),
        GroupsCommand::Delete { group } => delete(cluster, &group),
    }
}

fn list(cluster: &ClusterArgs) -> anyhow::Result<()> {
    let consumer = cluster.plain_consumer(None)?;
    let groups = consumer.fetch_group_list(None, cluster.timeout()).map_err(|error| cluster.unreachable(error))?;
    let names: BTreeSet<&str> = groups.groups().iter().map(|group| group.name()).collect();
    for name in names {
        println!("{name}");
    }
    Ok(())
}

/// A group member as DescribeGroups tells it.
struct Member {
    id: String,
    client_id: String,
    host: String,
    /// (topic, partition) pairs.
    assignment: Vec<(String, i32)>,
}

/// The group's state and members; `None` if the cluster does not know the group.
fn group_members(
    cluster: &ClusterArgs,
    consumer: &BaseConsumer,
    group: &str,
) -> anyhow::Result<Option<(String, Vec<Member>)>> {
    let groups =
        consumer.fetch_group_list(Some(group), cluster.timeout()).map_err(|error| cluster.unreachable(error))?;
    let Some(info) = groups.groups().iter().find(|info| info.name() == group) else {
        return Ok(None);
    };
    if info.state() == "Dead" {
        return Ok(None);
    }
    let members = info
        .members()
        .iter()
        .map(|member| Member {
            id: member.id().to_string(),
            client_id: member.client_id().to_string(),
            // A broker that does not record the host sends "".
            host: Some(member.client_host()).filter(|host| !host.is_empty()).unwrap_or("-").to_string(),
            assignment: member.assignment().and_then(decode_assignment).unwrap_or_default(),
        })
        .collect();
    Ok(Some((info.state().to_string(), members)))
}

/// The partitions of a consumer protocol Assignment (version, then an array of
/// topic name and partition array; user data after is ignored); `None` if the
/// bytes are not one.
fn decode_assignment(bytes: &[u8]) -> Option<Vec<(String, i32)>> {
    let mut reader = bytes;
    let mut take = |count: usize| -> Option<&[u8]> {
        let (head, tail) = (reader.get(..count)?, reader.get(count..)?);
        reader = tail;
        Some(head)
    };
    let _version = i16::from_be_bytes(take(2)?.try_into().ok()?);
    let topics = i32::from_be_bytes(take(4)?.try_into().ok()?);
    let mut assignment = Vec::new();
    for _ in 0..topics.max(0) {
        let length = i16::from_be_bytes(take(2)?.try_into().ok()?);
        let topic = String::from_utf8(take(usize::try_from(length).ok()?)?.to_vec()).ok()?;
        let partitions = i32::from_be_bytes(take(4)?.try_into().ok()?);
        for _ in 0..partitions.max(0) {
            assignment.push((topic.clone(), i32::from_be_bytes(take(4)?.try_into().ok()?)));
        }
    }
    Some(assignment)
}

/// The partitions of every topic of the cluster but its internal ones, by topic.
type TopicPartitions = BTreeMap<String, Vec<i32>>;

/// A group's committed offsets, by topic and partition.
type CommittedOffsets = BTreeMap<(String, i32), i64>;

/// The group's committed offset of every partition that has one, and the
/// partitions of every topic.
fn committed_offsets(cluster: &ClusterArgs, group: &str) -> anyhow::Result<(CommittedOffsets, TopicPartitions)> {
    let consumer = cluster.plain_consumer(Some(group))?;
    let metadata = cluster.metadata(&consumer)?;
    let topics: TopicPartitions = metadata
        .topics()
        .iter()
        .filter(|topic| !topic.name().starts_with("__"))
        .map(|topic| (topic.name().to_string(), topic.partitions().iter().map(|partition| partition.id()).collect()))
        .collect();
    let mut partitions = TopicPartitionList::new();
    for (topic, ids) in &topics {
        for id in ids {
            partitions.add_partition(topic, *id);
        }
    }
    if partitions.count() == 0 {
        return Ok((BTreeMap::new(), topics));
    }
    let committed = consumer
        .committed_offsets(partitions, cluster.timeout())
        .map_err(|error| anyhow!("the committed offsets of group {group}: {}", reason(&error)))?;
    let committed = committed
        .elements()
        .iter()
        .filter_map(|element| match element.offset() {
            Offset::Offset(offset) => Some(((element.topic().to_string(), element.partition()), offset)),
            _ => None,
        })
        .collect();
    Ok((committed, topics))
}

fn describe(cluster: &ClusterArgs, group: &str) -> anyhow::Result<()> {
    let consumer = cluster.plain_consumer(None)?;
    let members = group_members(cluster, &consumer, group)?;
    let (committed, topics) = committed_offsets(cluster, group)?;
    let (state, members) = match members {
        Some(found) => found,
        None if committed.is_empty() => bail!("consumer group '{group}' does not exist"),
        None => ("Empty".to_string(), Vec::new()),
    };
    let owner: BTreeMap<(String, i32), &Member> = members
        .iter()
        .flat_map(|member| member.assignment.iter().map(move |partition| (partition.clone(), member)))
        .collect();
    // Every partition of each topic the group has an offset or a member on: one it
    // has neither on shows its whole log as "-" rather than being left out.
    let group_topics: BTreeSet<&String> = committed.keys().chain(owner.keys()).map(|(topic, _)| topic).collect();
    let partitions: BTreeSet<(String, i32)> = group_topics
        .into_iter()
        .flat_map(|topic| topics.get(topic).into_iter().flatten().map(move |id| (topic.clone(), *id)))
        .chain(committed.keys().cloned())
        .collect();
    let plural = if members.len() == 1 { "" } else { "s" };
    println!("Consumer group '{group}' is {state} with {} member{plural}.\n", members.len());
    let mut rows = vec![[
        "GROUP",
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "CONSUMER-ID",
        "HOST",
        "CLIENT-ID",
    ]
    .map(String::from)
    .to_vec()];
    for key in &partitions {
        let (topic, partition) = key;
        let (_, end) = consumer
            .fetch_watermarks(topic, *partition, cluster.timeout())
            .map_err(|error| anyhow!("offsets of {topic}/{partition}: {}", reason(&error)))?;
        let current = committed.get(key);
        let member = owner.get(key);
        let text = |value: Option<String>| value.unwrap_or_else(|| "-".to_string());
        rows.push(vec![
            group.to_string(),
            topic.clone(),
            partition.to_string(),
            text(current.map(i64::to_string)),
            end.to_string(),
            text(current.map(|current| (end - current).max(0).to_string())),
            text(member.map(|member| member.id.clone())),
            text(member.map(|member| member.host.clone())),
            text(member.map(|member| member.client_id.clone())),
        ]);
    }
    print_table(&rows);
    if !members.is_empty() {
        println!();
        let mut rows =
            vec![["CONSUMER-ID", "HOST", "CLIENT-ID", "#PARTITIONS", "ASSIGNMENT"].map(String::from).to_vec()];
        for member in &members {
            let assignment: Vec<String> =
                member.assignment.iter().map(|(topic, partition)| format!("{topic}/{partition}")).collect();
            rows.push(vec![
                member.id.clone(),
                member.host.clone(),
                member.client_id.clone(),
                member.assignment.len().to_string(),
                assignment.join(","),
            ]);
        }
        print_table(&rows);
    }
    Ok(())
}

fn reset_offsets(cluster: &ClusterArgs, args: &ResetArgs) -> anyhow::Result<()> {
    let group = args.group.as_str();
    let consumer = cluster.plain_consumer(Some(group))?;
    if let Some((state, members)) = group_members(cluster, &consumer, group)? {
        if !members.is_empty() {
            bail!(
                "Assignments can only be reset if the group '{group}' is inactive, but the current state is {state}."
            );
        }
    }
    let partitions = reset_partitions(cluster, &consumer, &args.topics)?;
    let plan = new_offsets(cluster, &consumer, args, &partitions)?;
    let mut rows = vec![["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"].map(String::from).to_vec()];
    let mut commit = TopicPartitionList::new();
    for ((topic, partition), offset) in &plan {
        rows.push(vec![group.to_string(), topic.clone(), partition.to_string(), offset.to_string()]);
        commit.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    print_table(&rows);
    if args.execute {
        consumer
            .commit(&commit, CommitMode::Sync)
            .map_err(|error| anyhow!("committing the new offsets of group {group}: {}", reason(&error)))?;
    } else {
        eprintln!("Dry run: nothing changed. Add --execute to commit these offsets.");
    }
    Ok(())
}

/// The partitions `--topic` names: all of a topic's, or those after its colon.
fn reset_partitions(
    cluster: &ClusterArgs,
    consumer: &BaseConsumer,
    topics: &[String],
) -> anyhow::Result<Vec<(String, i32)>> {
    let metadata = cluster.metadata(consumer)?;
    let mut partitions = Vec::new();
    for spec in topics {
        let (name, chosen) = match spec.split_once(':') {
            Some((name, list)) => {
                let parsed: Result<Vec<i32>, _> = list.split(',').map(str::parse).collect();
                let chosen = parsed.map_err(|_| crate::UsageError(format!("--topic {spec}: expected TOPIC:P1,P2")))?;
                (name, Some(chosen))
            }
            None => (spec.as_str(), None),
        };
        let Some(topic) = metadata.topics().iter().find(|topic| topic.name() == name) else {
            bail!("topic {name} does not exist");
        };
        let existing: BTreeSet<i32> = topic.partitions().iter().map(|partition| partition.id()).collect();
        for partition in chosen.unwrap_or_else(|| existing.iter().copied().collect()) {
            if !existing.contains(&partition) {
                bail!("topic {name} has no partition {partition}");
            }
            partitions.push((name.to_string(), partition));
        }
    }
    Ok(partitions)
}

/// Each partition's new committed offset under the reset's target.
fn new_offsets(
    cluster: &ClusterArgs,
    consumer: &BaseConsumer,
    args: &ResetArgs,
    partitions: &[(String, i32)],
) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    let mut by_time = BTreeMap::new();
    if let Some(timestamp_ms) = args.to_datetime {
        let mut query = TopicPartitionList::new();
        for (topic, partition) in partitions {
            query.add_partition_offset(topic, *partition, Offset::Offset(timestamp_ms))?;
        }
        let found = consumer
            .offsets_for_times(query, cluster.timeout())
            .map_err(|error| anyhow!("the offsets at {timestamp_ms} ms: {}", reason(&error)))?;
        for element in found.elements() {
            by_time.insert((element.topic().to_string(), element.partition()), element.offset());
        }
    }
    let mut plan = BTreeMap::new();
    for key @ (topic, partition) in partitions {
        let (earliest, latest) = consumer
            .fetch_watermarks(topic, *partition, cluster.timeout())
            .map_err(|error| anyhow!("offsets of {topic}/{partition}: {}", reason(&error)))?;
        let offset = if args.to_earliest {
            earliest
        } else if let Some(offset) = args.to_offset {
            offset.clamp(earliest, latest)
        } else if args.to_datetime.is_some() {
            // No record at or after the time: the end, as Kafka's tool does.
            match by_time.get(key) {
                Some(Offset::Offset(offset)) => *offset,
                _ => latest,
            }
        } else {
            latest
        };
        plan.insert(key.clone(), offset);
    }
    Ok(plan)
}

fn delete(cluster: &ClusterArgs, group: &str) -> anyhow::Result<()> {
    let admin = cluster.admin_client()?;
    let results = block_on(admin.delete_groups(&[group], &cluster.admin_options()))
        .map_err(|error| cluster.unreachable(error))?;
    for result in results {
        if let Err((group, code)) = result {
            bail!("deleting consumer group '{group}': {}", code_reason(code));
        }
    }
    println!("Deletion of requested consumer groups ('{group}') was successful.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumer_protocol_assignment_decodes_to_its_partitions() {
        let mut bytes = vec![0, 1, 0, 0, 0, 2];
        for (topic, partitions) in [("orders", &[0_i32, 2][..]), ("x", &[1][..])] {
            bytes.extend((topic.len() as i16).to_be_bytes());
            bytes.extend(topic.as_bytes());
            bytes.extend((partitions.len() as i32).to_be_bytes());
            for partition in partitions {
                bytes.extend(partition.to_be_bytes());
            }
        }
        bytes.extend((-1_i32).to_be_bytes()); // null user data
        let expected = vec![("orders".to_string(), 0), ("orders".to_string(), 2), ("x".to_string(), 1)];
        assert_eq!(decode_assignment(&bytes), Some(expected));
        assert_eq!(decode_assignment(&bytes[..9]), None, "a cut-off assignment is not one");
    }
}
