//! The pipeline end to end in memory: frames built with etherparse, processed, parsed back,
//! every header field compared and every checksum recomputed from scratch.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use etherparse::{
    Ethernet2Header, Ipv4Header, Ipv4HeaderSlice, PacketBuilder, TcpHeader, UdpHeader,
};
use xvs_conntrack::{Config, ConnTable};
use xvs_dataplane::pipeline::counters::{Drop, WorkerCounters};
use xvs_dataplane::pipeline::{Clock, Pipeline, ResolveQueue, Shared, Verdict};
use xvs_dataplane::route::{Link, Neighbours, Routes};
use xvs_dataplane::service::snapshot::SnapshotBuilder;
use xvs_dataplane::service::spec::{
    DestSpec, ForwardMethod, PersistenceSpec, Protocol, ServiceAddr, ServiceSpec, ServiceTableSpec,
};
use xvs_dataplane::sync::SyncPort;
use xvs_dataplane::sync::convert::{to_install, to_wire};
use xvs_forwarders::{Frame, Reason};
use xvs_sync::MessageWriter;

const HEADROOM: usize = 256;
const DIRECTOR_MAC: [u8; 6] = [2, 0xd, 0, 0, 0, 1];
const INTERNAL_MAC: [u8; 6] = [2, 0xd, 0, 0, 0, 2];
const CLIENT_MAC: [u8; 6] = [2, 0xc, 0, 0, 0, 1];
const RS_MACS: [[u8; 6]; 2] = [[2, 0x5, 0, 0, 0, 11], [2, 0x5, 0, 0, 0, 12]];

const VIP: [u8; 4] = [192, 168, 0, 100];
const CLIENT: [u8; 4] = [192, 168, 0, 50];

/// The seed DR lab: director, real servers and client on one LAN.
fn one_arm() -> Routes {
    Routes {
        links: vec![Link {
            port: 0,
            name: "eth0".into(),
            mac: DIRECTOR_MAC,
            mtu: 1500,
            nets: vec![(Ipv4Addr::new(192, 168, 0, 10), 24)],
            gateway: None,
            nets6: Vec::new(),
            gateway6: None,
        }],
    }
}

/// The seed NAT lab: clients outside, real servers on a private network behind the director.
fn two_arm() -> Routes {
    Routes {
        links: vec![
            Link {
                port: 0,
                name: "ext".into(),
                mac: DIRECTOR_MAC,
                mtu: 1500,
                nets: vec![(Ipv4Addr::new(192, 168, 0, 10), 24)],
                gateway: None,
                nets6: Vec::new(),
                gateway6: None,
            },
            Link {
                port: 1,
                name: "int".into(),
                mac: INTERNAL_MAC,
                mtu: 1500,
                nets: vec![(Ipv4Addr::new(10, 0, 0, 1), 24)],
                gateway: None,
                nets6: Vec::new(),
                gateway6: None,
            },
        ],
    }
}

fn rs_ip(method: ForwardMethod, i: usize) -> Ipv4Addr {
    match method {
        ForwardMethod::Masq => Ipv4Addr::new(10, 0, 0, 11 + i as u8),
        _ => Ipv4Addr::new(192, 168, 0, 11 + i as u8),
    }
}

struct Lab {
    pipeline: Pipeline,
    sync: Arc<SyncPort>,
    counters: Arc<WorkerCounters>,
    resolve: Arc<ResolveQueue>,
    table: ServiceTableSpec,
    builder: SnapshotBuilder,
    method: ForwardMethod,
}

fn service_addr(protocol: Protocol, port: u16) -> ServiceAddr {
    ServiceAddr::Inet {
        protocol,
        addr: IpAddr::V4(VIP.into()),
        port,
    }
}

impl Lab {
    /// VIP:80 over `protocol` with two real servers using `method`, scheduler `scheduler`.
    fn new(method: ForwardMethod, scheduler: &str, protocol: Protocol) -> Lab {
        let routes = if method == ForwardMethod::Masq {
            two_arm()
        } else {
            one_arm()
        };
        let mut neighbours = Neighbours::new();
        let rs_port = if method == ForwardMethod::Masq { 1 } else { 0 };
        for (i, mac) in RS_MACS.iter().enumerate() {
            neighbours.insert(rs_port, rs_ip(method, i), *mac);
        }
        neighbours.insert(0, CLIENT.into(), CLIENT_MAC);
        let mut table = ServiceTableSpec::default();
        let mut service = ServiceSpec::new(service_addr(protocol, 80));
        service.scheduler = scheduler.to_string();
        table.add_service(service).unwrap();
        for i in 0..2 {
            let port = if method == ForwardMethod::Masq {
                8080
            } else {
                80
            };
            let dest = DestSpec {
                addr: IpAddr::V4(rs_ip(method, i)),
                port,
                method,
                weight: 1,
                upper_threshold: 0,
                lower_threshold: 0,
            };
            table.add_dest(&service_addr(protocol, 80), dest).unwrap();
        }
        let mut builder = SnapshotBuilder::new();
        let snapshot = Arc::new(builder.build(&table).unwrap());
        let (_conns, mut shards) = ConnTable::new(Config::new(1, 4096));
        let counters = Arc::new(WorkerCounters::default());
        let resolve = Arc::new(ResolveQueue::new(64));
        let sync = Arc::new(SyncPort::default());
        let shared = Shared {
            snapshot,
            routes: Arc::new(routes),
            neighbours: Arc::new(neighbours),
            counters: counters.clone(),
            resolve: resolve.clone(),
            tunnel_source: Some(Ipv4Addr::new(192, 168, 0, 10)),
            tunnel_source6: None,
            sync: sync.clone(),
            local: Default::default(),
        };
        let mut pipeline = Pipeline::new(0, shards.remove(0), shared);
        pipeline.set_clock(Clock {
            secs: 100,
            millis: 100_000,
        });
        Lab {
            pipeline,
            sync,
            counters,
            resolve,
            table,
            builder,
            method,
        }
    }

