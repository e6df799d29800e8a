//! The TCP state machine against IPVS's transition tables (ip_vs_proto_tcp.c), cell by cell,
//! and whole connections through the table with their counter effects.

mod common;

use common::*;
use xvs_conntrack::state::{TableDirection, TcpEvent, next_state, transition};
use xvs_conntrack::*;

/// IPVS's tables as text: for each table and flag, the next state for each current state in
/// the column order NO ES SS SR FW TW CL CW LA LI SA.
const IPVS_TCP_STATES: &str = "
INPUT syn      SR ES ES SR SR SR SR SR SR SR SR
INPUT fin      CL CW SS TW TW TW CL CW LA LI TW
INPUT ack      ES ES SS ES FW TW CL CW CL LI ES
INPUT rst      CL CL CL SR CL CL CL CL LA LI SR
OUTPUT syn     SS ES SS SR SS SS SS SS SS LI SR
OUTPUT fin     TW FW SS TW FW TW CL TW LA LI TW
OUTPUT ack     ES ES SS ES FW TW CL CW LA ES ES
OUTPUT rst     CL CL SS CL CL TW CL CL CL CL CL
INPUT_ONLY syn SR ES ES SR SR SR SR SR SR SR SR
INPUT_ONLY fin CL FW SS TW FW TW CL CW LA LI TW
INPUT_ONLY ack ES ES SS ES FW TW CL CW CL LI ES
INPUT_ONLY rst CL CL CL SR CL CL CL CL LA LI CL
";

/// IPVS's `tcp_states_dos` (secure_tcp).
const IPVS_TCP_STATES_DOS: &str = "
INPUT syn      SR ES ES SR SR SR SR SR SR SR SA
INPUT fin      CL CW SS TW TW TW CL CW LA LI SA
INPUT ack      ES ES SS SR FW TW CL CW CL LI SA
INPUT rst      CL CL CL SR CL CL CL CL LA LI CL
OUTPUT syn     SS ES SS SA SS SS SS SS SS LI SA
OUTPUT fin     TW FW SS TW FW TW CL TW LA LI TW
OUTPUT ack     ES ES SS ES FW TW CL CW LA ES ES
OUTPUT rst     CL CL SS CL CL TW CL CL CL CL CL
INPUT_ONLY syn SA ES ES SR SA SA SA SA SA SA SA
INPUT_ONLY fin CL FW SS TW FW TW CL CW LA LI TW
INPUT_ONLY ack ES ES SS ES FW TW CL CW CL LI ES
INPUT_ONLY rst CL CL CL SR CL CL CL CL LA LI CL
";

fn state(code: &str) -> TcpState {
    match code {
        "NO" => TcpState::None,
        "ES" => TcpState::Established,
        "SS" => TcpState::SynSent,
        "SR" => TcpState::SynRecv,
        "FW" => TcpState::FinWait,
        "TW" => TcpState::TimeWait,
        "CL" => TcpState::Close,
        "CW" => TcpState::CloseWait,
        "LA" => TcpState::LastAck,
        "LI" => TcpState::Listen,
        "SA" => TcpState::SynAck,
        other => panic!("unknown state {other}"),
    }
}

fn check_tables(set: TableSet, text: &str) -> usize {
    let mut cells = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut words = line.split_whitespace();
        let table = match words.next().unwrap() {
            "INPUT" => TableDirection::Input,
            "OUTPUT" => TableDirection::Output,
            "INPUT_ONLY" => TableDirection::InputOnly,
            t => panic!("{t}"),
        };
        let event = match words.next().unwrap() {
            "syn" => TcpEvent::Syn,
            "fin" => TcpEvent::Fin,
            "ack" => TcpEvent::Ack,
            "rst" => TcpEvent::Rst,
            e => panic!("{e}"),
        };
        let next: Vec<TcpState> = words.map(state).collect();
        assert_eq!(next.len(), TcpState::COUNT, "{line}");
        for (current, want) in TcpState::ALL.iter().zip(next) {
            assert_eq!(
                next_state(set, table, event, *current),
                want,
                "{set:?} {table:?} {event:?} in {current:?}"
            );
            cells += 1;
        }
    }
    cells
}

