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

// The flags and the row they select are the model's, shared with the forwarders' parser.
pub use xvs_model::{TcpEvent, TcpFlags};

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

    /// The established fast path (`Shard::touch`) keeps ESTABLISHED on a plain ACK without
    /// reading a table: it may only because every input table agrees.
    #[test]
    fn a_plain_ack_keeps_established_in_every_input_table() {
        for set in [TableSet::Normal, TableSet::Secure] {
            for table in [TableDirection::Input, TableDirection::InputOnly] {
                assert_eq!(
                    transition(set, table, TcpFlags::ACK, TcpState::Established),
                    TcpState::Established,
                    "{set:?} {table:?}"
                );
            }
        }
    }
}
