//! Every setting of a broker ([`BROKER_SETTINGS`]): its Kafka name, its
//! `corelog broker` flag and YAML key, its documentation, and how it is read from
//! and set on a [`BrokerConfig`]. The harness builds the flags (with the table's
//! documentation as their help) and reads the YAML file from this table, and
//! DescribeConfigs reports a broker's settings from it, so adding a setting is one
//! row here plus its field on [`BrokerConfig`].
//!
//! The broker's defaults for topics are not rows: they are the topic keys
//! ([`super::topic::TOPIC_KEYS`]), given under [`TOPIC_DEFAULTS_YAML_KEY`] in the
//! YAML file and reported under their broker names (`log.retention.ms`, ...).
//!
//! Every setting is static: read at start-up, reported read-only.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use corelog_engine::cpus::{self, ShardCpus};

use super::{parse_bool, parse_in, ConfigKind};
use crate::BrokerConfig;

/// A `corelog broker` flag.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    /// The long name, without `--`.
    pub long: &'static str,
    /// What the value looks like, for `--help`.
    pub value_name: &'static str,
    /// Whether every `corelog broker` command line gives it.
    pub required: bool,
}

/// One broker setting.
#[derive(Debug, Clone, Copy)]
pub struct BrokerSetting {
    /// Kafka's name of the setting, as DescribeConfigs reports it, or corelog's own
    /// (`corelog.*`) where Kafka has none.
    pub name: &'static str,
    /// Its `corelog broker` flag; `None`: only the YAML file sets it.
    pub flag: Option<Flag>,
    /// Its key in the `corelog broker --config` YAML file; `None`: only a flag sets it.
    pub yaml_key: Option<&'static str>,
    pub kind: ConfigKind,
    /// One or two sentences: the flag's help and DescribeConfigs' documentation.
    pub documentation: &'static str,
    /// Its value in a config, as DescribeConfigs reports it.
    pub value: fn(&BrokerConfig) -> String,
    /// Sets it from text (a flag's argument, a YAML scalar), or says why the text is
    /// not a valid value, changing nothing; `None` for a setting nothing sets
    /// (reported only).
    pub set: Option<Setter>,
}

/// Sets a setting from text, or says why the text is not a valid value.
pub type Setter = fn(&mut BrokerConfig, &str) -> Result<(), String>;

/// The YAML key of the broker's defaults for topics: a map of topic keys to values.
pub const TOPIC_DEFAULTS_YAML_KEY: &str = "topic_defaults";

/// What DescribeConfigs prefixes a listener address with: corelog's only listener.
const PLAINTEXT: &str = "PLAINTEXT://";

