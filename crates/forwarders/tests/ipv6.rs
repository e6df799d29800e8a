//! The IPv6 rewrites (DR, NAT, TUN 6in6 / 4in6 / 6in4) and the ICMPv6 errors the director
//! answers with, each produced frame parsed back with etherparse and every header field and
//! checksum recomputed by it.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};

use common::*;
use etherparse::{
    EtherType, Ethernet2Header, IpNumber, Ipv4Header, Ipv6Header, NetSlice, PacketBuilder,
    SlicedPacket, TransportSlice,
};
use proptest::prelude::*;
use xvs_forwarders::tun::{self, Tunnel, Tunnel6};
use xvs_forwarders::{Frame, L4, Reason, Transmit, dr, nat, parse, parse6};

const CLIENT6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0xc1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7,
];
const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const RS6: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x21];
const DIRECTOR6: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const HEADROOM: usize = 64;

/// A UMEM-like chunk with `HEADROOM` bytes before an Ethernet/IPv6 frame from the client.
fn chunk6(udp: bool, hop_limit: u8, payload: &[u8]) -> (Vec<u8>, usize) {
    let ip = PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_IN_MAC).ipv6(CLIENT6, VIP6, hop_limit);
    let mut frame = Vec::new();
    if udp {
        ip.udp(40001, 53).write(&mut frame, payload).unwrap();
    } else {
        ip.tcp(40000, 80, 11, 2048)
            .ack(22)
            .psh()
            .write(&mut frame, payload)
            .unwrap();
    }
    let len = frame.len();
    let mut chunk = vec![0u8; HEADROOM];
    chunk.extend(frame);
    chunk.extend([0u8; 2048]);
    (chunk, len)
}

