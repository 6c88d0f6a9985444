//! LeaveGroup (key 13), v0–v5: members leave at once instead of timing out; the
//! rest of the group rebalances. From v3 one request names several members (by
//! member id or group.instance.id) and each gets its own error.

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::{wire_code, RequestContext, Versions};
use crate::group::{GroupId, LeaveRequest, LeavingMember, MemberId};

pub const VERSIONS: Versions = Versions::new(0, 5);

pub async fn handle(context: &RequestContext<'_>, request: LeaveGroupRequest) -> LeaveGroupResponse {
    let members = if context.version >= 3 {
        request
            .members
            .into_iter()
            .map(|m| LeavingMember {
                member_id: MemberId(m.member_id.to_string()),
                group_instance_id: m.group_instance_id.map(|id| id.to_string()),
            })
            .collect()
    } else {
        vec![LeavingMember { member_id: MemberId(request.member_id.to_string()), group_instance_id: None }]
    };
    let leave = LeaveRequest { group_id: GroupId(request.group_id.0.to_string()), members };
    let response = context.shard.groups.leave(leave).await;
    if context.version < 3 {
        // One member: its error is the request's (Kafka's LeaveGroupResponse.getError).
        let error = response.error.or_else(|| response.members.iter().find_map(|(_, error)| *error));
        return LeaveGroupResponse::default().with_error_code(wire_code(error));
    }
    let members = response
        .members
        .into_iter()
        .map(|(member, error)| {
            MemberResponse::default()
                .with_member_id(StrBytes::from_string(member.member_id.0))
                .with_group_instance_id(member.group_instance_id.map(StrBytes::from_string))
                .with_error_code(wire_code(error))
        })
        .collect();
    LeaveGroupResponse::default().with_error_code(wire_code(response.error)).with_members(members)
}
