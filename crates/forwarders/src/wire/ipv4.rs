//! IPv4 packets (RFC 791).

use core::net::Ipv4Addr;

use crate::Reason;
use crate::checksum::{self, Delta};
use crate::field::ipv4;

use super::{get_u16, get_u32, patch_u16, put_u16, put_u32};

/// A view of an IPv4 packet: the header (options included) and the payload up to the total
/// length (bytes after it, such as Ethernet padding, are outside [`Ipv4Packet::payload`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps `buffer` without checking it. The fixed fields (bytes 0..20) need 20 bytes;
    /// [`Ipv4Packet::header`] and [`Ipv4Packet::payload`] need what `new_checked` checks.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps `buffer`, checking in the header's own order: 20 bytes (`Truncated`), version 4
    /// (`BadIpVersion`), IHL at least 5 (`BadIpHeaderLength`) and within the buffer
    /// (`Truncated`), total length from the header length to the buffer's end
    /// (`BadIpTotalLength`). The checksum is not checked: see [`Ipv4Packet::verify_checksum`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Reason> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// The checks of [`Ipv4Packet::new_checked`].
    #[inline]
    pub fn check_len(&self) -> Result<(), Reason> {
        let len = self.buffer.as_ref().len();
        if len < ipv4::MIN_HEADER_LEN {
            return Err(Reason::Truncated);
        }
        if self.version() != 4 {
            return Err(Reason::BadIpVersion);
        }
        let header_len = self.header_len();
        if header_len < ipv4::MIN_HEADER_LEN {
            return Err(Reason::BadIpHeaderLength);
        }
        if len < header_len {
            return Err(Reason::Truncated);
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len || total_len > len {
            return Err(Reason::BadIpTotalLength);
        }
        Ok(())
    }

    /// The wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version (4).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[ipv4::VERSION_IHL] >> 4
    }

    /// Header length in bytes (IHL * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[ipv4::VERSION_IHL] & 0x0f) * 4
    }

    /// Type of service (DSCP and ECN).
    #[inline]
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[ipv4::TOS]
    }

    /// Total length: header and payload, in bytes.
    #[inline]
    pub fn total_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), ipv4::TOTAL_LEN.start)
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), ipv4::IDENTIFICATION.start)
    }

    /// The flags and fragment offset word.
    #[inline]
    pub fn flags_fragment(&self) -> u16 {
        get_u16(self.buffer.as_ref(), ipv4::FLAGS_FRAGMENT.start)
    }

    /// Don't fragment.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.flags_fragment() & ipv4::FLAG_DF != 0
    }

    /// More fragments.
    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flags_fragment() & ipv4::FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (self.flags_fragment() & ipv4::OFFSET_MASK) * 8
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[ipv4::TTL]
    }

    /// Protocol of the payload ([`super::protocol`]).
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[ipv4::PROTOCOL]
    }

    /// The stored header checksum.
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), ipv4::CHECKSUM.start)
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from_bits(get_u32(self.buffer.as_ref(), ipv4::SOURCE.start))
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from_bits(get_u32(self.buffer.as_ref(), ipv4::DESTINATION.start))
    }

    /// The header, options included.
    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// The payload: from the header's end to the total length.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }

    /// True when the header checksum verifies.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        match self.buffer.as_ref().first_chunk::<20>() {
            Some(fixed) if self.header_len() == ipv4::MIN_HEADER_LEN => {
                checksum::verifies_20(fixed)
            }
            _ => checksum::verifies(self.header()),
        }
    }

    /// Unfolded sum of the pseudo-header the payload's TCP or UDP checksum covers.
    #[inline]
    pub fn pseudo_header_sum(&self) -> u64 {
        let l4_len = usize::from(self.total_len()).saturating_sub(self.header_len());
        checksum::ipv4_pseudo_header(
            self.src_addr().to_bits(),
            self.dst_addr().to_bits(),
            self.protocol(),
            l4_len as u16,
        )
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the version nibble.
    #[inline]
    pub fn set_version(&mut self, version: u8) {
        let b = &mut self.buffer.as_mut()[ipv4::VERSION_IHL];
        *b = (*b & 0x0f) | (version << 4);
    }

    /// Sets the header length, in bytes (a multiple of 4, 20 to 60).
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        let b = &mut self.buffer.as_mut()[ipv4::VERSION_IHL];
        *b = (*b & 0xf0) | ((len / 4) as u8 & 0x0f);
    }

    /// Sets the type of service.
    #[inline]
    pub fn set_tos(&mut self, tos: u8) {
        self.buffer.as_mut()[ipv4::TOS] = tos;
    }

    /// Sets the total length.
    #[inline]
    pub fn set_total_len(&mut self, len: u16) {
        put_u16(self.buffer.as_mut(), ipv4::TOTAL_LEN.start, len);
    }

    /// Sets the identification.
    #[inline]
    pub fn set_ident(&mut self, ident: u16) {
        put_u16(self.buffer.as_mut(), ipv4::IDENTIFICATION.start, ident);
    }

    /// Sets the flags and fragment offset word.
    #[inline]
    pub fn set_flags_fragment(&mut self, word: u16) {
        put_u16(self.buffer.as_mut(), ipv4::FLAGS_FRAGMENT.start, word);
    }

    /// Sets or clears don't fragment.
    #[inline]
    pub fn set_dont_frag(&mut self, value: bool) {
        let word = self.flags_fragment() & !ipv4::FLAG_DF;
        self.set_flags_fragment(word | if value { ipv4::FLAG_DF } else { 0 });
    }

    /// Sets or clears more fragments.
    #[inline]
    pub fn set_more_frags(&mut self, value: bool) {
        let word = self.flags_fragment() & !ipv4::FLAG_MF;
        self.set_flags_fragment(word | if value { ipv4::FLAG_MF } else { 0 });
    }

    /// Sets the fragment offset, in bytes (a multiple of 8).
    #[inline]
    pub fn set_frag_offset(&mut self, offset: u16) {
        let word = self.flags_fragment() & !ipv4::OFFSET_MASK;
        self.set_flags_fragment(word | ((offset / 8) & ipv4::OFFSET_MASK));
    }

    /// Sets the time to live (the checksum is not touched).
    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[ipv4::TTL] = ttl;
    }

    /// Sets the protocol.
    #[inline]
    pub fn set_protocol(&mut self, protocol: u8) {
        self.buffer.as_mut()[ipv4::PROTOCOL] = protocol;
    }

    /// Stores `checksum` as the header checksum.
    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        put_u16(self.buffer.as_mut(), ipv4::CHECKSUM.start, checksum);
    }

    /// Sets the source address (the checksum is not touched).
    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        put_u32(self.buffer.as_mut(), ipv4::SOURCE.start, addr.to_bits());
    }

    /// Sets the destination address (the checksum is not touched).
    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        put_u32(
            self.buffer.as_mut(),
            ipv4::DESTINATION.start,
            addr.to_bits(),
        );
    }

    /// Computes and stores the header checksum.
    #[inline(always)]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = match self.buffer.as_ref().first_chunk::<20>() {
            Some(fixed) if self.header_len() == ipv4::MIN_HEADER_LEN => {
                checksum::ipv4_base_header(fixed)
            }
            _ => checksum::checksum(self.header()),
        };
        self.set_checksum(sum);
    }

    /// Applies the header word changes recorded in `delta` to the stored checksum.
    #[inline(always)]
    pub fn apply_checksum_delta(&mut self, delta: Delta) {
        patch_u16(self.buffer.as_mut(), ipv4::CHECKSUM.start, |c| {
            delta.apply(c)
        });
    }

    /// The forwarding step (RFC 1812 5.3.1): TTL - 1, header checksum patched (RFC 1624);
    /// returns the new TTL. The caller checked the TTL is above 1 (a TTL of 0 wraps to 255).
    #[inline(always)]
    pub fn decrement_ttl(&mut self) -> u8 {
        let mut delta = Delta::default();
        let ttl = self.decrement_ttl_noting(&mut delta);
        self.apply_checksum_delta(delta);
        ttl
    }

    /// [`Ipv4Packet::decrement_ttl`] with the checksum change recorded in `delta`, for a
    /// rewrite that changes more header words and patches the checksum once; the new TTL.
    #[inline(always)]
    pub fn decrement_ttl_noting(&mut self, delta: &mut Delta) -> u8 {
        let bytes = self.buffer.as_mut();
        // TTL and protocol share one checksum word.
        let word = get_u16(bytes, ipv4::TTL_PROTOCOL.start);
        let ttl = bytes[ipv4::TTL].wrapping_sub(1);
        bytes[ipv4::TTL] = ttl;
        delta.replace_u16(word, word.wrapping_sub(0x0100));
        ttl
    }

    /// Sets the source address and patches the header checksum; returns the old address
    /// (for the transport checksum's pseudo-header, see `TcpPacket::patch_pseudo_header`).
    #[inline]
    pub fn set_src_addr_patching(&mut self, addr: Ipv4Addr) -> Ipv4Addr {
        let mut delta = Delta::default();
        let old = self.set_src_addr_noting(addr, &mut delta);
        self.apply_checksum_delta(delta);
        old
    }

    /// Sets the destination address and patches the header checksum; returns the old one.
    #[inline]
    pub fn set_dst_addr_patching(&mut self, addr: Ipv4Addr) -> Ipv4Addr {
        let mut delta = Delta::default();
        let old = self.set_dst_addr_noting(addr, &mut delta);
        self.apply_checksum_delta(delta);
        old
    }

    /// Sets the source address, recording the checksum change in `delta`; the old address.
    #[inline]
    pub fn set_src_addr_noting(&mut self, addr: Ipv4Addr, delta: &mut Delta) -> Ipv4Addr {
        let old = self.src_addr();
        self.set_src_addr(addr);
        delta.replace_u32(old.to_bits(), addr.to_bits());
        old
    }

    /// Sets the destination address, recording the checksum change in `delta`; the old one.
    #[inline]
    pub fn set_dst_addr_noting(&mut self, addr: Ipv4Addr, delta: &mut Delta) -> Ipv4Addr {
        let old = self.dst_addr();
        self.set_dst_addr(addr);
        delta.replace_u32(old.to_bits(), addr.to_bits());
        old
    }

    /// The payload, writable (header end to total length).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &mut self.buffer.as_mut()[range]
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv4Packet<&'a T> {
    /// [`Ipv4Packet::payload`] borrowed from the buffer rather than the view, so it
    /// outlives the view (for parsing nested headers).
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &self.buffer.as_ref()[range]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Ipv4Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}