    fn rebuild(&mut self) {
        let snapshot = self.builder.build(&self.table).unwrap();
        self.pipeline.set_snapshot(Arc::new(snapshot));
    }

    /// Processes `packet` (an Ethernet frame) and returns the verdict and the frame after.
    fn run(&mut self, packet: &[u8], ingress: u8) -> (Verdict, Vec<u8>) {
        let mut buf = vec![0u8; HEADROOM + packet.len() + 64];
        buf[HEADROOM..HEADROOM + packet.len()].copy_from_slice(packet);
        let mut frame = Frame::new(&mut buf, HEADROOM, packet.len()).unwrap();
        let verdict = self.pipeline.process(&mut frame, ingress);
        (verdict, frame.data().to_vec())
    }

    fn load(&self, i: usize) -> (u32, u32, u32) {
        let s = &self.pipeline.snapshot().services[0].servers[i];
        (s.load.active(), s.load.inactive(), s.load.persistent())
    }
}

/// A TCP segment from `src` to `dst` with `flags` ("S", "SA", "A", "FA", "R").
fn tcp(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    flags: &str,
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src.0, dst.0, 64)
        .tcp(src.1, dst.1, 1000, 64240);
    if flags.contains('S') {
        b = b.syn();
    }
    if flags.contains('A') {
        b = b.ack(1);
    }
    if flags.contains('F') {
        b = b.fin();
    }
    if flags.contains('R') {
        b = b.rst();
    }
    let payload = b"GET / HTTP/1.0\r\n\r\n";
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    // PacketBuilder leaves DF clear; set it as Linux does for TCP, and fix the checksum.
    set_df(&mut out);
    out
}

fn udp(src: ([u8; 4], u16), dst: ([u8; 4], u16)) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ipv4(src.0, dst.0, 64)
        .udp(src.1, dst.1);
    let mut out = Vec::new();
    b.write(&mut out, b"ping").unwrap();
    out
}

fn set_df(frame: &mut [u8]) {
    frame[14 + 6] |= 0x40;
    let header = Ipv4HeaderSlice::from_slice(&frame[14..])
        .unwrap()
        .to_header();
    frame[14 + 10..14 + 12].copy_from_slice(&header.calc_header_checksum().to_be_bytes());
}

/// Parses a frame back and verifies the IPv4 and transport checksums by full recomputation.
struct Parsed {
    eth: Ethernet2Header,
    ip: Ipv4Header,
    tcp: Option<TcpHeader>,
    udp: Option<UdpHeader>,
    payload: Vec<u8>,
}

fn parse_back(frame: &[u8]) -> Parsed {
    let (eth, rest) = Ethernet2Header::from_slice(frame).unwrap();
    let (ip, rest) = Ipv4Header::from_slice(rest).unwrap();
    assert_eq!(
        ip.header_checksum,
        ip.calc_header_checksum(),
        "IPv4 header checksum"
    );
    let l4 = &rest[..usize::from(ip.total_len) - ip.header_len()];
    match ip.protocol {
        etherparse::IpNumber::TCP => {
            let (tcp, payload) = TcpHeader::from_slice(l4).unwrap();
            assert_eq!(
                tcp.checksum,
                tcp.calc_checksum_ipv4(&ip, payload).unwrap(),
                "TCP checksum"
            );
            Parsed {
                eth,
                ip,
                tcp: Some(tcp),
                udp: None,
                payload: payload.to_vec(),
            }
        }
        etherparse::IpNumber::UDP => {
            let (udp, payload) = UdpHeader::from_slice(l4).unwrap();
            if udp.checksum != 0 {
                assert_eq!(
                    udp.checksum,
                    udp.calc_checksum_ipv4(&ip, payload).unwrap(),
                    "UDP checksum"
                );
            }
            Parsed {
                eth,
                ip,
                tcp: None,
                udp: Some(udp),
                payload: payload.to_vec(),
            }
        }
        _ => Parsed {
            eth,
            ip,
            tcp: None,
            udp: None,
            payload: l4.to_vec(),
        },
    }
}

#[test]
fn dr_rewrites_macs_only_and_keeps_each_connection_on_its_server() {
    let mut lab = Lab::new(ForwardMethod::Route, "rr", Protocol::Tcp);
    let syn = tcp(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, 40000), (VIP, 80), "S");
    let (verdict, out) = lab.run(&syn, 0);
    assert_eq!(verdict, Verdict::Transmit { port: 0 });
    let p = parse_back(&out);
    assert_eq!(
        (p.eth.source, p.eth.destination),
        (DIRECTOR_MAC, RS_MACS[0])
    );
    // The IP packet is untouched: same bytes from the IP header on.
    assert_eq!(&out[14..], &syn[14..]);
    assert_eq!(lab.load(0), (1, 0, 0), "SYN_RECV counts as active");
    // A second client connection goes to the other server (rr).
    let (_, out2) = lab.run(
        &tcp(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, 40001), (VIP, 80), "S"),
        0,
    );
    assert_eq!(parse_back(&out2).eth.destination, RS_MACS[1]);
    // The first connection's next packets stay on server 0.
    for flags in ["A", "A", "FA"] {
        let (_, out) = lab.run(
            &tcp(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, 40000), (VIP, 80), flags),
            0,
        );
        assert_eq!(parse_back(&out).eth.destination, RS_MACS[0]);
    }
    let cells = &lab.counters.dests[0];
    assert_eq!(cells.conns.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(cells.in_pkts.load(std::sync::atomic::Ordering::Relaxed), 4);
    // DR sees input only: FIN moves the connection to an inactive state.
    assert_eq!(lab.load(0), (0, 1, 0));
}

