//! Fault injection during a run: the schedule (the workload's `faults` plus what
//! a seeded nemesis draws), and the injector thread that applies each fault at its
//! time and undoes it when its duration is over.
//!
//! Times are from the start of the measured phase (t = 0 of the result), as the
//! workload's `at` is. Every target is resolved when the schedule is made (a
//! `random` broker, producer or consumer is drawn with the run's seed), so the
//! same seed gives the same faults on the same targets; only `leader:<t>/<p>`,
//! `follower:<t>/<p>` and `controller` are resolved when the fault starts, since
//! leadership is the cluster's to decide: a partition's leader and its first other
//! replica from the cluster's metadata, the active controller from the started
//! brokers' logs (an external cluster's from its metadata).
//!
//! Each applied fault becomes a [`FaultWindow`] of the result. When the run stops
//! early (Ctrl-C, a failure), every active fault is undone at once: a paused
//! broker resumes, a crashed one starts again, proxies stop faulting, so the
//! drain and the cluster's shutdown see a healthy system. [`FaultInjector`] keeps
//! that promise on every exit path: stopping it or dropping it undoes what is in
//! effect and waits until that is done.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use corelog_engine::hash::SplitMix64;
use corelog_reports::model::{FaultWindow, LeaderChange};

use crate::driver::kafka::{KafkaDriver, PartitionLeader};
use crate::proxy::{Directions, FaultId, FaultProxy, NetFault};
use crate::run::cluster::LocalCluster;
use crate::run::consumers::Consumers;
use crate::run::leaders::leaders_seen_by;
use crate::run::links::{Cut, PeerLinks};
use crate::run::load::CrashSwitch;
use crate::run::pipeline::Processors;
use crate::workload::{
    local_broker_id, local_broker_name, ExternalCluster, FaultKind, FaultParameters, FaultScope, FaultTarget,
    ParameterDirection, Workload,
};

/// A fault with a concrete target and a time from t = 0.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedFault {
    pub at: Duration,
    pub duration: Duration,
    pub kind: FaultKind,
    /// Never `Random`.
    pub target: FaultTarget,
    pub parameters: FaultParameters,
}

/// The run's faults in start order, and the nemesis seed if a nemesis drew some.
pub fn plan(workload: &Workload, brokers: &[String], seed: u64) -> (Vec<PlannedFault>, Option<u64>) {
    let mut rng = SplitMix64::new(seed ^ 0x6a09_e667_f3bc_c909);
    let mut faults: Vec<PlannedFault> = workload
        .faults
        .iter()
        .map(|fault| PlannedFault {
            at: fault.at,
            duration: fault.duration,
            kind: fault.kind,
            target: resolve_random(&fault.target, fault.kind, workload, brokers, &mut rng),
            parameters: resolve_groups(fault.kind, &fault.parameters, brokers, &mut rng),
        })
        .collect();
    let mut nemesis_seed = None;
    if let Some(nemesis) = &workload.nemesis {
        let seed = nemesis.seed.unwrap_or(seed);
        nemesis_seed = Some(seed);
        let mut rng = SplitMix64::new(seed);
        let mut at = nemesis.interval;
        while at + nemesis.duration <= workload.test_duration && !nemesis.kinds.is_empty() {
            let kind = nemesis.kinds[rng.below(nemesis.kinds.len() as u64) as usize];
            let target = resolve_random(&FaultTarget::Random, kind, workload, brokers, &mut rng);
            let duration = if kind.needs_duration() || kind.scope() != FaultScope::Network {
                nemesis.duration
            } else {
                Duration::ZERO
            };
            let parameters = resolve_groups(kind, &nemesis.parameters, brokers, &mut rng);
            faults.push(PlannedFault { at, duration, kind, target, parameters });
            at += nemesis.interval;
        }
    }
    faults.sort_by_key(|fault| fault.at);
    (faults, nemesis_seed)
}

/// A `partition` without `groups` gets them drawn: a random minority of the
/// started brokers (at least one) split from the rest. Other kinds, as given.
fn resolve_groups(
    kind: FaultKind,
    parameters: &FaultParameters,
    brokers: &[String],
    rng: &mut SplitMix64,
) -> FaultParameters {
    let mut parameters = parameters.clone();
    if kind != FaultKind::Partition || parameters.groups.is_some() {
        return parameters;
    }
    let mut ids: Vec<u32> = brokers.iter().filter_map(|name| crate::workload::local_broker_id(name)).collect();
    // Fisher-Yates with the run's generator: the same seed, the same split.
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let minority = (ids.len().saturating_sub(1) / 2).max(1).min(ids.len());
    let rest = ids.split_off(minority);
    parameters.groups = Some(vec![ids, rest]);
    parameters
}

fn resolve_random(
    target: &FaultTarget,
    kind: FaultKind,
    workload: &Workload,
    brokers: &[String],
    rng: &mut SplitMix64,
) -> FaultTarget {
    if *target != FaultTarget::Random {
        return target.clone();
    }
    match kind {
        FaultKind::ProducerCrash => FaultTarget::Producer(rng.below(workload.producers_total().max(1)) as u32),
        FaultKind::ConsumerCrash => FaultTarget::Consumer(rng.below(workload.consumers_total().max(1)) as u32),
        FaultKind::ProcessorCrash => {
            FaultTarget::Processor(rng.below(u64::from(workload.processing.processors.max(1))) as u32)
        }
        // No broker to draw from stays `Random`, which the injector reports.
        _ if brokers.is_empty() => FaultTarget::Random,
        _ => FaultTarget::Broker(brokers[rng.below(brokers.len() as u64) as usize].clone()),
    }
}

