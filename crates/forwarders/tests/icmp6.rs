//! ICMPv6 errors about connections: the quoted flow read back, and the NAT relays rewriting
//! the outer and the quoted headers, checked with etherparse (every checksum recomputed).

mod common;

use std::net::{Ipv6Addr, SocketAddrV6};

use common::*;
use etherparse::{
    Icmpv6Type, IpNumber, Ipv6Header, NetSlice, PacketBuilder, SlicedPacket, TransportSlice,
};
use proptest::prelude::*;
use xvs_forwarders::icmp6::{self, QuotedFlow6};
use xvs_forwarders::{Frame, Reason, Transmit, parse6};

const CLIENT6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0xc1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7,
];
const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const RS6: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x21];
const ROUTER6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
];

/// An IPv6 TCP or UDP packet (no Ethernet), as the quoted packet was sent.
fn quoted(udp: bool, src: ([u8; 16], u16), dst: ([u8; 16], u16)) -> Vec<u8> {
    let ip = PacketBuilder::ipv6(src.0, dst.0, 60);
    let mut out = Vec::new();
    if udp {
        ip.udp(src.1, dst.1).write(&mut out, b"quoted udp").unwrap();
    } else {
        ip.tcp(src.1, dst.1, 100, 2000)
            .ack(5)
            .write(&mut out, b"quoted tcp")
            .unwrap();
    }
    out
}

/// An ICMPv6 error from `from` to `to` quoting `quote`.
fn error(kind: Icmpv6Type, from: [u8; 16], to: [u8; 16], quote: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(GATEWAY_MAC, DIRECTOR_IN_MAC)
        .ipv6(from, to, 64)
        .icmpv6(kind)
        .write(&mut out, quote)
        .unwrap();
    out
}

/// Parses `out` with etherparse, checks the ICMPv6 checksum, returns the outer header and
/// the quote.
fn icmpv6_parts(out: &[u8]) -> (Ipv6Header, Icmpv6Type, Vec<u8>) {
    let sliced = SlicedPacket::from_ethernet(out).unwrap();
    let Some(NetSlice::Ipv6(ip)) = &sliced.net else {
        panic!("not IPv6")
    };
    let header = ip.header().to_header();
    let Some(TransportSlice::Icmpv6(icmp)) = &sliced.transport else {
        panic!("not ICMPv6")
    };
    let expected = icmp
        .icmp_type()
        .calc_checksum(header.source, header.destination, icmp.payload())
        .unwrap();
    assert_eq!(icmp.checksum(), expected, "ICMPv6 checksum");
    (header, icmp.icmp_type(), icmp.payload().to_vec())
}

/// The quoted packet's addresses, ports and transport checksum verdict (None when cut).
fn quote_parts(quote: &[u8]) -> ([u8; 16], [u8; 16], u16, u16, Option<bool>) {
    let (header, rest) = Ipv6Header::from_slice(quote).unwrap();
    let ports = (
        u16::from_be_bytes([rest[0], rest[1]]),
        u16::from_be_bytes([rest[2], rest[3]]),
    );
    let verdict = SlicedPacket::from_ip(quote)
        .ok()
        .and_then(|s| match s.transport {
            Some(TransportSlice::Tcp(tcp)) => Some(
                tcp.checksum()
                    == tcp
                        .to_header()
                        .calc_checksum_ipv6(&header, tcp.payload())
                        .unwrap(),
            ),
            Some(TransportSlice::Udp(udp)) => Some(
                udp.checksum()
                    == udp
                        .to_header()
                        .calc_checksum_ipv6(&header, udp.payload())
                        .unwrap(),
            ),
            _ => None,
        });
    (header.source, header.destination, ports.0, ports.1, verdict)
}

fn unreachable_port() -> Icmpv6Type {
    Icmpv6Type::DestinationUnreachable(etherparse::icmpv6::DestUnreachableCode::Port)
}

