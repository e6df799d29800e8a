//! NAT: destination rewrite inbound, source rewrite outbound, TTL decrement, incremental
//! checksums compared with etherparse's full recomputation.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};

use common::*;
use proptest::prelude::*;
use xvs_forwarders::{Frame, Reason, Transmit, nat, parse};

fn real(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(REAL_SERVER), port)
}

fn service(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(VIP), port)
}

fn inbound(input: &[u8], to: SocketAddrV4) -> (Result<Transmit, Reason>, Vec<u8>) {
    let mut buf = buffer(input, 32, 0);
    let mut frame = Frame::new(&mut buf, 32, input.len()).unwrap();
    let view = parse(&frame).unwrap();
    let result = nat::rewrite_inbound(&mut frame, &view, to, &to_real_server(1500));
    (result, frame.data().to_vec())
}

fn outbound(input: &[u8], from: SocketAddrV4) -> (Result<Transmit, Reason>, Vec<u8>) {
    let mut buf = buffer(input, 32, 0);
    let mut frame = Frame::new(&mut buf, 32, input.len()).unwrap();
    let view = parse(&frame).unwrap();
    let result = nat::rewrite_outbound(&mut frame, &view, from, &to_client(1500));
    (result, frame.data().to_vec())
}

#[test]
fn golden_tcp_inbound_with_port_mapping() {
    let ip = Ip::new(CLIENT, VIP);
    let input = tcp_frame((CLIENT_MAC, DIRECTOR_IN_MAC), &ip, (40000, 80), 0x02, b"");
    let (result, output) = inbound(&input, real(8080));
    assert_eq!(result, Ok(Transmit::Forward));
    let mut want = Ip::new(CLIENT, REAL_SERVER);
    want.ttl = 63;
    let expected = tcp_frame(
        (DIRECTOR_OUT_MAC, REAL_SERVER_MAC),
        &want,
        (40000, 8080),
        0x02,
        b"",
    );
    assert_same_frame(&output, &expected);
    verify_checksums(&output);
}

#[test]
fn golden_tcp_outbound_restores_vip_and_virtual_port() {
    let ip = Ip::new(REAL_SERVER, CLIENT);
    let input = tcp_frame(
        (REAL_SERVER_MAC, DIRECTOR_OUT_MAC),
        &ip,
        (8080, 40000),
        0x12,
        b"HTTP/1.1 200 OK\r\n",
    );
    let (result, output) = outbound(&input, service(80));
    assert_eq!(result, Ok(Transmit::Forward));
    let mut want = Ip::new(VIP, CLIENT);
    want.ttl = 63;
    let expected = tcp_frame(
        (DIRECTOR_IN_MAC, GATEWAY_MAC),
        &want,
        (80, 40000),
        0x12,
        b"HTTP/1.1 200 OK\r\n",
    );
    assert_same_frame(&output, &expected);
    verify_checksums(&output);
}

#[test]
fn golden_udp_both_ways() {
    let ip = Ip::new(CLIENT, VIP);
    let input = udp_frame((CLIENT_MAC, DIRECTOR_IN_MAC), &ip, (5000, 53), b"query");
    let (result, output) = inbound(&input, real(5353));
    assert_eq!(result, Ok(Transmit::Forward));
    let mut want = Ip::new(CLIENT, REAL_SERVER);
    want.ttl = 63;
    let expected = udp_frame(
        (DIRECTOR_OUT_MAC, REAL_SERVER_MAC),
        &want,
        (5000, 5353),
        b"query",
    );
    assert_same_frame(&output, &expected);
    verify_checksums(&output);

    let reply = udp_frame(
        (REAL_SERVER_MAC, DIRECTOR_OUT_MAC),
        &Ip::new(REAL_SERVER, CLIENT),
        (5353, 5000),
        b"answer",
    );
    let (result, output) = outbound(&reply, service(53));
    assert_eq!(result, Ok(Transmit::Forward));
    let mut want = Ip::new(VIP, CLIENT);
    want.ttl = 63;
    let expected = udp_frame((DIRECTOR_IN_MAC, GATEWAY_MAC), &want, (53, 5000), b"answer");
    assert_same_frame(&output, &expected);
    verify_checksums(&output);
}

