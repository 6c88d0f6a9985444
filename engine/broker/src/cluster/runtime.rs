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

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::config::ClusterConfig;
use super::controller::ControllerConfig;
use super::image::MetadataImage;
use super::membership::{Endpoint, Membership};
use super::quorum::{Quorum, QuorumConfig};
use super::records::NodeId;
use super::replicas::{plan, LocalChange, LocalTopic};
use corelog_engine::config::TopicConfig;
use corelog_engine::error::{EngineError, Result};
use corelog_engine::shard::EngineHandle;
use corelog_engine::types::TopicName;

/// The directory of the quorum's Raft log inside the data directory's meta directory.
pub const RAFT_DIR: &str = "raft";

pub struct ClusterRuntime {
    node_id: NodeId,
    quorum: Arc<Quorum>,
    membership: Option<Membership>,
    reconciler: Option<std::thread::JoinHandle<()>>,
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
        ..ControllerConfig::default()
    };
    config.seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    Ok(Arc::new(Quorum::start(config)?))
}

impl ClusterRuntime {
    /// Registers this broker as reachable at `host:port` and starts reconciling the
    /// engine with the metadata (topics created from `topic_defaults` plus their
    /// own configs).
    pub fn start(
        quorum: Arc<Quorum>,
        cluster: &ClusterConfig,
        endpoint: Endpoint,
        engine: EngineHandle,
        topic_defaults: TopicConfig,
    ) -> Result<ClusterRuntime> {
        let node_id = endpoint.node_id;
        let membership = Membership::start(quorum.clone(), endpoint, cluster.heartbeat_interval)
            .map_err(|e| EngineError::ThreadPanicked { thread: format!("membership ({e})") })?;
        let (stop, stopped) = flume::bounded::<()>(1);
        let images = quorum.subscribe();
        let reconciler = std::thread::Builder::new()
            .name(format!("corelog-reconcile-{node_id}"))
            .spawn(move || reconcile_loop(node_id, &images, &stopped, &engine, &topic_defaults))
            .map_err(|e| EngineError::ThreadPanicked { thread: format!("reconciler ({e})") })?;
        Ok(ClusterRuntime {
            node_id,
            quorum,
            membership: Some(membership),
            reconciler: Some(reconciler),
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
    }
}

impl Drop for ClusterRuntime {
    fn drop(&mut self) {
        self.membership.take();
        self.stop_reconciler();
    }
}

fn reconcile_loop(
    node_id: NodeId,
    images: &flume::Receiver<Arc<MetadataImage>>,
    stopped: &flume::Receiver<()>,
    engine: &EngineHandle,
    topic_defaults: &TopicConfig,
) {
    // The configs this reconciler applied to each local topic.
    let mut applied: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    loop {
        let image = flume::Selector::new().recv(images, |image| image.ok()).recv(stopped, |_| None).wait();
        let Some(mut image) = image else { return };
        // Only the latest image matters.
        while let Ok(newer) = images.try_recv() {
            image = newer;
        }
        if let Err(error) = reconcile(node_id, &image, engine, topic_defaults, &mut applied) {
            tracing::error!("broker {node_id}: applying metadata {}: {error}", image.applied_index);
        }
    }
}

/// Applies one image to the engine.
fn reconcile(
    node_id: NodeId,
    image: &MetadataImage,
    engine: &EngineHandle,
    topic_defaults: &TopicConfig,
    applied: &mut BTreeMap<String, BTreeMap<String, String>>,
) -> Result<()> {
    let local: Vec<LocalTopic> = engine
        .topics()
        .into_iter()
        .filter(|t| !crate::is_internal(&t.name))
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
