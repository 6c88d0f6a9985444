//! The controller: one thread on which every admin operation (create, delete or grow
//! a topic, replace its config) runs, one at a time and each to its end, the way
//! Kafka's controller applies metadata changes from a single event queue.
//!
//! One at a time, because a delete and a create of the same name overlap easily
//! (clients auto-create a topic they use through Metadata, on their own): run side by
//! side, the create opened partitions whose old actors still had their files open and
//! the delete then closed and removed the new ones. In order, a delete has closed every
//! actor of its incarnation and removed its directory before a create of the name
//! starts. To the end, because handlers are cancelled when their connection goes, and
//! an operation cut off halfway would leave a topic half created or half deleted: a
//! handler only waits here for the answer, and dropping that wait cancels nothing.
//!
//! Each operation is all or nothing, across shards and across a crash. A topic exists
//! on disk exactly when its `topic.properties` does, and in the registry from the end
//! of its creation to the start of its deletion:
//! - create: a new [`TopicId`], every partition opened (inactive: no data op reaches
//!   them), the properties file written durably (the commit point), the partitions
//!   activated, the registry entry added. A failure before the commit point closes and
//!   deletes what was opened; a crash before it leaves a directory without the file,
//!   which start-up removes.
//! - delete: the properties file removed durably (the commit point), the registry
//!   entry and its offline partitions' entries removed, every partition closed and
//!   its files deleted (all at once; an offline one's go with the directory), the
//!   directory removed. Once the commit point passed, the topic is gone whatever
//!   happens to its files; leftovers are removed by the next create of the name (which
//!   starts from an empty directory) or at start-up.
//! - create partitions: like create, for the new partitions, with the properties file
//!   rewritten as the commit point. A directory of a new partition left by an earlier
//!   growth that crashed before its commit point is removed first.
//!
//! Limits: operations on different topics wait for each other too (a 1000-partition
//! create delays an unrelated delete). The thread makes blocking file-system calls
//! (properties file, directory removal), which is why it is not a shard's.

use std::future::Future;
use std::io::Read;
use std::path::Path;
use std::pin::Pin;
use std::thread::JoinHandle;

use super::{partition_dir, topic_dir, topic_properties, EngineHandle, OnDamage, TopicMetadata, TOPIC_PROPERTIES_FILE};
use crate::config::{TopicConfig, PARTITIONS_PER_TOPIC_MAX};
use crate::error::{EngineError, Result};
use crate::shard::partition::PartitionOp;
use crate::storage::dma::{replace_file_durably, sync_dir_blocking};
use crate::types::{PartitionId, TopicId, TopicName, TopicPartition};

/// An admin operation, made on the controller thread (its future need not be `Send`).
pub(super) type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

pub(super) enum ControllerRequest {
    Run(Job),
    /// Ends the thread after the operations queued before; later ones are dropped.
    Stop,
}

/// Starts the controller thread.
pub(super) fn start(requests: flume::Receiver<ControllerRequest>) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("corelog-controller".to_string())
        .spawn(move || {
            for request in requests.iter() {
                match request {
                    ControllerRequest::Run(job) => futures_lite::future::block_on(job()),
                    ControllerRequest::Stop => return,
                }
            }
        })
        .map_err(|e| EngineError::Startup(format!("starting the controller thread: {e}")))
}

impl EngineHandle {
    /// Runs `operation` on the controller after every operation queued before it and
    /// returns its result. Dropping the returned future does not cancel it. An
    /// operation must not call this itself: it would wait for its own end.
    pub(super) async fn on_controller<T, F>(
        &self,
        what: &'static str,
        operation: impl FnOnce(EngineHandle) -> F + Send + 'static,
    ) -> Result<T>
    where
        F: Future<Output = Result<T>> + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = flume::bounded(1);
        let handle = self.clone();
        let job: Job = Box::new(move || {
            Box::pin(async move {
                if reply.send(operation(handle).await).is_err() {
                    tracing::debug!("{what}: the requester is gone; the operation completed anyway");
                }
            })
        });
        let stopping = || EngineError::Stopping { operation: what.to_string() };
        self.shared.controller.send_async(ControllerRequest::Run(job)).await.map_err(|_| stopping())?;
        answer.recv_async().await.map_err(|_| stopping())?
    }
}

