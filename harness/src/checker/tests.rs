//! Hand-built histories with known anomalies, and generated clean ones.

use corelog_reports::model::{CheckerResult, Guarantee, VerdictStatus};
use proptest::prelude::*;

use super::History;

use VerdictStatus::{Fail, Pass, Unknown};

const ORDERS: u32 = 0;

/// What `anomalies` returns for a clean history.
const NO_ANOMALIES: [(&str, u64); 0] = [];

fn history(subscriptions: u32) -> History {
    History::new(vec!["orders".into(), "audit".into()], subscriptions, 1_000_000)
}

/// Sends (`producer`, `sequence`) to `orders` and acknowledges it at `partition`/`offset`.
fn acknowledged(history: &History, producer: u64, sequence: u64, partition: i32, offset: i64) {
    history.sent(producer, sequence, ORDERS);
    history.acknowledged(producer, sequence, partition, offset);
}

fn read(history: &History, subscription: u32, partition: i32, offset: i64, producer: u64, sequence: u64) {
    history.received(subscription, ORDERS, partition, offset, producer, sequence);
}

/// Producer 1's sequences 0..n acknowledged at offsets 0..n of partition 0.
fn acknowledged_in_order(history: &History, n: u64) {
    for sequence in 0..n {
        acknowledged(history, 1, sequence, 0, sequence as i64);
    }
}

/// The statuses for at-most-once, at-least-once, idempotent, exactly-once.
fn statuses(history: &History, drain_complete: bool) -> [VerdictStatus; 4] {
    Guarantee::ALL.map(|guarantee| history.check(guarantee, drain_complete).result.verdict.status)
}

fn evidence(result: &CheckerResult, category: &str) -> Vec<String> {
    let found = result.verdict.evidence.iter().find(|evidence| evidence.category == category);
    found.map_or_else(Vec::new, |evidence| evidence.message_ids.clone())
}

fn categories(result: &CheckerResult) -> Vec<&str> {
    result.verdict.evidence.iter().map(|evidence| evidence.category.as_str()).collect()
}

/// The anomaly counts, by display name, that are not zero.
fn anomalies(result: &CheckerResult) -> Vec<(&'static str, u64)> {
    result.counts.anomalies().into_iter().filter(|&(_, count)| count > 0).collect()
}

#[test]
fn a_clean_history_passes_every_guarantee() {
    let history = history(1);
    for sequence in 0..4 {
        acknowledged(&history, 1, sequence, (sequence % 2) as i32, (sequence / 2) as i64);
        acknowledged(&history, 2, sequence, 2, sequence as i64);
    }
    for sequence in 0..4 {
        read(&history, 0, (sequence % 2) as i32, (sequence / 2) as i64, 1, sequence);
        read(&history, 0, 2, sequence as i64, 2, sequence);
    }
    assert_eq!(statuses(&history, true), [Pass; 4]);
    let result = history.check(Guarantee::ExactlyOnce, true).result;
    assert_eq!((result.counts.attempted, result.counts.acknowledged, result.counts.consumed), (8, 8, 8));
    assert_eq!(anomalies(&result), NO_ANOMALIES);
    assert!(result.verdict.reasons.is_empty() && result.verdict.evidence.is_empty());
    assert!(result.verdict.promise.contains("no acknowledged message lost"));
    assert_eq!(history.check(Guarantee::ExactlyOnce, true).brief, "", "a pass has nothing to explain");
}

#[test]
fn lost_needs_a_later_offset_read_and_unseen_has_none() {
    let history = history(1);
    acknowledged_in_order(&history, 4);
    read(&history, 0, 0, 0, 1, 0);
    read(&history, 0, 0, 2, 1, 2); // offset 1 skipped: lost; offset 3 never reached: unseen.
    let result = history.check(Guarantee::AtLeastOnce, false).result;
    assert_eq!(anomalies(&result), [("lost", 1), ("unseen", 1)]);
    assert_eq!(result.verdict.status, Fail);
    assert_eq!(evidence(&result, "lost"), ["p1:1 @ orders/0:1"]);
    assert_eq!(categories(&result), ["lost"], "unseen decides nothing once the verdict failed");
    assert_eq!(result.verdict.reasons.len(), 1);
    assert!(result.verdict.reasons[0].starts_with("1 acknowledged message was lost"), "{:?}", result.verdict.reasons);
    assert_eq!(history.check(Guarantee::AtLeastOnce, false).brief, "lost 1 acknowledged");
    assert_eq!(statuses(&history, false), [Pass, Fail, Fail, Fail], "at-most-once allows loss");
}

