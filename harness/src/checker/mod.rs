//! The delivery checker: records who sent what and what was read where, then
//! classifies every message in Jepsen's words and judges the run against its
//! delivery guarantee.
//!
//! Generate → execute → classify: the run's producers and consumers feed a
//! [`History`] from many threads while the workload runs; after the final drain,
//! [`History::check`] classifies ([`classify`]) and decides ([`verdict`]).
//!
//! Identity: every payload carries a run-unique producer id and a per-producer
//! sequence number dense from 0 (see `payload.rs`), so a message is one
//! (producer id, sequence) pair however often it was stored or read, and a
//! producer's messages live in one vector indexed by sequence.
//!
//! Execution model: every recording method takes `&self` and locks one of
//! [`SHARDS`] mutexes, chosen by producer id, so producer and consumer threads
//! rarely contend; each call is O(1) amortised (a hash lookup by producer id, a
//! vector store or push) and allocates only when a vector grows. `check` locks every
//! shard and may run more than once.
//!
//! Memory: 16 bytes per send ([`MessageRecord`], kept in 1 MiB chunks that are
//! never moved: see [`chunked`]) and 24 bytes per read ([`ReadRecord`], up to twice
//! that while its vector grows), so one subscription costs
//! about 40 bytes per message (30 M messages: ~1.2 GB). `check` adds 32 bytes per
//! stored copy of a message (its reconstruction of every partition) for its
//! duration. Hard limits: at most `max_messages` sends (and `u32::MAX`, the width
//! of a stored sequence) and [`READS_PER_MESSAGE_AND_SUBSCRIPTION_MAX`] reads per
//! message and subscription; beyond either, recording of new messages (or reads)
//! stops and the verdict is Unknown.
//!
//! Aborted reads: the exactly-once stage marks the copies it writes in a
//! transaction it means to abort (`payload.rs`); a read of one is an aborted read,
//! counted apart from the message's other reads ([`History::aborted_read`]). A
//! copy written by a transaction that aborted for another reason (a processor
//! killed mid-transaction) carries no mark: read, it shows as the message written
//! twice, which exactly-once forbids as well.
//!
//! It is not a latency or throughput measurement.

mod chunked;
mod classify;
mod verdict;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use corelog_reports::model::{CheckerResult, Guarantee};

/// How many mutexes the history is split into: enough that a few dozen producer
/// and consumer threads rarely wait for each other, few enough that `check` locks
/// them all cheaply.
const SHARDS: usize = 64;

/// Reads kept per message and subscription (on average) before the history
/// overflows: every subscription may read every message twice (redelivery after
/// crashes) within the bound.
pub const READS_PER_MESSAGE_AND_SUBSCRIPTION_MAX: u64 = 2;

/// Everything the checker needs to know about a run's messages, recorded as it
/// happens. `Send + Sync`; share it behind an `Arc`.
pub struct History {
    /// Topic names by index, for evidence text.
    topics: Vec<String>,
    /// How many subscriptions (consumer groups) read every topic.
    subscriptions: u32,
    bounds: Bounds,
    /// Message slots allocated so far (sends, and gaps below a sequence read or
    /// sent out of order), against `bounds.messages_max`.
    messages_recorded: AtomicU64,
    reads_recorded: AtomicU64,
    /// Set once a bound was hit: the verdict is Unknown from then on. Messages
    /// already recorded keep getting their outcomes and reads (within the read
    /// bound), so the counts of the recorded part stay right.
    overflowed: AtomicBool,
    shards: Box<[Mutex<Shard>]>,
    /// Reads of copies written by a transaction meant to abort: how many, and the
    /// first few as evidence.
    aborted_reads: Mutex<(u64, Vec<String>)>,
}

/// The history's memory bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    pub messages_max: u64,
    pub reads_max: u64,
}

/// The producers whose id maps to one shard.
#[derive(Default)]
struct Shard {
    producers: HashMap<u64, ProducerLog, BuildHasherDefault<ProducerIdHasher>>,
    /// Highest offset per (subscription, topic, partition) among reads the history
    /// had no room for (after an overflow), so that `lost` versus `unseen` stays
    /// right for the messages that were recorded.
    unrecorded_read_progress: HashMap<PartitionRead, i64>,
}

/// Hashes a producer id with one multiplication: every send, acknowledgement and
/// read looks its producer up, and the ids are the harness's own small integers (or
/// ones read back from payloads), not attacker-chosen keys that SipHash must guard
/// against.
#[derive(Default)]
struct ProducerIdHasher(u64);

