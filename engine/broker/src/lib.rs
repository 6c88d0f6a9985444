//! # corelog-broker
//!
//! The Kafka broker: one node that real Kafka clients use unchanged, over the log of
//! `corelog-engine`. It holds the wire protocol ([`kafka`]: codec, error codes, one
//! handler per API) and the broker around it (connections, consumer groups, producer
//! ids, the listener), replication ([`cluster`]) and transactions ([`txn`], a single
//! broker's for now), their state machines sans IO like the group coordinator's.
//! The engine below knows nothing of the Kafka wire format: it sees RecordBatch
//! bytes and typed ids.
//!
//! [`Broker::start`] starts the engine with a listener service on every shard. Each
//! shard binds the same address with SO_REUSEPORT, so the kernel spreads incoming
//! connections over the shards; a connection is served entirely by the shard that
//! accepted it ([`connection`]), and the handlers reach partitions of other shards
//! through the engine's queues. [`Broker::shutdown`] stops accepting, lets every
//! connection finish the requests it has read, then closes the engine (synced, with
//! clean-shutdown markers).
//!
//! Shared state ([`BrokerState`]) is read-only after start-up except for atomics:
//! there are no locks on the request path, but one in a cluster: a led partition's
//! leader state ([`cluster::replica_manager`]), which follower fetches and
//! producers reach from every shard under a short `Mutex`.
//!
//! ## What the broker keeps to itself
//!
//! - Its data directory: the engine locks it ([`corelog_engine::data_dir`]), so a second
//!   broker on the same directory exits with an error naming the first one's pid.
//! - Its address: SO_REUSEPORT is shared by this broker's shards only; a second
//!   broker on the same address exits with an error naming it ([`listener`]).
//! - Its files: `cluster-id` and `producer-id-block` live in the data directory's
//!   [`corelog_engine::data_dir::META_DIR`], apart from every topic's directory.
//! - Its internal topics [`group::OFFSETS_TOPIC`] and [`txn::TRANSACTION_STATE_TOPIC`]:
//!   clients may read them, but their Produce, DeleteRecords, DeleteTopics,
//!   CreatePartitions and (Incremental) AlterConfigs on them are refused (see
//!   [`is_internal`] and the handlers).

// One exception, `kafka::frame` (a `BufMut` forwarding to a `BytesMut`).
#![deny(unsafe_code)]

pub mod cluster;
pub mod config;
pub mod connection;
pub mod connection_quotas;
pub mod group;
pub mod kafka;
pub mod listener;
pub mod producer_ids;
pub mod shard_queues;
pub mod txn;

use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use corelog_engine::config::TopicConfig;
use corelog_engine::data_dir::DataDir;
use corelog_engine::error::{EngineError, Result};
use corelog_engine::shard::{Engine, EngineConfig, EngineHandle, ShardService};
use corelog_engine::storage::dma::replace_file_durably;
use corelog_engine::types::{ShardId, TopicName};

/// Kafka's default `fetch.max.bytes`: 55 MiB.
pub const FETCH_BYTES_MAX_DEFAULT: usize = 55 << 20;

/// How a broker is started. The `corelog broker` flags and YAML file end up here
/// through [`config::broker::BROKER_SETTINGS`], which names every field a flag or
/// the file sets.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: i32,
    /// Address to listen on; port 0 picks a free port (see [`Broker::local_addr`]).
    pub listen: SocketAddr,
    /// `host:port` given to clients in Metadata; by default the listen address.
    pub advertised_listener: Option<(String, u16)>,
    /// Create topics that Metadata requests name and that do not exist.
    pub auto_create_topics: bool,
    /// Partition count of auto-created topics and of CreateTopics with -1.
    pub default_partitions: i32,
    /// Topic configs that new topics start from (every broker key included, see
    /// [`config::topic::built_in`]).
    pub topic_defaults: TopicConfig,
    /// Largest request frame accepted (Kafka's `socket.request.max.bytes`); a larger
    /// one closes the connection.
    pub request_bytes_max: usize,
    /// Most record bytes one Fetch response carries (Kafka's `fetch.max.bytes`): a
    /// request's `max_bytes` is capped by it, except that the first batch of the
    /// first non-empty partition is returned whole whatever its size (KIP-74).
    pub fetch_bytes_max: usize,
    /// Connections served at once, over all shards; more are closed at accept.
    pub connections_max: usize,
    /// Connections served at once from one IP address (Kafka's
    /// `max.connections.per.ip`); more from it are closed at accept.
    pub connections_max_per_ip: usize,
    /// `connections_max_per_ip` of particular addresses (Kafka's
    /// `max.connections.per.ip.overrides`).
    pub connections_max_per_ip_overrides: std::collections::BTreeMap<std::net::IpAddr, usize>,
    /// A connection with no request in flight that receives nothing for this long is
    /// closed (Kafka's `connections.max.idle.ms`).
    pub connections_max_idle_ms: u64,
    /// Once a request frame's first byte arrived, the whole frame must arrive within
    /// this, or the connection is closed (`corelog.request.read.timeout.ms`).
    pub request_read_timeout_ms: u64,
    /// Requests of one connection being handled at once (pipelining depth).
    pub inflight_requests_max: usize,
    pub engine: EngineConfig,
    /// The cluster this broker is a node of, if its settings name quorum voters.
    pub cluster: cluster::config::ClusterSettings,
    /// Consumer groups and `__consumer_offsets` ([`group::GroupConfig`]).
    pub groups: group::GroupConfig,
    /// Transactions and `__transaction_state` ([`txn::TxnConfig`]); a single broker only.
    pub transactions: txn::TxnConfig,
    /// Test-only (`corelog broker --test-panic-on-produce-to`, hidden): a Produce
    /// request naming this topic panics the shard that handles it, so tests can
    /// check what a shard's death does to the process.
    pub test_panic_on_produce_to: Option<String>,
}