#[test]
fn consumer_redelivery_is_a_duplicate_but_not_written_twice() {
    let history = history(1);
    acknowledged_in_order(&history, 3);
    for offset in [0, 1, 0, 1, 2] {
        read(&history, 0, 0, offset, 1, offset as u64);
    }
    let result = history.check(Guarantee::AtMostOnce, true).result;
    assert_eq!(anomalies(&result), [("duplicate", 2)]);
    assert_eq!(evidence(&result, "duplicate"), ["p1:0 @ orders/0:0", "p1:1 @ orders/0:1"]);
    assert_eq!(statuses(&history, true), [Fail, Pass, Pass, Fail]);
}

#[test]
fn a_retry_written_twice_fails_idempotence_but_not_at_least_once() {
    let history = history(1);
    acknowledged_in_order(&history, 3);
    // The broker stored sequence 1 again at offset 3 (its acknowledgement was lost
    // and the producer retried); sequence 2 was acknowledged at 2 and read at 4.
    for (offset, sequence) in [(0, 0), (1, 1), (2, 2), (3, 1)] {
        read(&history, 0, 0, offset, 1, sequence);
    }
    acknowledged(&history, 2, 0, 1, 7);
    read(&history, 0, 1, 8, 2, 0);
    let result = history.check(Guarantee::Idempotent, true).result;
    assert_eq!(anomalies(&result), [("duplicate", 1), ("written twice", 2)], "the second copy is not also reordered");
    assert_eq!(result.verdict.status, Fail);
    assert_eq!(evidence(&result, "written twice"), ["p1:1 @ orders/0:3", "p2:0 @ orders/1:8"]);
    assert_eq!(categories(&result), ["written twice"], "idempotence allows the duplicate read");
    assert_eq!(
        history.check(Guarantee::ExactlyOnce, true).brief,
        "1 read twice, 2 written twice",
        "every broken promise, in display order"
    );
    assert_eq!(statuses(&history, true), [Fail, Pass, Fail, Fail]);
}

#[test]
fn reordering_within_a_partition_fails_idempotence() {
    let history = history(1);
    // Sequence 1's first attempt failed; 2 was stored before its retry.
    acknowledged(&history, 1, 0, 0, 0);
    acknowledged(&history, 1, 2, 0, 1);
    acknowledged(&history, 1, 1, 0, 2);
    // Another producer's messages in between do not matter; nor does order across partitions.
    acknowledged(&history, 2, 0, 0, 3);
    acknowledged(&history, 1, 3, 1, 0);
    for (partition, offset, producer, sequence) in
        [(0, 0, 1, 0), (0, 1, 1, 2), (0, 2, 1, 1), (0, 3, 2, 0), (1, 0, 1, 3)]
    {
        read(&history, 0, partition, offset, producer, sequence);
    }
    let result = history.check(Guarantee::Idempotent, true).result;
    assert_eq!(anomalies(&result), [("reordered", 1)]);
    assert_eq!(evidence(&result, "reordered"), ["p1:1 @ orders/0:2"]);
    assert_eq!(statuses(&history, true), [Pass, Pass, Fail, Fail]);
}

#[test]
fn two_messages_at_one_offset_fail_every_guarantee() {
    let history = history(2);
    acknowledged(&history, 1, 0, 0, 0);
    acknowledged(&history, 2, 0, 0, 0);
    read(&history, 0, 0, 0, 1, 0);
    read(&history, 1, 0, 0, 2, 0);
    read(&history, 1, 0, 1, 1, 0); // Subscription 1 found producer 1's message one offset on.
    read(&history, 0, 0, 1, 2, 0);
    let result = history.check(Guarantee::AtLeastOnce, true).result;
    assert_eq!(result.counts.inconsistent_offsets, 2);
    assert_eq!(evidence(&result, "inconsistent offsets"), ["p1:0 @ orders/0:0", "p2:0 @ orders/0:0"]);
    assert_eq!(statuses(&history, true), [Fail; 4]);
    assert!(result.verdict.reasons.iter().any(|reason| reason.contains("two messages at one offset")));
}

