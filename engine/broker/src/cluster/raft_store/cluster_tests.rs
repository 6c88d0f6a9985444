//! Three real raft-rs nodes, each on a `RaftLogStore` in its own directory, wired by
//! in-memory mailboxes: elections, 100 proposals, a partitioned node caught up by a
//! snapshot, then every node restarted from its directory.
//!
//! `Ready` is handled in the order of raft-rs's `five_mem_node` example: send the
//! leader's messages, store the snapshot, apply committed entries, append the
//! entries, store the hard state, send the persisted messages, `advance`, store the
//! light ready's commit, send and apply what it holds, `advance_apply`.

use std::collections::VecDeque;

use raft::eraftpb::{EntryType, Message, MessageType};
use raft::{RawNode, SnapshotStatus, StateRole, Storage};

use super::*;

const PROPOSALS: usize = 100;
const ROUNDS_MAX: usize = 20_000;

struct Node {
    id: u64,
    raw: RawNode<RaftLogStore>,
    /// The state machine: the data of every applied normal entry, in log order.
    applied: Vec<String>,
    applied_index: u64,
}

fn config(id: u64, applied: u64) -> raft::Config {
    raft::Config { id, election_tick: 10, heartbeat_tick: 3, applied, ..Default::default() }
}

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

impl Node {
    /// Starts the node from its directory, initializing a fresh one with the voters.
    fn start(id: u64, dir: &Path) -> Node {
        let mut store = RaftLogStore::open(dir).expect("open store");
        if !store.is_initialized() {
            store.initialize(&[1, 2, 3]).expect("initialize");
        }
        // The state machine restarts from the snapshot; raft-rs hands back the
        // committed entries after it.
        let (applied, applied_index) = match store.snapshot_data() {
            Some((metadata, data)) => (decode_state(&data), metadata.index),
            None => (Vec::new(), 0),
        };
        let raw = RawNode::new(&config(id, applied_index), store, &logger()).expect("raw node");
        Node { id, raw, applied, applied_index }
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            assert_eq!(entry.index, self.applied_index + 1, "node {}: committed entries in order", self.id);
            self.applied_index = entry.index;
            if entry.get_entry_type() == EntryType::EntryNormal && !entry.data.is_empty() {
                self.applied.push(String::from_utf8(entry.data.to_vec()).expect("utf-8 proposal"));
            }
        }
    }

    /// Handles one `Ready` if there is one; returns whether there was.
    fn handle_ready(&mut self, outbox: &mut Vec<Message>) -> bool {
        if !self.raw.has_ready() {
            return false;
        }
        let mut ready = self.raw.ready();
        outbox.extend(ready.take_messages());
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            self.applied = decode_state(&snapshot.data);
            self.applied_index = snapshot.get_metadata().index;
            self.raw.mut_store().apply_snapshot(snapshot).expect("apply snapshot");
        }
        let committed = ready.take_committed_entries();
        self.apply(committed);
        self.raw.mut_store().append(ready.entries()).expect("append");
        if let Some(hard_state) = ready.hs() {
            self.raw.mut_store().set_hard_state(hard_state).expect("hard state");
        }
        outbox.extend(ready.take_persisted_messages());
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit).expect("commit");
        }
        outbox.extend(light.take_messages());
        let committed = light.take_committed_entries();
        self.apply(committed);
        self.raw.advance_apply();
        true
    }

    /// Takes a local snapshot of the state machine and compacts the log up to it.
    fn compact(&mut self) {
        let conf_state = self.raw.store().conf_state();
        let data = encode_state(&self.applied);
        let index = self.applied_index;
        self.raw.mut_store().compact(index, conf_state, data).expect("compact");
    }

    /// Whether `data` is applied here or waits in the log after the applied index.
    fn holds(&self, data: &[u8]) -> bool {
        if self.applied.iter().any(|applied| applied.as_bytes() == data) {
            return true;
        }
        let log = &self.raw.raft.raft_log;
        let from = (self.applied_index + 1).max(log.first_index());
        from <= log.last_index()
            && log
                .entries(from, None, GetEntriesContext::empty(false))
                .expect("the log after the applied index")
                .iter()
                .any(|entry| entry.data.as_ref() == data)
    }

    fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }
}

fn encode_state(applied: &[String]) -> Vec<u8> {
    serde_json::to_vec(applied).expect("encode state")
}

fn decode_state(data: &[u8]) -> Vec<String> {
    serde_json::from_slice(data).expect("decode state")
}

struct Cluster {
    nodes: Vec<Node>,
    /// Messages in flight, delivered in order.
    network: VecDeque<Message>,
    /// A node whose messages, in and out, are dropped.
    partitioned: Option<u64>,
}

impl Cluster {
    /// One round: tick every node, then handle readies and deliver messages until
    /// nothing moves.
    fn round(&mut self) {
        for node in &mut self.nodes {
            node.raw.tick();
        }
        loop {
            let mut outbox = Vec::new();
            let mut moved = false;
            for node in &mut self.nodes {
                while node.handle_ready(&mut outbox) {
                    moved = true;
                }
            }
            self.network.extend(outbox);
            while let Some(message) = self.network.pop_front() {
                moved = true;
                if self.partitioned.is_some_and(|id| id == message.from || id == message.to) {
                    continue;
                }
                let (to, from, is_snapshot) =
                    (message.to, message.from, message.get_msg_type() == MessageType::MsgSnapshot);
                let receiver = &mut self.nodes[(to - 1) as usize];
                // raft-rs refuses stale or unknown-peer messages; a network may drop them.
                let delivered = receiver.raw.step(message).is_ok();
                if is_snapshot {
                    // The sender must hear how its snapshot went (`Ready::messages`' doc).
                    let status = if delivered { SnapshotStatus::Finish } else { SnapshotStatus::Failure };
                    self.nodes[(from - 1) as usize].raw.report_snapshot(to, status);
                }
            }
            if !moved {
                break;
            }
        }
    }

