//! Brokers the harness starts itself: `corelog broker` child processes on loopback,
//! each with a temporary data directory that is removed when the [`LocalCluster`]
//! is dropped.
//!
//! One broker runs alone, as `corelog broker` does without a quorum. Several form
//! a cluster: every broker is a voter of the metadata quorum (`--node-id <i>`, one
//! `--controller-quorum-voters` list, one generated `--cluster-id`), with a broker
//! session short enough for chaos runs ([`BROKER_SESSION_TIMEOUT_MS`]). The
//! controller listeners' ports must be in the voters list before any broker starts,
//! so they are picked free (bound to port 0 together, then released) and, should
//! another process take one in between, the whole start is tried again on new ports
//! and empty data directories ([`START_ATTEMPTS`]). Client listeners need no such
//! guess: each broker binds port 0 at its first start and says where in its ready
//! line.
//!
//! A broker is up when it prints its "ready on ADDR" line; a cluster is ready when
//! every broker is up and unfenced: registered with the active controller and
//! caught up with the metadata, so it may lead partitions. Until Metadata lists the
//! whole cluster, "unfenced" is read from each broker's log (`broker N is
//! unfenced`), as is the active controller (`node N: active controller (term T)`).
//! A broker restarted after a crash or stop keeps its node id, ports and data
//! directory. Stopping is SIGTERM (the broker finishes in-flight requests, hands
//! its leaderships over and syncs), then SIGKILL if it has not exited in time.
//!
//! Brokers on one machine would all pin their shard 0 to the first CPU: each is
//! given its own CPUs instead (`--cpus`), spread over the machine's by
//! [`spread_cpus`].

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use corelog_engine::cpus::{CpuList, ShardCpus};

use super::links::PeerLinks;

/// How long a broker may take to print its ready line, and a cluster to have every
/// broker unfenced after that.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a broker may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Starts of a cluster tried before giving up, each on newly picked controller ports.
const START_ATTEMPTS: u32 = 3;
const READY_MARKER: &str = "corelog broker ready on ";
/// A cluster broker's session: the active controller fences a broker (it leads
/// nothing) once its heartbeats have been missing this long. Short, so that a
/// crashed leader's partitions move within a chaos run (Kafka's default is 9 s).
pub const BROKER_SESSION_TIMEOUT_MS: u64 = 3_000;
/// How often a cluster broker heartbeats to the active controller.
pub const BROKER_HEARTBEAT_INTERVAL_MS: u64 = 500;

/// How to start each broker.
#[derive(Debug, Clone)]
pub struct BrokerSpec {
    pub name: String,
    /// The broker's node id in a cluster (unused by a broker that runs alone).
    pub node_id: u32,
    /// Shards (0: one per CPU of `cpus`).
    pub cores: usize,
    /// The CPUs its shards are pinned to (`--cpus`; none given for
    /// [`ShardCpus::Online`], the broker's default).
    pub cpus: ShardCpus,
    /// Lines of the broker's YAML `--config` file (a cluster's session settings are added).
    pub config_yaml: String,
    /// The address the broker tells clients to use (its fault proxy), if not its own.
    pub advertised: Option<String>,
}

/// What a broker's log has said since its process started.
#[derive(Debug, Default)]
struct LogState {
    unfenced: bool,
    /// The Raft term in which it became the active controller, while it is.
    controller_term: Option<u64>,
}

pub struct LocalBroker {
    pub name: String,
    pub node_id: u32,
    /// Its client listener, `host:port`, once it has started.
    pub address: String,
    program: PathBuf,
    data_dir: PathBuf,
    config_path: PathBuf,
    cores: usize,
    cpus: ShardCpus,
    advertised: Option<String>,
    /// A cluster member's flags (node id, controller listener, voters, cluster id);
    /// empty for a broker that runs alone.
    cluster_args: Vec<String>,
    log_path: PathBuf,
    /// Replaced at every start, so that it describes the running process only.
    log_state: Arc<Mutex<LogState>>,
    child: Option<Child>,
}

