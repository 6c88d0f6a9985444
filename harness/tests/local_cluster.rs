//! Clusters the harness starts itself (`run/cluster.rs`, as `corelog run` starts
//! them for `cluster.brokers` > 1): three `corelog broker` processes that elect a
//! controller and are all unfenced before the cluster counts as ready; the active
//! controller, killed by name, gives way to another, and started again it comes
//! back with its node id, client address, CPUs and data directory, unfenced. Each
//! broker runs its one shard on its own CPU, spread over the online ones.

use std::path::Path;
use std::time::{Duration, Instant};

use corelog_engine::cpus::{self, ShardCpus};
use corelog_harness::run::cluster::{spread_cpus, BrokerSpec, LocalCluster};

/// Every wait of this test is bounded by this.
const BOUND: Duration = Duration::from_secs(60);

fn specs() -> Vec<BrokerSpec> {
    let online = cpus::online().expect("the online CPUs are listed");
    let placements = spread_cpus(&ShardCpus::Online, &online, 3, 1).expect("online CPUs");
    (0..3)
        .zip(placements)
        .map(|(node_id, placement)| BrokerSpec {
            name: format!("broker-{node_id}"),
            node_id,
            cores: placement.shards,
            cpus: placement.cpus,
            config_yaml: String::new(),
            advertised: None,
        })
        .collect()
}

/// The line a broker's engine logs at start about its shards' CPUs.
fn pinned_line(cpu: usize) -> String {
    format!("1 shard(s) pinned to CPUs {cpu} (shard i on CPU: {cpu})")
}

#[test]
fn a_started_cluster_is_ready_when_every_broker_is_unfenced_and_a_crashed_broker_rejoins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let mut cluster = LocalCluster::start(Path::new(env!("CARGO_BIN_EXE_corelog")), dir.path(), &specs(), None)
        .expect("the cluster starts");
    assert!(started.elapsed() < BOUND, "ready after {:?}", started.elapsed());
    assert!(cluster.is_quorum());
    for broker in &cluster.brokers {
        assert!(broker.is_running() && broker.is_unfenced(), "{} is not unfenced", broker.name);
    }
    let online = cpus::online().expect("the online CPUs are listed");
    for (index, broker) in cluster.brokers.iter().enumerate() {
        let cpu = online.cpus()[index % online.cpus().len()];
        assert_eq!(broker.cpus().to_string(), cpu.to_string(), "{}", broker.name);
        let log = std::fs::read_to_string(broker.log_path()).expect("the broker's log");
        assert!(log.contains(&pinned_line(cpu)), "{} is not on CPU {cpu}:\n{log}", broker.name);
    }
    let controller = cluster.active_controller().expect("an active controller").name.clone();

    // The active controller crashes: another broker takes over.
    let broker = cluster.broker_mut(&controller).expect("the controller is a broker");
    let address = broker.address.clone();
    let log_path = broker.log_path().to_path_buf();
    broker.kill().expect("SIGKILL");
    assert!(!broker.is_unfenced(), "a killed broker is not unfenced");
    let crashed = Instant::now();
    loop {
        match cluster.active_controller() {
            Some(other) if other.name != controller => break,
            _ => {
                assert!(crashed.elapsed() < BOUND, "no new active controller after {controller} crashed");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    // Started again: the same node, address and data, unfenced.
    let broker = cluster.broker_mut(&controller).expect("the crashed broker");
    broker.start(&address).expect("the crashed broker starts again");
    assert_eq!(broker.address, address, "the restart keeps the client address");
    cluster.wait_unfenced(std::slice::from_ref(&controller), BOUND).expect("the restarted broker is unfenced");
    assert!(crashed.elapsed() < BOUND, "back after {:?}", crashed.elapsed());
    for broker in &cluster.brokers {
        assert!(broker.is_unfenced(), "{} is not unfenced after the restart", broker.name);
    }
    let log = std::fs::read_to_string(&log_path).expect("the broker's log");
    let node_id = &controller["broker-".len()..];
    let ready: Vec<&str> = log.lines().filter(|line| line.contains("corelog broker ready on ")).collect();
    assert_eq!(ready.len(), 2, "started twice: {ready:?}");
    let data_dir = |line: &str| line.split(" (data in ").nth(1).map(str::to_string);
    assert_eq!(data_dir(ready[0]), data_dir(ready[1]), "the same data directory");
    let cpu = online.cpus()[node_id.parse::<usize>().expect("a node id") % online.cpus().len()];
    assert_eq!(log.matches(&pinned_line(cpu)).count(), 2, "on CPU {cpu} at both starts");
    let unfenced = format!("broker {node_id} is unfenced");
    assert_eq!(log.lines().filter(|line| line.contains(&unfenced)).count(), 2, "node {node_id} unfenced twice");

    cluster.stop().expect("every broker stops cleanly");
}
