//! Each scheduler's IPVS behaviour as exact sequences, tie-breaking included.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::*;
use xvs_sched::schedulers::lblcr::LocalityLeastConnectionReplicated;
use xvs_sched::schedulers::mh::MaglevHashing;
use xvs_sched::{ConnKind, SchedFlags, SchedOptions, Scheduler};

#[test]
fn rr_cycles_in_list_order_and_skips_quiesced_and_overloaded() {
    let mut list = servers(&[1, 1, 1]);
    let mut rr = build("rr", &list);
    assert_eq!(sequence(rr.as_mut(), &list, 7, false), "abcabca");
    list[1] = list[1].with_weight(0);
    rr.update(&list);
    assert_eq!(sequence(rr.as_mut(), &list, 4, false), "caca");
    list[2].load.set_overloaded(true);
    assert_eq!(sequence(rr.as_mut(), &list, 2, false), "aa");
    list[0].load.set_available(false);
    assert_eq!(sequence(rr.as_mut(), &list, 1, false), "-");
}

#[test]
fn rr_keeps_its_place_when_the_list_changes() {
    let list = servers(&[1, 1, 1, 1]);
    let mut rr = build("rr", &list);
    assert_eq!(sequence(rr.as_mut(), &list, 2, false), "ab");
    // b (the last pick) is removed: the next pick is the server that followed it.
    let shorter: Vec<_> = [0, 2, 3].iter().map(|&i| list[i].clone()).collect();
    rr.update(&shorter);
    assert_eq!(sequence(rr.as_mut(), &shorter, 3, false), "bca"); // old c, d, a
}

#[test]
fn wrr_interleaves_by_weight() {
    let list = servers(&[4, 3, 2]);
    let mut wrr = build("wrr", &list);
    assert_eq!(
        sequence(wrr.as_mut(), &list, 18, false),
        "aababcabc".repeat(2)
    );
    // gcd 2: weights 4,2 step by 2 and give a 2:1 share.
    let list = servers(&[4, 2]);
    let mut wrr = build("wrr", &list);
    assert_eq!(sequence(wrr.as_mut(), &list, 6, false), "aabaab");
}

#[test]
fn wrr_skips_quiesced_and_overloaded_and_reports_none_when_all_are() {
    let list = servers(&[3, 0, 1]);
    let mut wrr = build("wrr", &list);
    assert_eq!(sequence(wrr.as_mut(), &list, 8, false), "aaacaaac");
    list[0].load.set_overloaded(true);
    assert_eq!(sequence(wrr.as_mut(), &list, 3, false), "ccc");
    list[2].load.set_overloaded(true);
    assert_eq!(sequence(wrr.as_mut(), &list, 2, false), "--");
    let quiet = servers(&[0, 0]);
    let mut wrr = build("wrr", &quiet);
    assert_eq!(sequence(wrr.as_mut(), &quiet, 1, false), "-");
}

#[test]
fn wrr_update_follows_new_weights() {
    let list = servers(&[1, 1]);
    let mut wrr = build("wrr", &list);
    assert_eq!(sequence(wrr.as_mut(), &list, 2, false), "ab");
    let edited = vec![list[0].with_weight(2), list[1].clone()];
    wrr.update(&edited);
    // As IPVS: the pass in progress (cw = 1) finishes from the head, then 2:1 passes.
    assert_eq!(sequence(wrr.as_mut(), &edited, 9, false), "abaabaaba");
}

#[test]
fn lc_compares_active_times_256_plus_inactive_and_ignores_weight() {
    let list = servers(&[1, 100, 1]);
    load(&list, 0, 1, 0); // 256
    load(&list, 1, 0, 255); // 255
    load(&list, 2, 0, 255); // 255, later in the list
    assert_eq!(build("lc", &list).pick(&list, &any_request()), Some(1));
    let list = servers(&[1, 1]);
    assert_eq!(
        sequence(build("lc", &list).as_mut(), &list, 4, true),
        "abab"
    );
    let quiesced = servers(&[0, 1]);
    load(&quiesced, 1, 5, 0);
    assert_eq!(
        build("lc", &quiesced).pick(&quiesced, &any_request()),
        Some(1)
    );
}

