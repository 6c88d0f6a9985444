//! The metadata records: what the quorum's log holds, one JSON object per Raft entry.
//!
//! Records state facts, not requests: the active controller decides (see
//! [`super::controller`]) and proposes records; every node applies the committed ones
//! in log order to its [`super::image::MetadataImage`], and applying is deterministic:
//! the same records give the same image on every node. Where Kafka derives a value
//! when it applies a record (a broker's epoch is the offset of its registration, a
//! partition's leader epoch rises when its leader changes), the image derives it the
//! same way from the entry's Raft index, so records carry no value the image could
//! compute itself.
//!
//! The encoding is JSON with a `type` tag: metadata is low volume (registrations,
//! topic changes, ISR changes), a dump of the log is readable, and fields added later
//! take defaults when old entries are read. The golden test below pins the format.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use corelog_engine::types::TopicId;

/// A node id as Kafka writes it (`node.id`, `broker.id`): 0 or more.
pub type NodeId = i32;

/// "No leader": a partition whose replicas in the ISR are all gone (Kafka's -1).
pub const NO_LEADER: NodeId = -1;

/// One fact of the cluster's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum MetadataRecord {
    /// The cluster's id, the first record the first active controller commits. A
    /// node applying a different id than its data directory holds stops.
    Cluster { cluster_id: String },
    /// A broker (re)started and registered; its epoch is the index of this record.
    /// It starts fenced: no leadership until it is unfenced.
    RegisterBroker { node_id: NodeId, host: String, port: u16 },
    /// The broker missed its heartbeats (or shut down): it leads nothing and counts
    /// in no ISR until it registers again or is unfenced.
    FenceBroker { node_id: NodeId, epoch: u64 },
    /// The broker's heartbeats show it alive and caught up with the metadata log.
    UnfenceBroker { node_id: NodeId, epoch: u64 },
    /// A new topic; its partitions follow as [`MetadataRecord::Partition`] records.
    Topic {
        name: String,
        #[serde(with = "topic_id_text")]
        topic_id: TopicId,
        #[serde(default)]
        configs: BTreeMap<String, String>,
    },
    /// A partition's full state: set when it is created and whenever its replicas,
    /// leader or ISR change. Its leader epoch rises when the leader changes, its
    /// partition epoch on every record (see the image).
    Partition {
        #[serde(with = "topic_id_text")]
        topic_id: TopicId,
        partition: i32,
        replicas: Vec<NodeId>,
        isr: Vec<NodeId>,
        leader: NodeId,
    },
    DeleteTopic {
        #[serde(with = "topic_id_text")]
        topic_id: TopicId,
    },
    /// A topic config set (`Some`) or removed (`None`: back to the default).
    TopicConfig {
        #[serde(with = "topic_id_text")]
        topic_id: TopicId,
        key: String,
        value: Option<String>,
    },
    /// Producer ids `[first, first + count)` belong to `node_id` from now on.
    ProducerIds { node_id: NodeId, first: i64, count: i64 },
    /// A partition's reassignment (KIP-455): the replicas being added (they catch up
    /// before the replica set becomes the target) and removed (they go once it
    /// does); both empty: none in progress. Follows the [`MetadataRecord::Partition`]
    /// record that changed the replicas, in the same entry.
    Reassignment {
        #[serde(with = "topic_id_text")]
        topic_id: TopicId,
        partition: i32,
        adding: Vec<NodeId>,
        removing: Vec<NodeId>,
    },
}

impl MetadataRecord {
    pub fn encode(&self) -> Vec<u8> {
        // A record holds strings, integers and maps with string keys: it always
        // serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<MetadataRecord, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("metadata record {:?}: {e}", String::from_utf8_lossy(bytes)))
    }

    /// One Raft entry holding all the records of one controller decision (a JSON
    /// array), applied together: no image ever shows half a decision (a topic with
    /// some of its partitions), as a KRaft record batch is atomic.
    pub fn encode_entry(records: &[MetadataRecord]) -> Vec<u8> {
        serde_json::to_vec(records).unwrap_or_default()
    }

