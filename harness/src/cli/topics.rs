//! `corelog topics`: create, list, describe, alter and delete topics, as
//! `kafka-topics.sh` and `kafka-configs.sh` do, through librdkafka's admin API.
//!
//! `describe` prints Kafka's layout (a line per topic with its own configs, a line
//! per partition with leader, replicas and ISR) and adds each partition's earliest
//! and latest offsets. `alter` changes only the keys it is given: it reads the
//! topic's own configs, sets the new ones over them and writes the whole set back
//! with AlterConfigs (librdkafka's client has no IncrementalAlterConfigs binding in
//! the `rdkafka` crate); a change another client makes between the read and the
//! write is lost, as with `kafka-configs.sh` before Kafka 2.3.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail};
use futures_lite::future::block_on;
use rdkafka::admin::{AlterConfig, ConfigSource, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::metadata::MetadataTopic;

use super::{code_reason, key_value, reason, ClusterArgs};

#[derive(clap::Args, Debug)]
pub struct TopicsArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(subcommand)]
    command: TopicsCommand,
}

#[derive(clap::Subcommand, Debug)]
enum TopicsCommand {
    /// Create a topic.
    Create {
        /// The topic's name.
        name: String,
        /// Number of partitions [default: the broker's default].
        #[arg(long, value_name = "N")]
        partitions: Option<i32>,
        /// Copies of each partition [default: the broker's default].
        #[arg(long = "replication-factor", value_name = "R")]
        replication_factor: Option<i32>,
        /// A topic config, e.g. retention.ms=86400000 (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = key_value)]
        configs: Vec<(String, String)>,
    },
    /// List the cluster's topics, one name a line.
    List,
    /// Show topics (all, or the one named): partitions, leader, replicas, ISR, offsets.
    Describe {
        /// The topic to show [default: every topic].
        name: Option<String>,
    },
    /// Set topic configs; keys not given keep their values.
    Alter {
        /// The topic's name.
        name: String,
        /// A topic config to set, e.g. retention.ms=3600000 (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = key_value)]
        configs: Vec<(String, String)>,
        /// A topic config to return to the default (repeatable).
        #[arg(long = "delete-config", value_name = "KEY")]
        delete_configs: Vec<String>,
    },
    /// Delete a topic and its records.
    Delete {
        /// The topic's name.
        name: String,
    },
}

pub fn run(args: TopicsArgs) -> anyhow::Result<()> {
    let cluster = &args.cluster;
    match args.command {
        TopicsCommand::Create { name, partitions, replication_factor, configs } => {
            create(cluster, &name, partitions, replication_factor, &configs)
        }
        TopicsCommand::List => list(cluster),
        TopicsCommand::Describe { name } => describe(cluster, name.as_deref()),
        TopicsCommand::Alter { name, configs, delete_configs } => alter(cluster, &name, &configs, &delete_configs),
        TopicsCommand::Delete { name } => delete(cluster, &name),
    }
}

fn create(
    cluster: &ClusterArgs,
    name: &str,
    partitions: Option<i32>,
    replication_factor: Option<i32>,
    configs: &[(String, String)],
) -> anyhow::Result<()> {
    let admin = cluster.admin_client()?;
    // -1 asks the broker for its default, as Kafka's CreateTopics allows since 2.4.
    let mut topic =
        NewTopic::new(name, partitions.unwrap_or(-1), TopicReplication::Fixed(replication_factor.unwrap_or(-1)));
    for (key, value) in configs {
        topic = topic.set(key, value);
    }
    let results = block_on(admin.create_topics([&topic], &cluster.admin_options()))
        .map_err(|error| cluster.unreachable(error))?;
    for result in results {
        if let Err((topic, code)) = result {
            bail!("creating topic {topic}: {}", code_reason(code));
        }
    }
    println!("Created topic {name}.");
    Ok(())
}

fn list(cluster: &ClusterArgs) -> anyhow::Result<()> {
    let consumer = cluster.plain_consumer(None)?;
    let metadata = cluster.metadata(&consumer)?;
    let mut names: Vec<&str> = metadata.topics().iter().map(MetadataTopic::name).collect();
    names.sort_unstable();
    for name in names {
        println!("{name}");
    }
    Ok(())
}

fn describe(cluster: &ClusterArgs, name: Option<&str>) -> anyhow::Result<()> {
    let consumer = cluster.plain_consumer(None)?;
    let metadata = cluster.metadata(&consumer)?;
    let mut topics: Vec<&MetadataTopic> =
        metadata.topics().iter().filter(|topic| name.is_none_or(|name| topic.name() == name)).collect();
    if let Some(name) = name {
        if topics.is_empty() {
            bail!("topic {name} does not exist");
        }
    }
    topics.sort_by_key(|topic| topic.name());
    let names: Vec<&str> = topics.iter().map(|topic| topic.name()).collect();
    let configs = own_configs(cluster, &names)?;
    for topic in topics {
        if let Some(error) = topic.error() {
            bail!("describing topic {}: {}", topic.name(), code_reason(error.into()));
        }
        print!("{}", describe_topic(cluster, &consumer, topic, &configs[topic.name()])?);
    }
    Ok(())
}

