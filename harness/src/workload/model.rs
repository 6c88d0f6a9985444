//! The validated workload: what `corelog run` executes. Every value here has passed
//! the checks of `validate.rs`, defaults are applied and units are explicit, so the
//! runner never re-checks or re-interprets the YAML.

// The runner (`corelog run`, next milestone) reads the model; until it lands only
// `corelog check` and the tests do, so some fields are not read yet.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use corelog_engine::cpus::ShardCpus;
use corelog_engine::Durability;

use super::schema::Choice;

/// Defines an enum whose variants have a YAML name and documentation, once: the
/// enum, `ALL`, `CHOICES` (for the schema and the reference), `name` and `from_name`.
macro_rules! named_enum {
    (
        $(#[doc = $doc:literal])*
        pub enum $name:ident {
            $(
                $(#[doc = $variant_doc:literal])*
                $variant:ident = $text:literal,
            )*
        }
    ) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $(
                $(#[doc = $variant_doc])*
                $variant,
            )*
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];
            pub(crate) const CHOICES: &'static [Choice] =
                &[$(Choice { name: $text, doc: concat!($($variant_doc, "\n"),*) }),*];

            /// The name used in workload files.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            pub fn from_name(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)*
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

named_enum! {
    /// How producers choose message keys (OMB's `KeyDistributorType`).
    pub enum KeyDistributor {
        /// No key: the producer's partitioner spreads messages over partitions.
        NoKey = "NO_KEY",
        /// Keys taken in turn from a fixed set, so consecutive messages go to
        /// different partitions and each key's messages stay in order.
        KeyRoundRobin = "KEY_ROUND_ROBIN",
        /// A key derived from the clock's nanoseconds for every message: effectively
        /// random partitions.
        RandomNano = "RANDOM_NANO",
    }
}

named_enum! {
    /// What the workload's clients talk to.
    pub enum DriverKind {
        /// Real Kafka clients (librdkafka) over TCP, against the started brokers or
        /// an external cluster: what applications see.
        Kafka = "kafka",
        /// The corelog engine in the harness' own process, no network and no Kafka
        /// protocol: the engine's own limits. One broker, no faults, no client configs.
        Embedded = "embedded",
    }
}

named_enum! {
    /// A delivery guarantee, and what its verdict checks.
    pub enum Guarantee {
        /// Producers send with acks=1 and no retries; consumers commit before
        /// processing. Messages may be lost, never duplicated.
        AtMostOnce = "at-most-once",
        /// Producers send with acks=all and retry; consumers commit after processing.
        /// No acknowledged message is lost; duplicates are allowed.
        AtLeastOnce = "at-least-once",
        /// At-least-once with the idempotent producer (enable.idempotence): no
        /// acknowledged message is lost and producer retries never write one twice;
        /// a consumer restart may still deliver some twice.
        Idempotent = "idempotent",
        /// Transactional consume-transform-produce (`processing`): idempotent
        /// producers write the input, transactional processors copy it to an output
        /// topic committing the input offsets in the same transaction, and the
        /// subscriptions read the output with read_committed. Every acknowledged
        /// message appears exactly once in the output, in order, and no copy of an
        /// aborted transaction is read.
        ExactlyOnce = "exactly-once",
    }
}

named_enum! {
    /// What a fault does.
    pub enum FaultKind {
        /// Kill the broker process (SIGKILL); start it again after `duration` (0: at once).
        Crash = "crash",
        /// Freeze the broker process (SIGSTOP) for `duration`, then resume it (SIGCONT).
        Pause = "pause",
        /// Stop the broker cleanly (SIGTERM, wait for it to exit); start it again
        /// after `duration` (0: at once).
        Restart = "restart",
        /// The fault proxy delays traffic by `delay_ms` (± `jitter_ms`) for `duration`.
        Latency = "latency",
        /// The fault proxy limits traffic to `bytes_per_second` for `duration`.
        Bandwidth = "bandwidth",
        /// The fault proxy resets (TCP RST) every open connection at `at`, and every
        /// connection opened during `duration` if it is above 0.
        Reset = "reset",
        /// The fault proxy keeps connections open but forwards nothing for
        /// `duration`, so clients time out; like a network partition that heals
        /// before TCP gives up, what was held back is delivered afterwards.
        Blackhole = "blackhole",
        /// The fault proxy closes its listener and connections for `duration`:
        /// connections are refused.
        Down = "down",
        /// Splits the cluster's brokers into `groups` for `duration`: every link
        /// between brokers of different groups (replication and metadata quorum,
        /// both directions) is blackholed. Clients reach every broker, or with
        /// `clients` only those of that group. Without `groups`, a random minority
        /// is split from the rest.
        Partition = "partition",
        /// Cuts the target broker off from the other brokers for `duration` (every
        /// replication and metadata quorum link, both directions, blackholed);
        /// clients still reach it.
        Isolate = "isolate",
        /// Kill a consumer without committing or leaving its group; a new one joins
        /// the group after `duration` (0: at once).
        ConsumerCrash = "consumer-crash",
        /// Drop a producer with its in-flight sends (their outcome is counted as
        /// ambiguous); a new one starts after `duration` (0: at once).
        ProducerCrash = "producer-crash",
        /// Kill a processor of the exactly-once stage (SIGKILL) in the middle of a
        /// transaction, its copies written and nothing committed; a new one with
        /// the same transactional.id starts after `duration` (0: at once). Needs
        /// `exactly-once` in `guarantees`; the other guarantees' executions skip it.
        ProcessorCrash = "processor-crash",
    }
}

named_enum! {
    /// Which traffic a network fault affects.
    pub enum ParameterDirection {
        /// Both directions.
        Both = "both",
        /// Requests: from clients to the broker.
        ToBroker = "to-broker",
        /// Responses: from the broker to clients.
        ToClient = "to-client",
    }
}

/// What a fault kind acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultScope {
    /// A broker's process.
    BrokerProcess,
    /// The TCP fault proxy in front of a broker's listener.
    Network,
    /// The fault proxies on the links between brokers.
    Links,
    /// One of the harness' own clients.
    Client,
}

impl FaultScope {
    pub fn describe(self) -> &'static str {
        match self {
            FaultScope::BrokerProcess => "broker process",
            FaultScope::Network => "broker network",
            FaultScope::Links => "links between brokers",
            FaultScope::Client => "client",
        }
    }
}

impl FaultKind {
    pub fn scope(self) -> FaultScope {
        match self {
            FaultKind::Crash | FaultKind::Pause | FaultKind::Restart => FaultScope::BrokerProcess,
            FaultKind::Latency | FaultKind::Bandwidth | FaultKind::Reset | FaultKind::Blackhole | FaultKind::Down => {
                FaultScope::Network
            }
            FaultKind::Partition | FaultKind::Isolate => FaultScope::Links,
            FaultKind::ConsumerCrash | FaultKind::ProducerCrash | FaultKind::ProcessorCrash => FaultScope::Client,
        }
    }

    /// Whether the fault holds a condition for its duration, which must then be above 0.
    pub fn needs_duration(self) -> bool {
        matches!(
            self,
            FaultKind::Pause
                | FaultKind::Latency
                | FaultKind::Bandwidth
                | FaultKind::Blackhole
                | FaultKind::Down
                | FaultKind::Partition
                | FaultKind::Isolate
        )
    }

    /// The `parameters` keys the kind requires, and those it may take.
    pub fn parameters(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            FaultKind::Latency => (&["delay_ms"], &["jitter_ms", "direction"]),
            FaultKind::Bandwidth => (&["bytes_per_second"], &["direction"]),
            FaultKind::Blackhole => (&[], &["direction"]),
            FaultKind::Partition => (&[], &["groups", "clients"]),
            _ => (&[], &[]),
        }
    }

    /// The external-cluster `commands` the kind runs (process kinds only).
    pub fn commands(self) -> &'static [&'static str] {
        match self {
            FaultKind::Crash => &["kill", "start"],
            FaultKind::Restart => &["stop", "start"],
            FaultKind::Pause => &["pause", "resume"],
            _ => &[],
        }
    }
}

