//! TUN: IPIP encapsulation into headroom, outer fields from the inner header, MTU rules.

mod common;

use std::net::Ipv4Addr;

use common::*;
use proptest::prelude::*;
use xvs_forwarders::tun::{self, Tunnel};
use xvs_forwarders::{Frame, Reason, Transmit, parse};

fn tunnel(ident: u16) -> Tunnel {
    Tunnel {
        source: Ipv4Addr::from(DIRECTOR),
        real_server: Ipv4Addr::from(REAL_SERVER),
        ident,
    }
}

/// The expected encapsulated frame: `inner_ip` with TTL - 1, wrapped by the outer header.
fn expected_ipip(inner: &[u8], outer: Ip) -> Vec<u8> {
    ipip_frame((DIRECTOR_OUT_MAC, REAL_SERVER_MAC), &outer, inner)
}

fn outer_ip(ttl: u8, ident: u16, dont_fragment: bool, dscp: u8, ecn: u8) -> Ip {
    Ip {
        src: DIRECTOR,
        dst: REAL_SERVER,
        ttl,
        ident,
        dont_fragment,
        dscp,
        ecn,
        options: &[],
    }
}

#[test]
fn golden_tcp_encapsulation_uses_headroom_without_moving_the_payload() {
    let ip = Ip::new(CLIENT, VIP);
    let input = tcp_frame(
        (CLIENT_MAC, DIRECTOR_IN_MAC),
        &ip,
        (40000, 80),
        0x02,
        b"payload",
    );
    let mut buf = buffer(&input, 64, 0);
    let payload_at = 64 + input.len() - 7;
    let mut frame = Frame::new(&mut buf, 64, input.len()).unwrap();
    let view = parse(&frame).unwrap();
    let sent = tun::encapsulate(&mut frame, &view, &tunnel(0x0bad), &to_real_server(1500)).unwrap();
    assert_eq!(sent, Transmit::Forward);
    assert_eq!(frame.start(), 64 - 20);
    assert_eq!(frame.len(), input.len() + 20);

    let mut inner_ip = ip;
    inner_ip.ttl = 63;
    let inner = tcp_frame(
        (CLIENT_MAC, DIRECTOR_IN_MAC),
        &inner_ip,
        (40000, 80),
        0x02,
        b"payload",
    );
    let expected = expected_ipip(datagram(&inner), outer_ip(63, 0x0bad, true, 0, 0));
    assert_same_frame(frame.data(), &expected);
    verify_checksums(frame.data());
    assert_eq!(
        &buf[payload_at..payload_at + 7],
        b"payload",
        "payload bytes stay in place"
    );
}

#[test]
fn df_clear_and_tos_are_copied_to_the_outer_header() {
    let mut ip = Ip::new(CLIENT, VIP);
    ip.dont_fragment = false;
    ip.dscp = 10;
    ip.ecn = 2;
    ip.ttl = 9;
    let input = udp_frame((CLIENT_MAC, DIRECTOR_IN_MAC), &ip, (5000, 53), b"q");
    let mut buf = buffer(&input, 20, 0);
    let mut frame = Frame::new(&mut buf, 20, input.len()).unwrap();
    let view = parse(&frame).unwrap();
    tun::encapsulate(&mut frame, &view, &tunnel(7), &to_real_server(1500)).unwrap();
    assert_eq!(frame.start(), 0);
    let mut inner_ip = ip;
    inner_ip.ttl = 8;
    let inner = udp_frame((CLIENT_MAC, DIRECTOR_IN_MAC), &inner_ip, (5000, 53), b"q");
    let expected = expected_ipip(datagram(&inner), outer_ip(8, 7, false, 10, 2));
    assert_same_frame(frame.data(), &expected);
    verify_checksums(frame.data());
}

#[test]
fn ethernet_padding_is_trimmed() {
    let ip = Ip::new(CLIENT, VIP);
    let mut input = tcp_frame((CLIENT_MAC, DIRECTOR_IN_MAC), &ip, (40000, 80), 0x10, b"");
    input.extend_from_slice(&[0; 6]);
    let mut buf = buffer(&input, 32, 0);
    let mut frame = Frame::new(&mut buf, 32, input.len()).unwrap();
    let view = parse(&frame).unwrap();
    tun::encapsulate(&mut frame, &view, &tunnel(1), &to_real_server(1500)).unwrap();
    assert_eq!(frame.len(), 14 + 20 + 40);
    verify_checksums(frame.data());
}

