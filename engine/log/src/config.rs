//! Topic configuration and the clock seam.
//!
//! Keys use Kafka's topic-config names; `fsync.policy` is corelog's own. Kafka's
//! `flush.messages` and `flush.ms` are another spelling of `fsync.policy` (the way
//! the OpenMessaging Benchmark's kafka-sync driver asks for synced writes), so they
//! are accepted and reported but not stored on their own. [`TopicConfig::KEYS`] are
//! the keys the engine interprets; what Kafka clients are told about them (kind,
//! broker-level synonym, documentation) is the broker's business, as are the keys
//! only the broker interprets (`min.insync.replicas`, ...): the engine stores those
//! with the topic, verbatim, in [`TopicConfig::broker_keys`], and never reads them.

use std::collections::BTreeMap;
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
    /// `fsync.policy`.
    pub durability: Durability,
    /// `cleanup.policy`: retention deletes old segments, the log cleaner compacts
    /// them ([`crate::cleaner`]), or both.
    pub cleanup_policy: CleanupPolicy,
    /// `delete.retention.ms`: how long a tombstone (and a transaction marker the
    /// cleaner may remove) outlives the pass that first kept it.
    pub delete_retention_ms: i64,
    /// `min.compaction.lag.ms`: a record stays uncompacted at least this long.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a record becomes eligible for compaction at the
    /// latest this long after it was written, whatever the dirty ratio.
    pub max_compaction_lag_ms: i64,
    /// `min.cleanable.dirty.ratio`: the cleaner takes a log once its dirty bytes are
    /// more than this share of its cleanable bytes.
    pub min_cleanable_dirty_ratio: DirtyRatio,
    /// Keys the broker interprets and the engine only stores (in `topic.properties`,
    /// with the engine's keys, so they change and survive restarts with them).
    pub broker_keys: BrokerKeys,
}

/// `cleanup.policy`: `delete`, `compact`, or both (`compact,delete`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupPolicy {
    pub delete: bool,
    pub compact: bool,
}

impl Default for CleanupPolicy {
    fn default() -> Self {
        CleanupPolicy { delete: true, compact: false }
    }
}

impl fmt::Display for CleanupPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.compact, self.delete) {
            (true, true) => f.write_str("compact,delete"),
            (true, false) => f.write_str("compact"),
            (false, true) => f.write_str("delete"),
            (false, false) => f.write_str(""),
        }
    }
}

/// `min.cleanable.dirty.ratio`, a number in `[0, 1]` (Kafka's default 0.5).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DirtyRatio(pub f64);

// A ratio is never NaN (`TopicConfig::set` refuses it), so equality is total.
impl Eq for DirtyRatio {}

impl fmt::Display for DirtyRatio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Topic-config keys the engine stores for the broker without interpreting them,
/// each with its value as text. A key is a config name (lowercase ASCII letters,
/// digits, `.`, `_`, `-`) that is not one of [`TopicConfig::KEYS`] nor a line of its
/// own in `topic.properties` ([`RESERVED_KEYS`]); a value is one line without
/// surrounding blanks. Both are checked on insertion, so every stored pair reads
/// back from `topic.properties` as it was written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerKeys(BTreeMap<String, String>);

/// Names `topic.properties` uses for lines that are not topic configs.
pub const RESERVED_KEYS: [&str; 2] = ["partitions", "topic.id"];

impl BrokerKeys {
    /// Stores `value` for `key`, replacing any value it had; a key or value that
    /// could not be stored and read back as given is refused and changes nothing.
    pub fn insert(&mut self, key: &str, value: &str) -> Result<()> {
        let name_ok = !key.is_empty()
            && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
        if !name_ok {
            return Err(invalid(key, value, "a config name is lowercase letters, digits, '.', '_' and '-'"));
        }
        if TopicConfig::KEYS.contains(&key) || RESERVED_KEYS.contains(&key) {
            return Err(invalid(key, value, "the engine interprets this key: it is not a broker key"));
        }
        if value.contains(['\n', '\r']) || value.trim() != value {
            return Err(invalid(key, value, "a config value is one line without leading or trailing blanks"));
        }
        self.0.insert(key.to_string(), value.to_string());
        Ok(())
    }