pub struct LocalCluster {
    pub brokers: Vec<LocalBroker>,
    /// Several brokers, forming one metadata quorum.
    quorum: bool,
    /// Holds the brokers' data directories; removed on drop.
    _root: tempfile::TempDir,
}

impl LocalCluster {
    /// Starts every broker as a `program broker` process (the `corelog` binary),
    /// under a temporary directory inside `parent`; with several brokers, as one
    /// cluster, ready once every broker is unfenced.
    ///
    /// With `links`, the brokers reach each other through them (see
    /// [`super::links`]): each is told its own voters list and peer addresses.
    pub fn start(
        program: &Path,
        parent: &Path,
        specs: &[BrokerSpec],
        links: Option<&PeerLinks>,
    ) -> anyhow::Result<LocalCluster> {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        // CORELOG_KEEP_BROKER_DIRS keeps the brokers' data directories and logs after
        // the run, for looking into a failed verdict.
        let root = tempfile::Builder::new()
            .prefix("corelog-cluster-")
            .disable_cleanup(std::env::var_os("CORELOG_KEEP_BROKER_DIRS").is_some())
            .tempdir_in(parent)
            .context("creating the cluster directory")?;
        if specs.len() <= 1 {
            let mut brokers = Vec::with_capacity(specs.len());
            for spec in specs {
                let mut broker = LocalBroker::new(program, root.path(), spec, Vec::new())?;
                broker.start("127.0.0.1:0")?;
                brokers.push(broker);
            }
            return Ok(LocalCluster { brokers, quorum: false, _root: root });
        }
        let mut attempt = 1;
        loop {
            match start_quorum(program, root.path(), specs, links) {
                Ok(brokers) => {
                    let cluster = LocalCluster { brokers, quorum: true, _root: root };
                    let names: Vec<String> = specs.iter().map(|spec| spec.name.clone()).collect();
                    cluster.wait_unfenced(&names, START_TIMEOUT)?;
                    return Ok(cluster);
                }
                Err(StartError::PortTaken(error)) if attempt < START_ATTEMPTS => {
                    tracing::info!("starting the cluster again on other ports: {error:#}");
                    attempt += 1;
                }
                Err(StartError::PortTaken(error) | StartError::Other(error)) => return Err(error),
            }
        }
    }

    /// Whether the brokers form a cluster (several brokers, one metadata quorum).
    pub fn is_quorum(&self) -> bool {
        self.quorum
    }

    pub fn broker(&self, name: &str) -> Option<&LocalBroker> {
        self.brokers.iter().find(|broker| broker.name == name)
    }

    pub fn broker_mut(&mut self, name: &str) -> Option<&mut LocalBroker> {
        self.brokers.iter_mut().find(|broker| broker.name == name)
    }