#[test]
fn no_headroom_refuses_and_leaves_the_frame() {
    let ip = Ip::new(CLIENT, VIP);
    let input = tcp_frame((CLIENT_MAC, DIRECTOR_IN_MAC), &ip, (40000, 80), 0x02, b"");
    let mut buf = buffer(&input, 19, 100);
    let mut frame = Frame::new(&mut buf, 19, input.len()).unwrap();
    let view = parse(&frame).unwrap();
    assert_eq!(
        tun::encapsulate(&mut frame, &view, &tunnel(1), &to_real_server(1500)),
        Err(Reason::NoHeadroom)
    );
    assert_eq!(frame.data(), &input[..]);
}

#[test]
fn too_big_with_df_answers_fragmentation_needed_with_mtu_minus_20() {
    let ip = Ip::new(CLIENT, VIP);
    // 1500-byte datagram: fits a 1500 link, not a 1500 tunnel.
    let input = tcp_frame(
        (CLIENT_MAC, DIRECTOR_IN_MAC),
        &ip,
        (40000, 80),
        0x10,
        &[5; 1460],
    );
    let mut buf = buffer(&input, 64, 0);
    let mut frame = Frame::new(&mut buf, 64, input.len()).unwrap();
    let view = parse(&frame).unwrap();
    let sent = tun::encapsulate(&mut frame, &view, &tunnel(1), &to_real_server(1500)).unwrap();
    assert_eq!(sent, Transmit::FragmentationNeededToSender);
    let quoted = &datagram(&input)[..548];
    let mut reply_ip = Ip::new(VIP, CLIENT);
    reply_ip.ident = 0;
    reply_ip.dscp = 0x30;
    let mtu = 1480u16.to_be_bytes();
    let expected = icmp_frame(
        (DIRECTOR_IN_MAC, CLIENT_MAC),
        &reply_ip,
        3,
        4,
        [0, 0, mtu[0], mtu[1]],
        quoted,
    );
    assert_same_frame(frame.data(), &expected);
    verify_checksums(frame.data());
}

#[test]
fn exactly_fitting_datagram_is_encapsulated() {
    let ip = Ip::new(CLIENT, VIP);
    let input = tcp_frame(
        (CLIENT_MAC, DIRECTOR_IN_MAC),
        &ip,
        (40000, 80),
        0x10,
        &[5; 1440],
    );
    let mut buf = buffer(&input, 64, 0);
    let mut frame = Frame::new(&mut buf, 64, input.len()).unwrap();
    let view = parse(&frame).unwrap();
    assert_eq!(
        tun::encapsulate(&mut frame, &view, &tunnel(1), &to_real_server(1500)),
        Ok(Transmit::Forward)
    );
    assert_eq!(frame.len(), 14 + 1500);
}

#[test]
fn too_big_without_df_is_dropped() {
    let mut ip = Ip::new(CLIENT, VIP);
    ip.dont_fragment = false;
    let input = udp_frame((CLIENT_MAC, DIRECTOR_IN_MAC), &ip, (5000, 53), &[5; 1472]);
    let mut buf = buffer(&input, 64, 0);
    let mut frame = Frame::new(&mut buf, 64, input.len()).unwrap();
    let view = parse(&frame).unwrap();
    assert_eq!(
        tun::encapsulate(&mut frame, &view, &tunnel(1), &to_real_server(1500)),
        Err(Reason::TooBig)
    );
    assert_eq!(frame.data(), &input[..]);
}

#[test]
fn tiny_tunnel_mtu_is_refused() {
    let ip = Ip::new(CLIENT, VIP);
    let input = tcp_frame((CLIENT_MAC, DIRECTOR_IN_MAC), &ip, (40000, 80), 0x10, b"");
    let mut buf = buffer(&input, 64, 0);
    let mut frame = Frame::new(&mut buf, 64, input.len()).unwrap();
    let view = parse(&frame).unwrap();
    assert_eq!(
        tun::encapsulate(&mut frame, &view, &tunnel(1), &to_real_server(87)),
        Err(Reason::MtuTooSmall)
    );
}