#[test]
fn nat_translates_both_directions_with_port_mapping() {
    let mut lab = Lab::new(ForwardMethod::Masq, "rr", Protocol::Tcp);
    let (verdict, out) = lab.run(
        &tcp(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, 40000), (VIP, 80), "S"),
        0,
    );
    assert_eq!(verdict, Verdict::Transmit { port: 1 });
    let p = parse_back(&out);
    assert_eq!(
        (p.eth.source, p.eth.destination),
        (INTERNAL_MAC, RS_MACS[0])
    );
    assert_eq!(
        (p.ip.source, p.ip.destination),
        (CLIENT, rs_ip(ForwardMethod::Masq, 0).octets())
    );
    let t = p.tcp.unwrap();
    assert_eq!(
        (t.source_port, t.destination_port, t.syn),
        (40000, 8080, true)
    );
    assert_eq!(p.ip.time_to_live, 63, "forwarding decrements the TTL");
    assert_eq!(p.payload, b"GET / HTTP/1.0\r\n\r\n");
    // The real server answers from 10.0.0.11:8080; the client must see VIP:80.
    let rs = rs_ip(ForwardMethod::Masq, 0).octets();
    let reply = tcp(RS_MACS[0], INTERNAL_MAC, (rs, 8080), (CLIENT, 40000), "SA");
    let (verdict, out) = lab.run(&reply, 1);
    assert_eq!(verdict, Verdict::Transmit { port: 0 });
    let p = parse_back(&out);
    assert_eq!(
        (p.eth.source, p.eth.destination),
        (DIRECTOR_MAC, CLIENT_MAC)
    );
    assert_eq!((p.ip.source, p.ip.destination), (VIP, CLIENT));
    let t = p.tcp.unwrap();
    assert_eq!(
        (t.source_port, t.destination_port, t.syn, t.ack),
        (80, 40000, true, true)
    );
    let cells =
        &lab.counters.dests[lab.pipeline.snapshot().services[0].dests[0].id.0 as usize & 0xffff];
    assert_eq!(cells.out_pkts.load(std::sync::atomic::Ordering::Relaxed), 1);
    // A packet from the real server for no connection is not ours.
    let stray = tcp(RS_MACS[0], INTERNAL_MAC, (rs, 8080), (CLIENT, 40999), "A");
    assert_eq!(lab.run(&stray, 1).0, Verdict::Drop);
    assert_eq!(lab.counters.drops_of(Drop::NotForUs), 1);
}

#[test]
fn tun_wraps_the_datagram_in_ipip_to_the_real_server() {
    let mut lab = Lab::new(ForwardMethod::Tunnel, "rr", Protocol::Tcp);
    let syn = tcp(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, 40000), (VIP, 80), "S");
    let (verdict, out) = lab.run(&syn, 0);
    assert_eq!(verdict, Verdict::Transmit { port: 0 });
    let (eth, rest) = Ethernet2Header::from_slice(&out).unwrap();
    assert_eq!((eth.source, eth.destination), (DIRECTOR_MAC, RS_MACS[0]));
    let (outer, inner) = Ipv4Header::from_slice(rest).unwrap();
    assert_eq!(outer.header_checksum, outer.calc_header_checksum());
    assert_eq!(outer.protocol, etherparse::IpNumber::IPV4);
    assert_eq!(
        (outer.source, outer.destination),
        ([192, 168, 0, 10], rs_ip(ForwardMethod::Tunnel, 0).octets())
    );
    assert!(outer.dont_fragment, "DF copied from the inner header");
    assert_eq!(usize::from(outer.total_len), 20 + syn.len() - 14);
    // The inner datagram is the client's, TTL decremented, checksums valid.
    let mut inner_frame = syn[..14].to_vec();
    inner_frame.extend_from_slice(inner);
    let p = parse_back(&inner_frame);
    assert_eq!(
        (p.ip.source, p.ip.destination, p.ip.time_to_live),
        (CLIENT, VIP, 63)
    );
    assert_eq!(p.tcp.unwrap().destination_port, 80);
}

#[test]
fn tcp_without_syn_for_an_unknown_flow_is_dropped_and_udp_opens_a_flow() {
    let mut lab = Lab::new(ForwardMethod::Route, "rr", Protocol::Tcp);
    let ack = tcp(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, 40000), (VIP, 80), "A");
    assert_eq!(lab.run(&ack, 0).0, Verdict::Drop);
    assert_eq!(lab.counters.drops_of(Drop::NoConnection), 1);
    let mut udp_lab = Lab::new(ForwardMethod::Route, "rr", Protocol::Udp);
    let (verdict, out) = udp_lab.run(&udp((CLIENT, 5353), (VIP, 80)), 0);
    assert_eq!(verdict, Verdict::Transmit { port: 0 });
    let p = parse_back(&out);
    assert_eq!(p.udp.unwrap().destination_port, 80);
    assert_eq!(udp_lab.load(0), (0, 1, 0), "UDP entries count as inactive");
    // Other port of the VIP: not a service.
    assert_eq!(
        udp_lab.run(&udp((CLIENT, 5353), (VIP, 81)), 0).0,
        Verdict::Drop
    );
}

#[test]
fn persistence_keeps_a_client_on_one_server_across_connections() {
    let mut lab = Lab::new(ForwardMethod::Route, "rr", Protocol::Tcp);
    let addr = service_addr(Protocol::Tcp, 80);
    let mut persistent = lab.table.service(&addr).unwrap().clone();
    persistent.persistence = Some(PersistenceSpec {
        timeout_secs: 300,
        prefix_len: 32,
    });
    lab.table.edit_service(persistent).unwrap();
    lab.rebuild();
    for port in 40000..40006 {
        let (_, out) = lab.run(
            &tcp(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, port), (VIP, 80), "S"),
            0,
        );
        assert_eq!(parse_back(&out).eth.destination, RS_MACS[0], "port {port}");
    }
    assert_eq!(lab.load(0), (6, 0, 1), "six connections, one template");
    // Another client goes to the next server in turn.
    let (_, out) = lab.run(
        &tcp(
            CLIENT_MAC,
            DIRECTOR_MAC,
            ([192, 168, 0, 51], 1),
            (VIP, 80),
            "S",
        ),
        0,
    );
    assert_eq!(parse_back(&out).eth.destination, RS_MACS[1]);
}

