//! The system under test of one execution: brokers the run starts (behind fault
//! proxies when the workload has network faults), an external cluster, or the
//! embedded engine; and the driver that reaches it.
//!
//! A [`Target`] outlives every client of its execution: `execute` starts it
//! before the execution and stops it after, once the execution's drop has stopped
//! every producer, consumer and fault.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context as _};
use corelog_reports::model::BrokerCpus;

use super::links::PeerLinks;
use crate::driver::embedded::EmbeddedDriver;
use crate::driver::kafka::KafkaDriver;
use crate::driver::Driver;
use crate::proxy::FaultProxy;
use crate::run::cluster::{spread_cpus, BrokerSpec, LocalCluster, Placement};
use crate::workload::{self, Cluster, DriverKind, FaultKind, FaultScope, Workload};
use crate::UsageError;

/// What the system under test is, for one execution.
pub(super) enum Target {
    Local {
        cluster: Arc<Mutex<LocalCluster>>,
        driver: Arc<KafkaDriver>,
        proxies: BTreeMap<String, Arc<FaultProxy>>,
        /// The links between the brokers of a cluster, when the workload has network faults.
        links: Option<Arc<PeerLinks>>,
    },
    External(Arc<KafkaDriver>),
    Embedded(Arc<EmbeddedDriver>, Placement, tempfile::TempDir),
}

/// The name the embedded engine has where brokers are listed.
const EMBEDDED_NAME: &str = "engine";

/// Where the brokers the workload starts on this machine (or its embedded engine)
/// run their shards, in broker order: spread over `cluster.cpus`
/// ([`spread_cpus`]); none for an external cluster. A CPU that is not online is a
/// usage error: checked before anything starts.
pub(super) fn placements(workload: &Workload) -> anyhow::Result<Vec<Placement>> {
    let Cluster::Local(local) = &workload.cluster else { return Ok(Vec::new()) };
    let online = corelog_engine::cpus::online()?;
    let brokers = if workload.driver == DriverKind::Embedded { 1 } else { local.brokers as usize };
    spread_cpus(&local.cpus, &online, brokers, local.cores as usize)
        .map_err(|reason| UsageError(format!("cluster.cpus: {reason}")).into())
}

impl Target {
    /// Starts what the workload's cluster block asks for, with its scratch files
    /// under `run_dir/.scratch`.
    pub(super) fn start(workload: &Workload, run_dir: &Path) -> anyhow::Result<Target> {
        let scratch = run_dir.join(".scratch");
        let mut placements = placements(workload)?;
        match (&workload.driver, &workload.cluster) {
            (DriverKind::Embedded, Cluster::Local(_)) => {
                std::fs::create_dir_all(&scratch)?;
                let dir = tempfile::Builder::new().prefix("embedded-").tempdir_in(&scratch)?;
                let placement = placements.pop().context("the embedded engine's CPUs")?;
                let driver = EmbeddedDriver::start(dir.path(), placement.shards, placement.cpus.clone())?;
                Ok(Target::Embedded(Arc::new(driver), placement, dir))
            }
            (DriverKind::Embedded, Cluster::External(_)) => {
                bail!("the embedded driver runs the engine in-process; it cannot use `bootstrap`")
            }
            (DriverKind::Kafka, Cluster::Local(local)) => start_local(workload, local, placements, &scratch),
            (DriverKind::Kafka, Cluster::External(external)) => {
                Ok(Target::External(Arc::new(KafkaDriver::new(external.bootstrap.join(",")))))
            }
        }
    }

    pub(super) fn driver(&self) -> Arc<dyn Driver> {
        match self {
            Target::Local { driver, .. } | Target::External(driver) => driver.clone(),
            Target::Embedded(driver, ..) => driver.clone(),
        }
    }

    /// Where each broker (or the embedded engine) the run started runs its shards.
    pub(super) fn broker_cpus(&self) -> Vec<BrokerCpus> {
        let record = |broker: &str, shards: usize, cpus: String| BrokerCpus {
            broker: broker.to_string(),
            shards: u32::try_from(shards).unwrap_or(u32::MAX),
            cpus,
        };
        match self {
            Target::Local { cluster, .. } => {
                let cluster = cluster.lock().expect("cluster lock");
                cluster.brokers.iter().map(|b| record(&b.name, b.cores(), b.cpus().to_string())).collect()
            }
            Target::External(_) => Vec::new(),
            Target::Embedded(_, placement, _) => {
                vec![record(EMBEDDED_NAME, placement.shards, placement.cpus.to_string())]
            }
        }
    }

    pub(super) fn kafka(&self) -> Option<Arc<KafkaDriver>> {
        match self {
            Target::Local { driver, .. } | Target::External(driver) => Some(driver.clone()),
            Target::Embedded(..) => None,
        }
    }

