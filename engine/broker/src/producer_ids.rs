//! Producer ids for idempotent producers (InitProducerId), unique across restarts.
//!
//! Ids are handed out from blocks of [`PRODUCER_ID_BLOCK_SIZE`]. Before the first id
//! of a block is given to a client, the block's end is written durably to
//! `<data_dir>/corelog+meta/producer-id-block` (decimal text, replaced atomically;
//! the layout is in [`corelog_engine::data_dir`]). After a crash
//! the broker starts at the recorded end, so an id handed out before the crash is
//! never handed out again (at most one block of ids is skipped).
//!
//! On a node of a cluster, ids must be unique over every broker: blocks come from the
//! active controller instead ([`ClusterProducerIds`]), which records each block it
//! hands out in the metadata log, so no two brokers, and no restart, ever get the
//! same block (Kafka's `AllocateProducerIds`).
//!
//! InitProducerId is rare (once per producer session), so a mutex here is off the
//! data path.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use corelog_engine::error::{EngineError, Result};
use corelog_engine::storage::dma::replace_file_durably;
use corelog_engine::types::ProducerId;

pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;
const PRODUCER_ID_BLOCK_FILE: &str = "producer-id-block";

pub struct ProducerIdAllocator {
    path: PathBuf,
    /// (next id to hand out, end of the durably reserved block, exclusive).
    state: Mutex<(i64, i64)>,
}

impl ProducerIdAllocator {
    /// Reads the last reserved block end from `meta_dir`, the data directory's
    /// `corelog+meta` (0 on a new data directory).
    pub fn open(meta_dir: &Path) -> Result<ProducerIdAllocator> {
        let path = meta_dir.join(PRODUCER_ID_BLOCK_FILE);
        let reserved_end = match std::fs::read_to_string(&path) {
            Ok(text) => {
                text.trim().parse::<i64>().ok().filter(|end| *end >= 0).ok_or_else(|| EngineError::CorruptFile {
                    path: path.to_path_buf(),
                    reason: format!("expected a non-negative integer, found {text:?}"),
                })?
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
            Err(error) => return Err(EngineError::io("read", &path, error)),
        };
        Ok(ProducerIdAllocator { path, state: Mutex::new((reserved_end, reserved_end)) })
    }

    /// A producer id never handed out before by this data directory.
    pub fn next(&self) -> Result<ProducerId> {
        let mut state = self.state.lock().expect("producer id allocator lock");
        let (next, reserved_end) = *state;
        if next >= reserved_end {
            let new_end = next.checked_add(PRODUCER_ID_BLOCK_SIZE).ok_or(EngineError::ProducerIdsExhausted)?;
            replace_file_durably(&self.path, new_end.to_string().as_bytes())?;
            state.1 = new_end;
        }
        state.0 = next + 1;
        Ok(ProducerId(next))
    }
}

/// Producer ids of a cluster node: blocks handed out by the active controller,
/// used in order. A block fetched by two requests at once is not wasted: both are
/// kept and used.
#[derive(Default)]
pub struct ClusterProducerIds {
    /// `(next id, end of its block)`, oldest block first.
    blocks: Mutex<std::collections::VecDeque<(i64, i64)>>,
}

impl ClusterProducerIds {
    /// The next id of the blocks at hand, if any is left.
    pub fn take(&self) -> Option<ProducerId> {
        let mut blocks = self.blocks.lock().expect("producer id blocks lock");
        while let Some((next, end)) = blocks.front_mut() {
            if *next < *end {
                *next += 1;
                return Some(ProducerId(*next - 1));
            }
            blocks.pop_front();
        }
        None
    }

    /// Adds the block `[first, first + count)` the controller gave this broker.
    pub fn add_block(&self, first: i64, count: i64) {
        self.blocks.lock().expect("producer id blocks lock").push_back((first, first.saturating_add(count)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_blocks_are_used_in_order_and_each_id_once() {
        let ids = ClusterProducerIds::default();
        assert_eq!(ids.take(), None);
        ids.add_block(1000, 2);
        ids.add_block(3000, 1);
        let taken: Vec<i64> = std::iter::from_fn(|| ids.take()).map(|id| id.0).collect();
        assert_eq!(taken, vec![1000, 1001, 3000]);
    }

    #[test]
    fn ids_are_unique_across_reopen_and_skip_at_most_one_block() {
        let dir = tempfile::tempdir().expect("tempdir");
        let allocator = ProducerIdAllocator::open(dir.path()).expect("open");
        let first: Vec<i64> = (0..1500).map(|_| allocator.next().expect("id").0).collect();
        assert_eq!(first, (0..1500).collect::<Vec<_>>());
        drop(allocator);
        // As after a crash: the reserved end (2000) is where the next start begins.
        let reopened = ProducerIdAllocator::open(dir.path()).expect("reopen");
        let next = reopened.next().expect("id").0;
        assert_eq!(next, 2 * PRODUCER_ID_BLOCK_SIZE);
        std::fs::write(dir.path().join(PRODUCER_ID_BLOCK_FILE), "garbage").expect("write");
        assert!(ProducerIdAllocator::open(dir.path()).is_err(), "a corrupt block file must stop the broker");
    }
}