    /// The value stored for `key`, if any.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Every stored `(key, value)`, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(key, value)| (key.as_str(), value.as_str()))
    }
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
            durability: Durability::Never,
            cleanup_policy: CleanupPolicy::default(),
            delete_retention_ms: 24 * 3600 * 1000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            min_cleanable_dirty_ratio: DirtyRatio(0.5),
            broker_keys: BrokerKeys::default(),
        }
    }
}

fn invalid(key: &str, value: &str, reason: impl Into<String>) -> EngineError {
    EngineError::InvalidConfig { key: key.to_string(), value: value.to_string(), reason: reason.into() }
}

/// `cleanup.policy`: a comma-separated list of `delete` and `compact` (Kafka's
/// `ValidList`), at least one, each at most once.
fn parse_cleanup_policy(key: &str, value: &str) -> Result<CleanupPolicy> {
    let mut policy = CleanupPolicy { delete: false, compact: false };
    for item in value.split(',').map(str::trim) {
        let seen = match item {
            "delete" => std::mem::replace(&mut policy.delete, true),
            "compact" => std::mem::replace(&mut policy.compact, true),
            _ => {
                return Err(invalid(
                    key,
                    value,
                    format!("`{item}` is not a cleanup policy: expected delete, compact or both"),
                ))
            }
        };
        if seen {
            return Err(invalid(key, value, format!("`{item}` is given twice")));
        }
    }
    Ok(policy)
}

fn parse_in<T: std::str::FromStr + PartialOrd + fmt::Display>(key: &str, value: &str, min: T, max: T) -> Result<T> {
    match value.parse::<T>() {
        Ok(parsed) if parsed >= min && parsed <= max => Ok(parsed),
        _ => Err(invalid(key, value, format!("expected an integer in [{min}, {max}]"))),
    }
}

impl TopicConfig {
    /// Every key the engine interprets: the keys [`TopicConfig::set`] accepts and
    /// [`TopicConfig::get`] reports.
    pub const KEYS: [&'static str; 14] = [
        "segment.bytes",
        "segment.ms",
        "retention.bytes",
        "retention.ms",
        "index.interval.bytes",
        "max.message.bytes",
        "fsync.policy",
        "flush.messages",
        "flush.ms",
        "cleanup.policy",
        "delete.retention.ms",
        "min.compaction.lag.ms",
        "max.compaction.lag.ms",
        "min.cleanable.dirty.ratio",
    ];

