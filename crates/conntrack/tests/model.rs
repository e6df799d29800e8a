//! Model-based property test: random sequences of inserts, packets, removals and clock steps
//! against a plain map that knows what IPVS would hold. After every step the table must agree
//! with the model on which flows exist, their state and deadline, and the real servers'
//! counters.

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use xvs_conntrack::state::{select_table, transition};
use xvs_conntrack::*;

#[derive(Clone, Debug)]
enum Op {
    Insert { client: u8, dest: u8, nat: bool },
    Packet { client: u8, output: bool, flags: u8 },
    Remove { client: u8 },
    Tick { secs: u16 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..24, 0u8..3, any::<bool>()).prop_map(|(client, dest, nat)| Op::Insert { client, dest, nat }),
        6 => (0u8..24, any::<bool>(), prop::sample::select(vec![0x02u8, 0x12, 0x10, 0x11, 0x04, 0x08]))
            .prop_map(|(client, output, flags)| Op::Packet { client, output, flags }),
        1 => (0u8..24).prop_map(|client| Op::Remove { client }),
        2 => (0u16..400).prop_map(|secs| Op::Tick { secs }),
    ]
}

#[derive(Clone, Debug)]
struct Expected {
    flow: FlowRef,
    dest: u8,
    nat: bool,
    state: TcpState,
    no_output: bool,
    deadline: Secs,
}

fn endpoint(c: u8) -> Endpoint {
    client(c as u32, 1000 + c as u16)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn table_agrees_with_model(ops in prop::collection::vec(op(), 1..120)) {
        let (table, mut shards) = ConnTable::new(config(1, 16));
        let s = &mut shards[0];
        let mut rec = Recorder::default();
        let mut model: BTreeMap<u8, Expected> = BTreeMap::new();
        let mut now: Secs = 0;
        let timeouts = Timeouts::default();
        for op in ops {
            match op {
                Op::Insert { client, dest, nat } => {
                    let new = if nat { nat_conn(endpoint(client), dest) } else { dr_conn(endpoint(client), dest) };
                    let res = s.insert(new, now, &mut rec);
                    if model.contains_key(&client) {
                        prop_assert_eq!(res, Err(InsertError::Exists));
                    } else if model.len() == 16 {
                        prop_assert_eq!(res, Err(InsertError::Full));
                    } else {
                        let conn = res.unwrap();
                        model.insert(client, Expected { flow: conn.flow, dest, nat, state: TcpState::None, no_output: !nat, deadline: now + 3 });
                    }
                }
                Op::Packet { client, output, flags } => {
                    let Some(e) = model.get_mut(&client) else { continue };
                    let dir = if output { Direction::Output } else { Direction::Input };
                    let got = s.on_packet(e.flow, dir, TcpFlags::from_byte(flags), now, &mut rec).unwrap();
                    let (t, no_output) = select_table(dir, e.no_output);
                    e.no_output = no_output;
                    e.state = transition(TableSet::Normal, t, TcpFlags::from_byte(flags), e.state);
                    e.deadline = now + timeouts.for_state(Protocol::Tcp, e.state);
                    prop_assert_eq!(got, e.state);
                }
                Op::Remove { client } => {
                    let removed = model.remove(&client);
                    let flow = removed.as_ref().map(|e| e.flow).unwrap_or(FlowRef { shard: 0, slot: 0, generation: 999 });
                    prop_assert_eq!(s.remove(flow, &mut rec), removed.is_some());
                }
                Op::Tick { secs } => {
                    now += secs as Secs;
                    let due = model.values().filter(|e| e.deadline <= now).count();
                    model.retain(|_, e| e.deadline > now);
                    prop_assert_eq!(s.expire(now, &mut rec), due);
                }
            }
            // The table and the model agree on every flow and on the counters.
            prop_assert_eq!(s.len(), model.len());
            let mut want = BTreeMap::<u8, Counts>::new();
            for c in 0u8..24 {
                let key = FlowKey::tcp(endpoint(c), vip(80));
                let found = s.lookup_inbound(&key, &AllAvailable, &mut rec);
                match (model.get(&c), found) {
                    (Some(e), Inbound::Hit(conn)) => {
                        prop_assert_eq!(conn.flow, e.flow);
                        prop_assert_eq!(conn.state, e.state);
                        prop_assert_eq!(conn.expires, e.deadline);
                        prop_assert_eq!(conn.active, e.state.is_active());
                        let back = table.lookup_outbound(&FlowKey::tcp(real_server(e.dest), endpoint(c)));
                        prop_assert_eq!(back.map(|b| b.flow), e.nat.then_some(e.flow));
                        let w = want.entry(e.dest).or_default();
                        if e.state.is_active() { w.active += 1 } else { w.inactive += 1 }
                    }
                    (None, Inbound::Miss) => {}
                    (m, f) => prop_assert!(false, "client {}: model {:?}, table {:?}", c, m, f),
                }
            }
            for d in 0u8..3 {
                prop_assert_eq!(rec.get(DestId(d as u32)), want.get(&d).copied().unwrap_or_default());
            }
        }
    }
}
