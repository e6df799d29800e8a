//! Inbound and outbound lookups, IPv6, removal, expire_nodest_conn, and a full table.

mod common;

use common::*;
use xvs_conntrack::*;

#[test]
fn inbound_and_outbound_find_the_same_connection() {
    let (table, mut shards) = ConnTable::new(config(2, 64));
    let mut rec = Recorder::default();
    let c = client(1, 40000);
    let conn = shards[1].insert(nat_conn(c, 5), 0, &mut rec).unwrap();
    let key = FlowKey::tcp(c, vip(80));
    let Inbound::Hit(hit) = shards[1].lookup_inbound(&key, &AllAvailable, &mut rec) else {
        panic!("inbound miss");
    };
    assert_eq!(hit, conn);
    assert_eq!(hit.dest_addr, real_server(5));
    // The reply: real server -> client, looked up from any worker's view.
    let back = table
        .lookup_outbound(&FlowKey::tcp(real_server(5), c))
        .unwrap();
    assert_eq!(back.flow, conn.flow);
    assert_eq!(back.vip, vip(80));
    // Near misses.
    let other_port = FlowKey::tcp(client(1, 40001), vip(80));
    assert_eq!(
        shards[1].lookup_inbound(&other_port, &AllAvailable, &mut rec),
        Inbound::Miss
    );
    assert_eq!(
        shards[0].lookup_inbound(&key, &AllAvailable, &mut rec),
        Inbound::Miss,
        "inbound is per shard"
    );
    assert!(
        table
            .lookup_outbound(&FlowKey::udp(real_server(5), c))
            .is_none()
    );
    assert!(
        table
            .lookup_outbound(&FlowKey::tcp(real_server(6), c))
            .is_none()
    );
    assert_eq!(
        shards[1].insert(nat_conn(c, 6), 0, &mut rec),
        Err(InsertError::Exists)
    );
}

#[test]
fn dr_connections_are_not_in_the_outbound_index() {
    let (table, mut shards) = ConnTable::new(config(1, 64));
    let mut rec = Recorder::default();
    let c = client(1, 1);
    let conn = shards[0].insert(dr_conn(c, 1), 0, &mut rec).unwrap();
    assert_eq!(conn.return_path, ReturnPath::Bypass);
    assert!(
        table
            .lookup_outbound(&FlowKey::tcp(conn.dest_addr, c))
            .is_none()
    );
}

#[test]
fn ipv6_flows_use_the_same_types() {
    let (table, mut shards) = ConnTable::new(config(1, 64));
    let mut rec = Recorder::default();
    let v6 = |last: u8, port| {
        let mut a = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        a[15] = last;
        Endpoint::new(a, port)
    };
    let c = v6(1, 50000);
    let v = v6(100, 443);
    let rs = v6(200, 8443);
    let new = NewConn {
        key: FlowKey::tcp(c, v),
        dest: DestId(9),
        dest_addr: rs,
        return_path: ReturnPath::ViaDirector,
        template: None,
    };
    shards[0].insert(new, 0, &mut rec).unwrap();
    assert!(matches!(
        shards[0].lookup_inbound(&FlowKey::tcp(c, v), &AllAvailable, &mut rec),
        Inbound::Hit(_)
    ));
    assert_eq!(table.lookup_outbound(&FlowKey::tcp(rs, c)).unwrap().vip, v);
    // The IPv4 address with the same low bits is a different flow.
    let c4 = Endpoint::new([0, 0, 0, 1], 50000);
    let v4 = Endpoint::new([0, 0, 0, 100], 443);
    assert_eq!(
        shards[0].lookup_inbound(&FlowKey::tcp(c4, v4), &AllAvailable, &mut rec),
        Inbound::Miss
    );
    let ip: std::net::IpAddr = "2001:db8::1".parse().unwrap();
    assert_eq!(Addr::from(ip), c.addr);
    assert_eq!(c.addr.to_ip(), ip);
}

