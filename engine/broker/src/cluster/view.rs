//! What a shard's handlers see of the cluster: the latest metadata image, kept
//! fresh by a task on the shard that follows the quorum's applied images, and the
//! way to the active controller. Reading it takes no lock: each shard has its own
//! copy of the pointer to the current image.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use super::image::{MetadataImage, PartitionImage};
use super::quorum::{ControllerReply, ControllerRequest, Quorum, QuorumStatus};
use super::records::NodeId;

pub struct ClusterView {
    pub node_id: NodeId,
    quorum: Arc<Quorum>,
    image: RefCell<Arc<MetadataImage>>,
}

impl ClusterView {
    /// A view for the current shard, following the quorum's images from now on
    /// (a task on the shard until the quorum stops).
    pub fn follow(node_id: NodeId, quorum: Arc<Quorum>) -> Rc<ClusterView> {
        let images = quorum.subscribe();
        let view = Rc::new(ClusterView { node_id, image: RefCell::new(quorum.image()), quorum });
        let follower = Rc::downgrade(&view);
        glommio::spawn_local(async move {
            while let Ok(image) = images.recv_async().await {
                let Some(view) = follower.upgrade() else { return };
                *view.image.borrow_mut() = image;
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

    /// Asks the active controller (through this node's quorum member).
    pub async fn request(&self, request: ControllerRequest) -> ControllerReply {
        self.quorum.request_async(request).await
    }
}
