//! Classification: from the recorded history to counts in Jepsen's categories, with
//! example message ids to start an investigation from.
//!
//! Two passes. Per message (producers in id order, so the evidence is
//! deterministic): its outcome, which subscriptions read it how often, at which
//! positions it is stored. Per partition, over the union of every subscription's
//! reads (one entry per distinct stored copy of a message): reordering and two
//! messages at one offset.

use std::collections::{BTreeMap, HashMap, HashSet};

use corelog_reports::model::CheckerCounts;

use super::{MessageRecord, Outcome, PartitionRead, ProducerLog, ReadRecord, Shard};

/// Example message ids kept per category.
pub(super) const EVIDENCE_IDS_MAX: usize = 10;

/// What can be wrong with a message. The first six are [`CheckerCounts`] fields;
/// the last two are the checker's own notes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Category {
    /// Acknowledged at offset o of a partition and never read by subscription s,
    /// although s read some offset > o of that partition. Acknowledged without an
    /// offset (acks=0): although s read a later sequence of the same producer in
    /// that partition. Counted per (subscription, message).
    Lost,
    /// Acknowledged and never read by s, and s read nothing beyond it in that
    /// partition: maybe still in flight when the drain stopped. Counted per
    /// (subscription, message).
    Unseen,
    /// Read more than once by one subscription, whatever the cause (consumer
    /// redelivery after a crash or rebalance, or a retry that wrote it twice).
    /// Counted once per (subscription, message).
    Duplicate,
    /// Read at two or more distinct (topic, partition, offset) positions by any
    /// subscriptions, or acknowledged at one position and read at another.
    WrittenTwice,
    /// Stored in a partition after a higher sequence number of the same producer
    /// (Jepsen's nonmonotonic send), in the partition as the union of all reads
    /// shows it. Only a message's first (lowest-offset) copy in a partition is
    /// ordered: a retry's later copy is written twice, not also reordered.
    Reordered,
    /// Read at a (topic, partition, offset) at which a different message was read
    /// too: two messages at one offset, a broker bug. Every message involved counts.
    InconsistentOffsets,
    /// Reported as definitely failed (not ambiguous), and read anyway: the client
    /// said it was not written, and it was. A note, not a violation: guarantees
    /// are about acknowledged messages, and an unacknowledged one delivered once is
    /// neither lost nor duplicated (an application that retried it would duplicate
    /// it, though).
    FailedButRead,
    /// Read, but no send of it was recorded: the harness did not record the send,
    /// or the topic held data from elsewhere. The checker cannot decide then.
    ReadUnsent,
}

impl Category {
    /// The name evidence carries: the display name of the [`CheckerCounts`] field.
    pub(super) fn name(self) -> &'static str {
        match self {
            Category::Lost => "lost",
            Category::Unseen => "unseen",
            Category::Duplicate => "duplicate",
            Category::WrittenTwice => "written twice",
            Category::Reordered => "reordered",
            Category::InconsistentOffsets => "inconsistent offsets",
            Category::FailedButRead => "failed but read",
            Category::ReadUnsent => "read but never sent",
        }
    }
}

/// The counts, and up to [`EVIDENCE_IDS_MAX`] example ids per non-empty category.
///
/// `ambiguous` counts sends that failed ambiguously or never got an outcome (a
/// crashed producer, a client that gave up): possibly persisted, so never lost,
/// read or not, and never failures. `aborted_read` (and its evidence) is filled
/// in by `History::check` from the reads of copies marked aborted.
#[derive(Debug, Default)]
pub(super) struct Classification {
    pub counts: CheckerCounts,
    pub failed_but_read: u64,
    pub read_unsent: u64,
    /// Example ids of aborted reads.
    pub aborted_evidence: Vec<String>,
    evidence: BTreeMap<Category, Vec<String>>,
}

impl Classification {
    /// The example ids of `category`, `p<producer>:<sequence> @ <topic>/<partition>:<offset>`.
    pub(super) fn evidence(&self, category: Category) -> &[String] {
        self.evidence.get(&category).map_or(&[], Vec::as_slice)
    }

