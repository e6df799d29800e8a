//! IPv6 packets (RFC 8200) and a bounded walk over their extension headers.

use core::net::Ipv6Addr;

use crate::Reason;
use crate::checksum;
use crate::field::ipv6;
use crate::fragments::Fragmentation;

use super::{get_u16, get_u32, put_u16, put_u32};

/// At most this many extension headers are walked before the upper-layer header; a packet
/// with more is refused (`TooManyExtensionHeaders`), so a crafted chain costs a bounded walk.
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// A view of an IPv6 packet: the 40-byte fixed header and the payload up to the payload
/// length (bytes after it, such as Ethernet padding, are outside [`Ipv6Packet::payload`]).
/// There is no header checksum: the upper layers' checksums cover the addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps `buffer` without checking it (the fixed fields need 40 bytes).
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps `buffer`, checking 40 bytes (`Truncated`), version 6 (`BadIpVersion`), and
    /// a payload length within the buffer (`BadIpTotalLength`). A jumbogram (payload length
    /// 0 with a hop-by-hop jumbo option) is refused by the walker as a short payload.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Reason> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// The checks of [`Ipv6Packet::new_checked`].
    #[inline]
    pub fn check_len(&self) -> Result<(), Reason> {
        let len = self.buffer.as_ref().len();
        if len < ipv6::HEADER_LEN {
            return Err(Reason::Truncated);
        }
        if self.version() != 6 {
            return Err(Reason::BadIpVersion);
        }
        if ipv6::HEADER_LEN + usize::from(self.payload_len()) > len {
            return Err(Reason::BadIpTotalLength);
        }
        Ok(())
    }

    /// The wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn first_word(&self) -> u32 {
        get_u32(self.buffer.as_ref(), ipv6::VERSION_TC_FLOW.start)
    }

    /// Version (6).
    #[inline]
    pub fn version(&self) -> u8 {
        (self.first_word() >> 28) as u8
    }

    /// Traffic class (DSCP and ECN).
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (self.first_word() >> 20) as u8
    }

    /// Flow label (20 bits).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        self.first_word() & 0x000f_ffff
    }

    /// Payload length: extension headers and upper layer, in bytes.
    #[inline]
    pub fn payload_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), ipv6::PAYLOAD_LEN.start)
    }

    /// Next header: the first extension header or the upper-layer protocol.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[ipv6::NEXT_HEADER]
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[ipv6::HOP_LIMIT]
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        read_addr(self.buffer.as_ref(), ipv6::SOURCE.start)
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        read_addr(self.buffer.as_ref(), ipv6::DESTINATION.start)
    }

    /// The payload: from byte 40 to the payload length.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[ipv6::HEADER_LEN..self.end()]
    }

    fn end(&self) -> usize {
        ipv6::HEADER_LEN + usize::from(self.payload_len())
    }

    /// Walks the extension headers to the upper layer ([`walk_extension_headers`]).
    #[inline]
    pub fn upper_layer(&self) -> Result<UpperLayer, Reason> {
        walk_extension_headers(self.next_header(), self.payload())
    }

    /// Unfolded sum of the pseudo-header for an upper-layer `next_header` of `length` bytes.
    #[inline]
    pub fn pseudo_header_sum(&self, next_header: u8, length: u32) -> u64 {
        checksum::ipv6_pseudo_header(
            self.src_addr().to_bits(),
            self.dst_addr().to_bits(),
            next_header,
            length,
        )
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    fn set_first_word(&mut self, word: u32) {
        put_u32(self.buffer.as_mut(), ipv6::VERSION_TC_FLOW.start, word);
    }

    /// Sets the version nibble.
    #[inline]
    pub fn set_version(&mut self, version: u8) {
        let word = self.first_word() & 0x0fff_ffff;
        self.set_first_word(word | (u32::from(version) << 28));
    }

    /// Sets the traffic class.
    #[inline]
    pub fn set_traffic_class(&mut self, class: u8) {
        let word = self.first_word() & 0xf00f_ffff;
        self.set_first_word(word | (u32::from(class) << 20));
    }

    /// Sets the flow label (the low 20 bits of `label`).
    #[inline]
    pub fn set_flow_label(&mut self, label: u32) {
        let word = self.first_word() & 0xfff0_0000;
        self.set_first_word(word | (label & 0x000f_ffff));
    }

    /// Sets the payload length.
    #[inline]
    pub fn set_payload_len(&mut self, len: u16) {
        put_u16(self.buffer.as_mut(), ipv6::PAYLOAD_LEN.start, len);
    }

    /// Sets the next header.
    #[inline]
    pub fn set_next_header(&mut self, next: u8) {
        self.buffer.as_mut()[ipv6::NEXT_HEADER] = next;
    }

    /// Sets the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, hops: u8) {
        self.buffer.as_mut()[ipv6::HOP_LIMIT] = hops;
    }

    /// The forwarding step: hop limit - 1 (no header checksum to patch); the new value.
    /// The caller checked it is above 1.
    #[inline]
    pub fn decrement_hop_limit(&mut self) -> u8 {
        let hops = self.hop_limit().wrapping_sub(1);
        self.set_hop_limit(hops);
        hops
    }

    /// Sets the source address (upper-layer checksums are not touched).
    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[ipv6::SOURCE].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address (upper-layer checksums are not touched).
    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[ipv6::DESTINATION].copy_from_slice(&addr.octets());
    }

    /// The payload, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.end();
        &mut self.buffer.as_mut()[ipv6::HEADER_LEN..end]
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv6Packet<&'a T> {
    /// [`Ipv6Packet::payload`] borrowed from the buffer rather than the view.
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        let end = self.end();
        &self.buffer.as_ref()[ipv6::HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Ipv6Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

fn read_addr(bytes: &[u8], at: usize) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&bytes[at..at + 16]);
    Ipv6Addr::from(octets)
}

