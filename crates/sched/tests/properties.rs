//! Properties every scheduler must keep, over random server sets and loads.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::*;
use proptest::prelude::*;
use xvs_sched::{ConnKind, RealServer, Request, SCHEDULER_NAMES, SchedFlags, SchedOptions};

/// One server's random state: weight, -x threshold, flags and counters.
#[derive(Debug, Clone)]
struct ServerState {
    weight: u32,
    overloaded: bool,
    available: bool,
    active: u32,
    inactive: u32,
}

fn server_state() -> impl Strategy<Value = ServerState> {
    (
        0u32..6,
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.85),
        0u32..8,
        0u32..8,
    )
        .prop_map(
            |(weight, overloaded, available, active, inactive)| ServerState {
                weight,
                overloaded,
                available,
                active,
                inactive,
            },
        )
}

fn materialise(states: &[ServerState]) -> Vec<RealServer> {
    let list = servers(&states.iter().map(|s| s.weight).collect::<Vec<_>>());
    for (server, state) in list.iter().zip(states) {
        load(
            std::slice::from_ref(server),
            0,
            state.active,
            state.inactive,
        );
        server.load.set_overloaded(state.overloaded);
        server.load.set_available(state.available);
    }
    list
}

fn request(client: u32, port: u16, dst: u8, now_ms: u64) -> Request {
    Request {
        src: IpAddr::V4(Ipv4Addr::from(client)),
        src_port: port,
        dst: IpAddr::V4(Ipv4Addr::new(203, 0, 113, dst)),
        dst_port: 80,
        now_ms,
    }
}

/// Schedulers that always find a server when one may take the connection. The hashing ones
/// refuse by design when the hashed server cannot take it (sh and mh walk on only with their
/// fallback flag; dh never does), and ovf also skips servers past their weight.
fn always_finds(name: &str, fallback: bool) -> bool {
    match name {
        "dh" | "ovf" => false,
        "sh" | "mh" => fallback,
        _ => true,
    }
}

