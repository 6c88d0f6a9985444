//! A follower's fetchers (Kafka's `ReplicaFetcherThread`s): one thread per leader
//! this node follows partitions of, each on one [`PeerConnection`] to that leader,
//! asking for all of them in one Fetch request at a time.
//!
//! Each partition follows [`FollowerPartition`]: OffsetForLeaderEpoch first (the
//! local log truncated where it leaves the leader's), then Fetch from the local log
//! end with the leader epoch the metadata gives; the leader's batches are appended
//! as they are (`append_replicated`), its high watermark taken, capped at the local
//! end (`set_high_watermark`), and its log start followed up to the local high
//! watermark (`delete_records`, Kafka's `maybeIncrementLogStartOffset`). A fetch
//! below the leader's log start (retention or DeleteRecords there while this node
//! was away) restarts the local log empty at the leader's log start
//! (`truncate_fully_and_start_at`, Kafka's `truncateFullyAndStartAt`), or at the
//! base of the batch that holds it, and fetching goes on from there. A partition
//! the leader refuses (FENCED or UNKNOWN_LEADER_EPOCH, NOT_LEADER_OR_FOLLOWER,
//! UNKNOWN_TOPIC_OR_PARTITION: the leader or this node has not applied the latest
//! metadata yet) is asked again after [`REFUSED_RETRY`]; a broken connection is
//! opened again after a backoff.
//!
//! The reconciler assigns partitions ([`Fetchers::assign`]) without waiting on any
//! socket: each thread writes to the engine only inside its fence (see [`Fence`]),
//! after checking that its assignment did not change since its request went out, so
//! once `assign` returns no thread writes a partition it no longer follows in that
//! leader epoch, and a partition's log never has two fetchers (from an old and a new
//! leader) writing it. A thread whose leader leads nothing here any more is stopped
//! and joined later, once its I/O returns; its connection, and the connection of a
//! thread whose leader moved to another address, is shut down ([`PeerInterrupt`]),
//! so that I/O returns at once when the peer is stopped or cut off.
//!
//! Threads, not shard tasks: the connection is blocking ([`PeerConnection`]) and the
//! engine is reached through its handle like any outside thread
//! (`futures_lite::future::block_on`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, OffsetForLeaderEpochRequest, TopicName as WireTopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::follower::{Action, EpochEnd, FollowerPartition, LocalEpochs};
use super::peer::{PeerConnection, PeerError, PeerInterrupt};
use super::records::NodeId;
use corelog_engine::batch::BatchHeader;
use corelog_engine::log::PartitionStats;
use corelog_engine::shard::EngineHandle;
use corelog_engine::types::{LeaderEpoch, Offset, TopicName, TopicPartition};

/// The Fetch version followers send (v12: `replica_id` in the request; both sides serve it).
const FETCH_VERSION: i16 = 12;
/// OffsetForLeaderEpoch v3+ carries the `replica_id`.
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 4;
/// How long the leader may hold a fetch with nothing new (Kafka's `replica.fetch.wait.max.ms`).
const FETCH_WAIT_MAX_MS: i32 = 500;
/// Per partition and per response (`replica.fetch.max.bytes`, `replica.fetch.response.max.bytes`).
const PARTITION_FETCH_BYTES_MAX: i32 = 1 << 20;
const RESPONSE_FETCH_BYTES_MAX: i32 = 10 << 20;
/// Connecting, and each socket read and write; above [`FETCH_WAIT_MAX_MS`] with room
/// for a leader's slow disk (Kafka's `replica.socket.timeout.ms` is 30 s). It bounds
/// how long a fetcher waits on a leader that stopped answering, but no longer how
/// long the reconciler does: a new leader is fetched from by another thread, and a
/// thread whose leader moves or goes has its connection shut down. Lowering it would
/// not bring a stopped leader back sooner, and would make a leader whose disk stalls
/// for a few seconds see its followers reconnect and fetch the same data again.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);
/// Backoff after a connection failed, doubled up to the max (`replica.fetch.backoff.ms`).
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(100);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// When a partition the leader refused is asked for again.
const REFUSED_RETRY: Duration = Duration::from_millis(200);

/// The partitions to fetch from one leader, each with the leader epoch to fetch in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assignment {
    /// The leader's `host:port`.
    pub address: String,
    pub partitions: BTreeMap<TopicPartition, i32>,
}

/// What the reconciler and one fetcher thread share, behind its [`Fence`].
#[derive(Default)]
struct Control {
    /// The assignment the reconciler set that the thread has not taken yet.
    pending: Option<Assignment>,
    /// The thread was stopped: it writes nothing more and ends.
    stopped: bool,
    /// Breaks the thread's current connection.
    interrupt: Option<PeerInterrupt>,
}

