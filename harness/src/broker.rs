//! `corelog broker`: flags, the optional YAML file, and the process lifecycle
//! (SIGTERM/SIGINT: stop accepting, finish in-flight requests, sync, exit 0; a
//! shard that panics: exit 1 at once, see [`watch_shards`]).
//!
//! Flags override the file; the file overrides the defaults. Unknown YAML fields and
//! bad values are rejected before anything starts, naming the file and line.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use anyhow::Context;
use corelog_broker::config::topic;
use corelog_broker::{Broker, BrokerConfig};
use serde::Deserialize;

use crate::UsageError;

#[derive(clap::Args, Debug)]
pub struct BrokerArgs {
    /// Directory holding the topics' logs (created if missing).
    #[arg(long)]
    data_dir: PathBuf,
    /// Address to listen on for Kafka clients (port 0: any free port).
    #[arg(long)]
    listen: Option<String>,
    /// host:port given to clients in Metadata (default: the listen address).
    #[arg(long)]
    advertised_listener: Option<String>,
    /// This broker's node id.
    #[arg(long)]
    node_id: Option<i32>,
    /// Shards (one pinned thread each); 0 means one per online CPU.
    #[arg(long)]
    cores: Option<usize>,
    /// YAML file with broker settings (see `BrokerFile`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Test-only: a Produce to this topic panics the shard that handles it.
    #[arg(long, hide = true)]
    test_panic_on_produce_to: Option<String>,
}

/// The `--config` file. Topic defaults use Kafka's topic config keys, plus
/// `fsync.policy` (`always`, `interval:<ms>`, `never`).
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
struct BrokerFile {
    node_id: Option<i32>,
    listen: Option<String>,
    advertised_listener: Option<String>,
    cores: Option<usize>,
    /// Create topics that clients ask Metadata about (default true).
    auto_create_topics: Option<bool>,
    /// Partitions of auto-created topics (default 1).
    default_partitions: Option<i32>,
    /// Largest request accepted, in bytes (default 100 MiB).
    max_request_bytes: Option<usize>,
    /// Connections served at once (default 10000).
    max_connections: Option<usize>,
    /// Kafka topic configs every new topic starts with, e.g. `segment.bytes: 1073741824`.
    topic_defaults: Option<BTreeMap<String, serde_yaml::Value>>,
}

pub fn run(args: BrokerArgs) -> anyhow::Result<()> {
    let mut config = build_config(&args)?;
    config.test_panic_on_produce_to = args.test_panic_on_produce_to.clone();
    let (failures, failed) = flume::bounded(1);
    config.engine.shard_failures = Some(failures);
    watch_shards(failed)?;
    let data_dir = config.engine.data_dir.clone();
    let signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
        .context("installing the SIGTERM/SIGINT handler")?;
    let broker = Broker::start(config).with_context(|| format!("starting the broker on {}", data_dir.display()))?;
    tracing::info!("corelog broker ready on {} (data in {})", broker.local_addr(), data_dir.display());
    let mut signals = signals;
    if let Some(signal) = signals.forever().next() {
        tracing::info!("signal {signal}: stopping (finishing in-flight requests, syncing)");
    }
    broker.shutdown().context("shutting down")?;
    tracing::info!("corelog broker stopped cleanly");
    Ok(())
}

/// Ends the process with exit status 1 as soon as a shard reports that it panicked
/// (from start-up on). The dead shard's partitions, listener and connections cannot
/// come back, and a broker serving the rest would be half alive: new connections
/// that the kernel hands to the dead listener hang. The other shards are not closed
/// cleanly either (one of them may wait on the dead shard forever); nothing
/// acknowledged is lost by that, since an append is acknowledged only once it is out
/// of the process, and the next start recovers the active segments as after a
/// crash.
fn watch_shards(failed: flume::Receiver<corelog_engine::shard::ShardFailure>) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("corelog-shard-watch".to_string())
        .spawn(move || {
            if let Ok(failure) = failed.recv() {
                tracing::error!(
                    "corelog broker stopping with exit status 1: shard {} panicked ({}); the other shards' \
                     partitions are recovered at the next start, as after a crash",
                    failure.shard,
                    failure.panic
                );
                std::process::exit(1);
            }
        })
        .context("starting the shard watch thread")?;
    Ok(())
}

