//! Firewall-mark services through the pipeline on in-memory ports: frames built with
//! etherparse go in through `MemoryPorts`, the worker's batch path processes them, and every
//! frame that comes out is parsed back, each header field compared and each checksum
//! recomputed from scratch.
//!
//! The setup is the seeds' HTTP + HTTPS example: mark rules give TCP to the VIP on ports 80
//! and 443 mark 1, `-A -f 1 -s rr -p 300` serves the mark, and its real servers have port 0
//! (each connection keeps the port it asked for).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use etherparse::{Ethernet2Header, Ipv4Header, PacketBuilder, TcpHeader};
use xvs_conntrack::{Config, ConnTable};
use xvs_dataplane::memory_port::MemoryPorts;
use xvs_dataplane::packet_io::{BATCH_SIZE, PacketIo};
use xvs_dataplane::pipeline::counters::{Drop, WorkerCounters};
use xvs_dataplane::pipeline::{Clock, Pipeline, ResolveQueue, Shared};
use xvs_dataplane::route::{Link, Neighbours, Routes};
use xvs_dataplane::service::snapshot::SnapshotBuilder;
use xvs_dataplane::service::spec::{
    DestSpec, ForwardMethod, PersistenceSpec, Protocol, ServiceAddr, ServiceSpec, ServiceTableSpec,
};
use xvs_dataplane::sync::SyncPort;
use xvs_dataplane::umem::UmemConfig;
use xvs_model::mark::MarkRule;

const DIRECTOR_MAC: [u8; 6] = [2, 0xd, 0, 0, 0, 1];
const INTERNAL_MAC: [u8; 6] = [2, 0xd, 0, 0, 0, 2];
const CLIENT_MAC: [u8; 6] = [2, 0xc, 0, 0, 0, 1];
const RS_MACS: [[u8; 6]; 2] = [[2, 0x5, 0, 0, 0, 11], [2, 0x5, 0, 0, 0, 12]];
const VIP: [u8; 4] = [192, 168, 0, 100];
const MARK: ServiceAddr = ServiceAddr::Fwmark {
    mark: 1,
    ipv6: false,
};

fn client(i: u8) -> [u8; 4] {
    [192, 168, 0, 50 + i]
}

fn rs_ip(method: ForwardMethod, i: usize) -> Ipv4Addr {
    match method {
        ForwardMethod::Masq => Ipv4Addr::new(10, 0, 0, 11 + i as u8),
        _ => Ipv4Addr::new(192, 168, 0, 11 + i as u8),
    }
}

fn link(port: u8, name: &str, mac: [u8; 6], net: Ipv4Addr) -> Link {
    Link {
        port,
        name: name.into(),
        mac,
        mtu: 1500,
        nets: vec![(net, 24)],
        gateway: None,
        nets6: Vec::new(),
        gateway6: None,
    }
}

struct Lab {
    ports: MemoryPorts,
    pipeline: Pipeline,
    counters: Arc<WorkerCounters>,
    method: ForwardMethod,
}

fn rule(ports: &[&str]) -> MarkRule {
    MarkRule {
        mark: 1,
        protocol: Protocol::Tcp,
        destination: "192.168.0.100".parse().unwrap(),
        ports: ports.iter().map(|p| p.parse().unwrap()).collect(),
    }
}

