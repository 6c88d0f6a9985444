//! A broker's cluster machinery while it runs: its quorum node, its membership,
//! and the reconciler that keeps the local engine's topics what the metadata says
//! this node holds ([`super::replicas::plan`]).
//!
//! Start-up order: the quorum node first (it opens the Raft log and rebuilds the
//! image from its snapshot), then the engine and the Kafka listeners, then
//! [`ClusterRuntime::start`] (the broker registers with the address clients reach
//! it at, and the reconciler applies the image to the engine). Shutdown is the
//! reverse, starting with a controlled shutdown so leadership moves away before the
//! listeners close.
//!
//! Roles. After each image's topic changes, the reconciler gives every local
//! partition the role the image names ([`super::replicas::role`]): a leader's
//! partition is put in replicated mode, gets its leader epoch at the log end and a
//! [`LeaderSlot`](super::replica_manager::LeaderSlot) in the [`ReplicaManager`]; a
//! follower's is put in replicated mode and fetched from its leader
//! ([`Fetchers`]). The order is the one that keeps two writers off one log: the
//! leaderships that end are resigned and the fetchers are told what they no longer
//! follow before any new leadership starts; [`Fetchers::assign`] returns without
//! waiting on a leader's socket, its fence keeping any fetcher from writing what it
//! no longer follows from then on, so a stopped or cut-off old leader does not delay
//! following the new one or leading. The ISR thread
//! ([`ReplicaManager::run_isr_loop`]) runs beside the reconciler.
//!
//! The offsets topic (`__consumer_offsets`) is reconciled like any topic; in
//! addition, each leadership of one of its partitions that starts or ends is told
//! to the group coordinators ([`Coordinators::offsets_leadership`]), which load the
//! partition's groups from the replicated log or unload them: a group's coordinator
//! is its offsets partition's leader, as in Kafka.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::config::ClusterConfig;
use super::controller::ControllerConfig;
use super::fetcher::{Assignment, Fetchers};
use super::image::{MetadataImage, PartitionImage};
use super::membership::{Endpoint, Membership};
use super::quorum::{Quorum, QuorumConfig};
use super::records::NodeId;
use super::replica_manager::ReplicaManager;
use super::replicas::{plan, role, LocalChange, LocalTopic, Role};
use crate::group::{Coordinators, OFFSETS_TOPIC};
use corelog_engine::config::TopicConfig;
use corelog_engine::error::{EngineError, Result};
use corelog_engine::shard::EngineHandle;
use corelog_engine::types::{LeaderEpoch, PartitionId, TopicName, TopicPartition};

/// How often the reconciler looks for its registration while catching up.
const CATCH_UP_POLL: Duration = Duration::from_millis(50);

/// How soon a reconciliation that failed part-way is tried again without a new image.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// The directory of the quorum's Raft log inside the data directory's meta directory.
pub const RAFT_DIR: &str = "raft";

pub struct ClusterRuntime {
    node_id: NodeId,
    quorum: Arc<Quorum>,
    membership: Option<Membership>,
    reconciler: Option<std::thread::JoinHandle<()>>,
    isr: Option<std::thread::JoinHandle<()>>,
    stop: Option<flume::Sender<()>>,
}

/// Starts this node's quorum member (before the engine).
pub fn start_quorum(
    node_id: NodeId,
    cluster: &ClusterConfig,
    cluster_id: String,
    meta_dir: &Path,
) -> Result<Arc<Quorum>> {
    let mut config = QuorumConfig::new(
        node_id,
        cluster.voters.clone(),
        cluster.controller_listen,
        cluster_id,
        meta_dir.join(RAFT_DIR),
    );
    config.controller = ControllerConfig {
        session_timeout_ms: cluster.session_timeout.as_millis() as u64,
        leader_imbalance_check_interval_ms: cluster.leader_imbalance_check_interval.map(|i| i.as_millis() as u64),
        leader_imbalance_percentage: cluster.leader_imbalance_percentage,
        ..ControllerConfig::default()
    };
    config.seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    Ok(Arc::new(Quorum::start(config)?))
}

