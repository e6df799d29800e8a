//! The pipeline's IPv6 path end to end in memory: frames built with etherparse, processed
//! (one by one and in batches), parsed back, every header field compared and every
//! checksum recomputed from scratch.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use etherparse::{
    EtherType, Ethernet2Header, IpNumber, Ipv6Header, NetSlice, PacketBuilder, SlicedPacket,
    TransportSlice,
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
use xvs_forwarders::{Frame, Reason};
use xvs_model::mark::MarkRule;

const HEADROOM: usize = 256;
const DIRECTOR_MAC: [u8; 6] = [2, 0xd, 0, 0, 0, 1];
const INTERNAL_MAC: [u8; 6] = [2, 0xd, 0, 0, 0, 2];
const CLIENT_MAC: [u8; 6] = [2, 0xc, 0, 0, 0, 1];
const RS_MACS: [[u8; 6]; 2] = [[2, 0x5, 0, 0, 0, 11], [2, 0x5, 0, 0, 0, 12]];

const VIP: [u8; 16] = ip6(0x2001_0db8_0000_0000, 0x100);
const CLIENT: [u8; 16] = ip6(0x2001_0db8_0000_0000, 0x50);
const DIRECTOR: [u8; 16] = ip6(0x2001_0db8_0000_0000, 0xa);
const VIP4: [u8; 4] = [192, 168, 0, 100];
const CLIENT4: [u8; 4] = [192, 168, 0, 50];

const fn ip6(high: u64, low: u64) -> [u8; 16] {
    ((high as u128) << 64 | low as u128).to_be_bytes()
}

/// Client `i` of the fwmark tests, each its own /128.
fn client(i: u8) -> [u8; 16] {
    ip6(0x2001_0db8_0000_0000, 0x50 + u64::from(i))
}

fn rs_ip(method: ForwardMethod, i: usize) -> [u8; 16] {
    match method {
        ForwardMethod::Masq => ip6(0xfd00_0000_0000_0000, 0x11 + i as u64),
        _ => ip6(0x2001_0db8_0000_0000, 0x11 + i as u64),
    }
}

/// Director, client and DR/TUN real servers on 2001:db8::/64 (and 192.168.0.0/24); NAT
/// real servers behind it on fd00::/64 (and 10.0.0.0/24).
fn routes() -> Routes {
    Routes {
        links: vec![
            Link {
                port: 0,
                name: "ext".into(),
                mac: DIRECTOR_MAC,
                mtu: 1500,
                nets: vec![(Ipv4Addr::new(192, 168, 0, 10), 24)],
                gateway: None,
                nets6: vec![("fe80::d".parse().unwrap(), 64), (DIRECTOR.into(), 64)],
                gateway6: None,
            },
            Link {
                port: 1,
                name: "int".into(),
                mac: INTERNAL_MAC,
                mtu: 1500,
                nets: vec![(Ipv4Addr::new(10, 0, 0, 1), 24)],
                gateway: None,
                nets6: vec![("fd00::1".parse().unwrap(), 64)],
                gateway6: None,
            },
        ],
    }
}

fn service6(protocol: Protocol, port: u16) -> ServiceAddr {
    ServiceAddr::Inet {
        protocol,
        addr: IpAddr::V6(VIP.into()),
        port,
    }
}

struct Lab {
    pipeline: Pipeline,
    counters: Arc<WorkerCounters>,
    resolve: Arc<ResolveQueue>,
    method: ForwardMethod,
}

impl Lab {
    /// `[VIP]:80` (and `[VIP]:53` over UDP) with two real servers using `method`, plus an
    /// IPv4 service VIP4:80 with DR real servers 192.168.0.11/12 (dual stack).
    fn new(method: ForwardMethod, scheduler: &str, persistence: Option<u8>) -> Lab {
        let mut neighbours = Neighbours::new();
        let rs_port = if method == ForwardMethod::Masq { 1 } else { 0 };
        for (i, mac) in RS_MACS.iter().enumerate() {
            neighbours.insert6(rs_port, rs_ip(method, i).into(), *mac);
            neighbours.insert(0, Ipv4Addr::new(192, 168, 0, 11 + i as u8), *mac);
        }
        neighbours.insert6(0, CLIENT.into(), CLIENT_MAC);
        let mut table = ServiceTableSpec::default();
        let real_port = |port| {
            if method == ForwardMethod::Masq {
                port + 8000
            } else {
                port
            }
        };
        for (protocol, port) in [(Protocol::Tcp, 80), (Protocol::Udp, 53)] {
            let mut service = ServiceSpec::new(service6(protocol, port));
            service.scheduler = scheduler.to_string();
            service.persistence = persistence.map(|prefix_len| PersistenceSpec {
                timeout_secs: 300,
                prefix_len,
            });
            table.add_service(service).unwrap();
            for i in 0..2 {
                let dest = DestSpec {
                    addr: IpAddr::V6(rs_ip(method, i).into()),
                    port: real_port(port),
                    method,
                    weight: 1,
                    upper_threshold: 0,
                    lower_threshold: 0,
                };
                table.add_dest(&service6(protocol, port), dest).unwrap();
            }
        }
        let v4 = ServiceAddr::Inet {
            protocol: Protocol::Tcp,
            addr: IpAddr::V4(VIP4.into()),
            port: 80,
        };
        table.add_service(ServiceSpec::new(v4)).unwrap();
        for i in 0..2 {
            let dest = DestSpec {
                addr: IpAddr::V4(Ipv4Addr::new(192, 168, 0, 11 + i as u8)),
                port: 80,
                method: ForwardMethod::Route,
                weight: 1,
                upper_threshold: 0,
                lower_threshold: 0,
            };
            table.add_dest(&v4, dest).unwrap();
        }
        Lab::with_table(method, &table, &[], neighbours)
    }