/// What the injector acts on.
pub struct Targets {
    /// Brokers the harness started, or `None`.
    pub local: Option<Arc<Mutex<LocalCluster>>>,
    /// An external cluster's nodes and commands, or `None`.
    pub external: Option<ExternalCluster>,
    /// The fault proxy in front of each local broker, by broker name.
    pub proxies: BTreeMap<String, Arc<FaultProxy>>,
    /// The links between local brokers, for `partition` and `isolate`.
    pub links: Option<Arc<PeerLinks>>,
    /// For `leader:`, `follower:` and (external) `controller` targets.
    pub kafka: Option<Arc<KafkaDriver>>,
    /// The run's topic names, by index.
    pub topics: Vec<String>,
    pub consumers: Arc<Consumers>,
    pub producers: Vec<Arc<CrashSwitch>>,
    /// The exactly-once stage's processors; `None` under the other guarantees,
    /// where `processor-crash` faults have nothing to act on and are skipped.
    pub processors: Option<Arc<Processors>>,
}

/// What the injector thread returns.
#[derive(Default)]
pub struct Injected {
    pub windows: Vec<FaultWindow>,
    /// Faults that could not be applied or undone: the run is not the experiment
    /// the workload describes, so it fails (after writing what it measured).
    pub errors: Vec<String>,
}

/// The injector thread: it applies the planned faults relative to `t0` until they
/// are all over or it is stopped, then undoes what is still active.
///
/// [`FaultInjector::stop`] stops it and waits until every active fault is undone;
/// dropping it does the same (and logs what could not be undone, since nobody else
/// will see it), so no exit path leaves a fault applied.
pub struct FaultInjector {
    stop: Arc<AtomicBool>,
    /// `None` once stopped.
    thread: Option<JoinHandle<Injected>>,
}

impl FaultInjector {
    pub fn spawn(faults: Vec<PlannedFault>, targets: Targets, t0: Instant) -> std::io::Result<FaultInjector> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new().name("corelog-faults".to_string()).spawn(move || {
                let mut injector = Injector {
                    targets,
                    t0,
                    active: Vec::new(),
                    injected: Injected::default(),
                    leader_watches: Vec::new(),
                    stop: stop.clone(),
                };
                injector.run(faults, &stop);
                injector.finish_leader_watches();
                injector.injected
            })?
        };
        Ok(FaultInjector { stop, thread: Some(thread) })
    }

    /// Stops the injector and waits until it has undone every fault still in
    /// effect; returns the fault windows and the faults that could not be applied or
    /// undone. Stopping again returns nothing more.
    pub fn stop(&mut self) -> anyhow::Result<Injected> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(injected)) => Ok(injected),
            Some(Err(_)) => bail!("the fault injector panicked"),
            None => Ok(Injected::default()),
        }
    }
}

impl Drop for FaultInjector {
    fn drop(&mut self) {
        match self.stop() {
            Ok(injected) => {
                for error in injected.errors {
                    tracing::error!("fault injection: {error}");
                }
            }
            Err(error) => tracing::error!("{error:#}"),
        }
    }
}

/// A fault in effect: what undoes it, and its window's index.
struct Active {
    ends: Duration,
    window: usize,
    undo: Vec<Undo>,
}

enum Undo {
    StartBroker(String),
    /// Wait until these started brokers of a cluster are unfenced again.
    AwaitUnfenced(Vec<String>),
    Resume(String),
    Command {
        command: String,
        node: String,
    },
    RemoveNet(Arc<FaultProxy>, FaultId),
    Heal(Cut),
    RestartConsumer(usize),
    RestartProducer(usize),
    RestartProcessor(usize),
}

struct Injector {
    targets: Targets,
    t0: Instant,
    active: Vec<Active>,
    injected: Injected,
    /// Threads watching leadership move off a fault's brokers, by window index.
    leader_watches: Vec<(usize, JoinHandle<LeaderChange>)>,
    /// Set when the injector stops: the leader watches stop too.
    stop: Arc<AtomicBool>,
}

impl Injector {
    fn run(&mut self, faults: Vec<PlannedFault>, stop: &AtomicBool) {
        let mut pending = faults.into_iter().peekable();
        loop {
            let next_start = pending.peek().map(|f| f.at);
            let next_end = self.active.iter().map(|a| a.ends).min();
            let Some(next) = [next_start, next_end].into_iter().flatten().min() else { return };
            if !self.sleep_until(next, stop) {
                break;
            }
            // Ends first: a fault that ends when another starts frees its target.
            if next_end == Some(next) {
                let index = self.active.iter().position(|a| a.ends == next).expect("an active fault ends now");
                let active = self.active.remove(index);
                self.undo(active);
            } else if let Some(fault) = pending.next() {
                self.apply(&fault);
            }
        }
        // Stopped early: undo everything still in effect, newest first.
        while let Some(active) = self.active.pop() {
            self.undo(active);
        }
    }

