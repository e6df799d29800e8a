//! ICMPv6 messages (RFC 4443). Unlike ICMPv4, the checksum covers the IPv6 pseudo-header.

use core::net::Ipv6Addr;

use crate::Reason;
use crate::checksum;
use crate::field::{icmpv6, ipv6};

use super::{get_u16, get_u32, put_u16, put_u32};

/// A view of an ICMPv6 message: type, code, checksum, the 4 type-specific bytes (echo
/// identifier and sequence, Packet Too Big MTU, Parameter Problem pointer, or unused), and
/// the data (for errors, the quoted packet). The checksum covers the whole buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv6Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// Wraps `buffer` without checking it (accessors need 8 bytes).
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Icmpv6Packet { buffer }
    }

    /// Wraps `buffer`; refuses one shorter than the 8-byte header (`Truncated`).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Reason> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// The check of [`Icmpv6Packet::new_checked`].
    #[inline]
    pub fn check_len(&self) -> Result<(), Reason> {
        if self.buffer.as_ref().len() < icmpv6::HEADER_LEN {
            return Err(Reason::Truncated);
        }
        Ok(())
    }

    /// The wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Message type ([`super::icmpv6_type`]).
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[icmpv6::TYPE]
    }

    /// Message code.
    #[inline]
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[icmpv6::CODE]
    }

    /// True for an error message (types below 128: destination unreachable, packet too
    /// big, time exceeded, parameter problem, and unassigned ones).
    #[inline]
    pub fn is_error(&self) -> bool {
        self.msg_type() & 0x80 == 0
    }

    /// The stored checksum.
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), icmpv6::CHECKSUM.start)
    }

    /// Bytes 4..8.
    #[inline]
    pub fn rest_of_header(&self) -> u32 {
        get_u32(self.buffer.as_ref(), icmpv6::REST_OF_HEADER.start)
    }

    /// The MTU of a Packet Too Big (type 2).
    #[inline]
    pub fn mtu(&self) -> u32 {
        get_u32(self.buffer.as_ref(), icmpv6::MTU.start)
    }

    /// Echo identifier (echo request and reply).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), icmpv6::ECHO_ID.start)
    }

    /// Echo sequence number (echo request and reply).
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        get_u16(self.buffer.as_ref(), icmpv6::ECHO_SEQ.start)
    }

    /// The bytes after the header (an error's quoted packet).
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[icmpv6::HEADER_LEN..]
    }

    /// True when the checksum over the pseudo-header (`src`, `dst`) and message verifies.
    #[inline]
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let message = self.buffer.as_ref();
        checksum::fold(checksum::sum_words(
            message,
            pseudo_header(src, dst, message),
        )) == 0xffff
    }
}

/// The pseudo-header sum for an ICMPv6 `message` between `src` and `dst`.
#[inline]
fn pseudo_header(src: Ipv6Addr, dst: Ipv6Addr, message: &[u8]) -> u64 {
    checksum::ipv6_pseudo_header(
        src.to_bits(),
        dst.to_bits(),
        ipv6::NEXT_ICMPV6,
        message.len() as u32,
    )
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    /// Sets the message type.
    #[inline]
    pub fn set_msg_type(&mut self, kind: u8) {
        self.buffer.as_mut()[icmpv6::TYPE] = kind;
    }

    /// Sets the message code.
    #[inline]
    pub fn set_msg_code(&mut self, code: u8) {
        self.buffer.as_mut()[icmpv6::CODE] = code;
    }

    /// Stores `checksum`.
    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        put_u16(self.buffer.as_mut(), icmpv6::CHECKSUM.start, checksum);
    }

    /// Sets bytes 4..8.
    #[inline]
    pub fn set_rest_of_header(&mut self, rest: u32) {
        put_u32(self.buffer.as_mut(), icmpv6::REST_OF_HEADER.start, rest);
    }

    /// Sets the Packet Too Big MTU.
    #[inline]
    pub fn set_mtu(&mut self, mtu: u32) {
        put_u32(self.buffer.as_mut(), icmpv6::MTU.start, mtu);
    }

    /// Sets the echo identifier.
    #[inline]
    pub fn set_echo_ident(&mut self, ident: u16) {
        put_u16(self.buffer.as_mut(), icmpv6::ECHO_ID.start, ident);
    }

    /// Sets the echo sequence number.
    #[inline]
    pub fn set_echo_seq_no(&mut self, seq: u16) {
        put_u16(self.buffer.as_mut(), icmpv6::ECHO_SEQ.start, seq);
    }

    /// The bytes after the header, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[icmpv6::HEADER_LEN..]
    }

    /// Computes and stores the checksum over the pseudo-header (`src`, `dst`) and message.
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let message = self.buffer.as_ref();
        let sum = !checksum::fold(checksum::sum_words(
            message,
            pseudo_header(src, dst, message),
        ));
        self.set_checksum(sum);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Icmpv6Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}
