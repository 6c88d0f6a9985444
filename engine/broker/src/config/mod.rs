//! Every config the broker accepts, each defined once: the topic keys
//! ([`topic::TOPIC_KEYS`]) and the broker's own settings
//! ([`broker::BROKER_SETTINGS`]). DescribeConfigs, AlterConfigs,
//! IncrementalAlterConfigs and CreateTopics read these tables, and so do the
//! `corelog broker` flags and YAML file (in the harness), so a name, its kind and
//! its documentation are written in one place.

pub mod broker;
pub mod topic;

/// What kind of value a config holds (Kafka's `ConfigDef.Type`), for DescribeConfigs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigKind {
    Boolean,
    String,
    Int,
    Long,
    Double,
    /// Comma-separated values; the only kind IncrementalAlterConfigs can APPEND to and
    /// SUBTRACT from.
    List,
}

/// `text` as an integer in `[min, max]`, or why not.
pub(crate) fn parse_in<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    text: &str,
    min: T,
    max: T,
) -> Result<T, String> {
    match text.trim().parse::<T>() {
        Ok(value) if value >= min && value <= max => Ok(value),
        _ => Err(format!("expected an integer in [{min}, {max}]")),
    }
}

/// `text` as `true` or `false` in any case (as Kafka reads booleans), or why not.
pub(crate) fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected true or false".to_string()),
    }
}
