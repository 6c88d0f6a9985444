//! The partitions this node leads, while it runs (the leader half of Kafka's
//! `ReplicaManager`): each one's [`LeaderPartition`] (followers' log ends, the
//! high watermark, ISR changes to ask for), the `acks=all` appends waiting for the
//! high watermark, and the high watermark handed to the engine.
//!
//! ## Where the state lives, and its locks
//!
//! A follower's fetch, a producer's append and the lag check reach a partition's
//! leader state from any shard (a connection is served by the shard that accepted
//! it, not by the partition's owner) and from the cluster's own threads (the
//! reconciler that applies metadata, the ISR thread that asks the controller for
//! changes). So the state is shared: a registry (`RwLock`, written only when this
//! node gains or loses a leadership) of one [`LeaderSlot`] per led partition, each
//! behind its own `Mutex`. This is the one exception to "no locks on the request
//! path", taken for the same reason Kafka takes its `leaderIsrUpdateLock`: every
//! critical section is a few field updates of a sans-IO state machine, never held
//! across an await, an engine call or a socket. Routing every follower fetch and
//! every `acks=all` wait to the partition's owner shard instead would add a hop and
//! a per-shard actor for the same few updates.
//!
//! ## The high watermark
//!
//! [`LeaderPartition`] decides it; the engine serves reads up to the one it was
//! given ([`corelog_engine::shard::EngineHandle::set_high_watermark`], which may also
//! lower it). Calls from several shards could arrive out of order, so one caller at a
//! time hands it over (`publishing`), looping until the engine has the latest; an
//! `acks=all` append is answered only once the engine has a high watermark past it,
//! so a consumer that reads after the answer sees the records.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use super::controller::AlterPartition;
use super::image::{MetadataImage, PartitionImage};
use super::quorum::{ControllerReply, ControllerRequest, Quorum};
use super::records::NodeId;
use super::replication::{InsyncError, LeaderPartition};
use corelog_engine::shard::EngineHandle;
use corelog_engine::types::{LeaderEpoch, Offset, TopicId, TopicPartition};

/// ISR changes queued for the controller at most (`_max` of the one queue here).
const PROPOSALS_MAX: usize = 1024;
/// How often the ISR thread looks for lagging followers.
pub const LAG_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// Why an `acks=all` append is not acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcksAllError {
    Insync(InsyncError),
    /// This node stopped leading the partition before the high watermark passed it.
    NotLeader,
}

/// One partition led by this node, in one leader epoch.
pub struct LeaderSlot {
    pub leader_epoch: LeaderEpoch,
    state: Mutex<SlotState>,
}

struct SlotState {
    leader: LeaderPartition,
    topic_id: TopicId,
    min_insync: usize,
    broker_epoch: u64,
    /// The high watermark the engine was last given.
    published: i64,
    /// A caller is handing the high watermark to the engine.
    publishing: bool,
    /// `acks=all` appends waiting, by last offset; woken when the published high
    /// watermark passes them, and all of them when the ISR or the leadership changes.
    waiters: Vec<(i64, flume::Sender<()>)>,
    /// The leadership ended: waiters answer NOT_LEADER_OR_FOLLOWER.
    resigned: bool,
}

impl SlotState {
    fn wake(&mut self, all: bool) {
        let published = self.published;
        self.waiters.retain(|(last_offset, waiter)| {
            let due = all || *last_offset < published;
            if due {
                let _ = waiter.try_send(());
            }
            !due
        });
    }
}

/// An ISR change for the ISR thread to ask the controller for.
struct Proposal {
    partition: TopicPartition,
    slot: Arc<LeaderSlot>,
    change: AlterPartition,
}

/// This node's led partitions; shared by every shard and the cluster threads.
pub struct ReplicaManager {
    pub node_id: NodeId,
    quorum: Arc<Quorum>,
    replica_lag_time_max_ms: u64,
    leaders: RwLock<BTreeMap<TopicPartition, Arc<LeaderSlot>>>,
    proposals: (flume::Sender<Proposal>, flume::Receiver<Proposal>),
    started: Instant,
}

impl ReplicaManager {
    pub fn new(node_id: NodeId, quorum: Arc<Quorum>, replica_lag_time_max: Duration) -> ReplicaManager {
        ReplicaManager {
            node_id,
            quorum,
            replica_lag_time_max_ms: replica_lag_time_max.as_millis() as u64,
            leaders: RwLock::default(),
            proposals: flume::bounded(PROPOSALS_MAX),
            started: Instant::now(),
        }
    }

    /// Milliseconds of a monotonic clock (the state machines take `now_ms`).
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The partition's leader state, if this node leads it.
    pub fn leader(&self, partition: &TopicPartition) -> Option<Arc<LeaderSlot>> {
        self.leaders.read().ok()?.get(partition).cloned()
    }

    /// Every led partition.
    pub fn led(&self) -> Vec<(TopicPartition, Arc<LeaderSlot>)> {
        self.leaders.read().map(|l| l.iter().map(|(p, s)| (p.clone(), s.clone())).collect()).unwrap_or_default()
    }