#[test]
fn udp_zero_checksum_stays_zero() {
    let ip = Ip::new(CLIENT, VIP);
    let input = without_udp_checksum(udp_frame(
        (CLIENT_MAC, DIRECTOR_IN_MAC),
        &ip,
        (5000, 53),
        b"query",
    ));
    let (_, output) = inbound(&input, real(5353));
    let mut want = Ip::new(CLIENT, REAL_SERVER);
    want.ttl = 63;
    let expected = without_udp_checksum(udp_frame(
        (DIRECTOR_OUT_MAC, REAL_SERVER_MAC),
        &want,
        (5000, 5353),
        b"query",
    ));
    assert_same_frame(&output, &expected);
    assert_eq!(&output[40..42], &[0, 0], "udp checksum still 0");
    verify_checksums(&output);
}

#[test]
fn same_port_mapping_changes_only_the_address() {
    let ip = Ip::new(CLIENT, VIP);
    let input = tcp_frame(
        (CLIENT_MAC, DIRECTOR_IN_MAC),
        &ip,
        (40000, 443),
        0x10,
        b"tls",
    );
    let (_, output) = inbound(&input, real(443));
    let mut want = Ip::new(CLIENT, REAL_SERVER);
    want.ttl = 63;
    let expected = tcp_frame(
        (DIRECTOR_OUT_MAC, REAL_SERVER_MAC),
        &want,
        (40000, 443),
        0x10,
        b"tls",
    );
    assert_same_frame(&output, &expected);
}

#[test]
fn ethernet_padding_is_kept_and_ignored() {
    let ip = Ip::new(CLIENT, VIP);
    let mut input = tcp_frame((CLIENT_MAC, DIRECTOR_IN_MAC), &ip, (40000, 80), 0x10, b"");
    input.extend_from_slice(&[0xab; 6]); // 54 -> 60 bytes, minimum Ethernet frame
    let (result, output) = inbound(&input, real(8080));
    assert_eq!(result, Ok(Transmit::Forward));
    assert_eq!(output.len(), 60);
    assert_eq!(&output[54..], &[0xab; 6]);
    let mut want = Ip::new(CLIENT, REAL_SERVER);
    want.ttl = 63;
    let expected = tcp_frame(
        (DIRECTOR_OUT_MAC, REAL_SERVER_MAC),
        &want,
        (40000, 8080),
        0x10,
        b"",
    );
    assert_same_frame(&output[..54], &expected);
}

#[test]
fn icmp_echo_is_not_translated() {
    let ip = Ip::new(CLIENT, VIP);
    let input = icmp_frame(
        (CLIENT_MAC, DIRECTOR_IN_MAC),
        &ip,
        8,
        0,
        [0, 7, 0, 1],
        b"ping",
    );
    let (result, output) = inbound(&input, real(0));
    assert_eq!(result, Err(Reason::UnsupportedProtocol));
    assert_eq!(output, input);
}

#[test]
fn ttl_one_answers_time_exceeded_from_the_vip() {
    let mut ip = Ip::new(CLIENT, VIP);
    ip.ttl = 1;
    let input = tcp_frame((CLIENT_MAC, DIRECTOR_IN_MAC), &ip, (40000, 80), 0x02, b"");
    let (result, output) = inbound(&input, real(8080));
    assert_eq!(result, Ok(Transmit::TimeExceededToSender));
    let mut reply_ip = Ip::new(VIP, CLIENT);
    reply_ip.ident = 0;
    reply_ip.dscp = 0x30;
    let expected = icmp_frame(
        (DIRECTOR_IN_MAC, CLIENT_MAC),
        &reply_ip,
        11,
        0,
        [0; 4],
        datagram(&input),
    );
    assert_same_frame(&output, &expected);
    verify_checksums(&output);
}

