use proptest::prelude::*;

use super::*;

const LEADER: NodeId = 0;
const LAG_MAX_MS: u64 = 1_000;

fn state(isr: &[NodeId], partition_epoch: i32) -> PartitionImage {
    PartitionImage {
        replicas: vec![0, 1, 2],
        isr: isr.to_vec(),
        leader: LEADER,
        leader_epoch: 3,
        partition_epoch,
        adding: Vec::new(),
        removing: Vec::new(),
    }
}

#[test]
fn the_high_watermark_is_the_lowest_log_end_in_the_isr_and_waits_for_a_follower_that_never_fetched() {
    let mut leader = LeaderPartition::new(LEADER, &state(&[0, 1, 2], 0), 10, 10, 0);
    assert_eq!(leader.appended(15), 10, "followers 1 and 2 have not fetched");
    assert_eq!(leader.fetched(1, 15, 5), None);
    assert_eq!(leader.high_watermark(), 10, "follower 2 still unknown");
    assert_eq!(leader.fetched(2, 12, 6), None);
    assert_eq!(leader.high_watermark(), 12);
    assert_eq!(leader.fetched(2, 15, 7), None);
    assert_eq!(leader.high_watermark(), 15);
    assert_eq!(leader.acks_all_outcome(14, 2), Some(Ok(())));
    assert_eq!(leader.acks_all_outcome(15, 2), None, "offset 15 is not replicated yet");
}

#[test]
fn a_lagging_follower_leaves_the_isr_and_the_high_watermark_moves_only_once_that_is_committed() {
    let mut leader = LeaderPartition::new(LEADER, &state(&[0, 1, 2], 0), 0, 0, 0);
    leader.appended(5);
    leader.fetched(1, 5, 100);
    leader.fetched(2, 0, 100);
    assert_eq!(leader.high_watermark(), 0);
    assert_eq!(leader.lagging(900, LAG_MAX_MS), None, "within replica.lag.time.max.ms");
    leader.fetched(1, 5, 1_500);
    assert_eq!(leader.lagging(1_500, LAG_MAX_MS), Some(vec![0, 1]), "follower 2 lags");
    assert_eq!(leader.high_watermark(), 0, "the shrink is not committed yet");
    assert_eq!(leader.lagging(1_600, LAG_MAX_MS), None, "one proposal at a time");
    leader.update(&state(&[0, 1], 1));
    assert_eq!(leader.high_watermark(), 5);
    assert_eq!(leader.isr(), &[0, 1]);
}

#[test]
fn a_reassignment_adds_a_follower_that_joins_once_caught_up_and_drops_a_removed_one() {
    let mut leader = LeaderPartition::new(LEADER, &state(&[0, 1, 2], 0), 10, 10, 0);
    leader.fetched(1, 10, 1);
    leader.fetched(2, 10, 1);
    // Broker 3 is added (out of sync), broker 2 is leaving.
    let moving =
        PartitionImage { replicas: vec![0, 1, 3, 2], adding: vec![3], removing: vec![2], ..state(&[0, 1, 2], 1) };
    leader.update(&moving);
    assert!(leader.follower(3).is_some(), "the added replica is followed");
    assert_eq!(leader.high_watermark(), 10, "an out-of-sync replica does not hold the high watermark");
    assert_eq!(leader.fetched(3, 4, 2), None, "not caught up");
    assert_eq!(leader.fetched(3, 10, 3), Some(vec![0, 1, 3, 2]), "caught up: it joins the ISR (in replica order)");
    leader.update(&PartitionImage { isr: vec![0, 1, 3, 2], partition_epoch: 2, ..moving });
    // The reassignment finishes: 2 is gone.
    let done = PartitionImage { replicas: vec![0, 1, 3], ..state(&[0, 1, 3], 3) };
    leader.update(&done);
    assert!(leader.follower(2).is_none(), "the removed replica is no longer followed");
    assert_eq!(leader.fetched(2, 10, 4), None);
    leader.appended(12);
    leader.fetched(1, 12, 5);
    leader.fetched(3, 12, 5);
    assert_eq!(leader.high_watermark(), 12, "the ISR without 2 holds it");
}

#[test]
fn a_follower_rejoins_once_it_reaches_the_high_watermark_and_the_epoch_start() {
    let mut leader = LeaderPartition::new(LEADER, &state(&[0, 1], 1), 20, 20, 0);
    leader.appended(30);
    assert_eq!(leader.fetched(2, 10, 10), None, "below the epoch start");
    leader.fetched(1, 30, 10);
    assert_eq!(leader.high_watermark(), 30);
    assert_eq!(leader.fetched(2, 25, 11), None, "below the high watermark");
    assert_eq!(leader.fetched(2, 30, 12), Some(vec![0, 1, 2]));
    leader.appended(40);
    leader.fetched(1, 40, 13);
    assert_eq!(leader.high_watermark(), 30, "the proposed member counts already");
    leader.proposal_failed();
    assert_eq!(leader.high_watermark(), 40, "refused: back to the committed ISR");
}

#[test]
fn a_fenced_follower_is_not_proposed_for_the_isr_until_it_is_live_again() {
    let mut leader = LeaderPartition::new(LEADER, &state(&[0, 1], 1), 20, 20, 0);
    leader.set_ineligible([2]);
    leader.fetched(1, 20, 10);
    assert_eq!(leader.fetched(2, 20, 11), None, "caught up but fenced: the controller would refuse it");
    assert_eq!(leader.fetched(2, 20, 12), None, "nor at its next fetch");
    leader.set_ineligible([]);
    assert_eq!(leader.fetched(2, 20, 13), Some(vec![0, 1, 2]), "unfenced: it joins");
}

