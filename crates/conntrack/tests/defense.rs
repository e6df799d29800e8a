//! SYN-flood defence: `drop_entry` evicts the oldest half-open connection, never an
//! established one; `secure_tcp` follows the table's pressure; a simulated flood leaves real
//! clients served.

mod common;

use common::*;
use xvs_conntrack::*;

fn defended(shards: usize, max: usize, defense: Defense) -> (ConnTable, Vec<Shard>) {
    ConnTable::new(Config {
        defense,
        ..config(shards, max)
    })
}

fn auto() -> Defense {
    Defense {
        drop_entry: DefenseMode::Auto,
        secure_tcp: DefenseMode::Auto,
        ..Defense::default()
    }
}

/// A DR connection from `c` that has seen its SYN (SYN_RECV).
fn syn(s: &mut Shard, c: Endpoint, now: Secs, rec: &mut Recorder) -> Result<Conn, InsertError> {
    let conn = s.insert(dr_conn(c, 1), now, rec)?;
    s.on_packet(conn.flow, Direction::Input, TcpFlags::SYN, now, rec)
        .unwrap();
    Ok(conn)
}

fn ack(s: &mut Shard, conn: &Conn, now: Secs, rec: &mut Recorder) -> TcpState {
    s.on_packet(conn.flow, Direction::Input, TcpFlags::ACK, now, rec)
        .unwrap()
}

fn hit(found: Inbound) -> Conn {
    match found {
        Inbound::Hit(c) => c,
        other => panic!("expected a hit, got {other:?}"),
    }
}

fn alive(s: &mut Shard, c: Endpoint) -> bool {
    matches!(
        s.lookup_inbound(&FlowKey::tcp(c, vip(80)), &AllAvailable, &mut NoCounters),
        Inbound::Hit(_)
    )
}

#[test]
fn a_full_shard_evicts_its_oldest_half_open_connection_never_an_established_one() {
    let (table, mut shards) = defended(1, 8, auto());
    let s = &mut shards[0];
    let mut rec = Recorder::default();
    // Two established, then six half-open, oldest first.
    for i in 0..2 {
        let c = syn(s, client(i, 1), 0, &mut rec).unwrap();
        assert_eq!(ack(s, &c, 0, &mut rec), TcpState::Established);
    }
    for i in 10..16 {
        syn(s, client(i, 1), 0, &mut rec).unwrap();
    }
    assert_eq!(s.len(), 8);
    // Each new connection takes the slot of the oldest half-open one.
    for (n, i) in (100..106).enumerate() {
        syn(s, client(i, 1), 1, &mut rec).unwrap();
        assert!(!alive(s, client(10 + n as u32, 1)), "oldest half-open went");
        assert_eq!(table.stats().evicted, n as u64 + 1);
    }
    // Only the new ones and the established are left; established survive everything.
    for i in 0..2 {
        assert!(alive(s, client(i, 1)));
    }
    // Once only established connections remain, new ones are refused again.
    for i in 100..106 {
        let c = hit(s.lookup_inbound(
            &FlowKey::tcp(client(i, 1), vip(80)),
            &AllAvailable,
            &mut rec,
        ));
        ack(s, &c, 1, &mut rec);
    }
    assert_eq!(
        syn(s, client(200, 1), 2, &mut rec).unwrap_err(),
        InsertError::Full
    );
    assert_eq!(table.stats().refused, 1);
    assert_eq!(table.stats().evicted, 6);
    assert_eq!(rec.total().active, 8, "counters balanced: 8 established");
    assert_eq!(rec.total().inactive, 0);
}

#[test]
fn drop_entry_off_refuses_as_before() {
    let (table, mut shards) = defended(1, 4, Defense::default());
    let s = &mut shards[0];
    let mut rec = Recorder::default();
    for i in 0..4 {
        syn(s, client(i, 1), 0, &mut rec).unwrap();
    }
    assert_eq!(
        syn(s, client(9, 1), 0, &mut rec).unwrap_err(),
        InsertError::Full
    );
    assert_eq!(table.stats().evicted, 0);
}

#[test]
fn mode_3_keeps_the_shard_at_its_pressure_line() {
    let defense = Defense {
        drop_entry: DefenseMode::Always,
        pressure_percent: 50,
        ..Defense::default()
    };
    let (table, mut shards) = defended(1, 16, defense);
    let s = &mut shards[0];
    let mut rec = Recorder::default();
    for i in 0..100 {
        syn(s, client(i, 1), 0, &mut rec).unwrap();
        assert!(s.len() <= 8, "half-open entries stay at 50%: {}", s.len());
    }
    assert_eq!(table.stats().evicted, 92);
    // Established connections still take the other half.
    for i in 200..208 {
        let c = syn(s, client(i, 1), 0, &mut rec).unwrap();
        ack(s, &c, 0, &mut rec);
    }
    assert!(s.len() <= 9);
}

