//! DeleteGroups (key 42), v0–v2: removes empty groups and their committed offsets
//! (tombstones in `__consumer_offsets`, answered once durable). A group with members
//! gets NON_EMPTY_GROUP; an unknown one GROUP_ID_NOT_FOUND.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::{wire_code, RequestContext, Versions};
use crate::group::GroupId;

pub const VERSIONS: Versions = Versions::new(0, 2);

pub async fn handle(context: &RequestContext<'_>, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for name in request.groups_names {
        let error = context.shard.groups.delete(GroupId(name.0.to_string())).await;
        results.push(DeletableGroupResult::default().with_group_id(name).with_error_code(wire_code(error)));
    }
    DeleteGroupsResponse::default().with_results(results)
}