#[test]
fn acks_all_is_refused_below_min_insync_and_fails_after_append_when_the_isr_shrinks_under_it() {
    let mut leader = LeaderPartition::new(LEADER, &state(&[0, 1, 2], 0), 0, 0, 0);
    leader.fetched(1, 0, 0);
    leader.fetched(2, 0, 0);
    assert_eq!(leader.check_insync(2), Ok(()));
    leader.appended(1);
    assert_eq!(leader.acks_all_outcome(0, 2), None);
    leader.update(&state(&[0], 1));
    assert_eq!(leader.check_insync(2), Err(InsyncError::NotEnoughReplicas { isr: 1, min: 2 }));
    assert_eq!(leader.acks_all_outcome(0, 2), Some(Err(InsyncError::NotEnoughReplicasAfterAppend { isr: 1, min: 2 })));
}

/// A follower in the model: what it really holds.
#[derive(Debug, Clone, Copy)]
struct ModelFollower {
    log_end: i64,
    /// Fetches stop reaching the leader (a paused or cut-off follower).
    stalled: bool,
}

#[derive(Debug, Clone)]
enum Step {
    Append(i64),
    /// Follower 1 or 2 fetches: the leader sees its log end, then it takes up to
    /// `take` records of what the leader has.
    Fetch {
        follower: NodeId,
        take: i64,
    },
    Pass(u64),
    Stall {
        follower: NodeId,
        stalled: bool,
    },
    /// The controller answers the pending proposal: commit or refuse.
    Controller {
        commit: bool,
    },
    /// An `acks=all` producer appends one record and waits.
    Produce,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (1i64..5).prop_map(Step::Append),
        4 => (1..3, 0i64..8).prop_map(|(follower, take)| Step::Fetch { follower, take }),
        2 => (1u64..800).prop_map(Step::Pass),
        1 => (1..3, any::<bool>()).prop_map(|(follower, stalled)| Step::Stall { follower, stalled }),
        2 => any::<bool>().prop_map(|commit| Step::Controller { commit }),
        2 => Just(Step::Produce),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Whatever the followers and the controller do: the high watermark never goes
    /// back, every committed ISR member holds everything below it, and every
    /// acknowledged `acks=all` append is held by at least `min.insync.replicas`.
    #[test]
    fn acknowledged_means_held_by_the_isr(steps in proptest::collection::vec(step(), 1..120)) {
        const MIN_INSYNC: usize = 2;
        let mut partition_epoch = 0;
        let mut leader = LeaderPartition::new(LEADER, &state(&[0, 1, 2], 0), 0, 0, 0);
        let mut followers = [ModelFollower { log_end: 0, stalled: false }; 3];
        let mut now = 0u64;
        let mut proposal: Option<Vec<NodeId>> = None;
        let mut waiting: Vec<i64> = Vec::new();
        let mut acknowledged: Vec<i64> = Vec::new();
        let mut last_high_watermark = 0;
        for step in steps {
            match step {
                Step::Append(n) => {
                    leader.appended(leader.log_end() + n);
                }
                Step::Fetch { follower, take } => {
                    let f = &mut followers[follower as usize];
                    if !f.stalled {
                        if let Some(change) = leader.fetched(follower, f.log_end, now) {
                            proposal.get_or_insert(change);
                        }
                        f.log_end = (f.log_end + take).min(leader.log_end());
                    }
                }
                Step::Pass(ms) => {
                    now += ms;
                    if let Some(change) = leader.lagging(now, LAG_MAX_MS) {
                        proposal.get_or_insert(change);
                    }
                }
                Step::Stall { follower, stalled } => followers[follower as usize].stalled = stalled,
                Step::Controller { commit } => {
                    if let Some(isr) = proposal.take() {
                        if commit {
                            partition_epoch += 1;
                            leader.update(&state(&isr, partition_epoch));
                        } else {
                            leader.proposal_failed();
                        }
                    }
                }
                Step::Produce => {
                    if leader.check_insync(MIN_INSYNC).is_ok() {
                        let offset = leader.log_end();
                        leader.appended(offset + 1);
                        waiting.push(offset);
                    }
                }
            }
            let high_watermark = leader.high_watermark();
            prop_assert!(high_watermark >= last_high_watermark, "the high watermark went back");
            last_high_watermark = high_watermark;
            prop_assert!(high_watermark <= leader.log_end());
            for member in leader.isr().iter().filter(|m| **m != LEADER) {
                prop_assert!(
                    followers[*member as usize].log_end >= high_watermark,
                    "ISR member {member} holds {} < high watermark {high_watermark}",
                    followers[*member as usize].log_end
                );
            }
            waiting.retain(|offset| match leader.acks_all_outcome(*offset, MIN_INSYNC) {
                Some(Ok(())) => {
                    acknowledged.push(*offset);
                    false
                }
                Some(Err(_)) => false,
                None => true,
            });
            for offset in &acknowledged {
                let holders = 1 + followers[1..].iter().filter(|f| f.log_end > *offset).count();
                prop_assert!(holders >= MIN_INSYNC, "offset {offset} acknowledged but held by {holders}");
            }
        }
    }
}
