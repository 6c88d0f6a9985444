//! Well-formed Kafka requests of every API and version the broker serves, as a client
//! encodes them: the starting points of the codec's property test
//! (`engine/broker/tests/kafka_codec.rs`) and the seeds of the request fuzz target
//! (`engine/broker/fuzz`, which includes this file by path).
//!
//! The served set is read from `handlers::API_KEYS` and `handlers::versions`, so an
//! API added to the broker is covered here without a change: it gets a request with
//! every field at its default, and a richer one where [`sample_request`] knows the API.

#![allow(dead_code)]

use bytes::{BufMut, Bytes, BytesMut};
use corelog_broker::kafka::handlers;
use corelog_engine::batch::{build_batch, BatchProducer, RecordSpec};
use corelog_engine::types::TimestampMs;
use kafka_protocol::messages::{self, ApiKey, RequestHeader, RequestKind, ResponseKind};
use kafka_protocol::protocol::{Encodable, StrBytes};

/// The client id every sample request carries.
pub const CLIENT_ID: &str = "corelog-test";

/// The topic the rich sample requests name.
pub const TOPIC: &str = "seed-topic";

macro_rules! every_api {
    ($($key:ident)*) => {
        /// The request of `api_key` with every field at its default.
        pub fn default_request(api_key: ApiKey) -> RequestKind {
            match api_key {
                $(ApiKey::$key => RequestKind::$key(Default::default()),)*
            }
        }

        /// The response of `api_key` with every field at its default.
        pub fn default_response(api_key: ApiKey) -> ResponseKind {
            match api_key {
                $(ApiKey::$key => ResponseKind::$key(Default::default()),)*
            }
        }

        /// The API key a decoded request body belongs to.
        pub fn api_key_of(request: &RequestKind) -> Option<ApiKey> {
            match request {
                $(RequestKind::$key(_) => Some(ApiKey::$key),)*
                #[allow(unreachable_patterns)]
                _ => None,
            }
        }
    };
}

// Every API key of kafka-protocol 0.18 (`ApiKey`, `RequestKind` and `ResponseKind`
// share these names).
every_api! {
    Produce Fetch ListOffsets Metadata OffsetCommit OffsetFetch FindCoordinator JoinGroup
    Heartbeat LeaveGroup SyncGroup DescribeGroups ListGroups SaslHandshake ApiVersions
    CreateTopics DeleteTopics DeleteRecords InitProducerId OffsetForLeaderEpoch
    AddPartitionsToTxn AddOffsetsToTxn EndTxn WriteTxnMarkers TxnOffsetCommit DescribeAcls
    CreateAcls DeleteAcls DescribeConfigs AlterConfigs AlterReplicaLogDirs DescribeLogDirs
    SaslAuthenticate CreatePartitions CreateDelegationToken RenewDelegationToken
    ExpireDelegationToken DescribeDelegationToken DeleteGroups ElectLeaders
    IncrementalAlterConfigs AlterPartitionReassignments ListPartitionReassignments
    OffsetDelete DescribeClientQuotas AlterClientQuotas DescribeUserScramCredentials
    AlterUserScramCredentials Vote BeginQuorumEpoch EndQuorumEpoch DescribeQuorum
    AlterPartition UpdateFeatures Envelope FetchSnapshot DescribeCluster DescribeProducers
    BrokerRegistration BrokerHeartbeat UnregisterBroker DescribeTransactions
    ListTransactions AllocateProducerIds ConsumerGroupHeartbeat ConsumerGroupDescribe
    ControllerRegistration GetTelemetrySubscriptions PushTelemetry AssignReplicasToDirs
    ListConfigResources DescribeTopicPartitions ShareGroupHeartbeat ShareGroupDescribe
    ShareFetch ShareAcknowledge AddRaftVoter RemoveRaftVoter UpdateRaftVoter
    InitializeShareGroupState ReadShareGroupState WriteShareGroupState
    DeleteShareGroupState ReadShareGroupStateSummary DescribeShareGroupOffsets
    AlterShareGroupOffsets DeleteShareGroupOffsets
}