/// Every broker setting, in the order `--help` and DescribeConfigs list them.
pub const BROKER_SETTINGS: [BrokerSetting; 27] = [
    BrokerSetting {
        name: "log.dirs",
        flag: Some(Flag { long: "data-dir", value_name: "DIR", required: true }),
        yaml_key: None,
        kind: ConfigKind::String,
        documentation: "Directory holding the topics' logs and the broker's own files (created if missing).",
        value: |config| config.engine.data_dir.display().to_string(),
        set: Some(|config, text| {
            if text.is_empty() {
                return Err("expected a directory".to_string());
            }
            config.engine.data_dir = PathBuf::from(text);
            Ok(())
        }),
    },
    BrokerSetting {
        name: "listeners",
        flag: Some(Flag { long: "listen", value_name: "HOST:PORT", required: false }),
        yaml_key: Some("listen"),
        kind: ConfigKind::String,
        documentation: "Address to listen on for Kafka clients (port 0: any free port).",
        value: |config| format!("{PLAINTEXT}{}", config.listen),
        set: Some(|config, text| {
            config.listen = resolve(text)?;
            Ok(())
        }),
    },
    BrokerSetting {
        name: "advertised.listeners",
        flag: Some(Flag { long: "advertised-listener", value_name: "HOST:PORT", required: false }),
        yaml_key: Some("advertised_listener"),
        kind: ConfigKind::String,
        documentation: "The address given to clients in Metadata; by default the listen address.",
        value: |config| match &config.advertised_listener {
            Some((host, port)) => format!("{PLAINTEXT}{host}:{port}"),
            None => format!("{PLAINTEXT}{}:{}", config.listen.ip(), config.listen.port()),
        },
        set: Some(|config, text| {
            config.advertised_listener = Some(parse_host_port(text)?);
            Ok(())
        }),
    },
    BrokerSetting {
        name: "node.id",
        flag: Some(Flag { long: "node-id", value_name: "ID", required: false }),
        yaml_key: Some("node_id"),
        kind: ConfigKind::Int,
        documentation: "This broker's id (0 or more).",
        value: |config| config.node_id.to_string(),
        set: Some(|config, text| {
            config.node_id = parse_in(text, 0, i32::MAX)?;
            Ok(())
        }),
    },
    BrokerSetting {
        name: "broker.id",
        flag: None,
        yaml_key: None,
        kind: ConfigKind::Int,
        documentation: "Kafka's older name of node.id, which sets it.",
        value: |config| config.node_id.to_string(),
        set: None,
    },
    BrokerSetting {
        name: "corelog.cores",
        flag: Some(Flag { long: "cores", value_name: "N", required: false }),
        yaml_key: Some("cores"),
        kind: ConfigKind::Int,
        documentation: "corelog's own: shards, one thread each, serving both connections and disk IO \
                        (Kafka's num.network.threads and num.io.threads in one); 0 means one per CPU of \
                        corelog.cpus (per online CPU when unpinned).",
        value: |config| config.engine.shard_count.to_string(),
        set: Some(|config, text| {
            config.engine.shard_count = parse_in(text, 0, usize::MAX)?;
            Ok(())
        }),
    },
    BrokerSetting {
        name: "corelog.cpus",
        flag: Some(Flag { long: "cpus", value_name: "LIST|unpinned", required: false }),
        yaml_key: Some("cpus"),
        kind: ConfigKind::String,
        documentation: "corelog's own: the CPUs the shards are pinned to, a Linux CPU list as taskset -c writes \
                        it (0-1,3): shard i on the i-th CPU, wrapping; or unpinned (the kernel schedules them). \
                        Default: every online CPU.",
        value: |config| match &config.engine.cpus {
            ShardCpus::Online => {
                cpus::online().map_or_else(|_| ShardCpus::Online.to_string(), |online| online.to_string())
            }
            pinned_or_not => pinned_or_not.to_string(),
        },
        set: Some(|config, text| {
            let online = cpus::online().map_err(|e| e.to_string());
            config.engine.cpus = parse_cpus(text, online.as_ref())?;
            Ok(())
        }),
    },
    BrokerSetting {
        name: "auto.create.topics.enable",
        flag: None,
        yaml_key: Some("auto_create_topics"),
        kind: ConfigKind::Boolean,
        documentation: "Whether Metadata requests create the topics they name that do not exist.",
        value: |config| config.auto_create_topics.to_string(),
        set: Some(|config, text| {
            config.auto_create_topics = parse_bool(text)?;
            Ok(())
        }),
    },
    BrokerSetting {
        name: "num.partitions",
        flag: None,
        yaml_key: Some("default_partitions"),
        kind: ConfigKind::Int,
        documentation: "Partition count of auto-created topics and of CreateTopics asking for the default (-1).",
        value: |config| config.default_partitions.to_string(),
        set: Some(|config, text| {
            config.default_partitions = parse_in(text, 1, corelog_engine::config::PARTITIONS_PER_TOPIC_MAX)?;
            Ok(())
        }),
    },
    BrokerSetting {
        name: "default.replication.factor",
        flag: None,
        yaml_key: Some("default_replication_factor"),
        kind: ConfigKind::Int,
        documentation: "Replicas of auto-created topics and of CreateTopics asking for the default (-1); \
                        1 without a cluster.",
        value: |config| config.cluster.default_replication_factor.to_string(),
        set: Some(|config, text| {
            config.cluster.default_replication_factor = parse_in(text, 1, i16::MAX as i32)?;
            Ok(())
        }),
    },
    BrokerSetting {
        name: "controller.listener",
        flag: Some(Flag { long: "controller-listener", value_name: "HOST:PORT", required: false }),
        yaml_key: Some("controller_listener"),
        kind: ConfigKind::String,
        documentation: "Where this node's metadata quorum peers reach it (Kafka's CONTROLLER listener); needed \
                        with controller.quorum.voters.",
        value: |config| config.cluster.controller_listener.map_or(String::new(), |a| format!("CONTROLLER://{a}")),
        set: Some(|config, text| {
            config.cluster.controller_listener = Some(resolve(text.strip_prefix("CONTROLLER://").unwrap_or(text))?);
            Ok(())
        }),
    },
    BrokerSetting {
        name: "controller.quorum.voters",
        flag: Some(Flag { long: "controller-quorum-voters", value_name: "ID@HOST:PORT,...", required: false }),
        yaml_key: Some("controller_quorum_voters"),
        kind: ConfigKind::List,
        documentation: "The metadata quorum's voters and their controller listeners, this node among them: \
                        set, the broker is a node of that cluster; unset, a single broker.",
        value: |config| {
            config.cluster.voters.iter().map(|(id, address)| format!("{id}@{address}")).collect::<Vec<_>>().join(",")
        },
        set: Some(|config, text| {
            config.cluster.voters = crate::cluster::config::parse_voters(text)?;
            Ok(())
        }),
    },
    BrokerSetting {
        name: "corelog.peer.addresses",
        flag: Some(Flag { long: "peer-addresses", value_name: "ID@HOST:PORT,...", required: false }),
        yaml_key: Some("peer_addresses"),
        kind: ConfigKind::List,
        documentation: "corelog's own: where this broker reaches other brokers to fetch as their follower, \
                        written as controller.quorum.voters, instead of the listener each registered (how \
                        corelog run routes replication through its fault proxy). Default: none.",
        value: |config| {
            config
                .cluster
                .peer_addresses
                .iter()
                .map(|(id, address)| format!("{id}@{address}"))
                .collect::<Vec<_>>()
                .join(",")
        },
        set: Some(|config, text| {
            config.cluster.peer_addresses = crate::cluster::config::parse_peer_addresses(text)?;
            Ok(())
        }),
    },
    BrokerSetting {
        name: "cluster.id",
        flag: Some(Flag { long: "cluster-id", value_name: "ID", required: false }),
        yaml_key: Some("cluster_id"),
        kind: ConfigKind::String,
        documentation: "The cluster a node's data directory belongs to: stored at its first start (every node \
                        the same id, as kafka-storage format --cluster-id), refused if another is found later.",
        value: |config| config.cluster.cluster_id.clone().unwrap_or_default(),
        set: Some(|config, text| {
            config.cluster.cluster_id = Some(text.to_string());
            Ok(())
        }),
    },
    BrokerSetting {
        name: "broker.session.timeout.ms",
        flag: None,
        yaml_key: Some("broker_session_timeout_ms"),
        kind: ConfigKind::Int,
        documentation: "A broker whose heartbeats the active controller misses for longer is fenced: it leads \
                        nothing and leaves every ISR.",
        value: |config| config.cluster.session_timeout_ms.to_string(),
        set: Some(|config, text| {
            config.cluster.session_timeout_ms = parse_in(text, 100, i32::MAX as u64)?;
            Ok(())
        }),
    },
    BrokerSetting {
        name: "broker.heartbeat.interval.ms",
        flag: None,
        yaml_key: Some("broker_heartbeat_interval_ms"),
        kind: ConfigKind::Int,
        documentation: "How often a broker heartbeats to the active controller.",
        value: |config| config.cluster.heartbeat_interval_ms.to_string(),
        set: Some(|config, text| {
            config.cluster.heartbeat_interval_ms = parse_in(text, 10, i32::MAX as u64)?;
            Ok(())
        }),
    },
    BrokerSetting {
        name: "replica.lag.time.max.ms",
        flag: None,
        yaml_key: Some("replica_lag_time_max_ms"),
        kind: ConfigKind::Long,
        documentation: "A follower that has not caught up with its leader for longer leaves the ISR.",
        value: |config| config.cluster.replica_lag_time_max_ms.to_string(),
        set: Some(|config, text| {
            config.cluster.replica_lag_time_max_ms = parse_in(text, 100, i64::MAX as u64)?;
            Ok(())
        }),
    },
    BrokerSetting {
        name: "auto.leader.rebalance.enable",
        flag: None,
        yaml_key: Some("auto_leader_rebalance_enable"),
        kind: ConfigKind::Boolean,
        documentation: "Whether the active controller gives leadership back to preferred replicas (the first of \
                        each partition's replicas) once a broker leads too few of its own.",
        value: |config| config.cluster.auto_leader_rebalance.to_string(),
        set: Some(|config, text| {
            config.cluster.auto_leader_rebalance = super::parse_bool(text)?;
            Ok(())
        }),
    },
    BrokerSetting {
        name: "leader.imbalance.check.interval.seconds",
        flag: None,
        yaml_key: Some("leader_imbalance_check_interval_seconds"),
        kind: ConfigKind::Long,
        documentation: "How often the active controller checks for leadership imbalance.",
        value: |config| config.cluster.leader_imbalance_check_interval_s.to_string(),
        set: Some(|config, text| {
            config.cluster.leader_imbalance_check_interval_s = parse_in(text, 1, i32::MAX as u64)?;
            Ok(())
        }),
    },
    BrokerSetting {
        name: "leader.imbalance.per.broker.percentage",
        flag: None,
        yaml_key: Some("leader_imbalance_per_broker_percentage"),
        kind: ConfigKind::Int,
        documentation: "The share of a broker's preferred partitions, in percent, that may be led by others before \
                        the controller gives them back.",
        value: |config| config.cluster.leader_imbalance_percentage.to_string(),
        set: Some(|config, text| {
            config.cluster.leader_imbalance_percentage = parse_in(text, 0, 100)?;
            Ok(())
        }),
    },
    BrokerSetting {
        name: "socket.request.max.bytes",
        flag: None,
        yaml_key: Some("max_request_bytes"),
        kind: ConfigKind::Int,
        documentation: "Largest request accepted, in bytes; a larger one closes the connection.",
        value: |config| config.request_bytes_max.to_string(),
        set: Some(|config, text| {
            config.request_bytes_max = parse_in(text, 1, i32::MAX as usize)?;
            Ok(())
        }),
    },
    BrokerSetting {
        name: "fetch.max.bytes",
        flag: None,
        yaml_key: Some("fetch_max_bytes"),
        kind: ConfigKind::Int,
        documentation: "Most record bytes one Fetch response carries, whatever its max_bytes asks (at least \
                        1024); the first batch of the first non-empty partition is returned whole even if \
                        larger, so consumers make progress. Default: 57671680 (55 MiB), as in Kafka.",
        value: |config| config.fetch_bytes_max.to_string(),
        set: Some(|config, text| {
            config.fetch_bytes_max = parse_in(text, 1024, i32::MAX as usize)?;
            Ok(())
        }),
    },
    BrokerSetting {
        name: "max.connections",
        flag: None,
        yaml_key: Some("max_connections"),
        kind: ConfigKind::Int,
        documentation: "Connections served at once, over all shards; more are closed when accepted.",
        value: |config| config.connections_max.to_string(),
        set: Some(|config, text| {
            config.connections_max = parse_in(text, 0, i32::MAX as usize)?;
            Ok(())
        }),
    },
    BrokerSetting {
        name: "max.connections.per.ip",
        flag: None,
        yaml_key: Some("max_connections_per_ip"),
        kind: ConfigKind::Int,
        documentation: "Connections served at once from one IP address, over all shards; more from it are closed \
                        when accepted. Default: 2147483647 (no limit), as in Kafka.",
        value: |config| config.connections_max_per_ip.to_string(),
        set: Some(|config, text| {
            config.connections_max_per_ip = parse_in(text, 0, i32::MAX as usize)?;
            Ok(())
        }),
    },
    BrokerSetting {
        name: "max.connections.per.ip.overrides",
        flag: None,
        yaml_key: Some("max_connections_per_ip_overrides"),
        kind: ConfigKind::String,
        documentation: "max.connections.per.ip of particular addresses, as ip:count,ip:count (IP addresses only, \
                        not Kafka's host names). Default: none.",
        value: |config| {
            config
                .connections_max_per_ip_overrides
                .iter()
                .map(|(ip, count)| match ip {
                    std::net::IpAddr::V4(ip) => format!("{ip}:{count}"),
                    std::net::IpAddr::V6(ip) => format!("[{ip}]:{count}"),
                })
                .collect::<Vec<_>>()
                .join(",")
        },
        set: Some(|config, text| {
            config.connections_max_per_ip_overrides = crate::connection_quotas::parse_per_ip_overrides(text)?;
            Ok(())
        }),
    },
    BrokerSetting {
        name: "connections.max.idle.ms",
        flag: None,
        yaml_key: Some("connections_max_idle_ms"),
        kind: ConfigKind::Long,
        documentation: "A connection with no request in flight that receives nothing for this long is closed \
                        (a long-poll Fetch or a Produce waiting for its acks keeps it). Default: 600000.",
        value: |config| config.connections_max_idle_ms.to_string(),
        set: Some(|config, text| {
            config.connections_max_idle_ms = parse_in(text, 1, i64::MAX as u64)?;
            Ok(())
        }),
    },
    BrokerSetting {
        name: "corelog.request.read.timeout.ms",
        flag: None,
        yaml_key: Some("request_read_timeout_ms"),
        kind: ConfigKind::Long,
        documentation: "corelog's own (Kafka has none): once the first byte of a request's size prefix \
                        arrives, the whole request must arrive within this, or the connection is closed, so a \
                        client trickling bytes cannot hold a connection. Default: 30000.",
        value: |config| config.request_read_timeout_ms.to_string(),
        set: Some(|config, text| {
            config.request_read_timeout_ms = parse_in(text, 1, i64::MAX as u64)?;
            Ok(())
        }),
    },
];

