//! UDP datagrams (RFC 768).

use core::net::{Ipv4Addr, Ipv6Addr};

use crate::Reason;
use crate::checksum::{self, Delta};
use crate::field::{ipv4, udp};

use super::{get_u16, patch_u16, put_u16};

/// A view of a UDP datagram: the header and the payload up to the length field.
///
/// A stored checksum of 0 means "none" (RFC 768): it verifies, and the patching setters
/// keep it 0; a computed 0 is stored as 0xffff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps `buffer` without checking it (fixed fields need 8 bytes, the payload what
    /// `new_checked` checks).
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Wraps `buffer`; refuses one shorter than 8 bytes (`Truncated`) or whose length field
    /// is below 8 or beyond the buffer (`BadUdpLength`).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Reason> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// The checks of [`UdpPacket::new_checked`].
    #[inline]
    pub fn check_len(&self) -> Result<(), Reason> {
        let len = self.buffer.as_ref().len();
        if len < udp::HEADER_LEN {
            return Err(Reason::Truncated);
        }
        let length = usize::from(self.len());
        if length < udp::HEADER_LEN || length > len {
            return Err(Reason::BadUdpLength);
        }
        Ok(())
    }

    /// The wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), udp::SRC_PORT.start)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), udp::DST_PORT.start)
    }

    /// The length field: header and payload, in bytes.
    #[inline]
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), udp::LENGTH.start)
    }

    /// The stored checksum (0: none).
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), udp::CHECKSUM.start)
    }

    /// The payload: from the header's end to the length field.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[udp::HEADER_LEN..usize::from(self.len())]
    }

    /// True when the checksum is 0 (none) or verifies over the pseudo-header and datagram.
    #[inline]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let datagram = self.datagram();
        checksum::fold(checksum::sum_words(
            datagram,
            pseudo_header(src, dst, datagram),
        )) == 0xffff
    }

    /// Header and payload, as the length field says.
    #[inline]
    fn datagram(&self) -> &[u8] {
        &self.buffer.as_ref()[..usize::from(self.len())]
    }
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// The checksum over the IPv6 pseudo-header verifies. Unlike IPv4, a stored 0 does not
    /// (RFC 8200 8.1: UDP over IPv6 must carry a checksum).
    #[inline]
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        if self.checksum() == 0 {
            return false;
        }
        let datagram = self.datagram();
        checksum::fold(checksum::sum_words(
            datagram,
            pseudo_header_v6(src, dst, datagram),
        )) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// [`UdpPacket::fill_checksum`] over the IPv6 pseudo-header (a computed 0 is stored as
    /// 0xffff, so the result is never the invalid 0).
    #[inline]
    pub fn fill_checksum_v6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let datagram = self.datagram();
        let sum = !checksum::fold(checksum::sum_words(
            datagram,
            pseudo_header_v6(src, dst, datagram),
        ));
        self.set_checksum(if sum == 0 { 0xffff } else { sum });
    }

    /// Patches the checksum for an IPv6 pseudo-header address changing from `old` to `new`.
    #[inline]
    pub fn patch_pseudo_header_v6(&mut self, old: Ipv6Addr, new: Ipv6Addr) {
        let mut delta = Delta::default();
        delta.replace_u128(old.to_bits(), new.to_bits());
        self.apply_checksum_delta(delta);
    }
}

#[inline]
fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, datagram: &[u8]) -> u64 {
    checksum::ipv6_pseudo_header(
        src.to_bits(),
        dst.to_bits(),
        ipv4::PROTO_UDP,
        datagram.len() as u32,
    )
}

#[inline]
fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, datagram: &[u8]) -> u64 {
    checksum::ipv4_pseudo_header(
        src.to_bits(),
        dst.to_bits(),
        ipv4::PROTO_UDP,
        datagram.len() as u16,
    )
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the source port (the checksum is not touched).
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        put_u16(self.buffer.as_mut(), udp::SRC_PORT.start, port);
    }

    /// Sets the destination port (the checksum is not touched).
    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        put_u16(self.buffer.as_mut(), udp::DST_PORT.start, port);
    }

    /// Sets the length field.
    #[inline]
    pub fn set_len(&mut self, len: u16) {
        put_u16(self.buffer.as_mut(), udp::LENGTH.start, len);
    }

    /// Stores `checksum`.
    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        put_u16(self.buffer.as_mut(), udp::CHECKSUM.start, checksum);
    }

    /// Computes and stores the checksum (a computed 0 is stored as 0xffff).
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let datagram = self.datagram();
        let sum = !checksum::fold(checksum::sum_words(
            datagram,
            pseudo_header(src, dst, datagram),
        ));
        self.set_checksum(if sum == 0 { 0xffff } else { sum });
    }

    /// Applies the changes recorded in `delta` to the stored checksum (0 stays 0).
    #[inline]
    pub fn apply_checksum_delta(&mut self, delta: Delta) {
        patch_u16(self.buffer.as_mut(), udp::CHECKSUM.start, |c| {
            delta.apply_udp(c)
        });
    }

    /// Patches the checksum for a pseudo-header address changing from `old` to `new`.
    #[inline]
    pub fn patch_pseudo_header(&mut self, old: Ipv4Addr, new: Ipv4Addr) {
        let mut delta = Delta::default();
        delta.replace_u32(old.to_bits(), new.to_bits());
        self.apply_checksum_delta(delta);
    }

    /// Sets the source port and patches the checksum.
    #[inline]
    pub fn set_src_port_patching(&mut self, port: u16) {
        let mut delta = Delta::default();
        delta.replace_u16(self.src_port(), port);
        self.set_src_port(port);
        self.apply_checksum_delta(delta);
    }

    /// Sets the destination port and patches the checksum.
    #[inline]
    pub fn set_dst_port_patching(&mut self, port: u16) {
        let mut delta = Delta::default();
        delta.replace_u16(self.dst_port(), port);
        self.set_dst_port(port);
        self.apply_checksum_delta(delta);
    }

    /// The payload, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        &mut self.buffer.as_mut()[udp::HEADER_LEN..end]
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> UdpPacket<&'a T> {
    /// [`UdpPacket::payload`] borrowed from the buffer rather than the view.
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        let end = usize::from(self.len());
        &self.buffer.as_ref()[udp::HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for UdpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}