#[test]
fn ambiguous_sends_are_never_lost_read_or_not() {
    let history = history(1);
    acknowledged(&history, 1, 0, 0, 0);
    history.sent(1, 1, ORDERS);
    history.failed(1, 1, true); // Persisted after all: read at offset 1.
    history.sent(1, 2, ORDERS);
    history.failed(1, 2, true); // Not persisted.
    history.sent(1, 3, ORDERS); // Never answered: a crashed producer.
    acknowledged(&history, 1, 4, 0, 2);
    for (offset, sequence) in [(0, 0), (1, 1), (2, 4)] {
        read(&history, 0, 0, offset, 1, sequence);
    }
    let result = history.check(Guarantee::ExactlyOnce, true).result;
    assert_eq!(anomalies(&result), [("ambiguous", 3)]);
    assert_eq!((result.counts.attempted, result.counts.acknowledged, result.counts.consumed), (5, 2, 3));
    assert_eq!(statuses(&history, true), [Pass; 4]);
}

#[test]
fn sends_without_an_outcome_are_ambiguous() {
    let history = history(1);
    history.sent(1, 0, ORDERS);
    history.sent(1, 0, ORDERS); // The client's queue was full: the same send, retried.
    history.sent(1, 1, ORDERS);
    acknowledged(&history, 2, 0, 0, 5);
    read(&history, 0, 0, 5, 2, 0);
    let result = history.check(Guarantee::AtLeastOnce, true).result;
    assert_eq!((result.counts.attempted, result.counts.ambiguous), (3, 2));
    assert_eq!(result.verdict.status, Pass);
}

#[test]
fn a_definitely_failed_send_read_anyway_is_a_note_not_a_failure() {
    let history = history(1);
    acknowledged(&history, 1, 0, 0, 0);
    history.sent(1, 1, ORDERS);
    history.failed(1, 1, false);
    read(&history, 0, 0, 0, 1, 0);
    read(&history, 0, 0, 1, 1, 1);
    let result = history.check(Guarantee::ExactlyOnce, true).result;
    assert_eq!(result.verdict.status, Pass);
    assert_eq!(anomalies(&result), NO_ANOMALIES);
    assert_eq!(result.verdict.reasons.len(), 1);
    assert!(result.verdict.reasons[0].starts_with("Note: 1 send reported as definitely failed was read anyway"));
    assert_eq!(evidence(&result, "failed but read"), ["p1:1 @ orders/0:1"]);
}

#[test]
fn unseen_messages_are_unknown_until_the_drain_completes_then_lost() {
    let history = history(1);
    acknowledged_in_order(&history, 3);
    read(&history, 0, 0, 0, 1, 0);
    let incomplete = history.check(Guarantee::AtLeastOnce, false).result;
    assert_eq!(anomalies(&incomplete), [("unseen", 2)]);
    assert_eq!(incomplete.verdict.status, Unknown);
    assert!(incomplete.verdict.reasons[0].starts_with("The drain did not finish: 2 acknowledged messages were unseen"));
    assert_eq!(history.check(Guarantee::AtLeastOnce, false).brief, "the drain did not finish, 2 acknowledged unseen");
    assert_eq!(evidence(&incomplete, "unseen"), ["p1:1 @ orders/0:1", "p1:2 @ orders/0:2"]);
    assert_eq!(statuses(&history, false), [Pass, Unknown, Unknown, Unknown]);

    let complete = history.check(Guarantee::AtLeastOnce, true).result;
    assert_eq!(complete.verdict.status, Fail);
    assert!(complete.verdict.reasons[0].contains("the drain completed, so counted as lost"));
    assert_eq!(history.check(Guarantee::AtLeastOnce, true).brief, "2 acknowledged never read");
    assert_eq!(statuses(&history, true), [Pass, Fail, Fail, Fail]);

    // A failure elsewhere decides the verdict even while the drain is incomplete.
    read(&history, 0, 0, 0, 1, 0);
    assert_eq!(history.check(Guarantee::ExactlyOnce, false).result.verdict.status, Fail);
}

#[test]
fn subscriptions_are_checked_independently() {
    let history = history(2);
    acknowledged_in_order(&history, 3);
    for offset in 0..3 {
        read(&history, 0, 0, offset, 1, offset as u64);
    }
    read(&history, 1, 0, 0, 1, 0);
    read(&history, 1, 0, 2, 1, 2);
    read(&history, 1, 0, 2, 1, 2); // A redelivery in subscription 1 only.
    let result = history.check(Guarantee::AtLeastOnce, true).result;
    assert_eq!(anomalies(&result), [("lost", 1), ("duplicate", 1)]);
    assert_eq!(result.counts.consumed, 5, "(subscription, message) pairs");
    assert_eq!(evidence(&result, "lost"), ["p1:1 @ orders/0:1"]);

    let unread_by_both = self::history(2);
    acknowledged_in_order(&unread_by_both, 2);
    read(&unread_by_both, 0, 0, 1, 1, 1);
    read(&unread_by_both, 1, 0, 1, 1, 1);
    let result = unread_by_both.check(Guarantee::AtLeastOnce, true).result;
    assert_eq!(anomalies(&result), [("lost", 2)], "once per subscription");
    assert_eq!(evidence(&result, "lost"), ["p1:0 @ orders/0:0"], "evidence names the message once");
}

