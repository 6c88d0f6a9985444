//! The semantic pass: rules that involve more than one field, files on disk, or the
//! engine's own config checks; and the typed [`Workload`] with defaults applied.
//!
//! It runs on what the structural pass left, so a field that was invalid is absent
//! here; `invalid` lists those paths so that no "missing" error repeats an error
//! already reported about the same field.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use corelog_broker::config::topic;
use corelog_engine::cpus::ShardCpus;
use corelog_engine::{Durability, TopicConfig};

use super::locate::{Anchor, FieldPath};
use super::model::*;
use super::schema::{RawCluster, RawFault, RawFaultParameters, RawHostPorts, RawMap, RawWorkload};
use super::Problem;

/// Largest pool of generated payloads held in memory.
const PAYLOAD_POOL_BYTES_MAX: u64 = 1 << 30;
/// Bytes a record batch adds around a single message's value (batch header 61, record
/// framing up to ~40); a message must fit `max.message.bytes` with them.
const BATCH_OVERHEAD_BYTES: u64 = 128;
/// Producer settings a delivery guarantee decides, or the harness.
const PRODUCER_KEYS_RESERVED: [&str; 4] = ["acks", "enable.idempotence", "transactional.id", "bootstrap.servers"];
/// Consumer settings a delivery guarantee decides, or the harness.
const CONSUMER_KEYS_RESERVED: [&str; 4] = ["enable.auto.commit", "isolation.level", "group.id", "bootstrap.servers"];
/// Topic configs that re-spell `cluster.fsync` for started brokers.
const FSYNC_KEYS: [&str; 3] = ["fsync.policy", "flush.messages", "flush.ms"];

/// Checks `raw` and builds the workload; the workload is `None` when a required
/// part is missing, and must be discarded whenever problems are returned.
pub(crate) fn check(
    raw: &RawWorkload,
    invalid: &HashSet<FieldPath>,
    file: &Path,
    base_dir: &Path,
) -> (Vec<Problem>, Option<Workload>) {
    let mut checker = Checker { problems: Vec::new(), invalid };
    let workload = checker.workload(raw, file, base_dir);
    (checker.problems, workload)
}

struct Checker<'a> {
    problems: Vec<Problem>,
    invalid: &'a HashSet<FieldPath>,
}

fn top(key: &str) -> FieldPath {
    FieldPath::root().key(key)
}

/// A checked integer as a `u32` (the schema's ranges make it fit).
fn to_u32(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or(Duration::ZERO)
}

fn seconds_text(duration: Duration) -> String {
    let value = duration.as_secs_f64();
    if value.fract() == 0.0 {
        format!("{value:.0} s")
    } else {
        format!("{value} s")
    }
}

/// A `Kind::Map`'s scalar values as strings (the structural pass removed the rest).
/// A key under `cluster`.
fn cluster_key(key: &str) -> FieldPath {
    top("cluster").key(key)
}

