//! DescribeCluster (key 60), v0–v2: the cluster id, the controller and the brokers,
//! which on a single broker are all this one (it is its own controller). On a node
//! of a cluster: the live (unfenced) brokers of the metadata image with their
//! registered addresses, and the metadata quorum's leader as the controller (-1
//! while there is none).
//!
//! Only the broker endpoints can be described (endpoint type 1); asking for the
//! controllers' endpoints (type 2, meant for KRaft controllers) is
//! UNSUPPORTED_ENDPOINT_TYPE, as a Kafka broker answers. corelog has no
//! authorizer, so when asked, the authorized cluster operations are all the
//! operations a cluster supports, as Kafka reports them without an authorizer.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{RequestContext, Versions};
use crate::cluster::records::NO_LEADER;

pub const VERSIONS: Versions = Versions::new(0, 2);

/// The endpoint type of brokers (v1+).
const ENDPOINT_TYPE_BROKER: i8 = 1;

/// Kafka's `AclOperation` codes of what can be done to a cluster: CREATE (5),
/// ALTER (7), DESCRIBE (8), CLUSTER_ACTION (9), DESCRIBE_CONFIGS (10),
/// ALTER_CONFIGS (11), IDEMPOTENT_WRITE (12).
const CLUSTER_OPERATIONS: [u32; 7] = [5, 7, 8, 9, 10, 11, 12];

pub async fn handle(context: &RequestContext<'_>, request: DescribeClusterRequest) -> DescribeClusterResponse {
    let broker = &context.shard.broker;
    let node_id = BrokerId(broker.config.node_id);
    let mut response = DescribeClusterResponse::default().with_error_message(None);
    if context.version >= 1 && request.endpoint_type != ENDPOINT_TYPE_BROKER {
        return response.with_error_code(ResponseError::UnsupportedEndpointType.code()).with_error_message(Some(
            StrBytes::from_string(format!(
            "endpoint type {} is not supported: this broker describes brokers (endpoint type {ENDPOINT_TYPE_BROKER})",
            request.endpoint_type
        )),
        ));
    }
    let describe = |id: i32, host: String, port: u16| {
        DescribeClusterBroker::default()
            .with_broker_id(BrokerId(id))
            .with_host(StrBytes::from_string(host))
            .with_port(i32::from(port))
            .with_rack(None)
    };
    let (controller_id, brokers) = match &context.shard.cluster {
        Some(view) => {
            let image = view.image();
            let brokers = image.live_brokers().map(|b| describe(b.node_id, b.host.clone(), b.port)).collect();
            (BrokerId(view.quorum_status().leader.unwrap_or(NO_LEADER)), brokers)
        }
        None => {
            let (host, port) = broker.advertised();
            (node_id, vec![describe(node_id.0, host, port)])
        }
    };
    response = response
        .with_cluster_id(StrBytes::from_string(broker.cluster_id.clone()))
        .with_controller_id(controller_id)
        .with_brokers(brokers);
    if request.include_cluster_authorized_operations {
        let operations = CLUSTER_OPERATIONS.iter().fold(0_i32, |bits, operation| bits | (1 << operation));
        response = response.with_cluster_authorized_operations(operations);
    }
    response
}