/// A fetcher thread's fence (Kafka's `partitionMapLock` of a fetcher thread): the
/// reconciler changes a thread's assignment, or stops it, only holding this lock,
/// and the thread holds it while it acts on the answers to a request: each truncation,
/// append, high watermark and log start it gives the engine, which it does only if
/// no change came since the request went out (the answers are dropped otherwise:
/// they may be for a partition no longer followed, or followed in a new leader
/// epoch, from scratch). So once [`Fetchers::assign`] returns, a thread writes only
/// what its new assignment follows, and a stopped one writes nothing: the guarantee
/// the reconciler needs before a new leadership starts, since the engine takes a
/// follower's batches (`append_replicated`) from whoever gives them, checking their
/// offsets but not their leader epoch. The thread never holds the lock across
/// socket I/O, so the reconciler waits at most for the engine calls of one answer.
#[derive(Clone, Default)]
struct Fence(Arc<Mutex<Control>>);

impl Fence {
    fn lock(&self) -> MutexGuard<'_, Control> {
        // Nothing under this lock panics but a failed assertion, which ends the process.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The lock, if the thread's assignment is the one its last request was sent
    /// for and it was not stopped.
    fn current(&self) -> Option<MutexGuard<'_, Control>> {
        let control = self.lock();
        (control.pending.is_none() && !control.stopped).then_some(control)
    }

    /// Whether a change is waiting for the thread, or it was stopped.
    fn changed(&self) -> bool {
        self.current().is_none()
    }
}

struct FetcherThread {
    /// The assignment last given to the thread (taken or pending).
    assignment: Assignment,
    fence: Fence,
    /// Wakes the thread when it waits between requests; dropped to stop it.
    wake: flume::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl FetcherThread {
    fn reassign(&mut self, assignment: Assignment) {
        let mut control = self.fence.lock();
        if assignment.address != self.assignment.address {
            // The leader's old address may be dead: no waiting on it.
            if let Some(interrupt) = &control.interrupt {
                interrupt.interrupt();
            }
        }
        control.pending = Some(assignment.clone());
        drop(control);
        self.assignment = assignment;
        // Full: the thread is woken already.
        if self.wake.try_send(()).is_err() {}
    }

    /// Stops the thread and returns it to be joined: it writes nothing from now on,
    /// and its I/O returns at once (a connection attempt, at [`PEER_TIMEOUT`]).
    fn stop(self) -> std::thread::JoinHandle<()> {
        let mut control = self.fence.lock();
        control.stopped = true;
        if let Some(interrupt) = control.interrupt.take() {
            interrupt.interrupt();
        }
        drop(control);
        drop(self.wake);
        self.thread
    }
}

/// Every fetcher thread of this node, by leader. Owned by the reconciler.
pub struct Fetchers {
    node_id: NodeId,
    engine: EngineHandle,
    threads: BTreeMap<NodeId, FetcherThread>,
    /// Stopped threads not joined yet, with their leader.
    stopped: Vec<(NodeId, std::thread::JoinHandle<()>)>,
}

impl Fetchers {
    pub fn new(node_id: NodeId, engine: EngineHandle) -> Fetchers {
        Fetchers { node_id, engine, threads: BTreeMap::new(), stopped: Vec::new() }
    }

    /// Makes the fetchers fetch exactly `wanted` (by leader), stopping the threads of
    /// leaders that have none left and starting threads for new ones. Returns without
    /// waiting on any peer; from then on no thread writes what it no longer follows
    /// (see [`Fence`]).
    pub fn assign(&mut self, mut wanted: BTreeMap<NodeId, Assignment>) {
        wanted.retain(|_, assignment| !assignment.partitions.is_empty());
        self.join_stopped(false);
        let gone: Vec<NodeId> = self.threads.keys().filter(|l| !wanted.contains_key(l)).copied().collect();
        for leader in gone {
            if let Some(thread) = self.threads.remove(&leader) {
                self.stopped.push((leader, thread.stop()));
            }
        }
        for (leader, assignment) in wanted {
            match self.threads.get_mut(&leader) {
                Some(thread) if thread.assignment == assignment => {}
                Some(thread) => thread.reassign(assignment),
                None => match self.spawn(leader, assignment) {
                    Ok(thread) => {
                        self.threads.insert(leader, thread);
                    }
                    Err(error) => tracing::error!("broker {}: starting a fetcher for {leader}: {error}", self.node_id),
                },
            }
        }
    }

    fn spawn(&self, leader: NodeId, assignment: Assignment) -> std::io::Result<FetcherThread> {
        let (wake, woken) = flume::bounded(1);
        let fence = Fence::default();
        let mut fetcher = Fetcher {
            node_id: self.node_id,
            leader,
            engine: self.engine.clone(),
            fence: fence.clone(),
            address: assignment.address.clone(),
            partitions: BTreeMap::new(),
            connection: None,
            backoff: RECONNECT_BACKOFF_MIN,
        };
        fetcher.take(&assignment);
        let thread = std::thread::Builder::new()
            .name(format!("corelog-fetch-{}-from-{leader}", self.node_id))
            .spawn(move || fetcher.run(&woken))?;
        Ok(FetcherThread { assignment, fence, wake, thread })
    }

    /// Joins the stopped threads that ended, or all of them when `all`.
    fn join_stopped(&mut self, all: bool) {
        let (ended, running) = std::mem::take(&mut self.stopped).into_iter().partition(|(_, t)| all || t.is_finished());
        self.stopped = running;
        for (leader, thread) in ended {
            if thread.join().is_err() {
                tracing::error!("broker {}: the fetcher thread for leader {leader} panicked", self.node_id);
            }
        }
    }