impl ClusterRuntime {
    /// Registers this broker as reachable at `host:port` and starts reconciling the
    /// engine with the metadata (topics created from `topic_defaults` plus their
    /// own configs, and each partition's role, kept in `replicas`).
    pub fn start(
        quorum: Arc<Quorum>,
        cluster: &ClusterConfig,
        endpoint: Endpoint,
        engine: EngineHandle,
        topic_defaults: TopicConfig,
        replicas: Arc<ReplicaManager>,
        coordinators: Coordinators,
    ) -> Result<ClusterRuntime> {
        let node_id = endpoint.node_id;
        let membership = Membership::start(quorum.clone(), endpoint, cluster.heartbeat_interval)
            .map_err(|e| EngineError::ThreadPanicked { thread: format!("membership ({e})") })?;
        let (stop, stopped) = flume::bounded::<()>(1);
        let images = quorum.subscribe();
        let isr_engine = engine.clone();
        let isr_replicas = replicas.clone();
        let isr_stopped = stopped.clone();
        let isr = std::thread::Builder::new()
            .name(format!("corelog-isr-{node_id}"))
            .spawn(move || isr_replicas.run_isr_loop(&isr_engine, &isr_stopped))
            .map_err(|e| EngineError::ThreadPanicked { thread: format!("ISR thread ({e})") })?;
        let replayed_at = quorum.startup_commit();
        let registered = membership.epoch_reader();
        let peer_addresses = cluster.peer_addresses.clone();
        let reconciler = std::thread::Builder::new()
            .name(format!("corelog-reconcile-{node_id}"))
            .spawn(move || {
                let fetchers = Fetchers::new(node_id, engine.clone());
                let mut roles =
                    Roles { node_id, replicas, fetchers, coordinators, peer_addresses, applied: BTreeMap::new() };
                let Some(first) = caught_up(node_id, &images, &stopped, replayed_at, &registered) else { return };
                reconcile_loop(node_id, first, &images, &stopped, &engine, &topic_defaults, &mut roles);
            })
            .map_err(|e| EngineError::ThreadPanicked { thread: format!("reconciler ({e})") })?;
        Ok(ClusterRuntime {
            node_id,
            quorum,
            membership: Some(membership),
            reconciler: Some(reconciler),
            isr: Some(isr),
            stop: Some(stop),
        })
    }

    pub fn quorum(&self) -> &Arc<Quorum> {
        &self.quorum
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.quorum.image()
    }

    /// Hands this broker's leaderships over (waiting up to `timeout`), then stops
    /// the membership and the reconciler; the quorum node stops when the last
    /// reference to it goes.
    pub fn shutdown(mut self, timeout: Duration) {
        if let Some(membership) = self.membership.take() {
            if !membership.controlled_shutdown(timeout) {
                tracing::warn!(
                    "broker {}: no controller confirmed the controlled shutdown within {timeout:?}; \
                     its session expires instead",
                    self.node_id
                );
            }
        }
        self.stop_reconciler();
    }

    fn stop_reconciler(&mut self) {
        self.stop.take();
        if let Some(reconciler) = self.reconciler.take() {
            if reconciler.join().is_err() {
                tracing::error!("the reconciler thread panicked");
            }
        }
        if let Some(isr) = self.isr.take() {
            if isr.join().is_err() {
                tracing::error!("the ISR thread panicked");
            }
        }
    }
}

impl Drop for ClusterRuntime {
    fn drop(&mut self) {
        self.membership.take();
        self.stop_reconciler();
    }
}