fn strings(map: &RawMap) -> BTreeMap<String, String> {
    map.iter()
        .filter_map(|(key, value)| {
            let text = match value {
                serde_yaml::Value::String(s) => s.clone(),
                serde_yaml::Value::Number(n) => n.to_string(),
                serde_yaml::Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            Some((key.clone(), text))
        })
        .collect()
}

/// `producerRate`: 0 or absent asks for the maximum rate.
fn producer_rate(raw: &RawWorkload) -> ProducerRate {
    match raw.producer_rate.unwrap_or(0) {
        0 => ProducerRate::DiscoverMaximum,
        rate => ProducerRate::MessagesPerSecond(to_u32(rate)),
    }
}

/// `guarantees`, at-least-once when absent (invalid names were reported structurally).
/// The exactly-once stage, defaults filled in.
fn processing(raw: &RawWorkload) -> Processing {
    let defaults = Processing::default();
    let Some(given) = raw.processing.as_ref() else { return defaults };
    Processing {
        processors: given.processors.map_or(defaults.processors, to_u32),
        abort_rate: given.abort_rate.unwrap_or(defaults.abort_rate),
        messages_per_transaction: given.messages_per_transaction.map_or(defaults.messages_per_transaction, to_u32),
    }
}

fn guarantees(raw: &RawWorkload) -> Vec<Guarantee> {
    match &raw.guarantees {
        Some(names) => names.iter().filter_map(|name| Guarantee::from_name(name)).collect(),
        None => vec![Guarantee::AtLeastOnce],
    }
}

impl Checker<'_> {
    fn report(&mut self, path: FieldPath, anchor: Anchor, message: impl Into<String>, hint: impl Into<Option<String>>) {
        self.problems.push(Problem::new(path, anchor, message, hint.into()));
    }

    fn was_invalid(&self, path: &FieldPath) -> bool {
        self.invalid.contains(path)
    }

    fn workload(&mut self, raw: &RawWorkload, file: &Path, base_dir: &Path) -> Option<Workload> {
        let name = raw.name.clone().unwrap_or_else(|| {
            file.file_stem().map_or_else(|| "workload".to_string(), |stem| stem.to_string_lossy().into_owned())
        });
        let topics = raw.topics.map(to_u32);
        let partitions_per_topic = raw.partitions_per_topic.map(to_u32);
        let message_size_bytes = raw.message_size.map(to_u32);
        let producers_per_topic = raw.producers_per_topic.map(to_u32);
        let subscriptions_per_topic = to_u32(raw.subscriptions_per_topic.unwrap_or(0));
        let consumers_per_subscription = to_u32(raw.consumer_per_subscription.unwrap_or(0));
        let key_distributor =
            raw.key_distributor.as_deref().and_then(KeyDistributor::from_name).unwrap_or(KeyDistributor::NoKey);
        let driver = raw.driver.as_deref().and_then(DriverKind::from_name).unwrap_or(DriverKind::Kafka);

        let (test_duration, warmup_duration) = self.durations(raw);
        let payload = self.payload(raw, message_size_bytes, base_dir);

        self.subscriptions_have_consumers(raw, subscriptions_per_topic, consumers_per_subscription);

        let producer_rate = producer_rate(raw);
        let backlog = self.backlog(raw, producer_rate, subscriptions_per_topic * consumers_per_subscription);

        let cluster_raw = raw.cluster.clone().unwrap_or_default();
        let cluster = self.cluster(&cluster_raw, driver, message_size_bytes);

        let producer_config =
            self.client_config(raw.producer_config.as_ref(), "producerConfig", &PRODUCER_KEYS_RESERVED, driver);
        let consumer_config =
            self.client_config(raw.consumer_config.as_ref(), "consumerConfig", &CONSUMER_KEYS_RESERVED, driver);

        let guarantees = guarantees(raw);
        self.exactly_once_runnable(raw, &guarantees, driver, cluster.as_ref(), subscriptions_per_topic);
        let processing = processing(raw);

        let counts = Counts {
            topics: topics.unwrap_or(0),
            partitions_per_topic: partitions_per_topic.unwrap_or(0),
            producers: u64::from(topics.unwrap_or(0)) * u64::from(producers_per_topic.unwrap_or(0)),
            consumers: u64::from(topics.unwrap_or(0))
                * u64::from(subscriptions_per_topic)
                * u64::from(consumers_per_subscription),
            processors: guarantees.contains(&Guarantee::ExactlyOnce).then_some(processing.processors),
            known: topics.is_some() && partitions_per_topic.is_some() && producers_per_topic.is_some(),
        };
        let faults = self.faults(raw, driver, cluster.as_ref(), &counts, test_duration);
        let nemesis = self.nemesis(raw, driver, cluster.as_ref(), &counts, test_duration);

        Some(Workload {
            path: file.to_path_buf(),
            name,
            topics: topics?,
            partitions_per_topic: partitions_per_topic?,
            message_size_bytes: message_size_bytes?,
            payload: payload?,
            key_distributor,
            subscriptions_per_topic,
            consumers_per_subscription,
            producers_per_topic: producers_per_topic?,
            producer_rate,
            backlog,
            test_duration: test_duration?,
            warmup_duration,
            driver,
            cluster: cluster?,
            producer_config,
            consumer_config,
            guarantees,
            seed: raw.seed,
            faults,
            nemesis,
            processing,
        })
    }

    /// Subscriptions need consumers: a run with subscriptions and none would read nothing.
    fn subscriptions_have_consumers(
        &mut self,
        raw: &RawWorkload,
        subscriptions_per_topic: u32,
        consumers_per_subscription: u32,
    ) {
        if subscriptions_per_topic > 0
            && consumers_per_subscription == 0
            && !self.was_invalid(&top("consumerPerSubscription"))
        {
            let path = if raw.consumer_per_subscription.is_some() {
                "consumerPerSubscription"
            } else {
                "subscriptionsPerTopic"
            };
            self.report(
                top(path),
                Anchor::Value,
                "subscriptions without consumers: nothing would read them",
                "set consumerPerSubscription to 1 or more, or subscriptionsPerTopic to 0 for a producer-only run"
                    .to_string(),
            );
        }
    }

    /// Exactly-once runs a transactional stage whose output the subscriptions read:
    /// it needs Kafka clients, a broker that serves transactions, and a reader.
    fn exactly_once_runnable(
        &mut self,
        raw: &RawWorkload,
        guarantees: &[Guarantee],
        driver: DriverKind,
        cluster: Option<&Cluster>,
        subscriptions_per_topic: u32,
    ) {
        let Some(index) =
            raw.guarantees.iter().flatten().position(|name| Guarantee::from_name(name) == Some(Guarantee::ExactlyOnce))
        else {
            return;
        };
        debug_assert!(guarantees.contains(&Guarantee::ExactlyOnce));
        let path = top("guarantees").index(index);
        if driver == DriverKind::Embedded {
            self.report(
                path.clone(),
                Anchor::Value,
                "exactly-once needs Kafka transactions, which the embedded engine (no broker, no Kafka client) has not",
                "use `driver: kafka`".to_string(),
            );
        }
        if let Some(Cluster::Local(local)) = cluster {
            if local.brokers > 1 {
                self.report(
                    path.clone(),
                    Anchor::Value,
                    format!(
                        "exactly-once on {} local brokers: corelog serves transactions on a single broker only, \
                         so far (a cluster node refuses them)",
                        local.brokers
                    ),
                    "run exactly-once with `cluster.brokers: 1`, or against an external cluster".to_string(),
                );
            }
        }
        if subscriptions_per_topic == 0 {
            self.report(
                path,
                Anchor::Value,
                "exactly-once is judged by reading the stage's output, and the workload has no subscription",
                "set subscriptionsPerTopic and consumerPerSubscription to 1 or more".to_string(),
            );
        }
    }

    /// The test and warm-up durations: minutes (OMB) or seconds (corelog), not both.
    fn durations(&mut self, raw: &RawWorkload) -> (Option<Duration>, Duration) {
        let test = match (raw.test_duration_minutes, raw.test_duration_seconds) {
            (Some(_), Some(_)) => {
                self.report(
                    top("testDurationSeconds"),
                    Anchor::Key,
                    "given together with testDurationMinutes",
                    "give one of the two: testDurationMinutes (OMB) or testDurationSeconds".to_string(),
                );
                None
            }
            (Some(minutes), None) => Some(Duration::from_secs(u64::try_from(minutes).unwrap_or(0) * 60)),
            (None, Some(value)) => Some(seconds(value)),
            (None, None) => {
                if !self.was_invalid(&top("testDurationMinutes")) && !self.was_invalid(&top("testDurationSeconds")) {
                    self.report(
                        FieldPath::root(),
                        Anchor::Value,
                        "the test duration is missing",
                        "add `testDurationMinutes: 5` (OMB) or `testDurationSeconds: 60`".to_string(),
                    );
                }
                None
            }
        };
        let warmup = match (raw.warmup_duration_minutes, raw.warmup_duration_seconds) {
            (Some(_), Some(_)) => {
                self.report(
                    top("warmupDurationSeconds"),
                    Anchor::Key,
                    "given together with warmupDurationMinutes",
                    "give one of the two: warmupDurationMinutes (OMB) or warmupDurationSeconds".to_string(),
                );
                Duration::from_secs(60)
            }
            (Some(minutes), None) => Duration::from_secs(u64::try_from(minutes).unwrap_or(0) * 60),
            (None, Some(value)) => seconds(value),
            (None, None) => Duration::from_secs(60),
        };
        (test, warmup)
    }

    fn payload(&mut self, raw: &RawWorkload, message_size_bytes: Option<u32>, base_dir: &Path) -> Option<Payload> {
        if raw.use_randomized_payloads.unwrap_or(false) {
            let ratio = raw.random_bytes_ratio.unwrap_or(0.0);
            if ratio <= 0.0 && !self.was_invalid(&top("randomBytesRatio")) {
                let path = if raw.random_bytes_ratio.is_some() { "randomBytesRatio" } else { "useRandomizedPayloads" };
                self.report(
                    top(path),
                    Anchor::Value,
                    "randomBytesRatio must be above 0 with useRandomizedPayloads",
                    "0 would make every payload all zeros; OMB's own workloads use 0.5".to_string(),
                );
            }
            let pool_size = to_u32(raw.randomized_payload_pool_size.unwrap_or(0));
            if pool_size == 0 && !self.was_invalid(&top("randomizedPayloadPoolSize")) {
                let path = if raw.randomized_payload_pool_size.is_some() {
                    "randomizedPayloadPoolSize"
                } else {
                    "useRandomizedPayloads"
                };
                self.report(
                    top(path),
                    Anchor::Value,
                    "randomizedPayloadPoolSize must be at least 1 with useRandomizedPayloads",
                    "the pool holds the generated payloads; OMB's own workloads use 1000".to_string(),
                );
            }
            if let Some(size) = message_size_bytes {
                let pool_bytes = u64::from(pool_size) * u64::from(size);
                if pool_bytes > PAYLOAD_POOL_BYTES_MAX {
                    self.report(
                        top("randomizedPayloadPoolSize"),
                        Anchor::Value,
                        format!("the payload pool would hold {pool_bytes} bytes, more than 1 GiB"),
                        "use fewer payloads: the pool only has to defeat caching and compression".to_string(),
                    );
                }
            }
            return Some(Payload::Randomized { random_bytes_ratio: ratio, pool_size });
        }
        let Some(file) = &raw.payload_file else {
            return Some(Payload::Generated);
        };
        let path = top("payloadFile");
        let given = PathBuf::from(file);
        // (where to look, how to name it in a message)
        let candidates: Vec<(PathBuf, String)> = if given.is_absolute() {
            vec![(given.clone(), given.display().to_string())]
        } else {
            let beside = base_dir.join(&given);
            let beside_text = format!("next to the workload ({})", beside.display());
            let mut candidates = vec![(beside, beside_text)];
            if let Ok(current) = std::env::current_dir() {
                candidates.push((current.join(&given), format!("in the current directory ({file})")));
            }
            candidates
        };
        let Some((found, _)) = candidates.iter().find(|(candidate, _)| candidate.is_file()) else {
            let tried = candidates.iter().map(|(_, text)| text.as_str()).collect::<Vec<_>>().join(" and ");
            self.report(path, Anchor::Value, format!("payload file `{file}` not found"), format!("looked {tried}"));
            return None;
        };
        match (std::fs::metadata(found), message_size_bytes) {
            (Ok(metadata), Some(size)) if metadata.len() != u64::from(size) => {
                self.report(
                    path,
                    Anchor::Value,
                    format!("`{file}` is {} bytes, but messageSize is {size}", metadata.len()),
                    "the payload file must be exactly messageSize bytes long, as OMB requires".to_string(),
                );
                None
            }
            (Ok(_), _) => Some(Payload::File(found.clone())),
            (Err(error), _) => {
                self.report(path, Anchor::Value, format!("cannot read `{file}`: {error}"), None);
                None
            }
        }
    }

    fn backlog(&mut self, raw: &RawWorkload, rate: ProducerRate, consumers_per_topic: u32) -> Option<Backlog> {
        let size_gib = u64::try_from(raw.consumer_backlog_size_gb.unwrap_or(0)).unwrap_or(0);
        if size_gib == 0 {
            return None;
        }
        let path = top("consumerBacklogSizeGB");
        if rate == ProducerRate::DiscoverMaximum && !self.was_invalid(&top("producerRate")) {
            self.report(
                path.clone(),
                Anchor::Value,
                "a backlog needs a fixed producerRate",
                "OMB cannot discover the maximum rate (producerRate: 0) while building a backlog; set producerRate"
                    .to_string(),
            );
        }
        if consumers_per_topic == 0 {
            self.report(
                path,
                Anchor::Value,
                "a backlog needs consumers to drain it",
                "set subscriptionsPerTopic and consumerPerSubscription to 1 or more".to_string(),
            );
        }
        Some(Backlog { size_bytes: size_gib << 30, drain_ratio: raw.backlog_drain_ratio.unwrap_or(1.0) })
    }

    fn cluster(&mut self, raw: &RawCluster, driver: DriverKind, message_size_bytes: Option<u32>) -> Option<Cluster> {
        let replicas = Replicas {
            replication_factor: raw.replication_factor.map(to_u32),
            min_insync_replicas: raw.min_insync_replicas.map(to_u32),
        };
        let mut topic_config = raw.topic_config.as_ref().map(strings).unwrap_or_default();
        if let Some(value) = topic_config.remove(MIN_INSYNC_REPLICAS) {
            self.report(
                cluster_key("topic_config").key(MIN_INSYNC_REPLICAS),
                Anchor::Key,
                format!("`{MIN_INSYNC_REPLICAS}` is set by cluster.min_insync_replicas"),
                format!("move it there: `cluster.min_insync_replicas: {value}`"),
            );
        }
        // An invalid bootstrap (already reported) still means an external cluster.
        let bootstrap = match &raw.bootstrap {
            Some(bootstrap) => Some(bootstrap.clone()),
            None if self.was_invalid(&cluster_key("bootstrap")) => Some(RawHostPorts::Many(Vec::new())),
            None => None,
        };
        Some(match &bootstrap {
            Some(bootstrap) => Cluster::External(self.external_cluster(raw, bootstrap, driver, replicas, topic_config)),
            None => Cluster::Local(self.local_cluster(raw, driver, message_size_bytes, replicas, topic_config)),
        })
    }

    /// `min_insync_replicas` must not exceed the replication factor: every acks=all
    /// write would be refused.
    fn min_insync_fits(&mut self, min_insync_replicas: u32, replication_factor: u32) {
        if min_insync_replicas > replication_factor
            && !self.was_invalid(&cluster_key("replication_factor"))
            && !self.was_invalid(&cluster_key("min_insync_replicas"))
        {
            self.report(
                cluster_key("min_insync_replicas"),
                Anchor::Value,
                format!(
                    "min_insync_replicas {min_insync_replicas} is above the replication factor \
                     {replication_factor}: every acks=all write would be refused"
                ),
                "lower cluster.min_insync_replicas or raise cluster.replication_factor".to_string(),
            );
        }
    }

    /// `cluster` with a bootstrap: nothing of started brokers may be set.
    fn external_cluster(
        &mut self,
        raw: &RawCluster,
        bootstrap: &RawHostPorts,
        driver: DriverKind,
        replicas: Replicas,
        topic_config: BTreeMap<String, String>,
    ) -> ExternalCluster {
        let at = cluster_key;
        for (key, given) in [
            ("brokers", raw.brokers.is_some()),
            ("cores", raw.cores.is_some()),
            ("cpus", raw.cpus.is_some()),
            ("fsync", raw.fsync.is_some()),
        ] {
            if given {
                let hint = if key == "fsync" {
                    "an external cluster's durability is its own: set Kafka's flush.messages/flush.ms in cluster.topic_config"
                } else {
                    "remove it, or remove bootstrap to start brokers on this machine"
                };
                self.report(
                    at(key),
                    Anchor::Key,
                    format!("`{key}` applies to brokers the harness starts, not to an external cluster (bootstrap)"),
                    hint.to_string(),
                );
            }
        }
        if driver == DriverKind::Embedded {
            self.report(
                at("bootstrap"),
                Anchor::Key,
                "the embedded driver runs the engine in-process and cannot use an external cluster",
                "remove bootstrap, or use `driver: kafka`".to_string(),
            );
        }
        let servers: Vec<String> = match bootstrap {
            RawHostPorts::One(text) => text.split(',').map(|part| part.trim().to_string()).collect(),
            RawHostPorts::Many(list) => list.iter().map(|entry| entry.trim().to_string()).collect(),
        };
        let nodes = self.nodes(raw);
        let commands = self.commands(raw);
        // Either may be the cluster's own default, which only the cluster knows.
        if let (Some(min_insync_replicas), Some(replication_factor)) =
            (replicas.min_insync_replicas, replicas.replication_factor)
        {
            self.min_insync_fits(min_insync_replicas, replication_factor);
        }
        ExternalCluster {
            bootstrap: servers,
            replication_factor: replicas.replication_factor,
            min_insync_replicas: replicas.min_insync_replicas,
            topic_config,
            nodes,
            commands,
        }
    }

    /// `cluster` without a bootstrap: brokers the harness starts.
    fn local_cluster(
        &mut self,
        raw: &RawCluster,
        driver: DriverKind,
        message_size_bytes: Option<u32>,
        replicas: Replicas,
        topic_config: BTreeMap<String, String>,
    ) -> LocalCluster {
        let replication_factor = replicas.replication_factor.unwrap_or(1);
        let min_insync_replicas = replicas.min_insync_replicas.unwrap_or(1);
        let at = cluster_key;
        for (key, given) in [("nodes", raw.nodes.is_some()), ("commands", raw.commands.is_some())] {
            if given {
                self.report(
                    at(key),
                    Anchor::Key,
                    format!("`{key}` describes an external cluster, but there is no bootstrap"),
                    "started brokers are named broker-0, broker-1, …; give bootstrap to use an external cluster"
                        .to_string(),
                );
            }
        }
        let brokers = to_u32(raw.brokers.unwrap_or(1));
        if driver == DriverKind::Embedded && brokers > 1 {
            self.report(
                at("brokers"),
                Anchor::Value,
                "the embedded driver runs a single engine",
                "set brokers to 1, or use `driver: kafka` to start several brokers".to_string(),
            );
        }
        if replication_factor > brokers && !self.was_invalid(&at("brokers")) {
            self.report(
                at("replication_factor"),
                Anchor::Value,
                format!("replication factor {replication_factor} needs at least {replication_factor} brokers, and the cluster has {brokers}"),
                "raise cluster.brokers or lower cluster.replication_factor".to_string(),
            );
        }
        self.min_insync_fits(min_insync_replicas, replication_factor);
        let fsync = self.local_fsync(raw);
        let engine_config = self.local_topic_config(&topic_config, fsync);
        if let Some(size) = message_size_bytes {
            let needed = u64::from(size) + BATCH_OVERHEAD_BYTES;
            if needed > u64::from(engine_config.max_message_bytes) {
                self.report(
                    top("messageSize"),
                    Anchor::Value,
                    format!(
                        "a {size}-byte message does not fit in a batch of the topics' max.message.bytes ({})",
                        engine_config.max_message_bytes
                    ),
                    format!("set cluster.topic_config max.message.bytes to {needed} or more (and the producers' message.max.bytes)"),
                );
            }
        }
        LocalCluster {
            brokers,
            cores: to_u32(raw.cores.unwrap_or(0)),
            cpus: self.local_cpus(raw),
            fsync,
            replication_factor,
            min_insync_replicas,
            topic_config,
        }
    }

    /// `cluster.cpus`, every online CPU when absent or invalid (reported). Whether
    /// its CPUs are online is checked when the run starts (`run::target::placements`),
    /// so that a workload checks the same on every machine.
    fn local_cpus(&mut self, raw: &RawCluster) -> ShardCpus {
        let Some(text) = raw.cpus.as_deref() else { return ShardCpus::Online };
        ShardCpus::parse(text).unwrap_or_else(|reason| {
            self.report(
                cluster_key("cpus"),
                Anchor::Value,
                format!("`{text}`: {reason}"),
                "a CPU list as `taskset -c` writes it, e.g. `0-1,3`, or `unpinned`".to_string(),
            );
            ShardCpus::Online
        })
    }

    /// `cluster.fsync`, `never` when absent or invalid (reported).
    fn local_fsync(&mut self, raw: &RawCluster) -> Durability {
        let at = cluster_key;
        match raw.fsync.as_deref().map(str::parse::<Durability>) {
            None => Durability::Never,
            Some(Ok(policy)) => policy,
            Some(Err(reason)) => {
                self.report(
                    at("fsync"),
                    Anchor::Value,
                    format!("`{}`: {reason}", raw.fsync.as_deref().unwrap_or("")),
                    None,
                );
                Durability::Never
            }
        }
    }

    /// `cluster.topic_config` applied to the engine's topic config over `fsync`;
    /// each key that corelog refuses is reported.
    fn local_topic_config(&mut self, topic_config: &BTreeMap<String, String>, fsync: Durability) -> TopicConfig {
        let at = cluster_key;
        let mut engine_config = TopicConfig { durability: fsync, ..TopicConfig::default() };
        for (key, value) in topic_config {
            let path = at("topic_config").key(key);
            if FSYNC_KEYS.contains(&key.as_str()) {
                self.report(
                    path,
                    Anchor::Key,
                    format!("`{key}` is set by cluster.fsync for the brokers the harness starts"),
                    "use `cluster.fsync: always`, `interval:<ms>` or `never`".to_string(),
                );
                continue;
            }
            if let Err(error) = topic::set(&mut engine_config, key, value) {
                let hint = if topic::topic_key(key).is_none() {
                    let known = topic::topic_key_names()
                        .filter(|k| !FSYNC_KEYS.contains(k) && *k != MIN_INSYNC_REPLICAS)
                        .collect::<Vec<_>>();
                    let suggestion = super::structure::suggest(key, &known);
                    Some(match suggestion {
                        Some(name) => format!("did you mean `{name}`? corelog supports {}", known.join(", ")),
                        None => format!("corelog supports {}", known.join(", ")),
                    })
                } else {
                    None
                };
                let anchor = if hint.is_some() { Anchor::Key } else { Anchor::Value };
                self.report(path, anchor, error.to_string(), hint);
            }
        }
        engine_config
    }

    fn nodes(&mut self, raw: &RawCluster) -> Vec<ExternalNode> {
        let mut nodes: Vec<ExternalNode> = Vec::new();
        for (index, node) in raw.nodes.iter().flatten().enumerate() {
            let path = top("cluster").key("nodes").index(index);
            let (Some(name), Some(node_id)) = (&node.name, node.node_id) else {
                continue;
            };
            match FaultTarget::parse(name) {
                Ok(FaultTarget::Broker(_)) => {}
                _ => self.report(
                    path.key("name"),
                    Anchor::Value,
                    format!("`{name}` cannot be a node name: it reads as another kind of fault target"),
                    "avoid `all`, `random`, `leader:…`, `follower:…`, `controller`, `producer-<i>`, `consumer-<i>`, spaces and braces".to_string(),
                ),
            }
            if nodes.iter().any(|other| &other.name == name) {
                self.report(path.key("name"), Anchor::Value, format!("node name `{name}` is used twice"), None);
            }
            let node_id = i32::try_from(node_id).unwrap_or(i32::MAX);
            if nodes.iter().any(|other| other.node_id == node_id) {
                self.report(path.key("node_id"), Anchor::Value, format!("node id {node_id} is used twice"), None);
            }
            nodes.push(ExternalNode { name: name.clone(), node_id });
        }
        nodes
    }

    fn commands(&mut self, raw: &RawCluster) -> NodeCommands {
        let Some(commands) = &raw.commands else {
            return NodeCommands::default();
        };
        let entries = [
            ("kill", &commands.kill),
            ("stop", &commands.stop),
            ("start", &commands.start),
            ("pause", &commands.pause),
            ("resume", &commands.resume),
        ];
        for (key, command) in entries {
            let Some(command) = command else { continue };
            let mut rest = command.as_str();
            while let Some(open) = rest.find('{') {
                let after = &rest[open + 1..];
                let Some(close) = after.find('}') else { break };
                let placeholder = &after[..close];
                if placeholder != "node" {
                    self.report(
                        top("cluster").key("commands").key(key),
                        Anchor::Value,
                        format!("unknown placeholder `{{{placeholder}}}`"),
                        "`{node}`, replaced by the node's name, is the only placeholder".to_string(),
                    );
                }
                rest = &after[close + 1..];
            }
        }
        NodeCommands {
            kill: commands.kill.clone(),
            stop: commands.stop.clone(),
            start: commands.start.clone(),
            pause: commands.pause.clone(),
            resume: commands.resume.clone(),
        }
    }

    fn client_config(
        &mut self,
        raw: Option<&RawMap>,
        field: &str,
        reserved: &[&str],
        driver: DriverKind,
    ) -> BTreeMap<String, String> {
        let Some(raw) = raw else {
            return BTreeMap::new();
        };
        if driver == DriverKind::Embedded && !raw.is_empty() {
            self.report(
                top(field),
                Anchor::Key,
                "the embedded driver has no Kafka clients to configure",
                format!("remove {field}, or use `driver: kafka`"),
            );
        }
        for key in raw.keys() {
            if reserved.contains(&key.as_str()) {
                let hint = if key == "bootstrap.servers" {
                    "the harness sets it from the cluster (cluster.bootstrap for an external one)"
                } else if key == "group.id" {
                    "the harness names one consumer group per subscription"
                } else {
                    "the delivery guarantee sets it; list the guarantees to run under `guarantees`"
                };
                self.report(
                    top(field).key(key),
                    Anchor::Key,
                    format!("`{key}` cannot be overridden"),
                    hint.to_string(),
                );
            }
        }
        let settings = strings(raw);
        if driver == DriverKind::Kafka {
            self.librdkafka_accepts(field, &settings, reserved);
        }
        settings
    }

    /// Each setting as librdkafka takes it when `corelog run` creates its clients:
    /// an unknown property or a value it cannot parse is refused here, in its words,
    /// rather than when the run starts. librdkafka checks each pair alone, so a
    /// producer-only property under consumerConfig passes (librdkafka only warns).
    fn librdkafka_accepts(&mut self, field: &str, settings: &BTreeMap<String, String>, reserved: &[&str]) {
        for (key, value) in settings.iter().filter(|(key, _)| !reserved.contains(&key.as_str())) {
            let mut config = rdkafka::ClientConfig::new();
            config.set(key, value);
            if let Err(rdkafka::error::KafkaError::ClientConfig(_, description, _, _)) = config.create_native_config() {
                self.report(
                    top(field).key(key),
                    Anchor::Key,
                    format!("librdkafka refuses `{key}: {value}`: {description}"),
                    "librdkafka's properties are listed in its CONFIGURATION.md".to_string(),
                );
            }
        }
    }

    fn faults(
        &mut self,
        raw: &RawWorkload,
        driver: DriverKind,
        cluster: Option<&Cluster>,
        counts: &Counts,
        test_duration: Option<Duration>,
    ) -> Vec<Fault> {
        let Some(raw_faults) = &raw.faults else {
            return Vec::new();
        };
        if driver == DriverKind::Embedded {
            if !raw_faults.is_empty() {
                self.report(
                    top("faults"),
                    Anchor::Key,
                    "the embedded driver has no broker process, network or Kafka client to fault",
                    "use `driver: kafka` for fault injection".to_string(),
                );
            }
            return Vec::new();
        }
        let mut faults: Vec<(usize, Fault)> = Vec::new();
        for (index, raw_fault) in raw_faults.iter().enumerate() {
            if let Some(fault) = self.fault(raw_fault, &top("faults").index(index), cluster, counts, test_duration) {
                faults.push((index, fault));
            }
        }
        self.overlaps(&faults);
        let mut faults: Vec<Fault> = faults.into_iter().map(|(_, fault)| fault).collect();
        faults.sort_by_key(|fault| fault.at);
        faults
    }

    /// One entry of `faults`, at `path`; `None` when its kind or start is missing or
    /// invalid (already reported).
    fn fault(
        &mut self,
        raw_fault: &RawFault,
        path: &FieldPath,
        cluster: Option<&Cluster>,
        counts: &Counts,
        test_duration: Option<Duration>,
    ) -> Option<Fault> {
        let kind = raw_fault.kind.as_deref().and_then(FaultKind::from_name)?;
        let at = raw_fault.at.map(seconds)?;
        let duration = seconds(raw_fault.duration.unwrap_or(0.0));
        self.fault_window(raw_fault, kind, at, duration, path, test_duration);
        let target = self.fault_target(raw_fault, kind, path, cluster, counts);
        self.kind_fits_cluster(kind, &path.key("kind"), cluster, counts);
        let parameters = self.parameters(raw_fault.parameters.as_ref(), &[kind], path, "fault");
        if kind == FaultKind::Partition {
            self.partition_groups(&parameters, &path.key("parameters"), cluster);
        }
        Some(Fault { at, duration, kind, target, parameters })
    }

    /// A fault's window: a duration where its kind needs one, and an end within the test.
    fn fault_window(
        &mut self,
        raw_fault: &RawFault,
        kind: FaultKind,
        at: Duration,
        duration: Duration,
        path: &FieldPath,
        test_duration: Option<Duration>,
    ) {
        if kind.needs_duration() && duration.is_zero() && !self.was_invalid(&path.key("duration")) {
            let anchor_path = if raw_fault.duration.is_some() { path.key("duration") } else { path.key("kind") };
            self.report(
                anchor_path,
                Anchor::Value,
                format!("a `{kind}` fault needs a duration above 0"),
                "duration is how long the condition holds, in seconds".to_string(),
            );
        }
        if let Some(test) = test_duration {
            if at + duration > test {
                let (anchor_path, what) = if at >= test {
                    (path.key("at"), format!("starts at {} s", seconds_text(at).trim_end_matches(" s")))
                } else {
                    (path.key("duration"), format!("ends at {}", seconds_text(at + duration)))
                };
                self.report(
                    anchor_path,
                    Anchor::Value,
                    format!("the fault {what}, after the {} test", seconds_text(test)),
                    "a fault's window (at + duration) must end within the measured test, which starts after the warm-up".to_string(),
                );
            }
        }
    }

    /// A fault's target, `random` when absent; an unparsable one is reported and
    /// read as `random`.
    fn fault_target(
        &mut self,
        raw_fault: &RawFault,
        kind: FaultKind,
        path: &FieldPath,
        cluster: Option<&Cluster>,
        counts: &Counts,
    ) -> FaultTarget {
        let target_text = raw_fault.target.as_deref().unwrap_or("random");
        match FaultTarget::parse(target_text) {
            Ok(target) => {
                self.target(kind, &target, path, cluster, counts);
                target
            }
            Err(reason) => {
                self.report(
                    path.key("target"),
                    Anchor::Value,
                    reason,
                    "targets are all, random, a broker name, leader:<topic>/<partition>, follower:<topic>/<partition>, controller, producer-<i> or consumer-<i>"
                        .to_string(),
                );
                FaultTarget::Random
            }
        }
    }

    /// Whether `target` names something that `kind` can act on, and that exists.
    fn target(
        &mut self,
        kind: FaultKind,
        target: &FaultTarget,
        path: &FieldPath,
        cluster: Option<&Cluster>,
        counts: &Counts,
    ) {
        let target_path = path.key("target");
        if self.target_fits_kind(kind, target, &target_path) {
            self.target_exists(target, target_path, cluster, counts);
        }
    }

    /// Whether `kind` acts on what `target` names (brokers or clients, producers or
    /// consumers); reports it when not.
    fn target_fits_kind(&mut self, kind: FaultKind, target: &FaultTarget, target_path: &FieldPath) -> bool {
        let client = kind.scope() == FaultScope::Client;
        match target {
            FaultTarget::Producer(_) | FaultTarget::Consumer(_) | FaultTarget::Processor(_) if !client => self.report(
                target_path.clone(),
                Anchor::Value,
                format!("a `{kind}` fault acts on brokers, not on `{target}`"),
                "use producer-crash or consumer-crash to crash a client".to_string(),
            ),
            FaultTarget::Broker(_)
            | FaultTarget::Leader { .. }
            | FaultTarget::Follower { .. }
            | FaultTarget::Controller
                if client =>
            {
                self.report(
                    target_path.clone(),
                    Anchor::Value,
                    format!("a `{kind}` fault acts on a client, not on `{target}`"),
                    format!(
                        "use all, random or {}-<i>",
                        match kind {
                            FaultKind::ProducerCrash => "producer",
                            FaultKind::ProcessorCrash => "processor",
                            _ => "consumer",
                        }
                    ),
                )
            }
            FaultTarget::All | FaultTarget::Random => return true,
            _ if kind == FaultKind::Partition => self.report(
                target_path.clone(),
                Anchor::Value,
                format!("a `partition` fault splits the whole cluster, not `{target}`"),
                "leave target out and list the sides in parameters.groups, or use `isolate` on one broker".to_string(),
            ),
            FaultTarget::Producer(_) if kind == FaultKind::ConsumerCrash => self.report(
                target_path.clone(),
                Anchor::Value,
                "a `consumer-crash` fault needs a consumer target",
                None,
            ),
            FaultTarget::Consumer(_) if kind == FaultKind::ProducerCrash => self.report(
                target_path.clone(),
                Anchor::Value,
                "a `producer-crash` fault needs a producer target",
                None,
            ),
            FaultTarget::Producer(_) | FaultTarget::Consumer(_) if kind == FaultKind::ProcessorCrash => self.report(
                target_path.clone(),
                Anchor::Value,
                "a `processor-crash` fault needs a processor target",
                None,
            ),
            FaultTarget::Processor(_) if kind != FaultKind::ProcessorCrash => self.report(
                target_path.clone(),
                Anchor::Value,
                format!("a `{kind}` fault does not act on the exactly-once stage's `{target}`"),
                "use processor-crash".to_string(),
            ),
            _ => return true,
        }
        false
    }

    /// Whether the producer, consumer, partition or broker that `target` names exists
    /// (skipped for clients and partitions when a count is unknown).
    fn target_exists(
        &mut self,
        target: &FaultTarget,
        target_path: FieldPath,
        cluster: Option<&Cluster>,
        counts: &Counts,
    ) {
        match target {
            FaultTarget::All | FaultTarget::Random | FaultTarget::Controller => {}
            FaultTarget::Producer(index) => {
                if counts.known && u64::from(*index) >= counts.producers {
                    self.report(
                        target_path,
                        Anchor::Value,
                        format!("there is no `{target}`: the workload has {}", plural(counts.producers, "producer")),
                        format!("producers count from 0 over all topics: {}", names("producer-", counts.producers)),
                    );
                }
            }
            FaultTarget::Consumer(index) => {
                if counts.known && u64::from(*index) >= counts.consumers {
                    self.report(
                        target_path,
                        Anchor::Value,
                        format!("there is no `{target}`: the workload has {}", plural(counts.consumers, "consumer")),
                        format!(
                            "consumers count from 0 over all topics and subscriptions: {}",
                            names("consumer-", counts.consumers)
                        ),
                    );
                }
            }
            FaultTarget::Processor(index) => {
                let processors = counts.processors.unwrap_or(0);
                if *index >= processors && counts.processors.is_some() {
                    self.report(
                        target_path,
                        Anchor::Value,
                        format!("there is no `{target}`: the stage has {}", plural(u64::from(processors), "processor")),
                        format!("processors count from 0: {}", names("processor-", u64::from(processors))),
                    );
                }
            }
            FaultTarget::Leader { topic, partition } => {
                self.partition_exists(*topic, *partition, target_path, counts);
            }
            FaultTarget::Follower { topic, partition } => {
                if self.partition_exists(*topic, *partition, target_path.clone(), counts) {
                    self.follower_exists(target, target_path, cluster);
                }
            }
            FaultTarget::Broker(name) => self.broker_exists(name, target_path, cluster),
        }
    }

    /// Whether the workload has partition `topic`/`partition` (true when a count is
    /// unknown); reports it when not.
    fn partition_exists(&mut self, topic: u32, partition: u32, target_path: FieldPath, counts: &Counts) -> bool {
        if !counts.known || (topic < counts.topics && partition < counts.partitions_per_topic) {
            return true;
        }
        self.report(
            target_path,
            Anchor::Value,
            format!(
                "there is no partition {topic}/{partition}: the workload has {} of {} each",
                plural(u64::from(counts.topics), "topic"),
                plural(u64::from(counts.partitions_per_topic), "partition")
            ),
            "topics and partitions count from 0".to_string(),
        );
        false
    }

    /// Whether a partition has a replica besides its leader: not with a replication
    /// factor of 1 (skipped when the factor is the external cluster's own default).
    fn follower_exists(&mut self, target: &FaultTarget, target_path: FieldPath, cluster: Option<&Cluster>) {
        let replication_factor = match cluster {
            Some(Cluster::Local(local)) => Some(local.replication_factor),
            Some(Cluster::External(external)) => external.replication_factor,
            None => None,
        };
        if replication_factor == Some(1) && !self.was_invalid(&cluster_key("replication_factor")) {
            self.report(
                target_path,
                Anchor::Value,
                format!("`{target}` names no broker: with replication_factor 1 a partition has no follower"),
                "raise cluster.replication_factor to 2 or more".to_string(),
            );
        }
    }

    /// Whether the cluster has a broker (started) or node (external) named `name`.
    fn broker_exists(&mut self, name: &str, target_path: FieldPath, cluster: Option<&Cluster>) {
        match cluster {
            Some(Cluster::Local(local)) => {
                let known = (0..local.brokers).any(|id| local_broker_name(id) == name);
                if !known {
                    self.report(
                        target_path,
                        Anchor::Value,
                        format!("there is no broker named `{name}`"),
                        format!("the started brokers are {}", names("broker-", u64::from(local.brokers))),
                    );
                }
            }
            Some(Cluster::External(external)) if !external.nodes.iter().any(|node| node.name == name) => {
                let hint = if external.nodes.is_empty() {
                    "list the external cluster's brokers under cluster.nodes".to_string()
                } else {
                    let names = external.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ");
                    format!("cluster.nodes names {names}")
                };
                self.report(target_path, Anchor::Value, format!("there is no node named `{name}`"), hint);
            }
            Some(Cluster::External(_)) | None => {}
        }
    }
    /// Whether the cluster and the workload's clients allow faults of `kind`.
    fn kind_fits_cluster(&mut self, kind: FaultKind, path: &FieldPath, cluster: Option<&Cluster>, counts: &Counts) {
        match (kind.scope(), cluster) {
            (FaultScope::Links, Some(Cluster::External(_))) => self.report(
                path.clone(),
                Anchor::Value,
                format!("`{kind}` faults cut the links between brokers the harness starts"),
                "an external cluster's brokers reach each other directly; remove bootstrap to use local brokers"
                    .to_string(),
            ),
            (FaultScope::Links, Some(Cluster::Local(local))) if local.brokers < 2 => self.report(
                path.clone(),
                Anchor::Value,
                format!("`{kind}` faults cut the links between brokers, and the cluster has one"),
                "set cluster.brokers to 3".to_string(),
            ),
            (FaultScope::Network, Some(Cluster::External(_))) => self.report(
                path.clone(),
                Anchor::Value,
                format!("`{kind}` faults need the fault proxy, which runs only in front of brokers the harness starts"),
                "external brokers advertise their own addresses, so clients would bypass a proxy; remove bootstrap to use local brokers".to_string(),
            ),
            (FaultScope::BrokerProcess, Some(Cluster::External(external))) => {
                let missing: Vec<&str> = kind
                    .commands()
                    .iter()
                    .copied()
                    .filter(|command| {
                        let commands = &external.commands;
                        let given = match *command {
                            "kill" => &commands.kill,
                            "stop" => &commands.stop,
                            "start" => &commands.start,
                            "pause" => &commands.pause,
                            _ => &commands.resume,
                        };
                        given.is_none()
                    })
                    .collect();
                if !missing.is_empty() {
                    let names = missing.iter().map(|c| format!("cluster.commands.{c}")).collect::<Vec<_>>().join(" and ");
                    self.report(
                        path.clone(),
                        Anchor::Value,
                        format!("`{kind}` on an external cluster needs {names}"),
                        "commands are shell commands with {node} replaced by the node's name".to_string(),
                    );
                }
                if external.nodes.is_empty() {
                    self.report(
                        path.clone(),
                        Anchor::Value,
                        format!("`{kind}` on an external cluster needs cluster.nodes"),
                        "list each broker's name and node_id, so the fault can pick and name its target".to_string(),
                    );
                }
            }
            (FaultScope::Client, _) if kind == FaultKind::ProcessorCrash && counts.processors.is_none() => {
                self.report(
                    path.clone(),
                    Anchor::Value,
                    "`processor-crash` crashes the exactly-once stage, and no listed guarantee runs it",
                    "add exactly-once to `guarantees`".to_string(),
                );
            }
            (FaultScope::Client, _) if kind == FaultKind::ProcessorCrash => {}
            (FaultScope::Client, _) => {
                let (count, what) = match kind {
                    FaultKind::ConsumerCrash => (counts.consumers, "consumers"),
                    _ => (counts.producers, "producers"),
                };
                if counts.known && count == 0 {
                    self.report(path.clone(), Anchor::Value, format!("`{kind}` needs {what}, and the workload has none"), None);
                }
            }
            _ => {}
        }
    }

    /// Checks the parameters block against the kinds that use it.
    fn parameters(
        &mut self,
        raw: Option<&RawFaultParameters>,
        kinds: &[FaultKind],
        path: &FieldPath,
        what: &str,
    ) -> FaultParameters {
        let empty = RawFaultParameters::default();
        let raw = raw.unwrap_or(&empty);
        let given = [
            ("delay_ms", raw.delay_ms.is_some()),
            ("jitter_ms", raw.jitter_ms.is_some()),
            ("bytes_per_second", raw.bytes_per_second.is_some()),
            ("direction", raw.direction.is_some()),
            ("groups", raw.groups.is_some()),
            ("clients", raw.clients.is_some()),
        ];
        let parameters_path = path.key("parameters");
        for (key, is_given) in given {
            let used_by: Vec<FaultKind> = kinds
                .iter()
                .copied()
                .filter(|kind| {
                    let (required, optional) = kind.parameters();
                    required.contains(&key) || optional.contains(&key)
                })
                .collect();
            if is_given && used_by.is_empty() {
                let users: Vec<&str> = FaultKind::ALL
                    .iter()
                    .filter(|kind| {
                        let (required, optional) = kind.parameters();
                        required.contains(&key) || optional.contains(&key)
                    })
                    .map(|kind| kind.name())
                    .collect();
                let kinds_text = kinds.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
                self.report(
                    parameters_path.key(key),
                    Anchor::Key,
                    format!("`{key}` is not used by {kinds_text} {what}s"),
                    format!("`{key}` applies to {}", users.join(", ")),
                );
            }
            if !is_given && !self.was_invalid(&parameters_path.key(key)) {
                for kind in kinds {
                    if kind.parameters().0.contains(&key) {
                        self.report(
                            parameters_path.clone(),
                            Anchor::Key,
                            format!("a `{kind}` {what} needs parameters.{key}"),
                            None,
                        );
                    }
                }
            }
        }
        FaultParameters {
            delay_ms: raw.delay_ms.map(to_u32),
            jitter_ms: raw.jitter_ms.map(to_u32),
            bytes_per_second: raw.bytes_per_second.and_then(|b| u64::try_from(b).ok()),
            direction: raw.direction.as_deref().and_then(ParameterDirection::from_name),
            groups: raw.groups.as_ref().map(|groups| {
                groups.iter().map(|ids| ids.iter().map(|&id| u32::try_from(id).unwrap_or(u32::MAX)).collect()).collect()
            }),
            clients: raw.clients.map(to_u32),
        }
    }

    /// A partition's `groups` name started brokers, each once, and make at least
    /// two sides (a broker in no group is a side of its own); `clients` names one
    /// of them.
    fn partition_groups(&mut self, parameters: &FaultParameters, path: &FieldPath, cluster: Option<&Cluster>) {
        let brokers = match cluster {
            Some(Cluster::Local(local)) => local.brokers,
            _ => return,
        };
        if let Some(groups) = &parameters.groups {
            let mut seen = std::collections::BTreeSet::new();
            for (index, group) in groups.iter().enumerate() {
                for (position, &id) in group.iter().enumerate() {
                    let id_path = path.key("groups").index(index).index(position);
                    if id >= brokers {
                        let hint = format!("the started brokers have ids 0 to {}", brokers.saturating_sub(1));
                        self.report(id_path, Anchor::Value, format!("there is no broker {id}"), hint);
                    } else if !seen.insert(id) {
                        self.report(id_path, Anchor::Value, format!("broker {id} is in two groups"), None);
                    }
                }
            }
            let sides = groups.len() + (brokers as usize).saturating_sub(seen.len());
            if sides < 2 && !self.was_invalid(&path.key("groups")) {
                self.report(
                    path.key("groups"),
                    Anchor::Value,
                    "the groups leave the cluster whole: a partition needs at least two sides".to_string(),
                    "for example `[[0], [1, 2]]`".to_string(),
                );
            }
        }
        if let Some(clients) = parameters.clients {
            let sides = parameters.groups.as_ref().map(Vec::len);
            if sides.is_none_or(|sides| clients as usize >= sides) {
                let hint = match sides {
                    Some(sides) => format!("groups has {}, counted from 0", plural(sides as u64, "group")),
                    None => "clients picks one of `groups`, which the fault must then list".to_string(),
                };
                self.report(path.key("clients"), Anchor::Value, format!("there is no group {clients}"), hint);
            }
        }
    }

    /// Two process faults on the same named broker (or `all`) must not overlap: a
    /// broker is under one process fault at a time.
    fn overlaps(&mut self, faults: &[(usize, Fault)]) {
        let process: Vec<&(usize, Fault)> =
            faults.iter().filter(|(_, fault)| fault.kind.scope() == FaultScope::BrokerProcess).collect();
        for (position, (index, fault)) in process.iter().enumerate() {
            for (other_index, other) in process.iter().take(position).map(|entry| (&entry.0, &entry.1)) {
                let same_target = match (&fault.target, &other.target) {
                    (FaultTarget::Broker(a), FaultTarget::Broker(b)) => a == b,
                    (FaultTarget::All, FaultTarget::Broker(_) | FaultTarget::All) => true,
                    (FaultTarget::Broker(_), FaultTarget::All) => true,
                    _ => false,
                };
                let (first, second) = if other.at <= fault.at { (other, fault) } else { (fault, other) };
                let overlapping = second.at < first.at + first.duration || second.at == first.at;
                if same_target && overlapping {
                    self.report(
                        top("faults").index(*index).key("at"),
                        Anchor::Value,
                        format!(
                            "overlaps faults[{other_index}] ({} of {} from {} to {})",
                            other.kind,
                            other.target,
                            seconds_text(other.at),
                            seconds_text(other.at + other.duration)
                        ),
                        "a broker can be under one process fault at a time; move one of them".to_string(),
                    );
                }
            }
        }
    }

    fn nemesis(
        &mut self,
        raw: &RawWorkload,
        driver: DriverKind,
        cluster: Option<&Cluster>,
        counts: &Counts,
        test_duration: Option<Duration>,
    ) -> Option<Nemesis> {
        let raw_nemesis = raw.nemesis.as_ref()?;
        let path = top("nemesis");
        if driver == DriverKind::Embedded {
            self.report(
                path,
                Anchor::Key,
                "the embedded driver has no broker process, network or Kafka client to fault",
                "use `driver: kafka` for fault injection".to_string(),
            );
            return None;
        }
        let kinds: Vec<FaultKind> =
            raw_nemesis.kinds.iter().flatten().filter_map(|name| FaultKind::from_name(name)).collect();
        let interval = raw_nemesis.interval.map(seconds)?;
        let duration = raw_nemesis.duration.map(seconds).unwrap_or(interval / 2);
        if duration > interval {
            self.report(
                path.key("duration"),
                Anchor::Value,
                format!(
                    "each fault lasts {}, longer than the {} interval",
                    seconds_text(duration),
                    seconds_text(interval)
                ),
                "the nemesis starts one fault per interval and never overlaps them; lengthen the interval".to_string(),
            );
        }
        if duration.is_zero() {
            if let Some(kind) = kinds.iter().find(|kind| kind.needs_duration()) {
                self.report(
                    path.key("duration"),
                    Anchor::Value,
                    format!("`{kind}` faults need a duration above 0"),
                    None,
                );
            }
        }
        if let Some(test) = test_duration {
            if interval + duration > test {
                self.report(
                    path.key("interval"),
                    Anchor::Value,
                    format!(
                        "no fault would fit: the first starts after {} and the test lasts {}",
                        seconds_text(interval),
                        seconds_text(test)
                    ),
                    "shorten the interval".to_string(),
                );
            }
        }
        for (index, kind) in raw_nemesis.kinds.iter().flatten().enumerate() {
            if let Some(kind) = FaultKind::from_name(kind) {
                self.kind_fits_cluster(kind, &path.key("kinds").index(index), cluster, counts);
            }
        }
        let parameters = self.parameters(raw_nemesis.parameters.as_ref(), &kinds, &path, "nemesis fault");
        Some(Nemesis { seed: raw_nemesis.seed.or(raw.seed), interval, duration, kinds, parameters })
    }
}

/// `cluster.replication_factor` and `cluster.min_insync_replicas` as given.
struct Replicas {
    replication_factor: Option<u32>,
    min_insync_replicas: Option<u32>,
}

/// What fault targets can refer to.
struct Counts {
    topics: u32,
    partitions_per_topic: u32,
    producers: u64,
    consumers: u64,
    /// The exactly-once stage's processors; `None` when no guarantee runs the stage.
    processors: Option<u32>,
    /// False when a count was missing or invalid: index checks are then skipped.
    known: bool,
}

/// `1 producer`, `3 producers`.
fn plural(count: u64, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// `broker-0`, `broker-0 and broker-1`, `broker-0 … broker-4`; `none` for 0.
fn names(prefix: &str, count: u64) -> String {
    match count {
        0 => "none".to_string(),
        1 => format!("{prefix}0"),
        2 => format!("{prefix}0 and {prefix}1"),
        _ => format!("{prefix}0 … {prefix}{}", count - 1),
    }
}