    /// Stops and joins every thread.
    pub fn stop_all(&mut self) {
        for (leader, thread) in std::mem::take(&mut self.threads) {
            self.stopped.push((leader, thread.stop()));
        }
        self.join_stopped(true);
    }
}

impl Drop for Fetchers {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// One followed partition as its fetcher sees it.
struct Followed {
    state: FollowerPartition,
    /// Refused by the leader: not asked again before this.
    retry_at: Option<Instant>,
}

/// The engine's view of a local partition, for [`FollowerPartition`].
struct Local(PartitionStats);

impl LocalEpochs for Local {
    fn latest_epoch(&self) -> i32 {
        self.0.leader_epochs.latest_epoch().map_or(-1, |e| e.0)
    }

    fn end_offset_for(&self, epoch: i32) -> (i32, i64) {
        let end = self.0.leader_epochs.end_offset_for(LeaderEpoch(epoch), self.0.log_end_offset);
        (end.leader_epoch.0, end.end_offset.0)
    }

    fn log_end(&self) -> i64 {
        self.0.log_end_offset.0
    }

    fn earliest_epoch_start(&self) -> i64 {
        self.0.leader_epochs.entries().first().map_or(self.0.log_start_offset.0, |e| e.start_offset.0)
    }
}

struct Fetcher {
    node_id: NodeId,
    leader: NodeId,
    engine: EngineHandle,
    fence: Fence,
    address: String,
    partitions: BTreeMap<TopicPartition, Followed>,
    connection: Option<PeerConnection>,
    backoff: Duration,
}

type Answers<T> = Vec<(TopicPartition, Result<T, ResponseError>)>;

/// What a fetcher's round did.
enum Round {
    /// Asked the leader (or dropped answers a change made stale): the next round now.
    Asked,
    /// Nothing to ask now: the next round after [`REFUSED_RETRY`], or a change.
    Idle,
    /// The connection failed: the next round after this backoff, or a change.
    Backoff(Duration),
}

impl Fetcher {
    fn run(&mut self, woken: &flume::Receiver<()>) {
        while self.take_pending() {
            let wait = match self.step() {
                Round::Asked => continue,
                Round::Idle => REFUSED_RETRY,
                Round::Backoff(backoff) => backoff,
            };
            if let Err(flume::RecvTimeoutError::Disconnected) = woken.recv_timeout(wait) {
                return;
            }
        }
    }

    /// Takes the assignment the reconciler set since the last round, if any.
    /// Returns false once the thread is stopped.
    fn take_pending(&mut self) -> bool {
        let fence = self.fence.clone();
        let mut control = fence.lock();
        if control.stopped {
            return false;
        }
        if let Some(assignment) = control.pending.take() {
            self.take(&assignment);
        }
        if self.connection.is_none() {
            control.interrupt = None;
        }
        true
    }

    /// Acts on the answers to a request (`act`, the engine writes) inside the fence,
    /// unless a change came since the request went out. Returns whether it did.
    fn fenced<T>(&mut self, answers: T, act: fn(&mut Fetcher, T)) -> bool {
        let fence = self.fence.clone();
        let Some(_current) = fence.current() else { return false };
        act(self, answers);
        true
    }

    /// Takes a new assignment: new partitions (or new leader epochs) start over
    /// with truncation, removed ones are dropped.
    fn take(&mut self, assignment: &Assignment) {
        if assignment.address != self.address {
            self.address = assignment.address.clone();
            self.connection = None;
        }
        self.partitions.retain(|p, f| assignment.partitions.get(p) == Some(&f.state.leader_epoch));
        for (partition, leader_epoch) in &assignment.partitions {
            if self.partitions.contains_key(partition) {
                continue;
            }
            match self.local(partition) {
                Ok(local) => {
                    let state = FollowerPartition::new(self.leader, *leader_epoch, local.0.high_watermark.0, &local);
                    self.partitions.insert(partition.clone(), Followed { state, retry_at: None });
                }
                Err(error) => tracing::warn!("broker {}: following {partition}: {error}", self.node_id),
            }
        }
    }

    fn local(&self, partition: &TopicPartition) -> corelog_engine::error::Result<Local> {
        futures_lite::future::block_on(self.engine.stats(partition)).map(Local)
    }

