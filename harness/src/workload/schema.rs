//! Every workload field, defined once: its YAML key, its Rust type, its kind and
//! limits, its default and its documentation.
//!
//! The [`block!`] macro turns one definition into both the serde struct the file
//! deserializes into (every field an `Option`, `deny_unknown_fields`) and the static
//! [`BlockDoc`] table that the structural checks (`validate.rs`: types, ranges, allowed
//! values, required fields, unknown keys), `corelog check`'s hints and the generated
//! reference (`docs/workload-reference.md`) read. A limit written here is therefore
//! both enforced and documented; nothing else restates it.
//!
//! Naming convention: top-level keys are camelCase, as OpenMessaging Benchmark (OMB)
//! spells its fields (`partitionsPerTopic`), so a workload reads as one vocabulary and
//! corelog's own top-level additions follow suit (`testDurationSeconds`,
//! `producerConfig`). Keys inside corelog's blocks (`cluster`, `faults`, `nemesis`)
//! are snake_case. Kafka's own keys (topic and client configs) keep Kafka's dotted
//! names. Durations of corelog's own fields are seconds, decimals allowed.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::model::{DriverKind, FaultKind, Guarantee, KeyDistributor, ParameterDirection};

/// One block of fields: the top level, or a nested mapping such as `cluster`.
#[derive(Debug)]
pub(crate) struct BlockDoc {
    /// Short name used in the reference's headings.
    pub name: &'static str,
    /// Where the block appears, as field paths (`cluster`, `faults[]`); empty for the top level.
    pub paths: &'static [&'static str],
    /// What the block is for (from its `///` lines).
    pub doc: &'static str,
    pub fields: &'static [FieldDoc],
}

impl BlockDoc {
    pub fn field(&self, key: &str) -> Option<&'static FieldDoc> {
        self.fields.iter().find(|field| field.key == key)
    }
}

/// One field of a block.
#[derive(Debug)]
pub(crate) struct FieldDoc {
    /// The YAML key, spelled exactly as the user writes it.
    pub key: &'static str,
    pub origin: Origin,
    pub kind: Kind,
    pub presence: Presence,
    /// The field's documentation (from its `///` lines).
    pub doc: &'static str,
}

/// Who defines a field: OMB's `Workload.java`, or corelog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Omb,
    Corelog,
}

/// Whether a field must be given.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Presence {
    /// Absent is an error.
    Required,
    /// Absent means this (text for the reference; the value itself lives in `model.rs`).
    Default(&'static str),
}

/// A named value of an enumerated field, with its meaning.
#[derive(Debug)]
pub(crate) struct Choice {
    pub name: &'static str,
    pub doc: &'static str,
}

