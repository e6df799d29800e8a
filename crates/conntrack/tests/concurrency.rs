//! Two threads on one table: lock-free outbound lookups while the owner churns, and
//! exactly-once counter updates when two workers drive the same connections.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use common::*;
use xvs_conntrack::*;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn outbound_lookups_from_another_thread_while_the_owner_churns() {
    const STABLE: u32 = 2_000;
    const CHURN: u32 = 2_000;
    let (table, mut shards) = ConnTable::new(config(1, 8_000));
    let mut owner = shards.pop().unwrap();
    let mut rec = Recorder::default();
    for i in 0..STABLE {
        let c = owner
            .insert(nat_conn(client(i, 7), (i % 8) as u8), 0, &mut rec)
            .unwrap();
        for flags in [TcpFlags::SYN, TcpFlags::ACK] {
            owner
                .on_packet(c.flow, Direction::Input, flags, 0, &mut rec)
                .unwrap();
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let table = table.clone();
        let stop = stop.clone();
        thread::spawn(move || {
            let mut rng = XorShift(0x9e37_79b9);
            let (mut lookups, mut churn_hits) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) || lookups < 100_000 {
                let i = (rng.next() % STABLE as u64) as u32;
                let rs = real_server((i % 8) as u8);
                let hit = table
                    .lookup_outbound(&FlowKey::tcp(rs, client(i, 7)))
                    .expect("a stable flow must always be found");
                assert_eq!(hit.client, client(i, 7));
                assert_eq!(hit.vip, vip(80));
                assert_eq!(hit.dest, DestId(i % 8));
                // Churned flows: found with the right data, or not found; never garbage.
                let j = (rng.next() % CHURN as u64) as u32;
                if let Some(h) = table.lookup_outbound(&FlowKey::tcp(real_server(9), client(j, 9)))
                {
                    assert_eq!(h.client, client(j, 9));
                    assert_eq!(h.dest, DestId(9));
                    churn_hits += 1;
                }
                lookups += 1;
            }
            (lookups, churn_hits)
        })
    };
    // The owner inserts and removes flows in bucket chains the reader walks.
    let mut live = Vec::new();
    for round in 0..200u32 {
        for j in 0..CHURN / 4 {
            let id = (round * 7 + j * 4) % CHURN;
            if let Ok(c) = owner.insert(nat_conn(client(id, 9), 9), round, &mut rec) {
                live.push(c.flow);
            }
        }
        for flow in live.drain(..).rev().step_by(1) {
            owner.remove(flow, &mut rec);
        }
        owner.expire(round, &mut rec);
    }
    stop.store(true, Ordering::Relaxed);
    let (lookups, _) = reader.join().unwrap();
    assert!(lookups >= 100_000);
}

#[test]
fn two_workers_updating_the_same_connections_count_each_crossing_once() {
    const FLOWS: u32 = 256;
    let (table, mut shards) = ConnTable::new(config(1, 1024));
    let mut owner = shards.pop().unwrap();
    let mut rec_owner = Recorder::partial();
    let flows: Vec<FlowRef> = (0..FLOWS)
        .map(|i| {
            owner
                .insert(nat_conn(client(i, 1), (i % 4) as u8), 0, &mut rec_owner)
                .unwrap()
                .flow
        })
        .collect();
    let flag_set = [
        TcpFlags::SYN,
        TcpFlags::SYN_ACK,
        TcpFlags::ACK,
        TcpFlags::FIN_ACK,
        TcpFlags::RST,
    ];
    let other = {
        let table = table.clone();
        let flows = flows.clone();
        thread::spawn(move || {
            let mut rec = Recorder::partial();
            let mut rng = XorShift(17);
            for _ in 0..200_000 {
                let f = flows[(rng.next() % FLOWS as u64) as usize];
                let flags = flag_set[(rng.next() % 5) as usize];
                table
                    .on_packet(f, Direction::Output, flags, 1, &mut rec)
                    .unwrap();
            }
            rec
        })
    };
    let mut rng = XorShift(99);
    for _ in 0..200_000 {
        let f = flows[(rng.next() % FLOWS as u64) as usize];
        let flags = flag_set[(rng.next() % 5) as usize];
        owner
            .on_packet(f, Direction::Input, flags, 1, &mut rec_owner)
            .unwrap();
    }
    let rec_other = other.join().unwrap();
    let mut all = Recorder::default();
    all.merge(&rec_owner);
    all.merge(&rec_other);
    // The merged counters must equal what the final states say, per real server.
    for d in 0..4u32 {
        let (mut active, mut inactive) = (0, 0);
        for (i, f) in flows.iter().enumerate() {
            if i as u32 % 4 != d {
                continue;
            }
            let c = table.get(*f).unwrap();
            assert_eq!(c.active, c.state.is_active(), "{c:?}");
            if c.active {
                active += 1;
            } else {
                inactive += 1;
            }
        }
        let got = all.get(DestId(d));
        assert_eq!((got.active, got.inactive), (active, inactive), "dest {d}");
    }
    // Expiry releases each exactly once.
    owner.expire(10_000, &mut all);
    assert_eq!(owner.len(), 0);
    assert_eq!(all.total(), Counts::default());
}

