//! `corelog broker`: flags, the optional YAML file, and the process lifecycle
//! (SIGTERM/SIGINT: stop accepting, finish in-flight requests, sync, exit 0; a
//! shard that panics: exit 1 at once, see [`watch_shards`]).
//!
//! The flags and the file's keys are the broker's settings table,
//! `corelog_broker::config::broker::BROKER_SETTINGS`: each setting's flag, help,
//! YAML key and parsing are defined there once, and the flags are built from it
//! ([`BrokerArgs`] implements clap's `Args` by hand for that). Flags override the
//! file; the file overrides the defaults. Unknown YAML keys and bad values are
//! rejected before anything starts, naming the file and line.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context;
use corelog_broker::config::broker::{self as settings, BrokerSetting, BROKER_SETTINGS, TOPIC_DEFAULTS_YAML_KEY};
use corelog_broker::config::topic;
use corelog_broker::{Broker, BrokerConfig};
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};

use crate::workload::suggest;
use crate::UsageError;

/// The `corelog broker` command line: a flag for every setting of
/// [`BROKER_SETTINGS`] that has one, plus `--config` and a hidden test flag.
#[derive(Debug)]
pub struct BrokerArgs {
    /// The settings given as flags, each with its flag's text, in table order.
    settings: Vec<(&'static BrokerSetting, String)>,
    /// The YAML file.
    config: Option<PathBuf>,
    /// Test-only: a Produce to this topic panics the shard that handles it.
    test_panic_on_produce_to: Option<String>,
    /// Test-only: the transaction coordinator never writes markers.
    test_hold_txn_markers: bool,
}

const CONFIG_FLAG: &str = "config";
const TEST_PANIC_FLAG: &str = "test-panic-on-produce-to";
const TEST_HOLD_MARKERS_FLAG: &str = "test-hold-txn-markers";

impl clap::Args for BrokerArgs {
    /// One argument per flagged setting, its id the setting's name and its help the
    /// setting's documentation; the file's keys in the long help.
    fn augment_args(command: clap::Command) -> clap::Command {
        let command = BROKER_SETTINGS.iter().fold(command, |command, setting| match setting.flag {
            Some(flag) => command.arg(
                clap::Arg::new(setting.name)
                    .long(flag.long)
                    .value_name(flag.value_name)
                    .required(flag.required)
                    .help(flag_help(setting)),
            ),
            None => command,
        });
        command
            .arg(
                clap::Arg::new(CONFIG_FLAG)
                    .long(CONFIG_FLAG)
                    .value_name("FILE")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help("YAML file with broker settings and topic defaults; --help lists its keys."),
            )
            .arg(
                clap::Arg::new(TEST_PANIC_FLAG)
                    .long(TEST_PANIC_FLAG)
                    .value_name("TOPIC")
                    .hide(true)
                    .help("Test-only: a Produce to this topic panics the shard that handles it."),
            )
            .arg(
                clap::Arg::new(TEST_HOLD_MARKERS_FLAG)
                    .long(TEST_HOLD_MARKERS_FLAG)
                    .action(clap::ArgAction::SetTrue)
                    .hide(true)
                    .help("Test-only: the transaction coordinator never writes transaction markers."),
            )
            .after_long_help(file_reference())
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::augment_args(command)
    }
}

impl clap::FromArgMatches for BrokerArgs {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let settings = BROKER_SETTINGS
            .iter()
            .filter(|setting| setting.flag.is_some())
            .filter_map(|setting| matches.get_one::<String>(setting.name).map(|text| (setting, text.clone())))
            .collect();
        Ok(BrokerArgs {
            settings,
            config: matches.get_one::<PathBuf>(CONFIG_FLAG).cloned(),
            test_panic_on_produce_to: matches.get_one::<String>(TEST_PANIC_FLAG).cloned(),
            test_hold_txn_markers: matches.get_flag(TEST_HOLD_MARKERS_FLAG),
        })
    }