#[test]
fn weight_zero_lets_connections_finish_and_sends_new_ones_elsewhere() {
    let mut lab = Lab::new(ForwardMethod::Route, "rr", Protocol::Tcp);
    lab.run(
        &tcp(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, 40000), (VIP, 80), "S"),
        0,
    );
    let addr = service_addr(Protocol::Tcp, 80);
    let mut quiet = lab.table.service(&addr).unwrap().dests[0];
    quiet.weight = 0;
    lab.table.edit_dest(&addr, quiet).unwrap();
    lab.rebuild();
    let (_, out) = lab.run(
        &tcp(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, 40000), (VIP, 80), "A"),
        0,
    );
    assert_eq!(
        parse_back(&out).eth.destination,
        RS_MACS[0],
        "the existing connection continues"
    );
    for port in 40001..40004 {
        let (_, out) = lab.run(
            &tcp(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, port), (VIP, 80), "S"),
            0,
        );
        assert_eq!(parse_back(&out).eth.destination, RS_MACS[1]);
    }
}

#[test]
fn a_removed_real_server_ends_its_flows_as_configured() {
    let mut lab = Lab::new(ForwardMethod::Route, "rr", Protocol::Tcp);
    lab.run(
        &tcp(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, 40000), (VIP, 80), "S"),
        0,
    );
    let addr = service_addr(Protocol::Tcp, 80);
    let gone = lab.table.service(&addr).unwrap().dests[0];
    lab.table.delete_dest(&addr, gone.addr, gone.port).unwrap();
    lab.rebuild();
    // expire_nodest_conn off (the IPVS default): packets of the flow are dropped.
    let ack = tcp(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, 40000), (VIP, 80), "A");
    assert_eq!(lab.run(&ack, 0).0, Verdict::Drop);
    assert_eq!(lab.counters.drops_of(Drop::DestRemoved), 1);
    // With expire_nodest_conn, the flow is expired and a new SYN is scheduled anew.
    let table = lab.pipeline.shard().table().clone();
    table.set_options(xvs_conntrack::Options {
        expire_nodest_conn: true,
        ..table.options()
    });
    let syn = tcp(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, 40000), (VIP, 80), "S");
    let (verdict, out) = lab.run(&syn, 0);
    assert_eq!(verdict, Verdict::Transmit { port: 0 });
    assert_eq!(parse_back(&out).eth.destination, RS_MACS[1]);
}

#[test]
fn unresolved_neighbours_are_dropped_counted_and_queued() {
    let mut lab = Lab::new(ForwardMethod::Route, "rr", Protocol::Tcp);
    lab.pipeline.set_neighbours(Arc::new(Neighbours::new()));
    let syn = tcp(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, 40000), (VIP, 80), "S");
    assert_eq!(lab.run(&syn, 0).0, Verdict::Drop);
    assert_eq!(lab.counters.drops_of(Drop::NeighbourUnresolved), 1);
    assert_eq!(lab.resolve.pop(), Some((0, rs_ip(lab.method, 0).into())));
}

#[test]
fn a_real_servers_new_mac_is_used_as_soon_as_the_neighbours_change() {
    let mut lab = Lab::new(ForwardMethod::Route, "rr", Protocol::Tcp);
    let packet = |flags| tcp(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, 40000), (VIP, 80), flags);
    let (_, out) = lab.run(&packet("S"), 0);
    assert_eq!(parse_back(&out).eth.destination, RS_MACS[0]);
    // The real server's NIC was replaced: the kernel's table, and so ours, has a new MAC.
    let moved = [2, 0x5, 0, 0, 0, 99];
    let mut neighbours = Neighbours::new();
    neighbours.insert(0, rs_ip(lab.method, 0), moved);
    neighbours.insert(0, rs_ip(lab.method, 1), RS_MACS[1]);
    lab.pipeline.set_neighbours(Arc::new(neighbours));
    let (_, out) = lab.run(&packet("A"), 0);
    assert_eq!(parse_back(&out).eth.destination, moved);
    // Gone from the table: dropped and queued for resolution, never sent to the old MAC.
    lab.pipeline.set_neighbours(Arc::new(Neighbours::new()));
    assert_eq!(lab.run(&packet("A"), 0).0, Verdict::Drop);
    assert_eq!(lab.counters.drops_of(Drop::NeighbourUnresolved), 1);
}

#[test]
fn malformed_frames_are_refused_with_their_reason() {
    let mut lab = Lab::new(ForwardMethod::Route, "rr", Protocol::Tcp);
    let syn = tcp(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, 40000), (VIP, 80), "S");
    assert_eq!(lab.run(&syn[..30], 0).0, Verdict::Drop);
    let mut bad_sum = syn.clone();
    bad_sum[14 + 10] ^= 0xff;
    assert_eq!(lab.run(&bad_sum, 0).0, Verdict::Drop);
    let mut arp = syn.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(lab.run(&arp, 0).0, Verdict::Drop);
    assert_eq!(lab.counters.refused_of(Reason::Truncated), 1);
    assert_eq!(lab.counters.refused_of(Reason::BadIpChecksum), 1);
    assert_eq!(lab.counters.refused_of(Reason::NotIpv4), 1);
    assert_eq!(lab.load(0), (0, 0, 0), "nothing was scheduled");
}

#[test]
fn too_big_df_packets_get_fragmentation_needed_back_on_the_ingress_port() {
    let mut lab = Lab::new(ForwardMethod::Tunnel, "rr", Protocol::Udp);
    let big = PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ipv4(CLIENT, VIP, 64)
        .udp(5000, 80);
    let mut frame = Vec::new();
    big.write(&mut frame, &[0u8; 1472]).unwrap(); // 1500-byte datagram: 1520 with the tunnel
    set_df(&mut frame);
    let (verdict, out) = lab.run(&frame, 0);
    assert_eq!(verdict, Verdict::Transmit { port: 0 });
    let p = parse_back(&out);
    assert_eq!((p.eth.destination, p.ip.destination), (CLIENT_MAC, CLIENT));
    assert_eq!(p.ip.protocol, etherparse::IpNumber::ICMP);
    // type 3 code 4, next-hop MTU 1480 in bytes 6..8.
    assert_eq!((p.payload[0], p.payload[1]), (3, 4));
    assert_eq!(u16::from_be_bytes([p.payload[6], p.payload[7]]), 1480);
}

