//! Keyed hashing of flow tuples.
//!
//! IPVS seeds its jhash with a random value so clients cannot aim flows at one bucket; xvs does
//! the same with a per-table seed and a folded 64x64->128 multiply, which costs a few cycles
//! per word and keeps the hot path free of SipHash's rounds.

/// Multiplier from the golden ratio, odd so the multiply is a bijection.
const K: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline(always)]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let full = (a as u128).wrapping_mul(b as u128);
    (full as u64) ^ ((full >> 64) as u64)
}

/// Hashes a few 64-bit words under `seed`.
#[inline(always)]
pub(crate) fn hash_words(seed: u64, words: &[u64]) -> u64 {
    let mut h = seed;
    for &w in words {
        h = folded_multiply(h ^ w, K);
    }
    folded_multiply(h, seed | 1)
}

/// A fresh random seed from the standard library's per-process random keys (no extra
/// dependency, no syscall per packet: called once per table).
pub(crate) fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x7876_735f_6374_6b00);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_seed_change_the_hash() {
        let a = hash_words(1, &[1, 2, 3]);
        assert_ne!(a, hash_words(1, &[1, 2, 4]));
        assert_ne!(a, hash_words(2, &[1, 2, 3]));
        assert_eq!(a, hash_words(1, &[1, 2, 3]));
    }

    #[test]
    fn low_bits_spread_over_buckets() {
        // Sequential client ports must not pile up in a few of 1024 buckets.
        let mut used = vec![0u32; 1024];
        for port in 0..4096u64 {
            used[(hash_words(7, &[0x0a00_0001, port]) & 1023) as usize] += 1;
        }
        let max = *used.iter().max().unwrap();
        assert!(max < 16, "worst bucket holds {max} of 4096 keys");
    }
}
