//! ICMP errors for tracked connections: quoted-header parsing and the NAT rewrites
//! (IPVS ip_vs_in_icmp / ip_vs_out_icmp), plus DR/TUN relaying the error unchanged.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};

use common::*;
use xvs_forwarders::icmp::{self, QuotedFlow, QuotedTunnel};
use xvs_forwarders::tun::{self, Tunnel};
use xvs_forwarders::{Frame, Reason, Transmit, dr, parse};

fn sock(addr: [u8; 4], port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(addr), port)
}

/// A reply the director sent after NAT out: VIP:80 -> client:40000 (TCP, full header).
fn reply_sent_to_client(src: [u8; 4], sport: u16) -> Vec<u8> {
    tcp_frame(
        (DIRECTOR_IN_MAC, GATEWAY_MAC),
        &Ip::new(src, CLIENT),
        (sport, 40000),
        0x18,
        b"response bytes",
    )
}

/// A router on the client side answers "fragmentation needed" about `quoted_datagram`.
fn frag_needed_from_router(quoted_datagram: &[u8], ttl: u8) -> Vec<u8> {
    let mut ip = Ip::new(ROUTER, VIP);
    ip.ttl = ttl;
    ip.dont_fragment = false;
    icmp_frame(
        (GATEWAY_MAC, DIRECTOR_IN_MAC),
        &ip,
        3,
        4,
        [0, 0, 0x05, 0x78],
        quoted_datagram,
    )
}

#[test]
fn parse_error_reads_the_quoted_flow() {
    let quoted = reply_sent_to_client(VIP, 80);
    let input = frag_needed_from_router(datagram(&quoted), 60);
    let mut buf = input.clone();
    let frame = Frame::whole(&mut buf);
    let view = parse(&frame).unwrap();
    assert!(view.is_icmp_error());
    let error = icmp::parse_error(&frame, &view).unwrap();
    assert_eq!(error.kind, 3);
    assert_eq!(error.code, 4);
    assert!(error.is_fragmentation_needed());
    assert_eq!(error.next_hop_mtu, 1400);
    assert_eq!(error.quote_ip_offset, 14 + 20 + 8);
    assert_eq!(error.quote_l4_offset, 14 + 20 + 8 + 20);
    assert_eq!(
        error.flow,
        QuotedFlow {
            protocol: 6,
            src: sock(VIP, 80),
            dst: sock(CLIENT, 40000),
        }
    );
}

#[test]
fn nat_error_from_client_side_is_rewritten_toward_the_real_server() {
    let quoted = reply_sent_to_client(VIP, 80);
    let input = frag_needed_from_router(datagram(&quoted), 60);
    let mut buf = input.clone();
    let mut frame = Frame::whole(&mut buf);
    let view = parse(&frame).unwrap();
    let error = icmp::parse_error(&frame, &view).unwrap();
    let sent = icmp::rewrite_toward_real_server(
        &mut frame,
        &view,
        &error,
        sock(REAL_SERVER, 8080),
        &to_real_server(1500),
    )
    .unwrap();
    assert_eq!(sent, Transmit::Forward);

    // What the real server sent before NAT out: RIP:8080 -> client:40000.
    let original = reply_sent_to_client(REAL_SERVER, 8080);
    let mut ip = Ip::new(ROUTER, REAL_SERVER);
    ip.ttl = 59;
    ip.dont_fragment = false;
    let expected = icmp_frame(
        (DIRECTOR_OUT_MAC, REAL_SERVER_MAC),
        &ip,
        3,
        4,
        [0, 0, 0x05, 0x78],
        datagram(&original),
    );
    assert_same_frame(frame.data(), &expected);
    verify_checksums(frame.data());
}