/// Where the extension headers end: the upper-layer protocol, its offset in the IPv6
/// payload, and the fragment header's verdict if one was present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer {
    /// The upper-layer protocol number (6, 17, 58, 4, 41, or anything else the walker does
    /// not know as an extension header).
    pub protocol: u8,
    /// Offset of the upper-layer header from the start of the IPv6 payload.
    pub offset: usize,
    /// `Whole` without a fragment header or with an atomic one (offset 0, M clear,
    /// RFC 6946); `First` or `Later` for a real fragment.
    pub fragmentation: Fragmentation,
    /// The fragment header's identification, if there was one.
    pub fragment_ident: Option<u32>,
}

/// Walks the extension headers of an IPv6 payload starting with `next_header`: hop-by-hop
/// options (first only), routing, destination options and fragment, at most
/// [`MAX_EXTENSION_HEADERS`] of them, each within `payload`.
///
/// Refuses: a header running past the payload (`Truncated`); hop-by-hop options anywhere
/// but first, or a routing header with segments left (`BadExtensionHeader`: the packet's
/// destination is then not its final one, and the transport checksum covers the final one);
/// more headers than the bound (`TooManyExtensionHeaders`). Fragments are reported, not
/// refused: the caller applies the policy (`Fragmentation::admit`). Stops at the first
/// protocol that is not one of the four (ESP and AH included: their payload is opaque).
///
/// Only the extension headers themselves must lie within `payload`, so the same walk serves
/// the quoted packet of an ICMPv6 error, which may stop anywhere after them.
pub fn walk_extension_headers(mut next_header: u8, payload: &[u8]) -> Result<UpperLayer, Reason> {
    let mut offset = 0usize;
    let mut fragmentation = Fragmentation::Whole;
    let mut fragment_ident = None;
    for index in 0..=MAX_EXTENSION_HEADERS {
        let header_len = match next_header {
            ipv6::NEXT_HOP_BY_HOP | ipv6::NEXT_ROUTING | ipv6::NEXT_DEST_OPTS => {
                let len_byte = *payload
                    .get(offset + ipv6::EXT_LEN)
                    .ok_or(Reason::Truncated)?;
                let len = (usize::from(len_byte) + 1) * 8;
                if payload.len() < offset + len {
                    return Err(Reason::Truncated);
                }
                if next_header == ipv6::NEXT_HOP_BY_HOP && index != 0 {
                    return Err(Reason::BadExtensionHeader);
                }
                if next_header == ipv6::NEXT_ROUTING
                    && payload[offset + ipv6::ROUTING_SEGMENTS_LEFT] != 0
                {
                    return Err(Reason::BadExtensionHeader);
                }
                len
            }
            ipv6::NEXT_FRAGMENT => {
                let header = payload
                    .get(offset..offset + ipv6::FRAGMENT_HEADER_LEN)
                    .ok_or(Reason::Truncated)?;
                let word = get_u16(header, ipv6::FRAGMENT_OFFSET_FLAGS.start);
                fragmentation = Fragmentation::from_ipv6_word(word);
                fragment_ident = Some(get_u32(header, ipv6::FRAGMENT_IDENT.start));
                ipv6::FRAGMENT_HEADER_LEN
            }
            protocol => {
                return Ok(UpperLayer {
                    protocol,
                    offset,
                    fragmentation,
                    fragment_ident,
                });
            }
        };
        if index == MAX_EXTENSION_HEADERS {
            break;
        }
        next_header = payload[offset + ipv6::EXT_NEXT_HEADER];
        offset += header_len;
        // A later fragment carries no upper-layer header to walk to.
        if let Fragmentation::Later { .. } = fragmentation {
            return Ok(UpperLayer {
                protocol: next_header,
                offset,
                fragmentation,
                fragment_ident,
            });
        }
    }
    Err(Reason::TooManyExtensionHeaders)
}