impl BrokerConfig {
    pub fn new(data_dir: impl Into<std::path::PathBuf>) -> BrokerConfig {
        BrokerConfig {
            node_id: 0,
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            advertised_listener: None,
            auto_create_topics: true,
            default_partitions: 1,
            topic_defaults: config::topic::built_in(),
            request_bytes_max: 100 << 20,
            fetch_bytes_max: FETCH_BYTES_MAX_DEFAULT,
            connections_max: 10_000,
            connections_max_per_ip: i32::MAX as usize,
            connections_max_per_ip_overrides: std::collections::BTreeMap::new(),
            connections_max_idle_ms: 600_000,
            request_read_timeout_ms: 30_000,
            inflight_requests_max: 64,
            engine: EngineConfig::new(data_dir),
            cluster: cluster::config::ClusterSettings::default(),
            groups: group::GroupConfig::default(),
            transactions: txn::TxnConfig::default(),
            test_panic_on_produce_to: None,
        }
    }

    /// The most connections `ip` may have open at once.
    pub fn connections_max_per_ip_for(&self, ip: std::net::IpAddr) -> usize {
        self.connections_max_per_ip_overrides.get(&ip).copied().unwrap_or(self.connections_max_per_ip)
    }
}

/// What every shard's handlers share. Read-only after start but for atomics.
pub struct BrokerState {
    pub config: BrokerConfig,
    pub cluster_id: String,
    pub producer_ids: producer_ids::ProducerIdAllocator,
    /// A cluster node's producer ids, in blocks from the active controller.
    pub cluster_producer_ids: producer_ids::ClusterProducerIds,
    /// The port all shards listen on (resolved when the configured one is 0).
    listen_port: AtomicU16,
    /// Connections open, in all and per IP address.
    pub connection_quotas: connection_quotas::ConnectionQuotas,
    /// What the connection bounds did.
    pub connection_stats: connection_quotas::ConnectionStats,
}

impl BrokerState {
    /// The `(host, port)` clients are told to connect to.
    pub fn advertised(&self) -> (String, u16) {
        match &self.config.advertised_listener {
            Some((host, port)) => (host.clone(), *port),
            None => (self.config.listen.ip().to_string(), self.listen_port.load(Ordering::Relaxed)),
        }
    }

    /// The address the broker listens on, with the port resolved once it listens.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.config.listen.ip(), self.listen_port.load(Ordering::Acquire))
    }
}

/// What a handler running on one shard has at hand.
pub struct ShardContext {
    pub broker: Arc<BrokerState>,
    pub engine: EngineHandle,
    pub shard: ShardId,
    /// Reaches the group coordinator of any group (on whichever shard owns it).
    pub groups: group::GroupRouter,
    /// Reaches the transaction coordinator of any transactional id; `None` on a
    /// cluster node, which does not serve transactions yet.
    pub transactions: Option<txn::router::TxnRouter>,
    /// The cluster's metadata as this shard sees it; `None` for a single broker.
    pub cluster: Option<Rc<cluster::view::ClusterView>>,
    /// The partitions this node leads (shared by every shard); `None` for a single broker.
    pub replicas: Option<Arc<cluster::replica_manager::ReplicaManager>>,
}

/// Resolves once the broker stops. The broker never sends on its stop channel; it
/// drops the sender, and the disconnection is the signal.
pub(crate) async fn stop_requested(stop: &flume::Receiver<()>) {
    while stop.recv_async().await.is_ok() {}
}