/// A validated workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// The file it was read from.
    pub path: PathBuf,
    pub name: String,
    pub topics: u32,
    pub partitions_per_topic: u32,
    pub message_size_bytes: u32,
    pub payload: Payload,
    pub key_distributor: KeyDistributor,
    pub subscriptions_per_topic: u32,
    pub consumers_per_subscription: u32,
    pub producers_per_topic: u32,
    pub producer_rate: ProducerRate,
    pub backlog: Option<Backlog>,
    pub test_duration: Duration,
    pub warmup_duration: Duration,
    pub driver: DriverKind,
    pub cluster: Cluster,
    /// librdkafka producer settings, values as strings.
    pub producer_config: BTreeMap<String, String>,
    /// librdkafka consumer settings, values as strings.
    pub consumer_config: BTreeMap<String, String>,
    /// In the order given; at least one, no repeats.
    pub guarantees: Vec<Guarantee>,
    pub seed: Option<u64>,
    /// Ordered by start time.
    pub faults: Vec<Fault>,
    pub nemesis: Option<Nemesis>,
    /// The exactly-once guarantee's stage (unused by the other guarantees).
    pub processing: Processing,
}

/// The exactly-once guarantee's consume-transform-produce stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Processing {
    /// Transactional processors, one consumer group; `processor-<i>` in fault targets.
    pub processors: u32,
    /// The fraction of transactions aborted on purpose, in [0, 1).
    pub abort_rate: f64,
    /// Most input messages in one transaction.
    pub messages_per_transaction: u32,
}

