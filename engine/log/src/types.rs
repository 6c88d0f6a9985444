//! Typed identifiers. Raw integers do not cross module boundaries: an offset is an
//! [`Offset`], a partition index is a [`PartitionId`], and so on.

use std::fmt;

use crate::error::EngineError;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// A record's position in a partition's log: the Kafka offset.
    Offset(i64)
);
id_type!(
    /// A partition's index within its topic.
    PartitionId(i32)
);
/// One incarnation of a topic name (Kafka's topic id, a UUID): a topic created again
/// after a delete gets a new one, so an op for the deleted incarnation can never
/// reach the new one. The 128 bits in the UUID's byte order; shown and parsed in its
/// hyphenated form (`8-4-4-4-12` lowercase hex digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TopicId(pub u128);

impl TopicId {
    /// A random (version 4) id from 16 random bytes, as Kafka's are.
    pub fn from_random_bytes(mut bytes: [u8; 16]) -> TopicId {
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        TopicId(u128::from_be_bytes(bytes))
    }

    /// The UUID version (4 for random ids).
    pub fn version(self) -> u8 {
        ((self.0 >> 76) & 0xf) as u8
    }

    /// Parses the hyphenated form [`fmt::Display`] writes.
    pub fn parse(text: &str) -> Option<TopicId> {
        let groups: Vec<&str> = text.split('-').collect();
        let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        if lengths != [8, 4, 4, 4, 12] || !groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_hexdigit())) {
            return None;
        }
        u128::from_str_radix(&groups.concat(), 16).ok().map(TopicId)
    }
}

impl fmt::Display for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = format!("{:032x}", self.0);
        write!(f, "{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
    }
}
id_type!(
    /// The index of a shard (one glommio executor, pinned to one core).
    ShardId(usize)
);
id_type!(
    /// The leader epoch the broker stamps into each batch it appends.
    LeaderEpoch(i32)
);
id_type!(
    /// An idempotent producer's id, as carried in the batch header.
    ProducerId(i64)
);
id_type!(
    /// Milliseconds since the Unix epoch, Kafka's timestamp unit.
    TimestampMs(i64)
);
id_type!(
    /// An idempotent producer's epoch, as carried in the batch header. A producer
    /// that restarts gets a higher epoch, which fences the older instance.
    ProducerEpoch(i16)
);
id_type!(
    /// An idempotent producer's sequence number for one partition: the first record
    /// of a batch has the batch's `base_sequence`, each next record the next number.
    /// Sequences wrap from `i32::MAX` to 0, so their order is not the integers'.
    Sequence(i32)
);

impl Offset {
    pub fn next(self) -> Offset {
        Offset(self.0 + 1)
    }
}

impl Sequence {
    /// The sequence after this one; `i32::MAX` is followed by 0, as in Kafka.
    pub fn next(self) -> Sequence {
        self.plus(1)
    }

    /// The sequence `delta` (>= 0) after this one, wrapping like [`Sequence::next`]:
    /// a batch's last sequence is `base_sequence.plus(last_offset_delta)`
    /// (Kafka's `DefaultRecordBatch.incrementSequence`).
    pub fn plus(self, delta: i32) -> Sequence {
        assert!(delta >= 0, "sequence increments are never negative");
        if self.0 > i32::MAX - delta {
            Sequence(delta - (i32::MAX - self.0) - 1)
        } else {
            Sequence(self.0 + delta)
        }
    }
}

/// The longest topic name Kafka accepts.
pub const TOPIC_NAME_LENGTH_MAX: usize = 249;

/// A topic name checked against Kafka's rules: 1..=249 characters from
/// `[a-zA-Z0-9._-]`, and neither `.` nor `..`. Because `/` and NUL can never appear,
/// a `TopicName` used as a directory name always stays inside the data directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicName(String);

impl TopicName {
    pub fn new(name: impl Into<String>) -> Result<TopicName, EngineError> {
        let name = name.into();
        let reason = if name.is_empty() {
            Some("is empty")
        } else if name.len() > TOPIC_NAME_LENGTH_MAX {
            Some("is longer than 249 characters")
        } else if name == "." || name == ".." {
            Some("may not be '.' or '..'")
        } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
            Some("may only contain ASCII letters, digits, '.', '_' and '-'")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(EngineError::InvalidTopicName { name, reason }),
            None => Ok(TopicName(name)),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A topic and one of its partitions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: TopicName,
    pub partition: PartitionId,
}

impl TopicPartition {
    pub fn new(topic: TopicName, partition: PartitionId) -> TopicPartition {
        TopicPartition { topic, partition }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_ids_read_and_write_the_hyphenated_uuid_form() {
        let id = TopicId(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(id.to_string(), "01234567-89ab-cdef-0123-456789abcdef");
        assert_eq!(TopicId::parse(&id.to_string()), Some(id));
        for bad in [
            "",
            "0123456789abcdef0123456789abcdef",
            "01234567-89ab-cdef-0123-456789abcdeg",
            "01234567-89ab-cdef-0123-456789abcde",
        ] {
            assert_eq!(TopicId::parse(bad), None, "{bad:?}");
        }
        let random = TopicId::from_random_bytes([0xff; 16]);
        assert_eq!(random.version(), 4);
        assert_eq!(random.to_string(), "ffffffff-ffff-4fff-bfff-ffffffffffff", "version 4, RFC 4122 variant");
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        for good in ["a", "orders", "__consumer_offsets", "a.b-c_D9", &"x".repeat(249)] {
            assert!(TopicName::new(good).is_ok(), "{good:?} should be valid");
        }
        for bad in ["", ".", "..", "../etc", "a/b", "a\0b", "ümlaut", "sp ace", &"x".repeat(250)] {
            assert!(TopicName::new(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn sequences_wrap_from_i32_max_to_zero() {
        assert_eq!(Sequence(5).next(), Sequence(6));
        assert_eq!(Sequence(i32::MAX).next(), Sequence(0));
        assert_eq!(Sequence(i32::MAX - 2).plus(2), Sequence(i32::MAX));
        assert_eq!(Sequence(i32::MAX - 2).plus(3), Sequence(0));
        assert_eq!(Sequence(i32::MAX - 2).plus(7), Sequence(4));
        assert_eq!(Sequence(0).plus(0), Sequence(0));
    }

    proptest::proptest! {
        #[test]
        fn valid_topic_names_never_escape_the_data_dir(name in "\\PC{1,40}") {
            if let Ok(topic) = TopicName::new(name) {
                let path = std::path::Path::new("/data").join(topic.as_str());
                proptest::prop_assert_eq!(path.parent(), Some(std::path::Path::new("/data")));
                proptest::prop_assert!(!topic.as_str().contains('/'));
                proptest::prop_assert!(topic.as_str() != "." && topic.as_str() != "..");
            }
        }
    }
}