/// etherparse's verdict on the transport checksum of an IPv6 packet slice.
fn check_v6_transport(ip_bytes: &[u8]) -> (Ipv6Header, TransportSlice<'_>) {
    let sliced = SlicedPacket::from_ip(ip_bytes).unwrap();
    let Some(NetSlice::Ipv6(ip)) = &sliced.net else {
        panic!("not IPv6")
    };
    let header = ip.header().to_header();
    let transport = sliced.transport.clone().expect("transport");
    match &transport {
        TransportSlice::Tcp(tcp) => assert_eq!(
            tcp.checksum(),
            tcp.to_header()
                .calc_checksum_ipv6(&header, tcp.payload())
                .unwrap(),
            "TCP checksum"
        ),
        TransportSlice::Udp(udp) => {
            assert_ne!(udp.checksum(), 0);
            assert_eq!(
                udp.checksum(),
                udp.to_header()
                    .calc_checksum_ipv6(&header, udp.payload())
                    .unwrap(),
                "UDP checksum"
            )
        }
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

fn ethernet(frame: &[u8]) -> Ethernet2Header {
    Ethernet2Header::from_slice(frame).unwrap().0
}

#[test]
fn dr_rewrites_only_the_macs() {
    for udp in [false, true] {
        let (mut chunk, len) = chunk6(udp, 64, b"dr payload");
        let before = chunk[HEADROOM + 14..HEADROOM + len].to_vec();
        let mut frame = Frame::new(&mut chunk, HEADROOM, len).unwrap();
        let view = parse6(&frame).unwrap();
        assert_eq!(
            dr::forward_v6(&mut frame, &view, &to_real_server(1500)),
            Ok(Transmit::Forward)
        );
        let out = frame.data();
        let eth = ethernet(out);
        assert_eq!(
            (eth.source, eth.destination),
            (DIRECTOR_OUT_MAC, REAL_SERVER_MAC)
        );
        assert_eq!(eth.ether_type, EtherType::IPV6);
        assert_eq!(
            &out[14..],
            &before[..],
            "datagram unchanged, hop limit included"
        );
        let (ip, _) = check_v6_transport(&out[14..]);
        assert_eq!(ip.hop_limit, 64);
    }
}

#[test]
fn nat_inbound_and_outbound_translate_and_keep_checksums() {
    for udp in [false, true] {
        let (mut chunk, len) = chunk6(udp, 64, b"nat payload!");
        let mut frame = Frame::new(&mut chunk, HEADROOM, len).unwrap();
        let view = parse6(&frame).unwrap();
        let rs = SocketAddrV6::new(Ipv6Addr::from(RS6), 8080, 0, 0);
        assert_eq!(
            nat::rewrite_inbound_v6(&mut frame, &view, rs, &to_real_server(1500)),
            Ok(Transmit::Forward)
        );
        let out = frame.data().to_vec();
        let eth = ethernet(&out);
        assert_eq!(
            (eth.source, eth.destination),
            (DIRECTOR_OUT_MAC, REAL_SERVER_MAC)
        );
        let (ip, transport) = check_v6_transport(&out[14..]);
        assert_eq!(
            (ip.source, ip.destination, ip.hop_limit),
            (CLIENT6, RS6, 63)
        );
        assert_eq!(
            ip.next_header,
            if udp { IpNumber::UDP } else { IpNumber::TCP }
        );
        let ports = match transport {
            TransportSlice::Tcp(t) => {
                assert_eq!((t.sequence_number(), t.acknowledgment_number()), (11, 22));
                (t.source_port(), t.destination_port())
            }
            TransportSlice::Udp(u) => (u.source_port(), u.destination_port()),
            _ => unreachable!(),
        };
        let client_port = if udp { 40001 } else { 40000 };
        assert_eq!(ports, (client_port, 8080));

        // The real server's answer, back through the director.
        let ip = PacketBuilder::ethernet2(REAL_SERVER_MAC, DIRECTOR_OUT_MAC).ipv6(RS6, CLIENT6, 64);
        let mut reply = Vec::new();
        if udp {
            ip.udp(8080, client_port)
                .write(&mut reply, b"answer")
                .unwrap();
        } else {
            ip.tcp(8080, client_port, 5, 1000)
                .ack(12)
                .write(&mut reply, b"answer")
                .unwrap();
        }
        let mut frame = Frame::whole(&mut reply);
        let view = parse6(&frame).unwrap();
        let vs = SocketAddrV6::new(Ipv6Addr::from(VIP6), if udp { 53 } else { 80 }, 0, 0);
        assert_eq!(
            nat::rewrite_outbound_v6(&mut frame, &view, vs, &to_client(1500)),
            Ok(Transmit::Forward)
        );
        let out = frame.data();
        let (ip, transport) = check_v6_transport(&out[14..]);
        assert_eq!(
            (ip.source, ip.destination, ip.hop_limit),
            (VIP6, CLIENT6, 63)
        );
        let src_port = match transport {
            TransportSlice::Tcp(t) => t.source_port(),
            TransportSlice::Udp(u) => u.source_port(),
            _ => unreachable!(),
        };
        assert_eq!(src_port, vs.port());
        assert_eq!(ethernet(out).destination, GATEWAY_MAC);
    }
}

/// Checks an ICMPv6 error built by the director: from `source` to the client, back to the
/// client's MAC, quoting the start of the original packet.
fn check_icmpv6_error(out: &[u8], source: [u8; 16], kind: u8, code: u8, rest: u32, quote: &[u8]) {
    let eth = ethernet(out);
    assert_eq!((eth.source, eth.destination), (DIRECTOR_IN_MAC, CLIENT_MAC));
    assert_eq!(eth.ether_type, EtherType::IPV6);
    let (ip, transport) = check_v6_transport(&out[14..]);
    assert_eq!((ip.source, ip.destination), (source, CLIENT6));
    assert_eq!(
        (ip.hop_limit, ip.traffic_class, ip.flow_label.value()),
        (64, 0, 0)
    );
    assert_eq!(usize::from(ip.payload_length), out.len() - 54);
    assert!(out.len() - 14 <= 1280);
    let TransportSlice::Icmpv6(icmp) = transport else {
        panic!("not ICMPv6")
    };
    let header = icmp.slice();
    assert_eq!((header[0], header[1]), (kind, code));
    assert_eq!(u32::from_be_bytes(header[4..8].try_into().unwrap()), rest);
    assert_eq!(&header[8..], &quote[..header.len() - 8]);
}

#[test]
fn nat_translates_behind_extension_headers() {
    let (mut chunk, len) = chunk6(false, 64, b"ext");
    // Hop-by-hop options (8 bytes, PadN) before TCP.
    let at = HEADROOM + 54;
    chunk.splice(at..at, [6u8, 0, 1, 4, 0, 0, 0, 0]);
    chunk[HEADROOM + 20] = 0;
    let payload_len = u16::from_be_bytes([chunk[HEADROOM + 18], chunk[HEADROOM + 19]]) + 8;
    chunk[HEADROOM + 18..HEADROOM + 20].copy_from_slice(&payload_len.to_be_bytes());
    let len = len + 8;
    let mut frame = Frame::new(&mut chunk, HEADROOM, len).unwrap();
    let view = parse6(&frame).unwrap();
    assert_eq!(view.l4_offset, 62);
    let rs = SocketAddrV6::new(Ipv6Addr::from(RS6), 8080, 0, 0);
    assert_eq!(
        nat::rewrite_inbound_v6(&mut frame, &view, rs, &to_real_server(1500)),
        Ok(Transmit::Forward)
    );
    let (ip, transport) = check_v6_transport(&frame.data()[14..]);
    assert_eq!((ip.destination, ip.hop_limit), (RS6, 63));
    let TransportSlice::Tcp(tcp) = transport else {
        panic!("not TCP")
    };
    assert_eq!((tcp.source_port(), tcp.destination_port()), (40000, 8080));
}

#[test]
fn nat_answers_hop_limit_and_packet_too_big() {
    let rs = SocketAddrV6::new(Ipv6Addr::from(RS6), 8080, 0, 0);
    let (mut chunk, len) = chunk6(false, 1, b"x");
    let original = chunk[HEADROOM + 14..HEADROOM + len].to_vec();
    let mut frame = Frame::new(&mut chunk, HEADROOM, len).unwrap();
    let view = parse6(&frame).unwrap();
    assert_eq!(
        nat::rewrite_inbound_v6(&mut frame, &view, rs, &to_real_server(1500)),
        Ok(Transmit::TimeExceededToSender)
    );
    check_icmpv6_error(frame.data(), VIP6, 3, 0, 0, &original);

    let payload = vec![0x5a; 1400];
    let (mut chunk, len) = chunk6(true, 64, &payload);
    let original = chunk[HEADROOM + 14..HEADROOM + len].to_vec();
    let mut frame = Frame::new(&mut chunk, HEADROOM, len).unwrap();
    let view = parse6(&frame).unwrap();
    assert_eq!(
        nat::rewrite_inbound_v6(&mut frame, &view, rs, &to_real_server(1400)),
        Ok(Transmit::FragmentationNeededToSender)
    );
    check_icmpv6_error(frame.data(), VIP6, 2, 0, 1400, &original);
    assert_eq!(frame.len(), 14 + 1280, "quote cut to the minimum MTU");
}

#[test]
fn packet_too_big_without_headroom_shifts_the_quote() {
    let (chunk, len) = chunk6(false, 64, &[1u8; 1300]);
    let mut buf = chunk[HEADROOM..].to_vec();
    let original = buf[14..len].to_vec();
    let mut frame = Frame::new(&mut buf, 0, len).unwrap();
    let view = parse6(&frame).unwrap();
    assert_eq!(
        dr::forward_v6(&mut frame, &view, &to_real_server(1280)),
        Ok(Transmit::FragmentationNeededToSender)
    );
    assert_eq!(frame.start(), 0);
    check_icmpv6_error(frame.data(), VIP6, 2, 0, 1280, &original);
    // Neither headroom nor tailroom: a packet too big for 1280 always leaves room for the
    // 1294-byte error in its own bytes.
    let mut tight = chunk[HEADROOM..HEADROOM + len].to_vec();
    let mut frame = Frame::whole(&mut tight);
    let view = parse6(&frame).unwrap();
    assert_eq!(
        dr::forward_v6(&mut frame, &view, &to_real_server(1280)),
        Ok(Transmit::FragmentationNeededToSender)
    );
    check_icmpv6_error(frame.data(), VIP6, 2, 0, 1280, &original);
}

#[test]
fn tunnel_6in6_wraps_the_packet() {
    let (mut chunk, len) = chunk6(false, 64, b"tunnelled");
    let inner_before = chunk[HEADROOM + 14..HEADROOM + len].to_vec();
    let mut frame = Frame::new(&mut chunk, HEADROOM, len).unwrap();
    let view = parse6(&frame).unwrap();
    let tunnel = Tunnel6 {
        source: Ipv6Addr::from(DIRECTOR6),
        real_server: Ipv6Addr::from(RS6),
    };
    assert_eq!(
        tun::encapsulate_6in6(&mut frame, &view, &tunnel, &to_real_server(1500)),
        Ok(Transmit::Forward)
    );
    assert_eq!(frame.start(), HEADROOM - 40);
    let out = frame.data();
    let eth = ethernet(out);
    assert_eq!(
        (eth.destination, eth.ether_type),
        (REAL_SERVER_MAC, EtherType::IPV6)
    );
    let (outer, rest) = Ipv6Header::from_slice(&out[14..]).unwrap();
    assert_eq!((outer.source, outer.destination), (DIRECTOR6, RS6));
    assert_eq!(outer.next_header, IpNumber::IPV6);
    assert_eq!((outer.hop_limit, outer.flow_label.value()), (63, 0));
    assert_eq!(usize::from(outer.payload_length), inner_before.len());
    let (inner, _) = check_v6_transport(rest);
    assert_eq!(
        (inner.source, inner.destination, inner.hop_limit),
        (CLIENT6, VIP6, 63)
    );
    assert_eq!(
        &rest[8..],
        &inner_before[8..],
        "only the hop limit changed inside"
    );
}

#[test]
fn tunnel_6in4_wraps_the_packet_in_ipv4() {
    let (mut chunk, len) = chunk6(true, 64, b"six in four");
    let mut frame = Frame::new(&mut chunk, HEADROOM, len).unwrap();
    let view = parse6(&frame).unwrap();
    let tunnel = Tunnel {
        source: Ipv4Addr::from(DIRECTOR),
        real_server: Ipv4Addr::from(REAL_SERVER),
        ident: 0x7777,
    };
    assert_eq!(
        tun::encapsulate_6in4(&mut frame, &view, &tunnel, &to_real_server(1500)),
        Ok(Transmit::Forward)
    );
    let out = frame.data();
    assert_eq!(ethernet(out).ether_type, EtherType::IPV4);
    let (outer, rest) = Ipv4Header::from_slice(&out[14..]).unwrap();
    assert_eq!(outer.header_checksum, outer.calc_header_checksum());
    assert_eq!((outer.source, outer.destination), (DIRECTOR, REAL_SERVER));
    assert_eq!(outer.protocol, IpNumber::IPV6);
    assert_eq!((outer.time_to_live, outer.identification), (63, 0x7777));
    assert!(!outer.dont_fragment && !outer.more_fragments);
    assert_eq!(usize::from(outer.total_len), out.len() - 14);
    let (inner, _) = check_v6_transport(rest);
    assert_eq!(inner.hop_limit, 63);
}

#[test]
fn tunnel_4in6_wraps_an_ipv4_packet() {
    let mut chunk = vec![0u8; HEADROOM];
    let mut packet = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_IN_MAC)
        .ipv4(CLIENT, VIP, 64)
        .tcp(40000, 80, 1, 1024)
        .syn()
        .write(&mut packet, &[])
        .unwrap();
    let len = packet.len();
    chunk.extend(packet);
    let mut frame = Frame::new(&mut chunk, HEADROOM, len).unwrap();
    let view = parse(&frame).unwrap();
    let tunnel = Tunnel6 {
        source: Ipv6Addr::from(DIRECTOR6),
        real_server: Ipv6Addr::from(RS6),
    };
    assert_eq!(
        tun::encapsulate_4in6(&mut frame, &view, &tunnel, &to_real_server(1500)),
        Ok(Transmit::Forward)
    );
    let out = frame.data();
    assert_eq!(ethernet(out).ether_type, EtherType::IPV6);
    let (outer, rest) = Ipv6Header::from_slice(&out[14..]).unwrap();
    assert_eq!(outer.next_header, IpNumber::IPV4);
    assert_eq!(
        (outer.source, outer.destination, outer.hop_limit),
        (DIRECTOR6, RS6, 63)
    );
    assert_eq!(usize::from(outer.payload_length), rest.len());
    let inner = Ipv4Header::from_slice(rest).unwrap().0;
    assert_eq!(inner.header_checksum, inner.calc_header_checksum());
    assert_eq!(inner.time_to_live, 63);

    // Too big for the tunnel with DF: "fragmentation needed" with mtu - 40.
    let mut big = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_IN_MAC)
        .ipv4(CLIENT, VIP, 64)
        .tcp(40000, 80, 1, 1024)
        .write(&mut big, &[0u8; 1470])
        .unwrap();
    let len = big.len();
    let mut chunk = vec![0u8; HEADROOM];
    chunk.extend(big);
    let mut frame = Frame::new(&mut chunk, HEADROOM, len).unwrap();
    let view = parse(&frame).unwrap();
    assert_eq!(
        tun::encapsulate_4in6(&mut frame, &view, &tunnel, &to_real_server(1500)),
        Ok(Transmit::FragmentationNeededToSender)
    );
    let out = frame.data();
    let (ip, rest) = Ipv4Header::from_slice(&out[14..]).unwrap();
    assert_eq!((ip.source, ip.destination), (VIP, CLIENT));
    assert_eq!((rest[0], rest[1]), (3, 4));
    assert_eq!(u16::from_be_bytes([rest[6], rest[7]]), 1460);
}