#[test]
fn error_from_the_client_side_goes_to_the_real_server() {
    for udp in [false, true] {
        let quote = quoted(udp, (VIP6, 80), (CLIENT6, 40000));
        let mut frame = error(unreachable_port(), ROUTER6, VIP6, &quote);
        let mut frame = Frame::whole(&mut frame);
        let view = parse6(&frame).unwrap();
        let parsed = icmp6::parse_error_v6(&frame, &view).unwrap();
        assert_eq!((parsed.kind, parsed.code), (1, 4));
        assert_eq!(
            parsed.flow,
            QuotedFlow6 {
                protocol: if udp { 17 } else { 6 },
                src: SocketAddrV6::new(VIP6.into(), 80, 0, 0),
                dst: SocketAddrV6::new(CLIENT6.into(), 40000, 0, 0),
            }
        );
        let rs = SocketAddrV6::new(RS6.into(), 8080, 0, 0);
        assert_eq!(
            icmp6::rewrite_toward_real_server_v6(
                &mut frame,
                &view,
                &parsed,
                rs,
                &to_real_server(1500)
            ),
            Ok(Transmit::Forward)
        );
        let out = frame.data();
        let (outer, kind, quote) = icmpv6_parts(out);
        assert_eq!(
            (outer.source, outer.destination, outer.hop_limit),
            (ROUTER6, RS6, 63)
        );
        assert_eq!(outer.next_header, IpNumber::IPV6_ICMP);
        assert_eq!(kind, unreachable_port());
        assert_eq!(quote_parts(&quote), (RS6, CLIENT6, 8080, 40000, Some(true)));
        assert_eq!(&out[0..6], &REAL_SERVER_MAC);
    }
}

#[test]
fn error_from_the_real_server_side_goes_to_the_client() {
    let quote = quoted(false, (CLIENT6, 40000), (RS6, 8080));
    let kind = Icmpv6Type::PacketTooBig { mtu: 1400 };
    let mut frame = error(kind, ROUTER6, CLIENT6, &quote);
    let mut frame = Frame::whole(&mut frame);
    let view = parse6(&frame).unwrap();
    let parsed = icmp6::parse_error_v6(&frame, &view).unwrap();
    assert_eq!((parsed.kind, parsed.rest), (2, 1400));
    let vs = SocketAddrV6::new(VIP6.into(), 80, 0, 0);
    assert_eq!(
        icmp6::rewrite_toward_client_v6(&mut frame, &view, &parsed, vs, &to_client(1500)),
        Ok(Transmit::Forward)
    );
    let (outer, kind_out, quote) = icmpv6_parts(frame.data());
    assert_eq!((outer.source, outer.destination), (VIP6, CLIENT6));
    assert_eq!(kind_out, kind);
    assert_eq!(quote_parts(&quote), (CLIENT6, VIP6, 40000, 80, Some(true)));
}

#[test]
fn a_quote_cut_before_the_checksum_is_still_relayed() {
    let quote = quoted(false, (VIP6, 80), (CLIENT6, 40000));
    let cut = &quote[..48];
    let kind = Icmpv6Type::TimeExceeded(etherparse::icmpv6::TimeExceededCode::HopLimitExceeded);
    let mut frame = error(kind, ROUTER6, VIP6, cut);
    let mut frame = Frame::whole(&mut frame);
    let view = parse6(&frame).unwrap();
    let parsed = icmp6::parse_error_v6(&frame, &view).unwrap();
    let rs = SocketAddrV6::new(RS6.into(), 8080, 0, 0);
    icmp6::rewrite_toward_real_server_v6(&mut frame, &view, &parsed, rs, &to_real_server(1500))
        .unwrap();
    let (_, _, quote) = icmpv6_parts(frame.data());
    let (src, _, sport, _, _) = quote_parts(&quote);
    assert_eq!((src, sport), (RS6, 8080));
    assert_eq!(quote.len(), cut.len(), "the quote keeps its length");
}

#[test]
fn quoted_extension_headers_are_walked() {
    let mut quote = quoted(true, (VIP6, 53), (CLIENT6, 40001));
    // Destination options (8 bytes) before UDP.
    quote.splice(40..40, [17u8, 0, 1, 4, 0, 0, 0, 0]);
    quote[6] = 60;
    let len = u16::from_be_bytes([quote[4], quote[5]]) + 8;
    quote[4..6].copy_from_slice(&len.to_be_bytes());
    let mut frame = error(unreachable_port(), ROUTER6, VIP6, &quote);
    let frame = Frame::whole(&mut frame);
    let view = parse6(&frame).unwrap();
    let parsed = icmp6::parse_error_v6(&frame, &view).unwrap();
    assert_eq!(parsed.quote_l4_offset - parsed.quote_ip_offset, 48);
    assert_eq!(parsed.flow.dst.port(), 40001);
}

