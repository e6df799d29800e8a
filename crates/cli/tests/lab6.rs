//! End to end over IPv6: the real `xvs` daemon on real AF_XDP sockets between network
//! namespaces, real kernel TCP and UDP clients and servers over IPv6, in each forwarding
//! method, and IPv4 and IPv6 services side by side in one director. Needs root.
//!
//! Each test builds its own dual-stack lab (uniquely named namespaces, removed even when
//! the test fails) and configures it with ipvsadm lines through `xvsadm`.

use xvs_cli::lab::decap::Tunnel;
use xvs_cli::lab::{HTTP_PORT, Lab, Mode, Programs, UDP_PORT};

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