#[test]
fn removal_releases_counters_and_stale_handles_fail() {
    let (table, mut shards) = ConnTable::new(config(1, 64));
    let mut rec = Recorder::default();
    let s = &mut shards[0];
    let conn = s.insert(nat_conn(client(1, 1), 1), 0, &mut rec).unwrap();
    s.on_packet(conn.flow, Direction::Input, TcpFlags::SYN, 0, &mut rec)
        .unwrap();
    assert!(s.remove(conn.flow, &mut rec));
    assert!(!s.remove(conn.flow, &mut rec));
    assert_eq!(rec.total(), Counts::default());
    assert_eq!(
        s.on_packet(conn.flow, Direction::Input, TcpFlags::ACK, 1, &mut rec),
        Err(Gone)
    );
    assert!(table.get(conn.flow).is_none());
    // The slot is reused by a new flow; the old handle still fails.
    let again = s.insert(nat_conn(client(2, 2), 1), 0, &mut rec).unwrap();
    assert_eq!(again.flow.slot, conn.flow.slot);
    assert_ne!(again.flow.generation, conn.flow.generation);
    assert!(table.get(conn.flow).is_none());
    assert!(
        table
            .lookup_outbound(&FlowKey::tcp(real_server(1), client(1, 1)))
            .is_none()
    );
}

#[test]
fn removed_server_with_expire_nodest_conn_off_drops_packets() {
    let (_t, mut shards) = ConnTable::new(config(1, 64));
    let mut rec = Recorder::default();
    let mut servers = Servers::default();
    let c = client(1, 1);
    let s = &mut shards[0];
    let conn = s.insert(nat_conn(c, 1), 0, &mut rec).unwrap();
    s.on_packet(conn.flow, Direction::Input, TcpFlags::SYN, 0, &mut rec)
        .unwrap();
    servers.removed.insert(DestId(1));
    let key = FlowKey::tcp(c, vip(80));
    assert_eq!(s.lookup_inbound(&key, &servers, &mut rec), Inbound::Drop);
    assert_eq!(s.len(), 1, "left to age out");
    assert_eq!(s.expire(60, &mut rec), 1, "SYN_RECV timer");
    assert_eq!(rec.total(), Counts::default());
}

#[test]
fn removed_server_with_expire_nodest_conn_on_expires_at_once() {
    let (table, mut shards) = ConnTable::new(Config {
        options: Options {
            expire_nodest_conn: true,
            ..Options::default()
        },
        ..config(1, 64)
    });
    let mut rec = Recorder::default();
    let mut servers = Servers::default();
    let c = client(1, 1);
    let s = &mut shards[0];
    let conn = s.insert(nat_conn(c, 1), 0, &mut rec).unwrap();
    s.on_packet(conn.flow, Direction::Input, TcpFlags::SYN, 0, &mut rec)
        .unwrap();
    assert_eq!(rec.get(DestId(1)).active, 1);
    servers.removed.insert(DestId(1));
    let key = FlowKey::tcp(c, vip(80));
    assert_eq!(s.lookup_inbound(&key, &servers, &mut rec), Inbound::Miss);
    assert_eq!(rec.total(), Counts::default(), "released exactly once");
    assert_eq!(s.len(), 0);
    assert_eq!(table.stats().nodest_expired, 1);
    // The packet is scheduled anew to another server.
    s.insert(nat_conn(c, 2), 0, &mut rec).unwrap();
    assert_eq!(rec.get(DestId(2)).inactive, 1);
    assert_eq!(
        s.expire(100, &mut rec),
        1,
        "nothing left behind in the wheel"
    );
}

