//! End to end over IPv6: the real `xvs` daemon on real AF_XDP sockets between network
//! namespaces, real kernel TCP and UDP clients and servers over IPv6, in each forwarding
//! method, IPv4 and IPv6 services side by side in one director, and TUN real servers of
//! the other family (IPv4-in-IPv6, IPv6-in-IPv4). Needs root.
//!
//! Each test builds its own dual-stack lab (uniquely named namespaces, removed even when
//! the test fails) and configures it with ipvsadm lines through `xvsadm`.

use xvs_cli::lab::decap::{DecapReport, Tunnel};
use xvs_cli::lab::{HTTP_PORT, Lab, LabResult, Mode, Programs, UDP_PORT, host_port};

fn programs() -> Programs {
    Programs {
        xvs: env!("CARGO_BIN_EXE_xvs").into(),
        xvsadm: env!("CARGO_BIN_EXE_xvsadm").into(),
    }
}

fn lab(mode: Mode) -> Lab {
    match Lab::start_dual_stack(mode, programs()) {
        Ok(lab) => lab,
        Err(e) => panic!("lab {mode}: {e} (these tests need root, ip, ethtool, curl, python3)"),
    }
}

fn alternates(answers: &[String]) -> bool {
    answers.len() >= 2
        && answers.iter().all(|a| a == "rs1" || a == "rs2")
        && answers.windows(2).all(|w| w[0] != w[1])
}

/// HTTP and UDP round robin over the IPv6 VIP; the listing as ipvsadm prints it.
fn round_robin_over_ipv6(mode: Mode) -> Lab {
    let lab = lab(mode);
    lab.add_service6("-t", HTTP_PORT, "rr", None, &[1, 1])
        .unwrap();
    lab.add_service6("-u", UDP_PORT, "rr", None, &[1, 1])
        .unwrap();
    let http: Vec<String> = (0..6).map(|_| lab.http_get6().unwrap()).collect();
    assert!(alternates(&http), "{mode} rr over IPv6 HTTP: {http:?}");
    let udp: Vec<String> = (0..4).map(|_| lab.udp_ask6().unwrap()).collect();
    assert!(alternates(&udp), "{mode} rr over IPv6 UDP: {udp:?}");
    let vip = &lab.topology.ipv6.as_ref().unwrap().vip;
    let listing = lab.xvsadm("-L -n").unwrap();
    assert!(
        listing.contains(&format!("TCP  [{vip}]:80 rr\n")),
        "{listing}"
    );
    assert!(
        listing.contains(&format!("UDP  [{vip}]:{UDP_PORT} rr\n")),
        "{listing}"
    );
    let stats = lab.xvsadm("-L -n --stats").unwrap();
    let tcp_line = stats.lines().find(|l| l.starts_with("TCP")).unwrap();
    assert_eq!(tcp_line.split_whitespace().nth(2), Some("6"), "{stats}");
    lab
}

#[test]
fn dr_over_ipv6_balances_tcp_and_udp() {
    let lab = round_robin_over_ipv6(Mode::Dr);
    // DR replies bypass the director: nothing counted outbound.
    let stats = lab.xvsadm("-L -n --stats").unwrap();
    let tcp_line = stats.lines().find(|l| l.starts_with("TCP")).unwrap();
    assert_eq!(tcp_line.split_whitespace().nth(4), Some("0"), "{stats}");
}

#[test]
fn nat_over_ipv6_balances_tcp_and_udp_and_relays_the_replies() {
    let lab = round_robin_over_ipv6(Mode::Nat);
    let stats = lab.xvsadm("-L -n --stats").unwrap();
    let tcp_line = stats.lines().find(|l| l.starts_with("TCP")).unwrap();
    let out_pkts: u64 = tcp_line.split_whitespace().nth(4).unwrap().parse().unwrap();
    assert!(
        out_pkts >= 12,
        "the replies came back through the director: {stats}"
    );
}

#[test]
fn tun_over_ipv6_wraps_ipv6_in_ipv6_for_the_real_servers_decapsulators() {
    let lab = round_robin_over_ipv6(Mode::Tun);
    for i in 0..2 {
        let report = lab.decap_report(i, Tunnel::Ip6ip6);
        assert!(report.decapsulated >= 5, "rs{}: {report:?}", i + 1);
        assert_eq!(report.bad_outer, 0, "every outer header right: rs{}", i + 1);
        assert_eq!(
            lab.decap_report(i, Tunnel::Ipip).decapsulated,
            0,
            "no IPIP for IPv6 services"
        );
    }
}

