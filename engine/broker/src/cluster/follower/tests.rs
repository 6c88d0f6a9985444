use proptest::prelude::*;

use super::*;

/// A log as the epochs of its records, offset by offset from 0.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Log(Vec<i32>);

impl Log {
    fn from_runs(runs: &[(i32, usize)]) -> Log {
        Log(runs.iter().flat_map(|(epoch, count)| std::iter::repeat_n(*epoch, *count)).collect())
    }

    /// Kafka's `endOffsetFor` over this log's epochs, the leader's way: the latest
    /// epoch ends at the log end.
    fn end_for(&self, epoch: i32) -> (i32, i64) {
        let Some(found) = self.0.iter().copied().filter(|e| *e <= epoch).max() else { return (-1, -1) };
        let next_start = self.0.iter().position(|e| *e > found).map_or(self.0.len(), |p| p);
        (found, next_start as i64)
    }
}

impl LocalEpochs for Log {
    fn latest_epoch(&self) -> i32 {
        self.0.last().copied().unwrap_or(-1)
    }

    fn end_offset_for(&self, epoch: i32) -> (i32, i64) {
        self.end_for(epoch)
    }

    fn log_end(&self) -> i64 {
        self.0.len() as i64
    }

    fn earliest_epoch_start(&self) -> i64 {
        0
    }
}

/// Runs the follower against `leader` until it fetches; returns its log then.
fn reconcile(mut follower_log: Log, leader: &Log, high_watermark: i64) -> Log {
    let mut follower = FollowerPartition::new(0, leader.latest_epoch().max(0), high_watermark, &follower_log);
    for _ in 0..64 {
        match follower.next(&follower_log) {
            Action::AskEpochEnd { epoch, .. } => {
                let (epoch, end_offset) = leader.end_for(epoch);
                if let Some(cut) = follower.epoch_end(EpochEnd { epoch, end_offset }, &follower_log) {
                    assert!(cut >= 0 && cut <= follower_log.log_end(), "cut {cut} outside the log");
                    follower_log.0.truncate(cut as usize);
                    follower.truncated(&follower_log);
                }
            }
            Action::Fetch { offset, .. } => {
                assert_eq!(offset, follower_log.log_end());
                return follower_log;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    panic!("no fetch after 64 rounds");
}

#[test]
fn a_follower_with_an_uncommitted_tail_of_an_old_epoch_cuts_it_at_the_new_leaders_epoch_start() {
    let common = [(1, 5), (3, 2)];
    let follower = Log::from_runs(&[common[0], common[1], (3, 3), (4, 2)]);
    let leader = Log::from_runs(&[common[0], common[1], (5, 4)]);
    assert_eq!(reconcile(follower, &leader, 0), Log::from_runs(&common));
}

#[test]
fn epochs_the_follower_never_had_take_more_than_one_question() {
    let follower = Log::from_runs(&[(1, 5), (4, 3)]);
    let leader = Log::from_runs(&[(1, 5), (2, 1), (5, 2)]);
    assert_eq!(reconcile(follower, &leader, 0), Log::from_runs(&[(1, 5)]));
    let follower = Log::from_runs(&[(2, 3)]);
    let leader = Log::from_runs(&[(1, 2), (3, 1)]);
    assert_eq!(reconcile(follower, &leader, 0), Log(vec![]), "every local epoch diverges");
}

#[test]
fn an_empty_follower_fetches_at_once_and_one_that_is_behind_keeps_everything() {
    let leader = Log::from_runs(&[(1, 5), (2, 3)]);
    assert_eq!(reconcile(Log(vec![]), &leader, 0), Log(vec![]));
    let behind = Log::from_runs(&[(1, 5), (2, 1)]);
    assert_eq!(reconcile(behind.clone(), &leader, 0), behind);
}

#[test]
fn out_of_range_below_the_leaders_start_restarts_the_log_and_above_its_end_truncates_first() {
    let follower_log = Log::from_runs(&[(1, 8)]);
    let mut follower = FollowerPartition::new(0, 2, 0, &follower_log);
    assert_eq!(follower.out_of_range(3, 10, 20, &follower_log), Action::StartAt { offset: 10 });
    assert_eq!(follower.out_of_range(8, 0, 6, &follower_log), Action::AskEpochEnd { epoch: 1, leader_epoch: 2 });
}

#[test]
fn the_followers_high_watermark_is_the_leaders_capped_at_its_own_log_end() {
    let log = Log::from_runs(&[(1, 4)]);
    let mut follower = FollowerPartition::new(0, 1, 0, &log);
    assert_eq!(follower.fetched(10, &log), 4);
    assert_eq!(follower.fetched(2, &log), 4, "never back");
}

/// Two replicas' logs after a history of leader changes: a common prefix, then
/// tails that diverge. Each epoch beyond the prefix was written by one leader
/// whose records only one of the two has (had both got some, they would agree up
/// to there); either may continue the prefix's last epoch; the leader holds the
/// highest epoch.
/// Runs of `(epoch, record count)`.
type Runs = Vec<(i32, usize)>;

fn diverged() -> impl Strategy<Value = (Runs, Runs, Runs)> {
    (proptest::collection::vec(1usize..4, 0..4), proptest::collection::vec((any::<bool>(), 0usize..4), 1..6), 0usize..3)
        .prop_map(|(prefix_runs, later, continuation)| {
            let mut epoch = 0;
            let common: Runs = prefix_runs
                .into_iter()
                .map(|count| {
                    epoch += 1 + (count as i32 % 2);
                    (epoch, count)
                })
                .collect();
            let (mut follower, mut leader) = (Vec::new(), Vec::new());
            if let Some((last, _)) = common.last() {
                if continuation > 0 {
                    follower.push((*last, continuation));
                }
            }
            let count = later.len();
            for (i, (to_leader, records)) in later.into_iter().enumerate() {
                epoch += 1;
                if to_leader || i + 1 == count {
                    leader.push((epoch, records));
                } else {
                    follower.push((epoch, records));
                }
            }
            (common, follower, leader)
        })
}

proptest! {
    /// After the truncation the follower's log is a prefix of the leader's and
    /// still holds the whole common prefix: nothing the two agreed on is lost, and
    /// nothing only the follower had is kept.
    #[test]
    fn truncation_stops_exactly_where_the_logs_diverge((common, follower_tail, leader_tail) in diverged()) {
        let common_log = Log::from_runs(&common);
        let follower = Log::from_runs(&[common.clone(), follower_tail].concat());
        let leader = Log::from_runs(&[common, leader_tail].concat());
        let reconciled = reconcile(follower, &leader, common_log.log_end());
        prop_assert_eq!(reconciled, common_log);
    }
}