#[test]
fn tunnel_too_big_answers_packet_too_big_with_the_inner_mtu() {
    let tunnel = Tunnel6 {
        source: Ipv6Addr::from(DIRECTOR6),
        real_server: Ipv6Addr::from(RS6),
    };
    let (mut chunk, len) = chunk6(false, 64, &[7u8; 1440]);
    let original = chunk[HEADROOM + 14..HEADROOM + len].to_vec();
    let mut frame = Frame::new(&mut chunk, HEADROOM, len).unwrap();
    let view = parse6(&frame).unwrap();
    assert_eq!(
        tun::encapsulate_6in6(&mut frame, &view, &tunnel, &to_real_server(1500)),
        Ok(Transmit::FragmentationNeededToSender)
    );
    check_icmpv6_error(frame.data(), VIP6, 2, 0, 1460, &original);

    // A link whose inner MTU would be below 1280 cannot carry the tunnel.
    let (mut chunk, len) = chunk6(false, 64, b"x");
    let mut frame = Frame::new(&mut chunk, HEADROOM, len).unwrap();
    let view = parse6(&frame).unwrap();
    assert_eq!(
        tun::encapsulate_6in6(&mut frame, &view, &tunnel, &to_real_server(1319)),
        Err(Reason::MtuTooSmall)
    );
    let v4 = Tunnel {
        source: Ipv4Addr::from(DIRECTOR),
        real_server: Ipv4Addr::from(REAL_SERVER),
        ident: 1,
    };
    assert_eq!(
        tun::encapsulate_6in4(&mut frame, &view, &v4, &to_real_server(1299)),
        Err(Reason::MtuTooSmall)
    );
    // No headroom: refused, frame unchanged.
    let before = frame.data().to_vec();
    let mut tight = before.clone();
    let mut frame = Frame::whole(&mut tight);
    assert_eq!(
        tun::encapsulate_6in6(&mut frame, &view, &tunnel, &to_real_server(1500)),
        Err(Reason::NoHeadroom)
    );
    assert_eq!(frame.data(), &before[..]);
}