#[test]
fn refuses_what_it_cannot_relay() {
    let quote = quoted(false, (VIP6, 80), (CLIENT6, 40000));
    let check = |frame: &mut Vec<u8>| {
        let frame = Frame::whole(frame);
        let view = parse6(&frame).unwrap();
        icmp6::parse_error_v6(&frame, &view).map(|_| ())
    };
    let mut echo = Vec::new();
    PacketBuilder::ethernet2([2; 6], [3; 6])
        .ipv6(CLIENT6, VIP6, 64)
        .icmpv6_echo_request(1, 1)
        .write(&mut echo, b"hi")
        .unwrap();
    assert_eq!(check(&mut echo), Err(Reason::NotIcmpError));

    let mut bad = error(unreachable_port(), ROUTER6, VIP6, &quote);
    bad[70] ^= 0xff;
    assert_eq!(check(&mut bad), Err(Reason::BadIcmpChecksum));

    let mut short = error(unreachable_port(), ROUTER6, VIP6, &quote[..44]);
    assert_eq!(check(&mut short), Err(Reason::IcmpQuoteTruncated));
    let mut no_ip = error(unreachable_port(), ROUTER6, VIP6, &quote[..30]);
    assert_eq!(check(&mut no_ip), Err(Reason::IcmpQuoteTruncated));

    let mut fragment = quote.clone();
    fragment.splice(40..40, [6u8, 0, 0, 8, 0, 0, 0, 1]);
    fragment[6] = 44;
    let mut later = error(unreachable_port(), ROUTER6, VIP6, &fragment);
    assert_eq!(check(&mut later), Err(Reason::IcmpQuotesFragment));

    let mut icmp_quote = Vec::new();
    PacketBuilder::ipv6(VIP6, CLIENT6, 64)
        .icmpv6_echo_reply(1, 1)
        .write(&mut icmp_quote, b"x")
        .unwrap();
    let mut quoted_icmp = error(unreachable_port(), ROUTER6, VIP6, &icmp_quote);
    assert_eq!(check(&mut quoted_icmp), Err(Reason::IcmpQuotedProtocol));
}

proptest! {
    #[test]
    fn never_panics(edits in proptest::collection::vec((54usize..140, any::<u8>()), 0..4), cut in 0usize..80, toward_client: bool) {
        let quote = quoted(false, (VIP6, 80), (CLIENT6, 40000));
        let mut bytes = error(unreachable_port(), ROUTER6, VIP6, &quote);
        for (at, byte) in edits {
            if at < bytes.len() { bytes[at] = byte; }
        }
        bytes.truncate(bytes.len() - cut);
        let mut frame = Frame::whole(&mut bytes);
        let Ok(view) = parse6(&frame) else { return Ok(()) };
        let Ok(parsed) = icmp6::parse_error_v6(&frame, &view) else { return Ok(()) };
        let endpoint = SocketAddrV6::new(Ipv6Addr::from(RS6), 8080, 0, 0);
        let sent = if toward_client {
            icmp6::rewrite_toward_client_v6(&mut frame, &view, &parsed, endpoint, &to_client(1500))
        } else {
            icmp6::rewrite_toward_real_server_v6(&mut frame, &view, &parsed, endpoint, &to_real_server(1500))
        };
        if sent.is_ok() {
            icmpv6_parts(frame.data());
        }
    }
}

#[test]
fn relayed_errors_are_dropped_not_answered_at_the_gates() {
    let quote = quoted(false, (VIP6, 80), (CLIENT6, 40000));
    let rs = SocketAddrV6::new(RS6.into(), 8080, 0, 0);
    // Hop limit 1: dropped (an ICMPv6 error is never answered with another).
    let mut bytes = error(unreachable_port(), ROUTER6, VIP6, &quote);
    bytes[21] = 1;
    let mut frame = Frame::whole(&mut bytes);
    let view = parse6(&frame).unwrap();
    let parsed = icmp6::parse_error_v6(&frame, &view).unwrap();
    assert_eq!(
        icmp6::rewrite_toward_real_server_v6(&mut frame, &view, &parsed, rs, &to_real_server(1500)),
        Err(Reason::TtlExpired)
    );
    // Larger than the egress MTU: dropped.
    let mut bytes = error(unreachable_port(), ROUTER6, VIP6, &quote);
    let before = bytes.clone();
    let mut frame = Frame::whole(&mut bytes);
    let view = parse6(&frame).unwrap();
    let parsed = icmp6::parse_error_v6(&frame, &view).unwrap();
    assert_eq!(
        icmp6::rewrite_toward_real_server_v6(&mut frame, &view, &parsed, rs, &to_real_server(100)),
        Err(Reason::TooBig)
    );
    assert_eq!(
        frame.data(),
        &before[..],
        "refused frames are left as they came"
    );
}

