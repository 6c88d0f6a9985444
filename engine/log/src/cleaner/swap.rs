//! Swapping a cleaned segment in for the segments it replaces, crash-safely
//! (Kafka's `LocalLog.replaceSegments` and the swap recovery of `LogLoader`).
//!
//! The steps, each made durable (`sync_dir`) before the next:
//!
//! 1. The cleaned segment was written and synced under `.cleaned` names.
//! 2. Its files are renamed `.cleaned` → `.swap`, the `.log` last.
//! 3. Each replaced segment's files are renamed to `.deleted`, the `.log` last.
//! 4. The `.swap` files are renamed to their final names, the `.log` last.
//! 5. The `.deleted` files are removed.
//!
//! A `.log` names what its segment's other files are: a segment whose `.log` is
//! `.cleaned` is an unfinished clean, one whose `.log` is `.swap` a finished one
//! being swapped in. So the next open ([`recover_swaps`]) rolls back a swap that had
//! not reached step 3 (removes `.cleaned` and `.swap` files: the old segments are
//! whole), and finishes one that had (removes the old segments inside the swap
//! segment's offsets, renames the `.swap` files, removes `.deleted` files). Either
//! way the log it opens holds the same records at the same offsets as before the
//! swap or after it.

use std::path::Path;

use crate::error::Result;
use crate::log::PartitionLog;
use crate::segment::{segment_file_name, segment_file_paths, LogSegment, OpenMode};
use crate::storage::Storage;
use crate::types::Offset;

pub const CLEANED_SUFFIX: &str = ".cleaned";
pub const SWAP_SUFFIX: &str = ".swap";
pub const DELETED_SUFFIX: &str = ".deleted";

/// The order files are renamed in: the indexes, then the `.log` (see the module doc).
const RENAME_ORDER: [usize; 4] = [1, 2, 3, 0];

/// Removes the `.cleaned` files of the segment at `base`, if any (a pass that
/// failed or crashed before its swap).
pub(crate) async fn remove_leftovers<S: Storage>(storage: &S, dir: &Path, base: Offset) -> Result<()> {
    for path in segment_file_paths(dir, base, CLEANED_SUFFIX) {
        if storage.exists(&path).await? {
            storage.remove_file(&path).await?;
        }
    }
    Ok(())
}

/// Renames the files of the segment at `base` from suffix `from` to `to`, the
/// `.log` last, then makes the renames durable.
async fn rename_segment<S: Storage>(storage: &S, dir: &Path, base: Offset, from: &str, to: &str) -> Result<()> {
    let (sources, targets) = (segment_file_paths(dir, base, from), segment_file_paths(dir, base, to));
    for i in RENAME_ORDER {
        if storage.exists(&sources[i]).await? {
            storage.rename(&sources[i], &targets[i]).await?;
        }
    }
    storage.sync_dir(dir).await
}

async fn remove_segment_files<S: Storage>(storage: &S, dir: &Path, base: Offset, suffix: &str) -> Result<()> {
    for path in segment_file_paths(dir, base, suffix) {
        if storage.exists(&path).await? {
            storage.remove_file(&path).await?;
        }
    }
    Ok(())
}

/// The base offset of a segment file name ending in `.log<suffix>`.
fn suffixed_log_base(name: &str, suffix: &str) -> Option<Offset> {
    let stem = name.strip_suffix(suffix)?;
    crate::segment::parse_segment_file_name(stem)
}

/// The base offset of any segment file name (`.log`, `.index`, `.timeindex`,
/// `.txnindex`) ending in `suffix`.
fn suffixed_base(name: &str, suffix: &str) -> Option<Offset> {
    let stem = name.strip_suffix(suffix)?;
    let (digits, extension) = stem.split_once('.')?;
    let known = ["log", "index", "timeindex", crate::segment::txn_index::TXN_INDEX_EXTENSION].contains(&extension);
    let base = digits.parse::<i64>().ok().filter(|_| digits.len() == 20 && known)?;
    (segment_file_name(Offset(base), extension) == stem).then_some(Offset(base))
}

