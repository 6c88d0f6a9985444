//! The cluster: several corelog brokers that agree on their metadata through a Raft
//! quorum, the way Kafka brokers do with KRaft.
//!
//! The metadata quorum runs in the broker process (Kafka's combined mode): every node
//! named in `controller.quorum.voters` is a voter of one Raft group whose log holds
//! the cluster's metadata records ([`records`]): broker registrations and fencing,
//! topics and their ids, partition assignments, each partition's leader, leader
//! epoch and in-sync replicas, topic config changes and producer-id blocks. Each node
//! applies the committed records, in log order, to its own [`image::MetadataImage`];
//! the Raft leader is the active controller, which alone decides (sans IO, in
//! [`controller`]) what records to propose.
//!
//! Consensus is tikv's `raft` crate (raft-rs), not home-made: its `RawNode` is a
//! sans-IO core (the caller persists entries, sends messages, applies what is
//! committed and ticks the clock), which fits a thread that owns its state and the
//! storage seam we test crash recovery through. `openraft` was the alternative; it
//! drives storage and network through its own async traits on a tokio runtime, with
//! `Send` futures, which a glommio broker cannot give it without a second runtime.

pub mod config;
pub mod controller;
pub mod fetcher;
pub mod follower;
pub mod image;
pub mod logging;
pub mod membership;
pub mod peer;
pub mod quorum;
pub mod raft_store;
pub mod records;
pub mod replica_manager;
pub mod replicas;
pub mod replication;
pub mod runtime;
pub mod transport;
pub mod view;
