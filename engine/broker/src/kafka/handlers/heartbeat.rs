//! Heartbeat (key 12), v0–v4: keeps a member's session alive, and tells it to rejoin
//! (REBALANCE_IN_PROGRESS) when a rebalance started.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::{wire_code, RequestContext, Versions};
use crate::group::{self, GenerationId, GroupId, MemberId};

pub const VERSIONS: Versions = Versions::new(0, 4);

pub async fn handle(context: &RequestContext<'_>, request: HeartbeatRequest) -> HeartbeatResponse {
    let heartbeat = group::HeartbeatRequest {
        group_id: GroupId(request.group_id.0.to_string()),
        generation: GenerationId(request.generation_id),
        member_id: MemberId(request.member_id.to_string()),
        group_instance_id: request.group_instance_id.map(|id| id.to_string()),
    };
    let error = context.shard.groups.heartbeat(heartbeat).await;
    HeartbeatResponse::default().with_error_code(wire_code(error))
}
