//! How the admin handlers of a cluster node change metadata: serves no key. They
//! ask the active controller ([`ask`]), which decides against the committed
//! metadata and answers once its records are applied; this module retries while
//! no controller answers, waits until this shard's image shows the change, and
//! turns the controller's refusals into Kafka's errors ([`refusal`]).
//!
//! `validate_only` requests are decided by [`dry_run`]: the controller's own
//! decision, sans IO, against this shard's image, with nothing proposed. Its
//! answer is the controller's unless the metadata changes in between.

use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;

use super::resolve::Refusal;
use crate::cluster::controller::{Controller, ControllerConfig, ControllerError};
use crate::cluster::image::MetadataImage;
use crate::cluster::quorum::{ControllerReply, ControllerRequest};
use crate::cluster::view::ClusterView;

/// How long a handler waits, after the controller's answer, for this shard's image
/// to show the change. Normally milliseconds: the answer comes once the records are
/// committed, and this node applies them as soon as it learns the commit.
pub const IMAGE_WAIT: Duration = Duration::from_secs(5);

/// How long a request whose API carries no timeout (AlterConfigs,
/// IncrementalAlterConfigs) tries to reach the active controller.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// The deadline of a request's `timeout_ms` (0 or less: one attempt).
pub fn deadline(timeout_ms: i32) -> Instant {
    Instant::now() + Duration::from_millis(timeout_ms.max(0) as u64)
}

/// Asks the active controller, retrying until `deadline` while none answers (see
/// [`ClusterView::request_until`]), and once it answers `Done`, waits (at most
/// [`IMAGE_WAIT`]) until this shard's image shows the change. The controller's
/// other answers are handed back; a refusal, no controller (NOT_CONTROLLER) or no
/// answer (REQUEST_TIMED_OUT) are the [`Refusal`].
pub async fn ask(
    view: &ClusterView,
    request: ControllerRequest,
    deadline: Instant,
) -> Result<ControllerReply, Refusal> {
    let started = Instant::now();
    match view.request_until(request, deadline).await {
        ControllerReply::Done { applied_index } => {
            if !view.wait_for_index(applied_index, IMAGE_WAIT).await {
                tracing::warn!(
                    "broker {}: the metadata change at index {applied_index} is not applied here after {IMAGE_WAIT:?}",
                    view.node_id
                );
            }
            Ok(ControllerReply::Done { applied_index })
        }
        ControllerReply::Refused(error) => Err(refusal(&error)),
        ControllerReply::NotController { leader } => Err(Refusal::new(
            ResponseError::NotController,
            format!(
                "no active controller answered within {:?} (the quorum's leader: {})",
                started.elapsed(),
                leader.map_or("none".to_string(), |id| id.to_string())
            ),
        )),
        ControllerReply::TimedOut => Err(Refusal::new(
            ResponseError::RequestTimedOut,
            format!(
                "the active controller did not answer within {:?}: the change may or may not be made",
                started.elapsed()
            ),
        )),
        other => Ok(other),
    }
}

/// The controller's refusal as the Kafka error that answers it.
pub fn refusal(error: &ControllerError) -> Refusal {
    let code = match error {
        ControllerError::StaleBrokerEpoch { .. } => ResponseError::StaleBrokerEpoch,
        ControllerError::TopicExists(_) => ResponseError::TopicAlreadyExists,
        ControllerError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        ControllerError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        ControllerError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        ControllerError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
        ControllerError::NotLeader(_) => ResponseError::NotLeaderOrFollower,
        ControllerError::FencedLeaderEpoch { .. } => ResponseError::FencedLeaderEpoch,
        ControllerError::InvalidUpdateVersion { .. } => ResponseError::InvalidUpdateVersion,
        ControllerError::IneligibleReplica(_) => ResponseError::IneligibleReplica,
        ControllerError::EligibleLeadersNotAvailable { .. } => ResponseError::EligibleLeadersNotAvailable,
        ControllerError::ElectionNotNeeded { .. } => ResponseError::ElectionNotNeeded,
        ControllerError::NoReassignmentInProgress { .. } => ResponseError::NoReassignmentInProgress,
    };
    Refusal::new(code, error.to_string())
}

