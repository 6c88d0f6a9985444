//! The token bucket of a `bandwidth` fault: one per direction, shared by every
//! connection of a proxy, so the limit holds for the proxy as a whole.

use std::time::{Duration, Instant};

/// How much traffic may pass at once after an idle spell, in seconds of the rate: a
/// small burst, enough to absorb a sender's oversleeping without exceeding the limit
/// over any longer window.
const BURST_SECONDS: f64 = 0.02;

/// Largest piece a writer sends at once under a limit: 20 ms of the rate, so a low
/// limit trickles evenly instead of releasing a whole chunk after a long wait.
pub(super) fn piece_bytes(bytes_per_second: u64, chunk_bytes: usize) -> usize {
    let burst_bytes = (bytes_per_second as f64 * BURST_SECONDS) as usize;
    burst_bytes.clamp(1, chunk_bytes)
}

/// A token bucket that may go into debt: a sender takes the tokens for what it is
/// about to send and waits until the debt is repaid, so concurrent senders queue up
/// fairly and any size is accounted exactly.
#[derive(Debug)]
pub(super) struct TokenBucket {
    bytes_per_second: Option<u64>,
    /// Bytes that may be sent now; negative while senders wait.
    tokens: f64,
    refilled_at: Instant,
    /// Bumped on every [`TokenBucket::reset`], so a waiting sender learns that its
    /// debt belongs to a limit that no longer holds.
    pub epoch: u64,
}

impl TokenBucket {
    pub fn new() -> TokenBucket {
        TokenBucket { bytes_per_second: None, tokens: 0.0, refilled_at: Instant::now(), epoch: 0 }
    }

    /// Starts over with a new limit (`None`: unlimited), with a full burst.
    pub fn reset(&mut self, bytes_per_second: Option<u64>, now: Instant) {
        self.bytes_per_second = bytes_per_second;
        self.tokens = bytes_per_second.map_or(0.0, burst);
        self.refilled_at = now;
        self.epoch += 1;
    }

    /// Takes `bytes` tokens; returns how long the caller waits before sending them.
    pub fn take(&mut self, bytes: usize, now: Instant) -> Duration {
        let Some(rate) = self.bytes_per_second else { return Duration::ZERO };
        let elapsed = now.saturating_duration_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate as f64).min(burst(rate));
        self.refilled_at = now;
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / rate as f64)
        }
    }
}

fn burst(bytes_per_second: u64) -> f64 {
    (bytes_per_second as f64 * BURST_SECONDS).max(1.0)
}
