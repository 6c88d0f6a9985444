//! SyncGroup (key 14), v0–v5: after a JoinGroup, members fetch their assignment;
//! the leader's request carries everyone's. Followers are held until the leader's
//! arrives. The broker never decodes assignments.

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::{wire_code, RequestContext, Versions};
use crate::group::{GenerationId, GroupId, MemberId, SyncRequest};

pub const VERSIONS: Versions = Versions::new(0, 5);

pub async fn handle(context: &RequestContext<'_>, request: SyncGroupRequest) -> SyncGroupResponse {
    let sync = SyncRequest {
        group_id: GroupId(request.group_id.0.to_string()),
        generation: GenerationId(request.generation_id),
        member_id: MemberId(request.member_id.to_string()),
        group_instance_id: request.group_instance_id.map(|id| id.to_string()),
        protocol_type: request.protocol_type.map(|t| t.to_string()),
        protocol_name: request.protocol_name.map(|n| n.to_string()),
        assignments: request
            .assignments
            .into_iter()
            .map(|a| (MemberId(a.member_id.to_string()), a.assignment))
            .collect(),
    };
    let response = context.shard.groups.sync(sync).await;
    SyncGroupResponse::default()
        .with_error_code(wire_code(response.error))
        .with_protocol_type(response.protocol_type.map(StrBytes::from_string))
        .with_protocol_name(response.protocol_name.map(StrBytes::from_string))
        .with_assignment(response.assignment)
}
