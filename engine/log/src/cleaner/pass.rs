//! A cleaner pass as a sequence of short steps ([`PartitionLog::clean_step`]), so
//! the partition's actor serves its other ops between them: each step reads one
//! chunk of a segment (mapping it, or filtering it into the cleaned segment), or
//! swaps one finished group in. The pass lives with its owner between steps
//! ([`CleanerPass`]); before each step it checks that the log still holds every
//! segment it has yet to read, unchanged by a truncation, and is abandoned (its
//! `.cleaned` files removed) if not: retention, delete-records past a segment or a
//! follower's truncation may run between two steps.

use std::collections::{BTreeSet, HashMap, VecDeque};

use super::{
    batch_verdict, corrupt_chunk, filter, swap, CleanableRange, CleanedTransactions, CleanerLimits, CleanerStats,
    LastRecord, OffsetMap, SegmentChunks, CLEANER_CHECKPOINT_FILE,
};
use crate::batch;
use crate::error::Result;
use crate::log::PartitionLog;
use crate::segment::LogSegment;
use crate::storage::Storage;
use crate::types::{Offset, ProducerId, TimestampMs};

/// A pass in progress.
pub struct CleanerPass<S: Storage> {
    /// The pass's clock reading: delete horizons are set and compared against it.
    now: TimestampMs,
    /// The log's truncation count when the pass began.
    truncations: u64,
    /// Segments the rest of the pass reads; each must still be in the log.
    touched: BTreeSet<Offset>,
    range: CleanableRange,
    map: OffsetMap,
    last_records: HashMap<ProducerId, LastRecord>,
    stats: CleanerStats,
    stage: Stage<S>,
}

enum Stage<S: Storage> {
    /// Filling the offset map from the dirty segments.
    Mapping {
        transactions: CleanedTransactions,
        dirty: Vec<Offset>,
        index: usize,
        chunks: Option<SegmentChunks>,
        dirty_bytes: u64,
    },
    /// Rewriting the groups of sealed segments below `end`.
    Cleaning {
        end: Offset,
        transactions: CleanedTransactions,
        groups: VecDeque<Vec<Offset>>,
        current: Option<Box<GroupInProgress<S>>>,
    },
}

/// A group being written into its `.cleaned` segment.
struct GroupInProgress<S: Storage> {
    bases: Vec<Offset>,
    group_end: Offset,
    cleaned: LogSegment<S>,
    index: usize,
    chunks: Option<SegmentChunks>,
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanStep {
    /// No pass runs: nothing was cleanable, or the pass in progress was abandoned.
    Idle,
    /// The pass goes on at the next step.
    Working,
    /// The pass ended; what it did.
    Done(CleanerStats),
}

impl<S: Storage> PartitionLog<S> {
    /// One whole pass (see [`crate::cleaner`]): steps until it ends. `None`: nothing
    /// to clean.
    pub async fn clean(&mut self, limits: &CleanerLimits) -> Result<Option<CleanerStats>> {
        let mut pass = None;
        loop {
            match self.clean_step(&mut pass, limits).await? {
                CleanStep::Idle => return Ok(None),
                CleanStep::Working => {}
                CleanStep::Done(stats) => return Ok(Some(stats)),
            }
        }
    }

    /// One step of the pass in `pass`, starting one if there is none (whether or
    /// not the log is due one: [`super::CleanableRange::is_due`] is the scheduler's
    /// question). A failure abandons the pass; one after the first change to a
    /// segment of the log poisons it, and the next open finishes or rolls back the
    /// swap in progress.
    pub async fn clean_step(&mut self, pass: &mut Option<CleanerPass<S>>, limits: &CleanerLimits) -> Result<CleanStep> {
        let still_valid = pass.as_ref().is_some_and(|current| {
            current.truncations == self.truncation_count()
                && current.touched.iter().all(|base| self.segments().contains_key(base))
        });
        if pass.is_some() && (!still_valid || self.is_poisoned()) {
            self.abandon_clean(pass).await?;
            return Ok(CleanStep::Idle);
        }
        self.check_writable()?;
        let Some(current) = pass.as_mut() else {
            *pass = self.start_pass(limits).await?;
            return Ok(if pass.is_some() { CleanStep::Working } else { CleanStep::Idle });
        };
        let stepped = match current.stage {
            Stage::Mapping { .. } => self.map_step(current, limits).await,
            Stage::Cleaning { .. } => self.clean_group_step(current, limits).await,
        };
        match stepped {
            Ok(CleanStep::Working) => Ok(CleanStep::Working),
            Ok(other) => {
                *pass = None;
                Ok(other)
            }
            Err(error) => {
                self.abandon_clean(pass).await?;
                Err(error)
            }
        }
    }