/// The setting whose YAML key is `key`.
pub fn by_yaml_key(key: &str) -> Option<&'static BrokerSetting> {
    BROKER_SETTINGS.iter().find(|setting| setting.yaml_key == Some(key))
}

/// The setting Kafka (or corelog) names `name`.
pub fn by_name(name: &str) -> Option<&'static BrokerSetting> {
    BROKER_SETTINGS.iter().find(|setting| setting.name == name)
}

/// `corelog.cpus` from `text` on a machine whose online CPUs are `online` (or
/// could not be listed: then only `unpinned` is accepted), or why not, naming the
/// online CPUs: a CPU list every CPU of which is online, or `unpinned`.
pub fn parse_cpus(text: &str, online: Result<&cpus::CpuList, &String>) -> Result<ShardCpus, String> {
    let online_text = match online {
        Ok(online) => online.to_string(),
        Err(reason) => format!("unknown: {reason}"),
    };
    let parsed = ShardCpus::parse(text).map_err(|reason| {
        format!("{reason}; expected a CPU list such as 0-1,3, or unpinned (online CPUs: {online_text})")
    })?;
    match (&parsed, online) {
        (ShardCpus::Unpinned, _) => Ok(parsed),
        (_, Ok(online)) => parsed.resolve(online).map(|_| parsed),
        (_, Err(_)) => Err(format!("cannot pin to CPUs the machine does not list (online CPUs: {online_text})")),
    }
}

