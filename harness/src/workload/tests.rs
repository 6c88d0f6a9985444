//! Model-level tests: what files turn into, and that the schema tables agree with the
//! Rust types. The `corelog check` output (messages, golden files, the reference)
//! is tested end to end in `harness/tests/workloads.rs`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};

use super::schema::{self, BlockDoc, Kind};
use super::*;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn parse_ok(source: &str, path: &Path) -> Workload {
    match parse(source, path) {
        Ok(workload) => workload,
        Err(diagnostics) => {
            let text: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
            panic!("{} should be valid:\n{}", path.display(), text.join("\n"))
        }
    }
}

fn problems(source: &str) -> Vec<String> {
    match parse(source, Path::new("test.yaml")) {
        Ok(_) => Vec::new(),
        Err(diagnostics) => diagnostics.iter().map(ToString::to_string).collect(),
    }
}

const MINIMAL: &str =
    "topics: 1\npartitionsPerTopic: 2\nmessageSize: 100\nproducersPerTopic: 1\ntestDurationMinutes: 1\n";

#[test]
fn omb_file_gets_omb_meanings_and_defaults() {
    // Verbatim from OMB; parsed as if it sat in OMB's layout, where payload/ is beside it.
    let omb = manifest_dir().join("tests/workloads/omb");
    let text = std::fs::read_to_string(omb.join("workloads/1-topic-1-partition-1kb.yaml")).expect("read the OMB file");
    let workload = parse_ok(&text, &omb.join("1-topic-1-partition-1kb.yaml"));
    assert_eq!(workload.name, "1 topic / 1 partition / 1Kb");
    assert_eq!((workload.topics, workload.partitions_per_topic, workload.message_size_bytes), (1, 1, 1024));
    assert_eq!(workload.payload, Payload::File(omb.join("payload/payload-1Kb.data")));
    assert_eq!(workload.key_distributor, KeyDistributor::NoKey);
    assert_eq!(
        (workload.subscriptions_per_topic, workload.consumers_per_subscription, workload.producers_per_topic),
        (1, 1, 1)
    );
    assert_eq!(workload.producer_rate, ProducerRate::MessagesPerSecond(50_000));
    assert_eq!(workload.backlog, None);
    assert_eq!(workload.test_duration, Duration::from_secs(15 * 60));
    assert_eq!(workload.warmup_duration, Duration::from_secs(60), "OMB's default warm-up is one minute");
    // corelog's defaults for what OMB does not say.
    assert_eq!(workload.driver, DriverKind::Kafka);
    assert_eq!(workload.guarantees, vec![Guarantee::AtLeastOnce]);
    assert!(
        matches!(&workload.cluster, Cluster::Local(local) if local.brokers == 1 && local.fsync == corelog_engine::Durability::Never)
    );
    assert!(workload.faults.is_empty() && workload.nemesis.is_none());
}

#[test]
fn omb_backlog_file_builds_a_backlog_of_gib() {
    let path = manifest_dir().join("tests/workloads/omb/workloads/1-topic-100-partitions-1kb-4p-4c-200k-backlog.yaml");
    let workload = parse_ok(&std::fs::read_to_string(&path).expect("read"), &path);
    assert_eq!(workload.backlog, Some(Backlog { size_bytes: 512 << 30, drain_ratio: 1.0 }));
    assert_eq!(workload.payload, Payload::Randomized { random_bytes_ratio: 0.5, pool_size: 1000 });
    assert_eq!(workload.producer_rate, ProducerRate::MessagesPerSecond(200_000));
    assert_eq!(workload.test_duration, Duration::from_secs(300));
}

#[test]
fn every_library_workload_is_valid_and_quickstart_is_short() {
    let dir = manifest_dir().join("../workloads");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("workloads/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let workload = load(&path).unwrap_or_else(|d| panic!("{}: {:?}", path.display(), d));
            let total = workload.test_duration + workload.warmup_duration;
            assert!(total <= Duration::from_secs(5 * 60), "{}: {total:?} is long for this machine", path.display());
            count += 1;
        }
    }
    assert!(count >= 11, "only {count} workloads");
    let quickstart = load(&dir.join("quickstart.yaml")).expect("quickstart");
    assert!(quickstart.test_duration + quickstart.warmup_duration < Duration::from_secs(60));
    assert_eq!(quickstart.guarantees, vec![Guarantee::AtLeastOnce]);
    assert!(
        matches!(quickstart.producer_rate, ProducerRate::MessagesPerSecond(rate) if (5_000..=10_000).contains(&rate))
    );
    assert!(matches!(&quickstart.cluster, Cluster::Local(local) if local.brokers == 1));
}

