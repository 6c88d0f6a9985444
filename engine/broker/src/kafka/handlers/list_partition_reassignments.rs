//! ListPartitionReassignments (key 46), v0: the partition moves in progress
//! (KIP-455), each with its replicas, the ones being added and the ones being
//! removed, from this broker's metadata image; of every partition, or of the
//! listed ones (partitions not moving, or unknown, are left out, as Kafka does). A
//! single broker never moves a partition: the list is empty.

use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::{RequestContext, Versions};

pub const VERSIONS: Versions = Versions::new(0, 0);

pub async fn handle(
    context: &RequestContext<'_>,
    request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let response = ListPartitionReassignmentsResponse::default().with_error_message(None);
    let Some(view) = &context.shard.cluster else { return response };
    let image = view.image();
    let wanted: Option<Vec<(String, Vec<i32>)>> =
        request.topics.map(|topics| topics.into_iter().map(|t| (t.name.0.to_string(), t.partition_indexes)).collect());
    let ids = |nodes: &[i32]| nodes.iter().map(|id| BrokerId(*id)).collect::<Vec<_>>();
    let mut topics = Vec::new();
    for topic in image.topics.values() {
        let listed: Option<&Vec<i32>> = match &wanted {
            None => None,
            Some(wanted) => match wanted.iter().find(|(name, _)| *name == topic.name) {
                Some((_, indexes)) => Some(indexes),
                None => continue,
            },
        };
        let partitions: Vec<OngoingPartitionReassignment> = topic
            .partitions
            .iter()
            .enumerate()
            .filter(|(index, state)| {
                (!state.adding.is_empty() || !state.removing.is_empty())
                    && listed.is_none_or(|indexes| indexes.contains(&(*index as i32)))
            })
            .map(|(index, state)| {
                OngoingPartitionReassignment::default()
                    .with_partition_index(index as i32)
                    .with_replicas(ids(&state.replicas))
                    .with_adding_replicas(ids(&state.adding))
                    .with_removing_replicas(ids(&state.removing))
            })
            .collect();
        if !partitions.is_empty() {
            let name = TopicName(StrBytes::from_string(topic.name.clone()));
            topics.push(OngoingTopicReassignment::default().with_name(name).with_partitions(partitions));
        }
    }
    response.with_topics(topics)
}