#[test]
fn full_table_refuses_new_flows_and_keeps_established_ones() {
    let (table, mut shards) = ConnTable::new(config(2, 8)); // 4 per shard
    let mut rec = Recorder::default();
    let s = &mut shards[0];
    assert_eq!(s.capacity(), 4);
    let mut conns = Vec::new();
    for i in 0..4 {
        let c = s.insert(nat_conn(client(i, 1), 1), 0, &mut rec).unwrap();
        s.on_packet(c.flow, Direction::Input, TcpFlags::SYN, 0, &mut rec)
            .unwrap();
        s.on_packet(c.flow, Direction::Input, TcpFlags::ACK, 0, &mut rec)
            .unwrap();
        conns.push(c);
    }
    for i in 10..13 {
        assert_eq!(
            s.insert(nat_conn(client(i, 1), 1), 0, &mut rec),
            Err(InsertError::Full)
        );
    }
    let key = TemplateKey::new(
        &ServiceKey::Addr {
            proto: Protocol::Tcp,
            vip: Addr::v4(VIP),
            port: 80,
        },
        client(99, 0).addr,
        PersistenceMask::host(Family::V4),
    );
    assert_eq!(
        s.insert_template(&key, DestId(1), real_server(1), 300, 0, &mut rec),
        Err(InsertError::Full)
    );
    assert_eq!(s.stats().refused, 4);
    assert_eq!(table.stats().refused, 4);
    // Established flows keep working.
    for c in &conns {
        let key = FlowKey::tcp(c.client, vip(80));
        assert!(matches!(
            s.lookup_inbound(&key, &AllAvailable, &mut rec),
            Inbound::Hit(_)
        ));
        assert_eq!(
            s.on_packet(c.flow, Direction::Input, TcpFlags::ACK, 5, &mut rec),
            Ok(TcpState::Established)
        );
    }
    // The other shard has its own room.
    assert!(
        shards[1]
            .insert(nat_conn(client(50, 1), 1), 0, &mut rec)
            .is_ok()
    );
    // When one closes and expires, there is room again.
    let s = &mut shards[0];
    s.on_packet(conns[0].flow, Direction::Input, TcpFlags::RST, 10, &mut rec)
        .unwrap();
    assert_eq!(s.expire(20, &mut rec), 1);
    assert!(s.insert(nat_conn(client(10, 1), 1), 20, &mut rec).is_ok());
}

#[test]
fn batch_lookups_answer_each_key() {
    let (table, mut shards) = ConnTable::new(config(1, 64));
    let mut rec = Recorder::default();
    for i in 0..4 {
        shards[0]
            .insert(nat_conn(client(i, 1), 1), 0, &mut rec)
            .unwrap();
    }
    let keys: Vec<FlowKey> = (0..8)
        .map(|i| FlowKey::tcp(client(i, 1), vip(80)))
        .collect();
    let mut out = vec![Inbound::Miss; 8];
    shards[0].lookup_inbound_batch(&keys, &AllAvailable, &mut rec, &mut out);
    let hits = out.iter().filter(|r| matches!(r, Inbound::Hit(_))).count();
    assert_eq!(hits, 4);
    let replies: Vec<FlowKey> = (0..8)
        .map(|i| FlowKey::tcp(real_server(1), client(i, 1)))
        .collect();
    let mut back = vec![None; 8];
    table.lookup_outbound_batch(&replies, &mut back);
    assert_eq!(back.iter().flatten().count(), 4);
    assert!(back[..4].iter().all(Option::is_some));
}

#[test]
fn expire_dest_flushes_a_removed_server_and_its_idle_templates() {
    let (table, mut shards) = ConnTable::new(config(1, 64));
    let mut rec = Recorder::default();
    let s = &mut shards[0];
    let key = TemplateKey::new(
        &ServiceKey::Addr {
            proto: Protocol::Tcp,
            vip: Addr::v4(VIP),
            port: 80,
        },
        client(1, 0).addr,
        PersistenceMask::host(Family::V4),
    );
    let t = s
        .insert_template(&key, DestId(1), real_server(1), 300, 0, &mut rec)
        .unwrap();
    for i in 0..3 {
        let new = NewConn {
            template: (i == 0).then_some(t),
            ..nat_conn(client(1, 100 + i as u16), 1)
        };
        let c = s.insert(new, 0, &mut rec).unwrap();
        s.on_packet(c.flow, Direction::Input, TcpFlags::SYN, 0, &mut rec)
            .unwrap();
    }
    s.insert(nat_conn(client(2, 1), 2), 0, &mut rec).unwrap();
    assert_eq!(rec.get(DestId(1)).active, 3);
    assert_eq!(
        s.expire_dest(DestId(1), &mut rec),
        4,
        "3 connections and the template"
    );
    assert_eq!(
        rec.get(DestId(1)),
        Counts::default(),
        "every counter of the removed server released once"
    );
    assert_eq!(rec.get(DestId(2)).inactive, 1);
    assert_eq!(s.len(), 1);
    assert!(table.find_template(&key, &AllAvailable).is_none());
    assert_eq!(s.expire(1000, &mut rec), 1);
    assert_eq!(rec.total(), Counts::default());
}

