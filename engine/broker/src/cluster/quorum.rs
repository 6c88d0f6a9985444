//! One node of the metadata quorum: a raft-rs `RawNode` on its own thread, its
//! durable log ([`RaftLogStore`]), its links ([`Transport`]), the metadata image it
//! applies committed records to, and, while it leads, the active [`Controller`].
//!
//! ## The loop
//!
//! The thread waits for an input (a Raft message, a request, a forwarded reply) or
//! the next tick (every [`QuorumConfig::tick`]), hands it to raft-rs, then handles
//! the `Ready` in the order raft-rs requires: messages a leader may send at once;
//! a snapshot received; new entries and the hard state persisted (fdatasync) before
//! the messages that depend on them (votes, appends acknowledged) leave; committed
//! entries applied to the image; then `advance`. Applying after the hard state is
//! persisted (raft-rs allows either order) means the persisted commit index is never
//! behind what was applied: after a restart, the image replayed up to the commit
//! index found at start ([`Quorum::startup_commit`]) holds everything the broker
//! applied before, so the reconciler waits for it (and for the broker's new
//! registration) before it acts: an image from before the replay would have it
//! delete every topic created since the snapshot.
//!
//! ## Requests
//!
//! A request that changes metadata ([`ControllerRequest`]) goes to the active
//! controller: a node that does not lead forwards its broker's requests to the
//! leader it knows, and answers [`ControllerReply::NotController`] when it knows
//! none, so the broker retries. The active controller takes one request at a time:
//! it decides against the committed image, proposes the records, and answers once
//! the last of them is applied, so each decision sees the previous one's effects.
//! It becomes active only once it has applied every entry of earlier terms (the
//! entry raft-rs appends when a leader is elected marks that point), and stops
//! being active the moment it loses the lead: requests it was deciding are answered
//! `NotController`, their records may or may not commit, and a retry sees the
//! outcome in the image.
//!
//! ## Raft ids
//!
//! raft-rs reserves id 0 ("none"), Kafka node ids start at 0: the Raft id of node
//! `n` is `n + 1` ([`raft_id`]).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raft::eraftpb::{ConfState, Entry, EntryType, Message, Snapshot};
use raft::{RawNode, StateRole};
use serde::{Deserialize, Serialize};

use super::controller::{
    AlterPartition, Controller, ControllerConfig, ControllerError, Election, Heartbeat, HeartbeatReply, Placement,
    ReassignmentChange,
};
use super::image::MetadataImage;
use super::raft_store::RaftLogStore;
use super::records::{MetadataRecord, NodeId};
use super::transport::{Envelope, Hello, Incoming, Transport};
use corelog_engine::error::EngineError;

/// How one node of the quorum runs.
#[derive(Debug, Clone)]
pub struct QuorumConfig {
    pub node_id: NodeId,
    /// Every voter with its controller listener, as `controller.quorum.voters` has
    /// them; this node must be one.
    pub voters: Vec<(NodeId, String)>,
    /// This node's controller listener.
    pub listen: SocketAddr,
    pub cluster_id: String,
    /// Where the Raft log lives (`<data>/corelog+meta/raft`).
    pub dir: PathBuf,
    pub tick: Duration,
    /// Ticks without a leader's heartbeat before a follower stands for election.
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    pub controller: ControllerConfig,
    /// Applied entries past the last snapshot that trigger the next one.
    pub snapshot_entries: u64,
    /// How long a forwarded request waits for the leader's answer.
    pub request_timeout: Duration,
    /// Seeds the controller's choices (topic ids, placement).
    pub seed: u64,
}

impl QuorumConfig {
    pub fn new(
        node_id: NodeId,
        voters: Vec<(NodeId, String)>,
        listen: SocketAddr,
        cluster_id: String,
        dir: PathBuf,
    ) -> Self {
        QuorumConfig {
            node_id,
            voters,
            listen,
            cluster_id,
            dir,
            tick: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 2,
            controller: ControllerConfig::default(),
            snapshot_entries: 1024,
            request_timeout: Duration::from_secs(5),
            seed: 0,
        }
    }
}

/// The Raft id of a node (raft-rs reserves 0).
pub fn raft_id(node_id: NodeId) -> u64 {
    node_id as u64 + 1
}

fn node_of(raft_id: u64) -> Option<NodeId> {
    raft_id.checked_sub(1).map(|id| id as NodeId)
}