    /// Drops the pass in progress, removing the `.cleaned` files of a group being
    /// written.
    pub async fn abandon_clean(&mut self, pass: &mut Option<CleanerPass<S>>) -> Result<()> {
        let Some(abandoned) = pass.take() else { return Ok(()) };
        if let Stage::Cleaning { current: Some(group), .. } = abandoned.stage {
            let first = group.bases[0];
            group.cleaned.close().await?;
            swap::remove_leftovers(self.storage(), self.dir(), first).await?;
        }
        Ok(())
    }

    async fn start_pass(&mut self, limits: &CleanerLimits) -> Result<Option<CleanerPass<S>>> {
        let range = self.cleanable_range().await?;
        if range.first_dirty >= range.first_uncleanable {
            return Ok(None);
        }
        let segments = self.segments();
        let floor = segments.range(..=range.first_dirty).next_back().map_or(range.first_dirty, |(base, _)| *base);
        let dirty: Vec<Offset> = segments.range(floor..range.first_uncleanable).map(|(base, _)| *base).collect();
        let mut transactions = CleanedTransactions::default();
        transactions.add_aborted(self.aborted_transactions(range.first_dirty, range.first_uncleanable));
        let last_records = self
            .producer_state()
            .producers()
            .map(|(id, entry)| {
                (id, LastRecord { last_data_offset: entry.last_batch().map(|b| b.last_offset), epoch: entry.epoch() })
            })
            .collect();
        Ok(Some(CleanerPass {
            now: self.clock_now(),
            truncations: self.truncation_count(),
            touched: dirty.iter().copied().collect(),
            range,
            map: OffsetMap::new(limits.offset_map_bytes_max),
            last_records,
            stats: CleanerStats { passes: 1, ..CleanerStats::default() },
            stage: Stage::Mapping { transactions, dirty, index: 0, chunks: None, dirty_bytes: 0 },
        }))
    }

    /// Maps one chunk of a dirty segment (or moves to the next segment, or on to
    /// cleaning).
    async fn map_step(&mut self, pass: &mut CleanerPass<S>, limits: &CleanerLimits) -> Result<CleanStep> {
        let start = pass.range.first_dirty;
        let Stage::Mapping { transactions, dirty, index, chunks, dirty_bytes } = &mut pass.stage else {
            unreachable!("a mapping step")
        };
        let Some(base) = dirty.get(*index).copied() else {
            return self.finish_mapping(pass, false);
        };
        let segment = &self.segments()[&base];
        if chunks.is_none() {
            if *index > 0 && *dirty_bytes + segment.size_bytes() > limits.dirty_bytes_max {
                return self.finish_mapping(pass, false);
            }
            *dirty_bytes += segment.size_bytes();
            *chunks = Some(SegmentChunks { next: start.max(base), end: segment.next_offset() });
        }
        let next_chunk = chunks.as_mut().expect("set above").next(segment, limits.read_chunk_bytes).await?;
        let Some(bytes) = next_chunk else {
            let segment_end = dirty.get(*index + 1).copied().unwrap_or(pass.range.first_uncleanable);
            pass.map.update_latest_offset(Offset(segment_end.0 - 1));
            *index += 1;
            *chunks = None;
            return Ok(CleanStep::Working);
        };
        pass.stats.bytes_read += bytes.len() as u64;
        let batches = batch::split_batches(&bytes).map_err(|e| corrupt_chunk(segment.log_path(), e))?;
        for (position, header) in batches {
            let whole = &bytes[position..position + header.size_bytes()];
            if !self.map_batch(whole, &header, start, &mut pass.map, transactions, limits)? {
                return self.finish_mapping(pass, true);
            }
        }
        Ok(CleanStep::Working)
    }

    /// The map is done (`full`: it could take no more keys): the pass cleans every
    /// sealed segment below what it covers.
    fn finish_mapping(&self, pass: &mut CleanerPass<S>, full: bool) -> Result<CleanStep> {
        let start = pass.range.first_dirty;
        let latest = pass.map.latest_offset();
        if full && latest < start {
            tracing::warn!(
                "{}: the cleaner's offset map ({} bytes) cannot hold one key of offset {start}: not cleaned",
                self.partition(),
                pass.map.bytes_max()
            );
            return Ok(CleanStep::Idle);
        }
        let end = latest.next().max(start);
        let groups: VecDeque<Vec<Offset>> = self.groups_below(end).into();
        pass.touched = groups.iter().flatten().copied().collect();
        pass.stage = Stage::Cleaning { end, transactions: CleanedTransactions::default(), groups, current: None };
        Ok(CleanStep::Working)
    }

