//! The Kafka command-line workflows: `corelog topics`, `corelog groups`, `corelog
//! produce` and `corelog consume`, for any Kafka-compatible cluster.
//!
//! Each command is a thin layer over librdkafka (the `rdkafka` crate): its admin
//! API, a producer or a consumer, with the flags spelled as Kafka's own tools
//! (`kafka-topics.sh`, `kafka-consumer-groups.sh`, the console producer and
//! consumer) and kcat spell them. Every command takes `--bootstrap` (by default the
//! address `corelog broker` listens on by default) and `--timeout-ms`, the longest
//! wait for the cluster's answer; a cluster that does not answer in time is an
//! error (exit 1) that names the address, not a hang.
//!
//! What the commands print on stdout is their result (a table, the records); what
//! went wrong goes to stderr through `main`'s one error line.

pub mod consume;
mod datetime;
pub mod groups;
pub mod produce;
pub mod topics;

use std::time::Duration;

use anyhow::anyhow;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;

/// Where the commands find the cluster and how long they wait for it.
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Any broker of the cluster (Kafka's bootstrap.servers; several comma-separated).
    #[arg(long, value_name = "HOST:PORT", default_value_t = default_bootstrap(), global = true)]
    pub bootstrap: String,
    /// The longest wait for the cluster: a request's answer, a record's acknowledgement.
    #[arg(long = "timeout-ms", value_name = "MS", default_value_t = 30_000, global = true)]
    pub timeout_ms: u64,
}

/// The address `corelog broker` listens on when not told otherwise.
fn default_bootstrap() -> String {
    corelog_broker::BrokerConfig::new("").listen.to_string()
}

impl ClusterArgs {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// librdkafka settings every client of these commands starts from.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("client.id", "corelog-cli")
            .set("socket.timeout.ms", self.timeout_ms.max(10).to_string())
            .set("message.timeout.ms", self.timeout_ms.max(1).to_string());
        config
    }

    pub fn admin_client(&self) -> anyhow::Result<AdminClient<DefaultClientContext>> {
        self.client_config().create().map_err(|error| anyhow!("creating the admin client: {error}"))
    }

    /// A consumer that joins no group: for metadata, offsets and, with `group`,
    /// a group's committed offsets (an OffsetFetch or OffsetCommit of a consumer
    /// that never subscribes does not join the group).
    pub fn plain_consumer(&self, group: Option<&str>) -> anyhow::Result<BaseConsumer> {
        let mut config = self.client_config();
        config.set("enable.auto.commit", "false").set("enable.auto.offset.store", "false");
        // librdkafka wants a group id before it assigns partitions or asks for offsets.
        config.set("group.id", group.unwrap_or("corelog-cli"));
        config.create().map_err(|error| anyhow!("creating a consumer: {error}"))
    }

    pub fn admin_options(&self) -> AdminOptions {
        AdminOptions::new().request_timeout(Some(self.timeout())).operation_timeout(Some(self.timeout()))
    }

    /// The metadata of every topic, which never creates one (asking for one topic
    /// by name may, on a cluster that creates topics on first use).
    pub fn metadata(&self, consumer: &BaseConsumer) -> anyhow::Result<Metadata> {
        consumer.fetch_metadata(None, self.timeout()).map_err(|error| self.unreachable(error))
    }

    /// The error of a request the cluster did not answer.
    pub fn unreachable(&self, error: KafkaError) -> anyhow::Error {
        anyhow!("no answer from the cluster at {} within {} ms: {}", self.bootstrap, self.timeout_ms, reason(&error))
    }
}

/// What went wrong, said once: librdkafka's description of the error code
/// ("Broker: Topic already exists"), without the code's name and the operation
/// that `KafkaError` and `RDKafkaErrorCode` print around it (the message that
/// uses it names the operation).
pub fn reason(error: &KafkaError) -> String {
    error.rdkafka_error_code().map_or_else(|| error.to_string(), code_reason)
}

/// librdkafka's description of `code`, which its `Display` prints after the name.
pub fn code_reason(code: RDKafkaErrorCode) -> String {
    let text = code.to_string();
    match text.split_once(" (").and_then(|(_, description)| description.strip_suffix(')')) {
        Some(description) => description.to_string(),
        None => text,
    }
}

/// A `k=v` flag value (`--config`, `--header`).
pub fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

/// Rows printed as left-aligned columns two spaces apart, the first row the heading.
pub fn print_table(rows: &[Vec<String>]) {
    print!("{}", table(rows));
}

fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| rows.iter().filter_map(|row| row.get(column)).map(|cell| cell.chars().count()).max().unwrap_or(0))
        .collect();
    let mut text = String::new();
    for row in rows {
        let cells: Vec<String> =
            row.iter().enumerate().map(|(column, cell)| format!("{cell:<width$}", width = widths[column])).collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_aligns_its_columns_and_trims_trailing_space() {
        let rows = vec![
            vec!["TOPIC".to_string(), "PARTITION".to_string(), "LAG".to_string()],
            vec!["orders".to_string(), "0".to_string(), "-".to_string()],
        ];
        assert_eq!(table(&rows), "TOPIC   PARTITION  LAG\norders  0          -\n");
    }

    #[test]
    fn a_key_value_needs_an_equals_sign_and_a_key() {
        assert_eq!(key_value("retention.ms=1000"), Ok(("retention.ms".to_string(), "1000".to_string())));
        assert_eq!(key_value("a=b=c"), Ok(("a".to_string(), "b=c".to_string())));
        assert!(key_value("retention.ms").is_err());
        assert!(key_value("=1").is_err());
    }

    #[test]
    fn an_error_code_is_said_once() {
        assert_eq!(code_reason(RDKafkaErrorCode::TopicAlreadyExists), "Broker: Topic already exists");
        let error = KafkaError::MetadataFetch(RDKafkaErrorCode::OperationTimedOut);
        assert_eq!(reason(&error), "Local: Timed out");
    }

    #[test]
    fn the_default_bootstrap_is_where_corelog_broker_listens_by_default() {
        assert_eq!(default_bootstrap(), "127.0.0.1:9092");
    }
}
