//! Topic configuration and the clock seam.
//!
//! Keys use Kafka's topic-config names so the broker's DescribeConfigs and
//! AlterConfigs map onto them one to one; `fsync.policy` is corelog's own. Kafka's
//! `flush.messages` and `flush.ms` are another spelling of `fsync.policy` (the way
//! the OpenMessaging Benchmark's kafka-sync driver asks for synced writes), so they
//! are accepted and reported but not stored on their own. [`TopicConfig::DEFINITIONS`]
//! lists every key once, with its broker-level synonym, kind and documentation.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use crate::error::{EngineError, Result};
use crate::types::TimestampMs;

/// More partitions than this in one topic is refused as absurd.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;
/// Index entries hold 32-bit positions, so a segment can never pass 2 GiB (Kafka's own limit).
pub const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;
/// A segment must hold at least a batch header and an index entry's worth of data.
pub const SEGMENT_BYTES_MIN: u64 = 14;
/// Kafka's default for `flush.messages` and `flush.ms` (`Long.MAX_VALUE`): no flush
/// by message count or by time, which is `fsync.policy=never`.
pub const KAFKA_FLUSH_NEVER: i64 = i64::MAX;

/// When appended bytes are fdatasynced. Under every policy an append is acknowledged
/// only once its bytes are out of the process (written to the segment file), so a
/// crash of the process never loses an acknowledged append; the policies differ in
/// what a crash of the machine (power loss, kernel panic) may lose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Group commit: appends waiting on a partition share one fdatasync, and none is
    /// acknowledged before it completes.
    Always,
    /// Synced at most this many milliseconds after being appended: a crash of the
    /// machine may lose the acknowledged appends of the last interval.
    IntervalMs(u64),
    /// Synced only at segment roll and clean shutdown, otherwise left to the device
    /// (Kafka's default): a crash of the machine may lose acknowledged appends not
    /// synced yet, a crash of the process loses none.
    Never,
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Durability::Always => f.write_str("always"),
            Durability::IntervalMs(ms) => write!(f, "interval:{ms}"),
            Durability::Never => f.write_str("never"),
        }
    }
}

impl std::str::FromStr for Durability {
    type Err = String;
    /// `always`, `never` or `interval:<ms>` with `0 < ms < 2^63 - 1` (the upper bound
    /// keeps every policy expressible as Kafka's `flush.ms`).
    fn from_str(text: &str) -> std::result::Result<Durability, String> {
        match text {
            "always" => Ok(Durability::Always),
            "never" => Ok(Durability::Never),
            _ => match text.strip_prefix("interval:").map(str::parse::<u64>) {
                Some(Ok(ms)) if ms > 0 && ms < KAFKA_FLUSH_NEVER as u64 => Ok(Durability::IntervalMs(ms)),
                _ => Err(format!("expected always, never or interval:<ms> with 0 < ms < {KAFKA_FLUSH_NEVER}")),
            },
        }
    }
}

impl Durability {
    /// The policy as Kafka's `(flush.messages, flush.ms)`: `always` is a flush after
    /// every message, `interval:N` a flush at most N ms after a write, `never` both at
    /// Kafka's default, `Long.MAX_VALUE`.
    pub fn kafka_flush(self) -> (i64, i64) {
        match self {
            Durability::Always => (1, KAFKA_FLUSH_NEVER),
            Durability::IntervalMs(ms) => (KAFKA_FLUSH_NEVER, i64::try_from(ms).unwrap_or(KAFKA_FLUSH_NEVER - 1)),
            Durability::Never => (KAFKA_FLUSH_NEVER, KAFKA_FLUSH_NEVER),
        }
    }

    /// The policy that Kafka's `flush.messages` and `flush.ms` ask for:
    /// `flush.messages=1` syncs every write before it is acknowledged (`always`);
    /// otherwise `flush.ms=N` below `Long.MAX_VALUE` is `interval:N`, with `N = 0`
    /// (sync no later than the write itself) also `always`; both at the default is
    /// `never`. Other `flush.messages` values are refused by [`TopicConfig::set`]:
    /// corelog cannot sync every N messages.
    pub fn from_kafka_flush(flush_messages: i64, flush_ms: i64) -> Durability {
        match (flush_messages, flush_ms) {
            (1, _) | (_, 0) => Durability::Always,
            (_, ms) if (1..KAFKA_FLUSH_NEVER).contains(&ms) => Durability::IntervalMs(ms as u64),
            _ => Durability::Never,
        }
    }
}