impl Hasher for ProducerIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = (self.0 ^ id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// One producer's messages, indexed by sequence, and every read of them.
#[derive(Default)]
struct ProducerLog {
    messages: chunked::Chunked<MessageRecord>,
    /// In arrival order while recording; `check` sorts it by sequence.
    reads: Vec<ReadRecord>,
}

/// What [`History::check`] found: the result `result.json` keeps, and what
/// decided its verdict in a few words ("lost 6000 acknowledged"; empty for a pass)
/// for the closing line of `corelog run`.
pub struct Checked {
    pub result: CheckerResult,
    pub brief: String,
}

/// How a client reported a send to have ended (see [`History::outcomes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    Acknowledged {
        partition: i32,
        offset: i64,
    },
    /// `ambiguous`: it may have been persisted anyway.
    Failed {
        ambiguous: bool,
    },
}

/// One send: where it went and how it ended. 16 bytes.
#[derive(Debug, Clone, Copy)]
struct MessageRecord {
    outcome: PackedOutcome,
    /// The acknowledged partition; meaningless unless acknowledged.
    partition: i32,
    topic: u32,
}

/// One read of one message by one subscription. The producer id is the log's. 24
/// bytes: the sequence is stored in 32 bits, which the message bound guarantees.
#[derive(Debug, Clone, Copy)]
struct ReadRecord {
    offset: i64,
    sequence: u32,
    subscription: u32,
    topic: u32,
    partition: i32,
}

/// A partition as one subscription reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct PartitionRead {
    subscription: u32,
    topic: u32,
    partition: i32,
}

/// How a send ended, as far as the history knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// No send recorded: a gap below a later sequence, or a message only read.
    NotSent,
    /// Handed to the client, no outcome yet; ambiguous if it stays so.
    Pending,
    /// Acknowledged at `offset`, or without one (acks=0 reports no offset).
    Acknowledged {
        offset: Option<i64>,
    },
    Failed {
        ambiguous: bool,
    },
}

/// An [`Outcome`] in the 8 bytes of an offset, which keeps [`MessageRecord`] at 16
/// bytes: acknowledged offsets are ≥ 0, so the outcomes without one take the
/// lowest `i64` values, far below any negative sentinel a client reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PackedOutcome(i64);

impl PackedOutcome {
    const NOT_SENT: i64 = i64::MIN;
    const PENDING: i64 = i64::MIN + 1;
    const FAILED_AMBIGUOUS: i64 = i64::MIN + 2;
    const FAILED: i64 = i64::MIN + 3;
    const ACKNOWLEDGED_WITHOUT_OFFSET: i64 = i64::MIN + 4;

    fn pack(outcome: Outcome) -> PackedOutcome {
        PackedOutcome(match outcome {
            Outcome::NotSent => Self::NOT_SENT,
            Outcome::Pending => Self::PENDING,
            Outcome::Acknowledged { offset: Some(offset) } if offset >= 0 => offset,
            Outcome::Acknowledged { .. } => Self::ACKNOWLEDGED_WITHOUT_OFFSET,
            Outcome::Failed { ambiguous: true } => Self::FAILED_AMBIGUOUS,
            Outcome::Failed { ambiguous: false } => Self::FAILED,
        })
    }

    fn unpack(self) -> Outcome {
        match self.0 {
            offset if offset >= 0 => Outcome::Acknowledged { offset: Some(offset) },
            Self::NOT_SENT => Outcome::NotSent,
            Self::PENDING => Outcome::Pending,
            Self::FAILED_AMBIGUOUS => Outcome::Failed { ambiguous: true },
            Self::FAILED => Outcome::Failed { ambiguous: false },
            Self::ACKNOWLEDGED_WITHOUT_OFFSET => Outcome::Acknowledged { offset: None },
            other => unreachable!("pack never produces {other}"),
        }
    }
}

const _: () = assert!(std::mem::size_of::<MessageRecord>() == 16);
const _: () = assert!(std::mem::size_of::<ReadRecord>() == 24);

impl MessageRecord {
    const NOT_SENT: MessageRecord =
        MessageRecord { outcome: PackedOutcome(PackedOutcome::NOT_SENT), partition: -1, topic: 0 };

    fn outcome(&self) -> Outcome {
        self.outcome.unpack()
    }