#[test]
fn icmpv6_errors_are_never_answered() {
    // An ICMPv6 error with hop limit 1 is dropped, not answered.
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_IN_MAC)
        .ipv6(CLIENT6, VIP6, 1)
        .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu: 1280 })
        .write(&mut frame, &[0x60; 48])
        .unwrap();
    let mut f = Frame::whole(&mut frame);
    let view = parse6(&f).unwrap();
    assert!(view.is_icmp_error());
    assert!(matches!(view.l4, L4::Icmp { kind: 2, .. }));
    let tunnel = Tunnel6 {
        source: Ipv6Addr::from(DIRECTOR6),
        real_server: Ipv6Addr::from(RS6),
    };
    assert_eq!(
        tun::encapsulate_6in6(&mut f, &view, &tunnel, &to_real_server(1500)),
        Err(Reason::TtlExpired)
    );
    // NAT refuses ICMPv6 (its errors have their own rewrite).
    let rs = SocketAddrV6::new(Ipv6Addr::from(RS6), 80, 0, 0);
    assert_eq!(
        nat::rewrite_inbound_v6(&mut f, &view, rs, &to_real_server(1500)),
        Err(Reason::UnsupportedProtocol)
    );
}

proptest! {
    /// Every IPv6 entry point on mutated frames: never a panic, and a forwarded frame
    /// always parses back.
    #[test]
    fn rewrites_never_panic(udp: bool, edits in proptest::collection::vec((0usize..120, any::<u8>()), 0..4), mtu in 1200u16..1600, cut in 0usize..40) {
        let (mut chunk, len) = chunk6(udp, 64, &[3u8; 60]);
        for (at, byte) in edits {
            chunk[HEADROOM + at] = byte;
        }
        let len = len - cut.min(len);
        let rs = SocketAddrV6::new(Ipv6Addr::from(RS6), 8080, 0, 0);
        let tunnel = Tunnel6 { source: Ipv6Addr::from(DIRECTOR6), real_server: Ipv6Addr::from(RS6) };
        for method in 0..4 {
            let mut copy = chunk.clone();
            let mut frame = Frame::new(&mut copy, HEADROOM, len).unwrap();
            let Ok(view) = parse6(&frame) else { continue };
            let egress = to_real_server(mtu);
            let sent = match method {
                0 => dr::forward_v6(&mut frame, &view, &egress),
                1 => nat::rewrite_inbound_v6(&mut frame, &view, rs, &egress),
                2 => nat::rewrite_outbound_v6(&mut frame, &view, rs, &egress),
                _ => tun::encapsulate_6in6(&mut frame, &view, &tunnel, &egress),
            };
            if let Ok(Transmit::Forward) = sent {
                let out = frame.data();
                let ip = if method == 3 { &out[54..] } else { &out[14..] };
                prop_assert!(SlicedPacket::from_ip(ip).is_ok());
            }
        }
    }
}