    /// Sleeps until `t0 + at`; `false` if `stop` was set first.
    fn sleep_until(&self, at: Duration, stop: &AtomicBool) -> bool {
        let deadline = self.t0 + at;
        loop {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(Duration::from_millis(20)));
        }
    }

    fn now_ms(&self) -> i64 {
        self.t0.elapsed().as_millis() as i64
    }

    fn apply(&mut self, fault: &PlannedFault) {
        let leaders_before = self.leaders_before(fault);
        let started = Instant::now();
        let started_ms = self.now_ms();
        let (target_text, outcome) = match self.start(fault) {
            Ok((text, undo)) => (text, Ok(undo)),
            Err(error) => (fault.target.to_string(), Err(error)),
        };
        let window = FaultWindow {
            kind: fault.kind.name().to_string(),
            target: target_text,
            start_ms: started_ms,
            end_ms: None,
            parameters: parameters_json(&fault.parameters),
            ..FaultWindow::default()
        };
        eprintln!(
            "  fault: {} {} at {:.1} s for {:.1} s",
            window.kind,
            window.target,
            started_ms as f64 / 1000.0,
            fault.duration.as_secs_f64()
        );
        self.injected.windows.push(window);
        let index = self.injected.windows.len() - 1;
        match outcome {
            Ok(undo) => {
                // Not before its scheduled end, and never in the past when applying it was slow.
                let ends = (fault.at + fault.duration).max(self.t0.elapsed());
                self.active.push(Active { ends, window: index, undo });
                if let Some(before) = leaders_before {
                    let brokers = hit_brokers(&self.injected.windows[index].target);
                    self.watch_leaders(index, &brokers, before, started);
                }
            }
            Err(error) => {
                self.injected.windows[index].end_ms = Some(started_ms);
                self.injected.errors.push(format!("{} {}: {error:#}", fault.kind, fault.target));
            }
        }
    }

    /// Before a process or link fault on a cluster: every partition of the run's
    /// topics and its leader, so that the fault's window can say when leadership
    /// moved off the brokers it hit. `None` when that is not measured: another
    /// kind, a broker that runs alone, or no metadata (logged).
    fn leaders_before(&self, fault: &PlannedFault) -> Option<Vec<PartitionLeader>> {
        let moves_leaders = matches!(fault.kind.scope(), FaultScope::BrokerProcess | FaultScope::Links);
        if !moves_leaders || self.targets.topics.is_empty() {
            return None;
        }
        let cluster = match (&self.targets.local, &self.targets.external) {
            (Some(local), _) => local.lock().expect("cluster lock").is_quorum(),
            (None, Some(external)) => external.nodes.len() > 1,
            (None, None) => false,
        };
        let kafka = self.targets.kafka.as_ref().filter(|_| cluster)?;
        match kafka.leader_reader().and_then(|reader| reader.leaders(&self.targets.topics, Duration::from_secs(5))) {
            Ok(leaders) => Some(leaders),
            Err(error) => {
                tracing::warn!("leaders before {} {}: {error:#}", fault.kind, fault.target);
                None
            }
        }
    }

    /// Starts a thread that polls the metadata every [`LEADER_POLL`] (of the started
    /// brokers that `brokers` does not name, in turn, asked directly; of the
    /// external cluster through its client) until every partition that `brokers`
    /// led `before` has another leader (at most
    /// [`LEADER_WATCH_MAX`], or until the injector stops); its finding goes into
    /// window `index` when the injector finishes.
    fn watch_leaders(&mut self, index: usize, brokers: &[String], before: Vec<PartitionLeader>, started: Instant) {
        let node_ids: Vec<i32> = brokers.iter().filter_map(|name| self.node_id(name)).collect();
        let led: Vec<(String, i32)> =
            before.into_iter().filter(|p| node_ids.contains(&p.leader)).map(|p| (p.topic, p.partition)).collect();
        let Some(kafka) = self.targets.kafka.clone() else { return };
        if led.is_empty() {
            return;
        }
        // Started brokers are asked directly, those the fault did not hit: they
        // are the ones that elect new leaders.
        let others: Vec<String> = match &self.targets.local {
            Some(cluster) => {
                let cluster = cluster.lock().expect("cluster lock");
                cluster.brokers.iter().filter(|b| !brokers.contains(&b.name)).map(|b| b.address.clone()).collect()
            }
            None => Vec::new(),
        };
        let topics = self.targets.topics.clone();
        let stop = self.stop.clone();
        let spawned = std::thread::Builder::new().name("corelog-leader-watch".to_string()).spawn(move || {
            let partitions = led.len() as u32;
            let watched = || started.elapsed().as_millis() as i64;
            let reader = match others.is_empty() {
                true => match kafka.leader_reader() {
                    Ok(reader) => Some(reader),
                    Err(_) => return LeaderChange { partitions, moved_ms: None, watched_ms: 0 },
                },
                false => None,
            };
            let read = |tick: u32| match &reader {
                Some(reader) => reader.leaders(&topics, LEADER_POLL * 10),
                None => leaders_seen_by(&others[tick as usize % others.len()], &topics, LEADER_POLL * 10),
            };
            let mut tick = 0;
            while started.elapsed() < LEADER_WATCH_MAX && !stop.load(Ordering::Relaxed) {
                if let Ok(now) = read(tick) {
                    let moved = led.iter().all(|(topic, partition)| {
                        now.iter().any(|p| {
                            &p.topic == topic
                                && p.partition == *partition
                                && p.leader >= 0
                                && !node_ids.contains(&p.leader)
                        })
                    });
                    if moved {
                        let elapsed = watched();
                        return LeaderChange { partitions, moved_ms: Some(elapsed), watched_ms: elapsed };
                    }
                }
                tick += 1;
                std::thread::sleep((started + LEADER_POLL * tick).saturating_duration_since(Instant::now()));
            }
            LeaderChange { partitions, moved_ms: None, watched_ms: watched() }
        });
        match spawned {
            Ok(thread) => self.leader_watches.push((index, thread)),
            Err(error) => tracing::warn!("starting a leader watch: {error}"),
        }
    }

    /// The node id of a broker, by its name.
    fn node_id(&self, name: &str) -> Option<i32> {
        match (&self.targets.local, &self.targets.external) {
            (Some(cluster), _) => {
                let cluster = cluster.lock().expect("cluster lock");
                cluster.broker(name).and_then(|broker| i32::try_from(broker.node_id).ok())
            }
            (None, Some(external)) => external.nodes.iter().find(|node| node.name == name).map(|node| node.node_id),
            (None, None) => None,
        }
    }

    /// Waits for the leader watches (each ends within [`LEADER_WATCH_MAX`], or at
    /// once since the injector stopped) and puts what they saw into their windows.
    fn finish_leader_watches(&mut self) {
        for (index, thread) in std::mem::take(&mut self.leader_watches) {
            match thread.join() {
                Ok(change) => self.injected.windows[index].leader_change = Some(change),
                Err(_) => tracing::error!("a leader watch panicked"),
            }
        }
    }

    fn undo(&mut self, active: Active) {
        for undo in active.undo {
            if let Err(error) = self.undo_one(undo) {
                self.injected
                    .errors
                    .push(format!("undoing {}: {error:#}", self.injected.windows[active.window].label()));
            }
        }
        let now = self.now_ms();
        self.injected.windows[active.window].end_ms = Some(now);
    }

    /// Applies a fault; returns its resolved target's name and how to undo it.
    fn start(&mut self, fault: &PlannedFault) -> anyhow::Result<(String, Vec<Undo>)> {
        match fault.kind.scope() {
            FaultScope::Client => self.start_client(fault),
            FaultScope::Links => self.start_links(fault),
            FaultScope::BrokerProcess | FaultScope::Network => {
                let brokers = self.brokers(&fault.target)?;
                let mut undo = Vec::new();
                for broker in &brokers {
                    if fault.kind.scope() == FaultScope::Network {
                        undo.push(self.start_network(fault, broker)?);
                    } else {
                        undo.extend(self.start_process(fault.kind, broker)?);
                    }
                }
                // A cluster broker started again is back once it is unfenced; all of
                // the fault's brokers start first, since one may need the others'
                // votes to elect a controller.
                let quorum = self.targets.local.as_ref().is_some_and(|c| c.lock().expect("cluster lock").is_quorum());
                if quorum && matches!(fault.kind, FaultKind::Crash | FaultKind::Restart) {
                    undo.push(Undo::AwaitUnfenced(brokers.clone()));
                }
                Ok((brokers.join(","), undo))
            }
        }
    }

    /// The broker names a target means now.
    fn brokers(&self, target: &FaultTarget) -> anyhow::Result<Vec<String>> {
        let all: Vec<String> = match (&self.targets.local, &self.targets.external) {
            (Some(cluster), _) => {
                cluster.lock().expect("cluster lock").brokers.iter().map(|b| b.name.clone()).collect()
            }
            (None, Some(external)) => external.nodes.iter().map(|n| n.name.clone()).collect(),
            (None, None) => bail!("there are no brokers to fault"),
        };
        let brokers = match target {
            FaultTarget::All => all,
            FaultTarget::Broker(name) => vec![name.clone()],
            FaultTarget::Leader { topic, partition } => vec![self.leader(*topic, *partition)?],
            FaultTarget::Follower { topic, partition } => vec![self.follower(*topic, *partition)?],
            FaultTarget::Controller => vec![self.controller()?],
            FaultTarget::Random => {
                bail!("no broker to draw a random target from: list the external cluster's brokers under cluster.nodes")
            }
            FaultTarget::Producer(_) | FaultTarget::Consumer(_) | FaultTarget::Processor(_) => {
                bail!("`{target}` is not a broker")
            }
        };
        if brokers.is_empty() {
            bail!("`{target}` names no broker: list the external cluster's brokers under cluster.nodes");
        }
        Ok(brokers)
    }

    /// The broker leading `topic`/`partition` now, by the cluster's metadata.
    fn leader(&self, topic: u32, partition: u32) -> anyhow::Result<String> {
        if let Some(cluster) = &self.targets.local {
            let cluster = cluster.lock().expect("cluster lock");
            if !cluster.is_quorum() {
                // A broker that runs alone leads everything.
                return cluster.brokers.first().map(|b| b.name.clone()).context("the cluster has no broker");
            }
        }
        let topic_name =
            self.targets.topics.get(topic as usize).with_context(|| format!("there is no topic {topic}"))?;
        let kafka = self.targets.kafka.as_ref().context("leader targets need the kafka driver")?;
        let node_id = kafka.partition_leader(topic_name, partition as i32)?;
        self.node_name(node_id).with_context(|| format!("the leader of {topic_name}/{partition} is node {node_id}"))
    }

    /// The first replica of `topic`/`partition`, in its replica list, that does not
    /// lead it now, by the cluster's metadata.
    fn follower(&self, topic: u32, partition: u32) -> anyhow::Result<String> {
        if let Some(cluster) = &self.targets.local {
            if !cluster.lock().expect("cluster lock").is_quorum() {
                bail!("a broker that runs alone holds the only replica of every partition: it has no follower");
            }
        }
        let topic_name =
            self.targets.topics.get(topic as usize).with_context(|| format!("there is no topic {topic}"))?;
        let kafka = self.targets.kafka.as_ref().context("follower targets need the kafka driver")?;
        let node_id = kafka.partition_follower(topic_name, partition as i32)?;
        self.node_name(node_id).with_context(|| format!("a follower of {topic_name}/{partition} is node {node_id}"))
    }

    /// The metadata quorum's active controller now: for started brokers, the one
    /// whose log says it became the active controller in the highest term; for an
    /// external cluster, the controller its metadata names.
    fn controller(&self) -> anyhow::Result<String> {
        if let Some(cluster) = &self.targets.local {
            let cluster = cluster.lock().expect("cluster lock");
            return cluster
                .active_controller()
                .map(|broker| broker.name.clone())
                .context("no running broker's log says it is the active controller");
        }
        let kafka = self.targets.kafka.as_ref().context("controller targets need the kafka driver")?;
        let node_id = kafka.controller_id()?;
        self.node_name(node_id).with_context(|| format!("the active controller is node {node_id}"))
    }

    /// The name of the broker with this node id.
    fn node_name(&self, node_id: i32) -> anyhow::Result<String> {
        if let Some(cluster) = &self.targets.local {
            let cluster = cluster.lock().expect("cluster lock");
            return cluster
                .brokers
                .iter()
                .find(|broker| i64::from(broker.node_id) == i64::from(node_id))
                .map(|broker| broker.name.clone())
                .context("no started broker has that node id");
        }
        let external = self.targets.external.as_ref().context("no cluster")?;
        external
            .nodes
            .iter()
            .find(|node| node.node_id == node_id)
            .map(|node| node.name.clone())
            .context("cluster.nodes does not name it")
    }

    fn start_process(&mut self, kind: FaultKind, broker: &str) -> anyhow::Result<Vec<Undo>> {
        if let Some(external) = &self.targets.external {
            let commands = &external.commands;
            let (begin, end) = match kind {
                FaultKind::Crash => (&commands.kill, &commands.start),
                FaultKind::Restart => (&commands.stop, &commands.start),
                _ => (&commands.pause, &commands.resume),
            };
            let begin = begin.as_ref().with_context(|| format!("no command for `{kind}` in cluster.commands"))?;
            run_command(begin, broker)?;
            return Ok(end
                .iter()
                .map(|command| Undo::Command { command: command.clone(), node: broker.to_string() })
                .collect());
        }
        let cluster = self.targets.local.as_ref().context("no cluster")?;
        let mut cluster = cluster.lock().expect("cluster lock");
        let node = cluster
            .brokers
            .iter_mut()
            .find(|b| b.name == broker)
            .with_context(|| format!("there is no broker {broker}"))?;
        match kind {
            FaultKind::Crash => node.kill()?,
            FaultKind::Restart => node.stop()?,
            _ => {
                node.freeze(true)?;
                return Ok(vec![Undo::Resume(broker.to_string())]);
            }
        }
        Ok(vec![Undo::StartBroker(broker.to_string())])
    }

    fn start_network(&mut self, fault: &PlannedFault, broker: &str) -> anyhow::Result<Undo> {
        let proxy =
            self.targets.proxies.get(broker).with_context(|| format!("broker {broker} has no fault proxy"))?.clone();
        let id = proxy.add(net_fault(fault.kind, &fault.parameters)?);
        Ok(Undo::RemoveNet(proxy, id))
    }

    /// Cuts the links between brokers on different sides: for `partition`, its
    /// groups (a broker in none is a side of its own), and the clients reach only
    /// the side `clients` names, if it does; for `isolate`, each target broker is
    /// a side of its own. The target's text lists the sides, ` | ` between them.
    fn start_links(&mut self, fault: &PlannedFault) -> anyhow::Result<(String, Vec<Undo>)> {
        let links = self.targets.links.clone().with_context(|| {
            format!("`{}` needs several brokers that the harness starts, linked through its proxies", fault.kind)
        })?;
        let all: Vec<u32> = self.brokers(&FaultTarget::All)?.iter().filter_map(|n| local_broker_id(n)).collect();
        let mut sides: Vec<Vec<u32>> = match fault.kind {
            FaultKind::Partition => fault.parameters.groups.clone().context("a partition without groups")?,
            _ => self
                .brokers(&fault.target)?
                .iter()
                .filter_map(|name| local_broker_id(name))
                .map(|id| vec![id])
                .collect(),
        };
        let placed: Vec<u32> = sides.iter().flatten().copied().collect();
        let rest: Vec<u32> = all.iter().copied().filter(|id| !placed.contains(id)).collect();
        let isolated = sides.len();
        match fault.kind {
            FaultKind::Partition => sides.extend(rest.into_iter().map(|id| vec![id])),
            _ if !rest.is_empty() => sides.push(rest),
            _ => {}
        }
        let mut undo = Vec::new();
        for (index, side) in sides.iter().enumerate() {
            for other in sides.iter().skip(index + 1) {
                for (&a, &b) in side.iter().flat_map(|a| other.iter().map(move |b| (a, b))) {
                    undo.push(Undo::Heal(links.cut(a, b)?));
                }
            }
        }
        if let Some(clients) = fault.parameters.clients.filter(|_| fault.kind == FaultKind::Partition) {
            let with_clients = sides.get(clients as usize).context("no such group")?;
            for &id in all.iter().filter(|id| !with_clients.contains(id)) {
                let name = local_broker_name(id);
                let proxy = self.targets.proxies.get(&name).with_context(|| format!("{name} has no fault proxy"))?;
                let fault = NetFault::Blackhole { directions: Directions::BOTH };
                undo.push(Undo::RemoveNet(proxy.clone(), proxy.add(fault)));
            }
        }
        let names = |side: &Vec<u32>| side.iter().map(|&id| local_broker_name(id)).collect::<Vec<_>>().join(",");
        let text = match fault.kind {
            FaultKind::Partition => sides.iter().map(names).collect::<Vec<_>>().join(" | "),
            _ => sides[..isolated].iter().map(names).collect::<Vec<_>>().join(","),
        };
        Ok((text, undo))
    }

    fn start_client(&mut self, fault: &PlannedFault) -> anyhow::Result<(String, Vec<Undo>)> {
        if fault.kind == FaultKind::ProcessorCrash {
            return self.crash_processors(&fault.target);
        }
        let consumers = self.targets.consumers.len();
        let producers = self.targets.producers.len();
        let (indexes, is_consumer): (Vec<usize>, bool) = match (&fault.target, fault.kind) {
            (FaultTarget::Consumer(i), _) => (vec![*i as usize], true),
            (FaultTarget::Producer(i), _) => (vec![*i as usize], false),
            (FaultTarget::All, FaultKind::ConsumerCrash) => ((0..consumers).collect(), true),
            (FaultTarget::All, _) => ((0..producers).collect(), false),
            (target, kind) => bail!("`{kind}` cannot act on `{target}`"),
        };
        let mut undo = Vec::new();
        for &index in &indexes {
            if is_consumer {
                self.targets.consumers.crash(index)?;
                undo.push(Undo::RestartConsumer(index));
            } else {
                self.targets.producers.get(index).with_context(|| format!("there is no producer-{index}"))?.crash();
                undo.push(Undo::RestartProducer(index));
            }
        }
        let prefix = if is_consumer { "consumer" } else { "producer" };
        Ok((indexes.iter().map(|i| format!("{prefix}-{i}")).collect::<Vec<_>>().join(","), undo))
    }

    /// `processor-crash`: kills processors of the exactly-once stage mid-transaction;
    /// without a stage (the other guarantees' executions of the same schedule) it
    /// does nothing and says so in the fault's label.
    fn crash_processors(&mut self, target: &FaultTarget) -> anyhow::Result<(String, Vec<Undo>)> {
        let Some(processors) = self.targets.processors.clone() else {
            return Ok((format!("{target} (no exactly-once stage in this execution: nothing crashed)"), Vec::new()));
        };
        let indexes: Vec<usize> = match target {
            FaultTarget::Processor(i) => vec![*i as usize],
            FaultTarget::All => (0..processors.len()).collect(),
            other => bail!("`processor-crash` cannot act on `{other}`"),
        };
        let mut undo = Vec::new();
        for &index in &indexes {
            processors.crash(index)?;
            undo.push(Undo::RestartProcessor(index));
        }
        Ok((indexes.iter().map(|i| format!("processor-{i}")).collect::<Vec<_>>().join(","), undo))
    }

    fn undo_one(&mut self, undo: Undo) -> anyhow::Result<()> {
        match undo {
            Undo::StartBroker(name) | Undo::Resume(name) if self.targets.local.is_some() => {
                let cluster = self.targets.local.as_ref().expect("checked");
                let mut cluster = cluster.lock().expect("cluster lock");
                let node = cluster
                    .brokers
                    .iter_mut()
                    .find(|b| b.name == name)
                    .with_context(|| format!("there is no broker {name}"))?;
                if node.is_running() {
                    node.freeze(false)
                } else {
                    let address = node.address.clone();
                    node.start(&address)
                }
            }
            Undo::StartBroker(name) | Undo::Resume(name) => bail!("broker {name} is not one the harness started"),
            Undo::AwaitUnfenced(names) => {
                let cluster = self.targets.local.as_ref().context("no cluster")?;
                cluster.lock().expect("cluster lock").wait_unfenced(&names, REJOIN_TIMEOUT)
            }
            Undo::Command { command, node } => run_command(&command, &node),
            Undo::RemoveNet(proxy, id) => {
                proxy.remove(id);
                Ok(())
            }
            Undo::Heal(cut) => {
                PeerLinks::heal(cut);
                Ok(())
            }
            Undo::RestartConsumer(index) => self.targets.consumers.restart(index),
            Undo::RestartProcessor(index) => match &self.targets.processors {
                Some(processors) => processors.restart(index),
                None => Ok(()),
            },
            Undo::RestartProducer(index) => {
                if let Some(switch) = self.targets.producers.get(index) {
                    switch.restart();
                }
                Ok(())
            }
        }
    }
}

