//! The IPVS TCP state machine (net/netfilter/ipvs/ip_vs_proto_tcp.c).
//!
//! IPVS does not track TCP precisely; it watches the flags of packets crossing the director
//! and walks a table indexed by *(direction, flag, current state)* to get the next state. The
//! tables below are the kernel's (the current `tcp_states`, where an ACK on a NONE entry means
//! ESTABLISHED, and the hardened `tcp_states_dos` used under `secure_tcp`), re-typed as Rust
//! data.
//!
//! Three directions exist: INPUT (client -> real server through the director), OUTPUT (real
//! server -> client through the director, NAT only) and INPUT-ONLY, used when the director sees
//! only inbound packets (DR, TUN): there a client FIN means FIN_WAIT rather than CLOSE_WAIT,
//! because the server's half cannot be observed.

/// A TCP connection state as IPVS names it. UDP and ICMP entries stay in `None` (IPVS's
/// single UDP state has the same number).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TcpState {
    None = 0,
    Established = 1,
    SynSent = 2,
    SynRecv = 3,
    FinWait = 4,
    TimeWait = 5,
    Close = 6,
    CloseWait = 7,
    LastAck = 8,
    Listen = 9,
    SynAck = 10,
}

impl TcpState {
    pub const COUNT: usize = 11;

    pub const ALL: [TcpState; TcpState::COUNT] = [
        TcpState::None,
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::SynAck,
    ];

    #[inline]
    pub(crate) fn from_u8(v: u8) -> TcpState {
        TcpState::ALL[(v as usize).min(TcpState::COUNT - 1)]
    }

    /// The name `ipvsadm -lc` prints.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::None => "NONE",
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::SynAck => "SYNACK",
        }
    }

    /// IPVS `tcp_state_active_table`: ESTABLISHED, SYN_SENT, SYN_RECV and SYNACK count in
    /// ActiveConn, every other state in InActConn.
    #[inline]
    pub const fn is_active(self) -> bool {
        matches!(
            self,
            TcpState::Established | TcpState::SynSent | TcpState::SynRecv | TcpState::SynAck
        )
    }
}

/// Which way a packet crosses the director.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client -> virtual service.
    Input,
    /// Real server -> client (NAT return traffic).
    Output,
}

/// Whether a connection's return traffic passes through the director. The caller states it
/// when creating the connection; it picks the state table as IPVS's `IP_VS_CONN_F_NOOUTPUT`
/// does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReturnPath {
    /// NAT: replies come back through the director; INPUT and OUTPUT tables apply, and the
    /// connection is reachable by outbound lookups.
    ViaDirector,
    /// DR and TUN: replies go straight to the client; the INPUT-ONLY table applies (until an
    /// output packet is ever seen, as in IPVS).
    Bypass,
}

/// The TCP flags IPVS looks at, as the header's flags byte keeps them (FIN 0x01, SYN 0x02,
/// RST 0x04, ACK 0x10; the others are cleared), so taking them from a packet is one mask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TcpFlags(u8);

impl TcpFlags {
    const FIN_BIT: u8 = 0x01;
    const SYN_BIT: u8 = 0x02;
    const RST_BIT: u8 = 0x04;
    const ACK_BIT: u8 = 0x10;
    const KNOWN: u8 = Self::FIN_BIT | Self::SYN_BIT | Self::RST_BIT | Self::ACK_BIT;

    pub const NONE: TcpFlags = TcpFlags(0);
    pub const SYN: TcpFlags = TcpFlags(Self::SYN_BIT);
    pub const SYN_ACK: TcpFlags = TcpFlags(Self::SYN_BIT | Self::ACK_BIT);
    pub const ACK: TcpFlags = TcpFlags(Self::ACK_BIT);
    pub const FIN_ACK: TcpFlags = TcpFlags(Self::FIN_BIT | Self::ACK_BIT);
    pub const RST: TcpFlags = TcpFlags(Self::RST_BIT);

    /// From the flags byte of a TCP header.
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

    /// The table row a packet selects. IPVS `tcp_state_idx`: RST wins, then SYN, then FIN,
    /// then ACK; a segment with none of them has no row.
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

/// A row of a transition table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TcpEvent {
    Syn = 0,
    Fin = 1,
    Ack = 2,
    Rst = 3,
}

/// A transition table: one of INPUT, OUTPUT, INPUT-ONLY.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TableDirection {
    Input = 0,
    Output = 1,
    InputOnly = 2,
}

