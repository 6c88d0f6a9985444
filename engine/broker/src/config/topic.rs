//! Every topic-config key the broker accepts ([`TOPIC_KEYS`]), with what Kafka
//! clients are told about it and who interprets it.
//!
//! Keys the engine interprets (`retention.ms`, `fsync.policy`, ...) are parsed and
//! validated by [`TopicConfig::set`]; the engine's defaults are theirs. Keys only the
//! broker interprets (`min.insync.replicas`: a policy of the broker, which the log
//! never needs) are validated here, by their row's `parse`, and handed to the engine
//! as text in [`TopicConfig::broker_keys`], which it writes to `topic.properties`
//! with the rest of the topic's config: they are created, changed and kept across
//! restarts together with the engine's keys. Adding a broker key is one row of
//! [`TOPIC_KEYS`] (plus the code that acts on it).
//!
//! [`set_all`] is the one way the broker changes a topic config (CreateTopics,
//! AlterConfigs, IncrementalAlterConfigs, the broker's `topic_defaults`): every key
//! checked against the table, all valid or nothing changed.

use corelog_engine::config::TopicConfig;
use corelog_engine::error::{EngineError, Result};

use super::{parse_in, ConfigKind};

/// One topic-config key.
#[derive(Debug, Clone, Copy)]
pub struct TopicKey {
    pub name: &'static str,
    /// The broker config whose value topics fall back to when they do not set this
    /// key (Kafka's synonym, e.g. `log.retention.ms` for `retention.ms`).
    pub broker_name: &'static str,
    pub kind: ConfigKind,
    pub documentation: &'static str,
    pub interpreter: Interpreter,
}