#[test]
fn fault_schedule_and_nemesis_are_typed() {
    let path = manifest_dir().join("tests/workloads/good/chaos-schedule.yaml");
    let workload = load(&path).unwrap_or_else(|d| panic!("{d:?}"));
    assert_eq!(workload.faults.len(), 13);
    assert_eq!(workload.faults[11].target, FaultTarget::Controller);
    assert_eq!(workload.faults[12].target, FaultTarget::Follower { topic: 1, partition: 2 });
    assert!(workload.faults.windows(2).all(|pair| pair[0].at <= pair[1].at), "faults are sorted by start");
    let pause = &workload.faults[1];
    assert_eq!(
        (pause.kind, &pause.target, pause.at, pause.duration),
        (
            FaultKind::Pause,
            &FaultTarget::Leader { topic: 1, partition: 5 },
            Duration::from_secs(20),
            Duration::from_millis(3500)
        )
    );
    let latency = workload.faults.iter().find(|f| f.kind == FaultKind::Latency).expect("latency fault");
    assert_eq!(
        latency.parameters,
        FaultParameters {
            delay_ms: Some(50),
            jitter_ms: Some(10),
            bytes_per_second: None,
            direction: Some(ParameterDirection::ToClient),
            groups: None,
            clients: None,
        }
    );
    let nemesis = workload.nemesis.expect("nemesis");
    assert_eq!(
        (nemesis.seed, nemesis.interval, nemesis.duration),
        (Some(7), Duration::from_secs(30), Duration::from_secs(10))
    );
    assert_eq!(nemesis.kinds, vec![FaultKind::Crash, FaultKind::Pause, FaultKind::Latency, FaultKind::ConsumerCrash]);
    assert_eq!(workload.seed, Some(42));
    assert_eq!(workload.producer_config.get("linger.ms").map(String::as_str), Some("5"));
    let Cluster::Local(local) = &workload.cluster else { panic!("local cluster") };
    assert_eq!(
        (local.brokers, local.replication_factor, local.min_insync_replicas, local.fsync),
        (3, 3, 2, corelog_engine::Durability::IntervalMs(50))
    );
    let settings = workload.cluster.topic_settings();
    assert_eq!(settings.replication_factor, Some(3));
    assert_eq!(
        settings.configs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>(),
        [("min.insync.replicas", "2"), ("retention.bytes", "1073741824")]
    );
}

#[test]
fn replication_defaults_to_one_replica_for_started_brokers_and_to_the_cluster_for_external_ones() {
    let local = parse_ok(MINIMAL, Path::new("dir/minimal.yaml"));
    let Cluster::Local(cluster) = &local.cluster else { panic!("local cluster") };
    assert_eq!((cluster.brokers, cluster.replication_factor, cluster.min_insync_replicas), (1, 1, 1));
    let settings = local.cluster.topic_settings();
    assert_eq!(settings.replication_factor, Some(1));
    assert_eq!(settings.configs.get(MIN_INSYNC_REPLICAS).map(String::as_str), Some("1"));

    let external = parse_ok(&format!("{MINIMAL}cluster: {{bootstrap: \"kafka-1:9092\"}}\n"), Path::new("x.yaml"));
    let settings = external.cluster.topic_settings();
    assert_eq!(settings.replication_factor, None, "CreateTopics asks for the cluster's default");
    assert!(settings.configs.is_empty(), "{settings:?}");
}

