//! Hash functions of the hashing schedulers (dh, sh, mh).
//!
//! They are fixed (no per-process random key) on purpose: two directors running the same
//! xvs version compute the same tables, so a client keeps its real server when traffic moves
//! between them (active/active behind ECMP).

use std::net::IpAddr;

/// IPVS's address fold: an IPv4 address as a host-order u32; an IPv6 address as the xor of
/// its four 32-bit words.
#[inline]
pub(crate) fn fold_addr(addr: IpAddr) -> u32 {
    match addr {
        IpAddr::V4(v4) => u32::from(v4),
        IpAddr::V6(v6) => {
            let b = v6.to_bits();
            (b as u32) ^ ((b >> 32) as u32) ^ ((b >> 64) as u32) ^ ((b >> 96) as u32)
        }
    }
}

/// The kernel's `hash_32`: multiply by the 32-bit golden ratio and keep the top `bits`.
#[inline]
pub(crate) fn hash_32(value: u32, bits: u32) -> u32 {
    value.wrapping_mul(0x61C8_8647) >> (32 - bits)
}

/// A 64-bit finaliser (splitmix64's): every input bit affects every output bit.
#[inline]
fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Keyed hash of a full address and a port (Maglev's per-server offset and skip, and its
/// client lookup). Uses all 128 bits of IPv6 addresses, unlike the fold.
#[inline]
pub(crate) fn keyed_hash(key: u64, addr: IpAddr, port: u16, offset: u32) -> u32 {
    let bits = match addr {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => v6.to_bits(),
    };
    let words = ((port as u64) << 32) | offset as u64;
    let h = mix64(key ^ bits as u64);
    let h = mix64(h ^ (bits >> 64) as u64);
    (mix64(h ^ words) >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn fold_matches_ipvs() {
        assert_eq!(
            fold_addr(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
            0x0A00_0001
        );
        let v6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
        assert_eq!(fold_addr(IpAddr::V6(v6)), 0x2001_0db8 ^ 1);
    }

    #[test]
    fn hash_32_keeps_the_top_bits() {
        assert_eq!(hash_32(1, 8), 0x61);
        assert_eq!(hash_32(0, 8), 0);
    }

    #[test]
    fn keyed_hash_is_fixed_and_key_dependent() {
        let a = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 10));
        assert_eq!(keyed_hash(1, a, 80, 0), keyed_hash(1, a, 80, 0));
        assert_ne!(keyed_hash(1, a, 80, 0), keyed_hash(2, a, 80, 0));
        assert_ne!(keyed_hash(1, a, 80, 0), keyed_hash(1, a, 81, 0));
    }

    #[test]
    fn ipv6_hashes_take_every_word_of_the_address() {
        let base = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
        // One bit flipped in each 32-bit word in turn: both hashes change every time.
        for word in 0..4 {
            let other = Ipv6Addr::from_bits(base.to_bits() ^ (1u128 << (32 * word + 5)));
            let (a, b) = (IpAddr::V6(base), IpAddr::V6(other));
            assert_ne!(fold_addr(a), fold_addr(b), "fold, word {word}");
            assert_ne!(
                keyed_hash(7, a, 80, 0),
                keyed_hash(7, b, 80, 0),
                "keyed, word {word}"
            );
        }
    }
}