    /// Replaces the whole value: `corelog broker` is parsed once, never updated.
    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

/// A flag's help: the setting's documentation, its default (as clap shows one,
/// unless the documentation says it) and its YAML key if it has one. The default is
/// not a clap default value, which would override the YAML file.
fn flag_help(setting: &BrokerSetting) -> String {
    let mut help = setting.documentation.to_string();
    let required = setting.flag.is_some_and(|flag| flag.required);
    if !required && !help.contains("Default:") && !help.contains("by default") {
        let default = (setting.value)(&BrokerConfig::new(PathBuf::new()));
        help.push_str(&format!(" [default: {}]", if default.is_empty() { "none" } else { &default }));
    }
    if let Some(key) = setting.yaml_key {
        help.push_str(&format!(" [YAML: {key}]"));
    }
    help
}

/// The `--config` file's keys, for `--help`: every setting's YAML key, then topic defaults.
fn file_reference() -> String {
    let mut text = String::from("Keys of the --config YAML file (flags override them):\n");
    for setting in &BROKER_SETTINGS {
        if let Some(key) = setting.yaml_key {
            text.push_str(&format!("  {key}: {} ({})\n", setting.documentation, setting.name));
        }
    }
    let topic_keys: Vec<&str> = topic::topic_key_names().collect();
    text.push_str(&format!(
        "  {TOPIC_DEFAULTS_YAML_KEY}: the topic configs every new topic starts with, a map of {}; \
         e.g. `segment.bytes: 1073741824`.",
        topic_keys.join(", ")
    ));
    text
}

pub fn run(args: BrokerArgs) -> anyhow::Result<()> {
    let mut config = build_config(&args)?;
    config.test_panic_on_produce_to = args.test_panic_on_produce_to.clone();
    config.transactions.test_hold_markers = args.test_hold_txn_markers;
    let (failures, failed) = flume::bounded(1);
    config.engine.shard_failures = Some(failures);
    watch_shards(failed)?;
    let data_dir = config.engine.data_dir.clone();
    let signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
        .context("installing the SIGTERM/SIGINT handler")?;
    let broker = Broker::start(config).with_context(|| format!("starting the broker on {}", data_dir.display()))?;
    tracing::info!("corelog broker ready on {} (data in {})", broker.local_addr(), data_dir.display());
    let mut signals = signals;
    if let Some(signal) = signals.forever().next() {
        tracing::info!("signal {signal}: stopping (finishing in-flight requests, syncing)");
    }
    broker.shutdown().context("shutting down")?;
    tracing::info!("corelog broker stopped cleanly");
    Ok(())
}

/// Ends the process with exit status 1 as soon as a shard reports that it panicked
/// (from start-up on). The dead shard's partitions, listener and connections cannot
/// come back, and a broker serving the rest would be half alive: new connections
/// that the kernel hands to the dead listener hang. The other shards are not closed
/// cleanly either (one of them may wait on the dead shard forever); nothing
/// acknowledged is lost by that, since an append is acknowledged only once it is out
/// of the process, and the next start recovers the active segments as after a
/// crash.
fn watch_shards(failed: flume::Receiver<corelog_engine::shard::ShardFailure>) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("corelog-shard-watch".to_string())
        .spawn(move || {
            if let Ok(failure) = failed.recv() {
                tracing::error!(
                    "corelog broker stopping with exit status 1: shard {} panicked ({}); the other shards' \
                     partitions are recovered at the next start, as after a crash",
                    failure.shard,
                    failure.panic
                );
                std::process::exit(1);
            }
        })
        .context("starting the shard watch thread")?;
    Ok(())
}

fn build_config(args: &BrokerArgs) -> anyhow::Result<BrokerConfig> {
    let mut config = BrokerConfig::new(PathBuf::new());
    let topic_defaults = match &args.config {
        Some(path) => load_file(path, &mut config)?,
        None => Vec::new(),
    };
    for (setting, text) in &args.settings {
        let set = setting.set.with_context(|| format!("{} has a flag but cannot be set", setting.name))?;
        let long = setting.flag.map_or(setting.name, |flag| flag.long);
        set(&mut config, text).map_err(|reason| UsageError(format!("--{long} {text}: {reason}")))?;
    }
    // All at once: contradicting keys (fsync.policy against flush.*) are refused.
    topic::set_all(
        &mut config.topic_defaults,
        topic_defaults.iter().map(|(key, value)| (key.as_str(), value.as_str())),
    )
    .map_err(|e| UsageError(format!("{TOPIC_DEFAULTS_YAML_KEY}: {e}")))?;
    Ok(config)
}

