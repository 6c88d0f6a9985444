//! What the proxy can do to traffic ([`NetFault`]), its text form (the words of the
//! workload file's network faults, parsed by [`parse_fault`] for `--fault` and the
//! control port), and how the active faults combine ([`Effective`]).

use std::fmt;
use std::time::{Duration, Instant};

use crate::workload::{FaultKind, FaultScope, ParameterDirection};

/// One direction of a proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Bytes from the client to the upstream broker (requests).
    ToBroker,
    /// Bytes from the upstream broker to the client (responses).
    ToClient,
}

impl Direction {
    /// Both directions, in the order of [`Direction::index`].
    pub const ALL: [Direction; 2] = [Direction::ToBroker, Direction::ToClient];

    /// Position in per-direction arrays.
    pub fn index(self) -> usize {
        match self {
            Direction::ToBroker => 0,
            Direction::ToClient => 1,
        }
    }

    /// The workload file's word for it.
    pub fn name(self) -> &'static str {
        match self {
            Direction::ToBroker => ParameterDirection::ToBroker.name(),
            Direction::ToClient => ParameterDirection::ToClient.name(),
        }
    }
}

/// The directions a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Directions {
    pub to_broker: bool,
    pub to_client: bool,
}

impl Directions {
    pub const BOTH: Directions = Directions { to_broker: true, to_client: true };
    pub const TO_BROKER: Directions = Directions { to_broker: true, to_client: false };
    pub const TO_CLIENT: Directions = Directions { to_broker: false, to_client: true };

    pub fn includes(self, direction: Direction) -> bool {
        match direction {
            Direction::ToBroker => self.to_broker,
            Direction::ToClient => self.to_client,
        }
    }

    fn from_parameter(direction: ParameterDirection) -> Directions {
        match direction {
            ParameterDirection::Both => Directions::BOTH,
            ParameterDirection::ToBroker => Directions::TO_BROKER,
            ParameterDirection::ToClient => Directions::TO_CLIENT,
        }
    }

    /// The workload file's word for it (`both` also for the empty set, which
    /// [`parse_fault`] never produces).
    fn name(self) -> &'static str {
        match (self.to_broker, self.to_client) {
            (true, false) => ParameterDirection::ToBroker.name(),
            (false, true) => ParameterDirection::ToClient.name(),
            _ => ParameterDirection::Both.name(),
        }
    }
}

/// A network fault the proxy applies until it is removed. Several may be active at
/// once; they compose (see [`Effective`]).
#[derive(Debug, Clone, PartialEq)]
pub enum NetFault {
    /// Every chunk is delivered `delay` ± uniform `jitter` after it was read, never
    /// reordered (deliver time = max(previous deliver time, read time + delay +
    /// jitter sample)).
    Latency { delay: Duration, jitter: Duration, directions: Directions },
    /// Token bucket shared by all connections of this proxy, per direction.
    Bandwidth { bytes_per_second: u64, directions: Directions },
    /// Accept, then silence: stop forwarding (hold the bytes, stop reading so TCP
    /// backpressure builds) in the given directions; when removed, forwarding resumes
    /// with nothing lost or reordered (like a network partition that heals before
    /// TCP gives up). Clients see timeouts.
    Blackhole { directions: Directions },
    /// Reset (TCP RST: SO_LINGER 0 then close) every open connection when added;
    /// while it stays active, every new connection is reset right after accept.
    Reset,
    /// The listener is closed (new connections get ECONNREFUSED) and open
    /// connections are reset; when removed, the listener is bound again on the same
    /// address.
    Down,
}

/// The text form [`parse_fault`] reads (durations in whole milliseconds).
impl fmt::Display for NetFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetFault::Latency { delay, jitter, directions } => write!(
                f,
                "latency delay_ms={} jitter_ms={} direction={}",
                delay.as_millis(),
                jitter.as_millis(),
                directions.name()
            ),
            NetFault::Bandwidth { bytes_per_second, directions } => {
                write!(f, "bandwidth bytes_per_second={bytes_per_second} direction={}", directions.name())
            }
            NetFault::Blackhole { directions } => write!(f, "blackhole direction={}", directions.name()),
            NetFault::Reset => f.write_str(FaultKind::Reset.name()),
            NetFault::Down => f.write_str(FaultKind::Down.name()),
        }
    }
}

