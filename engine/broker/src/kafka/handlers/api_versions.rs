//! ApiVersions (key 18), v0–v4: the API keys and version ranges this broker serves.
//!
//! A request at a version above ours still gets an answer, at v0 with
//! UNSUPPORTED_VERSION and the full list, so the client can retry at a version we
//! speak (KIP-511); the connection layer does that, see [`unsupported_version`].

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::ResponseError;

use super::{versions, RequestContext, Versions, API_KEYS, TRANSACTION_API_KEYS};

pub const VERSIONS: Versions = Versions::new(0, 4);

pub async fn handle(context: &RequestContext<'_>, _request: ApiVersionsRequest) -> ApiVersionsResponse {
    supported(context.shard.transactions.is_some())
}

/// The response to an ApiVersions request at a version we do not serve (encode at
/// v0); `transactions`: whether this broker serves the transaction APIs (a single
/// broker does, a cluster node not yet).
pub fn unsupported_version(transactions: bool) -> ApiVersionsResponse {
    supported(transactions).with_error_code(ResponseError::UnsupportedVersion.code())
}

fn supported(transactions: bool) -> ApiVersionsResponse {
    let api_keys = API_KEYS
        .iter()
        .filter(|api_key| transactions || !TRANSACTION_API_KEYS.contains(api_key))
        .filter_map(|&api_key| {
            let served = versions(api_key)?;
            // librdkafka enables compression only if Produce is advertised from v0
            // (its feature probe still dates from the message-set era); it then sends
            // v3+ with RecordBatch v2, the only format the decoder accepts.
            let min_version = if api_key == ApiKey::Produce { 0 } else { served.min };
            Some(
                ApiVersion::default()
                    .with_api_key(api_key as i16)
                    .with_min_version(min_version)
                    .with_max_version(served.max),
            )
        })
        .collect();
    ApiVersionsResponse::default().with_api_keys(api_keys)
}