/// The `--config` file's reference as Markdown, the text of docs/broker-config.md:
/// every YAML key of the settings table with its Kafka name, default and meaning,
/// then the topic keys `topic_defaults` takes. A test keeps the file equal to it.
pub fn reference_markdown() -> String {
    let defaults = BrokerConfig::new(PathBuf::new());
    let mut text = String::from(
        "# `corelog broker --config` file reference\n\n\
         Generated from the broker's settings table (`BROKER_SETTINGS` and `TOPIC_KEYS` in \
         `engine/broker/src/config/`); a test keeps this file equal to it.\n\n\
         The file is a YAML map of the keys below. A flag given on the command line overrides \
         the file's key. An unknown key, a repeated key or a value the setting refuses stops the \
         broker with the file, line and column (and the nearest key when one is close). A null \
         value leaves the setting at its default. DescribeConfigs reports every setting under its \
         Kafka name, read-only.\n\n\
         | key | Kafka name | flag | default | meaning |\n|---|---|---|---|---|\n",
    );
    for setting in BROKER_SETTINGS.iter() {
        let Some(key) = setting.yaml_key else { continue };
        let flag = setting.flag.map_or("none".to_string(), |flag| format!("`--{}`", flag.long));
        // A default the documentation states may depend on the machine (the online
        // CPUs): the documentation's words, not this machine's value.
        let default = match (setting.value)(&defaults) {
            _ if setting.documentation.contains("Default:") => "as its meaning says".to_string(),
            value if value.is_empty() => "none".to_string(),
            value => format!("`{value}`"),
        };
        text.push_str(&format!(
            "| `{key}` | `{}` | {flag} | {default} | {} |\n",
            setting.name,
            setting.documentation.replace('|', "\\|")
        ));
    }
    text.push_str(&format!(
        "\n## `{TOPIC_DEFAULTS_YAML_KEY}`\n\n\
         The topic configs every new topic starts with: a map of topic keys to values, e.g. \
         `segment.bytes: 1073741824`. A topic created with its own value of a key keeps it. \
         DescribeConfigs reports these defaults under Kafka's broker names.\n\n\
         | key | broker name | default | meaning |\n|---|---|---|---|\n"
    ));
    for key in topic::TOPIC_KEYS.iter() {
        let default = topic::value(&defaults.topic_defaults, key.name).unwrap_or_default();
        text.push_str(&format!(
            "| `{}` | `{}` | `{default}` | {} |\n",
            key.name,
            key.broker_name,
            key.documentation.replace('|', "\\|")
        ));
    }
    text
}

/// Reads the `--config` file: sets each setting it names on `config` and returns
/// its topic defaults, each checked alone (a pair may still contradict, which
/// [`topic::set_all`] refuses).
fn load_file(path: &Path, config: &mut BrokerConfig) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut topic_defaults = Vec::new();
    let file = BrokerFile { config, topic_defaults: &mut topic_defaults };
    file.deserialize(serde_yaml::Deserializer::from_str(&text)).map_err(|error| {
        let place = error.location().map_or(String::new(), |l| format!(":{}:{}", l.line(), l.column()));
        UsageError(format!("{}{place}: {error}", path.display()))
    })?;
    Ok(topic_defaults)
}

/// The YAML file, read through the settings table. Every check is made while the
/// file is read, so serde_yaml places each error at its key or value.
struct BrokerFile<'a> {
    config: &'a mut BrokerConfig,
    topic_defaults: &'a mut Vec<(String, String)>,
}

/// Every key the file may have, for serde's "expected one of" message.
fn file_keys() -> &'static [&'static str] {
    static KEYS: OnceLock<Vec<&'static str>> = OnceLock::new();
    KEYS.get_or_init(|| {
        BROKER_SETTINGS.iter().filter_map(|setting| setting.yaml_key).chain([TOPIC_DEFAULTS_YAML_KEY]).collect()
    })
}