/// The proxy fault for a network fault kind.
pub fn net_fault(kind: FaultKind, parameters: &FaultParameters) -> anyhow::Result<NetFault> {
    let directions = match parameters.direction.unwrap_or(ParameterDirection::Both) {
        ParameterDirection::Both => Directions::BOTH,
        ParameterDirection::ToBroker => Directions::TO_BROKER,
        ParameterDirection::ToClient => Directions::TO_CLIENT,
    };
    Ok(match kind {
        FaultKind::Latency => NetFault::Latency {
            delay: Duration::from_millis(u64::from(parameters.delay_ms.context("latency needs delay_ms")?)),
            jitter: Duration::from_millis(u64::from(parameters.jitter_ms.unwrap_or(0))),
            directions,
        },
        FaultKind::Bandwidth => NetFault::Bandwidth {
            bytes_per_second: parameters.bytes_per_second.context("bandwidth needs bytes_per_second")?,
            directions,
        },
        FaultKind::Blackhole => NetFault::Blackhole { directions },
        FaultKind::Reset => NetFault::Reset,
        FaultKind::Down => NetFault::Down,
        other => bail!("`{other}` is not a network fault"),
    })
}

fn parameters_json(parameters: &FaultParameters) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    if let Some(delay) = parameters.delay_ms {
        map.insert("delayMs".into(), delay.into());
    }
    if let Some(jitter) = parameters.jitter_ms {
        map.insert("jitterMs".into(), jitter.into());
    }
    if let Some(rate) = parameters.bytes_per_second {
        map.insert("bytesPerSecond".into(), rate.into());
    }
    if let Some(direction) = parameters.direction {
        map.insert("direction".into(), direction.name().into());
    }
    if let Some(groups) = &parameters.groups {
        map.insert("groups".into(), serde_json::json!(groups));
    }
    if let Some(clients) = parameters.clients {
        map.insert("clients".into(), clients.into());
    }
    serde_json::Value::Object(map)
}