/// A change of metadata a broker asks the active controller for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerRequest {
    Register {
        node_id: NodeId,
        host: String,
        port: u16,
    },
    Heartbeat(Heartbeat),
    CreateTopic {
        name: String,
        placement: Placement,
        configs: BTreeMap<String, String>,
    },
    CreatePartitions {
        name: String,
        count: i32,
        assignment: Option<Vec<Vec<NodeId>>>,
    },
    DeleteTopic {
        name: String,
    },
    AlterConfigs {
        name: String,
        changes: Vec<(String, Option<String>)>,
    },
    AlterPartition(AlterPartition),
    ElectLeaders {
        election: Election,
        partitions: Vec<(String, i32)>,
    },
    AllocateProducerIds {
        node_id: NodeId,
        broker_epoch: u64,
    },
    /// Start, replace or cancel (`None`) partition reassignments.
    AlterReassignments {
        changes: Vec<ReassignmentChange>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerReply {
    /// Done; the image as of `applied_index` or later shows it.
    Done {
        applied_index: u64,
    },
    Registered {
        broker_epoch: u64,
    },
    Heartbeat(HeartbeatReply),
    Elected(Vec<Result<(), ControllerError>>),
    /// One result per reassignment change, in request order.
    Reassigned(Vec<Result<(), ControllerError>>),
    ProducerIds {
        first: i64,
        count: i64,
    },
    Refused(ControllerError),
    /// This node is not the active controller and knows none to forward to (or the
    /// one it forwarded to stopped leading): retry after a moment.
    NotController {
        leader: Option<NodeId>,
    },
    /// No answer within the request timeout; the change may or may not be made.
    TimedOut,
}

/// The quorum as [`Quorum::status`] reports it (DescribeQuorum's answer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuorumStatus {
    pub leader: Option<NodeId>,
    pub term: u64,
    /// The highest committed index.
    pub commit: u64,
    pub applied: u64,
    /// Per voter, the last index known to be replicated to it (on the leader).
    pub matched: BTreeMap<NodeId, u64>,
    /// The node stopped participating (its log could not be written).
    pub failed: Option<String>,
}

enum Input {
    Transport(Incoming<ControllerRequest, ControllerReply>),
    Local { request: ControllerRequest, reply: flume::Sender<ControllerReply> },
    Stop,
}

/// A running quorum node.
pub struct Quorum {
    node_id: NodeId,
    /// The commit index the durable log held when the node started.
    startup_commit: u64,
    inbox: flume::Sender<Input>,
    shared: Arc<Shared>,
    listen: SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    image: Mutex<Arc<MetadataImage>>,
    status: Mutex<QuorumStatus>,
    subscribers: Mutex<Vec<flume::Sender<Arc<MetadataImage>>>>,
}