#[test]
fn nat_error_from_real_server_is_rewritten_toward_the_client_with_a_short_udp_quote() {
    // The client sent client:5000 -> VIP:53; after NAT in it reached RIP:5353, which answers
    // "port unreachable" quoting the IP header and 8 bytes only.
    let sent_by_director = udp_frame(
        (DIRECTOR_OUT_MAC, REAL_SERVER_MAC),
        &Ip::new(CLIENT, REAL_SERVER),
        (5000, 5353),
        b"a query that is longer than eight bytes",
    );
    let quote = &datagram(&sent_by_director)[..28];
    let input = icmp_frame(
        (REAL_SERVER_MAC, DIRECTOR_OUT_MAC),
        &Ip::new(REAL_SERVER, CLIENT),
        3,
        3,
        [0; 4],
        quote,
    );
    let mut buf = input.clone();
    let mut frame = Frame::whole(&mut buf);
    let view = parse(&frame).unwrap();
    let error = icmp::parse_error(&frame, &view).unwrap();
    assert_eq!(
        error.flow,
        QuotedFlow {
            protocol: 17,
            src: sock(CLIENT, 5000),
            dst: sock(REAL_SERVER, 5353),
        }
    );
    let sent =
        icmp::rewrite_toward_client(&mut frame, &view, &error, sock(VIP, 53), &to_client(1500))
            .unwrap();
    assert_eq!(sent, Transmit::Forward);

    // The client's own packet, as it left the client: client:5000 -> VIP:53, quoted to 28 bytes.
    let sent_by_client = udp_frame(
        (CLIENT_MAC, DIRECTOR_IN_MAC),
        &Ip::new(CLIENT, VIP),
        (5000, 53),
        b"a query that is longer than eight bytes",
    );
    let mut ip = Ip::new(VIP, CLIENT);
    ip.ttl = 63;
    let expected = icmp_frame(
        (DIRECTOR_IN_MAC, GATEWAY_MAC),
        &ip,
        3,
        3,
        [0; 4],
        &datagram(&sent_by_client)[..28],
    );
    assert_same_frame(frame.data(), &expected);
    verify_checksums(frame.data());
}

#[test]
fn tcp_quote_without_its_checksum_is_rewritten_without_touching_it() {
    let quoted = reply_sent_to_client(VIP, 80);
    let input = frag_needed_from_router(&datagram(&quoted)[..28], 60);
    let mut buf = input.clone();
    let mut frame = Frame::whole(&mut buf);
    let view = parse(&frame).unwrap();
    let error = icmp::parse_error(&frame, &view).unwrap();
    icmp::rewrite_toward_real_server(
        &mut frame,
        &view,
        &error,
        sock(REAL_SERVER, 8080),
        &to_real_server(1500),
    )
    .unwrap();
    let original = reply_sent_to_client(REAL_SERVER, 8080);
    let mut ip = Ip::new(ROUTER, REAL_SERVER);
    ip.ttl = 59;
    ip.dont_fragment = false;
    let expected = icmp_frame(
        (DIRECTOR_OUT_MAC, REAL_SERVER_MAC),
        &ip,
        3,
        4,
        [0, 0, 0x05, 0x78],
        &datagram(&original)[..28],
    );
    assert_same_frame(frame.data(), &expected);
    verify_checksums(frame.data());
}

#[test]
fn a_quote_ending_inside_the_tcp_checksum_keeps_its_byte() {
    let quoted = reply_sent_to_client(VIP, 80);
    let input = frag_needed_from_router(&datagram(&quoted)[..37], 60);
    let mut buf = input.clone();
    let mut frame = Frame::whole(&mut buf);
    let view = parse(&frame).unwrap();
    let error = icmp::parse_error(&frame, &view).unwrap();
    icmp::rewrite_toward_real_server(
        &mut frame,
        &view,
        &error,
        sock(REAL_SERVER, 8080),
        &to_real_server(1500),
    )
    .unwrap();
    let last = frame.len() - 1;
    assert_eq!(frame.data()[last], input[last], "half checksum untouched");
    let original = reply_sent_to_client(REAL_SERVER, 8080);
    assert_eq!(
        &frame.data()[42..last],
        &original[14..14 + 36],
        "rest of the quote"
    );
    verify_checksums(frame.data());
}