impl Default for Processing {
    fn default() -> Processing {
        Processing { processors: 2, abort_rate: 0.0, messages_per_transaction: 500 }
    }
}

/// Where message values come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// Every message carries this file's bytes (exactly `message_size_bytes` long).
    File(PathBuf),
    /// A pool of generated payloads, each `random_bytes_ratio` random and the rest zeros.
    Randomized { random_bytes_ratio: f64, pool_size: u32 },
    /// corelog's default: random bytes generated once.
    Generated,
}

/// The producers' aggregate rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProducerRate {
    MessagesPerSecond(u32),
    /// Find the highest rate the system sustains (OMB's `producerRate: 0`).
    DiscoverMaximum,
}

/// A backlog built before consumers start, then drained.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    pub size_bytes: u64,
    /// Fraction of the backlog to drain before the test may end, in [0, 1].
    pub drain_ratio: f64,
}

/// The cluster the workload runs against.
#[derive(Debug, Clone, PartialEq)]
pub enum Cluster {
    /// corelog brokers the harness starts on this machine.
    Local(LocalCluster),
    External(ExternalCluster),
}

#[derive(Debug, Clone, PartialEq)]
pub struct LocalCluster {
    /// Node ids 0..brokers, named `broker-<id>`.
    pub brokers: u32,
    /// Shards per broker; 0 is one per CPU of `cpus`.
    pub cores: u32,
    /// The CPUs the brokers are spread over (`run::cluster::spread_cpus`), or unpinned.
    pub cpus: ShardCpus,
    pub fsync: Durability,
    /// At most `brokers`.
    pub replication_factor: u32,
    /// At most `replication_factor`.
    pub min_insync_replicas: u32,
    /// Kafka topic configs, checked against the engine's `TopicConfig`; never
    /// `min.insync.replicas` (that is `min_insync_replicas`).
    pub topic_config: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExternalCluster {
    /// `host:port` each.
    pub bootstrap: Vec<String>,
    /// `None`: the cluster's own default.
    pub replication_factor: Option<u32>,
    /// `None`: the cluster's own default.
    pub min_insync_replicas: Option<u32>,
    pub topic_config: BTreeMap<String, String>,
    pub nodes: Vec<ExternalNode>,
    pub commands: NodeCommands,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalNode {
    pub name: String,
    pub node_id: i32,
}

/// Shell commands for an external node; `{node}` is replaced by its name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeCommands {
    pub kill: Option<String>,
    pub stop: Option<String>,
    pub start: Option<String>,
    pub pause: Option<String>,
    pub resume: Option<String>,
}

/// A scheduled fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// After the end of the warm-up.
    pub at: Duration,
    pub duration: Duration,
    pub kind: FaultKind,
    pub target: FaultTarget,
    pub parameters: FaultParameters,
}

