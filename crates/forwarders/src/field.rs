//! Byte offsets of every header field this crate reads or writes, named once
//! (the smoltcp `wire` convention), plus checked big-endian accessors. The public
//! [`crate::wire`] views are built on this table.
//!
//! Offsets are relative to the start of their own header. The accessors return `None` instead of
//! panicking, so code handed a mismatched view still cannot index out of bounds.

use core::ops::Range;

pub(crate) type Field = Range<usize>;

/// Ethernet II.
pub(crate) mod eth {
    use super::Field;
    pub const DESTINATION: Field = 0..6;
    pub const SOURCE: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const HEADER_LEN: usize = 14;
    pub const ETHERTYPE_IPV4: u16 = 0x0800;
    pub const ETHERTYPE_IPV6: u16 = 0x86dd;
}

/// IPv6 (RFC 8200) and its extension headers.
pub(crate) mod ipv6 {
    use super::Field;
    /// Version (4 bits), traffic class (8), flow label (20).
    pub const VERSION_TC_FLOW: Field = 0..4;
    pub const PAYLOAD_LEN: Field = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SOURCE: Field = 8..24;
    pub const DESTINATION: Field = 24..40;
    pub const HEADER_LEN: usize = 40;
    pub const NEXT_HOP_BY_HOP: u8 = 0;
    pub const NEXT_TCP: u8 = 6;
    pub const NEXT_UDP: u8 = 17;
    pub const NEXT_IPV6: u8 = 41;
    pub const NEXT_ROUTING: u8 = 43;
    pub const NEXT_FRAGMENT: u8 = 44;
    pub const NEXT_ICMPV6: u8 = 58;
    pub const NEXT_DEST_OPTS: u8 = 60;
    /// Every extension header starts with next header and (except fragment) a length.
    pub const EXT_NEXT_HEADER: usize = 0;
    /// Length in 8-byte units, not counting the first 8 bytes.
    pub const EXT_LEN: usize = 1;
    /// Routing header: segments left.
    pub const ROUTING_SEGMENTS_LEFT: usize = 3;
    /// Fragment header: offset (13 bits, 8-byte units), 2 reserved bits, M flag.
    pub const FRAGMENT_OFFSET_FLAGS: Field = 2..4;
    pub const FRAGMENT_IDENT: Field = 4..8;
    pub const FRAGMENT_HEADER_LEN: usize = 8;
    pub const FRAGMENT_MORE: u16 = 0x0001;
    pub const FRAGMENT_OFFSET_MASK: u16 = 0xfff8;
    /// The smallest MTU every IPv6 link carries.
    pub const MIN_MTU: u16 = 1280;
}

/// ICMPv6 (RFC 4443).
pub(crate) mod icmpv6 {
    use super::Field;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    pub const REST_OF_HEADER: Field = 4..8;
    /// Packet Too Big: the MTU; Parameter Problem: the pointer.
    pub const MTU: Field = 4..8;
    pub const ECHO_ID: Field = 4..6;
    pub const ECHO_SEQ: Field = 6..8;
    pub const HEADER_LEN: usize = 8;
    pub const DEST_UNREACHABLE: u8 = 1;
    pub const PACKET_TOO_BIG: u8 = 2;
    pub const TIME_EXCEEDED: u8 = 3;
    pub const PARAM_PROBLEM: u8 = 4;
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;
    pub const CODE_HOP_LIMIT_EXCEEDED: u8 = 0;
}

/// IPv4 (RFC 791).
pub(crate) mod ipv4 {
    use super::Field;
    pub const VERSION_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const TOTAL_LEN: Field = 2..4;
    pub const IDENTIFICATION: Field = 4..6;
    pub const FLAGS_FRAGMENT: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    /// TTL and protocol share one 16-bit checksum word.
    pub const TTL_PROTOCOL: Field = 8..10;
    pub const CHECKSUM: Field = 10..12;
    pub const SOURCE: Field = 12..16;
    pub const DESTINATION: Field = 16..20;
    pub const MIN_HEADER_LEN: usize = 20;
    pub const FLAG_DF: u16 = 0x4000;
    pub const FLAG_MF: u16 = 0x2000;
    pub const OFFSET_MASK: u16 = 0x1fff;
    pub const PROTO_ICMP: u8 = 1;
    pub const PROTO_IPIP: u8 = 4;
    pub const PROTO_TCP: u8 = 6;
    pub const PROTO_UDP: u8 = 17;
}

/// TCP (RFC 9293).
pub(crate) mod tcp {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUMBER: Field = 4..8;
    pub const ACK_NUMBER: Field = 8..12;
    /// Data offset in the high nibble, in 32-bit words.
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
    pub const MIN_HEADER_LEN: usize = 20;
}

/// UDP (RFC 768).
pub(crate) mod udp {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
    pub const HEADER_LEN: usize = 8;
}

/// ICMPv4 (RFC 792).
pub(crate) mod icmp {
    use super::Field;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    /// Echo identifier; for "fragmentation needed" bytes 6..8 hold the next-hop MTU.
    pub const ECHO_ID: Field = 4..6;
    pub const ECHO_SEQ: Field = 6..8;
    pub const REST_OF_HEADER: Field = 4..8;
    pub const NEXT_HOP_MTU: Field = 6..8;
    pub const HEADER_LEN: usize = 8;
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const CODE_FRAG_NEEDED: u8 = 4;
    pub const CODE_TTL_EXCEEDED: u8 = 0;
}

/// Reads a big-endian u16 at `field` within `bytes`.
#[inline]
pub(crate) fn read_u16(bytes: &[u8], field: Field) -> Option<u16> {
    let word = bytes.get(field)?.first_chunk::<2>()?;
    Some(u16::from_be_bytes(*word))
}

/// Reads a big-endian u32 at `field` within `bytes`.
#[inline]
pub(crate) fn read_u32(bytes: &[u8], field: Field) -> Option<u32> {
    let word = bytes.get(field)?.first_chunk::<4>()?;
    Some(u32::from_be_bytes(*word))
}

/// Writes a big-endian u16 at `field`; `None` if it does not fit.
#[inline]
pub(crate) fn write_u16(bytes: &mut [u8], field: Field, value: u16) -> Option<()> {
    let word = bytes.get_mut(field)?.first_chunk_mut::<2>()?;
    *word = value.to_be_bytes();
    Some(())
}

/// Writes a big-endian u32 at `field`; `None` if it does not fit.
#[inline]
pub(crate) fn write_u32(bytes: &mut [u8], field: Field, value: u32) -> Option<()> {
    let word = bytes.get_mut(field)?.first_chunk_mut::<4>()?;
    *word = value.to_be_bytes();
    Some(())
}

/// `field` moved by `base` bytes: a header field addressed from the frame start.
#[inline]
pub(crate) const fn at(base: usize, field: Field) -> Field {
    base + field.start..base + field.end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_read_and_write_big_endian_and_refuse_out_of_bounds() {
        let mut bytes = [0u8; 8];
        write_u16(&mut bytes, 0..2, 0x1234).unwrap();
        write_u32(&mut bytes, 2..6, 0xdead_beef).unwrap();
        assert_eq!(bytes, [0x12, 0x34, 0xde, 0xad, 0xbe, 0xef, 0, 0]);
        assert_eq!(read_u16(&bytes, 0..2), Some(0x1234));
        assert_eq!(read_u32(&bytes, 2..6), Some(0xdead_beef));
        assert_eq!(read_u16(&bytes, 7..9), None);
        assert_eq!(write_u32(&mut bytes, 6..10, 1), None);
        assert_eq!(at(14, 2..4), 16..18);
    }
}
