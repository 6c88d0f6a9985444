//! How a broker joins a cluster: its controller listener, the quorum's voters as
//! Kafka writes `controller.quorum.voters`, and the cluster id its data directory
//! belongs to.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::records::NodeId;
use corelog_engine::error::EngineError;
use corelog_engine::storage::dma::replace_file_durably;

/// The file in the data directory's `corelog+meta/` that names its cluster.
pub const CLUSTER_ID_FILE: &str = "cluster-id";

/// A broker's part in a cluster (absent: a single broker, as before clusters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Where this node's quorum peers reach it (`controller.listener`).
    pub controller_listen: SocketAddr,
    /// Every voter and its controller listener, this node among them.
    pub voters: Vec<(NodeId, String)>,
    /// The cluster this node belongs to: required on the first start (every node
    /// the same, as `kafka-storage format --cluster-id`), checked on later ones.
    pub cluster_id: Option<String>,
    /// A broker silent for longer is fenced (`broker.session.timeout.ms`).
    pub session_timeout: Duration,
    /// How often a broker heartbeats (`broker.heartbeat.interval.ms`).
    pub heartbeat_interval: Duration,
    /// How often leadership goes back to preferred replicas; `None`: never
    /// (`auto.leader.rebalance.enable`, `leader.imbalance.check.interval.seconds`).
    pub leader_imbalance_check_interval: Option<Duration>,
    /// `leader.imbalance.per.broker.percentage`.
    pub leader_imbalance_percentage: u64,
    /// A follower not caught up for longer leaves the ISR (`replica.lag.time.max.ms`).
    pub replica_lag_time_max: Duration,
    /// Where this broker reaches another broker's client listener to fetch as its
    /// follower, instead of the address that broker registered
    /// (`corelog.peer.addresses`): how a test harness routes replication through
    /// a fault proxy per pair of brokers.
    pub peer_addresses: BTreeMap<NodeId, String>,
}

impl ClusterConfig {
    pub fn new(controller_listen: SocketAddr, voters: Vec<(NodeId, String)>) -> ClusterConfig {
        ClusterConfig {
            controller_listen,
            voters,
            cluster_id: None,
            session_timeout: Duration::from_millis(9_000),
            heartbeat_interval: Duration::from_millis(2_000),
            replica_lag_time_max: Duration::from_millis(30_000),
            leader_imbalance_check_interval: Some(Duration::from_secs(300)),
            leader_imbalance_percentage: 10,
            peer_addresses: BTreeMap::new(),
        }
    }
}

/// The cluster settings of a broker as its flags and YAML file give them
/// (see [`crate::config::broker::BROKER_SETTINGS`]); [`ClusterSettings::resolve`]
/// checks them together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub controller_listener: Option<SocketAddr>,
    pub voters: Vec<(NodeId, String)>,
    pub cluster_id: Option<String>,
    pub session_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub replica_lag_time_max_ms: u64,
    pub default_replication_factor: i32,
    /// `auto.leader.rebalance.enable`.
    pub auto_leader_rebalance: bool,
    /// `leader.imbalance.check.interval.seconds`.
    pub leader_imbalance_check_interval_s: u64,
    /// `leader.imbalance.per.broker.percentage`.
    pub leader_imbalance_percentage: u64,
    /// `corelog.peer.addresses`.
    pub peer_addresses: Vec<(NodeId, String)>,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            controller_listener: None,
            voters: Vec::new(),
            cluster_id: None,
            session_timeout_ms: 9_000,
            heartbeat_interval_ms: 2_000,
            replica_lag_time_max_ms: 30_000,
            default_replication_factor: 1,
            auto_leader_rebalance: true,
            leader_imbalance_check_interval_s: 300,
            leader_imbalance_percentage: 10,
            peer_addresses: Vec::new(),
        }
    }
}