/// Parses `<kind> [key=value]...`, the kinds and keys of the workload file's network
/// faults: `latency delay_ms=N [jitter_ms=N] [direction=D]`, `bandwidth
/// bytes_per_second=N [direction=D]`, `blackhole [direction=D]`, `reset`, `down`,
/// where D is `both` (the default), `to-broker` or `to-client`. Which keys a kind
/// requires and takes comes from [`FaultKind::parameters`], so the two cannot drift.
/// An error names the token at fault.
pub fn parse_fault(text: &str) -> Result<NetFault, String> {
    let mut tokens = text.split_whitespace();
    let kind_token = tokens.next().ok_or_else(|| format!("empty fault: expected a kind ({})", network_kinds()))?;
    let kind = FaultKind::from_name(kind_token)
        .filter(|kind| kind.scope() == FaultScope::Network)
        .ok_or_else(|| format!("{kind_token:?} is not a network fault kind (expected {})", network_kinds()))?;
    let (required, optional) = kind.parameters();
    let mut values: Vec<Parameter<'_>> = Vec::new();
    for token in tokens {
        let (key, value) = token.split_once('=').ok_or_else(|| format!("{token:?}: expected key=value"))?;
        if !required.contains(&key) && !optional.contains(&key) {
            let takes = required.iter().chain(optional).copied().collect::<Vec<_>>().join(", ");
            let takes = if takes.is_empty() { "no parameters".to_string() } else { format!("only {takes}") };
            return Err(format!("{token:?}: {kind} takes {takes}"));
        }
        if values.iter().any(|given| given.key == key) {
            return Err(format!("{token:?}: {key} is given twice"));
        }
        values.push(Parameter { token, key, value });
    }
    if let Some(missing) = required.iter().find(|key| !values.iter().any(|given| given.key == **key)) {
        return Err(format!("{kind} needs {missing}=N"));
    }
    let given = |key: &str| values.iter().find(|given| given.key == key);
    let directions = given("direction").map_or(Ok(Directions::BOTH), Parameter::directions)?;
    let milliseconds = |key: &str| given(key).map_or(Ok(0), Parameter::number).map(Duration::from_millis);
    Ok(match kind {
        FaultKind::Latency => {
            NetFault::Latency { delay: milliseconds("delay_ms")?, jitter: milliseconds("jitter_ms")?, directions }
        }
        FaultKind::Bandwidth => {
            let parameter =
                given("bytes_per_second").ok_or_else(|| "bandwidth needs bytes_per_second=N".to_string())?;
            let bytes_per_second = parameter.number()?;
            if bytes_per_second == 0 {
                return Err(format!("{:?}: must be at least 1", parameter.token));
            }
            NetFault::Bandwidth { bytes_per_second, directions }
        }
        FaultKind::Blackhole => NetFault::Blackhole { directions },
        FaultKind::Reset => NetFault::Reset,
        FaultKind::Down => NetFault::Down,
        other => unreachable!("{other} was checked to be a network fault kind"),
    })
}

/// One `key=value` token of a fault's text.
struct Parameter<'a> {
    token: &'a str,
    key: &'a str,
    value: &'a str,
}

impl Parameter<'_> {
    fn number(&self) -> Result<u64, String> {
        self.value.parse::<u64>().map_err(|_| format!("{:?}: {} must be a whole number", self.token, self.key))
    }

    fn directions(&self) -> Result<Directions, String> {
        ParameterDirection::from_name(self.value).map(Directions::from_parameter).ok_or_else(|| {
            let choices = ParameterDirection::ALL.iter().map(|d| d.name()).collect::<Vec<_>>().join(", ");
            format!("{:?}: direction must be one of {choices}", self.token)
        })
    }
}

fn network_kinds() -> String {
    let kinds = FaultKind::ALL.iter().filter(|kind| kind.scope() == FaultScope::Network);
    kinds.map(|kind| kind.name()).collect::<Vec<_>>().join(", ")
}

/// What the active faults do to one direction, combined: latencies add up (two
/// delays in a row), the lowest bandwidth limit wins, any blackhole silences.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct DirectionFaults {
    pub delay: Duration,
    pub jitter: Duration,
    pub bytes_per_second: Option<u64>,
    pub blackhole: bool,
}

impl DirectionFaults {
    /// No fault touches this direction: bytes may go straight through.
    pub fn is_clear(&self) -> bool {
        *self == DirectionFaults::default()
    }

    /// When a chunk read at `read_at` is due, for a jitter sample in [-1, 1]; never
    /// before it was read. Computed when the chunk is about to be written, so a
    /// latency removed meanwhile releases it at once.
    pub fn due_at(&self, read_at: Instant, jitter_sample: f64) -> Instant {
        if self.delay.is_zero() && self.jitter.is_zero() {
            return read_at;
        }
        let seconds = self.delay.as_secs_f64() + jitter_sample * self.jitter.as_secs_f64();
        read_at + Duration::from_secs_f64(seconds.max(0.0))
    }
}

/// The combined effect of every active fault: what the forwarding threads and the
/// acceptor consult. Published as a whole on every change (see `Shared::publish`).
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Effective {
    directions: [DirectionFaults; 2],
    /// A `reset` fault is active: new connections are reset right after accept.
    pub reset: bool,
    /// A `down` fault is active: no listener.
    pub down: bool,
}

impl Effective {
    pub fn of<'a>(faults: impl IntoIterator<Item = &'a NetFault>) -> Effective {
        let mut effective = Effective::default();
        for fault in faults {
            for direction in Direction::ALL {
                let combined = &mut effective.directions[direction.index()];
                match *fault {
                    NetFault::Latency { delay, jitter, directions } if directions.includes(direction) => {
                        combined.delay += delay;
                        combined.jitter += jitter;
                    }
                    NetFault::Bandwidth { bytes_per_second, directions } if directions.includes(direction) => {
                        let lowest = combined.bytes_per_second.map_or(bytes_per_second, |b| b.min(bytes_per_second));
                        combined.bytes_per_second = Some(lowest);
                    }
                    NetFault::Blackhole { directions } if directions.includes(direction) => combined.blackhole = true,
                    _ => {}
                }
            }
            effective.reset |= *fault == NetFault::Reset;
            effective.down |= *fault == NetFault::Down;
        }
        effective
    }

    pub fn direction(&self, direction: Direction) -> &DirectionFaults {
        &self.directions[direction.index()]
    }
}