#[test]
fn normal_tables_match_ipvs_cell_by_cell() {
    assert_eq!(check_tables(TableSet::Normal, IPVS_TCP_STATES), 3 * 4 * 11);
}

#[test]
fn secure_tcp_tables_match_ipvs_cell_by_cell() {
    assert_eq!(
        check_tables(TableSet::Secure, IPVS_TCP_STATES_DOS),
        3 * 4 * 11
    );
}

#[test]
fn flag_priority_is_rst_syn_fin_ack() {
    let all = TcpFlags::from_byte(0x17); // FIN SYN RST ACK
    assert_eq!(all.event(), Some(TcpEvent::Rst));
    assert_eq!(TcpFlags::from_byte(0x13).event(), Some(TcpEvent::Syn)); // SYN FIN ACK
    assert_eq!(TcpFlags::from_byte(0x11).event(), Some(TcpEvent::Fin)); // FIN ACK
    assert_eq!(TcpFlags::from_byte(0x10).event(), Some(TcpEvent::Ack));
    assert_eq!(TcpFlags::from_byte(0x08).event(), None); // PSH only
    // IPVS: a segment with no row moves the connection to CLOSE.
    assert_eq!(
        transition(
            TableSet::Normal,
            TableDirection::Input,
            TcpFlags::from_byte(0x08),
            TcpState::Established
        ),
        TcpState::Close
    );
}

#[test]
fn active_states_are_the_ipvs_four() {
    let active: Vec<_> = TcpState::ALL.iter().filter(|s| s.is_active()).collect();
    assert_eq!(
        active,
        [
            &TcpState::Established,
            &TcpState::SynSent,
            &TcpState::SynRecv,
            &TcpState::SynAck
        ]
    );
    assert_eq!(TcpState::CloseWait.name(), "CLOSE_WAIT");
}

/// Feeds packets to one connection and checks state and counters after each.
fn run(
    return_path: ReturnPath,
    steps: &[(Direction, TcpFlags, TcpState, Counts)],
) -> (Recorder, ConnTable, Vec<Shard>) {
    let (table, mut shards) = ConnTable::new(config(1, 64));
    let mut rec = Recorder::default();
    let new = NewConn {
        return_path,
        ..nat_conn(client(1, 40000), 1)
    };
    let conn = shards[0].insert(new, 100, &mut rec).unwrap();
    assert_eq!(conn.state, TcpState::None);
    assert_eq!(
        rec.get(DestId(1)),
        Counts {
            active: 0,
            inactive: 1,
            persist: 0
        },
        "a new connection is bound inactive"
    );
    for (i, &(dir, flags, want_state, want_counts)) in steps.iter().enumerate() {
        let got = shards[0]
            .on_packet(conn.flow, dir, flags, 100 + i as u32, &mut rec)
            .unwrap();
        assert_eq!(got, want_state, "step {i}: {dir:?} {flags:?}");
        assert_eq!(rec.get(DestId(1)), want_counts, "step {i}");
        let seen = table.get(conn.flow).unwrap();
        assert_eq!(seen.state, want_state);
        assert_eq!(seen.active, want_counts.active == 1);
    }
    (rec, table, shards)
}

const ACTIVE: Counts = Counts {
    active: 1,
    inactive: 0,
    persist: 0,
};
const INACTIVE: Counts = Counts {
    active: 0,
    inactive: 1,
    persist: 0,
};