impl Quorum {
    /// Opens the Raft log in `config.dir` (initializing it with the voters on the
    /// first start), rebuilds the image from its snapshot, binds the controller
    /// listener and starts the node's thread.
    pub fn start(config: QuorumConfig) -> Result<Quorum, EngineError> {
        if !config.voters.iter().any(|(id, _)| *id == config.node_id) {
            return Err(EngineError::DataDirectory(format!(
                "node {} is not among the voters {}",
                config.node_id,
                voters_text(&config.voters)
            )));
        }
        let mut store = RaftLogStore::open(&config.dir)?;
        if !store.is_initialized() {
            let ids: Vec<u64> = config.voters.iter().map(|(id, _)| raft_id(*id)).collect();
            store.initialize(&ids)?;
        }
        let startup_commit = store.hard_state().commit;
        let image = match store.snapshot_data() {
            Some((_, data)) => MetadataImage::decode(&data).map_err(EngineError::DataDirectory)?,
            None => MetadataImage::default(),
        };
        let raft_config = raft::Config {
            id: raft_id(config.node_id),
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            applied: image.applied_index,
            // A leader cut off from the majority steps down; a node coming back from
            // a partition does not depose a working leader.
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            ..raft::Config::default()
        };
        let logger = super::logging::raft_logger(raft_id(config.node_id));
        let node = RawNode::new(&raft_config, store, &logger)
            .map_err(|e| EngineError::DataDirectory(format!("starting the quorum's raft node: {e}")))?;
        let (inbox, inputs) = flume::unbounded();
        let (incoming, transport_inputs) = flume::unbounded();
        let hello = Hello { cluster_id: config.cluster_id.clone(), node_id: config.node_id };
        let transport =
            Transport::start(hello, config.listen, &config.voters, incoming).map_err(|e| match e.kind() {
                std::io::ErrorKind::AddrInUse => EngineError::InvalidConfig {
                    key: "controller.listener".to_string(),
                    value: config.listen.to_string(),
                    reason: format!(
                        "address in use: another process listens there, perhaps node {} already running (each \
                     node of a cluster needs its own --node-id and controller listener)",
                        config.node_id
                    ),
                },
                _ => EngineError::io("listen (controller listener)", &config.dir, e),
            })?;
        let listen = transport.local_addr();
        forward_transport(transport_inputs, inbox.clone())?;
        let shared = Arc::new(Shared {
            image: Mutex::new(Arc::new(image.clone())),
            status: Mutex::default(),
            subscribers: Mutex::default(),
        });
        let state_node_id = config.node_id;
        let mut state = NodeState::new(config, node, transport, image, shared.clone());
        let thread = std::thread::Builder::new()
            .name(format!("corelog-quorum-{}", state.config.node_id))
            .spawn(move || state.run(inputs))
            .map_err(|e| EngineError::ThreadPanicked { thread: format!("quorum ({e})") })?;
        Ok(Quorum { node_id: state_node_id, startup_commit, inbox, shared, listen, thread: Some(thread) })
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The commit index of the durable log when the node started: an image applied
    /// up to it holds everything this node applied before it stopped (see the
    /// module doc).
    pub fn startup_commit(&self) -> u64 {
        self.startup_commit
    }

    /// The controller listener's address.
    pub fn controller_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The latest applied image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.shared.image.lock().map(|i| i.clone()).unwrap_or_default()
    }

    /// Every image applied from now on (the latest first).
    pub fn subscribe(&self) -> flume::Receiver<Arc<MetadataImage>> {
        let (send, receive) = flume::unbounded();
        let _ = send.send(self.image());
        if let Ok(mut subscribers) = self.shared.subscribers.lock() {
            subscribers.push(send);
        }
        receive
    }

    pub fn status(&self) -> QuorumStatus {
        self.shared.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Sends `request` to the active controller and waits for the answer.
    pub fn request(&self, request: ControllerRequest) -> ControllerReply {
        let (reply, answer) = flume::bounded(1);
        if self.inbox.send(Input::Local { request, reply }).is_err() {
            return ControllerReply::NotController { leader: None };
        }
        answer.recv().unwrap_or(ControllerReply::NotController { leader: None })
    }

    /// [`Quorum::request`] for async callers (a glommio shard).
    pub async fn request_async(&self, request: ControllerRequest) -> ControllerReply {
        let (reply, answer) = flume::bounded(1);
        if self.inbox.send(Input::Local { request, reply }).is_err() {
            return ControllerReply::NotController { leader: None };
        }
        answer.recv_async().await.unwrap_or(ControllerReply::NotController { leader: None })
    }

    /// Stops the node's thread and its links (its log is durable as it goes).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.inbox.send(Input::Stop);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the quorum thread panicked");
            }
        }
    }
}

impl Drop for Quorum {
    fn drop(&mut self) {
        self.stop();
    }
}

fn voters_text(voters: &[(NodeId, String)]) -> String {
    voters.iter().map(|(id, address)| format!("{id}@{address}")).collect::<Vec<_>>().join(",")
}

/// The transport's inputs, moved onto the node's one inbox.
fn forward_transport(
    from: flume::Receiver<Incoming<ControllerRequest, ControllerReply>>,
    to: flume::Sender<Input>,
) -> Result<(), EngineError> {
    std::thread::Builder::new()
        .name("corelog-quorum-in".to_string())
        .spawn(move || {
            for incoming in from.iter() {
                if to.send(Input::Transport(incoming)).is_err() {
                    return;
                }
            }
        })
        .map(|_| ())
        .map_err(|e| EngineError::ThreadPanicked { thread: format!("quorum input ({e})") })
}

/// Who waits for a request's answer.
enum Requester {
    Local(flume::Sender<ControllerReply>),
    Remote {
        from: NodeId,
        id: u64,
    },
    /// The controller's own decisions (session expiry, activation).
    Internal,
}

/// A decision whose records are proposed and not yet all applied.
struct Pending {
    requester: Requester,
    reply: AfterApply,
    last_index: u64,
}