    /// The seeds' HTTP + HTTPS example over IPv6: TCP to `[VIP]` on 80 and 443 is mark 1,
    /// `-f 1 -6 -s rr -p 300 -M 128` serves it with two real servers on `rs_port` by
    /// `method`, and `[VIP]:8080` (unmarked) has its own service with real server 1.
    fn fwmark(method: ForwardMethod, rs_port: u16) -> Lab {
        let mark = ServiceAddr::Fwmark {
            mark: 1,
            ipv6: true,
        };
        let mut neighbours = Neighbours::new();
        let rs_link = if method == ForwardMethod::Masq { 1 } else { 0 };
        for (i, mac) in RS_MACS.iter().enumerate() {
            neighbours.insert6(rs_link, rs_ip(method, i).into(), *mac);
        }
        for i in 0..8 {
            neighbours.insert6(0, client(i).into(), CLIENT_MAC);
        }
        let mut table = ServiceTableSpec::default();
        let mut service = ServiceSpec::new(mark);
        service.scheduler = "rr".into();
        service.persistence = Some(PersistenceSpec {
            timeout_secs: 300,
            prefix_len: 128,
        });
        table.add_service(service).unwrap();
        let dest = |i, port| DestSpec {
            addr: IpAddr::V6(rs_ip(method, i).into()),
            port,
            method,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
        };
        for i in 0..2 {
            table.add_dest(&mark, dest(i, rs_port)).unwrap();
        }
        let web = service6(Protocol::Tcp, 8080);
        table.add_service(ServiceSpec::new(web)).unwrap();
        table.add_dest(&web, dest(1, 8080)).unwrap();
        let rule = MarkRule {
            mark: 1,
            protocol: Protocol::Tcp,
            destination: Ipv6Addr::from(VIP).to_string().parse().unwrap(),
            ports: ["80", "443"].iter().map(|p| p.parse().unwrap()).collect(),
        };
        Lab::with_table(method, &table, &[rule], neighbours)
    }

    fn with_table(
        method: ForwardMethod,
        table: &ServiceTableSpec,
        marks: &[MarkRule],
        neighbours: Neighbours,
    ) -> Lab {
        let mut builder = SnapshotBuilder::new();
        builder.set_mark_rules(marks);
        let snapshot = Arc::new(builder.build(table).unwrap());
        let (_conns, mut shards) = ConnTable::new(Config::new(1, 4096));
        let counters = Arc::new(WorkerCounters::default());
        counters.icmp.set_limits(Default::default(), 1);
        let resolve = Arc::new(ResolveQueue::new(64));
        let shared = Shared {
            snapshot,
            routes: Arc::new(routes()),
            neighbours: Arc::new(neighbours),
            counters: counters.clone(),
            resolve: resolve.clone(),
            tunnel_source: None,
            tunnel_source6: None,
            sync: Arc::new(SyncPort::default()),
            local: Default::default(),
        };
        let mut pipeline = Pipeline::new(0, shards.remove(0), shared);
        pipeline.set_clock(Clock {
            secs: 100,
            millis: 100_000,
        });
        Lab {
            pipeline,
            counters,
            resolve,
            method,
        }
    }

    /// Processes `packet` alone and returns the verdict and the frame after.
    fn run(&mut self, packet: &[u8], ingress: u8) -> (Verdict, Vec<u8>) {
        let mut buf = vec![0u8; HEADROOM + packet.len() + 64];
        buf[HEADROOM..HEADROOM + packet.len()].copy_from_slice(packet);
        let mut frame = Frame::new(&mut buf, HEADROOM, packet.len()).unwrap();
        let verdict = self.pipeline.process(&mut frame, ingress);
        (verdict, frame.data().to_vec())
    }

    /// Processes `packets` as one batch (the staged path).
    fn run_batch(&mut self, packets: &[Vec<u8>], ingress: u8) -> Vec<(Verdict, Vec<u8>)> {
        let mut bufs: Vec<Vec<u8>> = packets
            .iter()
            .map(|p| {
                let mut buf = vec![0u8; HEADROOM + p.len() + 64];
                buf[HEADROOM..HEADROOM + p.len()].copy_from_slice(p);
                buf
            })
            .collect();
        let mut frames: Vec<Frame<'_>> = bufs
            .iter_mut()
            .zip(packets)
            .map(|(buf, p)| Frame::new(buf, HEADROOM, p.len()).unwrap())
            .collect();
        let mut verdicts = vec![Verdict::Drop; frames.len()];
        self.pipeline
            .process_batch(&mut frames, ingress, &mut verdicts);
        verdicts
            .into_iter()
            .zip(frames.iter().map(|f| f.data().to_vec()))
            .collect()
    }

    fn drops(&self, why: Drop) -> u64 {
        self.counters.drops_of(why)
    }
}

fn tcp6(src: ([u8; 16], u16), dst: ([u8; 16], u16), flags: &str, payload: &[u8]) -> Vec<u8> {
    tcp6_from(CLIENT_MAC, DIRECTOR_MAC, src, dst, flags, payload)
}

fn tcp6_from(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: ([u8; 16], u16),
    dst: ([u8; 16], u16),
    flags: &str,
    payload: &[u8],
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv6(src.0, dst.0, 64)
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
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

fn udp6(src: ([u8; 16], u16), dst: ([u8; 16], u16), payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ipv6(src.0, dst.0, 64)
        .udp(src.1, dst.1);
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

/// The IPv6 header and transport of an IP packet, every transport checksum recomputed.
fn check_v6(ip_bytes: &[u8]) -> (Ipv6Header, TransportSlice<'_>) {
    let sliced = SlicedPacket::from_ip(ip_bytes).unwrap();
    let Some(NetSlice::Ipv6(ip)) = &sliced.net else {
        panic!("not IPv6")
    };
    let header = ip.header().to_header();
    assert_eq!(
        usize::from(header.payload_length) + 40,
        ip_bytes.len(),
        "payload length covers the datagram"
    );
    let transport = sliced.transport.clone().expect("transport");
    match &transport {
        TransportSlice::Tcp(tcp) => assert_eq!(
            tcp.checksum(),
            tcp.to_header()
                .calc_checksum_ipv6(&header, tcp.payload())
                .unwrap(),
            "TCP checksum"
        ),
        TransportSlice::Udp(udp) => assert_eq!(
            udp.checksum(),
            udp.to_header()
                .calc_checksum_ipv6(&header, udp.payload())
                .unwrap(),
            "UDP checksum"
        ),
        TransportSlice::Icmpv6(icmp) => assert_eq!(
            icmp.checksum(),
            icmp.icmp_type()
                .calc_checksum(header.source, header.destination, icmp.payload())
                .unwrap(),
            "ICMPv6 checksum"
        ),
        other => panic!("unexpected {other:?}"),
    }
    (header, transport)
}

/// The IPv6 header (checked as [`check_v6`] does) and the ICMPv6 message of an Ethernet
/// frame the pipeline sent.
fn icmpv6_of(frame: &[u8]) -> (Ipv6Header, etherparse::Icmpv6Slice<'_>) {
    let (ip, t) = check_v6(&frame[14..]);
    let TransportSlice::Icmpv6(icmp) = t else {
        panic!("not ICMPv6")
    };
    (ip, icmp)
}

fn eth(frame: &[u8]) -> Ethernet2Header {
    Ethernet2Header::from_slice(frame).unwrap().0
}

fn ports(t: &TransportSlice<'_>) -> (u16, u16) {
    match t {
        TransportSlice::Tcp(tcp) => (tcp.source_port(), tcp.destination_port()),
        TransportSlice::Udp(udp) => (udp.source_port(), udp.destination_port()),
        other => panic!("no ports in {other:?}"),
    }
}

fn payload<'a>(t: &TransportSlice<'a>) -> &'a [u8] {
    match t {
        TransportSlice::Tcp(tcp) => tcp.payload(),
        TransportSlice::Udp(udp) => udp.payload(),
        other => panic!("no payload in {other:?}"),
    }
}

