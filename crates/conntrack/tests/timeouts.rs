//! Timeouts and expiry with a controlled clock.

mod common;

use common::*;
use xvs_conntrack::timeouts::DEFAULT_TCP_TIMEOUTS;
use xvs_conntrack::*;

fn established(shard: &mut Shard, rec: &mut Recorder, c: Endpoint, now: Secs) -> Conn {
    let conn = shard.insert(nat_conn(c, 1), now, rec).unwrap();
    shard
        .on_packet(conn.flow, Direction::Input, TcpFlags::SYN, now, rec)
        .unwrap();
    shard
        .on_packet(conn.flow, Direction::Input, TcpFlags::ACK, now, rec)
        .unwrap();
    conn
}

#[test]
fn defaults_are_ipvs_values() {
    let t = Timeouts::default();
    let expect = [
        (TcpState::Established, 900),
        (TcpState::SynRecv, 60),
        (TcpState::FinWait, 120),
        (TcpState::TimeWait, 120),
        (TcpState::Close, 10),
        (TcpState::CloseWait, 60),
        (TcpState::LastAck, 30),
        (TcpState::SynSent, 120),
        (TcpState::Listen, 120),
        (TcpState::SynAck, 120),
    ];
    for (s, secs) in expect {
        assert_eq!(t.for_state(Protocol::Tcp, s), secs, "{s:?}");
        assert_eq!(DEFAULT_TCP_TIMEOUTS[s as usize], secs);
    }
    assert_eq!(t.for_state(Protocol::Udp, TcpState::None), 300);
    assert_eq!(
        t.get(),
        SetTimeouts {
            tcp: 900,
            tcpfin: 120,
            udp: 300
        }
    );
}

#[test]
fn established_expires_900s_after_last_packet() {
    let (_t, mut shards) = ConnTable::new(config(1, 16));
    let mut rec = Recorder::default();
    let s = &mut shards[0];
    let conn = established(s, &mut rec, client(1, 1000), 0);
    // A packet at t=500 pushes the deadline to 1400.
    s.on_packet(conn.flow, Direction::Input, TcpFlags::ACK, 500, &mut rec)
        .unwrap();
    assert_eq!(s.expire(1399, &mut rec), 0);
    assert_eq!(s.len(), 1);
    assert_eq!(s.expire(1400, &mut rec), 1);
    assert_eq!(s.len(), 0);
    assert_eq!(rec.total(), Counts::default());
    assert_eq!(s.stats().expired, 1);
}

#[test]
fn new_connection_without_packets_lives_three_seconds() {
    let (_t, mut shards) = ConnTable::new(config(1, 16));
    let mut rec = Recorder::default();
    shards[0]
        .insert(nat_conn(client(1, 1), 1), 10, &mut rec)
        .unwrap();
    assert_eq!(shards[0].expire(12, &mut rec), 0);
    assert_eq!(shards[0].expire(13, &mut rec), 1);
}

#[test]
fn fin_shortens_the_timer_on_the_owner_and_from_another_worker() {
    let (table, mut shards) = ConnTable::new(config(2, 64));
    let mut rec = Recorder::default();
    let a = established(&mut shards[0], &mut rec, client(1, 1), 0);
    let b = established(&mut shards[0], &mut rec, client(2, 2), 0);
    // Owner: FIN in ESTABLISHED (NAT, input) -> CLOSE_WAIT, 60 s.
    shards[0]
        .on_packet(a.flow, Direction::Input, TcpFlags::FIN_ACK, 100, &mut rec)
        .unwrap();
    // Another worker sees the server's FIN for b: ES -> FIN_WAIT, 120 s.
    table
        .on_packet(b.flow, Direction::Output, TcpFlags::FIN_ACK, 100, &mut rec)
        .unwrap();
    assert_eq!(shards[0].expire(159, &mut rec), 0);
    assert_eq!(shards[0].expire(160, &mut rec), 1, "CLOSE_WAIT 60 s");
    assert_eq!(shards[0].expire(219, &mut rec), 0);
    assert_eq!(shards[0].expire(220, &mut rec), 1, "FIN_WAIT 120 s");
    assert_eq!(rec.total(), Counts::default());
}

#[test]
fn set_changes_timeouts_at_run_time_and_zero_keeps() {
    let (table, mut shards) = ConnTable::new(config(1, 16));
    let mut rec = Recorder::default();
    table.timeouts().set(SetTimeouts {
        tcp: 30,
        tcpfin: 0,
        udp: 5,
    });
    assert_eq!(
        table.timeouts().get(),
        SetTimeouts {
            tcp: 30,
            tcpfin: 120,
            udp: 5
        }
    );
    let s = &mut shards[0];
    let tcp = established(s, &mut rec, client(1, 1), 0);
    let udp = s
        .insert(
            NewConn {
                key: FlowKey::udp(client(2, 2), vip(53)),
                ..nat_conn(client(0, 0), 1)
            },
            0,
            &mut rec,
        )
        .unwrap();
    s.on_packet(udp.flow, Direction::Input, TcpFlags::NONE, 0, &mut rec)
        .unwrap();
    assert_eq!(table.get(tcp.flow).unwrap().expires, 30);
    assert_eq!(table.get(udp.flow).unwrap().expires, 5);
    assert_eq!(s.expire(5, &mut rec), 1);
    assert_eq!(s.expire(30, &mut rec), 1);
    // tcpfin reaches FIN_WAIT.
    table.timeouts().set(SetTimeouts {
        tcp: 0,
        tcpfin: 7,
        udp: 0,
    });
    let c = established(s, &mut rec, client(3, 3), 40);
    s.on_packet(c.flow, Direction::Output, TcpFlags::FIN_ACK, 41, &mut rec)
        .unwrap();
    assert_eq!(table.get(c.flow).unwrap().state, TcpState::FinWait);
    assert_eq!(s.expire(47, &mut rec), 0);
    assert_eq!(s.expire(48, &mut rec), 1);
}

#[test]
fn long_pauses_and_long_timeouts() {
    let (table, mut shards) = ConnTable::new(config(1, 16));
    let mut rec = Recorder::default();
    table.timeouts().set(SetTimeouts {
        tcp: 5000, // beyond the wheel's span
        tcpfin: 0,
        udp: 0,
    });
    let s = &mut shards[0];
    established(s, &mut rec, client(1, 1), 0);
    for now in (0..5000).step_by(333) {
        assert_eq!(s.expire(now, &mut rec), 0, "at {now}");
    }
    assert_eq!(s.expire(4999, &mut rec), 0);
    // The worker sleeps far past the deadline: one call still finds it.
    assert_eq!(s.expire(100_000, &mut rec), 1);
}

#[test]
fn expiry_work_is_proportional_to_due_entries() {
    // 10k long-lived flows, 10 short ones: expiring the short ones must not touch the rest.
    let (_t, mut shards) = ConnTable::new(config(1, 20_000));
    let mut rec = Recorder::default();
    let s = &mut shards[0];
    for i in 0..10_000 {
        established(s, &mut rec, client(i, 1000), 0);
    }
    for i in 0..10 {
        s.insert(nat_conn(client(i, 2000), 1), 0, &mut rec).unwrap();
    }
    let events_before = rec.events;
    assert_eq!(s.expire(3, &mut rec), 10);
    assert_eq!(rec.events - events_before, 10);
    assert_eq!(s.len(), 10_000);
}