#[test]
fn wlc_divides_overhead_by_weight_without_floats() {
    let list = servers(&[1, 2, 3]);
    // Hand-computed from overhead/weight with ties to the first server.
    assert_eq!(
        sequence(build("wlc", &list).as_mut(), &list, 6, true),
        "abccbc"
    );
    let list = servers(&[1, 3]);
    load(&list, 0, 1, 0); // 256/1
    load(&list, 1, 2, 0); // 512/3
    assert_eq!(build("wlc", &list).pick(&list, &any_request()), Some(1));
    let list = servers(&[2, 2]);
    load(&list, 0, 0, 3);
    load(&list, 1, 0, 3);
    assert_eq!(build("wlc", &list).pick(&list, &any_request()), Some(0));
}

#[test]
fn sed_uses_active_plus_one_over_weight() {
    let list = servers(&[1, 2]);
    assert_eq!(
        sequence(build("sed", &list).as_mut(), &list, 6, true),
        "babbab"
    );
    // Inactive connections do not count for sed.
    let list = servers(&[1, 1]);
    load(&list, 0, 0, 1000);
    load(&list, 1, 1, 0);
    assert_eq!(build("sed", &list).pick(&list, &any_request()), Some(0));
}

#[test]
fn nq_prefers_any_idle_server_then_behaves_as_sed() {
    let list = servers(&[1, 10]);
    assert_eq!(build("nq", &list).pick(&list, &any_request()), Some(0));
    load(&list, 0, 1, 0);
    assert_eq!(build("nq", &list).pick(&list, &any_request()), Some(1));
    load(&list, 1, 1, 0);
    // Both busy: sed gives (1+1)/1 vs (1+1)/10 -> b.
    assert_eq!(build("nq", &list).pick(&list, &any_request()), Some(1));
}

#[test]
fn fo_sends_everything_to_the_highest_weight_until_it_fails() {
    let list = servers(&[5, 9, 9, 1]);
    let mut fo = build("fo", &list);
    assert_eq!(sequence(fo.as_mut(), &list, 3, true), "bbb");
    list[1].load.set_available(false);
    assert_eq!(sequence(fo.as_mut(), &list, 2, false), "cc");
    list[2].load.set_overloaded(true);
    assert_eq!(sequence(fo.as_mut(), &list, 1, false), "a");
}

#[test]
fn ovf_overflows_when_active_connections_exceed_the_weight() {
    let list = servers(&[1, 2]);
    // b takes 3 (active 0,1,2 <= 2), then a takes 2, then nobody is under its weight.
    assert_eq!(
        sequence(build("ovf", &list).as_mut(), &list, 6, true),
        "bbbaa-"
    );
    list[1].unbind(ConnKind::Active);
    assert_eq!(build("ovf", &list).pick(&list, &any_request()), Some(1));
}

#[test]
fn twos_is_reproducible_from_its_seed_and_prefers_the_less_loaded() {
    let list = servers(&[1, 1, 1, 1]);
    let options = SchedOptions {
        seed: 42,
        ..Default::default()
    };
    let first = sequence(
        build_with("twos", options, &list).as_mut(),
        &list,
        20,
        false,
    );
    let again = sequence(
        build_with("twos", options, &list).as_mut(),
        &list,
        20,
        false,
    );
    assert_eq!(first, again);
    // One idle server among loaded ones: whenever it is drawn it wins.
    let list = servers(&[1, 1]);
    load(&list, 0, 10, 0);
    let mut twos = build_with("twos", options, &list);
    let picks = sequence(twos.as_mut(), &list, 400, false);
    let b = picks.matches('b').count();
    // P(b drawn at least once in two) = 3/4.
    assert!((260..=340).contains(&b), "b picked {b} of 400");
}