    /// Starts the next group, writes one chunk of it, swaps a finished one in, or
    /// ends the pass.
    async fn clean_group_step(&mut self, pass: &mut CleanerPass<S>, limits: &CleanerLimits) -> Result<CleanStep> {
        let Stage::Cleaning { end, transactions, groups, current } = &mut pass.stage else {
            unreachable!("a cleaning step")
        };
        let Some(group) = current else {
            let Some(bases) = groups.pop_front() else {
                let end = *end;
                let text = format!("{}\n", end.0);
                self.storage().write_file_atomic(&self.dir().join(CLEANER_CHECKPOINT_FILE), text.as_bytes()).await?;
                *self.cleaner_checkpoint_mut() = Some(end);
                self.cleaner_stats_mut().add(&pass.stats);
                return Ok(CleanStep::Done(pass.stats));
            };
            let first = bases[0];
            let group_end = self.segments()[bases.last().expect("a group has a segment")].next_offset();
            swap::remove_leftovers(self.storage(), self.dir(), first).await?;
            let interval = self.config().index_interval_bytes;
            let suffix = swap::CLEANED_SUFFIX;
            let cleaned =
                LogSegment::create_with_suffix(self.storage(), self.dir(), first, interval, pass.now, suffix).await?;
            *current = Some(Box::new(GroupInProgress { bases, group_end, cleaned, index: 0, chunks: None }));
            return Ok(CleanStep::Working);
        };
        let Some(base) = group.bases.get(group.index).copied() else {
            let done = current.take().expect("a group in progress");
            assert_eq!(done.cleaned.next_offset(), done.group_end, "a cleaned group ends where it did");
            done.cleaned.close().await?;
            pass.stats.segments_cleaned += done.bases.len() as u64;
            for base in &done.bases {
                pass.touched.remove(base);
            }
            self.swap_in(done.bases[0], &done.bases).await?;
            return Ok(CleanStep::Working);
        };
        let segment = &self.segments()[&base];
        if group.chunks.is_none() {
            let upper = self.segments().range(base.next()..).next().map_or(group.group_end, |(next, _)| *next);
            transactions.add_aborted(self.aborted_transactions(base, upper));
            group.chunks = Some(SegmentChunks { next: base, end: segment.next_offset() });
        }
        let next_chunk = group.chunks.as_mut().expect("set above").next(segment, limits.read_chunk_bytes).await?;
        let Some(bytes) = next_chunk else {
            group.index += 1;
            group.chunks = None;
            return Ok(CleanStep::Working);
        };
        pass.stats.bytes_read += bytes.len() as u64;
        let delete_retention_ms = self.config().delete_retention_ms;
        let context = ChunkContext {
            map: &pass.map,
            last_records: &pass.last_records,
            now: pass.now,
            group_end: group.group_end,
            delete_retention_ms,
            limits,
        };
        let (out, out_batches, index_entries) =
            filter_chunk(&bytes, segment.log_path(), &context, transactions, &mut pass.stats)?;
        if !out.is_empty() {
            pass.stats.bytes_written += out.len() as u64;
            group.cleaned.append(&out, &out_batches).await?;
        }
        for entry in index_entries {
            group.cleaned.append_aborted(entry).await?;
        }
        Ok(CleanStep::Working)
    }
}

/// What filtering one chunk needs of its pass.
struct ChunkContext<'a> {
    map: &'a OffsetMap,
    last_records: &'a HashMap<ProducerId, LastRecord>,
    now: TimestampMs,
    group_end: Offset,
    delete_retention_ms: i64,
    limits: &'a CleanerLimits,
}

/// The batches of `bytes` (whole batches of the segment at `path`) that stay,
/// back to back with each one's position and header, and the `.txnindex` entries
/// of the ABORT markers that stay.
type FilteredChunk = (Vec<u8>, Vec<(usize, batch::BatchHeader)>, Vec<crate::segment::txn_index::AbortedTxn>);

fn filter_chunk(
    bytes: &[u8],
    path: &std::path::Path,
    context: &ChunkContext<'_>,
    transactions: &mut CleanedTransactions,
    stats: &mut CleanerStats,
) -> Result<FilteredChunk> {
    let batches = batch::split_batches(bytes).map_err(|e| corrupt_chunk(path, e))?;
    let mut out = Vec::new();
    let mut out_batches = Vec::new();
    let mut index_entries = Vec::new();
    for (position, header) in batches {
        let whole = &bytes[position..position + header.size_bytes()];
        let (discard_txn, index_entry) = match header.is_control() {
            true => transactions.on_control_batch(&header, batch::txn_marker(whole)),
            false => (transactions.on_batch(&header), None),
        };
        index_entries.extend(index_entry);
        let verdict = batch_verdict(&header, discard_txn, context.now, context.last_records, context.group_end);
        let filtered = filter::filter_batch(
            whole,
            &header,
            &verdict,
            context.map,
            context.now,
            context.delete_retention_ms,
            context.limits.inflated_batch_bytes_max,
        )
        .map_err(|e| corrupt_chunk(path, e))?;
        stats.records_read += filtered.records_read;
        stats.records_removed += filtered.records_read - filtered.records_kept;
        if let Some(kept) = filtered.bytes {
            let kept_header = batch::validate(&kept).map_err(|e| corrupt_chunk(path, e))?;
            out_batches.push((out.len(), kept_header));
            out.extend_from_slice(&kept);
        }
    }
    Ok((out, out_batches, index_entries))
}