/// Whether `topic` is one of the broker's internal topics (Kafka's
/// `Topic.isInternal`: [`group::OFFSETS_TOPIC`] and [`txn::TRANSACTION_STATE_TOPIC`]).
/// The broker writes and replays them itself, so clients may read them but not
/// write, truncate, delete, grow or reconfigure them.
pub fn is_internal(topic: &TopicName) -> bool {
    is_internal_name(topic.as_str())
}

/// [`is_internal`] of a name not yet checked as a topic name (a metadata image's).
pub fn is_internal_name(topic: &str) -> bool {
    topic == group::OFFSETS_TOPIC || topic == txn::TRANSACTION_STATE_TOPIC
}

/// A running broker.
pub struct Broker {
    /// The cluster machinery of a cluster node (dropped before the engine).
    cluster: Option<cluster::runtime::ClusterRuntime>,
    engine: Option<Engine>,
    state: Arc<BrokerState>,
    /// Dropping the sender tells every shard's listener to stop.
    stop: Option<flume::Sender<()>>,
    /// One message per shard whose listener and connections have all finished.
    stopped: flume::Receiver<()>,
}

const CLUSTER_ID_FILE: &str = "cluster-id";

impl Broker {
    /// Locks the data directory, checks that no other process serves the address,
    /// then starts the engine (recovering the data directory) and a listener on
    /// every shard.
    pub fn start(config: BrokerConfig) -> Result<Broker> {
        // Before anything starts (the quorum starts before the engine, which checks again).
        let online = corelog_engine::cpus::online()?;
        config.engine.cpus.resolve(&online).map_err(|reason| EngineError::InvalidConfig {
            key: "corelog.cpus".to_string(),
            value: config.engine.cpus.to_string(),
            reason,
        })?;
        let data_dir = DataDir::open(&config.engine.data_dir)?;
        listener::ensure_no_other_listener(config.listen)?;
        let membership = ClusterMembership::start(&config, &data_dir)?;
        let state = Arc::new(BrokerState {
            listen_port: AtomicU16::new(config.listen.port()),
            config: config.clone(),
            cluster_id: membership.cluster_id.clone(),
            producer_ids: producer_ids::ProducerIdAllocator::open(&data_dir.meta_dir())?,
            cluster_producer_ids: producer_ids::ClusterProducerIds::default(),
            connection_quotas: connection_quotas::ConnectionQuotas::default(),
            connection_stats: connection_quotas::ConnectionStats::default(),
        });
        let (stop, stop_seen) = flume::bounded::<()>(1);
        let (stopped_tx, stopped) = flume::unbounded::<()>();
        let bind_error: Arc<Mutex<Option<String>>> = Arc::default();
        let coordinators = group::Coordinators::new(config.groups.clone(), membership.quorum.is_some());
        let transactions =
            membership.quorum.is_none().then(|| txn::router::TxnCoordinators::new(config.transactions.clone()));
        let service = ListenerService {
            state: state.clone(),
            coordinators: coordinators.clone(),
            transactions: transactions.clone(),
            bind_error: bind_error.clone(),
            quorum: membership.quorum.clone(),
            replicas: membership.replicas.clone(),
            stop_seen,
            stopped: stopped_tx,
        }
        .into_service();
        let engine = Engine::start_in(data_dir, config.engine.clone(), Some(service))?;
        if let Some(message) = bind_error.lock().expect("bind error slot").take() {
            return Err(abandon_start(engine, stop, EngineError::Startup(message)));
        }
        // Every shard listens now. Another broker that started at the same instant
        // passed the check above too; one of the two checks sees the other.
        let bound = SocketAddr::new(config.listen.ip(), state.listen_port.load(Ordering::Acquire));
        if let Err(error) = listener::ensure_no_other_listener(bound) {
            return Err(abandon_start(engine, stop, error));
        }
        // Committed offsets and groups are replayed before the broker reports ready;
        // group requests that arrive meanwhile wait in the coordinators' queues.
        if let Err(error) = futures_lite::future::block_on(coordinators.load(&engine.handle())) {
            return Err(abandon_start(engine, stop, error));
        }
        // So are the transactions of `__transaction_state` (a single broker's).
        if let Some(transactions) = &transactions {
            if let Err(error) = futures_lite::future::block_on(transactions.load(&engine.handle())) {
                return Err(abandon_start(engine, stop, error));
            }
        }
        let cluster = match membership.join(&state, &engine, coordinators) {
            Ok(cluster) => cluster,
            Err(error) => return Err(abandon_start(engine, stop, error)),
        };
        Ok(Broker { cluster, engine: Some(engine), state, stop: Some(stop), stopped })
    }

