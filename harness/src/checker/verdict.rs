//! The verdict: whether the classified history kept its guarantee's promise.
//!
//! Fail when a forbidden category is non-zero (every guarantee forbids two messages
//! at one offset); otherwise Unknown when the checker cannot decide (the history
//! overflowed, the drain did not finish with acknowledged messages unseen, reads of
//! messages never sent, no subscription); otherwise Pass. An overflowed history is
//! Unknown whatever it shows, as its counts cover only part of the run. Reasons are
//! the sentences that decided the status, then notes that did not; the brief says
//! what decided it in a few words, for the closing line of `corelog run`.

use corelog_reports::model::{Evidence, Guarantee, Verdict, VerdictStatus};

use super::classify::{Category, Classification};
use super::Bounds;

/// What the verdict needs to know besides the counts.
pub(super) struct Context {
    /// Every subscription caught up with the log end before the check.
    pub drain_complete: bool,
    pub subscriptions: u32,
    /// The bounds the history exceeded, if it did.
    pub overflow: Option<Bounds>,
}

/// What a guarantee forbids, besides two messages at one offset.
struct Promise {
    text: &'static str,
    no_loss: bool,
    no_duplicate: bool,
    no_written_twice: bool,
    ordered: bool,
    no_aborted_read: bool,
}

impl Promise {
    /// Whether the promise forbids messages of `category`; unseen ones count as lost
    /// once the drain completed.
    fn forbids(&self, category: Category, drain_complete: bool) -> bool {
        match category {
            Category::Lost => self.no_loss,
            Category::Unseen => self.no_loss && drain_complete,
            Category::Duplicate => self.no_duplicate,
            Category::WrittenTwice => self.no_written_twice,
            Category::Reordered => self.ordered,
            Category::InconsistentOffsets => true,
            // A note and a reason to be undecided, never a violation.
            Category::FailedButRead | Category::ReadUnsent => false,
        }
    }
}

fn promise(guarantee: Guarantee) -> Promise {
    match guarantee {
        Guarantee::AtMostOnce => Promise {
            text: "no message read twice by a subscription or written twice; loss allowed; \
                   never two messages at one offset",
            no_loss: false,
            no_duplicate: true,
            no_written_twice: true,
            ordered: false,
            no_aborted_read: false,
        },
        Guarantee::AtLeastOnce => Promise {
            text: "no acknowledged message lost; duplicates and reordering allowed; \
                   never two messages at one offset",
            no_loss: true,
            no_duplicate: false,
            no_written_twice: false,
            ordered: false,
            no_aborted_read: false,
        },
        Guarantee::Idempotent => Promise {
            text: "no acknowledged message lost, none written twice by a producer retry, each \
                   producer's order kept in every partition; consumer redelivery allowed; \
                   never two messages at one offset",
            no_loss: true,
            no_duplicate: false,
            no_written_twice: true,
            ordered: true,
            no_aborted_read: false,
        },
        Guarantee::ExactlyOnce => Promise {
            text: "no acknowledged message lost, none read twice or written twice, each \
                   producer's order kept in every partition, no aborted read; \
                   never two messages at one offset",
            no_loss: true,
            no_duplicate: true,
            no_written_twice: true,
            ordered: true,
            no_aborted_read: true,
        },
    }
}

/// One sentence of the verdict, the same in a few words, and the category whose
/// ids back it.
struct Finding {
    reason: String,
    brief: String,
    category: Option<Category>,
}

impl Finding {
    fn of(category: Category, reason: String, brief: String) -> Finding {
        Finding { reason, brief, category: Some(category) }
    }
}

/// A verdict and what decided it in a few words ("lost 6000 acknowledged"; empty
/// for a pass).
pub(super) struct Judged {
    pub verdict: Verdict,
    pub brief: String,
}

pub(super) fn verdict(guarantee: Guarantee, classification: &Classification, context: &Context) -> Judged {
    let promise = promise(guarantee);
    if let Some(bounds) = context.overflow {
        let verdict = Verdict {
            status: VerdictStatus::Unknown,
            promise: promise.text.to_string(),
            reasons: vec![format!(
                "The history exceeded {} messages (or {} reads): recording stopped there, so the \
                 counts cover only part of the run and the checker cannot decide.",
                bounds.messages_max, bounds.reads_max
            )],
            evidence: Vec::new(),
        };
        return Judged { verdict, brief: "the history overflowed".to_string() };
    }
    let violations = violations(&promise, classification, context.drain_complete);
    let undecided = undecided(&promise, classification, context);
    let (status, deciding) = if !violations.is_empty() {
        (VerdictStatus::Fail, violations)
    } else if !undecided.is_empty() {
        (VerdictStatus::Unknown, undecided)
    } else {
        (VerdictStatus::Pass, Vec::new())
    };
    let brief = deciding.iter().map(|finding| finding.brief.as_str()).collect::<Vec<_>>().join(", ");
    let findings: Vec<Finding> = deciding.into_iter().chain(notes(classification)).collect();
    let verdict = Verdict {
        status,
        promise: promise.text.to_string(),
        reasons: findings.iter().map(|finding| finding.reason.clone()).collect(),
        evidence: findings
            .iter()
            .filter_map(|finding| evidence(classification, finding.category?))
            .chain(aborted_evidence(&promise, classification, status))
            .collect(),
    };
    Judged { verdict, brief }
}