    fn leader(&mut self) -> Option<&mut Node> {
        let partitioned = self.partitioned;
        self.nodes.iter_mut().find(|n| n.is_leader() && Some(n.id) != partitioned)
    }

    /// Proposes `p{i}` for `range` one at a time through whoever leads, until each
    /// is applied on every node outside the partition.
    fn propose_all(&mut self, range: std::ops::Range<usize>) {
        for i in range {
            let data = format!("p{i}");
            let mut rounds = 0;
            loop {
                rounds += 1;
                assert!(rounds < ROUNDS_MAX, "proposal {i} never applied");
                let partitioned = self.partitioned;
                let done =
                    self.nodes.iter().filter(|n| Some(n.id) != partitioned).all(|n| n.applied.last() == Some(&data));
                if done {
                    break;
                }
                // Proposed again only once no node outside the partition has it
                // (a leader that stepped down may have lost it): never twice in a log.
                let proposed_already =
                    self.nodes.iter().filter(|n| Some(n.id) != partitioned).any(|n| n.holds(data.as_bytes()));
                if !proposed_already {
                    if let Some(leader) = self.leader() {
                        // Dropped when leadership is moving; proposed again next round.
                        leader.raw.propose(Vec::new(), data.clone().into_bytes()).ok();
                    }
                }
                self.round();
            }
        }
    }

    fn run_until(&mut self, what: &str, done: impl Fn(&Cluster) -> bool) {
        for _ in 0..ROUNDS_MAX {
            if done(self) {
                return;
            }
            self.round();
        }
        panic!("{what} did not happen in {ROUNDS_MAX} rounds");
    }
}

fn start_cluster(dirs: &[tempfile::TempDir]) -> Cluster {
    let nodes = dirs.iter().enumerate().map(|(i, dir)| Node::start(i as u64 + 1, dir.path())).collect();
    Cluster { nodes, network: VecDeque::new(), partitioned: None }
}

fn expected_proposals(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("p{i}")).collect()
}

#[test]
fn three_nodes_elect_commit_catch_up_by_snapshot_and_survive_a_restart() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let mut cluster = start_cluster(&dirs);
    cluster.run_until("a first election", |c| c.nodes.iter().any(Node::is_leader));

    cluster.propose_all(0..30);
    // Node 3 is cut off while 40 more commit; the others compact their logs past
    // them, so node 3 can only catch up through a snapshot.
    cluster.partitioned = Some(3);
    cluster.propose_all(30..70);
    for node in &mut cluster.nodes[..2] {
        node.compact();
    }
    cluster.partitioned = None;
    cluster.propose_all(70..PROPOSALS);
    cluster.run_until("node 3 catching up", |c| c.nodes.iter().all(|n| n.applied.len() == PROPOSALS));
    assert!(
        cluster.nodes[2].raw.store().snapshot_data().is_some_and(|(metadata, _)| metadata.index > 30),
        "node 3 caught up through a snapshot from the leader"
    );

    let before: Vec<(HardState, Vec<Entry>, u64)> = cluster
        .nodes
        .iter()
        .map(|node| {
            let store = node.raw.store();
            let hard_state = store.hard_state();
            let first = store.first_index().expect("first");
            let entries = store.entries(first, hard_state.commit + 1, None, GetEntriesContext::empty(false));
            (hard_state, entries.expect("committed entries"), first)
        })
        .collect();
    for node in &cluster.nodes {
        assert_eq!(node.applied, expected_proposals(PROPOSALS), "node {} applied every proposal in order", node.id);
    }
    drop(cluster);

    // Each store alone, as a restarting node finds it.
    for (i, dir) in dirs.iter().enumerate() {
        let store = RaftLogStore::open(dir.path()).expect("reopen");
        let (hard_state, entries, first) = &before[i];
        assert_eq!(store.hard_state().term, hard_state.term, "node {}: term", i + 1);
        assert_eq!(store.hard_state().vote, hard_state.vote, "node {}: vote", i + 1);
        assert_eq!(store.first_index(), Ok(*first), "node {}: first index", i + 1);
        let stored = store
            .entries(*first, hard_state.commit + 1, None, GetEntriesContext::empty(false))
            .expect("every committed entry is still there");
        assert_eq!(&stored, entries, "node {}: committed entries", i + 1);
    }

    // And the restarted cluster rebuilds every state machine and goes on.
    let mut cluster = start_cluster(&dirs);
    cluster.run_until("an election after the restart", |c| c.nodes.iter().any(Node::is_leader));
    cluster.propose_all(PROPOSALS..PROPOSALS + 1);
    cluster.run_until("every node applying everything", |c| c.nodes.iter().all(|n| n.applied.len() == PROPOSALS + 1));
    for (i, node) in cluster.nodes.iter().enumerate() {
        assert_eq!(node.applied, expected_proposals(PROPOSALS + 1), "node {} after the restart", node.id);
        assert!(node.raw.store().hard_state().term >= before[i].0.term, "node {}: term never goes back", node.id);
    }
}