#[test]
fn started_brokers_take_a_cpu_list_or_unpinned_and_every_online_cpu_by_default() {
    use corelog_engine::cpus::{CpuList, ShardCpus};
    let cpus_of = |cluster: &str| {
        let workload = parse_ok(&format!("{MINIMAL}cluster: {cluster}\n"), Path::new("x.yaml"));
        let Cluster::Local(local) = workload.cluster else { panic!("local cluster") };
        local.cpus
    };
    assert_eq!(cpus_of("{brokers: 3}"), ShardCpus::Online);
    let listed = CpuList::parse("0-1,3").expect("a CPU list");
    assert_eq!(cpus_of("{brokers: 3, cores: 1, cpus: \"0-1,3\"}"), ShardCpus::Pinned(listed));
    assert_eq!(cpus_of("{cpus: unpinned}"), ShardCpus::Unpinned);
    // A CPU number alone is a YAML integer; it is read as the list it spells.
    assert_eq!(cpus_of("{cpus: 1}"), ShardCpus::Pinned(CpuList::parse("1").expect("a CPU list")));
    // Whether the CPUs are online is the run's check: a workload checks the same everywhere.
    assert_eq!(cpus_of("{cpus: 4000}"), ShardCpus::Pinned(CpuList::parse("4000").expect("a CPU list")));
    assert_eq!(
        problems(&format!("{MINIMAL}cluster: {{cpus: \"3-1\"}}\n")),
        ["test.yaml:6:17: cluster.cpus: `3-1`: \"3-1\" is a backwards range\n    hint: a CPU list as `taskset -c` \
          writes it, e.g. `0-1,3`, or `unpinned`"]
    );
}

#[test]
fn external_cluster_is_typed() {
    let path = manifest_dir().join("tests/workloads/good/external-cluster.yaml");
    let workload = load(&path).unwrap_or_else(|d| panic!("{d:?}"));
    let Cluster::External(external) = &workload.cluster else { panic!("external cluster") };
    assert_eq!(
        external.bootstrap,
        ["kafka-1.example.com:9092", "kafka-2.example.com:9092", "kafka-3.example.com:9092"]
    );
    assert_eq!(external.nodes[1], ExternalNode { name: "kafka-2".to_string(), node_id: 2 });
    assert_eq!(external.commands.start.as_deref(), Some("ssh {node} sudo systemctl start kafka"));
    assert_eq!(external.topic_config.get("flush.messages").map(String::as_str), Some("1"));
    assert_eq!((external.replication_factor, external.min_insync_replicas), (Some(3), Some(2)));
    assert_eq!(workload.warmup_duration, Duration::ZERO);
}

#[test]
fn defaults_follow_omb_and_seconds_fields_replace_minutes() {
    let workload = parse_ok(MINIMAL, Path::new("dir/minimal.yaml"));
    assert_eq!(workload.name, "minimal");
    assert_eq!(workload.producer_rate, ProducerRate::DiscoverMaximum);
    assert_eq!(workload.payload, Payload::Generated);
    assert_eq!((workload.subscriptions_per_topic, workload.consumers_per_subscription), (0, 0));
    let seconds = MINIMAL.replace("testDurationMinutes: 1", "testDurationSeconds: 2.5\nwarmupDurationSeconds: 0");
    let workload = parse_ok(&seconds, Path::new("s.yaml"));
    assert_eq!((workload.test_duration, workload.warmup_duration), (Duration::from_millis(2500), Duration::ZERO));
}

#[test]
fn an_invalid_value_is_reported_once_not_again_as_missing() {
    let source = MINIMAL.replace("testDurationMinutes: 1", "testDurationSeconds: -1");
    let found = problems(&source);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].starts_with("test.yaml:5:22: testDurationSeconds: must be between 1 and"), "{found:#?}");
    // A misspelt required field is reported as unknown with a suggestion, not also as missing.
    let found = problems(&MINIMAL.replace("topics: 1", "topic: 1"));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].contains("unknown field `topic`") && found[0].contains("did you mean `topics`?"), "{found:#?}");
}

#[test]
fn every_problem_is_reported_in_file_order() {
    let source = "topics: 0\npartitionsPerTopic: x\nmessageSize: 10\nnope: 1\nproducersPerTopic: 1\ntestDurationMinutes: 1\ncluster: {brokers: 99}\n";
    let lines: Vec<String> =
        problems(source).iter().map(|p| p.split(':').take(3).collect::<Vec<_>>().join(":")).collect();
    assert_eq!(lines, ["test.yaml:1:9", "test.yaml:2:21", "test.yaml:4:1", "test.yaml:7:20"]);
}

