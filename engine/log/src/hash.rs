//! The workspace's one stable hash and one seeded generator: placement that must not
//! move between runs (which shard owns a partition, which offsets partition holds a
//! group) and reproducible draws (simulated crashes, the fault nemesis, the proxy's
//! jitter, test data). Neither is for security or for hash tables fed by clients.

/// CRC32C (Castagnoli), RecordBatch v2's checksum, for the broker's own files too.
pub use crc32c::{crc32c, crc32c_append};

/// FNV-1a, 64-bit, of `bytes`: the same value on every run, platform and version,
/// which placement needs (a partition's shard or a group's offsets partition must
/// not move across a restart).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(PRIME))
}

/// SplitMix64 (Steele, Lea and Flood's generator, as in `java.util.SplittableRandom`):
/// small and seedable; one seed gives one sequence.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A draw in `[0, bound)` (`[0, 1)` for a bound of 0), by modulo: the bias is
    /// negligible for the small bounds it is used with.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }

    /// A uniform draw in `[-1, 1]` from the top 53 bits.
    pub fn signed_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

/// The first SplitMix64 output for `seed`: a well-mixed function of it.
pub fn splitmix64(seed: u64) -> u64 {
    SplitMix64::new(seed).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_and_splitmix64_give_their_published_values() {
        // FNV-1a test vectors (Fowler, Noll, Vo).
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
        // SplitMix64 from seed 0: the reference implementation's first outputs.
        let mut generator = SplitMix64::new(0);
        assert_eq!(generator.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(generator.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
    }
}