#[test]
fn dr_rewrites_the_macs_only_and_keeps_the_connection_on_its_server() {
    let mut lab = Lab::new(ForwardMethod::Route, "rr", None);
    let syn = tcp6((CLIENT, 40000), (VIP, 80), "S", b"");
    let (verdict, out) = lab.run(&syn, 0);
    assert_eq!(verdict, Verdict::Transmit { port: 0 });
    let e = eth(&out);
    assert_eq!(
        (e.source, e.destination, e.ether_type),
        (DIRECTOR_MAC, RS_MACS[0], EtherType::IPV6)
    );
    assert_eq!(
        &out[14..],
        &syn[14..],
        "the datagram is untouched, hop limit included"
    );
    check_v6(&out[14..]);
    // The next client connection goes to the other server (rr); the first stays put.
    let (_, out) = lab.run(&tcp6((CLIENT, 40001), (VIP, 80), "S", b""), 0);
    assert_eq!(eth(&out).destination, RS_MACS[1]);
    for flags in ["A", "A", "FA"] {
        let (v, out) = lab.run(&tcp6((CLIENT, 40000), (VIP, 80), flags, b"data"), 0);
        assert_eq!(v, Verdict::Transmit { port: 0 });
        assert_eq!(eth(&out).destination, RS_MACS[0]);
    }
    let cells = &lab.counters.dests[0];
    assert_eq!(cells.conns.load(Ordering::Relaxed), 1);
    assert_eq!(cells.in_pkts.load(Ordering::Relaxed), 4);
    assert_eq!(
        cells.in_bytes.load(Ordering::Relaxed),
        (syn.len() - 14 + 3 * (syn.len() - 14 + 4)) as u64
    );
    // A stray ACK of no connection is no SYN: dropped and counted.
    let (v, _) = lab.run(&tcp6((CLIENT, 40009), (VIP, 80), "A", b""), 0);
    assert_eq!(v, Verdict::Drop);
    assert_eq!(lab.drops(Drop::NoConnection), 1);
    let (v, _) = lab.run(&tcp6((CLIENT, 40000), (VIP, 81), "S", b""), 0);
    assert_eq!(v, Verdict::Drop);
    assert_eq!(lab.drops(Drop::NotForUs), 1);
}

#[test]
fn nat_translates_both_ways_with_checksums_and_tracks_state() {
    let mut lab = Lab::new(ForwardMethod::Masq, "rr", None);
    let (v, out) = lab.run(&tcp6((CLIENT, 40000), (VIP, 80), "S", b""), 0);
    assert_eq!(v, Verdict::Transmit { port: 1 });
    let e = eth(&out);
    assert_eq!((e.source, e.destination), (INTERNAL_MAC, RS_MACS[0]));
    let (ip, t) = check_v6(&out[14..]);
    assert_eq!(
        (ip.source, ip.destination, ip.hop_limit),
        (CLIENT, rs_ip(lab.method, 0), 63)
    );
    assert_eq!(ip.next_header, IpNumber::TCP);
    assert_eq!(ports(&t), (40000, 8080));
    // The real server's SYN-ACK comes back on the internal port, from [RIP]:8080.
    let reply = tcp6_from(
        RS_MACS[0],
        INTERNAL_MAC,
        (rs_ip(lab.method, 0), 8080),
        (CLIENT, 40000),
        "SA",
        b"hello",
    );
    let (v, out) = lab.run(&reply, 1);
    assert_eq!(v, Verdict::Transmit { port: 0 });
    let e = eth(&out);
    assert_eq!((e.source, e.destination), (DIRECTOR_MAC, CLIENT_MAC));
    let (ip, t) = check_v6(&out[14..]);
    assert_eq!((ip.source, ip.destination, ip.hop_limit), (VIP, CLIENT, 63));
    assert_eq!(ports(&t), (80, 40000));
    assert_eq!(payload(&t), b"hello");
    let cells = &lab.counters.dests[0];
    assert_eq!(cells.out_pkts.load(Ordering::Relaxed), 1);
    // UDP to [VIP]:53 goes to port 8053, checksum recomputed.
    let (v, out) = lab.run(&udp6((CLIENT, 5000), (VIP, 53), b"query"), 0);
    assert_eq!(v, Verdict::Transmit { port: 1 });
    let (ip, t) = check_v6(&out[14..]);
    assert_eq!(ip.source, CLIENT);
    assert_eq!(ports(&t).1, 8053);
    assert_eq!(payload(&t), b"query");
}

