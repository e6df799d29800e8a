//! The IPv6 views against etherparse: fields round-trip, the walker agrees with etherparse's
//! extension-header parser, checksums match, malformed input is refused and never panics.

use core::net::Ipv6Addr;

use etherparse::{IpNumber, Ipv6Extensions, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use proptest::prelude::*;

use super::*;
use crate::Reason;
use crate::fragments::Fragmentation;

const SRC: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
const DST: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

fn frame6(kind: u8, payload: &[u8]) -> Vec<u8> {
    let ip = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv6(SRC, DST, 61);
    let mut out = Vec::new();
    match kind {
        6 => ip
            .tcp(40000, 80, 7, 1024)
            .syn()
            .write(&mut out, payload)
            .unwrap(),
        17 => ip.udp(40000, 53).write(&mut out, payload).unwrap(),
        _ => ip
            .icmpv6_echo_request(0x1234, 9)
            .write(&mut out, payload)
            .unwrap(),
    }
    out
}

#[test]
fn ipv6_fields_round_trip_against_etherparse() {
    let mut buf = [0u8; 48];
    let mut ip = Ipv6Packet::new_unchecked(&mut buf[..]);
    ip.set_version(6);
    ip.set_traffic_class(0xb8);
    ip.set_flow_label(0xabcde);
    ip.set_payload_len(8);
    ip.set_next_header(protocol::UDP);
    ip.set_hop_limit(2);
    ip.set_src_addr(Ipv6Addr::from(SRC));
    ip.set_dst_addr(Ipv6Addr::from(DST));
    assert_eq!(ip.decrement_hop_limit(), 1);
    let ip = Ipv6Packet::new_checked(&buf[..]).unwrap();
    assert_eq!(
        (ip.version(), ip.traffic_class(), ip.flow_label()),
        (6, 0xb8, 0xabcde)
    );
    assert_eq!(
        (ip.payload_len(), ip.next_header(), ip.hop_limit()),
        (8, 17, 1)
    );
    assert_eq!(ip.payload().len(), 8);
    let (header, _) = etherparse::Ipv6Header::from_slice(&buf).unwrap();
    assert_eq!(header.traffic_class, 0xb8);
    assert_eq!(header.flow_label.value(), 0xabcde);
    assert_eq!(header.payload_length, 8);
    assert_eq!(header.next_header, IpNumber::UDP);
    assert_eq!(header.hop_limit, 1);
    assert_eq!((header.source, header.destination), (SRC, DST));
}

#[test]
fn ipv6_checked_refuses_what_does_not_fit() {
    let mut buf = [0u8; 44];
    buf[0] = 0x60;
    buf[5] = 4;
    assert!(Ipv6Packet::new_checked(&buf[..]).is_ok());
    assert_eq!(
        Ipv6Packet::new_checked(&buf[..39]).unwrap_err(),
        Reason::Truncated
    );
    assert_eq!(
        Ipv6Packet::new_checked(&buf[..43]).unwrap_err(),
        Reason::BadIpTotalLength
    );
    buf[0] = 0x40;
    assert_eq!(
        Ipv6Packet::new_checked(&buf[..]).unwrap_err(),
        Reason::BadIpVersion
    );
}

/// An extension header of `len8 + 1` 8-byte units, next header `next`.
fn ext(next: u8, len8: u8) -> Vec<u8> {
    let mut header = vec![0u8; (usize::from(len8) + 1) * 8];
    header[0] = next;
    header[1] = len8;
    // A PadN option filling the rest, so etherparse accepts it as options.
    header[2] = 1;
    header[3] = (header.len() - 4) as u8;
    header
}

#[test]
fn walker_agrees_with_etherparse_on_chains() {
    // hop-by-hop, destination options, routing (segments left 0), fragment (atomic), UDP.
    let mut payload = ext(protocol::DEST_OPTS, 0);
    payload.extend(ext(protocol::ROUTING, 1));
    let mut routing = vec![protocol::FRAGMENT, 0, 4, 0, 0, 0, 0, 0];
    routing[1] = 0;
    payload.extend(routing);
    payload.extend([protocol::UDP, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef]);
    payload.extend([0u8; 8]);
    let walked = walk_extension_headers(protocol::HOP_BY_HOP, &payload).unwrap();
    let (_, next, rest) = Ipv6Extensions::from_slice(IpNumber(0), &payload).unwrap();
    assert_eq!(walked.protocol, next.0);
    assert_eq!(walked.offset, payload.len() - rest.len());
    assert_eq!(walked.fragmentation, Fragmentation::Whole);
    assert_eq!(walked.fragment_ident, Some(0xdead_beef));
}

#[test]
fn walker_reports_fragments_and_refuses_bad_chains() {
    let first = [
        protocol::UDP,
        0,
        0x00,
        0x01,
        0,
        0,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    let walked = walk_extension_headers(protocol::FRAGMENT, &first).unwrap();
    assert_eq!(
        (walked.fragmentation, walked.offset),
        (Fragmentation::First, 8)
    );
    assert_eq!(walked.fragmentation.admit(), Err(Reason::FirstFragment));
    let later = [protocol::UDP, 0, 0x05, 0xc8, 0, 0, 0, 1];
    let walked = walk_extension_headers(protocol::FRAGMENT, &later).unwrap();
    assert_eq!(
        walked.fragmentation,
        Fragmentation::Later { offset_bytes: 1480 }
    );
    assert_eq!(walked.fragmentation.admit(), Err(Reason::LaterFragment));

    assert_eq!(
        walk_extension_headers(protocol::FRAGMENT, &later[..7]).unwrap_err(),
        Reason::Truncated
    );
    let hbh = ext(protocol::TCP, 1);
    assert_eq!(
        walk_extension_headers(protocol::HOP_BY_HOP, &hbh[..15]).unwrap_err(),
        Reason::Truncated
    );
    // Hop-by-hop after another header.
    let mut chain = ext(protocol::HOP_BY_HOP, 0);
    chain.extend(ext(protocol::TCP, 0));
    assert_eq!(
        walk_extension_headers(protocol::DEST_OPTS, &chain).unwrap_err(),
        Reason::BadExtensionHeader
    );
    // A routing header with segments left.
    let routing = [protocol::TCP, 0, 4, 1, 0, 0, 0, 0];
    assert_eq!(
        walk_extension_headers(protocol::ROUTING, &routing).unwrap_err(),
        Reason::BadExtensionHeader
    );
    // Eight destination options headers pass, nine do not.
    let chain: Vec<u8> = (0..9).flat_map(|_| ext(protocol::DEST_OPTS, 0)).collect();
    let mut eight = chain[..64].to_vec();
    eight[56] = protocol::TCP;
    assert_eq!(
        walk_extension_headers(protocol::DEST_OPTS, &eight)
            .unwrap()
            .offset,
        64
    );
    let mut nine = chain.clone();
    nine[64] = protocol::TCP;
    assert_eq!(
        walk_extension_headers(protocol::DEST_OPTS, &nine).unwrap_err(),
        Reason::TooManyExtensionHeaders
    );
}

#[test]
fn transport_checksums_over_ipv6_match_etherparse() {
    for kind in [6u8, 17, 58] {
        let frame = frame6(kind, b"hello v6");
        let ip = Ipv6Packet::new_checked(&frame[14..]).unwrap();
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let mut l4 = ip.payload().to_vec();
        match kind {
            6 => {
                let mut tcp = TcpPacket::new_checked(&mut l4[..]).unwrap();
                assert!(tcp.verify_checksum_v6(src, dst));
                let stored = tcp.checksum();
                tcp.fill_checksum_v6(src, dst);
                assert_eq!(tcp.checksum(), stored);
                // Incremental: a new destination address.
                let new = Ipv6Addr::from(0x2001_0db8_0001_0000_0000_0000_0000_0021u128);
                tcp.patch_pseudo_header_v6(dst, new);
                assert!(tcp.verify_checksum_v6(src, new));
                assert!(!tcp.verify_checksum_v6(src, dst));
            }
            17 => {
                let mut udp = UdpPacket::new_checked(&mut l4[..]).unwrap();
                assert!(udp.verify_checksum_v6(src, dst));
                let stored = udp.checksum();
                udp.fill_checksum_v6(src, dst);
                assert_eq!(udp.checksum(), stored);
                let new = Ipv6Addr::LOCALHOST;
                udp.patch_pseudo_header_v6(src, new);
                assert!(udp.verify_checksum_v6(new, dst));
                udp.set_checksum(0);
                assert!(!udp.verify_checksum_v6(new, dst), "0 is invalid over IPv6");
            }
            _ => {
                let mut icmp = Icmpv6Packet::new_checked(&mut l4[..]).unwrap();
                assert_eq!((icmp.msg_type(), icmp.msg_code()), (128, 0));
                assert_eq!((icmp.echo_ident(), icmp.echo_seq_no()), (0x1234, 9));
                assert!(!icmp.is_error());
                assert!(icmp.verify_checksum(src, dst));
                let stored = icmp.checksum();
                icmp.fill_checksum(src, dst);
                assert_eq!(icmp.checksum(), stored);
                assert!(!icmp.verify_checksum(dst, src.to_bits().wrapping_add(1).into()));
            }
        }
    }
}

#[test]
fn icmpv6_packet_too_big_round_trips_through_etherparse() {
    let mut message = [0u8; 8 + 48];
    let mut icmp = Icmpv6Packet::new_checked(&mut message[..]).unwrap();
    icmp.set_msg_type(icmpv6_type::PACKET_TOO_BIG);
    icmp.set_msg_code(0);
    icmp.set_mtu(1400);
    icmp.data_mut()[0] = 0x60;
    let (src, dst) = (Ipv6Addr::from(DST), Ipv6Addr::from(SRC));
    icmp.fill_checksum(src, dst);
    assert!(icmp.is_error() && icmp.mtu() == 1400 && icmp.data()[0] == 0x60);
    let stored = icmp.checksum();
    let mut frame = Vec::new();
    PacketBuilder::ethernet2([2; 6], [3; 6])
        .ipv6(DST, SRC, 64)
        .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu: 1400 })
        .write(&mut frame, &message[8..])
        .unwrap();
    assert_eq!(&frame[54..], &message[..]);
    let sliced = SlicedPacket::from_ethernet(&frame).unwrap();
    let Some(NetSlice::Ipv6(_)) = sliced.net else {
        panic!("not IPv6")
    };
    let Some(TransportSlice::Icmpv6(slice)) = sliced.transport else {
        panic!("not ICMPv6")
    };
    assert_eq!(slice.checksum(), stored);
}