impl Lab {
    /// Mark 1 for TCP to the VIP on 80 and 443; `-f 1 -s rr` (persistent for `persistent`)
    /// with two real servers on `rs_port` by `method`; also `-t VIP:8080` (one real server)
    /// to show an unmarked port still finds its address service.
    fn new(method: ForwardMethod, persistent: bool, rs_port: u16) -> Lab {
        let nat = method == ForwardMethod::Masq;
        let routes = if nat {
            Routes {
                links: vec![
                    link(0, "ext", DIRECTOR_MAC, Ipv4Addr::new(192, 168, 0, 10)),
                    link(1, "int", INTERNAL_MAC, Ipv4Addr::new(10, 0, 0, 1)),
                ],
            }
        } else {
            Routes {
                links: vec![link(
                    0,
                    "eth0",
                    DIRECTOR_MAC,
                    Ipv4Addr::new(192, 168, 0, 10),
                )],
            }
        };
        let mut neighbours = Neighbours::new();
        for (i, mac) in RS_MACS.iter().enumerate() {
            neighbours.insert(u8::from(nat), rs_ip(method, i), *mac);
        }
        for i in 0..16 {
            neighbours.insert(0, client(i).into(), CLIENT_MAC);
        }
        let mut table = ServiceTableSpec::default();
        let mut service = ServiceSpec::new(MARK);
        service.scheduler = "rr".into();
        if persistent {
            service.persistence = Some(PersistenceSpec {
                timeout_secs: 300,
                prefix_len: 32,
            });
        }
        table.add_service(service).unwrap();
        let dest = |i, port| DestSpec {
            addr: IpAddr::V4(rs_ip(method, i)),
            port,
            method,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
        };
        for i in 0..2 {
            table.add_dest(&MARK, dest(i, rs_port)).unwrap();
        }
        let web = ServiceAddr::Inet {
            protocol: Protocol::Tcp,
            addr: IpAddr::V4(VIP.into()),
            port: 8080,
        };
        table.add_service(ServiceSpec::new(web)).unwrap();
        table.add_dest(&web, dest(1, 8080)).unwrap();
        let mut builder = SnapshotBuilder::new();
        builder.set_mark_rules(&[rule(&["80", "443"])]);
        let snapshot = Arc::new(builder.build(&table).unwrap());
        let (_conns, mut shards) = ConnTable::new(Config::new(1, 4096));
        let counters = Arc::new(WorkerCounters::default());
        let shared = Shared {
            snapshot,
            routes: Arc::new(routes),
            neighbours: Arc::new(neighbours),
            counters: counters.clone(),
            resolve: Arc::new(ResolveQueue::new(64)),
            tunnel_source: Some(Ipv4Addr::new(192, 168, 0, 10)),
            tunnel_source6: None,
            sync: Arc::new(SyncPort::default()),
            local: Default::default(),
        };
        let mut pipeline = Pipeline::new(0, shards.remove(0), shared);
        pipeline.set_clock(Clock {
            secs: 100,
            millis: 100_000,
        });
        let config = UmemConfig {
            frame_count: 256,
            ..UmemConfig::default()
        };
        Lab {
            ports: MemoryPorts::new(2, config).unwrap(),
            pipeline,
            counters,
            method,
        }
    }

    /// Receives `frame` on `ingress` through the memory port; returns the port it left by
    /// and its bytes, or `None` if it was dropped.
    fn run(&mut self, frame: &[u8], ingress: usize) -> Option<(usize, Vec<u8>)> {
        assert!(self.ports.push_rx(ingress, frame));
        let pipeline = &mut self.pipeline;
        self.ports
            .poll(BATCH_SIZE, &mut |ingress, frames, verdicts| {
                pipeline.process_batch(frames, ingress, verdicts)
            })
            .unwrap();
        let out = (0..2).find_map(|port| self.ports.pop_tx(port).map(|f| (port, f)));
        assert_eq!(
            (self.ports.tx_pending(0), self.ports.tx_pending(1)),
            (0, 0),
            "one frame out at most"
        );
        out
    }

    /// A client's SYN to VIP:`port` goes out toward a real server: which one (by MAC),
    /// after checking every field of the forwarded frame for the lab's method.
    fn open(&mut self, from: [u8; 4], sport: u16, port: u16) -> usize {
        let syn = tcp(CLIENT_MAC, DIRECTOR_MAC, (from, sport), (VIP, port), true);
        let (egress, out) = self.run(&syn, 0).expect("forwarded");
        let (eth, rest) = Ethernet2Header::from_slice(&out).unwrap();
        let server = RS_MACS
            .iter()
            .position(|m| *m == eth.destination)
            .expect("to a real server's MAC");
        let rs = rs_ip(self.method, server).octets();
        match self.method {
            ForwardMethod::Route => {
                assert_eq!((egress, eth.source), (0, DIRECTOR_MAC));
                // DR: the IP packet is untouched.
                assert_eq!(&out[14..], &syn[14..]);
            }
            ForwardMethod::Masq => {
                assert_eq!((egress, eth.source), (1, INTERNAL_MAC));
                let (ip, t, _) = parse_tcp(rest);
                assert_eq!((ip.source, ip.destination, ip.time_to_live), (from, rs, 63));
                assert_eq!(
                    (t.source_port, t.destination_port, t.syn),
                    (sport, port, true)
                );
            }
            ForwardMethod::Tunnel => {
                assert_eq!((egress, eth.source), (0, DIRECTOR_MAC));
                let (outer, inner) = Ipv4Header::from_slice(rest).unwrap();
                assert_eq!(outer.header_checksum, outer.calc_header_checksum());
                assert_eq!(outer.protocol, etherparse::IpNumber::IPV4);
                assert_eq!((outer.source, outer.destination), ([192, 168, 0, 10], rs));
                let (ip, t, _) = parse_tcp(inner);
                assert_eq!(
                    (ip.source, ip.destination, ip.time_to_live),
                    (from, VIP, 63)
                );
                assert_eq!((t.source_port, t.destination_port), (sport, port));
            }
        }
        server
    }
}

fn tcp(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    syn: bool,
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src.0, dst.0, 64)
        .tcp(src.1, dst.1, 1000, 64240);
    b = if syn { b.syn() } else { b.syn().ack(1) };
    let mut out = Vec::new();
    b.write(&mut out, b"hello").unwrap();
    out
}

