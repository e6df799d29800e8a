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
//! ICMP errors quoting a non-first fragment are refused for the same reason
//! (`Reason::IcmpQuotesFragment`, as `ip_vs_in_icmp` ignores them); a quoted first fragment has
//! its ports and is accepted.

use crate::Reason;
use crate::field::ipv4::{FLAG_MF, OFFSET_MASK};

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
}