#[test]
fn merge_keys_are_applied_and_duplicates_are_located() {
    let source = "defaults: &d {topics: 1, partitionsPerTopic: 1}\n";
    assert!(problems(source).iter().any(|p| p.contains("unknown field `defaults`")));
    let merged = format!(
        "<<: {{topics: 1, partitionsPerTopic: 1}}\n{}",
        MINIMAL.replace("topics: 1\npartitionsPerTopic: 2\n", "")
    );
    parse_ok(&merged, Path::new("merged.yaml"));
    let found = problems("topics: 1\nmessageSize: 1\ntopics: 2\n");
    assert_eq!(found.len(), 1);
    assert!(found[0].starts_with("test.yaml:3:1: YAML syntax: duplicate entry"), "{found:#?}");
}

#[test]
fn fault_targets_parse() {
    assert_eq!(FaultTarget::parse("all"), Ok(FaultTarget::All));
    assert_eq!(FaultTarget::parse("leader:2/15"), Ok(FaultTarget::Leader { topic: 2, partition: 15 }));
    assert_eq!(FaultTarget::parse("producer-3"), Ok(FaultTarget::Producer(3)));
    assert_eq!(FaultTarget::parse("controller"), Ok(FaultTarget::Controller));
    assert_eq!(FaultTarget::parse("follower:0/3"), Ok(FaultTarget::Follower { topic: 0, partition: 3 }));
    assert_eq!(FaultTarget::parse("kafka-1"), Ok(FaultTarget::Broker("kafka-1".to_string())));
    assert!(FaultTarget::parse("leader:1").is_err());
    assert_eq!(
        FaultTarget::parse("follower:1"),
        Err("a follower target is `follower:<topic>/<partition>`".to_string())
    );
    assert_eq!(FaultTarget::parse("follower:0/x"), Err("`x` is not an index".to_string()));
    assert!(FaultTarget::parse("consumer-x").is_err());
    assert!(FaultTarget::parse("two words").is_err());
    // Only the exact prefixes name a partition's replica; other names are brokers'.
    assert_eq!(FaultTarget::parse("followers"), Ok(FaultTarget::Broker("followers".to_string())));
    for target in ["all", "random", "broker-2", "leader:0/1", "follower:2/0", "controller", "producer-0", "consumer-9"]
    {
        assert_eq!(FaultTarget::parse(target).map(|t| t.to_string()), Ok(target.to_string()));
    }
}

#[test]
fn follower_targets_need_the_partition_and_a_second_replica() {
    let cluster = "cluster: {brokers: 3, replication_factor: 2}\n";
    let with = |target: &str, cluster: &str| {
        problems(&format!("{MINIMAL}{cluster}faults:\n  - {{at: 5, duration: 5, kind: pause, target: \"{target}\"}}\n"))
    };
    assert_eq!(with("follower:0/1", cluster), Vec::<String>::new());
    let found = with("follower:0/2", cluster);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].contains("there is no partition 0/2: the workload has 1 topic of 2 partitions each"),
        "{found:#?}"
    );
    let found = with("follower:0/0", "cluster: {brokers: 3}\n");
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].contains("`follower:0/0` names no broker: with replication_factor 1 a partition has no follower"),
        "{found:#?}"
    );
    let external = "cluster: {bootstrap: \"kafka-1:9092\", nodes: [{name: kafka-1, node_id: 1}], \
                    commands: {pause: \"true\", resume: \"true\"}}\n";
    assert_eq!(with("follower:0/0", external), Vec::<String>::new(), "the cluster's own replication factor");
    let found = with("follower:0/0", &external.replace("bootstrap:", "replication_factor: 1, bootstrap:"));
    assert_eq!(found.len(), 1, "{found:#?}");
    let found = problems(&format!(
        "{MINIMAL}consumerPerSubscription: 1\nsubscriptionsPerTopic: 1\n{cluster}faults:\n  \
         - {{at: 5, kind: consumer-crash, target: \"follower:0/0\"}}\n"
    ));
    assert!(found.iter().any(|p| p.contains("acts on a client, not on `follower:0/0`")), "{found:#?}");
}

#[test]
fn named_enums_round_trip() {
    for kind in FaultKind::ALL {
        assert_eq!(FaultKind::from_name(kind.name()), Some(*kind));
    }
    for guarantee in Guarantee::ALL {
        assert_eq!(Guarantee::from_name(guarantee.name()), Some(*guarantee));
    }
    for key in KeyDistributor::ALL {
        assert_eq!(KeyDistributor::from_name(key.name()), Some(*key));
    }
    assert_eq!(FaultKind::ALL.len(), FaultKind::CHOICES.len());
}