    /// The keys of [`TopicConfig::KEYS`] written to `topic.properties`. The others
    /// are not stored: `flush.*` re-spell `fsync.policy`.
    pub const STORED_KEYS: [&'static str; 12] = [
        "segment.bytes",
        "segment.ms",
        "retention.bytes",
        "retention.ms",
        "index.interval.bytes",
        "max.message.bytes",
        "fsync.policy",
        "cleanup.policy",
        "delete.retention.ms",
        "min.compaction.lag.ms",
        "max.compaction.lag.ms",
        "min.cleanable.dirty.ratio",
    ];

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
            "cleanup.policy" => self.cleanup_policy = parse_cleanup_policy(key, value)?,
            "delete.retention.ms" => self.delete_retention_ms = parse_in(key, value, 0, i64::MAX)?,
            "min.compaction.lag.ms" => self.min_compaction_lag_ms = parse_in(key, value, 0, i64::MAX)?,
            "max.compaction.lag.ms" => self.max_compaction_lag_ms = parse_in(key, value, 1, i64::MAX)?,
            "min.cleanable.dirty.ratio" => match value.trim().parse::<f64>() {
                Ok(ratio) if (0.0..=1.0).contains(&ratio) => self.min_cleanable_dirty_ratio = DirtyRatio(ratio),
                _ => return Err(invalid(key, value, "expected a number in [0, 1]")),
            },
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
        if updated.min_compaction_lag_ms > updated.max_compaction_lag_ms {
            let (key, value) = entries
                .iter()
                .rev()
                .find(|(key, _)| key.ends_with("compaction.lag.ms"))
                .copied()
                .unwrap_or(("min.compaction.lag.ms", ""));
            return Err(invalid(
                key,
                value,
                format!(
                    "min.compaction.lag.ms {} is more than max.compaction.lag.ms {}",
                    updated.min_compaction_lag_ms, updated.max_compaction_lag_ms
                ),
            ));
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

    /// The value of one key the engine interprets, as [`TopicConfig::set`] would
    /// accept it; `None` for any other key (broker keys included: see
    /// [`TopicConfig::broker_keys`]).
    pub fn get(&self, key: &str) -> Option<String> {
        Some(match key {
            "segment.bytes" => self.segment_bytes.to_string(),
            "segment.ms" => self.segment_ms.to_string(),
            "retention.bytes" => self.retention_bytes.to_string(),
            "retention.ms" => self.retention_ms.to_string(),
            "index.interval.bytes" => self.index_interval_bytes.to_string(),
            "max.message.bytes" => self.max_message_bytes.to_string(),
            "fsync.policy" => self.durability.to_string(),
            "flush.messages" => self.durability.kafka_flush().0.to_string(),
            "flush.ms" => self.durability.kafka_flush().1.to_string(),
            "cleanup.policy" => self.cleanup_policy.to_string(),
            "delete.retention.ms" => self.delete_retention_ms.to_string(),
            "min.compaction.lag.ms" => self.min_compaction_lag_ms.to_string(),
            "max.compaction.lag.ms" => self.max_compaction_lag_ms.to_string(),
            "min.cleanable.dirty.ratio" => self.min_cleanable_dirty_ratio.to_string(),
            _ => return None,
        })
    }

    /// `key=value` lines, one per stored key (the engine's, then the broker's): the
    /// on-disk form of a topic's config.
    pub fn to_properties(&self) -> String {
        let engine_keys = Self::STORED_KEYS.iter().filter_map(|key| self.get(key).map(|value| (*key, value)));
        let mut text = String::new();
        for (key, value) in engine_keys {
            text.push_str(&format!("{key}={value}\n"));
        }
        for (key, value) in self.broker_keys.iter() {
            text.push_str(&format!("{key}={value}\n"));
        }
        text
    }

    /// Parses [`TopicConfig::to_properties`] output over the defaults: a key the
    /// engine interprets is set (and must be valid), any other key is kept verbatim
    /// in [`TopicConfig::broker_keys`]. So `min.insync.replicas=2`, which files
    /// written before the broker took that key over hold too, reads back as a broker
    /// key with its value.
    pub fn from_properties(text: &str) -> Result<TopicConfig> {
        let mut config = TopicConfig::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (key, value) = line.split_once('=').ok_or_else(|| invalid(line, "", "expected key=value"))?;
            let (key, value) = (key.trim(), value.trim());
            if Self::KEYS.contains(&key) {
                config.set(key, value)?;
            } else {
                config.broker_keys.insert(key, value)?;
            }
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
            ("flush.messages", "0"),
            ("flush.messages", "1000"),
            ("flush.ms", "-1"),
            ("cleanup.policy", "compaction"),
            ("cleanup.policy", "delete,delete"),
            ("cleanup.policy", ""),
            ("delete.retention.ms", "-1"),
            ("min.compaction.lag.ms", "-1"),
            ("max.compaction.lag.ms", "0"),
            ("min.cleanable.dirty.ratio", "1.5"),
            ("min.cleanable.dirty.ratio", "NaN"),
            ("nope", "1"),
            // The broker's key: the engine neither sets nor validates it.
            ("min.insync.replicas", "2"),
        ] {
            let before = config.clone();
            assert!(config.set(key, value).is_err(), "{key}={value} accepted");
            assert_eq!(config, before);
        }
    }