#[test]
fn tun_wraps_ipv6_in_ipv6_from_the_egress_address() {
    let mut lab = Lab::new(ForwardMethod::Tunnel, "rr", None);
    let syn = udp6((CLIENT, 5000), (VIP, 53), b"tunnelled");
    let (v, out) = lab.run(&syn, 0);
    assert_eq!(v, Verdict::Transmit { port: 0 });
    let e = eth(&out);
    assert_eq!(
        (e.source, e.destination, e.ether_type),
        (DIRECTOR_MAC, RS_MACS[0], EtherType::IPV6)
    );
    let outer = Ipv6Header::from_slice(&out[14..]).unwrap().0;
    assert_eq!(
        (outer.source, outer.destination, outer.next_header),
        (DIRECTOR, rs_ip(lab.method, 0), IpNumber::IPV6)
    );
    assert_eq!(usize::from(outer.payload_length), syn.len() - 14);
    assert_eq!((outer.hop_limit, outer.flow_label.value()), (63, 0));
    let (inner, t) = check_v6(&out[54..]);
    assert_eq!(
        (inner.source, inner.destination, inner.hop_limit),
        (CLIENT, VIP, 63)
    );
    assert_eq!(ports(&t), (5000, 53));
    assert_eq!(payload(&t), b"tunnelled");
    // Past the tunnel's inner MTU (1500 - 40): Packet Too Big to the client, from the VIP,
    // carrying 1460, on the ingress port; rate limited per client like every error sent.
    let big = udp6((CLIENT, 5000), (VIP, 53), &[7u8; 1440]);
    let mut sent = 0;
    for _ in 0..10 {
        let (v, out) = lab.run(&big, 0);
        if v == Verdict::Drop {
            continue;
        }
        assert_eq!(v, Verdict::Transmit { port: 0 });
        sent += 1;
        let e = eth(&out);
        assert_eq!((e.source, e.destination), (DIRECTOR_MAC, CLIENT_MAC));
        let (ip, icmp) = icmpv6_of(&out);
        assert_eq!((ip.source, ip.destination), (VIP, CLIENT));
        assert_eq!(
            icmp.icmp_type(),
            etherparse::Icmpv6Type::PacketTooBig { mtu: 1460 }
        );
        assert_eq!(
            &icmp.payload()[..40],
            &big[14..54],
            "quotes the client's packet"
        );
    }
    assert_eq!(sent, 6, "a burst of six, then the rate limit");
    assert_eq!(lab.drops(Drop::IcmpRateLimited), 4);
    assert_eq!(lab.counters.icmp_sent.load(Ordering::Relaxed), 6);
}

/// A router's ICMPv6 error about `tunnelled` (one of our IPv6-in-IPv6 frames), sent back
/// to `to`, quoting as much as fits in 1280 bytes.
fn error_about_tunnel6(kind: etherparse::Icmpv6Type, tunnelled: &[u8], to: [u8; 16]) -> Vec<u8> {
    let router = ip6(0x2001_0db8_0000_0000, 0xfe);
    let quote = &tunnelled[14..tunnelled.len().min(14 + 1232)];
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(RS_MACS[0], DIRECTOR_MAC)
        .ipv6(router, to, 64)
        .icmpv6(kind)
        .write(&mut frame, quote)
        .unwrap();
    frame
}

#[test]
fn packet_too_big_about_a_tunnel_packet_reaches_the_client_from_the_vip() {
    use etherparse::Icmpv6Type;
    let mut lab = Lab::new(ForwardMethod::Tunnel, "rr", None);
    let big = tcp6((CLIENT, 40000), (VIP, 80), "S", &[7u8; 1400]);
    let (v, tunnelled) = lab.run(&big, 0);
    assert_eq!(v, Verdict::Transmit { port: 0 });
    // A router between the director and the real server passes only 1400 bytes.
    let error = error_about_tunnel6(Icmpv6Type::PacketTooBig { mtu: 1400 }, &tunnelled, DIRECTOR);
    let (v, out) = lab.run(&error, 0);
    assert_eq!(v, Verdict::Transmit { port: 0 });
    let e = eth(&out);
    assert_eq!((e.source, e.destination), (DIRECTOR_MAC, CLIENT_MAC));
    let (ip, icmp) = icmpv6_of(&out);
    assert_eq!((ip.source, ip.destination, ip.hop_limit), (VIP, CLIENT, 64));
    // 40 bytes smaller for the outer header, quoting the client's own packet (as it was in
    // the tunnel, one hop on).
    assert_eq!(icmp.icmp_type(), Icmpv6Type::PacketTooBig { mtu: 1360 });
    assert!(icmp.payload() == &tunnelled[54..14 + 1232], "the quote");
    assert_eq!(&icmp.payload()[8..40], &big[22..54], "client -> VIP");
    assert_eq!(lab.counters.icmp_sent.load(Ordering::Relaxed), 1);

    // Time exceeded on the way keeps its kind.
    let hop = Icmpv6Type::TimeExceeded(etherparse::icmpv6::TimeExceededCode::HopLimitExceeded);
    let (v, out) = lab.run(&error_about_tunnel6(hop, &tunnelled, DIRECTOR), 0);
    assert_eq!(v, Verdict::Transmit { port: 0 });
    let (ip, icmp) = icmpv6_of(&out);
    assert_eq!((ip.source, ip.destination), (VIP, CLIENT));
    assert_eq!(icmp.icmp_type(), hop);

    // A tunnel packet someone else sent is not ours, and a flow we do not know is nobody's.
    let mut foreign = tunnelled.clone();
    foreign[22..38].copy_from_slice(&ip6(0x2001_0db8_0000_0000, 0x99));
    let error = error_about_tunnel6(Icmpv6Type::PacketTooBig { mtu: 1400 }, &foreign, DIRECTOR);
    assert_eq!(lab.run(&error, 0).0, Verdict::Drop);
    let mut unknown = tunnelled.clone();
    unknown[54 + 40..54 + 42].copy_from_slice(&40001u16.to_be_bytes());
    let error = error_about_tunnel6(Icmpv6Type::PacketTooBig { mtu: 1400 }, &unknown, DIRECTOR);
    assert_eq!(lab.run(&error, 0).0, Verdict::Drop);
    assert_eq!(lab.drops(Drop::IcmpNoConnection), 2);

    // What the director tells clients is rate limited like every error it sends.
    let error = error_about_tunnel6(Icmpv6Type::PacketTooBig { mtu: 1400 }, &tunnelled, DIRECTOR);
    let sent = (0..10)
        .filter(|_| lab.run(&error, 0).0 != Verdict::Drop)
        .count();
    assert!(sent < 10, "{sent} of 10 sent");
    assert_eq!(lab.drops(Drop::IcmpRateLimited), 10 - sent as u64);
}