/// Waits until the quorum's image has caught up enough to act on: replayed up to
/// `commit` (the commit index its log held at start: everything this node applied
/// before it stopped) and holding this broker's current registration (so every
/// change the cluster made while it was away, such as a new leader at a higher
/// epoch, as Kafka's brokers wait for their registration record). An older image
/// would miss topics the engine holds, and have them deleted, or name this broker
/// leader where it no longer is. Returns that image; `None` when stopped first.
fn caught_up(
    node_id: NodeId,
    images: &flume::Receiver<Arc<MetadataImage>>,
    stopped: &flume::Receiver<()>,
    commit: u64,
    registered: &dyn Fn() -> Option<u64>,
) -> Option<Arc<MetadataImage>> {
    enum Wake {
        Image(Arc<MetadataImage>),
        Stop,
    }
    let mut latest: Option<Arc<MetadataImage>> = None;
    loop {
        let selector = flume::Selector::new()
            .recv(images, |image| image.map_or(Wake::Stop, Wake::Image))
            .recv(stopped, |_| Wake::Stop);
        // The registration's epoch arrives by itself, not with an image: look again soon.
        match selector.wait_timeout(CATCH_UP_POLL) {
            Ok(Wake::Image(image)) => latest = Some(image),
            Ok(Wake::Stop) => return None,
            Err(_) => {}
        }
        let Some(image) = &latest else { continue };
        let epoch = registered();
        let registered_here = epoch.is_some_and(|e| image.brokers.get(&node_id).is_some_and(|b| b.epoch >= e));
        if image.applied_index >= commit && registered_here {
            tracing::info!(
                "broker {node_id}: metadata caught up at {} (committed at start: {commit}, registered at {})",
                image.applied_index,
                epoch.unwrap_or_default()
            );
            return Some(image.clone());
        }
    }
}

fn reconcile_loop(
    node_id: NodeId,
    first: Arc<MetadataImage>,
    images: &flume::Receiver<Arc<MetadataImage>>,
    stopped: &flume::Receiver<()>,
    engine: &EngineHandle,
    topic_defaults: &TopicConfig,
    roles: &mut Roles,
) {
    // The configs this reconciler applied to each local topic.
    let mut applied: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut latest: Option<Arc<MetadataImage>> = None;
    let mut retry = false;
    let mut first = Some(first);
    loop {
        let selector = flume::Selector::new().recv(images, |image| image.ok().map(Some)).recv(stopped, |_| None);
        let next = match first.take() {
            Some(first) => Some(Some(first)),
            None if retry => selector.wait_timeout(RETRY_INTERVAL).unwrap_or(Some(None)),
            None => selector.wait(),
        };
        let mut image = match next {
            Some(Some(image)) => image,
            // Nothing new: the last image again.
            Some(None) => match latest.clone() {
                Some(image) => image,
                None => continue,
            },
            None => return,
        };
        // Only the latest image matters.
        while let Ok(newer) = images.try_recv() {
            image = newer;
        }
        retry = false;
        if let Err(error) = reconcile(node_id, &image, engine, topic_defaults, &mut applied) {
            tracing::error!("broker {node_id}: applying metadata {}: {error}", image.applied_index);
            retry = true;
        }
        retry |= !roles.apply(&image, engine, topic_defaults);
        latest = Some(image);
    }
}

/// The role this reconciler gave each local partition, and what follows from it.
struct Roles {
    node_id: NodeId,
    replicas: Arc<ReplicaManager>,
    fetchers: Fetchers,
    /// Told when a leadership of an offsets partition starts or ends.
    coordinators: Coordinators,
    /// Where to fetch from a leader instead of its registered listener.
    peer_addresses: BTreeMap<NodeId, String>,
    applied: BTreeMap<TopicPartition, (Role, PartitionImage)>,
}

impl Roles {
    /// Tells the group coordinators when `partition` is one of the offsets topic's.
    fn offsets_leadership(&self, partition: &TopicPartition, image: &MetadataImage, epoch: Option<LeaderEpoch>) {
        if partition.topic.as_str() != OFFSETS_TOPIC {
            return;
        }
        let partitions = image.topic(OFFSETS_TOPIC).map_or(0, |t| t.partitions.len() as i32);
        self.coordinators.offsets_leadership(partition.partition, partitions.max(1), epoch);
    }

