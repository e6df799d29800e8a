//! No input makes the crate panic, and the checksum arithmetic agrees with a from-scratch sum.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};

use common::*;
use proptest::prelude::*;
use xvs_forwarders::tun::Tunnel;
use xvs_forwarders::{
    Frame, L4, PacketView, Reason, TcpFlags, Transmit, checksum, dr, icmp, nat, parse, parse_bytes,
    tun,
};

/// Runs every entry point on a copy of `bytes` placed with `headroom`. Nothing may panic, the
/// frame must stay inside its buffer, and when `view` describes `bytes` (`own_view`), every
/// frame a rewrite hands back for transmission must parse again with a valid IPv4 checksum.
fn exercise(bytes: &[u8], headroom: usize, view: &PacketView, own_view: bool) {
    let rs = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 8080);
    let tunnel = Tunnel {
        source: Ipv4Addr::new(10, 0, 0, 254),
        real_server: Ipv4Addr::new(10, 0, 0, 1),
        ident: 1,
    };
    for mtu in [0u16, 68, 100, 1500] {
        let egress = to_real_server(mtu);
        let run = |f: &mut dyn FnMut(&mut Frame<'_>) -> Option<Result<Transmit, Reason>>| {
            let mut buf = buffer(bytes, headroom, 8);
            let mut frame = Frame::new(&mut buf, headroom, bytes.len()).unwrap();
            let result = f(&mut frame);
            assert!(frame.start() + frame.len() <= headroom + bytes.len() + 8);
            match result {
                Some(Ok(_)) if own_view => {
                    let out = frame.data();
                    let ip_len = 14 + 20;
                    assert!(out.len() >= ip_len, "sent frame holds an IPv4 header");
                    let header_len = usize::from(out[14] & 0x0f) * 4;
                    assert!(
                        checksum::verifies(&out[14..14 + header_len]),
                        "ipv4 checksum"
                    );
                }
                Some(Err(_)) | None => {
                    // Refused: the bytes are untouched unless a reply was being built.
                    assert_eq!(frame.start(), headroom);
                }
                Some(Ok(_)) => {}
            }
        };
        run(&mut |frame| Some(dr::forward(frame, view, &egress)));
        run(&mut |frame| Some(nat::rewrite_inbound(frame, view, rs, &egress)));
        run(&mut |frame| Some(nat::rewrite_outbound(frame, view, rs, &egress)));
        run(&mut |frame| Some(tun::encapsulate(frame, view, &tunnel, &egress)));
        run(&mut |frame| {
            let error = icmp::parse_error(frame, view).ok()?;
            Some(icmp::rewrite_toward_real_server(
                frame, view, &error, rs, &egress,
            ))
        });
        run(&mut |frame| {
            let error = icmp::parse_error(frame, view).ok()?;
            Some(icmp::rewrite_toward_client(
                frame, view, &error, rs, &egress,
            ))
        });
        run(&mut |frame| {
            let error = icmp::parse_error(frame, view).ok()?;
            Some(icmp::answer_tunnel_error(frame, view, &error, &egress))
        });
    }
}