#[test]
fn too_big_outbound_answers_the_real_server_from_the_vip() {
    let ip = Ip::new(REAL_SERVER, CLIENT);
    let input = tcp_frame(
        (REAL_SERVER_MAC, DIRECTOR_OUT_MAC),
        &ip,
        (8080, 40000),
        0x10,
        &[1; 200],
    );
    let mut buf = buffer(&input, 32, 0);
    let mut frame = Frame::new(&mut buf, 32, input.len()).unwrap();
    let view = parse(&frame).unwrap();
    let result = nat::rewrite_outbound(&mut frame, &view, service(80), &to_client(200));
    assert_eq!(result, Ok(Transmit::FragmentationNeededToSender));
    let mut reply_ip = Ip::new(VIP, REAL_SERVER);
    reply_ip.ident = 0;
    reply_ip.dscp = 0x30;
    let expected = icmp_frame(
        (DIRECTOR_OUT_MAC, REAL_SERVER_MAC),
        &reply_ip,
        3,
        4,
        [0, 0, 0, 200],
        datagram(&input),
    );
    assert_same_frame(frame.data(), &expected);
    verify_checksums(frame.data());
}

fn tcp_flags() -> impl Strategy<Value = u8> {
    prop_oneof![
        Just(0x02),
        Just(0x12),
        Just(0x10),
        Just(0x18),
        Just(0x11),
        Just(0x04)
    ]
}

fn ip_options() -> impl Strategy<Value = &'static [u8]> {
    prop_oneof![
        Just(&[][..]),
        Just(&[1, 1, 1, 0][..]),
        Just(&[0x94, 0x04, 0, 0][..]), // router alert
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// NAT inbound and outbound on random TCP/UDP packets: the output equals a packet built
    /// from scratch with the expected fields, so every incremental checksum equals the full one.
    #[test]
    fn incremental_checksums_match_full_recomputation(
        client in any::<[u8; 4]>().prop_filter("unicast", |a| a[0] != 0 && a[0] < 224 && a[0] != 127),
        vip in any::<[u8; 4]>(),
        rip in any::<[u8; 4]>(),
        cport in any::<u16>(),
        vport in any::<u16>(),
        rport in any::<u16>(),
        ttl in 2u8..=255,
        ident in any::<u16>(),
        dont_fragment in any::<bool>(),
        dscp in 0u8..64,
        ecn in 0u8..4,
        options in ip_options(),
        is_tcp in any::<bool>(),
        flags in tcp_flags(),
        udp_checksum_off in any::<bool>(),
        payload in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let make = |src: [u8; 4], dst: [u8; 4], ttl: u8, ports: (u16, u16), macs| {
            let ip = Ip { src, dst, ttl, ident, dont_fragment, dscp, ecn, options };
            if is_tcp {
                tcp_frame(macs, &ip, ports, flags, &payload)
            } else if udp_checksum_off {
                without_udp_checksum(udp_frame(macs, &ip, ports, &payload))
            } else {
                udp_frame(macs, &ip, ports, &payload)
            }
        };
        // Inbound: client:cport -> vip:vport becomes client:cport -> rip:rport.
        let input = make(client, vip, ttl, (cport, vport), (CLIENT_MAC, DIRECTOR_IN_MAC));
        let mut buf = input.clone();
        let mut frame = Frame::whole(&mut buf);
        let view = parse(&frame).unwrap();
        let to = SocketAddrV4::new(Ipv4Addr::from(rip), rport);
        prop_assert_eq!(nat::rewrite_inbound(&mut frame, &view, to, &to_real_server(1500)), Ok(Transmit::Forward));
        let expected = make(client, rip, ttl - 1, (cport, rport), (DIRECTOR_OUT_MAC, REAL_SERVER_MAC));
        assert_same_frame(frame.data(), &expected);
        verify_checksums(frame.data());

        // Outbound: rip:rport -> client:cport becomes vip:vport -> client:cport.
        let reply = make(rip, client, ttl, (rport, cport), (REAL_SERVER_MAC, DIRECTOR_OUT_MAC));
        let mut buf = reply.clone();
        let mut frame = Frame::whole(&mut buf);
        let view = parse(&frame).unwrap();
        let from = SocketAddrV4::new(Ipv4Addr::from(vip), vport);
        prop_assert_eq!(nat::rewrite_outbound(&mut frame, &view, from, &to_client(1500)), Ok(Transmit::Forward));
        let expected = make(vip, client, ttl - 1, (vport, cport), (DIRECTOR_IN_MAC, GATEWAY_MAC));
        assert_same_frame(frame.data(), &expected);
        verify_checksums(frame.data());
    }
}