/// An established-then-closed connection and a new SYN on the same tuple.
fn closed_then_syn(
    options: Options,
    return_path: ReturnPath,
    close: &[(Direction, TcpFlags)],
) -> (Inbound, Recorder) {
    let (_t, mut shards) = ConnTable::new(Config {
        options,
        ..config(1, 16)
    });
    let mut rec = Recorder::default();
    let c = client(1, 1);
    let s = &mut shards[0];
    let new = NewConn {
        return_path,
        ..nat_conn(c, 1)
    };
    let conn = s.insert(new, 0, &mut rec).unwrap();
    for (dir, flags) in [
        (Direction::Input, TcpFlags::SYN),
        (Direction::Input, TcpFlags::ACK),
    ]
    .iter()
    .chain(close)
    {
        s.on_packet(conn.flow, *dir, *flags, 0, &mut rec).unwrap();
    }
    let res = s.lookup_inbound_new(&FlowKey::tcp(c, vip(80)), &AllAvailable, &mut rec);
    (res, rec)
}

#[test]
fn conn_reuse_mode_reschedules_a_syn_on_a_closing_tuple() {
    use Direction::*;
    let ipvs = Options::default();
    assert_eq!(ipvs.conn_reuse_mode, 1);
    // NAT, both sides closed: TIME_WAIT -> expired, rescheduled, counters released.
    let fins = [(Input, TcpFlags::FIN_ACK), (Output, TcpFlags::FIN_ACK)];
    let (res, rec) = closed_then_syn(ipvs, ReturnPath::ViaDirector, &fins);
    assert_eq!(res, Inbound::Miss);
    assert_eq!(rec.total(), Counts::default());
    // Reset: CLOSE -> rescheduled.
    let (res, _) = closed_then_syn(ipvs, ReturnPath::ViaDirector, &[(Input, TcpFlags::RST)]);
    assert_eq!(res, Inbound::Miss);
    // Still established: the SYN belongs to the old connection.
    let (res, _) = closed_then_syn(ipvs, ReturnPath::ViaDirector, &[]);
    assert!(matches!(res, Inbound::Hit(c) if c.state == TcpState::Established));
    // DR, client FIN: FIN_WAIT with no output seen; only mode bit 2 reschedules.
    let fin = [(Input, TcpFlags::FIN_ACK)];
    let (res, _) = closed_then_syn(ipvs, ReturnPath::Bypass, &fin);
    assert!(matches!(res, Inbound::Hit(c) if c.state == TcpState::FinWait));
    let mode3 = Options {
        conn_reuse_mode: 3,
        ..ipvs
    };
    let (res, _) = closed_then_syn(mode3, ReturnPath::Bypass, &fin);
    assert_eq!(res, Inbound::Miss);
    // Mode 0 keeps the old entry.
    let off = Options {
        conn_reuse_mode: 0,
        ..ipvs
    };
    let (res, _) = closed_then_syn(off, ReturnPath::ViaDirector, &fins);
    assert!(matches!(res, Inbound::Hit(c) if c.state == TcpState::TimeWait));
}

#[test]
fn syn_to_a_quiesced_server_is_rescheduled_with_expire_nodest_conn() {
    let (_t, mut shards) = ConnTable::new(Config {
        options: Options {
            expire_nodest_conn: true,
            ..Options::default()
        },
        ..config(1, 16)
    });
    let mut rec = Recorder::default();
    let mut servers = Servers::default();
    let c = client(1, 1);
    let s = &mut shards[0];
    let conn = s.insert(nat_conn(c, 1), 0, &mut rec).unwrap();
    s.on_packet(conn.flow, Direction::Input, TcpFlags::SYN, 0, &mut rec)
        .unwrap();
    servers.quiesced.insert(DestId(1));
    let key = FlowKey::tcp(c, vip(80));
    // Other packets keep flowing to the quiesced server; a new SYN goes elsewhere.
    assert!(matches!(
        s.lookup_inbound(&key, &servers, &mut rec),
        Inbound::Hit(_)
    ));
    assert_eq!(
        s.lookup_inbound_new(&key, &servers, &mut rec),
        Inbound::Miss
    );
    assert_eq!(rec.total(), Counts::default());
}