    /// Records the send's outcome. The first definite outcome stands: a client
    /// reports each send once, so a second report is a harness bug (asserted in
    /// debug builds; a release run keeps measuring).
    fn set_outcome(&mut self, outcome: Outcome) {
        let current = self.outcome();
        if matches!(current, Outcome::NotSent | Outcome::Pending) {
            self.outcome = PackedOutcome::pack(outcome);
        } else {
            debug_assert!(false, "a second outcome {outcome:?} after {current:?}");
        }
    }
}

impl History {
    /// `topics`: topic names by index (for evidence text); `subscriptions`: how
    /// many subscriptions (consumer groups) read every topic; `max_messages`: the
    /// memory bound — beyond it (or beyond `u32::MAX`), recording stops and the
    /// verdict becomes Unknown ("history exceeded N messages").
    pub fn new(topics: Vec<String>, subscriptions: u32, max_messages: u64) -> History {
        let messages_max = max_messages.min(u64::from(u32::MAX));
        let reads_max = messages_max
            .saturating_mul(u64::from(subscriptions.max(1)))
            .saturating_mul(READS_PER_MESSAGE_AND_SUBSCRIPTION_MAX);
        History {
            topics,
            subscriptions,
            bounds: Bounds { messages_max, reads_max },
            messages_recorded: AtomicU64::new(0),
            reads_recorded: AtomicU64::new(0),
            overflowed: AtomicBool::new(false),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            aborted_reads: Mutex::new((0, Vec::new())),
        }
    }

    /// A send was handed to the client (attempted). Call it before the send: the
    /// outcome may be reported before the client's `send` returns. Calling it again
    /// for the same message (the client's queue was full, the send is retried)
    /// changes nothing.
    pub fn sent(&self, producer_id: u64, sequence: u64, topic: u32) {
        self.assert_topic(topic);
        let mut shard = self.lock(producer_id);
        if let Some(message) = self.message(&mut shard, producer_id, sequence) {
            if message.outcome() == Outcome::NotSent {
                message.topic = topic;
                message.set_outcome(Outcome::Pending);
            }
        }
    }

    /// The send was acknowledged at `partition`/`offset`; a negative offset
    /// (acks=0: the client learns none) is recorded as "acknowledged, offset
    /// unknown". (The run reports through [`History::outcomes`].)
    #[cfg(test)]
    pub fn acknowledged(&self, producer_id: u64, sequence: u64, partition: i32, offset: i64) {
        self.outcomes([(producer_id, sequence, Reported::Acknowledged { partition, offset })]);
    }

    /// The send failed; `ambiguous`: it may have been persisted anyway.
    pub fn failed(&self, producer_id: u64, sequence: u64, ambiguous: bool) {
        self.outcomes([(producer_id, sequence, Reported::Failed { ambiguous })]);
    }