/// Found by fuzzing (fuzz/, target `pipeline`): bytes after the datagram beyond Ethernet's
/// 60-byte minimum were forwarded with it.
#[test]
fn bytes_after_the_datagram_are_cut_in_both_directions() {
    let ip = Ip::new(CLIENT, VIP);
    let mut input = tcp_frame(
        (CLIENT_MAC, DIRECTOR_IN_MAC),
        &ip,
        (40000, 80),
        0x10,
        &[0x61; 40],
    );
    let datagram_end = input.len();
    input.extend_from_slice(&[0xab; 200]);
    let (result, output) = inbound(&input, real(8080));
    assert_eq!(result, Ok(Transmit::Forward));
    assert_eq!(output.len(), datagram_end);
    verify_checksums(&output);
    let reply_ip = Ip::new(REAL_SERVER, CLIENT);
    let mut reply = tcp_frame(
        (REAL_SERVER_MAC, DIRECTOR_OUT_MAC),
        &reply_ip,
        (8080, 40000),
        0x10,
        b"",
    );
    reply.extend_from_slice(&[0xab; 20]);
    let (result, output) = outbound(&reply, service(80));
    assert_eq!(result, Ok(Transmit::Forward));
    assert_eq!(
        output.len(),
        60,
        "a 54-byte segment keeps its minimum-frame padding"
    );
    verify_checksums(&output[..54]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// `rewrite_inbound_common` (the common case first) gives `rewrite_inbound`'s result and
    /// bytes for every frame: TTL 0 to 3, datagrams around the MTU, with and without DF, IP
    /// options, Ethernet padding or trailing bytes, short UDP, ICMP, views from `parse` and
    /// from `parse_common`.
    #[test]
    fn the_common_case_first_changes_no_result(
        ttl in 0u8..4,
        dont_fragment in any::<bool>(),
        options in ip_options(),
        proto in 0u8..3,
        payload_len in 0usize..80,
        mtu in 60u16..140,
        mtu_at_the_edge in proptest::option::of(-2i32..=2),
        trailing in 0usize..30,
        headroom in 0usize..40,
        rport in any::<u16>(),
    ) {
        let ip = Ip { ttl, dont_fragment, options, ..Ip::new(CLIENT, VIP) };
        let mut input = client_frame(proto, &ip, &vec![0x5a; payload_len]);
        // Half the cases put the MTU within 2 bytes of the datagram's length.
        let mtu = match mtu_at_the_edge {
            Some(delta) => (datagram(&input).len() as i32 + delta) as u16,
            None => mtu,
        };
        input.extend(std::iter::repeat_n(0xee, trailing));
        let to = SocketAddrV4::new(Ipv4Addr::from(REAL_SERVER), rport);
        let egress = to_real_server(mtu);
        let run = |common: bool, fast_view: bool| {
            let mut buf = buffer(&input, headroom, 8);
            let mut frame = Frame::new(&mut buf, headroom, input.len()).unwrap();
            let result = view_of(&frame, fast_view).map(|view| {
                if common {
                    nat::rewrite_inbound_common(&mut frame, &view, to, &egress)
                } else {
                    nat::rewrite_inbound(&mut frame, &view, to, &egress)
                }
            });
            (result, frame.data().to_vec())
        };
        for fast_view in [false, true] {
            prop_assert_eq!(run(true, fast_view), run(false, fast_view));
        }
    }
}
