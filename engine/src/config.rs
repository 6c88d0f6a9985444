//! Topic configuration and the clock seam.
//!
//! Keys use Kafka's topic-config names so the broker's DescribeConfigs and
//! AlterConfigs map onto them one to one; `fsync.policy` is corelog's own.

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

/// When appended bytes are fdatasynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Group commit: appends waiting on a partition share one fdatasync, and none is
    /// acknowledged before it completes.
    Always,
    /// Synced at most this many milliseconds after being appended.
    IntervalMs(u64),
    /// Left to the kernel (and to segment roll and clean shutdown).
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
    fn from_str(text: &str) -> std::result::Result<Durability, String> {
        match text {
            "always" => Ok(Durability::Always),
            "never" => Ok(Durability::Never),
            _ => match text.strip_prefix("interval:").map(str::parse::<u64>) {
                Some(Ok(ms)) if ms > 0 => Ok(Durability::IntervalMs(ms)),
                _ => Err("expected always, never or interval:<ms> with ms > 0".to_string()),
            },
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
    /// The keys [`TopicConfig::set`] accepts.
    pub const KEYS: [&'static str; 8] = [
        "segment.bytes",
        "segment.ms",
        "retention.bytes",
        "retention.ms",
        "index.interval.bytes",
        "max.message.bytes",
        "min.insync.replicas",
        "fsync.policy",
    ];

    /// Sets one key, validating the value; an invalid value changes nothing.
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
            _ => return Err(invalid(key, value, "unknown topic config key")),
        }
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
            _ => return None,
        })
    }

    /// `key=value` lines, one per key: the on-disk form of a topic's config.
    pub fn to_properties(&self) -> String {
        Self::KEYS.iter().map(|key| format!("{key}={}\n", self.get(key).expect("known key"))).collect()
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

    #[test]
    fn properties_round_trip_and_bad_values_change_nothing() {
        let mut config = TopicConfig::default();
        config.set("fsync.policy", "interval:50").expect("valid");
        config.set("retention.bytes", "1000").expect("valid");
        let back = TopicConfig::from_properties(&config.to_properties()).expect("round trip");
        assert_eq!(back, config);
        for (key, value) in [("segment.bytes", "0"), ("fsync.policy", "sometimes"), ("retention.ms", "x"), ("nope", "1")] {
            let before = config.clone();
            assert!(config.set(key, value).is_err(), "{key}={value} accepted");
            assert_eq!(config, before);
        }
    }
}
