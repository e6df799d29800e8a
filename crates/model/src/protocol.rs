//! Transport protocols and TCP flags, numbered as on the wire, for every crate: a service's
//! protocol, a flow's, the parser's view of a header.

use serde::{Deserialize, Serialize};

/// Transport protocol, with its IP protocol number. A virtual service is TCP or UDP (the spec
/// refuses ICMP); a flow may also be ICMP, which covers ICMPv6 too (the family tells them
/// apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Protocol {
    /// `-t`
    Tcp = 6,
    /// `-u`
    Udp = 17,
    /// ICMP echo flows: the echo identifier plays the part of the client port and the
    /// service (and real server) port is 0, so a request is `client:id -> vip:0` and the
    /// real server's reply `rip:0 -> client:id`.
    Icmp = 1,
}

impl Protocol {
    /// From a number known to be one of the three (a connection entry's byte): 6 is TCP, 17
    /// UDP, anything else ICMP.
    #[inline]
    pub fn from_u8(v: u8) -> Protocol {
        match v {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            _ => Protocol::Icmp,
        }
    }

    /// The label ipvsadm prints in listings (and the service's `-n` text): `TCP`, `UDP`,
    /// `ICMP` (connections only).
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Icmp => "ICMP",
        }
    }
}

/// The flags byte of a TCP header. `TcpFlags(byte)` keeps every bit as the header has it;
/// [`TcpFlags::from_byte`] keeps only the ones IPVS looks at (FIN 0x01, SYN 0x02, RST 0x04,
/// ACK 0x10), so taking them from a packet is one mask and equal states compare equal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    const FIN_BIT: u8 = 0x01;
    const SYN_BIT: u8 = 0x02;
    const RST_BIT: u8 = 0x04;
    const ACK_BIT: u8 = 0x10;
    const KNOWN: u8 = Self::FIN_BIT | Self::SYN_BIT | Self::RST_BIT | Self::ACK_BIT;

    pub const NONE: TcpFlags = TcpFlags(0);
    /// No more data from the sender.
    pub const FIN: TcpFlags = TcpFlags(Self::FIN_BIT);
    /// Synchronise sequence numbers (connection open).
    pub const SYN: TcpFlags = TcpFlags(Self::SYN_BIT);
    /// Reset the connection.
    pub const RST: TcpFlags = TcpFlags(Self::RST_BIT);
    /// Push buffered data.
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// The acknowledgment field is significant.
    pub const ACK: TcpFlags = TcpFlags(Self::ACK_BIT);
    /// The urgent pointer is significant.
    pub const URG: TcpFlags = TcpFlags(0x20);
    /// ECN echo.
    pub const ECE: TcpFlags = TcpFlags(0x40);
    /// Congestion window reduced.
    pub const CWR: TcpFlags = TcpFlags(0x80);
    pub const SYN_ACK: TcpFlags = TcpFlags(Self::SYN_BIT | Self::ACK_BIT);
    pub const FIN_ACK: TcpFlags = TcpFlags(Self::FIN_BIT | Self::ACK_BIT);

    /// The flags IPVS looks at from the flags byte of a TCP header (the others cleared).
    #[inline]
    pub const fn from_byte(b: u8) -> TcpFlags {
        TcpFlags(b & Self::KNOWN)
    }

    /// Each flag by name.
    #[inline]
    pub const fn new(syn: bool, fin: bool, ack: bool, rst: bool) -> TcpFlags {
        TcpFlags(
            ((syn as u8) * Self::SYN_BIT)
                | ((fin as u8) * Self::FIN_BIT)
                | ((ack as u8) * Self::ACK_BIT)
                | ((rst as u8) * Self::RST_BIT),
        )
    }

    /// True when every flag of `other` is set.
    #[inline]
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    #[inline]
    pub const fn syn(self) -> bool {
        self.0 & Self::SYN_BIT != 0
    }

    #[inline]
    pub const fn fin(self) -> bool {
        self.0 & Self::FIN_BIT != 0
    }

    #[inline]
    pub const fn ack(self) -> bool {
        self.0 & Self::ACK_BIT != 0
    }

    #[inline]
    pub const fn rst(self) -> bool {
        self.0 & Self::RST_BIT != 0
    }

    /// A SYN without ACK: the packet that opens a connection.
    #[inline]
    pub const fn opens(self) -> bool {
        self.0 & (Self::SYN_BIT | Self::ACK_BIT) == Self::SYN_BIT
    }

    /// The row of IPVS's TCP state table a packet selects. IPVS `tcp_state_idx`: RST wins,
    /// then SYN, then FIN, then ACK; a segment with none of them has no row.
    #[inline]
    pub const fn event(self) -> Option<TcpEvent> {
        // The known flags sit in the low five bits: one load instead of four branches.
        EVENTS[(self.0 & 0x1f) as usize]
    }

    /// [`event`](Self::event) by its rule (builds the lookup table).
    const fn event_by_rule(self) -> Option<TcpEvent> {
        if self.rst() {
            Some(TcpEvent::Rst)
        } else if self.syn() {
            Some(TcpEvent::Syn)
        } else if self.fin() {
            Some(TcpEvent::Fin)
        } else if self.ack() {
            Some(TcpEvent::Ack)
        } else {
            None
        }
    }
}

/// [`TcpFlags::event`] for every value of the low five flag bits.
const EVENTS: [Option<TcpEvent>; 32] = {
    let mut events = [None; 32];
    let mut bits = 0;
    while bits < 32 {
        events[bits] = TcpFlags::from_byte(bits as u8).event_by_rule();
        bits += 1;
    }
    events
};

/// A row of IPVS's TCP transition tables (xvs-conntrack's state machine).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TcpEvent {
    Syn = 0,
    Fin = 1,
    Ack = 2,
    Rst = 3,
}