#[test]
fn evidence_is_capped_at_ten_ids_lowest_first() {
    let history = history(1);
    acknowledged_in_order(&history, 16);
    read(&history, 0, 0, 15, 1, 15);
    let result = history.check(Guarantee::AtLeastOnce, true).result;
    assert_eq!(result.counts.lost, 15);
    let expected: Vec<String> = (0..10).map(|sequence| format!("p1:{sequence} @ orders/0:{sequence}")).collect();
    assert_eq!(evidence(&result, "lost"), expected);
}

#[test]
fn an_overflowing_history_is_unknown() {
    let history = History::new(vec!["orders".into()], 1, 5);
    for sequence in 0..8 {
        acknowledged(&history, 1, sequence, 0, sequence as i64);
        read(&history, 0, 0, sequence as i64, 1, sequence);
    }
    let result = history.check(Guarantee::AtLeastOnce, true).result;
    assert_eq!(result.verdict.status, Unknown);
    assert!(result.verdict.reasons[0].starts_with("The history exceeded 5 messages"), "{:?}", result.verdict.reasons);
    assert_eq!((result.counts.attempted, result.counts.consumed), (5, 5), "the recorded part");
    assert_eq!(anomalies(&result), NO_ANOMALIES, "the recorded part is still classified right");
    assert_eq!(statuses(&history, true), [Unknown; 4]);

    let reads_overflow = History::new(vec!["orders".into()], 1, 5);
    acknowledged(&reads_overflow, 1, 0, 0, 0);
    for _ in 0..11 {
        read(&reads_overflow, 0, 0, 0, 1, 0);
    }
    assert_eq!(reads_overflow.check(Guarantee::AtLeastOnce, true).result.verdict.status, Unknown);
}

#[test]
fn reads_of_messages_never_sent_or_no_subscription_are_unknown() {
    let history = history(1);
    acknowledged(&history, 1, 0, 0, 0);
    read(&history, 0, 0, 0, 1, 0);
    read(&history, 0, 0, 1, 9, 0);
    let result = history.check(Guarantee::AtLeastOnce, true).result;
    assert_eq!(result.verdict.status, Unknown);
    assert_eq!(evidence(&result, "read but never sent"), ["p9:0 @ orders/0:1"]);
    assert_eq!(result.counts.attempted, 1);

    let unread = self::history(0);
    acknowledged(&unread, 1, 0, 0, 0);
    assert_eq!(statuses(&unread, true), [Unknown; 4]);
}

#[test]
fn acknowledgements_without_an_offset_use_the_producers_order() {
    let history = history(1);
    for sequence in 0..3 {
        history.sent(1, sequence, ORDERS);
        history.acknowledged(1, sequence, 0, -1001); // acks=0: librdkafka reports no offset.
    }
    read(&history, 0, 0, 0, 1, 0);
    read(&history, 0, 0, 1, 1, 2);
    history.sent(1, 3, ORDERS);
    history.acknowledged(1, 3, 0, -1);
    let result = history.check(Guarantee::AtMostOnce, true).result;
    assert_eq!(anomalies(&result), [("lost", 1), ("unseen", 1)]);
    assert_eq!(result.verdict.status, Pass);
    assert_eq!(
        history.check(Guarantee::AtLeastOnce, false).result.verdict.evidence[0].message_ids,
        ["p1:1 @ orders/0:?"]
    );
}

#[test]
fn recording_from_many_threads_loses_nothing() {
    let history = history(1);
    std::thread::scope(|scope| {
        for producer in 0..8u64 {
            let history = &history;
            scope.spawn(move || {
                for sequence in 0..1000u64 {
                    let offset = (producer * 1000 + sequence) as i64;
                    acknowledged(history, producer, sequence, 0, offset);
                    read(history, 0, 0, offset, producer, sequence);
                }
            });
        }
    });
    let result = history.check(Guarantee::ExactlyOnce, true).result;
    assert_eq!((result.counts.acknowledged, result.counts.consumed), (8000, 8000));
    assert_eq!(result.verdict.status, Pass);
}

