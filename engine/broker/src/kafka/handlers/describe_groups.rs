//! DescribeGroups (key 15), v0–v6: state, protocol and members of groups. Member
//! metadata and assignments are filled in only while a group is Stable, as Kafka
//! does. An unknown group is "Dead"; from v6 it also gets GROUP_ID_NOT_FOUND.
//! Authorized operations are not computed (no ACLs): the field says "not provided".

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{RequestContext, Versions};
use crate::group::{GroupId, GroupState};

pub const VERSIONS: Versions = Versions::new(0, 6);

pub async fn handle(context: &RequestContext<'_>, request: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let mut described = Vec::with_capacity(request.groups.len());
    for name in request.groups {
        let entry = DescribedGroup::default().with_group_id(name.clone()).with_error_message(None);
        let entry = match context.shard.groups.describe(GroupId(name.0.to_string())).await {
            Ok(Some(group)) => {
                let members = group
                    .members
                    .into_iter()
                    .map(|m| {
                        DescribedGroupMember::default()
                            .with_member_id(StrBytes::from_string(m.member_id.0))
                            .with_group_instance_id(m.group_instance_id.map(StrBytes::from_string))
                            .with_client_id(StrBytes::from_string(m.client_id))
                            .with_client_host(StrBytes::from_string(m.client_host))
                            .with_member_metadata(m.metadata)
                            .with_member_assignment(m.assignment)
                    })
                    .collect();
                entry
                    .with_group_state(StrBytes::from_static_str(group.state.name()))
                    .with_protocol_type(StrBytes::from_string(group.protocol_type))
                    .with_protocol_data(StrBytes::from_string(group.protocol_data))
                    .with_members(members)
            }
            Ok(None) => {
                let entry = entry.with_group_state(StrBytes::from_static_str(GroupState::Dead.name()));
                if context.version >= 6 {
                    entry
                        .with_error_code(ResponseError::GroupIdNotFound.code())
                        .with_error_message(Some(StrBytes::from_string(format!("group {} not found", name.0.as_str()))))
                } else {
                    entry
                }
            }
            Err(error) => entry.with_error_code(error.code()),
        };
        described.push(entry);
    }
    DescribeGroupsResponse::default().with_groups(described)
}