#[test]
fn time_exceeded_is_relayed_too() {
    let quoted = reply_sent_to_client(VIP, 80);
    let input = icmp_frame(
        (GATEWAY_MAC, DIRECTOR_IN_MAC),
        &Ip::new(ROUTER, VIP),
        11,
        0,
        [0; 4],
        datagram(&quoted),
    );
    let mut buf = input.clone();
    let mut frame = Frame::whole(&mut buf);
    let view = parse(&frame).unwrap();
    let error = icmp::parse_error(&frame, &view).unwrap();
    assert_eq!((error.kind, error.code, error.next_hop_mtu), (11, 0, 0));
    icmp::rewrite_toward_real_server(
        &mut frame,
        &view,
        &error,
        sock(REAL_SERVER, 8080),
        &to_real_server(1500),
    )
    .unwrap();
    verify_checksums(frame.data());
}

#[test]
fn dr_and_tun_relay_the_error_unchanged() {
    // DR/TUN: the real server answered from the VIP itself.
    let quoted = reply_sent_to_client(VIP, 80);
    let input = frag_needed_from_router(datagram(&quoted), 60);

    let mut buf = input.clone();
    let mut frame = Frame::whole(&mut buf);
    let view = parse(&frame).unwrap();
    icmp::parse_error(&frame, &view).unwrap();
    assert_eq!(
        dr::forward(&mut frame, &view, &to_real_server(1500)),
        Ok(Transmit::Forward)
    );
    assert_eq!(datagram(frame.data()), datagram(&input));

    let mut buf = buffer(&input, 20, 0);
    let mut frame = Frame::new(&mut buf, 20, input.len()).unwrap();
    let view = parse(&frame).unwrap();
    let tunnel = Tunnel {
        source: Ipv4Addr::from(DIRECTOR),
        real_server: Ipv4Addr::from(REAL_SERVER),
        ident: 3,
    };
    assert_eq!(
        tun::encapsulate(&mut frame, &view, &tunnel, &to_real_server(1500)),
        Ok(Transmit::Forward)
    );
    verify_checksums(frame.data());
}

#[test]
fn errors_are_never_answered_with_errors() {
    let quoted = reply_sent_to_client(VIP, 80);
    // TTL 1: dropped, not answered.
    let input = frag_needed_from_router(datagram(&quoted), 1);
    let mut buf = buffer(&input, 64, 0);
    let mut frame = Frame::new(&mut buf, 64, input.len()).unwrap();
    let view = parse(&frame).unwrap();
    let error = icmp::parse_error(&frame, &view).unwrap();
    assert_eq!(
        icmp::rewrite_toward_real_server(
            &mut frame,
            &view,
            &error,
            sock(REAL_SERVER, 8080),
            &to_real_server(1500)
        ),
        Err(Reason::TtlExpired)
    );
    // Too big, even with DF: dropped, not answered.
    let mut ip = Ip::new(ROUTER, VIP);
    ip.dont_fragment = true;
    let input = icmp_frame(
        (GATEWAY_MAC, DIRECTOR_IN_MAC),
        &ip,
        3,
        4,
        [0; 4],
        datagram(&quoted),
    );
    let mut buf = buffer(&input, 64, 0);
    let mut frame = Frame::new(&mut buf, 64, input.len()).unwrap();
    let view = parse(&frame).unwrap();
    let error = icmp::parse_error(&frame, &view).unwrap();
    assert_eq!(
        icmp::rewrite_toward_real_server(
            &mut frame,
            &view,
            &error,
            sock(REAL_SERVER, 8080),
            &to_real_server(68)
        ),
        Err(Reason::TooBig)
    );
    assert_eq!(
        dr::forward(&mut frame, &view, &to_real_server(68)),
        Err(Reason::TooBig)
    );
    assert_eq!(frame.data(), &input[..]);
}

fn parse_error_of(frame_bytes: &[u8]) -> Result<icmp::IcmpErrorView, Reason> {
    let mut buf = frame_bytes.to_vec();
    let frame = Frame::whole(&mut buf);
    let view = parse(&frame)?;
    icmp::parse_error(&frame, &view)
}