#[test]
fn icmpv6_errors_about_nat_connections_are_relayed_with_the_quote_rewritten() {
    let mut lab = Lab::new(ForwardMethod::Masq, "rr", None);
    let rip = rs_ip(lab.method, 0);
    lab.run(&tcp6((CLIENT, 40000), (VIP, 80), "S", b""), 0);
    // From the real-server side: a router says [RIP]:8080 is unreachable for client ->
    // RIP; the client must see it about its own packet to [VIP]:80, from the VIP.
    let quote = tcp6((CLIENT, 40000), (rip, 8080), "S", b"");
    let router: [u8; 16] = ip6(0xfd00_0000_0000_0000, 0xfe);
    let mut error = Vec::new();
    PacketBuilder::ethernet2(RS_MACS[1], INTERNAL_MAC)
        .ipv6(router, CLIENT, 64)
        .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu: 1400 })
        .write(&mut error, &quote[14..])
        .unwrap();
    let (v, out) = lab.run(&error, 1);
    assert_eq!(v, Verdict::Transmit { port: 0 });
    assert_eq!(eth(&out).destination, CLIENT_MAC);
    let (ip, icmp) = icmpv6_of(&out);
    assert_eq!((ip.source, ip.destination), (VIP, CLIENT));
    assert_eq!(
        icmp.icmp_type(),
        etherparse::Icmpv6Type::PacketTooBig { mtu: 1400 }
    );
    let quoted = Ipv6Header::from_slice(icmp.payload()).unwrap().0;
    assert_eq!((quoted.source, quoted.destination), (CLIENT, VIP));
    let quoted_ports = &icmp.payload()[40..44];
    assert_eq!(quoted_ports, &[0x9c, 0x40, 0, 80], "40000 -> 80");
    // From the client side about a reply [VIP]:80 -> client: to the real server, the quote
    // naming [RIP]:8080.
    let quote = tcp6((VIP, 80), (CLIENT, 40000), "SA", b"");
    let mut error = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ipv6(CLIENT, VIP, 64)
        .icmpv6(etherparse::Icmpv6Type::DestinationUnreachable(
            etherparse::icmpv6::DestUnreachableCode::Port,
        ))
        .write(&mut error, &quote[14..])
        .unwrap();
    let (v, out) = lab.run(&error, 0);
    assert_eq!(v, Verdict::Transmit { port: 1 });
    assert_eq!(eth(&out).destination, RS_MACS[0]);
    let (ip, icmp) = icmpv6_of(&out);
    assert_eq!((ip.source, ip.destination, ip.hop_limit), (CLIENT, rip, 63));
    let quoted = Ipv6Header::from_slice(icmp.payload()).unwrap().0;
    assert_eq!((quoted.source, quoted.destination), (rip, CLIENT));
    assert_eq!(
        &icmp.payload()[40..44],
        &[0x1f, 0x90, 0x9c, 0x40],
        "8080 -> 40000"
    );
    // An error about no connection is dropped and counted.
    let quote = tcp6((VIP, 80), (CLIENT, 49999), "SA", b"");
    let mut error = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ipv6(CLIENT, VIP, 64)
        .icmpv6(etherparse::Icmpv6Type::DestinationUnreachable(
            etherparse::icmpv6::DestUnreachableCode::Port,
        ))
        .write(&mut error, &quote[14..])
        .unwrap();
    assert_eq!(lab.run(&error, 0).0, Verdict::Drop);
    assert_eq!(lab.drops(Drop::IcmpNoConnection), 1);
}

#[test]
fn persistence_with_prefix_64_keeps_a_client_network_on_one_server() {
    let mut lab = Lab::new(ForwardMethod::Route, "rr", Some(64));
    let neighbour = |low: u64| ip6(0x2001_0db8_0000_0000, low);
    let mut servers = Vec::new();
    for (n, low) in [0x50u64, 0x51, 0x9999, 0x50].into_iter().enumerate() {
        let (v, out) = lab.run(
            &tcp6((neighbour(low), 40000 + n as u16), (VIP, 80), "S", b""),
            0,
        );
        assert_eq!(v, Verdict::Transmit { port: 0 });
        servers.push(eth(&out).destination);
    }
    assert!(
        servers.iter().all(|&m| m == servers[0]),
        "one /64, one server: {servers:?}"
    );
    // Another /64 is scheduled on its own (rr: the other server).
    let other = ip6(0x2001_0db8_0000_0001, 0x50);
    let (_, out) = lab.run(&tcp6((other, 40000), (VIP, 80), "S", b""), 0);
    assert_ne!(eth(&out).destination, servers[0]);
}

#[test]
fn an_unresolved_neighbour_is_queued_for_the_kernel_and_counted() {
    let mut lab = Lab::new(ForwardMethod::Masq, "rr", None);
    // No MAC for the client: the reply cannot leave until the kernel resolves it.
    lab.pipeline.set_neighbours(Arc::new({
        let mut n = Neighbours::new();
        n.insert6(1, rs_ip(lab.method, 0).into(), RS_MACS[0]);
        n.insert6(1, rs_ip(lab.method, 1).into(), RS_MACS[1]);
        n
    }));
    lab.run(&tcp6((CLIENT, 40000), (VIP, 80), "S", b""), 0);
    let reply = tcp6_from(
        RS_MACS[0],
        INTERNAL_MAC,
        (rs_ip(lab.method, 0), 8080),
        (CLIENT, 40000),
        "SA",
        b"",
    );
    assert_eq!(lab.run(&reply, 1).0, Verdict::Drop);
    assert_eq!(lab.drops(Drop::NeighbourUnresolved), 1);
    assert_eq!(lab.resolve.pop(), Some((0, IpAddr::V6(CLIENT.into()))));
    // No route at all (a global address off every link, no IPv6 gateway).
    let stranger = ip6(0x2001_0db8_0000_0777, 1);
    lab.run(&tcp6((stranger, 40000), (VIP, 80), "S", b""), 0);
    let reply = tcp6_from(
        RS_MACS[1],
        INTERNAL_MAC,
        (rs_ip(lab.method, 1), 8080),
        (stranger, 40000),
        "SA",
        b"",
    );
    assert_eq!(lab.run(&reply, 1).0, Verdict::Drop);
    assert_eq!(lab.drops(Drop::NoRoute), 1);
}