/// The answer a decision gets once its records are applied.
enum AfterApply {
    /// Known when deciding (producer ids handed out, election results).
    Known(ControllerReply),
    /// Read from the image the records made (a registration's epoch).
    From(ControllerRequest),
}

/// A request forwarded to the leader, waiting for its reply.
struct Forwarded {
    reply: flume::Sender<ControllerReply>,
    deadline: Instant,
    /// The node it went to: once another leads, it is answered NotController at
    /// once (a dead leader never answers, and a broker's heartbeat waiting out the
    /// timeout could outlive its session).
    to: NodeId,
}

struct NodeState {
    config: QuorumConfig,
    node: RawNode<RaftLogStore>,
    transport: Transport<ControllerRequest, ControllerReply>,
    image: MetadataImage,
    shared: Arc<Shared>,
    /// Set while this node is the active controller.
    controller: Option<Controller>,
    /// The index this node's leadership starts at: active once applied.
    activation_index: Option<u64>,
    queue: VecDeque<(Requester, ControllerRequest)>,
    pending: Option<Pending>,
    forwarded: BTreeMap<u64, Forwarded>,
    next_forward_id: u64,
    started: Instant,
    failed: Option<String>,
}

impl NodeState {
    fn new(
        config: QuorumConfig,
        node: RawNode<RaftLogStore>,
        transport: Transport<ControllerRequest, ControllerReply>,
        image: MetadataImage,
        shared: Arc<Shared>,
    ) -> NodeState {
        NodeState {
            config,
            node,
            transport,
            image,
            shared,
            controller: None,
            activation_index: None,
            queue: VecDeque::new(),
            pending: None,
            forwarded: BTreeMap::new(),
            next_forward_id: 1,
            started: Instant::now(),
            failed: None,
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn run(&mut self, inputs: flume::Receiver<Input>) {
        let mut next_tick = Instant::now() + self.config.tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match inputs.recv_timeout(wait) {
                Ok(Input::Stop) | Err(flume::RecvTimeoutError::Disconnected) => break,
                Ok(input) => self.take(input),
                Err(flume::RecvTimeoutError::Timeout) => {}
            }
            while let Ok(input) = inputs.try_recv() {
                if matches!(input, Input::Stop) {
                    self.transport.stop();
                    return;
                }
                self.take(input);
            }
            if Instant::now() >= next_tick {
                next_tick += self.config.tick;
                self.node.tick();
                self.on_tick();
            }
            if self.failed.is_none() {
                self.follow_leadership();
                self.decide_next();
                if let Err(error) = self.on_ready() {
                    self.fail(error);
                }
            }
            self.publish_status();
        }
        self.transport.stop();
    }

    fn take(&mut self, input: Input) {
        match input {
            Input::Transport(Incoming::Raft(message)) => {
                if let Err(error) = self.node.step(message) {
                    tracing::debug!("node {}: raft message not taken: {error}", self.config.node_id);
                }
            }
            Input::Transport(Incoming::Request { from, envelope }) => {
                self.accept(Requester::Remote { from, id: envelope.id }, envelope.body);
            }
            Input::Transport(Incoming::Reply(envelope)) => {
                if let Some(forwarded) = self.forwarded.remove(&envelope.id) {
                    let _ = forwarded.reply.send(envelope.body);
                }
            }
            Input::Local { request, reply } => self.accept(Requester::Local(reply), request),
            Input::Stop => {}
        }
    }

    /// Queues `request` if this node is the active controller (or will be once
    /// caught up); otherwise forwards a local one to the leader or refuses it.
    fn accept(&mut self, requester: Requester, request: ControllerRequest) {
        if self.failed.is_some() {
            return answer(&self.transport, requester, ControllerReply::NotController { leader: None });
        }
        if self.node.raft.state == StateRole::Leader {
            self.queue.push_back((requester, request));
            return;
        }
        let leader = node_of(self.node.raft.leader_id);
        match (requester, leader) {
            (Requester::Local(reply), Some(leader)) => {
                let id = self.next_forward_id;
                self.next_forward_id += 1;
                self.transport.forward(leader, &Envelope { id, body: request });
                let deadline = Instant::now() + self.config.request_timeout;
                self.forwarded.insert(id, Forwarded { reply, deadline, to: leader });
            }
            (requester, leader) => answer(&self.transport, requester, ControllerReply::NotController { leader }),
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let leader = node_of(self.node.raft.leader_id);
        let ended: Vec<u64> = self
            .forwarded
            .iter()
            .filter(|(_, f)| f.deadline <= now || leader != Some(f.to))
            .map(|(id, _)| *id)
            .collect();
        for id in ended {
            if let Some(forwarded) = self.forwarded.remove(&id) {
                let reply = match leader == Some(forwarded.to) {
                    true => ControllerReply::TimedOut,
                    false => ControllerReply::NotController { leader },
                };
                let _ = forwarded.reply.send(reply);
            }
        }
        if self.pending.is_none() {
            let now_ms = self.now_ms();
            if let Some(controller) = self.controller.as_mut() {
                let mut records = controller.expire_sessions(&self.image, now_ms);
                if records.is_empty() {
                    records = controller.complete_reassignments(&self.image);
                }
                if records.is_empty() {
                    records = controller.rebalance_leaders(&self.image, now_ms);
                }
                if !records.is_empty() {
                    self.propose(
                        Requester::Internal,
                        AfterApply::Known(ControllerReply::Done { applied_index: 0 }),
                        records,
                    );
                }
            }
        }
    }

    /// Becomes active once the log of earlier terms is applied; steps down at once
    /// when the lead is lost.
    fn follow_leadership(&mut self) {
        if self.node.raft.state != StateRole::Leader {
            if self.controller.take().is_some() || self.activation_index.take().is_some() {
                tracing::info!("node {}: no longer the active controller", self.config.node_id);
            }
            let leader = node_of(self.node.raft.leader_id);
            if let Some(pending) = self.pending.take() {
                answer(&self.transport, pending.requester, ControllerReply::NotController { leader });
            }
            for (requester, _) in std::mem::take(&mut self.queue) {
                answer(&self.transport, requester, ControllerReply::NotController { leader });
            }
            return;
        }
        if self.controller.is_some() {
            return;
        }
        let activation = *self.activation_index.get_or_insert_with(|| self.node.raft.raft_log.last_index());
        if self.image.applied_index < activation || self.node.raft.raft_log.applied < activation {
            return;
        }
        let mut controller = Controller::new(self.config.controller.clone(), self.config.seed ^ self.node.raft.term);
        let records = controller.activate(&self.image, self.now_ms(), &self.config.cluster_id);
        self.controller = Some(controller);
        tracing::info!("node {}: active controller (term {})", self.config.node_id, self.node.raft.term);
        if !records.is_empty() {
            self.propose(Requester::Internal, AfterApply::Known(ControllerReply::Done { applied_index: 0 }), records);
        }
    }

    /// Decides the next queued request, if no decision is waiting to be applied.
    fn decide_next(&mut self) {
        while self.pending.is_none() && self.controller.is_some() {
            let Some((requester, request)) = self.queue.pop_front() else { return };
            let now_ms = self.now_ms();
            let Some(controller) = self.controller.as_mut() else { return };
            match decide(controller, &self.image, &request, now_ms) {
                Decision::Answer(reply) => answer(&self.transport, requester, reply),
                Decision::Propose(records, None) if records.is_empty() => {
                    let reply = reply_after(&request, &self.image);
                    answer(&self.transport, requester, reply);
                }
                Decision::Propose(records, Some(known)) if records.is_empty() => {
                    answer(&self.transport, requester, known)
                }
                Decision::Propose(records, Some(known)) => self.propose(requester, AfterApply::Known(known), records),
                Decision::Propose(records, None) => self.propose(requester, AfterApply::From(request), records),
            }
        }
    }

    fn propose(&mut self, requester: Requester, reply: AfterApply, records: Vec<MetadataRecord>) {
        if let Err(error) = self.node.propose(Vec::new(), MetadataRecord::encode_entry(&records)) {
            tracing::warn!("node {}: proposal dropped: {error}", self.config.node_id);
            let leader = node_of(self.node.raft.leader_id);
            return answer(&self.transport, requester, ControllerReply::NotController { leader });
        }
        let last_index = self.node.raft.raft_log.last_index();
        self.pending = Some(Pending { requester, reply, last_index });
    }

    /// Handles raft-rs's `Ready` in the order it requires (see the module doc).
    fn on_ready(&mut self) -> Result<(), EngineError> {
        if !self.node.has_ready() {
            return Ok(());
        }
        let mut ready = self.node.ready();
        self.send(ready.take_messages());
        if !ready.snapshot().is_empty() {
            self.install_snapshot(ready.snapshot().clone())?;
        }
        if !ready.entries().is_empty() {
            self.node.mut_store().append(ready.entries())?;
        }
        if let Some(hard_state) = ready.hs() {
            self.node.mut_store().set_hard_state(hard_state)?;
        }
        self.apply(ready.take_committed_entries())?;
        self.send(ready.take_persisted_messages());
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.node.mut_store().set_commit(commit)?;
        }
        self.send(light.take_messages());
        self.apply(light.take_committed_entries())?;
        self.node.advance_apply();
        self.maybe_snapshot()
    }

    fn send(&mut self, messages: Vec<Message>) {
        for message in messages {
            match node_of(message.to) {
                Some(to) => self.transport.send_raft(to, &message),
                None => continue,
            }
            // raft-rs holds a follower in snapshot state until told how sending the
            // snapshot went; the link gives no delivery report, so it is told
            // "finished" and probes the follower, resending if it did not arrive.
            if message.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot {
                self.node.report_snapshot(message.to, raft::SnapshotStatus::Finish);
            }
        }
    }

    fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), EngineError> {
        let image = MetadataImage::decode(snapshot.get_data()).map_err(EngineError::DataDirectory)?;
        self.node.mut_store().apply_snapshot(snapshot)?;
        tracing::info!("node {}: installed a metadata snapshot as of {}", self.config.node_id, image.applied_index);
        self.image = image;
        self.publish_image();
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), EngineError> {
        if entries.is_empty() {
            return Ok(());
        }
        for entry in entries {
            self.image.applied_index = self.image.applied_index.max(entry.index);
            if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
                continue;
            }
            let records = match MetadataRecord::decode_entry(&entry.data) {
                Ok(records) => records,
                Err(error) => {
                    tracing::error!("node {}: skipping entry {}: {error}", self.config.node_id, entry.index);
                    continue;
                }
            };
            for record in &records {
                if let MetadataRecord::Cluster { cluster_id } = record {
                    if *cluster_id != self.config.cluster_id {
                        return Err(EngineError::DataDirectory(format!(
                            "the metadata log belongs to cluster {cluster_id}, this node to {}",
                            self.config.cluster_id
                        )));
                    }
                }
                if let Err(error) = self.image.apply(entry.index, record) {
                    tracing::error!("node {}: entry {} does not apply: {error}", self.config.node_id, entry.index);
                }
            }
        }
        self.publish_image();
        self.answer_applied();
        Ok(())
    }

    /// Answers the pending decision once its last record is applied.
    fn answer_applied(&mut self) {
        if self.pending.as_ref().is_some_and(|p| p.last_index <= self.image.applied_index) {
            if let Some(Pending { requester, reply, .. }) = self.pending.take() {
                let reply = match reply {
                    AfterApply::Known(reply) => reply,
                    AfterApply::From(request) => reply_after(&request, &self.image),
                };
                answer(&self.transport, requester, reply);
            }
        }
    }

    fn maybe_snapshot(&mut self) -> Result<(), EngineError> {
        let applied = self.image.applied_index;
        let first = raft::Storage::first_index(self.node.store()).unwrap_or(1);
        if applied < first + self.config.snapshot_entries {
            return Ok(());
        }
        let conf_state: ConfState = self.node.raft.prs().conf().to_conf_state();
        self.node.mut_store().compact(applied, conf_state, self.image.encode())?;
        tracing::debug!("node {}: metadata snapshot at {applied}", self.config.node_id);
        Ok(())
    }

    fn publish_image(&self) {
        let image = Arc::new(self.image.clone());
        if let Ok(mut shared) = self.shared.image.lock() {
            *shared = image.clone();
        }
        if let Ok(mut subscribers) = self.shared.subscribers.lock() {
            subscribers.retain(|s| s.send(image.clone()).is_ok());
        }
    }

    fn publish_status(&self) {
        let raft = &self.node.raft;
        let matched = if raft.state == StateRole::Leader {
            raft.prs().iter().filter_map(|(id, p)| Some((node_of(*id)?, p.matched))).collect()
        } else {
            BTreeMap::new()
        };
        let status = QuorumStatus {
            leader: node_of(raft.leader_id),
            term: raft.term,
            commit: raft.raft_log.committed,
            applied: self.image.applied_index,
            matched,
            failed: self.failed.clone(),
        };
        if let Ok(mut shared) = self.shared.status.lock() {
            *shared = status;
        }
    }

    /// The log could not be written: this node stops taking part (a vote or an
    /// acknowledgement it could not make durable must not be sent).
    fn fail(&mut self, error: EngineError) {
        tracing::error!("node {}: the metadata quorum stopped on this node: {error}", self.config.node_id);
        self.failed = Some(error.to_string());
        self.controller = None;
        if let Some(pending) = self.pending.take() {
            answer(&self.transport, pending.requester, ControllerReply::NotController { leader: None });
        }
    }
}