#[test]
fn sh_maps_each_client_to_one_server_by_weighted_buckets() {
    let list = servers(&[1, 2, 3]);
    let mut sh = build("sh", &list);
    let mut counts = [0usize; 3];
    // Every bucket is reached by some source address: count buckets through 64k clients.
    let mut seen = std::collections::HashMap::new();
    for host in 0..65536u32 {
        let i = sh.pick(&list, &from_client(host, 1)).unwrap();
        assert_eq!(
            sh.pick(&list, &from_client(host, 9)),
            Some(i),
            "port must not matter"
        );
        seen.insert(xvs_bucket(host), i);
    }
    for &i in seen.values() {
        counts[i] += 1;
    }
    // 256 buckets dealt a,b,b,c,c,c: 42 full rounds and a,b,b,c.
    assert_eq!(counts, [43, 86, 127]);
}

/// sh's bucket for client 192.0.2.0 + host (port 0): the kernel's hash_32(addr, 8).
fn xvs_bucket(host: u32) -> u32 {
    (0xC000_0200u32 + host).wrapping_mul(0x61C8_8647) >> 24
}

#[test]
fn sh_refuses_or_falls_back_when_the_hashed_server_is_down() {
    let list = servers(&[1, 1, 1]);
    let request = from_client(77, 1);
    let mut plain = build("sh", &list);
    let home = plain.pick(&list, &request).unwrap();
    list[home].load.set_available(false);
    assert_eq!(plain.pick(&list, &request), None);
    let options = SchedOptions {
        flags: SchedFlags::parse("sh", "sh-fallback").unwrap(),
        ..Default::default()
    };
    let mut fallback = build_with("sh", options, &list);
    let moved = fallback.pick(&list, &request).unwrap();
    assert_ne!(moved, home);
    assert_eq!(
        fallback.pick(&list, &request),
        Some(moved),
        "fallback is deterministic"
    );
}

#[test]
fn sh_port_spreads_one_client_over_servers() {
    let list = servers(&[1, 1, 1, 1]);
    let options = SchedOptions {
        flags: SchedFlags::parse("sh", "sh-port").unwrap(),
        ..Default::default()
    };
    let mut sh = build_with("sh", options, &list);
    let used: std::collections::HashSet<_> = (1000..1064)
        .map(|p| sh.pick(&list, &from_client(5, p)).unwrap())
        .collect();
    assert_eq!(used.len(), 4);
}

#[test]
fn dh_maps_each_destination_to_one_server() {
    let list = servers(&[1, 1, 1]);
    let mut dh = build("dh", &list);
    for host in 0..=255u8 {
        let i = dh.pick(&list, &to_destination(host, 0)).unwrap();
        let mut other_client = to_destination(host, 0);
        other_client.src = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99));
        assert_eq!(dh.pick(&list, &other_client), Some(i));
    }
    let home = dh.pick(&list, &to_destination(1, 0)).unwrap();
    list[home].load.set_overloaded(true);
    assert_eq!(dh.pick(&list, &to_destination(1, 0)), None);
}

#[test]
fn lblc_keeps_a_destination_on_its_server_until_it_is_busy() {
    let list = servers(&[2, 2]);
    let mut lblc = build("lblc", &list);
    assert_eq!(lblc.pick(&list, &to_destination(1, 0)), Some(0));
    load(&list, 0, 1, 0);
    // wlc alone would now pick b; the cache keeps destination 1 on a.
    assert_eq!(lblc.pick(&list, &to_destination(1, 1)), Some(0));
    assert_eq!(lblc.pick(&list, &to_destination(2, 1)), Some(1));
    // a: 3 active > weight 2, while b has 0*2 < 2: destination 1 moves to b and stays.
    load(&list, 0, 2, 0);
    assert_eq!(lblc.pick(&list, &to_destination(1, 2)), Some(1));
    list[0].unbind(ConnKind::Active);
    list[0].unbind(ConnKind::Active);
    list[0].unbind(ConnKind::Active);
    assert_eq!(lblc.pick(&list, &to_destination(1, 3)), Some(1));
    // Quiescing the cached server reschedules too.
    let edited = vec![list[0].clone(), list[1].with_weight(0)];
    lblc.update(&edited);
    assert_eq!(lblc.pick(&edited, &to_destination(1, 4)), Some(0));
}