/// A generated run: which producer sends next to which partition.
#[derive(Debug, Clone)]
struct Run {
    producers: u64,
    partitions: i32,
    subscriptions: u32,
    /// (producer, partition) of each send, in the order the broker appended them.
    sends: Vec<(u64, i32)>,
}

/// The partitions' contents: (producer, sequence) by offset.
fn append(run: &Run, history: &History) -> Vec<Vec<(u64, u64)>> {
    let mut partitions = vec![Vec::new(); run.partitions as usize];
    let mut next_sequence = vec![0u64; run.producers as usize];
    for &(producer, partition) in &run.sends {
        let sequence = next_sequence[producer as usize];
        next_sequence[producer as usize] += 1;
        let log: &mut Vec<(u64, u64)> = &mut partitions[partition as usize];
        acknowledged(history, producer, sequence, partition, log.len() as i64);
        log.push((producer, sequence));
    }
    partitions
}

fn runs() -> impl Strategy<Value = Run> {
    (1..5u64, 1..5i32, 1..4u32).prop_flat_map(|(producers, partitions, subscriptions)| {
        prop::collection::vec((0..producers, 0..partitions), 0..120).prop_map(move |sends| Run {
            producers,
            partitions,
            subscriptions,
            sends,
        })
    })
}

proptest! {
    #[test]
    fn clean_histories_pass_and_one_skipped_read_is_one_loss(run in runs(), victim in any::<prop::sample::Index>()) {
        let history = history(run.subscriptions);
        let partitions = append(&run, &history);
        let mut reads = Vec::new();
        for subscription in 0..run.subscriptions {
            for (partition, log) in partitions.iter().enumerate() {
                for (offset, &(producer, sequence)) in log.iter().enumerate() {
                    reads.push((subscription, partition as i32, offset as i64, producer, sequence, offset + 1 < log.len()));
                }
            }
        }
        let skippable: Vec<usize> = (0..reads.len()).filter(|&index| reads[index].5).collect();
        let skipped = (!skippable.is_empty()).then(|| skippable[victim.index(skippable.len())]);

        let clean = self::history(run.subscriptions);
        append(&run, &clean);
        for (index, &(subscription, partition, offset, producer, sequence, _)) in reads.iter().enumerate() {
            read(&clean, subscription, partition, offset, producer, sequence);
            if Some(index) != skipped {
                read(&history, subscription, partition, offset, producer, sequence);
            }
        }
        for guarantee in Guarantee::ALL {
            let result = clean.check(guarantee, true).result;
            prop_assert_eq!(result.verdict.status, Pass);
            prop_assert_eq!(anomalies(&result), NO_ANOMALIES);
            prop_assert_eq!(result.counts.consumed, run.sends.len() as u64 * u64::from(run.subscriptions));
        }
        if let Some(index) = skipped {
            let (_, partition, offset, producer, sequence, _) = reads[index];
            let result = history.check(Guarantee::AtLeastOnce, true).result;
            prop_assert_eq!(anomalies(&result), [("lost", 1)]);
            prop_assert_eq!(evidence(&result, "lost"), [format!("p{producer}:{sequence} @ orders/{partition}:{offset}")]);
            prop_assert_eq!(result.verdict.status, Fail);
        }
    }
}

#[test]
fn an_aborted_read_fails_exactly_once_alone_and_names_the_copy() {
    let history = history(1);
    // In a pipeline the input's offsets say nothing about the output's: the
    // sends are recorded without one.
    for sequence in 0..3 {
        acknowledged(&history, 1, sequence, 0, -1);
        read(&history, 0, 0, sequence as i64 + 10, 1, sequence);
    }
    assert_eq!(statuses(&history, true), [Pass; 4], "committed copies only: nothing to say");

    history.aborted_read(ORDERS, 0, 4, 1, 2);
    assert_eq!(statuses(&history, true), [Pass, Pass, Pass, Fail], "only exactly-once forbids aborted reads");
    let checked = history.check(Guarantee::ExactlyOnce, true);
    assert_eq!(checked.brief, "1 aborted read");
    assert_eq!(checked.result.counts.aborted_read, 1);
    assert_eq!(evidence(&checked.result, "aborted read"), ["p1:2 @ orders/0:4"]);
    assert!(checked.result.verdict.reasons[0].contains("1 message of aborted transactions was read"));
    let lenient = history.check(Guarantee::AtLeastOnce, true).result;
    assert_eq!(lenient.counts.aborted_read, 1, "counted for every guarantee");
    assert!(evidence(&lenient, "aborted read").is_empty(), "evidence only where it decided the verdict");
}