#[test]
fn a_flood_of_oversized_packets_gets_rate_limited_fragmentation_needed() {
    let mut lab = Lab::new(ForwardMethod::Tunnel, "rr", Protocol::Udp);
    let mut answered = 0;
    for n in 0..40u16 {
        let big = PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
            .ipv4(CLIENT, VIP, 64)
            .udp(5000 + n, 80);
        let mut frame = Vec::new();
        big.write(&mut frame, &[0u8; 1472]).unwrap();
        set_df(&mut frame);
        let (verdict, out) = lab.run(&frame, 0);
        if verdict == (Verdict::Transmit { port: 0 }) {
            let p = parse_back(&out);
            assert_eq!(p.ip.destination, CLIENT);
            assert_eq!((p.payload[0], p.payload[1]), (3, 4));
            answered += 1;
        } else {
            assert_eq!(verdict, Verdict::Drop);
        }
    }
    // Linux's defaults: a burst of 6 to one destination, then one a second (a 7th only if
    // this loop took over a second).
    assert!((6..=7).contains(&answered), "answered {answered}");
    assert_eq!(lab.counters.drops_of(Drop::IcmpRateLimited), 40 - answered);
    let sent = lab
        .counters
        .icmp_sent
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(sent, answered);
}

#[test]
fn a_syn_reusing_a_closed_connections_tuple_is_scheduled_afresh() {
    // NAT, where the director sees both directions and a connection reaches TIME_WAIT
    // (DR connections end in FIN_WAIT, which IPVS's default conn_reuse_mode leaves alone).
    let mut lab = Lab::new(ForwardMethod::Masq, "rr", Protocol::Tcp);
    let rs = rs_ip(ForwardMethod::Masq, 0).octets();
    let client = |flags| tcp(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, 40000), (VIP, 80), flags);
    let server = |flags| tcp(RS_MACS[0], INTERNAL_MAC, (rs, 8080), (CLIENT, 40000), flags);
    for (packet, ingress) in [
        (client("S"), 0),
        (server("SA"), 1),
        (client("A"), 0),
        (client("FA"), 0),
        (server("FA"), 1),
        (client("A"), 0),
    ] {
        assert!(matches!(
            lab.run(&packet, ingress).0,
            Verdict::Transmit { .. }
        ));
    }
    let conns = lab.pipeline.shard().table().clone();
    let mut states = Vec::new();
    conns.for_each_entry(0, |e| states.push(e.state.name()));
    assert_eq!(states, ["TIME_WAIT"]);
    // IPVS conn_reuse_mode: the new SYN does not inherit the old entry's server.
    let (_, out) = lab.run(&client("S"), 0);
    assert_eq!(parse_back(&out).eth.destination, RS_MACS[1]);
}

#[test]
fn a_clients_icmp_error_about_a_nat_reply_reaches_the_real_server_rewritten() {
    use etherparse::{Icmpv4Type, icmpv4::DestUnreachableHeader};
    let mut lab = Lab::new(ForwardMethod::Masq, "rr", Protocol::Tcp);
    lab.run(
        &tcp(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, 40000), (VIP, 80), "S"),
        0,
    );
    // The client's router says the reply VIP:80 -> client:40000 was too big.
    let reply = tcp(DIRECTOR_MAC, CLIENT_MAC, (VIP, 80), (CLIENT, 40000), "SA");
    let quote = &reply[14..14 + 20 + 8];
    let error = PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ipv4(CLIENT, VIP, 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
        ));
    let mut frame = Vec::new();
    error.write(&mut frame, quote).unwrap();
    let (verdict, out) = lab.run(&frame, 0);
    assert_eq!(verdict, Verdict::Transmit { port: 1 });
    let p = parse_back(&out);
    let rs = rs_ip(ForwardMethod::Masq, 0).octets();
    assert_eq!(
        (p.eth.destination, p.ip.source, p.ip.destination),
        (RS_MACS[0], CLIENT, rs)
    );
    // The quoted packet now reads as the real server sent it: RIP:8080 -> client.
    let quoted = &p.payload[8..];
    assert_eq!(&quoted[12..16], &rs);
    assert_eq!(u16::from_be_bytes([quoted[20], quoted[21]]), 8080);
    // The ICMP checksum covers the rewritten message.
    let mut sum: u32 = p
        .payload
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    assert_eq!(sum, 0xffff, "ICMP checksum");
}

#[test]
fn one_packet_scheduling_leaves_no_entry_but_honours_persistence() {
    let mut lab = Lab::new(ForwardMethod::Route, "rr", Protocol::Udp);
    let addr = service_addr(Protocol::Udp, 80);
    let mut ops = lab.table.service(&addr).unwrap().clone();
    ops.one_packet = true;
    lab.table.edit_service(ops.clone()).unwrap();
    lab.rebuild();
    // Each datagram of one flow is scheduled on its own: rr alternates, no entry is kept.
    let macs: Vec<_> = (0..4)
        .map(|_| {
            parse_back(&lab.run(&udp((CLIENT, 5000), (VIP, 80)), 0).1)
                .eth
                .destination
        })
        .collect();
    assert_eq!(macs, [RS_MACS[0], RS_MACS[1], RS_MACS[0], RS_MACS[1]]);
    assert_eq!(lab.load(0), (0, 0, 0));
    // With -p the client's template still decides.
    ops.persistence = Some(PersistenceSpec {
        timeout_secs: 60,
        prefix_len: 32,
    });
    lab.table.edit_service(ops).unwrap();
    lab.rebuild();
    let macs: Vec<_> = (0..4)
        .map(|p| {
            parse_back(&lab.run(&udp((CLIENT, 6000 + p), (VIP, 80)), 0).1)
                .eth
                .destination
        })
        .collect();
    assert!(macs.iter().all(|m| *m == macs[0]), "{macs:?}");
    assert_eq!(lab.load(0).2 + lab.load(1).2, 1, "one template");
}