const DIRECTOR6: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// The client's TCP packet to the VIP with `payload_len` bytes of data, and that packet
/// inside our IPv6-in-IPv6 tunnel (no Ethernet) toward `RS6`.
fn tunnelled6(payload_len: usize) -> (Vec<u8>, Vec<u8>) {
    let mut inner = Vec::new();
    PacketBuilder::ipv6(CLIENT6, VIP6, 63)
        .tcp(40000, 80, 100, 2000)
        .ack(5)
        .write(&mut inner, &vec![0x5a; payload_len])
        .unwrap();
    let mut outer = Vec::new();
    Ipv6Header {
        payload_length: inner.len() as u16,
        next_header: IpNumber::IPV6,
        hop_limit: 63,
        source: DIRECTOR6,
        destination: RS6,
        ..Default::default()
    }
    .write(&mut outer)
    .unwrap();
    outer.extend_from_slice(&inner);
    (inner, outer)
}

/// A router's error about our tunnel packet, quoting as much as fits in 1280 bytes.
fn error_about_tunnel6(kind: Icmpv6Type, encapsulated: &[u8]) -> Vec<u8> {
    let cut = encapsulated.len().min(1280 - 48);
    error(kind, ROUTER6, DIRECTOR6, &encapsulated[..cut])
}

/// Answers the error in `bytes` as the tunnel branch does; the frame sent.
fn answer_tunnel6(bytes: &mut [u8]) -> Result<Vec<u8>, Reason> {
    let mut frame = Frame::whole(bytes);
    let view = parse6(&frame).map_err(|_| Reason::Truncated)?;
    let parsed = icmp6::parse_error_v6(&frame, &view)?;
    let sent = icmp6::answer_tunnel_error_v6(&mut frame, &view, &parsed, &to_client(1500))?;
    assert_eq!(sent, Transmit::Forward);
    Ok(frame.data().to_vec())
}

#[test]
fn packet_too_big_about_a_tunnel_packet_goes_to_the_client_40_bytes_smaller() {
    let (inner, encapsulated) = tunnelled6(1400);
    let mut bytes = error_about_tunnel6(Icmpv6Type::PacketTooBig { mtu: 1400 }, &encapsulated);
    let frame = Frame::whole(&mut bytes);
    let view = parse6(&frame).unwrap();
    let parsed = icmp6::parse_error_v6(&frame, &view).unwrap();
    assert_eq!(
        parsed.flow,
        QuotedFlow6 {
            protocol: 6,
            src: SocketAddrV6::new(CLIENT6.into(), 40000, 0, 0),
            dst: SocketAddrV6::new(VIP6.into(), 80, 0, 0),
        }
    );
    assert_eq!(
        parsed.tunnel,
        Some(icmp6::QuotedTunnel6 {
            source: DIRECTOR6.into(),
            real_server: RS6.into(),
        })
    );
    assert_eq!(parsed.quote_ip_offset, 14 + 40 + 8 + 40);
    assert_eq!(parsed.quote_l4_offset, 14 + 40 + 8 + 40 + 40);

    let bytes = answer_tunnel6(&mut bytes).unwrap();
    let sliced = SlicedPacket::from_ethernet(&bytes).unwrap();
    let link = sliced.link.unwrap().to_header().unwrap();
    let etherparse::LinkHeader::Ethernet2(link) = link else {
        panic!("not Ethernet")
    };
    assert_eq!(
        (link.source, link.destination),
        (DIRECTOR_IN_MAC, GATEWAY_MAC)
    );
    let (outer, kind, quote) = icmpv6_parts(&bytes);
    assert_eq!(
        (outer.source, outer.destination, outer.hop_limit),
        (VIP6, CLIENT6, 64)
    );
    assert_eq!(usize::from(outer.payload_length), bytes.len() - 54);
    assert_eq!(kind, Icmpv6Type::PacketTooBig { mtu: 1360 });
    // The client's own packet, as far as the router quoted it (1232 - 40 bytes).
    assert_eq!(quote, &inner[..1232 - 40]);
    assert_eq!(bytes.len(), 14 + 40 + 8 + 1232 - 40);
}

