//! JoinGroup (key 11), v0–v9: a member joins (or rejoins) a group and waits for the
//! rebalance to complete; see [`crate::group`]. The response is held by the
//! group's coordinator until then, so this handler can take as long as the group's
//! rebalance timeout.

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::{wire_code, RequestContext, Versions};
use crate::group::{GroupId, JoinRequest, MemberId, Protocol};

pub const VERSIONS: Versions = Versions::new(0, 9);

pub async fn handle(context: &RequestContext<'_>, request: JoinGroupRequest) -> JoinGroupResponse {
    let version = context.version;
    // v0 has no rebalance timeout: the session timeout is both.
    let rebalance_timeout_ms = if version == 0 { request.session_timeout_ms } else { request.rebalance_timeout_ms };
    let group_instance_id = request.group_instance_id.map(|id| id.to_string());
    let join = JoinRequest {
        group_id: GroupId(request.group_id.0.to_string()),
        member_id: MemberId(request.member_id.to_string()),
        // KIP-394: from v4, a dynamic member's first join only gets it a member id.
        require_known_member_id: version >= 4 && group_instance_id.is_none(),
        group_instance_id,
        session_timeout_ms: request.session_timeout_ms.max(0) as u64,
        rebalance_timeout_ms: rebalance_timeout_ms.max(0) as u64,
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| Protocol { name: p.name.to_string(), metadata: p.metadata })
            .collect(),
        client_id: context.header.client_id.as_deref().unwrap_or_default().to_string(),
        client_host: String::new(),
    };
    let response = context.shard.groups.join(join).await;
    let members = response
        .members
        .into_iter()
        .map(|m| {
            JoinGroupResponseMember::default()
                .with_member_id(StrBytes::from_string(m.member_id.0))
                .with_group_instance_id(m.group_instance_id.map(StrBytes::from_string))
                .with_metadata(m.metadata)
        })
        .collect();
    // Before v7 the protocol name is not nullable (Kafka sends "" for none).
    let protocol_name = match response.protocol_name {
        None if version < 7 => Some(StrBytes::default()),
        name => name.map(StrBytes::from_string),
    };
    JoinGroupResponse::default()
        .with_error_code(wire_code(response.error))
        .with_generation_id(response.generation.0)
        .with_protocol_type(response.protocol_type.map(StrBytes::from_string))
        .with_protocol_name(protocol_name)
        .with_leader(StrBytes::from_string(response.leader.0))
        .with_member_id(StrBytes::from_string(response.member_id.0))
        .with_members(members)
}
