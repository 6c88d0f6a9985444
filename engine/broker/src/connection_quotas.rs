//! The bounds on connections, and what they count (Kafka's `ConnectionQuotas` and
//! its connection metrics).
//!
//! - [`ConnectionQuotas`]: connections open at once, over all shards
//!   (`max.connections`) and per peer IP address (`max.connections.per.ip`, with
//!   `max.connections.per.ip.overrides`). A connection over either bound is closed
//!   right after accept. Shared by every shard; one mutex taken twice per connection
//!   (accept and close), never across an await.
//! - [`ConnectionStats`]: what the bounds did, for the broker's lifetime: idle
//!   connections reaped (`connections.max.idle.ms`), request frames that missed
//!   their read deadline (`corelog.request.read.timeout.ms`) and connections
//!   refused per IP. The broker logs them when it stops; `Broker::connection_stats`
//!   reads them.
//! - [`LogLimit`]: a shard's rate limit for one kind of log line, so a flood of
//!   hostile connections cannot flood the log too.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::BrokerState;

/// Connections open now, in all and per peer IP address.
#[derive(Debug, Default)]
pub struct ConnectionQuotas {
    total: AtomicUsize,
    /// Open connections of each IP address that has one (no zero counts kept).
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a connection is closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max.connections` connections are open.
    TooMany { connections_max: usize },
    /// The peer's IP address has its `max.connections.per.ip` (or override) open.
    TooManyFromIp { ip: IpAddr, connections_max: usize },
}

/// An admitted connection's place in the quotas, given back when dropped.
pub struct ConnectionPermit {
    broker: Arc<BrokerState>,
    ip: IpAddr,
}

impl ConnectionQuotas {
    /// Counts a connection from `ip` and hands out its permit, or refuses it (and
    /// counts nothing but the refusal's stat).
    pub fn admit(broker: &Arc<BrokerState>, ip: IpAddr) -> Result<ConnectionPermit, Refusal> {
        let quotas = &broker.connection_quotas;
        let ip_max = broker.config.connections_max_per_ip_for(ip);
        let mut per_ip = quotas.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
        let open_from_ip = per_ip.get(&ip).copied().unwrap_or(0);
        if open_from_ip >= ip_max {
            broker.connection_stats.per_ip_refused.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::TooManyFromIp { ip, connections_max: ip_max });
        }
        let connections_max = broker.config.connections_max;
        let admitted =
            quotas.total.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < connections_max).then_some(n + 1));
        if admitted.is_err() {
            return Err(Refusal::TooMany { connections_max });
        }
        per_ip.insert(ip, open_from_ip + 1);
        Ok(ConnectionPermit { broker: broker.clone(), ip })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let quotas = &self.broker.connection_quotas;
        let mut per_ip = quotas.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
        match per_ip.get_mut(&self.ip) {
            Some(1) => {
                per_ip.remove(&self.ip);
            }
            Some(open) => *open -= 1,
            None => unreachable!("a permit of {} outlived its count", self.ip),
        }
        let before = quotas.total.fetch_sub(1, Ordering::AcqRel);
        assert!(before > 0, "more permits dropped than admitted");
    }
}

/// What the connection bounds did, counted since the broker started.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    /// Connections closed for `connections.max.idle.ms` without a request or a byte.
    pub idle_reaped: AtomicU64,
    /// Connections closed because a request frame missed its read deadline.
    pub read_deadlines_hit: AtomicU64,
    /// Connections closed at accept for `max.connections.per.ip`.
    pub per_ip_refused: AtomicU64,
}

/// A reading of [`ConnectionStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionStatsSnapshot {
    pub idle_reaped: u64,
    pub read_deadlines_hit: u64,
    pub per_ip_refused: u64,
}

impl ConnectionStats {
    pub fn snapshot(&self) -> ConnectionStatsSnapshot {
        ConnectionStatsSnapshot {
            idle_reaped: self.idle_reaped.load(Ordering::Relaxed),
            read_deadlines_hit: self.read_deadlines_hit.load(Ordering::Relaxed),
            per_ip_refused: self.per_ip_refused.load(Ordering::Relaxed),
        }
    }
}

impl std::fmt::Display for ConnectionStatsSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "idle_reaped={} read_deadlines_hit={} per_ip_refused={}",
            self.idle_reaped, self.read_deadlines_hit, self.per_ip_refused
        )
    }
}