#[test]
fn fragments_bad_extension_chains_and_truncated_frames_are_counted_not_forwarded() {
    let mut lab = Lab::new(ForwardMethod::Route, "rr", None);
    let syn = tcp6((CLIENT, 40000), (VIP, 80), "S", b"");
    // A fragment header (first fragment, more to come) before TCP.
    let mut frag = syn.clone();
    frag.splice(54..54, [6u8, 0, 0, 1, 0, 0, 0, 42]);
    frag[20] = 44;
    let len = u16::from_be_bytes([frag[18], frag[19]]) + 8;
    frag[18..20].copy_from_slice(&len.to_be_bytes());
    assert_eq!(lab.run(&frag, 0).0, Verdict::Drop);
    // Hop-by-hop options before TCP: walked, and the SYN forwarded.
    let mut hbh = syn.clone();
    hbh.splice(54..54, [6u8, 0, 1, 4, 0, 0, 0, 0]);
    hbh[20] = 0;
    hbh[18..20].copy_from_slice(&len.to_be_bytes());
    let (v, out) = lab.run(&hbh, 0);
    assert_eq!(v, Verdict::Transmit { port: 0 });
    assert_eq!(&out[14..], &hbh[14..]);
    // Truncated, and an EtherType of IPv6 with an IPv4 header behind it.
    assert_eq!(lab.run(&syn[..50], 0).0, Verdict::Drop);
    let mut wrong = syn.clone();
    wrong[14] = 0x45;
    assert_eq!(lab.run(&wrong, 0).0, Verdict::Drop);
    let c = &lab.counters;
    assert_eq!(
        c.refused_of(Reason::FirstFragment),
        1,
        "fragments: the IPv4 policy"
    );
    assert_eq!(
        c.refused_of(Reason::Truncated) + c.refused_of(Reason::BadIpVersion),
        2
    );
    assert_eq!(lab.drops(Drop::Refused), 3);
    // Every prefix of a valid frame is refused or forwarded, never a panic.
    for cut in 0..syn.len() {
        let _ = lab.run(&syn[..cut], 0);
    }
}

#[test]
fn the_batch_path_serves_ipv6_and_ipv4_side_by_side() {
    let mut lab = Lab::new(ForwardMethod::Route, "rr", None);
    let v4 = |sport: u16, flags: &str| {
        let mut b = PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
            .ipv4(CLIENT4, VIP4, 64)
            .tcp(sport, 80, 1000, 64240);
        if flags.contains('S') {
            b = b.syn();
        } else {
            b = b.ack(1);
        }
        let mut out = Vec::new();
        b.write(&mut out, b"v4").unwrap();
        out
    };
    let batch = vec![
        tcp6((CLIENT, 40000), (VIP, 80), "S", b""),
        v4(50000, "S"),
        tcp6((CLIENT, 40001), (VIP, 80), "S", b""),
        udp6((CLIENT, 5000), (VIP, 53), b"q"),
    ];
    let out = lab.run_batch(&batch, 0);
    for (n, (v, frame)) in out.iter().enumerate() {
        assert_eq!(*v, Verdict::Transmit { port: 0 }, "frame {n}");
        assert_eq!(
            &frame[14..],
            &batch[n][14..],
            "DR leaves the datagram, frame {n}"
        );
    }
    assert_eq!(eth(&out[0].1).destination, RS_MACS[0]);
    assert_eq!(eth(&out[2].1).destination, RS_MACS[1]);
    assert_eq!(eth(&out[1].1).ether_type, EtherType::IPV4);
    // Established packets of both families in one batch keep their servers.
    let batch = vec![
        tcp6((CLIENT, 40001), (VIP, 80), "A", b"x"),
        v4(50000, "A"),
        tcp6((CLIENT, 40000), (VIP, 80), "A", b"y"),
    ];
    let out = lab.run_batch(&batch, 0);
    assert_eq!(eth(&out[0].1).destination, RS_MACS[1]);
    assert_eq!(eth(&out[2].1).destination, RS_MACS[0]);
    assert!(out.iter().all(|(v, _)| *v == Verdict::Transmit { port: 0 }));
    assert_eq!(lab.counters.tx_frames.load(Ordering::Relaxed), 7);
    assert_eq!(lab.counters.rx_frames.load(Ordering::Relaxed), 7);
}

/// Which real server (0 or 1) a client's SYN to `[VIP]:port` of the fwmark lab went to,
/// after checking every field of the forwarded frame for the lab's method.
fn open_marked(lab: &mut Lab, from: [u8; 16], sport: u16, port: u16, rs_port: u16) -> usize {
    let syn = tcp6((from, sport), (VIP, port), "S", b"hello");
    let (verdict, out) = lab.run(&syn, 0);
    let e = eth(&out);
    let server = RS_MACS
        .iter()
        .position(|m| *m == e.destination)
        .unwrap_or_else(|| panic!("{:?}: not to a real server: {verdict:?}", lab.method));
    let rs = rs_ip(lab.method, server);
    let wanted_port = if rs_port == 0 { port } else { rs_port };
    match lab.method {
        ForwardMethod::Route => {
            assert_eq!(
                (verdict, e.source),
                (Verdict::Transmit { port: 0 }, DIRECTOR_MAC)
            );
            assert_eq!(&out[14..], &syn[14..], "DR: the datagram is untouched");
        }
        ForwardMethod::Masq => {
            assert_eq!(
                (verdict, e.source),
                (Verdict::Transmit { port: 1 }, INTERNAL_MAC)
            );
            let (ip, t) = check_v6(&out[14..]);
            assert_eq!((ip.source, ip.destination, ip.hop_limit), (from, rs, 63));
            assert_eq!(ports(&t), (sport, wanted_port));
            assert_eq!(payload(&t), b"hello");
        }
        ForwardMethod::Tunnel => {
            assert_eq!(
                (verdict, e.source),
                (Verdict::Transmit { port: 0 }, DIRECTOR_MAC)
            );
            let outer = Ipv6Header::from_slice(&out[14..]).unwrap().0;
            assert_eq!(
                (outer.source, outer.destination, outer.next_header),
                (DIRECTOR, rs, IpNumber::IPV6)
            );
            assert_eq!(usize::from(outer.payload_length), syn.len() - 14);
            let (inner, t) = check_v6(&out[54..]);
            assert_eq!(
                (inner.source, inner.destination, inner.hop_limit),
                (from, VIP, 63)
            );
            assert_eq!(ports(&t), (sport, port));
        }
    }
    server
}