/// What a field holds, with its limits. The structural checks enforce exactly this.
#[derive(Debug)]
pub(crate) enum Kind {
    /// A whole number within `min..=max`.
    Integer {
        min: i128,
        max: i128,
    },
    /// A number (whole or decimal) within `min..=max`.
    Number {
        min: f64,
        max: f64,
    },
    /// A duration in seconds (whole or decimal) within `min..=max`.
    Seconds {
        min: f64,
        max: f64,
    },
    Bool,
    /// A non-empty string.
    Text,
    /// A file path, relative to the workload file's directory.
    Path,
    /// A string with a small syntax of its own, shown in the reference and checked
    /// after the structural pass; a number is read as its text.
    Pattern(&'static str),
    /// One of these strings (case-sensitive).
    OneOf(&'static [Choice]),
    /// A list of distinct values from these, at least one.
    ListOf(&'static [Choice]),
    /// `host:port`, or several: a list, or one string separated by commas.
    HostPorts,
    /// A mapping from keys (described here) to scalar values (string, number, boolean).
    Map(&'static str),
    /// Broker ids in groups: a list of lists of whole numbers (`[[0], [1, 2]]`),
    /// each list non-empty; which ids exist is checked after the structural pass.
    Groups,
    /// A nested block.
    Block(&'static BlockDoc),
    /// A list of blocks.
    Blocks(&'static BlockDoc),
}

/// `bootstrap` as written: `"a:9092,b:9092"` or `[a:9092, b:9092]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawHostPorts {
    One(String),
    Many(Vec<String>),
}

/// A `Kind::Map` field as written: keys to scalar YAML values.
pub(crate) type RawMap = BTreeMap<String, serde_yaml::Value>;

/// Defines a block once: the serde struct and its [`BlockDoc`] table.
///
/// Each field is `ident: RustType = "yamlKey", Origin, Kind, Presence;` under its
/// `///` documentation. The struct holds every field as `Option<RustType>`: required
/// fields and defaults are applied by the validation, which reports all problems at
/// once instead of stopping at serde's first.
macro_rules! block {
    (
        $(#[doc = $block_doc:literal])*
        struct $raw:ident, static $table:ident, name $name:literal, at [$($at:literal),*];
        $(
            $(#[doc = $doc:literal])*
            $field:ident: $ty:ty = $key:literal, $origin:ident, $kind:expr, $presence:expr;
        )*
    ) => {
        $(#[doc = $block_doc])*
        #[derive(Debug, Clone, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct $raw {
            $(
                $(#[doc = $doc])*
                #[serde(rename = $key, default)]
                pub $field: Option<$ty>,
            )*
        }

        pub(crate) static $table: BlockDoc = BlockDoc {
            name: $name,
            paths: &[$($at),*],
            doc: concat!($($block_doc, "\n"),*),
            fields: &[
                $(
                    FieldDoc {
                        key: $key,
                        origin: Origin::$origin,
                        kind: $kind,
                        presence: $presence,
                        doc: concat!($($doc, "\n"),*),
                    },
                )*
            ],
        };
    };
}

/// Largest `partitionsPerTopic`: the engine refuses more partitions in one topic.
pub(crate) const PARTITIONS_PER_TOPIC_MAX: i128 = corelog_engine::config::PARTITIONS_PER_TOPIC_MAX as i128;
/// Largest `messageSize`: 100 MiB, the broker's default largest request.
pub(crate) const MESSAGE_SIZE_MAX: i128 = 100 << 20;
/// Java's `Integer.MAX_VALUE`, the limit of OMB's `int` fields.
const JAVA_INT_MAX: i128 = i32::MAX as i128;
/// A week, the longest test (and fault time) accepted.
pub(crate) const TEST_SECONDS_MAX: f64 = 7.0 * 24.0 * 3600.0;

block! {
    /// The workload file itself. The first seventeen fields are OpenMessaging
    /// Benchmark's (`Workload.java`), with OMB's names, meanings and defaults, so an OMB
    /// workload file runs unmodified; the rest are corelog's.
    struct RawWorkload, static WORKLOAD, name "top level", at [];

    /// Name of the workload, shown in reports and used in result file names.
    name: String = "name", Omb, Kind::Text, Presence::Default("the file name without `.yaml`");

    /// Number of topics the run creates.
    topics: i64 = "topics", Omb, Kind::Integer { min: 1, max: 100_000 }, Presence::Required;

    /// Number of partitions of each topic (OMB's default, 0, would create none).
    partitions_per_topic: i64 = "partitionsPerTopic", Omb,
        Kind::Integer { min: 1, max: PARTITIONS_PER_TOPIC_MAX }, Presence::Required;

    /// How producers choose each message's key, which decides its partition.
    key_distributor: String = "keyDistributor", Omb, Kind::OneOf(KeyDistributor::CHOICES), Presence::Default("`NO_KEY`");

    /// Size of every message's value, in bytes. With `payloadFile` the file must be
    /// exactly this long, as OMB requires.
    message_size: i64 = "messageSize", Omb, Kind::Integer { min: 1, max: MESSAGE_SIZE_MAX }, Presence::Required;

    /// Send payloads drawn from a pool of generated ones instead of `payloadFile`'s
    /// bytes. When true, `payloadFile` is ignored (as in OMB).
    use_randomized_payloads: bool = "useRandomizedPayloads", Omb, Kind::Bool, Presence::Default("`false`");

    /// With `useRandomizedPayloads`: the fraction of each generated payload that is
    /// random; the rest is zeros, which makes payloads compressible. Must then be above
    /// 0. Ignored otherwise, as in OMB.
    random_bytes_ratio: f64 = "randomBytesRatio", Omb, Kind::Number { min: 0.0, max: 1.0 }, Presence::Default("`0.0`");

    /// With `useRandomizedPayloads`: how many payloads are generated up front and sent
    /// in turn. Must then be at least 1, and the pool (`randomizedPayloadPoolSize` ×
    /// `messageSize`) at most 1 GiB. Ignored otherwise.
    randomized_payload_pool_size: i64 = "randomizedPayloadPoolSize", Omb,
        Kind::Integer { min: 0, max: 1_000_000 }, Presence::Default("`0`");

    /// File whose bytes are every message's value; it must be exactly `messageSize`
    /// bytes long. A relative path is looked up next to the workload file first, then
    /// in the current directory (where OMB looks: OMB runs from its repository root,
    /// so its files say `payload/payload-1Kb.data`). corelog's own extension: without a
    /// payload file and without `useRandomizedPayloads`, payloads are random bytes
    /// generated once.
    payload_file: String = "payloadFile", Omb, Kind::Path, Presence::Default("none: random bytes");

    /// Consumer groups reading each topic. Each subscription receives every message.
    subscriptions_per_topic: i64 = "subscriptionsPerTopic", Omb, Kind::Integer { min: 0, max: 1000 }, Presence::Default("`0`");

    /// Consumers in each subscription (group); they share the topic's partitions. At
    /// least 1 when `subscriptionsPerTopic` is.
    consumer_per_subscription: i64 = "consumerPerSubscription", Omb, Kind::Integer { min: 0, max: 1000 }, Presence::Default("`0`");

    /// Producers writing to each topic (OMB's default, 0, would send nothing).
    producers_per_topic: i64 = "producersPerTopic", Omb, Kind::Integer { min: 1, max: 1000 }, Presence::Required;

    /// Messages per second that all producers together send, spread evenly over them.
    /// 0 discovers the highest rate the system sustains: the rate grows while
    /// consumers keep up and backs off when a backlog builds, as OMB does.
    producer_rate: i64 = "producerRate", Omb, Kind::Integer { min: 0, max: JAVA_INT_MAX }, Presence::Default("`0`: discover the maximum sustainable rate");

    /// Before consumers start, producers build a backlog of this many GiB (OMB's "GB"
    /// is 2^30 bytes); then consumers drain it while producers go on. Needs a fixed
    /// `producerRate` (OMB refuses to discover a rate while building a backlog) and at
    /// least one consumer. The backlog must fit on the brokers' disk.
    consumer_backlog_size_gb: i64 = "consumerBacklogSizeGB", Omb, Kind::Integer { min: 0, max: 1 << 20 }, Presence::Default("`0`: no backlog");

    /// With a backlog: the fraction of it that must be drained before the test may
    /// end. 1.0 drains it fully; 0.0 ends at the test duration whatever remains (OMB's
    /// meaning of both ends).
    backlog_drain_ratio: f64 = "backlogDrainRatio", Omb, Kind::Number { min: 0.0, max: 1.0 }, Presence::Default("`1.0`");

    /// Length of the measured test, in minutes. Give this or `testDurationSeconds`.
    test_duration_minutes: i64 = "testDurationMinutes", Omb, Kind::Integer { min: 1, max: 10_080 },
        Presence::Default("none: this or `testDurationSeconds` is required");

    /// Length of the warm-up before the measured test, in minutes; what it measures is
    /// discarded. Give this or `warmupDurationSeconds`, not both.
    warmup_duration_minutes: i64 = "warmupDurationMinutes", Omb, Kind::Integer { min: 0, max: 1440 }, Presence::Default("`1` (OMB's default)");

    /// Length of the measured test, in seconds: corelog's finer-grained alternative to
    /// `testDurationMinutes` (give one of the two).
    test_duration_seconds: f64 = "testDurationSeconds", Corelog, Kind::Seconds { min: 1.0, max: TEST_SECONDS_MAX },
        Presence::Default("none: this or `testDurationMinutes` is required");

    /// Length of the warm-up, in seconds: alternative to `warmupDurationMinutes` (not both).
    warmup_duration_seconds: f64 = "warmupDurationSeconds", Corelog, Kind::Seconds { min: 0.0, max: 86_400.0 },
        Presence::Default("60 (OMB's one minute)");

    /// What the clients talk to.
    driver: String = "driver", Corelog, Kind::OneOf(DriverKind::CHOICES), Presence::Default("`kafka`");

    /// The cluster: brokers the harness starts on this machine, or an external one.
    cluster: RawCluster = "cluster", Corelog, Kind::Block(&CLUSTER), Presence::Default("one local broker");

    /// librdkafka settings for every producer, e.g. `linger.ms: 5`, `compression.type:
    /// lz4`. Keys the delivery guarantee decides (`acks`, `enable.idempotence`,
    /// `transactional.id`) and `bootstrap.servers` are refused. `corelog check` asks
    /// librdkafka whether it knows each key and can parse its value.
    producer_config: RawMap = "producerConfig", Corelog, Kind::Map("librdkafka producer property"), Presence::Default("none");

    /// librdkafka settings for every consumer, e.g. `fetch.min.bytes: 1`. Keys the
    /// guarantee or the harness decides (`enable.auto.commit`, `isolation.level`,
    /// `group.id`, `bootstrap.servers`) are refused.
    consumer_config: RawMap = "consumerConfig", Corelog, Kind::Map("librdkafka consumer property"), Presence::Default("none");

    /// Delivery guarantees to run. The whole workload, fault schedule included, runs
    /// once per guarantee, and each run gets a verdict against the guarantee's promise.
    guarantees: Vec<String> = "guarantees", Corelog, Kind::ListOf(Guarantee::CHOICES), Presence::Default("`[at-least-once]`");

    /// Seed of the run's random choices (generated payloads, `random` fault targets),
    /// so that a run can be repeated.
    seed: u64 = "seed", Corelog, Kind::Integer { min: 0, max: u64::MAX as i128 }, Presence::Default("drawn at start and printed");

    /// Faults at fixed times. Each fault's window must end within the measured test.
    faults: Vec<RawFault> = "faults", Corelog, Kind::Blocks(&FAULT), Presence::Default("none");

    /// Faults drawn at random (from a seed) instead of, or as well as, `faults`.
    nemesis: RawNemesis = "nemesis", Corelog, Kind::Block(&NEMESIS), Presence::Default("none");

    /// The exactly-once guarantee's consume-transform-produce stage; the other
    /// guarantees ignore it.
    processing: RawProcessing = "processing", Corelog, Kind::Block(&PROCESSING), Presence::Default("2 processors, no planned aborts");
}

block! {
    /// Where the brokers come from. By default the harness starts `brokers` corelog
    /// brokers on this machine; with `bootstrap` it uses an external Kafka-compatible
    /// cluster instead (Kafka, Redpanda, corelog on other hosts). `brokers`, `cores`,
    /// `cpus` and `fsync` apply to started brokers only; `bootstrap`, `nodes` and
    /// `commands` to external clusters only.
    struct RawCluster, static CLUSTER, name "cluster", at ["cluster"];

    /// Number of corelog brokers to start on this machine, named `broker-0`,
    /// `broker-1`, … (their node ids) in fault targets. Several form one cluster:
    /// every broker is a voter of its metadata quorum, and the run starts once all
    /// are unfenced; a broker is fenced 3 s after its heartbeats stop. With
    /// `driver: embedded`, 1.
    brokers: i64 = "brokers", Corelog, Kind::Integer { min: 1, max: 16 }, Presence::Default("`1` unless `bootstrap` is given");

    /// Shards (threads, one per core) of each started broker; 0 is one per CPU of
    /// `cpus`. Several brokers on one machine then share the cores.
    cores: i64 = "cores", Corelog, Kind::Integer { min: 0, max: 1024 }, Presence::Default("`0`: one per CPU of `cpus`");

    /// The CPUs the started brokers' shards are pinned to: a Linux CPU list as
    /// `taskset -c` writes it (`0-1,3`), or `unpinned` (the kernel schedules them).
    /// The brokers are spread over the list: broker k takes the `cores` CPUs after
    /// broker k-1's, wrapping, so with one shard each, broker k runs on the list's
    /// CPU k mod its length. A CPU that is not online fails the run before anything
    /// starts. The result records each broker's CPUs (`environment.brokerCpus`).
    cpus: String = "cpus", Corelog, Kind::Pattern("<CPU list> | unpinned"), Presence::Default("every online CPU");

    /// When started brokers fdatasync appended data: `always` (before acknowledging,
    /// with group commit), `interval:<ms>` (at most that long after), `never` (at
    /// segment roll and shutdown, like Kafka's default). Under all three a broker
    /// acknowledges only data written out of its process, so killing a broker loses
    /// nothing acknowledged; under `interval` and `never` a power loss may. For an
    /// external cluster set Kafka's `flush.messages`/`flush.ms` in `topic_config`
    /// instead.
    fsync: String = "fsync", Corelog, Kind::Pattern("always | never | interval:<ms>"), Presence::Default("`never`");

    /// Replicas of each partition of the run's topics (CreateTopics'
    /// `replication_factor`); at most `brokers` for started brokers. With more than
    /// one replica a broker's crash hands its partitions to another broker, which is
    /// what the leader-crash scenarios exercise.
    replication_factor: i64 = "replication_factor", Corelog, Kind::Integer { min: 1, max: 16 },
        Presence::Default("`1` for started brokers; an external cluster's own `default.replication.factor`");

    /// The run's topics' `min.insync.replicas`: an acks=all write (`at-least-once`,
    /// `idempotent`) is acknowledged only once this many replicas have it, and is
    /// refused while fewer are in sync. At most `replication_factor`. Set here, not in
    /// `topic_config`.
    min_insync_replicas: i64 = "min_insync_replicas", Corelog, Kind::Integer { min: 1, max: 16 },
        Presence::Default("`1` for started brokers; an external cluster's own `min.insync.replicas`");

    /// Kafka topic configs the run's topics are created with, e.g. `retention.bytes`,
    /// `segment.bytes`. For started brokers they are checked against the configs
    /// corelog supports (use `fsync`, not `fsync.policy` or `flush.*`); an external
    /// cluster checks them itself when the topics are created. `min.insync.replicas`
    /// is `min_insync_replicas`.
    topic_config: RawMap = "topic_config", Corelog, Kind::Map("Kafka topic config key"), Presence::Default("none: the brokers' defaults");

    /// An external cluster's bootstrap servers, `host:port`: a list, or one
    /// comma-separated string as in Kafka's `bootstrap.servers`. Excludes `brokers`,
    /// `cores`, `cpus` and `fsync`.
    bootstrap: RawHostPorts = "bootstrap", Corelog, Kind::HostPorts, Presence::Default("none: start brokers locally");

    /// The external cluster's brokers, for fault targets: each node's name (used in
    /// targets and substituted for `{node}` in `commands`) and Kafka node id (to find
    /// a partition's leader).
    nodes: Vec<RawNode> = "nodes", Corelog, Kind::Blocks(&NODE), Presence::Default("none");

    /// Shell commands that act on an external cluster's nodes, for process faults.
    commands: RawCommands = "commands", Corelog, Kind::Block(&COMMANDS), Presence::Default("none: no process faults on an external cluster");
}

block! {
    /// One broker of an external cluster.
    struct RawNode, static NODE, name "node", at ["cluster.nodes[]"];

    /// The node's name in fault targets and in `commands` (`{node}`); unique.
    name: String = "name", Corelog, Kind::Text, Presence::Required;

    /// The node's Kafka broker id (`node.id` / `broker.id`); unique.
    node_id: i64 = "node_id", Corelog, Kind::Integer { min: 0, max: JAVA_INT_MAX }, Presence::Required;
}

block! {
    /// Shell commands (run with `sh -c` on the harness machine, e.g. through `ssh`)
    /// that act on one node of an external cluster; `{node}` is replaced by the node's
    /// name. A command must finish within 60 seconds and exit 0. Only the commands
    /// that the workload's faults need are required: `crash` needs `kill` and `start`,
    /// `restart` needs `stop` and `start`, `pause` needs `pause` and `resume`.
    struct RawCommands, static COMMANDS, name "commands", at ["cluster.commands"];

    /// Kill the broker process at once (SIGKILL), e.g.
    /// `ssh {node} sudo systemctl kill --signal=SIGKILL kafka`.
    kill: String = "kill", Corelog, Kind::Text, Presence::Default("none");

    /// Stop the broker cleanly, e.g. `ssh {node} sudo systemctl stop kafka`.
    stop: String = "stop", Corelog, Kind::Text, Presence::Default("none");

    /// Start the broker again, e.g. `ssh {node} sudo systemctl start kafka`.
    start: String = "start", Corelog, Kind::Text, Presence::Default("none");

    /// Freeze the broker process (SIGSTOP).
    pause: String = "pause", Corelog, Kind::Text, Presence::Default("none");

    /// Resume a frozen broker process (SIGCONT).
    resume: String = "resume", Corelog, Kind::Text, Presence::Default("none");
}

block! {
    /// One scheduled fault. Times count from the start of the measured test (after
    /// the warm-up); the window `at` + `duration` must end within the test.
    struct RawFault, static FAULT, name "fault", at ["faults[]"];

    /// When the fault starts, in seconds after the warm-up.
    at: f64 = "at", Corelog, Kind::Seconds { min: 0.0, max: TEST_SECONDS_MAX }, Presence::Required;

    /// How long the fault lasts, in seconds; what it means per kind is in the fault
    /// kinds table. Kinds that hold a condition (pause, latency, bandwidth, blackhole,
    /// down) need more than 0.
    duration: f64 = "duration", Corelog, Kind::Seconds { min: 0.0, max: TEST_SECONDS_MAX }, Presence::Default("`0`");

    /// What happens.
    kind: String = "kind", Corelog, Kind::OneOf(FaultKind::CHOICES), Presence::Required;

    /// Whom it happens to. Broker and network kinds: `all`, `random`, a broker's name
    /// (`broker-<id>` for started brokers, a `cluster.nodes` name for an external
    /// cluster), `leader:<topic>/<partition>`, the leader of that partition (topic
    /// and partition count from 0), `follower:<topic>/<partition>`, the first replica
    /// in that partition's replica list that is not its leader (none with
    /// replication_factor 1), or `controller`, the metadata quorum's active
    /// controller; the last three are resolved when the fault starts. Client kinds:
    /// `all`, `random`, `producer-<i>` or `consumer-<i>` (counting from 0 over all
    /// topics).
    target: String = "target", Corelog,
        Kind::Pattern("all | random | <broker> | leader:<topic>/<partition> | follower:<topic>/<partition> | controller | producer-<i> | consumer-<i>"),
        Presence::Default("`random`");

    /// Settings of the kind (see the fault kinds table for which it needs).
    parameters: RawFaultParameters = "parameters", Corelog, Kind::Block(&FAULT_PARAMETERS), Presence::Default("none");
}

block! {
    /// Settings of a network fault. Each kind uses some of them (fault kinds table);
    /// giving one that no fault of the kind uses is an error.
    struct RawFaultParameters, static FAULT_PARAMETERS, name "fault parameters", at ["faults[].parameters", "nemesis.parameters"];

    /// `latency`: delay added to every chunk of data, in milliseconds.
    delay_ms: i64 = "delay_ms", Corelog, Kind::Integer { min: 1, max: 600_000 }, Presence::Default("none");

    /// `latency`: each delay varies uniformly by up to this many milliseconds (never
    /// below 0, and data stays in order).
    jitter_ms: i64 = "jitter_ms", Corelog, Kind::Integer { min: 0, max: 600_000 }, Presence::Default("`0`");

    /// `bandwidth`: the limit, in bytes per second, for each direction it applies to
    /// and each broker.
    bytes_per_second: i64 = "bytes_per_second", Corelog, Kind::Integer { min: 1, max: 1 << 40 }, Presence::Default("none");

    /// Which traffic is affected.
    direction: String = "direction", Corelog, Kind::OneOf(ParameterDirection::CHOICES), Presence::Default("`both`");

    /// `partition`: the sides, as lists of broker ids (`[[0], [1, 2]]`), at least
    /// two, each broker in at most one; a broker in none is a side of its own.
    groups: Vec<Vec<i64>> = "groups", Corelog, Kind::Groups, Presence::Default("a random minority split from the rest");

    /// `partition`: the side the clients are on, as an index into `groups`: they
    /// reach only its brokers (the others' listeners are blackholed for them).
    clients: i64 = "clients", Corelog, Kind::Integer { min: 0, max: 63 }, Presence::Default("every broker");
}

block! {
    /// A seeded random fault generator (Jepsen's nemesis): every `interval` seconds
    /// of the measured test it starts one fault, of a kind drawn from `kinds`, on a
    /// random target, lasting `duration`. The seed is printed, so a run can be repeated.
    struct RawNemesis, static NEMESIS, name "nemesis", at ["nemesis"];

    /// Seed of the nemesis' draws.
    seed: u64 = "seed", Corelog, Kind::Integer { min: 0, max: u64::MAX as i128 }, Presence::Default("the workload's `seed`");

    /// Seconds between the starts of two faults; the first starts one interval
    /// into the test.
    interval: f64 = "interval", Corelog, Kind::Seconds { min: 1.0, max: TEST_SECONDS_MAX }, Presence::Required;

    /// Fault kinds to draw from.
    kinds: Vec<String> = "kinds", Corelog, Kind::ListOf(FaultKind::CHOICES), Presence::Required;

    /// Seconds each fault lasts; at most `interval`, so faults never overlap.
    duration: f64 = "duration", Corelog, Kind::Seconds { min: 0.0, max: TEST_SECONDS_MAX }, Presence::Default("half the interval");

    /// Settings for the kinds that need them (e.g. `delay_ms` for `latency`).
    parameters: RawFaultParameters = "parameters", Corelog, Kind::Block(&FAULT_PARAMETERS), Presence::Default("none");
}

block! {
    /// The exactly-once guarantee's stage: `processors` transactional processors in
    /// one consumer group read each input topic with read_committed and copy every
    /// message to the topic's output (`<topic>-out`, same partition, key and
    /// payload), one transaction per batch that also commits the input offsets
    /// (`send_offsets_to_transaction`); the subscriptions read the outputs. Each
    /// processor is a child process that `processor-crash` kills mid-transaction.
    struct RawProcessing, static PROCESSING, name "processing", at ["processing"];

    /// Transactional processors (`processor-0`, `processor-1`, … in fault targets).
    processors: i64 = "processors", Corelog, Kind::Integer { min: 1, max: 64 }, Presence::Default("`2`");

    /// The fraction of transactions the processors abort on purpose (and process
    /// again), so the verdict shows that no aborted copy is read. Below 1.
    abort_rate: f64 = "abortRate", Corelog, Kind::Number { min: 0.0, max: 0.99 }, Presence::Default("`0.0`");

    /// Most input messages in one transaction (a transaction takes what one poll
    /// has ready, up to this).
    messages_per_transaction: i64 = "messagesPerTransaction", Corelog, Kind::Integer { min: 1, max: 100_000 }, Presence::Default("`500`");
}

/// Every block, in the reference's order.
pub(crate) static BLOCKS: [&BlockDoc; 8] =
    [&WORKLOAD, &CLUSTER, &NODE, &COMMANDS, &FAULT, &FAULT_PARAMETERS, &NEMESIS, &PROCESSING];