fn build_config(args: &BrokerArgs) -> anyhow::Result<BrokerConfig> {
    let file = match &args.config {
        Some(path) => load_file(path)?,
        None => BrokerFile::default(),
    };
    let mut config = BrokerConfig::new(&args.data_dir);
    if let Some(listen) = args.listen.as_ref().or(file.listen.as_ref()) {
        config.listen = resolve(listen).map_err(|e| UsageError(format!("--listen {listen}: {e}")))?;
    }
    if let Some(advertised) = args.advertised_listener.as_ref().or(file.advertised_listener.as_ref()) {
        config.advertised_listener = Some(parse_host_port(advertised).map_err(UsageError)?);
    }
    if let Some(node_id) = args.node_id.or(file.node_id) {
        if node_id < 0 {
            return Err(UsageError(format!("node id {node_id} must be 0 or more")).into());
        }
        config.node_id = node_id;
    }
    if let Some(cores) = args.cores.or(file.cores) {
        config.engine.shard_count = cores;
    }
    if let Some(auto) = file.auto_create_topics {
        config.auto_create_topics = auto;
    }
    if let Some(partitions) = file.default_partitions {
        if !(1..=corelog_engine::config::PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
            return Err(UsageError(format!("default_partitions {partitions} is out of range")).into());
        }
        config.default_partitions = partitions;
    }
    if let Some(bytes) = file.max_request_bytes {
        config.request_bytes_max = bytes;
    }
    if let Some(connections) = file.max_connections {
        config.connections_max = connections;
    }
    let mut topic_defaults = Vec::new();
    for (key, value) in file.topic_defaults.iter().flatten() {
        let text = match value {
            serde_yaml::Value::String(s) => s.clone(),
            serde_yaml::Value::Number(n) => n.to_string(),
            serde_yaml::Value::Bool(b) => b.to_string(),
            other => return Err(UsageError(format!("topic_defaults.{key}: expected a scalar, got {other:?}")).into()),
        };
        topic_defaults.push((key.as_str(), text));
    }
    // All at once: contradicting keys (fsync.policy against flush.*) are refused.
    topic::set_all(&mut config.topic_defaults, topic_defaults.iter().map(|(key, value)| (*key, value.as_str())))
        .map_err(|e| UsageError(format!("topic_defaults: {e}")))?;
    Ok(config)
}

fn load_file(path: &Path) -> anyhow::Result<BrokerFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_yaml::from_str(&text).map_err(|error| {
        let place = error.location().map_or(String::new(), |l| format!(":{}:{}", l.line(), l.column()));
        UsageError(format!("{}{place}: {error}", path.display())).into()
    })
}

fn resolve(address: &str) -> Result<SocketAddr, String> {
    address.to_socket_addrs().map_err(|e| e.to_string())?.next().ok_or_else(|| "resolves to no address".to_string())
}

fn parse_host_port(text: &str) -> Result<(String, u16), String> {
    let (host, port) = text.rsplit_once(':').ok_or_else(|| format!("advertised listener {text:?} is not host:port"))?;
    let port = port.parse::<u16>().map_err(|_| format!("advertised listener {text:?}: bad port"))?;
    if host.is_empty() {
        return Err(format!("advertised listener {text:?}: empty host"));
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(config: Option<PathBuf>) -> BrokerArgs {
        BrokerArgs {
            data_dir: "/tmp/x".into(),
            listen: None,
            advertised_listener: None,
            node_id: None,
            cores: None,
            config,
            test_panic_on_produce_to: None,
        }
    }

    #[test]
    fn unknown_fields_and_bad_values_are_rejected_with_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("broker.yaml");
        std::fs::write(&path, "node_id: 1\nlisten_on: 127.0.0.1:9092\n").expect("write");
        let error = build_config(&args(Some(path.clone()))).expect_err("unknown field").to_string();
        assert!(error.contains("broker.yaml:2") && error.contains("listen_on"), "{error}");

        std::fs::write(&path, "topic_defaults:\n  fsync.policy: sometimes\n").expect("write");
        let error = build_config(&args(Some(path.clone()))).expect_err("bad value").to_string();
        assert!(error.contains("fsync.policy"), "{error}");

        std::fs::write(&path, "default_partitions: 0\n").expect("write");
        assert!(build_config(&args(Some(path))).is_err());
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("broker.yaml");
        std::fs::write(&path, "node_id: 3\nlisten: 127.0.0.1:9999\ncores: 1\ntopic_defaults:\n  segment.bytes: 1048576\n  fsync.policy: always\n")
            .expect("write");
        let mut with_flags = args(Some(path));
        with_flags.listen = Some("127.0.0.1:0".to_string());
        let config = build_config(&with_flags).expect("valid");
        assert_eq!(config.node_id, 3);
        assert_eq!(config.listen.port(), 0);
        assert_eq!(config.engine.shard_count, 1);
        assert_eq!(config.topic_defaults.segment_bytes, 1 << 20);
        assert_eq!(config.topic_defaults.durability, corelog_engine::Durability::Always);
    }
}