impl<'de> DeserializeSeed<'de> for BrokerFile<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for BrokerFile<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of broker settings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = Vec::new();
        while let Some(key) = map.next_key_seed(KnownKey { known: file_keys(), seen: &mut seen })? {
            match settings::by_yaml_key(key) {
                // Null leaves the setting as it is, as if the key were absent.
                Some(setting) => map.next_value_seed(ScalarValue(|text: Option<&str>| {
                    let (Some(text), Some(set)) = (text, setting.set) else { return Ok(()) };
                    // serde_yaml's message starts with the key's path.
                    set(self.config, text)
                }))?,
                None => map.next_value_seed(TopicDefaults {
                    defaults: &self.config.topic_defaults,
                    entries: self.topic_defaults,
                })?,
            }
        }
        Ok(())
    }
}

/// A map key that must be one of `known` and not repeat one in `seen`; checked
/// while the key is read, so an error points at it.
struct KnownKey<'a> {
    known: &'static [&'static str],
    seen: &'a mut Vec<&'static str>,
}

impl<'de> DeserializeSeed<'de> for KnownKey<'_> {
    type Value = &'static str;
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<&'static str, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KnownKey<'_> {
    type Value = &'static str;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<&'static str, E> {
        let Some(known) = self.known.iter().find(|known| **known == key) else {
            return Err(match suggest(key, self.known) {
                Some(meant) => E::custom(format!(
                    "unknown field `{key}`: did you mean `{meant}`? (expected one of {})",
                    self.known.iter().map(|known| format!("`{known}`")).collect::<Vec<_>>().join(", ")
                )),
                None => E::unknown_field(key, self.known),
            });
        };
        if self.seen.contains(known) {
            return Err(E::custom(format!("duplicate field `{key}`")));
        }
        self.seen.push(known);
        Ok(known)
    }
}

/// A scalar value handed to `apply` as text (`None` for null) while it is read, so
/// that serde_yaml places the error `apply` returns at the value.
struct ScalarValue<F>(F);

impl<'de, F: FnOnce(Option<&str>) -> Result<(), String>> DeserializeSeed<'de> for ScalarValue<F> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, F: FnOnce(Option<&str>) -> Result<(), String>> Visitor<'de> for ScalarValue<F> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a scalar (text, number or boolean)")
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<(), E> {
        (self.0)(Some(value)).map_err(E::custom)
    }
    fn visit_bool<E: de::Error>(self, value: bool) -> Result<(), E> {
        self.visit_str(&value.to_string())
    }
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<(), E> {
        self.visit_str(&value.to_string())
    }
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<(), E> {
        self.visit_str(&value.to_string())
    }
    fn visit_f64<E: de::Error>(self, value: f64) -> Result<(), E> {
        self.visit_str(&value.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        (self.0)(None).map_err(E::custom)
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }
}

/// The `topic_defaults` map: every key a topic key, every value valid for it on
/// the broker's built-in defaults.
struct TopicDefaults<'a> {
    defaults: &'a corelog_engine::TopicConfig,
    entries: &'a mut Vec<(String, String)>,
}