/// What kind of value a config key holds (Kafka's `ConfigDef.Type`), for DescribeConfigs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigKind {
    Boolean,
    String,
    Int,
    Long,
    /// Comma-separated values; the only kind IncrementalAlterConfigs can APPEND to and
    /// SUBTRACT from.
    List,
}

/// One topic-config key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDefinition {
    pub name: &'static str,
    /// The broker config whose value topics fall back to when they do not set this
    /// key (Kafka's synonym, e.g. `log.retention.ms` for `retention.ms`).
    pub broker_name: &'static str,
    pub kind: ConfigKind,
    /// `false` for keys that only re-spell a stored one (`flush.*`) or have a single
    /// possible value (`cleanup.policy`): they are not written to `topic.properties`.
    pub stored: bool,
    pub documentation: &'static str,
}

/// Per-topic settings, with Kafka's defaults where Kafka has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    /// `segment.bytes`: roll the active segment when it would pass this size.
    pub segment_bytes: u64,
    /// `segment.ms`: roll the active segment when it is older than this.
    pub segment_ms: i64,
    /// `retention.bytes`: delete old segments while the log is larger (-1: no limit).
    pub retention_bytes: i64,
    /// `retention.ms`: delete segments whose newest record is older (-1: no limit).
    pub retention_ms: i64,
    /// `index.interval.bytes`: bytes of log between two offset-index entries.
    pub index_interval_bytes: u32,
    /// `max.message.bytes`: the largest batch accepted.
    pub max_message_bytes: u32,
    /// `min.insync.replicas`: stored for the broker; a single node has one replica.
    pub min_insync_replicas: u32,
    /// `fsync.policy`.
    pub durability: Durability,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            retention_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            min_insync_replicas: 1,
            durability: Durability::Never,
        }
    }
}

fn invalid(key: &str, value: &str, reason: impl Into<String>) -> EngineError {
    EngineError::InvalidConfig { key: key.to_string(), value: value.to_string(), reason: reason.into() }
}

fn parse_in<T: std::str::FromStr + PartialOrd + fmt::Display>(key: &str, value: &str, min: T, max: T) -> Result<T> {
    match value.parse::<T>() {
        Ok(parsed) if parsed >= min && parsed <= max => Ok(parsed),
        _ => Err(invalid(key, value, format!("expected an integer in [{min}, {max}]"))),
    }
}