impl ClusterSettings {
    /// The cluster node `node_id` is part of (`None`: no voters, a single broker),
    /// or why the settings do not make one.
    pub fn resolve(&self, node_id: NodeId) -> Result<Option<ClusterConfig>, String> {
        if self.voters.is_empty() {
            if self.controller_listener.is_some() {
                return Err("--controller-listener needs --controller-quorum-voters".to_string());
            }
            if !self.peer_addresses.is_empty() {
                return Err(
                    "--peer-addresses needs --controller-quorum-voters: a single broker has no peers".to_string()
                );
            }
            return Ok(None);
        }
        let Some(listen) = self.controller_listener else {
            return Err(
                "--controller-quorum-voters needs --controller-listener (this node's quorum address)".to_string()
            );
        };
        if !self.voters.iter().any(|(id, _)| *id == node_id) {
            let voters = self.voters.iter().map(|(id, a)| format!("{id}@{a}")).collect::<Vec<_>>().join(",");
            return Err(format!("node {node_id} is not among the voters {voters}: give it its own --node-id"));
        }
        let own = self.voters.iter().find(|(id, _)| *id == node_id).map(|(_, address)| address.as_str());
        if let Some(own) = own.filter(|own| !listens_at(listen, own)) {
            return Err(format!(
                "node {node_id}'s voter entry is {node_id}@{own}, but its controller listener is {listen}: the \
                 other voters would reach another node there; give each node its own --node-id, listening where \
                 its voter entry says"
            ));
        }
        if let Some((id, _)) = self.peer_addresses.iter().find(|(id, _)| *id == node_id) {
            return Err(format!("corelog.peer.addresses names node {id}, this node: it never fetches from itself"));
        }
        if self.heartbeat_interval_ms >= self.session_timeout_ms {
            return Err(format!(
                "broker_heartbeat_interval_ms {} must be below broker_session_timeout_ms {}",
                self.heartbeat_interval_ms, self.session_timeout_ms
            ));
        }
        Ok(Some(ClusterConfig {
            controller_listen: listen,
            voters: self.voters.clone(),
            cluster_id: self.cluster_id.clone(),
            session_timeout: Duration::from_millis(self.session_timeout_ms),
            heartbeat_interval: Duration::from_millis(self.heartbeat_interval_ms),
            replica_lag_time_max: Duration::from_millis(self.replica_lag_time_max_ms),
            leader_imbalance_check_interval: self
                .auto_leader_rebalance
                .then(|| Duration::from_secs(self.leader_imbalance_check_interval_s)),
            leader_imbalance_percentage: self.leader_imbalance_percentage,
            peer_addresses: self.peer_addresses.iter().cloned().collect(),
        }))
    }
}

/// Whether a node listening on `listen` is the one a voter entry's `host:port`
/// names: the same port, and the same address unless the listener takes every
/// address or the entry names a host (which only the network resolves).
fn listens_at(listen: SocketAddr, entry: &str) -> bool {
    let Some((host, port)) = entry.rsplit_once(':') else { return false };
    if port.parse::<u16>().ok() != Some(listen.port()) {
        return false;
    }
    match host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>() {
        Ok(ip) => listen.ip().is_unspecified() || ip == listen.ip(),
        Err(_) => true,
    }
}

/// Parses `controller.quorum.voters`: `id@host:port` entries separated by commas,
/// each id once.
pub fn parse_voters(text: &str) -> Result<Vec<(NodeId, String)>, String> {
    parse_node_addresses(text, "voter", "the voters")
}

/// Parses `corelog.peer.addresses`, written as the voters are (empty: none).
pub fn parse_peer_addresses(text: &str) -> Result<Vec<(NodeId, String)>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    parse_node_addresses(text, "peer address", "corelog.peer.addresses")
}

