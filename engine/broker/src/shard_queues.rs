//! The queues of a per-shard coordinator actor (the group coordinator's, the
//! transaction coordinator's): one request queue and one start queue per shard.
//!
//! They are made once, by the first shard to start (the engine decides the shard
//! count), so that every shard's handlers are given every shard's request queue.
//! Each shard's actor takes its own receivers and waits on its start queue; the
//! broker starts them all with [`ShardQueues::start_all`] once every shard runs.

use std::sync::{Arc, OnceLock};

use corelog_engine::error::{EngineError, Result};

/// Every shard's queues of one kind of actor, taking requests `R` and a start
/// message `S`.
pub struct ShardQueues<R, S> {
    /// Each shard's request queue, by shard index.
    pub senders: Arc<[flume::Sender<R>]>,
    /// Each shard's request queue's receiving end, for its actor.
    pub receivers: Vec<flume::Receiver<R>>,
    /// Each shard's start queue (one message).
    pub starts: Vec<(flume::Sender<S>, flume::Receiver<S>)>,
}

impl<R, S> ShardQueues<R, S> {
    /// Sends each shard's actor its start message, made by `start` around the slot
    /// its answer goes to, then waits until every actor has answered (loaded what it
    /// owns and serves). The first failure is returned.
    pub async fn start_all(&self, mut start: impl FnMut(flume::Sender<Result<()>>) -> S) -> Result<()> {
        let mut waiting = Vec::with_capacity(self.starts.len());
        for (shard, (queue, _)) in self.starts.iter().enumerate() {
            let (reply, answer) = flume::bounded(1);
            queue.send_async(start(reply)).await.map_err(|_| EngineError::ShardUnavailable(shard))?;
            waiting.push((shard, answer));
        }
        for (shard, answer) in waiting {
            answer.recv_async().await.map_err(|_| EngineError::ShardUnavailable(shard))??;
        }
        Ok(())
    }
}

/// [`ShardQueues`] made on first use. Cheap to clone (`Send + Sync` for `Send`
/// messages), as the broker's per-shard service closure needs; the lock is touched
/// only at start-up.
pub struct LazyShardQueues<R, S>(Arc<OnceLock<ShardQueues<R, S>>>);

impl<R, S> Clone for LazyShardQueues<R, S> {
    fn clone(&self) -> Self {
        LazyShardQueues(self.0.clone())
    }
}

impl<R, S> Default for LazyShardQueues<R, S> {
    fn default() -> Self {
        LazyShardQueues(Arc::default())
    }
}

impl<R, S> LazyShardQueues<R, S> {
    /// The queues, made now for `shard_count` shards (request queues `depth` deep)
    /// if no shard made them yet. Panics if they were made for another shard count:
    /// one engine, one count. `actor` names the actor in that message.
    pub fn get_or_make(&self, shard_count: usize, depth: usize, actor: &str) -> &ShardQueues<R, S> {
        let queues = self.0.get_or_init(|| {
            let (senders, receivers): (Vec<_>, Vec<_>) = (0..shard_count).map(|_| flume::bounded(depth.max(1))).unzip();
            let starts = (0..shard_count).map(|_| flume::bounded(1)).collect();
            ShardQueues { senders: senders.into(), receivers, starts }
        });
        assert_eq!(queues.senders.len(), shard_count, "one {actor} per engine shard");
        queues
    }

    /// The queues, if a shard made them.
    pub fn get(&self) -> Option<&ShardQueues<R, S>> {
        self.0.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    struct Start(flume::Sender<Result<()>>);

    #[test]
    fn every_shard_is_started_and_the_first_failure_is_returned() {
        let queues: LazyShardQueues<(), Start> = LazyShardQueues::default();
        let made = queues.get_or_make(3, 4, "test actor");
        assert_eq!((made.senders.len(), made.receivers.len(), made.starts.len()), (3, 3, 3));
        assert!(std::ptr::eq(made, queues.clone().get_or_make(3, 4, "test actor")), "made once, shared by clones");
        let actors: Vec<_> = made
            .starts
            .iter()
            .enumerate()
            .map(|(shard, (_, start))| {
                let start = start.clone();
                std::thread::spawn(move || {
                    let Start(reply) = start.recv().expect("a start message");
                    let answer = if shard == 1 { Err(EngineError::Startup("shard 1 failed".into())) } else { Ok(()) };
                    // Unheard after an earlier shard's failure: start_all returned.
                    let _ = reply.send(answer);
                })
            })
            .collect();
        let outcome = block_on(made.start_all(Start));
        actors.into_iter().for_each(|actor| actor.join().expect("actor"));
        assert!(matches!(outcome, Err(EngineError::Startup(message)) if message == "shard 1 failed"));
    }

    #[test]
    #[should_panic(expected = "one test actor per engine shard")]
    fn queues_made_for_one_shard_count_refuse_another() {
        let queues: LazyShardQueues<(), ()> = LazyShardQueues::default();
        queues.get_or_make(2, 1, "test actor");
        queues.get_or_make(3, 1, "test actor");
    }
}