impl TopicConfig {
    /// Every key [`TopicConfig::set`] accepts, in the order DescribeConfigs lists them.
    pub const DEFINITIONS: [ConfigDefinition; 11] = [
        ConfigDefinition {
            name: "segment.bytes",
            broker_name: "log.segment.bytes",
            kind: ConfigKind::Int,
            stored: true,
            documentation: "Size at which the active segment is rolled; at most 2147483647 (index positions are 32-bit).",
        },
        ConfigDefinition {
            name: "segment.ms",
            broker_name: "log.roll.ms",
            kind: ConfigKind::Long,
            stored: true,
            documentation: "Age in ms at which the active segment is rolled even if it is not full.",
        },
        ConfigDefinition {
            name: "retention.bytes",
            broker_name: "log.retention.bytes",
            kind: ConfigKind::Long,
            stored: true,
            documentation: "Size of a partition's log above which its oldest segments are deleted; -1 means no limit.",
        },
        ConfigDefinition {
            name: "retention.ms",
            broker_name: "log.retention.ms",
            kind: ConfigKind::Long,
            stored: true,
            documentation: "Age in ms of a segment's newest record after which the segment is deleted; -1 means no limit.",
        },
        ConfigDefinition {
            name: "index.interval.bytes",
            broker_name: "log.index.interval.bytes",
            kind: ConfigKind::Int,
            stored: true,
            documentation: "Bytes of log between two offset-index entries.",
        },
        ConfigDefinition {
            name: "max.message.bytes",
            broker_name: "message.max.bytes",
            kind: ConfigKind::Int,
            stored: true,
            documentation: "Largest record batch the topic accepts.",
        },
        ConfigDefinition {
            name: "min.insync.replicas",
            broker_name: "min.insync.replicas",
            kind: ConfigKind::Int,
            stored: true,
            documentation: "In-sync replicas an acks=all write needs (at least 1); a single broker has one replica.",
        },
        ConfigDefinition {
            name: "fsync.policy",
            broker_name: "log.fsync.policy",
            kind: ConfigKind::String,
            stored: true,
            documentation: "corelog's own: when appends are fdatasynced. always: before they are acknowledged \
                            (group commit); interval:<ms>: at most ms after; never: at segment roll and shutdown. \
                            Under every policy an append is acknowledged only once written to the segment file, so \
                            a crash of the broker process loses nothing acknowledged; under interval and never a \
                            power loss or kernel crash may lose what was not synced yet.",
        },
        ConfigDefinition {
            name: "flush.messages",
            broker_name: "log.flush.interval.messages",
            kind: ConfigKind::Long,
            stored: false,
            documentation: "Kafka's flush by message count, another spelling of fsync.policy: 1 is fsync.policy=always, \
                            9223372036854775807 (the default) is no flush by count; other counts are not supported.",
        },
        ConfigDefinition {
            name: "flush.ms",
            broker_name: "log.flush.interval.ms",
            kind: ConfigKind::Long,
            stored: false,
            documentation: "Kafka's flush by time, another spelling of fsync.policy: N is fsync.policy=interval:N \
                            (0 is always) unless flush.messages is 1; 9223372036854775807 (the default) is no flush by time.",
        },
        ConfigDefinition {
            name: "cleanup.policy",
            broker_name: "log.cleanup.policy",
            kind: ConfigKind::List,
            stored: false,
            documentation: "delete is the only policy: log compaction is not implemented.",
        },
    ];

    /// The names of [`TopicConfig::DEFINITIONS`].
    pub const KEYS: [&'static str; 11] = {
        let mut keys = [""; 11];
        let mut index = 0;
        while index < keys.len() {
            keys[index] = Self::DEFINITIONS[index].name;
            index += 1;
        }
        keys
    };