impl<'de> DeserializeSeed<'de> for TopicDefaults<'_> {
    type Value = ();
    /// A map, or null for none.
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopicDefaults<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of topic configs")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        static TOPIC_KEYS: OnceLock<Vec<&'static str>> = OnceLock::new();
        let known = TOPIC_KEYS.get_or_init(|| topic::topic_key_names().collect());
        let mut seen = Vec::new();
        while let Some(key) = map.next_key_seed(KnownKey { known, seen: &mut seen })? {
            map.next_value_seed(ScalarValue(|text: Option<&str>| {
                // serde_yaml's message starts with the key's path.
                let text = text.ok_or("expected a value, got null")?;
                topic::set(&mut self.defaults.clone(), key, text).map_err(|error| error.to_string())?;
                self.entries.push((key.to_string(), text.to_string()));
                Ok(())
            }))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args as _, FromArgMatches as _};

    fn command() -> clap::Command {
        BrokerArgs::augment_args(clap::Command::new("broker"))
    }

    fn parse(flags: &[&str]) -> BrokerArgs {
        let matches =
            command().try_get_matches_from(["broker"].iter().chain(flags)).unwrap_or_else(|e| panic!("{flags:?}: {e}"));
        BrokerArgs::from_arg_matches(&matches).expect("parsed")
    }

    fn args(config: Option<PathBuf>) -> BrokerArgs {
        let mut args = parse(&["--data-dir", "/tmp/x"]);
        args.config = config;
        args
    }

    #[test]
    fn every_flagged_setting_is_a_flag_documented_by_the_table() {
        let command = command();
        command.clone().debug_assert();
        for setting in &BROKER_SETTINGS {
            let Some(flag) = setting.flag else {
                assert!(command.get_arguments().all(|arg| arg.get_id() != setting.name), "{}", setting.name);
                continue;
            };
            let arg = command
                .get_arguments()
                .find(|arg| arg.get_long() == Some(flag.long))
                .unwrap_or_else(|| panic!("no --{} for {}", flag.long, setting.name));
            assert_eq!(arg.get_id(), setting.name);
            assert_eq!(arg.is_required_set(), flag.required, "--{}", flag.long);
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert!(help.starts_with(setting.documentation), "--{}: {help}", flag.long);
            let says_default =
                ["[default: ", "Default: ", "by default"].iter().any(|words| help.contains(words)) || flag.required;
            assert!(says_default, "--{} does not say its default: {help}", flag.long);
        }
        let flags = command.get_arguments().filter_map(|arg| arg.get_long()).collect::<Vec<_>>();
        assert_eq!(
            flags,
            [
                "data-dir",
                "listen",
                "advertised-listener",
                "node-id",
                "cores",
                "cpus",
                "controller-listener",
                "controller-quorum-voters",
                "peer-addresses",
                "cluster-id",
                "config",
                TEST_PANIC_FLAG,
                TEST_HOLD_MARKERS_FLAG
            ]
        );
        let reference = file_reference();
        for key in file_keys() {
            assert!(reference.contains(&format!("  {key}: ")), "{key} is not in --help: {reference}");
        }
    }

    #[test]
    fn flags_are_set_through_the_table_and_bad_ones_name_the_flag() {
        let args = parse(&["--data-dir", "/srv/c", "--listen", "127.0.0.1:0", "--node-id", "2", "--cores", "1"]);
        let config = build_config(&args).expect("valid");
        assert_eq!(config.engine.data_dir, PathBuf::from("/srv/c"));
        assert_eq!((config.listen.port(), config.node_id, config.engine.shard_count), (0, 2, 1));
        assert!(command().try_get_matches_from(["broker", "--node-id", "2"]).is_err(), "--data-dir is required");
        let error = build_config(&parse(&["--data-dir", "/x", "--node-id=-1"])).expect_err("bad id").to_string();
        assert!(error.contains("--node-id -1"), "{error}");
        let error = build_config(&parse(&["--data-dir", "/x", "--advertised-listener", "h"])).expect_err("no port");
        assert!(error.to_string().contains("--advertised-listener h"), "{error}");
        let error = build_config(&parse(&["--data-dir", "/x", "--cpus", "8191"])).expect_err("not online");
        assert!(error.is::<UsageError>(), "a usage error: nothing starts");
        let online = corelog_engine::cpus::online().expect("the online CPUs are listed");
        let expected = format!("--cpus 8191: CPU 8191 is not online (online CPUs: {online})");
        assert_eq!(error.to_string(), expected);
        let error = build_config(&parse(&["--data-dir", "/x", "--cpus", "0,"])).expect_err("syntax");
        assert!(error.to_string().starts_with("--cpus 0,: \"0,\" has an empty item"), "{error}");
        assert!(error.to_string().ends_with(&format!("(online CPUs: {online})")), "{error}");
    }

    #[test]
    fn unknown_fields_and_bad_values_are_rejected_with_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("broker.yaml");
        let error_of = |yaml: &str| {
            std::fs::write(&path, yaml).expect("write");
            build_config(&args(Some(path.clone()))).expect_err(yaml).to_string()
        };
        let error = error_of("node_id: 1\nlisten_on: 127.0.0.1:9092\n");
        assert!(error.contains("broker.yaml:2") && error.contains("listen_on"), "{error}");
        assert!(error.contains("node_id") && error.contains("topic_defaults"), "the known keys are listed: {error}");

        let error = error_of("topic_defaults:\n  fsync.policy: sometimes\n");
        assert!(error.contains("broker.yaml:2") && error.contains("fsync.policy"), "{error}");
        let error = error_of("topic_defaults:\n  segment.bytes: 1048576\n  retention.byte: 5\n");
        assert!(error.contains("broker.yaml:3") && error.contains("retention.byte"), "{error}");
        let error = error_of("topic_defaults:\n  fsync.policy: never\n  flush.messages: 1\n");
        assert!(error.contains("contradicts fsync.policy"), "{error}");

        let error = error_of("node_id: 1\ndefault_partitions: 0\n");
        assert!(error.contains("broker.yaml:2") && error.contains("default_partitions"), "{error}");
        let error = error_of("auto_create_topics: yes\n");
        assert!(error.contains("broker.yaml:1") && error.contains("true or false"), "{error}");
        let error = error_of("cores: 1\nnode_id: 2\ncores: 2\n");
        assert!(error.contains("broker.yaml:3") && error.contains("duplicate"), "{error}");
        let error = error_of("node_id: 1\ncpus: 0-8191\n");
        assert!(error.contains("broker.yaml:2") && error.contains("are not online (online CPUs: "), "{error}");
        let error = error_of("listen: [127.0.0.1, 9092]\n");
        assert!(error.contains("broker.yaml:1"), "{error}");
        let error = error_of("node_id: 1\ntopic_defaults: [retention.ms]\n");
        assert!(error.contains("broker.yaml:2"), "{error}");
    }

    #[test]
    fn a_misspelt_key_is_answered_with_the_key_it_was_probably_meant_to_be() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("broker.yaml");
        let error_of = |yaml: &str| {
            std::fs::write(&path, yaml).expect("write");
            build_config(&args(Some(path.clone()))).expect_err(yaml).to_string()
        };
        let error = error_of("node_id: 1\nmax_conections: 20\n");
        assert!(
            error.contains("broker.yaml:2")
                && error.contains("unknown field `max_conections`: did you mean `max_connections`?"),
            "{error}"
        );
        // Kafka's dotted spelling of a setting finds its YAML key.
        let error = error_of("node.id: 1\n");
        assert!(error.contains("did you mean `node_id`?"), "{error}");
        let error = error_of("topic_defaults:\n  retention.msec: 5\n");
        assert!(error.contains("broker.yaml:2") && error.contains("did you mean `retention.ms`?"), "{error}");
        // Nothing close: the known keys only.
        let error = error_of("zzzzzzzz: 1\n");
        assert!(!error.contains("did you mean") && error.contains("expected one of"), "{error}");
    }

    #[test]
    fn the_checked_in_broker_config_reference_is_the_generated_one() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/broker-config.md");
        let generated = reference_markdown();
        for setting in BROKER_SETTINGS.iter().filter_map(|setting| setting.yaml_key) {
            assert!(generated.contains(&format!("| `{setting}` |")), "{setting} is missing");
        }
        if std::env::var_os("UPDATE_GOLDEN").is_some_and(|value| value == "1") {
            std::fs::write(&path, &generated).expect("writing docs/broker-config.md");
            return;
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "docs/broker-config.md differs from the settings table (UPDATE_GOLDEN=1 rewrites it)\n{generated}"
        );
    }

    #[test]
    fn every_yaml_key_sets_its_setting_and_flags_override_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("broker.yaml");
        std::fs::write(
            &path,
            "node_id: 3\nlisten: 127.0.0.1:9999\nadvertised_listener: proxy.local:19092\ncores: 1\n\
             auto_create_topics: false\ndefault_partitions: 6\nmax_request_bytes: 1048576\nfetch_max_bytes: 2097152\nmax_connections: 20\n\
             default_replication_factor: 3\ncontroller_listener: 127.0.0.1:19093\n\
             controller_quorum_voters: 3@127.0.0.1:19093,4@127.0.0.1:19094\ncluster_id: prod-1\n\
             peer_addresses: 4@127.0.0.1:29094\n\
             broker_session_timeout_ms: 3000\nbroker_heartbeat_interval_ms: 500\nreplica_lag_time_max_ms: 10000\n\
             cpus: unpinned\nauto_leader_rebalance_enable: false\nleader_imbalance_check_interval_seconds: 60\n\
             leader_imbalance_per_broker_percentage: 20\n\
             max_connections_per_ip: 8\nmax_connections_per_ip_overrides: 10.0.0.2:100\n\
             connections_max_idle_ms: 60000\nrequest_read_timeout_ms: 5000\n\
             topic_defaults:\n  segment.bytes: 1048576\n  fsync.policy: always\n  min.insync.replicas: 2\n",
        )
        .expect("write");
        let mut with_flags = args(Some(path));
        with_flags.settings.push((settings::by_name("listeners").expect("listed"), "127.0.0.1:0".to_string()));
        let config = build_config(&with_flags).expect("valid");
        let value = |name: &str| (settings::by_name(name).expect("listed").value)(&config);
        let expected = [
            ("node.id", "3"),
            ("listeners", "PLAINTEXT://127.0.0.1:0"),
            ("advertised.listeners", "PLAINTEXT://proxy.local:19092"),
            ("corelog.cores", "1"),
            ("corelog.cpus", "unpinned"),
            ("auto.create.topics.enable", "false"),
            ("num.partitions", "6"),
            ("socket.request.max.bytes", "1048576"),
            ("fetch.max.bytes", "2097152"),
            ("max.connections", "20"),
            ("default.replication.factor", "3"),
            ("controller.listener", "CONTROLLER://127.0.0.1:19093"),
            ("controller.quorum.voters", "3@127.0.0.1:19093,4@127.0.0.1:19094"),
            ("cluster.id", "prod-1"),
            ("corelog.peer.addresses", "4@127.0.0.1:29094"),
            ("broker.session.timeout.ms", "3000"),
            ("broker.heartbeat.interval.ms", "500"),
            ("replica.lag.time.max.ms", "10000"),
            ("auto.leader.rebalance.enable", "false"),
            ("leader.imbalance.check.interval.seconds", "60"),
            ("leader.imbalance.per.broker.percentage", "20"),
            ("max.connections.per.ip", "8"),
            ("max.connections.per.ip.overrides", "10.0.0.2:100"),
            ("connections.max.idle.ms", "60000"),
            ("corelog.request.read.timeout.ms", "5000"),
        ];
        for (name, reported) in expected {
            assert_eq!(value(name), reported, "{name}");
        }
        let yaml_keys = BROKER_SETTINGS.iter().filter(|setting| setting.yaml_key.is_some()).count();
        assert_eq!(yaml_keys, expected.len(), "every YAML key of the table is tested here");
        assert_eq!(config.topic_defaults.segment_bytes, 1 << 20);
        assert_eq!(config.topic_defaults.durability, corelog_engine::Durability::Always);
        assert_eq!(topic::min_insync_replicas(&config.topic_defaults), 2);
    }

    #[test]
    fn an_empty_file_and_null_values_keep_the_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("broker.yaml");
        for yaml in ["", "node_id:\n", "# nothing\ntopic_defaults: {}\n", "topic_defaults:\n", "topic_defaults: ~\n"] {
            std::fs::write(&path, yaml).expect("write");
            let config = build_config(&args(Some(path.clone()))).unwrap_or_else(|e| panic!("{yaml:?}: {e}"));
            assert_eq!(config.node_id, 0, "{yaml:?}");
            assert_eq!(config.topic_defaults, topic::built_in(), "{yaml:?}");
        }
    }
}