/// The broken promises, in display order.
fn violations(promise: &Promise, classification: &Classification, drain_complete: bool) -> Vec<Finding> {
    let mut found: Vec<Finding> = VIOLATIONS
        .iter()
        .filter(|violation| {
            promise.forbids(violation.category, drain_complete) && classification.count(violation.category) > 0
        })
        .map(|violation| {
            let n = classification.count(violation.category);
            Finding::of(violation.category, (violation.reason)(n), (violation.brief)(n))
        })
        .collect();
    let aborted = classification.counts.aborted_read;
    if promise.no_aborted_read && aborted > 0 {
        let reason = format!("{aborted} message{} of aborted transactions {} read.", s(aborted), were(aborted));
        found.push(Finding { reason, brief: format!("{aborted} aborted read"), category: None });
    }
    found
}

/// A category a promise can forbid, and how the verdict words `n` messages in it:
/// a sentence and a few words.
struct Violation {
    category: Category,
    reason: fn(u64) -> String,
    brief: fn(u64) -> String,
}

/// The categories a promise can forbid, in display order ([`Promise::forbids`] says
/// which one does).
const VIOLATIONS: [Violation; 6] = [
    Violation {
        category: Category::Lost,
        reason: |n| {
            format!(
                "{n} acknowledged message{} {} lost: never read by a subscription that read later \
                 offsets of the same partition (counted once per subscription).",
                s(n),
                were(n)
            )
        },
        brief: |n| format!("lost {n} acknowledged"),
    },
    Violation {
        category: Category::Unseen,
        reason: |n| {
            format!(
                "{n} acknowledged message{} {} never read although the drain completed, so \
                 counted as lost (counted once per subscription).",
                s(n),
                were(n)
            )
        },
        brief: |n| format!("{n} acknowledged never read"),
    },
    Violation {
        category: Category::Duplicate,
        reason: |n| {
            format!(
                "{n} message{} {} read more than once by one subscription (counted once per subscription).",
                s(n),
                were(n)
            )
        },
        brief: |n| format!("{n} read twice"),
    },
    Violation {
        category: Category::WrittenTwice,
        reason: |n| {
            format!(
                "{n} message{} {} stored at two or more offsets: written again by a producer retry \
                 (or, under exactly-once, by the processing stage).",
                s(n),
                were(n)
            )
        },
        brief: |n| format!("{n} written twice"),
    },
    Violation {
        category: Category::Reordered,
        reason: |n| {
            format!(
                "{n} message{} {} stored after a higher sequence number of the same producer in the same partition.",
                s(n),
                were(n)
            )
        },
        brief: |n| format!("{n} reordered"),
    },
    Violation {
        category: Category::InconsistentOffsets,
        reason: |n| {
            format!(
                "{n} message{} {} read at an offset where a different message was read too: the \
                 broker stored two messages at one offset.",
                s(n),
                were(n)
            )
        },
        brief: |n| format!("{n} at an offset shared with another message"),
    },
];

/// Why the checker cannot decide, if nothing failed.
fn undecided(promise: &Promise, classification: &Classification, context: &Context) -> Vec<Finding> {
    let mut found = Vec::new();
    let unseen = classification.counts.unseen;
    if promise.no_loss && !context.drain_complete && unseen > 0 {
        found.push(Finding::of(
            Category::Unseen,
            format!(
                "The drain did not finish: {unseen} acknowledged message{} {} unseen (counted once \
                 per subscription), so whether they were lost cannot be decided.",
                s(unseen),
                were(unseen)
            ),
            format!("the drain did not finish, {unseen} acknowledged unseen"),
        ));
    }
    let unsent = classification.read_unsent;
    if unsent > 0 {
        found.push(Finding::of(
            Category::ReadUnsent,
            format!(
                "{unsent} message{} {} read with no send recorded (a send the harness missed, or \
                 data in the topics before the run), so the history is incomplete.",
                s(unsent),
                were(unsent)
            ),
            format!("{unsent} read but never sent"),
        ));
    }
    if context.subscriptions == 0 {
        let reason = "No subscription read the topics, so delivery could not be checked.".to_string();
        found.push(Finding { reason, brief: "no subscription".to_string(), category: None });
    }
    found
}

/// What is worth saying whatever the status.
fn notes(classification: &Classification) -> Vec<Finding> {
    let failed = classification.failed_but_read;
    if failed == 0 {
        return Vec::new();
    }
    vec![Finding::of(
        Category::FailedButRead,
        format!(
            "Note: {failed} send{} reported as definitely failed {} read anyway (persisted despite \
             the error); this decides no guarantee.",
            s(failed),
            were(failed)
        ),
        format!("{failed} failed but read"),
    )]
}

/// The aborted reads' example ids, when they decided a failure.
fn aborted_evidence(promise: &Promise, classification: &Classification, status: VerdictStatus) -> Option<Evidence> {
    let ids = &classification.aborted_evidence;
    (promise.no_aborted_read && status == VerdictStatus::Fail && !ids.is_empty())
        .then(|| Evidence { category: "aborted read".to_string(), message_ids: ids.clone() })
}

fn evidence(classification: &Classification, category: Category) -> Option<Evidence> {
    let ids = classification.evidence(category);
    (!ids.is_empty()).then(|| Evidence { category: category.name().to_string(), message_ids: ids.to_vec() })
}

fn s(count: u64) -> &'static str {
    if count == 1 {
        ""
    } else {
        "s"
    }
}

fn were(count: u64) -> &'static str {
    if count == 1 {
        "was"
    } else {
        "were"
    }
}
