//! Ethernet II frames.

use crate::Reason;
use crate::field::eth;

use super::{get_u16, put_u16};

/// A view of an Ethernet II frame: destination, source, EtherType, payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetFrame<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps `buffer` without checking it (accessors panic when it is shorter than 14 bytes).
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Wraps `buffer`; refuses one shorter than the 14-byte header (`Truncated`).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Reason> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// `Truncated` when the buffer cannot hold the header.
    #[inline]
    pub fn check_len(&self) -> Result<(), Reason> {
        if self.buffer.as_ref().len() < eth::HEADER_LEN {
            return Err(Reason::Truncated);
        }
        Ok(())
    }

    /// The wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination MAC address.
    #[inline]
    pub fn dst_addr(&self) -> [u8; 6] {
        let b = self.buffer.as_ref();
        [b[0], b[1], b[2], b[3], b[4], b[5]]
    }

    /// Source MAC address.
    #[inline]
    pub fn src_addr(&self) -> [u8; 6] {
        let b = self.buffer.as_ref();
        [b[6], b[7], b[8], b[9], b[10], b[11]]
    }

    /// EtherType ([`super::ethertype`]).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        get_u16(self.buffer.as_ref(), eth::ETHERTYPE.start)
    }

    /// The bytes after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[eth::HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC address.
    #[inline]
    pub fn set_dst_addr(&mut self, mac: [u8; 6]) {
        self.buffer.as_mut()[eth::DESTINATION].copy_from_slice(&mac);
    }

    /// Sets the source MAC address.
    #[inline]
    pub fn set_src_addr(&mut self, mac: [u8; 6]) {
        self.buffer.as_mut()[eth::SOURCE].copy_from_slice(&mac);
    }

    /// Sets the EtherType.
    #[inline]
    pub fn set_ethertype(&mut self, ethertype: u16) {
        put_u16(self.buffer.as_mut(), eth::ETHERTYPE.start, ethertype);
    }

    /// The bytes after the header, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[eth::HEADER_LEN..]
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> EthernetFrame<&'a T> {
    /// [`EthernetFrame::payload`] borrowed from the buffer rather than the view.
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        &self.buffer.as_ref()[eth::HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for EthernetFrame<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}