    /// This node leads `partition` from now on, in `state.leader_epoch`, its engine in
    /// replicated mode with that epoch assigned at the log end (the caller did both).
    pub fn lead(
        &self,
        partition: TopicPartition,
        state: &PartitionImage,
        image: &MetadataImage,
        min_insync: usize,
        log_end: Offset,
        high_watermark: Offset,
    ) {
        let topic_id = image.topic(partition.topic.as_str()).map_or(TopicId(0), |t| t.id);
        let mut leader = LeaderPartition::new(self.node_id, state, log_end.0, high_watermark.0, self.now_ms());
        leader.set_ineligible(ineligible(state, image));
        let published = high_watermark.0;
        let slot = Arc::new(LeaderSlot {
            leader_epoch: LeaderEpoch(state.leader_epoch),
            state: Mutex::new(SlotState {
                leader,
                topic_id,
                min_insync,
                broker_epoch: broker_epoch(image, self.node_id),
                published,
                publishing: false,
                waiters: Vec::new(),
                resigned: false,
            }),
        });
        let previous = self.leaders.write().ok().and_then(|mut leaders| leaders.insert(partition, slot));
        if let Some(previous) = previous {
            previous.resign();
        }
    }

    /// This node no longer leads `partition` (or leads it in a new epoch, for which
    /// [`Self::lead`] follows).
    pub fn resign(&self, partition: &TopicPartition) {
        let previous = self.leaders.write().ok().and_then(|mut leaders| leaders.remove(partition));
        if let Some(previous) = previous {
            previous.resign();
        }
    }

    /// The committed metadata of a partition this node leads in the same epoch
    /// changed (an ISR change, a config): the high watermark may move.
    pub async fn update(
        &self,
        engine: &EngineHandle,
        partition: &TopicPartition,
        state: &PartitionImage,
        image: &MetadataImage,
        min_insync: usize,
    ) {
        let Some(slot) = self.leader(partition) else { return };
        {
            let mut locked = slot.lock();
            locked.leader.update(state);
            locked.leader.set_ineligible(ineligible(state, image));
            locked.min_insync = min_insync;
            locked.broker_epoch = broker_epoch(image, self.node_id);
            locked.wake(true);
        }
        self.publish(engine, partition, &slot).await;
    }

    /// The leader's own log now ends at `log_end` (an append's reply): the high
    /// watermark may move.
    pub async fn appended(
        &self,
        engine: &EngineHandle,
        partition: &TopicPartition,
        slot: &Arc<LeaderSlot>,
        log_end: Offset,
    ) {
        slot.lock().leader.appended(log_end.0);
        self.publish(engine, partition, slot).await;
    }

    /// A follower fetched from `fetch_offset` (an offset the leader's log has):
    /// records it, moves the high watermark, and queues the ISR change it allows.
    /// Returns the high watermark to answer.
    pub async fn fetched(
        &self,
        engine: &EngineHandle,
        partition: &TopicPartition,
        slot: &Arc<LeaderSlot>,
        follower: NodeId,
        fetch_offset: Offset,
    ) -> Offset {
        let now_ms = self.now_ms();
        let change = {
            let mut locked = slot.lock();
            let proposed = locked.leader.fetched(follower, fetch_offset.0, now_ms);
            proposed.map(|isr| alter_partition(self.node_id, partition, &locked, isr))
        };
        if let Some(change) = change {
            self.propose(partition.clone(), slot.clone(), change);
        }
        self.publish(engine, partition, slot).await;
        Offset(slot.lock().leader.high_watermark())
    }

    /// Waits until an `acks=all` append ending at `last_offset` is decided (the
    /// caller bounds the wait with the request's timeout).
    pub async fn wait_acks_all(&self, slot: &LeaderSlot, last_offset: Offset) -> Result<(), AcksAllError> {
        loop {
            let woken = {
                let mut locked = slot.lock();
                if locked.resigned {
                    return Err(AcksAllError::NotLeader);
                }
                if locked.published > last_offset.0 {
                    let min_insync = locked.min_insync;
                    if let Some(outcome) = locked.leader.acks_all_outcome(last_offset.0, min_insync) {
                        return outcome.map_err(AcksAllError::Insync);
                    }
                }
                let (waiter, woken) = flume::bounded(1);
                locked.waiters.push((last_offset.0, waiter));
                woken
            };
            // Woken, or the slot is gone with its sender: look again either way.
            let _ = woken.recv_async().await;
        }
    }