    /// The definition of `key`, or `None` for a key corelog does not know.
    pub fn definition(key: &str) -> Option<&'static ConfigDefinition> {
        Self::DEFINITIONS.iter().find(|definition| definition.name == key)
    }

    /// Sets one key, validating the value; an invalid value changes nothing.
    ///
    /// `flush.messages` and `flush.ms` change `fsync.policy` (see
    /// [`Durability::from_kafka_flush`]) together with the other flush key's current
    /// value as [`TopicConfig::get`] reports it. To set several keys at once, which
    /// makes the outcome independent of their order, use [`TopicConfig::set_all`].
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "segment.bytes" => self.segment_bytes = parse_in(key, value, SEGMENT_BYTES_MIN, SEGMENT_BYTES_MAX)?,
            "segment.ms" => self.segment_ms = parse_in(key, value, 1, i64::MAX)?,
            "retention.bytes" => self.retention_bytes = parse_in(key, value, -1, i64::MAX)?,
            "retention.ms" => self.retention_ms = parse_in(key, value, -1, i64::MAX)?,
            "index.interval.bytes" => self.index_interval_bytes = parse_in(key, value, 0, i32::MAX as u32)?,
            "max.message.bytes" => self.max_message_bytes = parse_in(key, value, 0, i32::MAX as u32)?,
            "min.insync.replicas" => self.min_insync_replicas = parse_in(key, value, 1, i32::MAX as u32)?,
            "fsync.policy" => self.durability = value.parse().map_err(|reason: String| invalid(key, value, reason))?,
            "flush.messages" => {
                let flush_messages = parse_in(key, value, 1, KAFKA_FLUSH_NEVER)?;
                if flush_messages != 1 && flush_messages != KAFKA_FLUSH_NEVER {
                    return Err(invalid(
                        key,
                        value,
                        format!(
                            "corelog syncs every acknowledged write (1) or none by count ({KAFKA_FLUSH_NEVER}, then \
                             flush.ms or fsync.policy decide); a sync every N messages is not supported"
                        ),
                    ));
                }
                let (_, flush_ms) = self.durability.kafka_flush();
                self.durability = Durability::from_kafka_flush(flush_messages, flush_ms);
            }
            "flush.ms" => {
                let flush_ms = parse_in(key, value, 0, KAFKA_FLUSH_NEVER)?;
                let (flush_messages, _) = self.durability.kafka_flush();
                self.durability = Durability::from_kafka_flush(flush_messages, flush_ms);
            }
            "cleanup.policy" => {
                let policies: Vec<&str> = value.split(',').map(str::trim).collect();
                if policies.iter().any(|policy| *policy != "delete") || value.trim().is_empty() {
                    return Err(invalid(
                        key,
                        value,
                        "delete is the only cleanup policy: log compaction is not implemented",
                    ));
                }
            }
            _ => return Err(invalid(key, value, "unknown topic config key")),
        }
        Ok(())
    }

    /// Sets several keys at once, as CreateTopics and AlterConfigs give them: either
    /// all are valid and set, or nothing changes. A key given twice takes its last value.
    ///
    /// `fsync.policy`, `flush.messages` and `flush.ms` are one setting. They are applied
    /// in that order whatever the order given (`flush.messages` before `flush.ms` makes
    /// the outcome independent of the order), and when `fsync.policy` is given, flush
    /// keys given with it must agree with it: `fsync.policy=never` with
    /// `flush.messages=1` is refused rather than resolved by position.
    pub fn set_all<'a>(&mut self, entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<()> {
        let rank = |key: &str| match key {
            "fsync.policy" => 1,
            "flush.messages" => 2,
            "flush.ms" => 3,
            _ => 0,
        };
        let mut entries: Vec<(&str, &str)> = entries.into_iter().collect();
        entries.sort_by_key(|(key, _)| rank(key));
        let mut updated = self.clone();
        let mut policy = None;
        for (key, value) in &entries {
            updated.set(key, value)?;
            if *key == "fsync.policy" {
                policy = Some((value, updated.durability));
            }
        }
        if let Some((policy_text, policy)) = policy {
            if updated.durability != policy {
                let (key, value) = entries.iter().find(|(key, _)| rank(key) > 1).copied().unwrap_or(("flush.ms", ""));
                return Err(invalid(
                    key,
                    value,
                    format!(
                        "contradicts fsync.policy={policy_text} given with it (it would make the policy {})",
                        updated.durability
                    ),
                ));
            }
        }
        *self = updated;
        Ok(())
    }

    /// The value of one key, as [`TopicConfig::set`] would accept it.
    pub fn get(&self, key: &str) -> Option<String> {
        Some(match key {
            "segment.bytes" => self.segment_bytes.to_string(),
            "segment.ms" => self.segment_ms.to_string(),
            "retention.bytes" => self.retention_bytes.to_string(),
            "retention.ms" => self.retention_ms.to_string(),
            "index.interval.bytes" => self.index_interval_bytes.to_string(),
            "max.message.bytes" => self.max_message_bytes.to_string(),
            "min.insync.replicas" => self.min_insync_replicas.to_string(),
            "fsync.policy" => self.durability.to_string(),
            "flush.messages" => self.durability.kafka_flush().0.to_string(),
            "flush.ms" => self.durability.kafka_flush().1.to_string(),
            "cleanup.policy" => "delete".to_string(),
            _ => return None,
        })
    }

    /// `key=value` lines, one per stored key: the on-disk form of a topic's config.
    pub fn to_properties(&self) -> String {
        Self::DEFINITIONS
            .iter()
            .filter(|definition| definition.stored)
            .filter_map(|definition| self.get(definition.name).map(|value| format!("{}={value}\n", definition.name)))
            .collect()
    }

    /// Parses [`TopicConfig::to_properties`] output over the defaults.
    pub fn from_properties(text: &str) -> Result<TopicConfig> {
        let mut config = TopicConfig::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (key, value) = line.split_once('=').ok_or_else(|| invalid(line, "", "expected key=value"))?;
            config.set(key.trim(), value.trim())?;
        }
        Ok(config)
    }
}