#[test]
fn parse_error_refusals() {
    let quoted = datagram(&reply_sent_to_client(VIP, 80)).to_vec();
    let from_router = |kind, code, payload: &[u8]| {
        icmp_frame(
            (GATEWAY_MAC, DIRECTOR_IN_MAC),
            &Ip::new(ROUTER, VIP),
            kind,
            code,
            [0; 4],
            payload,
        )
    };
    // Echo, source quench, redirect: not relayed.
    assert_eq!(
        parse_error_of(&from_router(8, 0, b"ping")),
        Err(Reason::NotIcmpError)
    );
    assert_eq!(
        parse_error_of(&from_router(4, 0, &quoted)),
        Err(Reason::NotIcmpError)
    );
    assert_eq!(
        parse_error_of(&from_router(5, 1, &quoted)),
        Err(Reason::NotIcmpError)
    );
    // Not ICMP at all.
    let tcp = reply_sent_to_client(VIP, 80);
    assert_eq!(parse_error_of(&tcp), Err(Reason::NotIcmpError));
    // Bad ICMP checksum.
    let mut bad = from_router(3, 1, &quoted);
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    assert_eq!(parse_error_of(&bad), Err(Reason::BadIcmpChecksum));
    // Quote too short: IP header + 7 bytes.
    assert_eq!(
        parse_error_of(&from_router(3, 1, &quoted[..27])),
        Err(Reason::IcmpQuoteTruncated)
    );
    // Quote not IPv4.
    let mut not_v4 = quoted.clone();
    not_v4[0] = 0x65;
    assert_eq!(
        parse_error_of(&from_router(3, 1, &not_v4)),
        Err(Reason::IcmpQuoteTruncated)
    );
    // Quoted non-first fragment.
    let mut later = quoted.clone();
    later[6] = 0x00;
    later[7] = 0x20;
    assert_eq!(
        parse_error_of(&from_router(3, 1, &later)),
        Err(Reason::IcmpQuotesFragment)
    );
    // Quoted first fragment: ports present, accepted.
    let mut first = quoted.clone();
    first[6] = 0x20;
    first[7] = 0x00;
    assert!(parse_error_of(&from_router(3, 1, &first)).is_ok());
    // Quoted GRE.
    let mut gre = quoted.clone();
    gre[9] = 47;
    assert_eq!(
        parse_error_of(&from_router(3, 1, &gre)),
        Err(Reason::IcmpQuotedProtocol)
    );
}

const ROUTER_NEAR_REAL_SERVER: [u8; 4] = [10, 1, 0, 254];

/// Our IPIP packet to the real server, carrying `client -> VIP:80` (TTL already decremented).
fn tunnelled_request(dont_fragment: bool) -> (Vec<u8>, Vec<u8>) {
    let mut inner_ip = Ip::new(CLIENT, VIP);
    inner_ip.ttl = 63;
    inner_ip.dont_fragment = dont_fragment;
    let inner = tcp_frame(
        (CLIENT_MAC, DIRECTOR_IN_MAC),
        &inner_ip,
        (40000, 80),
        0x10,
        &[0x42; 1400],
    );
    let outer = Ip {
        src: DIRECTOR,
        dst: REAL_SERVER,
        ttl: 63,
        ident: 77,
        dont_fragment,
        dscp: 0,
        ecn: 0,
        options: &[],
    };
    let encapsulated = ipip_frame(
        (DIRECTOR_OUT_MAC, REAL_SERVER_MAC),
        &outer,
        datagram(&inner),
    );
    (inner, encapsulated)
}

/// A router on the real servers' side reports about our tunnel packet, quoting 548 bytes.
fn error_about_tunnel(encapsulated: &[u8], kind: u8, code: u8, rest: [u8; 4]) -> Vec<u8> {
    icmp_frame(
        (GATEWAY_MAC, DIRECTOR_OUT_MAC),
        &Ip::new(ROUTER_NEAR_REAL_SERVER, DIRECTOR),
        kind,
        code,
        rest,
        &datagram(encapsulated)[..548],
    )
}

