//! ListGroups (key 16), v0–v5: every group of every shard's coordinator, with its
//! protocol type, state (v4+, filterable) and type (v5+, always "classic").

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use super::{RequestContext, Versions};

pub const VERSIONS: Versions = Versions::new(0, 5);

/// The classic group protocol; KIP-848 "consumer" groups are not served.
const GROUP_TYPE: &str = "classic";

pub async fn handle(context: &RequestContext<'_>, request: ListGroupsRequest) -> ListGroupsResponse {
    let groups = match context.shard.groups.list().await {
        Ok(groups) => groups,
        Err(error) => return ListGroupsResponse::default().with_error_code(error.code()),
    };
    let states: Vec<String> = request.states_filter.iter().map(|s| s.to_ascii_lowercase()).collect();
    let types: Vec<String> = request.types_filter.iter().map(|t| t.to_ascii_lowercase()).collect();
    if !types.is_empty() && !types.iter().any(|t| t == GROUP_TYPE) {
        return ListGroupsResponse::default();
    }
    let listed = groups
        .into_iter()
        .filter(|g| states.is_empty() || states.iter().any(|s| *s == g.state.name().to_ascii_lowercase()))
        .map(|g| {
            ListedGroup::default()
                .with_group_id(kafka_protocol::messages::GroupId(StrBytes::from_string(g.group_id.0)))
                .with_protocol_type(StrBytes::from_string(g.protocol_type))
                .with_group_state(StrBytes::from_static_str(g.state.name()))
                .with_group_type(StrBytes::from_static_str(GROUP_TYPE))
        })
        .collect();
    ListGroupsResponse::default().with_groups(listed)
}