    /// Hands the leader's high watermark to the engine, unless another caller is at
    /// it (that one loops until the engine has the latest); then wakes the appends
    /// it acknowledges.
    async fn publish(&self, engine: &EngineHandle, partition: &TopicPartition, slot: &LeaderSlot) {
        let mut target = {
            let mut locked = slot.lock();
            let high_watermark = locked.leader.high_watermark();
            if locked.publishing || locked.resigned || high_watermark <= locked.published {
                return;
            }
            locked.publishing = true;
            high_watermark
        };
        loop {
            let result = engine.set_high_watermark(partition, Offset(target)).await;
            let mut locked = slot.lock();
            match result {
                Ok(set) => {
                    debug_assert!(set.0 <= target, "the engine raised the high watermark of {partition}");
                    locked.published = locked.published.max(set.0);
                }
                Err(error) => {
                    tracing::warn!("setting the high watermark of {partition} to {target}: {error}");
                    locked.publishing = false;
                    return;
                }
            }
            locked.wake(false);
            let high_watermark = locked.leader.high_watermark();
            if locked.resigned || high_watermark <= locked.published {
                locked.publishing = false;
                return;
            }
            target = high_watermark;
        }
    }

    fn propose(&self, partition: TopicPartition, slot: Arc<LeaderSlot>, change: AlterPartition) {
        if let Err(error) = self.proposals.0.try_send(Proposal { partition, slot, change }) {
            let Proposal { partition, slot, .. } = error.into_inner();
            tracing::warn!("the ISR change of {partition} was not queued ({PROPOSALS_MAX} waiting)");
            slot.lock().leader.proposal_failed();
        }
    }

    /// The ISR thread: every [`LAG_CHECK_INTERVAL`], the followers that lag leave
    /// the ISR of every led partition; in between, the queued ISR changes go to the
    /// controller one at a time (a refused one is forgotten, so the next fetch or
    /// check proposes again against the committed state). Returns when `stop` is
    /// dropped.
    pub fn run_isr_loop(&self, engine: &EngineHandle, stop: &flume::Receiver<()>) {
        let mut next_check = Instant::now() + LAG_CHECK_INTERVAL;
        loop {
            let timeout = next_check.saturating_duration_since(Instant::now());
            let proposal = flume::Selector::new()
                .recv(&self.proposals.1, |p| p.ok().map(Some))
                .recv(stop, |_| None)
                .wait_timeout(timeout);
            match proposal {
                Ok(Some(Some(proposal))) => self.send_proposal(engine, proposal),
                Ok(_) => return,
                Err(flume::select::SelectError::Timeout) => {
                    next_check = Instant::now() + LAG_CHECK_INTERVAL;
                    self.check_lag();
                }
            }
        }
    }

    fn check_lag(&self) {
        let now_ms = self.now_ms();
        for (partition, slot) in self.led() {
            let change = {
                let mut locked = slot.lock();
                let lagging = locked.leader.lagging(now_ms, self.replica_lag_time_max_ms);
                lagging.map(|isr| alter_partition(self.node_id, &partition, &locked, isr))
            };
            if let Some(change) = change {
                tracing::info!("{partition}: followers lag, proposing ISR {:?}", change.isr);
                self.propose(partition, slot, change);
            }
        }
    }

    fn send_proposal(&self, engine: &EngineHandle, proposal: Proposal) {
        let Proposal { partition, slot, change } = proposal;
        let isr = change.isr.clone();
        match self.quorum.request(ControllerRequest::AlterPartition(change)) {
            // The image that shows the change calls `update`.
            ControllerReply::Done { .. } => tracing::info!("{partition}: ISR {isr:?} committed"),
            reply => {
                tracing::info!("{partition}: ISR {isr:?} not committed: {reply:?}");
                slot.lock().leader.proposal_failed();
                futures_lite::future::block_on(self.publish(engine, &partition, &slot));
            }
        }
    }
}

impl LeaderSlot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        // A panic while holding the lock leaves a state machine mid-update; nothing
        // in a critical section panics but a failed assertion, which ends the process.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether an `acks=all` append may be taken now (`min.insync.replicas`).
    pub fn check_insync(&self) -> Result<(), InsyncError> {
        let locked = self.lock();
        locked.leader.check_insync(locked.min_insync)
    }

    /// The high watermark the engine was last given.
    pub fn high_watermark(&self) -> Offset {
        Offset(self.lock().published)
    }

    fn resign(&self) {
        let mut locked = self.lock();
        locked.resigned = true;
        locked.wake(true);
    }
}

fn alter_partition(node_id: NodeId, partition: &TopicPartition, state: &SlotState, isr: Vec<NodeId>) -> AlterPartition {
    AlterPartition {
        node_id,
        broker_epoch: state.broker_epoch,
        topic_id: state.topic_id,
        partition: partition.partition.0,
        leader_epoch: state.leader.leader_epoch,
        partition_epoch: state.leader.partition_epoch,
        isr,
    }
}

fn broker_epoch(image: &MetadataImage, node_id: NodeId) -> u64 {
    image.brokers.get(&node_id).map_or(0, |b| b.epoch)
}

/// The replicas of `state` that `image` shows fenced or unregistered: the
/// controller refuses them in an ISR ([`super::controller`]'s AlterPartition check).
fn ineligible<'a>(state: &'a PartitionImage, image: &'a MetadataImage) -> impl Iterator<Item = NodeId> + 'a {
    state.replicas.iter().copied().filter(|r| !image.is_live(*r))
}