#[test]
fn fragmentation_needed_about_a_tunnel_packet_is_answered_to_the_client() {
    use etherparse::{Icmpv4Type, icmpv4::DestUnreachableHeader};
    let mut lab = Lab::new(ForwardMethod::Tunnel, "rr", Protocol::Tcp);
    let (_, tunnelled) = lab.run(
        &tcp(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, 40000), (VIP, 80), "S"),
        0,
    );
    // A router between the director and the real server cannot pass 1500 bytes: it quotes
    // our IPIP packet (outer header, inner header, 8 bytes) back to the tunnel source.
    let quote = &tunnelled[14..14 + 20 + 20 + 8];
    let router = [192, 168, 0, 254];
    let error = PacketBuilder::ethernet2(RS_MACS[0], DIRECTOR_MAC)
        .ipv4(router, [192, 168, 0, 10], 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
        ));
    let mut frame = Vec::new();
    error.write(&mut frame, quote).unwrap();
    let (verdict, out) = lab.run(&frame, 0);
    assert_eq!(verdict, Verdict::Transmit { port: 0 });
    let p = parse_back(&out);
    // The client hears it from the VIP, with the MTU lowered by the 20-byte outer header,
    // quoting its own datagram (client -> VIP:80).
    assert_eq!(
        (p.eth.destination, p.ip.source, p.ip.destination),
        (CLIENT_MAC, VIP, CLIENT)
    );
    assert_eq!((p.payload[0], p.payload[1]), (3, 4));
    assert_eq!(u16::from_be_bytes([p.payload[6], p.payload[7]]), 1380);
    assert_eq!(
        lab.counters
            .icmp_sent
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let quoted = &p.payload[8..];
    assert_eq!((&quoted[12..16], &quoted[16..20]), (&CLIENT[..], &VIP[..]));
    // An error quoting someone else's tunnel is not ours.
    let mut foreign = quote.to_vec();
    foreign[12..16].copy_from_slice(&[192, 168, 0, 99]);
    let sum = {
        foreign[10] = 0;
        foreign[11] = 0;
        let h = Ipv4HeaderSlice::from_slice(&foreign[..20])
            .unwrap()
            .to_header();
        h.calc_header_checksum()
    };
    foreign[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(RS_MACS[0], DIRECTOR_MAC)
        .ipv4(router, [192, 168, 0, 10], 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
        ))
        .write(&mut frame, &foreign)
        .unwrap();
    assert_eq!(lab.run(&frame, 0).0, Verdict::Drop);
    assert_eq!(lab.counters.drops_of(Drop::IcmpNoConnection), 1);
}

#[test]
fn with_expire_nodest_conn_a_removed_servers_connections_end_at_the_reload() {
    let mut lab = Lab::new(ForwardMethod::Route, "rr", Protocol::Tcp);
    let table = lab.pipeline.shard().table().clone();
    table.set_options(xvs_conntrack::Options {
        expire_nodest_conn: true,
        ..table.options()
    });
    for port in [40000, 40001, 40002] {
        lab.run(
            &tcp(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, port), (VIP, 80), "S"),
            0,
        );
    }
    let count = |table: &xvs_conntrack::ConnTable| {
        let mut n = 0;
        table.for_each_entry(0, |_| n += 1);
        n
    };
    assert_eq!(count(&table), 3);
    let addr = service_addr(Protocol::Tcp, 80);
    let gone = lab.table.service(&addr).unwrap().dests[0];
    lab.table.delete_dest(&addr, gone.addr, gone.port).unwrap();
    lab.rebuild();
    // rr sent ports 40000 and 40002 to the removed server: both entries went with it.
    assert_eq!(count(&table), 1);
    assert_eq!(
        lab.load(0),
        (1, 0, 0),
        "the remaining server keeps its connection"
    );
    assert_eq!(table.stats().nodest_expired, 2);
}

/// The master's due entries, through IPVS's wire format, into the backup's install queue.
fn carry_sync(master: &Lab, backup: &Lab) -> usize {
    let mut message = MessageWriter::new(0, 1472);
    while let Some(entry) = master.sync.outgoing.pop() {
        let conn = to_wire(&entry, master.pipeline.snapshot(), 100).unwrap();
        assert!(message.push(&conn));
    }
    let mut n = 0;
    for conn in xvs_sync::decode(message.bytes(), 0).unwrap() {
        let install = to_install(&conn.unwrap(), backup.pipeline.snapshot()).unwrap();
        backup.sync.install.push(install).unwrap();
        n += 1;
    }
    n
}

/// A connection the master forwards reaches a backup through sync; the backup then carries
/// its mid-flow packets to the same real server by the same method, where a fresh director
/// would drop them (no SYN) or, for a new flow, pick the other server (rr).
fn backup_carries_a_synced_connection(method: ForwardMethod) {
    let mut master = Lab::new(method, "rr", Protocol::Tcp);
    let mut backup = Lab::new(method, "rr", Protocol::Tcp);
    master
        .sync
        .master
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // rr: a first connection takes server 0, ours server 1.
    master.run(
        &tcp(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, 39999), (VIP, 80), "S"),
        0,
    );
    let ours = |flags| tcp(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, 40000), (VIP, 80), flags);
    for flags in ["S", "A"] {
        master.run(&ours(flags), 0);
        assert!(
            master.sync.outgoing.is_empty(),
            "not due before the 3rd packet"
        );
    }
    let (_, on_master) = master.run(&ours("A"), 0);
    assert_eq!(
        carry_sync(&master, &backup),
        1,
        "due at the 3rd input packet (ESTABLISHED)"
    );
    assert_eq!(backup.pipeline.install_synced(), 1);
    assert_eq!(backup.load(1), (1, 0, 0), "ActiveConn on the same server");
    let (verdict, on_backup) = backup.run(&ours("A"), 0);
    assert!(matches!(verdict, Verdict::Transmit { .. }), "{verdict:?}");
    let (m, b) = (parse_back(&on_master), parse_back(&on_backup));
    assert_eq!(
        (
            b.eth.destination,
            b.ip.destination,
            b.tcp.as_ref().unwrap().destination_port
        ),
        (
            m.eth.destination,
            m.ip.destination,
            m.tcp.as_ref().unwrap().destination_port
        ),
        "same real server, same method"
    );
    assert_eq!(b.eth.destination, RS_MACS[1]);
    if method == ForwardMethod::Masq {
        assert_eq!(b.ip.destination, rs_ip(method, 1).octets());
        // The real server's reply through the backup is translated back from the VIP.
        let reply = tcp(
            RS_MACS[1],
            INTERNAL_MAC,
            (rs_ip(method, 1).octets(), 8080),
            (CLIENT, 40000),
            "A",
        );
        let (verdict, out) = backup.run(&reply, 1);
        assert_eq!(verdict, Verdict::Transmit { port: 0 });
        let p = parse_back(&out);
        assert_eq!((p.ip.source, p.tcp.unwrap().source_port), (VIP, 80));
    }
}