    /// The records of one Raft entry: an array ([`MetadataRecord::encode_entry`]),
    /// or the single record an entry held before decisions were batched.
    pub fn decode_entry(bytes: &[u8]) -> Result<Vec<MetadataRecord>, String> {
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'[') => serde_json::from_slice(bytes)
                .map_err(|e| format!("metadata entry {:?}: {e}", String::from_utf8_lossy(bytes))),
            _ => MetadataRecord::decode(bytes).map(|record| vec![record]),
        }
    }
}

/// Topic ids as Kafka prints them (hyphenated UUID text).
pub(crate) mod topic_id_text {
    use corelog_engine::types::TopicId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &TopicId, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(id)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<TopicId, D::Error> {
        let text = String::deserialize(deserializer)?;
        TopicId::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not a topic id")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind() -> Vec<MetadataRecord> {
        let topic_id = TopicId(0x0123_4567_89ab_4def_8123_4567_89ab_cdef);
        vec![
            MetadataRecord::Cluster { cluster_id: "q1VlNQxzRkS0zZ3eZl1rSg".to_string() },
            MetadataRecord::RegisterBroker { node_id: 1, host: "127.0.0.1".to_string(), port: 19092 },
            MetadataRecord::FenceBroker { node_id: 1, epoch: 7 },
            MetadataRecord::UnfenceBroker { node_id: 1, epoch: 7 },
            MetadataRecord::Topic {
                name: "orders".to_string(),
                topic_id,
                configs: BTreeMap::from([("min.insync.replicas".to_string(), "2".to_string())]),
            },
            MetadataRecord::Partition { topic_id, partition: 0, replicas: vec![0, 1, 2], isr: vec![0, 2], leader: 2 },
            MetadataRecord::TopicConfig { topic_id, key: "retention.ms".to_string(), value: None },
            MetadataRecord::DeleteTopic { topic_id },
            MetadataRecord::ProducerIds { node_id: 2, first: 1000, count: 1000 },
            MetadataRecord::Reassignment { topic_id, partition: 0, adding: vec![3], removing: vec![0] },
        ]
    }

    /// The log's format is on disk in every node's quorum log: a change that makes
    /// old entries unreadable must show up here.
    #[test]
    fn the_encoding_matches_the_golden_file() {
        let encoded: Vec<String> =
            every_kind().iter().map(|r| String::from_utf8(r.encode()).expect("JSON is UTF-8")).collect();
        let golden = include_str!("golden/records.jsonl");
        assert_eq!(encoded.join("\n") + "\n", golden);
        for (line, record) in golden.lines().zip(every_kind()) {
            assert_eq!(MetadataRecord::decode(line.as_bytes()).expect("golden decodes"), record);
        }
    }

    #[test]
    fn damaged_or_unknown_records_are_errors_that_quote_them() {
        let error = MetadataRecord::decode(br#"{"type":"warp_drive"}"#).expect_err("unknown type");
        assert!(error.contains("warp_drive"), "{error}");
        let error =
            MetadataRecord::decode(br#"{"type":"delete_topic","topic_id":"not-an-id"}"#).expect_err("bad topic id");
        assert!(error.contains("not-an-id"), "{error}");
        assert!(MetadataRecord::decode(b"{\"type\":\"cluster\"").is_err());
    }

    #[test]
    fn an_entry_holds_a_decisions_records_and_older_single_record_entries_still_decode() {
        let records = every_kind();
        let entry = MetadataRecord::encode_entry(&records);
        assert_eq!(MetadataRecord::decode_entry(&entry).expect("decodes"), records);
        let single = records[0].encode();
        assert_eq!(MetadataRecord::decode_entry(&single).expect("decodes"), vec![records[0].clone()]);
        assert_eq!(MetadataRecord::decode_entry(b"[]").expect("decodes"), Vec::new());
        let error = MetadataRecord::decode_entry(br#"[{"type":"warp_drive"}]"#).expect_err("unknown type");
        assert!(error.contains("warp_drive"), "{error}");
    }
}