#[test]
fn listing_shows_connections_and_templates() {
    let (table, mut shards) = ConnTable::new(config(2, 64));
    let mut rec = Recorder::default();
    let fwmark = TemplateKey::new(
        &ServiceKey::Fwmark {
            mark: 42,
            family: Family::V4,
        },
        client(9, 0).addr,
        PersistenceMask::v4_prefix(24),
    );
    shards[1]
        .insert_template(&fwmark, DestId(3), real_server(3), 600, 0, &mut rec)
        .unwrap();
    let a = shards[1]
        .insert(nat_conn(client(1, 10), 1), 0, &mut rec)
        .unwrap();
    let b = shards[1]
        .insert(dr_conn(client(2, 20), 2), 0, &mut rec)
        .unwrap();
    shards[1].remove(b.flow, &mut rec);
    shards[0]
        .insert(nat_conn(client(3, 30), 1), 0, &mut rec)
        .unwrap();
    let mut listed = Vec::new();
    table.for_each_entry(1, |e| listed.push(e));
    assert_eq!(listed.len(), 2, "{listed:?}");
    let t = listed.iter().find(|e| e.template).unwrap();
    assert_eq!(t.proto, None);
    assert_eq!(t.client.addr, Addr::v4([10, 0, 0, 0]));
    assert_eq!(t.vip.addr.bits(), 42);
    assert_eq!(
        (t.dest, t.expires, t.state),
        (DestId(3), 600, TcpState::None)
    );
    let c = listed.iter().find(|e| !e.template).unwrap();
    assert_eq!(c.flow, a.flow);
    assert_eq!(c.proto, Some(Protocol::Tcp));
    assert_eq!(
        (c.client, c.vip, c.dest_addr),
        (a.client, a.vip, a.dest_addr)
    );
    let mut other = 0;
    table.for_each_entry(0, |_| other += 1);
    assert_eq!(other, 1);
}

#[test]
fn inbound_any_finds_a_connection_from_every_shard_without_side_effects() {
    let (table, mut shards) = ConnTable::new(config(2, 64));
    let mut rec = Recorder::default();
    let c = client(3, 40000);
    let conn = shards[1].insert(nat_conn(c, 5), 0, &mut rec).unwrap();
    let key = FlowKey::tcp(c, vip(80));
    // Shard 0's own lookup misses; the shared lookup finds it in shard 1.
    assert_eq!(
        shards[0].lookup_inbound(&key, &AllAvailable, &mut rec),
        Inbound::Miss
    );
    assert_eq!(
        table.lookup_inbound_any(&key).map(|hit| hit.flow),
        Some(conn.flow)
    );
    assert!(
        table
            .lookup_inbound_any(&FlowKey::tcp(client(3, 40001), vip(80)))
            .is_none()
    );
    // After removal it is gone everywhere.
    assert!(shards[1].remove(conn.flow, &mut rec));
    assert!(table.lookup_inbound_any(&key).is_none());
}

#[test]
fn track_inbound_is_lookup_and_state_update_in_one() {
    for expire_nodest_conn in [false, true] {
        let (table, mut shards) = ConnTable::new(Config {
            options: Options {
                expire_nodest_conn,
                ..Options::default()
            },
            ..config(1, 64)
        });
        let mut rec = Recorder::default();
        let mut servers = Servers::default();
        let c = client(1, 1);
        let key = FlowKey::tcp(c, vip(80));
        let s = &mut shards[0];
        assert_eq!(
            s.track_inbound(&key, TcpFlags::ACK, 0, &servers, &mut rec),
            Tracked::Miss
        );
        let conn = s.insert(nat_conn(c, 1), 0, &mut rec).unwrap();
        s.on_packet(conn.flow, Direction::Input, TcpFlags::SYN, 0, &mut rec)
            .unwrap();
        // The handshake's ACK: ESTABLISHED, the timer restarted, what forwarding needs.
        let Tracked::Hit(hit) = s.track_inbound(&key, TcpFlags::ACK, 5, &servers, &mut rec) else {
            panic!("known flow not tracked")
        };
        assert_eq!(
            (hit.flow, hit.dest, hit.dest_addr, hit.state),
            (conn.flow, DestId(1), real_server(1), TcpState::Established)
        );
        let now = table.get(conn.flow).unwrap();
        assert_eq!((now.state, now.expires), (TcpState::Established, 5 + 900));
        assert_eq!(rec.get(DestId(1)).active, 1);
        // Its server removed: dropped, or expired at once and a miss (IPVS).
        servers.removed.insert(DestId(1));
        let after = s.track_inbound(&key, TcpFlags::ACK, 6, &servers, &mut rec);
        if expire_nodest_conn {
            assert_eq!(after, Tracked::Miss);
            assert_eq!((s.len(), rec.total()), (0, Counts::default()));
        } else {
            assert_eq!(after, Tracked::Drop);
            assert_eq!(s.len(), 1);
        }
    }
}