/// `max.connections.per.ip.overrides` from Kafka's `ip:count,ip:count` (an IPv6
/// address as `[::1]:count` or `::1:count`: the count is after the last colon), or
/// why not. Kafka also takes host names; corelog takes IP addresses only, so what
/// a name resolves to never changes under a running broker.
pub fn parse_per_ip_overrides(text: &str) -> Result<BTreeMap<IpAddr, usize>, String> {
    let mut overrides = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|entry| !entry.is_empty()) {
        let (ip, count) = entry.rsplit_once(':').ok_or_else(|| format!("{entry:?} is not ip:count"))?;
        let ip_text = ip.trim().trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = ip_text.parse().map_err(|_| format!("{entry:?}: {ip_text:?} is not an IP address"))?;
        let count = crate::config::parse_in(count.trim(), 0, i32::MAX as usize)
            .map_err(|reason| format!("{entry:?}: {reason}"))?;
        if overrides.insert(ip, count).is_some() {
            return Err(format!("{ip} is given twice"));
        }
    }
    Ok(overrides)
}

/// Lines of one kind a shard logs per [`LOG_WINDOW`]; the rest are counted, and the
/// count is told with the next line logged.
pub const LOG_LINES_PER_WINDOW: u32 = 5;
pub const LOG_WINDOW: Duration = Duration::from_secs(10);

/// One shard's rate limit for one kind of log line (owned by the shard, !Send).
#[derive(Debug, Default)]
pub struct LogLimit {
    window_start: std::cell::Cell<Option<Instant>>,
    logged_in_window: std::cell::Cell<u32>,
    suppressed: std::cell::Cell<u64>,
}

impl LogLimit {
    /// Whether a line may be logged now: `Some(n)`, with `n` the lines suppressed
    /// since the last one logged, or `None` (and the line is counted as suppressed).
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let window_over = self.window_start.get().is_none_or(|start| now.duration_since(start) >= LOG_WINDOW);
        if window_over {
            self.window_start.set(Some(now));
            self.logged_in_window.set(0);
        }
        if self.logged_in_window.get() >= LOG_LINES_PER_WINDOW {
            self.suppressed.set(self.suppressed.get() + 1);
            return None;
        }
        self.logged_in_window.set(self.logged_in_window.get() + 1);
        Some(self.suppressed.replace(0))
    }
}

/// What to append to a rate-limited line that follows `suppressed` unlogged ones.
pub fn suppressed_note(suppressed: u64) -> String {
    match suppressed {
        0 => String::new(),
        n => format!(" ({n} more like this not logged)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_limit_lets_a_burst_through_per_window_and_counts_the_rest() {
        let limit = LogLimit::default();
        let start = Instant::now();
        for _ in 0..LOG_LINES_PER_WINDOW {
            assert_eq!(limit.admit(start), Some(0));
        }
        for _ in 0..7 {
            assert_eq!(limit.admit(start + Duration::from_secs(1)), None);
        }
        assert_eq!(limit.admit(start + LOG_WINDOW), Some(7), "the next window's first line tells the count");
        assert_eq!(limit.admit(start + LOG_WINDOW), Some(0));
    }

    #[test]
    fn per_ip_overrides_are_ip_count_pairs() {
        let parsed = parse_per_ip_overrides("127.0.0.1:200, 10.0.0.1:0,[::1]:3").expect("valid");
        let expected: BTreeMap<IpAddr, usize> = [
            ("127.0.0.1".parse().expect("ip"), 200),
            ("10.0.0.1".parse().expect("ip"), 0),
            ("::1".parse().expect("ip"), 3),
        ]
        .into_iter()
        .collect();
        assert_eq!(parsed, expected);
        assert_eq!(parse_per_ip_overrides(""), Ok(BTreeMap::new()));
        for bad in ["localhost:3", "127.0.0.1", "127.0.0.1:-1", "127.0.0.1:1,127.0.0.1:2"] {
            assert!(parse_per_ip_overrides(bad).is_err(), "{bad:?} accepted");
        }
    }
}