    /// One round: the epoch questions, then one fetch.
    ///
    /// The local offsets a request names are read inside the fence: once a
    /// partition is reassigned (to another leader, or to lead here), this thread
    /// no longer reads it, so it never tells its old leader a log end that includes
    /// records written since in another leader epoch. The old leader, if it has not
    /// heard of the new epoch (cut off from the controller), would count that end
    /// for its high watermark and acknowledge records no other replica has.
    fn step(&mut self) -> Round {
        let fence = self.fence.clone();
        let Some(current) = fence.current() else { return Round::Asked };
        let now = Instant::now();
        let mut asks = Vec::new();
        let mut fetches = Vec::new();
        for (partition, followed) in &mut self.partitions {
            if followed.retry_at.is_some_and(|at| at > now) {
                continue;
            }
            followed.retry_at = None;
            let Ok(local) = futures_lite::future::block_on(self.engine.stats(partition)).map(Local) else {
                followed.retry_at = Some(now + REFUSED_RETRY);
                continue;
            };
            match followed.state.next(&local) {
                Action::AskEpochEnd { epoch, leader_epoch } => asks.push((partition.clone(), epoch, leader_epoch)),
                Action::Fetch { offset, leader_epoch } => fetches.push((partition.clone(), offset, leader_epoch)),
                // `next` asks or fetches; truncations and restarts come from answers.
                Action::Truncate { .. } | Action::StartAt { .. } => {}
            }
        }
        drop(current);
        if asks.is_empty() && fetches.is_empty() {
            return Round::Idle;
        }
        if self.connection.is_none() {
            if let Some(round) = self.connect() {
                return round;
            }
        }
        if !asks.is_empty() {
            match self.ask_epoch_ends(&asks) {
                Ok(answers) => {
                    if !self.fenced(answers, Fetcher::on_epoch_ends) {
                        return Round::Asked;
                    }
                }
                Err(error) => return self.broken(error),
            }
        }
        // Partitions that just truncated fetch in the next round.
        let fetches: Vec<_> = fetches.into_iter().filter(|(p, _, _)| self.partitions.contains_key(p)).collect();
        if !fetches.is_empty() {
            match self.fetch(&fetches) {
                Ok(answers) => {
                    if !self.fenced(answers, Fetcher::on_fetched) {
                        return Round::Asked;
                    }
                }
                Err(error) => return self.broken(error),
            }
        }
        Round::Asked
    }

    /// Connects to the leader and lets the reconciler interrupt the connection.
    /// Returns the round to end with instead of asking: the connection failed, or a
    /// change came while connecting (to be taken first: maybe a new address, or the
    /// stop; a change from now on interrupts the connection when it must).
    fn connect(&mut self) -> Option<Round> {
        let client_id = format!("corelog-broker-{}", self.node_id);
        let connected = PeerConnection::connect(&self.address, &client_id, PEER_TIMEOUT);
        let (connection, interrupt) = match connected.and_then(|c| c.interrupter().map(|i| (c, i))) {
            Ok(connected) => connected,
            Err(error) => {
                tracing::debug!("broker {}: connecting to leader {}: {error}", self.node_id, self.leader);
                return Some(self.back_off());
            }
        };
        let fence = self.fence.clone();
        let mut control = fence.lock();
        control.interrupt = Some(interrupt);
        self.connection = Some(connection);
        self.backoff = RECONNECT_BACKOFF_MIN;
        let changed = control.pending.is_some() || control.stopped;
        changed.then_some(Round::Asked)
    }

    fn broken(&mut self, error: PeerError) -> Round {
        if self.fence.changed() {
            // Most likely interrupted by the reconciler.
            tracing::debug!("broker {}: fetching from leader {}: {error}", self.node_id, self.leader);
        } else {
            tracing::info!("broker {}: fetching from leader {}: {error}", self.node_id, self.leader);
        }
        self.connection = None;
        self.back_off()
    }

    fn back_off(&mut self) -> Round {
        let backoff = self.backoff;
        self.backoff = (self.backoff * 2).min(RECONNECT_BACKOFF_MAX);
        Round::Backoff(backoff)
    }

    fn connection(&mut self) -> &mut PeerConnection {
        self.connection.as_mut().expect("connected before asking")
    }

    /// Asks the leader where each `(partition, epoch)` ends, naming the leader epoch
    /// this follower follows in: a node that does not lead in that epoch (one that
    /// has not applied its election yet, or was deposed) answers an error instead
    /// of an end from a log that may not be the leader's.
    fn ask_epoch_ends(&mut self, asks: &[(TopicPartition, i32, i32)]) -> Result<Answers<EpochEnd>, PeerError> {
        let mut topics: BTreeMap<&TopicName, Vec<OffsetForLeaderPartition>> = BTreeMap::new();
        for (partition, epoch, leader_epoch) in asks {
            topics.entry(&partition.topic).or_default().push(
                OffsetForLeaderPartition::default()
                    .with_partition(partition.partition.0)
                    .with_current_leader_epoch(*leader_epoch)
                    .with_leader_epoch(*epoch),
            );
        }
        let request = OffsetForLeaderEpochRequest::default().with_replica_id(BrokerId(self.node_id)).with_topics(
            topics
                .into_iter()
                .map(|(topic, partitions)| {
                    OffsetForLeaderTopic::default().with_topic(wire_topic(topic)).with_partitions(partitions)
                })
                .collect(),
        );
        let response = self.connection().request(&request, OFFSET_FOR_LEADER_EPOCH_VERSION)?;
        let mut answers = Vec::new();
        for topic in response.topics {
            let Ok(name) = TopicName::new(topic.topic.0.as_str()) else { continue };
            for p in topic.partitions {
                let partition = TopicPartition::new(name.clone(), corelog_engine::types::PartitionId(p.partition));
                let answer = match error_of(p.error_code) {
                    Some(error) => Err(error),
                    None => Ok(EpochEnd { epoch: p.leader_epoch, end_offset: p.end_offset }),
                };
                answers.push((partition, answer));
            }
        }
        Ok(answers)
    }