/// Whom a fault acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultTarget {
    All,
    /// Drawn with the run's seed.
    Random,
    /// A broker by name: `broker-<id>` or an external node's name.
    Broker(String),
    /// The leader of this partition when the fault starts (indexes from 0).
    Leader {
        topic: u32,
        partition: u32,
    },
    /// A replica of this partition that is not its leader when the fault starts:
    /// the first such one in the partition's replica list (indexes from 0).
    Follower {
        topic: u32,
        partition: u32,
    },
    /// The metadata quorum's active controller when the fault starts.
    Controller,
    Producer(u32),
    Consumer(u32),
    /// A processor of the exactly-once stage.
    Processor(u32),
}

impl FaultTarget {
    /// Parses the `target` syntax; the names and indexes are checked against the
    /// workload separately.
    pub fn parse(text: &str) -> Result<FaultTarget, String> {
        let index = |digits: &str| digits.parse::<u32>().map_err(|_| format!("`{digits}` is not an index"));
        match text {
            "all" => return Ok(FaultTarget::All),
            "random" => return Ok(FaultTarget::Random),
            "controller" => return Ok(FaultTarget::Controller),
            _ => {}
        }
        // `leader:<topic>/<partition>` and `follower:<topic>/<partition>`.
        for role in ["leader", "follower"] {
            let Some(rest) = text.strip_prefix(role).and_then(|rest| rest.strip_prefix(':')) else { continue };
            let (topic, partition) =
                rest.split_once('/').ok_or_else(|| format!("a {role} target is `{role}:<topic>/<partition>`"))?;
            let (topic, partition) = (index(topic)?, index(partition)?);
            return Ok(if role == "leader" {
                FaultTarget::Leader { topic, partition }
            } else {
                FaultTarget::Follower { topic, partition }
            });
        }
        if let Some(rest) = text.strip_prefix("producer-") {
            return Ok(FaultTarget::Producer(index(rest)?));
        }
        if let Some(rest) = text.strip_prefix("consumer-") {
            return Ok(FaultTarget::Consumer(index(rest)?));
        }
        if let Some(rest) = text.strip_prefix("processor-") {
            return Ok(FaultTarget::Processor(index(rest)?));
        }
        if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c == '{' || c == '}') {
            return Err(format!("`{text}` is not a target"));
        }
        Ok(FaultTarget::Broker(text.to_string()))
    }
}

impl fmt::Display for FaultTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultTarget::All => f.write_str("all"),
            FaultTarget::Random => f.write_str("random"),
            FaultTarget::Broker(name) => f.write_str(name),
            FaultTarget::Leader { topic, partition } => write!(f, "leader:{topic}/{partition}"),
            FaultTarget::Follower { topic, partition } => write!(f, "follower:{topic}/{partition}"),
            FaultTarget::Controller => f.write_str("controller"),
            FaultTarget::Producer(i) => write!(f, "producer-{i}"),
            FaultTarget::Consumer(i) => write!(f, "consumer-{i}"),
            FaultTarget::Processor(i) => write!(f, "processor-{i}"),
        }
    }
}

/// A network fault's settings; each is set only when the kind uses it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultParameters {
    pub delay_ms: Option<u32>,
    pub jitter_ms: Option<u32>,
    pub bytes_per_second: Option<u64>,
    pub direction: Option<ParameterDirection>,
    /// `partition`: broker ids, one list per side.
    pub groups: Option<Vec<Vec<u32>>>,
    /// `partition`: the index in `groups` of the side the clients are on.
    pub clients: Option<u32>,
}