/// IPv6 fwmark services as IPv4's: a client's connections to 80 and 443 land on one real
/// server (persistence covers every port of the mark), clients spread over both, in every
/// forwarding method; an unmarked port finds its own address service.
#[test]
fn a_persistent_ipv6_mark_keeps_each_client_on_one_server_across_its_ports() {
    for method in [
        ForwardMethod::Route,
        ForwardMethod::Masq,
        ForwardMethod::Tunnel,
    ] {
        let mut lab = Lab::fwmark(method, 0);
        let mut seen = [0; 2];
        for c in 0..6 {
            let first = open_marked(&mut lab, client(c), 40000, 80, 0);
            for (sport, port) in [(40001, 443), (40002, 80)] {
                assert_eq!(
                    open_marked(&mut lab, client(c), sport, port, 0),
                    first,
                    "{method:?} client {c}: port {port}"
                );
            }
            seen[first] += 1;
        }
        assert_eq!(seen, [3, 3], "{method:?}: rr spreads the clients");
        let servers = &lab.pipeline.snapshot().services[0].servers;
        assert_eq!(
            (servers[0].load.persistent(), servers[1].load.persistent()),
            (3, 3),
            "one template per client"
        );
        // An established packet of a marked connection follows it (the fast path).
        let (v, out) = lab.run(&tcp6((client(0), 40001), (VIP, 443), "A", b"more"), 0);
        assert!(matches!(v, Verdict::Transmit { .. }), "{method:?}: {v:?}");
        let server = RS_MACS.iter().position(|m| *m == eth(&out).destination);
        assert_eq!(
            server,
            Some(open_marked(&mut lab, client(0), 40003, 443, 0))
        );
        // 8080 is marked by no rule: the `[VIP]:8080` service (real server 1) serves it, and
        // 22 is nobody's.
        if method == ForwardMethod::Route {
            for sport in 41000..41003 {
                let (_, out) = lab.run(&tcp6((client(7), sport), (VIP, 8080), "S", b""), 0);
                assert_eq!(eth(&out).destination, RS_MACS[1]);
            }
            let (v, _) = lab.run(&tcp6((client(7), 42000), (VIP, 22), "S", b""), 0);
            assert_eq!(v, Verdict::Drop);
            assert_eq!(lab.drops(Drop::NotForUs), 1);
        }
    }
}

/// NAT of an IPv6 fwmark service: port-0 real servers keep the packet's port and their
/// replies from it go back as the VIP's; a real server with a port takes every marked port.
#[test]
fn ipv6_mark_nat_keeps_the_port_for_port_0_servers_and_relays_replies() {
    let mut lab = Lab::fwmark(ForwardMethod::Masq, 0);
    for port in [80, 443] {
        let server = open_marked(&mut lab, client(2), 43000 + port, port, 0);
        let reply = tcp6_from(
            RS_MACS[server],
            INTERNAL_MAC,
            (rs_ip(ForwardMethod::Masq, server), port),
            (client(2), 43000 + port),
            "SA",
            b"hello",
        );
        let (v, out) = lab.run(&reply, 1);
        assert_eq!(v, Verdict::Transmit { port: 0 });
        let e = eth(&out);
        assert_eq!((e.source, e.destination), (DIRECTOR_MAC, CLIENT_MAC));
        let (ip, t) = check_v6(&out[14..]);
        assert_eq!(
            (ip.source, ip.destination, ip.hop_limit),
            (VIP, client(2), 63)
        );
        assert_eq!(ports(&t), (port, 43000 + port));
        assert_eq!(payload(&t), b"hello");
    }
    let mut lab = Lab::fwmark(ForwardMethod::Masq, 8443);
    for port in [80, 443] {
        open_marked(&mut lab, client(3), 44000 + port, port, 8443);
    }
}

/// A TUN real server of the other family, as IPVS allows for tunnels only: `[VIP]:80` with
/// IPv4 real server 192.168.0.11 (IPv6-in-IPv4) and `VIP4:80` with IPv6 real server
/// `rs_ip(Tunnel, 0)` (IPv4-in-IPv6), both tunnelled from the egress link's own address.
fn mixed_tun_lab() -> Lab {
    let rs4 = Ipv4Addr::new(192, 168, 0, 11);
    let rs6 = rs_ip(ForwardMethod::Tunnel, 0);
    let mut neighbours = Neighbours::new();
    neighbours.insert(0, rs4, RS_MACS[0]);
    neighbours.insert6(0, rs6.into(), RS_MACS[1]);
    neighbours.insert(0, CLIENT4.into(), CLIENT_MAC);
    neighbours.insert6(0, CLIENT.into(), CLIENT_MAC);
    let mut table = ServiceTableSpec::default();
    let tun = |addr| DestSpec {
        addr,
        port: 80,
        method: ForwardMethod::Tunnel,
        weight: 1,
        upper_threshold: 0,
        lower_threshold: 0,
    };
    let v6 = service6(Protocol::Tcp, 80);
    let v4 = ServiceAddr::Inet {
        protocol: Protocol::Tcp,
        addr: IpAddr::V4(VIP4.into()),
        port: 80,
    };
    table.add_service(ServiceSpec::new(v6)).unwrap();
    table.add_dest(&v6, tun(IpAddr::V4(rs4))).unwrap();
    table.add_service(ServiceSpec::new(v4)).unwrap();
    table.add_dest(&v4, tun(IpAddr::V6(rs6.into()))).unwrap();
    for method in [ForwardMethod::Route, ForwardMethod::Masq] {
        let refused = table.clone().add_dest(
            &v4,
            DestSpec {
                method,
                ..tun(IpAddr::V6(rs6.into()))
            },
        );
        assert!(
            refused.is_err(),
            "{method:?} to the other family is refused"
        );
    }
    Lab::with_table(ForwardMethod::Tunnel, &table, &[], neighbours)
}