    fn on_epoch_ends(&mut self, answers: Answers<EpochEnd>) {
        for (partition, answer) in answers {
            let Some(followed) = self.partitions.get_mut(&partition) else { continue };
            let answer = match answer {
                Ok(answer) => answer,
                Err(error) => {
                    tracing::debug!("broker {}: {partition}: epoch end refused: {error:?}", self.node_id);
                    followed.retry_at = Some(Instant::now() + REFUSED_RETRY);
                    continue;
                }
            };
            let Ok(local) = futures_lite::future::block_on(self.engine.stats(&partition)).map(Local) else { continue };
            if let Some(offset) = followed.state.epoch_end(answer, &local) {
                if offset < local.log_end() {
                    tracing::info!(
                        "broker {}: {partition}: truncating to {offset} (log end {}) for leader {} epoch {}",
                        self.node_id,
                        local.log_end(),
                        self.leader,
                        followed.state.leader_epoch
                    );
                    if let Err(error) = futures_lite::future::block_on(self.engine.truncate(&partition, Offset(offset)))
                    {
                        tracing::error!("broker {}: truncating {partition} to {offset}: {error}", self.node_id);
                        followed.retry_at = Some(Instant::now() + REFUSED_RETRY);
                        continue;
                    }
                }
                if let Ok(local) = futures_lite::future::block_on(self.engine.stats(&partition)).map(Local) {
                    followed.state.truncated(&local);
                }
            }
        }
    }

    fn fetch(&mut self, fetches: &[(TopicPartition, i64, i32)]) -> Result<Answers<Fetched>, PeerError> {
        let mut topics: BTreeMap<&TopicName, Vec<FetchPartition>> = BTreeMap::new();
        for (partition, offset, leader_epoch) in fetches {
            topics.entry(&partition.topic).or_default().push(
                FetchPartition::default()
                    .with_partition(partition.partition.0)
                    .with_current_leader_epoch(*leader_epoch)
                    .with_fetch_offset(*offset)
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(PARTITION_FETCH_BYTES_MAX),
            );
        }
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(self.node_id))
            .with_max_wait_ms(FETCH_WAIT_MAX_MS)
            .with_min_bytes(1)
            .with_max_bytes(RESPONSE_FETCH_BYTES_MAX)
            .with_session_epoch(-1)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(topic, partitions)| {
                        FetchTopic::default().with_topic(wire_topic(topic)).with_partitions(partitions)
                    })
                    .collect(),
            );
        let response = self.connection().request(&request, FETCH_VERSION)?;
        if let Some(error) = error_of(response.error_code) {
            return Err(PeerError::Protocol {
                address: self.address.clone(),
                message: format!("fetch refused: {error:?}"),
            });
        }
        let offsets: BTreeMap<&TopicPartition, i64> = fetches.iter().map(|(p, o, _)| (p, *o)).collect();
        let mut answers = Vec::new();
        for topic in response.responses {
            let Ok(name) = TopicName::new(topic.topic.0.as_str()) else { continue };
            for p in topic.partitions {
                let partition =
                    TopicPartition::new(name.clone(), corelog_engine::types::PartitionId(p.partition_index));
                let Some(offset) = offsets.get(&partition).copied() else { continue };
                let answer = match error_of(p.error_code) {
                    None => Ok(Fetched::Records(Records {
                        fetch_offset: offset,
                        high_watermark: p.high_watermark,
                        log_start_offset: p.log_start_offset,
                        bytes: p.records.map(|r| r.to_vec()).unwrap_or_default(),
                    })),
                    Some(ResponseError::OffsetOutOfRange) => {
                        Ok(Fetched::OutOfRange { offset, log_start_offset: p.log_start_offset })
                    }
                    Some(error) => Err(error),
                };
                answers.push((partition, answer));
            }
        }
        Ok(answers)
    }

    fn on_fetched(&mut self, answers: Answers<Fetched>) {
        for (partition, answer) in answers {
            let Some(followed) = self.partitions.get_mut(&partition) else { continue };
            let replica = LocalReplica { node_id: self.node_id, engine: &self.engine, partition: &partition };
            match answer {
                Ok(Fetched::Records(records)) => replica.take_records(followed, records),
                Ok(Fetched::OutOfRange { offset, log_start_offset }) => {
                    replica.out_of_range(followed, offset, log_start_offset)
                }
                Err(error) => {
                    tracing::debug!("broker {}: {partition}: fetch refused: {error:?}", self.node_id);
                    followed.retry_at = Some(Instant::now() + REFUSED_RETRY);
                }
            }
        }
    }
}

/// One followed partition's local log, as its fetcher changes it after a fetch.
struct LocalReplica<'a> {
    node_id: NodeId,
    engine: &'a EngineHandle,
    partition: &'a TopicPartition,
}