/// Who gives a topic-config key its meaning.
#[derive(Debug, Clone, Copy)]
pub enum Interpreter {
    /// `corelog-engine`: [`TopicConfig::set`] parses and validates it, and
    /// [`TopicConfig::default`] holds its default.
    Engine,
    /// The broker. `parse` validates a value and returns it as stored (the engine keeps
    /// it verbatim in [`TopicConfig::broker_keys`]); a topic without the key has
    /// `default`.
    Broker { default: &'static str, parse: fn(&str) -> std::result::Result<String, String> },
}

/// A broker key holding an integer in `[MIN, MAX]`, stored in its canonical form.
fn integer_in<const MIN: i64, const MAX: i64>(text: &str) -> std::result::Result<String, String> {
    parse_in(text, MIN, MAX).map(|value| value.to_string())
}

/// A broker key holding `true` or `false` (any case, as Kafka reads booleans),
/// stored in lowercase.
fn boolean(text: &str) -> std::result::Result<String, String> {
    super::parse_bool(text).map(|value| value.to_string()).map_err(|_| format!("`{text}` is not true or false"))
}

/// Every topic-config key the broker accepts, in the order DescribeConfigs lists them.
pub const TOPIC_KEYS: [TopicKey; 16] = [
    TopicKey {
        name: "segment.bytes",
        broker_name: "log.segment.bytes",
        kind: ConfigKind::Int,
        documentation: "Size at which the active segment is rolled; at most 2147483647 (index positions are 32-bit).",
        interpreter: Interpreter::Engine,
    },
    TopicKey {
        name: "segment.ms",
        broker_name: "log.roll.ms",
        kind: ConfigKind::Long,
        documentation: "Age in ms at which the active segment is rolled even if it is not full.",
        interpreter: Interpreter::Engine,
    },
    TopicKey {
        name: "retention.bytes",
        broker_name: "log.retention.bytes",
        kind: ConfigKind::Long,
        documentation: "Size of a partition's log above which its oldest segments are deleted; -1 means no limit.",
        interpreter: Interpreter::Engine,
    },
    TopicKey {
        name: "retention.ms",
        broker_name: "log.retention.ms",
        kind: ConfigKind::Long,
        documentation: "Age in ms of a segment's newest record after which the segment is deleted; -1 means no limit.",
        interpreter: Interpreter::Engine,
    },
    TopicKey {
        name: "index.interval.bytes",
        broker_name: "log.index.interval.bytes",
        kind: ConfigKind::Int,
        documentation: "Bytes of log between two offset-index entries.",
        interpreter: Interpreter::Engine,
    },
    TopicKey {
        name: "max.message.bytes",
        broker_name: "message.max.bytes",
        kind: ConfigKind::Int,
        documentation: "Largest record batch the topic accepts.",
        interpreter: Interpreter::Engine,
    },
    TopicKey {
        name: "min.insync.replicas",
        broker_name: "min.insync.replicas",
        kind: ConfigKind::Int,
        documentation: "In-sync replicas an acks=all write needs (at least 1); a single broker has one replica.",
        interpreter: Interpreter::Broker { default: "1", parse: integer_in::<1, { i32::MAX as i64 }> },
    },
    TopicKey {
        name: "unclean.leader.election.enable",
        broker_name: "unclean.leader.election.enable",
        kind: ConfigKind::Boolean,
        documentation: "Whether the controller may make a replica outside the ISR the leader when no in-sync \
                        replica is left: the partition is available again, and what only the lost in-sync \
                        replicas held is gone. false: it stays without a leader until an in-sync replica returns.",
        interpreter: Interpreter::Broker { default: "false", parse: boolean },
    },
    TopicKey {
        name: "fsync.policy",
        broker_name: "log.fsync.policy",
        kind: ConfigKind::String,
        documentation: "corelog's own: when appends are fdatasynced. always: before they are acknowledged \
                        (group commit); interval:<ms>: at most ms after; never: at segment roll and shutdown. \
                        Under every policy an append is acknowledged only once written to the segment file, so \
                        a crash of the broker process loses nothing acknowledged; under interval and never a \
                        power loss or kernel crash may lose what was not synced yet.",
        interpreter: Interpreter::Engine,
    },
    TopicKey {
        name: "flush.messages",
        broker_name: "log.flush.interval.messages",
        kind: ConfigKind::Long,
        documentation: "Kafka's flush by message count, another spelling of fsync.policy: 1 is fsync.policy=always, \
                        9223372036854775807 (the default) is no flush by count; other counts are not supported.",
        interpreter: Interpreter::Engine,
    },
    TopicKey {
        name: "flush.ms",
        broker_name: "log.flush.interval.ms",
        kind: ConfigKind::Long,
        documentation: "Kafka's flush by time, another spelling of fsync.policy: N is fsync.policy=interval:N \
                        (0 is always) unless flush.messages is 1; 9223372036854775807 (the default) is no flush by time.",
        interpreter: Interpreter::Engine,
    },
    TopicKey {
        name: "cleanup.policy",
        broker_name: "log.cleanup.policy",
        kind: ConfigKind::List,
        documentation: "delete: retention deletes old segments; compact: the log cleaner keeps the latest record \
                        of each key in the sealed segments (records without a key are refused); compact,delete: \
                        both.",
        interpreter: Interpreter::Engine,
    },
    TopicKey {
        name: "delete.retention.ms",
        broker_name: "log.cleaner.delete.retention.ms",
        kind: ConfigKind::Long,
        documentation: "How long a tombstone (and a transaction marker the cleaner may remove) stays after the \
                        cleaner pass that first kept it, so a consumer reading behind sees the delete.",
        interpreter: Interpreter::Engine,
    },
    TopicKey {
        name: "min.compaction.lag.ms",
        broker_name: "log.cleaner.min.compaction.lag.ms",
        kind: ConfigKind::Long,
        documentation: "A record stays uncompacted at least this long after its timestamp.",
        interpreter: Interpreter::Engine,
    },
    TopicKey {
        name: "max.compaction.lag.ms",
        broker_name: "log.cleaner.max.compaction.lag.ms",
        kind: ConfigKind::Long,
        documentation: "A sealed segment whose first record is older than this is cleaned whatever the dirty \
                        ratio (at least 1; at least min.compaction.lag.ms).",
        interpreter: Interpreter::Engine,
    },
    TopicKey {
        name: "min.cleanable.dirty.ratio",
        broker_name: "log.cleaner.min.cleanable.ratio",
        kind: ConfigKind::Double,
        documentation: "The cleaner takes a compacted log once its dirty bytes (written since the last pass, in \
                        sealed segments) are more than this share of its sealed bytes; in [0, 1].",
        interpreter: Interpreter::Engine,
    },
];

/// The row of `name`, or `None` for a key corelog does not know.
pub fn topic_key(name: &str) -> Option<&'static TopicKey> {
    TOPIC_KEYS.iter().find(|key| key.name == name)
}