/// The controller's decision on `request` against `image`, nothing proposed: what
/// `validate_only` answers. Only the topic changes have one (CreateTopic,
/// CreatePartitions, DeleteTopic, AlterConfigs); other requests pass.
pub fn dry_run(image: &MetadataImage, request: &ControllerRequest) -> Result<(), Refusal> {
    let mut controller = Controller::new(ControllerConfig::default(), 0);
    let decided = match request.clone() {
        ControllerRequest::CreateTopic { name, placement, configs } => {
            controller.create_topic(image, &name, placement, configs)
        }
        ControllerRequest::CreatePartitions { name, count, assignment } => {
            controller.create_partitions(image, &name, count, assignment)
        }
        ControllerRequest::DeleteTopic { name } => controller.delete_topic(image, &name),
        ControllerRequest::AlterConfigs { name, changes } => controller.alter_configs(image, &name, changes),
        _ => Ok(Vec::new()),
    };
    decided.map(|_| ()).map_err(|error| refusal(&error))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::cluster::controller::Placement;
    use crate::cluster::records::MetadataRecord;

    fn image_with_brokers(live: &[i32]) -> MetadataImage {
        let mut image = MetadataImage::default();
        let mut index = 0;
        for node_id in live {
            index += 1;
            let register = MetadataRecord::RegisterBroker { node_id: *node_id, host: "h".into(), port: 1 };
            image.apply(index, &register).expect("register");
            let unfence = MetadataRecord::UnfenceBroker { node_id: *node_id, epoch: index };
            index += 1;
            image.apply(index, &unfence).expect("unfence");
        }
        image
    }

    #[test]
    fn a_dry_run_answers_what_the_controller_would_without_proposing() {
        let image = image_with_brokers(&[0, 1, 2]);
        let create = |replication_factor| ControllerRequest::CreateTopic {
            name: "t".into(),
            placement: Placement::Spread { partitions: 3, replication_factor },
            configs: BTreeMap::new(),
        };
        assert_eq!(dry_run(&image, &create(3)), Ok(()));
        assert_eq!(dry_run(&image, &create(4)).unwrap_err().error, ResponseError::InvalidReplicationFactor);
        let manual = ControllerRequest::CreateTopic {
            name: "t".into(),
            placement: Placement::Manual(vec![vec![0, 7]]),
            configs: BTreeMap::new(),
        };
        assert_eq!(dry_run(&image, &manual).unwrap_err().error, ResponseError::InvalidReplicaAssignment);
        let grow = ControllerRequest::CreatePartitions { name: "t".into(), count: 2, assignment: None };
        assert_eq!(dry_run(&image, &grow).unwrap_err().error, ResponseError::UnknownTopicOrPartition);
    }

    #[test]
    fn controller_refusals_are_kafkas_errors() {
        let cases = [
            (ControllerError::TopicExists("t".into()), ResponseError::TopicAlreadyExists),
            (ControllerError::UnknownTopic("t".into()), ResponseError::UnknownTopicOrPartition),
            (ControllerError::InvalidReplicationFactor("x".into()), ResponseError::InvalidReplicationFactor),
            (ControllerError::InvalidPartitions("x".into()), ResponseError::InvalidPartitions),
            (ControllerError::InvalidReplicaAssignment("x".into()), ResponseError::InvalidReplicaAssignment),
            (ControllerError::ElectionNotNeeded { topic: "t".into(), partition: 0 }, ResponseError::ElectionNotNeeded),
            (
                ControllerError::EligibleLeadersNotAvailable { topic: "t".into(), partition: 0 },
                ResponseError::EligibleLeadersNotAvailable,
            ),
        ];
        for (error, code) in cases {
            let refused = refusal(&error);
            assert_eq!(refused.error, code, "{error:?}");
            assert_eq!(refused.message, error.to_string());
        }
    }
}
