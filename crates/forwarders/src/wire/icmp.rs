//! ICMPv4 messages (RFC 792).

use crate::Reason;
use crate::checksum;
use crate::field::icmp;

use super::{get_u16, get_u32, put_u16, put_u32};

/// A view of an ICMPv4 message: type, code, checksum, the 4 type-specific bytes, and the
/// data (for errors, the quoted datagram). The checksum covers the whole buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// Wraps `buffer` without checking it (accessors need 8 bytes).
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        IcmpPacket { buffer }
    }

    /// Wraps `buffer`; refuses one shorter than the 8-byte header (`Truncated`).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Reason> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// The check of [`IcmpPacket::new_checked`].
    #[inline]
    pub fn check_len(&self) -> Result<(), Reason> {
        if self.buffer.as_ref().len() < icmp::HEADER_LEN {
            return Err(Reason::Truncated);
        }
        Ok(())
    }

    /// The wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Message type ([`super::icmp_type`]).
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[icmp::TYPE]
    }

    /// Message code.
    #[inline]
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[icmp::CODE]
    }

    /// The stored checksum.
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), icmp::CHECKSUM.start)
    }

    /// Bytes 4..8: echo identifier and sequence, next-hop MTU, gateway, or zero.
    #[inline]
    pub fn rest_of_header(&self) -> u32 {
        get_u32(self.buffer.as_ref(), icmp::REST_OF_HEADER.start)
    }

    /// Echo identifier (echo request and reply).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), icmp::ECHO_ID.start)
    }

    /// Echo sequence number (echo request and reply).
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        get_u16(self.buffer.as_ref(), icmp::ECHO_SEQ.start)
    }

    /// Next-hop MTU of a "fragmentation needed" (RFC 1191).
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        get_u16(self.buffer.as_ref(), icmp::NEXT_HOP_MTU.start)
    }

    /// The bytes after the header (an error's quoted datagram).
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[icmp::HEADER_LEN..]
    }

    /// True when the checksum over the whole message verifies.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::verifies(self.buffer.as_ref())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    /// Sets the message type.
    #[inline]
    pub fn set_msg_type(&mut self, kind: u8) {
        self.buffer.as_mut()[icmp::TYPE] = kind;
    }

    /// Sets the message code.
    #[inline]
    pub fn set_msg_code(&mut self, code: u8) {
        self.buffer.as_mut()[icmp::CODE] = code;
    }

    /// Stores `checksum`.
    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        put_u16(self.buffer.as_mut(), icmp::CHECKSUM.start, checksum);
    }

    /// Sets bytes 4..8.
    #[inline]
    pub fn set_rest_of_header(&mut self, rest: u32) {
        put_u32(self.buffer.as_mut(), icmp::REST_OF_HEADER.start, rest);
    }

    /// Sets the echo identifier.
    #[inline]
    pub fn set_echo_ident(&mut self, ident: u16) {
        put_u16(self.buffer.as_mut(), icmp::ECHO_ID.start, ident);
    }

    /// Sets the echo sequence number.
    #[inline]
    pub fn set_echo_seq_no(&mut self, seq: u16) {
        put_u16(self.buffer.as_mut(), icmp::ECHO_SEQ.start, seq);
    }

    /// Sets the next-hop MTU (bytes 4..6 stay as they are; RFC 1191 wants them zero).
    #[inline]
    pub fn set_next_hop_mtu(&mut self, mtu: u16) {
        put_u16(self.buffer.as_mut(), icmp::NEXT_HOP_MTU.start, mtu);
    }

    /// The bytes after the header, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[icmp::HEADER_LEN..]
    }

    /// Computes and stores the checksum over the whole message.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(sum);
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> IcmpPacket<&'a T> {
    /// [`IcmpPacket::data`] borrowed from the buffer rather than the view.
    #[inline]
    pub fn into_data(self) -> &'a [u8] {
        &self.buffer.as_ref()[icmp::HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for IcmpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}