    /// Many sends' outcomes, (producer id, sequence, outcome), each recorded as
    /// [`History::acknowledged`] or [`History::failed`] would, locking a
    /// producer's shard once per run of its messages rather than once per message
    /// (a client reports a produce response's worth at a time).
    pub fn outcomes(&self, outcomes: impl IntoIterator<Item = (u64, u64, Reported)>) {
        let mut held: Option<(u64, MutexGuard<'_, Shard>)> = None;
        for (producer_id, sequence, reported) in outcomes {
            let shard = match &mut held {
                Some((id, shard)) if *id == producer_id => shard,
                _ => {
                    // Unlock first: another producer may share the shard.
                    held = None;
                    &mut held.insert((producer_id, self.lock(producer_id))).1
                }
            };
            if let Some(message) = self.message(shard, producer_id, sequence) {
                match reported {
                    Reported::Acknowledged { partition, offset } => {
                        message.partition = partition;
                        message.set_outcome(Outcome::Acknowledged { offset: Some(offset) });
                    }
                    Reported::Failed { ambiguous } => message.set_outcome(Outcome::Failed { ambiguous }),
                }
            }
        }
    }

    /// A consumer of `subscription` read message (`producer_id`, `sequence`) at
    /// `topic`/`partition`/`offset`.
    pub fn received(
        &self,
        subscription: u32,
        topic: u32,
        partition: i32,
        offset: i64,
        producer_id: u64,
        sequence: u64,
    ) {
        self.assert_topic(topic);
        assert!(
            subscription < self.subscriptions,
            "subscription {subscription} of a history of {} subscriptions",
            self.subscriptions
        );
        let mut shard = self.lock(producer_id);
        let has_room = self.message(&mut shard, producer_id, sequence).is_some()
            && self.reserve(&self.reads_recorded, 1, self.bounds.reads_max);
        let read = PartitionRead { subscription, topic, partition };
        match shard.producers.get_mut(&producer_id) {
            Some(log) if has_room => {
                // `message` made room, so the sequence is below the message bound.
                let sequence = sequence as u32;
                log.reads.push(ReadRecord { offset, sequence, subscription, topic, partition });
            }
            _ => {
                let progress = shard.unrecorded_read_progress.entry(read).or_insert(offset);
                *progress = (*progress).max(offset);
            }
        }
    }

    /// A consumer read, at `topic`/`partition`/`offset`, a copy of message
    /// (`producer_id`, `sequence`) that a transaction meant to abort wrote: the read
    /// a read_committed consumer must never make. Counted apart from the message's
    /// reads, which stay what the committed copies show.
    pub fn aborted_read(&self, topic: u32, partition: i32, offset: i64, producer_id: u64, sequence: u64) {
        self.assert_topic(topic);
        let mut aborted = self.aborted_reads.lock().unwrap_or_else(PoisonError::into_inner);
        aborted.0 += 1;
        if aborted.1.len() < classify::EVIDENCE_IDS_MAX {
            let name = &self.topics[topic as usize];
            aborted.1.push(format!("p{producer_id}:{sequence} @ {name}/{partition}:{offset}"));
        }
    }

    /// Classifies every message and judges the run against `guarantee`. Call it
    /// after the final drain; `drain_complete`: every subscription caught up with
    /// the log end.
    pub fn check(&self, guarantee: Guarantee, drain_complete: bool) -> Checked {
        let mut guards: Vec<MutexGuard<'_, Shard>> = (0..SHARDS).map(|index| self.lock_shard(index)).collect();
        let mut shards: Vec<&mut Shard> = guards.iter_mut().map(|guard| &mut **guard).collect();
        let mut classification = classify::classify(&mut shards, &self.topics, self.subscriptions);
        {
            let aborted = self.aborted_reads.lock().unwrap_or_else(PoisonError::into_inner);
            classification.counts.aborted_read = aborted.0;
            classification.aborted_evidence = aborted.1.clone();
        }
        let context = verdict::Context {
            drain_complete,
            subscriptions: self.subscriptions,
            overflow: self.overflowed.load(Ordering::Relaxed).then_some(self.bounds),
        };
        let verdict::Judged { verdict, brief } = verdict::verdict(guarantee, &classification, &context);
        Checked { result: CheckerResult { guarantee, counts: classification.counts, verdict }, brief }
    }

    fn assert_topic(&self, topic: u32) {
        assert!((topic as usize) < self.topics.len(), "topic {topic} of a history of {} topics", self.topics.len());
    }

    fn lock(&self, producer_id: u64) -> MutexGuard<'_, Shard> {
        // Fibonacci hashing spreads dense producer ids (0, 1, 2, …) over the shards.
        let mixed = producer_id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.lock_shard((mixed >> 32) as usize % SHARDS)
    }

    fn lock_shard(&self, index: usize) -> MutexGuard<'_, Shard> {
        // Every change under the lock is a single store or push, so a thread that
        // panicked while holding it left the shard consistent: keep using it.
        self.shards[index].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The record of message (`producer_id`, `sequence`), created (with any gap
    /// below it) if the bound allows; `None` once the history is full.
    fn message<'s>(&self, shard: &'s mut Shard, producer_id: u64, sequence: u64) -> Option<&'s mut MessageRecord> {
        let log = shard.producers.entry(producer_id).or_default();
        let Some(index) = usize::try_from(sequence).ok().filter(|&index| (index as u64) < self.bounds.messages_max)
        else {
            self.overflowed.store(true, Ordering::Relaxed);
            return None;
        };
        if index >= log.messages.len() {
            let slots = (index + 1 - log.messages.len()) as u64;
            if !self.reserve(&self.messages_recorded, slots, self.bounds.messages_max) {
                return None;
            }
            log.messages.grow(index + 1, MessageRecord::NOT_SENT);
        }
        log.messages.get_mut(index)
    }

    /// Takes `amount` from the budget `counter` counts against `max`, or marks the
    /// history overflowed. A failed reservation is not given back, so once a
    /// budget is exhausted it stays so.
    fn reserve(&self, counter: &AtomicU64, amount: u64, max: u64) -> bool {
        let before = counter.fetch_add(amount, Ordering::Relaxed);
        if before.saturating_add(amount) > max {
            self.overflowed.store(true, Ordering::Relaxed);
            return false;
        }
        true
    }
}