#[test]
fn lblc_forgets_destinations_unused_for_the_expiration() {
    let list = servers(&[1, 1]);
    let options = SchedOptions {
        lblc_expiration_ms: 10 * 60_000,
        ..Default::default()
    };
    let mut lblc = build_with("lblc", options, &list);
    assert_eq!(lblc.pick(&list, &to_destination(1, 0)), Some(0));
    load(&list, 0, 0, 1); // a now looks busier than b to wlc
    assert_eq!(lblc.pick(&list, &to_destination(1, 29 * 60_000)), Some(0));
    // Collection runs once a minute from the first tick; every 30th run is a full check,
    // which drops entries unused for the expiration: at minutes 31, 61 and 91 here.
    for minute in 1..=31 {
        lblc.tick(&list, minute * 60_000);
    }
    // Used at minute 29: the full check at minute 31 keeps it.
    assert_eq!(lblc.pick(&list, &to_destination(1, 32 * 60_000)), Some(0));
    for minute in 32..=60 {
        lblc.tick(&list, minute * 60_000);
    }
    assert_eq!(lblc.pick(&list, &to_destination(1, 60 * 60_000)), Some(0));
    for minute in 61..=91 {
        lblc.tick(&list, minute * 60_000);
    }
    // The full check at minute 91 found it unused for 31 minutes and dropped it, so wlc
    // decides again and picks the less loaded b.
    assert_eq!(lblc.pick(&list, &to_destination(1, 92 * 60_000)), Some(1));
}

#[test]
fn lblcr_grows_the_set_under_load_and_shrinks_it_after_expiration() {
    let list = servers(&[1, 1, 1]);
    let options = SchedOptions {
        lblc_expiration_ms: 1000,
        ..Default::default()
    };
    let mut lblcr = LocalityLeastConnectionReplicated::new(options.lblc_expiration_ms);
    lblcr.update(&list);
    let dst = to_destination(9, 0);
    assert_eq!(lblcr.pick(&list, &dst), Some(0));
    load(&list, 0, 2, 0); // a: 2 active > weight 1, and b has 0*2 < 1
    assert_eq!(lblcr.pick(&list, &to_destination(9, 10)), Some(1));
    assert_eq!(lblcr.set_of(dst.dst), vec![1, 0]);
    load(&list, 1, 2, 0);
    assert_eq!(lblcr.pick(&list, &to_destination(9, 20)), Some(2));
    assert_eq!(lblcr.set_of(dst.dst), vec![2, 1, 0]);
    // Unchanged for more than the expiration: the most loaded member leaves. b and a tie at
    // overhead 512; the set lists newest first (c, b, a), so b, met first, leaves.
    load(&list, 2, 1, 0);
    assert_eq!(lblcr.pick(&list, &to_destination(9, 1021)), Some(2));
    assert_eq!(lblcr.set_of(dst.dst), vec![2, 0]);
}

#[test]
fn mh_is_deterministic_and_consistent() {
    let list = servers(&[1; 10]);
    let build_table = |list: &[xvs_sched::RealServer], size: u32| {
        let mut mh = MaglevHashing::new(SchedFlags::default(), size);
        mh.update(list);
        mh.table().collect::<Vec<_>>()
    };
    let one = build_table(&list, 65537);
    assert_eq!(one, build_table(&list, 65537), "independent builds agree");
    assert!(one.iter().all(Option::is_some));
    // Equal weights: each server owns its 1/10 of the slots within a few percent.
    let mut owned = [0usize; 10];
    one.iter().flatten().for_each(|&i| owned[i] += 1);
    assert!(
        owned.iter().all(|&n| (6200..=6900).contains(&n)),
        "{owned:?}"
    );
}