/// A TUN service on one family's VIP (IPv6 with `vip_ipv6`) whose real servers are given by
/// their addresses of the other family, so that xvs sends `tunnel`: HTTP and UDP round
/// robin from the client's kernel, answered directly by the real servers; each real
/// server's decapsulator of `tunnel` found every outer header right and no other one saw
/// a packet; the listing shows the real servers of the other family as `Tunnel`.
fn tun_across_families(vip_ipv6: bool, tunnel: Tunnel) {
    let lab = lab(Mode::Tun);
    lab.add_service_across("-t", HTTP_PORT, "rr", vip_ipv6, &[1, 1])
        .unwrap();
    lab.add_service_across("-u", UDP_PORT, "rr", vip_ipv6, &[1, 1])
        .unwrap();
    type Ask = fn(&Lab) -> LabResult<String>;
    let (http, udp): (Ask, Ask) = match vip_ipv6 {
        true => (Lab::http_get6, Lab::udp_ask6),
        false => (Lab::http_get, Lab::udp_ask),
    };
    for (what, ask, n) in [("HTTP", http, 6), ("UDP", udp, 4)] {
        let answers: Vec<String> = (0..n).map(|_| ask(&lab).unwrap()).collect();
        assert!(
            alternates(&answers),
            "{tunnel:?} rr over {what}: {answers:?}"
        );
    }
    for i in 0..2 {
        for kind in Tunnel::ALL {
            let report = lab.decap_report(i, kind);
            if kind == tunnel {
                // 3 connections of at least 3 packets each (SYN, ACK, request), and 2
                // datagrams.
                assert!(
                    report.decapsulated >= 11,
                    "rs{} {kind:?}: {report:?}",
                    i + 1
                );
                assert_eq!(report.bad_outer, 0, "rs{} {kind:?}: {report:?}", i + 1);
            } else {
                assert_eq!(report, DecapReport::default(), "rs{} {kind:?}", i + 1);
            }
        }
    }
    let listing = lab.xvsadm("-L -n").unwrap();
    let plan = lab.topology.ipv6.as_ref().unwrap();
    let vip = if vip_ipv6 {
        &plan.vip
    } else {
        &lab.topology.vip
    };
    for (protocol, port) in [("TCP", HTTP_PORT), ("UDP", UDP_PORT)] {
        let service = format!("{protocol}  {} rr\n", host_port(vip, port));
        assert!(listing.contains(&service), "{service:?} in {listing}");
    }
    for rs in &lab.topology.real_servers {
        let rip = if vip_ipv6 {
            &rs.rip
        } else {
            rs.rip6.as_ref().unwrap()
        };
        for port in [HTTP_PORT, UDP_PORT] {
            let line = format!(
                "  -> {:<28} {:<7} {:<6} ",
                host_port(rip, port),
                "Tunnel",
                1
            );
            assert!(listing.contains(&line), "{line:?} in {listing}");
        }
    }
}

#[test]
fn tun_sends_ipv4_in_ipv6_to_ipv6_real_servers_of_an_ipv4_service() {
    tun_across_families(false, Tunnel::Ip4in6);
}

#[test]
fn tun_sends_ipv6_in_ipv4_to_ipv4_real_servers_of_an_ipv6_service() {
    tun_across_families(true, Tunnel::Ip6in4);
}

#[test]
fn ipv4_and_ipv6_services_side_by_side_in_one_director() {
    for mode in [Mode::Dr, Mode::Nat] {
        let lab = lab(mode);
        lab.add_service("-t", HTTP_PORT, "rr", None, &[1, 1])
            .unwrap();
        lab.add_service6("-t", HTTP_PORT, "rr", None, &[1, 1])
            .unwrap();
        lab.add_service6("-u", UDP_PORT, "rr", None, &[1, 1])
            .unwrap();
        // Interleaved: each family keeps its own rotation.
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for _ in 0..4 {
            v4.push(lab.http_get().unwrap());
            v6.push(lab.http_get6().unwrap());
        }
        assert!(alternates(&v4), "{mode} IPv4 beside IPv6: {v4:?}");
        assert!(alternates(&v6), "{mode} IPv6 beside IPv4: {v6:?}");
        let udp: Vec<String> = (0..4).map(|_| lab.udp_ask6().unwrap()).collect();
        assert!(alternates(&udp), "{mode} IPv6 UDP: {udp:?}");
        let saved = lab.xvsadm("-S -n").unwrap();
        assert_eq!(
            saved.lines().filter(|l| l.starts_with("-A")).count(),
            3,
            "{saved}"
        );
    }
}