/// The names of [`TOPIC_KEYS`], in table order.
pub fn topic_key_names() -> impl Iterator<Item = &'static str> {
    TOPIC_KEYS.iter().map(|key| key.name)
}

/// The value of `name` in `config` as DescribeConfigs reports it (a broker key the
/// topic does not hold has its default); `None` for a key corelog does not know.
pub fn value(config: &TopicConfig, name: &str) -> Option<String> {
    match topic_key(name)?.interpreter {
        Interpreter::Engine => config.get(name),
        Interpreter::Broker { default, .. } => Some(config.broker_keys.get(name).unwrap_or(default).to_string()),
    }
}

/// The engine's built-in topic config with every broker key at its default: what
/// a broker with no `topic_defaults` creates topics with. Its `topic.properties`
/// then names every broker key, as it always has.
pub fn built_in() -> TopicConfig {
    let mut config = TopicConfig::default();
    for key in &TOPIC_KEYS {
        if let Interpreter::Broker { default, .. } = key.interpreter {
            let inserted = config.broker_keys.insert(key.name, default);
            assert!(inserted.is_ok(), "the default of broker key {} cannot be stored: {inserted:?}", key.name);
        }
    }
    config
}

/// Sets several keys at once, as CreateTopics, AlterConfigs and the broker's
/// `topic_defaults` give them: either all are known and valid and set, or nothing
/// changes. Engine keys go through [`TopicConfig::set_all`] (which resolves
/// `fsync.policy` against `flush.*`); broker keys through their row's `parse`. A key
/// given twice takes its last value.
pub fn set_all<'a>(config: &mut TopicConfig, entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<()> {
    let mut engine_entries = Vec::new();
    let mut broker_entries = Vec::new();
    for (name, text) in entries {
        let invalid =
            |reason: String| EngineError::InvalidConfig { key: name.to_string(), value: text.to_string(), reason };
        match topic_key(name).map(|key| key.interpreter) {
            None => return Err(invalid("unknown topic config key".to_string())),
            Some(Interpreter::Engine) => engine_entries.push((name, text)),
            Some(Interpreter::Broker { parse, .. }) => broker_entries.push((name, text, parse(text).map_err(invalid)?)),
        }
    }
    let mut updated = config.clone();
    updated.set_all(engine_entries)?;
    for (name, _, stored) in broker_entries {
        updated.broker_keys.insert(name, &stored)?;
    }
    *config = updated;
    Ok(())
}

/// Sets one key (see [`set_all`]); an invalid value changes nothing.
pub fn set(config: &mut TopicConfig, name: &str, text: &str) -> Result<()> {
    set_all(config, [(name, text)])
}