/// `id@host:port` entries separated by commas, each id once; `what` names an
/// entry in errors, `list` the whole.
fn parse_node_addresses(text: &str, what: &str, list: &str) -> Result<Vec<(NodeId, String)>, String> {
    let mut nodes = Vec::new();
    let mut ids = BTreeSet::new();
    for entry in text.split(',').map(str::trim) {
        let (id, address) = entry.split_once('@').ok_or_else(|| format!("{what} {entry:?} is not id@host:port"))?;
        let id: NodeId =
            id.parse().ok().filter(|id| *id >= 0).ok_or_else(|| format!("{what} {entry:?}: bad node id"))?;
        let (host, port) = address.rsplit_once(':').ok_or_else(|| format!("{what} {entry:?}: no port"))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(format!("{what} {entry:?}: expected host:port"));
        }
        if !ids.insert(id) {
            return Err(format!("node id {id} is named twice in {list}"));
        }
        nodes.push((id, address.to_string()));
    }
    Ok(nodes)
}

/// The cluster id of the data directory whose meta directory is `meta_dir`: the one
/// it holds, checked against `wanted` when both exist; `wanted` stored durably on
/// the first start; an error when a cluster node has neither.
pub fn cluster_id(meta_dir: &Path, wanted: Option<&str>, node_id: NodeId) -> Result<String, EngineError> {
    let path = meta_dir.join(CLUSTER_ID_FILE);
    let stored = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text.trim().to_string()).filter(|t| !t.is_empty()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(EngineError::io("read", &path, error)),
    };
    match (stored, wanted) {
        (Some(stored), Some(wanted)) if stored != wanted => Err(EngineError::DataDirectory(format!(
            "{} belongs to cluster {stored}, not {wanted}: refusing to start node {node_id} on another \
             cluster's data (use an empty data directory to join {wanted})",
            meta_dir.parent().unwrap_or(meta_dir).display()
        ))),
        (Some(stored), _) => Ok(stored),
        (None, Some(wanted)) => {
            validate_cluster_id(wanted).map_err(EngineError::DataDirectory)?;
            replace_file_durably(&path, wanted.as_bytes())?;
            Ok(wanted.to_string())
        }
        (None, None) => Err(EngineError::DataDirectory(format!(
            "node {node_id} starts a cluster node on an empty data directory without --cluster-id: give every \
             node of the cluster the same id (any 1-64 letters, digits, '-' or '_')"
        ))),
    }
}