#[test]
fn touch_applies_only_packets_that_keep_the_state() {
    let (table, mut shards) = ConnTable::new(config(1, 64));
    let mut rec = Recorder::default();
    let c = client(1, 1);
    let key = FlowKey::tcp(c, vip(80));
    let s = &mut shards[0];
    let bucket = s.prefetch_inbound(&key);
    assert!(s.peek_inbound(bucket, &key).is_none());
    let conn = s.insert(nat_conn(c, 1), 0, &mut rec).unwrap();
    s.on_packet(conn.flow, Direction::Input, TcpFlags::SYN, 0, &mut rec)
        .unwrap();
    // SYN_RECV + ACK would become ESTABLISHED: not the fast path's, nothing changes.
    let peeked = s.peek_inbound(bucket, &key).unwrap();
    assert_eq!(
        (peeked.dest, s.peeked_dest_addr(&peeked)),
        (DestId(1), real_server(1))
    );
    let before = table.get(conn.flow).unwrap();
    assert_eq!(s.touch(&peeked, TcpFlags::ACK, 5), None);
    assert_eq!(table.get(conn.flow).unwrap(), before);
    s.on_packet(conn.flow, Direction::Input, TcpFlags::ACK, 5, &mut rec)
        .unwrap();
    let counts = rec.total();
    // ESTABLISHED + ACK stays: the timer restarts, no counter moves.
    let peeked = s.peek_inbound(bucket, &key).unwrap();
    assert_eq!(s.touch(&peeked, TcpFlags::ACK, 9), Some(conn.flow));
    let now = table.get(conn.flow).unwrap();
    assert_eq!((now.state, now.expires), (TcpState::Established, 9 + 900));
    assert_eq!(rec.total(), counts);
    // A stale peek (the entry changed since) is refused, and so is a FIN.
    assert_eq!(s.touch(&peeked, TcpFlags::ACK, 10), None);
    let peeked = s.peek_inbound(bucket, &key).unwrap();
    assert_eq!(s.touch(&peeked, TcpFlags::FIN_ACK, 10), None);
    assert_eq!(table.get(conn.flow).unwrap().expires, 9 + 900);
}

#[test]
fn an_ipv4_tuple_read_from_packet_bytes_hashes_to_its_keys_bucket() {
    let (_table, shards) = ConnTable::new(config(1, 1 << 16));
    let s = &shards[0];
    for (i, proto) in (0..2000u32).zip([Protocol::Tcp, Protocol::Udp].into_iter().cycle()) {
        let src = std::net::Ipv4Addr::from(0x0a00_0000 | i.wrapping_mul(2_654_435_761) >> 8);
        let dst = std::net::Ipv4Addr::from(0xc0a8_0000 | (i % 7));
        let (sport, dport) = (1024 + (i as u16).wrapping_mul(31), 80 + (i % 3) as u16);
        let key = FlowKey::new(
            proto,
            Endpoint::new(Addr::v4(src.octets()), sport),
            Endpoint::new(Addr::v4(dst.octets()), dport),
        );
        // As an IPv4 header's bytes 12..20 and a TCP/UDP header's first four read.
        let addresses = u64::from(src.to_bits()) << 32 | u64::from(dst.to_bits());
        let ports = u32::from(sport) << 16 | u32::from(dport);
        assert_eq!(
            s.prefetch_inbound_v4(proto, addresses, ports),
            s.prefetch_inbound(&key),
            "{key:?}"
        );
    }
}