    #[test]
    fn the_cleaner_keys_take_kafkas_values_and_survive_topic_properties() {
        let mut config = TopicConfig::default();
        assert_eq!(config.get("cleanup.policy").as_deref(), Some("delete"));
        let entries = [
            ("cleanup.policy", "compact, delete"),
            ("delete.retention.ms", "0"),
            ("min.compaction.lag.ms", "100"),
            ("max.compaction.lag.ms", "100"),
            ("min.cleanable.dirty.ratio", "0.25"),
        ];
        config.set_all(entries).expect("valid");
        assert_eq!(config.cleanup_policy, CleanupPolicy { delete: true, compact: true });
        assert_eq!(config.get("cleanup.policy").as_deref(), Some("compact,delete"));
        assert_eq!(config.min_cleanable_dirty_ratio, DirtyRatio(0.25));
        assert_eq!(TopicConfig::from_properties(&config.to_properties()).expect("reads back"), config);
        let before = config.clone();
        let refused = config.set_all([("min.compaction.lag.ms", "101")]);
        assert!(refused.is_err(), "min.compaction.lag.ms past max.compaction.lag.ms is refused, as Kafka does");
        assert_eq!(config, before);
    }

    #[test]
    fn every_key_reports_a_value_that_set_accepts_and_only_stored_keys_are_written() {
        let config = TopicConfig { durability: Durability::IntervalMs(250), ..TopicConfig::default() };
        for key in TopicConfig::KEYS {
            let value = config.get(key).unwrap_or_else(|| panic!("{key} has no value"));
            let mut copy = config.clone();
            copy.set(key, &value).unwrap_or_else(|e| panic!("{key}={value} refused: {e}"));
            assert_eq!(copy, config, "setting {key} to its own value changed the config");
        }
        let properties = config.to_properties();
        for key in TopicConfig::KEYS {
            let stored = TopicConfig::STORED_KEYS.contains(&key);
            assert_eq!(properties.contains(&format!("{key}=")), stored, "{properties}");
        }
        assert!(TopicConfig::STORED_KEYS.iter().all(|key| TopicConfig::KEYS.contains(key)));
        assert_eq!(config.get("min.insync.replicas"), None, "a broker key is not the engine's");
    }

    #[test]
    fn broker_keys_are_stored_verbatim_and_read_back_from_properties() {
        let mut config = TopicConfig { retention_ms: 5, ..TopicConfig::default() };
        config.broker_keys.insert("min.insync.replicas", "2").expect("a broker key");
        config.broker_keys.insert("unclean.leader.election.enable", "false").expect("a broker key");
        let properties = config.to_properties();
        assert!(properties.contains("min.insync.replicas=2\n"), "{properties}");
        let back = TopicConfig::from_properties(&properties).expect("round trip");
        assert_eq!(back, config);
        assert_eq!(back.broker_keys.get("unclean.leader.election.enable"), Some("false"));

        // A file written while the engine still interpreted min.insync.replicas.
        let old = "segment.bytes=1048576\nmax.message.bytes=1048588\nmin.insync.replicas=2\nfsync.policy=always\n";
        let loaded = TopicConfig::from_properties(old).expect("an old topic.properties loads");
        assert_eq!(loaded.broker_keys.get("min.insync.replicas"), Some("2"));
        assert_eq!((loaded.segment_bytes, loaded.durability), (1 << 20, Durability::Always));
        // A bad value of a key the engine interprets still fails the load.
        assert!(TopicConfig::from_properties("segment.bytes=x\nmin.insync.replicas=2\n").is_err());
    }

    #[test]
    fn broker_keys_refuse_what_would_not_read_back_and_the_engines_own_keys() {
        let mut keys = BrokerKeys::default();
        for (key, value) in [
            ("retention.ms", "5"),
            ("fsync.policy", "always"),
            ("partitions", "3"),
            ("topic.id", "x"),
            ("", "1"),
            ("Min.Insync.Replicas", "2"),
            ("a=b", "1"),
            ("min.insync.replicas", "2\nretention.ms=1"),
            ("min.insync.replicas", " 2"),
        ] {
            assert!(keys.insert(key, value).is_err(), "{key:?}={value:?} accepted");
        }
        assert_eq!(keys, BrokerKeys::default(), "a refused key changed the keys");
        keys.insert("message.timestamp.type", "CreateTime").expect("valid");
        keys.insert("message.timestamp.type", "LogAppendTime").expect("valid");
        assert_eq!(keys.iter().collect::<Vec<_>>(), vec![("message.timestamp.type", "LogAppendTime")]);
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