/// An IPv4 TCP packet parsed back, both checksums recomputed.
fn parse_tcp(bytes: &[u8]) -> (Ipv4Header, TcpHeader, Vec<u8>) {
    let (ip, rest) = Ipv4Header::from_slice(bytes).unwrap();
    assert_eq!(
        ip.header_checksum,
        ip.calc_header_checksum(),
        "IPv4 checksum"
    );
    assert_eq!(ip.protocol, etherparse::IpNumber::TCP);
    let l4 = &rest[..usize::from(ip.total_len) - ip.header_len()];
    let (t, payload) = TcpHeader::from_slice(l4).unwrap();
    assert_eq!(
        t.checksum,
        t.calc_checksum_ipv4(&ip, payload).unwrap(),
        "TCP checksum"
    );
    assert_eq!(payload, b"hello");
    (ip, t, payload.to_vec())
}

/// The seeds' HTTP + HTTPS case: each client's connections to 80 and 443 (and further ones)
/// land on one real server, clients spread over both, in every forwarding method.
#[test]
fn a_persistent_mark_keeps_each_client_on_one_server_across_its_ports() {
    for method in [
        ForwardMethod::Route,
        ForwardMethod::Masq,
        ForwardMethod::Tunnel,
    ] {
        let mut lab = Lab::new(method, true, 0);
        let mut seen = [0; 2];
        for c in 0..8 {
            let first = lab.open(client(c), 40000, 80);
            assert_eq!(
                lab.open(client(c), 40001, 443),
                first,
                "{method:?} client {c}: 443"
            );
            assert_eq!(
                lab.open(client(c), 40002, 80),
                first,
                "{method:?} client {c}: 80 again"
            );
            seen[first] += 1;
        }
        // rr places new clients alternately: both servers serve.
        assert_eq!(seen, [4, 4], "{method:?}");
        // One template per client, counted on its server (PersistConn).
        let servers = &lab.pipeline.snapshot().services[0].servers;
        assert_eq!(
            (servers[0].load.persistent(), servers[1].load.persistent()),
            (4, 4)
        );
    }
}

/// Without persistence the mark is one service whose connections rr spreads regardless of
/// port; an unmarked port of the VIP is no part of it.
#[test]
fn an_unmarked_port_is_not_the_marks_and_its_own_service_still_serves() {
    let mut lab = Lab::new(ForwardMethod::Route, false, 0);
    let picks: Vec<usize> = (0..4)
        .map(|i| lab.open(client(0), 41000 + i, if i % 2 == 0 { 80 } else { 443 }))
        .collect();
    assert_eq!(picks, [0, 1, 0, 1]);
    // 22 is marked by no rule and served by no address service: the kernel's (dropped here).
    let ssh = tcp(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (client(0), 42000),
        (VIP, 22),
        true,
    );
    assert!(lab.run(&ssh, 0).is_none());
    assert_eq!(lab.counters.drops_of(Drop::NotForUs), 1);
    // 8080 is marked by no rule: its `-t VIP:8080` service (real server 1) serves it.
    for i in 0..3 {
        assert_eq!(lab.open(client(1), 42100 + i, 8080), 1);
    }
}

/// NAT with port-0 real servers: the client's port is kept toward the real server, and its
/// replies from that port go back as the VIP's; a real server with a port maps every
/// marked port to it.
#[test]
fn nat_keeps_the_packets_port_for_port_0_servers_and_replies_match_the_connection() {
    let mut lab = Lab::new(ForwardMethod::Masq, true, 0);
    for port in [80, 443] {
        let server = lab.open(client(2), 43000 + port, port);
        let rs = rs_ip(ForwardMethod::Masq, server).octets();
        let reply = tcp(
            RS_MACS[server],
            INTERNAL_MAC,
            (rs, port),
            (client(2), 43000 + port),
            false,
        );
        let (egress, out) = lab.run(&reply, 1).expect("reply relayed");
        let (eth, rest) = Ethernet2Header::from_slice(&out).unwrap();
        assert_eq!(
            (egress, eth.source, eth.destination),
            (0, DIRECTOR_MAC, CLIENT_MAC)
        );
        let (ip, t, _) = parse_tcp(rest);
        assert_eq!(
            (ip.source, ip.destination, ip.time_to_live),
            (VIP, client(2), 63)
        );
        assert_eq!((t.source_port, t.destination_port), (port, 43000 + port));
        assert!(t.syn && t.ack);
    }

    let mut lab = Lab::new(ForwardMethod::Masq, false, 8443);
    for port in [80, 443] {
        let syn = tcp(
            CLIENT_MAC,
            DIRECTOR_MAC,
            (client(3), 44000 + port),
            (VIP, port),
            true,
        );
        let (_, out) = lab.run(&syn, 0).expect("forwarded");
        let (_, rest) = Ethernet2Header::from_slice(&out).unwrap();
        let (_, t, _) = parse_tcp(rest);
        assert_eq!(t.destination_port, 8443, "the real server's own port");
    }
}