#[test]
fn nat_connection_lifecycle() {
    use Direction::*;
    let (mut rec, _t, mut shards) = run(
        ReturnPath::ViaDirector,
        &[
            (Input, TcpFlags::SYN, TcpState::SynRecv, ACTIVE),
            (Output, TcpFlags::SYN_ACK, TcpState::SynRecv, ACTIVE),
            (Input, TcpFlags::ACK, TcpState::Established, ACTIVE),
            (Input, TcpFlags::ACK, TcpState::Established, ACTIVE),
            // Server closes first: output FIN in ES -> FIN_WAIT, inactive from here.
            (Output, TcpFlags::FIN_ACK, TcpState::FinWait, INACTIVE),
            (Input, TcpFlags::ACK, TcpState::FinWait, INACTIVE),
            (Input, TcpFlags::FIN_ACK, TcpState::TimeWait, INACTIVE),
            (Output, TcpFlags::ACK, TcpState::TimeWait, INACTIVE),
        ],
    );
    // TIME_WAIT lasts 120 s from the last packet (t = 107).
    assert_eq!(shards[0].expire(226, &mut rec), 0);
    assert_eq!(shards[0].expire(227, &mut rec), 1);
    assert_eq!(rec.total(), Counts::default());
}

#[test]
fn client_close_on_nat_goes_through_close_wait_and_last_ack() {
    use Direction::*;
    run(
        ReturnPath::ViaDirector,
        &[
            (Input, TcpFlags::SYN, TcpState::SynRecv, ACTIVE),
            (Input, TcpFlags::ACK, TcpState::Established, ACTIVE),
            (Input, TcpFlags::FIN_ACK, TcpState::CloseWait, INACTIVE),
            (Output, TcpFlags::FIN_ACK, TcpState::TimeWait, INACTIVE),
        ],
    );
}

#[test]
fn dr_connection_uses_input_only_table() {
    use Direction::*;
    // With no return traffic, a client FIN in ESTABLISHED means FIN_WAIT, not CLOSE_WAIT.
    let (mut rec, _t, mut shards) = run(
        ReturnPath::Bypass,
        &[
            (Input, TcpFlags::SYN, TcpState::SynRecv, ACTIVE),
            (Input, TcpFlags::ACK, TcpState::Established, ACTIVE),
            (Input, TcpFlags::FIN_ACK, TcpState::FinWait, INACTIVE),
            (Input, TcpFlags::ACK, TcpState::FinWait, INACTIVE),
        ],
    );
    assert_eq!(shards[0].expire(103 + 120, &mut rec), 1);
    assert_eq!(rec.total(), Counts::default());
}

#[test]
fn first_output_packet_leaves_input_only_for_good() {
    use Direction::*;
    // IPVS NOOUTPUT: once an output packet is seen, INPUT (not INPUT-ONLY) applies.
    run(
        ReturnPath::Bypass,
        &[
            (Input, TcpFlags::SYN, TcpState::SynRecv, ACTIVE),
            (Output, TcpFlags::SYN_ACK, TcpState::SynRecv, ACTIVE),
            (Input, TcpFlags::ACK, TcpState::Established, ACTIVE),
            (Input, TcpFlags::FIN_ACK, TcpState::CloseWait, INACTIVE),
        ],
    );
}

#[test]
fn rst_and_resurrection_cross_the_boundary_each_time() {
    use Direction::*;
    run(
        ReturnPath::ViaDirector,
        &[
            (Input, TcpFlags::SYN, TcpState::SynRecv, ACTIVE),
            (Input, TcpFlags::ACK, TcpState::Established, ACTIVE),
            (Input, TcpFlags::RST, TcpState::Close, INACTIVE),
            (Input, TcpFlags::RST, TcpState::Close, INACTIVE),
            // A new SYN on the same tuple: CLOSE -> SYN_RECV, active again.
            (Input, TcpFlags::SYN, TcpState::SynRecv, ACTIVE),
            (Input, TcpFlags::NONE, TcpState::Close, INACTIVE),
        ],
    );
}

#[test]
fn secure_tcp_holds_half_open_connections_in_synack() {
    use Direction::*;
    let (table, mut shards) = ConnTable::new(Config {
        options: Options {
            secure_tcp: true,
            ..Options::default()
        },
        ..config(1, 16)
    });
    let mut rec = Recorder::default();
    let conn = shards[0]
        .insert(dr_conn(client(1, 1), 1), 0, &mut rec)
        .unwrap();
    let s = &mut shards[0];
    assert_eq!(
        s.on_packet(conn.flow, Input, TcpFlags::SYN, 0, &mut rec),
        Ok(TcpState::SynAck)
    );
    assert_eq!(rec.get(DestId(1)), ACTIVE, "SYNACK is active");
    assert_eq!(
        s.on_packet(conn.flow, Input, TcpFlags::ACK, 0, &mut rec),
        Ok(TcpState::Established)
    );
    table.set_options(Options::default());
    assert!(!table.options().secure_tcp);
}

