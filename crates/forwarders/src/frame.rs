//! A frame buffer with headroom: the unit every rewrite works on.
//!
//! AF_XDP hands the worker a UMEM chunk in which the packet starts some bytes after the chunk's
//! start (the configured frame headroom). Keeping the whole chunk lets TUN prepend its 20-byte
//! outer header by moving the start back, and lets an ICMP reply be built around the quoted
//! packet, without ever copying the payload.
//!
//! Headroom policy: an operation that needs more headroom than the frame has refuses with
//! [`Reason::NoHeadroom`] and leaves the frame unchanged (TUN needs 20 bytes, see `tun`). ICMP
//! replies prefer 28 bytes of headroom and otherwise shift the quoted bytes within the buffer
//! (a rare path); only when neither fits do they refuse. Configure the UMEM frame headroom to at
//! least [`RECOMMENDED_HEADROOM`] bytes.

use crate::Reason;

/// Headroom that lets every rewrite in this crate work without moving packet bytes:
/// 20 for the IPIP outer header, 28 for an ICMP error built around the original packet.
pub const RECOMMENDED_HEADROOM: usize = 28;

/// A packet inside a larger buffer: `buf[start..end]` is the Ethernet frame, `buf[..start]`
/// is headroom and `buf[end..]` is tailroom.
///
/// The range is kept as its two ends (not start and length): [`data`](Self::data), called
/// several times per packet, then slices without adding and without an overflow check.
#[derive(Debug)]
pub struct Frame<'a> {
    buf: &'a mut [u8],
    start: usize,
    /// `start <= end <= buf.len()`, kept by the constructors and [`set_range`](Self::set_range).
    end: usize,
}

impl<'a> Frame<'a> {
    /// Wraps `buf` with the frame at `start..start + len`; refuses a range outside the buffer.
    #[inline]
    pub fn new(buf: &'a mut [u8], start: usize, len: usize) -> Result<Self, Reason> {
        match start.checked_add(len) {
            Some(end) if end <= buf.len() => Ok(Frame { buf, start, end }),
            _ => Err(Reason::FrameOutOfBounds),
        }
    }

    /// A frame that fills the whole buffer (no headroom): handy for tests and DR/NAT.
    #[inline]
    pub fn whole(buf: &'a mut [u8]) -> Self {
        let end = buf.len();
        Frame { buf, start: 0, end }
    }

    /// Offset of the first frame byte in the buffer (equals the headroom).
    #[inline]
    pub fn start(&self) -> usize {
        self.start
    }

    /// Frame length in bytes (what goes on the wire).
    #[inline]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// True when the frame has no bytes.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// Free bytes before the frame.
    #[inline]
    pub fn headroom(&self) -> usize {
        self.start
    }

    /// Free bytes after the frame.
    #[inline]
    pub fn tailroom(&self) -> usize {
        self.buf.len() - self.end
    }

    /// The frame's bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        // Cannot panic: the constructors and every mutator keep start <= end <= buf.len().
        // (Indexing is two compares; `get(..).unwrap_or(&[])` compiles to twice as many.)
        &self.buf[self.start..self.end]
    }

    /// The frame's bytes, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // Cannot panic, as in `data`.
        &mut self.buf[self.start..self.end]
    }

    /// The whole buffer, headroom and tailroom included.
    #[inline]
    pub(crate) fn buffer_mut(&mut self) -> &mut [u8] {
        self.buf
    }

    /// Moves the frame to `start..start + len`; refuses a range outside the buffer.
    #[inline]
    pub(crate) fn set_range(&mut self, start: usize, len: usize) -> Result<(), Reason> {
        match start.checked_add(len) {
            Some(end) if end <= self.buf.len() => {
                self.start = start;
                self.end = end;
                Ok(())
            }
            _ => Err(Reason::NoHeadroom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_refuses_ranges_outside_the_buffer() {
        let mut buf = [0u8; 10];
        assert_eq!(
            Frame::new(&mut buf, 4, 7).unwrap_err(),
            Reason::FrameOutOfBounds
        );
        assert_eq!(
            Frame::new(&mut buf, usize::MAX, 2).unwrap_err(),
            Reason::FrameOutOfBounds
        );
        let frame = Frame::new(&mut buf, 4, 6).unwrap();
        assert_eq!((frame.headroom(), frame.len(), frame.tailroom()), (4, 6, 0));
    }

    #[test]
    fn data_is_the_range_and_set_range_moves_it() {
        let mut buf = [0, 1, 2, 3, 4, 5, 6, 7];
        let mut frame = Frame::new(&mut buf, 2, 3).unwrap();
        assert_eq!(frame.data(), &[2, 3, 4]);
        frame.set_range(0, 8).unwrap();
        assert_eq!(frame.data(), &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(frame.set_range(1, 8), Err(Reason::NoHeadroom));
        assert_eq!(frame.data().len(), 8);
        frame.data_mut()[0] = 9;
        assert_eq!(frame.data()[0], 9);
    }
}