    /// The address the broker listens on (with the port resolved).
    pub fn local_addr(&self) -> SocketAddr {
        SocketAddr::new(self.state.config.listen.ip(), self.state.listen_port.load(Ordering::Acquire))
    }

    pub fn handle(&self) -> Option<EngineHandle> {
        self.engine.as_ref().map(Engine::handle)
    }

    /// The cluster machinery of a cluster node (`None` for a single broker).
    pub fn cluster(&self) -> Option<&cluster::runtime::ClusterRuntime> {
        self.cluster.as_ref()
    }

    /// What the connection bounds did since the broker started (also logged when it
    /// stops).
    pub fn connection_stats(&self) -> connection_quotas::ConnectionStatsSnapshot {
        self.state.connection_stats.snapshot()
    }

    /// Stops accepting, waits for in-flight requests to be answered, then closes the
    /// engine (every partition synced and marked clean).
    pub fn shutdown(mut self) -> Result<()> {
        // Leadership moves to other brokers before this one stops serving.
        if let Some(cluster) = self.cluster.take() {
            cluster.shutdown(std::time::Duration::from_secs(10));
        }
        self.stop.take();
        let Some(handle) = self.handle() else { return Ok(()) };
        // One message per live shard; a shard that panicked never sends one, so the
        // count is taken again while waiting.
        let mut listeners_stopped = 0;
        while listeners_stopped < handle.shard_count() - handle.failed_shards().len() {
            match self.stopped.recv_timeout(std::time::Duration::from_millis(100)) {
                Ok(()) => listeners_stopped += 1,
                Err(flume::RecvTimeoutError::Timeout) => {}
                Err(flume::RecvTimeoutError::Disconnected) => break,
            }
        }
        tracing::info!("connection stats: {}", self.connection_stats());
        match self.engine.take() {
            Some(engine) => engine.shutdown(),
            None => Ok(()),
        }
    }
}

/// A cluster node's start before its engine: the settings checked, the data
/// directory's cluster id, and the quorum member (started first: the metadata it
/// holds says what the engine's topics must be). A single broker has no quorum.
struct ClusterMembership {
    cluster: Option<cluster::config::ClusterConfig>,
    cluster_id: String,
    quorum: Option<Arc<cluster::quorum::Quorum>>,
    /// The partitions this node leads, shared by every shard's handlers.
    replicas: Option<Arc<cluster::replica_manager::ReplicaManager>>,
}

impl ClusterMembership {
    fn start(config: &BrokerConfig, data_dir: &DataDir) -> Result<ClusterMembership> {
        let meta_dir = data_dir.meta_dir();
        let cluster = config.cluster.resolve(config.node_id).map_err(|reason| EngineError::InvalidConfig {
            key: "controller.quorum.voters".to_string(),
            value: config.cluster.voters.iter().map(|(id, a)| format!("{id}@{a}")).collect::<Vec<_>>().join(","),
            reason,
        })?;
        let Some(cluster) = cluster else {
            return Ok(ClusterMembership {
                cluster: None,
                cluster_id: load_or_create_cluster_id(&meta_dir)?,
                quorum: None,
                replicas: None,
            });
        };
        let cluster_id = cluster::config::cluster_id(&meta_dir, cluster.cluster_id.as_deref(), config.node_id)?;
        let quorum = cluster::runtime::start_quorum(config.node_id, &cluster, cluster_id.clone(), &meta_dir)?;
        let replicas = Arc::new(cluster::replica_manager::ReplicaManager::new(
            config.node_id,
            quorum.clone(),
            cluster.replica_lag_time_max,
        ));
        Ok(ClusterMembership { cluster: Some(cluster), cluster_id, quorum: Some(quorum), replicas: Some(replicas) })
    }

    /// Once the listeners are up: registers with the address clients reach this
    /// broker at, and starts applying the metadata to the engine.
    fn join(
        self,
        state: &BrokerState,
        engine: &Engine,
        coordinators: group::Coordinators,
    ) -> Result<Option<cluster::runtime::ClusterRuntime>> {
        let (Some(quorum), Some(cluster), Some(replicas)) = (self.quorum, self.cluster, self.replicas) else {
            return Ok(None);
        };
        let (host, port) = state.advertised();
        let endpoint = cluster::membership::Endpoint { node_id: state.config.node_id, host, port };
        let topic_defaults = state.config.topic_defaults.clone();
        let engine = engine.handle();
        cluster::runtime::ClusterRuntime::start(
            quorum,
            &cluster,
            endpoint,
            engine,
            topic_defaults,
            replicas,
            coordinators,
        )
        .map(Some)
    }
}