#[test]
fn udp_and_icmp_stay_inactive_and_only_refresh() {
    let (table, mut shards) = ConnTable::new(config(1, 16));
    let mut rec = Recorder::default();
    for (i, proto) in [Protocol::Udp, Protocol::Icmp].into_iter().enumerate() {
        let new = NewConn {
            key: FlowKey::new(proto, client(i as u32, 5353), vip(53)),
            ..nat_conn(client(0, 0), 2)
        };
        let conn = shards[0].insert(new, 0, &mut rec).unwrap();
        for flags in [TcpFlags::SYN, TcpFlags::RST, TcpFlags::NONE] {
            assert_eq!(
                shards[0].on_packet(conn.flow, Direction::Input, flags, 10, &mut rec),
                Ok(TcpState::None)
            );
        }
        let want = if proto == Protocol::Udp { 310 } else { 70 };
        assert_eq!(table.get(conn.flow).unwrap().expires, want);
    }
    assert_eq!(
        rec.get(DestId(2)),
        Counts {
            active: 0,
            inactive: 2,
            persist: 0
        }
    );
}

/// `open_missing` writes a new entry already in the state its opening packet leads to; it
/// must leave exactly what `insert` followed by that packet's `on_packet` leaves (state,
/// active flag, deadline, counters), for every flag combination, both return paths, both
/// table sets and every protocol.
#[test]
fn open_missing_equals_insert_then_the_opening_packet() {
    let all_flags = (0u8..16).map(|bits| {
        let mut f = TcpFlags::NONE;
        for (bit, flag) in [TcpFlags::SYN, TcpFlags::FIN, TcpFlags::ACK, TcpFlags::RST]
            .into_iter()
            .enumerate()
        {
            if bits & (1 << bit) != 0 {
                f = TcpFlags(f.0 | flag.0);
            }
        }
        f
    });
    let mut cases = 0;
    for secure_tcp in [false, true] {
        let table_of = || {
            ConnTable::new(Config {
                options: Options {
                    secure_tcp,
                    ..Options::default()
                },
                ..config(1, 64)
            })
        };
        for proto in [Protocol::Tcp, Protocol::Udp, Protocol::Icmp] {
            for nat in [false, true] {
                for flags in all_flags.clone() {
                    let base = if nat {
                        nat_conn(client(1, 1000), 2)
                    } else {
                        dr_conn(client(1, 1000), 1)
                    };
                    let new = NewConn {
                        key: FlowKey::new(proto, base.key.src, base.key.dst),
                        ..base
                    };
                    let (reference, mut shards) = table_of();
                    let mut want_counts = Recorder::default();
                    let conn = shards[0].insert(new, 7, &mut want_counts).unwrap();
                    let state = shards[0]
                        .on_packet(conn.flow, Direction::Input, flags, 7, &mut want_counts)
                        .unwrap();
                    let want = reference.get(conn.flow).unwrap();
                    assert_eq!(want.state, state);

                    let (opened, mut shards) = table_of();
                    let mut got_counts = Recorder::default();
                    let bucket = shards[0].prefetch_inbound(&new.key);
                    let flow = shards[0]
                        .open_missing(&new, bucket, flags, 7, &mut got_counts)
                        .unwrap();
                    let got = opened.get(flow).unwrap();
                    let case = format!("secure {secure_tcp} {proto:?} nat {nat} {flags:?}");
                    assert_eq!(
                        (got.state, got.active, got.expires, got.return_path),
                        (want.state, want.active, want.expires, want.return_path),
                        "{case}"
                    );
                    assert_eq!(got_counts.total(), want_counts.total(), "{case}");
                    assert_eq!(
                        got_counts.get(new.dest),
                        want_counts.get(new.dest),
                        "{case}"
                    );
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 2 * 3 * 2 * 16);
}