#[test]
fn a_dr_backup_carries_a_synced_connection_to_the_same_real_server() {
    backup_carries_a_synced_connection(ForwardMethod::Route);
}

#[test]
fn a_nat_backup_carries_a_synced_connection_both_ways() {
    backup_carries_a_synced_connection(ForwardMethod::Masq);
}

#[test]
fn a_backup_refuses_entries_it_cannot_serve_as_the_master_did() {
    use xvs_dataplane::sync::Reject;
    use xvs_sync::wire::flags;
    let mut master = Lab::new(ForwardMethod::Route, "rr", Protocol::Tcp);
    let backup = Lab::new(ForwardMethod::Route, "rr", Protocol::Tcp);
    master
        .sync
        .master
        .store(true, std::sync::atomic::Ordering::Relaxed);
    for f in ["S", "A", "A"] {
        master.run(
            &tcp(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, 40000), (VIP, 80), f),
            0,
        );
    }
    let entry = master.sync.outgoing.pop().unwrap();
    let conn = to_wire(&entry, master.pipeline.snapshot(), 100).unwrap();
    assert_eq!(conn.flags, flags::DROUTE | flags::NOOUTPUT);
    assert_eq!(
        (conn.state, conn.timeout),
        (1, 900),
        "ESTABLISHED, its full timeout"
    );
    let snapshot = backup.pipeline.snapshot();
    let mut tunnel = conn.clone();
    tunnel.flags = flags::TUNNEL;
    assert_eq!(to_install(&tunnel, snapshot), Err(Reject::MethodMismatch));
    let mut other_port = conn.clone();
    other_port.vport = 81;
    assert_eq!(to_install(&other_port, snapshot), Err(Reject::NoService));
    let mut other_rs = conn.clone();
    other_rs.daddr = IpAddr::V4(Ipv4Addr::new(192, 168, 0, 99));
    assert_eq!(to_install(&other_rs, snapshot), Err(Reject::NoDest));
    // IPv6 entries install against IPv6 services, and this backup has none.
    let mut v6 = conn.clone();
    v6.caddr = "2001:db8::1".parse().unwrap();
    v6.vaddr = "2001:db8::80".parse().unwrap();
    v6.daddr = "2001:db8::50".parse().unwrap();
    assert_eq!(to_install(&v6, snapshot), Err(Reject::NoService));
    assert!(to_install(&conn, snapshot).is_ok());
}

/// What a worker counted, compared between two pipelines (the real-server cells in use).
fn counted(c: &WorkerCounters) -> String {
    format!(
        "{:?} {:?} {:?} rx {:?} tx {:?} icmp {:?} local {:?}",
        &c.dests[..4],
        c.drops,
        c.refused,
        c.rx_frames,
        c.tx_frames,
        c.icmp_sent,
        c.local_delivered
    )
}

/// The batch path (whose established flows take the fast path) and the one-frame path give
/// the same verdict, the same frame, the same counters and the same connection state for
/// every frame of whole conversations, in every method, TCP and UDP.
#[test]
fn batches_and_single_frames_agree() {
    let client = |port: u16| (CLIENT, port);
    for method in [
        ForwardMethod::Route,
        ForwardMethod::Masq,
        ForwardMethod::Tunnel,
    ] {
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            let mut single = Lab::new(method, "rr", protocol);
            let mut batched = Lab::new(method, "rr", protocol);
            // Three clients' conversations, interleaved; a malformed frame and an
            // option-carrying one among them.
            let mut frames = Vec::new();
            for round in ["S", "A", "A", "PA", "A", "FA", "A", "A"] {
                for port in [40000u16, 40001, 40002] {
                    let frame = match protocol {
                        Protocol::Tcp => {
                            let flags = round.replace('P', "");
                            tcp(CLIENT_MAC, DIRECTOR_MAC, client(port), (VIP, 80), &flags)
                        }
                        _ => udp(client(port), (VIP, 80)),
                    };
                    frames.push(frame);
                }
            }
            let mut truncated = frames[3].clone();
            truncated.truncate(30);
            frames.insert(5, truncated);
            let mut bad_checksum = frames[4].clone();
            bad_checksum[24] ^= 0xff;
            frames.insert(9, bad_checksum);
            for chunk in frames.chunks(7) {
                let expected: Vec<_> = chunk.iter().map(|f| single.run(f, 0)).collect();
                let mut bufs: Vec<Vec<u8>> = chunk
                    .iter()
                    .map(|f| {
                        let mut buf = vec![0u8; HEADROOM + f.len() + 64];
                        buf[HEADROOM..HEADROOM + f.len()].copy_from_slice(f);
                        buf
                    })
                    .collect();
                let mut batch: Vec<Frame<'_>> = bufs
                    .iter_mut()
                    .zip(chunk)
                    .map(|(buf, f)| Frame::new(buf, HEADROOM, f.len()).unwrap())
                    .collect();
                let mut verdicts = vec![Verdict::Drop; batch.len()];
                batched.pipeline.process_batch(&mut batch, 0, &mut verdicts);
                for (i, (frame, verdict)) in batch.iter().zip(&verdicts).enumerate() {
                    assert_eq!(
                        (*verdict, frame.data().to_vec()),
                        expected[i],
                        "{method:?} {protocol:?} frame {i}"
                    );
                    if let Verdict::Transmit { .. } = verdict {
                        parse_back(frame.data());
                    }
                }
                assert_eq!(
                    counted(&batched.counters),
                    counted(&single.counters),
                    "{method:?} {protocol:?}"
                );
                assert_eq!(
                    (batched.load(0), batched.load(1)),
                    (single.load(0), single.load(1))
                );
            }
            assert!(
                batched
                    .counters
                    .tx_frames
                    .load(std::sync::atomic::Ordering::Relaxed)
                    >= 20
            );
        }
    }
}