proptest! {
    #[test]
    fn ipv6_views_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120), next: u8) {
        if let Ok(ip) = Ipv6Packet::new_checked(&bytes[..]) {
            let _ = (ip.traffic_class(), ip.flow_label(), ip.src_addr(), ip.dst_addr());
            let _ = ip.upper_layer();
        }
        if let Ok(walked) = walk_extension_headers(next, &bytes) {
            prop_assert!(walked.offset <= bytes.len());
        }
        if let Ok(icmp) = Icmpv6Packet::new_checked(&bytes[..]) {
            let _ = (icmp.mtu(), icmp.data().len(), icmp.verify_checksum(Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED));
        }
    }

    #[test]
    fn ipv6_pseudo_header_matches_etherparse(payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let frame = frame6(17, &payload);
        let sliced = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(NetSlice::Ipv6(ip6)) = &sliced.net else { panic!() };
        let Some(TransportSlice::Udp(udp)) = &sliced.transport else { panic!() };
        let header = udp.to_header();
        let expected = header.calc_checksum_ipv6(&ip6.header().to_header(), udp.payload()).unwrap();
        let ip = Ipv6Packet::new_checked(&frame[14..]).unwrap();
        let mut l4 = ip.payload().to_vec();
        let mut view = UdpPacket::new_checked(&mut l4[..]).unwrap();
        view.fill_checksum_v6(ip.src_addr(), ip.dst_addr());
        prop_assert_eq!(view.checksum(), expected);
    }
}