/// `host:port` (or Kafka's `PLAINTEXT://host:port`) as the first address it resolves to.
fn resolve(text: &str) -> Result<SocketAddr, String> {
    let address = text.strip_prefix(PLAINTEXT).unwrap_or(text);
    address.to_socket_addrs().map_err(|e| e.to_string())?.next().ok_or_else(|| "resolves to no address".to_string())
}

/// `host:port` (or Kafka's `PLAINTEXT://host:port`), unresolved: the host is for clients.
fn parse_host_port(text: &str) -> Result<(String, u16), String> {
    let address = text.strip_prefix(PLAINTEXT).unwrap_or(text);
    let (host, port) = address.rsplit_once(':').ok_or_else(|| format!("{text:?} is not host:port"))?;
    let port = port.parse::<u16>().map_err(|_| format!("{text:?}: bad port"))?;
    if host.is_empty() {
        return Err(format!("{text:?}: empty host"));
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_named_once_and_what_a_flag_or_file_gives_can_be_set() {
        for (index, setting) in BROKER_SETTINGS.iter().enumerate() {
            let earlier = &BROKER_SETTINGS[..index];
            assert!(earlier.iter().all(|other| other.name != setting.name), "{} twice", setting.name);
            if let Some(flag) = setting.flag {
                assert!(earlier.iter().all(|other| other.flag.map(|f| f.long) != Some(flag.long)), "--{}", flag.long);
            }
            if let Some(key) = setting.yaml_key {
                assert!(earlier.iter().all(|other| other.yaml_key != Some(key)), "YAML key {key} twice");
                assert_ne!(key, TOPIC_DEFAULTS_YAML_KEY);
                assert_eq!(by_yaml_key(key).map(|found| found.name), Some(setting.name));
            }
            let settable = setting.flag.is_some() || setting.yaml_key.is_some();
            assert_eq!(
                setting.set.is_some(),
                settable,
                "{}: set exactly when a flag or YAML key gives it",
                setting.name
            );
            assert_eq!(by_name(setting.name).map(|found| found.name), Some(setting.name));
            assert!(!setting.documentation.is_empty(), "{} is undocumented", setting.name);
        }
    }

    #[test]
    fn every_settable_value_reads_back_as_set() {
        let config = BrokerConfig::new("/var/lib/corelog");
        let cases = [
            ("log.dirs", "/srv/corelog", "/srv/corelog"),
            ("listeners", "127.0.0.1:19092", "PLAINTEXT://127.0.0.1:19092"),
            ("listeners", "PLAINTEXT://127.0.0.1:0", "PLAINTEXT://127.0.0.1:0"),
            ("advertised.listeners", "proxy.local:29092", "PLAINTEXT://proxy.local:29092"),
            ("node.id", "7", "7"),
            ("corelog.cores", "2", "2"),
            ("corelog.cpus", "0", "0"),
            ("corelog.cpus", "unpinned", "unpinned"),
            ("auto.create.topics.enable", "false", "false"),
            ("num.partitions", "12", "12"),
            ("socket.request.max.bytes", "1048576", "1048576"),
            ("fetch.max.bytes", "1048576", "1048576"),
            ("max.connections", "50", "50"),
            ("max.connections.per.ip", "3", "3"),
            ("max.connections.per.ip.overrides", "10.0.0.2:5, ::1:7", "10.0.0.2:5,[::1]:7"),
            ("connections.max.idle.ms", "1000", "1000"),
            ("corelog.request.read.timeout.ms", "2500", "2500"),
            ("default.replication.factor", "3", "3"),
            ("controller.listener", "127.0.0.1:19093", "CONTROLLER://127.0.0.1:19093"),
            ("controller.listener", "CONTROLLER://127.0.0.1:19094", "CONTROLLER://127.0.0.1:19094"),
            ("controller.quorum.voters", "0@127.0.0.1:19093,1@host:19094", "0@127.0.0.1:19093,1@host:19094"),
            ("corelog.peer.addresses", "1@127.0.0.1:30001, 2@proxy:30002", "1@127.0.0.1:30001,2@proxy:30002"),
            ("cluster.id", "prod-1", "prod-1"),
            ("broker.session.timeout.ms", "3000", "3000"),
            ("broker.heartbeat.interval.ms", "500", "500"),
            ("replica.lag.time.max.ms", "10000", "10000"),
            ("auto.leader.rebalance.enable", "FALSE", "false"),
            ("leader.imbalance.check.interval.seconds", "30", "30"),
            ("leader.imbalance.per.broker.percentage", "25", "25"),
        ];
        for (name, text, reported) in cases {
            let setting = by_name(name).unwrap_or_else(|| panic!("no setting {name}"));
            let mut changed = config.clone();
            (setting.set.expect("settable"))(&mut changed, text).unwrap_or_else(|e| panic!("{name}={text}: {e}"));
            assert_eq!((setting.value)(&changed), reported, "{name}");
        }
        assert_eq!((by_name("broker.id").expect("listed").value)(&BrokerConfig { node_id: 7, ..config.clone() }), "7");
        let settable = BROKER_SETTINGS.iter().filter(|setting| setting.set.is_some()).count();
        assert_eq!(settable, cases.iter().map(|(name, _, _)| *name).collect::<std::collections::BTreeSet<_>>().len());
    }

    #[test]
    fn cpus_are_a_list_of_online_cpus_or_unpinned_and_errors_name_the_online_cpus() {
        let online = cpus::CpuList::parse("0-1").expect("a list");
        let unlisted = "cannot read /sys".to_string();
        let pinned = |text: &str| ShardCpus::Pinned(cpus::CpuList::parse(text).expect("a list"));
        assert_eq!(parse_cpus("1", Ok(&online)), Ok(pinned("1")));
        assert_eq!(parse_cpus("0-1", Ok(&online)), Ok(pinned("0-1")));
        assert_eq!(parse_cpus("unpinned", Ok(&online)), Ok(ShardCpus::Unpinned));
        assert_eq!(parse_cpus("unpinned", Err(&unlisted)), Ok(ShardCpus::Unpinned));
        for (text, listed, error) in [
            ("0-3", Ok(&online), "CPUs 2-3 are not online (online CPUs: 0-1)"),
            ("2", Ok(&online), "CPU 2 is not online (online CPUs: 0-1)"),
            (
                "",
                Ok(&online),
                "the CPU list is empty; expected a CPU list such as 0-1,3, or unpinned (online CPUs: 0-1)",
            ),
            (
                "0;1",
                Ok(&online),
                "\"0;1\" is not a CPU number or range (such as 3 or 0-2); expected a CPU list such as 0-1,3, or \
                 unpinned (online CPUs: 0-1)",
            ),
            (
                "0",
                Err(&unlisted),
                "cannot pin to CPUs the machine does not list (online CPUs: unknown: cannot read /sys)",
            ),
        ] {
            assert_eq!(parse_cpus(text, listed), Err(error.to_string()), "{text:?}");
        }
    }

    #[test]
    fn the_default_cpus_are_reported_as_the_online_cpus() {
        let setting = by_name("corelog.cpus").expect("listed");
        let online = cpus::online().expect("the online CPUs are listed");
        assert_eq!((setting.value)(&BrokerConfig::new("/var/lib/corelog")), online.to_string());
    }

    #[test]
    fn bad_values_are_refused_and_change_nothing() {
        for (name, text) in [
            ("log.dirs", ""),
            ("listeners", "nowhere"),
            ("advertised.listeners", "proxy.local"),
            ("advertised.listeners", ":9092"),
            ("advertised.listeners", "proxy.local:http"),
            ("node.id", "-1"),
            ("corelog.cores", "many"),
            ("corelog.cpus", ""),
            ("corelog.cpus", "0-"),
            ("corelog.cpus", "8192"),
            ("corelog.cpus", "online"),
            ("auto.create.topics.enable", "yes"),
            ("auto.leader.rebalance.enable", "maybe"),
            ("leader.imbalance.check.interval.seconds", "0"),
            ("leader.imbalance.per.broker.percentage", "101"),
            ("num.partitions", "0"),
            ("num.partitions", "10001"),
            ("default.replication.factor", "0"),
            ("controller.listener", "nowhere"),
            ("controller.quorum.voters", "0@a:1,0@b:2"),
            ("corelog.peer.addresses", "1@nowhere"),
            ("broker.session.timeout.ms", "10"),
            ("socket.request.max.bytes", "0"),
            ("max.connections", "-5"),
            ("max.connections.per.ip", "-1"),
            ("max.connections.per.ip", "2147483648"),
            ("max.connections.per.ip.overrides", "localhost:3"),
            ("max.connections.per.ip.overrides", "10.0.0.2"),
            ("connections.max.idle.ms", "0"),
            ("connections.max.idle.ms", "ten minutes"),
            ("corelog.request.read.timeout.ms", "0"),
            ("corelog.request.read.timeout.ms", "-30000"),
        ] {
            let setting = by_name(name).unwrap_or_else(|| panic!("no setting {name}"));
            let mut config = BrokerConfig::new("/var/lib/corelog");
            let before = format!("{config:?}");
            assert!((setting.set.expect("settable"))(&mut config, text).is_err(), "{name}={text} accepted");
            assert_eq!(format!("{config:?}"), before, "{name}={text} changed the config");
        }
    }
}