    /// Waits until each named broker runs and is unfenced; at once for a broker
    /// that runs alone (it has no controller to be fenced by).
    pub fn wait_unfenced(&self, names: &[String], timeout: Duration) -> anyhow::Result<()> {
        if !self.quorum {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let mut waiting = Vec::new();
            for name in names {
                let broker = self.broker(name).with_context(|| format!("there is no broker {name}"))?;
                if !broker.is_unfenced() {
                    waiting.push(broker);
                }
            }
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let logs: Vec<String> =
                    waiting.iter().map(|b| format!("{} (log {})", b.name, b.log_path.display())).collect();
                bail!("not unfenced within {timeout:?}: {}", logs.join(", "));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The running broker that became the active controller last (in the highest
    /// Raft term) and has not said it stopped being it; a broker that runs alone
    /// is its own controller.
    pub fn active_controller(&self) -> Option<&LocalBroker> {
        if !self.quorum {
            return self.brokers.first();
        }
        self.brokers
            .iter()
            .filter(|broker| broker.is_running())
            .filter_map(|broker| broker.log_state().controller_term.map(|term| (term, broker)))
            .max_by_key(|(term, _)| *term)
            .map(|(_, broker)| broker)
    }

    /// Stops every broker gracefully, then copies each broker's log into
    /// `logs_dir` as `<broker>.log` (the originals go with the cluster's directory);
    /// the first failure is returned after all tried.
    pub fn stop_keeping_logs(mut self, logs_dir: &Path) -> anyhow::Result<()> {
        let stopped = self.stop_brokers();
        std::fs::create_dir_all(logs_dir).with_context(|| format!("creating {}", logs_dir.display()))?;
        for broker in &self.brokers {
            let kept = logs_dir.join(format!("{}.log", broker.name));
            std::fs::copy(&broker.log_path, &kept)
                .with_context(|| format!("copying {} to {}", broker.log_path.display(), kept.display()))?;
        }
        stopped
    }

    /// Stops every broker gracefully; the first failure is returned after all tried.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop_brokers()
    }

    fn stop_brokers(&mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        for broker in &mut self.brokers {
            if let Err(error) = broker.stop() {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Where one started broker's shards run: how many, and on which CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub shards: usize,
    /// A CPU list or unpinned, never [`ShardCpus::Online`].
    pub cpus: ShardCpus,
}

/// Where each of `brokers` brokers started on one machine runs its shards: `cores`
/// of them each (0: one per CPU of `cpus`), spread over `cpus` (every online CPU
/// by default). Broker k takes the `cores` CPUs of the list after broker k-1's,
/// wrapping, so with one shard each broker k runs on the list's CPU k mod its
/// length, and co-located brokers do not all start at its first CPU; unpinned,
/// every broker is. Refused, naming the online CPUs, if `cpus` names one that is
/// not online.
pub fn spread_cpus(cpus: &ShardCpus, online: &CpuList, brokers: usize, cores: usize) -> Result<Vec<Placement>, String> {
    let Some(list) = cpus.resolve(online)? else {
        let shards = if cores == 0 { online.cpus().len() } else { cores };
        return Ok(vec![Placement { shards, cpus: ShardCpus::Unpinned }; brokers]);
    };
    let available = list.cpus();
    let shards = if cores == 0 { available.len() } else { cores };
    // More shards than CPUs: each broker takes them all, its shards wrapping.
    let width = shards.min(available.len());
    let placements = (0..brokers)
        .map(|broker| {
            let taken = (0..width).map(|shard| available[(broker * width + shard) % available.len()]);
            let taken = CpuList::from_cpus(taken).expect("a broker takes at least one CPU");
            Placement { shards, cpus: ShardCpus::Pinned(taken) }
        })
        .collect();
    Ok(placements)
}

/// Why a cluster did not start: a controller port was taken between being picked
/// and being bound (worth another attempt), or anything else.
enum StartError {
    PortTaken(anyhow::Error),
    Other(anyhow::Error),
}

/// One attempt at starting the brokers of a cluster: free controller ports, a new
/// cluster id, empty data directories. Every broker is up when it returns; on an
/// error the brokers already started are killed (dropped).
fn start_quorum(
    program: &Path,
    root: &Path,
    specs: &[BrokerSpec],
    links: Option<&PeerLinks>,
) -> Result<Vec<LocalBroker>, StartError> {
    let ports = free_ports(specs.len()).map_err(StartError::Other)?;
    let controllers: BTreeMap<u32, SocketAddr> = specs
        .iter()
        .zip(&ports)
        .map(|(spec, &port)| (spec.node_id, SocketAddr::from(([127, 0, 0, 1], port))))
        .collect();
    if let Some(links) = links {
        for (&node_id, &listener) in &controllers {
            links.set_controller(node_id, listener);
        }
    }
    let direct = controllers.iter().map(|(id, listener)| format!("{id}@{listener}")).collect::<Vec<_>>().join(",");
    let cluster_id = format!("corelog-run-{:x}-{:x}", crate::payload::now_us(), std::process::id());
    let mut brokers = Vec::with_capacity(specs.len());
    for (spec, port) in specs.iter().zip(&ports) {
        let data_dir = root.join(&spec.name);
        if data_dir.exists() {
            // An earlier attempt's: another cluster id and other voters.
            std::fs::remove_dir_all(&data_dir)
                .with_context(|| format!("removing {}", data_dir.display()))
                .map_err(StartError::Other)?;
        }
        let voters = links.map_or_else(|| direct.clone(), |links| links.voters_for(spec.node_id, &controllers));
        let mut cluster_args = vec![
            "--node-id".to_string(),
            spec.node_id.to_string(),
            "--controller-listener".to_string(),
            format!("127.0.0.1:{port}"),
            "--controller-quorum-voters".to_string(),
            voters,
            "--cluster-id".to_string(),
            cluster_id.clone(),
        ];
        if let Some(links) = links {
            cluster_args.extend(["--peer-addresses".to_string(), links.peer_addresses_for(spec.node_id)]);
        }
        let mut spec = spec.clone();
        spec.config_yaml.push_str(&format!(
            "broker_session_timeout_ms: {BROKER_SESSION_TIMEOUT_MS}\n\
             broker_heartbeat_interval_ms: {BROKER_HEARTBEAT_INTERVAL_MS}\n"
        ));
        let mut broker = LocalBroker::new(program, root, &spec, cluster_args).map_err(StartError::Other)?;
        if let Err(error) = broker.start("127.0.0.1:0") {
            let text = format!("{error:#}");
            return Err(if text.contains("Address already in use") || text.contains("address in use") {
                StartError::PortTaken(error)
            } else {
                StartError::Other(error)
            });
        }
        if let Some(links) = links {
            let listener = broker.address.parse().with_context(|| format!("broker address {}", broker.address));
            links.set_client_listener(spec.node_id, listener.map_err(StartError::Other)?);
        }
        brokers.push(broker);
    }
    Ok(brokers)
}

/// `count` distinct loopback ports that were free a moment ago: all bound at once
/// (so none repeats), then released for the brokers to bind.
fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").context("binding a loopback port to find a free one"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    listeners.iter().map(|listener| Ok(listener.local_addr()?.port())).collect()
}

impl LocalBroker {
    fn new(program: &Path, root: &Path, spec: &BrokerSpec, cluster_args: Vec<String>) -> anyhow::Result<LocalBroker> {
        let config_path = root.join(format!("{}.yaml", spec.name));
        std::fs::write(&config_path, &spec.config_yaml)
            .with_context(|| format!("writing {}", config_path.display()))?;
        Ok(LocalBroker {
            name: spec.name.clone(),
            node_id: spec.node_id,
            address: String::new(),
            program: program.to_path_buf(),
            data_dir: root.join(&spec.name),
            config_path,
            cores: spec.cores,
            cpus: spec.cpus.clone(),
            advertised: spec.advertised.clone(),
            cluster_args,
            log_path: root.join(format!("{}.log", spec.name)),
            log_state: Arc::default(),
            child: None,
        })
    }

    /// `--cpus` and its value, unless the broker's default (every online CPU) is wanted.
    fn cpus_flag(&self) -> Vec<String> {
        match &self.cpus {
            ShardCpus::Online => Vec::new(),
            cpus => vec!["--cpus".to_string(), cpus.to_string()],
        }
    }

    /// The CPUs its shards are pinned to.
    pub fn cpus(&self) -> &ShardCpus {
        &self.cpus
    }

    /// Its shards (0: one per CPU of [`LocalBroker::cpus`]).
    pub fn cores(&self) -> usize {
        self.cores
    }

    /// Starts the broker process (again, on the same data directory, node id and
    /// controller listener, after a stop or crash; `listen` keeps the client
    /// address stable across restarts) and waits for its ready line. A cluster
    /// broker is then not unfenced yet: see [`LocalCluster::wait_unfenced`].
    pub fn start(&mut self, listen: &str) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        let mut child = Command::new(&self.program)
            .arg("broker")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(listen)
            .arg("--cores")
            .arg(self.cores.to_string())
            .args(self.cpus_flag())
            .arg("--config")
            .arg(&self.config_path)
            .args(self.advertised.iter().flat_map(|address| ["--advertised-listener", address.as_str()]))
            .args(&self.cluster_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting broker {}", self.name))?;
        let stderr = child.stderr.take().context("broker stderr")?;
        let (ready, ready_seen) = flume::bounded(1);
        self.log_state = Arc::default();
        let state = self.log_state.clone();
        let node_id = self.node_id;
        // Copies the broker's log to its file and watches for the lines that say
        // where it is up (ready, unfenced, active controller).
        let copier = std::thread::spawn(move || {
            use std::io::Write;
            let mut log = log;
            let watch = LogWatch::new(node_id);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split(READY_MARKER).nth(1) {
                    let address = rest.split_whitespace().next().unwrap_or_default().to_string();
                    let _ = ready.try_send(address);
                }
                watch.read(&line, &mut state.lock().expect("broker log state"));
                if writeln!(log, "{line}").is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(address) = ready_seen.recv_timeout(Duration::from_millis(50)) {
                self.address = address;
                break;
            }
            if let Some(status) = child.try_wait()? {
                // Its stderr is closed: the copy ends with the line that says why.
                let _ = copier.join();
                let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
                let last = log.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or_default();
                bail!(
                    "broker {} exited ({status}) before it was ready: {last}; its log is {}",
                    self.name,
                    self.log_path.display()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "broker {} was not ready within {START_TIMEOUT:?}; its log is {}",
                    self.name,
                    self.log_path.display()
                );
            }
        }
        self.child = Some(child);
        Ok(())
    }

    /// SIGTERM, wait, SIGKILL if needed. Errors if the broker did not exit cleanly.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        signal(&child, libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!("broker {} exited with {status}; its log is {}", self.name, self.log_path.display());
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("broker {} did not stop within {STOP_TIMEOUT:?} of SIGTERM and was killed", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, and wait for the process to be gone: a crash.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else { bail!("broker {} is not running", self.name) };
        child.kill().with_context(|| format!("killing broker {}", self.name))?;
        child.wait()?;
        Ok(())
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`).
    pub fn freeze(&mut self, frozen: bool) -> anyhow::Result<()> {
        let Some(child) = &self.child else { bail!("broker {} is not running", self.name) };
        signal(child, if frozen { libc::SIGSTOP } else { libc::SIGCONT });
        Ok(())
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether the running process said it is unfenced (and not fenced since).
    /// Its log says so a little after the controller decided; a paused broker
    /// says nothing until it resumes.
    pub fn is_unfenced(&self) -> bool {
        self.is_running() && self.log_state().unfenced
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    fn log_state(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.log_state.lock().expect("broker log state")
    }
}

/// The log lines of one broker that the harness follows, as the broker writes them
/// (`cluster/membership.rs`, `cluster/quorum.rs`).
struct LogWatch {
    unfenced: String,
    fenced: String,
    controller: String,
    not_controller: String,
}

impl LogWatch {
    fn new(node_id: u32) -> LogWatch {
        LogWatch {
            unfenced: format!("broker {node_id} is unfenced"),
            fenced: format!("broker {node_id} is fenced"),
            controller: format!("node {node_id}: active controller (term "),
            not_controller: format!("node {node_id}: no longer the active controller"),
        }
    }

    fn read(&self, line: &str, state: &mut LogState) {
        if line.contains(&self.unfenced) {
            state.unfenced = true;
        } else if line.contains(&self.fenced) {
            state.unfenced = false;
        } else if let Some(rest) = line.split(&self.controller).nth(1) {
            let term = rest.split(')').next().and_then(|digits| digits.parse().ok());
            state.controller_term = term;
        } else if line.contains(&self.not_controller) {
            state.controller_term = None;
        }
    }
}

#[allow(unsafe_code)] // kill(2): std sends no signal but SIGKILL
fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) takes no pointers and touches no memory of ours. (The pid is
    // a child we own and have not reaped, so no other process can have it.)
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
}

impl Drop for LocalBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_says_when_a_broker_is_unfenced_and_which_term_it_controls() {
        let watch = LogWatch::new(1);
        let mut state = LogState::default();
        let prefix = "\u{1b}[2m2026-12-06T12:18:59Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m corelog_broker::cluster::";
        watch.read(&format!("{prefix}membership: broker 1 registered with epoch 4"), &mut state);
        assert!(!state.unfenced);
        watch.read(&format!("{prefix}membership: broker 1 is unfenced (epoch 4)"), &mut state);
        assert!(state.unfenced);
        watch.read(&format!("{prefix}membership: broker 11 is fenced (epoch 9)"), &mut state);
        assert!(state.unfenced, "another node's line");
        watch.read(&format!("{prefix}quorum: node 1: active controller (term 12)"), &mut state);
        assert_eq!(state.controller_term, Some(12));
        watch.read(&format!("{prefix}membership: broker 1 is fenced (epoch 4)"), &mut state);
        assert!(!state.unfenced);
        watch.read(&format!("{prefix}quorum: node 1: no longer the active controller"), &mut state);
        assert_eq!(state.controller_term, None);
    }

    /// Each broker's CPUs and shard count, as `--cpus` and `--cores` give them.
    fn spread(cpus: &str, online: &str, brokers: usize, cores: usize) -> Result<Vec<(String, usize)>, String> {
        let cpus = if cpus.is_empty() { ShardCpus::Online } else { ShardCpus::parse(cpus).expect("valid") };
        let online = CpuList::parse(online).expect("a CPU list");
        let placements = spread_cpus(&cpus, &online, brokers, cores)?;
        Ok(placements.into_iter().map(|placement| (placement.cpus.to_string(), placement.shards)).collect())
    }

    fn each(placements: &[(&str, usize)]) -> Result<Vec<(String, usize)>, String> {
        Ok(placements.iter().map(|(cpus, shards)| (cpus.to_string(), *shards)).collect())
    }

    #[test]
    fn co_located_brokers_are_spread_over_the_cpus() {
        // One shard each: broker k on CPU k mod the online count.
        assert_eq!(spread("", "0-1", 3, 1), each(&[("0", 1), ("1", 1), ("0", 1)]));
        assert_eq!(spread("", "0-3", 3, 1), each(&[("0", 1), ("1", 1), ("2", 1)]));
        // Several shards each: consecutive CPUs, wrapping.
        assert_eq!(spread("", "0-3", 3, 2), each(&[("0-1", 2), ("2-3", 2), ("0-1", 2)]));
        assert_eq!(spread("", "0-2", 2, 2), each(&[("0-1", 2), ("0,2", 2)]));
        // More shards than CPUs, or one per CPU (cores 0): every broker on all of them.
        assert_eq!(spread("", "0-1", 2, 3), each(&[("0-1", 3), ("0-1", 3)]));
        assert_eq!(spread("", "0-1", 3, 0), each(&[("0-1", 2), ("0-1", 2), ("0-1", 2)]));
        // A broker alone keeps the first CPUs, as before.
        assert_eq!(spread("", "0-7", 1, 1), each(&[("0", 1)]));
        // Within the workload's CPUs; online ones that are not listed stay free.
        assert_eq!(spread("2-3", "0-3", 3, 1), each(&[("2", 1), ("3", 1), ("2", 1)]));
        assert_eq!(spread("1,5", "0-7", 2, 0), each(&[("1,5", 2), ("1,5", 2)]));
        assert_eq!(spread("unpinned", "0-1", 2, 1), each(&[("unpinned", 1), ("unpinned", 1)]));
        assert_eq!(spread("unpinned", "0-3", 1, 0), each(&[("unpinned", 4)]));
        assert_eq!(spread("1-2", "0-1", 3, 1), Err("CPU 2 is not online (online CPUs: 0-1)".to_string()));
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(5).unwrap();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 5, "{ports:?}");
    }
}