fn tcp4(src: ([u8; 4], u16), dst: ([u8; 4], u16), flags: &str, payload: &[u8]) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ipv4(src.0, dst.0, 64)
        .tcp(src.1, dst.1, 1000, 64240);
    if flags.contains('S') {
        b = b.syn();
    }
    if flags.contains('A') {
        b = b.ack(1);
    }
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

#[test]
fn ipv6_reaches_an_ipv4_tun_real_server_inside_ipv4() {
    let mut lab = mixed_tun_lab();
    for (flags, body) in [("S", &b""[..]), ("A", b"data"), ("A", b"more")] {
        let packet = tcp6((CLIENT, 40000), (VIP, 80), flags, body);
        let (v, out) = lab.run(&packet, 0);
        for d in [
            Drop::NotForUs,
            Drop::NoConnection,
            Drop::DestRemoved,
            Drop::NoRoute,
            Drop::NeighbourUnresolved,
            Drop::Refused,
        ] {
            eprintln!("{d:?} {}", lab.drops(d));
        }
        assert_eq!(v, Verdict::Transmit { port: 0 }, "{flags}");
        let e = eth(&out);
        assert_eq!(
            (e.source, e.destination, e.ether_type),
            (DIRECTOR_MAC, RS_MACS[0], EtherType::IPV4)
        );
        let (outer, inner) = etherparse::Ipv4Header::from_slice(&out[14..]).unwrap();
        assert_eq!(outer.header_checksum, outer.calc_header_checksum());
        assert_eq!(
            (outer.source, outer.destination, outer.protocol),
            ([192, 168, 0, 10], [192, 168, 0, 11], IpNumber::IPV6)
        );
        assert_eq!(usize::from(outer.total_len), 20 + packet.len() - 14);
        assert_eq!((outer.time_to_live, outer.dont_fragment), (63, false));
        assert_eq!(
            outer.dscp.value() << 2 | outer.ecn.value(),
            0,
            "the inner traffic class"
        );
        let (ip, t) = check_v6(inner);
        assert_eq!((ip.source, ip.destination, ip.hop_limit), (CLIENT, VIP, 63));
        assert_eq!(ports(&t), (40000, 80));
        assert_eq!(payload(&t), body);
    }
    // Past the inner MTU (1500 - 20): Packet Too Big carrying 1480 to the client.
    let big = tcp6((CLIENT, 40000), (VIP, 80), "A", &[7u8; 1450]);
    let (v, out) = lab.run(&big, 0);
    assert_eq!(v, Verdict::Transmit { port: 0 });
    assert_eq!(eth(&out).destination, CLIENT_MAC);
    let (ip, icmp) = icmpv6_of(&out);
    assert_eq!((ip.source, ip.destination), (VIP, CLIENT));
    assert_eq!(
        icmp.icmp_type(),
        etherparse::Icmpv6Type::PacketTooBig { mtu: 1480 }
    );
}

#[test]
fn ipv4_reaches_an_ipv6_tun_real_server_inside_ipv6() {
    let mut lab = mixed_tun_lab();
    for (flags, body) in [("S", &b""[..]), ("A", b"data"), ("A", b"more")] {
        let packet = tcp4((CLIENT4, 40000), (VIP4, 80), flags, body);
        let (v, out) = lab.run(&packet, 0);
        assert_eq!(v, Verdict::Transmit { port: 0 }, "{flags}");
        let e = eth(&out);
        assert_eq!(
            (e.source, e.destination, e.ether_type),
            (DIRECTOR_MAC, RS_MACS[1], EtherType::IPV6)
        );
        let outer = Ipv6Header::from_slice(&out[14..]).unwrap().0;
        assert_eq!(
            (outer.source, outer.destination, outer.next_header),
            (DIRECTOR, rs_ip(ForwardMethod::Tunnel, 0), IpNumber::IPV4)
        );
        assert_eq!(usize::from(outer.payload_length), packet.len() - 14);
        assert_eq!((outer.hop_limit, outer.flow_label.value()), (63, 0));
        let (ip, rest) = etherparse::Ipv4Header::from_slice(&out[54..]).unwrap();
        assert_eq!(
            ip.header_checksum,
            ip.calc_header_checksum(),
            "inner checksum"
        );
        assert_eq!(
            (ip.source, ip.destination, ip.time_to_live),
            (CLIENT4, VIP4, 63)
        );
        let (tcp, data) = etherparse::TcpHeader::from_slice(rest).unwrap();
        assert_eq!(tcp.checksum, tcp.calc_checksum_ipv4(&ip, data).unwrap());
        assert_eq!(
            (tcp.source_port, tcp.destination_port, data),
            (40000, 80, body)
        );
    }
    // Past the inner MTU (1500 - 40) with DF: fragmentation needed carrying 1460.
    let mut big = tcp4((CLIENT4, 40000), (VIP4, 80), "A", &[7u8; 1440]);
    big[20] |= 0x40;
    let sum = {
        let (mut h, _) = etherparse::Ipv4Header::from_slice(&big[14..]).unwrap();
        h.dont_fragment = true;
        h.calc_header_checksum()
    };
    big[24..26].copy_from_slice(&sum.to_be_bytes());
    let (v, out) = lab.run(&big, 0);
    assert_eq!(v, Verdict::Transmit { port: 0 });
    assert_eq!(eth(&out).destination, CLIENT_MAC);
    let (ip, rest) = etherparse::Ipv4Header::from_slice(&out[14..]).unwrap();
    assert_eq!(ip.header_checksum, ip.calc_header_checksum());
    assert_eq!(
        (ip.source, ip.destination, ip.protocol),
        (VIP4, CLIENT4, IpNumber::ICMP)
    );
    assert_eq!((rest[0], rest[1]), (3, 4), "fragmentation needed");
    assert_eq!(u16::from_be_bytes([rest[6], rest[7]]), 1460);
}
