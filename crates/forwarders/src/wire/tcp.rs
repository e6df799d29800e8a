//! TCP segments (RFC 9293).

use core::net::{Ipv4Addr, Ipv6Addr};

use crate::Reason;
use crate::checksum::{self, Delta};
use crate::field::{ipv4, tcp};

use super::{get_u16, get_u32, patch_u16, put_u16, put_u32};

/// TCP flag bits (byte 13).
pub mod flags {
    /// No more data from the sender.
    pub const FIN: u8 = 0x01;
    /// Synchronise sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push.
    pub const PSH: u8 = 0x08;
    /// The acknowledgement number is valid.
    pub const ACK: u8 = 0x10;
    /// The urgent pointer is valid.
    pub const URG: u8 = 0x20;
}

/// A view of a TCP segment. The buffer is the whole segment (the IPv4 payload, as
/// `Ipv4Packet::payload` gives it): the checksum covers all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps `buffer` without checking it (fixed fields need 20 bytes, the payload what
    /// `new_checked` checks).
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// Wraps `buffer`; refuses one shorter than 20 bytes (`Truncated`) or whose data offset
    /// is below 5 words or beyond the buffer (`BadTcpHeader`).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Reason> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// The checks of [`TcpPacket::new_checked`].
    #[inline]
    pub fn check_len(&self) -> Result<(), Reason> {
        let len = self.buffer.as_ref().len();
        if len < tcp::MIN_HEADER_LEN {
            return Err(Reason::Truncated);
        }
        let header_len = self.header_len();
        if header_len < tcp::MIN_HEADER_LEN || header_len > len {
            return Err(Reason::BadTcpHeader);
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
        get_u16(self.buffer.as_ref(), tcp::SRC_PORT.start)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), tcp::DST_PORT.start)
    }

    /// Sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        get_u32(self.buffer.as_ref(), tcp::SEQ_NUMBER.start)
    }

    /// Acknowledgement number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        get_u32(self.buffer.as_ref(), tcp::ACK_NUMBER.start)
    }

    /// Header length in bytes (data offset * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[tcp::DATA_OFFSET] >> 4) * 4
    }

    /// The flag bits ([`flags`]).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[tcp::FLAGS]
    }

    /// FIN.
    #[inline]
    pub fn fin(&self) -> bool {
        self.flags() & flags::FIN != 0
    }

    /// SYN.
    #[inline]
    pub fn syn(&self) -> bool {
        self.flags() & flags::SYN != 0
    }

    /// RST.
    #[inline]
    pub fn rst(&self) -> bool {
        self.flags() & flags::RST != 0
    }

    /// PSH.
    #[inline]
    pub fn psh(&self) -> bool {
        self.flags() & flags::PSH != 0
    }

    /// ACK.
    #[inline]
    pub fn ack(&self) -> bool {
        self.flags() & flags::ACK != 0
    }

    /// URG.
    #[inline]
    pub fn urg(&self) -> bool {
        self.flags() & flags::URG != 0
    }

    /// Window size.
    #[inline]
    pub fn window_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), tcp::WINDOW.start)
    }

    /// The stored checksum.
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), tcp::CHECKSUM.start)
    }

    /// Urgent pointer.
    #[inline]
    pub fn urgent_at(&self) -> u16 {
        get_u16(self.buffer.as_ref(), tcp::URGENT.start)
    }

    /// The bytes after the header (options included in the header).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// True when the checksum over the pseudo-header (`src`, `dst`) and the segment verifies.
    #[inline]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let segment = self.buffer.as_ref();
        checksum::fold(checksum::sum_words(
            segment,
            pseudo_header(src, dst, segment),
        )) == 0xffff
    }
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// [`TcpPacket::verify_checksum`] over the IPv6 pseudo-header.
    #[inline]
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let segment = self.buffer.as_ref();
        checksum::fold(checksum::sum_words(
            segment,
            pseudo_header_v6(src, dst, segment),
        )) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// [`TcpPacket::fill_checksum`] over the IPv6 pseudo-header.
    #[inline]
    pub fn fill_checksum_v6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let segment = self.buffer.as_ref();
        let sum = !checksum::fold(checksum::sum_words(
            segment,
            pseudo_header_v6(src, dst, segment),
        ));
        self.set_checksum(sum);
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
fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, segment: &[u8]) -> u64 {
    checksum::ipv6_pseudo_header(
        src.to_bits(),
        dst.to_bits(),
        ipv4::PROTO_TCP,
        segment.len() as u32,
    )
}

/// The pseudo-header sum for `segment` between `src` and `dst`.
#[inline]
fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) -> u64 {
    checksum::ipv4_pseudo_header(
        src.to_bits(),
        dst.to_bits(),
        ipv4::PROTO_TCP,
        segment.len() as u16,
    )
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Sets the source port (the checksum is not touched).
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        put_u16(self.buffer.as_mut(), tcp::SRC_PORT.start, port);
    }

    /// Sets the destination port (the checksum is not touched).
    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        put_u16(self.buffer.as_mut(), tcp::DST_PORT.start, port);
    }

    /// Sets the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, seq: u32) {
        put_u32(self.buffer.as_mut(), tcp::SEQ_NUMBER.start, seq);
    }

    /// Sets the acknowledgement number.
    #[inline]
    pub fn set_ack_number(&mut self, ack: u32) {
        put_u32(self.buffer.as_mut(), tcp::ACK_NUMBER.start, ack);
    }

    /// Sets the header length in bytes (a multiple of 4, 20 to 60); the reserved bits clear.
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        self.buffer.as_mut()[tcp::DATA_OFFSET] = ((len / 4) as u8) << 4;
    }

    /// Sets the flag bits.
    #[inline]
    pub fn set_flags(&mut self, bits: u8) {
        self.buffer.as_mut()[tcp::FLAGS] = bits;
    }

    /// Sets the window size.
    #[inline]
    pub fn set_window_len(&mut self, window: u16) {
        put_u16(self.buffer.as_mut(), tcp::WINDOW.start, window);
    }

    /// Stores `checksum`.
    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        put_u16(self.buffer.as_mut(), tcp::CHECKSUM.start, checksum);
    }

    /// Sets the urgent pointer.
    #[inline]
    pub fn set_urgent_at(&mut self, at: u16) {
        put_u16(self.buffer.as_mut(), tcp::URGENT.start, at);
    }

    /// Computes and stores the checksum over the pseudo-header (`src`, `dst`) and segment.
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let segment = self.buffer.as_ref();
        let sum = !checksum::fold(checksum::sum_words(
            segment,
            pseudo_header(src, dst, segment),
        ));
        self.set_checksum(sum);
    }

    /// Applies the changes recorded in `delta` to the stored checksum.
    #[inline]
    pub fn apply_checksum_delta(&mut self, delta: Delta) {
        patch_u16(self.buffer.as_mut(), tcp::CHECKSUM.start, |c| {
            delta.apply(c)
        });
    }

    /// Patches the checksum for a pseudo-header address changing from `old` to `new`
    /// (the IPv4 header's address was rewritten).
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

    /// The bytes after the header, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let at = self.header_len();
        &mut self.buffer.as_mut()[at..]
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> TcpPacket<&'a T> {
    /// [`TcpPacket::payload`] borrowed from the buffer rather than the view.
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        let at = self.header_len();
        &self.buffer.as_ref()[at..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for TcpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}