/// A valid frame of each kind, to mutate.
fn seeds() -> Vec<Vec<u8>> {
    let ip = Ip::new(CLIENT, VIP);
    let tcp = tcp_frame(
        (CLIENT_MAC, DIRECTOR_IN_MAC),
        &ip,
        (40000, 80),
        0x02,
        b"abc",
    );
    let udp = udp_frame((CLIENT_MAC, DIRECTOR_IN_MAC), &ip, (5000, 53), b"query");
    let error = icmp_frame(
        (GATEWAY_MAC, DIRECTOR_IN_MAC),
        &Ip::new(ROUTER, VIP),
        3,
        4,
        [0, 0, 5, 0],
        datagram(&tcp),
    );
    let ipip = ipip_frame(
        (DIRECTOR_OUT_MAC, REAL_SERVER_MAC),
        &Ip::new(DIRECTOR, REAL_SERVER),
        datagram(&tcp),
    );
    let tunnel_error = icmp_frame(
        (GATEWAY_MAC, DIRECTOR_OUT_MAC),
        &Ip::new(ROUTER, DIRECTOR),
        3,
        4,
        [0, 0, 5, 0],
        datagram(&ipip),
    );
    vec![tcp, udp, error, tunnel_error]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..160), headroom in 0usize..40) {
        let mut copy = bytes.clone();
        let frame = Frame::whole(&mut copy);
        if let Ok(view) = parse(&frame) {
            exercise(&bytes, headroom, &view, true);
        }
    }

    /// Random bytes behind a valid Ethernet/IPv4 prefix get much deeper than pure noise.
    #[test]
    fn mutated_valid_frames_never_panic(
        seed in 0usize..4,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
        headroom in 0usize..40,
    ) {
        let mut bytes = seeds()[seed].clone();
        for (at, value) in flips {
            let len = bytes.len();
            bytes[at % len] = value;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        if let Ok(view) = parse_bytes(&bytes) {
            exercise(&bytes, headroom, &view, true);
        }
        // A view of a valid frame applied to unrelated bytes must not panic either.
        let good = seeds()[seed].clone();
        let view = parse_bytes(&good).unwrap();
        exercise(&bytes, headroom, &view, false);
    }

    /// Views with arbitrary offsets, lengths and fields (a caller bug) never cause a panic.
    #[test]
    fn forged_views_never_panic(
        seed in 0usize..4,
        ip_offset in 0u16..80,
        l4_offset in 0u16..120,
        ip_total_len in 0u16..200,
        ttl in any::<u8>(),
        dont_fragment in any::<bool>(),
        kind in prop_oneof![Just(0u8), Just(3), Just(8), Just(11)],
        l4_choice in 0u8..3,
        headroom in 0usize..40,
    ) {
        let bytes = seeds()[seed].clone();
        let l4 = match l4_choice {
            0 => L4::Tcp { src_port: 1, dst_port: 2, flags: TcpFlags(0x02) },
            1 => L4::Udp { src_port: 1, dst_port: 2 },
            _ => L4::Icmp { kind, code: 4, echo_id: 0 },
        };
        let view = PacketView {
            ip_offset,
            l4_offset,
            ip_total_len,
            src: Ipv4Addr::new(203, 0, 113, 7),
            dst: Ipv4Addr::new(192, 0, 2, 10),
            ttl,
            tos: 0,
            ident: 0,
            dont_fragment,
            l4,
        };
        exercise(&bytes, headroom, &view, false);
    }

    /// RFC 1624 eqn. 3 agrees with a full recomputation for any data and any word change.
    #[test]
    fn incremental_update_equals_full_recomputation(
        mut data in proptest::collection::vec(any::<u8>(), 2..200),
        word_index in any::<usize>(),
        new_word in any::<u16>(),
    ) {
        let words = data.len() / 2;
        let at = (word_index % words) * 2;
        let before = checksum::checksum(&data);
        let old_word = u16::from_be_bytes([data[at], data[at + 1]]);
        data[at..at + 2].copy_from_slice(&new_word.to_be_bytes());
        let full = checksum::checksum(&data);
        let incremental = checksum::update_u16(before, old_word, new_word);
        // One's complement has two zeros; they are the same checksum value.
        let same = full == incremental || (full, incremental) == (0, 0xffff) || (full, incremental) == (0xffff, 0);
        prop_assert!(same, "full {full:#06x} incremental {incremental:#06x}");
        // With non-zero data the representation is unique: they must be equal.
        if data.iter().any(|b| *b != 0) {
            prop_assert_eq!(full, incremental);
        }
    }

    #[test]
    fn incremental_u32_update_equals_full_recomputation(
        mut data in proptest::collection::vec(any::<u8>(), 4..200),
        word_index in any::<usize>(),
        new_value in any::<u32>(),
    ) {
        let slots = data.len() / 4;
        let at = (word_index % slots) * 4;
        let before = checksum::checksum(&data);
        let old_value = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
        data[at..at + 4].copy_from_slice(&new_value.to_be_bytes());
        let full = checksum::checksum(&data);
        let incremental = checksum::update_u32(before, old_value, new_value);
        if data.iter().any(|b| *b != 0) {
            prop_assert_eq!(full, incremental);
        }
    }

    /// The crate's full checksum matches etherparse's on IPv4 headers.
    #[test]
    fn header_checksum_matches_etherparse(src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), ttl in any::<u8>(), ident in any::<u16>()) {
        let ip = Ip { src, dst, ttl, ident, dont_fragment: true, dscp: 0, ecn: 0, options: &[] };
        let header = ip.header();
        let bytes = header.to_bytes();
        let mut zeroed = bytes.to_vec();
        zeroed[10] = 0;
        zeroed[11] = 0;
        prop_assert_eq!(checksum::ipv4_header(&zeroed), header.calc_header_checksum());
        let mut with_checksum = zeroed.clone();
        with_checksum[10..12].copy_from_slice(&header.calc_header_checksum().to_be_bytes());
        prop_assert!(checksum::verifies(&with_checksum));
        // Any single changed bit breaks it (the check reads words in the machine's order).
        for bit in 0..160 {
            let mut broken = with_checksum.clone();
            broken[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(!checksum::verifies(&broken), "bit {}", bit);
        }
    }
}