fn options_for(name: &str, fallback: bool) -> SchedOptions {
    let flags = if fallback && (name == "sh" || name == "mh") {
        SchedFlags {
            fallback: true,
            port: true,
            flag3: false,
        }
    } else {
        SchedFlags::default()
    };
    SchedOptions {
        flags,
        mh_table_size: 251,
        lblc_expiration_ms: 500,
        seed: 7,
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 200,
        failure_persistence: Some(Box::new(prop::test_runner::FileFailurePersistence::Off)),
        ..ProptestConfig::default()
    })]

    /// No scheduler ever returns a quiesced, overloaded or unavailable server, and those
    /// that must find one do whenever one is eligible. Flags change between rounds so the
    /// caches of lblc and lblcr are tested against servers that went bad after being cached.
    #[test]
    fn a_pick_never_returns_an_excluded_server(
        rounds in prop::collection::vec(prop::collection::vec(server_state(), 1..10), 1..4),
        requests in prop::collection::vec((any::<u32>(), any::<u16>(), 0u8..4), 1..30),
        fallback in any::<bool>(),
    ) {
        let n = rounds[0].len();
        for name in SCHEDULER_NAMES {
            let mut scheduler = build_with(name, options_for(name, fallback), &materialise(&rounds[0]));
            for (round, states) in rounds.iter().enumerate() {
                // Keep the list length: only weights, flags and loads change between rounds.
                let states: Vec<_> = states.iter().cycle().take(n).cloned().collect();
                let list = materialise(&states);
                scheduler.update(&list);
                for (k, &(client, port, dst)) in requests.iter().enumerate() {
                    let now = (round * 1000 + k * 10) as u64;
                    let pick = scheduler.pick(&list, &request(client, port, dst, now));
                    if let Some(i) = pick {
                        prop_assert!(i < list.len(), "{name}: index {i} out of range");
                        prop_assert!(list[i].accepts_new(), "{name} picked excluded server {i}");
                        if name == "ovf" {
                            prop_assert!(list[i].load.active() <= list[i].weight);
                        }
                    } else if always_finds(name, fallback) {
                        prop_assert!(
                            !list.iter().any(RealServer::accepts_new),
                            "{name} found nothing although a server was eligible"
                        );
                    }
                }
                scheduler.tick(&list, (round * 1000 + 999) as u64);
            }
        }
    }

    /// wrr's picks over whole cycles are exactly in the ratio of the weights.
    #[test]
    fn wrr_matches_the_weight_ratio_exactly(weights in prop::collection::vec(1u32..8, 1..8)) {
        let list = servers(&weights);
        let mut wrr = build("wrr", &list);
        let cycle: u32 = weights.iter().sum();
        let mut counts = vec![0u32; weights.len()];
        for _ in 0..cycle * 3 {
            counts[wrr.pick(&list, &any_request()).unwrap()] += 1;
        }
        let expected: Vec<u32> = weights.iter().map(|w| w * 3).collect();
        prop_assert_eq!(counts, expected);
    }

    /// Load-aware weighted schedulers spread long-lived connections in the weight ratio:
    /// each pick stays active, so the next pick sees it.
    #[test]
    fn weighted_least_load_converges_to_the_weights(weights in prop::collection::vec(1u32..6, 2..6)) {
        let total: u32 = weights.iter().sum();
        for name in ["wlc", "sed", "twos", "lblc", "lblcr"] {
            let list = servers(&weights);
            let mut scheduler = build(name, &list);
            let picks = total * 200;
            for k in 0..picks {
                // lblc/lblcr: a fresh destination each time, so the cache does not pin.
                let mut r = any_request();
                r.dst = IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + k));
                let i = scheduler.pick(&list, &r).unwrap();
                list[i].bind(ConnKind::Active);
            }
            for (server, &w) in list.iter().zip(&weights) {
                let share = server.load.active() as f64 / picks as f64;
                let want = w as f64 / total as f64;
                let slack = if name == "twos" { 0.05 } else { 0.01 };
                prop_assert!((share - want).abs() <= slack, "{name}: share {share} want {want}");
            }
        }
    }

    /// The hashing schedulers give each server a share of clients in the weight ratio.
    #[test]
    fn hashing_shares_follow_the_weights(weights in prop::collection::vec(1u32..5, 2..5)) {
        let total: u32 = weights.iter().sum();
        for name in ["sh", "mh"] {
            let list = servers(&weights);
            let mut scheduler = build(name, &list);
            let clients = 20_000u32;
            let mut counts = vec![0u32; weights.len()];
            for c in 0..clients {
                let client = 0x0B00_0000u32.wrapping_add(c.wrapping_mul(2_654_435_761));
                counts[scheduler.pick(&list, &request(client, 1, 0, 0)).unwrap()] += 1;
            }
            for (&n, &w) in counts.iter().zip(&weights) {
                let share = n as f64 / clients as f64;
                let want = w as f64 / total as f64;
                // sh has 256 buckets, so a share can be off by a partial round of the deal.
                prop_assert!((share - want).abs() <= 0.04, "{name}: share {share} want {want}");
            }
        }
    }
}

/// Removing one of N servers moves about 1/N of the clients (those of the removed server)
/// plus a little Maglev disruption; measured over the whole table.
#[test]
fn mh_removing_one_server_moves_about_one_nth() {
    use xvs_sched::Scheduler;
    use xvs_sched::schedulers::mh::MaglevHashing;
    for (n, size) in [(10usize, 65537u32), (50, 65537), (10, 4093)] {
        let list = servers(&vec![1; n]);
        let mut full = MaglevHashing::new(SchedFlags::default(), size);
        full.update(&list);
        let before: Vec<_> = full.table().collect();
        let removed = n / 2;
        let rest: Vec<_> = list
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != removed)
            .map(|(_, s)| s.clone())
            .collect();
        let mut less = MaglevHashing::new(SchedFlags::default(), size);
        less.update(&rest);
        let after: Vec<_> = less.table().collect();
        // Map new indexes back to the original servers to compare owners.
        let original = |i: usize| if i >= removed { i + 1 } else { i };
        let moved = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| b.unwrap() != original(a.unwrap()))
            .count();
        let fraction = moved as f64 / size as f64;
        let ideal = 1.0 / n as f64;
        eprintln!("mh n={n} M={size}: moved {fraction:.4} of slots, ideal {ideal:.4}");
        assert!(
            fraction >= ideal * 0.9,
            "the removed server's slots must move"
        );
        assert!(fraction <= ideal * 1.5, "moved {fraction}, ideal {ideal}");
    }
}