/// The brokers a fault's target text names whose leaderships should move: every
/// one listed (`broker-1,broker-2`), except, for a partition's sides
/// (`broker-0 | broker-1,broker-2`), those of its largest side, where a majority
/// of the quorum can still elect leaders.
fn hit_brokers(target: &str) -> Vec<String> {
    let mut sides: Vec<Vec<String>> =
        target.split(" | ").map(|side| side.split(',').map(str::to_string).collect()).collect();
    if sides.len() > 1 {
        let largest = (0..sides.len()).max_by_key(|&i| (sides[i].len(), std::cmp::Reverse(i))).expect("sides");
        sides.remove(largest);
    }
    sides.into_iter().flatten().collect()
}

/// How often a leader watch reads the metadata after a process fault.
const LEADER_POLL: Duration = Duration::from_millis(100);
/// How long a leader watch waits for leadership to move off a fault's brokers.
const LEADER_WATCH_MAX: Duration = Duration::from_secs(30);

/// How long a restarted cluster broker may take to be unfenced again.
const REJOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// How long an external cluster's command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs an external cluster's command with `{node}` replaced by the node's name.
fn run_command(template: &str, node: &str) -> anyhow::Result<()> {
    let command = template.replace("{node}", node);
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(&command)
        .stdin(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("running `{command}`"))?;
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{command}` did not finish within {COMMAND_TIMEOUT:?} and was killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if !status.success() {
        bail!("`{command}` exited with {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_mix_is_deterministic_and_spread() {
        let draw = |seed| {
            let mut rng = SplitMix64::new(seed);
            (0..1000).map(|_| rng.below(3)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let zeros = draw(7).iter().filter(|&&v| v == 0).count();
        assert!((250..420).contains(&zeros), "{zeros} of 1000 draws were 0");
    }

    fn workload(yaml: &str) -> Workload {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.yaml");
        let base = "name: w\ntopics: 1\npartitionsPerTopic: 2\nmessageSize: 100\nproducersPerTopic: 2\n\
                    subscriptionsPerTopic: 1\nconsumerPerSubscription: 3\nproducerRate: 100\n\
                    warmupDurationSeconds: 1\ntestDurationSeconds: 40\n";
        std::fs::write(&path, format!("{base}{yaml}")).unwrap();
        crate::workload::load(&path).unwrap_or_else(|d| panic!("{d:?}"))
    }

    #[test]
    fn a_nemesis_of_link_faults_draws_a_broker_to_isolate_and_a_minority_to_split_off() {
        let w = workload(
            "cluster: { brokers: 5, replication_factor: 3 }\n\
             nemesis: { seed: 3, interval: 4, duration: 2, kinds: [partition, isolate] }\n\
             faults:\n  - { at: 1, duration: 2, kind: partition, parameters: { groups: [[4], [0, 1]] } }\n",
        );
        let brokers: Vec<String> = (0..5).map(local_broker_name).collect();
        let (first, _) = plan(&w, &brokers, 7);
        assert_eq!(first, plan(&w, &brokers, 7).0, "the same seed, the same faults");
        assert_eq!(first[0].parameters.groups, Some(vec![vec![4], vec![0, 1]]), "given groups are kept");
        let mut kinds = std::collections::BTreeSet::new();
        for fault in &first[1..] {
            kinds.insert(fault.kind);
            match fault.kind {
                FaultKind::Partition => {
                    let groups = fault.parameters.groups.as_ref().expect("drawn groups");
                    assert_eq!(groups.iter().map(Vec::len).collect::<Vec<_>>(), [2, 3], "a minority of 2 of 5");
                    let mut ids: Vec<u32> = groups.iter().flatten().copied().collect();
                    ids.sort_unstable();
                    assert_eq!(ids, [0, 1, 2, 3, 4], "every broker on one side: {groups:?}");
                }
                _ => assert!(matches!(&fault.target, FaultTarget::Broker(name) if brokers.contains(name))),
            }
        }
        assert_eq!(kinds.len(), 2, "both kinds drawn in 9 faults: {first:?}");
    }

    #[test]
    fn the_brokers_a_link_fault_hits_are_its_targets_or_the_sides_besides_the_largest() {
        assert_eq!(hit_brokers("broker-1"), ["broker-1"]);
        assert_eq!(hit_brokers("broker-1,broker-2"), ["broker-1", "broker-2"]);
        assert_eq!(hit_brokers("broker-0 | broker-1,broker-2"), ["broker-0"]);
        assert_eq!(hit_brokers("broker-1,broker-2 | broker-0"), ["broker-0"]);
        assert_eq!(hit_brokers("broker-0,broker-1 | broker-2,broker-3"), ["broker-2", "broker-3"]);
        assert_eq!(hit_brokers("broker-0 | broker-1 | broker-2"), ["broker-1", "broker-2"]);
    }

    #[test]
    fn a_seeded_nemesis_repeats_and_every_target_is_concrete() {
        let w = workload(
            "nemesis: { seed: 42, interval: 8, duration: 3, kinds: [crash, pause, latency, producer-crash, consumer-crash], parameters: { delay_ms: 10 } }\n\
             faults:\n  - { at: 1, duration: 2, kind: pause, target: random }\n",
        );
        let brokers = vec!["broker-0".to_string()];
        let (first, seed) = plan(&w, &brokers, 7);
        let (again, _) = plan(&w, &brokers, 99);
        assert_eq!(seed, Some(42), "the nemesis' own seed wins over the run's");
        assert_eq!(first.iter().filter(|f| f.at.as_secs() % 8 == 0).count(), 4, "faults at 8, 16, 24, 32 s: {first:?}");
        assert_eq!(
            first.iter().filter(|f| f.at.as_secs() % 8 == 0).collect::<Vec<_>>(),
            again.iter().filter(|f| f.at.as_secs() % 8 == 0).collect::<Vec<_>>(),
            "same nemesis seed, same faults"
        );
        assert!(first.windows(2).all(|pair| pair[0].at <= pair[1].at), "in start order");
        for fault in &first {
            assert!(fault.at + fault.duration <= w.test_duration, "{fault:?} ends after the test");
            match (fault.kind, &fault.target) {
                (FaultKind::ProducerCrash, FaultTarget::Producer(i)) => assert!(*i < 2),
                (FaultKind::ConsumerCrash, FaultTarget::Consumer(i)) => assert!(*i < 3),
                (_, FaultTarget::Broker(name)) => assert_eq!(name, "broker-0"),
                other => panic!("unresolved or mismatched target: {other:?}"),
            }
        }
    }

    #[test]
    fn external_commands_get_the_node_name_and_their_failures_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("touched");
        run_command(&format!("echo {{node}} > {}", marker.display()), "kafka-2").unwrap();
        assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), "kafka-2");
        let error = run_command("exit 3", "kafka-2").unwrap_err().to_string();
        assert!(error.contains("exit 3") && error.contains("exit status: 3"), "{error}");
    }

    #[test]
    fn network_kinds_map_to_proxy_faults_with_their_directions() {
        let parameters = FaultParameters {
            delay_ms: Some(200),
            jitter_ms: Some(50),
            direction: Some(ParameterDirection::ToClient),
            ..Default::default()
        };
        assert_eq!(
            net_fault(FaultKind::Latency, &parameters).unwrap(),
            NetFault::Latency {
                delay: Duration::from_millis(200),
                jitter: Duration::from_millis(50),
                directions: Directions::TO_CLIENT
            }
        );
        assert_eq!(net_fault(FaultKind::Down, &FaultParameters::default()).unwrap(), NetFault::Down);
        assert!(net_fault(FaultKind::Crash, &FaultParameters::default()).is_err());
        assert!(net_fault(FaultKind::Latency, &FaultParameters::default()).is_err(), "latency without delay_ms");
    }
}