#[test]
fn mh_quiescing_moves_nobody_and_fallback_is_deterministic() {
    let list = servers(&[1, 1, 1]);
    let mut mh = build("mh", &list);
    let before: Vec<_> = (0..500)
        .map(|h| mh.pick(&list, &from_client(h, 1)))
        .collect();
    let quiesced = vec![list[0].clone(), list[1].with_weight(0), list[2].clone()];
    mh.update(&quiesced);
    for (h, was) in (0..500).zip(&before) {
        let now = mh.pick(&quiesced, &from_client(h, 1));
        if *was == Some(1) {
            assert_eq!(now, None, "no mh-fallback: b's clients are refused");
        } else {
            assert_eq!(now, *was, "other clients stay");
        }
    }
    let flags = SchedFlags::parse("mh", "mh-fallback").unwrap();
    let mut fallback = build_with(
        "mh",
        SchedOptions {
            flags,
            ..Default::default()
        },
        &quiesced,
    );
    for h in 0..500 {
        let pick = fallback.pick(&quiesced, &from_client(h, 1));
        assert!(matches!(pick, Some(0) | Some(2)));
        assert_eq!(pick, fallback.pick(&quiesced, &from_client(h, 1)));
    }
}

/// Scale-out: N directors given the same real servers in different orders (each operator's
/// `xvsadm -a` sequence, a reload that re-sorted the file) build the same Maglev table, so
/// every flow maps to the same real server on whichever director ECMP sends it to.
#[test]
fn mh_tables_agree_across_directors_whatever_the_insertion_order() {
    use std::net::Ipv6Addr;
    let mut canonical: Vec<xvs_sched::RealServer> = [
        (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 80, 1),
        (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 80, 3),
        (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 8080, 2),
        (IpAddr::V4(Ipv4Addr::new(10, 0, 1, 9)), 80, 1),
        (IpAddr::V4(Ipv4Addr::new(192, 168, 7, 3)), 443, 5),
        (
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 5)),
            80,
            1,
        ),
    ]
    .iter()
    .map(|&(addr, port, weight)| xvs_sched::RealServer::new(addr, port, weight))
    .collect();
    // Each director's list order: as given, reversed, and three shuffles.
    let orders: Vec<Vec<usize>> = vec![
        (0..canonical.len()).collect(),
        (0..canonical.len()).rev().collect(),
        vec![3, 0, 5, 1, 4, 2],
        vec![4, 2, 0, 3, 5, 1],
        vec![1, 5, 3, 2, 0, 4],
    ];
    // Each table slot named by its server's (address, port), which is what two directors
    // can compare (indexes differ with the order).
    let build_table = |list: &[xvs_sched::RealServer]| {
        let mut mh = MaglevHashing::new(SchedFlags::default(), 4093);
        mh.update(list);
        let table: Vec<_> = mh
            .table()
            .map(|slot| slot.map(|i| (list[i].addr, list[i].port)))
            .collect();
        let picks: Vec<_> = (0..2000)
            .map(|h| mh.pick(list, &from_client(h, 40000 + h as u16)))
            .map(|pick| pick.map(|i| (list[i].addr, list[i].port)))
            .collect();
        (table, picks)
    };
    let directors: Vec<_> = orders
        .iter()
        .map(|order| {
            let list: Vec<_> = order.iter().map(|&i| canonical[i].clone()).collect();
            build_table(&list)
        })
        .collect();
    for (d, built) in directors.iter().enumerate().skip(1) {
        assert!(
            built.0 == directors[0].0,
            "director {d}'s table differs from director 0's"
        );
        assert!(built.1 == directors[0].1, "director {d} picks differently");
    }
    assert!(directors[0].0.iter().all(Option::is_some));
    // The weights matter: a server with weight 5 owns more slots than one with weight 1.
    let owned = |addr: IpAddr, port: u16| {
        directors[0]
            .0
            .iter()
            .filter(|s| **s == Some((addr, port)))
            .count()
    };
    assert!(
        owned(canonical[4].addr, 443) > 3 * owned(canonical[0].addr, 80),
        "weights shape the table"
    );
    // A different weight is a different table: the set is (address, port, weight).
    canonical[0] = canonical[0].with_weight(4);
    let reweighted = build_table(&canonical);
    assert!(reweighted.0 != directors[0].0);
}