    /// Gives every local partition its role in `image` (see the module doc for the
    /// order). Returns false when some partition could not take it (tried again).
    fn apply(&mut self, image: &MetadataImage, engine: &EngineHandle, topic_defaults: &TopicConfig) -> bool {
        let node_id = self.node_id;
        let (wanted, mut complete) = wanted_roles(node_id, image, engine, topic_defaults);
        // 1. Leaderships that end (or move to a new epoch) end first.
        for (partition, (role, _)) in &self.applied {
            let same = matches!((role, wanted.get(partition)), (Role::Leader { leader_epoch: old }, Some((Role::Leader { leader_epoch }, _, _))) if old == leader_epoch);
            if matches!(role, Role::Leader { .. }) && !same {
                self.replicas.resign(partition);
                self.offsets_leadership(partition, image, None);
            }
        }
        self.applied.retain(|partition, _| wanted.contains_key(partition));
        // 2. New followers are replicated before their fetcher writes to them.
        let mut fetches: BTreeMap<NodeId, Assignment> = BTreeMap::new();
        for (partition, (role, state, _)) in &wanted {
            let Role::Follower { leader, leader_epoch } = *role else { continue };
            let was_follower = matches!(self.applied.get(partition), Some((Role::Follower { .. }, _)));
            if !was_follower {
                if let Err(error) = futures_lite::future::block_on(engine.set_replicated(partition, true)) {
                    tracing::error!("broker {node_id}: following {partition}: {error}");
                    complete = false;
                    self.applied.remove(partition);
                    continue;
                }
            }
            let Some(broker) = image.brokers.get(&leader) else {
                complete = false;
                continue;
            };
            let assignment = fetches.entry(leader).or_insert_with(|| Assignment {
                address: self
                    .peer_addresses
                    .get(&leader)
                    .cloned()
                    .unwrap_or_else(|| format!("{}:{}", broker.host, broker.port)),
                partitions: BTreeMap::new(),
            });
            assignment.partitions.insert(partition.clone(), leader_epoch);
            self.applied.insert(partition.clone(), (*role, state.clone()));
        }
        // 3. Fetchers stop fetching what this node no longer follows.
        self.fetchers.assign(fetches);
        // 4. Leaderships start, or take their partition's new state.
        for (partition, (role, state, min_insync)) in &wanted {
            match *role {
                Role::Leader { leader_epoch } => {
                    let same = matches!(self.applied.get(partition), Some((Role::Leader { leader_epoch: old }, _)) if *old == leader_epoch);
                    if same {
                        let update = self.replicas.update(engine, partition, state, image, *min_insync);
                        futures_lite::future::block_on(update);
                    } else if let Err(error) =
                        futures_lite::future::block_on(self.lead(engine, partition, state, image, *min_insync))
                    {
                        tracing::error!("broker {node_id}: leading {partition} in epoch {leader_epoch}: {error}");
                        complete = false;
                        self.applied.remove(partition);
                        continue;
                    }
                    if !same {
                        self.offsets_leadership(partition, image, Some(LeaderEpoch(leader_epoch)));
                    }
                    self.applied.insert(partition.clone(), (*role, state.clone()));
                }
                Role::Orphan | Role::None => {
                    self.applied.insert(partition.clone(), (*role, state.clone()));
                }
                Role::Follower { .. } => {}
            }
        }
        complete
    }

    async fn lead(
        &self,
        engine: &EngineHandle,
        partition: &TopicPartition,
        state: &PartitionImage,
        image: &MetadataImage,
        min_insync: usize,
    ) -> Result<()> {
        engine.set_replicated(partition, true).await?;
        engine.assign_leader_epoch(partition, LeaderEpoch(state.leader_epoch)).await?;
        let stats = engine.stats(partition).await?;
        let durability = engine.topic(&partition.topic).map(|t| t.config.durability);
        let log_end = match durability {
            Some(corelog_engine::config::Durability::Always) => stats.durable_offset,
            _ => stats.written_offset,
        };
        tracing::info!(
            "broker {}: leading {partition} in epoch {} from log end {log_end}, high watermark {}",
            self.node_id,
            state.leader_epoch,
            stats.high_watermark
        );
        self.replicas.lead(partition.clone(), state, image, min_insync, log_end, stats.high_watermark);
        Ok(())
    }
}