#[test]
fn udp_and_templates_are_never_evicted() {
    let (_t, mut shards) = defended(1, 4, auto());
    let s = &mut shards[0];
    let mut rec = Recorder::default();
    for i in 0..4 {
        let new = NewConn {
            key: FlowKey::udp(client(i, 1), vip(53)),
            ..dr_conn(client(i, 1), 1)
        };
        s.insert(new, 0, &mut rec).unwrap();
    }
    assert_eq!(
        syn(s, client(9, 1), 0, &mut rec).unwrap_err(),
        InsertError::Full
    );
}

#[test]
fn secure_tcp_follows_the_tables_pressure() {
    let defense = Defense {
        pressure_percent: 50,
        secure_syn_recv_timeout: 5,
        ..auto()
    };
    let (table, mut shards) = defended(1, 8, defense);
    let s = &mut shards[0];
    let mut rec = Recorder::default();
    s.expire(1, &mut rec);
    assert_eq!(table.defense_status().secure_tcp, DefenseMode::Auto);
    assert!(!table.defense_status().under_pressure);
    for i in 0..5 {
        syn(s, client(i, 1), 1, &mut rec).unwrap();
    }
    s.expire(2, &mut rec);
    let status = table.defense_status();
    assert!(status.under_pressure);
    assert_eq!(status.secure_tcp, DefenseMode::AutoOn);
    assert_eq!(status.drop_entry, DefenseMode::AutoOn);
    assert_eq!(
        table.timeouts().for_state(Protocol::Tcp, TcpState::SynRecv),
        5
    );
    // Under secure_tcp a DR SYN goes to SYNACK (IPVS tcp_states_dos), which lives 5 s.
    let c = syn(s, client(50, 1), 2, &mut rec).unwrap();
    let c = hit(s.lookup_inbound(&FlowKey::tcp(c.client, vip(80)), &AllAvailable, &mut rec));
    assert_eq!(c.state, TcpState::SynAck);
    assert_eq!(c.expires, 2 + 5);
    // The half-open entries of before expire at their (longer) deadline; then pressure ends.
    s.expire(2 + 61, &mut rec);
    assert!(!table.defense_status().under_pressure);
    assert_eq!(table.defense_status().secure_tcp, DefenseMode::Auto);
    assert_eq!(
        table.timeouts().for_state(Protocol::Tcp, TcpState::SynRecv),
        60
    );
    assert!(
        !table.options().secure_tcp,
        "the operator's switch is untouched"
    );
}

/// A flood of spoofed SYNs far beyond the table, with real clients completing their
/// handshakes among it: every real client gets its entry, established ones all survive.
#[test]
fn real_clients_are_served_through_a_flood() {
    let (table, mut shards) = defended(2, 4096, auto());
    let mut rec = Recorder::default();
    let mut established = Vec::new();
    let mut spoofed = 0u32;
    for round in 0..400u32 {
        let now = round / 20;
        // 500 spoofed SYNs...
        for _ in 0..500 {
            spoofed += 1;
            let c = client(0x0100_0000 + spoofed, (spoofed % 60000) as u16 + 1024);
            let s = &mut shards[(spoofed % 2) as usize];
            syn(s, c, now, &mut rec).expect("a spoofed SYN always finds room");
        }
        // ...then one real client: SYN, and its ACK one round trip later.
        let c = client(round, 2000);
        let s = &mut shards[(round % 2) as usize];
        let conn = syn(s, c, now, &mut rec).expect("a real client always gets in");
        for _ in 0..50 {
            spoofed += 1;
            let f = client(0x0100_0000 + spoofed, (spoofed % 60000) as u16 + 1024);
            syn(s, f, now, &mut rec).unwrap();
        }
        assert_eq!(ack(s, &conn, now, &mut rec), TcpState::Established);
        established.push((round, c));
        for shard in shards.iter_mut() {
            shard.expire(now, &mut rec);
        }
    }
    for (round, c) in established {
        assert!(
            alive(&mut shards[(round % 2) as usize], c),
            "established client {round} kept its entry"
        );
    }
    let stats = table.stats();
    assert_eq!(stats.refused, 0);
    assert!(stats.evicted > 200_000 - 4096, "evicted {}", stats.evicted);
    assert!(table.defense_status().under_pressure);
}