pub(super) async fn create_topic(
    handle: &EngineHandle,
    name: TopicName,
    partition_count: i32,
    config: TopicConfig,
    id: Option<TopicId>,
) -> Result<TopicMetadata> {
    if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&partition_count) {
        return Err(EngineError::InvalidPartitionCount(partition_count));
    }
    if handle.topic(&name).is_some() {
        return Err(EngineError::TopicAlreadyExists(name.to_string()));
    }
    let dir = topic_dir(handle.data_dir(), &name);
    let properties = dir.join(TOPIC_PROPERTIES_FILE);
    if properties.try_exists().map_err(|e| EngineError::io("look up", &properties, e))? {
        // The registry holds every topic whose file exists; refusing keeps the data.
        tracing::error!(
            "{} exists but topic {name} is not in the registry; not creating over it",
            properties.display()
        );
        return Err(EngineError::TopicAlreadyExists(name.to_string()));
    }
    if remove_dir_if_present(&dir)? {
        tracing::warn!("removed {}, left by an earlier topic {name} whose files were not all removed", dir.display());
    }
    std::fs::create_dir_all(&dir).map_err(|e| EngineError::io("create directory", &dir, e))?;
    // The topic directory's entry must be durable before anything in it is acknowledged.
    sync_dir_blocking(handle.data_dir())?;
    let id = match id {
        Some(id) => id,
        None => new_topic_id()?,
    };
    let metadata = TopicMetadata { name, id, partition_count, config };
    let (opened, failed) = handle.open_partitions(&metadata, 0..partition_count, OnDamage::Fail).await;
    // The file's directory sync also makes the partition directories' entries durable.
    let committed = match failed {
        Some(error) => Err(error),
        None => replace_file_durably(&properties, topic_properties(&metadata).as_bytes()),
    };
    if let Err(error) = committed {
        undo_create(handle, &metadata, opened).await;
        return Err(error);
    }
    let activated = handle.activate(&metadata).await;
    handle.shared.topics.write().expect("registry lock").insert(metadata.name.clone(), metadata.clone());
    activated.map(|()| metadata)
}

/// Takes back a create that failed before its commit point: the properties file
/// first (it may exist if only its directory sync failed), then the partitions that
/// opened, then the directory.
async fn undo_create(handle: &EngineHandle, metadata: &TopicMetadata, opened: Vec<PartitionId>) {
    let name = &metadata.name;
    let dir = topic_dir(handle.data_dir(), name);
    if let Err(error) = remove_properties(&dir) {
        tracing::error!("undoing the create of topic {name}: {error}");
    }
    if let Err(error) = handle.close_partitions(name, metadata.id, opened.into_iter(), true).await {
        tracing::error!("undoing the create of topic {name}: {error}");
    }
    if let Err(error) = remove_dir_if_present(&dir) {
        tracing::error!("undoing the create of topic {name}: {error}");
    }
}

pub(super) async fn delete_topic(handle: &EngineHandle, name: &TopicName) -> Result<()> {
    let metadata = handle.topic(name).ok_or_else(|| EngineError::UnknownTopicOrPartition(name.to_string()))?;
    let dir = topic_dir(handle.data_dir(), name);
    remove_properties(&dir)?;
    handle.shared.topics.write().expect("registry lock").remove(name);
    // Its offline partitions go with it: their routes are closed below like the
    // others', and their files go with the directory.
    handle.shared.offline.write().expect("offline registry lock").retain(|partition, _| partition.topic != *name);
    let partitions = (0..metadata.partition_count).map(PartitionId);
    if let Err(error) = handle.close_partitions(name, metadata.id, partitions, true).await {
        tracing::error!("deleting topic {name}: {error}; leftover files go at the next create of the name or start-up");
    }
    if let Err(error) = remove_dir_if_present(&dir) {
        tracing::error!(
            "deleting topic {name}: {error}; the directory goes at the next create of the name or start-up"
        );
    }
    Ok(())
}