impl LocalReplica<'_> {
    fn stats(&self) -> Option<Local> {
        futures_lite::future::block_on(self.engine.stats(self.partition)).map(Local).ok()
    }

    /// Appends the leader's batches, takes its high watermark (capped at the local
    /// log end) and follows its log start.
    fn take_records(&self, followed: &mut Followed, records: Records) {
        let (node_id, partition) = (self.node_id, self.partition);
        if let Some(base) = straddling_base(&records.bytes, records.fetch_offset) {
            if !self.start_at_batch(followed, base, records.fetch_offset) {
                return;
            }
        }
        if !records.bytes.is_empty() {
            let appended = self.engine.append_replicated(partition, records.bytes);
            if let Err(error) = futures_lite::future::block_on(appended) {
                tracing::warn!("broker {node_id}: {partition}: appending the leader's batches: {error}");
                followed.retry_at = Some(Instant::now() + REFUSED_RETRY);
                return;
            }
        }
        let Some(local) = self.stats() else { return };
        let mut local_high_watermark = local.0.high_watermark.0;
        let high_watermark = followed.state.fetched(records.high_watermark, &local);
        if high_watermark != local_high_watermark {
            let set = self.engine.set_high_watermark(partition, Offset(high_watermark));
            match futures_lite::future::block_on(set) {
                Ok(set) => local_high_watermark = set.0,
                Err(error) => tracing::warn!("broker {node_id}: {partition}: high watermark {high_watermark}: {error}"),
            }
        }
        self.follow_log_start(records.log_start_offset, local.0.log_start_offset.0, local_high_watermark);
    }

    /// Kafka's `maybeIncrementLogStartOffset(leaderLogStartOffset)`: records the
    /// leader deleted (retention, DeleteRecords) go here too, but only up to the local
    /// high watermark, where the engine's delete-records stops; the rest goes at a
    /// later fetch, once the high watermark has passed it.
    fn follow_log_start(&self, leader_start: i64, local_start: i64, local_high_watermark: i64) {
        let log_start = leader_start.min(local_high_watermark);
        if log_start <= local_start {
            return;
        }
        let (node_id, partition) = (self.node_id, self.partition);
        match futures_lite::future::block_on(self.engine.delete_records(partition, Offset(log_start))) {
            Ok(moved) => tracing::debug!(
                "broker {node_id}: {partition}: log start {local_start} -> {moved}, the leader's is {leader_start}"
            ),
            Err(error) => tracing::warn!("broker {node_id}: {partition}: log start to {log_start}: {error}"),
        }
    }

    /// The leader answered OFFSET_OUT_OF_RANGE for a fetch from `offset`, its log
    /// starting at `leader_start`.
    fn out_of_range(&self, followed: &mut Followed, offset: i64, leader_start: i64) {
        let Some(local) = self.stats() else { return };
        // The response names the leader's log start; its end is below `offset` when
        // `offset` is not below the start.
        let leader_start = leader_start.max(0);
        let leader_end = if offset < leader_start { leader_start } else { offset - 1 };
        match followed.state.out_of_range(offset, leader_start, leader_end, &local) {
            Action::StartAt { offset } => self.start_at(followed, offset, local.log_end()),
            action => {
                tracing::info!("broker {}: {}: out of range, next {action:?}", self.node_id, self.partition)
            }
        }
    }

    /// Kafka's `truncateFullyAndStartAt`: the leader's log starts at `offset`, past
    /// this replica's end, so nothing here continues it; the local log restarts
    /// empty there and the next round fetches from it.
    fn start_at(&self, followed: &mut Followed, offset: i64, log_end: i64) {
        tracing::info!(
            "broker {}: {}: the leader's log starts at {offset}, past this replica's end {log_end}: restarting the \
             log empty at {offset}",
            self.node_id,
            self.partition
        );
        self.restart_at(followed, offset);
    }

    /// The first batch fetched begins at `base`, before `fetch_offset`, this log's
    /// end: the leader's log start is inside that batch (DeleteRecords takes any
    /// offset). When this log is empty, restarted there by [`Self::start_at`], it
    /// restarts again at the batch's base to take the batch whole, as Kafka's
    /// `Partition.appendRecordsToFollowerOrFutureReplica` does; the log start
    /// follows the leader's again after the append. Otherwise the append refuses
    /// the batch. Returns false when a restart failed.
    fn start_at_batch(&self, followed: &mut Followed, base: i64, fetch_offset: i64) -> bool {
        let Some(local) = self.stats() else { return false };
        if (local.0.log_start_offset.0, local.log_end()) != (fetch_offset, fetch_offset) {
            return true;
        }
        tracing::info!(
            "broker {}: {}: the first batch fetched starts at {base}, before this replica's log start \
             {fetch_offset} (the leader's is inside it): restarting the empty log at {base}",
            self.node_id,
            self.partition
        );
        self.restart_at(followed, base)
    }

    /// Empties the local log and starts it at `offset`. Returns false when the
    /// engine refused, and the partition waits before it is fetched again.
    fn restart_at(&self, followed: &mut Followed, offset: i64) -> bool {
        let (node_id, partition) = (self.node_id, self.partition);
        let restarted = self.engine.truncate_fully_and_start_at(partition, Offset(offset));
        if let Err(error) = futures_lite::future::block_on(restarted) {
            tracing::error!("broker {node_id}: {partition}: restarting the log empty at {offset}: {error}");
            followed.retry_at = Some(Instant::now() + RECONNECT_BACKOFF_MAX);
            return false;
        }
        if let Some(local) = self.stats() {
            followed.state.truncated(&local);
        }
        true
    }
}

