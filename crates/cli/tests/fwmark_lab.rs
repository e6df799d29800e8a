//! End to end: a firewall-mark service on the real `xvs` daemon over AF_XDP, between network
//! namespaces, with real kernel TCP clients and servers. Needs root.
//!
//! The seeds' HTTP + HTTPS example: `[[mark]]` gives TCP to the VIP on ports 80 and 443 (and
//! the line servers' 7000) mark 1, and `-f 1 -s rr -p 300` with two real servers of port 0
//! (DR, NAT, TUN) serves it. Each of several client addresses lands on one real server for every port of
//! the mark; a port no rule marks is not the mark's; a SIGHUP changing the rules keeps a
//! running connection.

use std::time::{Duration, Instant};

use xvs_cli::lab::servers;
use xvs_cli::lab::{HTTP_PORT, LINES_PORT, Lab, Mode, Programs};

fn programs() -> Programs {
    Programs {
        xvs: env!("CARGO_BIN_EXE_xvs").into(),
        xvsadm: env!("CARGO_BIN_EXE_xvsadm").into(),
    }
}

/// The second service port: a plain TCP line server, as the issue allows for "HTTPS".
const HTTPS_PORT: u16 = 443;
/// The lab's client address (`N.N.N.100`) and five more on its /24.
fn clients(lab: &Lab) -> Vec<String> {
    let own = &lab.topology.client_ip;
    let net = own.rsplit_once('.').expect("an IPv4 address").0;
    (100..106).map(|last| format!("{net}.{last}")).collect()
}

/// Connects from `source` to `vip:port`, sends one line, prints the answer (`rsN: line`).
const ASK_FROM: &str = r#"
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2, source_address=(sys.argv[3], 0))
c.sendall(b"hi\n")
print(c.makefile().readline().strip())
"#;

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn services(lab: &Lab, ports: &str) -> String {
    let rips: Vec<String> = lab
        .topology
        .real_servers
        .iter()
        .map(|rs| rs.rip.clone())
        .collect();
    services_at(lab, &lab.topology.vip, &rips, ports)
}

/// The config's mark 1 for TCP to `vip` on `ports` and its persistent rr fwmark service
/// (IPv6 for an IPv6 `vip`) with `rips` by the lab's method.
fn services_at(lab: &Lab, vip: &str, rips: &[String], ports: &str) -> String {
    let method = match lab.topology.mode {
        Mode::Dr => "dr",
        Mode::Nat => "nat",
        Mode::Tun => "tun",
    };
    let family = if vip.contains(':') {
        "ipv6 = true\n"
    } else {
        ""
    };
    let mut text = format!(
        "[[mark]]\nmark = 1\nprotocol = \"tcp\"\ndestination = \"{vip}\"\nports = {ports}\n\n\
         [[service]]\nfwmark = 1\n{family}scheduler = \"rr\"\npersistent = 300\n"
    );
    for rip in rips {
        text.push_str(&format!(
            "\n[[service.real_server]]\naddress = \"{rip}\"\nmethod = \"{method}\"\n"
        ));
    }
    text
}

/// The HTTP answer to `source`'s GET of VIP:80 (a new connection).
fn http_from(lab: &Lab, source: &str) -> String {
    http_to(lab, &lab.topology.vip, source)
}