/// Partitions with their role, state and `min.insync.replicas`.
type Wanted = BTreeMap<TopicPartition, (Role, PartitionImage, usize)>;

/// Each partition the image places on this node whose local topic is the image's,
/// with its role, state and `min.insync.replicas`; and whether every such
/// partition's topic exists here yet.
fn wanted_roles(
    node_id: NodeId,
    image: &MetadataImage,
    engine: &EngineHandle,
    topic_defaults: &TopicConfig,
) -> (Wanted, bool) {
    let mut complete = true;
    let mut wanted = BTreeMap::new();
    for (topic, index, state) in image.partitions() {
        if !state.replicas.contains(&node_id) {
            continue;
        }
        let Ok(name) = TopicName::new(topic.name.clone()) else { continue };
        if engine.topic(&name).map(|t| t.id) != Some(topic.id) {
            complete = false;
            continue;
        }
        let min_insync = topic_config(topic_defaults, &topic.configs)
            .map_or(1, |config| crate::config::topic::min_insync_replicas(&config) as usize);
        let partition = TopicPartition::new(name, PartitionId(index));
        wanted.insert(partition, (role(image, node_id, &topic.name, index), state.clone(), min_insync));
    }
    (wanted, complete)
}

/// Applies one image to the engine.
fn reconcile(
    node_id: NodeId,
    image: &MetadataImage,
    engine: &EngineHandle,
    topic_defaults: &TopicConfig,
    applied: &mut BTreeMap<String, BTreeMap<String, String>>,
) -> Result<()> {
    // The offsets topic too: a cluster's is the controller's, with its id (an older
    // broker-local one is replaced).
    let local: Vec<LocalTopic> = engine
        .topics()
        .into_iter()
        .map(|t| LocalTopic {
            configs: applied.get(t.name.as_str()).cloned().unwrap_or_default(),
            name: t.name.to_string(),
            id: t.id,
            partition_count: t.partition_count,
        })
        .collect();
    for change in plan(image, node_id, &local) {
        tracing::info!("broker {node_id}: metadata {}: {change:?}", image.applied_index);
        futures_lite::future::block_on(apply(change, engine, topic_defaults, applied))?;
    }
    Ok(())
}

async fn apply(
    change: LocalChange,
    engine: &EngineHandle,
    topic_defaults: &TopicConfig,
    applied: &mut BTreeMap<String, BTreeMap<String, String>>,
) -> Result<()> {
    match change {
        LocalChange::Delete { name } => {
            applied.remove(&name);
            engine.delete_topic(&TopicName::new(name)?).await
        }
        LocalChange::Create { name, id, partition_count, configs } => {
            let config = topic_config(topic_defaults, &configs)?;
            engine.create_topic_with_id(TopicName::new(name.clone())?, id, partition_count, config).await?;
            applied.insert(name, configs);
            Ok(())
        }
        LocalChange::Grow { name, partition_count } => {
            engine.create_partitions(&TopicName::new(name)?, partition_count).await.map(|_| ())
        }
        LocalChange::Reconfigure { name, configs } => {
            let config = topic_config(topic_defaults, &configs)?;
            engine.set_topic_config(&TopicName::new(name.clone())?, config).await?;
            applied.insert(name, configs);
            Ok(())
        }
    }
}

/// The broker's topic defaults with `configs` set over them.
fn topic_config(defaults: &TopicConfig, configs: &BTreeMap<String, String>) -> Result<TopicConfig> {
    let mut config = defaults.clone();
    crate::config::topic::set_all(&mut config, configs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    Ok(config)
}
