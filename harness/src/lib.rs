//! corelog's harness as a library: everything the `corelog` binary does, behind the
//! thin command line in `main.rs` (which only parses flags, sets up logging and
//! picks the allocator).
//!
//! Where to start reading:
//!
//! - [`broker`]: `corelog broker`, a Kafka-compatible broker on this machine (the
//!   engine and the Kafka protocol live in `corelog-engine`).
//! - [`run`]: `corelog run`, which replays a [`workload`] file through a [`driver`]
//!   against brokers it starts, an external cluster or the embedded engine, injects
//!   faults (through the [`proxy`] for network faults), judges the history with the
//!   [`checker`] and writes results and a report.
//! - [`check`]: `corelog check`, which validates workload files without running them.
//! - [`report`]: `corelog report` and `corelog compare`, over `corelog-reports`.
//! - [`proxy`]: `corelog proxy`, the TCP fault proxy on its own.
//! - [`repair`]: `corelog repair`, which shows a damaged (offline) partition's
//!   damage and, with consent, truncates it there.
//! - [`cli`]: `corelog topics`, `groups`, `produce` and `consume`, the Kafka
//!   command-line workflows over librdkafka, for any Kafka-compatible cluster.
//! - [`payload`]: the header every message the harness sends carries.
//!
//! Errors are `anyhow` throughout; a [`UsageError`] among them means the user's
//! flags or configuration were wrong, which the binary turns into exit code 2.

// Unsafe code only where the harness calls C: librdkafka's own API (`driver::kafka`)
// and libc for what std lacks (signals, socket options). Those places allow it by
// name, and each unsafe block says why it is sound.
#![deny(unsafe_code)]

pub mod broker;
pub mod check;
pub mod checker;
pub mod cli;
pub mod driver;
pub mod logging;
pub mod payload;
pub mod proxy;
pub mod repair;
pub mod report;
pub mod run;
pub mod workload;

/// A failure the user caused (bad flags or configuration): exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// An error as the binary prints it: each cause after its context, `: `-separated,
/// but a cause whose text the message already ends with is left out, so that an
/// error type that quotes its source (`io_uring is not usable: {0}`) does not say
/// the source twice (`... (os error 2): ... (os error 2)`).
pub fn error_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.ends_with(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

#[cfg(test)]
mod error_text_tests {
    use super::error_text;
    use anyhow::Context as _;

    /// An error that quotes its source in its message, as thiserror's `{0}` does.
    #[derive(Debug)]
    struct Quoting(std::io::Error);

    impl std::fmt::Display for Quoting {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "opening the log: {}", self.0)
        }
    }

    impl std::error::Error for Quoting {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_source_the_message_already_quotes_is_said_once() {
        let io = std::io::Error::from_raw_os_error(2);
        let error = Err::<(), _>(Quoting(io)).context("starting the broker").expect_err("an error");
        let text = error_text(&error);
        assert_eq!(text.matches("(os error 2)").count(), 1, "{text}");
        assert!(text.starts_with("starting the broker: opening the log: "), "{text}");
        // A source that the message does not quote is still given.
        let plain = Err::<(), _>(std::io::Error::from_raw_os_error(2)).context("reading x.yaml").expect_err("error");
        assert!(error_text(&plain).starts_with("reading x.yaml: ") && error_text(&plain).ends_with("(os error 2)"));
    }
}