/// The HTTP answer to `source`'s GET of `vip`:80 (IPv6 addresses bare).
fn http_to(lab: &Lab, vip: &str, source: &str) -> String {
    let host = if vip.contains(':') {
        format!("[{vip}]")
    } else {
        vip.to_string()
    };
    let url = format!("http://{host}:{HTTP_PORT}/");
    lab.topology
        .client
        .exec(
            "curl",
            &["-s", "--max-time", "3", "--interface", source, &url],
        )
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The line server's answer to `source` on VIP:`port` (empty if nothing answered).
fn line_from(lab: &Lab, source: &str, port: u16) -> String {
    line_to(lab, &lab.topology.vip, source, port)
}

/// The line server's answer to `source` on `vip`:`port`.
fn line_to(lab: &Lab, vip: &str, source: &str, port: u16) -> String {
    lab.topology
        .client
        .exec(
            servers::python(),
            &["-c", ASK_FROM, vip, &port.to_string(), source],
        )
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

#[test]
fn a_persistent_mark_keeps_each_client_on_one_server_across_http_and_https_dr() {
    persistent_mark_across_ports(Mode::Dr);
}

/// NAT: port-0 real servers keep each connection's port, and their replies from 80, 443 and
/// 7000 reach the workers (the filter's NAT-return entries of the mark's ports).
#[test]
fn a_persistent_mark_keeps_each_client_on_one_server_across_http_and_https_nat() {
    persistent_mark_across_ports(Mode::Nat);
}

/// TUN: the client's datagrams reach the real servers inside IPIP, ports unchanged.
#[test]
fn a_persistent_mark_keeps_each_client_on_one_server_across_http_and_https_tun() {
    persistent_mark_across_ports(Mode::Tun);
}

/// Line servers on `port` of `listen` (`0.0.0.0`, or `::` for both families) in every real
/// server (their HTTP servers answer on 80).
fn line_servers(lab: &Lab, listen: &str, port: u16) -> Vec<Killed> {
    lab.topology
        .real_servers
        .iter()
        .map(|rs| {
            let child = rs
                .ns
                .command(servers::python())
                .args([
                    "-c",
                    servers::TCP_LINES,
                    &rs.name,
                    &port.to_string(),
                    listen,
                ])
                .spawn()
                .expect("start a line server");
            Killed(child)
        })
        .collect()
}

fn persistent_mark_across_ports(mode: Mode) {
    let lab = match Lab::start(mode, programs()) {
        Ok(lab) => lab,
        Err(e) => panic!("lab {mode}: {e} (this test needs root, ip, ethtool, curl, python3)"),
    };
    let clients = clients(&lab);
    let flag = mode.option();
    // A plain TCP service on 443 beside each real server's HTTP on 80.
    let mut line_servers = line_servers(&lab, "0.0.0.0", HTTPS_PORT);
    for source in &clients[1..] {
        lab.topology
            .client
            .ip(&["addr", "add", &format!("{source}/24"), "dev", "eth0"])
            .unwrap();
    }
    let rip = &lab.topology.real_servers[1].rip;
    lab.reload(
        &services(&lab, &format!("[{HTTP_PORT}, {HTTPS_PORT}, {LINES_PORT}]")),
        &format!("-a -f 1 -r {rip}:0 {flag}"),
    )
    .unwrap();
    let listing = lab.xvsadm("-L -n").unwrap();
    assert!(listing.contains("FWM  1 rr persistent 300\n"), "{listing}");
    for rs in &lab.topology.real_servers {
        assert!(
            listing.contains(&format!("  -> {}:0 ", rs.rip)),
            "{listing}"
        );
    }
    let saved = lab.xvsadm("-S -n").unwrap();
    assert!(saved.contains("-A -f 1 -s rr -p 300\n"), "{saved}");
    let json: serde_json::Value =
        serde_json::from_str(&lab.xvsadm("-L -n --json").unwrap()).unwrap();
    assert_eq!(
        json["services"][0]["addr"],
        serde_json::json!({"fwmark": {"mark": 1, "ipv6": false}}),
        "{json}"
    );

    // A long-lived connection on 7000 from the lab's own client address, before the others.
    let mut session = lab.open_session().unwrap();
    let first = session.ask("before").unwrap();
    let (session_server, _) = first.split_once(':').expect("rsN: before");
    // Each client: one server for 80, 443 and 7000, again and again.
    let mut servers_seen = Vec::new();
    for source in &clients {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut server = http_from(&lab, source);
        while server.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            server = http_from(&lab, source);
        }
        assert!(server == "rs1" || server == "rs2", "{source}: {server:?}");
        for round in 0..2 {
            assert_eq!(
                http_from(&lab, source),
                server,
                "{source} :80 round {round}"
            );
            assert_eq!(
                line_from(&lab, source, HTTPS_PORT),
                format!("{server}: hi"),
                "{source} :443 round {round}"
            );
            assert_eq!(
                line_from(&lab, source, LINES_PORT),
                format!("{server}: hi"),
                "{source} :7000 round {round}"
            );
        }
        if *source == clients[0] {
            assert_eq!(server, session_server, "the session's client too");
        }
        servers_seen.push(server);
    }
    assert!(
        servers_seen.iter().any(|s| s == "rs1") && servers_seen.iter().any(|s| s == "rs2"),
        "rr spread the clients over both servers: {servers_seen:?}"
    );
    // One persistence template per client address.
    let conns = lab.xvsadm("-L -n -c").unwrap();
    let templates = conns.lines().filter(|l| l.contains("NONE")).count();
    assert_eq!(templates, clients.len(), "{conns}");
    // A port no rule marks is not the mark's: start a line server on 8080 on both real
    // servers; the mark would carry 8080 to one of them, but the filter leaves it to the
    // director's kernel, which has no such server.
    line_servers.extend(self::line_servers(&lab, "0.0.0.0", 8080));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(line_from(&lab, &clients[1], 8080), "", "8080 is not marked");

    // SIGHUP with 443 no longer marked: the running connection stays on its server, 443
    // leaves the mark, 80 and 7000 stay.
    std::fs::write(
        lab.config_path(),
        lab.config_text(&services(&lab, &format!("[{HTTP_PORT}, {LINES_PORT}]"))),
    )
    .unwrap();
    lab.signal_director("HUP").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !line_from(&lab, &clients[2], HTTPS_PORT).is_empty() {
        assert!(
            Instant::now() < deadline,
            "443 still served after the reload"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        session.ask("after").unwrap(),
        format!("{session_server}: after")
    );
    assert_eq!(
        http_from(&lab, &clients[2]),
        servers_seen[2],
        "80 is still the mark's, its template still holds"
    );
    // Over the control socket: ipvsadm's own lines, the real server's port optional.
    lab.xvsadm("-A -f 2 -s wlc").unwrap();
    lab.xvsadm(&format!("-a -f 2 -r {rip} {flag}")).unwrap();
    let listing = lab.xvsadm("-L -n").unwrap();
    assert!(listing.contains("FWM  2 wlc\n"), "{listing}");
    let saved = lab.xvsadm("-S -n").unwrap();
    assert!(
        saved.contains(&format!("-A -f 2 -s wlc\n-a -f 2 -r {rip}:0 {flag} ")),
        "{saved}"
    );
    // No rule gives mark 2: accepted, as IPVS accepts it, and said in the log.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !lab
        .director_log()
        .contains("fwmark service 2: no [[mark]] rule gives mark 2")
    {
        assert!(Instant::now() < deadline, "{}", lab.director_log());
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(line_servers);
}

/// The same over IPv6 in a dual-stack lab: `[[mark]]` rules for the IPv6 VIP give mark 1,
/// `-f 1 -6 -s rr -p 300` serves it, and each of several IPv6 client addresses lands on one
/// real server for HTTP on 80 and the line service on 443.
fn persistent_ipv6_mark_across_ports(mode: Mode) {
    let lab = match Lab::start_dual_stack(mode, programs()) {
        Ok(lab) => lab,
        Err(e) => panic!("lab {mode}: {e} (this test needs root, ip, ethtool, curl, python3)"),
    };
    let plan = lab.topology.ipv6.as_ref().expect("dual stack");
    let vip = plan.vip.clone();
    let net = plan.client_ip.rsplit_once(':').expect("an IPv6 address").0;
    let clients: Vec<String> = (0x100..0x106).map(|n| format!("{net}:{n:x}")).collect();
    for source in &clients[1..] {
        lab.topology
            .client
            .ip(&[
                "-6",
                "addr",
                "add",
                &format!("{source}/64"),
                "dev",
                "eth0",
                "nodad",
            ])
            .unwrap();
    }
    let _line_servers = line_servers(&lab, "::", HTTPS_PORT);
    let rips: Vec<String> = lab
        .topology
        .real_servers
        .iter()
        .map(|rs| rs.rip6.clone().expect("dual stack"))
        .collect();
    let services = services_at(&lab, &vip, &rips, &format!("[{HTTP_PORT}, {HTTPS_PORT}]"));
    lab.reload(
        &services,
        &format!("-a -f 1 -6 -r [{}]:0 {}", rips[1], mode.option()),
    )
    .unwrap();
    let listing = lab.xvsadm("-L -n").unwrap();
    assert!(
        listing.contains("FWM  1 IPv6 rr persistent 300\n"),
        "{listing}"
    );
    for rip in &rips {
        assert!(listing.contains(&format!("  -> [{rip}]:0 ")), "{listing}");
    }
    let saved = lab.xvsadm("-S -n").unwrap();
    assert!(saved.contains("-A -f 1 -6 -s rr -p 300\n"), "{saved}");
    let mut servers_seen = Vec::new();
    for source in &clients {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut server = http_to(&lab, &vip, source);
        while server.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            server = http_to(&lab, &vip, source);
        }
        assert!(server == "rs1" || server == "rs2", "{source}: {server:?}");
        for round in 0..2 {
            assert_eq!(
                http_to(&lab, &vip, source),
                server,
                "{source} :80 round {round}"
            );
            assert_eq!(
                line_to(&lab, &vip, source, HTTPS_PORT),
                format!("{server}: hi"),
                "{source} :443 round {round}"
            );
        }
        servers_seen.push(server);
    }
    assert!(
        servers_seen.iter().any(|s| s == "rs1") && servers_seen.iter().any(|s| s == "rs2"),
        "rr spread the clients over both servers: {servers_seen:?}"
    );
    let conns = lab.xvsadm("-L -n -c").unwrap();
    let templates = conns.lines().filter(|l| l.contains("NONE")).count();
    assert_eq!(templates, clients.len(), "one template per client: {conns}");
    // 8080 is marked by no rule: the director's kernel gets it and has no such server.
    let _more = line_servers(&lab, "::", 8080);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        line_to(&lab, &vip, &clients[1], 8080),
        "",
        "8080 is not marked"
    );
}

#[test]
fn a_persistent_ipv6_mark_keeps_each_client_on_one_server_across_http_and_https_dr() {
    persistent_ipv6_mark_across_ports(Mode::Dr);
}

#[test]
fn a_persistent_ipv6_mark_keeps_each_client_on_one_server_across_http_and_https_nat() {
    persistent_ipv6_mark_across_ports(Mode::Nat);
}

/// TUN: IPv6-in-IPv6 to the real servers' decapsulators.
#[test]
fn a_persistent_ipv6_mark_keeps_each_client_on_one_server_across_http_and_https_tun() {
    persistent_ipv6_mark_across_ports(Mode::Tun);
}
