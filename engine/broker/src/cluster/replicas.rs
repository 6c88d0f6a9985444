//! What this broker's engine must hold for the cluster's metadata (Kafka's
//! `ReplicaManager.applyDelta`), decided sans IO: which local topics to create,
//! grow, reconfigure or delete so that every partition with a replica on this node
//! exists here with the controller's topic id, and which role this node has for
//! each partition.
//!
//! A topic with any replica on this node is created here whole (all its
//! partitions, the ones this node does not replicate staying empty): the engine's
//! topic is one unit (one properties file, one id), and a cluster of N brokers with
//! replication factor N, the common case, replicates every partition everywhere.

use std::collections::BTreeMap;

use super::image::{MetadataImage, TopicImage};
use super::records::NodeId;
use corelog_engine::types::TopicId;

/// A topic as the local engine has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTopic {
    pub name: String,
    pub id: TopicId,
    pub partition_count: i32,
    pub configs: BTreeMap<String, String>,
}

/// One change to the local engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalChange {
    /// Removes the local topic (deleted in the cluster, or replaced by a new
    /// incarnation with another id, or no longer replicated here).
    Delete {
        name: String,
    },
    Create {
        name: String,
        id: TopicId,
        partition_count: i32,
        configs: BTreeMap<String, String>,
    },
    Grow {
        name: String,
        partition_count: i32,
    },
    Reconfigure {
        name: String,
        configs: BTreeMap<String, String>,
    },
}

/// The changes that make `local` what `image` says this node holds, deletions
/// first (a re-created name needs its old incarnation gone).
pub fn plan(image: &MetadataImage, node_id: NodeId, local: &[LocalTopic]) -> Vec<LocalChange> {
    let wanted: BTreeMap<&str, &TopicImage> =
        image.topics.values().filter(|t| hosts(t, node_id)).map(|t| (t.name.as_str(), t)).collect();
    let mut deletes = Vec::new();
    let mut others = Vec::new();
    for topic in local {
        match wanted.get(topic.name.as_str()) {
            Some(wanted) if wanted.id == topic.id => {
                let count = wanted.partitions.len() as i32;
                if count > topic.partition_count {
                    others.push(LocalChange::Grow { name: topic.name.clone(), partition_count: count });
                }
                if wanted.configs != topic.configs {
                    others.push(LocalChange::Reconfigure { name: topic.name.clone(), configs: wanted.configs.clone() });
                }
            }
            _ => deletes.push(LocalChange::Delete { name: topic.name.clone() }),
        }
    }
    for (name, wanted) in &wanted {
        let present = local.iter().any(|t| t.name == *name && t.id == wanted.id);
        if !present {
            others.push(LocalChange::Create {
                name: name.to_string(),
                id: wanted.id,
                partition_count: wanted.partitions.len() as i32,
                configs: wanted.configs.clone(),
            });
        }
    }
    deletes.extend(others);
    deletes
}

fn hosts(topic: &TopicImage, node_id: NodeId) -> bool {
    topic.partitions.iter().any(|p| p.replicas.contains(&node_id))
}

/// This node's part in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader {
        leader_epoch: i32,
    },
    Follower {
        leader: NodeId,
        leader_epoch: i32,
    },
    /// A replica with no leader to follow (all in-sync replicas gone).
    Orphan,
    /// Not a replica.
    None,
}

pub fn role(image: &MetadataImage, node_id: NodeId, topic: &str, partition: i32) -> Role {
    let Some(state) = image.partition(topic, partition) else { return Role::None };
    if !state.replicas.contains(&node_id) {
        return Role::None;
    }
    match state.leader {
        leader if leader == node_id => Role::Leader { leader_epoch: state.leader_epoch },
        leader if state.has_leader() => Role::Follower { leader, leader_epoch: state.leader_epoch },
        _ => Role::Orphan,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::records::MetadataRecord;

    fn image(topics: &[(&str, u128, &[&[NodeId]])]) -> MetadataImage {
        let mut image = MetadataImage::default();
        let mut index = 0;
        let mut apply = |image: &mut MetadataImage, record: MetadataRecord| {
            index += 1;
            image.apply(index, &record).expect("applies");
        };
        for (name, id, partitions) in topics {
            let topic_id = TopicId(*id);
            apply(&mut image, MetadataRecord::Topic { name: name.to_string(), topic_id, configs: BTreeMap::new() });
            for (i, replicas) in partitions.iter().enumerate() {
                let replicas = replicas.to_vec();
                let record = MetadataRecord::Partition {
                    topic_id,
                    partition: i as i32,
                    isr: replicas.clone(),
                    leader: replicas[0],
                    replicas,
                };
                apply(&mut image, record);
            }
        }
        image
    }

    fn local(name: &str, id: u128, partition_count: i32) -> LocalTopic {
        LocalTopic { name: name.to_string(), id: TopicId(id), partition_count, configs: BTreeMap::new() }
    }

    #[test]
    fn topics_replicated_here_are_created_with_the_controllers_id_and_others_are_not() {
        let image = image(&[("a", 1, &[&[0, 1], &[1, 2]]), ("b", 2, &[&[1, 2]])]);
        let changes = plan(&image, 0, &[]);
        assert_eq!(
            changes,
            vec![LocalChange::Create {
                name: "a".into(),
                id: TopicId(1),
                partition_count: 2,
                configs: BTreeMap::new()
            }]
        );
        assert!(plan(&image, 0, &[local("a", 1, 2)]).is_empty(), "nothing to do once present");
    }

    #[test]
    fn a_new_incarnation_replaces_the_old_one_and_deleted_or_moved_topics_go() {
        let image = image(&[("a", 7, &[&[0]])]);
        let changes = plan(&image, 0, &[local("a", 1, 1), local("gone", 3, 1)]);
        assert_eq!(
            changes,
            vec![
                LocalChange::Delete { name: "a".into() },
                LocalChange::Delete { name: "gone".into() },
                LocalChange::Create { name: "a".into(), id: TopicId(7), partition_count: 1, configs: BTreeMap::new() },
            ]
        );
    }

    #[test]
    fn grown_and_reconfigured_topics_are_grown_and_reconfigured() {
        let mut image = image(&[("a", 1, &[&[0], &[0], &[0]])]);
        image.topics.get_mut("a").expect("a").configs.insert("retention.ms".into(), "1000".into());
        let changes = plan(&image, 0, &[local("a", 1, 2)]);
        assert_eq!(
            changes,
            vec![
                LocalChange::Grow { name: "a".into(), partition_count: 3 },
                LocalChange::Reconfigure {
                    name: "a".into(),
                    configs: BTreeMap::from([("retention.ms".to_string(), "1000".to_string())])
                },
            ]
        );
    }

    #[test]
    fn the_role_follows_the_leader_and_replicas() {
        let mut image = image(&[("a", 1, &[&[0, 1]])]);
        assert_eq!(role(&image, 0, "a", 0), Role::Leader { leader_epoch: 0 });
        assert_eq!(role(&image, 1, "a", 0), Role::Follower { leader: 0, leader_epoch: 0 });
        assert_eq!(role(&image, 2, "a", 0), Role::None);
        assert_eq!(role(&image, 0, "a", 5), Role::None);
        image.topics.get_mut("a").expect("a").partitions[0].leader = -1;
        assert_eq!(role(&image, 1, "a", 0), Role::Orphan);
    }
}