#[test]
fn tunnel_fragmentation_needed_reaches_the_client_with_the_mtu_lowered_by_20() {
    let (inner, encapsulated) = tunnelled_request(true);
    let input = error_about_tunnel(&encapsulated, 3, 4, [0, 0, 0x05, 0x78]);
    let mut buf = input.clone();
    let mut frame = Frame::whole(&mut buf);
    let view = parse(&frame).unwrap();
    let error = icmp::parse_error(&frame, &view).unwrap();
    assert_eq!(
        error.flow,
        QuotedFlow {
            protocol: 6,
            src: sock(CLIENT, 40000),
            dst: sock(VIP, 80),
        }
    );
    assert_eq!(
        error.tunnel,
        Some(QuotedTunnel {
            source: Ipv4Addr::from(DIRECTOR),
            real_server: Ipv4Addr::from(REAL_SERVER),
            dont_fragment: true,
        })
    );
    assert_eq!(error.quote_ip_offset, 14 + 20 + 8 + 20);
    assert_eq!(error.next_hop_mtu, 1400);

    let sent = icmp::answer_tunnel_error(&mut frame, &view, &error, &to_client(1500)).unwrap();
    assert_eq!(sent, Transmit::Forward);
    let mut ip = Ip::new(VIP, CLIENT);
    ip.ident = 0;
    ip.dscp = 0x30;
    let mtu = 1380u16.to_be_bytes();
    // The quote: the client's datagram as far as the router quoted it (548 - 20 bytes).
    let expected = icmp_frame(
        (DIRECTOR_IN_MAC, GATEWAY_MAC),
        &ip,
        3,
        4,
        [0, 0, mtu[0], mtu[1]],
        &datagram(&inner)[..528],
    );
    assert_same_frame(frame.data(), &expected);
    verify_checksums(frame.data());
}

#[test]
fn tunnel_errors_keep_type_code_and_small_mtus() {
    let (inner, encapsulated) = tunnelled_request(true);
    // Host unreachable: same type and code, bytes 4..8 kept.
    let input = error_about_tunnel(&encapsulated, 3, 1, [0; 4]);
    let mut buf = input.clone();
    let mut frame = Frame::whole(&mut buf);
    let view = parse(&frame).unwrap();
    let error = icmp::parse_error(&frame, &view).unwrap();
    icmp::answer_tunnel_error(&mut frame, &view, &error, &to_client(1500)).unwrap();
    let mut ip = Ip::new(VIP, CLIENT);
    ip.ident = 0;
    ip.dscp = 0x30;
    let expected = icmp_frame(
        (DIRECTOR_IN_MAC, GATEWAY_MAC),
        &ip,
        3,
        1,
        [0; 4],
        &datagram(&inner)[..528],
    );
    assert_same_frame(frame.data(), &expected);

    // An MTU of 88 or less is passed on unchanged, as IPVS does.
    let input = error_about_tunnel(&encapsulated, 3, 4, [0, 0, 0, 80]);
    let mut buf = input.clone();
    let mut frame = Frame::whole(&mut buf);
    let view = parse(&frame).unwrap();
    let error = icmp::parse_error(&frame, &view).unwrap();
    icmp::answer_tunnel_error(&mut frame, &view, &error, &to_client(1500)).unwrap();
    assert_eq!(
        &frame.data()[34..42],
        &[3, 4, frame.data()[36], frame.data()[37], 0, 0, 0, 80]
    );
    verify_checksums(frame.data());
}