impl Lab {
    /// The same service with its real servers added in the other order (another director's
    /// `xvsadm -a` sequence).
    fn reverse_dests(&mut self) {
        let addr = service_addr(Protocol::Tcp, 80);
        let dests = self.table.service(&addr).unwrap().dests.clone();
        for d in &dests {
            self.table.delete_dest(&addr, d.addr, d.port).unwrap();
        }
        for d in dests.iter().rev() {
            self.table.add_dest(&addr, *d).unwrap();
        }
        self.rebuild();
    }

    fn set_sloppy_tcp(&mut self, sloppy: bool) {
        let addr = service_addr(Protocol::Tcp, 80);
        let service = self.table.services.iter_mut().find(|s| s.addr == addr);
        service.unwrap().sloppy_tcp = sloppy;
        self.rebuild();
    }
}

/// Scale-out: a flow ECMP moves from one director to another arrives there mid-flow. Under
/// sloppy_tcp an mh service schedules it by the same table and it reaches the real server
/// the first director chose, although the second one has its servers in another order;
/// the entry it opens is ESTABLISHED (IPVS: an ACK on a new entry). RSTs still open nothing.
#[test]
fn sloppy_tcp_sends_a_moved_mh_flow_to_the_same_real_server() {
    let mut first = Lab::new(ForwardMethod::Route, "mh", Protocol::Tcp);
    let mut second = Lab::new(ForwardMethod::Route, "mh", Protocol::Tcp);
    second.reverse_dests();
    let addr = service_addr(Protocol::Tcp, 80);
    assert_ne!(
        first.table.service(&addr).unwrap().dests[0].addr,
        second.table.service(&addr).unwrap().dests[0].addr
    );
    // Without sloppy_tcp the moved flow's ACK is dropped, as IPVS does. Clients differ by
    // address: mh without mh-port hashes the client address alone.
    let client = |k: u8| [192, 168, 1, k];
    let segment = |k: u8, flags: &str| {
        tcp(
            CLIENT_MAC,
            DIRECTOR_MAC,
            (client(k), 41000),
            (VIP, 80),
            flags,
        )
    };
    assert_eq!(second.run(&segment(1, "A"), 0).0, Verdict::Drop);
    assert_eq!(second.counters.drops_of(Drop::NoConnection), 1);
    second.set_sloppy_tcp(true);
    let mut servers_seen = std::collections::BTreeSet::new();
    for k in 1..=64 {
        let (verdict, out) = first.run(&segment(k, "S"), 0);
        assert_eq!(verdict, Verdict::Transmit { port: 0 });
        let chosen = parse_back(&out).eth.destination;
        servers_seen.insert(chosen);
        let ack = segment(k, "A");
        let (verdict, out) = second.run(&ack, 0);
        assert_eq!(verdict, Verdict::Transmit { port: 0 }, "client {k}");
        let p = parse_back(&out);
        assert_eq!(p.eth.destination, chosen, "client {k}: same real server");
        assert_eq!(p.eth.source, DIRECTOR_MAC);
        assert_eq!(&out[14..], &ack[14..], "DR leaves the IP packet as it was");
    }
    assert_eq!(servers_seen.len(), 2, "both real servers had flows");
    let (active, inactive, _) = (0..2).fold((0, 0, 0), |acc, i| {
        let (a, b, c) = second.load(i);
        (acc.0 + a, acc.1 + b, acc.2 + c)
    });
    assert_eq!((active, inactive), (64, 0), "opened as ESTABLISHED");
    // An RST of an unknown flow opens nothing, even under sloppy_tcp.
    let rst = tcp(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, 42000), (VIP, 80), "R");
    assert_eq!(second.run(&rst, 0).0, Verdict::Drop);
    assert_eq!(second.counters.drops_of(Drop::NoConnection), 2);
}

/// The global switch (IPVS's sysctl, `[options] sloppy_tcp`) does the same for every service.
#[test]
fn the_global_sloppy_tcp_option_opens_mid_flow_packets_too() {
    let mut lab = Lab::new(ForwardMethod::Route, "mh", Protocol::Tcp);
    let ack = tcp(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, 43000), (VIP, 80), "A");
    assert_eq!(lab.run(&ack, 0).0, Verdict::Drop);
    let table = lab.pipeline.shard().table().clone();
    table.set_options(xvs_conntrack::Options {
        sloppy_tcp: true,
        ..table.options()
    });
    assert_eq!(lab.run(&ack, 0).0, Verdict::Transmit { port: 0 });
    assert_eq!(lab.load(0).0 + lab.load(1).0, 1);
}

/// Found by fuzzing (fuzz/, target `pipeline`): bytes after the datagram beyond the 60-byte
/// Ethernet minimum were forwarded with it, on the full path and on the established fast
/// path alike.
#[test]
fn bytes_after_the_datagram_are_not_forwarded() {
    for method in [ForwardMethod::Route, ForwardMethod::Masq] {
        let mut lab = Lab::new(method, "rr", Protocol::Tcp);
        let ingress = 0;
        for flags in ["S", "A", "A"] {
            let mut frame = tcp(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, 40000), (VIP, 80), flags);
            let datagram_end = frame.len();
            frame.extend_from_slice(&[0xee; 300]);
            let (verdict, out) = lab.run(&frame, ingress);
            assert!(
                matches!(verdict, Verdict::Transmit { .. }),
                "{method:?} {flags}"
            );
            assert_eq!(out.len(), datagram_end, "{method:?} {flags}");
            parse_back(&out);
        }
    }
}