#[test]
fn ttl_one_answers_time_exceeded() {
    let mut ip = Ip::new(CLIENT, VIP);
    ip.ttl = 1;
    let input = tcp_frame((CLIENT_MAC, DIRECTOR_IN_MAC), &ip, (40000, 80), 0x02, b"");
    let mut buf = buffer(&input, 64, 0);
    let mut frame = Frame::new(&mut buf, 64, input.len()).unwrap();
    let view = parse(&frame).unwrap();
    assert_eq!(
        tun::encapsulate(&mut frame, &view, &tunnel(1), &to_real_server(1500)),
        Ok(Transmit::TimeExceededToSender)
    );
    verify_checksums(frame.data());
    assert_eq!(&frame.data()[34..36], &[11, 0]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_packets_encapsulate_to_the_expected_frame(
        src in any::<[u8; 4]>().prop_filter("unicast", |a| a[0] != 0 && a[0] < 224 && a[0] != 127),
        dst in any::<[u8; 4]>(),
        ttl in 2u8..=255,
        ident in any::<u16>(),
        outer_ident in any::<u16>(),
        dont_fragment in any::<bool>(),
        dscp in 0u8..64,
        ecn in 0u8..4,
        headroom in 20usize..64,
        payload in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let ip = Ip { src, dst, ttl, ident, dont_fragment, dscp, ecn, options: &[] };
        let input = udp_frame((CLIENT_MAC, DIRECTOR_IN_MAC), &ip, (1, 2), &payload);
        let mut buf = buffer(&input, headroom, 0);
        let mut frame = Frame::new(&mut buf, headroom, input.len()).unwrap();
        let view = parse(&frame).unwrap();
        prop_assert_eq!(
            tun::encapsulate(&mut frame, &view, &tunnel(outer_ident), &to_real_server(1500)),
            Ok(Transmit::Forward)
        );
        let inner_ip = Ip { ttl: ttl - 1, ..ip };
        let inner = udp_frame((CLIENT_MAC, DIRECTOR_IN_MAC), &inner_ip, (1, 2), &payload);
        let expected = expected_ipip(
            datagram(&inner),
            outer_ip(ttl - 1, outer_ident, dont_fragment, dscp, ecn),
        );
        assert_same_frame(frame.data(), &expected);
        verify_checksums(frame.data());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// `encapsulate_common` (the common case first) gives `encapsulate`'s result and bytes
    /// for every frame: TTL 0 to 3, datagrams around the inner MTU, with and without DF, IP
    /// options, trailing bytes, headroom below and above 20, MTUs that leave less than 68,
    /// TCP, UDP and ICMP, views from `parse` and from `parse_common`.
    #[test]
    fn the_common_case_first_changes_no_result(
        ttl in 0u8..4,
        dont_fragment in any::<bool>(),
        with_options in any::<bool>(),
        proto in 0u8..3,
        payload_len in 0usize..80,
        mtu in 60u16..160,
        mtu_at_the_edge in proptest::option::of(-2i32..=2),
        trailing in 0usize..30,
        headroom in 0usize..40,
        ident in any::<u16>(),
    ) {
        let options: &'static [u8] = if with_options { &[1, 1, 1, 0] } else { &[] };
        let ip = Ip { ttl, dont_fragment, options, ..Ip::new(CLIENT, VIP) };
        let mut input = client_frame(proto, &ip, &vec![0x5a; payload_len]);
        // Half the cases put the MTU within 2 bytes of what the datagram needs with its
        // outer header.
        let mtu = match mtu_at_the_edge {
            Some(delta) => (datagram(&input).len() as i32 + 20 + delta) as u16,
            None => mtu,
        };
        input.extend(std::iter::repeat_n(0xee, trailing));
        let egress = to_real_server(mtu);
        let run = |common: bool, fast_view: bool| {
            let mut buf = buffer(&input, headroom, 8);
            let mut frame = Frame::new(&mut buf, headroom, input.len()).unwrap();
            let result = view_of(&frame, fast_view).map(|view| {
                if common {
                    tun::encapsulate_common(&mut frame, &view, &tunnel(ident), &egress)
                } else {
                    tun::encapsulate(&mut frame, &view, &tunnel(ident), &egress)
                }
            });
            (result, frame.start(), frame.data().to_vec())
        };
        for fast_view in [false, true] {
            prop_assert_eq!(run(true, fast_view), run(false, fast_view));
        }
    }
}