pub(super) async fn create_partitions(
    handle: &EngineHandle,
    name: &TopicName,
    partition_count: i32,
) -> Result<TopicMetadata> {
    let current = handle.topic(name).ok_or_else(|| EngineError::UnknownTopicOrPartition(name.to_string()))?;
    if partition_count <= current.partition_count || partition_count > PARTITIONS_PER_TOPIC_MAX {
        return Err(EngineError::InvalidPartitionCount(partition_count));
    }
    let grown = TopicMetadata { partition_count, ..current.clone() };
    let new_partitions = current.partition_count..partition_count;
    for index in new_partitions.clone() {
        // No actor has it open: partitions past the count were never committed.
        let dir = partition_dir(handle.data_dir(), &TopicPartition::new(name.clone(), PartitionId(index)));
        if remove_dir_if_present(&dir)? {
            tracing::warn!("removed {}, left by an interrupted growth of topic {name}", dir.display());
        }
    }
    let (opened, failed) = handle.open_partitions(&grown, new_partitions, OnDamage::Fail).await;
    let properties = topic_dir(handle.data_dir(), name).join(TOPIC_PROPERTIES_FILE);
    let committed = match failed {
        Some(error) => Err(error),
        None => replace_file_durably(&properties, topic_properties(&grown).as_bytes()),
    };
    if let Err(error) = committed {
        // If only the file's directory sync failed, it names the larger count; a
        // restart then opens the new partitions again, empty: nothing in them was
        // ever acknowledged.
        if let Err(undo) = handle.close_partitions(name, grown.id, opened.into_iter(), true).await {
            tracing::error!("undoing the growth of topic {name}: {undo}");
        }
        return Err(error);
    }
    let activated = handle.activate(&grown).await;
    handle.shared.topics.write().expect("registry lock").insert(name.clone(), grown.clone());
    activated.map(|()| grown)
}

pub(super) async fn set_topic_config(handle: &EngineHandle, name: &TopicName, config: TopicConfig) -> Result<()> {
    let current = handle.topic(name).ok_or_else(|| EngineError::UnknownTopicOrPartition(name.to_string()))?;
    let updated = TopicMetadata { config: config.clone(), ..current };
    let properties = topic_dir(handle.data_dir(), name).join(TOPIC_PROPERTIES_FILE);
    replace_file_durably(&properties, topic_properties(&updated).as_bytes())?;
    handle.shared.topics.write().expect("registry lock").insert(name.clone(), updated.clone());
    for index in 0..updated.partition_count {
        let partition = TopicPartition::new(name.clone(), PartitionId(index));
        let config = config.clone();
        match handle.op_on(&partition, Some(updated.id), |reply| PartitionOp::SetConfig { config, reply }).await {
            // It reads the new config from the properties file when it opens again
            // (after `corelog repair` and a restart).
            Ok(()) | Err(EngineError::PartitionOffline { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Removes a topic's properties file durably; already gone is fine.
fn remove_properties(dir: &Path) -> Result<()> {
    let properties = dir.join(TOPIC_PROPERTIES_FILE);
    match std::fs::remove_file(&properties) {
        Ok(()) => sync_dir_blocking(dir),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(EngineError::io("remove", &properties, error)),
    }
}

/// Removes a directory that no actor has open, with everything in it; whether it
/// was there.
fn remove_dir_if_present(dir: &Path) -> Result<bool> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(EngineError::io("remove directory", dir, error)),
    }
}

/// A new topic id: a random (version 4) UUID, as Kafka's are.
fn new_topic_id() -> Result<TopicId> {
    const SOURCE: &str = "/dev/urandom";
    let mut bytes = [0u8; 16];
    std::fs::File::open(SOURCE)
        .and_then(|mut source| source.read_exact(&mut bytes))
        .map_err(|e| EngineError::io("read", SOURCE, e))?;
    Ok(TopicId::from_random_bytes(bytes))
}

/// The id of a topic whose properties file predates stored topic ids: derived from
/// the name (two FNV-1a-like hashes), as such topics were always reported.
pub(super) fn topic_id_from_name(name: &TopicName) -> TopicId {
    // The high half is FNV-1a; the low half a variant of it with another basis and
    // a rotation, kept bit for bit: these ids were reported to clients before.
    let high = crate::hash::fnv1a(name.as_str().as_bytes());
    let mut low: u64 = 0x8422_2325_cbf2_9ce4;
    for byte in name.as_str().bytes() {
        low = (low ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(7);
    }
    TopicId(((high as u128) << 64) | (low | 1) as u128)
}