fn validate_cluster_id(id: &str) -> Result<(), String> {
    let valid = (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    match valid {
        true => Ok(()),
        false => Err(format!("cluster id {id:?}: expected 1-64 letters, digits, '-' or '_'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voters_are_read_as_kafka_writes_them_and_bad_lists_are_refused() {
        let voters = parse_voters("0@127.0.0.1:19093, 1@localhost:19094,2@[::1]:19095").expect("valid");
        assert_eq!(
            voters,
            vec![
                (0, "127.0.0.1:19093".to_string()),
                (1, "localhost:19094".to_string()),
                (2, "[::1]:19095".to_string())
            ]
        );
        for (bad, why) in [
            ("0@127.0.0.1:19093,0@127.0.0.1:19094", "named twice"),
            ("127.0.0.1:19093", "not id@host:port"),
            ("x@127.0.0.1:19093", "bad node id"),
            ("-1@127.0.0.1:19093", "bad node id"),
            ("0@127.0.0.1", "no port"),
            ("0@:19093", "host:port"),
            ("0@h:99999", "host:port"),
            ("", "not id@host:port"),
        ] {
            let error = parse_voters(bad).expect_err(bad);
            assert!(error.contains(why), "{bad}: {error}");
        }
    }

    #[test]
    fn cluster_settings_are_checked_together() {
        let single = ClusterSettings::default();
        assert_eq!(single.resolve(0), Ok(None));
        // Node 1's controller listener, as its voter entry says.
        let listener = Some("127.0.0.1:19094".parse().expect("address"));
        let lonely_listener = ClusterSettings { controller_listener: listener, ..ClusterSettings::default() };
        assert!(lonely_listener.resolve(0).is_err());
        let voters = parse_voters("0@127.0.0.1:19093,1@127.0.0.1:19094").expect("voters");
        let no_listener = ClusterSettings { voters: voters.clone(), ..ClusterSettings::default() };
        assert!(no_listener.resolve(0).expect_err("no listener").contains("--controller-listener"));
        let cluster = ClusterSettings { voters, controller_listener: listener, ..ClusterSettings::default() };
        let error = cluster.resolve(5).expect_err("not a voter");
        assert!(error.contains("node 5 is not among the voters 0@127.0.0.1:19093,1@127.0.0.1:19094"), "{error}");
        let resolved = cluster.resolve(1).expect("valid").expect("a cluster");
        assert_eq!((resolved.voters.len(), resolved.session_timeout), (2, Duration::from_secs(9)));
        let peers = parse_peer_addresses("0@127.0.0.1:29093").expect("peers");
        let routed = ClusterSettings { peer_addresses: peers.clone(), ..cluster.clone() };
        let resolved = routed.resolve(1).expect("valid").expect("a cluster");
        assert_eq!(resolved.peer_addresses.get(&0).map(String::as_str), Some("127.0.0.1:29093"));
        let to_itself =
            ClusterSettings { peer_addresses: parse_peer_addresses("1@127.0.0.1:29094").unwrap(), ..cluster.clone() };
        let error = to_itself.resolve(1).expect_err("its own address");
        assert!(error.contains("names node 1, this node"), "{error}");
        let lonely_peers = ClusterSettings { peer_addresses: peers, ..ClusterSettings::default() };
        assert!(lonely_peers.resolve(0).expect_err("no voters").contains("--peer-addresses"));
        let elsewhere =
            ClusterSettings { controller_listener: Some("127.0.0.1:19095".parse().unwrap()), ..cluster.clone() };
        let error = elsewhere.resolve(1).expect_err("not where its voter entry says");
        assert!(error.contains("node 1's voter entry is 1@127.0.0.1:19094, but its controller listener is"), "{error}");
        assert!(elsewhere.resolve(0).is_err(), "port 19093 is node 0's, not 19095");
        let any = ClusterSettings { controller_listener: Some("0.0.0.0:19094".parse().unwrap()), ..cluster.clone() };
        assert!(any.resolve(1).is_ok(), "a listener on every address answers at the entry's");
        let named = parse_voters("0@controller-0.local:19093,1@controller-1.local:19094").expect("voters");
        let named = ClusterSettings { voters: named, ..cluster.clone() };
        assert!(named.resolve(1).is_ok(), "a host name is the network's to resolve");
        let slow_heartbeat = ClusterSettings { heartbeat_interval_ms: 9_000, ..cluster };
        assert!(slow_heartbeat.resolve(1).is_err());
    }

    #[test]
    fn the_cluster_id_is_stored_on_the_first_start_and_another_one_is_refused_later() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = dir.path().join("corelog+meta");
        std::fs::create_dir_all(&meta).expect("meta dir");
        let error = cluster_id(&meta, None, 1).expect_err("no id anywhere").to_string();
        assert!(error.contains("--cluster-id"), "{error}");
        assert!(cluster_id(&meta, Some("has space"), 1).is_err());
        assert_eq!(cluster_id(&meta, Some("prod-1"), 1).expect("first start"), "prod-1");
        assert_eq!(cluster_id(&meta, None, 1).expect("from the directory"), "prod-1");
        assert_eq!(cluster_id(&meta, Some("prod-1"), 1).expect("same id"), "prod-1");
        let error = cluster_id(&meta, Some("staging"), 1).expect_err("another cluster").to_string();
        assert!(error.contains("belongs to cluster prod-1, not staging"), "{error}");
        assert_eq!(std::fs::read_to_string(meta.join(CLUSTER_ID_FILE)).expect("file"), "prod-1", "not overwritten");
    }
}
