//! IPv4 fragments: the policy, and the classification `parse` applies.
//!
//! **Policy: every fragment is refused and counted, first and later ones separately.**
//!
//! Why: a connection is found by (protocol, addresses, ports), and only the first fragment
//! carries the ports. A later fragment could be steered only by remembering where its first
//! fragment went, keyed by (source, destination, protocol, identification); fragments arrive
//! out of order, on any queue, and may never complete. IPVS never faces this: it runs behind
//! `nf_defrag_ipv4`, schedules the reassembled datagram and lets the output path fragment again.
//! This crate keeps no state, so it cannot reassemble; forwarding the first fragment alone
//! would hand a real server a datagram it can never complete, and forwarding later fragments
//! by address alone could pick a different real server than the first one. Refusing both is
//! the only stateless rule that never sends a fragment to the wrong real server.
//!
//! In practice TCP sets DF (path MTU discovery) and is never fragmented; fragmented traffic is
//! mostly large UDP. The two counters (`Reason::FirstFragment`, `Reason::LaterFragment`) tell
//! the operator whether a reassembly stage (a per-worker table in the dataplane, feeding whole
//! datagrams back through `parse`) is worth adding.
//!
//! For such a stage, [`FragmentKey::of`] reads the reassembly key and position of a frame
//! `parse` refused as a fragment, without a second parser in the dataplane.
//!
//! **IPv6: the same policy.** The walker (`wire::walk_extension_headers`) reads the fragment
//! header ([`Fragmentation::from_ipv6_word`]) and `parse6` refuses first fragments
//! (`Reason::FirstFragment`) and later ones (`Reason::LaterFragment`) alike, for the same
//! reason (IPVS runs behind `nf_defrag_ipv6`). Atomic fragments (a fragment header with
//! offset 0 and M clear, RFC 6946) are whole datagrams and pass. ICMPv6 errors quoting a
//! later fragment are refused (`Reason::IcmpQuotesFragment`).
//!
//! ICMP errors quoting a non-first fragment are refused for the same reason
//! (`Reason::IcmpQuotesFragment`, as `ip_vs_in_icmp` ignores them); a quoted first fragment has
//! its ports and is accepted.

use core::net::Ipv4Addr;

use crate::Reason;
use crate::field::ipv4::{FLAG_MF, OFFSET_MASK};
use crate::field::{self, eth, ipv4, ipv6};

/// Where a datagram stands with respect to fragmentation, from its flags/offset word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fragmentation {
    /// Not a fragment: MF clear and offset zero.
    Whole,
    /// Offset zero with MF set: carries the transport header, not the whole datagram.
    First,
    /// Non-zero offset: carries no transport header.
    Later {
        /// Fragment offset in bytes.
        offset_bytes: u16,
    },
}

impl Fragmentation {
    /// Classifies the IPv4 flags/fragment-offset word (bytes 6..8 of the header).
    #[inline]
    pub fn from_flags_word(word: u16) -> Self {
        let offset = word & OFFSET_MASK;
        if offset != 0 {
            Fragmentation::Later {
                offset_bytes: offset << 3,
            }
        } else if word & FLAG_MF != 0 {
            Fragmentation::First
        } else {
            Fragmentation::Whole
        }
    }

    /// Classifies the offset/flags word of an IPv6 fragment header (bytes 2..4): offset in
    /// the high 13 bits (8-byte units), M in the low bit. An atomic fragment (offset 0,
    /// M clear; RFC 6946) is the whole datagram, as the kernel treats it.
    #[inline]
    pub fn from_ipv6_word(word: u16) -> Self {
        let offset_bytes = word & ipv6::FRAGMENT_OFFSET_MASK;
        if offset_bytes != 0 {
            Fragmentation::Later { offset_bytes }
        } else if word & ipv6::FRAGMENT_MORE != 0 {
            Fragmentation::First
        } else {
            Fragmentation::Whole
        }
    }

    /// The policy: whole datagrams pass, every fragment is refused with its own reason.
    #[inline]
    pub fn admit(self) -> Result<(), Reason> {
        match self {
            Fragmentation::Whole => Ok(()),
            Fragmentation::First => Err(Reason::FirstFragment),
            Fragmentation::Later { .. } => Err(Reason::LaterFragment),
        }
    }
}

/// What identifies the fragments of one datagram (RFC 791): they share source, destination,
/// protocol and identification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragmentKey {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// IP protocol number.
    pub protocol: u8,
    /// IPv4 identification.
    pub ident: u16,
}

impl FragmentKey {
    /// The key and position of the IPv4 datagram in an Ethernet frame, for frames `parse`
    /// refused with `FirstFragment` or `LaterFragment`. `None` for frames too short to hold
    /// an Ethernet and IPv4 header; the header is not otherwise validated here.
    pub fn of(frame: &[u8]) -> Option<(FragmentKey, Fragmentation)> {
        let ip = frame.get(eth::HEADER_LEN..eth::HEADER_LEN + ipv4::MIN_HEADER_LEN)?;
        let key = FragmentKey {
            src: Ipv4Addr::from_bits(field::read_u32(ip, ipv4::SOURCE)?),
            dst: Ipv4Addr::from_bits(field::read_u32(ip, ipv4::DESTINATION)?),
            protocol: *ip.get(ipv4::PROTOCOL)?,
            ident: field::read_u16(ip, ipv4::IDENTIFICATION)?,
        };
        let word = field::read_u16(ip, ipv4::FLAGS_FRAGMENT)?;
        Some((key, Fragmentation::from_flags_word(word)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_flag_words() {
        assert_eq!(Fragmentation::from_flags_word(0x0000), Fragmentation::Whole);
        // DF alone is not a fragment.
        assert_eq!(Fragmentation::from_flags_word(0x4000), Fragmentation::Whole);
        assert_eq!(Fragmentation::from_flags_word(0x2000), Fragmentation::First);
        assert_eq!(
            Fragmentation::from_flags_word(0x2000 | 185),
            Fragmentation::Later { offset_bytes: 1480 }
        );
        // The last fragment: MF clear, offset non-zero.
        assert_eq!(
            Fragmentation::from_flags_word(370),
            Fragmentation::Later { offset_bytes: 2960 }
        );
    }

    #[test]
    fn admits_only_whole_datagrams() {
        assert_eq!(Fragmentation::Whole.admit(), Ok(()));
        assert_eq!(Fragmentation::First.admit(), Err(Reason::FirstFragment));
        assert_eq!(
            Fragmentation::Later { offset_bytes: 8 }.admit(),
            Err(Reason::LaterFragment)
        );
    }

    #[test]
    fn fragment_key_reads_the_reassembly_fields() {
        let mut frame = [0u8; 34];
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        frame[14] = 0x45;
        frame[18..20].copy_from_slice(&0xbeefu16.to_be_bytes());
        frame[20..22].copy_from_slice(&(0x2000u16 | 185).to_be_bytes());
        frame[23] = 17;
        frame[26..30].copy_from_slice(&[203, 0, 113, 7]);
        frame[30..34].copy_from_slice(&[192, 0, 2, 10]);
        let (key, position) = FragmentKey::of(&frame).unwrap();
        assert_eq!(
            key,
            FragmentKey {
                src: Ipv4Addr::new(203, 0, 113, 7),
                dst: Ipv4Addr::new(192, 0, 2, 10),
                protocol: 17,
                ident: 0xbeef,
            }
        );
        assert_eq!(position, Fragmentation::Later { offset_bytes: 1480 });
        assert_eq!(FragmentKey::of(&frame[..33]), None);
    }
}