/// One topic in `kafka-topics.sh --describe`'s layout, with offsets added.
fn describe_topic(
    cluster: &ClusterArgs,
    consumer: &BaseConsumer,
    topic: &MetadataTopic,
    configs: &BTreeMap<String, String>,
) -> anyhow::Result<String> {
    let mut partitions: Vec<_> = topic.partitions().iter().collect();
    partitions.sort_by_key(|partition| partition.id());
    let replication_factor = partitions.first().map_or(0, |partition| partition.replicas().len());
    let configs: Vec<String> = configs.iter().map(|(key, value)| format!("{key}={value}")).collect();
    let mut text = format!(
        "Topic: {}\tPartitionCount: {}\tReplicationFactor: {replication_factor}\tConfigs: {}\n",
        topic.name(),
        partitions.len(),
        configs.join(",")
    );
    for partition in partitions {
        let (earliest, latest) = consumer
            .fetch_watermarks(topic.name(), partition.id(), cluster.timeout())
            .map_err(|error| anyhow!("offsets of {}/{}: {}", topic.name(), partition.id(), reason(&error)))?;
        let list = |ids: &[i32]| ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
        text.push_str(&format!(
            "\tTopic: {}\tPartition: {}\tLeader: {}\tReplicas: {}\tIsr: {}\tEarliest: {earliest}\tLatest: {latest}\n",
            topic.name(),
            partition.id(),
            partition.leader(),
            list(partition.replicas()),
            list(partition.isr()),
        ));
    }
    Ok(text)
}

/// Each topic's own configs (those set on it, not defaults), by topic name.
fn own_configs(cluster: &ClusterArgs, names: &[&str]) -> anyhow::Result<BTreeMap<String, BTreeMap<String, String>>> {
    let admin = cluster.admin_client()?;
    let resources: Vec<ResourceSpecifier> = names.iter().map(|name| ResourceSpecifier::Topic(name)).collect();
    let results = block_on(admin.describe_configs(&resources, &cluster.admin_options()))
        .map_err(|error| cluster.unreachable(error))?;
    let mut configs = BTreeMap::new();
    for (name, result) in names.iter().zip(results) {
        let resource = result.map_err(|code| anyhow!("configs of topic {name}: {}", code_reason(code)))?;
        let own = resource
            .entries
            .into_iter()
            .filter(|entry| entry.source == ConfigSource::DynamicTopic)
            .filter_map(|entry| entry.value.map(|value| (entry.name, value)))
            .collect();
        configs.insert(name.to_string(), own);
    }
    Ok(configs)
}

fn alter(
    cluster: &ClusterArgs,
    name: &str,
    configs: &[(String, String)],
    delete_configs: &[String],
) -> anyhow::Result<()> {
    if configs.is_empty() && delete_configs.is_empty() {
        return Err(
            crate::UsageError("topics alter: give --config KEY=VALUE or --delete-config KEY".to_string()).into()
        );
    }
    let consumer = cluster.plain_consumer(None)?;
    if !cluster.metadata(&consumer)?.topics().iter().any(|topic| topic.name() == name) {
        bail!("topic {name} does not exist");
    }
    let mut merged = own_configs(cluster, &[name])?.remove(name).unwrap_or_default();
    for key in delete_configs {
        merged.remove(key);
    }
    merged.extend(configs.iter().cloned());
    let mut alteration = AlterConfig::new(ResourceSpecifier::Topic(name));
    for (key, value) in &merged {
        alteration = alteration.set(key, value);
    }
    let admin = cluster.admin_client()?;
    let results = block_on(admin.alter_configs([&alteration], &cluster.admin_options()))
        .map_err(|error| cluster.unreachable(error))?;
    for result in results {
        if let Err((_, code)) = result {
            bail!("altering the configs of topic {name}: {}", code_reason(code));
        }
    }
    println!("Completed updating config for topic {name}.");
    Ok(())
}

fn delete(cluster: &ClusterArgs, name: &str) -> anyhow::Result<()> {
    let admin = cluster.admin_client()?;
    let results =
        block_on(admin.delete_topics(&[name], &cluster.admin_options())).map_err(|error| cluster.unreachable(error))?;
    for result in results {
        if let Err((topic, code)) = result {
            bail!("deleting topic {topic}: {}", code_reason(code));
        }
    }
    println!("Deleted topic {name}.");
    Ok(())
}