enum Decision {
    Answer(ControllerReply),
    /// Records to propose, and the answer when it is known before they apply.
    Propose(Vec<MetadataRecord>, Option<ControllerReply>),
}

/// The active controller's decision on one request.
fn decide(controller: &mut Controller, image: &MetadataImage, request: &ControllerRequest, now_ms: u64) -> Decision {
    let refused = |result: Result<Vec<MetadataRecord>, ControllerError>| match result {
        Ok(records) => Decision::Propose(records, None),
        Err(error) => Decision::Answer(ControllerReply::Refused(error)),
    };
    match request.clone() {
        ControllerRequest::Register { node_id, host, port } => {
            Decision::Propose(controller.register(image, node_id, &host, port, now_ms), None)
        }
        ControllerRequest::Heartbeat(heartbeat) => match controller.heartbeat(image, heartbeat, now_ms) {
            Ok((reply, records)) if records.is_empty() => Decision::Answer(ControllerReply::Heartbeat(reply)),
            Ok((_, records)) => Decision::Propose(records, None),
            Err(error) => Decision::Answer(ControllerReply::Refused(error)),
        },
        ControllerRequest::CreateTopic { name, placement, configs } => {
            refused(controller.create_topic(image, &name, placement, configs))
        }
        ControllerRequest::CreatePartitions { name, count, assignment } => {
            refused(controller.create_partitions(image, &name, count, assignment))
        }
        ControllerRequest::DeleteTopic { name } => refused(controller.delete_topic(image, &name)),
        ControllerRequest::AlterConfigs { name, changes } => refused(controller.alter_configs(image, &name, changes)),
        ControllerRequest::AlterPartition(change) => refused(controller.alter_partition(image, change)),
        ControllerRequest::ElectLeaders { election, partitions } => {
            let (results, records) = controller.elect_leaders(image, election, &partitions);
            Decision::Propose(records, Some(ControllerReply::Elected(results)))
        }
        ControllerRequest::AlterReassignments { changes } => {
            let (results, records) = controller.alter_reassignments(image, &changes);
            Decision::Propose(records, Some(ControllerReply::Reassigned(results)))
        }
        ControllerRequest::AllocateProducerIds { node_id, broker_epoch } => {
            match controller.allocate_producer_ids(image, node_id, broker_epoch) {
                Ok((first, count, records)) => {
                    Decision::Propose(records, Some(ControllerReply::ProducerIds { first, count }))
                }
                Err(error) => Decision::Answer(ControllerReply::Refused(error)),
            }
        }
    }
}