#[test]
fn tunnel_errors_keep_their_kind_and_small_mtus_stop_at_1280() {
    let (inner, encapsulated) = tunnelled6(1400);
    for kind in [
        Icmpv6Type::DestinationUnreachable(etherparse::icmpv6::DestUnreachableCode::Address),
        Icmpv6Type::TimeExceeded(etherparse::icmpv6::TimeExceededCode::HopLimitExceeded),
    ] {
        let mut bytes = error_about_tunnel6(kind, &encapsulated);
        let bytes = answer_tunnel6(&mut bytes).unwrap();
        let (outer, kind_out, quote) = icmpv6_parts(&bytes);
        assert_eq!((outer.source, outer.destination), (VIP6, CLIENT6));
        assert_eq!(kind_out, kind);
        assert_eq!(&quote[..], &inner[..quote.len()]);
    }
    // 1300 - 40 is below IPv6's minimum: the client is told 1280, which it can still use.
    let mut bytes = error_about_tunnel6(Icmpv6Type::PacketTooBig { mtu: 1300 }, &encapsulated);
    let bytes = answer_tunnel6(&mut bytes).unwrap();
    assert_eq!(
        icmpv6_parts(&bytes).1,
        Icmpv6Type::PacketTooBig { mtu: 1280 }
    );
}

#[test]
fn tunnel_errors_ignored_or_refused() {
    // The client's packet already fits the lowered MTU: nothing to tell it.
    let (_, small) = tunnelled6(1000);
    let mut bytes = error_about_tunnel6(Icmpv6Type::PacketTooBig { mtu: 1300 }, &small);
    let before = bytes.clone();
    assert_eq!(answer_tunnel6(&mut bytes), Err(Reason::TunnelErrorIgnored));
    assert_eq!(bytes, before, "the frame is untouched");
    // A parameter problem points into our outer packet, not the client's.
    let (_, encapsulated) = tunnelled6(1400);
    let problem = Icmpv6Type::ParameterProblem(etherparse::icmpv6::ParameterProblemHeader {
        code: etherparse::icmpv6::ParameterProblemCode::ErroneousHeaderField,
        pointer: 6,
    });
    let mut bytes = error_about_tunnel6(problem, &encapsulated);
    assert_eq!(answer_tunnel6(&mut bytes), Err(Reason::TunnelErrorIgnored));
    // A tunnel quote handed to a NAT rewrite is refused, and a plain error to the tunnel
    // answer.
    let mut bytes = error_about_tunnel6(Icmpv6Type::PacketTooBig { mtu: 1400 }, &encapsulated);
    let mut frame = Frame::whole(&mut bytes);
    let view = parse6(&frame).unwrap();
    let parsed = icmp6::parse_error_v6(&frame, &view).unwrap();
    let vs = SocketAddrV6::new(VIP6.into(), 80, 0, 0);
    assert_eq!(
        icmp6::rewrite_toward_client_v6(&mut frame, &view, &parsed, vs, &to_client(1500)),
        Err(Reason::IcmpQuotedProtocol)
    );
    let quote = quoted(false, (VIP6, 80), (CLIENT6, 40000));
    let mut plain = error(unreachable_port(), ROUTER6, VIP6, &quote);
    assert_eq!(answer_tunnel6(&mut plain), Err(Reason::ViewMismatch));
    // The outer header and 8 bytes only: no inner header to answer about.
    let mut bare = error_about_tunnel6(unreachable_port(), &encapsulated[..48]);
    assert_eq!(answer_tunnel6(&mut bare), Err(Reason::IcmpQuoteTruncated));
    // IPv4 inside (a mixed-family tunnel) is not translated.
    let mut four_in_six = encapsulated[..40].to_vec();
    four_in_six[6] = 4;
    let mut inner4 = Vec::new();
    PacketBuilder::ipv4(CLIENT, VIP, 63)
        .tcp(40000, 80, 1, 1)
        .write(&mut inner4, b"x")
        .unwrap();
    four_in_six.extend_from_slice(&inner4);
    let mut bytes = error_about_tunnel6(unreachable_port(), &four_in_six);
    assert_eq!(answer_tunnel6(&mut bytes), Err(Reason::IcmpQuotedProtocol));
}

proptest! {
    #[test]
    fn tunnel_answers_never_panic(edits in proptest::collection::vec((54usize..200, any::<u8>()), 0..4), cut in 0usize..160) {
        let (_, encapsulated) = tunnelled6(300);
        let mut bytes = error_about_tunnel6(Icmpv6Type::PacketTooBig { mtu: 1400 }, &encapsulated);
        for (at, byte) in edits {
            if at < bytes.len() { bytes[at] = byte; }
        }
        bytes.truncate(bytes.len() - cut);
        if let Ok(sent) = answer_tunnel6(&mut bytes) {
            icmpv6_parts(&sent);
        }
    }
}