/// The engine's source of wall-clock time, injected so tests control segment age,
/// retention and append timestamps.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now_ms(&self) -> TimestampMs;
}

#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> TimestampMs {
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        TimestampMs(since_epoch.as_millis() as i64)
    }
}

/// A clock that only moves when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start: TimestampMs) -> Arc<ManualClock> {
        Arc::new(ManualClock(AtomicI64::new(start.0)))
    }
    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> TimestampMs {
        TimestampMs(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEVER: &str = "9223372036854775807";

    #[test]
    fn properties_round_trip_and_bad_values_change_nothing() {
        let mut config = TopicConfig::default();
        config.set("fsync.policy", "interval:50").expect("valid");
        config.set("retention.bytes", "1000").expect("valid");
        let back = TopicConfig::from_properties(&config.to_properties()).expect("round trip");
        assert_eq!(back, config);
        for (key, value) in [
            ("segment.bytes", "0"),
            ("fsync.policy", "sometimes"),
            ("fsync.policy", "interval:0"),
            ("fsync.policy", "interval:9223372036854775807"),
            ("retention.ms", "x"),
            ("min.insync.replicas", "0"),
            ("flush.messages", "0"),
            ("flush.messages", "1000"),
            ("flush.ms", "-1"),
            ("cleanup.policy", "compact"),
            ("cleanup.policy", "delete,compact"),
            ("cleanup.policy", ""),
            ("nope", "1"),
        ] {
            let before = config.clone();
            assert!(config.set(key, value).is_err(), "{key}={value} accepted");
            assert_eq!(config, before);
        }
    }

    #[test]
    fn every_key_reports_a_value_that_set_accepts_and_only_stored_keys_are_written() {
        assert_eq!(TopicConfig::KEYS.len(), TopicConfig::DEFINITIONS.len());
        let config =
            TopicConfig { durability: Durability::IntervalMs(250), min_insync_replicas: 2, ..TopicConfig::default() };
        for (key, definition) in TopicConfig::KEYS.iter().zip(TopicConfig::DEFINITIONS.iter()) {
            assert_eq!(*key, definition.name);
            assert_eq!(TopicConfig::definition(key), Some(definition));
            let value = config.get(key).unwrap_or_else(|| panic!("{key} has no value"));
            let mut copy = config.clone();
            copy.set(key, &value).unwrap_or_else(|e| panic!("{key}={value} refused: {e}"));
            assert_eq!(copy, config, "setting {key} to its own value changed the config");
        }
        let properties = config.to_properties();
        for definition in TopicConfig::DEFINITIONS {
            assert_eq!(properties.contains(&format!("{}=", definition.name)), definition.stored, "{properties}");
        }
        assert!(properties.contains("min.insync.replicas=2\n"), "{properties}");
        assert_eq!(TopicConfig::definition("cleanup.policy").map(|d| d.kind), Some(ConfigKind::List));
        assert_eq!(TopicConfig::definition("log.retention.ms"), None);
    }

    #[test]
    fn kafka_flush_keys_set_the_fsync_policy() {
        let durability_after = |entries: &[(&str, &str)]| {
            let mut config = TopicConfig::default();
            for (key, value) in entries {
                config.set(key, value).unwrap_or_else(|e| panic!("{key}={value}: {e}"));
            }
            config.durability
        };
        assert_eq!(durability_after(&[("flush.messages", "1")]), Durability::Always);
        // The OpenMessaging Benchmark's kafka-sync driver.
        assert_eq!(durability_after(&[("flush.messages", "1"), ("flush.ms", "0")]), Durability::Always);
        assert_eq!(durability_after(&[("flush.ms", "0")]), Durability::Always);
        assert_eq!(durability_after(&[("flush.ms", "1000")]), Durability::IntervalMs(1000));
        assert_eq!(durability_after(&[("flush.ms", "1000"), ("flush.messages", "1")]), Durability::Always);
        assert_eq!(durability_after(&[("flush.messages", "1"), ("flush.ms", "1000")]), Durability::Always);
        assert_eq!(durability_after(&[("flush.messages", "1"), ("flush.messages", NEVER)]), Durability::Never);
        assert_eq!(durability_after(&[("flush.ms", "1000"), ("flush.ms", NEVER)]), Durability::Never);
        assert_eq!(durability_after(&[("flush.messages", NEVER), ("flush.ms", NEVER)]), Durability::Never);
        assert_eq!(
            durability_after(&[("fsync.policy", "interval:7"), ("flush.messages", NEVER)]),
            Durability::IntervalMs(7)
        );

        let reported = |durability: Durability| {
            let config = TopicConfig { durability, ..TopicConfig::default() };
            (config.get("flush.messages"), config.get("flush.ms"))
        };
        let text = |s: &str| Some(s.to_string());
        assert_eq!(reported(Durability::Always), (text("1"), text(NEVER)));
        assert_eq!(reported(Durability::IntervalMs(40)), (text(NEVER), text("40")));
        assert_eq!(reported(Durability::Never), (text(NEVER), text(NEVER)));
    }

    #[test]
    fn set_all_is_independent_of_order_and_round_trips_what_get_reports() {
        let policies = [Durability::Always, Durability::IntervalMs(1), Durability::IntervalMs(5000), Durability::Never];
        let flush_messages = ["1", NEVER];
        let flush_ms = ["0", "1", "5000", NEVER];
        for base in policies {
            let start = TopicConfig { durability: base, ..TopicConfig::default() };
            for messages in flush_messages {
                for ms in flush_ms {
                    let mut forward = start.clone();
                    forward.set_all([("flush.messages", messages), ("flush.ms", ms)]).expect("valid");
                    let mut backward = start.clone();
                    backward.set_all([("flush.ms", ms), ("flush.messages", messages)]).expect("valid");
                    assert_eq!(forward, backward, "base {base}, flush.messages={messages}, flush.ms={ms}");
                    let expected =
                        Durability::from_kafka_flush(messages.parse().expect("number"), ms.parse().expect("number"));
                    assert_eq!(forward.durability, expected, "base {base}, flush.messages={messages}, flush.ms={ms}");
                }
            }
            // What DescribeConfigs reports, sent back whole in any order, changes nothing.
            for other in policies {
                let described = TopicConfig { durability: other, ..TopicConfig::default() };
                let mut entries: Vec<(&str, String)> =
                    TopicConfig::KEYS.iter().map(|key| (*key, described.get(key).expect("known key"))).collect();
                for _ in 0..entries.len() {
                    entries.rotate_left(1);
                    let mut config = start.clone();
                    config.set_all(entries.iter().map(|(k, v)| (*k, v.as_str()))).expect("described values are valid");
                    assert_eq!(config, described);
                }
            }
        }
    }

    #[test]
    fn set_all_changes_nothing_on_error_and_refuses_flush_keys_contradicting_fsync_policy() {
        let mut config = TopicConfig::default();
        let before = config.clone();
        assert!(config.set_all([("retention.ms", "5"), ("segment.bytes", "1")]).is_err());
        assert_eq!(config, before, "a bad entry must undo the good ones");
        for entries in [
            [("fsync.policy", "never"), ("flush.messages", "1")],
            [("flush.ms", "100"), ("fsync.policy", "interval:50")],
            [("fsync.policy", "always"), ("flush.messages", NEVER)],
        ] {
            let error = config.set_all(entries).expect_err("contradiction accepted");
            assert!(error.to_string().contains("contradicts fsync.policy"), "{error}");
            assert_eq!(config, before);
        }
        config
            .set_all([("flush.ms", "50"), ("fsync.policy", "interval:50"), ("retention.ms", "5")])
            .expect("agreeing keys");
        assert_eq!((config.durability, config.retention_ms), (Durability::IntervalMs(50), 5));
        config.set_all([("fsync.policy", "always"), ("flush.ms", "1000")]).expect("flush.messages=1 keeps always");
        assert_eq!(config.durability, Durability::Always);
        config.set_all([("retention.ms", "6"), ("retention.ms", "7")]).expect("valid");
        assert_eq!(config.retention_ms, 7, "the last of a repeated key wins");
    }
}
