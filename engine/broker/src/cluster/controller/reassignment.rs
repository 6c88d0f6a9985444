//! Partition reassignment (KIP-455, Kafka's `ReplicationControlManager`
//! `alterPartitionReassignments` and `PartitionReassignmentReplicas`), sans IO.
//!
//! Moving a partition from replicas `original` to `target` goes in two steps, each
//! one controller decision:
//! 1. Start: the replica set becomes `target` followed by the replicas leaving
//!    (`removing = original - target`), with `adding = target - original`. The new
//!    replicas' brokers create the partition and fetch from the leader like any
//!    follower; the leader adds each to the ISR once it has caught up.
//! 2. Finish ([`Controller::complete_reassignments`], on the quorum's tick): once
//!    every adding replica is in the ISR, the replica set becomes `target`, the ISR
//!    keeps only target replicas, and a leader outside the target hands over to the
//!    first target replica in the ISR (a new leader epoch).
//!
//! A reassignment that adds nothing finishes at once. Cancelling one (a `None`
//! target) returns the replica set to `original`. A new target for a partition
//! already moving replaces the old one: what it adds is counted from the same
//! `original`, and every replica assigned now that the new target lacks leaves.

use super::*;

/// One partition's reassignment request: its new replicas, or `None` to cancel.
pub type ReassignmentChange = (String, i32, Option<Vec<NodeId>>);

impl Controller {
    /// Starts, replaces or cancels the reassignment of each partition of `changes`:
    /// one result per entry, and the records of those that succeed.
    pub fn alter_reassignments(
        &mut self,
        image: &MetadataImage,
        changes: &[ReassignmentChange],
    ) -> (Vec<Result<(), ControllerError>>, Vec<MetadataRecord>) {
        let mut after = image.clone();
        let mut records = Vec::new();
        let results = changes
            .iter()
            .map(|(name, index, target)| {
                let decided = reassign(&after, name, *index, target.as_deref())?;
                apply_all(&mut after, &decided);
                records.extend(decided);
                Ok(())
            })
            .collect();
        (results, records)
    }

    /// Finishes every reassignment whose adding replicas are all in sync.
    pub fn complete_reassignments(&mut self, image: &MetadataImage) -> Vec<MetadataRecord> {
        let mut records = Vec::new();
        for (topic, index, state) in image.partitions() {
            if state.adding.is_empty() && state.removing.is_empty() {
                continue;
            }
            if state.adding.iter().all(|r| state.isr.contains(r)) {
                let target: Vec<NodeId> =
                    state.replicas.iter().copied().filter(|r| !state.removing.contains(r)).collect();
                tracing::info!("{}/{index}: reassignment to {target:?} complete", topic.name);
                // Every adding replica is in sync: the target has one.
                records.extend(settle(image, (&topic.name, topic.id), index, state, &target).unwrap_or_default());
            }
        }
        records
    }
}

/// The records that start, replace or cancel one partition's reassignment.
fn reassign(
    image: &MetadataImage,
    name: &str,
    index: i32,
    target: Option<&[NodeId]>,
) -> Result<Vec<MetadataRecord>, ControllerError> {
    let topic = image.topic(name).ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))?;
    let state = image.partition(name, index).ok_or_else(|| ControllerError::UnknownTopic(format!("{name}/{index}")))?;
    let moving = !state.adding.is_empty() || !state.removing.is_empty();
    // The replicas before any reassignment in progress started.
    let original: Vec<NodeId> = state.replicas.iter().copied().filter(|r| !state.adding.contains(r)).collect();
    let Some(target) = target else {
        if !moving {
            return Err(ControllerError::NoReassignmentInProgress { topic: name.to_string(), partition: index });
        }
        return settle(image, (name, topic.id), index, state, &original);
    };
    check_target(image, name, index, target)?;
    let adding: Vec<NodeId> = target.iter().copied().filter(|r| !original.contains(r)).collect();
    // Every replica assigned now and not in the target leaves, including one an
    // earlier target was adding: it may be in the ISR already.
    let removing: Vec<NodeId> = state.replicas.iter().copied().filter(|r| !target.contains(r)).collect();
    if adding.is_empty() {
        // Nothing to catch up: the target (a subset or a reordering) holds at once.
        return settle(image, (name, topic.id), index, state, target);
    }
    let replicas: Vec<NodeId> = target.iter().chain(&removing).copied().collect();
    Ok(vec![
        MetadataRecord::Partition {
            topic_id: topic.id,
            partition: index,
            replicas,
            isr: state.isr.clone(),
            leader: state.leader,
        },
        MetadataRecord::Reassignment { topic_id: topic.id, partition: index, adding, removing },
    ])
}

/// A target replica list: not empty, each broker registered and named once.
fn check_target(image: &MetadataImage, name: &str, index: i32, target: &[NodeId]) -> Result<(), ControllerError> {
    let invalid = |reason: String| Err(ControllerError::InvalidReplicaAssignment(format!("{name}/{index}: {reason}")));
    if target.is_empty() {
        return invalid("the new replica list is empty".to_string());
    }
    let distinct: BTreeSet<_> = target.iter().collect();
    if distinct.len() != target.len() {
        return invalid(format!("{target:?} names a broker twice"));
    }
    if let Some(unknown) = target.iter().find(|id| !image.brokers.contains_key(id)) {
        return invalid(format!("broker {unknown} is not registered"));
    }
    Ok(())
}

/// The records that make `replicas` the partition's replica set with no
/// reassignment in progress: the ISR keeps only those replicas, and a leader
/// outside them (or none) is replaced by the first of them in sync and live.
/// Refused when none of them is in sync: the partition would be left without the
/// replicas that hold its committed data.
fn settle(
    image: &MetadataImage,
    (name, topic_id): (&str, TopicId),
    index: i32,
    state: &PartitionImage,
    replicas: &[NodeId],
) -> Result<Vec<MetadataRecord>, ControllerError> {
    let isr = in_replica_order(replicas, &state.isr);
    if isr.is_empty() {
        return Err(ControllerError::InvalidReplicaAssignment(format!(
            "{name}/{index}: none of {replicas:?} is in sync (ISR {:?}); it would lose the partition's data",
            state.isr
        )));
    }
    let leader = match replicas.contains(&state.leader) && image.is_live(state.leader) {
        true => state.leader,
        false => replicas.iter().copied().find(|r| isr.contains(r) && image.is_live(*r)).unwrap_or(NO_LEADER),
    };
    Ok(vec![
        MetadataRecord::Partition { topic_id, partition: index, replicas: replicas.to_vec(), isr, leader },
        MetadataRecord::Reassignment { topic_id, partition: index, adding: Vec::new(), removing: Vec::new() },
    ])
}