    pub(super) fn count(&self, category: Category) -> u64 {
        match category {
            Category::Lost => self.counts.lost,
            Category::Unseen => self.counts.unseen,
            Category::Duplicate => self.counts.duplicate,
            Category::WrittenTwice => self.counts.written_twice,
            Category::Reordered => self.counts.reordered,
            Category::InconsistentOffsets => self.counts.inconsistent_offsets,
            Category::FailedButRead => self.failed_but_read,
            Category::ReadUnsent => self.read_unsent,
        }
    }

    fn count_mut(&mut self, category: Category) -> &mut u64 {
        match category {
            Category::Lost => &mut self.counts.lost,
            Category::Unseen => &mut self.counts.unseen,
            Category::Duplicate => &mut self.counts.duplicate,
            Category::WrittenTwice => &mut self.counts.written_twice,
            Category::Reordered => &mut self.counts.reordered,
            Category::InconsistentOffsets => &mut self.counts.inconsistent_offsets,
            Category::FailedButRead => &mut self.failed_but_read,
            Category::ReadUnsent => &mut self.read_unsent,
        }
    }

    /// Counts `times` findings of `category` for one message, and keeps its id
    /// (built only if there is room) as evidence.
    fn found(&mut self, category: Category, times: u64, id: impl FnOnce() -> String) {
        if times == 0 {
            return;
        }
        *self.count_mut(category) += times;
        let ids = self.evidence.entry(category).or_default();
        if ids.len() < EVIDENCE_IDS_MAX {
            ids.push(id());
        }
    }
}

/// Where a copy of a message is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Position {
    topic: u32,
    partition: i32,
    offset: i64,
}

impl Position {
    fn of_read(read: &ReadRecord) -> Position {
        Position { topic: read.topic, partition: read.partition, offset: read.offset }
    }

    fn same_partition(&self, other: &Position) -> bool {
        (self.topic, self.partition) == (other.topic, other.partition)
    }
}

/// One distinct stored copy of a message, for the per-partition pass. 32 bytes.
#[derive(Debug, Clone, Copy)]
struct StoredCopy {
    position: Position,
    producer_id: u64,
    sequence: u32,
    /// The message's lowest-offset copy in this partition.
    first_copy: bool,
}

/// One message with its reads (sorted by subscription, then position).
struct Message<'r> {
    producer_id: u64,
    sequence: u32,
    record: MessageRecord,
    reads: &'r [ReadRecord],
}

/// Classifies everything recorded in `shards`. Sorts each producer's reads in
/// place (their order carries no meaning), so it may run again.
pub(super) fn classify(shards: &mut [&mut Shard], topics: &[String], subscriptions: u32) -> Classification {
    let mut progress: HashMap<PartitionRead, i64> = HashMap::new();
    for shard in shards.iter() {
        for (&read, &offset) in &shard.unrecorded_read_progress {
            note_progress(&mut progress, read, offset);
        }
    }
    let mut producers: Vec<(u64, &mut ProducerLog)> =
        shards.iter_mut().flat_map(|shard| shard.producers.iter_mut().map(|(&id, log)| (id, log))).collect();
    producers.sort_unstable_by_key(|&(id, _)| id);
    for (_, log) in producers.iter_mut() {
        log.reads.sort_unstable_by_key(|r| (r.sequence, r.subscription, r.topic, r.partition, r.offset));
        for read in &log.reads {
            note_progress(&mut progress, PartitionRead::of(read), read.offset);
        }
    }
    let mut classifier = Classifier {
        topics,
        subscriptions,
        progress,
        result: Classification::default(),
        copies: Vec::new(),
        positions: Vec::new(),
    };
    for (producer_id, log) in &producers {
        classifier.producer(*producer_id, log);
    }
    classifier.partitions();
    classifier.result
}

impl PartitionRead {
    fn of(read: &ReadRecord) -> PartitionRead {
        PartitionRead { subscription: read.subscription, topic: read.topic, partition: read.partition }
    }
}

fn note_progress(progress: &mut HashMap<PartitionRead, i64>, read: PartitionRead, offset: i64) {
    let highest = progress.entry(read).or_insert(offset);
    *highest = (*highest).max(offset);
}