#[test]
fn tunnel_errors_ignored_or_refused() {
    // The client did not set DF: IPVS ignores "fragmentation needed".
    let (_, encapsulated) = tunnelled_request(false);
    let input = error_about_tunnel(&encapsulated, 3, 4, [0, 0, 0x05, 0x78]);
    let mut buf = input.clone();
    let mut frame = Frame::whole(&mut buf);
    let view = parse(&frame).unwrap();
    let error = icmp::parse_error(&frame, &view).unwrap();
    assert_eq!(
        icmp::answer_tunnel_error(&mut frame, &view, &error, &to_client(1500)),
        Err(Reason::TunnelErrorIgnored)
    );
    // A tunnel quote handed to a NAT rewrite is refused.
    assert_eq!(
        icmp::rewrite_toward_client(&mut frame, &view, &error, sock(VIP, 80), &to_client(1500)),
        Err(Reason::IcmpQuotedProtocol)
    );
    assert_eq!(frame.data(), &input[..]);
    // A plain error handed to the tunnel path is refused.
    let quoted = reply_sent_to_client(VIP, 80);
    let plain = frag_needed_from_router(datagram(&quoted), 60);
    let mut buf = plain.clone();
    let mut frame = Frame::whole(&mut buf);
    let view = parse(&frame).unwrap();
    let error = icmp::parse_error(&frame, &view).unwrap();
    assert_eq!(
        icmp::answer_tunnel_error(&mut frame, &view, &error, &to_client(1500)),
        Err(Reason::ViewMismatch)
    );
    // The minimal RFC 792 quote (outer header + 8 bytes) has no inner ports.
    let (_, encapsulated) = tunnelled_request(true);
    let short = icmp_frame(
        (GATEWAY_MAC, DIRECTOR_OUT_MAC),
        &Ip::new(ROUTER_NEAR_REAL_SERVER, DIRECTOR),
        3,
        4,
        [0, 0, 5, 0x78],
        &datagram(&encapsulated)[..28],
    );
    assert_eq!(parse_error_of(&short), Err(Reason::IcmpQuoteTruncated));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn unicast() -> impl Strategy<Value = [u8; 4]> {
        any::<[u8; 4]>().prop_filter("unicast", |a| a[0] != 0 && a[0] < 224 && a[0] != 127)
    }

    /// A datagram of `protocol` between two endpoints, as a frame.
    fn datagram_frame(
        is_tcp: bool,
        src: ([u8; 4], u16),
        dst: ([u8; 4], u16),
        ident: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut ip = Ip::new(src.0, dst.0);
        ip.ident = ident;
        if is_tcp {
            tcp_frame(
                (CLIENT_MAC, DIRECTOR_IN_MAC),
                &ip,
                (src.1, dst.1),
                0x18,
                payload,
            )
        } else {
            udp_frame((CLIENT_MAC, DIRECTOR_IN_MAC), &ip, (src.1, dst.1), payload)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Both NAT relays on random flows and quote lengths: the result equals the error the
        /// other side would have received about its own packet, built from scratch.
        #[test]
        fn relayed_errors_quote_what_the_other_side_sent(
            client in unicast(),
            vip in unicast(),
            rip in unicast(),
            router in unicast(),
            cport in any::<u16>(),
            vport in any::<u16>(),
            rport in any::<u16>(),
            ident in any::<u16>(),
            ttl in 2u8..=255,
            is_tcp in any::<bool>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            quote_cut in any::<usize>(),
            kind_code in prop_oneof![Just((3u8, 4u8)), Just((3, 1)), Just((3, 3)), Just((11, 0))],
        ) {
            let (kind, code) = kind_code;
            // Toward the real server: the quote is a reply VIP:vport -> client:cport.
            let sent = datagram_frame(is_tcp, (vip, vport), (client, cport), ident, &payload);
            let original = datagram_frame(is_tcp, (rip, rport), (client, cport), ident, &payload);
            let full = sent.len() - 14;
            let quote_len = 28 + quote_cut % (full - 28 + 1);
            // A quote ending inside the TCP checksum (1 of its 2 bytes) keeps that byte as
            // is: it cannot be updated without the other. Checked separately below.
            prop_assume!(!(is_tcp && quote_len == 20 + 17));
            let mut outer = Ip::new(router, vip);
            outer.ttl = ttl;
            let input = icmp_frame(
                (GATEWAY_MAC, DIRECTOR_IN_MAC), &outer, kind, code, [0, 0, 5, 0],
                &datagram(&sent)[..quote_len],
            );
            let mut buf = input.clone();
            let mut frame = Frame::whole(&mut buf);
            let view = parse(&frame).unwrap();
            let error = icmp::parse_error(&frame, &view).unwrap();
            prop_assert_eq!(error.flow.src, sock(vip, vport));
            prop_assert_eq!(error.flow.dst, sock(client, cport));
            prop_assert_eq!(
                icmp::rewrite_toward_real_server(&mut frame, &view, &error, sock(rip, rport), &to_real_server(1500)),
                Ok(Transmit::Forward)
            );
            let mut expected_outer = Ip::new(router, rip);
            expected_outer.ttl = ttl - 1;
            let expected = icmp_frame(
                (DIRECTOR_OUT_MAC, REAL_SERVER_MAC), &expected_outer, kind, code, [0, 0, 5, 0],
                &datagram(&original)[..quote_len],
            );
            assert_same_frame(frame.data(), &expected);
            verify_checksums(frame.data());

            // Toward the client: the quote is client:cport -> RIP:rport, the client sent VIP:vport.
            let sent = datagram_frame(is_tcp, (client, cport), (rip, rport), ident, &payload);
            let original = datagram_frame(is_tcp, (client, cport), (vip, vport), ident, &payload);
            let mut outer = Ip::new(rip, client);
            outer.ttl = ttl;
            let input = icmp_frame(
                (REAL_SERVER_MAC, DIRECTOR_OUT_MAC), &outer, kind, code, [0; 4],
                &datagram(&sent)[..quote_len],
            );
            let mut buf = input.clone();
            let mut frame = Frame::whole(&mut buf);
            let view = parse(&frame).unwrap();
            let error = icmp::parse_error(&frame, &view).unwrap();
            prop_assert_eq!(
                icmp::rewrite_toward_client(&mut frame, &view, &error, sock(vip, vport), &to_client(1500)),
                Ok(Transmit::Forward)
            );
            let mut expected_outer = Ip::new(vip, client);
            expected_outer.ttl = ttl - 1;
            let expected = icmp_frame(
                (DIRECTOR_IN_MAC, GATEWAY_MAC), &expected_outer, kind, code, [0; 4],
                &datagram(&original)[..quote_len],
            );
            assert_same_frame(frame.data(), &expected);
            verify_checksums(frame.data());
        }
    }
}

/// Found by fuzzing (fuzz/, target `pipeline`): a relayed error kept the bytes after its
/// datagram.
#[test]
fn a_relayed_error_is_cut_to_its_datagram() {
    let quoted = reply_sent_to_client(VIP, 80);
    let mut input = frag_needed_from_router(datagram(&quoted), 60);
    let datagram_end = input.len();
    input.extend_from_slice(&[0x62; 80]);
    let mut buf = input.clone();
    let mut frame = Frame::whole(&mut buf);
    let view = parse(&frame).unwrap();
    let error = icmp::parse_error(&frame, &view).unwrap();
    let sent = icmp::rewrite_toward_real_server(
        &mut frame,
        &view,
        &error,
        sock(REAL_SERVER, 8080),
        &to_real_server(1500),
    );
    assert_eq!(sent, Ok(Transmit::Forward));
    assert_eq!(frame.len(), datagram_end);
    verify_checksums(frame.data());
}

/// Found by fuzzing (fuzz/, target `pipeline_sequence`): the answer to a tunnel error was
/// sized to 576 bytes whatever the MTU of the link toward the client.
#[test]
fn a_tunnel_error_answer_fits_the_mtu_toward_the_client() {
    let (inner, encapsulated) = tunnelled_request(true);
    let input = error_about_tunnel(&encapsulated, 3, 1, [0; 4]);
    for mtu in [68u16, 80, 300, 576, 1500] {
        let mut buf = input.clone();
        let mut frame = Frame::whole(&mut buf);
        let view = parse(&frame).unwrap();
        let error = icmp::parse_error(&frame, &view).unwrap();
        let sent = icmp::answer_tunnel_error(&mut frame, &view, &error, &to_client(mtu));
        assert_eq!(sent, Ok(Transmit::Forward), "MTU {mtu}");
        let datagram_len = frame.len() - 14;
        // The router quoted 528 bytes of the client's datagram.
        let fits = usize::from(mtu.min(576)).min(28 + 528);
        assert_eq!(datagram_len, fits, "MTU {mtu}");
        assert_eq!(&frame.data()[42..], &datagram(&inner)[..datagram_len - 28]);
        verify_checksums(frame.data());
    }
    // Below IPv4's minimum MTU there is no room for the header and 8 bytes it must quote.
    let mut buf = input.clone();
    let mut frame = Frame::whole(&mut buf);
    let view = parse(&frame).unwrap();
    let error = icmp::parse_error(&frame, &view).unwrap();
    let sent = icmp::answer_tunnel_error(&mut frame, &view, &error, &to_client(40));
    assert_eq!(sent, Err(Reason::TooBig));
}