    /// The brokers a fault can target by name.
    pub(super) fn broker_names(&self, workload: &Workload) -> Vec<String> {
        match (self, &workload.cluster) {
            (Target::Local { cluster, .. }, _) => {
                cluster.lock().expect("cluster lock").brokers.iter().map(|b| b.name.clone()).collect()
            }
            (_, Cluster::External(external)) => external.nodes.iter().map(|n| n.name.clone()).collect(),
            _ => Vec::new(),
        }
    }

    /// Stops what was started; everything holding a driver must be gone. The
    /// started brokers' logs are kept in `logs_dir`.
    pub(super) fn stop(self, logs_dir: &Path) -> anyhow::Result<()> {
        match self {
            Target::Local { cluster, proxies, links, .. } => {
                // Client proxies first: no client is left, and a proxy outliving its
                // broker would only report refused upstream connections. The links
                // between brokers last: brokers stopping hand their leaderships over.
                for proxy in proxies.into_values() {
                    if let Ok(proxy) = Arc::try_unwrap(proxy) {
                        proxy.shutdown();
                    }
                }
                let cluster = Arc::try_unwrap(cluster).map_err(|_| anyhow::anyhow!("the cluster is still in use"))?;
                let stopped = cluster.into_inner().expect("cluster lock").stop_keeping_logs(logs_dir);
                if let Some(links) = links.and_then(|links| Arc::try_unwrap(links).ok()) {
                    links.shutdown();
                }
                stopped
            }
            Target::External(_) => Ok(()),
            Target::Embedded(driver, _, _dir) => {
                Arc::try_unwrap(driver).map_err(|_| anyhow::anyhow!("the embedded engine is still in use"))?.shutdown()
            }
        }
    }
}

/// Whether the workload can inject a fault of this scope.
pub(super) fn has_faults_of(workload: &Workload, wanted: impl Fn(FaultKind) -> bool) -> bool {
    workload.faults.iter().any(|fault| wanted(fault.kind))
        || workload.nemesis.as_ref().is_some_and(|nemesis| nemesis.kinds.iter().any(|&kind| wanted(kind)))
}

/// Starts the local brokers as child processes (several: one cluster), each
/// behind a fault proxy when the workload has network faults.
fn start_local(
    workload: &Workload,
    local: &workload::LocalCluster,
    placements: Vec<Placement>,
    scratch: &Path,
) -> anyhow::Result<Target> {
    let mut config_yaml = String::from("topic_defaults:\n");
    config_yaml.push_str(&format!("  fsync.policy: \"{}\"\n", local.fsync));
    for (key, value) in &local.topic_config {
        config_yaml.push_str(&format!("  {key}: {value:?}\n"));
    }
    // Network faults need every client connection to cross a proxy: each
    // broker advertises its proxy's address. Without them, no proxy: it
    // would only add its overhead to the measurement.
    let with_proxies = has_faults_of(workload, |kind| matches!(kind.scope(), FaultScope::Network | FaultScope::Links));
    // And every link between brokers crosses one of its own, so that a fault can
    // cut brokers off from each other.
    let links = match with_proxies && local.brokers > 1 {
        true => Some(Arc::new(PeerLinks::start(&(0..local.brokers).collect::<Vec<_>>())?)),
        false => None,
    };
    let mut proxies = BTreeMap::new();
    let mut specs = Vec::new();
    for (id, placement) in (0..local.brokers).zip(placements) {
        let name = workload::local_broker_name(id);
        let mut advertised = None;
        if with_proxies {
            // The upstream is set once the broker has said where it listens.
            let unbound = "127.0.0.1:9".parse().expect("a socket address");
            let proxy = FaultProxy::start(&name, "127.0.0.1:0".parse().expect("a socket address"), unbound)
                .with_context(|| format!("starting the fault proxy of {name}"))?;
            advertised = Some(proxy.local_addr().to_string());
            proxies.insert(name.clone(), Arc::new(proxy));
        }
        specs.push(BrokerSpec {
            name,
            node_id: id,
            cores: placement.shards,
            cpus: placement.cpus,
            config_yaml: config_yaml.clone(),
            advertised,
        });
    }
    let program = std::env::current_exe().context("locating the corelog binary")?;
    let cluster = LocalCluster::start(&program, scratch, &specs, links.as_deref())?;
    let mut bootstrap = Vec::new();
    for broker in &cluster.brokers {
        match proxies.get(&broker.name) {
            Some(proxy) => {
                proxy.set_upstream(
                    broker.address.parse().with_context(|| format!("broker address {}", broker.address))?,
                );
                bootstrap.push(proxy.local_addr().to_string());
            }
            None => bootstrap.push(broker.address.clone()),
        }
    }
    let driver = Arc::new(KafkaDriver::new(bootstrap.join(",")));
    Ok(Target::Local { cluster: Arc::new(Mutex::new(cluster)), driver, proxies, links })
}
