//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Rewrites change a few 16-bit words of a header; RFC 1624 eqn. 3, `HC' = ~(~HC + ~m + m')`,
//! updates the stored checksum from the old and new words alone, so the payload is never read.
//! Eqn. 3 (not eqn. 2 of RFC 1141) is the form that cannot produce -0 from +0 mistakes: for any
//! non-zero data it yields exactly the value a full recomputation gives.

/// Adds the carries back into the low 16 bits (one's complement end-around carry).
///
/// Each end-around carry keeps the value modulo 0xffff, and folding a non-zero sum ends in
/// 1..=0xffff, so the result is `1 + (sum - 1) % 0xffff` (0 stays 0): one remainder by a
/// constant, a multiply, instead of a loop of carries.
#[inline]
pub fn fold(sum: u64) -> u16 {
    match sum.checked_sub(1) {
        Some(below) => (below % 0xffff + 1) as u16,
        None => 0,
    }
}

/// One's complement sum of `data` as big-endian 16-bit words (an odd last byte is padded
/// with zero), added to `initial`. Not folded, not inverted.
#[inline]
pub fn sum_words(data: &[u8], initial: u64) -> u64 {
    let mut sum = initial;
    let mut words = data.chunks_exact(2);
    for word in &mut words {
        sum += u64::from(u16::from_be_bytes([word[0], word[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// The checksum to store for `data` whose checksum field is zero: `!fold(sum)`.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum_words(data, 0))
}

/// True when `data` (checksum field included) verifies: its sum folds to 0xffff.
#[inline]
pub fn verifies(data: &[u8]) -> bool {
    // The common option-less IPv4 header gets a fixed-length, fully unrolled sum.
    let sum = match data.first_chunk::<20>() {
        Some(header) if data.len() == 20 => sum_words_20_native(header),
        _ => sum_words(data, 0),
    };
    fold(sum) == 0xffff
}

/// [`verifies`] for an option-less IPv4 header: five 32-bit adds and one remainder (the
/// per-packet check of the fast path).
#[inline(always)]
pub fn verifies_20(header: &[u8; 20]) -> bool {
    // Folding (end-around carry) keeps a sum's value modulo 0xffff and ends in 1..=0xffff for
    // a non-zero sum, so "folds to 0xffff" is "a non-zero multiple of 0xffff": one
    // remainder by a constant (a multiply) instead of four folds.
    let sum = sum_words_20_native(header);
    sum != 0 && sum.is_multiple_of(0xffff)
}

/// Sum of a 20-byte header as five 32-bit words: since 2^16 = 1 (mod 0xffff), folding a sum
/// of 32-bit words gives the one's complement sum of the 16-bit words (RFC 1071, 2.(B)).
#[inline(always)]
fn sum_words_20(header: &[u8; 20]) -> u64 {
    let mut sum = 0u64;
    for quad in header.chunks_exact(4) {
        sum += u64::from(u32::from_be_bytes([quad[0], quad[1], quad[2], quad[3]]));
    }
    sum
}

/// [`sum_words_20`] with the words in the machine's byte order, for checking only: the one's
/// complement sum is byte-order independent (RFC 1071, 2.(B)) and a valid header sums to
/// 0xffff, which reads the same both ways.
#[inline(always)]
fn sum_words_20_native(header: &[u8; 20]) -> u64 {
    let mut sum = 0u64;
    for quad in header.chunks_exact(4) {
        sum += u64::from(u32::from_ne_bytes([quad[0], quad[1], quad[2], quad[3]]));
    }
    sum
}

/// RFC 1624 eqn. 3 for one 16-bit word changing from `old` to `new`.
#[inline]
pub fn update_u16(checksum: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!checksum) + u64::from(!old) + u64::from(new))
}

/// RFC 1624 eqn. 3 for a 32-bit field (an IPv4 address) changing from `old` to `new`.
#[inline]
pub fn update_u32(checksum: u16, old: u32, new: u32) -> u16 {
    let sum = u64::from(!checksum)
        + u64::from(!(old >> 16) & 0xffff)
        + u64::from(!old & 0xffff)
        + u64::from(new >> 16)
        + u64::from(new & 0xffff);
    !fold(sum)
}

/// UDP's variant (RFC 768): a stored 0 means "no checksum" and must stay 0, and a computed 0
/// is sent as 0xffff so it is not mistaken for "no checksum".
#[inline]
pub fn udp_update(checksum: u16, apply: impl FnOnce(u16) -> u16) -> u16 {
    if checksum == 0 {
        return 0;
    }
    match apply(checksum) {
        0 => 0xffff,
        updated => updated,
    }
}

/// Several field changes folded into one checksum update: RFC 1624 eqn. 3 generalised to
/// `HC' = ~(~HC + sum(~m_i + m_i'))`. Applying it once gives the same checksum as applying
/// `update_u16`/`update_u32` per field, with one fold instead of one per field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta(u64);

impl Delta {
    /// Records a 16-bit word changing from `old` to `new`.
    #[inline]
    pub fn replace_u16(&mut self, old: u16, new: u16) {
        self.0 += u64::from(!old) + u64::from(new);
    }

    /// Records a 32-bit field (an IPv4 address) changing from `old` to `new`.
    #[inline]
    pub fn replace_u32(&mut self, old: u32, new: u32) {
        self.0 += u64::from(!old >> 16) + u64::from(!old & 0xffff);
        self.0 += u64::from(new >> 16) + u64::from(new & 0xffff);
    }

    /// Records a 128-bit field (an IPv6 address) changing from `old` to `new`.
    #[inline]
    pub fn replace_u128(&mut self, old: u128, new: u128) {
        for shift in (0..128).step_by(32) {
            self.replace_u32((old >> shift) as u32, (new >> shift) as u32);
        }
    }

    /// The checksum after every recorded change.
    #[inline]
    pub fn apply(self, checksum: u16) -> u16 {
        !fold(u64::from(!checksum) + self.0)
    }

    /// UDP's variant of [`Delta::apply`] (RFC 768): 0 stays 0, a computed 0 becomes 0xffff.
    #[inline]
    pub fn apply_udp(self, checksum: u16) -> u16 {
        udp_update(checksum, |c| self.apply(c))
    }
}

/// The checksum to store for a 20-byte IPv4 header without options, its checksum field zero.
#[inline]
pub fn ipv4_base_header(header: &[u8; 20]) -> u16 {
    !fold(sum_words_20(header))
}

/// Unfolded sum of the IPv4 pseudo-header TCP and UDP checksums cover (RFC 9293 3.1,
/// RFC 768): source, destination, zero + protocol, and the transport length.
#[inline]
pub fn ipv4_pseudo_header(src: u32, dst: u32, protocol: u8, length: u16) -> u64 {
    u64::from(src >> 16)
        + u64::from(src & 0xffff)
        + u64::from(dst >> 16)
        + u64::from(dst & 0xffff)
        + u64::from(protocol)
        + u64::from(length)
}

/// Unfolded sum of the IPv6 pseudo-header TCP, UDP and ICMPv6 checksums cover (RFC 8200
/// 8.1): source, destination, the upper-layer length (32 bits) and the next header.
#[inline]
pub fn ipv6_pseudo_header(src: u128, dst: u128, next_header: u8, length: u32) -> u64 {
    let mut sum = u64::from(next_header) + u64::from(length >> 16) + u64::from(length & 0xffff);
    for shift in (0..128).step_by(16) {
        sum += u64::from((src >> shift) as u16) + u64::from((dst >> shift) as u16);
    }
    sum
}

/// Checksum of an IPv4 header whose checksum field holds zero.
#[inline]
pub fn ipv4_header(header: &[u8]) -> u16 {
    checksum(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 1071 section 3 example: words 0001 f203 f4f5 f6f7 sum to 0xddf2.
    #[test]
    fn rfc1071_example_sum() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum_words(&data, 0)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    // A captured IPv4 header (Wikipedia's worked example): checksum 0xb861.
    #[test]
    fn ipv4_header_example() {
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_header(&header), 0xb861);
        header[10] = 0xb8;
        header[11] = 0x61;
        assert!(verifies(&header));
    }

    #[test]
    fn fold_handles_every_carry() {
        assert_eq!(fold(0), 0);
        assert_eq!(fold(0xffff), 0xffff);
        assert_eq!(fold(0x1_0000), 1);
        assert_eq!(fold(0x1_fffe), 0xffff);
        assert_eq!(fold(0x1_ffff), 1);
        assert_eq!(fold(u64::MAX), 0xffff);
        assert_eq!(fold(0x0001_0002_0003_0004), 10);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(fold(sum_words(&[0x12, 0x34, 0x56], 0)), 0x1234 + 0x5600);
    }

    #[test]
    fn incremental_matches_full_on_the_example_header() {
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let updated = update_u32(0xb861, 0xc0a8_00c7, 0x0a00_0002);
        header[16..20].copy_from_slice(&[10, 0, 0, 2]);
        header[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(updated, ipv4_header(&header));
        let ttl = update_u16(updated, 0x4011, 0x3f11);
        header[8] = 0x3f;
        assert_eq!(ttl, ipv4_header(&header));
    }

    #[test]
    fn delta_equals_field_by_field_updates() {
        let mut delta = Delta::default();
        delta.replace_u16(0x4011, 0x3f11);
        delta.replace_u32(0xc0a8_00c7, 0x0a00_0002);
        let stepwise = update_u32(update_u16(0xb861, 0x4011, 0x3f11), 0xc0a8_00c7, 0x0a00_0002);
        assert_eq!(delta.apply(0xb861), stepwise);
        assert_eq!(Delta::default().apply(0xb861), 0xb861);
        assert_eq!(Delta::default().apply_udp(0), 0);
    }

    #[test]
    fn base_header_checksum_matches_the_generic_one() {
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_base_header(&header), 0xb861);
    }

    #[test]
    fn udp_zero_checksum_is_kept_and_zero_result_becomes_ffff() {
        assert_eq!(udp_update(0, |c| update_u16(c, 1, 2)), 0);
        assert_eq!(udp_update(0x1234, |_| 0), 0xffff);
        assert_eq!(udp_update(0x1234, |c| c), 0x1234);
    }

    proptest::proptest! {
        #[test]
        fn verifies_20_agrees_with_verifies(header: [u8; 20], fix: bool) {
            let mut header = header;
            if fix {
                header[10] = 0;
                header[11] = 0;
                let c = checksum(&header);
                header[10..12].copy_from_slice(&c.to_be_bytes());
            }
            proptest::prop_assert_eq!(verifies_20(&header), verifies(&header));
        }
    }

    /// The end-around carry, step by step: what [`fold`] must equal.
    fn fold_by_carries(mut sum: u64) -> u16 {
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    #[test]
    fn fold_edges() {
        for sum in [
            0,
            1,
            0xfffe,
            0xffff,
            0x10000,
            0x1fffe,
            0x1ffff,
            u64::MAX - 1,
            u64::MAX,
        ] {
            assert_eq!(fold(sum), fold_by_carries(sum), "{sum:#x}");
        }
    }

    proptest::proptest! {
        #[test]
        fn fold_is_the_end_around_carry(sum: u64, small in 0u64..0x4_0000) {
            proptest::prop_assert_eq!(fold(sum), fold_by_carries(sum));
            proptest::prop_assert_eq!(fold(small), fold_by_carries(small));
        }
    }
}