/// Which table set is in force: IPVS's normal tables or the `secure_tcp` ones, which keep a
/// half-open connection in SYNACK/SYN_RECV until the handshake really completes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TableSet {
    #[default]
    Normal,
    Secure,
}

type Row = [TcpState; TcpState::COUNT];
type DirectionTable = [Row; 4];

use TcpState::{
    Close as CL, CloseWait as CW, Established as ES, FinWait as FW, LastAck as LA, Listen as LI,
    SynAck as SA, SynRecv as SR, SynSent as SS, TimeWait as TW,
};

// Columns, in every row:  NO  ES  SS  SR  FW  TW  CL  CW  LA  LI  SA
// (the current state); the cell is the next state.

const NORMAL: [DirectionTable; 3] = [
    // INPUT
    [
        /* syn */ [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
        /* fin */ [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, TW],
        /* ack */ [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
        /* rst */ [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, SR],
    ],
    // OUTPUT
    [
        /* syn */ [SS, ES, SS, SR, SS, SS, SS, SS, SS, LI, SR],
        /* fin */ [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW],
        /* ack */ [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES],
        /* rst */ [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL],
    ],
    // INPUT-ONLY
    [
        /* syn */ [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
        /* fin */ [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW],
        /* ack */ [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
        /* rst */ [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
    ],
];

const SECURE: [DirectionTable; 3] = [
    // INPUT
    [
        /* syn */ [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SA],
        /* fin */ [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, SA],
        /* ack */ [ES, ES, SS, SR, FW, TW, CL, CW, CL, LI, SA],
        /* rst */ [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
    ],
    // OUTPUT
    [
        /* syn */ [SS, ES, SS, SA, SS, SS, SS, SS, SS, LI, SA],
        /* fin */ [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW],
        /* ack */ [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES],
        /* rst */ [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL],
    ],
    // INPUT-ONLY
    [
        /* syn */ [SA, ES, ES, SR, SA, SA, SA, SA, SA, SA, SA],
        /* fin */ [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW],
        /* ack */ [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
        /* rst */ [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
    ],
];

/// Looks up one cell: the state after `event` in `current`, for the given table.
#[inline]
pub fn next_state(
    set: TableSet,
    table: TableDirection,
    event: TcpEvent,
    current: TcpState,
) -> TcpState {
    let tables = match set {
        TableSet::Normal => &NORMAL,
        TableSet::Secure => &SECURE,
    };
    tables[table as usize][event as usize][current as usize]
}

/// The table a packet uses. IPVS `set_tcp_state`: a connection flagged NOOUTPUT (no return
/// traffic seen) uses INPUT-ONLY for input packets; the first output packet clears the flag
/// for good, and from then on INPUT/OUTPUT apply. Returns the table and whether the flag is
/// still set afterwards.
#[inline]
pub fn select_table(direction: Direction, no_output: bool) -> (TableDirection, bool) {
    match (direction, no_output) {
        (Direction::Output, _) => (TableDirection::Output, false),
        (Direction::Input, true) => (TableDirection::InputOnly, true),
        (Direction::Input, false) => (TableDirection::Input, false),
    }
}

/// The state after one packet. A segment carrying none of SYN/FIN/ACK/RST moves the
/// connection to CLOSE, as IPVS does (its default `new_state` when no row applies).
#[inline]
pub fn transition(
    set: TableSet,
    table: TableDirection,
    flags: TcpFlags,
    current: TcpState,
) -> TcpState {
    match flags.event() {
        Some(event) => next_state(set, table, event, current),
        None => TcpState::Close,
    }
}

#[cfg(test)]
mod flag_tests {
    use super::*;

    #[test]
    fn flags_read_the_header_byte_and_ignore_the_rest() {
        // PSH|ACK with ECE and CWR set: only ACK matters to IPVS.
        let f = TcpFlags::from_byte(0x18 | 0x40 | 0x80);
        assert_eq!(f, TcpFlags::ACK);
        assert!(f.ack() && !f.syn() && !f.fin() && !f.rst() && !f.opens());
        for byte in 0..=255u8 {
            let f = TcpFlags::from_byte(byte);
            let named = TcpFlags::new(
                byte & 0x02 != 0,
                byte & 0x01 != 0,
                byte & 0x10 != 0,
                byte & 0x04 != 0,
            );
            assert_eq!(f, named, "{byte:#04x}");
            assert_eq!(f.opens(), f.syn() && !f.ack());
        }
        assert!(TcpFlags::SYN.opens() && !TcpFlags::SYN_ACK.opens());
    }
}