/// The answer to `request` once its records are applied to `image`.
fn reply_after(request: &ControllerRequest, image: &MetadataImage) -> ControllerReply {
    match request {
        ControllerRequest::Register { node_id, .. } => match image.brokers.get(node_id) {
            Some(broker) => ControllerReply::Registered { broker_epoch: broker.epoch },
            None => ControllerReply::NotController { leader: None },
        },
        ControllerRequest::Heartbeat(heartbeat) => match image.brokers.get(&heartbeat.node_id) {
            Some(broker) if broker.epoch == heartbeat.epoch => {
                let fenced = broker.fenced;
                ControllerReply::Heartbeat(HeartbeatReply { fenced, shutdown_ready: fenced && heartbeat.want_shutdown })
            }
            _ => ControllerReply::Refused(ControllerError::StaleBrokerEpoch {
                node_id: heartbeat.node_id,
                epoch: heartbeat.epoch,
            }),
        },
        _ => ControllerReply::Done { applied_index: image.applied_index },
    }
}

fn answer(transport: &Transport<ControllerRequest, ControllerReply>, requester: Requester, reply: ControllerReply) {
    match requester {
        Requester::Local(sender) => {
            let _ = sender.send(reply);
        }
        Requester::Remote { from, id } => transport.reply(from, &Envelope { id, body: reply }),
        Requester::Internal => {}
    }
}
