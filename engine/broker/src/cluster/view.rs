//! What a shard's handlers see of the cluster: the latest metadata image, kept
//! fresh by a task on the shard that follows the quorum's applied images, and the
//! way to the active controller. Reading it takes no lock: each shard has its own
//! copy of the pointer to the current image. Owned by one shard (`!Send`).
//!
//! Asking the controller ([`ClusterView::request_until`]) retries while no active
//! controller answers (an election, a controller that just lost the lead), until
//! the caller's deadline; a change the controller made is in this shard's image once
//! [`ClusterView::wait_for_index`] returns true for the index its answer names, so a
//! client's next request on this broker sees it.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::image::{BrokerImage, MetadataImage, PartitionImage};
use super::quorum::{ControllerReply, ControllerRequest, Quorum, QuorumStatus};
use super::records::NodeId;

/// The first pause between two attempts to reach the active controller; it doubles
/// up to [`RETRY_BACKOFF_MAX`].
const RETRY_BACKOFF: Duration = Duration::from_millis(50);
const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(1_000);

pub struct ClusterView {
    pub node_id: NodeId,
    quorum: Arc<Quorum>,
    image: RefCell<Arc<MetadataImage>>,
    /// Tasks of this shard waiting for the image to reach an index, woken (their
    /// sender dropped) by the follower task once it does.
    waiters: RefCell<Vec<(u64, flume::Sender<()>)>>,
}

impl ClusterView {
    /// A view for the current shard, following the quorum's images from now on
    /// (a task on the shard until the quorum stops).
    pub fn follow(node_id: NodeId, quorum: Arc<Quorum>) -> Rc<ClusterView> {
        let images = quorum.subscribe();
        let view = Rc::new(ClusterView {
            node_id,
            image: RefCell::new(quorum.image()),
            quorum,
            waiters: RefCell::new(Vec::new()),
        });
        let follower = Rc::downgrade(&view);
        glommio::spawn_local(async move {
            while let Ok(image) = images.recv_async().await {
                let Some(view) = follower.upgrade() else { return };
                let applied = image.applied_index;
                *view.image.borrow_mut() = image;
                // Dropping a waiter's sender wakes it; a waiter that gave up is gone too.
                view.waiters.borrow_mut().retain(|(index, wake)| *index > applied && !wake.is_disconnected());
            }
        })
        .detach();
        view
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    /// The partition's state, if the metadata has it.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<PartitionImage> {
        self.image.borrow().partition(topic, partition).cloned()
    }

    pub fn quorum_status(&self) -> QuorumStatus {
        self.quorum.status()
    }

    /// The partition count of the cluster's offsets topic, if it has one.
    pub fn offsets_partitions(&self) -> Option<i32> {
        self.image.borrow().topic(crate::group::OFFSETS_TOPIC).map(|t| t.partitions.len() as i32)
    }

    /// The coordinator of a group whose offsets partition is `partition`: that
    /// partition's leader, as a live broker of the image.
    pub fn offsets_leader(&self, partition: i32) -> Option<BrokerImage> {
        let image = self.image();
        let state = image.partition(crate::group::OFFSETS_TOPIC, partition)?;
        if !state.has_leader() {
            return None;
        }
        let leader = image.live_brokers().find(|b| b.node_id == state.leader).cloned();
        leader
    }

    /// Asks the active controller (through this node's quorum member), once.
    pub async fn request(&self, request: ControllerRequest) -> ControllerReply {
        self.quorum.request_async(request).await
    }

    /// Asks the active controller, and again after a pause while the answer is that
    /// none answered ([`ControllerReply::NotController`], [`ControllerReply::TimedOut`]),
    /// as long as the next attempt starts before `deadline`: the first other answer,
    /// or the last of those. An attempt started before the deadline may end after
    /// it, by at most the quorum's request timeout. After a `TimedOut` the change
    /// may have been made, so a retry can be refused for what the first attempt did
    /// (a topic created twice is TopicExists), as a Kafka client's retry can.
    pub async fn request_until(&self, request: ControllerRequest, deadline: Instant) -> ControllerReply {
        let mut backoff = RETRY_BACKOFF;
        loop {
            let reply = self.request(request.clone()).await;
            if !matches!(reply, ControllerReply::NotController { .. } | ControllerReply::TimedOut) {
                return reply;
            }
            if Instant::now() + backoff >= deadline {
                return reply;
            }
            glommio::timer::sleep(backoff).await;
            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
        }
    }

    /// Waits until this shard's image is as of `index` or later, at most `timeout`:
    /// whether it got there.
    pub async fn wait_for_index(&self, index: u64, timeout: Duration) -> bool {
        if self.image.borrow().applied_index >= index {
            return true;
        }
        let (wake, woken) = flume::bounded::<()>(1);
        self.waiters.borrow_mut().push((index, wake));
        let reached = async {
            // Only the follower task holds the sender; it drops it once the index is reached.
            let _ = woken.recv_async().await;
        };
        let expired = glommio::timer::sleep(timeout);
        futures_lite::future::or(reached, async {
            expired.await;
        })
        .await;
        self.image.borrow().applied_index >= index
    }
}
