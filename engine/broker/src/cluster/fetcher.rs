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
//! The reconciler assigns partitions ([`Fetchers::assign`]): the threads whose
//! partitions change take the change between two requests and confirm it, and a
//! thread whose leader leads nothing here any more is stopped and joined, so a
//! partition is never fetched by two threads (from an old and a new leader) at once.
//!
//! Threads, not shard tasks: the connection is blocking ([`PeerConnection`]) and the
//! engine is reached through its handle like any outside thread
//! (`futures_lite::future::block_on`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, OffsetForLeaderEpochRequest, TopicName as WireTopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::follower::{Action, EpochEnd, FollowerPartition, LocalEpochs};
use super::peer::PeerConnection;
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
/// Socket reads and writes; above [`FETCH_WAIT_MAX_MS`] with room for a slow disk.
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

struct FetcherThread {
    assignment: Assignment,
    commands: flume::Sender<(Assignment, flume::Sender<()>)>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

/// Every fetcher thread of this node, by leader. Owned by the reconciler.
pub struct Fetchers {
    node_id: NodeId,
    engine: EngineHandle,
    threads: BTreeMap<NodeId, FetcherThread>,
}

impl Fetchers {
    pub fn new(node_id: NodeId, engine: EngineHandle) -> Fetchers {
        Fetchers { node_id, engine, threads: BTreeMap::new() }
    }

    /// Makes the fetchers fetch exactly `wanted` (by leader), stopping the threads of
    /// leaders that have none left and starting threads for new ones. Returns once
    /// every changed thread took its change.
    pub fn assign(&mut self, mut wanted: BTreeMap<NodeId, Assignment>) {
        wanted.retain(|_, assignment| !assignment.partitions.is_empty());
        let gone: Vec<NodeId> = self.threads.keys().filter(|l| !wanted.contains_key(l)).copied().collect();
        for leader in gone {
            if let Some(thread) = self.threads.remove(&leader) {
                stop(leader, thread);
            }
        }
        let mut confirmations = Vec::new();
        for (leader, assignment) in wanted {
            match self.threads.get_mut(&leader) {
                Some(thread) if thread.assignment == assignment => {}
                Some(thread) => {
                    let (done, confirmed) = flume::bounded(1);
                    thread.assignment = assignment.clone();
                    if thread.commands.send((assignment, done)).is_ok() {
                        confirmations.push(confirmed);
                    }
                }
                None => match self.spawn(leader, assignment) {
                    Ok(thread) => {
                        self.threads.insert(leader, thread);
                    }
                    Err(error) => tracing::error!("broker {}: starting a fetcher for {leader}: {error}", self.node_id),
                },
            }
        }
        for confirmed in confirmations {
            // A thread that died drops its sender: nothing to wait for.
            let _ = confirmed.recv();
        }
    }

    fn spawn(&self, leader: NodeId, assignment: Assignment) -> std::io::Result<FetcherThread> {
        let (commands, received) = flume::bounded(1);
        let stop = Arc::new(AtomicBool::new(false));
        let mut fetcher = Fetcher {
            node_id: self.node_id,
            leader,
            engine: self.engine.clone(),
            address: assignment.address.clone(),
            partitions: BTreeMap::new(),
            connection: None,
            backoff: RECONNECT_BACKOFF_MIN,
        };
        fetcher.take(&assignment);
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("corelog-fetch-{}-from-{leader}", self.node_id))
            .spawn(move || fetcher.run(&received, &stopped))?;
        Ok(FetcherThread { assignment, commands, stop, thread })
    }

    /// Stops and joins every thread.
    pub fn stop_all(&mut self) {
        for (leader, thread) in std::mem::take(&mut self.threads) {
            stop(leader, thread);
        }
    }
}

impl Drop for Fetchers {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn stop(leader: NodeId, thread: FetcherThread) {
    thread.stop.store(true, Ordering::Release);
    drop(thread.commands);
    if thread.thread.join().is_err() {
        tracing::error!("the fetcher thread for leader {leader} panicked");
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
    address: String,
    partitions: BTreeMap<TopicPartition, Followed>,
    connection: Option<PeerConnection>,
    backoff: Duration,
}

type Answers<T> = Vec<(TopicPartition, Result<T, ResponseError>)>;

impl Fetcher {
    fn run(&mut self, commands: &flume::Receiver<(Assignment, flume::Sender<()>)>, stop: &AtomicBool) {
        while !stop.load(Ordering::Acquire) {
            loop {
                match commands.try_recv() {
                    Ok((assignment, done)) => {
                        self.take(&assignment);
                        let _ = done.send(());
                    }
                    Err(flume::TryRecvError::Empty) => break,
                    Err(flume::TryRecvError::Disconnected) => return,
                }
            }
            if !self.step() {
                // Nothing to ask now: wait for a change or the next retry.
                match commands.recv_timeout(REFUSED_RETRY) {
                    Ok((assignment, done)) => {
                        self.take(&assignment);
                        let _ = done.send(());
                    }
                    Err(flume::RecvTimeoutError::Timeout) => {}
                    Err(flume::RecvTimeoutError::Disconnected) => return,
                }
            }
        }
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

    /// One round: the epoch questions, then one fetch. Returns whether anything was asked.
    fn step(&mut self) -> bool {
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
        if asks.is_empty() && fetches.is_empty() {
            return false;
        }
        if self.connection.is_none() {
            match PeerConnection::connect(&self.address, &format!("corelog-broker-{}", self.node_id), PEER_TIMEOUT) {
                Ok(connection) => {
                    self.connection = Some(connection);
                    self.backoff = RECONNECT_BACKOFF_MIN;
                }
                Err(error) => {
                    tracing::debug!("broker {}: connecting to leader {}: {error}", self.node_id, self.leader);
                    std::thread::sleep(self.backoff);
                    self.backoff = (self.backoff * 2).min(RECONNECT_BACKOFF_MAX);
                    return true;
                }
            }
        }
        if !asks.is_empty() {
            match self.ask_epoch_ends(&asks) {
                Ok(answers) => self.on_epoch_ends(answers),
                Err(error) => return self.broken(error),
            }
        }
        // Partitions that just truncated fetch in the next round.
        let fetches: Vec<_> = fetches.into_iter().filter(|(p, _, _)| self.partitions.contains_key(p)).collect();
        if !fetches.is_empty() {
            match self.fetch(&fetches) {
                Ok(answers) => self.on_fetched(answers),
                Err(error) => return self.broken(error),
            }
        }
        true
    }

    fn broken(&mut self, error: super::peer::PeerError) -> bool {
        tracing::info!("broker {}: fetching from leader {}: {error}", self.node_id, self.leader);
        self.connection = None;
        std::thread::sleep(self.backoff);
        self.backoff = (self.backoff * 2).min(RECONNECT_BACKOFF_MAX);
        true
    }

    fn connection(&mut self) -> &mut PeerConnection {
        self.connection.as_mut().expect("connected before asking")
    }

    /// Asks the leader where each `(partition, epoch)` ends, naming the leader epoch
    /// this follower follows in: a node that does not lead in that epoch (one that
    /// has not applied its election yet, or was deposed) answers an error instead
    /// of an end from a log that may not be the leader's.
    fn ask_epoch_ends(
        &mut self,
        asks: &[(TopicPartition, i32, i32)],
    ) -> Result<Answers<EpochEnd>, super::peer::PeerError> {
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

    fn fetch(&mut self, fetches: &[(TopicPartition, i64, i32)]) -> Result<Answers<Fetched>, super::peer::PeerError> {
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
            return Err(super::peer::PeerError::Protocol {
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