/// `min.insync.replicas` of a topic: the in-sync replicas an `acks=all` write needs.
pub fn min_insync_replicas(config: &TopicConfig) -> u32 {
    let text = value(config, "min.insync.replicas").unwrap_or_default();
    // Stored values passed the row's parse; a file edited by hand is read as the default.
    text.parse().unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use corelog_engine::config::Durability;

    #[test]
    fn the_table_and_the_engine_agree_on_which_keys_the_engine_interprets() {
        let engine_keys: Vec<&str> = TOPIC_KEYS
            .iter()
            .filter(|key| matches!(key.interpreter, Interpreter::Engine))
            .map(|key| key.name)
            .collect();
        assert_eq!(engine_keys, TopicConfig::KEYS.to_vec(), "every engine key is in the table, in its order");
        for (index, key) in TOPIC_KEYS.iter().enumerate() {
            assert!(TOPIC_KEYS[..index].iter().all(|earlier| earlier.name != key.name), "{} twice", key.name);
            assert_eq!(topic_key(key.name).map(|found| found.name), Some(key.name));
            if let Interpreter::Broker { default, parse } = key.interpreter {
                assert_eq!(parse(default).as_deref(), Ok(default), "{}'s default is not canonical", key.name);
            }
            let value = value(&built_in(), key.name).unwrap_or_else(|| panic!("{} has no value", key.name));
            let mut config = built_in();
            set(&mut config, key.name, &value).unwrap_or_else(|e| panic!("{}={value} refused: {e}", key.name));
            assert_eq!(config, built_in(), "setting {} to its own value changed the config", key.name);
        }
        assert_eq!(topic_key("cleanup.policy").map(|key| key.kind), Some(ConfigKind::List));
        assert!(topic_key("log.retention.ms").is_none());
    }

    #[test]
    fn broker_keys_are_validated_here_and_stored_by_the_engine() {
        let mut config = built_in();
        set_all(&mut config, [("min.insync.replicas", " 2"), ("retention.ms", "5")]).expect("valid");
        assert_eq!(config.broker_keys.get("min.insync.replicas"), Some("2"), "stored in canonical form");
        assert_eq!((min_insync_replicas(&config), config.retention_ms), (2, 5));
        let properties = config.to_properties();
        assert!(properties.contains("min.insync.replicas=2\n"), "{properties}");
        let reloaded = TopicConfig::from_properties(&properties).expect("round trip");
        assert_eq!(reloaded, config);
        assert_eq!(min_insync_replicas(&reloaded), 2);

        let before = config.clone();
        for entries in [
            vec![("min.insync.replicas", "0")],
            vec![("min.insync.replicas", "two")],
            vec![("retention.ms", "7"), ("min.insync.replicas", "0")],
            vec![("min.insync.replicas", "3"), ("segment.bytes", "1")],
            vec![("min.insync.replicas", "3"), ("no.such.key", "1")],
        ] {
            let error = set_all(&mut config, entries.clone()).expect_err("accepted");
            assert!(matches!(error, EngineError::InvalidConfig { .. }), "{entries:?}: {error}");
            assert_eq!(config, before, "{entries:?} changed the config");
        }
        let error = set(&mut config, "no.such.key", "1").expect_err("unknown key");
        assert!(error.to_string().contains("unknown topic config key"), "{error}");
    }

    #[test]
    fn a_topic_without_a_broker_key_has_its_default() {
        let config = TopicConfig { durability: Durability::Always, ..TopicConfig::default() };
        assert_eq!(value(&config, "min.insync.replicas").as_deref(), Some("1"));
        assert_eq!(min_insync_replicas(&config), 1);
        assert_eq!(value(&config, "fsync.policy").as_deref(), Some("always"));
        assert_eq!(value(&config, "no.such.key"), None);
        assert_eq!(value(&config, "unclean.leader.election.enable").as_deref(), Some("false"));
    }

    #[test]
    fn unclean_leader_election_takes_a_boolean_in_any_case() {
        let mut config = built_in();
        set(&mut config, "unclean.leader.election.enable", "TRUE").expect("a boolean");
        assert_eq!(value(&config, "unclean.leader.election.enable").as_deref(), Some("true"));
        let error = set(&mut config, "unclean.leader.election.enable", "yes").expect_err("not a boolean");
        assert!(error.to_string().contains("`yes` is not true or false"), "{error}");
        assert_eq!(value(&config, "unclean.leader.election.enable").as_deref(), Some("true"), "unchanged");
    }
}