/// Finishes or rolls back a swap a crash interrupted (see the module doc), before
/// the log's segments are opened. Returns whether it changed anything.
pub(crate) async fn recover_swaps<S: Storage>(
    storage: &S,
    dir: &Path,
    names: &[String],
    index_interval_bytes: u32,
) -> Result<bool> {
    let cleaned: Vec<Offset> = names.iter().filter_map(|n| suffixed_log_base(n, CLEANED_SUFFIX)).collect();
    let swapped: Vec<Offset> = names.iter().filter_map(|n| suffixed_log_base(n, SWAP_SUFFIX)).collect();
    let leftovers: Vec<(Offset, &str)> = names
        .iter()
        .filter_map(|n| {
            [CLEANED_SUFFIX, SWAP_SUFFIX, DELETED_SUFFIX]
                .into_iter()
                .find_map(|suffix| suffixed_base(n, suffix).map(|base| (base, suffix)))
        })
        .collect();
    if leftovers.is_empty() {
        return Ok(false);
    }
    for base in swapped.iter().filter(|base| !cleaned.contains(base)) {
        // Step 3 may have begun: the `.swap` segment is whole (renamed only after it
        // was synced), so it replaces every old segment inside its offsets.
        let now = crate::types::TimestampMs(0);
        let (swap, _) = LogSegment::open_with_suffix(
            storage,
            dir,
            *base,
            index_interval_bytes,
            now,
            SWAP_SUFFIX,
            OpenMode::Inspect,
        )
        .await?;
        let end = swap.next_offset();
        swap.close().await?;
        let old: Vec<Offset> = names
            .iter()
            .filter_map(|n| crate::segment::parse_segment_file_name(n))
            .filter(|old| *old >= *base && (*old < end || *old == *base))
            .collect();
        for old in old {
            remove_segment_files(storage, dir, old, "").await?;
        }
        rename_segment(storage, dir, *base, SWAP_SUFFIX, "").await?;
    }
    // Whatever is left is an unfinished clean (`.cleaned`, or `.swap` files of a
    // segment whose `.log` was not renamed yet) or old files already replaced.
    for (base, suffix) in leftovers {
        remove_segment_files(storage, dir, base, suffix).await?;
    }
    storage.sync_dir(dir).await?;
    Ok(true)
}

impl<S: Storage> PartitionLog<S> {
    /// Swaps the closed `.cleaned` segment at `new_base` in for the segments at
    /// `old` (see the module doc). A failure poisons the log: its segments in
    /// memory may no longer match the files, and the next open sorts them out.
    pub(crate) async fn swap_in(&mut self, new_base: Offset, old: &[Offset]) -> Result<()> {
        match self.swap_steps(new_base, old).await {
            Ok(()) => Ok(()),
            Err(error) => Err(self.poison(error)),
        }
    }

    async fn swap_steps(&mut self, new_base: Offset, old: &[Offset]) -> Result<()> {
        let storage = self.storage().clone();
        let dir = self.dir().to_path_buf();
        rename_segment(&storage, &dir, new_base, CLEANED_SUFFIX, SWAP_SUFFIX).await?;
        for base in old {
            let segment = self.segments_mut().remove(base).expect("the cleaner cleans segments of the log");
            segment.close().await?;
            rename_segment(&storage, &dir, *base, "", DELETED_SUFFIX).await?;
        }
        rename_segment(&storage, &dir, new_base, SWAP_SUFFIX, "").await?;
        for base in old {
            remove_segment_files(&storage, &dir, *base, DELETED_SUFFIX).await?;
        }
        storage.sync_dir(&dir).await?;
        let interval = self.config().index_interval_bytes;
        let now = self.clock_now();
        let (segment, _) = LogSegment::open(&storage, &dir, new_base, interval, now, OpenMode::Verify).await?;
        self.segments_mut().insert(new_base, segment);
        Ok(())
    }
}