/// The base offset of the first batch of `records` when it begins before
/// `fetch_offset` and holds it.
fn straddling_base(records: &[u8], fetch_offset: i64) -> Option<i64> {
    let header = BatchHeader::parse(records).ok()?;
    let holds = header.base_offset.0 < fetch_offset && fetch_offset <= header.last_offset().0;
    holds.then_some(header.base_offset.0)
}

/// The leader's answer to a fetch from `fetch_offset`: its batches from there (maybe
/// none; the first may begin before it), its high watermark and its log start.
struct Records {
    fetch_offset: i64,
    high_watermark: i64,
    log_start_offset: i64,
    bytes: Vec<u8>,
}

/// A partition's fetch answer the follower acts on.
enum Fetched {
    /// The leader's batches.
    Records(Records),
    /// OFFSET_OUT_OF_RANGE for `offset`, the leader's log starting at `log_start_offset`.
    OutOfRange { offset: i64, log_start_offset: i64 },
}

fn wire_topic(topic: &TopicName) -> WireTopicName {
    WireTopicName(StrBytes::from_string(topic.to_string()))
}

fn error_of(code: i16) -> Option<ResponseError> {
    match code {
        0 => None,
        code => Some(ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use corelog_engine::batch::{build_value_batch, stamp};
    use corelog_engine::config::TopicConfig;
    use corelog_engine::shard::{Engine, EngineConfig};
    use corelog_engine::types::{PartitionId, TimestampMs};
    use futures_lite::future::block_on;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{ApiKey, FetchResponse, RequestHeader, ResponseHeader};
    use kafka_protocol::protocol::{Decodable, Encodable};
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    /// Long enough for any thread to be scheduled on a loaded machine; far below
    /// [`PEER_TIMEOUT`], what a fetcher blocked on a silent leader used to hold the
    /// reconciler for.
    const PROMPTLY: Duration = Duration::from_secs(3);

    /// An engine with the replicated partition `t-0`, empty.
    fn engine_with_partition() -> (tempfile::TempDir, Engine, TopicPartition) {
        // The build disk: O_DIRECT needs a real file system, and /tmp may be tmpfs.
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/tmp");
        std::fs::create_dir_all(root).expect("create target/tmp");
        let dir = tempfile::tempdir_in(root).expect("tempdir on the build disk");
        let mut config = EngineConfig::new(dir.path());
        config.shard_count = 1;
        config.cpus = corelog_engine::cpus::ShardCpus::Unpinned;
        let engine = Engine::start(config).expect("engine");
        let name = TopicName::new("t").expect("name");
        block_on(engine.handle().create_topic(name.clone(), 1, TopicConfig::default())).expect("topic");
        let partition = TopicPartition::new(name, PartitionId(0));
        block_on(engine.handle().set_replicated(&partition, true)).expect("replicated");
        (dir, engine, partition)
    }

    /// What a fake leader saw on its connections.
    #[derive(Debug, PartialEq, Eq)]
    enum Seen {
        /// A request: its API key, and for a Fetch the current leader epoch of its first partition.
        Request { api_key: i16, leader_epoch: Option<i32> },
        /// The follower closed or shut down its connection.
        Closed,
    }

    /// Reads one request frame; `None` at the end of the stream.
    fn read_request(stream: &mut TcpStream) -> Option<(RequestHeader, Bytes)> {
        let mut size = [0u8; 4];
        stream.read_exact(&mut size).ok()?;
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        stream.read_exact(&mut body).ok()?;
        let api_key = i16::from_be_bytes([body[0], body[1]]);
        let version = i16::from_be_bytes([body[2], body[3]]);
        let header_version = ApiKey::try_from(api_key).expect("known key").request_header_version(version);
        let mut rest = Bytes::from(body);
        let header = RequestHeader::decode(&mut rest, header_version).expect("request header");
        Some((header, rest))
    }

    fn seen(header: &RequestHeader, mut body: Bytes) -> Seen {
        let leader_epoch = (header.request_api_key == ApiKey::Fetch as i16).then(|| {
            let request = FetchRequest::decode(&mut body, header.request_api_version).expect("fetch");
            request.topics[0].partitions[0].current_leader_epoch
        });
        Seen::Request { api_key: header.request_api_key, leader_epoch }
    }

    /// A leader that takes connections and reads requests but never answers (a
    /// stopped process, or a link that holds every byte): each request and each
    /// closed connection is reported.
    fn silent_leader() -> (String, flume::Receiver<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let (report, seen_by_leader) = flume::unbounded();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let report = report.clone();
                std::thread::spawn(move || {
                    while let Some((header, body)) = read_request(&mut stream) {
                        if report.send(seen(&header, body)).is_err() {
                            return;
                        }
                    }
                    let _ = report.send(Seen::Closed);
                });
            }
        });
        (address, seen_by_leader)
    }

    fn next(seen_by_leader: &flume::Receiver<Seen>) -> Seen {
        seen_by_leader.recv_timeout(PROMPTLY).expect("the leader saw something")
    }

    fn assignment(address: &str, partition: &TopicPartition, leader_epoch: i32) -> Assignment {
        Assignment { address: address.to_string(), partitions: BTreeMap::from([(partition.clone(), leader_epoch)]) }
    }

    const FETCH: i16 = ApiKey::Fetch as i16;

    #[test]
    fn moving_or_stopping_a_fetcher_does_not_wait_for_a_silent_leader() {
        let (_dir, engine, partition) = engine_with_partition();
        let mut fetchers = Fetchers::new(2, engine.handle());
        let (old_address, seen_by_old) = silent_leader();
        let (new_address, seen_by_new) = silent_leader();
        fetchers.assign(BTreeMap::from([(1, assignment(&old_address, &partition, 0))]));
        // The fetcher waits for an answer that does not come.
        assert_eq!(next(&seen_by_old), Seen::Request { api_key: FETCH, leader_epoch: Some(0) });

        // The controller elects broker 3 in epoch 1.
        let started = Instant::now();
        fetchers.assign(BTreeMap::from([(3, assignment(&new_address, &partition, 1))]));
        let moved_in = started.elapsed();
        assert!(moved_in < PROMPTLY, "assign waited {moved_in:?} for the old leader");
        assert_eq!(next(&seen_by_old), Seen::Closed, "the old leader's connection is shut down");
        assert_eq!(next(&seen_by_new), Seen::Request { api_key: FETCH, leader_epoch: Some(1) });

        // Stopping joins both threads: the old one ended once its read was interrupted.
        let started = Instant::now();
        fetchers.stop_all();
        let stopped_in = started.elapsed();
        assert!(stopped_in < PROMPTLY, "stopping waited {stopped_in:?} for the leaders");
        assert_eq!(next(&seen_by_new), Seen::Closed);
        assert!(seen_by_old.try_recv().is_err(), "nothing more reached the old leader");
        eprintln!("moved in {moved_in:?}, stopped in {stopped_in:?}");
        drop(fetchers);
        engine.shutdown().expect("shutdown");
    }

    /// Answers `header`'s Fetch of `partition` with `records`, at high watermark `high_watermark`.
    fn answer_fetch(
        stream: &mut TcpStream,
        header: &RequestHeader,
        partition: &TopicPartition,
        records: &[u8],
        high_watermark: i64,
    ) {
        let version = header.request_api_version;
        let mut frame = vec![0u8; 4];
        ResponseHeader::default()
            .with_correlation_id(header.correlation_id)
            .encode(&mut frame, ApiKey::Fetch.response_header_version(version))
            .expect("response header");
        FetchResponse::default()
            .with_responses(vec![FetchableTopicResponse::default()
                .with_topic(wire_topic(&partition.topic))
                .with_partitions(vec![PartitionData::default()
                    .with_partition_index(partition.partition.0)
                    .with_high_watermark(high_watermark)
                    .with_log_start_offset(0)
                    .with_records(Some(Bytes::copy_from_slice(records)))])])
            .encode(&mut frame, version)
            .expect("fetch response");
        let size = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&size.to_be_bytes());
        stream.write_all(&frame).expect("answer");
    }

    #[test]
    fn an_answer_that_arrives_after_a_change_is_not_written() {
        let (_dir, engine, partition) = engine_with_partition();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let mut fetchers = Fetchers::new(2, engine.handle());
        fetchers.assign(BTreeMap::from([(1, assignment(&address, &partition, 0))]));
        let (mut stream, _) = listener.accept().expect("the follower connects");
        let (first, body) = read_request(&mut stream).expect("a request");
        assert_eq!(seen(&first, body), Seen::Request { api_key: FETCH, leader_epoch: Some(0) });

        // The same leader, elected again in epoch 1, while the epoch-0 fetch is out:
        // the change does not wait for its answer.
        let started = Instant::now();
        fetchers.assign(BTreeMap::from([(1, assignment(&address, &partition, 1))]));
        assert!(started.elapsed() < PROMPTLY, "assign waited {:?} for the fetch", started.elapsed());

        // The epoch-0 answer comes after the change: dropped, and the fetch asked
        // again in epoch 1 on the same connection.
        let mut batch = build_value_batch(TimestampMs(0), 1, 10);
        stamp(&mut batch, Offset(0), LeaderEpoch(0));
        answer_fetch(&mut stream, &first, &partition, &batch, 1);
        let (second, body) = read_request(&mut stream).expect("a second request");
        assert_eq!(seen(&second, body), Seen::Request { api_key: FETCH, leader_epoch: Some(1) });
        let stats = block_on(engine.handle().stats(&partition)).expect("stats");
        assert_eq!(stats.log_end_offset, Offset(0), "the stale answer was not appended");

        // The same batch answered in epoch 1 is.
        answer_fetch(&mut stream, &second, &partition, &batch, 1);
        let deadline = Instant::now() + PROMPTLY;
        while block_on(engine.handle().stats(&partition)).expect("stats").log_end_offset != Offset(1) {
            assert!(Instant::now() < deadline, "the epoch-1 answer was not appended");
            std::thread::sleep(Duration::from_millis(10));
        }
        fetchers.stop_all();
        drop(fetchers);
        engine.shutdown().expect("shutdown");
    }
}
