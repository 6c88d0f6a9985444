//! The cleaner's key → latest offset map over the dirty section (Kafka's
//! `OffsetMap`). Kafka's `SkimpyOffsetMap` keeps a fixed-size MD5 hash of each key
//! and accepts the (tiny) chance that two keys collide; this one keeps each key
//! whole, so it never confuses two keys, and bounds its memory by a byte budget
//! instead of a slot count: it refuses a new key once the keys held and their
//! bookkeeping would pass [`OffsetMap::bytes_max`].

use std::collections::HashMap;

use crate::types::Offset;

/// What one entry costs beyond its key's bytes: the `Vec` header, the offset and
/// the hash table's own slot, rounded up.
const ENTRY_OVERHEAD_BYTES: usize = 64;

pub struct OffsetMap {
    latest: HashMap<Vec<u8>, Offset>,
    bytes: usize,
    bytes_max: usize,
    /// The last offset the map covers: every record at or below it (from the
    /// first dirty offset on) was considered. `-1` before any.
    latest_offset: Offset,
}

impl OffsetMap {
    pub fn new(bytes_max: usize) -> OffsetMap {
        OffsetMap { latest: HashMap::new(), bytes: 0, bytes_max, latest_offset: Offset(-1) }
    }

    /// Records `offset` as the latest of `key`. Returns false, changing nothing, when
    /// a new key would pass the budget (the map is full).
    pub fn put(&mut self, key: &[u8], offset: Offset) -> bool {
        match self.latest.get_mut(key) {
            Some(latest) => {
                assert!(offset > *latest, "the map is built in offset order");
                *latest = offset;
            }
            None => {
                let cost = key.len() + ENTRY_OVERHEAD_BYTES;
                if self.bytes + cost > self.bytes_max {
                    return false;
                }
                self.bytes += cost;
                self.latest.insert(key.to_vec(), offset);
            }
        }
        self.latest_offset = self.latest_offset.max(offset);
        true
    }

    /// The latest offset of `key` in the dirty section, if it is there.
    pub fn get(&self, key: &[u8]) -> Option<Offset> {
        self.latest.get(key).copied()
    }

    pub fn latest_offset(&self) -> Offset {
        self.latest_offset
    }

    /// Moves the covered end forward (a batch or a segment read whole).
    pub fn update_latest_offset(&mut self, offset: Offset) {
        self.latest_offset = self.latest_offset.max(offset);
    }

    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    pub fn bytes_max(&self) -> usize {
        self.bytes_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_keeps_its_latest_offset_and_a_full_map_refuses_new_keys_only() {
        let mut map = OffsetMap::new(2 * (ENTRY_OVERHEAD_BYTES + 1));
        assert!(map.put(b"a", Offset(0)));
        assert!(map.put(b"b", Offset(1)));
        assert!(!map.put(b"c", Offset(2)), "a third key passes the budget");
        assert!(map.put(b"a", Offset(3)), "a known key still moves");
        assert_eq!(map.get(b"a"), Some(Offset(3)));
        assert_eq!(map.get(b"c"), None);
        assert_eq!(map.latest_offset(), Offset(3));
        assert_eq!(map.len(), 2);
    }
}