/// What every shard's listener service is made of (see [`ListenerService::into_service`]).
struct ListenerService {
    state: Arc<BrokerState>,
    coordinators: group::Coordinators,
    /// `None` on a cluster node.
    transactions: Option<txn::router::TxnCoordinators>,
    /// The first shard's bind failure, reported by [`Broker::start`].
    bind_error: Arc<Mutex<Option<String>>>,
    quorum: Option<Arc<cluster::quorum::Quorum>>,
    replicas: Option<Arc<cluster::replica_manager::ReplicaManager>>,
    stop_seen: flume::Receiver<()>,
    /// One message per shard whose listener and connections have finished.
    stopped: flume::Sender<()>,
}

impl ListenerService {
    /// The service the engine starts on every shard: it binds the Kafka listener,
    /// starts the shard's group coordinator and cluster view, and serves
    /// connections until the broker stops.
    fn into_service(self) -> ShardService {
        Arc::new(move |shard, engine| {
            // Runs on the shard's thread, shard after shard: shard 0 binds first and
            // fixes the port that the others then share.
            let state = self.state.clone();
            let port = state.listen_port.load(Ordering::Acquire);
            let address = SocketAddr::new(state.config.listen.ip(), port);
            let listener = match glommio::net::TcpListener::bind(address) {
                Ok(listener) => listener,
                Err(error) => {
                    let message = format!("listening on {address}: {error}");
                    self.bind_error.lock().expect("bind error slot").get_or_insert(message);
                    return Box::pin(async {});
                }
            };
            if let Ok(local) = listener.local_addr() {
                state.listen_port.store(local.port(), Ordering::Release);
                tracing::info!("shard {shard}: listening on {local} (Kafka protocol)");
            }
            let groups =
                self.coordinators.start_on_shard(shard, engine.clone(), self.replicas.clone(), self.stop_seen.clone());
            let node_id = state.config.node_id;
            let cluster = self.quorum.clone().map(|quorum| cluster::view::ClusterView::follow(node_id, quorum));
            // A cluster's groups map to the partitions of the cluster's offsets topic.
            let groups = match &cluster {
                Some(view) => {
                    let view = view.clone();
                    groups.in_cluster(Rc::new(move || view.offsets_partitions()))
                }
                None => groups,
            };
            let replicas = self.replicas.clone();
            let transactions = self.transactions.as_ref().map(|coordinators| {
                let producer_ids = txn::runtime::BrokerProducerIds(state.clone());
                coordinators.start_on_shard(shard, engine.clone(), producer_ids, groups.clone(), self.stop_seen.clone())
            });
            let context =
                Rc::new(ShardContext { broker: state, engine, shard, groups, transactions, cluster, replicas });
            let stop_seen = self.stop_seen.clone();
            let stopped = self.stopped.clone();
            Box::pin(async move {
                connection::accept_loop(listener, context, stop_seen).await;
                if stopped.send(()).is_err() {
                    tracing::debug!("shard {shard}: nobody waits for the listener to stop");
                }
            })
        })
    }
}

/// Stops the listeners (dropping `stop`) and the engine of a start that failed with
/// `error`, and returns `error`.
fn abandon_start(engine: Engine, stop: flume::Sender<()>, error: EngineError) -> EngineError {
    drop(stop);
    if let Err(shutdown_error) = engine.shutdown() {
        tracing::error!("closing the engine after a failed start: {shutdown_error}");
    }
    error
}

/// The cluster id in `meta_dir` (the data directory's `corelog+meta`), made and
/// stored durably on the first start.
fn load_or_create_cluster_id(meta_dir: &Path) -> Result<String> {
    let path = meta_dir.join(CLUSTER_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(EngineError::io("read", &path, error)),
    }
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let id = uuid::Uuid::from_u64_pair(nanos, std::process::id() as u64 ^ 0x636f_7265_6c6f_6700).simple().to_string();
    replace_file_durably(&path, id.as_bytes())?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kafkas_internal_topics_are_internal() {
        for name in [group::OFFSETS_TOPIC, txn::TRANSACTION_STATE_TOPIC] {
            assert!(is_internal_name(name), "{name}");
            assert!(is_internal(&TopicName::new(name).expect("valid")), "{name}");
        }
        // Kafka's metadata log is not a topic clients see; the others are the
        // internal topics of Kafka's tools, ordinary topics to the broker.
        for name in ["__cluster_metadata", "__consumer_offsets_", "_schemas", "connect-offsets", "__internal"] {
            assert!(!is_internal_name(name), "{name}");
        }
    }
}