/// Every `(api_key, version)` the broker serves, in `handlers::API_KEYS` order.
pub fn served() -> Vec<(ApiKey, i16)> {
    handlers::API_KEYS
        .iter()
        .flat_map(|&api_key| {
            let versions = handlers::versions(api_key).expect("every key of API_KEYS has a version range");
            (versions.min..=versions.max).map(move |version| (api_key, version))
        })
        .collect()
}

fn topic_name(name: &str) -> messages::TopicName {
    messages::TopicName(StrBytes::from_string(name.to_string()))
}

/// A request of `api_key` valid at `version`: with a topic, a partition, a record
/// batch or configs where the API has them and this file knows it, else the default.
pub fn sample_request(api_key: ApiKey, version: i16) -> RequestKind {
    use messages::*;
    match api_key {
        ApiKey::Produce => {
            let batch = build_batch(
                TimestampMs(1_700_000_000_000),
                BatchProducer::default(),
                &[
                    RecordSpec { key: Some(b"k"), value: Some(b"hello"), timestamp_delta_ms: 0 },
                    RecordSpec { key: None, value: Some(b"world"), timestamp_delta_ms: 1 },
                ],
            );
            let partition =
                produce_request::PartitionProduceData::default().with_index(0).with_records(Some(Bytes::from(batch)));
            let topic = produce_request::TopicProduceData::default()
                .with_name(topic_name(TOPIC))
                .with_partition_data(vec![partition]);
            ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![topic]).into()
        }
        ApiKey::Fetch => {
            let partition = fetch_request::FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20);
            let topic =
                fetch_request::FetchTopic::default().with_topic(topic_name(TOPIC)).with_partitions(vec![partition]);
            FetchRequest::default()
                .with_max_wait_ms(100)
                .with_min_bytes(1)
                .with_max_bytes(1 << 20)
                .with_topics(vec![topic])
                .into()
        }
        ApiKey::ListOffsets => {
            let partition =
                list_offsets_request::ListOffsetsPartition::default().with_partition_index(0).with_timestamp(-1);
            let topic = list_offsets_request::ListOffsetsTopic::default()
                .with_name(topic_name(TOPIC))
                .with_partitions(vec![partition]);
            ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![topic]).into()
        }
        ApiKey::Metadata => {
            let topic = metadata_request::MetadataRequestTopic::default().with_name(Some(topic_name(TOPIC)));
            MetadataRequest::default().with_topics(Some(vec![topic])).into()
        }
        ApiKey::CreateTopics => {
            let config = create_topics_request::CreatableTopicConfig::default()
                .with_name(StrBytes::from_static_str("retention.ms"))
                .with_value(Some(StrBytes::from_static_str("60000")));
            let topic = create_topics_request::CreatableTopic::default()
                .with_name(topic_name(TOPIC))
                .with_num_partitions(3)
                .with_replication_factor(1)
                .with_configs(vec![config]);
            CreateTopicsRequest::default().with_topics(vec![topic]).with_timeout_ms(30_000).into()
        }
        ApiKey::DeleteTopics if version <= 5 => {
            DeleteTopicsRequest::default().with_topic_names(vec![topic_name(TOPIC)]).with_timeout_ms(30_000).into()
        }
        ApiKey::ApiVersions if version >= 3 => ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str("0.1.0"))
            .into(),
        _ => default_request(api_key),
    }
}

/// A request frame body (header and request, no size prefix) as a client encodes it.
pub fn request_frame(api_key: ApiKey, version: i16, correlation_id: i32, body: &RequestKind) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
    let mut frame = BytesMut::new();
    header.encode(&mut frame, api_key.request_header_version(version)).expect("encoding a request header");
    body.encode(&mut frame, version).unwrap_or_else(|e| panic!("encoding {api_key:?} v{version}: {e}"));
    frame.freeze()
}

/// `frame` behind its 4-byte big-endian size prefix, as it travels on the wire.
pub fn with_size_prefix(frame: &[u8]) -> Vec<u8> {
    let mut wire = BytesMut::with_capacity(4 + frame.len());
    wire.put_i32(i32::try_from(frame.len()).expect("a frame fits an i32 size"));
    wire.put_slice(frame);
    wire.to_vec()
}