#[test]
fn fault_kinds_name_only_schema_fields() {
    for kind in FaultKind::ALL {
        let (required, optional) = kind.parameters();
        for key in required.iter().chain(optional) {
            assert!(schema::FAULT_PARAMETERS.field(key).is_some(), "{kind}: parameter {key} is not in the schema");
        }
        for command in kind.commands() {
            assert!(schema::COMMANDS.field(command).is_some(), "{kind}: command {command} is not in the schema");
        }
    }
    for field in schema::FAULT_PARAMETERS.fields {
        let used = FaultKind::ALL.iter().any(|kind| {
            let (required, optional) = kind.parameters();
            required.contains(&field.key) || optional.contains(&field.key)
        });
        assert!(used, "parameter {} is used by no fault kind", field.key);
    }
}

/// A value of `kind` at one end of its range, for the schema check below.
fn sample(kind: &Kind, high: bool) -> Value {
    let pick = |min: f64, max: f64| Value::from(if high { max } else { min });
    match kind {
        Kind::Integer { min, max } => {
            let n = if high { *max } else { *min };
            match (i64::try_from(n), u64::try_from(n)) {
                (Ok(n), _) => Value::from(n),
                (_, Ok(n)) => Value::from(n),
                _ => panic!("integer bound {n} fits no YAML number"),
            }
        }
        Kind::Number { min, max } | Kind::Seconds { min, max } => pick(*min, *max),
        Kind::Bool => Value::Bool(high),
        Kind::Text | Kind::Path | Kind::Pattern(_) => Value::from("x"),
        Kind::OneOf(choices) => Value::from(choices[0].name),
        Kind::ListOf(choices) => Value::Sequence(choices.iter().map(|c| Value::from(c.name)).collect()),
        Kind::HostPorts => {
            if high {
                Value::from("a:1,b:2")
            } else {
                Value::Sequence(vec![Value::from("a:1")])
            }
        }
        Kind::Map(_) => {
            let mut map = Mapping::new();
            map.insert(Value::from("k.k"), Value::from(1));
            Value::Mapping(map)
        }
        Kind::Groups => {
            let group = |ids: &[u64]| Value::Sequence(ids.iter().map(|&id| Value::from(id)).collect());
            Value::Sequence(if high { vec![group(&[0]), group(&[1, 2])] } else { vec![group(&[0])] })
        }
        Kind::Block(block) => block_sample(block, high),
        Kind::Blocks(block) => Value::Sequence(vec![block_sample(block, high)]),
    }
}

fn block_sample(block: &BlockDoc, high: bool) -> Value {
    let mut map = Mapping::new();
    for field in block.fields {
        map.insert(Value::from(field.key), sample(&field.kind, high));
    }
    Value::Mapping(map)
}

fn deserializes<T: DeserializeOwned>(block: &'static BlockDoc) {
    for high in [false, true] {
        let value = block_sample(block, high);
        if let Err(error) = serde_yaml::from_value::<T>(value.clone()) {
            panic!(
                "block {}: the Rust types do not hold the schema's {} values: {error}\n{value:?}",
                block.name,
                if high { "largest" } else { "smallest" }
            );
        }
    }
}

#[test]
fn schema_kinds_fit_the_rust_types() {
    // Every value the structural pass accepts (here: each range's ends) must
    // deserialize into the Raw structs, or a valid file would fail in serde.
    deserializes::<schema::RawWorkload>(&schema::WORKLOAD);
    deserializes::<schema::RawCluster>(&schema::CLUSTER);
    deserializes::<schema::RawNode>(&schema::NODE);
    deserializes::<schema::RawCommands>(&schema::COMMANDS);
    deserializes::<schema::RawFault>(&schema::FAULT);
    deserializes::<schema::RawFaultParameters>(&schema::FAULT_PARAMETERS);
    deserializes::<schema::RawNemesis>(&schema::NEMESIS);
    deserializes::<schema::RawProcessing>(&schema::PROCESSING);
    for block in schema::BLOCKS {
        for field in block.fields {
            assert!(!field.doc.trim().is_empty(), "{}.{} has no documentation", block.name, field.key);
        }
    }
}