/// The random fault generator.
#[derive(Debug, Clone, PartialEq)]
pub struct Nemesis {
    /// `None`: the workload's seed, or one drawn at start and printed.
    pub seed: Option<u64>,
    pub interval: Duration,
    pub duration: Duration,
    pub kinds: Vec<FaultKind>,
    pub parameters: FaultParameters,
}

/// How the run's topics are created: replicas per partition (`None`: the
/// cluster's default) and topic configs, `min.insync.replicas` among them when the
/// workload sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSettings {
    pub replication_factor: Option<u32>,
    pub configs: BTreeMap<String, String>,
}

impl Cluster {
    /// How the run's topics are created on this cluster.
    pub fn topic_settings(&self) -> TopicSettings {
        let (replication_factor, min_insync_replicas, topic_config) = match self {
            Cluster::Local(local) => {
                (Some(local.replication_factor), Some(local.min_insync_replicas), &local.topic_config)
            }
            Cluster::External(external) => {
                (external.replication_factor, external.min_insync_replicas, &external.topic_config)
            }
        };
        let mut configs = topic_config.clone();
        if let Some(min_insync_replicas) = min_insync_replicas {
            configs.insert(MIN_INSYNC_REPLICAS.to_string(), min_insync_replicas.to_string());
        }
        TopicSettings { replication_factor, configs }
    }
}

/// The Kafka topic config that `cluster.min_insync_replicas` sets.
pub const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";

/// The local broker names for `brokers` brokers.
pub fn local_broker_name(node_id: u32) -> String {
    format!("broker-{node_id}")
}

/// The node id of a started broker, by its name (`broker-<id>`).
pub fn local_broker_id(name: &str) -> Option<u32> {
    name.strip_prefix("broker-")?.parse().ok()
}

impl Workload {
    /// Producers over all topics.
    pub fn producers_total(&self) -> u64 {
        u64::from(self.topics) * u64::from(self.producers_per_topic)
    }

    /// Consumers over all topics and subscriptions.
    pub fn consumers_total(&self) -> u64 {
        u64::from(self.topics) * u64::from(self.subscriptions_per_topic) * u64::from(self.consumers_per_subscription)
    }

    /// One line saying what the workload does, for `corelog check`.
    pub fn summary(&self) -> String {
        let plural = |n: u64, word: &str| if n == 1 { format!("{n} {word}") } else { format!("{n} {word}s") };
        let rate = match self.producer_rate {
            ProducerRate::MessagesPerSecond(rate) => format!("{rate} msg/s"),
            ProducerRate::DiscoverMaximum => "the maximum sustainable rate".to_string(),
        };
        let cluster = match &self.cluster {
            _ if self.driver == DriverKind::Embedded => "embedded engine".to_string(),
            Cluster::Local(local) => plural(u64::from(local.brokers), "local broker"),
            Cluster::External(external) => format!("external cluster {}", external.bootstrap.join(",")),
        };
        let mut text = format!(
            "{} × {}, {} B messages at {}, {} s after {} s warm-up; {}; {}",
            plural(u64::from(self.topics), "topic"),
            plural(u64::from(self.partitions_per_topic), "partition"),
            self.message_size_bytes,
            rate,
            seconds_text(self.test_duration),
            seconds_text(self.warmup_duration),
            self.guarantees.iter().map(|g| g.name()).collect::<Vec<_>>().join(", "),
            cluster,
        );
        if let Some(backlog) = self.backlog {
            text.push_str(&format!("; {} GiB backlog", backlog.size_bytes >> 30));
        }
        if !self.faults.is_empty() {
            text.push_str(&format!("; {}", plural(self.faults.len() as u64, "fault")));
        }
        if self.nemesis.is_some() {
            text.push_str("; nemesis");
        }
        text
    }
}

fn seconds_text(duration: Duration) -> String {
    let seconds = duration.as_secs_f64();
    if seconds.fract() == 0.0 {
        format!("{seconds:.0}")
    } else {
        format!("{seconds}")
    }
}
