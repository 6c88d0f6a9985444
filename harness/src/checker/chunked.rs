//! A growable array in fixed-size chunks: appending never moves a full chunk.
//!
//! The history appends one record per send, tens of millions in a run. A `Vec`
//! that doubles copies everything it holds at each step and asks the allocator for
//! twice the memory, fresh from the kernel (each page zeroed on first touch) while
//! the old block goes back to be purged; at a million sends a second that was a
//! tenth of the producer thread's time. Chunks are allocated once and filled.

/// Records per chunk: 64 Ki (1 MiB of 16-byte records).
const CHUNK_BITS: u32 = 16;
const CHUNK_LEN: usize = 1 << CHUNK_BITS;

pub(crate) struct Chunked<T> {
    /// Every chunk but the last holds `CHUNK_LEN` elements. The first grows as a
    /// `Vec` does (a producer that sends little costs little); later ones reserve
    /// their whole length up front, which commits no memory until it is written.
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked { chunks: Vec::new(), len: 0 }
    }
}

impl<T: Copy> Chunked<T> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        if index >= self.len {
            return None;
        }
        Some(&mut self.chunks[index >> CHUNK_BITS][index & (CHUNK_LEN - 1)])
    }

    /// Grows to `len` elements, the new ones set to `fill`; never shrinks.
    pub(crate) fn grow(&mut self, len: usize, fill: T) {
        while self.len < len {
            if self.chunks.last().is_none_or(|chunk| chunk.len() == CHUNK_LEN) {
                let chunk = if self.chunks.is_empty() { Vec::new() } else { Vec::with_capacity(CHUNK_LEN) };
                self.chunks.push(chunk);
            }
            let chunk = self.chunks.last_mut().expect("pushed above");
            let added = (CHUNK_LEN - chunk.len()).min(len - self.len);
            chunk.resize(chunk.len() + added, fill);
            self.len += added;
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.chunks.iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_across_chunks_and_never_moves_a_full_chunk() {
        let mut array = Chunked::default();
        assert_eq!(array.len(), 0);
        assert!(array.get_mut(0).is_none());
        array.grow(3, 7u32);
        *array.get_mut(2).unwrap() = 9;
        array.grow(CHUNK_LEN + 3, 1);
        *array.get_mut(CHUNK_LEN + 2).unwrap() = 4;
        let (first, second) =
            (array.get_mut(2).unwrap() as *mut u32, array.get_mut(CHUNK_LEN + 2).unwrap() as *mut u32);
        array.grow(CHUNK_LEN * 3 + 5, 2);
        assert_eq!(array.get_mut(2).unwrap() as *mut u32, first, "appending moved the full first chunk");
        assert_eq!(array.get_mut(CHUNK_LEN + 2).unwrap() as *mut u32, second, "appending moved the second chunk");
        assert_eq!(array.len(), CHUNK_LEN * 3 + 5);
        assert!(array.get_mut(CHUNK_LEN * 3 + 5).is_none());
        array.grow(10, 0);
        assert_eq!(array.len(), CHUNK_LEN * 3 + 5, "grow never shrinks");
        let values: Vec<u32> = array.iter().copied().collect();
        assert_eq!(values.len(), CHUNK_LEN * 3 + 5);
        assert_eq!(&values[..3], &[7, 7, 9]);
        assert!(values[3..CHUNK_LEN + 2].iter().all(|&v| v == 1));
        assert_eq!(values[CHUNK_LEN + 2], 4);
        assert!(values[CHUNK_LEN + 3..].iter().all(|&v| v == 2));
    }
}