#[test]
fn templates_attach_from_two_workers_and_expire_once() {
    let (table, mut shards) = ConnTable::new(config(2, 4096));
    let mut s1 = shards.pop().unwrap();
    let mut s0 = shards.pop().unwrap();
    let mut rec0 = Recorder::partial();
    let key = TemplateKey::new(
        &ServiceKey::Addr {
            proto: Protocol::Tcp,
            vip: Addr::v4(VIP),
            port: 80,
        },
        client(1, 0).addr,
        PersistenceMask::host(Family::V4),
    );
    let t = s0
        .insert_template(&key, DestId(1), real_server(1), 300, 0, &mut rec0)
        .unwrap();
    let worker = {
        let table = table.clone();
        thread::spawn(move || {
            let mut rec = Recorder::partial();
            for port in 0..1000u16 {
                let t = table.find_template(&key, &AllAvailable).unwrap();
                let new = NewConn {
                    template: Some(t),
                    ..nat_conn(client(1, 1000 + port), 1)
                };
                s1.insert(new, 0, &mut rec).unwrap();
            }
            s1.expire(10, &mut rec);
            assert_eq!(s1.len(), 0);
            rec
        })
    };
    for port in 0..1000u16 {
        let new = NewConn {
            template: Some(t),
            ..nat_conn(client(1, 3000 + port), 1)
        };
        s0.insert(new, 0, &mut rec0).unwrap();
    }
    s0.expire(10, &mut rec0);
    let rec1 = worker.join().unwrap();
    assert_eq!(s0.len(), 1, "only the template is left");
    s0.expire(1000, &mut rec0);
    assert_eq!(s0.len(), 0);
    let mut all = Recorder::default();
    all.merge(&rec0);
    all.merge(&rec1);
    assert_eq!(all.total(), Counts::default());
}

#[test]
fn replies_racing_removal_and_expiry_still_count_once() {
    // The owner creates, feeds, removes and expires NAT flows while another worker finds
    // their replies and pushes state changes. Every crossing and every release must be
    // counted exactly once: after a final expiry the merged counters are zero.
    const CLIENTS: u32 = 512;
    let (table, mut shards) = ConnTable::new(config(1, 1024));
    let mut owner = shards.pop().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicBool::new(false));
    let replier = {
        let table = table.clone();
        let stop = stop.clone();
        let ready = ready.clone();
        thread::spawn(move || {
            ready.store(true, Ordering::Relaxed);
            let mut rec = Recorder::partial();
            let mut rng = XorShift(4242);
            let flags = [
                TcpFlags::SYN_ACK,
                TcpFlags::ACK,
                TcpFlags::FIN_ACK,
                TcpFlags::RST,
            ];
            let mut updates = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let i = (rng.next() % CLIENTS as u64) as u32;
                let reply = FlowKey::tcp(real_server((i % 4) as u8), client(i, 5));
                if let Some(conn) = table.lookup_outbound(&reply) {
                    let f = flags[(rng.next() % 4) as usize];
                    // The owner may have removed it meanwhile: Gone is fine, a miscount is not.
                    if table
                        .on_packet(conn.flow, Direction::Output, f, 50, &mut rec)
                        .is_ok()
                    {
                        updates += 1;
                    }
                }
            }
            (rec, updates)
        })
    };
    while !ready.load(Ordering::Relaxed) {
        thread::yield_now();
    }
    let mut rec = Recorder::partial();
    let mut rng = XorShift(777);
    let mut flows: Vec<Option<FlowRef>> = vec![None; CLIENTS as usize];
    for now in 0..400u32 {
        for _ in 0..64 {
            let i = (rng.next() % CLIENTS as u64) as usize;
            match flows[i] {
                None => {
                    if let Ok(c) =
                        owner.insert(nat_conn(client(i as u32, 5), (i % 4) as u8), now, &mut rec)
                    {
                        flows[i] = Some(c.flow);
                    }
                }
                Some(flow) => {
                    let r = rng.next() % 8;
                    let outcome = if r == 0 {
                        owner
                            .remove(flow, &mut rec)
                            .then_some(TcpState::None)
                            .ok_or(Gone)
                    } else {
                        let f = [
                            TcpFlags::SYN,
                            TcpFlags::ACK,
                            TcpFlags::FIN_ACK,
                            TcpFlags::RST,
                        ][(r % 4) as usize];
                        owner.on_packet(flow, Direction::Input, f, now, &mut rec)
                    };
                    if r == 0 || outcome.is_err() {
                        flows[i] = None;
                    }
                }
            }
        }
        owner.expire(now, &mut rec);
        // Forget handles of flows the wheel took.
        for f in flows.iter_mut() {
            if let Some(flow) = *f
                && table.get(flow).is_none()
            {
                *f = None;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (rec_replier, _updates) = replier.join().unwrap();
    let mut all = Recorder::default();
    all.merge(&rec);
    all.merge(&rec_replier);
    owner.expire(1_000_000, &mut all);
    assert_eq!(owner.len(), 0);
    assert_eq!(all.total(), Counts::default(), "{:?}", all.by_dest);
}
