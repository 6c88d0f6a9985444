//! raft-rs logs through `slog`; the broker logs through `tracing`. [`TracingDrain`]
//! forwards the one to the other, so the quorum's elections and role changes appear
//! in the broker's log with its other lines.

use std::fmt::Write as _;

/// A `slog` drain that emits each record as a `tracing` event with target
/// `corelog::raft` at the matching level, key-value pairs appended to the message.
pub struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record<'_>, values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        let mut line = record.msg().to_string();
        let mut pairs = KeyValues(&mut line);
        // Serializing into a String cannot fail; a failure would only shorten the line.
        let _ = slog::KV::serialize(&record.kv(), record, &mut pairs);
        let _ = slog::KV::serialize(values, record, &mut pairs);
        match record.level() {
            slog::Level::Critical | slog::Level::Error => tracing::error!(target: "corelog::raft", "{line}"),
            slog::Level::Warning => tracing::warn!(target: "corelog::raft", "{line}"),
            slog::Level::Info => tracing::info!(target: "corelog::raft", "{line}"),
            slog::Level::Debug => tracing::debug!(target: "corelog::raft", "{line}"),
            slog::Level::Trace => tracing::trace!(target: "corelog::raft", "{line}"),
        }
        Ok(())
    }
}

/// The root logger raft-rs is given, tagged with this node's id.
pub fn raft_logger(node_id: u64) -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!("node" => node_id))
}

struct KeyValues<'a>(&'a mut String);

impl slog::Serializer for KeyValues<'_> {
    fn emit_arguments(&mut self, key: slog::Key, value: &std::fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, ", {key}: {value}");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_with_key_values_becomes_one_line() {
        let mut line = String::from("became leader");
        let mut pairs = KeyValues(&mut line);
        slog::Serializer::emit_u64(&mut pairs, "term", 3).expect("emit");
        slog::Serializer::emit_str(&mut pairs, "raft_id", "1").expect("emit");
        assert_eq!(line, "became leader, term: 3, raft_id: 1");
    }
}
