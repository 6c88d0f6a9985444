//! What the cleaner must know of transactions while it walks the log (Kafka's
//! `CleanedTransactionMetadata`): which data batches belong to an aborted
//! transaction (dropped: no consumer may ever see them), and when a marker may go.
//!
//! Kafka's rules, kept here: an ABORT marker stays while any batch of its
//! transaction was seen in this pass (those batches are being removed now; the
//! marker goes at a later pass), and its `.txnindex` entry is written to the cleaned
//! segment as long as the marker stays; a COMMIT marker may go once no batch of its
//! transaction was seen. A marker that may go still waits for its batch's delete
//! horizon (`delete.retention.ms` after the pass that found it removable), so a
//! consumer in the middle of the transaction still sees it end.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::batch::{BatchHeader, TxnMarker, TxnOutcome};
use crate::segment::txn_index::AbortedTxn;
use crate::types::{Offset, ProducerId};

#[derive(Default)]
pub struct CleanedTransactions {
    /// Aborted transactions not reached yet, by first offset.
    pending: BTreeSet<(Offset, ProducerId, Offset)>,
    known: HashSet<(ProducerId, Offset)>,
    /// The aborted transactions walked into, by producer, each with whether a data
    /// batch of it was seen in this pass.
    aborted: HashMap<ProducerId, (AbortedTxn, bool)>,
    /// Producers with a transaction walked into that is not aborted.
    committed: HashSet<ProducerId>,
    index_by_key: HashMap<(ProducerId, Offset), AbortedTxn>,
}

impl CleanedTransactions {
    /// Adds the aborted transactions of the range about to be walked (duplicates of
    /// ones already added are ignored).
    pub fn add_aborted(&mut self, aborted: impl IntoIterator<Item = AbortedTxn>) {
        for entry in aborted {
            if self.known.insert((entry.producer_id, entry.first_offset)) {
                self.pending.insert((entry.first_offset, entry.producer_id, entry.last_offset));
                self.index_by_key.insert((entry.producer_id, entry.first_offset), entry);
            }
        }
    }

    fn start_aborted_up_to(&mut self, offset: Offset) {
        while let Some(&(first, producer_id, last)) = self.pending.first() {
            if first > offset {
                break;
            }
            self.pending.pop_first();
            let entry = self.index_by_key[&(producer_id, first)];
            debug_assert_eq!(entry.last_offset, last);
            self.aborted.entry(producer_id).or_insert((entry, false));
        }
    }

    /// A data batch was read: whether it belongs to an aborted transaction (and may
    /// be dropped whole).
    pub fn on_batch(&mut self, header: &BatchHeader) -> bool {
        self.start_aborted_up_to(header.last_offset());
        if !header.is_transactional() {
            return false;
        }
        match self.aborted.get_mut(&header.producer_id) {
            Some((_, seen)) => {
                *seen = true;
                true
            }
            None => {
                self.committed.insert(header.producer_id);
                false
            }
        }
    }

    /// A control batch was read (`marker`: its transaction marker, if it holds
    /// one). Returns whether the marker may be removed, and the `.txnindex` entry
    /// the cleaned segment must keep for it, if any.
    pub fn on_control_batch(&mut self, header: &BatchHeader, marker: Option<TxnMarker>) -> (bool, Option<AbortedTxn>) {
        self.start_aborted_up_to(header.last_offset());
        match marker.map(|m| m.outcome) {
            Some(TxnOutcome::Abort) => match self.aborted.remove(&header.producer_id) {
                Some((entry, true)) => (false, Some(entry)),
                _ => (true, None),
            },
            Some(TxnOutcome::Commit) => (!self.committed.remove(&header.producer_id), None),
            // A control batch emptied by an earlier pass can go; an unknown control
            // record stays.
            None if header.record_count == 0 => (true, None),
            None => (false, None),
        }
    }
}