/// `p<producer>:<sequence> @ <topic>/<partition>:<offset>`, `?` for an offset the
/// client never learnt.
fn describe(
    topics: &[String],
    producer_id: u64,
    sequence: u32,
    topic: u32,
    partition: i32,
    offset: Option<i64>,
) -> String {
    let topic = topics.get(topic as usize).map_or("?", String::as_str);
    match offset {
        Some(offset) => format!("p{producer_id}:{sequence} @ {topic}/{partition}:{offset}"),
        None => format!("p{producer_id}:{sequence} @ {topic}/{partition}:?"),
    }
}

fn describe_at(topics: &[String], producer_id: u64, sequence: u32, at: Position) -> String {
    describe(topics, producer_id, sequence, at.topic, at.partition, Some(at.offset))
}

struct Classifier<'a> {
    topics: &'a [String],
    subscriptions: u32,
    /// The highest offset each subscription read of each partition.
    progress: HashMap<PartitionRead, i64>,
    result: Classification,
    /// Every distinct stored copy of every message read.
    copies: Vec<StoredCopy>,
    /// Scratch: one message's distinct read positions.
    positions: Vec<Position>,
}

impl Classifier<'_> {
    fn producer(&mut self, producer_id: u64, log: &ProducerLog) {
        // Only acks=0 sends lack an offset; for them, the producer's own later
        // sequences read tell loss from in-flight.
        let without_offset = |m: &MessageRecord| m.outcome() == Outcome::Acknowledged { offset: None };
        let later_reads = log.messages.iter().any(without_offset).then(|| highest_sequences_read(&log.reads));
        let mut reads = log.reads.as_slice();
        for (index, &record) in log.messages.iter().enumerate() {
            // The bound keeps every sequence within 32 bits.
            let sequence = index as u32;
            let count = reads.iter().take_while(|read| read.sequence == sequence).count();
            let (mine, rest) = reads.split_at(count);
            reads = rest;
            self.message(&Message { producer_id, sequence, record, reads: mine }, later_reads.as_ref());
        }
        assert!(reads.is_empty(), "producer {producer_id}: a read of a sequence with no record");
    }

    fn message(&mut self, message: &Message<'_>, later_reads: Option<&HashMap<PartitionRead, u32>>) {
        let outcome = message.record.outcome();
        if outcome == Outcome::NotSent && message.reads.is_empty() {
            return; // A gap below a later sequence: nothing happened to it.
        }
        self.outcome(message, outcome);
        self.subscriptions_reading(message);
        self.positions(message, outcome);
        if let Outcome::Acknowledged { offset } = outcome {
            self.unread(message, offset, later_reads);
        }
    }

    /// attempted, acknowledged, ambiguous, and the two notes.
    fn outcome(&mut self, message: &Message<'_>, outcome: Outcome) {
        let counts = &mut self.result.counts;
        let first_read = message.reads.first().map(Position::of_read);
        let note = match outcome {
            Outcome::NotSent => Some(Category::ReadUnsent),
            Outcome::Pending | Outcome::Failed { ambiguous: true } => {
                counts.ambiguous += 1;
                None
            }
            Outcome::Acknowledged { .. } => {
                counts.acknowledged += 1;
                None
            }
            Outcome::Failed { ambiguous: false } => first_read.is_some().then_some(Category::FailedButRead),
        };
        if outcome != Outcome::NotSent {
            counts.attempted += 1;
        }
        if let (Some(category), Some(at)) = (note, first_read) {
            let topics = self.topics;
            self.result.found(category, 1, || describe_at(topics, message.producer_id, message.sequence, at));
        }
    }

    /// consumed and duplicate, per subscription.
    fn subscriptions_reading(&mut self, message: &Message<'_>) {
        let mut duplicated = 0;
        let mut second_read = None;
        for by_one in message.reads.chunk_by(|a, b| a.subscription == b.subscription) {
            self.result.counts.consumed += 1;
            if let [_, second, ..] = by_one {
                duplicated += 1;
                second_read.get_or_insert(Position::of_read(second));
            }
        }
        if let Some(at) = second_read {
            let topics = self.topics;
            self.result.found(Category::Duplicate, duplicated, || {
                describe_at(topics, message.producer_id, message.sequence, at)
            });
        }
    }

    /// written twice, and the message's stored copies for the partition pass.
    fn positions(&mut self, message: &Message<'_>, outcome: Outcome) {
        let mut positions = std::mem::take(&mut self.positions);
        positions.clear();
        positions.extend(message.reads.iter().map(Position::of_read));
        positions.sort_unstable();
        positions.dedup();
        for (index, &position) in positions.iter().enumerate() {
            let first_copy = index == 0 || !positions[index - 1].same_partition(&position);
            self.copies.push(StoredCopy {
                position,
                producer_id: message.producer_id,
                sequence: message.sequence,
                first_copy,
            });
        }
        let acknowledged_at = match outcome {
            Outcome::Acknowledged { offset: Some(offset) } => {
                Some(Position { topic: message.record.topic, partition: message.record.partition, offset })
            }
            _ => None,
        };
        let read_elsewhere = acknowledged_at.is_some_and(|at| positions.iter().any(|&p| p != at));
        if positions.len() > 1 || read_elsewhere {
            // The evidence names the later copy, the one the retry wrote.
            let later_copy = positions.iter().copied().chain(acknowledged_at).max();
            if let Some(at) = later_copy {
                let topics = self.topics;
                self.result.found(Category::WrittenTwice, 1, || {
                    describe_at(topics, message.producer_id, message.sequence, at)
                });
            }
        }
        self.positions = positions;
    }

    /// lost and unseen: for every subscription that never read this acknowledged
    /// message.
    fn unread(
        &mut self,
        message: &Message<'_>,
        offset: Option<i64>,
        later_reads: Option<&HashMap<PartitionRead, u32>>,
    ) {
        let (mut lost, mut unseen) = (0, 0);
        for subscription in 0..self.subscriptions {
            if message.reads.binary_search_by_key(&subscription, |read| read.subscription).is_ok() {
                continue;
            }
            let partition =
                PartitionRead { subscription, topic: message.record.topic, partition: message.record.partition };
            let read_beyond = match offset {
                Some(offset) => self.progress.get(&partition).is_some_and(|&highest| highest > offset),
                None => later_reads
                    .and_then(|later| later.get(&partition))
                    .is_some_and(|&highest| highest > message.sequence),
            };
            if read_beyond {
                lost += 1;
            } else {
                unseen += 1;
            }
        }
        let topics = self.topics;
        let record = message.record;
        let id = || describe(topics, message.producer_id, message.sequence, record.topic, record.partition, offset);
        self.result.found(Category::Lost, lost, id);
        self.result.found(Category::Unseen, unseen, id);
    }

    /// reordered and inconsistent offsets, partition by partition.
    fn partitions(&mut self) {
        let mut copies = std::mem::take(&mut self.copies);
        copies.sort_unstable_by_key(|copy| (copy.position, copy.producer_id, copy.sequence));
        let mut reordered = Vec::new();
        let mut inconsistent = Vec::new();
        let mut highest_sequence: HashMap<u64, u32> = HashMap::new();
        for partition in copies.chunk_by(|a, b| a.position.same_partition(&b.position)) {
            highest_sequence.clear();
            for copy in partition.iter().filter(|copy| copy.first_copy) {
                let highest = highest_sequence.entry(copy.producer_id).or_insert(copy.sequence);
                if copy.sequence < *highest {
                    reordered.push(*copy);
                } else {
                    *highest = copy.sequence;
                }
            }
            for at_offset in partition.chunk_by(|a, b| a.position == b.position) {
                if at_offset.len() > 1 {
                    inconsistent.extend_from_slice(at_offset);
                }
            }
        }
        self.found_once_each(Category::Reordered, &reordered);
        self.found_once_each(Category::InconsistentOffsets, &inconsistent);
    }

    /// Counts each message among `copies` once, its first copy as the evidence.
    fn found_once_each(&mut self, category: Category, copies: &[StoredCopy]) {
        let mut seen = HashSet::new();
        for copy in copies {
            if seen.insert((copy.producer_id, copy.sequence)) {
                let topics = self.topics;
                self.result.found(category, 1, || describe_at(topics, copy.producer_id, copy.sequence, copy.position));
            }
        }
    }
}

/// The highest sequence of one producer each subscription read of each partition.
fn highest_sequences_read(reads: &[ReadRecord]) -> HashMap<PartitionRead, u32> {
    let mut highest = HashMap::new();
    for read in reads {
        let sequence = highest.entry(PartitionRead::of(read)).or_insert(read.sequence);
        *sequence = (*sequence).max(read.sequence);
    }
    highest
}
